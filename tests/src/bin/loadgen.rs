//! `loadgen`: a load benchmark of `vacal serve`'s job API.
//!
//! Starts its own `vacal serve` (the binary given by `--vacal`, meant to be a release build)
//! on 127.0.0.1 with a fresh temporary data directory, and measures:
//!
//! 1. create throughput and latency: `--concurrency` threads, one keep-alive ureq Agent
//!    each, send `--creates` `POST /api/v1/calibrate/async` in total;
//! 2. status latency: the same threads GET `/api/v1/calibrate/{id}/status` over the created
//!    IDs (`--status-requests` in total);
//! 3. submit → success of the example job (`{}`): on a fresh idle server with
//!    `--example-workers` workers, submit, poll the status every `--poll-ms` until `success`,
//!    `--example-jobs` times, one after another.
//!
//! `vacal serve` always runs at least one worker, so phase 1 cannot run without workers; by
//! default it runs with `--workers 1` and a create body whose job is tiny (100 draws of one
//! chain, fixed matrix, 6 deaths; a few ms of engine time), so the worker mostly adds the
//! database writes of running jobs, not sampler CPU. `--create-body` changes the body.
//!
//! Every loop is bounded: fixed counts plus `--time-limit` seconds per phase. Traffic goes
//! only to the server started here, on 127.0.0.1. Prints a Markdown table on stdout;
//! progress and diagnostics go to stderr.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::Value;

const USAGE: &str = "\
usage: loadgen --vacal PATH [options]

  --vacal PATH            vacal binary to start (e.g. target/release/vacal)   [required]
  --workers N             workers of the server for phases 1-2                [1]
  --example-workers N     workers of the (fresh) server for phase 3           [2]
  --concurrency C         client threads, one keep-alive connection each      [8]
  --creates N             total creates in phase 1                            [5000]
  --status-requests N     total status GETs in phase 2 (default: = creates)
  --create-body JSON      body of the phase-1 creates                         [tiny job]
  --example-jobs N        sequential example jobs in phase 3                  [20]
  --poll-ms MS            status poll interval in phase 3                     [2]
  --runs R                repeat everything R times (fresh servers), report medians [1]
  --phases LIST           which phases to run, e.g. 12 or 3                   [123]
  --time-limit SECS       upper bound on each phase                           [120]
  --pause-before-phase1 SECS  sleep after the server starts (e.g. to attach a profiler) [0]
  --latency-csv PATH      append run,phase,start_ms,latency_ms of every phase-1/2 request
  --janitor-interval SECS passed to vacal serve (its default is 1)            [1]
";

/// Phase-1 body: a valid request whose job costs a few ms (see the module comment).
const TINY_BODY: &str = r#"{"va_data":{"insilicova":[1,1,1,1,1,1]},"age_group":"neonate","mmat_type":"fixed","ensemble":false,"mcmc":{"n_mcmc":100,"n_burn":0,"n_chain":1}}"#;

#[derive(Clone)]
struct Opts {
    vacal: PathBuf,
    workers: usize,
    example_workers: usize,
    concurrency: usize,
    creates: usize,
    status_requests: Option<usize>,
    create_body: String,
    example_jobs: usize,
    poll: Duration,
    runs: usize,
    phases: String,
    time_limit: Duration,
    pause: Duration,
    latency_csv: Option<PathBuf>,
    janitor_interval: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        vacal: PathBuf::new(),
        workers: 1,
        example_workers: 2,
        concurrency: 8,
        creates: 5000,
        status_requests: None,
        create_body: TINY_BODY.to_string(),
        example_jobs: 20,
        poll: Duration::from_millis(2),
        runs: 1,
        phases: "123".into(),
        time_limit: Duration::from_secs(120),
        pause: Duration::ZERO,
        latency_csv: None,
        janitor_interval: "1".into(),
    };
    let mut vacal = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| -> Result<usize, String> {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: '{v}' is not a whole number"))
        };
        let secs = |v: &str| -> Result<Duration, String> {
            v.parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("{flag}: '{v}' is not a number of seconds"))
        };
        match flag.as_str() {
            "--vacal" => vacal = Some(PathBuf::from(value)),
            "--workers" => o.workers = num(&value)?,
            "--example-workers" => o.example_workers = num(&value)?,
            "--concurrency" => o.concurrency = num(&value)?.max(1),
            "--creates" => o.creates = num(&value)?.max(1),
            "--status-requests" => o.status_requests = Some(num(&value)?),
            "--create-body" => {
                serde_json::from_str::<Value>(&value)
                    .map_err(|e| format!("--create-body is not JSON: {e}"))?;
                o.create_body = value;
            }
            "--example-jobs" => o.example_jobs = num(&value)?,
            "--poll-ms" => o.poll = Duration::from_millis(num(&value)? as u64),
            "--runs" => o.runs = num(&value)?.max(1),
            "--phases" => {
                if value.is_empty() || !value.chars().all(|c| matches!(c, '1' | '2' | '3')) {
                    return Err(format!("--phases: '{value}' (use digits 1, 2, 3)"));
                }
                o.phases = value;
            }
            "--time-limit" => o.time_limit = secs(&value)?,
            "--pause-before-phase1" => o.pause = secs(&value)?,
            "--latency-csv" => o.latency_csv = Some(PathBuf::from(value)),
            "--janitor-interval" => {
                secs(&value)?;
                o.janitor_interval = value;
            }
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    o.vacal = vacal.ok_or("--vacal is required")?;
    if !o.vacal.exists() {
        return Err(format!(
            "{} does not exist (build it: cargo build --release -p vacal-cli)",
            o.vacal.display()
        ));
    }
    if o.phases.contains('2') && !o.phases.contains('1') {
        return Err("phase 2 reads the jobs phase 1 creates: use --phases 12".into());
    }
    Ok(o)
}

// ---------------------------------------------------------------------------------------
// The server under test

/// A `vacal serve` child on 127.0.0.1 with its own temporary data directory; killed (and the
/// directory removed) when dropped.
struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(o: &Opts, workers: usize) -> Result<Server, String> {
        let vacal = &o.vacal;
        let dir = tempfile::Builder::new()
            .prefix("vacal-loadgen-")
            .tempdir()
            .map_err(|e| format!("temporary data dir: {e}"))?;
        let mut child = Command::new(vacal)
            .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
            .args(["--janitor-interval", &o.janitor_interval])
            .arg("--workers")
            .arg(workers.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .env("RATE_LIMIT_PER_MINUTE", "0")
            .env_remove("ENABLE_API_KEY_AUTH")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", vacal.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        let base = line
            .trim()
            .strip_prefix("vacal listening on ")
            .map(str::to_string);
        let base = match (read, base) {
            (Ok(_), Some(b)) if b.starts_with("http://127.0.0.1:") => b,
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("unexpected first line from vacal serve: {line:?}"));
            }
        };
        // Keep draining stdout so a later print can never block or fail the server.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        eprintln!(
            "# started vacal serve pid {} at {base} (workers {workers}, data dir {})",
            child.id(),
            dir.path().display()
        );
        Ok(Server {
            child,
            base,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// User + system CPU seconds the server has used so far (from /proc; Linux only).
    fn cpu_seconds(&self) -> Option<f64> {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a /proc/<pid>/stat file, assuming the usual 100 clock ticks a second.
fn proc_cpu_seconds(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; the fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Busy CPU seconds of the whole machine so far (all cores; /proc/stat, 100 ticks a second).
fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    let total: f64 = ticks.iter().take(8).sum();
    Some((total - ticks.get(3)? - ticks.get(4)?) / 100.0)
}

/// Cores' worth of CPU that neither the server nor loadgen used between two readings:
/// other programs on the machine.
fn other_cores(
    machine: (Option<f64>, Option<f64>),
    server: (Option<f64>, Option<f64>),
    me: (Option<f64>, Option<f64>),
    wall: Duration,
) -> f64 {
    match (machine, server, me) {
        ((Some(m0), Some(m1)), (Some(s0), Some(s1)), (Some(c0), Some(c1))) => {
            (((m1 - m0) - (s1 - s0) - (c1 - c0)) / wall.as_secs_f64()).max(0.0)
        }
        _ => f64::NAN,
    }
}

/// CPU milliseconds per request between two readings.
fn per_request(before: Option<f64>, after: Option<f64>, requests: usize) -> f64 {
    match (before, after) {
        (Some(a), Some(b)) if requests > 0 => (b - a) * 1000.0 / requests as f64,
        _ => f64::NAN,
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends one request on `agent`, reads the whole body (so the connection is reused) and
/// parses it as JSON.
fn call(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> Result<Value, String> {
    let response = match (method, body) {
        ("POST", Some(b)) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(b),
        ("GET", None) => agent.get(url).call(),
        _ => unreachable!("only POST with a body and GET are used"),
    }
    .map_err(|e| format!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .into_body()
        .read_to_string()
        .map_err(|e| format!("{method} {url}: reading the body: {e}"))?;
    if status != 200 {
        return Err(format!("{method} {url}: {status} {text}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("{method} {url}: bad JSON ({e}): {text}"))
}

// ---------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp as the API writes them
/// (`2024-01-15T14:25:00.123456Z`).
fn parse_ts(s: &str) -> Option<f64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = t.next()?.parse().ok()?;
    // Days from civil (H. Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

// ---------------------------------------------------------------------------------------
// Phases

#[derive(Default, Clone)]
struct Run {
    // phase 1
    creates_ok: usize,
    create_errors: usize,
    create_wall: f64,
    create_rate: f64,
    create_p50: f64,
    create_p99: f64,
    create_max: f64,
    create_server_cpu_ms_per_req: f64,
    create_client_cpu_ms_per_req: f64,
    jobs_done_after_phase1: f64,
    /// Cores busy with other programs during the phase.
    create_other_cores: f64,
    status_other_cores: f64,
    example_other_cores: f64,
    // phase 2
    status_ok: usize,
    status_errors: usize,
    status_rate: f64,
    status_p50: f64,
    status_p99: f64,
    status_max: f64,
    status_server_cpu_ms_per_req: f64,
    status_client_cpu_ms_per_req: f64,
    // phase 3
    example_ok: usize,
    example_errors: usize,
    example_p50: f64,
    example_p99: f64,
    example_max: f64,
    /// Medians of the server-side split: created → started → completed, and the rest.
    example_queue_wait: f64,
    example_run: f64,
    example_engine: f64,
    example_client: f64,
}

/// Runs `total` requests from `threads` threads (one Agent each, all started together);
/// `request(agent, i)` sends request number `i` and says whether it succeeded. Returns the
/// latencies of the successful ones, the error count and the wall time.
fn hammer<F>(threads: usize, total: usize, limit: Duration, request: F) -> Hammered
where
    F: Fn(&ureq::Agent, usize) -> Result<(), String> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let next = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (request, next, barrier) = (request.clone(), next.clone(), barrier.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut latencies: Vec<(Instant, Duration)> =
                    Vec::with_capacity(total / threads + 1);
                let mut errors = 0usize;
                let mut first_error = None;
                barrier.wait();
                let deadline = Instant::now() + limit;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total || Instant::now() >= deadline {
                        break;
                    }
                    let started = Instant::now();
                    match request(&agent, i) {
                        Ok(()) => latencies.push((started, started.elapsed())),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    barrier.wait();
    let started = Instant::now();
    if let Ok(epoch) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        // The Instant's Debug form shows CLOCK_MONOTONIC, to line up with `perf -k mono`.
        eprintln!(
            "# requests start at unix time {:.6}, monotonic {started:?}",
            epoch.as_secs_f64()
        );
    }
    let mut all = Vec::with_capacity(total);
    let mut errors = 0;
    for h in handles {
        let (latencies, e, first) = h.join().expect("client thread panicked");
        all.extend(latencies);
        errors += e;
        if let Some(first) = first {
            eprintln!("# error (first of this thread): {first}");
        }
    }
    let wall = started.elapsed();
    all.sort_by_key(|(at, _)| *at);
    let timeline = all
        .iter()
        .map(|(at, d)| (ms(at.saturating_duration_since(started)), ms(*d)))
        .collect();
    let mut sorted: Vec<Duration> = all.into_iter().map(|(_, d)| d).collect();
    sorted.sort();
    Hammered {
        sorted,
        timeline,
        errors,
        wall,
    }
}

/// What [`hammer`] measured.
struct Hammered {
    /// Latencies of the successful requests, sorted.
    sorted: Vec<Duration>,
    /// (ms after the start, latency ms) of each successful request, in start order.
    timeline: Vec<(f64, f64)>,
    errors: usize,
    wall: Duration,
}

/// Appends a phase's per-request timeline to the `--latency-csv` file.
fn dump_timeline(o: &Opts, run: usize, phase: &str, timeline: &[(f64, f64)]) {
    let Some(path) = &o.latency_csv else {
        return;
    };
    use std::io::Write as _;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path);
    let result = file.and_then(|f| {
        let mut w = std::io::BufWriter::new(f);
        for (at, latency) in timeline {
            writeln!(w, "{run},{phase},{at:.3},{latency:.3}")?;
        }
        w.flush()
    });
    if let Err(e) = result {
        eprintln!("# cannot write {}: {e}", path.display());
    }
}

fn phases_1_2(o: &Opts, run_no: usize, run: &mut Run) -> Result<(), String> {
    let server = Server::start(o, o.workers)?;
    if !o.pause.is_zero() {
        eprintln!("# pausing {:?} before phase 1", o.pause);
        std::thread::sleep(o.pause);
    }
    // Phase 1: creates.
    let ids = Arc::new(std::sync::Mutex::new(Vec::with_capacity(o.creates)));
    let url = server.url("/api/v1/calibrate/async");
    let body = o.create_body.clone();
    let sink = ids.clone();
    let cpu0 = server.cpu_seconds();
    let me0 = proc_cpu_seconds("/proc/self/stat");
    let all0 = machine_busy_seconds();
    let h = hammer(o.concurrency, o.creates, o.time_limit, move |agent, _| {
        let v = call(agent, "POST", &url, Some(&body))?;
        let id = v["job_id"]
            .as_str()
            .ok_or_else(|| format!("no job_id in {v}"))?;
        sink.lock().expect("ids").push(id.to_string());
        Ok(())
    });
    let cpu1 = server.cpu_seconds();
    let me1 = proc_cpu_seconds("/proc/self/stat");
    let (lat, errors, wall) = (&h.sorted, h.errors, h.wall);
    run.create_other_cores = other_cores(
        (all0, machine_busy_seconds()),
        (cpu0, cpu1),
        (me0, me1),
        wall,
    );
    dump_timeline(o, run_no, "create", &h.timeline);
    run.create_client_cpu_ms_per_req = per_request(me0, me1, lat.len());
    run.creates_ok = lat.len();
    run.create_errors = errors;
    run.create_wall = wall.as_secs_f64();
    run.create_rate = lat.len() as f64 / wall.as_secs_f64();
    run.create_p50 = ms(percentile(lat, 50.0));
    run.create_p99 = ms(percentile(lat, 99.0));
    run.create_max = ms(percentile(lat, 100.0));
    run.create_server_cpu_ms_per_req = per_request(cpu0, cpu1, lat.len());
    let ids: Vec<String> = std::mem::take(&mut *ids.lock().expect("ids"));
    // How far the worker got while the creates ran (a measure of what it competed with).
    run.jobs_done_after_phase1 = jobs_done(&server, ids.len()).unwrap_or(f64::NAN);
    eprintln!(
        "# phase 1: {} creates in {:.2} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors; {} jobs finished meanwhile",
        run.creates_ok, run.create_wall, run.create_rate, run.create_p50, run.create_p99,
        run.create_max, errors, run.jobs_done_after_phase1
    );
    if !o.phases.contains('2') || ids.is_empty() {
        return Ok(());
    }
    // Phase 2: status reads over the created IDs, in creation order.
    let total = o.status_requests.unwrap_or(ids.len());
    let ids = Arc::new(ids);
    let base = server.base.clone();
    let cpu0 = server.cpu_seconds();
    let me0 = proc_cpu_seconds("/proc/self/stat");
    let all0 = machine_busy_seconds();
    let h = hammer(o.concurrency, total, o.time_limit, move |agent, i| {
        let id = &ids[i % ids.len()];
        let v = call(
            agent,
            "GET",
            &format!("{base}/api/v1/calibrate/{id}/status"),
            None,
        )?;
        if v["job_id"].as_str() != Some(id.as_str()) {
            return Err(format!("status of {id} answered {v}"));
        }
        Ok(())
    });
    let cpu1 = server.cpu_seconds();
    let me1 = proc_cpu_seconds("/proc/self/stat");
    let (lat, errors, wall) = (&h.sorted, h.errors, h.wall);
    run.status_other_cores = other_cores(
        (all0, machine_busy_seconds()),
        (cpu0, cpu1),
        (me0, me1),
        wall,
    );
    dump_timeline(o, run_no, "status", &h.timeline);
    run.status_client_cpu_ms_per_req = per_request(me0, me1, lat.len());
    run.status_ok = lat.len();
    run.status_errors = errors;
    run.status_rate = lat.len() as f64 / wall.as_secs_f64();
    run.status_p50 = ms(percentile(lat, 50.0));
    run.status_p99 = ms(percentile(lat, 99.0));
    run.status_max = ms(percentile(lat, 100.0));
    run.status_server_cpu_ms_per_req = per_request(cpu0, cpu1, lat.len());
    eprintln!(
        "# phase 2: {} status reads in {:.2} s ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
        run.status_ok, wall.as_secs_f64(), run.status_rate, run.status_p50, run.status_p99,
        run.status_max, errors
    );
    Ok(())
}

/// Jobs no longer pending or running, from the health endpoint's queue statistics.
fn jobs_done(server: &Server, created: usize) -> Option<f64> {
    let v = call(&agent(), "GET", &server.url("/api/v1/jobs/health"), None).ok()?;
    let q = &v["queue_stats"];
    let open = q["pending_jobs"].as_f64()? + q["running_jobs"].as_f64()?;
    Some(created as f64 - open)
}

fn phase_3(o: &Opts, run: &mut Run) -> Result<(), String> {
    let server = Server::start(o, o.example_workers)?;
    let agent = agent();
    let create = server.url("/api/v1/calibrate/async");
    let deadline = Instant::now() + o.time_limit;
    let mut totals = Vec::new();
    let (mut waits, mut runs, mut engines, mut clients) = (vec![], vec![], vec![], vec![]);
    let mut timelines = Vec::new();
    let phase_started = Instant::now();
    let (cpu0, me0, all0) = (
        server.cpu_seconds(),
        proc_cpu_seconds("/proc/self/stat"),
        machine_busy_seconds(),
    );
    for n in 0..o.example_jobs {
        if Instant::now() >= deadline {
            eprintln!("# phase 3: time limit reached after {n} jobs");
            break;
        }
        // Idle server: the previous job is done; give the worker loop time to go back to
        // sleep so every submit sees the same state.
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let job_id = match call(&agent, "POST", &create, Some("{}")) {
            Ok(v) => v["job_id"].as_str().unwrap_or_default().to_string(),
            Err(e) => {
                eprintln!("# phase 3: {e}");
                run.example_errors += 1;
                continue;
            }
        };
        let status_url = server.url(&format!("/api/v1/calibrate/{job_id}/status?log_limit=1000"));
        let job_deadline = (started + Duration::from_secs(60)).min(deadline);
        let final_status = loop {
            match call(&agent, "GET", &status_url, None) {
                Ok(v) => match v["status"].as_str() {
                    Some("pending" | "running") if Instant::now() < job_deadline => {}
                    Some("success") => break Some(v),
                    _ => {
                        eprintln!("# phase 3: job {job_id} ended as {v}");
                        break None;
                    }
                },
                Err(e) => {
                    eprintln!("# phase 3: {e}");
                    break None;
                }
            }
            std::thread::sleep(o.poll);
        };
        let total = started.elapsed();
        let Some(v) = final_status else {
            run.example_errors += 1;
            continue;
        };
        totals.push(total);
        let meta = &v["metadata"];
        let t = |k: &str| meta[k].as_str().and_then(parse_ts);
        if let (Some(c), Some(s), Some(d)) = (t("created_at"), t("started_at"), t("completed_at")) {
            waits.push((s - c) * 1000.0);
            runs.push((d - s) * 1000.0);
            clients.push(ms(total) - (d - c) * 1000.0);
            // Engine time: from "Calibration engine started" to the completion log.
            let logs = v["logs"].as_array().cloned().unwrap_or_default();
            let at = |msg: &str| {
                logs.iter()
                    .find(|l| l["message"].as_str() == Some(msg))
                    .and_then(|l| l["timestamp"].as_str())
                    .and_then(parse_ts)
            };
            if let Some(e) = at("Calibration engine started") {
                engines.push((d - e) * 1000.0);
            }
            let mut timeline: Vec<(f64, String)> = logs
                .iter()
                .filter_map(|l| {
                    let ts = parse_ts(l["timestamp"].as_str()?)?;
                    Some(((ts - c) * 1000.0, l["message"].as_str()?.to_string()))
                })
                .collect();
            timeline.push(((s - c) * 1000.0, "(metadata.started_at)".into()));
            timeline.push(((d - c) * 1000.0, "(metadata.completed_at)".into()));
            timeline.push((
                ms(total),
                "(client saw success; 0 = metadata.created_at)".into(),
            ));
            timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
            timelines.push((total, timeline));
        }
    }
    run.example_other_cores = other_cores(
        (all0, machine_busy_seconds()),
        (cpu0, server.cpu_seconds()),
        (me0, proc_cpu_seconds("/proc/self/stat")),
        phase_started.elapsed(),
    );
    totals.sort();
    run.example_ok = totals.len();
    run.example_p50 = ms(percentile(&totals, 50.0));
    run.example_p99 = ms(percentile(&totals, 99.0));
    run.example_max = ms(percentile(&totals, 100.0));
    run.example_queue_wait = median(&waits);
    run.example_run = median(&runs);
    run.example_engine = median(&engines);
    run.example_client = median(&clients);
    eprintln!(
        "# phase 3: {} example jobs, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; medians: queue wait {:.1} ms, run {:.1} ms (engine {:.1} ms), client-side rest {:.1} ms",
        run.example_ok, run.example_p50, run.example_p99, run.example_max,
        run.example_queue_wait, run.example_run, run.example_engine, run.example_client
    );
    // The timeline of the median job, for seeing where the time goes.
    timelines.sort_by_key(|(total, _)| *total);
    if let Some((_, timeline)) = timelines.get(timelines.len().saturating_sub(1) / 2) {
        eprintln!("# phase 3: timeline of the median job (ms after created_at):");
        for (at, what) in timeline {
            eprintln!("#   {at:8.1}  {what}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Report

fn print_table(o: &Opts, runs: &[Run]) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "vacal loadgen: {} run(s); {cores} cores; concurrency {}; phases 1-2 on --workers {}, phase 3 on --workers {}; {} creates; {} example jobs polled every {} ms",
        runs.len(),
        o.concurrency,
        o.workers,
        o.example_workers,
        o.creates,
        o.example_jobs,
        o.poll.as_millis()
    );
    println!();
    let mut header = String::from("| Metric |");
    let mut rule = String::from("|---|");
    if runs.len() > 1 {
        for i in 1..=runs.len() {
            header += &format!(" run {i} |");
            rule += "---:|";
        }
    }
    header += " median | target | met |";
    rule += "---:|---|---|";
    println!("{header}");
    println!("{rule}");
    let rows = [
        row('1', "creates/s (total / wall)", |r| r.create_rate, 0)
            .target("≥ 3000", |v| v >= 3000.0),
        row('1', "create p50 (ms)", |r| r.create_p50, 2),
        row('1', "create p99 (ms)", |r| r.create_p99, 2).target("< 5", |v| v < 5.0),
        row('1', "create max (ms)", |r| r.create_max, 2),
        row('1', "create errors", |r| r.create_errors as f64, 0).target("0", |v| v == 0.0),
        row(
            '1',
            "server CPU per create (ms)",
            |r| r.create_server_cpu_ms_per_req,
            3,
        ),
        row(
            '1',
            "loadgen CPU per create (ms)",
            |r| r.create_client_cpu_ms_per_req,
            3,
        ),
        row(
            '1',
            "jobs finished by the worker during phase 1",
            |r| r.jobs_done_after_phase1,
            0,
        ),
        row(
            '1',
            "other programs' CPU during phase 1 (cores)",
            |r| r.create_other_cores,
            2,
        ),
        row('2', "status requests/s", |r| r.status_rate, 0),
        row('2', "status p50 (ms)", |r| r.status_p50, 2),
        row('2', "status p99 (ms)", |r| r.status_p99, 2),
        row('2', "status max (ms)", |r| r.status_max, 2),
        row('2', "status errors", |r| r.status_errors as f64, 0).target("0", |v| v == 0.0),
        row(
            '2',
            "server CPU per status (ms)",
            |r| r.status_server_cpu_ms_per_req,
            3,
        ),
        row(
            '2',
            "loadgen CPU per status (ms)",
            |r| r.status_client_cpu_ms_per_req,
            3,
        ),
        row(
            '2',
            "other programs' CPU during phase 2 (cores)",
            |r| r.status_other_cores,
            2,
        ),
        row('3', "example submit→success p50 (ms)", |r| r.example_p50, 1)
            .target("< 100", |v| v < 100.0),
        row('3', "example submit→success p99 (ms)", |r| r.example_p99, 1)
            .target("< 100", |v| v < 100.0),
        row('3', "example submit→success max (ms)", |r| r.example_max, 1),
        row(
            '3',
            "example: queue wait created→started, median (ms)",
            |r| r.example_queue_wait,
            1,
        ),
        row(
            '3',
            "example: run started→completed, median (ms)",
            |r| r.example_run,
            1,
        ),
        row(
            '3',
            "example: engine (engine start log→completed), median (ms)",
            |r| r.example_engine,
            1,
        ),
        row(
            '3',
            "example: rest (POST + poll lag), median (ms)",
            |r| r.example_client,
            1,
        ),
        row(
            '3',
            "other programs' CPU during phase 3 (cores)",
            |r| r.example_other_cores,
            2,
        ),
        row('3', "example errors", |r| r.example_errors as f64, 0).target("0", |v| v == 0.0),
    ];
    for row in rows {
        if !o.phases.contains(row.phase) {
            continue;
        }
        let values: Vec<f64> = runs.iter().map(row.get).collect();
        let med = median(&values);
        let decimals = row.decimals;
        let mut line = format!("| {} |", row.name);
        if runs.len() > 1 {
            for v in &values {
                line += &format!(" {v:.decimals$} |");
            }
        }
        let met = match row.met {
            Some(met) if med.is_finite() => {
                if met(med) {
                    "yes"
                } else {
                    "**no**"
                }
            }
            Some(_) => "n/a",
            None => "",
        };
        line += &format!(" {med:.decimals$} | {} | {met} |", row.target);
        println!("{line}");
    }
}

/// One line of the results table: a value of each run, their median, and the target.
struct Row {
    /// The phase that measures it ('1', '2' or '3').
    phase: char,
    name: &'static str,
    get: fn(&Run) -> f64,
    decimals: usize,
    target: &'static str,
    met: Option<fn(f64) -> bool>,
}

fn row(phase: char, name: &'static str, get: fn(&Run) -> f64, decimals: usize) -> Row {
    Row {
        phase,
        name,
        get,
        decimals,
        target: "",
        met: None,
    }
}

impl Row {
    fn target(self, target: &'static str, met: fn(f64) -> bool) -> Row {
        Row {
            target,
            met: Some(met),
            ..self
        }
    }
}

fn main() -> ExitCode {
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}\n");
            }
            eprint!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        eprintln!("# load average before: {}", load.trim());
    }
    let mut runs = Vec::new();
    for r in 1..=o.runs {
        eprintln!("# run {r}/{}", o.runs);
        let mut run = Run::default();
        if o.phases.contains('1') {
            if let Err(e) = phases_1_2(&o, r, &mut run) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        if o.phases.contains('3') {
            if let Err(e) = phase_3(&o, &mut run) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        runs.push(run);
    }
    print_table(&o, &runs);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&sorted, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&sorted[..1], 99.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }

    #[test]
    fn medians_skip_missing_values() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn api_timestamps_parse_to_unix_seconds() {
        assert_eq!(parse_ts("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_ts("2024-01-15T14:25:00Z"), Some(1_705_328_700.0));
        let a = parse_ts("2024-02-29T23:59:59.250000Z").unwrap();
        let b = parse_ts("2024-03-01T00:00:00.500000Z").unwrap();
        assert!((b - a - 1.25).abs() < 1e-6);
        assert_eq!(parse_ts("2024-01-15T14:25:00"), None);
    }
}

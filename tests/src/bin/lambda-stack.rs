//! `lambda-stack`: the API as deployed on AWS, on this machine. Provisions the table,
//! queues and bucket on the AWS emulator at `AWS_ENDPOINT_URL` (loopback only), serves the
//! three Lambda binaries under `cargo lambda watch`, runs the worker's SQS event source
//! mapping and the janitor's schedule, and prints the API's base URL on stdout (one line)
//! once it answers. Runs until SIGINT or SIGTERM, then stops watch.
//!
//! Usually started by `bash tests/aws/lambda_stack.sh`, which starts moto first. The
//! functions inherit this process's environment, so the service's variables
//! (`CACHE_TTL`, `RATE_LIMIT_PER_MINUTE`, ...) apply to them.

use std::io::Write;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use vacal_aws::provision::require_loopback_endpoint;
use vacal_e2e::lambda_stack::{unique_prefix, LambdaStack, StackOptions};

const USAGE: &str = "usage: lambda-stack [--prefix NAME] [--janitor-every SECS] \
[--concurrency N] [--batch-size N] [--visibility-timeout SECS]

  --prefix               names of the table, queues and bucket (default: vacal-<pid>-<n>)
  --janitor-every        seconds between janitor runs (default 5)
  --concurrency          instances of each function at once (default 2)
  --batch-size           SQS messages per worker invocation, 1-10 (default 10)
  --visibility-timeout   seconds before a failed delivery comes back (default 120)";

fn parse_args() -> Result<StackOptions, String> {
    let mut options = StackOptions::new(&unique_prefix("vacal"));
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let number = |max: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| format!("{flag}: expected a number from 1 to {max}, got {value}"))
        };
        match flag.as_str() {
            "--prefix" => options.prefix = value.clone(),
            "--janitor-every" => options.janitor_every = Duration::from_secs(number(3600)?),
            "--concurrency" => options.watch.concurrency = number(16)? as usize,
            "--batch-size" => options.batch_size = number(10)? as i32,
            "--visibility-timeout" => options.visibility_secs = number(43_200)? as u32,
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(options)
}

#[tokio::main]
async fn main() {
    let options = parse_args().unwrap_or_else(|e| {
        eprintln!("lambda-stack: {e}");
        std::process::exit(2);
    });
    let endpoint = require_loopback_endpoint().unwrap_or_else(|e| {
        eprintln!("lambda-stack: {e}");
        std::process::exit(2);
    });
    // Installed before the slow start, so a signal during the first build is not lost.
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    eprintln!(
        "lambda-stack: resources {}-* on {endpoint}; starting cargo lambda watch (the first \
         start compiles the three functions)",
        options.prefix
    );
    let mut stack = LambdaStack::launch(options).await.unwrap_or_else(|e| {
        eprintln!("lambda-stack: {e}");
        std::process::exit(1);
    });
    let code = tokio::select! {
        ready = stack.ready() => match ready {
            Ok(()) => None,
            Err(e) => {
                eprintln!("lambda-stack: {e}");
                Some(1)
            }
        },
        _ = interrupt.recv() => Some(130),
        _ = terminate.recv() => Some(143),
    };
    if let Some(code) = code {
        stack.stop().await;
        std::process::exit(code);
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "{}", stack.api_url());
    let _ = stdout.flush();
    eprintln!(
        "lambda-stack: API at {} (watch at {}); SIGINT or SIGTERM stops it",
        stack.api_url(),
        stack.watch.base()
    );
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
    eprintln!("lambda-stack: stopping");
    stack.stop().await;
}

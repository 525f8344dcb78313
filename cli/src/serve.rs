//! `vacal serve`: the API, N workers and the janitor in one process on SQLite.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use vacal_core::{Config, Janitor, JobService, Worker};

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Port to listen on (0 picks a free one and prints it).
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    bind: String,
    /// Where the SQLite database and results live.
    #[arg(long, default_value = "./vacal-data")]
    data_dir: PathBuf,
    /// Worker tasks running jobs.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Seconds between janitor passes (timeouts, expired leases, batch repair).
    #[arg(long, default_value_t = 1.0)]
    janitor_interval: f64,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let config = Config::from_env().map_err(|e| e.to_string())?;
    let ports = vacal_local::ports(&args.data_dir)
        .map_err(|e| format!("cannot open data dir {}: {e}", args.data_dir.display()))?;
    let service = Arc::new(JobService::new(ports.clone(), config.clone()));
    let addr: SocketAddr = format!("{}:{}", args.bind, args.port)
        .parse()
        .map_err(|e| format!("bad listen address {}:{}: {e}", args.bind, args.port))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    // The first line on stdout tells scripts and tests where to connect.
    println!("vacal listening on http://{bound}");
    tracing::info!(%bound, data_dir = %args.data_dir.display(), workers = args.workers, "vacal serve started");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..args.workers.max(1) {
        let worker = Worker::new(ports.clone(), config.clone());
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move { worker.run(stop).await }));
    }
    let janitor = Janitor::new(ports.clone(), config.clone());
    let period = Duration::from_secs_f64(args.janitor_interval.max(0.05));
    let stop = stop_rx.clone();
    tasks.push(tokio::spawn(async move { janitor.run(period, stop).await }));

    let app = vacal_http::router(service);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!("shutting down: letting in-flight jobs finish");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

pub fn run(args: ServeArgs) -> ExitCode {
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

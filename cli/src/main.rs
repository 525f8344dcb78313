//! `vacal`: calibrate verbal-autopsy CSMFs from the command line.

mod calibrate_cmd;
mod client;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "vacal",
    version,
    about = "Calibrate verbal-autopsy cause-of-death fractions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    connection: client::Connection,
}

#[derive(Subcommand)]
enum Command {
    /// Run one calibration and print the result.
    Calibrate(calibrate_cmd::CalibrateArgs),
    /// Serve the job API with workers and the janitor, on an embedded SQLite store.
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Calibrate(args) => calibrate_cmd::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Client(command) => client::run(command, cli.connection),
    }
}

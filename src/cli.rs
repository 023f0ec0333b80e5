//! Command line: `serve` (default), `check`, `simulate`, `demo`.

use clap::{Parser, Subcommand};

use crate::simulator;

#[derive(Parser, Debug)]
#[command(
    name = "rentcache",
    version,
    about = "Caching reverse proxy for the Rentman API"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the Rentman simulator alone.
    Simulate(simulator::SimOptions),
}

/// Parses the command line, runs the chosen subcommand and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Simulate(opts)) => simulator::run(opts),
        None => 0,
    }
}

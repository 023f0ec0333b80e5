//! A Rentman API simulator (stub: being written).

use clap::Args;

/// Options of `rentcache simulate`.
#[derive(Args, Debug, Clone)]
pub struct SimOptions {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
}

/// Runs the simulator alone until the process is stopped.
pub fn run(_opts: SimOptions) -> i32 {
    unimplemented!()
}

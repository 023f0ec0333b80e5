//! A Rentman API simulator (stub: being written on the `simulator` branch).

use std::sync::Arc;

use clap::Args;

/// Options of `rentcache simulate`.
#[derive(Args, Debug, Clone)]
pub struct SimOptions {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8081)]
    pub port: u16,
    #[arg(long, default_value_t = 350)]
    pub latency_ms: u64,
}

pub struct Simulator;

impl Simulator {
    pub fn new(_opts: SimOptions) -> Arc<Simulator> {
        Arc::new(Simulator)
    }

    pub fn service(self: &Arc<Self>) -> pingora::services::background::GenBackgroundService<Idle> {
        pingora::services::background::background_service("simulator stub", Idle)
    }
}

pub struct Idle;

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Idle {
    async fn start(&self, _shutdown: pingora::server::ShutdownWatch) {}
}

/// Runs the simulator alone until the process is stopped.
pub fn run(_opts: SimOptions) -> i32 {
    unimplemented!()
}

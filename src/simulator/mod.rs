//! A Rentman API look-alike to test and benchmark the proxy against, since the real API
//! cannot be reached from here (see `shared/rentman/API.md` for what it imitates).
//!
//! It serves `/propertyadvertising.php` and `/propertymedia.php` from a data set generated
//! from `--seed` (same seed, same bytes, in every process), with Rentman's quirks (PHP-style
//! JSON, string flags, base64 media wrapped at 76 columns, HTTP 200 for a bad token) and
//! injectable faults (latency, 5xx, resets, stalls, 429s, validators). Tests steer and
//! observe it through `/__sim/*`:
//!
//! | request | does |
//! |---|---|
//! | `GET /__sim/stats` | counters of API requests, the last 100 of them (tokens redacted) |
//! | `POST /__sim/reset` | zeroes the counters |
//! | `GET`/`POST /__sim/faults` | reads / changes the run-time settings (JSON) |
//! | `POST /__sim/mutate?propref=N` | changes one property (its price goes up a step) |
//! | `GET /__sim/dataset` | proprefs, featured ones and media file names, uncounted |

mod api;
mod dataset;
mod faults;
mod handler;
pub mod jpeg;
mod media;
mod options;
pub mod pdf;
mod php_json;
mod request;
mod seeds;
mod server;
mod stats;
mod vocab;

use std::sync::Arc;

use parking_lot::RwLock;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

pub use handler::{Outcome, Response};
pub use options::{BadTokenBody, Settings, SimOptions};
pub use request::Request;
pub use server::SimApp;

use api::BodyCache;
use dataset::Dataset;
use faults::{Dice, RateLimiter};
use stats::Stats;

/// Memory for built answers. A full list with images is ~20 MB and a media answer ~0.2 MB,
/// so this holds the hot set of a benchmark several times over.
const BODY_CACHE_BYTES: usize = 256 << 20;

/// The simulator's shared state: options, data set, run-time settings and counters.
pub struct Simulator {
    opts: SimOptions,
    settings: RwLock<Settings>,
    /// Swapped copy-on-write by mutate, so a request in flight keeps a consistent snapshot.
    data: RwLock<Arc<Dataset>>,
    stats: Stats,
    dice: Dice,
    limiter: RateLimiter,
    cache: BodyCache,
}

impl Simulator {
    /// Generates the data set (text only; media are made on demand) and the initial settings.
    pub fn new(opts: SimOptions) -> Arc<Simulator> {
        let data = Dataset::generate(opts.seed, opts.properties, opts.int_flags);
        Arc::new(Simulator {
            settings: RwLock::new(Settings::from_options(&opts)),
            data: RwLock::new(Arc::new(data)),
            stats: Stats::default(),
            dice: Dice::new(opts.seed),
            limiter: RateLimiter::default(),
            cache: BodyCache::new(BODY_CACHE_BYTES),
            opts,
        })
    }

    pub fn options(&self) -> &SimOptions {
        &self.opts
    }

    /// The current run-time settings (as `GET /__sim/faults` shows them).
    pub fn settings(&self) -> Settings {
        self.settings.read().clone()
    }

    /// `host:port` to listen on (IPv6 literals bracketed).
    pub fn listen_address(&self) -> String {
        let host = self.opts.host.trim_start_matches('[').trim_end_matches(']');
        if host.contains(':') {
            format!("[{host}]:{}", self.opts.port)
        } else {
            format!("{host}:{}", self.opts.port)
        }
    }

    /// A Pingora listening service serving this simulator on `--host:--port` with its own
    /// `--threads`, to be added to a `pingora::server::Server` by the caller (`rentcache demo`
    /// runs the simulator and the proxy in one process this way). `Service<SimApp>`
    /// implements `pingora::services::ServiceWithDependents`, which `Server::add_service`
    /// takes.
    pub fn service(self: &Arc<Self>) -> Service<SimApp> {
        let addr = self.listen_address();
        let mut service = Service::new("rentman simulator".to_string(), SimApp::new(self.clone()));
        service.add_tcp(&addr);
        if let (Some(port), Some(cert), Some(key)) =
            (self.opts.tls_port, &self.opts.tls_cert, &self.opts.tls_key)
        {
            let tls_addr = format!("{}:{port}", self.opts.host);
            if let Err(e) = service.add_tls(&tls_addr, cert, key) {
                log::error!("simulator: cannot serve HTTPS on {tls_addr}: {e}");
            } else {
                log::info!("Rentman simulator also on https://{tls_addr}");
            }
        }
        service.threads = Some(self.opts.threads);
        log::info!(
            "Rentman simulator on http://{addr}: {} properties, seed {}",
            self.opts.properties,
            self.opts.seed
        );
        service
    }
}

/// `rentcache simulate`: runs a Pingora server with just the simulator until SIGINT or
/// SIGTERM (1 s grace period). Returns the process exit code: 0 after a signal, 1 if the
/// address cannot be bound.
pub fn run(opts: SimOptions) -> i32 {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .try_init();
    let sim = Simulator::new(opts);
    let addr = sim.listen_address();
    // Pingora binds inside a spawned task and only logs a failure there, which would leave a
    // process that runs but never listens; check first so the caller gets an exit code.
    let tls_addr = sim.opts.tls_port.map(|p| format!("{}:{p}", sim.opts.host));
    for a in std::iter::once(&addr).chain(tls_addr.as_ref()) {
        if let Err(e) = bind_without_listening(a) {
            log::error!("cannot listen on {a}: {e}");
            return 1;
        }
    }
    exit_if_listener_fails();

    let conf = ServerConf {
        threads: sim.opts.threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server.add_service(sim.service());
    server.run(RunArgs::default());
    0
}

/// A socket bound to `addr` that does not listen. A listening check would accept the
/// connections of a client already waiting for the simulator to come up, then reset them when
/// it closed, before pingora listened for real.
fn bind_without_listening(addr: &str) -> std::io::Result<tokio::net::TcpSocket> {
    use std::net::ToSocketAddrs;
    let sa = addr.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to bind")
    })?;
    let socket = if sa.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As pingora binds: a port whose old connections linger in TIME_WAIT is still usable.
    socket.set_reuseaddr(true)?;
    socket.bind(sa)?;
    Ok(socket)
}

/// Turns Pingora's panic on a failed bind (a port taken between our check and its bind)
/// into a process exit, so a test harness retrying on another port notices.
fn exit_if_listener_fails() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.contains("Failed to build listeners") {
            std::process::exit(1);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bind_check_neither_accepts_nor_misses_a_taken_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        assert!(bind_without_listening(&addr).is_err(), "{addr} is taken");
        drop(taken);
        let held = bind_without_listening(&addr).expect("free again");
        // Clients waiting for the simulator must not get in until pingora listens.
        assert!(std::net::TcpStream::connect(&addr).is_err());
        drop(held);
    }

    #[test]
    fn listen_address_brackets_ipv6() {
        let mut o = SimOptions {
            properties: 10,
            ..SimOptions::default()
        };
        assert_eq!(Simulator::new(o.clone()).listen_address(), "127.0.0.1:8081");
        o.host = "::1".into();
        assert_eq!(Simulator::new(o.clone()).listen_address(), "[::1]:8081");
        o.host = "[::1]".into();
        assert_eq!(Simulator::new(o).listen_address(), "[::1]:8081");
    }
}

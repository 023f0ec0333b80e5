//! Connections to the real upstream: peers with the configured TLS and timeouts, pooled by
//! pingora's connector, with DNS answers reused for a minute (resolving on every miss would
//! add a lookup to every upstream call).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pingora::connectors::http::Connector;
use pingora::connectors::ConnectorOptions;
use pingora::upstreams::peer::HttpPeer;

use super::failure::Failure;
use crate::config::Upstream;

const DNS_REUSE: Duration = Duration::from_secs(60);

/// Idle upstream connections kept for reuse (pingora's own default).
const DEFAULT_POOL_SIZE: usize = 128;

/// Idle upstream connections are kept this long for reuse.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(55);

/// Addresses of (host, port), and when they were looked up.
type Resolved = HashMap<(String, u16), (Instant, Vec<SocketAddr>)>;

pub struct Origin {
    pub connector: Connector,
    resolved: Mutex<Resolved>,
}

impl Origin {
    /// `ca_file`: the authorities trusted for the upstream's certificate (checked when the
    /// config was loaded); `None`: the platform's store.
    pub fn new(ca_file: Option<&str>) -> Origin {
        let options = ca_file.map(|ca| {
            let mut o = ConnectorOptions::new(DEFAULT_POOL_SIZE);
            o.ca_file = Some(ca.to_string());
            o
        });
        Origin {
            connector: Connector::new(options),
            resolved: Mutex::new(HashMap::new()),
        }
    }

    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Failure> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        let key = (host.to_string(), port);
        if let Some((at, addrs)) = self.resolved.lock().get(&key) {
            if let Some(a) = addrs.first().filter(|_| at.elapsed() < DNS_REUSE) {
                return Ok(*a);
            }
        }
        match tokio::net::lookup_host((host, port)).await {
            Ok(found) => {
                let addrs: Vec<SocketAddr> = found.collect();
                let first = *addrs
                    .first()
                    .ok_or_else(|| Failure::Other(format!("{host} has no address")))?;
                self.resolved.lock().insert(key, (Instant::now(), addrs));
                Ok(first)
            }
            Err(e) => {
                // Keep using the last good answer while DNS is failing.
                if let Some((_, addrs)) = self.resolved.lock().get(&key) {
                    if let Some(a) = addrs.first() {
                        return Ok(*a);
                    }
                }
                Err(Failure::Other(format!("cannot resolve {host}: {e}")))
            }
        }
    }

    /// The peer for `up`, with `read_timeout` for this request.
    pub async fn peer(&self, up: &Upstream, read_timeout: Duration) -> Result<HttpPeer, Failure> {
        let addr = self.resolve(&up.host, up.port).await?;
        let mut peer = HttpPeer::new(addr, up.tls, up.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(up.connect_timeout);
        o.total_connection_timeout = Some(up.connect_timeout);
        o.read_timeout = Some(read_timeout);
        o.write_timeout = Some(read_timeout);
        o.idle_timeout = Some(IDLE_TIMEOUT);
        o.verify_cert = up.verify_tls;
        o.verify_hostname = up.verify_tls;
        Ok(peer)
    }
}

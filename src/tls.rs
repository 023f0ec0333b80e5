//! TLS for the public listener: the certificate chain and key are read from files, checked to
//! belong together, and swapped in when the files change (a renewal), with no restart and
//! no dropped connection. A pair that cannot be used keeps the last good one in service.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{error, info};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::ClientHello;
use pingora::tls::{CryptoProvider, ResolvesServerCert};

/// How often the files are checked for a change.
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The chain and key in `cert` and `key` (PEM), checked to belong together.
pub fn load_pair(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    pingora::tls::install_default_crypto_provider();
    let (chain, key_der) = match pingora::tls::load_certs_and_key_files(cert, key) {
        Ok(Some(pair)) => pair,
        Ok(None) => return Err(format!("`{cert}` and `{key}` hold no certificate and key")),
        Err(e) => return Err(format!("cannot read `{cert}` or `{key}`: {e}")),
    };
    let provider =
        CryptoProvider::get_default().ok_or_else(|| "no TLS crypto provider".to_string())?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("`{key}` is not a usable private key: {e}"))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()
        .map_err(|e| format!("the key in `{key}` does not belong to `{cert}`: {e}"))?;
    Ok(Arc::new(pair))
}

/// What the files held when last read (size and modification time of each).
type Seen = Option<[(u64, std::time::SystemTime); 2]>;

fn seen(cert: &str, key: &str) -> Seen {
    let one = |p: &str| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.len(), m.modified().ok()?))
    };
    Some([one(cert)?, one(key)?])
}

/// The listener's certificate, as rustls asks for it on every handshake.
#[derive(Debug)]
pub struct Certificates {
    current: ArcSwap<CertifiedKey>,
    cert: String,
    key: String,
    seen: Mutex<Seen>,
}

impl Certificates {
    pub fn load(cert: &str, key: &str) -> Result<Arc<Certificates>, String> {
        let before = seen(cert, key);
        let pair = load_pair(cert, key)?;
        Ok(Arc::new(Certificates {
            current: ArcSwap::new(pair),
            cert: cert.to_string(),
            key: key.to_string(),
            seen: Mutex::new(before),
        }))
    }

    /// Reads the files again if they changed; whether a new pair is in service.
    pub fn reload_if_changed(&self) -> bool {
        let now = seen(&self.cert, &self.key);
        if now.is_none() || *self.seen.lock() == now {
            return false;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                self.current.store(pair);
                *self.seen.lock() = now;
                info!("TLS certificate reloaded from {}", self.cert);
                true
            }
            Err(e) => {
                // Mid-renewal the two files may not match yet: try again at the next check,
                // and say so once per change.
                *self.seen.lock() = now;
                error!("TLS certificate not reloaded, the last good one stays: {e}");
                false
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Watches the certificate files.
pub struct TlsReloadService(pub Arc<Certificates>);

#[async_trait]
impl BackgroundService for TlsReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.changed() => return,
            }
            self.0.reload_if_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_file(name: &str) -> String {
        format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn pairs_are_checked() {
        assert!(load_pair(&test_file("origin.pem"), &test_file("origin.key")).is_ok());
        let mismatched = load_pair(&test_file("origin.pem"), &test_file("wrong-name.key"));
        assert!(mismatched.unwrap_err().contains("does not belong"));
        assert!(load_pair(&test_file("missing.pem"), &test_file("origin.key")).is_err());
        assert!(load_pair(&test_file("README.md"), &test_file("README.md")).is_err());
    }
}

//! The gateway's service as pingora starts it, ready only once its socket accepts.
//!
//! Pingora marks a listening service ready before it has even bound its listeners, so a proxy
//! listener that merely started after the gateway could still take a client request while the
//! gateway's socket did not exist yet, and answer it 502. The proxy's service depends on this
//! one instead, and this one says ready only when a connection to the socket succeeds.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use log::warn;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::{Service, ServiceReadyNotifier, ServiceWithDependents};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// Past this, dependents are released anyway: a gateway that cannot bind has already failed
/// loudly, and holding the proxy back for ever would only hide that.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// Binding a local socket takes microseconds; polling this often costs nothing.
const PROBE_EVERY: Duration = Duration::from_millis(1);

/// A listening service on a Unix socket that reports ready once that socket accepts.
pub struct ReadyWhenAccepting<S> {
    inner: S,
    socket: PathBuf,
}

impl<S> ReadyWhenAccepting<S> {
    pub fn new(inner: S, socket: PathBuf) -> Self {
        ReadyWhenAccepting { inner, socket }
    }
}

#[async_trait]
impl<S: Service> ServiceWithDependents for ReadyWhenAccepting<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready: ServiceReadyNotifier,
    ) {
        let socket = self.socket.clone();
        let probe = async move {
            let deadline = Instant::now() + READY_LIMIT;
            while UnixStream::connect(&socket).await.is_err() {
                if Instant::now() >= deadline {
                    warn!(
                        "origin gateway: {} does not accept connections yet; starting the proxy anyway",
                        socket.display()
                    );
                    break;
                }
                tokio::time::sleep(PROBE_EVERY).await;
            }
            ready.notify_ready();
        };
        let serve = self.inner.start_service(fds, shutdown, listeners_per_fd);
        tokio::join!(serve, probe);
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tokio::sync::{watch, Notify};

    /// A listening service that binds its socket only when told to.
    struct BindsWhenTold {
        socket: PathBuf,
        entered: Arc<Notify>,
        bind_now: Arc<Notify>,
    }

    #[async_trait]
    impl Service for BindsWhenTold {
        async fn start_service(
            &mut self,
            _fds: Option<ListenFds>,
            mut shutdown: ShutdownWatch,
            _listeners_per_fd: usize,
        ) {
            self.entered.notify_one();
            self.bind_now.notified().await;
            let listener = tokio::net::UnixListener::bind(&self.socket).unwrap();
            loop {
                tokio::select! {
                    _ = listener.accept() => {}
                    _ = shutdown.changed() => return,
                }
            }
        }

        fn name(&self) -> &str {
            "binds when told"
        }
    }

    #[tokio::test]
    async fn ready_only_once_the_socket_accepts() {
        let socket =
            std::env::temp_dir().join(format!("rentcache-ready-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let entered = Arc::new(Notify::new());
        let bind_now = Arc::new(Notify::new());
        let mut svc = ReadyWhenAccepting::new(
            BindsWhenTold {
                socket: socket.clone(),
                entered: entered.clone(),
                bind_now: bind_now.clone(),
            },
            socket.clone(),
        );
        let (ready_tx, mut ready) = watch::channel(false);
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            svc.start_service(None, shutdown, 1, ServiceReadyNotifier::new(ready_tx))
                .await
        });

        entered.notified().await;
        // Started but not listening: pingora's own listening services would be ready here.
        let early = tokio::time::timeout(Duration::from_millis(200), ready.wait_for(|r| *r))
            .await
            .is_ok();
        assert!(!early, "ready before the socket was bound");

        bind_now.notify_one();
        ready.wait_for(|r| *r).await.unwrap();
        assert!(UnixStream::connect(&socket).await.is_ok());

        stop.send(true).unwrap();
        task.await.unwrap();
        let _ = std::fs::remove_file(&socket);
    }
}

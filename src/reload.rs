//! Hot reload: on SIGHUP, on a change of the config file, or on `POST /reload`, the file is
//! read and validated like `rentcache check` does; a valid config is swapped in atomically
//! (requests in flight finish under the one they started with), an invalid one is rejected
//! with the same messages and the last good config stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{error, info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::config::{self, Config, ConfigErrors, SharedConfig};
use crate::metrics::Metrics;

/// How often the file is looked at for changes.
const POLL: Duration = Duration::from_secs(1);

pub struct Reloader {
    path: PathBuf,
    config: SharedConfig,
    metrics: Arc<Metrics>,
    /// The text of the file as last read, to notice changes.
    seen: Mutex<Option<String>>,
    /// Serialises reloads (a signal and a file change at once).
    busy: tokio::sync::Mutex<()>,
}

/// Settings read once at start: a reload that changes them says a restart is needed.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut v = Vec::new();
    if old.server.listen != new.server.listen {
        v.push("server.listen");
    }
    if old.server.threads != new.server.threads {
        v.push("server.threads");
    }
    if old.server.compression_level != new.server.compression_level {
        v.push("server.compression_level");
    }
    if old.server.write_buffer != new.server.write_buffer {
        v.push("server.write_buffer");
    }
    if old.server.grace_period != new.server.grace_period {
        v.push("server.grace_period");
    }
    if old.admin.listen != new.admin.listen || old.admin.token_env != new.admin.token_env {
        v.push("admin");
    }
    if old.memory.max_bytes != new.memory.max_bytes
        || old.memory.max_object_bytes != new.memory.max_object_bytes
        || old.memory.body_dir != new.memory.body_dir
    {
        v.push("memory");
    }
    let redis = |c: &Config| {
        c.redis.as_ref().map(|r| {
            (
                r.nodes.clone(),
                r.prefix.clone(),
                r.max_object_bytes,
                r.connect_timeout,
                r.op_timeout,
                r.lease,
            )
        })
    };
    if redis(old) != redis(new) {
        v.push("redis");
    }
    if old.upstream.max_concurrent != new.upstream.max_concurrent {
        v.push("upstream.max_concurrent");
    }
    let log = |c: &Config| {
        let a = &c.access_log;
        (a.to.clone(), a.format, a.sample.to_bits(), a.queue)
    };
    if log(old) != log(new) {
        v.push("access_log");
    }
    if old.upstream.token_env != new.upstream.token_env {
        v.push("upstream.token_env");
    }
    // Each request uses the new timeouts at once, but the safety limits derived from them at
    // start (how long a fill may hold the cache lock, how long the proxy waits on its own
    // upstream gateway) do not grow with them.
    let bounds = |c: &Config| {
        (
            c.upstream.connect_timeout,
            c.upstream.read_timeout,
            c.upstream.budget.queue_wait,
        )
    };
    if bounds(old) != bounds(new) {
        v.push("the safety limits derived from upstream.connect_timeout, read_timeout and budget.queue_wait");
    }
    v
}

impl Reloader {
    pub fn new(path: PathBuf, config: SharedConfig, metrics: Arc<Metrics>) -> Reloader {
        let seen = std::fs::read_to_string(&path).ok();
        Reloader {
            path,
            config,
            metrics,
            seen: Mutex::new(seen),
            busy: tokio::sync::Mutex::new(()),
        }
    }

    /// Reads, validates and (if valid) swaps in the config file; `why` names the trigger.
    pub async fn reload(&self, why: &str) -> Result<Arc<Config>, ConfigErrors> {
        let _one_at_a_time = self.busy.lock().await;
        *self.seen.lock() = std::fs::read_to_string(&self.path).ok();
        // A loader bug must cost one rejected reload, not this service: a panic here would end
        // the task that listens for SIGHUP and file changes, and no later edit would apply.
        match config::load_file_caught(&self.path) {
            Ok(new) => {
                let old = self.config.load_full();
                let restart = restart_only(&old, &new);
                let new = Arc::new(new);
                self.config.store(new.clone());
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                info!(
                    "config reloaded ({why}) from {}: {} routes",
                    self.path.display(),
                    new.routes.len()
                );
                if !restart.is_empty() {
                    warn!(
                        "changes to {} take effect after a restart",
                        restart.join(", ")
                    );
                }
                Ok(new)
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failed"])
                    .inc();
                for line in e.to_string().lines() {
                    error!("{line}");
                }
                error!(
                    "config reload ({why}) rejected: {} error(s); the last good config stays in force",
                    e.errors.len()
                );
                Err(e)
            }
        }
    }

    fn changed(&self) -> bool {
        let now = std::fs::read_to_string(&self.path).ok();
        now.is_some() && *self.seen.lock() != now
    }
}

/// Installs the SIGHUP handler right away: pingora leaves SIGHUP at its default action,
/// which kills the process. Once installed (by a tokio signal listener), it stays for the
/// life of the process; the reload service listens on it later.
pub fn keep_sighup_from_killing() {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            error!("cannot keep SIGHUP from stopping the process ({e})");
            return;
        }
    };
    rt.block_on(async {
        let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    });
}

pub struct ReloadService(pub Arc<Reloader>);

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| error!("cannot listen for SIGHUP ({e}): reloading on file changes only"))
            .ok();
        loop {
            let signalled = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = signalled => {
                    let _ = self.0.reload("SIGHUP").await;
                }
                _ = tokio::time::sleep(POLL) => {
                    if self.0.changed() {
                        let _ = self.0.reload("file changed").await;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

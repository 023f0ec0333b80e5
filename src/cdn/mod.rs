//! Purging the CDNs in front of rentcache when rentcache purges (an operator's purge, a
//! dependency cascade, change detection): Fastly by surrogate key (softly when asked),
//! Cloudflare by tag or URL, and a webhook for anything else.
//!
//! A purge never waits for a CDN: it is queued (bounded; a full queue drops and counts), a
//! background service gathers what arrives within `batch_delay` into as few calls as each
//! API allows, and retries a failed call with exponential backoff (1 s, 2 s, 4 s...). Tokens
//! come from the environment and never reach a log, a metric or a response.

mod client;
pub mod providers;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{CdnPurge, PurgeProvider};
use crate::metrics::Metrics;
use crate::storage::{OuterPurge, PurgeSink};
use crate::upstream::Secret;
use client::ApiClient;

/// One provider as the service uses it: its config, token, and figures.
struct Target {
    provider: PurgeProvider,
    token: Option<Secret>,
    sent: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// Figures for `/stats`.
pub struct CdnStats {
    targets: Vec<Arc<Target>>,
    queued: AtomicU64,
    dropped: AtomicU64,
}

impl CdnStats {
    pub fn snapshot(&self) -> Value {
        let providers: Vec<Value> = self
            .targets
            .iter()
            .map(|t| {
                json!({
                    "provider": t.provider.name(),
                    "token": if t.token.is_some() { "set" } else { "missing" },
                    "calls_ok": t.sent.load(Ordering::Relaxed),
                    "calls_failed": t.failed.load(Ordering::Relaxed),
                    "retries": t.retried.load(Ordering::Relaxed),
                    "last_error": t.last_error.lock().clone(),
                })
            })
            .collect();
        json!({
            "providers": providers,
            "queued": self.queued.load(Ordering::Relaxed),
            "dropped": self.dropped.load(Ordering::Relaxed),
        })
    }

    /// The providers purged, by name (for `/explain`).
    pub fn provider_names(&self) -> Vec<&'static str> {
        self.targets.iter().map(|t| t.provider.name()).collect()
    }
}

/// The side storage sees: it queues purges.
pub struct CdnQueue {
    tx: mpsc::Sender<OuterPurge>,
    stats: Arc<CdnStats>,
    metrics: Arc<Metrics>,
}

impl PurgeSink for CdnQueue {
    fn purge(&self, purge: OuterPurge) {
        match self.tx.try_send(purge) {
            Ok(()) => {
                self.stats.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                for t in &self.stats.targets {
                    self.metrics
                        .cdn_purges
                        .with_label_values(&[t.provider.name(), "dropped"])
                        .inc();
                }
            }
        }
        self.metrics
            .cdn_purge_queue
            .set(self.stats.queued.load(Ordering::Relaxed) as i64);
    }
}

/// The background side: sends what is queued.
pub struct CdnService {
    rx: Mutex<Option<mpsc::Receiver<OuterPurge>>>,
    stats: Arc<CdnStats>,
    metrics: Arc<Metrics>,
    client: ApiClient,
    batch_delay: Duration,
    retries: u32,
}

/// The queue and its sender for `config`, or `None` when no CDN is configured.
pub fn purger(config: &CdnPurge, metrics: Arc<Metrics>) -> Option<(Arc<CdnQueue>, CdnService)> {
    if config.providers.is_empty() {
        return None;
    }
    let targets: Vec<Arc<Target>> = config
        .providers
        .iter()
        .map(|p| {
            let env = match p {
                PurgeProvider::Fastly { token_env, .. }
                | PurgeProvider::Cloudflare { token_env, .. } => Some(token_env.as_str()),
                PurgeProvider::Webhook { token_env, .. } => token_env.as_deref(),
            };
            let token = env.and_then(Secret::from_env);
            match (env, &token) {
                (Some(var), None) => warn!(
                    "CDN purges through {}: ${var} is not set, its API will refuse them",
                    p.name()
                ),
                _ => info!("CDN purges go to {} as well", p.name()),
            }
            Arc::new(Target {
                provider: p.clone(),
                token,
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                retried: AtomicU64::new(0),
                last_error: Mutex::new(None),
            })
        })
        .collect();
    let stats = Arc::new(CdnStats {
        targets,
        queued: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
    });
    let (tx, rx) = mpsc::channel(config.queue_size.max(1));
    let queue = Arc::new(CdnQueue {
        tx,
        stats: stats.clone(),
        metrics: metrics.clone(),
    });
    let service = CdnService {
        rx: Mutex::new(Some(rx)),
        stats,
        metrics,
        client: ApiClient::default(),
        batch_delay: config.batch_delay,
        retries: config.retries,
    };
    Some((queue, service))
}

impl CdnService {
    pub fn stats(&self) -> Arc<CdnStats> {
        self.stats.clone()
    }

    /// What arrives within `batch_delay` of `first`, merged: one purge per kind (soft, hard).
    async fn gather(
        &self,
        rx: &mut mpsc::Receiver<OuterPurge>,
        first: OuterPurge,
    ) -> Vec<OuterPurge> {
        let mut soft = OuterPurge {
            soft: true,
            ..Default::default()
        };
        let mut hard = OuterPurge::default();
        let mut add = |p: OuterPurge| {
            let into = if p.soft { &mut soft } else { &mut hard };
            into.tags.extend(p.tags);
            into.keys.extend(p.keys);
        };
        add(first);
        let mut taken = 1u64;
        let deadline = tokio::time::Instant::now() + self.batch_delay;
        while let Ok(Some(p)) = tokio::time::timeout_at(deadline, rx.recv()).await {
            add(p);
            taken += 1;
        }
        self.stats.queued.fetch_sub(
            taken.min(self.stats.queued.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.metrics
            .cdn_purge_queue
            .set(self.stats.queued.load(Ordering::Relaxed) as i64);
        // A hard purge of something also purged softly wins.
        [hard, soft]
            .into_iter()
            .filter(|p| !p.tags.is_empty() || !p.keys.is_empty())
            .collect()
    }

    /// Sends one purge to every provider, each request retried with backoff.
    async fn send(&self, purge: &OuterPurge, shutdown: &mut ShutdownWatch) {
        for t in &self.stats.targets {
            for req in providers::requests(&t.provider, purge) {
                let token = t
                    .token
                    .as_ref()
                    .map(|s| providers::token_header(&t.provider, s.expose()));
                let mut attempt = 0;
                loop {
                    let outcome = match self.client.post(&req, token.clone()).await {
                        Ok(status) if (200..300).contains(&status) => Ok(()),
                        Ok(status) => {
                            Err((status == 429 || status >= 500, format!("HTTP {status}")))
                        }
                        Err(e) => Err((true, e)),
                    };
                    let name = t.provider.name();
                    match outcome {
                        Ok(()) => {
                            t.sent.fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .cdn_purges
                                .with_label_values(&[name, "ok"])
                                .inc();
                            break;
                        }
                        Err((retry, why)) if retry && attempt < self.retries => {
                            attempt += 1;
                            t.retried.fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .cdn_purge_retries
                                .with_label_values(&[name])
                                .inc();
                            let pause =
                                Duration::from_secs(1u64 << attempt.min(6).saturating_sub(1));
                            let pause = pause + Duration::from_millis(rand::random::<u64>() % 250);
                            tokio::select! {
                                _ = tokio::time::sleep(pause) => {}
                                _ = shutdown.changed() => return,
                            }
                            *t.last_error.lock() = Some(why);
                        }
                        Err((_, why)) => {
                            warn!("CDN purge through {name} failed: {why}");
                            t.failed.fetch_add(1, Ordering::Relaxed);
                            self.metrics
                                .cdn_purges
                                .with_label_values(&[name, "failed"])
                                .inc();
                            *t.last_error.lock() = Some(why);
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for CdnService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let Some(mut rx) = self.rx.lock().take() else {
            return;
        };
        loop {
            let first = tokio::select! {
                p = rx.recv() => p,
                _ = shutdown.changed() => return,
            };
            let Some(first) = first else { return };
            for purge in self.gather(&mut rx, first).await {
                self.send(&purge, &mut shutdown).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiBase;

    #[test]
    fn a_full_queue_drops_and_counts_without_waiting() {
        let config = CdnPurge {
            providers: vec![PurgeProvider::Webhook {
                url: ApiBase {
                    tls: false,
                    host: "127.0.0.1".into(),
                    port: 9,
                    path: "/".into(),
                },
                token_env: None,
                body: "{tags}".into(),
            }],
            queue_size: 2,
            batch_delay: Duration::from_millis(10),
            retries: 0,
        };
        let metrics = Arc::new(Metrics::new());
        let (queue, service) = purger(&config, metrics.clone()).expect("a purger");
        for i in 0..5 {
            queue.purge(OuterPurge {
                tags: vec![format!("property:{i}")],
                ..Default::default()
            });
        }
        let stats = service.stats().snapshot();
        assert_eq!(stats["queued"], 2);
        assert_eq!(stats["dropped"], 3);
        assert_eq!(
            metrics
                .cdn_purges
                .with_label_values(&["webhook", "dropped"])
                .get(),
            3
        );
        assert!(purger(&CdnPurge::default(), metrics).is_none());
    }
}

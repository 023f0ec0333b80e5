//! Per-route latency targets: once a second, each route's one-minute window is judged
//! against its target; a route over it logs one warning per window (not per request) naming
//! the figure and what the slow answers were, and counts
//! `rentcache_latency_target_breaches_total{route}`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::window::{Class, Summary, WINDOW};
use super::{mono_secs, Observer};
use crate::config::SharedConfig;

/// Fewer requests than this in a window say nothing about its percentiles.
pub const MIN_SAMPLES: u64 = 10;

/// A window over its target.
#[derive(Debug, Clone, PartialEq)]
pub struct Breach {
    pub figure: Duration,
    pub requests: u64,
    /// Requests over the target, per class, and the class with most of them.
    pub slow: [u64; 4],
    pub dominant: Option<Class>,
    /// Share of the slow requests' time spent waiting for Rentman.
    pub upstream_share: f64,
}

/// Whether `s` breaks the target (`quantile` of the answers within `limit`).
pub fn judge(s: &Summary, quantile: f64, limit: Duration) -> Option<Breach> {
    let requests = s.count();
    if requests < MIN_SAMPLES {
        return None;
    }
    let figure = s.quantile(quantile)?;
    if figure <= limit {
        return None;
    }
    let upstream_share = if s.slow_total_us == 0 {
        0.0
    } else {
        s.slow_upstream_us as f64 / s.slow_total_us as f64
    };
    Some(Breach {
        figure,
        requests,
        slow: s.above(limit),
        dominant: s.dominant(limit).map(|(c, _)| c),
        upstream_share,
    })
}

/// `p99` for 0.99, `p99.9` for 0.999.
pub fn label(quantile: f64) -> String {
    let p = (quantile * 1000.0).round() / 10.0;
    if p.fract() == 0.0 {
        format!("p{}", p as u64)
    } else {
        format!("p{p}")
    }
}

pub fn show(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 1.0 {
        format!("{:.0} µs", d.as_micros())
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// The warning for a breach.
pub fn message(route: &str, quantile: f64, limit: Duration, b: &Breach) -> String {
    let parts: Vec<String> = Class::ALL
        .iter()
        .zip(b.slow)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{n} {}", c.as_str()))
        .collect();
    let dominated = match b.dominant {
        Some(Class::Upstream) => "misses (waiting for Rentman) dominated".to_string(),
        Some(Class::Redis) => "Redis dominated".to_string(),
        Some(Class::Memory) => "memory hits dominated (the proxy itself is slow)".to_string(),
        Some(Class::Other) | None => "no one kind of answer dominated".to_string(),
    };
    format!(
        "latency target missed: route {route} {} {} over its {} target in the last {} s \
         ({} requests); slow answers: {}; {:.0}% of their time was upstream; {dominated}",
        label(quantile),
        show(b.figure),
        show(limit),
        WINDOW.as_secs(),
        b.requests,
        if parts.is_empty() {
            "none above the target's slot".to_string()
        } else {
            parts.join(", ")
        },
        b.upstream_share * 100.0,
    )
}

impl Observer {
    /// Judges every route of the config in force at `secs`; logs and counts each breach,
    /// at most once per window per route.
    pub fn check_targets(&self, config: &crate::config::Config, secs: u64) {
        for s in self.routes_of(config) {
            let Some((quantile, limit)) = s.target() else {
                continue;
            };
            let Some(b) = judge(&s.window.summary(secs), quantile, limit) else {
                continue;
            };
            let last = s.warned_at.load(Relaxed);
            if last != 0 && secs + 1 - last < WINDOW.as_secs() {
                continue;
            }
            if s.warned_at
                .compare_exchange(last, secs + 1, Relaxed, Relaxed)
                .is_err()
            {
                continue;
            }
            log::warn!("{}", message(&s.name, quantile, limit, &b));
            self.metrics
                .target_breaches
                .with_label_values(&[&s.name])
                .inc();
        }
    }
}

/// Judges the targets every second and samples the history every 10 seconds.
pub struct ConsoleService {
    pub observer: Arc<Observer>,
    pub config: SharedConfig,
}

#[async_trait]
impl BackgroundService for ConsoleService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.observer.log.is_some() {
            let observer = self.observer.clone();
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
                Ok(mut usr1) => {
                    tokio::spawn(async move {
                        while usr1.recv().await.is_some() {
                            if let Some(log) = &observer.log {
                                log.reopen();
                            }
                        }
                    });
                }
                Err(e) => log::error!(
                    "cannot listen for SIGUSR1 ({e}): the access log will not be reopened"
                ),
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_sample = None::<u64>;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let config = self.config.load_full();
            let secs = mono_secs(Instant::now());
            self.observer.check_targets(&config, secs);
            let period = secs / super::window::BUCKET_SECS;
            if last_sample != Some(period) {
                last_sample = Some(period);
                self.observer.sample_history(&config, secs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::window::Window;
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_window_over_its_target_is_a_breach_with_what_dominated() {
        let w = Window::default();
        for _ in 0..20 {
            w.record(
                3,
                Class::Memory,
                Duration::from_micros(80),
                Duration::ZERO,
                false,
            );
        }
        // Not enough samples yet for the one slow answer to count.
        w.record(3, Class::Upstream, ms(150), ms(140), true);
        let s = w.summary(3);
        let b = judge(&s, 0.99, ms(20)).expect("p99 of 21 is the slowest");
        assert_eq!(b.figure, ms(150));
        assert_eq!(b.slow, [0, 0, 1, 0]);
        assert_eq!(b.dominant, Some(Class::Upstream));
        assert!((b.upstream_share - 140.0 / 150.0).abs() < 1e-9);
        let m = message("property", 0.99, ms(20), &b);
        assert!(
            m.contains("route property p99 150 ms over its 20.0 ms target"),
            "{m}"
        );
        assert!(m.contains("1 misses waiting for Rentman"), "{m}");
        assert!(m.contains("93% of their time was upstream"), "{m}");
        assert!(m.contains("misses (waiting for Rentman) dominated"), "{m}");
        // p50 is within the target: no breach for a p50 target.
        assert_eq!(judge(&s, 0.5, ms(20)), None);
    }

    #[test]
    fn too_few_requests_are_no_breach() {
        let w = Window::default();
        for _ in 0..(MIN_SAMPLES - 1) {
            w.record(0, Class::Upstream, ms(500), ms(500), true);
        }
        assert_eq!(judge(&w.summary(0), 0.99, ms(10)), None);
        w.record(0, Class::Upstream, ms(500), ms(500), true);
        assert!(judge(&w.summary(0), 0.99, ms(10)).is_some());
    }

    #[test]
    fn labels_name_the_quantile() {
        assert_eq!(label(0.99), "p99");
        assert_eq!(label(0.5), "p50");
        assert_eq!(label(0.999), "p99.9");
        assert_eq!(show(Duration::from_micros(250)), "250 µs");
        assert_eq!(show(ms(12)), "12.0 ms");
    }
}

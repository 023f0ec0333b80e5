//! What the operator's console shows, gathered as requests finish: each request's latency
//! (the `rentcache_response_duration_seconds` histogram and the route's one-minute window),
//! the per-route counts the dashboard's history is made of, the refresh evidence TTL advice
//! is drawn from, and the access log. Everything a hit touches here is resolved once per
//! config (the route's row: its histograms and counters) and recorded with atomic additions.
//!
//! `window` holds the latency windows, `targets` judges them against each route's target,
//! `history` keeps an hour at 10-second resolution, `advice` turns the evidence into TTL
//! suggestions, `access_log` writes one line per request off the request's path.

pub mod access_log;
pub mod advice;
pub mod history;
pub mod targets;
pub mod window;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use prometheus::Histogram;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::policy::key::Canonical;
use crate::policy::outer::CacheStatus;
use window::{Class, Window};

/// Seconds on a monotonic clock that started with the process (the windows' time).
pub fn mono_secs(at: Instant) -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    at.saturating_duration_since(*BASE.get_or_init(Instant::now))
        .as_secs()
}

/// Recent purges kept for the dashboard.
const RECENT_KEPT: usize = 20;

/// Most refresh observations kept per route for the median age of a changed body.
const AGES_KEPT: usize = 256;

/// One route's figures, kept across reloads (by name).
pub struct RouteStats {
    pub name: String,
    pub window: Window,
    /// The route's latency target in µs (0: none), and the quantile it applies to (‰).
    pub target_us: AtomicU64,
    pub target_permille: AtomicU64,
    /// When the last breach warning was logged (`mono_secs` + 1; 0: never).
    pub warned_at: AtomicU64,
    /// Requests by class of answer, and answers that were a 304 (a browser's or CDN's copy
    /// confirmed: the outer tiers' hits).
    pub requests: AtomicU64,
    pub by_class: [AtomicU64; 4],
    pub not_modified: AtomicU64,
    /// Refreshes of a stored entry that reached Rentman, how many brought a changed body,
    /// and the seconds the refreshed copies had gone unconfirmed (summed, ms).
    pub refreshes: AtomicU64,
    pub changed: AtomicU64,
    pub exposure_ms: AtomicU64,
    /// For the last changes seen: how long the replaced body had been current, seconds.
    pub change_ages: Mutex<std::collections::VecDeque<u64>>,
}

impl RouteStats {
    fn new(name: &str) -> RouteStats {
        RouteStats {
            name: name.to_string(),
            window: Window::default(),
            target_us: AtomicU64::new(0),
            target_permille: AtomicU64::new(990),
            warned_at: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            not_modified: AtomicU64::new(0),
            refreshes: AtomicU64::new(0),
            changed: AtomicU64::new(0),
            exposure_ms: AtomicU64::new(0),
            change_ages: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Requests answered by `class` so far.
    pub fn class_count(&self, class: Class) -> u64 {
        self.by_class
            .get(class as usize)
            .map_or(0, |c| c.load(Relaxed))
    }

    /// The target, if the route has one: (quantile, limit).
    pub fn target(&self) -> Option<(f64, Duration)> {
        let us = self.target_us.load(Relaxed);
        (us > 0).then(|| {
            (
                self.target_permille.load(Relaxed) as f64 / 1000.0,
                Duration::from_micros(us),
            )
        })
    }
}

/// A route's row for one config: its figures and its histogram per cache status.
struct Row {
    stats: Arc<RouteStats>,
    durations: [Histogram; 7],
}

/// The rows of one config (the last one for requests that matched no route).
struct Resolved {
    generation: u64,
    rows: Vec<Row>,
}

/// A finished request, as the proxy reports it.
pub struct Done<'a> {
    pub config: &'a Arc<Config>,
    pub canonical: Option<&'a Arc<Canonical>>,
    pub method: &'a http::Method,
    pub cache_status: CacheStatus,
    pub tier: Option<&'static str>,
    pub status: u16,
    pub started: Instant,
    /// Time spent waiting for Rentman, when the request did.
    pub upstream: Option<Duration>,
    pub body_bytes: u64,
    pub client: Option<SocketAddr>,
}

pub struct Observer {
    metrics: Arc<Metrics>,
    routes: Mutex<HashMap<String, Arc<RouteStats>>>,
    resolved: ArcSwapOption<Resolved>,
    pub history: history::History,
    pub log: Option<access_log::AccessLog>,
    /// When the evidence started (for rates).
    pub since: SystemTime,
    recent: Mutex<std::collections::VecDeque<serde_json::Value>>,
}

fn class_of(status: CacheStatus, tier: Option<&str>, upstream: bool) -> Class {
    match (status, tier) {
        // Waited for Rentman, even when the answer is a HIT from another request's fill.
        _ if upstream => Class::Upstream,
        (CacheStatus::Hit | CacheStatus::Updating | CacheStatus::Stale, Some("memory")) => {
            Class::Memory
        }
        (CacheStatus::Hit | CacheStatus::Updating | CacheStatus::Stale, Some("redis")) => {
            Class::Redis
        }
        (CacheStatus::Miss | CacheStatus::Expired | CacheStatus::Revalidated, _) => Class::Upstream,
        (CacheStatus::Bypass, _) => Class::Upstream,
        _ => Class::Other,
    }
}

fn status_index(s: CacheStatus) -> usize {
    CacheStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

impl Observer {
    pub fn new(metrics: Arc<Metrics>, log: Option<access_log::AccessLog>) -> Observer {
        Observer {
            metrics,
            routes: Mutex::new(HashMap::new()),
            resolved: ArcSwapOption::empty(),
            history: history::History::default(),
            log,
            since: SystemTime::now(),
            recent: Mutex::default(),
        }
    }

    /// The figures of `name` (made on first use).
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        self.routes
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(RouteStats::new(name)))
            .clone()
    }

    /// Every route's figures, in the order of `config`'s routes (routes of older configs
    /// that are gone are left out).
    pub fn routes_of(&self, config: &Config) -> Vec<Arc<RouteStats>> {
        config.routes.iter().map(|r| self.route(&r.name)).collect()
    }

    fn resolve(&self, config: &Arc<Config>) -> Arc<Resolved> {
        let current = self.resolved.load_full();
        if let Some(r) = &current {
            if r.generation == config.generation {
                return r.clone();
            }
        }
        // A request that started under an older config and finishes after a reload: its
        // rows are made for it alone, so that the newer config's rows and targets stay.
        let older = current
            .as_ref()
            .is_some_and(|r| r.generation > config.generation);
        let row = |name: &str, target: Option<&crate::config::LatencyTarget>| {
            let stats = self.route(name);
            let (us, permille) = target.map_or((0, 990), |t| {
                (
                    t.limit.as_micros().clamp(1, u128::from(u64::MAX)) as u64,
                    (t.quantile * 1000.0).round() as u64,
                )
            });
            if !older {
                stats.target_us.store(us, Relaxed);
                stats.target_permille.store(permille, Relaxed);
            }
            let durations = CacheStatus::ALL.map(|s| {
                self.metrics
                    .response_duration
                    .with_label_values(&[name, s.as_str()])
            });
            Row { stats, durations }
        };
        let mut rows: Vec<Row> = config
            .routes
            .iter()
            .map(|r| row(&r.name, r.latency_target.as_ref()))
            .collect();
        rows.push(row("-", None));
        let r = Arc::new(Resolved {
            generation: config.generation,
            rows,
        });
        if !older {
            self.resolved.store(Some(r.clone()));
        }
        r
    }

    /// Whether the access log wants requests' client addresses (it is on).
    pub fn logging(&self) -> bool {
        self.log.is_some()
    }

    /// Records a finished request: after its last byte was handed to the kernel.
    pub fn finished(&self, d: Done<'_>) {
        let now = Instant::now();
        let total = now.saturating_duration_since(d.started);
        // A guard, not a clone of the Arc: no reference count shared by every worker
        // thread is touched on a hit.
        let guard = self.resolved.load();
        let made;
        let resolved: &Resolved = match guard.as_deref() {
            Some(r) if r.generation == d.config.generation => r,
            _ => {
                made = self.resolve(d.config);
                &made
            }
        };
        let last = resolved.rows.len().saturating_sub(1);
        let index = d.canonical.map_or(last, |c| c.route.min(last));
        let Some(row) = resolved.rows.get(index) else {
            return;
        };
        if let Some(h) = row.durations.get(status_index(d.cache_status)) {
            h.observe(total.as_secs_f64());
        }
        let s = &row.stats;
        let class = class_of(d.cache_status, d.tier, d.upstream.is_some());
        let target = s.target_us.load(Relaxed);
        let slow = target > 0 && total.as_micros() > u128::from(target);
        let upstream = d.upstream.unwrap_or_default();
        s.window
            .record(mono_secs(now), class, total, upstream, slow);
        s.requests.fetch_add(1, Relaxed);
        if let Some(c) = s.by_class.get(class as usize) {
            c.fetch_add(1, Relaxed);
        }
        if d.status == 304 {
            s.not_modified.fetch_add(1, Relaxed);
        }
        if let Some(log) = &self.log {
            log.offer(access_log::Line {
                time: SystemTime::now(),
                client: d.client,
                method: d.method.clone(),
                key: d.canonical.cloned(),
                route: s.clone(),
                status: d.status,
                cache_status: d.cache_status,
                tier: d.tier,
                bytes: d.body_bytes,
                total,
                upstream: d.upstream,
            });
        }
    }

    /// A refresh of a stored entry on `route` that reached Rentman: whether the body changed
    /// (ETags compared), how long the old copy had gone unconfirmed, and how long its body
    /// had been the current one.
    pub fn refreshed(&self, route: &str, changed: bool, unconfirmed: Duration, version: Duration) {
        let s = self.route(route);
        s.refreshes.fetch_add(1, Relaxed);
        s.exposure_ms.fetch_add(
            unconfirmed.as_millis().min(u128::from(u64::MAX)) as u64,
            Relaxed,
        );
        if changed {
            s.changed.fetch_add(1, Relaxed);
            let mut ages = s.change_ages.lock();
            if ages.len() >= AGES_KEPT {
                ages.pop_front();
            }
            ages.push_back(version.as_secs());
        }
    }
}

impl Observer {
    /// What each route of `config` showed so far, for TTL advice.
    pub fn evidence(&self, config: &Config) -> Vec<advice::Evidence> {
        let calls = history::upstream_calls_by_route(&self.metrics.upstream_requests);
        config
            .routes
            .iter()
            .filter(|r| r.is_cached())
            .map(|r| {
                let s = self.route(&r.name);
                let median_changed_age = {
                    let mut ages: Vec<u64> = s.change_ages.lock().iter().copied().collect();
                    ages.sort_unstable();
                    ages.get(ages.len() / 2).map(|a| Duration::from_secs(*a))
                };
                advice::Evidence {
                    route: r.name.clone(),
                    ttl: r.ttl,
                    swr: r.stale_while_revalidate,
                    requests: s.requests.load(Relaxed),
                    hits: s.class_count(Class::Memory) + s.class_count(Class::Redis),
                    upstream_calls: calls.get(&r.name).copied().unwrap_or(0),
                    refreshes: s.refreshes.load(Relaxed),
                    changed: s.changed.load(Relaxed),
                    exposure: Duration::from_millis(s.exposure_ms.load(Relaxed)),
                    median_changed_age,
                }
            })
            .collect()
    }

    /// The TTL advice for every cached route of `config`.
    pub fn advice(&self, config: &Config) -> Vec<advice::Advice> {
        self.evidence(config)
            .iter()
            .map(|e| {
                advice::advise(
                    e,
                    config.console.staleness_budget,
                    config.console.min_refreshes,
                )
            })
            .collect()
    }

    /// Records an operator's action for the dashboard's list of recent ones.
    pub fn note_action(&self, what: &str, detail: serde_json::Value) {
        let mut recent = self.recent.lock();
        if recent.len() >= RECENT_KEPT {
            recent.pop_front();
        }
        recent.push_back(serde_json::json!({
            "at": access_log::rfc3339_millis(SystemTime::now()),
            "what": what,
            "detail": detail,
        }));
    }

    pub fn recent_actions(&self) -> Vec<serde_json::Value> {
        self.recent.lock().iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What recording one hit costs: `cargo test --release --lib hit_cost -- --ignored
    /// --nocapture` (bench/console.py runs it).
    #[test]
    #[ignore]
    fn hit_cost() {
        let config = Arc::new(
            crate::config::parse_str(include_str!("../../conf/rentcache.yaml"), "bench").unwrap(),
        );
        let canonical = crate::policy::key::canonicalize(
            &config,
            "/propertyadvertising.php",
            Some("propref=2&noimage=1"),
            &http::HeaderMap::new(),
        )
        .map(Arc::new)
        .unwrap();
        let method = http::Method::GET;
        let started = Instant::now();
        let done = || Done {
            config: &config,
            canonical: Some(&canonical),
            method: &method,
            cache_status: CacheStatus::Hit,
            tier: Some("memory"),
            status: 200,
            started,
            upstream: None,
            body_bytes: 2048,
            client: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 40000))),
        };
        let run = |observer: &Observer, what: &str| {
            for _ in 0..100_000 {
                observer.finished(done());
            }
            let n = 3_000_000u32;
            let t = Instant::now();
            for _ in 0..n {
                observer.finished(std::hint::black_box(done()));
            }
            println!("recording one hit ({what}): {:?}", t.elapsed() / n);
            assert!(observer.route("property").requests.load(Relaxed) > u64::from(n));
        };
        let metrics = Arc::new(Metrics::new());
        run(
            &Observer::new(metrics.clone(), None),
            "histogram, window, counters",
        );
        let log = access_log::AccessLog::start(
            &crate::config::AccessLogConfig {
                to: Some(crate::config::LogTarget::File("/dev/null".into())),
                format: crate::config::LogFormat::Json,
                sample: 1.0,
                queue: 10_000,
            },
            metrics.access_log_dropped.clone(),
        );
        let dropped = metrics.access_log_dropped.get();
        run(
            &Observer::new(metrics.clone(), log),
            "the same and an access log line queued",
        );
        println!(
            "access log lines dropped (the writer, on another core, fell behind): {}",
            metrics.access_log_dropped.get() - dropped
        );
    }

    #[test]
    fn a_request_of_an_older_config_leaves_the_newer_rows_and_targets() {
        let shipped = include_str!("../../conf/rentcache.yaml");
        let parse = |text: &str| Arc::new(crate::config::parse_str(text, "test").unwrap());
        let old = parse(shipped);
        let new = parse(&shipped.replacen(
            "latency_target: {p99: 20ms}",
            "latency_target: {p99: 50ms}",
            1,
        ));
        assert!(new.generation > old.generation);
        let observer = Observer::new(Arc::new(Metrics::new()), None);
        let method = http::Method::GET;
        fn done<'a>(config: &'a Arc<Config>, method: &'a http::Method) -> Done<'a> {
            Done {
                config,
                canonical: None,
                method,
                cache_status: CacheStatus::Hit,
                tier: Some("memory"),
                status: 200,
                started: Instant::now(),
                upstream: None,
                body_bytes: 0,
                client: None,
            }
        }
        observer.finished(done(&new, &method));
        let target = || observer.route("property").target_us.load(Relaxed);
        assert_eq!(target(), 50_000);
        // Finishing after the reload: counted, without turning the rows back.
        observer.finished(done(&old, &method));
        assert_eq!(target(), 50_000);
        assert_eq!(
            observer.resolved.load().as_ref().map(|r| r.generation),
            Some(new.generation)
        );
        assert_eq!(observer.route("-").requests.load(Relaxed), 2);
    }

    #[test]
    fn answers_are_classed_by_who_made_them() {
        assert_eq!(
            class_of(CacheStatus::Hit, Some("memory"), false),
            Class::Memory
        );
        assert_eq!(
            class_of(CacheStatus::Hit, Some("redis"), false),
            Class::Redis
        );
        assert_eq!(class_of(CacheStatus::Miss, None, true), Class::Upstream);
        // A request that waited for another's fill is a HIT, but it waited for Rentman.
        assert_eq!(
            class_of(CacheStatus::Hit, Some("memory"), true),
            Class::Upstream
        );
        assert_eq!(class_of(CacheStatus::Bypass, None, false), Class::Upstream);
        assert_eq!(class_of(CacheStatus::Hit, None, false), Class::Other);
    }
}

//! The last hour at 10-second resolution, kept in process for the dashboard: per route the
//! requests and how they were answered (memory, Redis, Rentman, and 304s, which are the
//! browsers' and CDNs' own copies confirmed), the window's p50/p99, and upstream calls and
//! errors. Sampled by the console service, never by requests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus::core::Collector;
use serde::Serialize;

use super::window::Class;
use super::Observer;

/// An hour of 10-second points.
pub const POINTS: usize = 360;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RoutePoint {
    pub route: String,
    pub requests: u64,
    pub memory: u64,
    pub redis: u64,
    pub upstream: u64,
    pub not_modified: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    /// Unix seconds at the end of the period.
    pub at: u64,
    pub seconds: u64,
    pub routes: Vec<RoutePoint>,
    pub upstream_calls: u64,
    pub upstream_errors: u64,
}

/// Cumulative counts at the last sample, to take differences from.
#[derive(Default)]
struct Last {
    at: Option<u64>,
    routes: HashMap<String, [u64; 6]>,
    calls: u64,
    errors: u64,
}

#[derive(Default)]
pub struct History {
    points: Mutex<VecDeque<Point>>,
    last: Mutex<Last>,
}

impl History {
    pub fn points(&self) -> Vec<Point> {
        self.points.lock().iter().cloned().collect()
    }

    fn push(&self, p: Point) {
        let mut points = self.points.lock();
        if points.len() >= POINTS {
            points.pop_front();
        }
        points.push_back(p);
    }
}

/// Upstream calls so far, and those that failed (5xx, 429 and failures without a status).
pub fn upstream_totals(family: &prometheus::IntCounterVec) -> (u64, u64) {
    let (mut calls, mut errors) = (0, 0);
    for mf in family.collect() {
        for m in mf.get_metric() {
            let n = m.get_counter().get_value() as u64;
            calls += n;
            let status = m
                .get_label()
                .iter()
                .find(|l| l.name() == "status")
                .map(|l| l.value().to_string())
                .unwrap_or_default();
            if !(status.starts_with('2') || status.starts_with('3') || status.starts_with('4'))
                || status == "429"
            {
                errors += n;
            }
        }
    }
    (calls, errors)
}

impl Observer {
    /// Adds a point for the period since the last sample.
    pub fn sample_history(&self, config: &crate::config::Config, secs: u64) {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let (calls, errors) = upstream_totals(&self.metrics.upstream_requests);
        let mut last = self.history.last.lock();
        let first = last.at.is_none();
        let mut routes = Vec::new();
        for s in self.routes_of(config) {
            let now = [
                s.requests.load(Relaxed),
                s.class_count(Class::Memory),
                s.class_count(Class::Redis),
                s.class_count(Class::Upstream),
                s.not_modified.load(Relaxed),
                0,
            ];
            let before = last.routes.insert(s.name.clone(), now).unwrap_or_default();
            let d = |i: usize| {
                let (n, b) = (now.get(i).copied(), before.get(i).copied());
                n.unwrap_or(0).saturating_sub(b.unwrap_or(0))
            };
            let w = s.window.summary(secs);
            let ms = |q: f64| w.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
            routes.push(RoutePoint {
                route: s.name.clone(),
                requests: d(0),
                memory: d(1),
                redis: d(2),
                upstream: d(3),
                not_modified: d(4),
                p50_ms: ms(0.5),
                p99_ms: ms(0.99),
            });
        }
        let point = Point {
            at,
            seconds: last.at.map_or(0, |a| at.saturating_sub(a)),
            routes,
            upstream_calls: calls.saturating_sub(last.calls),
            upstream_errors: errors.saturating_sub(last.errors),
        };
        last.at = Some(at);
        last.calls = calls;
        last.errors = errors;
        drop(last);
        // The first sample only sets the baseline.
        if !first {
            self.history.push(point);
        }
    }
}

/// Upstream calls so far per route (every status and failure).
pub fn upstream_calls_by_route(family: &prometheus::IntCounterVec) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for mf in family.collect() {
        for m in mf.get_metric() {
            if let Some(route) = m.get_label().iter().find(|l| l.name() == "route") {
                *out.entry(route.value().to_string()).or_insert(0) +=
                    m.get_counter().get_value() as u64;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use super::*;
    use crate::metrics::Metrics;
    use crate::observe::Done;
    use crate::policy::outer::CacheStatus;

    #[test]
    fn points_hold_the_differences_since_the_last_sample() {
        let config = Arc::new(
            crate::config::parse_str(include_str!("../../conf/rentcache.yaml"), "t").unwrap(),
        );
        let canonical = Arc::new(
            crate::policy::key::canonicalize(
                &config,
                "/propertyadvertising.php",
                Some("propref=2"),
                &http::HeaderMap::new(),
            )
            .unwrap(),
        );
        let metrics = Arc::new(Metrics::new());
        let o = Observer::new(metrics.clone(), None);
        let hit = |status: CacheStatus, tier: Option<&'static str>, code: u16| {
            o.finished(Done {
                config: &config,
                canonical: Some(&canonical),
                method: &http::Method::GET,
                cache_status: status,
                tier,
                status: code,
                started: Instant::now(),
                upstream: (status == CacheStatus::Miss)
                    .then(|| std::time::Duration::from_millis(5)),
                body_bytes: 10,
                client: None,
            })
        };
        hit(CacheStatus::Miss, None, 200);
        // The first sample is the baseline: no point yet.
        o.sample_history(&config, 0);
        assert!(o.history.points().is_empty());
        hit(CacheStatus::Hit, Some("memory"), 200);
        hit(CacheStatus::Hit, Some("memory"), 304);
        hit(CacheStatus::Hit, Some("redis"), 200);
        metrics
            .upstream_requests
            .with_label_values(&["property", "200"])
            .inc();
        metrics
            .upstream_requests
            .with_label_values(&["property", "timeout"])
            .inc();
        o.sample_history(&config, 10);
        let points = o.history.points();
        assert_eq!(points.len(), 1);
        let p = &points[0];
        assert_eq!((p.upstream_calls, p.upstream_errors), (2, 1));
        let property = p.routes.iter().find(|r| r.route == "property").unwrap();
        assert_eq!(
            (
                property.requests,
                property.memory,
                property.redis,
                property.upstream
            ),
            (3, 2, 1, 0)
        );
        assert_eq!(property.not_modified, 1);
        assert!(property.p99_ms.unwrap() > 0.0);
        let featured = p.routes.iter().find(|r| r.route == "featured").unwrap();
        assert_eq!(featured.requests, 0);
        assert_eq!(featured.p99_ms, None);
    }
}

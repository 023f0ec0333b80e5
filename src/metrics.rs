//! Prometheus metrics, in a registry of our own (served on the admin listener). Names follow
//! Prometheus conventions: `rentcache_` prefix, base units, `_total` for counters.

// Every metric is defined here with constant names, help texts and labels, registered once:
// a failure is a programming error that every test run would hit, never a request's doing.
#![allow(clippy::expect_used)]

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Client requests by route and cache status.
    pub requests: IntCounterVec,
    /// Answers from stored entries, by the tier that held them.
    pub tier_hits: IntCounterVec,
    /// Requests sent to the upstream, by route and outcome (HTTP status or failure code).
    pub upstream_requests: IntCounterVec,
    pub upstream_duration: HistogramVec,
    /// Upstream requests refused before leaving (budget, 429 pause, concurrency limit).
    pub upstream_refusals: IntCounterVec,
    /// Connections the upstream calls of fills used: `new` (a TCP, and for https a TLS,
    /// handshake) or `reused` from the idle pool.
    pub upstream_connections: IntCounterVec,
    /// The adaptive limit on upstream calls in flight, and the calls in flight under it.
    pub upstream_limit: IntGauge,
    pub upstream_in_flight: IntGauge,
    /// Calls to CDN purge APIs by provider and result (`ok`, `failed`, `dropped`), retries,
    /// and the purges waiting to be sent.
    pub cdn_purges: IntCounterVec,
    pub cdn_purge_retries: IntCounterVec,
    pub cdn_purge_queue: IntGauge,
    /// Variants of a URL not stored because it had as many as it may keep.
    pub vary_refused: IntCounter,
    /// Requests that waited for another request's fill instead of fetching.
    pub coalesced: IntCounter,
    /// Stale answers, by reason (updating, or the upstream failure).
    pub stale_served: IntCounterVec,
    /// Background refreshes started, by kind (stale-while-revalidate, refresh-ahead, warm).
    pub background_refreshes: IntCounterVec,
    /// Registered on first use, so that an instance without Redis shows no Redis series.
    redis: std::sync::OnceLock<RedisMetrics>,
    pub memory_bytes: IntGauge,
    pub memory_entries: IntGauge,
    pub budget_remaining: GaugeVec,
    pub config_reloads: IntCounterVec,
    pub purged_entries: IntCounter,
    /// Client requests from the first byte of their head to the last byte of the answer.
    pub response_duration: HistogramVec,
    pub target_breaches: IntCounterVec,
    pub access_log_dropped: IntCounter,
}

pub struct RedisMetrics {
    pub up: IntGauge,
    pub subscribed: IntGauge,
    pub errors: IntCounter,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// The sum of every series of a counter family.
pub fn total(family: &IntCounterVec) -> u64 {
    use prometheus::core::Collector;
    family
        .collect()
        .iter()
        .flat_map(|mf| mf.get_metric().iter())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "rentcache_upstream_request_duration_seconds",
                "Time from sending an upstream request to its complete response header.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(upstream_duration.clone()))
            .expect("unique metric");
        let budget_remaining = GaugeVec::new(
            Opts::new(
                "rentcache_upstream_budget_remaining",
                "Upstream requests left in the budget's token buckets (absent when unlimited).",
            ),
            &["window"],
        )
        .expect("valid metric");
        r.register(Box::new(budget_remaining.clone()))
            .expect("unique metric");
        let coalesced = IntCounter::new(
            "rentcache_coalesced_requests_total",
            "Requests that waited for another request filling the same key.",
        )
        .expect("valid metric");
        r.register(Box::new(coalesced.clone()))
            .expect("unique metric");
        let purged_entries = IntCounter::new(
            "rentcache_purged_entries_total",
            "Entries removed or marked stale by invalidations on this instance.",
        )
        .expect("valid metric");
        r.register(Box::new(purged_entries.clone()))
            .expect("unique metric");
        let response_duration = HistogramVec::new(
            HistogramOpts::new(
                "rentcache_response_duration_seconds",
                "Client requests, from their head read to the last byte of the answer handed to the kernel.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["route", "cache_status"],
        )
        .expect("valid metric");
        r.register(Box::new(response_duration.clone()))
            .expect("unique metric");
        let access_log_dropped = IntCounter::new(
            "rentcache_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind.",
        )
        .expect("valid metric");
        r.register(Box::new(access_log_dropped.clone()))
            .expect("unique metric");
        Metrics {
            target_breaches: counter_vec(
                &r,
                "rentcache_latency_target_breaches_total",
                "Windows in which a route's latency percentile exceeded its target.",
                &["route"],
            ),
            response_duration,
            access_log_dropped,
            requests: counter_vec(
                &r,
                "rentcache_requests_total",
                "Client requests by route and cache status.",
                &["route", "cache_status"],
            ),
            tier_hits: counter_vec(
                &r,
                "rentcache_cache_hits_total",
                "Answers served from a stored entry, by the tier that held it.",
                &["tier"],
            ),
            upstream_requests: counter_vec(
                &r,
                "rentcache_upstream_requests_total",
                "Requests sent to the upstream, by route and outcome (HTTP status or failure).",
                &["route", "status"],
            ),
            upstream_duration,
            upstream_refusals: counter_vec(
                &r,
                "rentcache_upstream_refusals_total",
                "Upstream requests not sent: budget spent, paused after a 429, too many in flight.",
                &["reason"],
            ),
            upstream_connections: counter_vec(
                &r,
                "rentcache_upstream_connections_total",
                "Connections used by upstream calls for cacheable requests, new or reused.",
                &["kind"],
            ),
            upstream_limit: gauge(
                &r,
                "rentcache_upstream_concurrency_limit",
                "Upstream calls allowed in flight now (learnt from the upstream; absent: no limit).",
            ),
            upstream_in_flight: gauge(
                &r,
                "rentcache_upstream_in_flight",
                "Upstream calls in flight under the concurrency limit.",
            ),
            cdn_purges: counter_vec(
                &r,
                "rentcache_cdn_purges_total",
                "Calls to CDN purge APIs, by provider and result (ok, failed, dropped).",
                &["provider", "result"],
            ),
            cdn_purge_retries: counter_vec(
                &r,
                "rentcache_cdn_purge_retries_total",
                "CDN purge calls retried after a failure, by provider.",
                &["provider"],
            ),
            cdn_purge_queue: gauge(
                &r,
                "rentcache_cdn_purge_queue",
                "Purges waiting to be sent to CDNs.",
            ),
            vary_refused: {
                let c = IntCounter::new(
                    "rentcache_vary_variants_refused_total",
                    "Answers not stored because their URL had as many variants as it may keep.",
                )
                .expect("valid metric");
                r.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            coalesced,
            stale_served: counter_vec(
                &r,
                "rentcache_stale_responses_total",
                "Expired entries served, by reason.",
                &["reason"],
            ),
            background_refreshes: counter_vec(
                &r,
                "rentcache_background_refreshes_total",
                "Background refreshes started, by kind.",
                &["kind"],
            ),
            redis: std::sync::OnceLock::new(),
            memory_bytes: gauge(
                &r,
                "rentcache_memory_bytes",
                "Bytes held by the memory tier.",
            ),
            memory_entries: gauge(
                &r,
                "rentcache_memory_entries",
                "Entries held by the memory tier (encoded copies not counted; their bytes are).",
            ),
            budget_remaining,
            config_reloads: counter_vec(
                &r,
                "rentcache_config_reloads_total",
                "Config reloads, by result (ok or failed).",
                &["result"],
            ),
            purged_entries,
            registry: r,
        }
    }

    pub fn redis(&self) -> &RedisMetrics {
        self.redis.get_or_init(|| {
            let r = &self.registry;
            let errors = IntCounter::new(
                "rentcache_redis_errors_total",
                "Failed Redis operations (errors and timeouts).",
            )
            .expect("valid metric");
            r.register(Box::new(errors.clone())).expect("unique metric");
            RedisMetrics {
                up: gauge(
                    r,
                    "rentcache_redis_up",
                    "1 when the shared Redis tier is in use, 0 while it is down.",
                ),
                subscribed: gauge(
                    r,
                    "rentcache_redis_invalidations_subscribed",
                    "1 while this instance receives other instances' invalidations.",
                ),
                errors,
            }
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            log::error!("metrics could not be rendered: {e}");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}

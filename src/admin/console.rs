//! The operator's console on the admin listener: the dashboard page (`GET /`, static, with
//! uPlot inlined: no build step, nothing fetched from elsewhere), TTL advice (`GET /advice`)
//! and the last hour's history (`GET /history`). The page holds no data: it reads the
//! protected endpoints with the bearer token the operator gives it.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::{respond, Handles};

const PAGE: &str = include_str!("assets/dashboard.html");
const UPLOT_JS: &str = include_str!("assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("assets/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("assets/LICENSE.uPlot");

/// The dashboard, with the charting library and its stylesheet inlined.
pub fn page() -> Response<Vec<u8>> {
    static WHOLE: OnceLock<Bytes> = OnceLock::new();
    let body = WHOLE.get_or_init(|| {
        Bytes::from(
            PAGE.replace("/*UPLOT_CSS*/", UPLOT_CSS)
                .replace("/*UPLOT_JS*/", UPLOT_JS),
        )
    });
    let mut resp = respond(StatusCode::OK, body.clone());
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything the page needs is in it; it talks to this listener only.
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        http::HeaderValue::from_static("nosniff"),
    );
    resp
}

/// The vendored library's licence (the only asset served apart from the page).
pub fn asset(path: &str) -> Response<Vec<u8>> {
    match path {
        "/assets/LICENSE.uPlot" => {
            let mut resp = respond(StatusCode::OK, Bytes::from_static(UPLOT_LICENSE.as_bytes()));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            resp
        }
        _ => super::ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such asset").response(),
    }
}

pub fn advice(h: &Handles) -> Value {
    let config = h.config.load_full();
    let routes = h.observer.advice(&config);
    json!({
        "staleness_budget": config.console.staleness_budget,
        "min_refreshes": config.console.min_refreshes,
        "observed_since": crate::observe::access_log::rfc3339_millis(h.observer.since),
        "applied": false,
        "method": "see README, Operator's console: TTL advice",
        "routes": routes,
    })
}

pub fn history(h: &Handles) -> Value {
    json!({
        "resolution_secs": crate::observe::window::BUCKET_SECS,
        "points": h.observer.history.points(),
    })
}

/// The console's figures for `/stats`, per route (latency against target, outer-tier 304s,
/// upstream calls and latency) and overall (history, budget, recent actions).
pub fn stats_extra(h: &Handles, routes: &mut serde_json::Map<String, Value>) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let config = h.config.load_full();
    let secs = crate::observe::mono_secs(std::time::Instant::now());
    let calls = crate::observe::history::upstream_calls_by_route(&h.metrics.upstream_requests);
    let mut not_modified = 0;
    for s in h.observer.routes_of(&config) {
        let w = s.window.summary(secs);
        let ms = |q: f64| w.quantile(q).map(|d| d.as_secs_f64() * 1000.0);
        let target = s.target().map(|(q, limit)| {
            let figure = ms(q);
            json!({
                "percentile": crate::observe::targets::label(q),
                "ms": limit.as_secs_f64() * 1000.0,
                "figure_ms": figure,
                "within": figure.is_none_or(|f| f <= limit.as_secs_f64() * 1000.0),
            })
        });
        let up = h.metrics.upstream_duration.with_label_values(&[&s.name]);
        let (n, sum) = (up.get_sample_count(), up.get_sample_sum());
        let breaches = h
            .metrics
            .target_breaches
            .with_label_values(&[&s.name])
            .get();
        let nm = s.not_modified.load(Relaxed);
        not_modified += nm;
        let extra = json!({
            "latency": {
                "window_secs": crate::observe::window::WINDOW.as_secs(),
                "requests": w.count(),
                "p50_ms": ms(0.5),
                "p99_ms": ms(0.99),
                "target": target,
                "breaches": breaches,
            },
            "tiers": {
                "memory": s.class_count(crate::observe::window::Class::Memory),
                "redis": s.class_count(crate::observe::window::Class::Redis),
                "rentman": s.class_count(crate::observe::window::Class::Upstream),
                "not_modified": nm,
            },
            "upstream": {
                "calls": calls.get(&s.name).copied().unwrap_or(0),
                "mean_ms": (n > 0).then(|| sum / n as f64 * 1000.0),
            },
        });
        let entry = routes
            .entry(s.name.clone())
            .or_insert_with(|| json!({"requests": 0}));
        if let (Some(e), Value::Object(x)) = (entry.as_object_mut(), extra) {
            e.extend(x);
        }
    }
    let (calls_total, errors) =
        crate::observe::history::upstream_totals(&h.metrics.upstream_requests);
    let budget = &config.upstream.budget;
    let (second, minute) = h.throttle.remaining(budget);
    json!({
        "outer_tiers": {"not_modified": not_modified},
        "upstream_errors": errors,
        "upstream_calls": calls_total,
        "budget": {
            "per_second": (budget.per_second > 0.0).then_some(second),
            "per_minute": (budget.per_minute > 0.0).then_some(minute),
            "unlimited": budget.per_second <= 0.0 && budget.per_minute <= 0.0,
        },
        "history": h.observer.history.points(),
        "recent_actions": h.observer.recent_actions(),
        "demo_open": h.demo_open,
    })
}

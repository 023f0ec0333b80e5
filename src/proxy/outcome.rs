//! The response headers that report what the cache did and tell outer caches what they may
//! do (`X-Cache-Status`, `Cache-Status`, `Cache-Control`, `Warning`, CORS), and the counting
//! of each answered request. Both run on every hit, so header names are parsed once and the
//! per-route counters are looked up once per config.

use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwapOption;
use http::header::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use prometheus::IntCounter;

use super::ctx::Ctx;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::policy::cors;
use crate::policy::outer::{self, CacheStatus};

static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
static TIMING_ALLOW_ORIGIN: HeaderName = HeaderName::from_static("timing-allow-origin");

fn status_index(s: CacheStatus) -> usize {
    CacheStatus::ALL.iter().position(|x| *x == s).unwrap_or(0)
}

fn signed_secs_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

fn text_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
}

/// The entry behind a response: when it stops being fresh, and how old it is.
#[derive(Clone, Copy)]
pub struct EntryClock {
    pub fresh_until: SystemTime,
    pub age: std::time::Duration,
}

/// Adds the cache's headers to an answer pingora forwards (a pass-through).
pub fn decorate(resp: &mut ResponseHeader, session: &Session, ctx: &Ctx) {
    decorate_with(
        resp,
        session.req_header(),
        ctx,
        None,
        &[],
        SystemTime::now(),
    );
}

/// Adds the cache's headers to an answer, from what `ctx.served` says the cache did, the
/// entry's clock (none for an answer no tier holds) and its tags, as of `now`.
pub fn decorate_with(
    resp: &mut ResponseHeader,
    req: &RequestHeader,
    ctx: &Ctx,
    clock: Option<EntryClock>,
    tags: &[String],
    now: SystemTime,
) {
    let status = ctx.cache_status();
    let served = ctx.served.as_ref();
    let _ = resp.insert_header(
        X_CACHE_STATUS.clone(),
        HeaderValue::from_static(status.as_str()),
    );

    let ttl_left = clock
        .filter(|_| status != CacheStatus::Bypass)
        .map(|c| signed_secs_until(c.fresh_until, now));
    // Why it went wrong if it did, else which tier answered.
    let detail = served.and_then(|s| {
        s.reason
            .as_deref()
            .or(s.tier.filter(|_| status.from_cache()))
    });
    let stored = served.is_some_and(|s| s.stored);
    let upstream_status = served.and_then(|s| s.upstream_status);
    let field = outer::cache_status_field(status, ttl_left, upstream_status, stored, detail);
    if let Some(v) = text_value(field) {
        let _ = resp.insert_header(CACHE_STATUS.clone(), v);
    }

    // Media files carry their own `Cache-Control` (immutable): the route's is for its JSON.
    if let Some(route) = ctx.route().filter(|_| ctx.media.is_none()) {
        if route.mode == Mode::Forced {
            let cacheable = route.is_cached()
                && route.cacheable_statuses.contains(&resp.status.as_u16())
                && status != CacheStatus::Bypass;
            let value = match clock {
                Some(c) if cacheable => {
                    let fresh_left = c.fresh_until.duration_since(now).unwrap_or_default();
                    add_cdn_cache_control(resp, ctx, route, fresh_left, c.age);
                    text_value(outer::cache_control(route, fresh_left, c.age))
                }
                _ => Some(HeaderValue::from_static("no-store")),
            };
            if let Some(v) = value {
                let _ = resp.insert_header(http::header::CACHE_CONTROL, v);
            }
        }
    }
    if status == CacheStatus::Stale {
        let why = served
            .and_then(|s| s.reason.as_deref())
            .unwrap_or("upstream error");
        if let Some(v) = text_value(format!("111 rentcache \"Revalidation Failed: {why}\"")) {
            let _ = resp.insert_header(http::header::WARNING, v);
        }
    }
    if let (Some(k), false, Some(c)) = (
        &ctx.config.cdn.surrogate_keys,
        tags.is_empty(),
        ctx.canonical.as_ref(),
    ) {
        // The key's own tag first: purging a URL at the CDN reaches every URL of its key.
        let mut all = Vec::with_capacity(tags.len() + 1);
        all.push(crate::policy::tags::key_tag(&c.hash));
        all.extend(tags.iter().cloned());
        let value = outer::surrogate_keys(&all, &k.separator, k.max_bytes);
        if let (false, Some(v)) = (value.is_empty(), text_value(value)) {
            let _ = resp.insert_header(k.header.clone(), v);
        }
    }
    add_cors(resp, req, ctx);
}

/// `CDN-Cache-Control` and the operator's targeted field, with the lifetime `s-maxage` gives.
fn add_cdn_cache_control(
    resp: &mut ResponseHeader,
    ctx: &Ctx,
    route: &crate::config::Route,
    fresh_left: std::time::Duration,
    age: std::time::Duration,
) {
    let cdn = &ctx.config.cdn;
    if !cdn.cache_control && cdn.targeted_field.is_none() {
        return;
    }
    let Some(v) = text_value(outer::cdn_cache_control(route, fresh_left, age)) else {
        return;
    };
    if let Some(name) = &cdn.targeted_field {
        let _ = resp.insert_header(name.clone(), v.clone());
    }
    if cdn.cache_control {
        let _ = resp.insert_header(CDN_CACHE_CONTROL.clone(), v);
    }
}

/// CORS headers for an allowed `Origin` (on every response, errors included, so that
/// scripts can read them). With a list of origins, every answer varies on `Origin`, whether
/// or not this request sent one: a browser or CDN that keeps an answer made without CORS
/// headers (for an `<img>`) must not hand it to a script's request, nor the reverse.
pub fn add_cors(resp: &mut ResponseHeader, req: &RequestHeader, ctx: &Ctx) {
    let cors = &ctx.config.cors;
    if cors.allowed_origins.is_empty() && !cors.any_origin {
        return;
    }
    let origin = req
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if let Some(allowed) = cors::allow_origin(cors, origin) {
        let _ = resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        let _ = resp.insert_header(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            cors::EXPOSE_HEADERS,
        );
    }
    if !cors.any_origin {
        vary_on(resp, "Origin");
    }
    if cors.timing_allow_origin {
        let tao = if cors.any_origin {
            Some(HeaderValue::from_static("*"))
        } else {
            text_value(cors.allowed_origins.join(", "))
        };
        if let Some(v) = tao {
            let _ = resp.insert_header(TIMING_ALLOW_ORIGIN.clone(), v);
        }
    }
}

/// Adds `name` to `Vary` unless it is there already.
pub fn vary_on(resp: &mut ResponseHeader, name: &str) {
    let present = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case(name) || t.trim() == "*")
        })
    });
    if !present {
        let _ = resp.append_header(http::header::VARY, name.to_string());
    }
}

/// The request counters of one config: one per route (and one for unrouted requests) and
/// cache status, resolved once instead of by label lookup on every request.
pub struct Counters {
    generation: u64,
    /// `[route][status]`; the last row is for requests that matched no route.
    requests: Vec<[IntCounter; 7]>,
    memory_hits: IntCounter,
    redis_hits: IntCounter,
}

impl Counters {
    fn new(metrics: &Metrics, config: &Arc<Config>) -> Counters {
        let row = |route: &str| {
            CacheStatus::ALL.map(|s| metrics.requests.with_label_values(&[route, s.as_str()]))
        };
        let mut requests: Vec<[IntCounter; 7]> =
            config.routes.iter().map(|r| row(&r.name)).collect();
        requests.push(row("-"));
        Counters {
            generation: config.generation,
            requests,
            memory_hits: metrics.tier_hits.with_label_values(&["memory"]),
            redis_hits: metrics.tier_hits.with_label_values(&["redis"]),
        }
    }
}

/// Counts one request; called once per request, just before the last byte of its answer leaves.
pub fn record(metrics: &Metrics, cache: &ArcSwapOption<Counters>, req: &RequestHeader, ctx: &Ctx) {
    if crate::warm::is_warming(&req.headers) {
        metrics
            .background_refreshes
            .with_label_values(&["warm"])
            .inc();
        return;
    }
    let status = ctx.cache_status();
    let counters = match cache.load_full() {
        Some(c) if c.generation == ctx.config.generation => c,
        _ => {
            let c = Arc::new(Counters::new(metrics, &ctx.config));
            cache.store(Some(c.clone()));
            c
        }
    };
    let unrouted = counters.requests.len() - 1;
    let row = ctx
        .canonical
        .as_ref()
        .map_or(unrouted, |c| c.route.min(unrouted));
    if let Some(c) = counters
        .requests
        .get(row)
        .and_then(|r| r.get(status_index(status)))
    {
        c.inc();
    }
    let served = ctx.served.as_ref();
    if status.from_cache() {
        match served.and_then(|s| s.tier) {
            Some("memory") => counters.memory_hits.inc(),
            Some("redis") => counters.redis_hits.inc(),
            _ => {}
        }
    }
    match status {
        CacheStatus::Updating => metrics.stale_served.with_label_values(&["updating"]).inc(),
        CacheStatus::Stale => metrics
            .stale_served
            .with_label_values(&[served.and_then(|s| s.reason.as_deref()).unwrap_or("error")])
            .inc(),
        _ => {}
    }
    if ctx.coalesced {
        metrics.coalesced.inc();
    }
}

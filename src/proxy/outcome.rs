//! The response headers that report what the cache did and tell outer caches what they may
//! do: `X-Cache-Status`, `Cache-Status`, `Cache-Control`, `Warning`, and CORS.

use std::time::SystemTime;

use pingora::cache::CachePhase;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::Ctx;
use crate::config::Mode;
use crate::metrics::Metrics;
use crate::policy::cors;
use crate::policy::outer::{self, CacheStatus};
use crate::storage::ServedFrom;
use crate::upstream::REASON_HEADER;

/// What the cache did for this request, from pingora's phase and what the hooks saw.
pub fn cache_status(session: &Session, ctx: &Ctx) -> CacheStatus {
    match session.cache.phase() {
        CachePhase::Hit => CacheStatus::Hit,
        CachePhase::Miss => CacheStatus::Miss,
        // A refresh-ahead serves a still fresh entry while it refreshes it.
        CachePhase::StaleUpdating if ctx.refresh_ahead => CacheStatus::Hit,
        CachePhase::StaleUpdating => CacheStatus::Updating,
        CachePhase::Stale if ctx.stale_reason.is_some() => CacheStatus::Stale,
        CachePhase::Stale | CachePhase::Expired => CacheStatus::Expired,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => CacheStatus::Revalidated,
        CachePhase::Disabled(_) if !ctx.pass_through && ctx.canonical.is_some() => {
            // Enabled, then not stored (uncacheable answer, lock timeout...): still a miss.
            if ctx.found_fresh.is_some() {
                CacheStatus::Expired
            } else {
                CacheStatus::Miss
            }
        }
        _ => CacheStatus::Bypass,
    }
}

fn signed_secs_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Adds the cache's headers to a response about to go to the client.
pub fn decorate(resp: &mut ResponseHeader, session: &Session, ctx: &Ctx, status: CacheStatus) {
    resp.remove_header(REASON_HEADER);
    let now = SystemTime::now();
    let meta = session.cache.maybe_cache_meta();
    let _ = resp.insert_header("x-cache-status", status.as_str());

    let ttl_left = meta
        .filter(|_| status != CacheStatus::Bypass)
        .map(|m| signed_secs_until(m.fresh_until(), now));
    let stored =
        matches!(status, CacheStatus::Miss | CacheStatus::Expired) && session.cache.enabled();
    // Why it went wrong if it did, else which tier answered.
    let tier = meta
        .filter(|_| status.from_cache())
        .and_then(|m| m.extensions().get::<ServedFrom>())
        .map(|s| s.0);
    let detail = ctx
        .stale_reason
        .as_deref()
        .or(ctx.upstream_failure.as_deref())
        .or(tier);
    let field = outer::cache_status_field(status, ttl_left, ctx.upstream_status, stored, detail);
    let _ = resp.insert_header("cache-status", field);

    if let Some(route) = ctx.route() {
        if route.mode == Mode::Forced {
            let cacheable = route.is_cached()
                && route.cacheable_statuses.contains(&resp.status.as_u16())
                && status != CacheStatus::Bypass;
            let value = match meta {
                Some(m) if cacheable => {
                    let fresh_left = m.fresh_until().duration_since(now).unwrap_or_default();
                    outer::cache_control(route, fresh_left, m.age())
                }
                _ => "no-store".to_string(),
            };
            let _ = resp.insert_header(http::header::CACHE_CONTROL, value);
        }
    }
    if status == CacheStatus::Stale {
        let why = ctx.stale_reason.as_deref().unwrap_or("upstream error");
        let _ = resp.insert_header(
            http::header::WARNING,
            format!("111 rentcache \"Revalidation Failed: {why}\""),
        );
    }
    add_cors(resp, session, ctx);
}

/// Counts one finished request.
pub fn record(metrics: &Metrics, session: &Session, ctx: &Ctx, status: CacheStatus) {
    if session
        .req_header()
        .headers
        .contains_key(crate::warm::WARM_HEADER)
    {
        metrics
            .background_refreshes
            .with_label_values(&["warm"])
            .inc();
        return;
    }
    if session.subrequest_ctx.is_some() {
        // A background refresh: its own request, not a client's.
        let kind = if ctx.found_fresh == Some(true) {
            "refresh_ahead"
        } else {
            "stale_while_revalidate"
        };
        metrics
            .background_refreshes
            .with_label_values(&[kind])
            .inc();
        return;
    }
    let route = ctx.route().map_or("-", |r| r.name.as_str());
    metrics
        .requests
        .with_label_values(&[route, status.as_str()])
        .inc();
    if status.from_cache() {
        if let Some(tier) = session
            .cache
            .maybe_cache_meta()
            .and_then(|m| m.extensions().get::<ServedFrom>())
        {
            metrics.tier_hits.with_label_values(&[tier.0]).inc();
        }
    }
    match status {
        CacheStatus::Updating => metrics.stale_served.with_label_values(&["updating"]).inc(),
        CacheStatus::Stale => metrics
            .stale_served
            .with_label_values(&[ctx.stale_reason.as_deref().unwrap_or("error")])
            .inc(),
        _ => {}
    }
    if session.cache.lock_duration().is_some() {
        metrics.coalesced.inc();
    }
}

/// CORS headers for an allowed `Origin` (on every response, errors included, so that
/// scripts can read them).
pub fn add_cors(resp: &mut ResponseHeader, session: &Session, ctx: &Ctx) {
    let origin = session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if let Some(allowed) = cors::allow_origin(&ctx.config.cors, origin) {
        let star = allowed == "*";
        let _ = resp.insert_header(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        let _ = resp.insert_header(
            http::header::ACCESS_CONTROL_EXPOSE_HEADERS,
            cors::EXPOSE_HEADERS,
        );
        if !star {
            let _ = resp.append_header(http::header::VARY, "Origin");
        }
    }
}

//! How long a response stays fresh, and whether it is stored at all.

use std::time::{Duration, SystemTime};

use pingora::cache::cache_control::{
    CacheControl, Cacheable as CcCacheable, InterpretCacheControl,
};
use pingora::cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora::cache::{CacheMeta, CacheMetaDefaults, NoCacheReason, RespCacheable};
use pingora::http::ResponseHeader;

use crate::config::{Mode, Route};

/// Headers never stored: they describe one connection or one client, not the resource.
const NOT_STORED: [&str; 5] = [
    "set-cookie",
    "connection",
    "keep-alive",
    "proxy-connection",
    "trailer",
];

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// When the response was produced: now, minus any `Age` it arrived with (a response relayed
/// from another cache has already spent part of its life).
fn produced_at(resp: &ResponseHeader, now: SystemTime) -> SystemTime {
    let age = resp
        .headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    now.checked_sub(Duration::from_secs(age)).unwrap_or(now)
}

fn stored_header(resp: &ResponseHeader) -> ResponseHeader {
    let mut header = resp.clone();
    for name in NOT_STORED {
        header.remove_header(name);
    }
    header.remove_header(&http::header::AGE);
    header
}

fn no_default_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

/// The storage decision for an upstream response on `route` (`authorization`: the request
/// carried credentials, which RFC 9111 forbids sharing unless the origin allows it).
pub fn decide(
    route: &Route,
    resp: &ResponseHeader,
    authorization: bool,
    now: SystemTime,
) -> RespCacheable {
    if !route.cacheable_statuses.contains(&resp.status.as_u16()) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("status not cacheable"));
    }
    match route.mode {
        Mode::Forced => {
            if route.ttl.is_zero() {
                return RespCacheable::Uncacheable(NoCacheReason::Custom("route not cached"));
            }
            let created = produced_at(resp, now);
            RespCacheable::Cacheable(CacheMeta::new(
                created + route.ttl,
                created,
                secs(route.stale_while_revalidate),
                secs(route.stale_if_error),
                stored_header(resp),
            ))
        }
        Mode::HonorOrigin => honor_origin(route, resp, authorization, now),
    }
}

fn honor_origin(
    route: &Route,
    resp: &ResponseHeader,
    authorization: bool,
    now: SystemTime,
) -> RespCacheable {
    let cc = CacheControl::from_resp_headers(resp);
    if let Some(cc) = &cc {
        if cc.is_cacheable() == CcCacheable::No {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
    }
    let defaults = CacheMetaDefaults::new(
        no_default_ttl,
        secs(route.stale_while_revalidate),
        secs(route.stale_if_error),
    );
    let created = produced_at(resp, now);
    let fresh_until = calculate_fresh_until(created, cc.as_ref(), resp, authorization, &defaults)
        .or_else(|| {
            // The origin said nothing about freshness: the route's ttl is the heuristic.
            (!authorization && !route.ttl.is_zero()).then(|| created + route.ttl)
        });
    let Some(fresh_until) = fresh_until else {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    };
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &defaults);
    let mut header = stored_header(resp);
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, created, swr, sie, header))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn route(yaml_route: &str) -> Route {
        let text = format!("routes:\n  - {yaml_route}\n");
        parse_str(&text, "t").unwrap().routes.remove(0)
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn meta(c: RespCacheable) -> CacheMeta {
        match c {
            RespCacheable::Cacheable(m) => m,
            RespCacheable::Uncacheable(r) => panic!("uncacheable: {r:?}"),
        }
    }

    #[test]
    fn forced_uses_route_times_and_ignores_origin() {
        let r = route(
            "{name: a, match: {path: /}, ttl: 5m, stale_while_revalidate: 1m, stale_if_error: 1h}",
        );
        let now = SystemTime::now();
        let m = meta(decide(
            &r,
            &resp(200, &[("cache-control", "no-store"), ("set-cookie", "a=b")]),
            false,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(300));
        assert_eq!(m.stale_while_revalidate_sec(), 60);
        assert_eq!(m.stale_if_error_sec(), 3600);
        assert!(m.headers().get("set-cookie").is_none());
        assert!(matches!(
            decide(&r, &resp(500, &[]), false, now),
            RespCacheable::Uncacheable(_)
        ));
    }

    #[test]
    fn forced_counts_age_of_relayed_responses() {
        let r = route("{name: a, match: {path: /}, ttl: 5m}");
        let now = SystemTime::now();
        let m = meta(decide(&r, &resp(200, &[("age", "100")]), false, now));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(200));
        assert!(m.headers().get("age").is_none());
    }

    #[test]
    fn honor_origin_follows_cache_control() {
        let r = route("{name: a, match: {path: /}, mode: honor_origin, ttl: 1m}");
        let now = SystemTime::now();
        let m = meta(decide(
            &r,
            &resp(
                200,
                &[(
                    "cache-control",
                    "public, s-maxage=30, max-age=10, stale-while-revalidate=5",
                )],
            ),
            false,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(30));
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111 5.2.2.10).
        assert_eq!(m.stale_while_revalidate_sec(), 0);
        let m = meta(decide(
            &r,
            &resp(
                200,
                &[("cache-control", "max-age=10, stale-while-revalidate=5")],
            ),
            false,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(10));
        assert_eq!(m.stale_while_revalidate_sec(), 5);
        // No freshness information: the route ttl is the heuristic.
        let m = meta(decide(&r, &resp(200, &[]), false, now));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(60));
        for cc in ["no-store", "private"] {
            assert!(matches!(
                decide(&r, &resp(200, &[("cache-control", cc)]), false, now),
                RespCacheable::Uncacheable(_)
            ));
        }
        // Authorized requests are shared only when the origin says so.
        assert!(matches!(
            decide(&r, &resp(200, &[]), true, now),
            RespCacheable::Uncacheable(_)
        ));
    }
}

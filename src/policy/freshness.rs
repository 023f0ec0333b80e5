//! How long a response stays fresh, and whether it is stored at all.

use std::time::{Duration, SystemTime};

use pingora::cache::cache_control::{
    CacheControl, Cacheable as CcCacheable, InterpretCacheControl,
};
use pingora::cache::{CacheMeta, NoCacheReason, RespCacheable};
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

/// An `Age` value as RFC 9111 5.1 allows it: digits only; anything else is ignored.
fn age_value(resp: &ResponseHeader) -> Option<u64> {
    let v = resp.headers.get(http::header::AGE)?.as_bytes();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn http_date(resp: &ResponseHeader, name: http::header::HeaderName) -> Option<SystemTime> {
    httpdate::parse_http_date(resp.headers.get(name)?.to_str().ok()?.trim()).ok()
}

/// When the response was produced, as RFC 9111 4.2.3 reckons it: `now` less its corrected
/// initial age (the larger of its `Age` and of how long ago its `Date` says it was made), so
/// that the age it is later served with is that age plus the time it spent here.
fn produced_at(resp: &ResponseHeader, now: SystemTime) -> SystemTime {
    let apparent = http_date(resp, http::header::DATE)
        .and_then(|date| now.duration_since(date).ok())
        .unwrap_or_default();
    let age = Duration::from_secs(age_value(resp).unwrap_or(0));
    now.checked_sub(apparent.max(age)).unwrap_or(now)
}

/// What is stored of a response: not what describes one connection or client, not its
/// `Age` (recomputed on every answer), and a `Date` (the time it was received, when the
/// origin sent none: RFC 9110 6.6.1).
fn stored_header(resp: &ResponseHeader, now: SystemTime) -> ResponseHeader {
    let mut header = resp.clone();
    for name in NOT_STORED {
        header.remove_header(name);
    }
    header.remove_header(&http::header::AGE);
    if http_date(resp, http::header::DATE).is_none() {
        let _ = header.insert_header(http::header::DATE, httpdate::fmt_http_date(now));
    }
    header
}

/// The storage decision for an upstream response on `route` (`authorization`: the request
/// carried credentials, which RFC 9111 forbids sharing unless the origin allows it;
/// `targeted`: the operator's own targeted cache-control field, read first).
pub fn decide(
    route: &Route,
    resp: &ResponseHeader,
    authorization: bool,
    targeted: Option<&http::header::HeaderName>,
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
                stored_header(resp, now),
            ))
        }
        Mode::HonorOrigin => honor_origin(route, resp, authorization, targeted, now),
    }
}

/// The directives that govern this cache: a targeted field meant for it (RFC 9213: the
/// operator's own, then `CDN-Cache-Control`) replaces `Cache-Control` when present and valid.
fn directives(
    resp: &ResponseHeader,
    targeted: Option<&http::header::HeaderName>,
) -> (Option<CacheControl>, bool) {
    let named = targeted
        .into_iter()
        .map(|h| h.as_str())
        .chain(std::iter::once("cdn-cache-control"));
    for name in named {
        if let Some(cc) = CacheControl::from_resp_headers_named(name, resp) {
            return (Some(cc), true);
        }
    }
    (CacheControl::from_resp_headers(resp), false)
}

fn honor_origin(
    route: &Route,
    resp: &ResponseHeader,
    authorization: bool,
    targeted: Option<&http::header::HeaderName>,
    now: SystemTime,
) -> RespCacheable {
    let (cc, is_targeted) = directives(resp, targeted);
    if let Some(cc) = &cc {
        // no-store, and private as a whole (a shared cache never stores it).
        if cc.is_cacheable() == CcCacheable::No {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
        // RFC 9111 3.5: an answer to a request with credentials is shared only when the
        // origin says so.
        if authorization && !cc.allow_caching_authorized_req() {
            return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
        }
    } else if authorization {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let vary_star = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim() == "*"))
    });
    if vary_star {
        // RFC 9111 4.1: `Vary: *` never matches a later request.
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let created = produced_at(resp, now);
    let explicit = cc.as_ref().and_then(|cc| {
        if cc.no_cache() {
            // Stored, but revalidated before every use.
            return Some(Duration::ZERO);
        }
        let s_maxage = if is_targeted {
            None
        } else {
            cc.s_maxage().ok().flatten()
        };
        s_maxage
            .or(cc.max_age().ok().flatten())
            .map(|s| Duration::from_secs(u64::from(s)))
    });
    // RFC 9111 4.2.1: Expires counts from the response's own Date, not our clock; an
    // invalid Expires (such as "0") is in the past.
    let from_expires = || {
        let raw = resp.headers.get(http::header::EXPIRES)?;
        let date = http_date(resp, http::header::DATE).unwrap_or(now);
        Some(match httpdate::parse_http_date(raw.to_str().ok()?.trim()) {
            Ok(expires) => expires.duration_since(date).unwrap_or_default(),
            Err(_) => Duration::ZERO,
        })
    };
    let lifetime = explicit
        .or_else(|| if is_targeted { None } else { from_expires() })
        // The origin said nothing about freshness: the route's ttl is the heuristic.
        .or_else(|| (!route.ttl.is_zero()).then_some(route.ttl));
    let Some(lifetime) = lifetime else {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    };
    // Stale windows: the response's own, else the route's; none when the response forbids
    // serving it stale (must-revalidate, proxy-revalidate, and s-maxage which implies it:
    // RFC 9111 5.2.2.10), whatever stale-* directives it also carries.
    let strict = cc.as_ref().is_some_and(|cc| {
        cc.must_revalidate()
            || cc.proxy_revalidate()
            || (!is_targeted && cc.s_maxage().ok().flatten().is_some())
    });
    let window = |own: Option<u32>, route_default: Duration| {
        if strict {
            0
        } else {
            own.unwrap_or(secs(route_default))
        }
    };
    let swr = window(
        cc.as_ref()
            .and_then(|cc| cc.stale_while_revalidate().ok().flatten()),
        route.stale_while_revalidate,
    );
    let sie = window(
        cc.as_ref()
            .and_then(|cc| cc.stale_if_error().ok().flatten()),
        route.stale_if_error,
    );
    let mut header = stored_header(resp, now);
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut header);
    }
    RespCacheable::Cacheable(CacheMeta::new(
        created + lifetime,
        created,
        swr,
        sie,
        header,
    ))
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
            None,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(300));
        assert_eq!(m.stale_while_revalidate_sec(), 60);
        assert_eq!(m.stale_if_error_sec(), 3600);
        assert!(m.headers().get("set-cookie").is_none());
        assert!(matches!(
            decide(&r, &resp(500, &[]), false, None, now),
            RespCacheable::Uncacheable(_)
        ));
    }

    #[test]
    fn forced_counts_age_of_relayed_responses() {
        let r = route("{name: a, match: {path: /}, ttl: 5m}");
        let now = SystemTime::now();
        let m = meta(decide(&r, &resp(200, &[("age", "100")]), false, None, now));
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
            None,
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
            None,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(10));
        assert_eq!(m.stale_while_revalidate_sec(), 5);
        // No freshness information: the route ttl is the heuristic.
        let m = meta(decide(&r, &resp(200, &[]), false, None, now));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(60));
        for cc in ["no-store", "private"] {
            assert!(matches!(
                decide(&r, &resp(200, &[("cache-control", cc)]), false, None, now),
                RespCacheable::Uncacheable(_)
            ));
        }
        // Authorized requests are shared only when the origin says so.
        assert!(matches!(
            decide(&r, &resp(200, &[]), true, None, now),
            RespCacheable::Uncacheable(_)
        ));
    }

    fn date(t: SystemTime) -> String {
        httpdate::fmt_http_date(t)
    }

    fn honor() -> Route {
        route("{name: a, match: {path: /}, mode: honor_origin, ttl: 1m, stale_if_error: 1h}")
    }

    /// RFC 9111 4.2.3: the age a response arrives with is the larger of its `Age` and of how
    /// long ago its `Date` says it was made; `Date` is kept (RFC 9110 6.6.1).
    #[test]
    fn age_counts_from_date_and_age_and_date_is_kept() {
        let now = SystemTime::now();
        let made = now - Duration::from_secs(100);
        let m = meta(decide(
            &honor(),
            &resp(
                200,
                &[("date", &date(made)), ("cache-control", "max-age=300")],
            ),
            false,
            None,
            now,
        ));
        let age = now.duration_since(m.created()).unwrap().as_secs();
        assert!((99..=101).contains(&age), "{age}");
        assert_eq!(m.headers()["date"], date(made).as_str());
        let m = meta(decide(
            &honor(),
            &resp(
                200,
                &[
                    ("date", &date(now)),
                    ("age", "250"),
                    ("cache-control", "max-age=300"),
                ],
            ),
            false,
            None,
            now,
        ));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(50));
        // No Date: the time it was received.
        let m = meta(decide(&honor(), &resp(200, &[]), false, None, now));
        assert!(m.headers().get("date").is_some());
    }

    /// RFC 9111 5.1: an invalid `Age` is ignored.
    #[test]
    fn an_invalid_age_is_not_trusted() {
        let now = SystemTime::now();
        for bad in ["3600 a", "-5", "1e3", "", "3600, 10"] {
            let m = meta(decide(
                &honor(),
                &resp(200, &[("age", bad), ("cache-control", "max-age=300")]),
                false,
                None,
                now,
            ));
            assert_eq!(m.fresh_until(), now + Duration::from_secs(300), "{bad:?}");
        }
    }

    /// RFC 9111 4.2.1: `Expires` counts from the response's `Date`, not from our clock; an
    /// invalid one is in the past.
    #[test]
    fn expires_is_judged_against_the_responses_date() {
        let now = SystemTime::now();
        // The origin's clock is an hour behind: Date and Expires 10 minutes apart.
        let origin_now = now - Duration::from_secs(3600);
        let m = meta(decide(
            &honor(),
            &resp(
                200,
                &[
                    ("date", &date(origin_now)),
                    ("expires", &date(origin_now + Duration::from_secs(600))),
                ],
            ),
            false,
            None,
            now,
        ));
        // 600 s of life, but it arrived an hour old by its own Date: already stale.
        assert!(m.fresh_until() < now);
        assert_eq!(
            m.fresh_until().duration_since(m.created()).unwrap(),
            Duration::from_secs(600)
        );
        let m = meta(decide(
            &honor(),
            &resp(200, &[("expires", "0")]),
            false,
            None,
            now,
        ));
        assert!(m.fresh_until() <= now);
    }

    /// RFC 9213: `CDN-Cache-Control` (and the operator's own targeted field before it)
    /// replaces `Cache-Control` for this cache.
    #[test]
    fn targeted_fields_take_precedence() {
        let now = SystemTime::now();
        let r = resp(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=120"),
                ("rentcache-cache-control", "max-age=30"),
            ],
        );
        let m = meta(decide(&honor(), &r, false, None, now));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(120));
        let own = http::header::HeaderName::from_static("rentcache-cache-control");
        let m = meta(decide(&honor(), &r, false, Some(&own), now));
        assert_eq!(m.fresh_until(), now + Duration::from_secs(30));
        let r = resp(
            200,
            &[
                ("cache-control", "max-age=999"),
                ("cdn-cache-control", "no-store"),
            ],
        );
        assert!(matches!(
            decide(&honor(), &r, false, None, now),
            RespCacheable::Uncacheable(_)
        ));
    }

    /// RFC 9111 4.1: `Vary: *` never matches; no-cache is stored but never fresh.
    #[test]
    fn vary_star_is_not_stored_and_no_cache_is_always_revalidated() {
        let now = SystemTime::now();
        assert!(matches!(
            decide(
                &honor(),
                &resp(200, &[("vary", "Accept, *")]),
                false,
                None,
                now
            ),
            RespCacheable::Uncacheable(_)
        ));
        let m = meta(decide(
            &honor(),
            &resp(200, &[("cache-control", "no-cache, max-age=600")]),
            false,
            None,
            now,
        ));
        assert!(m.fresh_until() <= now);
    }
}

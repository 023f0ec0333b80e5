//! What rentcache tells the caches outside it (browsers, CDNs) and the people debugging it:
//! `X-Cache-Status`, RFC 9211 `Cache-Status`, and `Cache-Control`.

use std::time::Duration;

use crate::config::Route;

/// The request's cache outcome, with nginx's names (which operators already know).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Fresh entry served.
    Hit,
    /// No entry: fetched upstream.
    Miss,
    /// Expired entry served because the upstream failed (stale-if-error).
    Stale,
    /// Expired entry served while one background refresh runs (stale-while-revalidate).
    Updating,
    /// Expired entry confirmed by the upstream with a 304.
    Revalidated,
    /// Not cacheable here: forwarded as is.
    Bypass,
    /// Expired entry replaced by a full upstream response.
    Expired,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 7] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Revalidated,
        CacheStatus::Bypass,
        CacheStatus::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Expired => "EXPIRED",
        }
    }

    /// Served from a stored entry (not forwarded to the client from the upstream).
    pub fn from_cache(self) -> bool {
        matches!(
            self,
            CacheStatus::Hit
                | CacheStatus::Stale
                | CacheStatus::Updating
                | CacheStatus::Revalidated
        )
    }
}

/// `Cache-Control` for a response of a `forced` route. The response also carries `Age`, and
/// outer caches subtract it, so each lifetime is the entry's age plus what the outer tier may
/// add: never beyond what remains of the entry's own freshness here.
pub fn cache_control(route: &Route, fresh_left: Duration, age: Duration) -> String {
    let browser = age + route.browser_max_age.min(fresh_left);
    let cdn = age + route.cdn_max_age.min(fresh_left);
    // Built by hand: this runs on every hit, and `format!` costs more than the rest of it.
    let mut itoa = itoa::Buffer::new();
    let mut s = String::with_capacity(96);
    s.push_str("public, max-age=");
    s.push_str(itoa.format(browser.as_secs()));
    s.push_str(", s-maxage=");
    s.push_str(itoa.format(cdn.as_secs()));
    s.push_str(", stale-while-revalidate=");
    s.push_str(itoa.format(route.stale_while_revalidate.as_secs()));
    s.push_str(", stale-if-error=");
    s.push_str(itoa.format(route.stale_if_error.as_secs()));
    s
}

/// `CDN-Cache-Control` (RFC 9213) for a response of a `forced` route: what `s-maxage` says, for
/// CDNs alone (they read it before `Cache-Control`, browsers ignore it).
pub fn cdn_cache_control(route: &Route, fresh_left: Duration, age: Duration) -> String {
    let cdn = age + route.cdn_max_age.min(fresh_left);
    let mut itoa = itoa::Buffer::new();
    let mut s = String::with_capacity(80);
    s.push_str("max-age=");
    s.push_str(itoa.format(cdn.as_secs()));
    s.push_str(", stale-while-revalidate=");
    s.push_str(itoa.format(route.stale_while_revalidate.as_secs()));
    s.push_str(", stale-if-error=");
    s.push_str(itoa.format(route.stale_if_error.as_secs()));
    s
}

/// An entry's tags as one surrogate-key header value, within `max_bytes` (tags that do not
/// fit are left out: a CDN refuses an over-long header, and a purge by a missing tag only
/// falls back to the URL and route purges).
pub fn surrogate_keys(tags: &[String], separator: &str, max_bytes: usize) -> String {
    let mut s = String::new();
    for t in tags {
        let extra = if s.is_empty() { 0 } else { separator.len() };
        if s.len() + extra + t.len() > max_bytes {
            break;
        }
        if !s.is_empty() {
            s.push_str(separator);
        }
        s.push_str(t);
    }
    s
}

/// The RFC 9211 `Cache-Status` member for this cache.
pub fn cache_status_field(
    status: CacheStatus,
    ttl_left_secs: Option<i64>,
    upstream_status: Option<u16>,
    stored: bool,
    detail: Option<&str>,
) -> String {
    let mut itoa = itoa::Buffer::new();
    let mut s = String::with_capacity(80);
    s.push_str("rentcache");
    match status {
        CacheStatus::Hit | CacheStatus::Updating | CacheStatus::Revalidated => s.push_str("; hit"),
        CacheStatus::Stale => s.push_str("; hit; fwd=stale"),
        CacheStatus::Miss => s.push_str("; fwd=uri-miss"),
        CacheStatus::Expired => s.push_str("; fwd=stale"),
        CacheStatus::Bypass => s.push_str("; fwd=bypass"),
    }
    if let Some(code) = upstream_status {
        s.push_str("; fwd-status=");
        s.push_str(itoa.format(code));
    }
    if let Some(ttl) = ttl_left_secs {
        s.push_str("; ttl=");
        s.push_str(itoa.format(ttl));
    }
    if stored {
        s.push_str("; stored");
    }
    let detail = detail.or(match status {
        CacheStatus::Updating => Some("updating"),
        CacheStatus::Revalidated => Some("revalidated"),
        _ => None,
    });
    if let Some(d) = detail {
        s.push_str("; detail=\"");
        s.extend(
            d.chars()
                .filter(|c| c.is_ascii() && !c.is_ascii_control())
                .map(|c| if c == '"' { '\'' } else { c }),
        );
        s.push('"');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    #[test]
    fn lifetimes_count_age_and_stop_at_our_freshness() {
        let c = parse_str(
            "routes:\n  - {name: a, match: {path: /}, ttl: 10m, browser_max_age: 1m, cdn_max_age: 5m, stale_while_revalidate: 10m, stale_if_error: 1d}\n",
            "t",
        )
        .unwrap();
        let r = &c.routes[0];
        let cc = cache_control(r, Duration::from_secs(600), Duration::ZERO);
        assert_eq!(
            cc,
            "public, max-age=60, s-maxage=300, stale-while-revalidate=600, stale-if-error=86400"
        );
        // 8 minutes old, 2 left: the CDN may keep it 2 more minutes, counted from Age.
        let cc = cache_control(r, Duration::from_secs(120), Duration::from_secs(480));
        assert!(cc.starts_with("public, max-age=540, s-maxage=600,"), "{cc}");
        // Stale: nothing more for outer tiers.
        let cc = cache_control(r, Duration::ZERO, Duration::from_secs(700));
        assert!(cc.starts_with("public, max-age=700, s-maxage=700,"), "{cc}");
        // CDN-Cache-Control says what s-maxage says.
        assert_eq!(
            cdn_cache_control(r, Duration::from_secs(120), Duration::from_secs(480)),
            "max-age=600, stale-while-revalidate=600, stale-if-error=86400"
        );
    }

    #[test]
    fn surrogate_keys_stay_within_their_bound() {
        let tags: Vec<String> = ["route:list", "property:1", "property:22"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            surrogate_keys(&tags, " ", 1000),
            "route:list property:1 property:22"
        );
        assert_eq!(
            surrogate_keys(&tags, ",", 1000),
            "route:list,property:1,property:22"
        );
        assert_eq!(surrogate_keys(&tags, " ", 22), "route:list property:1");
        assert_eq!(surrogate_keys(&tags, " ", 5), "");
    }

    #[test]
    fn cache_status_fields() {
        assert_eq!(
            cache_status_field(CacheStatus::Hit, Some(42), None, false, None),
            "rentcache; hit; ttl=42"
        );
        assert_eq!(
            cache_status_field(CacheStatus::Miss, None, Some(200), true, None),
            "rentcache; fwd=uri-miss; fwd-status=200; stored"
        );
        assert_eq!(
            cache_status_field(
                CacheStatus::Stale,
                Some(-5),
                Some(502),
                false,
                Some("upstream \"x\"")
            ),
            "rentcache; hit; fwd=stale; fwd-status=502; ttl=-5; detail=\"upstream 'x'\""
        );
    }
}

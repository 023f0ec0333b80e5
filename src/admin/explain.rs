//! `GET /explain?url=…`: how rentcache treats one URL: its route, canonical key, what each
//! tier holds for it, its tags, and why it is or is not cacheable.

use std::time::SystemTime;

use http::StatusCode;
use serde_json::{json, Value};

use super::stats::signed_secs;
use super::{ApiError, Handles};
use crate::config::{Mode, Route};
use crate::policy::key;

fn why(route: &Route) -> String {
    match route.mode {
        Mode::Forced if route.ttl.is_zero() => format!(
            "route {} has ttl 0: forwarded to the upstream, never stored",
            route.name
        ),
        Mode::Forced => format!(
            "cacheable: route {} stores statuses {:?} for {}s (then {}s stale while revalidating, {}s stale if the upstream fails); the upstream's own caching headers are ignored",
            route.name,
            route.cacheable_statuses,
            route.ttl.as_secs(),
            route.stale_while_revalidate.as_secs(),
            route.stale_if_error.as_secs()
        ),
        Mode::HonorOrigin => format!(
            "cacheable if the upstream allows it: route {} follows the origin's Cache-Control/Expires (no-store and private are not stored; {}s when it says nothing)",
            route.name,
            route.ttl.as_secs()
        ),
    }
}

pub async fn explain(h: &Handles, url: Option<&str>) -> Result<Value, ApiError> {
    let Some(url) = url.filter(|u| u.starts_with('/')) else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_explain",
            "give url=<path and query>, e.g. /explain?url=/propertyadvertising.php%3Ffeatured%3D1",
        ));
    };
    let config = h.config.load_full();
    let (path, query) = match url.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (url, None),
    };
    let Some(c) = key::canonicalize(&config, path, query, &http::HeaderMap::new()) else {
        return Ok(json!({
            "url": url,
            "route": null,
            "cacheable": false,
            "why": "no route matches: rentcache answers 404 and never calls the upstream",
        }));
    };
    let Some(route) = config.routes.get(c.route) else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the route of this URL is gone",
        ));
    };
    let hash = pingora::cache::key::hash_key(&c.key);
    let now = SystemTime::now();
    let mut tiers = Vec::new();
    for (name, found) in h.storage.find(&hash).await {
        tiers.push(match found {
            None => json!({"tier": name, "present": false}),
            Some(e) => json!({
                "tier": name,
                "present": true,
                "status": e.header.status.as_u16(),
                "age": e.age(now).as_secs(),
                "fresh": e.times.is_fresh(now),
                "ttl_left": signed_secs(e.times.fresh_until, now),
                "stale_while_revalidate": e.times.swr_sec,
                "stale_if_error": e.times.sie_sec,
                "usable_for": signed_secs(e.usable_until(), now),
                "size": e.body_len,
                "etag": e.header.headers.get(http::header::ETAG).and_then(|v| v.to_str().ok()),
            }),
        });
    }
    let tags = h.storage.index.tags_of(&c.key, &hash).await;
    // What outer caches are told of the entry, and who is purged along with it.
    let mut surrogate = vec![crate::policy::tags::key_tag(&hash)];
    surrogate.extend(tags.iter().cloned());
    let cdn = json!({
        "surrogate_keys": config.cdn.surrogate_keys.as_ref().map(|_| surrogate),
        "purged_at": h.cdn.as_ref().map(|c| c.provider_names()).unwrap_or_default(),
    });
    Ok(json!({
        "url": url,
        "route": route.name,
        "mode": match route.mode { Mode::Forced => "forced", Mode::HonorOrigin => "honor_origin" },
        "key": c.key,
        "upstream_target": c.target,
        "cacheable": route.is_cached(),
        "why": why(route),
        "tiers": tiers,
        "tags": tags,
        "cdn": cdn,
    }))
}

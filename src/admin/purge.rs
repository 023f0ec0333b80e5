//! `POST /purge`: invalidate by URL or canonical key, now or softly (marked stale, then
//! refreshed once while still served).

use http::{Response, StatusCode};
use pingora::cache::key::CacheHashKey;
use pingora::cache::CacheKey;
use serde_json::{json, Value};

use super::{error, ok};
use crate::config::Config;
use crate::policy::key;
use crate::storage::TieredStorage;

/// Every key a URL stands for: the canonical key, plus one per key-header value (a URL alone
/// cannot say which variant a client asked for).
pub fn keys_for_url(config: &Config, url: &str) -> Option<Vec<String>> {
    let path_and_query = match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    };
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let c = key::canonicalize(config, path, query, &http::HeaderMap::new())?;
    let mut keys = vec![c.key.clone()];
    for (name, values) in &config.routes[c.route].key_headers {
        let base = keys.clone();
        for v in values {
            keys.extend(base.iter().map(|k| format!("{k} {name}={v}")));
        }
    }
    Some(keys)
}

pub async fn handle(config: &Config, storage: &TieredStorage, body: &Value) -> Response<Vec<u8>> {
    let soft = body.get("soft").and_then(Value::as_bool).unwrap_or(false);
    let keys: Vec<String> = if let Some(url) = body.get("url").and_then(Value::as_str) {
        match keys_for_url(config, url) {
            Some(k) => k,
            None => {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "no_route",
                    &format!("no route matches {url}, so nothing of it can be cached"),
                )
            }
        }
    } else if let Some(k) = body.get("key").and_then(Value::as_str) {
        vec![k.to_string()]
    } else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_purge",
            "give one of: url, key (and optionally soft: true)",
        );
    };
    let mut purged = Vec::new();
    for k in &keys {
        let hash = CacheKey::new(k.clone(), "").primary_bin();
        if storage.invalidate(&hash, soft).await {
            purged.push(k.clone());
        }
    }
    ok(json!({ "soft": soft, "purged": purged.len(), "keys": purged, "considered": keys }))
}

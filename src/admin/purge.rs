//! `POST /purge`: invalidate by `url`, `key`, `pattern` (a glob over canonical keys) or `tag`
//! (expanded by the dependency rules); `soft: true` marks entries stale (served stale while
//! one refresh runs) instead of deleting them. Every purge reaches every instance's memory;
//! the answer says how many instances confirmed it within `acks::WAIT`.

use http::StatusCode;
use serde_json::{json, Value};

use super::{ApiError, Handles};
use crate::config::Config;
use crate::policy::key::{keys_for_url, path_and_query};
use crate::policy::media_url;
use crate::policy::tags;
use crate::storage::acks::{self, Reach};

/// What a purge request asks for, resolved against the config, before anything is purged.
#[derive(Debug)]
pub(super) enum Target {
    /// By `url` (every key it stands for) or by `key`.
    Keys { by: &'static str, keys: Vec<String> },
    /// A glob over canonical keys, checked.
    Pattern(String),
    /// A tag, expanded by the dependency rules.
    Tags(Vec<String>),
}

/// Reads a purge request body: what to purge and whether softly, or why not (4xx).
pub(super) fn read(config: &Config, body: &Value) -> Result<(Target, bool), ApiError> {
    let soft = body.get("soft").and_then(Value::as_bool).unwrap_or(false);
    let text = |k: &str| body.get(k).and_then(Value::as_str);
    let target = if let Some(url) = text("url").filter(|u| media_url::is_media(path_and_query(u))) {
        let keys = media_url::purge_keys(config, path_and_query(url)).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_media_url",
                e.message(),
            )
        })?;
        Target::Keys { by: "url", keys }
    } else if let Some(url) = text("url") {
        let keys = keys_for_url(config, url).ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no_route",
                format!("no route matches {url}, so nothing of it can be cached"),
            )
        })?;
        Target::Keys { by: "url", keys }
    } else if let Some(k) = text("key") {
        Target::Keys {
            by: "key",
            keys: vec![k.to_string()],
        }
    } else if let Some(pattern) = text("pattern") {
        crate::glob::compile(pattern)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_pattern", e))?;
        Target::Pattern(pattern.to_string())
    } else if let Some(tag) = text("tag") {
        Target::Tags(tags::expand(&[tag.to_string()], &config.dependencies))
    } else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_purge",
            "give one of: url, key, pattern (a glob over keys) or tag; and optionally soft: true",
        ));
    };
    Ok((target, soft))
}

pub async fn purge(h: &Handles, body: &Value) -> Result<Value, ApiError> {
    let config = h.config.load_full();
    let (target, soft) = read(&config, body)?;
    let (by, purged, considered) = match target {
        Target::Keys { by, keys } => {
            let purged = h.storage.purge_keys(&keys, soft, None).await;
            (by, purged, json!(keys))
        }
        Target::Pattern(pattern) => {
            let routes: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
            let purged = h
                .storage
                .purge_glob(&pattern, &routes, soft)
                .await
                .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_pattern", e))?;
            ("pattern", purged, json!(pattern))
        }
        Target::Tags(all) => {
            let purged = h.storage.purge_tags(&all, soft, None).await;
            ("tag", purged, json!(all))
        }
    };
    h.metrics.purged_entries.inc_by(purged.len() as u64);
    h.observer.note_action(
        if soft { "soft purge" } else { "purge" },
        json!({"by": by, "considered": considered, "purged": purged.len()}),
    );
    let reach = match h.storage.redis() {
        Some(redis) => acks::confirm(redis, acks::WAIT).await,
        None => Reach::ALONE,
    };
    Ok(json!({
        "by": by,
        "soft": soft,
        "purged": purged.len(),
        "keys": purged,
        "considered": considered,
        "instances": {"reached": reach.reached, "acknowledged": reach.acknowledged},
    }))
}

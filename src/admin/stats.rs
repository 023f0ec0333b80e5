//! `GET /stats`: what the cache is doing for the site, in one JSON document.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::Handles;
use crate::policy::outer::CacheStatus;

fn ratio(part: u64, whole: u64) -> Value {
    if whole == 0 {
        Value::Null
    } else {
        json!(part as f64 / whole as f64)
    }
}

pub async fn stats(h: &Handles) -> Value {
    let config = h.config.load_full();
    let m = &h.metrics;
    let mut routes = serde_json::Map::new();
    let (mut requests, mut served_from_cache) = (0u64, 0u64);
    for name in config.routes.iter().map(|r| r.name.as_str()).chain(["-"]) {
        let mut by_status = serde_json::Map::new();
        let (mut n, mut hits) = (0u64, 0u64);
        for s in CacheStatus::ALL {
            let count = m.requests.with_label_values(&[name, s.as_str()]).get();
            if count > 0 {
                by_status.insert(s.as_str().to_string(), json!(count));
            }
            n += count;
            if s.from_cache() {
                hits += count;
            }
        }
        if n == 0 {
            continue;
        }
        requests += n;
        served_from_cache += hits;
        routes.insert(
            name.to_string(),
            json!({"requests": n, "hit_ratio": ratio(hits, n), "by_status": by_status}),
        );
    }

    let console = super::console::stats_extra(h, &mut routes);
    let upstream_calls = crate::metrics::total(&m.upstream_requests);
    let now = SystemTime::now();
    let top: Vec<Value> = h
        .hot
        .top(20)
        .into_iter()
        .map(|(key, hash, hits)| {
            let entry = h.storage.memory().peek(&hash);
            json!({
                "key": key,
                "hits": hits,
                "size": entry.as_ref().map(|e| e.body_len),
                "ttl_left": entry.as_ref().map(|e| signed_secs(e.times.fresh_until, now)),
            })
        })
        .collect();

    let mem = h.storage.memory().stats_now();
    let mut tiers = json!({
        "memory": {"entries": mem.entries, "encoded_copies": mem.copies, "bytes": mem.bytes, "max_bytes": mem.max_bytes},
    });
    if let (Some(r), Some(t)) = (h.storage.redis(), tiers.as_object_mut()) {
        t.insert(
            "redis".into(),
            json!({
                "state": if r.is_up() { "up" } else { "down" },
                "down_reason": r.down_reason(),
                "errors": r.counters.errors.load(std::sync::atomic::Ordering::Relaxed),
                "writes": r.counters.writes.load(std::sync::atomic::Ordering::Relaxed),
            }),
        );
    }
    let mut out = json!({
        "requests": requests,
        "hit_ratio": ratio(served_from_cache, requests),
        "routes": routes,
        "tiers": tiers,
        "indexed_keys": h.storage.index.local_len(),
        "top_keys": top,
        "upstream": {
            "calls": upstream_calls,
            "requests_served": requests,
            "calls_saved": requests.saturating_sub(upstream_calls),
        },
        "cdn_purges": h.cdn.as_ref().map(|c| c.snapshot()),
    });
    if let (Some(o), Value::Object(c)) = (out.as_object_mut(), console) {
        o.extend(c);
    }
    out
}

pub(super) fn signed_secs(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

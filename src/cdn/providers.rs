//! The requests each CDN's purge API expects, as plain values (built here, sent by `client`).
//! Shapes follow the providers' public API documentation:
//! - Fastly, purge by surrogate keys: `POST /service/{service_id}/purge` with `Fastly-Key`,
//!   a JSON body `{"surrogate_keys": [...]}` (at most 256) and `Fastly-Soft-Purge: 1` to
//!   mark content stale instead of removing it.
//! - Cloudflare, purge cached content: `POST /zones/{zone_id}/purge_cache` with
//!   `Authorization: Bearer`, a JSON body `{"tags": [...]}` or `{"files": [...]}` (at most 30
//!   of either per call); Cloudflare has no soft purge.
//! - A webhook: `POST` the operator's URL with the operator's body template.

use serde_json::json;

use crate::config::{ApiBase, PurgeProvider};
use crate::storage::OuterPurge;

/// Largest batch of keys per request: Fastly takes 256 surrogate keys per call, Cloudflare 30
/// tags or files.
pub fn batch_limit(p: &PurgeProvider) -> usize {
    match p {
        PurgeProvider::Fastly { .. } => 256,
        PurgeProvider::Cloudflare { .. } => 30,
        PurgeProvider::Webhook { .. } => 1000,
    }
}

/// One request to a purge API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiRequest {
    pub base: ApiBase,
    pub path: String,
    /// Headers besides `Host`, `Content-Type: application/json` and `Content-Length`; the
    /// token's header is added at send time (`token_header`), never kept here.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

/// Which header carries the provider's token, and how it is written.
pub fn token_header(p: &PurgeProvider, token: &str) -> (&'static str, String) {
    match p {
        PurgeProvider::Fastly { .. } => ("fastly-key", token.to_string()),
        PurgeProvider::Cloudflare { .. } | PurgeProvider::Webhook { .. } => {
            ("authorization", format!("Bearer {token}"))
        }
    }
}

/// What `p` is asked to purge for `purge`: the tags it names (tag purges), or the keys'
/// URLs (Cloudflare by URL; the webhook gets both). `Fastly` and `Cloudflare` by tag purge a
/// key through its `key:` tag, which every answer of the key carries.
fn selectors(p: &PurgeProvider, purge: &OuterPurge) -> (Vec<String>, Vec<String>) {
    let key_tags = purge.keys.iter().map(|(_, tag)| tag.clone());
    let urls = |base: &str| -> Vec<String> {
        purge
            .keys
            .iter()
            .map(|(key, _)| {
                // A key is the canonical target, then ` name=value` for each key header.
                let target = key.split(' ').next().unwrap_or(key);
                format!("{base}{target}")
            })
            .collect()
    };
    match p {
        PurgeProvider::Fastly { .. } => {
            (purge.tags.iter().cloned().chain(key_tags).collect(), vec![])
        }
        PurgeProvider::Cloudflare { by_urls: None, .. } => {
            (purge.tags.iter().cloned().chain(key_tags).collect(), vec![])
        }
        PurgeProvider::Cloudflare {
            by_urls: Some(base),
            ..
        } => (vec![], urls(base)),
        PurgeProvider::Webhook { .. } => (
            purge.tags.iter().cloned().chain(key_tags).collect(),
            urls(""),
        ),
    }
}

/// The requests that purge `purge` at `p`, in batches the API accepts.
pub fn requests(p: &PurgeProvider, purge: &OuterPurge) -> Vec<ApiRequest> {
    let (mut tags, mut urls) = selectors(p, purge);
    tags.sort();
    tags.dedup();
    urls.sort();
    urls.dedup();
    let limit = batch_limit(p);
    match p {
        PurgeProvider::Fastly {
            api,
            service_id,
            soft,
            ..
        } => tags
            .chunks(limit)
            .map(|batch| {
                let mut headers = vec![("accept", "application/json".to_string())];
                if *soft && purge.soft {
                    headers.push(("fastly-soft-purge", "1".to_string()));
                }
                ApiRequest {
                    base: api.clone(),
                    path: format!("{}/service/{service_id}/purge", api.path),
                    headers,
                    body: json!({ "surrogate_keys": batch }).to_string(),
                }
            })
            .collect(),
        PurgeProvider::Cloudflare { api, zone_id, .. } => {
            let (field, items) = if urls.is_empty() {
                ("tags", tags)
            } else {
                ("files", urls)
            };
            items
                .chunks(limit)
                .map(|batch| ApiRequest {
                    base: api.clone(),
                    path: format!("{}/zones/{zone_id}/purge_cache", api.path),
                    headers: vec![],
                    body: json!({ field: batch }).to_string(),
                })
                .collect()
        }
        PurgeProvider::Webhook { url, body, .. } => {
            if tags.is_empty() && urls.is_empty() {
                return vec![];
            }
            let filled = body
                .replace("{tags}", &json!(tags).to_string())
                .replace("{urls}", &json!(urls).to_string())
                .replace("{soft}", if purge.soft { "true" } else { "false" });
            vec![ApiRequest {
                base: url.clone(),
                path: if url.path.is_empty() {
                    "/".into()
                } else {
                    url.path.clone()
                },
                headers: vec![],
                body: filled,
            }]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(path: &str) -> ApiBase {
        ApiBase {
            tls: true,
            host: "api.example".into(),
            port: 443,
            path: path.into(),
        }
    }

    fn purge(soft: bool) -> OuterPurge {
        OuterPurge {
            tags: vec!["property:4".into(), "route:featured".into()],
            keys: vec![(
                "/propertymedia.php?filename=a.jpg accept=application/base64".into(),
                "key:0011223344556677".into(),
            )],
            soft,
        }
    }

    #[test]
    fn fastly_purges_surrogate_keys_softly_when_asked() {
        let p = PurgeProvider::Fastly {
            api: base(""),
            service_id: "SU1Z0isxPaozGVKXdv0eY".into(),
            token_env: "T".into(),
            soft: true,
        };
        let r = requests(&p, &purge(true));
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].path, "/service/SU1Z0isxPaozGVKXdv0eY/purge");
        assert!(r[0].headers.contains(&("fastly-soft-purge", "1".into())));
        let body: serde_json::Value = serde_json::from_str(&r[0].body).unwrap();
        assert_eq!(
            body,
            json!({"surrogate_keys": ["key:0011223344556677", "property:4", "route:featured"]})
        );
        let hard = requests(&p, &purge(false));
        assert!(!hard[0]
            .headers
            .iter()
            .any(|(n, _)| *n == "fastly-soft-purge"));
        assert_eq!(token_header(&p, "s3cret"), ("fastly-key", "s3cret".into()));
    }

    #[test]
    fn cloudflare_purges_tags_or_files_thirty_at_a_time() {
        let by_tags = PurgeProvider::Cloudflare {
            api: base("/client/v4"),
            zone_id: "023e105f4ecef8ad9ca31a8372d0c353".into(),
            token_env: "T".into(),
            by_urls: None,
        };
        let r = requests(&by_tags, &purge(true));
        assert_eq!(
            r[0].path,
            "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/purge_cache"
        );
        let body: serde_json::Value = serde_json::from_str(&r[0].body).unwrap();
        assert_eq!(body["tags"][1], "property:4");
        let by_urls = PurgeProvider::Cloudflare {
            api: base("/client/v4"),
            zone_id: "z".into(),
            token_env: "T".into(),
            by_urls: Some("https://api.agent.example".into()),
        };
        let r = requests(&by_urls, &purge(false));
        let body: serde_json::Value = serde_json::from_str(&r[0].body).unwrap();
        assert_eq!(
            body,
            json!({"files": ["https://api.agent.example/propertymedia.php?filename=a.jpg"]})
        );
        let many = OuterPurge {
            tags: (0..75).map(|i| format!("property:{i}")).collect(),
            keys: vec![],
            soft: false,
        };
        let r = requests(&by_tags, &many);
        assert_eq!(r.len(), 3);
        assert_eq!(
            token_header(&by_tags, "t"),
            ("authorization", "Bearer t".into())
        );
    }

    #[test]
    fn webhooks_get_their_template_filled_in() {
        let p = PurgeProvider::Webhook {
            url: base("/hooks/purge"),
            token_env: None,
            body: r#"{"purge": {tags}, "paths": {urls}, "soft": {soft}}"#.into(),
        };
        let r = requests(&p, &purge(true));
        assert_eq!(r[0].path, "/hooks/purge");
        let body: serde_json::Value = serde_json::from_str(&r[0].body).unwrap();
        assert_eq!(body["soft"], true);
        assert_eq!(body["paths"][0], "/propertymedia.php?filename=a.jpg");
        assert_eq!(body["purge"][0], "key:0011223344556677");
        assert!(requests(&p, &OuterPurge::default()).is_empty());
    }
}

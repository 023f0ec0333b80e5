//! Purges reach the CDNs: Fastly by surrogate key (softly when asked), Cloudflare by tag or
//! by URL, a webhook with its template, in the request shapes the providers' API documents
//! give, retried after failures, counted, and never showing a token.

mod common;

use common::capture::CaptureServer;
use common::*;
use serde_json::json;
use std::time::Duration;

const ADMIN: &str = "cdn-admin-token";
const FASTLY_TOKEN: &str = "fastly-s3cret-token";
const CF_TOKEN: &str = "cloudflare-s3cret-token";
const HOOK_TOKEN: &str = "hook-s3cret-token";
const DETAIL: &str = "/propertyadvertising.php?propref=4&noimage=1";

fn config(fastly: &CaptureServer, cloudflare: &CaptureServer, hook: &CaptureServer) -> String {
    with_purge(&format!(
        "fastly: {{service_id: SU1Z0isxPaozGVKXdv0eY, api: \"{}\"}}\n    \
         cloudflare: {{zone_id: 023e105f4ecef8ad9ca31a8372d0c353, api: \"{}/client/v4\"}}\n    \
         webhook: {{url: \"{}/hooks/purge\", token_env: HOOK_TOKEN, body: '{{\"purge\": {{tags}}, \"soft\": {{soft}}}}'}}\n    \
         batch_delay: 100ms\n    retries: 3",
        fastly.base(),
        cloudflare.base(),
        hook.base()
    ))
}

/// The shipped config with its `cdn.purge` block replaced by `purge` (its lines indented for
/// `cdn.purge`).
fn with_purge(purge: &str) -> String {
    let shipped = shipped_config();
    let mut out = String::with_capacity(shipped.len() + purge.len());
    let mut in_block = false;
    for line in shipped.lines() {
        if line == "  purge:" {
            in_block = true;
            out.push_str(&format!("  purge:\n    {purge}\n"));
            continue;
        }
        if in_block && (line.starts_with("    ") || line.trim_start().starts_with('#')) {
            continue;
        }
        in_block = false;
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        out.contains("\n  purge:\n"),
        "the shipped config has a cdn.purge block"
    );
    out
}

fn wait_for(server: &CaptureServer, n: usize) -> Vec<common::capture::Captured> {
    eventually(Duration::from_secs(30), || {
        let got = server.requests();
        (got.len() >= n).then_some(got)
    })
}

#[test]
fn purges_reach_every_cdn_in_the_shape_its_api_takes() {
    let (fastly, cloudflare, hook) = (
        CaptureServer::start(),
        CaptureServer::start(),
        CaptureServer::start(),
    );
    let sim = Sim::start(&[]);
    let p = Proxy::start(
        &config(&fastly, &cloudflare, &hook),
        &sim.tls_base(),
        &[
            ("RENTCACHE_ADMIN_TOKEN", ADMIN),
            ("FASTLY_API_TOKEN", FASTLY_TOKEN),
            ("CLOUDFLARE_API_TOKEN", CF_TOKEN),
            ("HOOK_TOKEN", HOOK_TOKEN),
        ],
    );
    let cached = p.get(DETAIL);
    assert_eq!(cached.status, 200);
    let key_tag = cached
        .header("surrogate-key")
        .and_then(|k| k.split(' ').next())
        .expect("a key tag")
        .to_string();

    // A soft purge of a property tag: the tag and what the dependency rules add.
    let r = p.admin_post("/purge", ADMIN, json!({"tag": "property:4", "soft": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    let f = wait_for(&fastly, 1);
    assert_eq!(f[0].method, "POST");
    assert_eq!(f[0].path, "/service/SU1Z0isxPaozGVKXdv0eY/purge");
    assert_eq!(f[0].header("fastly-key"), Some(FASTLY_TOKEN));
    assert_eq!(f[0].header("fastly-soft-purge"), Some("1"));
    assert_eq!(f[0].header("content-type"), Some("application/json"));
    let keys = f[0].json()["surrogate_keys"].clone();
    for tag in ["property:4", "route:featured", "route:areas"] {
        assert!(keys.as_array().unwrap().iter().any(|k| k == tag), "{keys}");
    }
    let c = wait_for(&cloudflare, 1);
    assert_eq!(c[0].method, "POST");
    assert_eq!(
        c[0].path,
        "/client/v4/zones/023e105f4ecef8ad9ca31a8372d0c353/purge_cache"
    );
    assert_eq!(
        c[0].header("authorization").map(str::to_string),
        Some(format!("Bearer {CF_TOKEN}"))
    );
    let tags = c[0].json()["tags"].clone();
    assert!(
        tags.as_array().unwrap().iter().any(|t| t == "property:4"),
        "{tags}"
    );
    assert!(c[0].json().get("files").is_none());
    let h = wait_for(&hook, 1);
    assert_eq!(h[0].path, "/hooks/purge");
    assert_eq!(
        h[0].header("authorization").map(str::to_string),
        Some(format!("Bearer {HOOK_TOKEN}"))
    );
    assert_eq!(h[0].json()["soft"], true);
    assert!(h[0].json()["purge"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "property:4"));

    // A hard purge by URL: every URL of the key, through its key tag.
    let r = p.admin_post("/purge", ADMIN, json!({"url": DETAIL}));
    assert_eq!(r.status, 200, "{}", r.text());
    let f = wait_for(&fastly, 2);
    assert!(f[1].header("fastly-soft-purge").is_none());
    assert_eq!(f[1].json()["surrogate_keys"], json!([key_tag]));
    let c = wait_for(&cloudflare, 2);
    assert_eq!(c[1].json()["tags"], json!([key_tag]));

    // A failing API is retried (with backoff) until it takes the purge.
    fastly.answer_next_with(&[503, 500]);
    let r = p.admin_post("/purge", ADMIN, json!({"tag": "route:listings"}));
    assert_eq!(r.status, 200);
    let f = wait_for(&fastly, 5);
    assert_eq!(f[4].json()["surrogate_keys"], json!(["route:listings"]));
    let metrics = get(
        &p.admin_url("/metrics"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .text();
    assert!(
        metrics.contains("rentcache_cdn_purges_total{provider=\"fastly\",result=\"ok\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rentcache_cdn_purge_retries_total{provider=\"fastly\"} 2"),
        "{metrics}"
    );
    let stats = get(
        &p.admin_url("/stats"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    let providers = stats["cdn_purges"]["providers"].as_array().unwrap().clone();
    assert_eq!(providers.len(), 3, "{stats}");
    assert_eq!(providers[0]["provider"], "fastly");
    assert_eq!(providers[0]["calls_ok"], 3);
    assert_eq!(providers[0]["retries"], 2);
    let explain = get(
        &p.admin_url(&format!(
            "/explain?url={}",
            DETAIL
                .replace('?', "%3F")
                .replace('&', "%26")
                .replace('=', "%3D")
        )),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .json();
    assert_eq!(
        explain["cdn"]["purged_at"],
        json!(["fastly", "cloudflare", "webhook"])
    );

    // No token anywhere it could leak.
    let logs = p.proc.logs();
    for secret in [FASTLY_TOKEN, CF_TOKEN, HOOK_TOKEN] {
        assert!(!logs.contains(secret), "a token in the logs");
        assert!(!metrics.contains(secret) && !stats.to_string().contains(secret));
    }
}

#[test]
fn cloudflare_can_purge_by_url_under_the_public_address() {
    let cloudflare = CaptureServer::start();
    let sim = Sim::start(&[]);
    let text = with_purge(&format!(
        "cloudflare: {{zone_id: z9, api: \"{}/client/v4\", by: urls, public_url: \"https://api.agent.example\"}}\n    batch_delay: 50ms",
        cloudflare.base()
    ));
    let p = Proxy::start(
        &text,
        &sim.tls_base(),
        &[
            ("RENTCACHE_ADMIN_TOKEN", ADMIN),
            ("CLOUDFLARE_API_TOKEN", CF_TOKEN),
        ],
    );
    assert_eq!(p.get(DETAIL).status, 200);
    let r = p.admin_post("/purge", ADMIN, json!({"url": DETAIL}));
    assert_eq!(r.status, 200);
    let c = wait_for(&cloudflare, 1);
    assert_eq!(
        c[0].json(),
        json!({"files": ["https://api.agent.example/propertyadvertising.php?noimage=1&propref=4"]})
    );
}

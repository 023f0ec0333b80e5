//! What browsers and CDNs are told, on every answer whatever the cache did: validators and
//! age, `Vary: Origin` with a CORS list, `Timing-Allow-Origin`, `CDN-Cache-Control` (RFC
//! 9213) and a targeted field, surrogate keys, and none of the upstream's own `Server`.

mod common;

use common::*;

const FEATURED: &str = "/propertyadvertising.php?featured=1&noimage=1";
const ORIGIN: &str = "https://www.agent.example";

fn config(redis: &str) -> String {
    format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}
cors: {{allowed_origins: [\"{ORIGIN}\", \"https://other.example\"]}}
cdn:
  targeted_field: Cloudflare-CDN-Cache-Control
  surrogate_keys: {{header: Cache-Tag, separator: \",\"}}
redis: {{url: \"{redis}\"}}
routes:
  - {{name: featured, match: {{path: /propertyadvertising.php, query: {{featured: 1}}}}, ttl: 10m,
     stale_while_revalidate: 10m, stale_if_error: 1d, browser_max_age: 1m, cdn_max_age: 5m,
     include_params: [featured, noimage], body: json_array}}
"
    )
}

/// What every cacheable answer of the route says, whatever the cache did.
fn assert_outer_headers(r: &Resp, what: &str) {
    assert_eq!(r.status, 200, "{what}: {r:?}");
    let etag = r
        .header("etag")
        .unwrap_or_else(|| panic!("{what}: no ETag"));
    assert!(etag.starts_with("\"rc-"), "{what}: {etag}");
    let age: u64 = r
        .header("age")
        .unwrap_or_else(|| panic!("{what}: no Age"))
        .parse()
        .unwrap();
    assert!(age < 600, "{what}: Age {age}");
    let vary: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("vary"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(
        vary.iter()
            .any(|v| v.split(',').any(|t| t.trim() == "Origin")),
        "{what}: Vary {vary:?}"
    );
    assert_eq!(
        r.header("timing-allow-origin"),
        Some("https://www.agent.example, https://other.example"),
        "{what}"
    );
    let cdn = r
        .header("cdn-cache-control")
        .unwrap_or_else(|| panic!("{what}: no CDN-Cache-Control"));
    assert!(cdn.starts_with("max-age="), "{what}: {cdn}");
    assert!(cdn.contains("stale-if-error=86400"), "{what}: {cdn}");
    assert_eq!(
        r.header("cloudflare-cdn-cache-control"),
        Some(cdn),
        "{what}"
    );
    let cc = r.header("cache-control").unwrap();
    assert!(cc.contains("s-maxage="), "{what}: {cc}");
    let tags = r
        .header("cache-tag")
        .unwrap_or_else(|| panic!("{what}: no Cache-Tag"));
    let tags: Vec<&str> = tags.split(',').collect();
    assert!(
        tags[0].starts_with("key:") && tags[0].len() == 20,
        "{what}: {tags:?}"
    );
    assert_eq!(tags[1], "route:featured", "{what}: {tags:?}");
    assert!(
        tags.len() > 2 && tags[2..].iter().all(|t| t.starts_with("property:")),
        "{what}: {tags:?}"
    );
    assert!(
        r.header("server").is_none(),
        "{what}: Server {:?}",
        r.header("server")
    );
}

#[test]
fn every_answer_tells_outer_caches_the_same_things() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let text = config(&redis.url());
    let a = Proxy::start(&text, &sim.tls_base(), &[]);
    wait_redis_up(&a);

    let miss = a.get(FEATURED);
    assert_eq!(miss.header("x-cache-status"), Some("MISS"));
    assert_outer_headers(&miss, "MISS");
    let hit = a.get(FEATURED);
    assert_eq!(hit.header("x-cache-status"), Some("HIT"));
    assert_outer_headers(&hit, "HIT from memory");
    assert_eq!(hit.header("etag"), miss.header("etag"));
    assert_eq!(hit.header("cache-tag"), miss.header("cache-tag"));

    // Another instance reads the entry, tags and all, from Redis.
    let b = Proxy::start(&text, &sim.tls_base(), &[]);
    wait_redis_up(&b);
    let from_redis = b.get(FEATURED);
    assert_eq!(from_redis.header("x-cache-status"), Some("HIT"));
    assert!(from_redis.header("cache-status").unwrap().contains("redis"));
    assert_outer_headers(&from_redis, "HIT from Redis");
    assert_eq!(from_redis.header("cache-tag"), miss.header("cache-tag"));

    // A script from an allowed origin may read it; another origin may not; both vary.
    let cors = get(&a.url(FEATURED), &[("origin", ORIGIN)]);
    assert_outer_headers(&cors, "HIT with Origin");
    assert_eq!(cors.header("access-control-allow-origin"), Some(ORIGIN));
    let other = get(&a.url(FEATURED), &[("origin", "https://evil.example")]);
    assert_outer_headers(&other, "HIT with another Origin");
    assert!(other.header("access-control-allow-origin").is_none());

    // A conditional request gets 304 with the same validators.
    let etag = miss.header("etag").unwrap().to_string();
    let revalidated = get(&a.url(FEATURED), &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    assert_eq!(revalidated.header("etag"), Some(etag.as_str()));
}

#[test]
fn surrogate_keys_default_to_fastlys_header() {
    let sim = Sim::start(&[]);
    let p = Proxy::rentman(&sim, &[]);
    let r = p.get(FEATURED);
    let keys = r.header("surrogate-key").expect("Surrogate-Key");
    assert!(
        keys.starts_with("key:") && keys.contains(" route:featured property:"),
        "{keys}"
    );
    assert!(!keys.contains(','), "{keys}");
    // Without a CORS list, nothing varies on Origin and no timing is allowed.
    assert!(r.header("timing-allow-origin").is_none());
    assert!(r.header("cdn-cache-control").is_some());
    assert!(r.header("server").is_none());
}

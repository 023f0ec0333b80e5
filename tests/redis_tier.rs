//! The shared Redis tier: promotion, instances sharing entries and fills, Redis dying and
//! returning, Redis absent at start, purges reaching every memory tier, a Redis Cluster, and
//! unreadable values. Each test starts its own `redis-server` processes on free ports.

mod common;

use common::*;
use std::time::Duration;

const FEATURED: &str = "/propertyadvertising.php?featured=1&noimage=1";
const ADMIN_TOKEN: &str = "admin-secret";

fn status(r: &Resp) -> String {
    r.header("x-cache-status").unwrap_or("<none>").to_string()
}

fn tier(r: &Resp) -> String {
    let cs = r.header("cache-status").unwrap_or("");
    cs.split("detail=\"")
        .nth(1)
        .map(|d| d.trim_end_matches('"').to_string())
        .unwrap_or_default()
}

fn proxy(sim: &Sim, urls: &[String], cluster: bool) -> Proxy {
    Proxy::start(
        &config_with_redis(urls, cluster),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", ADMIN_TOKEN)],
    )
}

fn redis_state(p: &Proxy) -> String {
    let r = get(&p.admin_url("/ready"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    match &v["redis"] {
        serde_json::Value::String(s) => s.clone(),
        other => other["state"].as_str().unwrap_or("?").to_string(),
    }
}

fn wait_redis_up(p: &Proxy) {
    eventually(Duration::from_secs(30), || {
        (redis_state(p) == "up").then_some(())
    });
}

#[test]
fn redis_hits_are_promoted_to_memory() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    assert_eq!(status(&a.get(FEATURED)), "MISS");

    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&b);
    let first = b.get(FEATURED);
    assert_eq!(status(&first), "HIT");
    assert_eq!(tier(&first), "redis");
    let second = b.get(FEATURED);
    assert_eq!(status(&second), "HIT");
    assert_eq!(tier(&second), "memory");
    assert_eq!(first.body, second.body);
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn concurrent_cold_requests_over_two_instances_make_one_upstream_call() {
    let redis = RedisServer::start();
    let sim = Sim::start(&["--latency-ms", "400", "--latency-sigma", "0"]);
    let a = proxy(&sim, &[redis.url()], false);
    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    wait_redis_up(&b);
    let urls = [a.url(FEATURED), b.url(FEATURED)];
    let results = concurrently(40, move |i| get(&urls[i % 2], &[]));
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.body, results[0].body);
    }
    assert_eq!(sim.api_calls(), 1, "{}", sim.stats());
}

#[test]
fn requests_survive_redis_dying_and_use_it_again_when_it_returns() {
    let mut redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    assert_eq!(a.get(FEATURED).status, 200);

    redis.kill();
    for page in 1..=20 {
        // Known keys from memory, new ones from the origin: every request succeeds.
        assert_eq!(a.get(FEATURED).status, 200);
        let r = a.get(&format!(
            "/propertyadvertising.php?rob=rent&noimage=1&page={page}"
        ));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    eventually(Duration::from_secs(30), || {
        (redis_state(&a) == "down").then_some(())
    });
    let logs = a.proc.logs();
    assert_eq!(
        logs.matches("is down").count(),
        1,
        "one log line per state change:\n{logs}"
    );

    redis.restart();
    wait_redis_up(&a);
    // A new entry lands in Redis again: a fresh instance gets it without calling upstream.
    let key = "/propertyadvertising.php?propref=3&noimage=1";
    assert_eq!(status(&a.get(key)), "MISS");
    let calls = sim.api_calls();
    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&b);
    let r = b.get(key);
    assert_eq!(status(&r), "HIT");
    assert_eq!(tier(&r), "redis");
    assert_eq!(sim.api_calls(), calls);
}

#[test]
fn redis_absent_at_start_is_not_an_error() {
    let port = free_port();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[format!("redis://127.0.0.1:{port}")], false);
    assert_eq!(status(&a.get(FEATURED)), "MISS");
    assert_eq!(status(&a.get(FEATURED)), "HIT");
    assert_eq!(redis_state(&a), "down");
    let ready = get(&a.admin_url("/ready"), &[]);
    assert_eq!(ready.status, 200);

    // Redis appears later on that port: the instance starts using it.
    let _redis = RedisServer::start_on(port);
    wait_redis_up(&a);
    let key = "/propertyadvertising.php?onlyarea=1";
    assert_eq!(status(&a.get(key)), "MISS");
    let stored = redis_cli(port, &["--scan", "--pattern", "rc:*:e"]);
    assert!(
        stored.contains(":e"),
        "nothing stored in the late Redis: {stored}"
    );
}

#[test]
fn a_purge_on_one_instance_reaches_the_memory_of_another() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[redis.url()], false);
    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    wait_redis_up(&b);
    // Both must be listening for invalidations before the purge: readiness and metrics say
    // so once they are.
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    for p in [&a, &b] {
        eventually(Duration::from_secs(30), || {
            let metrics = get(&p.admin_url("/metrics"), &[("authorization", &bearer)]).text();
            metrics
                .contains("rentcache_redis_invalidations_subscribed 1")
                .then_some(())
        });
        assert!(p.proc.logs().contains("listening for invalidations"));
        assert_eq!(redis_state(p), "up");
    }
    assert_eq!(status(&a.get(FEATURED)), "MISS");
    assert_eq!(status(&b.get(FEATURED)), "HIT");
    let r = b.get(FEATURED);
    assert_eq!(tier(&r), "memory");

    let purge = a.admin_post("/purge", ADMIN_TOKEN, serde_json::json!({"url": FEATURED}));
    assert_eq!(purge.status, 200, "{}", purge.text());
    assert_eq!(purge.json()["purged"], 1);

    // B's memory copy is dropped by the message; its next request goes upstream.
    let after = eventually(Duration::from_secs(10), || {
        let r = b.get(FEATURED);
        (status(&r) != "HIT").then_some(r)
    });
    assert_eq!(status(&after), "MISS");
    assert_eq!(sim.api_calls(), 2);
}

#[test]
fn a_redis_cluster_serves_two_instances() {
    let cluster = RedisCluster::start();
    let sim = Sim::start(&["--latency-ms", "300", "--latency-sigma", "0"]);
    let a = proxy(&sim, &cluster.urls(), true);
    let b = proxy(&sim, &cluster.urls(), true);
    wait_redis_up(&a);
    wait_redis_up(&b);
    // Several keys, so that they land in different slots on different masters.
    let keys: Vec<String> = (1..=6)
        .map(|n| format!("/propertyadvertising.php?propref={n}&noimage=1"))
        .collect();
    for k in &keys {
        assert_eq!(status(&a.get(k)), "MISS");
    }
    for k in &keys {
        let r = b.get(k);
        assert_eq!(status(&r), "HIT", "{k}");
        assert_eq!(tier(&r), "redis");
    }
    assert_eq!(sim.api_calls(), keys.len() as u64);
    // The fill lease also works across the cluster.
    let urls = [a.url(FEATURED), b.url(FEATURED)];
    let results = concurrently(20, move |i| get(&urls[i % 2], &[]));
    assert!(results.iter().all(|r| r.status == 200));
    assert_eq!(sim.api_calls(), keys.len() as u64 + 1);
    let mut used = 0;
    for n in &cluster.nodes {
        if !n.cli(&["--scan", "--pattern", "rc:*:e"]).trim().is_empty() {
            used += 1;
        }
    }
    assert!(used >= 2, "entries spread over the masters ({used})");
}

#[test]
fn unreadable_values_in_redis_are_misses() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let mut a = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    let canonical = "/propertyadvertising.php?featured=1&noimage=1";
    let hash = {
        use pingora::cache::key::CacheHashKey;
        hex_of(&pingora::cache::CacheKey::new(canonical, "").primary_bin())
    };
    let entry_key = format!("rc:{{{hash}}}:e");
    let truncated: &[u8] = b"RCE2\x00\x00\x00\x2c/propertyadvertising.php?fea";
    for value in [&b"foreign value"[..], truncated] {
        redis.set_raw(&entry_key, value);
        let r = a.get(FEATURED);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(status(&r), "MISS", "{value:?}");
        assert!(a.proc.is_running());
        // The fill replaced the bad value; purge memory so the next round reads Redis again.
        a.admin_post("/purge", ADMIN_TOKEN, serde_json::json!({"key": canonical}));
    }
    assert!(a.proc.logs().contains("ignoring unreadable redis value"));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn large_objects_go_to_redis_only_and_huge_ones_nowhere() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let config = config_with_redis(&[redis.url()], false)
        .replace("max_object_bytes: 8MiB", "max_object_bytes: 64KiB")
        .replace("\nredis:\n", "\nredis:\n  max_object_bytes: 2MiB\n");
    let a = Proxy::start(&config, &sim.base(), &[]);
    wait_redis_up(&a);

    // With photo1binary: a few hundred KiB, too big for memory, fine for Redis.
    let large = "/propertyadvertising.php?rob=sale&limit=3";
    let first = a.get(large);
    assert!(
        first.body.len() > 64 * 1024 && first.body.len() < 2 << 20,
        "{}",
        first.body.len()
    );
    assert_eq!(status(&first), "MISS");
    for _ in 0..2 {
        let r = a.get(large);
        assert_eq!(status(&r), "HIT");
        assert_eq!(tier(&r), "redis", "never promoted into memory");
        assert_eq!(r.body, first.body);
    }

    // Everything with photos: over the Redis limit too; served whole, stored nowhere.
    let huge = "/propertyadvertising.php?rob=rent";
    let first = a.get(huge);
    assert!(first.body.len() > 2 << 20, "{}", first.body.len());
    let again = a.get(huge);
    assert_eq!(status(&again), "MISS");
    assert_eq!(again.body, first.body);
    assert_eq!(sim.api_calls(), 3);
}

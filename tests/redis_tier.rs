//! The shared Redis tier: promotion, instances sharing entries and fills, Redis dying and
//! returning, Redis absent at start, purges reaching every memory tier, a Redis Cluster,
//! unreadable values, large objects, how many reads a hit or a miss costs, batched reads, and
//! which tier a response says it came from. Each test starts its own `redis-server` processes
//! on free ports.

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
    let truncated: &[u8] = b"RCE4\x00\x00\x00\x2c/propertyadvertising.php?fea";
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
    // Too large for memory, so no gzip copy is kept: it is encoded on its way out.
    let zipped = get(&a.url(large), &[("accept-encoding", "gzip")]);
    assert_eq!(status(&zipped), "HIT");
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert!(gunzip(&zipped.body) == first.body);

    // Everything with photos: over the Redis limit too; served whole, stored nowhere.
    let huge = "/propertyadvertising.php?rob=rent";
    let first = a.get(huge);
    assert!(first.body.len() > 2 << 20, "{}", first.body.len());
    let again = a.get(huge);
    assert_eq!(status(&again), "MISS");
    assert_eq!(again.body, first.body);
    assert_eq!(sim.api_calls(), 3);
}

/// GET commands Redis has served since its stats were last reset.
fn redis_gets(redis: &RedisServer) -> u64 {
    let info = redis.cli(&["INFO", "commandstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("a count"))
}

/// A Redis server, the simulator and a proxy whose memory keeps no object over `memory_max`.
fn redis_only(memory_max: &str) -> (RedisServer, Sim, Proxy) {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let config = config_with_redis(&[redis.url()], false).replace(
        "max_object_bytes: 8MiB",
        &format!("max_object_bytes: {memory_max}"),
    );
    let proxy = Proxy::start(&config, &sim.base(), &[]);
    wait_redis_up(&proxy);
    (redis, sim, proxy)
}

#[test]
fn a_redis_hit_costs_one_read_and_a_miss_no_more_plain_or_gzipped() {
    // Memory keeps nothing here: every hit must come from Redis.
    let (redis, sim, a) = redis_only("1KiB");
    redis.cli(&["CONFIG", "RESETSTAT"]);

    let miss = a.get(FEATURED);
    assert_eq!(status(&miss), "MISS");
    assert!(miss.body.len() > 1024, "{}", miss.body.len());
    assert_eq!(redis_gets(&redis), 1, "the miss looked in Redis once");

    for n in 2..=4 {
        let hit = a.get(FEATURED);
        assert_eq!(status(&hit), "HIT");
        assert_eq!(tier(&hit), "redis");
        assert_eq!(hit.body, miss.body);
        assert!(hit.header("age").is_some());
        assert_eq!(redis_gets(&redis), n, "one read per hit");
    }

    // A client that takes gzip gets the Redis entry encoded, still for one read per request.
    for n in 5..=6 {
        let zipped = get(&a.url(FEATURED), &[("accept-encoding", "gzip")]);
        assert_eq!(status(&zipped), "HIT");
        assert_eq!(tier(&zipped), "redis");
        assert_eq!(zipped.header("content-encoding"), Some("gzip"));
        assert!(
            gunzip(&zipped.body) == miss.body,
            "gzip body does not decode to the JSON"
        );
        assert_eq!(redis_gets(&redis), n);
    }
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn concurrent_redis_hits_on_different_keys_each_get_their_own_entry() {
    // Memory keeps nothing: every hit is a Redis read, and reads that arrive together are
    // sent to Redis as one pipeline, whose replies must go back to the right requests.
    let (_redis, sim, a) = redis_only("256B");
    let urls: Vec<String> = (1..=8)
        .map(|p| format!("/propertyadvertising.php?propref={p}&noimage=1"))
        .collect();
    let bodies: Vec<Vec<u8>> = urls
        .iter()
        .map(|u| {
            let r = a.get(u);
            assert_eq!(status(&r), "MISS", "{u}");
            assert!(r.body.len() > 256, "{u}: {} bytes", r.body.len());
            r.body
        })
        .collect();
    let full: Vec<String> = urls.iter().map(|u| a.url(u)).collect();
    let answers = concurrently(64, move |i| {
        let r = get(&full[i % full.len()], &[]);
        (i % full.len(), status(&r), tier(&r), r.body)
    });
    for (k, status, tier, body) in answers {
        assert_eq!(
            (status.as_str(), tier.as_str()),
            ("HIT", "redis"),
            "{}",
            urls[k]
        );
        assert!(body == bodies[k], "{} got another key's body", urls[k]);
    }
    assert_eq!(sim.api_calls(), 8);
}

#[test]
fn requests_that_wait_for_a_fill_read_redis_again() {
    // Memory keeps nothing, so the requests that waited for the one fill can only find its
    // entry in Redis: their second lookup must ask Redis even though their first did not.
    let (_redis, sim, a) = redis_only("256B");
    sim.set(serde_json::json!({"latency_ms": 300}));
    let url = a.url("/propertyadvertising.php?propref=5&noimage=1");
    let answers = concurrently(20, move |_| {
        let r = get(&url, &[]);
        (status(&r), tier(&r), r.body)
    });
    let misses = answers.iter().filter(|(s, _, _)| s == "MISS").count();
    assert_eq!(
        misses,
        1,
        "{:?}",
        answers.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    for (status, tier, body) in &answers {
        assert!(
            status == "MISS" || (status == "HIT" && tier == "redis"),
            "{status} {tier}"
        );
        assert!(*body == answers[0].2);
    }
    assert_eq!(sim.api_calls(), 1);
}

/// Read events Redis has processed since it started (one per batch of commands it reads).
fn redis_reads_processed(redis: &RedisServer) -> u64 {
    redis
        .cli(&["INFO", "stats"])
        .lines()
        .find_map(|l| l.strip_prefix("total_reads_processed:"))
        .map(|n| n.trim().parse().expect("a count"))
        .expect("INFO stats has total_reads_processed")
}

/// A Redis tier connected to `redis`, outside any proxy.
async fn connected_tier(redis: &RedisServer) -> std::sync::Arc<rentcache::storage::RedisTier> {
    use rentcache::config::{Redis, RedisNodes};
    let cfg = Redis {
        nodes: RedisNodes::Single(redis.url()),
        prefix: "batch:".into(),
        connect_timeout: Duration::from_secs(5),
        op_timeout: Duration::from_secs(5),
        max_object_bytes: 1 << 20,
        lease: Duration::from_secs(5),
    };
    let tier = rentcache::storage::RedisTier::new(cfg.clone());
    tier.set_connection(rentcache::storage::redis::connect(&cfg).await.unwrap());
    tier.mark_up();
    tier
}

// One worker thread, one task per read: how the proxy runs its requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn reads_that_come_in_together_reach_redis_as_one_batch() {
    use pingora::http::ResponseHeader;
    use rentcache::storage::{Entry, EntryTimes, Tier};
    use std::sync::Arc;
    use std::time::SystemTime;

    let redis = RedisServer::start();
    let tier = connected_tier(&redis).await;
    let now = SystemTime::now();
    let times = EntryTimes {
        fresh_until: now + Duration::from_secs(300),
        created: now,
        updated: now,
        swr_sec: 0,
        sie_sec: 0,
    };
    let keys: Vec<String> = (0..64).map(|i| format!("/p?n={i}")).collect();
    for k in &keys {
        let header = ResponseHeader::build(200, None).unwrap();
        let body = vec![bytes::Bytes::from(format!("body of {k}"))];
        let hash = pingora::cache::key::hash_key(k);
        let entry = Entry::new(k.clone(), hash, times, header, body);
        tier.put(Arc::new(entry)).await.unwrap();
    }
    let before = redis_reads_processed(&redis);
    let hashes: Vec<_> = keys.iter().map(pingora::cache::key::hash_key).collect();
    let reader = tier.clone();
    let got = tokio::spawn(async move {
        let tasks: Vec<_> = hashes
            .into_iter()
            .map(|hash| {
                let tier = reader.clone();
                tokio::spawn(async move { tier.get(&hash).await })
            })
            .collect();
        futures::future::join_all(tasks).await
    })
    .await
    .unwrap();
    let after = redis_reads_processed(&redis);
    for (k, entry) in keys.iter().zip(got) {
        let entry = entry.unwrap().unwrap().expect("stored");
        assert_eq!(&entry.key, k);
        assert_eq!(entry.body[0], format!("body of {k}").as_bytes());
    }
    // One read event for the batch and one for the second INFO (one per read would make
    // 65), with slack for the runtime's own connection being opened meanwhile.
    assert!(
        after - before < 16,
        "{} read events for 64 reads",
        after - before
    );
}

#[test]
fn a_stale_entry_read_from_redis_says_so() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let config = format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}
redis: {{url: \"{}\"}}
routes:
  - name: list
    match: {{path: /propertyadvertising.php}}
    ttl: 1s
    stale_while_revalidate: 1h
    include_params: [rob, noimage, limit]
",
        redis.url()
    );
    let list = "/propertyadvertising.php?rob=rent&noimage=1&limit=3";
    let a = Proxy::start(&config, &sim.base(), &[]);
    let b = Proxy::start(&config, &sim.base(), &[]);
    wait_redis_up(&a);
    wait_redis_up(&b);
    let first = a.get(list);
    assert_eq!(status(&first), "MISS");
    // Refreshes now hang, so the entry in Redis stays the stale one.
    sim.set(serde_json::json!({"stall_rate": 1.0, "stall_ms": 60000}));
    eventually(Duration::from_secs(30), || {
        (status(&a.get(list)) != "HIT").then_some(())
    });
    // B has never seen the key: it finds the stale entry in Redis (and keeps a copy in memory).
    let stale = b.get(list);
    assert_eq!(status(&stale), "UPDATING");
    assert_eq!(tier(&stale), "redis");
    assert_eq!(stale.body, first.body);
}

// A batch that fails fails every read in it, and the error counter says so: operators read
// it against the number of reads, which must not depend on how reads were batched.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn every_read_in_a_failed_batch_counts_as_an_error() {
    use rentcache::storage::Tier;
    use std::sync::atomic::Ordering;

    let redis = RedisServer::start();
    let tier = connected_tier(&redis).await;
    drop(redis);
    let reader = tier.clone();
    let got = tokio::spawn(async move {
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let tier = reader.clone();
                let hash = pingora::cache::key::hash_key(format!("/p?n={i}"));
                tokio::spawn(async move { tier.get(&hash).await })
            })
            .collect();
        futures::future::join_all(tasks).await
    })
    .await
    .unwrap();
    let errors: Vec<String> = got
        .into_iter()
        .map(|r| r.unwrap().expect_err("Redis is gone").to_string())
        .collect();
    // Reads that came after the first failure were not sent: Redis was known to be down.
    let sent = errors
        .iter()
        .filter(|e| !e.contains("redis is down"))
        .count();
    assert!(sent > 1, "no batch was sent: {errors:?}");
    assert_eq!(tier.counters.errors.load(Ordering::Relaxed), sent as u64);
}

/// `PUBLISH channel message` with arbitrary bytes; returns how many subscribers received it.
fn publish_raw(redis: &RedisServer, channel: &str, message: &[u8]) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let mut cmd = b"*3\r\n$7\r\nPUBLISH\r\n".to_vec();
    for part in [channel.as_bytes(), message] {
        cmd.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        cmd.extend_from_slice(part);
        cmd.extend_from_slice(b"\r\n");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port)).expect("connect");
    s.write_all(&cmd).expect("write");
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).expect("reply");
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("PUBLISH answered {reply:?}"))
}

#[test]
fn unreadable_invalidation_messages_are_ignored_and_later_ones_applied() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[redis.url()], false);
    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    wait_redis_up(&b);
    assert_eq!(status(&a.get(FEATURED)), "MISS");
    b.get(FEATURED);
    assert_eq!(tier(&b.get(FEATURED)), "memory");

    let huge = format!("g:{}", "*".repeat(100_000));
    let bad: [&[u8]; 5] = [huge.as_bytes(), b"g:[oops", b"\xff\xfe", b"0011", b""];
    for message in bad {
        assert_eq!(publish_raw(&redis, "rc:invalidate", message), 2);
    }
    // B still listens: a purge on A drops B's memory copy.
    let purge = a.admin_post("/purge", ADMIN_TOKEN, serde_json::json!({"url": FEATURED}));
    assert_eq!(purge.status, 200, "{}", purge.text());
    let after = eventually(Duration::from_secs(10), || {
        let r = b.get(FEATURED);
        (status(&r) != "HIT").then_some(r)
    });
    assert_eq!(status(&after), "MISS");
    let logs = b.proc.logs();
    assert_eq!(
        logs.matches("ignoring an invalidation message").count(),
        bad.len(),
        "one warning per bad message:\n{logs}"
    );
    assert!(
        !logs.contains(&"*".repeat(1000)),
        "a huge message is not logged whole"
    );
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn a_purge_answers_once_every_instance_has_dropped_its_memory_copy() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let a = proxy(&sim, &[redis.url()], false);
    let b = proxy(&sim, &[redis.url()], false);
    wait_redis_up(&a);
    wait_redis_up(&b);
    assert_eq!(status(&a.get(FEATURED)), "MISS");
    for round in 0..30 {
        // B holds the entry in memory (read from Redis and promoted, or its own fill).
        let held = eventually(Duration::from_secs(10), || {
            let r = b.get(FEATURED);
            (tier(&r) == "memory").then_some(r)
        });
        assert_eq!(status(&held), "HIT", "round {round}");

        let purge = a.admin_post("/purge", ADMIN_TOKEN, serde_json::json!({"url": FEATURED}));
        assert_eq!(purge.status, 200, "{}", purge.text());
        assert_eq!(
            purge.json()["instances"],
            serde_json::json!({"reached": 2, "acknowledged": 2}),
            "round {round}: {}",
            purge.text()
        );
        // Acknowledged means dropped: B's very next answer is not from its memory.
        let after = b.get(FEATURED);
        assert_eq!(status(&after), "MISS", "round {round}");
    }
}

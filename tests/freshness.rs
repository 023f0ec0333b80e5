//! Freshness and upstream economy, driven by the simulator's fault injection: stale while
//! revalidating, stale if error (every cause), coalescing, conditional revalidation, the
//! budget, 429 pauses and refresh-ahead. Assertions are on counts and states, not on time.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const LIST: &str = "/propertyadvertising.php?rob=rent&noimage=1&limit=3";

fn status(r: &Resp) -> String {
    r.header("x-cache-status").unwrap_or("<none>").to_string()
}

/// One route over the advertising endpoint with the given lifetimes, plus `extra` YAML for
/// the upstream section.
fn config(ttl: &str, swr: &str, sie: &str, upstream_extra: &str) -> String {
    format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream:
  base_url: \"{{{{ORIGIN}}}}\"
{upstream_extra}
routes:
  - name: list
    match: {{path: /propertyadvertising.php}}
    ttl: {ttl}
    stale_while_revalidate: {swr}
    stale_if_error: {sie}
    include_params: [rob, noimage, limit, page, propref, featured]
    body: json_array
"
    )
}

/// Polls until the entry for `path` is no longer served as a fresh HIT; returns that answer.
fn until_not_hit(p: &Proxy, path: &str) -> Resp {
    eventually(Duration::from_secs(30), || {
        let r = p.get(path);
        (status(&r) != "HIT").then_some(r)
    })
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_once_in_every_tier() {
    let redis = RedisServer::start();
    let sim = Sim::start(&[]);
    let text = format!(
        "{}\nredis:\n  url: \"{}\"\n",
        config("1s", "1h", "0", ""),
        redis.url()
    );
    let a = Proxy::start(&text, &sim.tls_base(), &[]);
    wait_redis_up(&a);
    let first = a.get(LIST);
    assert_eq!(status(&first), "MISS");

    // From now on Rentman takes 3 s to answer, and the data changes.
    sim.set(json!({"stall_rate": 1.0, "stall_ms": 3000}));
    let changed = request(
        "POST",
        &format!("{}/__sim/mutate?propref=1", sim.base()),
        &[],
        b"",
    );
    assert_eq!(changed.status, 200, "{}", changed.text());

    let stale = until_not_hit(&a, LIST);
    assert_eq!(status(&stale), "UPDATING");
    assert_eq!(stale.body, first.body);
    let url = a.url(LIST);
    let burst = concurrently(50, move |_| get(&url, &[]));
    for r in &burst {
        assert_eq!(status(r), "UPDATING", "served stale without waiting");
        assert_eq!(r.body, first.body);
    }
    // One fill, one background refresh, however many stale requests.
    eventually(Duration::from_secs(10), || {
        (sim.api_calls() == 2).then_some(())
    });
    assert_eq!(sim.api_calls(), 2);

    // The refresh lands in memory and in Redis.
    let fresh = eventually(Duration::from_secs(30), || {
        let r = a.get(LIST);
        (status(&r) == "HIT").then_some(r)
    });
    assert_ne!(
        fresh.body, first.body,
        "the refreshed entry replaced the old one"
    );
    let b = Proxy::start(&text, &sim.tls_base(), &[]);
    wait_redis_up(&b);
    let r = b.get(LIST);
    // Read from Redis, not fetched: the refreshed entry, still fresh, or already past its
    // 1 s lifetime (a loaded machine can take that long to start `b`), then served stale
    // while `b` refreshes it in turn.
    assert_eq!(r.body, fresh.body);
    match status(&r).as_str() {
        "HIT" => assert_eq!(sim.api_calls(), 2),
        "UPDATING" => {}
        other => panic!("the second instance did not find the refresh in Redis: {other}"),
    }
}

#[test]
fn stale_if_error_covers_every_kind_of_failure() {
    let causes: [(&str, serde_json::Value, &str); 4] = [
        (
            "5xx",
            json!({"error_rate": 1.0, "error_status": 503}),
            "status-503",
        ),
        ("reset", json!({"reset_rate": 1.0}), "reset"),
        (
            "timeout",
            json!({"stall_rate": 1.0, "stall_ms": 20000}),
            "timeout",
        ),
        ("bad token", json!({"token": "another"}), "empty-body"),
    ];
    for (name, fault, reason) in causes {
        let sim = Sim::start(&[]);
        let text = config("1s", "0", "1h", "  read_timeout: 1s");
        let p = Proxy::start(
            &text,
            &sim.base(),
            &[("RENTMAN_TOKEN", "token-of-the-agent")],
        );
        let first = p.get(LIST);
        assert_eq!(status(&first), "MISS", "{name}: {first:?}");
        sim.set(fault);
        let r = until_not_hit(&p, LIST);
        assert_eq!(status(&r), "STALE", "{name}: {:?}", r.headers);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, first.body, "{name}");
        let warning = r.header("warning").unwrap_or_default();
        assert!(warning.contains(reason), "{name}: warning {warning}");
        let cs = r.header("cache-status").unwrap_or_default();
        assert!(
            cs.contains("fwd=stale") && cs.contains(reason),
            "{name}: {cs}"
        );

        // A key never cached has nothing stale: a JSON error naming the failure.
        let cold = p.get("/propertyadvertising.php?rob=sale&noimage=1");
        assert!(
            cold.status == 502 || cold.status == 504,
            "{name}: {}",
            cold.status
        );
        let err = cold.json();
        assert_eq!(err["error"]["code"], "upstream_failed");
        assert!(!cold.text().contains("token-of-the-agent"));
    }
}

#[test]
fn stale_if_error_when_the_origin_is_gone() {
    let mut sim = Sim::start(&[]);
    let p = Proxy::start(&config("1s", "0", "1h", ""), &sim.tls_base(), &[]);
    let first = p.get(LIST);
    sim.proc.kill();
    let r = until_not_hit(&p, LIST);
    assert_eq!(status(&r), "STALE");
    assert_eq!(r.body, first.body);
    assert!(r
        .header("warning")
        .unwrap_or_default()
        .contains("connect-refused"));
    let cold = p.get("/propertyadvertising.php?rob=sale");
    assert_eq!(cold.status, 502);
    assert!(cold.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("could not connect"));
}

#[test]
fn two_hundred_cold_requests_make_one_upstream_call() {
    let sim = Sim::start(&["--latency-ms", "300", "--latency-sigma", "0"]);
    let p = Proxy::start(&config("1h", "0", "0", ""), &sim.tls_base(), &[]);
    let url = p.url(LIST);
    let results = concurrently(200, move |_| get(&url, &[]));
    for r in &results {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, results[0].body);
    }
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn waiters_share_their_leaders_failure_instead_of_hanging() {
    let sim = Sim::start(&[
        "--latency-ms",
        "300",
        "--latency-sigma",
        "0",
        "--error-rate",
        "1",
    ]);
    let text = config("1h", "0", "0", "  failure_memo: 30s\n  fill_wait: 10s");
    let p = Proxy::start(&text, &sim.tls_base(), &[]);
    let url = p.url(LIST);
    let results = concurrently(100, move |_| get(&url, &[]));
    for r in &results {
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "upstream_failed");
    }
    assert_eq!(
        sim.api_calls(),
        1,
        "the failure was shared, not retried per waiter"
    );
}

#[test]
fn expired_entries_are_revalidated_with_304() {
    let sim = Sim::start(&["--validators"]);
    let p = Proxy::start(&config("1s", "0", "0", ""), &sim.tls_base(), &[]);
    let first = p.get(LIST);
    assert_eq!(status(&first), "MISS");
    let etag = first.header("etag").expect("origin etag").to_string();
    let r = until_not_hit(&p, LIST);
    assert_eq!(status(&r), "REVALIDATED", "{:?}", r.headers);
    assert_eq!(r.body, first.body);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let stats = sim.stats();
    assert_eq!(stats["statuses"]["304"], 1, "{stats}");
    assert_eq!(sim.api_calls(), 2);
    assert_eq!(status(&p.get(LIST)), "HIT");
}

#[test]
fn the_budget_is_never_exceeded_and_spent_budget_serves_stale() {
    let sim = Sim::start(&[]);
    let text = config("1s", "0", "1h", "  budget: {per_minute: 6, queue_wait: 0s}");
    let p = Proxy::start(&text, &sim.tls_base(), &[]);
    let started = Instant::now();
    let stale_key = "/propertyadvertising.php?propref=2&noimage=1";
    let first = p.get(stale_key);
    assert_eq!(status(&first), "MISS");

    let keys: Vec<String> = (1..=40)
        .map(|page| format!("/propertyadvertising.php?rob=rent&noimage=1&limit=2&page={page}"))
        .collect();
    let urls: Vec<String> = keys.iter().map(|k| p.url(k)).collect();
    let results = concurrently(40, move |i| get(&urls[i], &[]));
    let refused: Vec<&Resp> = results.iter().filter(|r| r.status == 503).collect();
    assert!(!refused.is_empty());
    for r in &refused {
        assert_eq!(r.json()["error"]["code"], "upstream_failed");
        let retry: u64 = r
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .unwrap();
        assert!(retry >= 1);
    }
    assert!(results.iter().all(|r| r.status == 200 || r.status == 503));

    // Expired and out of budget: served stale although the route has no SWR window.
    let r = until_not_hit(&p, stale_key);
    assert_eq!(status(&r), "STALE", "{:?}", r.headers);
    assert!(r
        .header("warning")
        .unwrap_or_default()
        .contains("budget-exhausted"));

    let elapsed = started.elapsed().as_secs_f64();
    let allowed = 6 + (elapsed * 6.0 / 60.0).floor() as u64;
    let calls = sim.api_calls();
    assert!(
        calls <= allowed,
        "{calls} upstream calls, budget allowed {allowed}"
    );
    assert_eq!(
        results.iter().filter(|r| r.status == 200).count() as u64 + 1,
        calls
    );
}

#[test]
fn a_429_pauses_fetching_for_retry_after() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(&config("1h", "0", "0", ""), &sim.tls_base(), &[]);
    sim.set(json!({"rate_limit": 1, "retry_after": 30}));
    // At most one request per second gets through; the others are refused with 429.
    let mut saw_429 = false;
    for page in 1..=5 {
        let r = p.get(&format!("{LIST}&page={page}"));
        if r.status == 503 {
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "no 429 reached the proxy");
    let calls = sim.api_calls();
    assert_eq!(sim.stats()["statuses"]["429"], 1);
    // Paused: nothing more reaches Rentman, and clients are told when to come back.
    for page in 10..20 {
        let r = p.get(&format!("{LIST}&page={page}"));
        assert_eq!(r.status, 503);
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!(retry > 20 && retry <= 30, "Retry-After {retry}");
    }
    assert_eq!(sim.api_calls(), calls);
}

#[test]
fn refresh_ahead_keeps_a_hot_key_fresh() {
    let sim = Sim::start(&[]);
    let text = format!(
        "{}\nrefresh_ahead: {{hot_threshold: 3, lead: 1s}}\n",
        config("2s", "1h", "0", "")
    );
    let p = Proxy::start(&text, &sim.tls_base(), &[]);
    assert_eq!(status(&p.get(LIST)), "MISS");
    let mut statuses = Vec::new();
    // Several lifetimes of the entry, requested all the time.
    while sim.api_calls() < 4 {
        let r = p.get(LIST);
        assert_eq!(r.status, 200);
        statuses.push(status(&r));
        assert!(statuses.len() < 2000, "no refresh happened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen: std::collections::BTreeSet<&str> = statuses.iter().map(String::as_str).collect();
    assert_eq!(
        seen,
        ["HIT"].into_iter().collect(),
        "visitors saw only fresh hits"
    );
}

#[test]
fn honor_origin_routes_pass_the_origins_own_error_on_when_nothing_is_stale() {
    use common::origin::{Fault, Origin};
    let origin = Origin::https("origin");
    let text = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream:
  base_url: \"{{ORIGIN}}\"
  failure_memo: 0
routes:
  - {name: generic, match: {path: /propertyadvertising.php, query: {kind: generic}},
     mode: honor_origin, ttl: 1m, body: json_array, include_params: [kind, propref]}
  - {name: forced, match: {path: /propertyadvertising.php}, ttl: 1m, body: json_array,
     include_params: [kind, propref]}
";
    let p = Proxy::start(text, &origin.base(), &[]);

    // An origin that speaks HTTP caching said 503 with its own page: the client gets that.
    origin.set("1", Some(Fault::Status(503, Some(30))));
    let r = p.get("/propertyadvertising.php?kind=generic&propref=1");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.text(), "<html><body>error 503</body></html>");
    assert_eq!(r.header("retry-after"), Some("30"));
    assert_eq!(status(&r), "MISS");
    let cs = r.header("cache-status").unwrap();
    assert!(
        cs.contains("fwd-status=503") && cs.contains("detail=\"status-503\""),
        "{cs}"
    );

    // A forced route (Rentman) answers with rentcache's JSON error instead.
    origin.set("2", Some(Fault::Status(503, None)));
    let r = p.get("/propertyadvertising.php?kind=forced&propref=2");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "upstream_failed");

    // No answer at all: the JSON error on either kind of route.
    origin.set("3", Some(Fault::ResetBeforeHeader));
    let r = p.get("/propertyadvertising.php?kind=generic&propref=3");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"]["code"], "upstream_failed");

    // Nothing of it was stored: once the origin is well, its answer comes.
    origin.set("1", None);
    let r = p.get("/propertyadvertising.php?kind=generic&propref=1");
    assert_eq!(r.status, 200);
    assert_eq!(status(&r), "MISS");
}

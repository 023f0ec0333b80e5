//! The core proxy against the simulator: keys, token handling, routing, lifetimes, headers for
//! outer caches, conditional requests, CORS, soft errors, the memory budget and coalescing.

mod common;

use common::*;
use std::time::Duration;

const FEATURED: &str = "/propertyadvertising.php?featured=1&noimage=1";

fn status(r: &Resp) -> &str {
    r.header("x-cache-status").unwrap_or("<none>")
}

#[test]
fn miss_then_hit_makes_one_upstream_call() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    let first = proxy.get(FEATURED);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(status(&first), "MISS");
    let second = proxy.get(FEATURED);
    assert_eq!(status(&second), "HIT");
    assert_eq!(first.body, second.body);
    assert!(!second.json().as_array().expect("array").is_empty());
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn equivalent_requests_share_one_entry() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    assert_eq!(status(&proxy.get(FEATURED)), "MISS");
    for variant in [
        "/propertyadvertising.php?noimage=1&featured=1",
        "/propertyadvertising.php?featured=1&noimage=1&utm_source=news&utm_medium=mail",
        "/propertyadvertising.php?noimage=1&token=abc&featured=1&fbclid=xyz",
        "/propertyadvertising.php?featured=1&noimage=1&beds=2&minprice=900",
    ] {
        let r = proxy.get(variant);
        assert_eq!(status(&r), "HIT", "{variant}");
    }
    // Parameters sent as headers, as Rentman also accepts them.
    let r = get(
        &proxy.url("/propertyadvertising.php?noimage=1"),
        &[("featured", "1")],
    );
    assert_eq!(status(&r), "HIT");
    assert_eq!(sim.api_calls(), 1);
    let targets = sim.stats()["by_target"].clone();
    let targets = targets.as_object().expect("by_target");
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert!(targets.contains_key(FEATURED), "{targets:?}");
}

#[test]
fn token_goes_upstream_and_nowhere_else() {
    let token = "s3cret-rentman-token";
    let sim = Sim::start(&["--token", token]);
    let proxy = Proxy::rentman(&sim, &[("RENTMAN_TOKEN", token), ("RUST_LOG", "debug")]);
    let r = get(
        &proxy.url("/propertyadvertising.php?rob=rent&limit=5&token=client-query-token"),
        &[("token", "client-header-token")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json().as_array().expect("array").len(), 5);
    let hit = proxy.get("/propertyadvertising.php?rob=rent&limit=5");
    assert_eq!(status(&hit), "HIT");

    let stats = sim.stats();
    assert_eq!(stats["bad_token"], 0, "{stats}");
    let recent = stats["recent"].as_array().expect("recent");
    assert_eq!(recent.len(), 1);
    assert_eq!(recent[0]["token"], "ok");
    assert_eq!(recent[0]["headers"]["accept-encoding"], "identity");
    let upstream_request = recent[0].to_string();
    for leaked in ["client-query-token", "client-header-token"] {
        assert!(!upstream_request.contains(leaked), "{upstream_request}");
    }
    for resp in [&r, &hit] {
        let all = format!("{:?} {}", resp.headers, resp.text());
        for secret in [token, "client-query-token", "client-header-token"] {
            assert!(!all.contains(secret), "{secret} in response: {all}");
        }
    }
    let logs = proxy.proc.logs();
    assert!(logs.contains("DEBUG"), "debug logging was on");
    for secret in [token, "client-query-token", "client-header-token"] {
        assert!(!logs.contains(secret), "{secret} in proxy logs");
    }
}

#[test]
fn token_as_query_parameter() {
    let token = "q-token-123";
    let sim = Sim::start(&["--token", token]);
    let config = shipped_config().replace("token_in: header", "token_in: query");
    let proxy = Proxy::start(&config, &sim.tls_base(), &[("RENTMAN_TOKEN", token)]);
    let r = proxy.get(FEATURED);
    assert_eq!(r.status, 200, "{}", r.text());
    let stats = sim.stats();
    assert_eq!(stats["recent"][0]["token"], "ok", "{stats}");
    assert!(!r.text().contains(token));
}

#[test]
fn unrouted_paths_and_other_methods_are_refused() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    let r = proxy.get("/admin.php");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "no_route");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let r = request("POST", &proxy.url(FEATURED), &[], b"x=1");
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let purge = raw_http(
        proxy.port,
        &format!("PURGE {FEATURED} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    assert!(purge.starts_with("HTTP/1.1 405"), "{purge}");
    assert_eq!(sim.api_calls(), 0);
}

#[test]
fn a_short_ttl_entry_expires() {
    let sim = Sim::start(&[]);
    let config = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\"}
routes:
  - name: quick
    match: {path: /propertyadvertising.php}
    ttl: 1s
    stale_if_error: 1h
    body: json_array
";
    let proxy = Proxy::start(config, &sim.base(), &[]);
    assert_eq!(status(&proxy.get(FEATURED)), "MISS");
    let after = eventually(Duration::from_secs(30), || {
        let r = proxy.get(FEATURED);
        (status(&r) != "HIT").then_some(r)
    });
    assert_eq!(status(&after), "EXPIRED", "{:?}", after.headers);
    assert_eq!(after.status, 200);
    assert_eq!(sim.api_calls(), 2);
}

#[test]
fn headers_for_browsers_and_cdns() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    // featured: ttl 10m, browser 1m, cdn 5m, swr 10m, sie 1d.
    let miss = proxy.get(FEATURED);
    // Lifetimes count from the origin's Date, as Age does: a miss answered just after a
    // second boundary is 1 s old, and its lifetimes are 1 s longer.
    let age: u64 = miss.header("age").expect("Age on a miss").parse().unwrap();
    assert!(age <= 1, "a fresh miss is at most a second old: {age}");
    assert_eq!(
        miss.header("cache-control"),
        Some(
            format!(
                "public, max-age={}, s-maxage={}, stale-while-revalidate=600, stale-if-error=86400",
                60 + age,
                300 + age
            )
            .as_str()
        )
    );
    let cs = miss.header("cache-status").unwrap();
    assert!(
        cs.starts_with("rentcache; fwd=uri-miss; fwd-status=200"),
        "{cs}"
    );
    assert!(cs.ends_with("; stored"), "{cs}");

    let hit = proxy.get(FEATURED);
    let age: u64 = hit.header("age").expect("Age on a hit").parse().unwrap();
    let cc = hit.header("cache-control").unwrap();
    assert!(
        cc.starts_with(&format!(
            "public, max-age={}, s-maxage={},",
            60 + age,
            300 + age
        )),
        "{cc} with Age {age}"
    );
    let cs = hit.header("cache-status").unwrap();
    assert!(cs.starts_with("rentcache; hit; ttl="), "{cs}");
    let etag = hit.header("etag").expect("ETag on a hit");
    assert!(etag.starts_with('"'), "{etag}");

    // property detail: browser 5m, cdn 30m.
    proxy.get("/propertyadvertising.php?propref=1&noimage=1");
    let detail = proxy.get("/propertyadvertising.php?propref=1&noimage=1");
    let cc = detail.header("cache-control").unwrap();
    assert!(cc.contains("stale-if-error=172800"), "{cc}");
    // Errors are never cached by anyone.
    assert_eq!(proxy.get("/nope").header("cache-control"), Some("no-store"));
}

#[test]
fn if_none_match_gets_304_from_the_cache() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    proxy.get(FEATURED);
    let hit = proxy.get(FEATURED);
    let etag = hit.header("etag").expect("etag").to_string();
    let r = get(&proxy.url(FEATURED), &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    let weak = format!("W/{etag}");
    let r = get(&proxy.url(FEATURED), &[("if-none-match", &weak)]);
    assert_eq!(r.status, 304);
    let r = get(
        &proxy.url(FEATURED),
        &[("if-none-match", "\"something-else\"")],
    );
    assert_eq!(r.status, 200);
    assert_eq!(sim.api_calls(), 1);
}

/// A hit's head is kept with its entry for the requests that all get the same one: a request
/// with an `Origin` or a validator gets its own (CORS headers, a 304), and never leaves it
/// behind for the next plain request.
#[test]
fn kept_heads_are_only_reused_for_requests_they_fit() {
    let sim = Sim::start(&[]);
    let config = shipped_config().replace(
        "allowed_origins: []",
        "allowed_origins: [\"https://agent.example\"]",
    );
    let proxy = Proxy::start(&config, &sim.base(), &[]);
    let url = proxy.url(FEATURED);
    assert_eq!(status(&proxy.get(FEATURED)), "MISS");
    let plain = proxy.get(FEATURED);
    assert_eq!(status(&plain), "HIT");
    assert_eq!(plain.header("access-control-allow-origin"), None);
    let etag = plain.header("etag").expect("etag").to_string();

    let cors = get(&url, &[("origin", "https://agent.example")]);
    assert_eq!(status(&cors), "HIT");
    assert_eq!(
        cors.header("access-control-allow-origin"),
        Some("https://agent.example")
    );
    let again = proxy.get(FEATURED);
    assert_eq!(again.header("access-control-allow-origin"), None);

    let revalidated = get(&url, &[("if-none-match", &etag)]);
    assert_eq!(revalidated.status, 304);
    let again = proxy.get(FEATURED);
    assert_eq!(again.status, 200);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert!(again.body == plain.body);
    for name in ["content-length", "content-type", "x-cache-status", "vary"] {
        assert_eq!(again.header(name), plain.header(name), "{name}");
    }
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn cors_preflight_is_answered_by_the_proxy() {
    let sim = Sim::start(&[]);
    let config = shipped_config().replace(
        "allowed_origins: []",
        "allowed_origins: [\"https://agent.example\"]",
    );
    let proxy = Proxy::start(&config, &sim.base(), &[]);
    let url = proxy.url(FEATURED);
    let pre = request(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://agent.example"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-requested-with"),
        ],
        b"",
    );
    assert_eq!(pre.status, 204);
    assert_eq!(
        pre.header("access-control-allow-origin"),
        Some("https://agent.example")
    );
    assert_eq!(
        pre.header("access-control-allow-methods"),
        Some("GET, HEAD")
    );
    assert_eq!(pre.header("access-control-max-age"), Some("3600"));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("x-requested-with")
    );
    let denied = request(
        "OPTIONS",
        &url,
        &[
            ("origin", "https://other.example"),
            ("access-control-request-method", "GET"),
        ],
        b"",
    );
    assert_eq!(denied.status, 403);
    let r = get(&url, &[("origin", "https://agent.example")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://agent.example")
    );
    assert!(r
        .headers
        .iter()
        .any(|(k, v)| k == "vary" && v.contains("Origin")));
    let r = get(&url, &[("origin", "https://other.example")]);
    assert_eq!(r.header("access-control-allow-origin"), None);
    // Preflights never reached Rentman.
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn bad_token_bodies_are_never_cached() {
    for kind in ["empty", "text", "object"] {
        let sim = Sim::start(&["--token", "right", "--bad-token-body", kind]);
        // No failure memo: every request asks the origin, so a stored copy would show.
        let config = shipped_config().replace("failure_memo: 2s", "failure_memo: 0s");
        let proxy = Proxy::start(&config, &sim.tls_base(), &[("RENTMAN_TOKEN", "wrong")]);
        for _ in 0..2 {
            let r = proxy.get(FEATURED);
            assert_eq!(r.status, 502, "{kind}: {}", r.text());
            let err = r.json();
            assert_eq!(err["error"]["code"], "upstream_failed");
            let msg = err["error"]["message"].as_str().unwrap();
            assert!(msg.contains("token"), "{kind}: {msg}");
            assert_eq!(r.header("cache-control"), Some("no-store"));
        }
        assert_eq!(sim.api_calls(), 2, "{kind}: nothing was stored");
        // Once the origin answers properly, the key is filled normally.
        sim.set(serde_json::json!({"token": null}));
        let r = proxy.get(FEATURED);
        assert_eq!(r.status, 200);
        assert_eq!(status(&r), "MISS");
    }
}

#[test]
fn check_names_file_line_and_key() {
    let dir = scratch_dir("check");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "routes:\n  - name: a\n    match: {path: /a}\n    ttl: 5 minutes\n  - name: b\n    mach: {path: /b}\n    ttl: 1m\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let file = bad.display().to_string();
    assert!(
        err.contains(&format!("{file}:4:5: routes[0].ttl: invalid duration")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{file}:6:5: routes[1].mach: unknown key `mach`")),
        "{err}"
    );

    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/rentcache.yaml"))
            .unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK: 5 routes"));
    // Every shipped route checks its bodies: no warning.
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("warning"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A cached route whose bodies nothing checks is valid, and worth a warning; one that
    // stores nothing is not.
    let unchecked = dir.join("unchecked.yaml");
    std::fs::write(
        &unchecked,
        "routes:\n  - {name: stored, match: {path: /a}, ttl: 5m}\n  \
         - {name: proxied, match: {path: /b}, ttl: 0}\n  \
         - {name: checked, match: {path: /c}, ttl: 5m, body: json_array}\n",
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "-c"])
        .arg(&unchecked)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: route `stored` stores bodies that nothing checks"),
        "{err}"
    );
    assert!(
        !err.contains("`proxied`") && !err.contains("`checked`"),
        "{err}"
    );
}

#[test]
fn memory_budget_evicts_and_large_objects_pass_through() {
    let sim = Sim::start(&[]);
    let config = shipped_config()
        .replace("max_bytes: 256MiB", "max_bytes: 256KiB")
        .replace("max_object_bytes: 8MiB", "max_object_bytes: 64KiB");
    let proxy = Proxy::start(&config, &sim.base(), &[]);
    // ~60 distinct pages of a few KiB to tens of KiB: several times the budget.
    let keys: Vec<String> = (1..=6)
        .flat_map(|limit| {
            (1..=10).map(move |page| {
                format!("/propertyadvertising.php?rob=rent&noimage=1&limit={limit}&page={page}")
            })
        })
        .collect();
    for k in &keys {
        assert_eq!(proxy.get(k).status, 200);
    }
    let calls = sim.api_calls();
    assert_eq!(calls, keys.len() as u64);
    // The earliest pages cannot all still be there.
    let misses = keys[..20]
        .iter()
        .filter(|k| status(&proxy.get(k)) == "MISS")
        .count();
    assert!(misses > 0, "nothing was evicted from a 256 KiB tier");

    // A response above max_object_bytes is served whole but never stored.
    let big = "/propertyadvertising.php?rob=sale&limit=5";
    let first = proxy.get(big);
    assert!(first.body.len() > 64 * 1024, "{} bytes", first.body.len());
    let again = proxy.get(big);
    assert_eq!(again.status, 200);
    assert_eq!(status(&again), "MISS");
    assert_eq!(first.body, again.body);
}

#[test]
fn concurrent_cold_requests_make_one_upstream_call() {
    let sim = Sim::start(&["--latency-ms", "300", "--latency-sigma", "0"]);
    let proxy = Proxy::rentman(&sim, &[]);
    let url = proxy.url(FEATURED);
    let results = concurrently(50, move |_| get(&url, &[]));
    let first = &results[0].body;
    for r in &results {
        assert_eq!(r.status, 200);
        assert_eq!(&r.body, first);
    }
    assert_eq!(sim.api_calls(), 1);
}

/// Reads one HTTP/1 response with a `Content-Length` from a raw connection: (head, body).
fn read_response(conn: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "connection closed in the head"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body).unwrap();
    (head, body)
}

/// Reads one answer to a HEAD request (a head with a `Content-Length` but no body).
fn read_head_only(conn: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "connection closed in the head"
        );
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap().to_ascii_lowercase()
}

/// Hits are answered before pingora sees them, everything else by pingora's proxy: on one
/// connection, with the requests pipelined in one write, every answer comes back in order,
/// and the connection returns to the hit path after each request pingora answers.
#[test]
fn pipelined_hits_misses_and_errors_are_answered_in_order_on_one_connection() {
    use std::io::{Read, Write};
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    let warm = proxy.get(FEATURED);
    assert_eq!(status(&warm), "MISS");
    let other = "/propertyadvertising.php?propref=3&noimage=1";
    let addr = proxy.url("").trim_start_matches("http://").to_string();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let get = |target: &str| format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let pipelined = [
        get(FEATURED),
        get(other),
        format!("HEAD {FEATURED} HTTP/1.1\r\nHost: x\r\n\r\n"),
        get("/nowhere"),
        get(other),
        format!("GET {FEATURED} HTTP/1.0\r\n\r\n"),
    ]
    .concat();
    conn.write_all(pipelined.as_bytes()).unwrap();

    let cache_status = |head: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("x-cache-status: "))
            .map(str::to_string)
    };
    let (head, body) = read_response(&mut conn);
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(cache_status(&head).as_deref(), Some("hit"), "{head}");
    assert!(head.contains("connection: keep-alive"), "{head}");
    assert!(body == warm.body);

    let (head, miss_body) = read_response(&mut conn);
    let head = head.to_ascii_lowercase();
    assert_eq!(cache_status(&head).as_deref(), Some("miss"), "{head}");

    let head = read_head_only(&mut conn);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(cache_status(&head).as_deref(), Some("hit"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", warm.body.len())),
        "{head}"
    );

    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("no_route"));

    let (head, body) = read_response(&mut conn);
    let head = head.to_ascii_lowercase();
    assert_eq!(cache_status(&head).as_deref(), Some("hit"), "{head}");
    assert!(body == miss_body);

    // HTTP/1.0 without keep-alive: answered, then closed.
    let (head, body) = read_response(&mut conn);
    let head = head.to_ascii_lowercase();
    assert_eq!(cache_status(&head).as_deref(), Some("hit"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    assert!(body == warm.body);
    let mut rest = Vec::new();
    assert_eq!(
        conn.read_to_end(&mut rest).unwrap(),
        0,
        "bytes after the last answer"
    );

    // What pingora refuses, the front door does not answer either, hit or not.
    let twice =
        format!("GET {FEATURED} HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n");
    let answer = raw_http(proxy.port, &twice);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(sim.api_calls(), 2);
}

/// A hit for a client that takes a coding rentcache keeps no copies in (brotli) is encoded
/// by pingora's compression module on the way out: still a hit, with no upstream call.
#[test]
fn hits_in_codings_without_kept_copies_are_encoded_on_the_way_out() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    assert_eq!(status(&proxy.get(FEATURED)), "MISS");
    let r = get(&proxy.url(FEATURED), &[("accept-encoding", "br")]);
    assert_eq!(r.status, 200);
    assert_eq!(status(&r), "HIT");
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn large_hit_reaches_a_slow_reader_whole_and_keeps_the_connection() {
    use std::io::{Read, Write};
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    // Hundreds of KB with photos: more than a loopback socket takes in one write.
    let big = "/propertyadvertising.php?rob=sale&limit=10";
    let first = proxy.get(big);
    assert_eq!(status(&first), "MISS");
    assert!(first.body.len() > 400 * 1024, "{} bytes", first.body.len());
    let addr = proxy.url("").trim_start_matches("http://").to_string();
    let request = format!("GET {big} HTTP/1.1\r\nHost: x\r\n\r\n");

    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    // A response cut short fails the test rather than hanging it.
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(request.as_bytes()).unwrap();
    // A client that is slow to start reading: the socket fills and the rest must wait for it.
    std::thread::sleep(Duration::from_millis(200));
    let (head, body) = read_response(&mut conn);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("x-cache-status: hit"),
        "{head}"
    );
    assert!(body == first.body, "the hit's body differs from the miss's");
    // The same connection serves the next request.
    conn.write_all(request.as_bytes()).unwrap();
    let (head, body) = read_response(&mut conn);
    assert!(
        head.to_ascii_lowercase().contains("connection: keep-alive"),
        "{head}"
    );
    assert!(body == first.body);

    // A client that leaves mid-response costs only its own connection.
    let mut quitter = std::net::TcpStream::connect(&addr).unwrap();
    quitter.write_all(request.as_bytes()).unwrap();
    let mut some = [0u8; 1024];
    let _ = quitter.read(&mut some).unwrap();
    drop(quitter);
    let after = proxy.get(big);
    assert_eq!(status(&after), "HIT");
    assert!(after.body == first.body);
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn hits_are_compressed_for_clients_that_accept_it() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[("RENTCACHE_ADMIN_TOKEN", "admin")]);
    let plain = proxy.get(FEATURED);
    assert_eq!(status(&plain), "MISS");
    let url = proxy.url(FEATURED);
    let zipped = get(&url, &[("accept-encoding", "gzip")]);
    assert_eq!(status(&zipped), "HIT");
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert!(
        gunzip(&zipped.body) == plain.body,
        "gzip body does not decode to the JSON"
    );
    // Encoded once and kept: the next gzip hit has the same bytes, no upstream call.
    let again = get(&url, &[("accept-encoding", "gzip, deflate, br")]);
    assert_eq!(again.header("content-encoding"), Some("gzip"));
    assert!(again.body == zipped.body);
    assert_eq!(sim.api_calls(), 1);
    // Operators count the answers cached; the copy shows apart, its bytes in the total.
    let stats = get(
        &proxy.admin_url("/stats"),
        &[("authorization", "Bearer admin")],
    )
    .json();
    assert_eq!(stats["tiers"]["memory"]["entries"], 1, "{stats}");
    assert_eq!(stats["tiers"]["memory"]["encoded_copies"], 1, "{stats}");
    let bytes = stats["tiers"]["memory"]["bytes"].as_u64().unwrap() as usize;
    assert!(bytes > plain.body.len() + zipped.body.len(), "{stats}");
    // Outer caches must keep the two apart; the encoded copy's validator is weak.
    assert_eq!(zipped.header("vary"), Some("Accept-Encoding"));
    let plain_hit = proxy.get(FEATURED);
    let etag = plain_hit.header("etag").expect("etag").to_string();
    assert_eq!(zipped.header("etag"), Some(format!("W/{etag}").as_str()));
    let revalidated = get(
        &url,
        &[
            ("accept-encoding", "gzip"),
            ("if-none-match", etag.as_str()),
        ],
    );
    assert_eq!(revalidated.status, 304);
    for headers in [&[][..], &[("accept-encoding", "identity")][..]] {
        let r = get(&url, headers);
        assert_eq!(status(&r), "HIT");
        assert_eq!(r.header("content-encoding"), None);
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert!(r.body == plain.body);
    }
    // A client that takes only brotli still gets an encoded answer.
    let br = get(&url, &[("accept-encoding", "br")]);
    assert_eq!(status(&br), "HIT");
    assert_eq!(br.header("content-encoding"), Some("br"));
}

/// Routes without `include_params`: every parameter but the dropped ones is forwarded.
const OPEN_ROUTES: &str = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\"}
routes:
  - name: most
    match: {path: /propertyadvertising.php, query: {featured: 1}}
    ttl: 1m
    exclude_params: [beds]
  - name: all
    match: {path: /propertyadvertising.php}
    ttl: 1m
";

#[test]
fn renamed_client_tokens_never_reach_the_upstream() {
    let token = "s3cret-rentman-token";
    let sim = Sim::start(&["--token", token]);
    let proxy = Proxy::start(OPEN_ROUTES, &sim.base(), &[("RENTMAN_TOKEN", token)]);
    // Each is `token` to Rentman's PHP (or, for `token.` and `token%20`, a stray-character
    // spelling of it): none may be forwarded.
    let spellings = [
        "token",
        "TOKEN",
        "%20token",
        "+token",
        "%20%20Token",
        "token%00",
        "token%00tail",
        "token[]",
        "token%5B%5D",
        "token%5Bx%5D",
        "token.",
        "token%2E",
        "token%20",
        "tok%65n%5B",
        "%20token%5B0%5D%5B1%5D",
    ];
    for (i, spelling) in spellings.iter().enumerate() {
        for base in [
            "/propertyadvertising.php?rob=rent&limit=2",
            "/propertyadvertising.php?featured=1&limit=2",
        ] {
            let url = format!("{base}&page={i}&{spelling}=client-secret-{i}");
            let r = proxy.get(&url);
            assert_eq!(r.status, 200, "{url}: {}", r.text());
            assert_eq!(status(&r), "MISS", "{url}");
        }
    }
    let stats = sim.stats();
    assert_eq!(stats["bad_token"], 0, "{stats}");
    let recent = stats["recent"].as_array().expect("recent");
    assert_eq!(recent.len(), spellings.len() * 2, "{stats}");
    for upstream in recent {
        assert_eq!(upstream["token"], "ok", "{upstream}");
        let target = upstream["target"].as_str().expect("target");
        let decoded = percent_encoding::percent_decode_str(target)
            .decode_utf8_lossy()
            .to_lowercase();
        for leaked in ["token", "client-secret", "redacted"] {
            assert!(
                !decoded.contains(leaked),
                "{leaked} reached Rentman: {target}"
            );
        }
    }
}

//! HTTP caching semantics on `honor_origin` routes (and the parts that apply to every
//! route), one test per rule, each citing its section of RFC 9111 (caching), RFC 9110 (HTTP
//! semantics) or RFC 9213 (targeted cache control). The origin answers with the headers each
//! test gives it.

mod common;

use common::origin::{answer, Fault, Origin};
use common::*;
use serde_json::json;

const ADMIN: &str = "semantics-admin-token";

fn proxy(origin: &Origin, extra_route: &str) -> Proxy {
    let text = format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\", failure_memo: 0}}
refresh_ahead: {{hot_threshold: 0}}
routes:
  - {{name: generic, match: {{path: /propertyadvertising.php}}, mode: honor_origin, ttl: 1m,
     include_params: [propref], pass_through_methods: [POST, DELETE]{extra_route}}}
"
    );
    Proxy::start(&text, &origin.base(), &[("RENTCACHE_ADMIN_TOKEN", ADMIN)])
}

fn url(key: &str) -> String {
    format!("/propertyadvertising.php?propref={key}")
}

fn status(r: &Resp) -> &str {
    r.header("x-cache-status").unwrap_or("<none>")
}

fn echo(r: &Resp) -> serde_json::Value {
    r.json()[0]["echo"].clone()
}

fn all(r: &Resp, name: &str) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
        .collect()
}

/// RFC 9111 4.1: a stored answer is used only for a request whose headers named by `Vary`
/// match those of the request that fetched it (values normalised: whitespace, case); an
/// absent header is a value of its own; several headers are matched together; `Vary: *`
/// never matches. Variants live in memory and Redis, are bounded per URL, and go with a
/// purge of their URL.
#[test]
fn vary_selects_the_stored_variant_rfc9111_4_1() {
    let redis = RedisServer::start();
    let origin = Origin::http();
    let text = format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}
redis: {{url: \"{}\"}}
routes:
  - {{name: generic, match: {{path: /propertyadvertising.php}}, mode: honor_origin, ttl: 1m,
     include_params: [propref]}}
",
        redis.url()
    );
    let p = Proxy::start(&text, &origin.base(), &[("RENTCACHE_ADMIN_TOKEN", ADMIN)]);
    wait_redis_up(&p);
    origin.set(
        "1",
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Language"),
            ],
            Some("accept-language"),
        )),
    );
    let get_lang = |lang: Option<&str>| {
        let headers: Vec<(&str, &str)> = lang.map(|l| ("accept-language", l)).into_iter().collect();
        get(&p.url(&url("1")), &headers)
    };
    let en = get_lang(Some("en-GB"));
    assert_eq!((status(&en), echo(&en)), ("MISS", json!("en-GB")));
    let fr = get_lang(Some("fr"));
    assert_eq!(
        (status(&fr), echo(&fr)),
        ("MISS", json!("fr")),
        "another variant"
    );
    let en2 = get_lang(Some("  EN-gb "));
    assert_eq!(
        (status(&en2), echo(&en2)),
        ("HIT", json!("en-GB")),
        "normalised"
    );
    let fr2 = get_lang(Some("fr"));
    assert_eq!((status(&fr2), echo(&fr2)), ("HIT", json!("fr")));
    let none = get_lang(None);
    assert_eq!(
        (status(&none), echo(&none)),
        ("MISS", json!("")),
        "absent is its own value"
    );
    assert_eq!(status(&get_lang(None)), "HIT");
    assert_eq!(origin.calls("1"), 3);
    assert!(all(&en2, "vary")
        .iter()
        .any(|v| v.contains("Accept-Language")));

    // Another instance finds the variants through Redis.
    let q = Proxy::start(&text, &origin.base(), &[("RENTCACHE_ADMIN_TOKEN", ADMIN)]);
    wait_redis_up(&q);
    let fr3 = get(&q.url(&url("1")), &[("accept-language", "fr")]);
    assert_eq!((status(&fr3), echo(&fr3)), ("HIT", json!("fr")));
    assert!(fr3.header("cache-status").unwrap().contains("redis"));
    assert_eq!(origin.calls("1"), 3);

    // A purge of the URL takes every variant with it.
    let r = p.admin_post("/purge", ADMIN, json!({"url": url("1")}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(status(&get_lang(Some("fr"))), "MISS");
    assert_eq!(status(&get_lang(Some("en-GB"))), "MISS");

    // Several headers: each combination is a variant.
    origin.set(
        "2",
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("vary", "Accept-Language, Accept"),
            ],
            Some("accept"),
        )),
    );
    let two = |lang: &str, accept: &str| {
        get(
            &p.url(&url("2")),
            &[("accept-language", lang), ("accept", accept)],
        )
    };
    assert_eq!(status(&two("en", "a/b")), "MISS");
    assert_eq!(status(&two("en", "c/d")), "MISS");
    assert_eq!(status(&two("fr", "a/b")), "MISS");
    assert_eq!(status(&two("en", "a/b")), "HIT");
    assert_eq!(status(&two("en", "c/d")), "HIT");

    // Vary: * never matches: every request goes to the origin.
    origin.set(
        "3",
        Some(answer(
            200,
            &[("cache-control", "max-age=600"), ("vary", "*")],
            None,
        )),
    );
    for _ in 0..3 {
        let r = get(&p.url(&url("3")), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(status(&r), "MISS");
    }
    assert_eq!(origin.calls("3"), 3);

    // Bounded: at most 32 variants per URL are kept; the rest are served, not stored.
    origin.set(
        "4",
        Some(answer(
            200,
            &[("cache-control", "max-age=600"), ("vary", "X-Variant")],
            Some("x-variant"),
        )),
    );
    for i in 0..40 {
        let r = get(&p.url(&url("4")), &[("x-variant", &i.to_string())]);
        assert_eq!((status(&r), echo(&r)), ("MISS", json!(i.to_string())));
    }
    let first = get(&p.url(&url("4")), &[("x-variant", "0")]);
    assert_eq!(status(&first), "HIT");
    let last = get(&p.url(&url("4")), &[("x-variant", "39")]);
    assert_eq!(status(&last), "MISS");
    let metrics = get(
        &p.admin_url("/metrics"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .text();
    assert!(
        metrics.contains("rentcache_vary_variants_refused_total 9"),
        "{metrics}"
    );
}

/// RFC 9111 4.3.4 (and 3.2): a `304` from the origin renews the stored answer and updates
/// its stored header fields with those the 304 carries; the request that revalidated it
/// sends the stored validator.
#[test]
fn a_304_updates_the_stored_headers_rfc9111_4_3_4() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    origin.set(
        "5",
        Some(answer(
            200,
            &[
                ("cache-control", "no-cache"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            None,
        )),
    );
    let first = p.get(&url("5"));
    assert_eq!(
        (status(&first), first.header("x-version")),
        ("MISS", Some("1"))
    );
    origin.set(
        "5",
        Some(answer(
            304,
            &[
                ("cache-control", "no-cache"),
                ("etag", "\"v1\""),
                ("x-version", "2"),
            ],
            None,
        )),
    );
    let second = p.get(&url("5"));
    assert_eq!(status(&second), "REVALIDATED");
    assert_eq!(
        second.header("x-version"),
        Some("2"),
        "header updated by the 304"
    );
    assert_eq!(second.body, first.body, "body kept");
    let (_, sent) = origin.last_request("5").unwrap();
    assert!(
        sent.iter()
            .any(|(n, v)| n == "if-none-match" && v == "\"v1\""),
        "{sent:?}"
    );
    let third = p.get(&url("5"));
    assert_eq!(
        third.header("x-version"),
        Some("2"),
        "the update was stored"
    );
}

/// RFC 9111 4.4: a successful unsafe request invalidates the stored answers for its target
/// and for the `Location` and `Content-Location` it names on the same host, not another's.
#[test]
fn unsafe_methods_invalidate_rfc9111_4_4() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    for key in ["6", "7", "8"] {
        origin.set(
            key,
            Some(answer(200, &[("cache-control", "max-age=600")], None)),
        );
        assert_eq!(status(&p.get(&url(key))), "MISS");
        assert_eq!(status(&p.get(&url(key))), "HIT");
    }
    origin.set(
        "6",
        Some(answer(
            201,
            &[
                ("location", &url("7")),
                (
                    "content-location",
                    &format!("http://elsewhere.example{}", url("8")),
                ),
            ],
            None,
        )),
    );
    let posted = request("POST", &p.url(&url("6")), &[], b"{\"a\":1}");
    assert_eq!(posted.status, 201);
    assert_eq!(origin.last_request("6").unwrap().0, "POST");
    origin.set(
        "6",
        Some(answer(200, &[("cache-control", "max-age=600")], None)),
    );
    assert_eq!(status(&p.get(&url("6"))), "MISS", "the target");
    assert_eq!(
        status(&p.get(&url("7"))),
        "MISS",
        "Location on the same host"
    );
    assert_eq!(
        status(&p.get(&url("8"))),
        "HIT",
        "another host's Content-Location"
    );
    // A failed unsafe request invalidates nothing.
    origin.set("6", Some(answer(500, &[], None)));
    let _ = request("DELETE", &p.url(&url("6")), &[], b"");
    origin.set(
        "6",
        Some(answer(200, &[("cache-control", "max-age=600")], None)),
    );
    assert_eq!(status(&p.get(&url("6"))), "HIT");
}

/// RFC 9111 4.2.3: `Age` is the corrected initial age (from the response's `Date` and
/// `Age`) plus the time it spent here; RFC 9110 6.6.1: the stored `Date` is kept.
#[test]
fn age_and_date_rfc9111_4_2_3() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    let made = std::time::SystemTime::now() - std::time::Duration::from_secs(100);
    let date = httpdate::fmt_http_date(made);
    origin.set(
        "9",
        Some(answer(
            200,
            &[("cache-control", "max-age=600"), ("date", &date)],
            None,
        )),
    );
    let miss = p.get(&url("9"));
    let age: u64 = miss.header("age").unwrap().parse().unwrap();
    assert!((99..=130).contains(&age), "Age {age}");
    let hit = p.get(&url("9"));
    assert_eq!(status(&hit), "HIT");
    assert_eq!(hit.header("date"), Some(date.as_str()), "Date kept");
    let age: u64 = hit.header("age").unwrap().parse().unwrap();
    assert!(age >= 100, "Age {age}");
}

/// RFC 9110 7.6.1: header fields named in `Connection` describe the hop: never stored, never
/// passed on.
#[test]
fn connection_named_headers_are_dropped_rfc9110_7_6_1() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    origin.set(
        "10",
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("connection", "X-Hop-Secret, keep-alive"),
                ("x-hop-secret", "1"),
                ("keep-alive", "timeout=5"),
                ("x-kept", "yes"),
            ],
            None,
        )),
    );
    for expected in ["MISS", "HIT"] {
        let r = p.get(&url("10"));
        assert_eq!(status(&r), expected);
        assert!(r.header("x-hop-secret").is_none(), "{expected}");
        assert!(r.header("keep-alive").is_none(), "{expected}");
        assert_eq!(r.header("x-kept"), Some("yes"));
    }
}

/// RFC 9111 4.2.1: `Expires` counts from the response's own `Date`, not from this cache's
/// clock; RFC 9111 5.1: an invalid `Age` is not trusted.
#[test]
fn expires_against_date_and_invalid_age_rfc9111_4_2_1_and_5_1() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    // The origin's clock is an hour slow: its Expires is 10 minutes after its Date, which a
    // cache trusting its own clock would take as 50 minutes in the past... and one reading
    // Expires alone as in the past; read against Date, the answer was already an hour old.
    let origin_now = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    let date = httpdate::fmt_http_date(origin_now);
    let expires = httpdate::fmt_http_date(origin_now + std::time::Duration::from_secs(600));
    origin.set(
        "11",
        Some(answer(200, &[("date", &date), ("expires", &expires)], None)),
    );
    assert_eq!(status(&p.get(&url("11"))), "MISS");
    assert_ne!(
        status(&p.get(&url("11"))),
        "HIT",
        "already stale on arrival"
    );
    assert_eq!(origin.calls("11"), 2);
    // Ahead by an hour instead: 10 minutes of life from its Date, counted from now.
    let origin_now = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    let date = httpdate::fmt_http_date(origin_now);
    let expires = httpdate::fmt_http_date(origin_now + std::time::Duration::from_secs(600));
    origin.set(
        "12",
        Some(answer(200, &[("date", &date), ("expires", &expires)], None)),
    );
    assert_eq!(status(&p.get(&url("12"))), "MISS");
    assert_eq!(status(&p.get(&url("12"))), "HIT");

    origin.set(
        "13",
        Some(answer(
            200,
            &[("cache-control", "max-age=600"), ("age", "3600 a")],
            None,
        )),
    );
    assert_eq!(status(&p.get(&url("13"))), "MISS");
    assert_eq!(
        status(&p.get(&url("13"))),
        "HIT",
        "the invalid Age was ignored"
    );
}

/// RFC 9213: `CDN-Cache-Control` (and an operator-named targeted field before it) replaces
/// `Cache-Control` for this cache.
#[test]
fn targeted_cache_control_takes_precedence_rfc9213() {
    let origin = Origin::http();
    let text = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\", cache_control_field: RentCache-Control}
routes:
  - {name: generic, match: {path: /propertyadvertising.php}, mode: honor_origin, ttl: 1m,
     include_params: [propref]}
";
    let p = Proxy::start(text, &origin.base(), &[]);
    origin.set(
        "14",
        Some(answer(
            200,
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
            None,
        )),
    );
    assert_eq!(status(&p.get(&url("14"))), "MISS");
    assert_eq!(status(&p.get(&url("14"))), "HIT", "CDN-Cache-Control wins");
    origin.set(
        "15",
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "no-store"),
            ],
            None,
        )),
    );
    assert_eq!(status(&p.get(&url("15"))), "MISS");
    assert_eq!(
        status(&p.get(&url("15"))),
        "MISS",
        "CDN-Cache-Control: no-store wins"
    );
    origin.set(
        "16",
        Some(answer(
            200,
            &[
                ("cdn-cache-control", "no-store"),
                ("rentcache-control", "max-age=600"),
            ],
            None,
        )),
    );
    assert_eq!(status(&p.get(&url("16"))), "MISS");
    assert_eq!(
        status(&p.get(&url("16"))),
        "HIT",
        "the operator's own field wins"
    );
}

/// RFC 9110 7.7 / 8.4: `no-transform` forbids recoding; an answer the origin encoded is left
/// as it is; a route may turn compression off.
#[test]
fn no_transform_and_encoded_answers_are_left_alone_rfc9110_7_7() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    let gzip = [("accept-encoding", "gzip")];
    origin.set(
        "17",
        Some(answer(
            200,
            &[
                ("cache-control", "max-age=600, no-transform"),
                ("etag", "\"strong\""),
            ],
            None,
        )),
    );
    for expected in ["MISS", "HIT"] {
        let r = get(&p.url(&url("17")), &gzip);
        assert_eq!(status(&r), expected);
        assert!(
            r.header("content-encoding").is_none(),
            "{expected}: recoded"
        );
        assert_eq!(r.header("etag"), Some("\"strong\""));
        assert!(
            !all(&r, "vary")
                .iter()
                .any(|v| v.to_ascii_lowercase().contains("accept-encoding")),
            "{expected}: {:?}",
            all(&r, "vary")
        );
    }
    // Without no-transform it is compressed for a client that takes gzip (a body large
    // enough to be worth it: the origin echoes a long request header into it).
    origin.set(
        "18",
        Some(answer(
            200,
            &[("cache-control", "max-age=600")],
            Some("x-pad"),
        )),
    );
    let pad = "rentcache ".repeat(200);
    let padded = [("accept-encoding", "gzip"), ("x-pad", pad.as_str())];
    let _ = get(&p.url(&url("18")), &[("x-pad", pad.as_str())]);
    let r = get(&p.url(&url("18")), &padded);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    // A route with compression off.
    let q = proxy(&origin, ", compress: false");
    let r = get(&q.url(&url("18")), &padded);
    assert_eq!(r.status, 200);
    assert!(r.header("content-encoding").is_none());
    let r = get(&q.url(&url("18")), &padded);
    assert_eq!(status(&r), "HIT");
    assert!(r.header("content-encoding").is_none());
}

/// `pass_through_methods: any`: a generic upstream gets every method, uncached.
#[test]
fn any_method_can_be_passed_through() {
    let origin = Origin::http();
    let text = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\"}
routes:
  - {name: generic, match: {path: /propertyadvertising.php}, mode: honor_origin, ttl: 1m,
     include_params: [propref], pass_through_methods: any}
";
    let p = Proxy::start(text, &origin.base(), &[]);
    origin.set("19", Some(answer(207, &[], None)));
    for method in ["PROPFIND", "M-SEARCH", "PATCH"] {
        let r = raw_http(
            p.port,
            &format!(
                "{method} {} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                url("19")
            ),
        );
        assert!(r.starts_with("HTTP/1.1 207"), "{method}: {r}");
        assert_eq!(origin.last_request("19").unwrap().0, method);
    }
}

/// A fill sent on a pooled connection that the origin closes without answering (its idle
/// timeout firing as the request arrives) is sent again on a new connection: the visitor
/// gets the answer, not an error (RFC 9110 9.2.2: a GET may be retried automatically).
#[test]
fn a_fill_on_a_connection_the_origin_closed_is_sent_again_rfc9110_9_2_2() {
    let origin = Origin::http();
    let p = proxy(&origin, "");
    let closed = || {
        let metrics = get(
            &p.admin_url("/metrics"),
            &[("authorization", &format!("Bearer {ADMIN}"))],
        )
        .text();
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("rentcache_upstream_connections_total{kind=\"reused_closed\"} ")
            })
            .map_or(0, |v| v.parse::<u64>().unwrap())
    };
    // The first fill opens a connection and leaves it in the pool, answered.
    assert_eq!(status(&p.get(&url("r0"))), "MISS");
    // Each next fill takes a pooled connection (when the last one is back in the pool
    // already), which the origin closes unanswered; the fill is sent again on a new one.
    let (mut sent, mut fills) = (0, 0);
    for i in 1..=20 {
        fills += 1;
        let key = format!("r{i}");
        origin.set(&key, Some(Fault::CloseIfReused));
        let r = p.get(&url(&key));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(status(&r), "MISS");
        assert_eq!(r.json()[0]["propref"], key.as_str());
        sent += origin.calls(&key);
        if closed() >= 3 {
            break;
        }
    }
    let closed = closed();
    assert!(closed >= 1, "no fill met a closed pooled connection");
    assert_eq!(
        sent,
        fills + closed,
        "each closed connection costs one more send, nothing else does"
    );
}

//! The failure matrix: what a visitor gets for every kind of upstream failure, at every
//! concurrency, for every state of the cached copy, run for real against a misbehaving origin
//! over HTTPS, with two rentcache instances sharing a Redis.
//!
//! Columns of each row (one instance `A`, a second `B`, one Redis):
//! - concurrency: one request to A; 50 concurrent to A; 25 + 25 concurrent to A and B;
//! - the copy: none (cold); expired within `stale_while_revalidate`; expired past it but
//!   within `stale_if_error`; expired past both (the entry is dead: as cold).
//!
//! Every cell also checks:
//! - the upstream was asked once per key (at most once where a 429 pauses every fetch of the
//!   instance), whatever the concurrency, within the failure memo;
//! - what the tiers hold afterwards is the copy that was there before (or nothing): nothing
//!   bad is stored, in memory or in Redis;
//! - once the fault clears (and the failure memo has run out), the next fresh answer is the
//!   good body, and no answer ever carried a bad one.
//!
//! A cell's requests start together (behind a barrier), so they all fall within the failure
//! memo of their key's failed fetch.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::origin::{is_good_body, Fault, Origin};
use common::*;
use serde_json::json;

const TOKEN: &str = "matrix-admin-token";

/// Which route the row's requests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    /// `propertyadvertising.php` (`body: json_array`).
    Json,
    /// `propertymedia.php` as JSON items (`body: media`).
    Media,
    /// `propertymedia.php` with `Accept: application/base64`: one file's bare base64.
    Bare,
}

/// How the row breaks the upstream.
#[derive(Debug, Clone)]
enum Break {
    /// The origin answers the row's keys with this fault.
    Key(Fault),
    /// Nothing listens on the upstream's port.
    Refused,
    /// The upstream presents this test certificate (see tests/tls).
    Tls(&'static str),
}

/// What every answer of a cell must be.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// rentcache's JSON error with this status, the reason in `Cache-Status`.
    Error(u16, &'static str),
    /// The old copy: 200, `STALE`, `Warning: 111`, the reason in `Cache-Status`.
    Stale(&'static str),
    /// The old copy, `UPDATING` while the refresh is in flight and `STALE` (as above) once it
    /// has failed.
    UpdatingThenStale(&'static str),
    /// A good answer from the upstream (the fault did not stop it).
    Good,
}

#[derive(Debug, Clone, Copy)]
enum Calls {
    One,
    /// A 429 pauses every fetch of the instance: the keys after the first are not asked.
    AtMostOne,
}

struct Row {
    name: &'static str,
    brk: Break,
    on: On,
    calls: Calls,
    /// No copy / within SWR / past SWR, within SIE / past both.
    want: [Want; 4],
}

fn err(status: u16, reason: &'static str) -> Want {
    Want::Error(status, reason)
}

/// A failure: an error without a usable copy, the copy where one is usable.
fn fails(status: u16, reason: &'static str) -> [Want; 4] {
    [
        err(status, reason),
        Want::UpdatingThenStale(reason),
        Want::Stale(reason),
        err(status, reason),
    ]
}

const EMPTY: &str = "";
const TEXT: &str = "Invalid token";
const OBJECT: &str = r#"{"error":"invalid token"}"#;

fn matrix() -> Vec<Row> {
    use Break::*;
    use Fault::*;
    let row = |name, brk, on, calls, want| Row {
        name,
        brk,
        on,
        calls,
        want,
    };
    vec![
        //  fault                                  route       calls            answers
        row(
            "500",
            Key(Status(500, None)),
            On::Json,
            Calls::One,
            fails(502, "status-500"),
        ),
        row(
            "502",
            Key(Status(502, None)),
            On::Json,
            Calls::One,
            fails(502, "status-502"),
        ),
        row(
            "503",
            Key(Status(503, None)),
            On::Json,
            Calls::One,
            fails(502, "status-503"),
        ),
        row(
            "504",
            Key(Status(504, None)),
            On::Json,
            Calls::One,
            fails(502, "status-504"),
        ),
        row(
            "429 with Retry-After",
            Key(Status(429, Some(1))),
            On::Json,
            Calls::AtMostOne,
            fails(503, "rate-limited"),
        ),
        row(
            "429 without Retry-After",
            Key(Status(429, None)),
            On::Json,
            Calls::AtMostOne,
            fails(503, "rate-limited"),
        ),
        row(
            "connection refused",
            Refused,
            On::Json,
            Calls::One,
            fails(502, "connect-refused"),
        ),
        row(
            "reset before the header",
            Key(ResetBeforeHeader),
            On::Json,
            Calls::One,
            fails(502, "reset"),
        ),
        // A reset discards what the receiver has not read yet: the header may go with it.
        row(
            "reset mid-body",
            Key(ResetMidBody),
            On::Json,
            Calls::One,
            fails(502, "incomplete-body|reset"),
        ),
        row(
            "stall past the timeout",
            Key(Stall),
            On::Json,
            Calls::One,
            fails(504, "timeout"),
        ),
        row(
            "body shorter than its Content-Length",
            Key(ShortBody),
            On::Json,
            Calls::One,
            fails(502, "incomplete-body"),
        ),
        row(
            "bad token: empty, JSON route",
            Key(BadToken(EMPTY)),
            On::Json,
            Calls::One,
            fails(502, "empty-body"),
        ),
        row(
            "bad token: text, JSON route",
            Key(BadToken(TEXT)),
            On::Json,
            Calls::One,
            fails(502, "not-json-array"),
        ),
        row(
            "bad token: object, JSON route",
            Key(BadToken(OBJECT)),
            On::Json,
            Calls::One,
            fails(502, "not-json-array"),
        ),
        row(
            "bad token: empty, media",
            Key(BadToken(EMPTY)),
            On::Media,
            Calls::One,
            fails(502, "empty-body"),
        ),
        row(
            "bad token: text, media",
            Key(BadToken(TEXT)),
            On::Media,
            Calls::One,
            fails(502, "not-json-array"),
        ),
        row(
            "bad token: object, media",
            Key(BadToken(OBJECT)),
            On::Media,
            Calls::One,
            fails(502, "not-json-array"),
        ),
        row(
            "bad token: empty, bare media",
            Key(BadToken(EMPTY)),
            On::Bare,
            Calls::One,
            fails(502, "empty-body"),
        ),
        row(
            "bad token: text, bare media",
            Key(BadToken(TEXT)),
            On::Bare,
            Calls::One,
            fails(502, "not-media"),
        ),
        row(
            "bad token: object, bare media",
            Key(BadToken(OBJECT)),
            On::Bare,
            Calls::One,
            fails(502, "not-media"),
        ),
        row(
            "103, then 200",
            Key(EarlyHints(None)),
            On::Json,
            Calls::One,
            [Want::Good; 4],
        ),
        row(
            "103, then 503",
            Key(EarlyHints(Some(503))),
            On::Json,
            Calls::One,
            fails(502, "status-503"),
        ),
        row(
            "TLS: certificate of an unknown CA",
            Tls("unknown-ca"),
            On::Json,
            Calls::One,
            fails(502, "tls"),
        ),
        row(
            "TLS: certificate for another name",
            Tls("wrong-name"),
            On::Json,
            Calls::One,
            fails(502, "tls"),
        ),
    ]
}

/// One route per state of the copy, for both endpoints: the state is a query parameter.
fn config(redis: &str, prefix: &str) -> String {
    let mut routes = String::new();
    for (path, param, body, extra) in [
        ("/propertyadvertising.php", "propref", "json_array", ""),
        (
            "/propertymedia.php",
            "filename",
            "media",
            "key_headers: {accept: [application/base64]}, ",
        ),
    ] {
        for (state, swr, sie) in [
            ("cold", "1d", "1d"),
            ("swr", "1d", "1d"),
            ("sie", "0", "1d"),
            ("dead", "0", "0"),
        ] {
            let name = format!("{}-{state}", &path[1..10]);
            routes.push_str(&format!(
                "  - {{name: {name}, match: {{path: {path}, query: {{state: {state}}}}}, ttl: 1h, \
                 stale_while_revalidate: {swr}, stale_if_error: {sie}, \
                 include_params: [state, {param}], {extra}body: {body}}}\n"
            ));
        }
    }
    format!(
        "server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"], threads: 2}}
upstream:
  base_url: \"{{{{ORIGIN}}}}\"
  read_timeout: 2s
  failure_memo: 4s
redis:
  url: \"{redis}\"
  prefix: \"{prefix}\"
  # This machine runs the whole matrix on two cores: a Redis read may take a while.
  op_timeout: 2s
refresh_ahead: {{hot_threshold: 0}}
routes:
{routes}"
    )
}

const STATES: [&str; 4] = ["cold", "swr", "sie", "dead"];
const COLUMNS: [&str; 3] = ["one request", "50 concurrent", "25 + 25 on two instances"];

/// A key of the matrix: its row, state and column.
struct Cell {
    key: String,
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    state: usize,
    column: usize,
    /// The answer cached before the fault, if any (its body and ETag).
    primed: Option<(Vec<u8>, String)>,
}

fn cell(row: usize, on: On, state: usize, column: usize) -> Cell {
    let key = format!("{}{state}{column}", 100 + row);
    let (path, headers) = match on {
        On::Json => (
            format!(
                "/propertyadvertising.php?state={}&propref={key}",
                STATES[state]
            ),
            vec![],
        ),
        On::Media | On::Bare => (
            format!("/propertymedia.php?state={}&filename={key}", STATES[state]),
            if on == On::Bare {
                vec![("accept", "application/base64")]
            } else {
                vec![]
            },
        ),
    };
    Cell {
        key,
        path,
        headers,
        state,
        column,
        primed: None,
    }
}

fn upstream_calls(p: &Proxy) -> u64 {
    let auth = format!("Bearer {TOKEN}");
    let r = get(&p.admin_url("/metrics"), &[("authorization", &auth)]);
    assert_eq!(r.status, 200);
    r.text()
        .lines()
        .filter(|l| l.starts_with("rentcache_upstream_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Upstream calls in flight on `p` now.
fn in_flight(p: &Proxy) -> u64 {
    let auth = format!("Bearer {TOKEN}");
    let r = get(&p.admin_url("/metrics"), &[("authorization", &auth)]);
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("rentcache_upstream_in_flight "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(u64::MAX)
}

fn x_cache(r: &Resp) -> &str {
    r.header("x-cache-status").unwrap_or("<none>")
}

/// Whether `Cache-Status` gives one of the `|`-separated reasons.
fn gives_reason(cache_status: &str, reasons: &str) -> bool {
    reasons
        .split('|')
        .any(|r| cache_status.contains(&format!("detail=\"{r}\"")))
}

/// Checks one answer against what the cell wants; `stale_ok`: `UPDATING` is still allowed.
fn check(row: &Row, c: &Cell, want: Want, r: &Resp, stale_ok: bool) -> Result<(), String> {
    let bare = row.on == On::Bare;
    let cache_status = r.header("cache-status").unwrap_or("");
    let primed_body = c.primed.as_ref().map(|(b, _)| b.as_slice());
    let fail = |what: &str| {
        Err(format!(
            "{what}: {} {} cache-status {cache_status:?}: {:.200}",
            r.status,
            x_cache(r),
            r.text()
        ))
    };
    match want {
        Want::Error(status, reason) => {
            if r.status != status {
                return fail(&format!("status {status} expected"));
            }
            if !matches!(x_cache(r), "MISS" | "EXPIRED") {
                return fail("MISS or EXPIRED expected");
            }
            if !gives_reason(cache_status, reason) {
                return fail(&format!("reason {reason} expected"));
            }
            let v: serde_json::Value =
                serde_json::from_slice(&r.body).map_err(|e| format!("not JSON: {e}"))?;
            if v["error"]["status"] != status {
                return fail("a JSON error expected");
            }
            if status == 503 && r.header("retry-after").is_none() {
                return fail("Retry-After expected");
            }
        }
        Want::Stale(reason) | Want::UpdatingThenStale(reason) => {
            if r.status != 200 || Some(r.body.as_slice()) != primed_body {
                return fail("the old copy expected");
            }
            match x_cache(r) {
                "STALE" => {
                    if !gives_reason(cache_status, reason) {
                        return fail(&format!("reason {reason} expected"));
                    }
                    if !r.header("warning").is_some_and(|w| w.starts_with("111 ")) {
                        return fail("Warning: 111 expected");
                    }
                }
                "UPDATING" if stale_ok && matches!(want, Want::UpdatingThenStale(_)) => {}
                _ => return fail("STALE expected"),
            }
        }
        Want::Good => {
            if r.status != 200 || !is_good_body(&r.body, &c.key, bare) {
                return fail("a good answer expected");
            }
        }
    }
    Ok(())
}

fn run_row(index: usize, row: &Row, redis: &RedisServer, good: &Origin) {
    let prefix = format!("rc{index}:");
    let text = config(&redis.url(), &prefix);
    let env = [("RENTCACHE_ADMIN_TOKEN", TOKEN)];
    // The upstream A and B use; a primer on a good upstream fills Redis when theirs never
    // answers at all.
    let refused_port = free_port();
    let bad = match &row.brk {
        Break::Tls(cert) => Some(Origin::https(cert)),
        _ => None,
    };
    let broken_base = match (&row.brk, &bad) {
        (Break::Refused, _) => Some(format!("https://127.0.0.1:{refused_port}")),
        (Break::Tls(_), Some(o)) => Some(o.base()),
        _ => None,
    };
    let base = broken_base.clone().unwrap_or_else(|| good.base());
    let a = Proxy::start(&text, &base, &env);
    let b = Proxy::start(&text, &base, &env);
    let primer_proc = broken_base.map(|_| Proxy::start(&text, &good.base(), &env));
    for p in [&a, &b].into_iter().chain(primer_proc.as_ref()) {
        wait_redis_up(p);
    }
    let primer = primer_proc.as_ref().unwrap_or(&a);

    let mut cells: Vec<Cell> = (0..4)
        .flat_map(|s| (0..3).map(move |c| (s, c)))
        .map(|(s, c)| cell(index, row.on, s, c))
        .collect();
    // Cache a good copy, then make it expire (a soft purge) for every state but cold.
    for c in cells.iter_mut().filter(|c| c.state > 0) {
        let r = get(&primer.url(&c.path), &c.headers);
        assert_eq!(
            x_cache(&r),
            "MISS",
            "{}: priming {}: {r:?}",
            row.name,
            c.path
        );
        assert!(
            is_good_body(&r.body, &c.key, row.on == On::Bare),
            "{}",
            row.name
        );
        let etag = r.header("etag").expect("an ETag").to_string();
        c.primed = Some((r.body, etag));
        let purge = primer.admin_post("/purge", TOKEN, json!({"url": c.path, "soft": true}));
        assert_eq!(purge.status, 200, "{}", purge.text());
    }
    if let Break::Key(fault) = &row.brk {
        for c in &cells {
            good.set(&c.key, Some(fault.clone()));
        }
    }
    let calls_before = upstream_calls(&a) + upstream_calls(&b);

    // Every cell at once: its requests, and what each got.
    let urls = Arc::new((a.url(""), b.url("")));
    let answers: Vec<Vec<Resp>> = std::thread::scope(|scope| {
        let handles: Vec<_> = cells
            .iter()
            .map(|c| {
                let urls = urls.clone();
                let path = c.path.clone();
                let headers = c.headers.clone();
                let column = c.column;
                scope.spawn(move || {
                    let n = if column == 0 { 1 } else { 50 };
                    let (ua, ub) = (*urls).clone();
                    concurrently(n, move |i| {
                        let base = if column == 2 && i % 2 == 1 { &ub } else { &ua };
                        get(&format!("{base}{path}"), &headers)
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("cell"))
            .collect()
    });

    // What the cells' requests cost the upstream, counted once the refreshes they started in
    // the background are over, and before anything else asks it (a later request may
    // rightly ask again once the failure memo has run out).
    for p in [&a, &b] {
        eventually(Duration::from_secs(30), || {
            (in_flight(p) == 0).then_some(())
        });
    }
    let calls = upstream_calls(&a) + upstream_calls(&b) - calls_before;
    let origin_calls: Vec<u64> = cells
        .iter()
        .map(|c| good.calls(&c.key) - u64::from(c.primed.is_some()))
        .collect();

    let mut problems = Vec::new();
    for ((c, got), calls) in cells.iter().zip(&answers).zip(origin_calls) {
        let want = row.want[c.state];
        let cell_name = format!("{} / {} / {}", row.name, STATES[c.state], COLUMNS[c.column]);
        for r in got {
            if let Err(e) = check(row, c, want, r, true) {
                problems.push(format!("{cell_name}: {e}"));
                break;
            }
        }
        // A refresh that was in flight has failed by now, or soon: the copy says so.
        if let Want::UpdatingThenStale(_) = want {
            let instances: &[&Proxy] = if c.column == 2 { &[&a, &b] } else { &[&a] };
            for p in instances {
                let r = eventually(Duration::from_secs(30), || {
                    let r = get(&p.url(&c.path), &c.headers);
                    (x_cache(&r) != "UPDATING").then_some(r)
                });
                if let Err(e) = check(row, c, want, &r, false) {
                    problems.push(format!("{cell_name}, once the refresh failed: {e}"));
                }
            }
        }
        if let Break::Key(_) = row.brk {
            let ok = match row.calls {
                Calls::One => calls == 1,
                Calls::AtMostOne => calls <= 1,
            };
            if !ok {
                problems.push(format!("{cell_name}: {calls} upstream calls"));
            }
        }
        // Nothing bad in any tier: the old copy, or nothing.
        if row.on != On::Bare && !matches!(want, Want::Good) {
            for p in [&a, &b] {
                let auth = format!("Bearer {TOKEN}");
                let url = p.admin_url(&format!(
                    "/explain?url={}",
                    c.path
                        .replace('?', "%3F")
                        .replace('&', "%26")
                        .replace('=', "%3D")
                ));
                let v = get(&url, &[("authorization", &auth)]).json();
                for t in v["tiers"].as_array().into_iter().flatten() {
                    if t["present"] != true {
                        continue;
                    }
                    let primed = c.primed.as_ref().map(|(_, e)| e.as_str());
                    // (A dead copy may linger in Redis until its key expires, a second later.)
                    if t["etag"].as_str() != primed {
                        problems.push(format!("{cell_name}: {} holds {t}", t["tier"]));
                    }
                }
            }
        }
    }
    let expected_calls = cells.len() as u64;
    match row.calls {
        Calls::One if calls != expected_calls => problems.push(format!(
            "{}: {calls} upstream calls for {expected_calls} keys",
            row.name
        )),
        Calls::AtMostOne if calls > expected_calls || calls == 0 => problems.push(format!(
            "{}: {calls} upstream calls for {expected_calls} keys",
            row.name
        )),
        _ => {}
    }

    // The fault clears: once the failure memo (and any 429 pause) has run out, a fresh good
    // answer comes, and no answer on the way carried a bad body.
    if let Break::Key(_) = row.brk {
        for c in &cells {
            good.set(&c.key, None);
        }
        for c in &cells {
            let bare = row.on == On::Bare;
            let fresh = eventually(Duration::from_secs(60), || {
                let r = get(&a.url(&c.path), &c.headers);
                if r.status == 200 && !is_good_body(&r.body, &c.key, bare) {
                    panic!("{}: a bad body after the fault: {r:?}", row.name);
                }
                let fresh = r.status == 200 && matches!(x_cache(&r), "MISS" | "EXPIRED" | "HIT");
                fresh.then_some(r)
            });
            if let (Some((old, _)), false) = (&c.primed, bare) {
                // (Bare base64 is the file itself: the same every time.)
                if matches!(x_cache(&fresh), "MISS" | "EXPIRED") {
                    assert_ne!(
                        &fresh.body, old,
                        "{}: a refetch brings the new body",
                        row.name
                    );
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_failure_at_every_concurrency_and_state() {
    let redis = RedisServer::start();
    let good = Origin::https("origin");
    let rows = matrix();
    // A few rows at a time: each starts two or three instances.
    for (batch, chunk) in rows.chunks(3).enumerate() {
        std::thread::scope(|scope| {
            for (i, row) in chunk.iter().enumerate() {
                let (redis, good) = (&redis, &good);
                let index = batch * 3 + i;
                scope.spawn(move || run_row(index, row, redis, good));
            }
        });
        eprintln!(
            "failure matrix: rows {}..{} passed",
            batch * 3,
            batch * 3 + chunk.len()
        );
    }
}

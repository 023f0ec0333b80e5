//! A small client of the admin API for the command line (`rentcache advise`): one plain
//! HTTP/1.1 GET to the admin listener, which is plain HTTP on a private address.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(10);
/// Answers larger than this are refused.
const MAX_ANSWER: u64 = 16 << 20;

/// `GET base + path` with the bearer `token`; the JSON answer, or what went wrong.
pub fn get_json(base: &str, path: &str, token: Option<&str>) -> Result<Value, String> {
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("{base}: give the admin listener as http://HOST:PORT"))?
        .trim_end_matches('/');
    if authority.contains('/') || authority.is_empty() {
        return Err(format!(
            "{base}: give the admin listener as http://HOST:PORT"
        ));
    }
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut conn =
        TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("{authority}: {e}"))?;
    let _ = conn.set_read_timeout(Some(TIMEOUT));
    let _ = conn.set_write_timeout(Some(TIMEOUT));
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n");
    conn.write_all(request.as_bytes())
        .map_err(|e| format!("{authority}: {e}"))?;
    let mut answer = Vec::new();
    conn.take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .map_err(|e| format!("{authority}: {e}"))?;
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{authority}: not an HTTP answer"))?;
    let (head, body) = answer.split_at(split);
    let body = body.get(4..).unwrap_or_default();
    let status_line =
        String::from_utf8_lossy(head.split(|b| *b == b'\r').next().unwrap_or_default())
            .into_owned();
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| format!("{authority}: {status_line}: the body is not JSON ({e})"))?;
    if !status_line.contains(" 200 ") {
        let message = json
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        return Err(format!("{status_line}: {message}"));
    }
    Ok(json)
}

fn pct(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

/// The advice as an operator reads it: one paragraph per route.
pub fn show_advice(v: &Value) -> String {
    let mut out = format!(
        "TTL advice (staleness budget {}, observed since {}; nothing is applied)\n\n",
        pct(v.get("staleness_budget")),
        v.get("observed_since")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    for r in v
        .get("routes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = r.get("route").and_then(Value::as_str).unwrap_or("?");
        let cur = |k: &str| {
            r.pointer(&format!("/current/{k}"))
                .and_then(Value::as_u64)
                .map_or("-".into(), crate::observe::advice::show_ttl)
        };
        out.push_str(&format!(
            "{name}\n  now: ttl {}, stale_while_revalidate {}; hit ratio {}; {} refreshes, {} changed\n",
            cur("ttl_secs"),
            cur("stale_while_revalidate_secs"),
            pct(r.get("hit_ratio")),
            r.get("refreshes").and_then(Value::as_u64).unwrap_or(0),
            r.get("changed").and_then(Value::as_u64).unwrap_or(0),
        ));
        if let Some(s) = r.get("suggested").filter(|s| !s.is_null()) {
            let ttl = |k: &str| {
                s.get(k)
                    .and_then(Value::as_u64)
                    .map_or("-".into(), crate::observe::advice::show_ttl)
            };
            out.push_str(&format!(
                "  suggested: ttl {}, stale_while_revalidate {} (chance of a changed body {})\n",
                ttl("ttl_secs"),
                ttl("stale_while_revalidate_secs"),
                pct(s.get("stale_chance")),
            ));
        }
        out.push_str(&format!(
            "  {}\n\n",
            r.get("evidence").and_then(Value::as_str).unwrap_or("")
        ));
    }
    out
}

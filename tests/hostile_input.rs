//! What clients' odd bytes and operators' reloads cannot do: hold a connection with a head
//! that never completes, get past the size bounds, go without `Host`, or make a request run
//! under the keys of a config that is gone.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const TOKEN: &str = "hostile-admin-token";

fn config(header_timeout: &str) -> String {
    format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"], header_timeout: {header_timeout}}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}
routes:
  - {{name: list, match: {{path: /propertyadvertising.php}}, ttl: 1h, body: json_array,
     include_params: [rob, noimage, limit, page, propref]}}
"
    )
}

/// Everything the server sends on `conn` until it closes it (at most `limit`).
fn read_to_close(conn: &mut TcpStream, limit: Duration) -> String {
    conn.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits, dripping a header line now and then when `drip`, for the server to close `conn`:
/// whether it did within 30 s (far longer than the tests' 1 s header timeout; only a
/// connection the server closes ends it early), and whether it sent anything first.
fn closed_by_the_server(conn: &mut TcpStream, drip: bool) -> (bool, bool) {
    let began = Instant::now();
    let mut answered = false;
    while began.elapsed() < Duration::from_secs(30) {
        if drip && conn.write_all(b"X-Drip: a\r\n").is_err() {
            return (true, answered);
        }
        conn.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut byte = [0u8; 1];
        match conn.read(&mut byte) {
            Ok(0) => return (true, answered),
            Ok(_) => answered = true,
            Err(e)
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut =>
            {
                return (true, answered)
            }
            _ => {}
        }
    }
    (false, answered)
}

#[test]
fn a_head_dripped_slowly_is_closed_at_the_header_timeout_whatever_parses_it() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(&config("1s"), &sim.base(), &[]);
    // A space in the target: the front door cannot parse it and pingora would wait for each
    // byte. Dripping one byte at a time, the client never completes its head.
    for start in [
        "GET /propertyadvertising.php?a b HTTP/1.1\r\n",
        "GET / HTTP/1.1\r\n",
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        conn.write_all(start.as_bytes()).unwrap();
        let (closed, _) = closed_by_the_server(&mut conn, true);
        assert!(closed, "{start:?}: still open after 30 s of dripping");
    }
    // A whole head that the front door cannot parse is pingora's to answer, at once: it
    // escapes the control byte (and finds no route), or refuses a head it cannot read.
    for head in [
        &b"GET /a\x01b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHo st: x\r\nConnection: close\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        conn.write_all(head).unwrap();
        let answer = read_to_close(&mut conn, Duration::from_secs(30));
        assert!(
            answer.starts_with("HTTP/1.1 404") || answer.starts_with("HTTP/1.1 400"),
            "{answer}"
        );
    }
    assert!(p.proc.logs().matches("panicked").count() == 0);
}

/// One answer read off a kept-alive connection: its head, and as many body bytes as its
/// `Content-Length` says.
fn read_answer(conn: &mut TcpStream) -> String {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let l = l.to_ascii_lowercase();
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() >= end + 4 + len {
                assert_eq!(got.len(), end + 4 + len, "nothing sent past the answer");
                return head;
            }
        }
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed mid-answer");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn each_head_on_a_kept_alive_connection_gets_its_own_header_timeout() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(&config("1s"), &sim.base(), &[]);
    let req = "GET /propertyadvertising.php?rob=rent&limit=2&noimage=1 HTTP/1.1\r\nHost: x\r\n\r\n";
    for drip in [false, true] {
        let mut conn = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        // A miss (pingora's) and then hits (the front door's), each taking longer than
        // nothing: the connection's deadline is set afresh for each head.
        for _ in 0..3 {
            conn.write_all(req.as_bytes()).unwrap();
            let head = read_answer(&mut conn);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        if drip {
            conn.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        }
        let (closed, answered) = closed_by_the_server(&mut conn, drip);
        assert!(!answered, "an answer to a head that never completed");
        assert!(closed, "drip {drip}: still open after 30 s");
    }
    assert!(p.proc.logs().matches("panicked").count() == 0);
}

#[test]
fn oversized_heads_get_414_or_431_on_both_listeners() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(
        &config("60s"),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    let long_url = format!(
        "/explain?url=/propertyadvertising.php%3Fa%3D{}",
        "x".repeat(64 * 1024)
    );
    for port in [p.port, p.admin_port] {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let req =
            format!("GET {long_url} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
        let _ = conn.write_all(req.as_bytes());
        let answer = read_to_close(&mut conn, Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 414"), "{port}: {answer:.200}");
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer:.300}"
        );
        assert!(answer.contains("\"status\":414"), "{answer:.300}");

        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let filler = "X-Filler: ".to_string() + &"y".repeat(1000) + "\r\n";
        let req = format!(
            "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
            filler.repeat(70)
        );
        let _ = conn.write_all(req.as_bytes());
        let answer = read_to_close(&mut conn, Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 431"), "{port}: {answer:.200}");
    }
    // The listeners carry on.
    assert_eq!(get(&p.admin_url("/health"), &[]).status, 200);
    assert_eq!(
        p.get("/propertyadvertising.php?rob=rent&limit=1").status,
        200
    );
}

#[test]
fn http11_without_host_gets_400_and_a_closed_connection_that_says_so() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(
        &config("60s"),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    for (port, path) in [
        (p.port, "/propertyadvertising.php?rob=rent&limit=1"),
        (p.admin_port, "/health"),
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
        conn.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes())
            .unwrap();
        let answer = read_to_close(&mut conn, Duration::from_secs(30));
        assert!(answer.starts_with("HTTP/1.1 400"), "{port}: {answer}");
        let lower = answer.to_ascii_lowercase();
        assert!(lower.contains("connection: close"), "{answer}");
        assert!(!lower.contains("keep-alive"), "{answer}");
        assert!(answer.contains("Host"), "{answer}");
    }
    // HTTP/1.0 needs no Host.
    let answer = raw_http(
        p.port,
        "GET /propertyadvertising.php?rob=rent&limit=1 HTTP/1.0\r\n\r\n",
    );
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
}

#[test]
fn every_answer_says_truly_whether_the_connection_stays_open() {
    let sim = Sim::start(&[]);
    let p = Proxy::start(&config("60s"), &sim.base(), &[]);
    // Heads pingora refuses: a 400 that says `Connection: close`, then the close.
    for head in [
        "GET /propertyadvertising.php?rob=rent HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n",
        "POST /propertyadvertising.php HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /propertyadvertising.php?rob=rent HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /propertyadvertising.php?rob=rent HTTP/1.1\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
        conn.write_all(head.as_bytes()).unwrap();
        let answer = read_to_close(&mut conn, Duration::from_secs(30));
        let lower = answer.to_ascii_lowercase();
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}:\n{answer}");
        assert!(lower.contains("connection: close"), "{head:?}:\n{answer}");
        assert!(
            !lower.contains("connection: keep-alive"),
            "{head:?}:\n{answer}"
        );
    }
    // An odd Connection token is no reason to refuse: the answer keeps the connection open,
    // and it is open: a second request on it is answered.
    let mut conn = TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let path = "/propertyadvertising.php?rob=rent&limit=1&noimage=1";
    for _ in 0..2 {
        let head =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: application/base64\r\n\r\n");
        conn.write_all(head.as_bytes()).unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            assert_eq!(conn.read(&mut byte).unwrap(), 1, "closed mid-head");
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("connection: keep-alive"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).unwrap();
    }
    assert!(p.proc.logs().matches("panicked").count() == 0);
}

/// Keys are those of the config a request runs under, even when a config with the same
/// address as an older one is loaded (they are told apart by generation, not address).
#[test]
fn requests_after_two_reloads_are_keyed_by_the_config_in_force() {
    let sim = Sim::start(&[]);
    let without_beds = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\"}
admin: {listen: \"127.0.0.1:{{ADMIN}}\"}
routes:
  - {name: a, match: {path: /a}, ttl: 1h}
  - {name: b, match: {path: /b}, ttl: 1h}
  - {name: c, match: {path: /c}, ttl: 1h}
  - {name: d, match: {path: /d}, ttl: 1h}
  - {name: media, match: {path: /propertymedia.php}, ttl: 1h, body: media}
  - {name: listings, match: {path: /propertyadvertising.php}, ttl: 1h, body: json_array,
     include_params: [rob, limit, page]}
";
    let p = Proxy::start(
        without_beds,
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    let url = "/propertyadvertising.php?rob=rent&limit=10&page=1&beds=2";
    for _ in 0..2 {
        assert_eq!(p.get(url).status, 200);
    }
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    for round in 0..5 {
        // B: the same routes (a comment apart); C: listings keyed on `beds` too, and fewer
        // routes than before (the listings route's index is gone).
        std::fs::write(&p.config_path, format!("{text}# round {round}\n")).unwrap();
        assert_eq!(p.admin_post("/reload", TOKEN, json!({})).status, 200);
        let c = text
            .replace("  - {name: a, match: {path: /a}, ttl: 1h}\n", "")
            .replace("  - {name: b, match: {path: /b}, ttl: 1h}\n", "")
            .replace(
                "include_params: [rob, limit, page]",
                "include_params: [rob, limit, page, beds]",
            );
        std::fs::write(&p.config_path, c).unwrap();
        assert_eq!(p.admin_post("/reload", TOKEN, json!({})).status, 200);

        let r = p.get(url);
        assert_eq!(r.status, 200, "round {round}: {r:?}");
        let explain = get(
            &p.admin_url(&format!(
                "/explain?url={}",
                url.replace('?', "%3F")
                    .replace('&', "%26")
                    .replace('=', "%3D")
            )),
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
        .json();
        assert!(
            explain["key"].as_str().unwrap().contains("beds=2"),
            "{explain}"
        );
        if round == 0 {
            // The first request under C asked Rentman for the new key, beds included.
            assert_eq!(r.header("x-cache-status"), Some("MISS"));
            let by_target = &sim.stats()["by_target"];
            assert!(
                by_target
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|k| k.contains("beds=2")),
                "{by_target}"
            );
        }
        // Back to A for the next round.
        std::fs::write(&p.config_path, &text).unwrap();
        assert_eq!(p.admin_post("/reload", TOKEN, json!({})).status, 200);
        assert_eq!(p.get(url).status, 200);
    }
    assert!(p.proc.logs().matches("panicked").count() == 0);
}

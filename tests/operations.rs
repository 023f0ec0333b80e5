//! The admin API and operations: authentication, metrics, stats, explain, purges (pattern,
//! tag, soft, dependency cascade), change detection, warming, and hot reload.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

const TOKEN: &str = "ops-token";
const FEATURED: &str = "/propertyadvertising.php?featured=1&noimage=1";

fn status(r: &Resp) -> String {
    r.header("x-cache-status").unwrap_or("<none>").to_string()
}

fn ops(sim: &Sim) -> Proxy {
    Proxy::rentman(sim, &[("RENTCACHE_ADMIN_TOKEN", TOKEN)])
}

fn admin_get(p: &Proxy, path: &str) -> Resp {
    get(
        &p.admin_url(path),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
}

fn proprefs(r: &Resp) -> Vec<String> {
    r.json()
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["propref"].as_str().expect("propref").to_string())
        .collect()
}

#[test]
fn admin_endpoints_require_the_token_and_are_disabled_without_it() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    assert_eq!(get(&p.admin_url("/health"), &[]).status, 200);
    let ready = get(&p.admin_url("/ready"), &[]);
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);
    for path in ["/metrics", "/stats", "/explain?url=/x", "/warm"] {
        let r = get(&p.admin_url(path), &[]);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(r.json()["error"]["code"], "unauthorized");
        let r = get(&p.admin_url(path), &[("authorization", "Bearer wrong")]);
        assert_eq!(r.status, 401, "{path}");
        assert_eq!(admin_get(&p, path).status, 200, "{path}");
    }
    let r = p.admin_post("/purge", "wrong", json!({"url": FEATURED}));
    assert_eq!(r.status, 401);

    // The public listener never answers admin paths or PURGE.
    assert_eq!(p.get("/metrics").status, 404);
    assert_eq!(p.get("/purge").status, 404);

    // Without the variable, protected endpoints are disabled, never open.
    let closed = Proxy::rentman(&sim, &[]);
    let r = get(&closed.admin_url("/stats"), &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["code"], "admin_disabled");
    let r = get(
        &closed.admin_url("/stats"),
        &[("authorization", "Bearer anything")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(get(&closed.admin_url("/health"), &[]).status, 200);
}

#[test]
fn metrics_follow_a_known_sequence() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    assert_eq!(status(&p.get(FEATURED)), "MISS");
    assert_eq!(status(&p.get(FEATURED)), "HIT");
    assert_eq!(status(&p.get(FEATURED)), "HIT");
    assert_eq!(p.get("/nope").status, 404);
    let m = admin_get(&p, "/metrics");
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    for line in [
        "rentcache_requests_total{cache_status=\"MISS\",route=\"featured\"} 1",
        "rentcache_requests_total{cache_status=\"HIT\",route=\"featured\"} 2",
        "rentcache_requests_total{cache_status=\"BYPASS\",route=\"-\"} 1",
        "rentcache_cache_hits_total{tier=\"memory\"} 2",
        "rentcache_upstream_requests_total{route=\"featured\",status=\"200\"} 1",
        "rentcache_upstream_request_duration_seconds_count{route=\"featured\"} 1",
        "rentcache_memory_entries 1",
        "rentcache_coalesced_requests_total 0",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    assert!(text.contains("# TYPE rentcache_upstream_request_duration_seconds histogram"));
    assert!(
        !text.contains("rentcache_redis_"),
        "no Redis series without Redis:\n{text}"
    );
}

#[test]
fn stats_report_ratios_tiers_top_keys_and_calls_saved() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    for _ in 0..4 {
        p.get(FEATURED);
    }
    p.get("/propertyadvertising.php?propref=2&noimage=1");
    let s = admin_get(&p, "/stats").json();
    assert_eq!(s["requests"], 5);
    assert_eq!(s["hit_ratio"], 0.6);
    assert_eq!(s["routes"]["featured"]["requests"], 4);
    assert_eq!(s["routes"]["featured"]["hit_ratio"], 0.75);
    assert_eq!(s["upstream"]["calls"], 2);
    assert_eq!(s["upstream"]["calls_saved"], 3);
    assert_eq!(s["tiers"]["memory"]["entries"], 2);
    let top = &s["top_keys"][0];
    assert_eq!(top["key"], FEATURED);
    assert_eq!(top["hits"], 3);
    assert!(top["size"].as_u64().unwrap() > 100);
    assert!(top["ttl_left"].as_i64().unwrap() > 500);
}

#[test]
fn every_answer_is_counted_before_its_client_has_it() {
    // A reading taken right after a response must include it, whichever path answered:
    // a miss (counted as its body ends, with its upstream call), a memory hit, a HEAD hit,
    // a JSON error.
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    let mut answered = 0;
    for i in 1..=100 {
        let url = format!("/propertyadvertising.php?propref={i}&noimage=1");
        assert_eq!(status(&p.get(&url)), "MISS");
        assert_eq!(status(&p.get(&url)), "HIT");
        assert_eq!(request("HEAD", &p.url(&url), &[], b"").status, 200);
        assert_eq!(p.get("/nope").status, 404);
        answered += 4;
        let stats = admin_get(&p, "/stats").json();
        assert_eq!(stats["requests"], answered);
        // The upstream call behind each miss is counted before its answer is complete too.
        assert_eq!(stats["upstream"]["calls"], i);
    }
}

#[test]
fn explain_a_hit_a_miss_and_an_uncacheable_url() {
    let sim = Sim::start(&[]);
    let text = shipped_config().replace(
        "routes:\n",
        "routes:\n  - name: live\n    match: {path: /propertyadvertising.php, query: {rob: live}}\n    ttl: 0\n",
    );
    let p = Proxy::start(&text, &sim.base(), &[("RENTCACHE_ADMIN_TOKEN", TOKEN)]);
    let q = |url: &str| {
        format!(
            "/explain?url={}",
            url.replace('?', "%3F").replace('&', "%26")
        )
    };
    let before = admin_get(
        &p,
        &q("/propertyadvertising.php?noimage=1&featured=1&utm_x=1"),
    );
    let v = before.json();
    assert_eq!(v["route"], "featured");
    assert_eq!(v["key"], FEATURED);
    assert_eq!(v["cacheable"], true);
    assert_eq!(v["tiers"][0]["tier"], "memory");
    assert_eq!(v["tiers"][0]["present"], false);

    p.get(FEATURED);
    let v = admin_get(&p, &q(FEATURED)).json();
    let mem = &v["tiers"][0];
    assert_eq!(mem["present"], true);
    assert_eq!(mem["fresh"], true);
    assert!(mem["ttl_left"].as_i64().unwrap() > 500);
    assert!(mem["size"].as_u64().unwrap() > 100);
    let tags: Vec<String> = serde_json::from_value(v["tags"].clone()).unwrap();
    assert!(tags.contains(&"route:featured".to_string()), "{tags:?}");
    assert!(tags.iter().any(|t| t.starts_with("property:")), "{tags:?}");

    let v = admin_get(&p, &q("/elsewhere")).json();
    assert_eq!(v["route"], Value::Null);
    assert_eq!(v["cacheable"], false);
    assert!(v["why"].as_str().unwrap().contains("no route"));
    let v = admin_get(&p, &q("/propertyadvertising.php?rob=live")).json();
    assert_eq!(v["route"], "live");
    assert_eq!(v["cacheable"], false);
    assert!(v["why"].as_str().unwrap().contains("ttl 0"));
}

#[test]
fn purge_by_pattern() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    let rent: Vec<String> = (1..=3)
        .map(|n| format!("/propertyadvertising.php?rob=rent&noimage=1&limit=5&page={n}"))
        .collect();
    let sale = "/propertyadvertising.php?rob=sale&noimage=1&limit=5";
    for k in rent.iter().map(String::as_str).chain([sale]) {
        assert_eq!(status(&p.get(k)), "MISS");
    }
    let r = p.admin_post(
        "/purge",
        TOKEN,
        json!({"pattern": "/propertyadvertising.php?*rob=rent*"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 3);
    for k in &rent {
        assert_eq!(status(&p.get(k)), "MISS", "{k}");
    }
    assert_eq!(status(&p.get(sale)), "HIT");
    let bad = p.admin_post("/purge", TOKEN, json!({"pattern": "[oops"}));
    assert_eq!(bad.status, 400);
}

#[test]
fn purging_a_property_purges_the_lists_containing_it_and_its_dependencies() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    let page1 = "/propertyadvertising.php?rob=rent&noimage=1&limit=5&page=1";
    let page4 = "/propertyadvertising.php?rob=rent&noimage=1&limit=5&page=4";
    let first = p.get(page1);
    let n = proprefs(&first)[0].clone();
    assert!(!proprefs(&p.get(page4)).contains(&n));
    let detail = format!("/propertyadvertising.php?propref={n}&noimage=1");
    p.get(&detail);
    p.get(FEATURED);
    let media = format!("/propertymedia.php?propref={n}");
    let other_media = format!("/propertymedia.php?propref={}", proprefs(&p.get(page4))[0]);
    assert_eq!(p.get(&media).status, 200);
    p.get(&other_media);
    let r = p.admin_post("/purge", TOKEN, json!({"tag": format!("property:{n}")}));
    assert_eq!(r.status, 200, "{}", r.text());
    let considered = r.json()["considered"].to_string();
    assert!(
        considered.contains("route:featured"),
        "the dependency rule applied: {considered}"
    );
    assert_eq!(status(&p.get(&detail)), "MISS");
    assert_eq!(status(&p.get(page1)), "MISS", "a list containing it");
    assert_eq!(
        status(&p.get(FEATURED)),
        "MISS",
        "purged by the dependency rule"
    );
    assert_eq!(status(&p.get(page4)), "HIT", "a list without it");
    assert_eq!(status(&p.get(&media)), "MISS", "its media");
    assert_eq!(
        status(&p.get(&other_media)),
        "HIT",
        "another property's media"
    );
}

#[test]
fn a_soft_purge_serves_stale_while_one_refresh_runs() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    p.get(FEATURED);
    let r = p.admin_post("/purge", TOKEN, json!({"url": FEATURED, "soft": true}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1);
    let next = p.get(FEATURED);
    assert_eq!(status(&next), "UPDATING");
    let fresh = eventually(Duration::from_secs(30), || {
        let r = p.get(FEATURED);
        (status(&r) == "HIT").then_some(r)
    });
    assert_eq!(fresh.status, 200);
    assert_eq!(sim.api_calls(), 2, "one fill, one refresh");
}

#[test]
fn a_changed_detail_refreshes_the_lists_that_contain_it() {
    let sim = Sim::start(&[]);
    let config = "\
server: {listen: [\"127.0.0.1:{{PORT}}\"]}
upstream: {base_url: \"{{ORIGIN}}\"}
routes:
  - name: property
    match: {path: /propertyadvertising.php, query_present: [propref]}
    ttl: 1s
    stale_while_revalidate: 1h
    include_params: [propref, noimage]
    body: json_array
    watch_changes: true
  - name: listings
    match: {path: /propertyadvertising.php}
    ttl: 1h
    stale_while_revalidate: 1h
    include_params: [rob, noimage, limit, page]
    body: json_array
";
    let p = Proxy::start(config, &sim.base(), &[]);
    let list = "/propertyadvertising.php?rob=rent&noimage=1&limit=5";
    let before = p.get(list);
    let n = proprefs(&before)[0].clone();
    let detail = format!("/propertyadvertising.php?propref={n}&noimage=1");
    p.get(&detail);
    let changed = request(
        "POST",
        &format!("{}/__sim/mutate?propref={n}", sim.base()),
        &[],
        b"",
    );
    assert_eq!(changed.status, 200);
    // The detail expires; its background refresh brings the new body, which soft-purges
    // the list; the list then refreshes too. Nobody purged anything by hand.
    let after = eventually(Duration::from_secs(30), || {
        p.get(&detail);
        let r = p.get(list);
        (r.body != before.body).then_some(r)
    });
    assert_eq!(after.status, 200);
    assert!(p.proc.logs().contains("changed: soft-purging"));
}

#[test]
fn warming_fills_the_listed_keys_with_the_counted_calls() {
    let sim = Sim::start(&[]);
    let config = shipped_config().replace("on_start: false", "on_start: true");
    // Only the featured list (and its details), to count calls exactly.
    let start = config.find("  lists:").unwrap();
    let end = config[start..].find("\nkey:").unwrap() + start;
    let config = format!(
        "{}  lists:\n    - name: featured\n      every: 1h\n      urls: [\"{FEATURED}\"]\n      follow: [details]\n{}",
        &config[..start],
        &config[end..]
    );
    let p = Proxy::start(&config, &sim.base(), &[("RENTCACHE_ADMIN_TOKEN", TOKEN)]);
    let job = eventually(Duration::from_secs(60), || {
        let jobs = admin_get(&p, "/warm").json();
        let j = jobs["jobs"][0].clone();
        (j["finished"] == true).then_some(j)
    });
    let featured = proprefs(&get(&format!("{}{FEATURED}", sim.base()), &[]));
    let expected = 1 + featured.len() as u64;
    assert_eq!(job["fetched"], expected, "{job}");
    assert_eq!(job["failed"], 0);
    // The direct request above counted as one more call.
    assert_eq!(sim.api_calls(), expected + 1);
    assert_eq!(status(&p.get(FEATURED)), "HIT");
    for n in &featured {
        let r = p.get(&format!("/propertyadvertising.php?propref={n}&noimage=1"));
        assert_eq!(status(&r), "HIT", "detail {n} was warmed");
    }

    // An ad-hoc job: new keys are fetched, fresh ones skipped.
    let urls = json!([FEATURED, "/propertyadvertising.php?onlyarea=1"]);
    let r = p.admin_post("/warm", TOKEN, json!({"urls": urls}));
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["job"].clone();
    let job = eventually(Duration::from_secs(60), || {
        let jobs = admin_get(&p, "/warm").json();
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id && j["finished"] == true)
            .cloned()
    });
    assert_eq!(job["fetched"], 1);
    assert_eq!(job["skipped_fresh"], 1);
    assert_eq!(sim.api_calls(), expected + 2);
    let bad = p.admin_post("/warm", TOKEN, json!({"urls": ["no-slash"]}));
    assert_eq!(bad.status, 400);
}

fn route_ttl_config(ttl: &str) -> String {
    format!(
        "\
server: {{listen: [\"127.0.0.1:{{{{PORT}}}}\"]}}
upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}
admin: {{listen: \"127.0.0.1:{{{{ADMIN}}}}\"}}
routes:
  - name: list
    match: {{path: /propertyadvertising.php}}
    ttl: {ttl}
    include_params: [rob, noimage, limit, page, propref, featured]
    body: json_array
"
    )
}

#[test]
fn a_reload_under_load_fails_nothing_and_applies_the_new_ttl() {
    let sim = Sim::start(&[]);
    let mut p = Proxy::start(
        &route_ttl_config("1h"),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let loaders: Vec<_> = (0..4)
        .map(|i| {
            let (stop, failures, sent) = (stop.clone(), failures.clone(), sent.clone());
            let url = p.url(&format!(
                "/propertyadvertising.php?rob=rent&noimage=1&page={}",
                i % 3 + 1
            ));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match try_request("GET", &url, &[], b"") {
                        Ok(r) if r.status == 200 => {}
                        _ => {
                            failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();

    std::fs::write(&p.config_path, text.replace("ttl: 1h", "ttl: 2s")).unwrap();
    p.proc.signal("HUP");
    eventually(Duration::from_secs(30), || {
        p.proc
            .logs()
            .contains("config reloaded (SIGHUP)")
            .then_some(())
    });
    // New fills live 2 s.
    let fresh_key = "/propertyadvertising.php?rob=sale&noimage=1";
    let r = p.get(fresh_key);
    let cs = r.header("cache-status").unwrap().to_string();
    let ttl: i64 = cs
        .split("ttl=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ttl <= 2, "{cs}");

    let before = sent.load(std::sync::atomic::Ordering::Relaxed);
    eventually(Duration::from_secs(30), || {
        (sent.load(std::sync::atomic::Ordering::Relaxed) > before + 20).then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in loaders {
        l.join().unwrap();
    }
    assert_eq!(failures.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(p.proc.is_running(), "SIGHUP must not kill the process");

    // A change of the file alone is noticed too.
    std::fs::write(&p.config_path, text.replace("ttl: 1h", "ttl: 3s")).unwrap();
    eventually(Duration::from_secs(30), || {
        p.proc
            .logs()
            .contains("config reloaded (file changed)")
            .then_some(())
    });
}

#[test]
fn an_invalid_reload_keeps_the_last_good_config() {
    let sim = Sim::start(&[]);
    let mut p = Proxy::start(
        &route_ttl_config("1h"),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    assert_eq!(status(&p.get(FEATURED)), "MISS");
    std::fs::write(&p.config_path, text.replace("ttl: 1h", "ttl: soon")).unwrap();
    p.proc.signal("HUP");
    eventually(Duration::from_secs(30), || {
        p.proc.logs().contains("rejected").then_some(())
    });
    let logs = p.proc.logs();
    let file = p.config_path.display().to_string();
    assert!(
        logs.contains(&format!("{file}:7:5: routes[0].ttl: invalid duration")),
        "{logs}"
    );
    assert!(p.proc.is_running());
    // Still the old config: the entry is there and new requests work.
    assert_eq!(status(&p.get(FEATURED)), "HIT");
    let r = p.admin_post("/reload", TOKEN, json!({}));
    assert_eq!(r.status, 422);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("routes[0].ttl"));
    let m = admin_get(&p, "/metrics").text();
    assert!(
        m.contains("rentcache_config_reloads_total{result=\"failed\"} 2"),
        "{m}"
    );
}

#[test]
fn check_refuses_huge_durations_and_sizes_with_a_located_error() {
    let dir = scratch_dir("huge");
    let routes = "routes:\n  - name: a\n    match: {path: /a}\n    ttl: 5m\n";
    for (i, (head, want)) in [
        (
            "upstream:\n  read_timeout: 99999999999999999d\n",
            ":2:3: upstream.read_timeout: invalid duration",
        ),
        (
            "upstream:\n  connect_timeout: 18446744073709551615\n",
            ":2:3: upstream.connect_timeout: invalid duration",
        ),
        (
            "upstream:\n  connect_timeout: 300d\n",
            ":2:3: upstream.connect_timeout: 300d is longer than 1m",
        ),
        (
            "memory:\n  max_bytes: 18446744073709551615\n",
            ":2:3: memory.max_bytes: invalid size",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let file = dir.join(format!("huge-{i}.yaml"));
        std::fs::write(&file, format!("{head}{routes}")).unwrap();
        let out = std::process::Command::new(BIN)
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{head}: {err}");
        let located = format!("{}{want}", file.display());
        assert!(err.contains(&located), "{located:?} not in:\n{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn a_reload_of_huge_durations_is_rejected_and_a_later_edit_applies() {
    let sim = Sim::start(&[]);
    let mut p = Proxy::start(
        &route_ttl_config("1h"),
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN)],
    );
    let text = std::fs::read_to_string(&p.config_path).unwrap();
    let huge = text.replace(
        "upstream: {",
        "upstream: {read_timeout: 99999999999999999d, connect_timeout: 18446744073709551615, ",
    );
    assert_ne!(huge, text);
    std::fs::write(&p.config_path, &huge).unwrap();
    p.proc.signal("HUP");
    eventually(Duration::from_secs(30), || {
        p.proc.logs().contains("rejected").then_some(())
    });
    let logs = p.proc.logs();
    let file = p.config_path.display().to_string();
    assert!(
        logs.contains(&format!("{file}:2:")) && logs.contains("invalid duration"),
        "{logs}"
    );
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(p.proc.is_running());
    assert_eq!(p.get(FEATURED).status, 200);

    // The reloader is still there: a valid edit that follows is applied.
    std::fs::write(&p.config_path, text.replace("ttl: 1h", "ttl: 2s")).unwrap();
    p.proc.signal("HUP");
    eventually(Duration::from_secs(30), || {
        p.proc.logs().contains("config reloaded (").then_some(())
    });
    let r = p.get("/propertyadvertising.php?rob=sale&noimage=1");
    let cs = r.header("cache-status").unwrap_or_default().to_string();
    let ttl: Option<i64> = cs
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok());
    assert!(ttl.is_some_and(|t| t <= 2), "{cs}");
    let m = admin_get(&p, "/metrics").text();
    assert!(
        m.contains("rentcache_config_reloads_total{result=\"ok\"}"),
        "{m}"
    );
}

#[test]
fn huge_or_malformed_purge_patterns_get_400_and_the_admin_api_keeps_answering() {
    let sim = Sim::start(&[]);
    let p = ops(&sim);
    assert_eq!(status(&p.get(FEATURED)), "MISS");
    let auth = format!("Bearer {TOKEN}");
    for pattern in [
        "*".repeat(100_000),
        "a*".repeat(1000),
        "[oops".to_string(),
        "[z-a]".to_string(),
    ] {
        let body = json!({ "pattern": pattern }).to_string();
        let r = try_request(
            "POST",
            &p.admin_url("/purge"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("no answer for a {}-byte pattern: {e}", pattern.len()));
        assert_eq!(r.status, 400, "{}", r.text());
        let error = &r.json()["error"];
        assert_eq!(error["status"], 400, "{error}");
        assert_eq!(error["code"], "bad_pattern", "{error}");
        assert!(
            r.body.len() < 2048,
            "the answer does not echo a huge pattern"
        );
    }
    assert_eq!(status(&p.get(FEATURED)), "HIT");
    let r = p.admin_post(
        "/purge",
        TOKEN,
        json!({"pattern": "/propertyadvertising.php?*"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["purged"], 1);
    // Without Redis the answering instance is the only one, and it purged before answering.
    assert_eq!(
        r.json()["instances"],
        json!({"reached": 1, "acknowledged": 1})
    );
    assert_eq!(status(&p.get(FEATURED)), "MISS");
}

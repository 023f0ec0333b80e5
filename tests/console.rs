//! The operator's console over real sockets: the client-side latency histogram on both the
//! front door's and pingora's paths, per-route latency targets and their one warning per
//! window, TTL advice from changes the simulator makes, the access log, and the dashboard in
//! headless Chromium.

mod common;

use std::time::Duration;

use common::*;

const TOKEN: &str = "console-test-admin";

fn admin_get(p: &Proxy, path: &str) -> Resp {
    get(
        &p.admin_url(path),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
}

fn metrics(p: &Proxy) -> String {
    let r = admin_get(p, "/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// The value of one series in the Prometheus text (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn start(sim: &Sim, extra: &str) -> Proxy {
    let config = format!("{}\n{extra}", shipped_config());
    Proxy::start(
        &config,
        &sim.base(),
        &[("RENTCACHE_ADMIN_TOKEN", TOKEN), ("RUST_LOG", "info")],
    )
}

#[test]
fn response_durations_are_counted_on_the_front_door_and_pingora_paths() {
    let sim = Sim::start(&[]);
    let p = start(&sim, "");
    let url = p.url("/propertyadvertising.php?propref=3&noimage=1");
    assert_eq!(get(&url, &[]).header("x-cache-status"), Some("MISS"));
    // A plain HTTP/1 hit: answered by the front door.
    assert_eq!(get(&url, &[]).header("x-cache-status"), Some("HIT"));
    // A hit with a range goes through pingora's path.
    let ranged = get(&url, &[("range", "bytes=0-9")]);
    assert_eq!(ranged.status, 206);
    let m = metrics(&p);
    let count = |status: &str| {
        series(
            &m,
            &format!(
                "rentcache_response_duration_seconds_count{{cache_status=\"{status}\",route=\"property\"}}"
            ),
        )
    };
    assert_eq!(count("MISS"), 1.0, "{m}");
    assert_eq!(count("HIT"), 2.0, "{m}");
    // The miss waited for the simulator; its time is in the sum.
    let sum = series(
        &m,
        "rentcache_response_duration_seconds_sum{cache_status=\"MISS\",route=\"property\"}",
    );
    assert!(sum > 0.0, "{m}");
    // Unrouted requests are counted too, under route "-".
    assert_eq!(get(&p.url("/nowhere"), &[]).status, 404);
    let m = metrics(&p);
    assert_eq!(
        series(
            &m,
            "rentcache_response_duration_seconds_count{cache_status=\"BYPASS\",route=\"-\"}"
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn a_slow_route_breaks_its_target_with_one_warning_per_window() {
    // Every miss waits 60 ms for "Rentman": over the property route's 20 ms target.
    let sim = Sim::start(&["--latency-ms", "60", "--latency-sigma", "0"]);
    let p = start(&sim, "");
    for id in 1..=12 {
        let r = get(
            &p.url(&format!("/propertyadvertising.php?propref={id}&noimage=1")),
            &[],
        );
        assert_eq!(r.status, 200);
    }
    let breaches = |route: &str| {
        series(
            &metrics(&p),
            &format!("rentcache_latency_target_breaches_total{{route=\"{route}\"}}"),
        )
    };
    eventually(Duration::from_secs(30), || {
        (breaches("property") >= 1.0).then_some(())
    });
    // More slow answers in the same window: no second warning. Another route's breach,
    // judged after them, shows the judge has run since.
    for id in 13..=20 {
        get(
            &p.url(&format!("/propertyadvertising.php?propref={id}&noimage=1")),
            &[],
        );
    }
    for page in 1..=12 {
        get(
            &p.url(&format!(
                "/propertyadvertising.php?rob=rent&limit=5&page={page}&noimage=1"
            )),
            &[],
        );
    }
    eventually(Duration::from_secs(30), || {
        (breaches("listings") >= 1.0).then_some(())
    });
    assert_eq!(breaches("property"), 1.0);
    let logs = p.proc.logs();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("latency target missed: route property "))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    let w = warnings[0];
    assert!(w.contains("over its 20.0 ms target"), "{w}");
    assert!(w.contains("misses (waiting for Rentman) dominated"), "{w}");
    // The figure is at least the simulator's latency.
    let figure: f64 = w
        .split("p99 ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {w}"));
    assert!(figure >= 50.0, "{w}");
    // A route without slow answers is not warned about.
    assert!(
        !logs.contains("latency target missed: route featured"),
        "{logs}"
    );
}

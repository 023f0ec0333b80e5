//! The Rentman simulator over real loopback sockets: `rentcache simulate` in a child process,
//! driven through `common::Sim`. Assertions are on statuses, bodies and the simulator's own
//! counters, never on elapsed time.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::{get, request, try_request, Resp, Sim};
use serde_json::{json, Value};

const ADV: &str = "/propertyadvertising.php";
const MEDIA: &str = "/propertymedia.php";

fn api(sim: &Sim, target: &str) -> Resp {
    get(&format!("{}{target}", sim.base()), &[])
}

fn api_h(sim: &Sim, target: &str, headers: &[(&str, &str)]) -> Resp {
    get(&format!("{}{target}", sim.base()), headers)
}

fn post(sim: &Sim, target: &str, body: &Value) -> Resp {
    request(
        "POST",
        &format!("{}{target}", sim.base()),
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    )
}

/// Changes run-time settings and checks they were taken.
fn faults(sim: &Sim, patch: Value) -> Value {
    let r = post(sim, "/__sim/faults", &patch);
    assert_eq!(r.status, 200, "faults {patch}: {}", r.text());
    r.json()
}

fn array(r: &Resp) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {}", r.text()))
        .clone()
}

fn proprefs(r: &Resp) -> Vec<u64> {
    array(r)
        .iter()
        .map(|p| p["propref"].as_str().unwrap().parse().unwrap())
        .collect()
}

fn is_jpeg(b: &[u8]) -> bool {
    b.len() > 4 && b[..2] == [0xFF, 0xD8] && b[b.len() - 2..] == [0xFF, 0xD9]
}

/// Polls the stats until `cond` holds (bounded), for things that happen concurrently.
fn wait_for_stats(sim: &Sim, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = sim.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {s}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn property_list_is_php_json_with_rentman_fields() {
    let sim = Sim::start(&["--properties", "30"]);
    let r = api(&sim, &format!("{ADV}?noimage=1"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    for h in ["cache-control", "etag", "last-modified"] {
        assert!(r.header(h).is_none(), "the real API sends no {h}");
    }
    // PHP's json_encode: escaped slashes and \u escapes, so the raw body is pure ASCII.
    let raw = r.text();
    assert!(raw.is_ascii());
    assert!(raw.contains(r"https:\/\/"), "slashes are escaped");
    assert!(raw.contains(r"\u00a3"), "the pound sign is \\u escaped");
    assert!(raw.contains(r#""featured":"\u0000""#) || raw.contains(r#""featured":"\u0001""#));
    assert!(raw.contains(r"\r"), "bullets are separated by \\r");

    let list = array(&r);
    assert_eq!(list.len(), 30);
    assert_eq!(proprefs(&r), (1..=30).collect::<Vec<_>>());
    let fields = [
        "propref",
        "displayaddress",
        "displayprice",
        "rentmonth",
        "rentorbuy",
        "number",
        "street",
        "address3",
        "address4",
        "postcode",
        "area",
        "TYPE",
        "FLOOR",
        "STATUS",
        "DESCRIPTION",
        "comments",
        "strapline",
        "bullets",
        "beds",
        "singles",
        "doubles",
        "baths",
        "receps",
        "furnished",
        "heating",
        "available",
        "age",
        "rating",
        "servicecharges",
        "leaselength",
        "photo1",
        "photo2",
        "photo3",
        "photo4",
        "photo5",
        "photo6",
        "photo7",
        "photo8",
        "photo9",
        "floorplan",
        "epc",
        "brochure",
        "url",
        "evt",
        "geolocation",
        "branch",
        "branchtel",
        "negotiatorname",
        "negotiatoremail",
        "negotiatormobile",
        "featured",
        "nonres",
        "commercial",
        "shortlet",
    ];
    for p in &list {
        let obj = p.as_object().unwrap();
        for f in fields {
            assert!(
                obj.get(f).is_some_and(Value::is_string),
                "{f} missing or not a string in {p}"
            );
        }
        assert!(
            obj.get("photo1binary").is_none(),
            "noimage leaves photo1binary out"
        );
        assert!(["1", "2", "3"].contains(&p["rentorbuy"].as_str().unwrap()));
        for flag in ["featured", "nonres", "commercial", "shortlet"] {
            assert!(["\u{0}", "\u{1}"].contains(&p[flag].as_str().unwrap()));
        }
        let price = p["displayprice"].as_str().unwrap();
        assert!(price.contains('£'), "{price}");
        let rent: f64 = p["rentmonth"].as_str().unwrap().parse().unwrap();
        assert!(rent > 0.0);
        assert_eq!(p["available"].as_str().unwrap().len(), 10);
        assert!(p["bullets"].as_str().unwrap().split('\r').count() <= 12);
    }
    assert!(
        list.iter()
            .any(|p| p["street"].as_str().unwrap().ends_with(' ')),
        "trailing spaces"
    );
}

#[test]
fn default_data_set_is_deterministic_across_processes() {
    let a = Sim::start(&[]);
    let b = Sim::start(&["--seed", "1"]);
    let c = Sim::start(&["--seed", "2"]);
    let target = format!("{ADV}?noimage=1");
    let (ra, rb, rc) = (api(&a, &target), api(&b, &target), api(&c, &target));
    assert_eq!(ra.body, rb.body, "same seed, same bytes");
    assert_ne!(ra.body, rc.body, "another seed, other data");

    let list = array(&ra);
    assert_eq!(list.len(), 120);
    let count = |k: &str| list.iter().filter(|p| p["rentorbuy"] == k).count();
    assert_eq!((count("1"), count("2"), count("3")), (90, 24, 6));
    let featured = list.iter().filter(|p| p["featured"] == "\u{1}").count();
    assert!((7..=10).contains(&featured), "{featured} featured");
    let mut photos: Vec<usize> = list
        .iter()
        .map(|p| (1..=9).filter(|i| p[format!("photo{i}")] != "").count())
        .collect();
    photos.sort();
    assert!(
        (5..=7).contains(&photos[60]),
        "median photos {}",
        photos[60]
    );

    // Media bytes too (generated lazily, from their own seeds).
    let name = list
        .iter()
        .map(|p| p["photo1"].as_str().unwrap())
        .find(|n| !n.is_empty())
        .unwrap();
    let m = format!("{MEDIA}?filename={name}");
    assert_eq!(api(&a, &m).body, api(&b, &m).body);
}

#[test]
fn filters_rob_featured_onlyarea_and_propref() {
    let sim = Sim::start(&["--properties", "40"]);
    let all = array(&api(&sim, &format!("{ADV}?noimage=1")));
    let by_id = |id: u64| all[id as usize - 1].clone();

    let rent = proprefs(&api(&sim, &format!("{ADV}?rob=rent&noimage=1")));
    assert!(!rent.is_empty());
    assert!(rent
        .iter()
        .all(|&id| ["1", "3"].contains(&by_id(id)["rentorbuy"].as_str().unwrap())));
    let sale = proprefs(&api(&sim, &format!("{ADV}?rob=sale&noimage=1")));
    assert!(!sale.is_empty());
    assert!(sale
        .iter()
        .all(|&id| ["2", "3"].contains(&by_id(id)["rentorbuy"].as_str().unwrap())));
    let both: BTreeSet<u64> = rent
        .iter()
        .copied()
        .filter(|id| sale.contains(id))
        .collect();
    assert!(both.iter().all(|&id| by_id(id)["rentorbuy"] == "3"));
    assert_eq!(rent.len() + sale.len() - both.len(), 40);

    let featured = proprefs(&api(&sim, &format!("{ADV}?featured=1&noimage=1")));
    let expected: Vec<u64> = all
        .iter()
        .filter(|p| p["featured"] == "\u{1}")
        .map(|p| p["propref"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(!featured.is_empty());
    assert_eq!(featured, expected);

    let areas = array(&api(&sim, &format!("{ADV}?onlyarea=1")));
    assert_eq!(areas.len(), 40);
    let keys: BTreeSet<&str> = areas[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["propref", "postcode", "area"]));
    assert_eq!(areas[4]["postcode"], by_id(5)["postcode"]);

    let one = array(&api(&sim, &format!("{ADV}?propref=7&noimage=1")));
    assert_eq!(one, vec![by_id(7)]);
    assert_eq!(api(&sim, &format!("{ADV}?propref=41")).text(), "[]");
    assert_eq!(api(&sim, &format!("{ADV}?propref=abc")).text(), "[]");

    // Parameters the API does not know are ignored, not errors.
    assert_eq!(
        proprefs(&api(
            &sim,
            &format!("{ADV}?rob=rent&noimage=1&beds=2&minprice=5&area=Ilford")
        )),
        rent
    );
}

#[test]
fn paging_with_limit_and_page() {
    let sim = Sim::start(&["--properties", "60"]);
    let ids = |q: &str| proprefs(&api(&sim, &format!("{ADV}?noimage=1&{q}")));
    let all: Vec<u64> = (1..=60).collect();
    assert_eq!(
        ids("limit=10"),
        all[..10].to_vec(),
        "limit without page: the first N"
    );
    assert_eq!(
        ids("page=1"),
        all[..25].to_vec(),
        "page without limit: 25 a page"
    );
    assert_eq!(ids("page=3"), all[50..].to_vec());
    assert_eq!(ids("page=4"), Vec::<u64>::new());
    assert_eq!(ids("limit=25&page=2"), all[25..50].to_vec());
    assert_eq!(ids("limit=7&page=9"), all[56..].to_vec());
    let rent = proprefs(&api(&sim, &format!("{ADV}?rob=rent&noimage=1")));
    assert_eq!(
        ids("rob=rent&limit=5&page=2"),
        rent[5..10].to_vec(),
        "paging applies after filtering"
    );
}

#[test]
fn photo1binary_is_the_first_photo_in_base64() {
    let sim = Sim::start(&["--properties", "20"]);
    let list = array(&api(&sim, &format!("{ADV}?featured=1")));
    assert!(!list.is_empty());
    let mut seen_photo = false;
    for p in &list {
        let b64 = p["photo1binary"]
            .as_str()
            .expect("photo1binary without noimage");
        let photo1 = p["photo1"].as_str().unwrap();
        if photo1.is_empty() {
            assert_eq!(b64, "");
            continue;
        }
        seen_photo = true;
        let jpeg = STANDARD.decode(b64).expect("plain base64");
        assert!(is_jpeg(&jpeg));
        assert!(
            (50_000..=370_000).contains(&jpeg.len()),
            "{} bytes",
            jpeg.len()
        );
        let item = array(&api(&sim, &format!("{MEDIA}?filename={photo1}")));
        let media = STANDARD
            .decode(item[0]["base64data"].as_str().unwrap().replace('\n', ""))
            .unwrap();
        assert_eq!(
            media, jpeg,
            "photo1binary and the media file are the same bytes"
        );
    }
    assert!(seen_photo, "some featured property has a photo");
}

#[test]
fn media_by_propref_filename_and_bare_base64() {
    let sim = Sim::start(&["--properties", "30"]);
    let all = array(&api(&sim, &format!("{ADV}?noimage=1")));
    let p = all
        .iter()
        .find(|p| p["photo2"] != "" && (p["epc"] != "" || p["floorplan"] != ""))
        .expect("a property with photos and an EPC or floorplan");
    let id = p["propref"].as_str().unwrap();

    let r = api(&sim, &format!("{MEDIA}?propref={id}"));
    assert!(r.text().contains(r"\n"), "base64data is wrapped with \\n");
    let items = array(&r);
    let photos = (1..=9).filter(|i| p[format!("photo{i}")] != "").count();
    let extras = ["epc", "floorplan", "brochure"]
        .iter()
        .filter(|k| p[**k] != "")
        .count();
    assert_eq!(items.len(), photos + extras);
    for (i, item) in items.iter().enumerate() {
        let keys: BTreeSet<&str> = item
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from(["propref", "filename", "caption", "base64data", "imgorder"])
        );
        assert_eq!(item["propref"], id);
        assert!(item["caption"].is_null());
        let data = item["base64data"].as_str().unwrap();
        let lines: Vec<&str> = data.split('\n').collect();
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
        assert!(lines.last().unwrap().len() <= 76);
        let bytes = STANDARD.decode(data.replace('\n', "")).unwrap();
        let order: u32 = item["imgorder"].as_str().unwrap().parse().unwrap();
        if i < photos {
            assert_eq!(order, i as u32 + 1);
            assert_eq!(item["filename"], p[format!("photo{}", i + 1)]);
            assert!(is_jpeg(&bytes));
        } else {
            assert!([9000, 9005, 9006].contains(&order));
            let key = match order {
                9000 => "epc",
                9005 => "floorplan",
                _ => "brochure",
            };
            assert_eq!(item["filename"], p[key]);
            assert!(is_jpeg(&bytes) || bytes.starts_with(b"%PDF-"));
        }
    }

    let name = p["photo2"].as_str().unwrap();
    let one = array(&api(&sim, &format!("{MEDIA}?filename={name}")));
    assert_eq!(one, vec![items[1].clone()]);
    let bare = api_h(
        &sim,
        &format!("{MEDIA}?filename={name}"),
        &[("accept", "application/base64")],
    );
    assert_eq!(bare.status, 200);
    assert_eq!(
        bare.text(),
        items[1]["base64data"].as_str().unwrap(),
        "bare base64 text"
    );
    assert!(is_jpeg(
        &STANDARD.decode(bare.text().replace('\n', "")).unwrap()
    ));

    assert_eq!(
        api(&sim, &format!("{MEDIA}?filename=NOPE.jpg")).text(),
        "[]"
    );
    assert_eq!(api(&sim, &format!("{MEDIA}?propref=999")).text(), "[]");

    // Some brochure somewhere in a bigger data set is a PDF.
    let ds = api(&sim, "/__sim/dataset").json();
    let pdf = ds["properties"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["media"].as_array().unwrap().clone())
        .find(|m| m["filename"].as_str().unwrap().ends_with(".pdf"));
    if let Some(m) = pdf {
        let r = api_h(
            &sim,
            &format!("{MEDIA}?filename={}", m["filename"].as_str().unwrap()),
            &[("accept", "application/base64")],
        );
        assert!(STANDARD
            .decode(r.text().replace('\n', ""))
            .unwrap()
            .starts_with(b"%PDF-"));
        assert_eq!(m["imgorder"], 9006);
    }
}

#[test]
fn parameters_may_arrive_as_headers_and_the_query_wins() {
    let sim = Sim::start(&["--properties", "40"]);
    let q = proprefs(&api(&sim, &format!("{ADV}?rob=sale&noimage=1")));
    let h = proprefs(&api_h(&sim, ADV, &[("rob", "sale"), ("noimage", "1")]));
    assert_eq!(q, h);
    let one = array(&api_h(&sim, ADV, &[("propref", "3"), ("noimage", "1")]));
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["propref"], "3");
    assert!(one[0].get("photo1binary").is_none());
    let mixed = proprefs(&api_h(
        &sim,
        &format!("{ADV}?propref=4&noimage=1"),
        &[("propref", "3")],
    ));
    assert_eq!(mixed, vec![4], "the query parameter wins");
    let paged = proprefs(&api_h(
        &sim,
        &format!("{ADV}?noimage=1"),
        &[("limit", "5"), ("page", "2")],
    ));
    assert_eq!(paged, (6..=10).collect::<Vec<_>>());
    let name = array(&api(&sim, &format!("{ADV}?noimage=1")))
        .iter()
        .find_map(|p| Some(p["photo1"].as_str()?.to_string()).filter(|s| !s.is_empty()))
        .unwrap();
    let by_header = array(&api_h(&sim, MEDIA, &[("filename", &name)]));
    assert_eq!(by_header[0]["filename"], name.as_str());
}

#[test]
fn token_as_header_or_query_and_never_in_stats() {
    let sim = Sim::start(&["--properties", "10", "--token", "s3cret-T0K"]);
    let ok_q = api(&sim, &format!("{ADV}?noimage=1&token=s3cret-T0K"));
    assert_eq!(array(&ok_q).len(), 10);
    let ok_h = api_h(
        &sim,
        &format!("{ADV}?noimage=1"),
        &[("token", "s3cret-T0K")],
    );
    assert_eq!(ok_h.body, ok_q.body);
    let missing = api(&sim, &format!("{ADV}?noimage=1"));
    assert_eq!(
        (missing.status, missing.body.len()),
        (200, 0),
        "bad token: 200 with an empty body"
    );
    let wrong = api_h(&sim, &format!("{MEDIA}?propref=1"), &[("token", "nope")]);
    assert_eq!((wrong.status, wrong.body.len()), (200, 0));
    let wrong_q = api_h(
        &sim,
        &format!("{ADV}?token=nope"),
        &[("token", "s3cret-T0K")],
    );
    assert_eq!(
        wrong_q.body.len(),
        0,
        "the query's token wins over the header's"
    );

    let s = sim.stats();
    assert_eq!(s["total"], 5);
    assert_eq!(s["bad_token"], 3);
    assert_eq!(s["statuses"]["200"], 5);
    let text = s.to_string();
    assert!(
        !text.contains("s3cret-T0K"),
        "token leaked into stats: {text}"
    );
    assert_eq!(s["by_target"][format!("{ADV}?noimage=1&token=REDACTED")], 1);
    let recent = s["recent"].as_array().unwrap();
    let tokens: Vec<&str> = recent
        .iter()
        .map(|r| r["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, vec!["ok", "ok", "missing", "wrong", "wrong"]);
    assert_eq!(recent[1]["headers"]["token"], "REDACTED");
    assert_eq!(
        recent[0]["target"],
        format!("{ADV}?noimage=1&token=REDACTED")
    );
}

#[test]
fn bad_token_bodies_text_object_empty() {
    let sim = Sim::start(&[
        "--properties",
        "10",
        "--token",
        "t",
        "--bad-token-body",
        "text",
    ]);
    let r = api(&sim, ADV);
    assert_eq!(r.status, 200);
    assert!(
        !r.text().is_empty() && !r.text().starts_with('[') && !r.text().starts_with('{'),
        "{}",
        r.text()
    );

    faults(&sim, json!({"bad_token_body": "object"}));
    let r = api_h(&sim, MEDIA, &[("token", "wrong")]);
    assert_eq!(r.status, 200);
    assert!(
        r.json().is_object() && r.json()["error"].is_string(),
        "{}",
        r.text()
    );

    faults(&sim, json!({"bad_token_body": "empty"}));
    let r = api(&sim, &format!("{ADV}?token=x"));
    assert_eq!((r.status, r.body.len()), (200, 0));

    // A null token accepts anything again.
    assert_eq!(faults(&sim, json!({"token": null}))["token"], Value::Null);
    assert_eq!(
        array(&api(&sim, &format!("{ADV}?noimage=1&token=x"))).len(),
        10
    );
    assert_eq!(sim.stats()["recent"][3]["token"], "any");
}

#[test]
fn error_fault_answers_5xx_html() {
    let sim = Sim::start(&[
        "--properties",
        "10",
        "--error-rate",
        "1",
        "--error-status",
        "503",
    ]);
    let r = api(&sim, &format!("{ADV}?noimage=1"));
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<html>"));
    assert_eq!(api(&sim, MEDIA).status, 503);
    // Control endpoints are never faulted.
    assert_eq!(api(&sim, "/__sim/faults").status, 200);
    faults(&sim, json!({"error_status": 500}));
    assert_eq!(api(&sim, MEDIA).status, 500);
    faults(&sim, json!({"error_rate": 0}));
    assert_eq!(api(&sim, &format!("{ADV}?noimage=1")).status, 200);
    let s = sim.stats();
    assert_eq!(s["statuses"]["503"], 2);
    assert_eq!(s["statuses"]["500"], 1);
    assert_eq!(s["statuses"]["200"], 1);
    assert_eq!(s["errors"], 3);
    assert_eq!(s["total"], 4);
}

#[test]
fn reset_fault_closes_the_connection_without_a_response() {
    let sim = Sim::start(&["--properties", "10", "--reset-rate", "1"]);
    let r = try_request("GET", &format!("{}{ADV}?noimage=1", sim.base()), &[], b"");
    assert!(r.is_err(), "expected a transport error, got {r:?}");
    let s = sim.stats();
    assert!(s["resets"].as_u64().unwrap() >= 1);
    assert_eq!(s["resets"], s["total"]);
    assert_eq!(s["statuses"], json!({}));
    assert_eq!(s["recent"][0]["status"], Value::Null);
    faults(&sim, json!({"reset_rate": 0.0}));
    assert_eq!(api(&sim, &format!("{ADV}?noimage=1")).status, 200);
}

#[test]
fn rate_limit_answers_429_with_retry_after() {
    let sim = Sim::start(&[
        "--properties",
        "10",
        "--rate-limit",
        "1",
        "--retry-after",
        "3",
    ]);
    // One request a second is allowed; the next ones within that second are refused. Loop a
    // bounded number of times instead of assuming how fast requests go.
    let mut refused = None;
    for _ in 0..200 {
        let r = api(&sim, &format!("{ADV}?propref=1&noimage=1"));
        if r.status == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = refused.expect("a 429 within 200 requests at 1 request/s");
    assert_eq!(r.header("retry-after"), Some("3"));
    let s = sim.stats();
    assert_eq!(s["statuses"]["429"], 1);
    assert_eq!(s["rate_limited"], 1);
    // Control endpoints are not rate limited.
    for _ in 0..5 {
        assert_eq!(api(&sim, "/__sim/stats").status, 200);
    }
    let off = faults(&sim, json!({"rate_limit": null}));
    assert_eq!(off["rate_limit"], Value::Null);
    for _ in 0..5 {
        assert_eq!(api(&sim, &format!("{ADV}?propref=1&noimage=1")).status, 200);
    }
}

#[test]
fn stall_set_at_run_time_is_counted_and_then_answered() {
    let sim = Sim::start(&["--properties", "10"]);
    let settings = api(&sim, "/__sim/faults").json();
    assert_eq!(settings["stall_rate"], 0.0);
    assert_eq!(settings["stall_ms"], 30_000);
    assert_eq!(settings["latency_ms"], 0);
    let new = faults(&sim, json!({"stall_rate": 1.0, "stall_ms": 20}));
    assert_eq!(
        (new["stall_rate"].as_f64(), new["stall_ms"].as_u64()),
        (Some(1.0), Some(20))
    );
    assert_eq!(api(&sim, "/__sim/faults").json(), new);

    assert_eq!(
        array(&api(&sim, &format!("{ADV}?propref=2&noimage=1"))).len(),
        1
    );
    assert_eq!(sim.stats()["stalls"], 1);
    faults(&sim, json!({"stall_rate": 0}));
    assert_eq!(api(&sim, &format!("{ADV}?propref=2&noimage=1")).status, 200);
    let s = sim.stats();
    assert_eq!(s["stalls"], 1);
    assert_eq!(s["recent"][0]["fault"], "stall");
    assert_eq!(s["recent"][1]["fault"], Value::Null);

    // Bad settings are refused whole.
    let r = post(
        &sim,
        "/__sim/faults",
        &json!({"stall_rate": 2, "error_rate": 1}),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        post(&sim, "/__sim/faults", &json!({"no_such": 1})).status,
        400
    );
    assert_eq!(api(&sim, "/__sim/faults").json()["error_rate"], 0.0);
}

#[test]
fn concurrent_requests_show_in_max_in_flight() {
    let sim = Sim::start(&["--properties", "10"]);
    // Long stalls keep the requests in flight until all have arrived; the wait is on the
    // simulator's own gauge, not on a clock.
    faults(&sim, json!({"stall_rate": 1, "stall_ms": 2000}));
    let base = sim.base();
    let workers: Vec<_> = (1..=3)
        .map(|i| {
            let url = format!("{base}{ADV}?propref={i}&noimage=1");
            std::thread::spawn(move || get(&url, &[]).status)
        })
        .collect();
    wait_for_stats(&sim, "3 requests in flight", |s| s["in_flight"] == 3);
    for w in workers {
        assert_eq!(w.join().unwrap(), 200);
    }
    let s = sim.stats();
    assert_eq!(s["in_flight"], 0);
    assert_eq!(s["max_in_flight"], 3);
    assert_eq!(s["stalls"], 3);
}

#[test]
fn validators_etag_304_and_mutate() {
    let sim = Sim::start(&["--properties", "20", "--validators"]);
    let target = format!("{ADV}?propref=5&noimage=1");
    let a = api(&sim, &target);
    let etag = a.header("etag").expect("ETag").to_string();
    let last_modified = a
        .header("last-modified")
        .expect("Last-Modified")
        .to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert!(httpdate::parse_http_date(&last_modified).is_ok());
    assert_eq!(
        api(&sim, &target).header("etag"),
        Some(etag.as_str()),
        "stable"
    );

    let r = api_h(&sim, &target, &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        api_h(&sim, &target, &[("if-modified-since", &last_modified)]).status,
        304
    );
    assert_eq!(
        api_h(&sim, &target, &[("if-none-match", "\"nope\"")]).status,
        200
    );

    let list_target = format!("{ADV}?noimage=1");
    let list_before = api(&sim, &list_target);
    let m = request(
        "POST",
        &format!("{}/__sim/mutate?propref=5", sim.base()),
        &[],
        b"",
    );
    assert_eq!(m.status, 200);
    let record = m.json();
    assert_eq!(record["propref"], "5");
    assert_ne!(
        record["displayprice"],
        array(&a)[0]["displayprice"],
        "the price moved"
    );

    let b = api_h(&sim, &target, &[("if-none-match", &etag)]);
    assert_eq!(b.status, 200, "changed: no 304 for the old ETag");
    assert_ne!(b.header("etag"), Some(etag.as_str()));
    assert_ne!(b.body, a.body);
    assert_eq!(array(&b)[0], record);
    let b_lm = httpdate::parse_http_date(b.header("last-modified").unwrap()).unwrap();
    assert!(b_lm > httpdate::parse_http_date(&last_modified).unwrap());
    let list_after = api(&sim, &list_target);
    assert_ne!(
        list_after.body, list_before.body,
        "every list containing it changes"
    );
    assert_ne!(list_after.header("etag"), list_before.header("etag"));
    assert_eq!(array(&list_after)[4], record);

    let unknown = request(
        "POST",
        &format!("{}/__sim/mutate?propref=999", sim.base()),
        &[],
        b"",
    );
    assert_eq!(unknown.status, 404);
    assert!(unknown.json()["error"].is_string());
    let s = sim.stats();
    assert_eq!(s["statuses"]["304"], 2);
    assert_eq!(s["total"], 8, "mutate is not an API call");
}

#[test]
fn mutate_without_validators_changes_the_body() {
    let sim = Sim::start(&["--properties", "10"]);
    let target = format!("{ADV}?propref=2&noimage=1");
    let before = api(&sim, &target);
    assert!(before.header("etag").is_none());
    let m = request(
        "POST",
        &format!("{}/__sim/mutate?propref=2", sim.base()),
        &[],
        b"",
    );
    assert_eq!(m.status, 200);
    let after = api(&sim, &target);
    assert_ne!(before.body, after.body);
    assert!(after.header("etag").is_none());
    assert_eq!(array(&after)[0], m.json());
}

#[test]
fn stats_count_api_requests_only_and_reset_zeroes_them() {
    let sim = Sim::start(&["--properties", "10"]);
    api_h(
        &sim,
        &format!("{ADV}?featured=1&noimage=1"),
        &[("accept-encoding", "identity"), ("x-trace", "abc")],
    );
    api(&sim, &format!("{ADV}?featured=1&noimage=1"));
    api(&sim, &format!("{MEDIA}?propref=1"));
    assert_eq!(api(&sim, "/nothing-here.php").status, 404);
    assert_eq!(api(&sim, "/__sim/faults").status, 200);
    let head = request("HEAD", &format!("{}{ADV}", sim.base()), &[], b"");
    assert_eq!(head.status, 405);
    let put = request("PUT", &format!("{}{MEDIA}", sim.base()), &[], b"x");
    assert_eq!(put.status, 405);

    let s = sim.stats();
    assert_eq!(s["total"], 5);
    assert_eq!(s["endpoints"]["propertyadvertising.php"], 3);
    assert_eq!(s["endpoints"]["propertymedia.php"], 2);
    assert_eq!(s["statuses"], json!({"200": 3, "405": 2}));
    assert_eq!(s["by_target"][format!("{ADV}?featured=1&noimage=1")], 2);
    assert_eq!(s["by_target"][format!("{MEDIA}?propref=1")], 1);
    assert!(s["by_target"].get("/nothing-here.php").is_none());
    assert_eq!(s["in_flight"], 0);
    assert!(s["max_in_flight"].as_u64().unwrap() >= 1);
    assert_eq!(s["resets"], 0);
    assert_eq!(s["stalls"], 0);
    assert_eq!(s["bad_token"], 0);
    let recent = s["recent"].as_array().unwrap();
    assert_eq!(recent.len(), 5);
    assert_eq!(recent[0]["method"], "GET");
    assert_eq!(recent[0]["headers"]["accept-encoding"], "identity");
    assert_eq!(recent[0]["headers"]["x-trace"], "abc");
    assert_eq!(recent[0]["token"], "any");
    assert_eq!(recent[0]["status"], 200);
    assert_eq!(recent[3]["method"], "HEAD");
    assert_eq!(sim.api_calls(), 5);

    let r = request("POST", &format!("{}/__sim/reset", sim.base()), &[], b"");
    assert_eq!(r.status, 200);
    let s = sim.stats();
    assert_eq!(s["total"], 0);
    assert_eq!(s["endpoints"]["propertyadvertising.php"], 0);
    assert_eq!(s["statuses"], json!({}));
    assert_eq!(s["by_target"], json!({}));
    assert_eq!(s["max_in_flight"], 0);
    assert_eq!(s["recent"], json!([]));
    api(&sim, MEDIA);
    assert_eq!(sim.api_calls(), 1);
}

#[test]
fn int_flags_option() {
    let sim = Sim::start(&["--properties", "10", "--int-flags"]);
    let list = array(&api(&sim, &format!("{ADV}?noimage=1")));
    for p in &list {
        for flag in ["featured", "nonres", "commercial", "shortlet"] {
            assert!(p[flag] == 0 || p[flag] == 1, "{flag} = {}", p[flag]);
        }
        assert!(p["propref"].is_string() && p["beds"].is_string());
    }
}

#[test]
fn dataset_summary_lists_proprefs_and_media_uncounted() {
    let sim = Sim::start(&["--properties", "15", "--seed", "9"]);
    let d = api(&sim, "/__sim/dataset").json();
    assert_eq!(d["seed"], 9);
    assert_eq!(d["count"], 15);
    assert_eq!(d["properties"].as_array().unwrap().len(), 15);
    assert!(!d["featured"].as_array().unwrap().is_empty());
    assert_eq!(sim.api_calls(), 0);
}

/// The harness takes a child as up only once the child itself listens: a second simulator
/// started on a port another one holds is seen to fail, not taken for the first one.
#[test]
fn a_child_on_a_taken_port_is_never_taken_for_its_holder() {
    let first = Sim::start(&[]);
    let args: Vec<String> = ["simulate", "--port", &first.port.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dir = common::scratch_dir("second-sim");
    let second = common::spawn_listening("simulator", common::BIN, &args, &[], &dir, first.port);
    assert!(
        second.is_none(),
        "a simulator that could not bind was taken as up"
    );
}

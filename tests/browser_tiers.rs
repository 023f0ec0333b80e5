//! The outer tiers as a real browser applies them: headless Chromium on a page of another
//! origin (an agent's website) calling rentcache over HTTPS, as a site served over HTTPS
//! must. The browser trusts the test certificate by its key, as it would a real one: with a
//! certificate error Chromium would not use its HTTP cache at all.
//!
//! What the browser saw is printed (on stderr, past the test harness's capture) so that a
//! CI log shows it.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use common::browser::Browser;
use common::*;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "browser-test-admin";

/// `--ignore-certificate-errors-spki-list` wants the base64 SHA-256 of the certificate's
/// public key (its SubjectPublicKeyInfo), as `openssl` computes it.
fn spki_hash(cert: &str) -> String {
    let script = format!(
        "openssl x509 -pubkey -noout -in '{cert}' | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | base64"
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(hash.len(), 44, "a base64 SHA-256: {hash:?}");
    hash
}

/// The agent's website: one empty page on its own origin, from which scripts call rentcache.
fn serve_site() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the site");
    let port = listener.local_addr().expect("site address").port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let page = "<!doctype html><meta charset=utf-8><title>agent site</title><h1>Homes</h1>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

/// Client requests rentcache counted for `route`, whatever their cache status (a request the
/// browser answered from its own cache never reaches it).
fn served(p: &Proxy, route: &str) -> u64 {
    let r = get(
        &p.admin_url("/metrics"),
        &[("authorization", &format!("Bearer {ADMIN_TOKEN}"))],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let needle = format!("route=\"{route}\"");
    r.text()
        .lines()
        .filter(|l| l.starts_with("rentcache_requests_total{") && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Fetches `url` from the page (with `headers`) and reports what the script could read and
/// what the Resource Timing API says it cost: `transfer` is 0 for an answer from the
/// browser's cache, header-sized for a revalidation, more than `encoded` for a download.
const PROBE: &str = r#"
const [url, headers] = arguments;
return (async () => {
  const before = performance.getEntriesByName(url).length;
  let r, text;
  try {
    r = await fetch(url, {headers: headers || {}});
    text = await r.text();
  } catch (e) {
    return {error: String(e)};
  }
  let e = null;
  for (let i = 0; i < 500 && !e; i++) {
    const all = performance.getEntriesByName(url);
    if (all.length > before) e = all[all.length - 1];
    else await new Promise(ok => setTimeout(ok, 10));
  }
  let items = null;
  try { items = JSON.parse(text).length; } catch (_) {}
  return {
    status: r.status, items, bytes: text.length,
    xcache: r.headers.get('x-cache-status'), etag: r.headers.get('etag'),
    cc: r.headers.get('cache-control'),
    transfer: e ? e.transferSize : -1, encoded: e ? e.encodedBodySize : -1,
    protocol: e ? e.nextHopProtocol : null,
  };
})();
"#;

fn probe(b: &Browser, url: &str, headers: Value) -> Value {
    let v = b.js(PROBE, vec![json!(url), headers]);
    assert!(v.get("error").is_none(), "fetch {url} failed: {v}");
    v
}

fn say(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "browser: {line}");
}

fn n(v: &Value, k: &str) -> i64 {
    v[k].as_i64().unwrap_or(-1)
}

#[test]
fn a_browser_reads_caches_and_revalidates_rentcache_answers_over_https() {
    let (cert, key) = test_cert("origin");
    let trust = format!("--ignore-certificate-errors-spki-list={}", spki_hash(&cert));
    let Some(b) = Browser::start_with(&[trust]) else {
        return;
    };
    let sim = Sim::start(&[]);
    let site = serve_site();
    let tls_port = free_port();
    let config = format!(
        "server:\n  listen: [\"127.0.0.1:{{{{PORT}}}}\"]\n  \
         tls: {{listen: [\"127.0.0.1:{tls_port}\"], cert: \"{cert}\", key: \"{key}\"}}\n\
         upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}\n\
         cors: {{allowed_origins: [\"http://127.0.0.1:{site}\"]}}\n\
         key: {{params_from_headers: [propref, featured, noimage, filename]}}\n\
         routes:\n  \
         - {{name: featured, match: {{path: /propertyadvertising.php, query: {{featured: 1}}}}, ttl: 1h, browser_max_age: 1s, body: json_array}}\n  \
         - {{name: property, match: {{path: /propertyadvertising.php, query_present: [propref]}}, ttl: 1h, browser_max_age: 1h, body: json_array}}\n  \
         - {{name: media, match: {{path: /propertymedia.php}}, ttl: 1h, browser_max_age: 1h, key_headers: {{accept: [application/base64]}}, body: media}}\n"
    );
    let mut p = Proxy::start(
        &config,
        &sim.tls_base(),
        &[("RENTCACHE_ADMIN_TOKEN", ADMIN_TOKEN)],
    );
    assert!(wait_for_port(&mut p.proc, tls_port));
    let api = format!("https://127.0.0.1:{tls_port}");

    // What to ask for: a property and one of its photos, from the featured list.
    let featured = get(&p.url("/propertyadvertising.php?featured=1&noimage=1"), &[]);
    assert_eq!(featured.status, 200);
    let first = featured.json()[0].clone();
    let propref = first["propref"].as_str().expect("a propref").to_string();
    let photo = first["photo1"].as_str().expect("a photo").to_string();
    assert!(!photo.is_empty());

    b.goto(&format!("http://127.0.0.1:{site}/"));

    // 1. CORS: the page's script reads the answer; 2. the second fetch is the browser's.
    let url = format!("{api}/propertyadvertising.php?propref={propref}");
    let first = probe(&b, &url, json!({}));
    say(&format!("first fetch of a property: {first}"));
    assert_eq!(first["status"], 200);
    assert_eq!(first["items"], 1, "the script could read the answer");
    assert!(first["etag"].as_str().is_some(), "ETag exposed: {first}");
    assert!(
        n(&first, "transfer") > n(&first, "encoded"),
        "a download: {first}"
    );
    let seen = served(&p, "property");
    let second = probe(&b, &url, json!({}));
    say(&format!("second fetch: {second}"));
    assert_eq!(second["items"], 1);
    assert_eq!(
        n(&second, "transfer"),
        0,
        "from the browser's cache: {second}"
    );
    assert_eq!(served(&p, "property"), seen, "rentcache never saw it");

    // 3. After max-age the browser revalidates with the ETag and gets a 304.
    let url = format!("{api}/propertyadvertising.php?featured=1&noimage=1");
    let fetched = probe(&b, &url, json!({}));
    say(&format!("featured (browser max-age 1 s): {fetched}"));
    assert!(n(&fetched, "items") > 0);
    let fetched_at = Instant::now();
    let seen = served(&p, "featured");
    // Time itself is what is tested: the answer must be older than its max-age.
    std::thread::sleep(Duration::from_millis(2100).saturating_sub(fetched_at.elapsed()));
    let again = probe(&b, &url, json!({}));
    say(&format!("featured after max-age: {again}"));
    assert_eq!(again["status"], 200, "the browser's copy, confirmed");
    assert_eq!(again["items"], fetched["items"]);
    assert_eq!(
        served(&p, "featured"),
        seen + 1,
        "the browser asked rentcache"
    );
    assert!(
        n(&again, "transfer") > 0 && n(&again, "transfer") < n(&again, "encoded"),
        "a 304: headers only crossed the network: {again}"
    );

    // 4. An <img> of a media URL does not evict the browser's CORS copy of it (without
    // `Vary: Origin` the image's answer, which has no CORS headers, replaced it, and the
    // script downloaded the whole body again).
    let media = format!("{api}/propertymedia.php?filename={photo}");
    let cors = probe(&b, &media, json!({}));
    say(&format!("media fetched by a script: {cors}"));
    assert_eq!(cors["items"], 1, "readable media JSON: {cors}");
    let before_img = served(&p, "media");
    let img = b.js(
        r#"const [src] = arguments;
           return new Promise(done => {
             const img = document.createElement('img');
             img.onload = () => done('loaded');
             img.onerror = () => done('not an image');
             img.src = src;
             document.body.appendChild(img);
           });"#,
        vec![json!(media)],
    );
    let img_requests = served(&p, "media") - before_img;
    say(&format!(
        "<img> of the same URL: {img} ({img_requests} request(s) reached rentcache)"
    ));
    let after = probe(&b, &media, json!({}));
    say(&format!("media fetched by the script again: {after}"));
    // Chromium keeps one entry per URL: a request whose `Origin` differs from the one the
    // entry was stored for (`Vary: Origin`) is sent as a revalidation with the stored ETag.
    // Either way the body stays in the browser: never downloaded again, only headers cross.
    assert_eq!(after["items"], 1);
    assert!(
        n(&after, "transfer") < n(&after, "encoded"),
        "the CORS copy's body is still the browser's: {after}"
    );

    // 5. A Rentman parameter sent as a header: its preflight passes, the answer is read.
    let bare = format!("{api}/propertyadvertising.php");
    let by_header = probe(&b, &bare, json!({"propref": propref}));
    say(&format!("propref sent as a header: {by_header}"));
    assert_eq!(by_header["status"], 200);
    assert_eq!(by_header["items"], 1, "{by_header}");

    let errors: Vec<_> = b
        .console_errors()
        .into_iter()
        .filter(|e| !e.message.contains(&media))
        .collect();
    assert!(errors.is_empty(), "browser console errors: {errors:?}");
}

/// Whether every photo of the page's cards (or gallery) has been drawn from rentcache's
/// `/media/VARIANT/FILE` images.
const PHOTOS_SHOWN: &str = r#"
const imgs = [...document.querySelectorAll('#page img[data-photo]')].filter(i => i.dataset.photo);
return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0
  && /\/media\/(card|hero)\//.test(i.currentSrc)) ? imgs.length : 0;
"#;

/// `rentcache demo`'s agent website works in a browser: the featured properties with their
/// photos, a listing page and a property page, every call answered by rentcache.
#[test]
fn the_demo_agent_website_shows_properties_and_photos() {
    let Some(b) = Browser::start() else { return };
    let Demo {
        proc: demo, site, ..
    } = Demo::start(&[]);
    let limit = Duration::from_secs(60);

    b.goto(&format!("http://127.0.0.1:{site}/"));
    let cards = b.wait_for(limit, PHOTOS_SHOWN);
    say(&format!(
        "demo home: {cards} featured properties with their photos"
    ));
    assert!(b.text("#page h2").contains("Featured"));

    b.js("location.hash = '#/sale/1'", vec![]);
    b.wait_for(
        limit,
        "return (document.querySelector('#page h2') || {}).textContent === 'For sale — page 1'",
    );
    let listed = b.wait_for(limit, PHOTOS_SHOWN);
    say(&format!(
        "demo listing: {listed} properties for sale with photos"
    ));

    b.click("#page a.card");
    b.wait_for(limit, "return location.hash.startsWith('#/property/')");
    let gallery = b.wait_for(
        limit,
        "return document.querySelector('#page .gallery') ? 1 : 0",
    );
    assert_eq!(gallery, 1);
    let photos = b.wait_for(limit, PHOTOS_SHOWN);
    let status = b.text("#status");
    say(&format!("demo property page: {photos} photos; {status}"));
    assert!(status.contains("rentcache: "), "{status}");
    let errors = b.console_errors();
    assert!(
        errors.is_empty(),
        "browser console errors: {errors:?}\n{}",
        demo.logs()
    );
}

//! `/media/...` over real sockets, with the simulator's real JPEGs and PDFs: the files the
//! base64 held, HTTP semantics of files (ETag, 304, Range, HEAD), variants (dimensions,
//! EXIF orientation, WebP only when accepted), one Rentman call per file, the image pool's
//! limit, decompression bombs and corrupt files, purges.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use base64::Engine as _;
use common::origin::{Fault, Origin};
use common::*;

const WEBP_ACCEPT: &str = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";

/// Every record of the simulator's full list (through the proxy).
fn records(proxy: &Proxy) -> Vec<serde_json::Value> {
    let r = proxy.get("/propertyadvertising.php?noimage=1");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json().as_array().expect("a list").clone()
}

fn field(r: &serde_json::Value, name: &str) -> Option<String> {
    r[name]
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The bytes Rentman's JSON answer holds for `filename` (fetched through the proxy).
fn base64_file(proxy: &Proxy, filename: &str) -> Vec<u8> {
    let r = proxy.get(&format!("/propertymedia.php?filename={filename}"));
    assert_eq!(r.status, 200);
    let item = &r.json()[0];
    let data: String = item["base64data"]
        .as_str()
        .expect("base64data")
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64")
}

fn decode_jpeg(bytes: &[u8]) -> turbojpeg::Image<Vec<u8>> {
    turbojpeg::decompress(bytes, turbojpeg::PixelFormat::RGB).expect("a JPEG")
}

/// A lossy WebP's size, from its VP8 frame header.
fn webp_size(b: &[u8]) -> (u32, u32) {
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(&b[8..16], b"WEBPVP8 ");
    assert_eq!(&b[23..26], &[0x9d, 0x01, 0x2a], "a VP8 key frame");
    let w = u16::from_le_bytes([b[26], b[27]]) & 0x3fff;
    let h = u16::from_le_bytes([b[28], b[29]]) & 0x3fff;
    (u32::from(w), u32::from(h))
}

fn has_exif_orientation_6(jpeg: &[u8]) -> bool {
    jpeg.windows(10)
        .any(|w| w == [0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x06])
}

#[test]
fn originals_are_the_files_the_base64_held_with_file_semantics() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[]);
    let all = records(&proxy);
    let photo = all
        .iter()
        .find_map(|r| field(r, "photo1"))
        .expect("a property with photos");
    let pdf = all
        .iter()
        .find_map(|r| field(r, "brochure").filter(|b| b.ends_with(".pdf")))
        .expect("a PDF brochure");

    let expected = base64_file(&proxy, &photo);
    let calls = sim.api_calls();
    let r = proxy.get(&format!("/media/{photo}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, expected, "the bytes the base64 held");
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        r.header("content-length"),
        Some(&*expected.len().to_string())
    );
    assert_eq!(
        r.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    let etag = r.header("etag").expect("an ETag").to_string();
    assert!(etag.starts_with('"'), "a strong ETag: {etag}");
    assert_eq!(
        sim.api_calls(),
        calls,
        "the file came from the JSON answer already cached"
    );

    // A second request is a hit, from the front door.
    let again = proxy.get(&format!("/media/{photo}"));
    assert_eq!(again.header("x-cache-status"), Some("HIT"));
    assert_eq!(again.body, expected);
    assert_eq!(again.header("etag"), Some(etag.as_str()));

    let head = request("HEAD", &proxy.url(&format!("/media/{photo}")), &[], b"");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length"),
        Some(&*expected.len().to_string())
    );

    let not_modified = get(
        &proxy.url(&format!("/media/{photo}")),
        &[("if-none-match", &etag)],
    );
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());

    // Ranges (PDF viewers read them), and a range past the end.
    let pdf_bytes = base64_file(&proxy, &pdf);
    let part = get(
        &proxy.url(&format!("/media/{pdf}")),
        &[("range", "bytes=100-1099")],
    );
    assert_eq!(part.status, 206, "{}", part.text());
    assert_eq!(part.body, &pdf_bytes[100..1100]);
    assert_eq!(
        part.header("content-range"),
        Some(&*format!("bytes 100-1099/{}", pdf_bytes.len()))
    );
    let whole = proxy.get(&format!("/media/{pdf}"));
    assert_eq!(whole.body, pdf_bytes);
    assert_eq!(whole.header("content-type"), Some("application/pdf"));
    assert_eq!(
        whole.header("content-disposition"),
        Some(&*format!("inline; filename=\"{pdf}\""))
    );
    let past = get(
        &proxy.url(&format!("/media/{pdf}")),
        &[("range", "bytes=99999999-")],
    );
    assert_eq!(past.status, 416);

    // Clean JSON errors.
    let unknown = proxy.get("/media/00000000-0000-0000-0000-000000000000.jpg");
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "no_such_file");
    assert_eq!(unknown.header("cache-control"), Some("no-store"));
    let variant = proxy.get(&format!("/media/huge/{photo}"));
    assert_eq!(variant.status, 404);
    assert_eq!(variant.json()["error"]["code"], "unknown_variant");
    let message = variant.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    for known in ["thumbnail", "card", "hero"] {
        assert!(message.contains(known), "{message}");
    }
    let post = request("POST", &proxy.url(&format!("/media/{photo}")), &[], b"");
    assert_eq!(post.status, 405);
    let pdf_variant = proxy.get(&format!("/media/card/{pdf}"));
    assert_eq!(pdf_variant.status, 415);
    assert_eq!(pdf_variant.json()["error"]["code"], "no_variant");
}

#[test]
fn variants_one_upstream_call_for_three_variants_two_formats_twenty_clients() {
    let sim = Sim::start(&["--latency-ms", "200"]);
    let proxy = Proxy::rentman(&sim, &[]);
    let all = records(&proxy);
    let photo = all
        .iter()
        .filter_map(|r| field(r, "photo2"))
        .next()
        .expect("a second photo");
    let calls = sim.api_calls();
    let url = Arc::new(proxy.url(""));
    let photo_name = Arc::new(photo.clone());
    let answers = concurrently(120, move |i| {
        let variant = ["thumbnail", "card", "hero"][i % 3];
        let webp = (i / 3) % 2 == 1;
        let accept = if webp { WEBP_ACCEPT } else { "image/jpeg,*/*" };
        let r = get(
            &format!("{url}/media/{variant}/{photo_name}"),
            &[("accept", accept)],
        );
        (variant, webp, r)
    });
    assert_eq!(
        sim.api_calls() - calls,
        1,
        "one Rentman call for 3 variants x 2 formats x 20 clients"
    );
    let mut seen = BTreeSet::new();
    let original = base64_file(&proxy, &photo);
    // The upright size: a quarter turn (EXIF 6) swaps the stored width and height.
    let (ow, oh) = {
        let img = decode_jpeg(&original);
        let (w, h) = (img.width as u32, img.height as u32);
        if has_exif_orientation_6(&original) {
            (h, w)
        } else {
            (w, h)
        }
    };
    for (variant, webp, r) in answers {
        assert_eq!(r.status, 200, "{variant} {webp}: {}", r.text());
        assert_eq!(r.header("vary"), Some("Accept"));
        let want_w = match variant {
            "thumbnail" => 320,
            "card" => 640,
            _ => 1600,
        }
        .min(ow);
        let want = (
            want_w,
            (f64::from(oh) * f64::from(want_w) / f64::from(ow)).round() as u32,
        );
        let got = if webp {
            assert_eq!(r.header("content-type"), Some("image/webp"));
            webp_size(&r.body)
        } else {
            assert_eq!(r.header("content-type"), Some("image/jpeg"));
            let img = decode_jpeg(&r.body);
            (img.width as u32, img.height as u32)
        };
        assert_eq!(got, want, "{variant} webp={webp}");
        assert!(r.body.len() < original.len(), "smaller than the original");
        seen.insert((variant, webp, r.header("etag").unwrap().to_string()));
    }
    assert_eq!(seen.len(), 6, "one stored entry per variant and format");

    // A photo taken with the camera turned: stored landscape with EXIF orientation 6,
    // its variants portrait and without EXIF.
    let turned = all
        .iter()
        .flat_map(|r| (1..=9).filter_map(move |i| field(r, &format!("photo{i}"))))
        .find(|f| has_exif_orientation_6(&proxy.get(&format!("/media/{f}")).body))
        .expect("a photo with EXIF orientation 6");
    let r = proxy.get(&format!("/media/thumbnail/{turned}"));
    assert_eq!(r.status, 200);
    assert!(
        !r.body.windows(4).any(|w| w == b"Exif"),
        "metadata stripped"
    );
    let img = decode_jpeg(&r.body);
    assert_eq!((img.width, img.height), (320, 427));
    let px = |x: usize, y: usize| {
        let i = y * img.pitch + x * 3;
        img.pixels[i..i + 3]
            .iter()
            .map(|&c| u32::from(c))
            .sum::<u32>()
    };
    assert!(
        px(317, 200) > px(2, 200),
        "the sky is on the right once turned"
    );
}

/// The simulator's kind of photo with its frame header saying 60,000 x 60,000 pixels.
fn bomb() -> Vec<u8> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let palette = rentcache::simulator::jpeg::Palette::random(&mut rng);
    let mut jpeg = rentcache::simulator::jpeg::padded_photo(&palette, None, 60_000, &mut rng);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    jpeg
}

/// The simulator's kind of photo, made progressive by libjpeg-turbo, with its last scan
/// repeated until it has 1,000 scans: a CPU bomb of a few hundred kilobytes.
fn scan_bomb() -> Vec<u8> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let palette = rentcache::simulator::jpeg::Palette::random(&mut rng);
    let photo = rentcache::simulator::jpeg::padded_photo(&palette, None, 0, &mut rng);
    let transform = turbojpeg::Transform {
        progressive: true,
        copy_none: true,
        ..Default::default()
    };
    let p = turbojpeg::Transformer::new()
        .unwrap()
        .transform_to_vec(&transform, &photo)
        .unwrap();
    // No segment but the tables and scans: FF DA is a marker wherever it appears.
    let scans = p.windows(2).filter(|w| w == &[0xFF, 0xDA]).count();
    let last = p.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
    let eoi = p.len() - 2;
    let mut bomb = p[..eoi].to_vec();
    for _ in scans..1000 {
        bomb.extend_from_slice(&p[last..eoi]);
    }
    bomb.extend_from_slice(&[0xFF, 0xD9]);
    bomb
}

fn media_item(filename: &str, base64data: &str) -> &'static str {
    let body = serde_json::json!([{
        "propref": "5", "filename": filename, "caption": null,
        "base64data": base64data, "imgorder": "1"
    }]);
    Box::leak(body.to_string().into_boxed_str())
}

fn memory_entries(proxy: &Proxy) -> u64 {
    let r = get(
        &proxy.admin_url("/stats"),
        &[("authorization", "Bearer media-test")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["tiers"]["memory"]["entries"]
        .as_u64()
        .unwrap_or_else(|| panic!("memory entries in {}", r.text()))
}

#[test]
fn bombs_and_corrupt_files_get_clean_errors_and_nothing_is_stored() {
    let origin = Origin::http();
    let b64 = base64::engine::general_purpose::STANDARD;
    origin.set(
        "bomb.jpg",
        Some(Fault::BadToken(media_item("bomb.jpg", &b64.encode(bomb())))),
    );
    origin.set(
        "scans.jpg",
        Some(Fault::BadToken(media_item(
            "scans.jpg",
            &b64.encode(scan_bomb()),
        ))),
    );
    origin.set(
        "bad.jpg",
        Some(Fault::BadToken(media_item(
            "bad.jpg",
            "/9j/4AAQSkZJRgAB!!!!",
        ))),
    );
    let proxy = Proxy::start(
        &shipped_config(),
        &origin.base(),
        &[("RENTCACHE_ADMIN_TOKEN", "media-test")],
    );

    let r = proxy.get("/media/card/bomb.jpg");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "bad_image");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("60000x60000"), "{message}");
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let entries = memory_entries(&proxy);
    let again = proxy.get("/media/card/bomb.jpg");
    assert_eq!(again.status, 502);
    assert_ne!(again.header("x-cache-status"), Some("HIT"));
    assert_eq!(memory_entries(&proxy), entries, "no variant was stored");
    assert_eq!(
        origin.calls("bomb.jpg"),
        1,
        "the JSON answer itself is good"
    );

    let before = memory_entries(&proxy);
    for _ in 0..2 {
        let r = get(
            &proxy.url("/media/hero/scans.jpg"),
            &[("accept", WEBP_ACCEPT)],
        );
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_image");
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.contains("1000 scans") && message.contains("media.max_scans"),
            "{message}"
        );
        assert!(
            r.header("cache-status")
                .unwrap_or("")
                .contains("too-many-scans"),
            "{:?}",
            r.header("cache-status")
        );
    }
    // The original itself is served as it is (a browser decodes it, not rentcache); it
    // and its JSON answer were stored on the way, the variant never.
    let original = proxy.get("/media/scans.jpg");
    assert_eq!(original.status, 200);
    assert_eq!(original.header("x-cache-status"), Some("HIT"));
    let entries = memory_entries(&proxy);
    assert_eq!(entries, before + 2, "the JSON answer and the original only");

    let r = proxy.get("/media/bad.jpg");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(
        r.header("cache-status").unwrap_or("").contains("not-media"),
        "{:?}",
        r.header("cache-status")
    );
    let r = proxy.get("/media/thumbnail/bad.jpg");
    assert_eq!(r.status, 502);
    assert_eq!(
        memory_entries(&proxy),
        entries,
        "nothing stored for a corrupt file"
    );
}

/// The simulator's kind of photo and brochure, cut in half (as a truncating upstream or a
/// proxy on the way would leave them): their magic bytes are intact.
fn halves() -> (Vec<u8>, Vec<u8>) {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let palette = rentcache::simulator::jpeg::Palette::random(&mut rng);
    let jpeg = rentcache::simulator::jpeg::padded_photo(&palette, None, 90_000, &mut rng);
    let pdf = rentcache::simulator::pdf::padded_pdf("Brochure", 40_000, &mut rng);
    (
        jpeg[..jpeg.len() / 2].to_vec(),
        pdf[..pdf.len() / 2].to_vec(),
    )
}

#[test]
fn files_cut_short_get_clean_errors_and_are_never_stored() {
    let origin = Origin::http();
    let b64 = base64::engine::general_purpose::STANDARD;
    let (jpeg, pdf) = halves();
    origin.set(
        "half.jpg",
        Some(Fault::BadToken(media_item("half.jpg", &b64.encode(jpeg)))),
    );
    origin.set(
        "half.pdf",
        Some(Fault::BadToken(media_item("half.pdf", &b64.encode(pdf)))),
    );
    // Failures are not remembered for a while, so each request shows whether it was stored.
    let config = shipped_config().replace("failure_memo: 2s", "failure_memo: 0s");
    assert!(config.contains("failure_memo: 0s"));
    let proxy = Proxy::start(
        &config,
        &origin.base(),
        &[("RENTCACHE_ADMIN_TOKEN", "media-test")],
    );
    let entries = memory_entries(&proxy);
    for (key, paths) in [
        ("half.jpg", ["/media/half.jpg", "/media/card/half.jpg"]),
        ("half.pdf", ["/media/half.pdf", "/media/half.pdf"]),
    ] {
        for (i, path) in paths.iter().enumerate() {
            let r = proxy.get(path);
            assert_eq!(r.status, 502, "{path}: {}", r.text());
            assert_eq!(r.json()["error"]["code"], "incomplete_media", "{path}");
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("cache-control"), Some("no-store"));
            assert!(
                r.header("cache-status")
                    .unwrap_or("")
                    .contains("incomplete-media"),
                "{path}: {:?}",
                r.header("cache-status")
            );
            assert_eq!(origin.calls(key), i as u64 + 1, "{path} asks Rentman again");
        }
        // Neither the JSON answer, nor the file, nor a variant was kept.
        let explain = get(
            &proxy.admin_url(&format!(
                "/explain?url=/propertymedia.php%3Ffilename%3D{key}"
            )),
            &[("authorization", "Bearer media-test")],
        );
        assert_eq!(explain.status, 200, "{}", explain.text());
        for tier in explain.json()["tiers"].as_array().expect("tiers") {
            assert_eq!(tier["present"], false, "{tier}");
        }
    }
    assert_eq!(memory_entries(&proxy), entries, "nothing stored");
}

#[test]
fn a_file_cut_short_later_leaves_the_old_one_served() {
    let origin = Origin::http();
    let config = shipped_config().replace(
        "path: /propertymedia.php\n    ttl: 1d\n    stale_while_revalidate: 1d",
        "path: /propertymedia.php\n    ttl: 1s\n    stale_while_revalidate: 0",
    );
    assert!(config.contains("ttl: 1s"));
    let proxy = Proxy::start(&config, &origin.base(), &[]);
    let first = proxy.get("/media/later.jpg");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.body, common::origin::JPEG);
    let (jpeg, _) = halves();
    let b64 = base64::engine::general_purpose::STANDARD;
    origin.set(
        "later.jpg",
        Some(Fault::BadToken(media_item("later.jpg", &b64.encode(jpeg)))),
    );
    let stale = eventually(std::time::Duration::from_secs(30), || {
        let r = proxy.get("/media/later.jpg");
        (r.header("x-cache-status") != Some("HIT")).then_some(r)
    });
    assert_eq!(stale.status, 200);
    assert_eq!(stale.header("x-cache-status"), Some("STALE"));
    assert_eq!(stale.body, first.body, "the whole file kept before");
    assert!(
        stale
            .header("cache-status")
            .unwrap_or("")
            .contains("incomplete-media"),
        "{:?}",
        stale.headers
    );
}

/// A floorplan-like PNG of `width` x `height`: white rooms, dark walls, a transparent
/// margin on the left.
fn floorplan(width: u32, height: u32) -> Vec<u8> {
    let mut pixels = Vec::new();
    for y in 0..height {
        for x in 0..width {
            let wall = x % 100 < 3 || y % 100 < 3;
            let v = if wall { 30 } else { 245 };
            pixels.extend([v, v, v, if x < 50 { 0 } else { 255 }]);
        }
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}

/// A PNG's size and colour type, decoded.
fn png_info(b: &[u8]) -> (u32, u32, png::ColorType) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(b))
        .read_info()
        .expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).expect("its pixels");
    (frame.width, frame.height, frame.color_type)
}

/// A lossless WebP's size and whether it uses alpha, from its VP8L header.
fn webp_lossless_size(b: &[u8]) -> (u32, u32, bool) {
    assert_eq!(&b[..4], b"RIFF");
    assert_eq!(&b[8..16], b"WEBPVP8L", "a lossless WebP");
    let bits = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
    (
        (bits & 0x3fff) + 1,
        ((bits >> 14) & 0x3fff) + 1,
        (bits >> 28) & 1 == 1,
    )
}

#[test]
fn png_originals_have_variants_as_png_or_lossless_webp() {
    let origin = Origin::http();
    let b64 = base64::engine::general_purpose::STANDARD;
    let plan = floorplan(1200, 800);
    origin.set(
        "plan.png",
        Some(Fault::BadToken(media_item("plan.png", &b64.encode(&plan)))),
    );
    let gif = b"GIF89a\x01\0\x01\0\0\0\0,\0\0\0\0\x01\0\x01\0\0\x02\x02D\x01\0;";
    origin.set(
        "anim.gif",
        Some(Fault::BadToken(media_item("anim.gif", &b64.encode(gif)))),
    );
    let proxy = Proxy::start(&shipped_config(), &origin.base(), &[]);

    let original = proxy.get("/media/plan.png");
    assert_eq!(original.status, 200, "{}", original.text());
    assert_eq!(original.header("content-type"), Some("image/png"));
    assert_eq!(original.body, plan);

    let mut etags = BTreeSet::new();
    for (variant, w, h) in [
        ("card", 640, 427),
        ("thumbnail", 320, 213),
        ("hero", 1200, 800),
    ] {
        let path = format!("/media/{variant}/plan.png");
        for round in 0..2 {
            let r = get(&proxy.url(&path), &[("accept", "image/png,image/*,*/*")]);
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(r.header("content-type"), Some("image/png"), "{path}");
            assert_eq!(r.header("vary"), Some("Accept"));
            assert_eq!(png_info(&r.body), (w, h, png::ColorType::Rgba), "{path}");
            let webp = get(&proxy.url(&path), &[("accept", WEBP_ACCEPT)]);
            assert_eq!(webp.status, 200, "{path}: {}", webp.text());
            assert_eq!(webp.header("content-type"), Some("image/webp"), "{path}");
            assert_eq!(webp.header("vary"), Some("Accept"));
            assert_eq!(webp_lossless_size(&webp.body), (w, h, true), "{path}");
            if round == 1 {
                assert_eq!(r.header("x-cache-status"), Some("HIT"));
                assert_eq!(webp.header("x-cache-status"), Some("HIT"));
            }
            etags.insert(r.header("etag").unwrap().to_string());
            etags.insert(webp.header("etag").unwrap().to_string());
        }
    }
    assert_eq!(etags.len(), 6, "one entry per variant and format");
    assert_eq!(
        origin.calls("plan.png"),
        1,
        "one Rentman call for all of them"
    );

    let r = proxy.get("/media/card/anim.gif");
    assert_eq!(r.status, 415, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_variant");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("JPEG and PNG") && message.contains("image/gif"),
        "{message}"
    );
}

#[test]
fn a_full_image_pool_answers_503_with_retry_after() {
    // Rentman is slow, so every request arrives before the file does; then six variants
    // want the one worker at once, with no queue.
    let sim = Sim::start(&["--latency-ms", "300"]);
    let config =
        shipped_config().replace("  workers: 2\n  queue: 64\n", "  workers: 1\n  queue: 0\n");
    assert!(config.contains("queue: 0"));
    let proxy = Proxy::start(&config, &sim.tls_base(), &[]);
    let photo = records(&proxy)
        .iter()
        .find_map(|r| field(r, "photo1"))
        .expect("a photo");
    let url = Arc::new(proxy.url(""));
    let name = Arc::new(photo.clone());
    let answers = concurrently(6, move |i| {
        let variant = ["thumbnail", "card", "hero"][i % 3];
        let accept = if i < 3 { WEBP_ACCEPT } else { "*/*" };
        (
            variant,
            accept,
            get(
                &format!("{url}/media/{variant}/{name}"),
                &[("accept", accept)],
            ),
        )
    });
    let busy: Vec<_> = answers.iter().filter(|(_, _, r)| r.status == 503).collect();
    let made = answers.iter().filter(|(_, _, r)| r.status == 200).count();
    assert!(!busy.is_empty(), "one worker, no queue: some are refused");
    assert!(made >= 1, "and the worker made one");
    assert_eq!(busy.len() + made, 6);
    for (variant, accept, r) in &busy {
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(r.json()["error"]["code"], "media_busy");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        // Nothing was stored for the refusal: asked again alone, it is made.
        let retry = get(
            &proxy.url(&format!("/media/{variant}/{photo}")),
            &[("accept", accept)],
        );
        assert_eq!(retry.status, 200, "{}", retry.text());
    }
}

#[test]
fn purging_a_property_removes_its_files_and_variants() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[("RENTCACHE_ADMIN_TOKEN", "media-test")]);
    let all = records(&proxy);
    let (propref, photo) = all
        .iter()
        .find_map(|r| Some((field(r, "propref")?, field(r, "photo1")?)))
        .expect("a photo");
    for path in [format!("/media/card/{photo}"), format!("/media/{photo}")] {
        assert_eq!(proxy.get(&path).status, 200);
        assert_eq!(proxy.get(&path).header("x-cache-status"), Some("HIT"));
    }
    let webp = get(
        &proxy.url(&format!("/media/card/{photo}")),
        &[("accept", WEBP_ACCEPT)],
    );
    assert_eq!(webp.status, 200);
    let surrogate = proxy
        .get(&format!("/media/card/{photo}"))
        .header("surrogate-key")
        .unwrap_or("")
        .to_string();
    assert!(
        surrogate.contains(&format!("property:{propref}")),
        "{surrogate}"
    );

    let r = proxy.admin_post(
        "/purge",
        "media-test",
        serde_json::json!({"tag": format!("property:{propref}")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let keys: Vec<String> = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for key in [
        format!("/media/{photo}"),
        format!("/media/card/{photo} format=jpeg"),
        format!("/media/card/{photo} format=webp"),
    ] {
        assert!(keys.contains(&key), "{key} purged: {keys:?}");
    }
    let calls = sim.api_calls();
    let after = proxy.get(&format!("/media/card/{photo}"));
    assert_eq!(after.status, 200);
    assert_eq!(after.header("x-cache-status"), Some("MISS"));
    assert_eq!(sim.api_calls(), calls + 1, "the file is asked for again");
}

#[test]
fn an_old_variant_is_served_while_rentman_fails() {
    let sim = Sim::start(&[]);
    let config = shipped_config().replace(
        "path: /propertymedia.php\n    ttl: 1d\n    stale_while_revalidate: 1d",
        "path: /propertymedia.php\n    ttl: 1s\n    stale_while_revalidate: 0",
    );
    assert!(
        config.contains("ttl: 1s"),
        "the media route's lifetime changed"
    );
    let proxy = Proxy::start(&config, &sim.tls_base(), &[]);
    let photo = records(&proxy)
        .iter()
        .find_map(|r| field(r, "photo1"))
        .expect("a photo");
    let path = format!("/media/card/{photo}");
    let first = proxy.get(&path);
    assert_eq!(first.status, 200);
    sim.set(serde_json::json!({"error_rate": 1.0, "error_status": 503}));
    let stale = eventually(std::time::Duration::from_secs(30), || {
        let r = proxy.get(&path);
        (r.header("x-cache-status") != Some("HIT")).then_some(r)
    });
    assert_eq!(
        stale.header("x-cache-status"),
        Some("STALE"),
        "{:?}",
        stale.headers
    );
    assert_eq!(stale.status, 200);
    assert_eq!(stale.body, first.body, "the variant made before");
    assert!(stale.header("warning").unwrap_or("").contains("status-503"));
}

#[test]
fn warming_follows_templates_to_variants_in_every_format() {
    let sim = Sim::start(&[]);
    let config = shipped_config()
        .replace("on_start: false", "on_start: true")
        .replace(
            "follow: [details, first_photo, first_card]",
            "follow: [first_card]",
        );
    assert!(config.contains("follow: [first_card]"));
    let proxy = Proxy::start(
        &config,
        &sim.tls_base(),
        &[("RENTCACHE_ADMIN_TOKEN", "media-test")],
    );
    let job = eventually(std::time::Duration::from_secs(60), || {
        let r = get(
            &proxy.admin_url("/warm"),
            &[("authorization", "Bearer media-test")],
        );
        let jobs = r.json()["jobs"].as_array()?.clone();
        jobs.into_iter()
            .find(|j| j["name"] == "featured" && j["finished"] == true)
    });
    assert_eq!(job["failed"], 0, "{job}");
    let featured = proxy
        .get("/propertyadvertising.php?featured=1&noimage=1")
        .json();
    let photos: Vec<String> = featured
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| field(r, "photo1"))
        .collect();
    assert!(photos.len() >= 3, "featured properties have photos");
    let calls = sim.api_calls();
    for photo in &photos {
        for accept in ["*/*", WEBP_ACCEPT] {
            let r = get(
                &proxy.url(&format!("/media/card/{photo}")),
                &[("accept", accept)],
            );
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-cache-status"), Some("HIT"), "{photo} {accept}");
        }
    }
    assert_eq!(sim.api_calls(), calls, "everything was warmed");
}

#[test]
fn two_instances_sharing_redis_make_one_rentman_call_per_file() {
    let redis = RedisServer::start();
    let sim = Sim::start(&["--latency-ms", "300"]);
    let config = format!("{}\nredis:\n  url: \"{}\"\n", shipped_config(), redis.url());
    let a = Proxy::start(&config, &sim.tls_base(), &[]);
    let b = Proxy::start(&config, &sim.tls_base(), &[]);
    let photo = records(&a)
        .iter()
        .find_map(|r| field(r, "photo3"))
        .expect("a third photo");
    let calls = sim.api_calls();
    let urls = Arc::new([a.url(""), b.url("")]);
    let name = Arc::new(photo.clone());
    let answers = concurrently(24, move |i| {
        let variant = ["thumbnail", "card", "hero"][i % 3];
        let accept = if (i / 3) % 2 == 0 { WEBP_ACCEPT } else { "*/*" };
        let base = &urls[(i / 6) % 2];
        get(
            &format!("{base}/media/{variant}/{name}"),
            &[("accept", accept)],
        )
    });
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(
        sim.api_calls() - calls,
        1,
        "one Rentman call across both instances"
    );
}

#[test]
fn large_hits_sent_from_memory_files_reach_slow_readers_whole() {
    let sim = Sim::start(&[]);
    let config = shipped_config().replace(
        "max_object_bytes: 8MiB\n",
        "max_object_bytes: 8MiB\n  body_dir: memory\n",
    );
    assert!(config.contains("body_dir: memory"));
    let proxy = Proxy::start(&config, &sim.tls_base(), &[]);
    slow_readers_get_whole_answers(&proxy);
    let memfds = std::fs::read_dir(format!("/proc/{}/fd", proxy.proc.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("/memfd:"))
        .count();
    assert!(memfds > 0, "bodies kept in memory files");
}

#[test]
fn large_hits_sent_from_files_in_body_dir_reach_slow_readers_whole() {
    let sim = Sim::start(&[]);
    let dir = scratch_dir("bodies");
    let config = shipped_config().replace(
        "max_object_bytes: 8MiB\n",
        &format!("max_object_bytes: 8MiB\n  body_dir: {}\n", dir.display()),
    );
    assert!(config.contains("body_dir"));
    let proxy = Proxy::start(&config, &sim.tls_base(), &[]);
    slow_readers_get_whole_answers(&proxy);
    // The bodies are files in that directory without a name: nothing is left there, and
    // the process holds them open.
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "no named files"
    );
    let held = std::fs::read_dir(format!("/proc/{}/fd", proxy.proc.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir))
        .count();
    assert!(held > 0, "bodies kept in {}", dir.display());
}

/// Forty large answers pipelined on one connection to a client that reads nothing until
/// all are sent: each arrives whole and in order.
fn slow_readers_get_whole_answers(proxy: &Proxy) {
    use std::io::{Read, Write};
    let all = records(proxy);
    // The largest of a few originals: over the 16 KiB from which bodies live in memory files.
    let photo = all
        .iter()
        .filter_map(|r| field(r, "photo1"))
        .take(8)
        .max_by_key(|f| proxy.get(&format!("/media/{f}")).body.len())
        .unwrap();
    let expected = proxy.get(&format!("/media/{photo}")).body;
    assert!(expected.len() > 16 * 1024);
    // Forty requests pipelined, and nothing read until all are sent: the socket fills and
    // the proxy must wait for it between and inside bodies.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
    let one = format!("GET /media/{photo} HTTP/1.1\r\nHost: x\r\n\r\n");
    let n = 40;
    s.write_all(one.repeat(n).as_bytes()).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut answers = 0;
    while answers < n {
        let k = s.read(&mut buf).unwrap();
        assert!(k > 0, "closed after {answers} answers");
        got.extend_from_slice(&buf[..k]);
        // Take every complete answer at the front.
        while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("content-length");
            if got.len() < end + 4 + len {
                break;
            }
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert_eq!(
                &got[end + 4..end + 4 + len],
                &expected[..],
                "answer {answers}"
            );
            got.drain(..end + 4 + len);
            answers += 1;
        }
    }
    assert!(got.is_empty());
}

#[test]
fn purging_a_media_url_removes_the_file_its_variants_and_its_source() {
    let sim = Sim::start(&[]);
    let proxy = Proxy::rentman(&sim, &[("RENTCACHE_ADMIN_TOKEN", "media-test")]);
    let all = records(&proxy);
    let photo = all
        .iter()
        .find_map(|r| field(r, "photo1"))
        .expect("a photo");
    let card = format!("/media/card/{photo}");
    let thumb = format!("/media/thumbnail/{photo}");
    for path in [&card, &thumb] {
        assert_eq!(proxy.get(path).status, 200);
        assert_eq!(proxy.get(path).header("x-cache-status"), Some("HIT"));
    }

    // A variant's URL: that variant in both formats, nothing else.
    let r = proxy.admin_post("/purge", "media-test", serde_json::json!({"url": card}));
    assert_eq!(r.status, 200, "{}", r.text());
    let keys = r.json()["keys"].clone();
    assert_eq!(
        keys,
        serde_json::json!([format!("{card} format=jpeg")]),
        "only what was stored is reported purged"
    );
    assert_eq!(proxy.get(&card).header("x-cache-status"), Some("MISS"));
    assert_eq!(proxy.get(&thumb).header("x-cache-status"), Some("HIT"));

    // The file's URL (whole, with a host): the file, every variant, and the JSON it came
    // from, so Rentman is asked again.
    let calls = sim.api_calls();
    let r = proxy.admin_post(
        "/purge",
        "media-test",
        serde_json::json!({"url": format!("https://cdn.example{}", format!("/media/{photo}"))}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let purged: Vec<String> = r.json()["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect();
    for key in [
        format!("/media/{photo}"),
        format!("{card} format=jpeg"),
        format!("{thumb} format=jpeg"),
    ] {
        assert!(purged.contains(&key), "{key} purged: {purged:?}");
    }
    assert!(
        purged.iter().any(|k| k.starts_with("/propertymedia.php?")),
        "the JSON source is purged too: {purged:?}"
    );
    assert_eq!(proxy.get(&thumb).header("x-cache-status"), Some("MISS"));
    assert_eq!(sim.api_calls(), calls + 1, "the file is asked for again");

    // A media URL that names nothing servable is a clear 422.
    let r = proxy.admin_post(
        "/purge",
        "media-test",
        serde_json::json!({"url": format!("/media/poster/{photo}")}),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("card"),
        "names the known variants: {}",
        r.text()
    );
}

//! Media files from outside, generated: any bytes, and real JPEGs and PNGs cut short or with
//! bytes overwritten or inserted, go through what a Rentman answer's file goes through
//! (type sniffing, the completeness check, the JPEG marker walk, variant making with
//! libjpeg-turbo, the png crate and libwebp) without a panic, and every strict prefix of a
//! whole file is found incomplete (`PROPTEST_CASES` sets how many; `bench/fuzz.sh` runs
//! many more).

use proptest::prelude::*;

use super::{make_variant, Format, Spec};
use crate::policy::jpeg_markers;
use crate::policy::media::sniff;
use crate::policy::media_complete::is_complete;

/// A small picture with some detail, so that its entropy-coded data holds varied bytes.
fn pixels(width: usize, height: usize, channels: usize) -> Vec<u8> {
    (0..width * height * channels)
        .map(|i| ((i * 37) ^ ((i / (width * channels)) * 11)) as u8)
        .collect()
}

fn jpeg() -> Vec<u8> {
    let image = turbojpeg::Image {
        pixels: &pixels(48, 32, 3)[..],
        width: 48,
        pitch: 48 * 3,
        height: 32,
        format: turbojpeg::PixelFormat::RGB,
    };
    turbojpeg::compress(image, 75, turbojpeg::Subsamp::Sub2x2)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

fn png_file() -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, 40, 24);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    if let Ok(mut writer) = encoder.write_header() {
        let _ = writer.write_image_data(&pixels(40, 24, 4));
        let _ = writer.finish();
    }
    out
}

fn originals() -> &'static [Vec<u8>; 2] {
    static FILES: std::sync::OnceLock<[Vec<u8>; 2]> = std::sync::OnceLock::new();
    FILES.get_or_init(|| [jpeg(), png_file()])
}

#[derive(Debug, Clone)]
enum Change {
    Cut(usize),
    Set(usize, u8),
    Insert(usize, Vec<u8>),
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        any::<usize>().prop_map(Change::Cut),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Change::Set(at, b)),
        (
            any::<usize>(),
            prop::collection::vec(
                prop_oneof![Just(0xFFu8), Just(0xDA), Just(0xD9), Just(0), any::<u8>()],
                1..8
            )
        )
            .prop_map(|(at, b)| Change::Insert(at, b)),
    ]
}

/// A file to try: a real one changed a few times, or bytes that start like one.
fn file() -> impl Strategy<Value = Vec<u8>> {
    let changed =
        (0..2usize, prop::collection::vec(change(), 0..4)).prop_map(|(which, changes)| {
            let mut b = originals()[which].clone();
            for c in changes {
                match c {
                    Change::Cut(at) => b.truncate(at % (b.len() + 1)),
                    Change::Set(at, v) => {
                        let n = b.len().max(1);
                        if let Some(x) = b.get_mut(at % n) {
                            *x = v;
                        }
                    }
                    Change::Insert(at, bytes) => {
                        let at = at % (b.len() + 1);
                        b.splice(at..at, bytes);
                    }
                }
            }
            b
        });
    let random = (
        prop_oneof![
            Just(&b"\xFF\xD8\xFF"[..]),
            Just(&b"\x89PNG\r\n\x1a\n"[..]),
            Just(&b"%PDF-"[..]),
            Just(&b"GIF89a"[..]),
            Just(&b"RIFF\0\0\0\0WEBP"[..]),
            Just(&b"II*\0"[..]),
            Just(&b"\0\0\0\x18ftypavif"[..]),
            Just(&b""[..]),
        ],
        prop::collection::vec(any::<u8>(), 0..512),
    )
        .prop_map(|(magic, rest)| [magic, &rest[..]].concat());
    prop_oneof![3 => changed, 1 => random]
}

proptest! {
    #[test]
    fn files_from_outside_never_panic(
        bytes in file(),
        width in 1u32..96,
        webp in any::<bool>(),
        max_scans in 1u32..200,
    ) {
        let walked = jpeg_markers::walk(&bytes);
        if let Some(kind) = sniff(&bytes) {
            is_complete(kind, &bytes);
        }
        let spec = Spec {
            width,
            quality: 70,
            format: if webp { Format::Webp } else { Format::Jpeg },
            max_pixels: 1 << 20,
            max_scans,
        };
        if let Ok(made) = make_variant(&bytes, &spec) {
            prop_assert!(made.width >= 1 && made.height >= 1);
            prop_assert!(made.width <= width, "{} wider than {}", made.width, width);
            prop_assert!(!made.bytes.is_empty());
            if walked.end == jpeg_markers::End::Eoi {
                prop_assert!(walked.scans <= max_scans);
            }
        }
    }

    #[test]
    fn every_strict_prefix_of_a_whole_file_is_incomplete(which in 0..2usize, cut in any::<usize>()) {
        let whole = &originals()[which];
        let kind = sniff(whole);
        prop_assert!(kind.is_some_and(|k| is_complete(k, whole)));
        let prefix = &whole[..cut % whole.len()];
        if let Some(k) = sniff(prefix) {
            prop_assert!(!is_complete(k, prefix), "a prefix of {} bytes of {}", prefix.len(), whole.len());
        }
    }
}

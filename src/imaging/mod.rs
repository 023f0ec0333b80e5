//! Image variants: a JPEG photo decoded at the smallest scale that still covers the variant
//! (libjpeg-turbo's shrink-on-load, in the DCT), resized with SIMD, turned upright by its
//! EXIF orientation, and encoded without metadata as JPEG or lossy WebP; a PNG original
//! ([`png_variant`]) resized the same way and encoded as lossless WebP or PNG.
//!
//! Everything here is synchronous and CPU-bound: the proxy runs it on [`pool::Pool`], never
//! on its async runtime.

mod orient;
mod png_variant;
pub mod pool;
#[cfg(test)]
mod props;
mod scratch;
mod webp;

use std::cell::RefCell;
use std::thread::LocalKey;

use fast_image_resize as fr;

use crate::policy::jpeg_markers;
use crate::policy::media::{sniff, MediaType};
pub use crate::policy::media_url::Format;

/// What to make of an original.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Largest width of the upright picture; never upscaled.
    pub width: u32,
    pub quality: u8,
    pub format: Format,
    /// Pictures with more pixels (as their header says) are refused before decoding.
    pub max_pixels: u64,
    /// JPEGs with more scans are refused before decoding.
    pub max_scans: u32,
}

/// A variant made.
#[derive(Debug)]
pub struct Made {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub content_type: &'static str,
}

/// Why no variant could be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Variants are made from JPEG and PNG images; this file is another type (or none).
    Unsupported(Option<MediaType>),
    /// More pixels than `max_pixels`: refused unread (a decompression bomb, or a scan).
    TooLarge { width: u64, height: u64, max: u64 },
    /// A JPEG of more scans than `max_scans`: refused unread (a CPU bomb).
    TooManyScans { scans: u32, max: u32 },
    /// The file does not decode.
    Corrupt(String),
}

impl std::fmt::Display for ImageError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ImageError::Unsupported(Some(t)) => write!(
                f,
                "variants are made from JPEG and PNG images; this file is {}",
                t.content_type()
            ),
            ImageError::Unsupported(None) => f.write_str("the file is not an image"),
            ImageError::TooLarge { width, height, max } => write!(
                f,
                "the image is {width}x{height} pixels, more than the {max} allowed (media.max_pixels)"
            ),
            ImageError::TooManyScans { scans, max } => write!(
                f,
                "the JPEG has {scans} scans, more than the {max} allowed (media.max_scans)"
            ),
            ImageError::Corrupt(why) => write!(f, "the image does not decode: {why}"),
        }
    }
}

/// The JPEG scale (n/8) decoding at which still covers `want` pixels of `full`: the
/// smallest of 1/8, 1/4, 1/2 and 1 (libjpeg-turbo scales in the DCT, so a smaller scale
/// is a proportionally cheaper decode).
fn shrink_on_load(full: (u32, u32), want: (u32, u32)) -> u32 {
    for n in [1, 2, 4] {
        let (scaled_w, scaled_h) = ((full.0 * n).div_ceil(8), (full.1 * n).div_ceil(8));
        if scaled_w >= want.0 && scaled_h >= want.1 {
            return n;
        }
    }
    8
}

/// The size of a picture of `full` pixels at most `width` wide, aspect kept, never larger.
fn fit(full: (u32, u32), width: u32) -> (u32, u32) {
    let ratio = f64::from(width.min(full.0)) / f64::from(full.0.max(1));
    (
        ((f64::from(full.0) * ratio).round() as u32).max(1),
        ((f64::from(full.1) * ratio).round() as u32).max(1),
    )
}

/// Makes the variant `spec` asks for from `original`'s bytes.
pub fn make_variant(original: &[u8], spec: &Spec) -> Result<Made, ImageError> {
    keep_c_heap();
    match sniff(original) {
        Some(MediaType::Jpeg) => jpeg_variant(original, spec),
        Some(MediaType::Png) => png_variant::make(original, spec),
        kind => Err(ImageError::Unsupported(kind)),
    }
}

fn jpeg_variant(original: &[u8], spec: &Spec) -> Result<Made, ImageError> {
    // Before anything is decoded, or losslessly transformed, which reads every scan too.
    let scans = jpeg_markers::walk(original).scans;
    if scans > spec.max_scans {
        return Err(ImageError::TooManyScans {
            scans,
            max: spec.max_scans,
        });
    }
    let corrupt = |e: turbojpeg::Error| ImageError::Corrupt(e.to_string());
    let mut decompressor = reuse(&DECOMPRESSOR, turbojpeg::Decompressor::new).map_err(corrupt)?;
    let header = decompressor.read_header(original).map_err(corrupt)?;
    let (w, h) = (header.width as u64, header.height as u64);
    if w == 0 || h == 0 {
        return Err(ImageError::Corrupt("the image has no pixels".into()));
    }
    if w.saturating_mul(h) > spec.max_pixels {
        return Err(ImageError::TooLarge {
            width: w,
            height: h,
            max: spec.max_pixels,
        });
    }
    let (w, h) = (w as u32, h as u32);
    let orientation = orient::of(original);
    // The wanted width is the upright picture's: a quarter turn makes it the stored height.
    let turned = orient::swaps_axes(orientation);
    let upright_w = if turned { h } else { w };
    let ratio = f64::from(spec.width.min(upright_w)) / f64::from(upright_w);
    let target = (
        ((f64::from(w) * ratio).round() as u32).max(1),
        ((f64::from(h) * ratio).round() as u32).max(1),
    );
    if spec.format == Format::Jpeg && target == (w, h) && orient::is_upright(orientation) {
        // The photo is no wider than the variant and upright: its own compressed data
        // without its other segments, losslessly and without decoding it. (A turn in the
        // DCT takes longer than decoding, turning and encoding: measured 28-37 ms against
        // 12 ms for a 1600x1200 photo.)
        if let Some(bytes) = lossless(original) {
            let (width, height) = if turned { (h, w) } else { (w, h) };
            return Ok(Made {
                bytes,
                width,
                height,
                content_type: spec.format.content_type(),
            });
        }
    }
    let n = shrink_on_load((w, h), target);
    let (dw, dh) = ((w * n).div_ceil(8), (h * n).div_ceil(8));
    let mut pixels = scratch::take(dw as usize * dh as usize * 3);
    decompressor
        .decompress(
            original,
            turbojpeg::Image {
                pixels: pixels.as_mut_slice(),
                width: dw as usize,
                pitch: dw as usize * 3,
                height: dh as usize,
                format: turbojpeg::PixelFormat::RGB,
            },
        )
        .map_err(corrupt)?;
    keep(&DECOMPRESSOR, decompressor);
    let resized = if (dw, dh) == target {
        pixels
    } else {
        resize(pixels, (dw, dh), target, 3)?
    };
    let (pixels, width, height) = orient::apply(resized, target.0, target.1, orientation);
    let bytes = match spec.format {
        Format::Jpeg => encode_jpeg(&pixels, width, height, spec.quality)?,
        Format::Webp => webp::encode_rgb(&pixels, width, height, spec.quality)
            .ok_or_else(|| ImageError::Corrupt("the WebP encoder failed".into()))?,
    };
    scratch::give(pixels);
    Ok(Made {
        bytes,
        width,
        height,
        content_type: spec.format.content_type(),
    })
}

/// An upright JPEG's own compressed data, keeping no marker but the JFIF header (EXIF, ICC,
/// comments dropped); `None` when TurboJPEG cannot copy it, and the picture is decoded
/// instead.
fn lossless(original: &[u8]) -> Option<Vec<u8>> {
    let transform = turbojpeg::Transform {
        op: turbojpeg::TransformOp::None,
        perfect: true,
        copy_none: true,
        ..Default::default()
    };
    let mut transformer = reuse(&TRANSFORMER, turbojpeg::Transformer::new).ok()?;
    let bytes = transformer.transform_to_vec(&transform, original).ok()?;
    keep(&TRANSFORMER, transformer);
    Some(bytes)
}

/// libjpeg-turbo and libwebp allocate their work memory (a photo's coefficients, rows,
/// output) with the C allocator on every variant. glibc's defaults give multi-megabyte
/// blocks back to the kernel when they are freed, so the next variant faulted every page in
/// again: most of a 1600-pixel variant's time went to page faults (p50 14-18 ms, 7 ms
/// without). Up to 32 MiB blocks come from the heap, and up to 128 MiB of free heap is kept
/// (per allocator arena, i.e. about per image thread). Rust's own memory is jemalloc's.
fn keep_c_heap() {
    #[cfg(target_env = "gnu")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: mallopt only sets glibc's malloc parameters.
        ONCE.call_once(|| unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
        });
    }
}

thread_local! {
    // TurboJPEG handles of this image thread. A new handle allocates its work buffers at its
    // first use, which cost as much as a small variant's whole work (a 1600x1200 copy took
    // 17 ms with a new handle, 6-9 ms with a used one).
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<turbojpeg::Compressor>> = const { RefCell::new(None) };
    static TRANSFORMER: RefCell<Option<turbojpeg::Transformer>> = const { RefCell::new(None) };
}

/// This thread's handle, or a new one.
fn reuse<T: 'static>(
    key: &'static LocalKey<RefCell<Option<T>>>,
    make: impl FnOnce() -> Result<T, turbojpeg::Error>,
) -> Result<T, turbojpeg::Error> {
    match key.with(|cell| cell.try_borrow_mut().ok().and_then(|mut h| h.take())) {
        Some(handle) => Ok(handle),
        None => make(),
    }
}

/// Keeps a handle for this thread's next variant: only after a success, so that a handle
/// an input left in error is never used again.
fn keep<T: 'static>(key: &'static LocalKey<RefCell<Option<T>>>, handle: T) {
    key.with(|cell| {
        if let Ok(mut slot) = cell.try_borrow_mut() {
            *slot = Some(handle);
        }
    });
}

/// `pixels` of 3 (RGB) or 4 (RGBA, resized premultiplied) channels, resized.
fn resize(
    pixels: Vec<u8>,
    from: (u32, u32),
    to: (u32, u32),
    channels: u32,
) -> Result<Vec<u8>, ImageError> {
    let failed = |e: &dyn std::fmt::Display| ImageError::Corrupt(format!("resize: {e}"));
    let kind = if channels == 4 {
        fr::PixelType::U8x4
    } else {
        fr::PixelType::U8x3
    };
    let src =
        fr::images::Image::from_vec_u8(from.0, from.1, pixels, kind).map_err(|e| failed(&e))?;
    let len = to.0 as usize * to.1 as usize * channels as usize;
    let mut dst = fr::images::Image::from_vec_u8(to.0, to.1, scratch::take(len), kind)
        .map_err(|e| failed(&e))?;
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| failed(&e))?;
    scratch::give(src.into_vec());
    Ok(dst.into_vec())
}

fn encode_jpeg(pixels: &[u8], width: u32, height: u32, quality: u8) -> Result<Vec<u8>, ImageError> {
    let failed = |e: turbojpeg::Error| ImageError::Corrupt(format!("JPEG encoder: {e}"));
    let mut c = reuse(&COMPRESSOR, turbojpeg::Compressor::new).map_err(failed)?;
    c.set_quality(i32::from(quality));
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2);
    let bytes = c
        .compress_to_vec(turbojpeg::Image {
            pixels,
            width: width as usize,
            pitch: width as usize * 3,
            height: height as usize,
            format: turbojpeg::PixelFormat::RGB,
        })
        .map_err(failed)?;
    keep(&COMPRESSOR, c);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shrinks_as_far_as_the_target_allows() {
        assert_eq!(shrink_on_load((1600, 1200), (320, 240)), 2);
        assert_eq!(shrink_on_load((1600, 1200), (200, 150)), 1);
        assert_eq!(shrink_on_load((1600, 1200), (640, 480)), 4);
        assert_eq!(shrink_on_load((1600, 1200), (1600, 1200)), 8);
        assert_eq!(shrink_on_load((1601, 1201), (200, 151)), 1);
    }
}

/// The spec the tests ask for: quality 80, the shipped limits.
#[cfg(test)]
fn test_spec(width: u32, format: Format) -> Spec {
    Spec {
        width,
        quality: 80,
        format,
        max_pixels: 50_000_000,
        max_scans: 100,
    }
}

#[cfg(test)]
mod photo_tests {
    use super::*;
    use crate::simulator::jpeg::{padded_photo, Palette};
    use rand::SeedableRng;

    fn photo(orientation: Option<u16>) -> Vec<u8> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let palette = Palette::random(&mut rng);
        padded_photo(&palette, orientation, 120_000, &mut rng)
    }

    use super::test_spec as spec;

    fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
        turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).unwrap()
    }

    fn pixel(img: &turbojpeg::Image<Vec<u8>>, x: usize, y: usize) -> [u8; 3] {
        let i = y * img.pitch + x * 3;
        [img.pixels[i], img.pixels[i + 1], img.pixels[i + 2]]
    }

    #[test]
    fn variants_keep_the_aspect_and_are_never_upscaled() {
        let original = photo(None);
        let m = make_variant(&original, &spec(320, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height), (320, 240));
        let img = decode(&m.bytes);
        assert_eq!((img.width, img.height), (320, 240));
        // No metadata survives (the original's padding is comments; EXIF below).
        assert!(!m.bytes.windows(2).any(|w| w == [0xFF, 0xFE]));
        let big = make_variant(&original, &spec(4000, Format::Jpeg)).unwrap();
        assert_eq!((big.width, big.height), (1600, 1200));
        let webp = make_variant(&original, &spec(640, Format::Webp)).unwrap();
        assert_eq!(&webp.bytes[..4], b"RIFF");
        assert_eq!(&webp.bytes[8..12], b"WEBP");
        assert_eq!((webp.width, webp.height), (640, 480));
    }

    #[test]
    fn exif_orientation_is_applied_and_dropped() {
        let m = make_variant(&photo(Some(6)), &spec(300, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height), (300, 400));
        assert!(!m.bytes.windows(4).any(|w| w == b"Exif"));
        let img = decode(&m.bytes);
        assert_eq!((img.width, img.height), (300, 400));
        // Stored with the sky on top; shown turned clockwise, the sky is on the right and
        // the (darker, greener) ground on the left.
        let (left, right) = (pixel(&img, 2, 200), pixel(&img, 297, 200));
        let brightness = |p: [u8; 3]| p.iter().map(|&c| u32::from(c)).sum::<u32>();
        assert!(brightness(right) > brightness(left), "{left:?} {right:?}");
        assert!(right[2] > left[2], "the sky is bluer: {left:?} {right:?}");
    }

    #[test]
    fn a_variant_as_wide_as_the_photo_is_turned_losslessly() {
        let original = photo(Some(6));
        let m = make_variant(&original, &spec(1600, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height), (1200, 1600));
        assert!(!m.bytes.windows(4).any(|w| w == b"Exif"));
        assert!(
            !m.bytes.windows(2).any(|w| w == [0xFF, 0xFE]),
            "comments dropped"
        );
        let img = decode(&m.bytes);
        assert_eq!((img.width, img.height), (1200, 1600));
        let brightness = |p: [u8; 3]| p.iter().map(|&c| u32::from(c)).sum::<u32>();
        assert!(brightness(pixel(&img, 1190, 800)) > brightness(pixel(&img, 10, 800)));
        // WebP is always encoded from pixels.
        let webp = make_variant(&original, &spec(1600, Format::Webp)).unwrap();
        assert_eq!((webp.width, webp.height), (1200, 1600));
    }

    /// The photo re-encoded as a progressive JPEG by libjpeg-turbo (lossless, in the DCT).
    fn progressive(original: &[u8]) -> Vec<u8> {
        let transform = turbojpeg::Transform {
            progressive: true,
            copy_none: true,
            ..Default::default()
        };
        turbojpeg::Transformer::new()
            .unwrap()
            .transform_to_vec(&transform, original)
            .unwrap()
    }

    #[test]
    fn progressive_jpegs_with_too_many_scans_are_refused_unread() {
        let p = progressive(&photo(None));
        let scans = jpeg_markers::walk(&p).scans;
        assert!((2..=20).contains(&scans), "{scans} scans");
        let m = make_variant(&p, &spec(320, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height), (320, 240));
        let at_limit = Spec {
            max_scans: scans,
            ..spec(320, Format::Webp)
        };
        assert!(make_variant(&p, &at_limit).is_ok());
        let below = Spec {
            max_scans: scans - 1,
            ..spec(320, Format::Webp)
        };
        assert_eq!(
            make_variant(&p, &below).unwrap_err(),
            ImageError::TooManyScans {
                scans,
                max: scans - 1
            }
        );

        // A bomb: the last scan (its header and data) repeated 500 times. Without COM or
        // APP segments, FF DA can only be a marker here, so a plain search finds the scan.
        let last = p.windows(2).rposition(|w| w == [0xFF, 0xDA]).unwrap();
        let eoi = p.len() - 2;
        let mut bomb = p[..eoi].to_vec();
        for _ in 0..500 {
            bomb.extend_from_slice(&p[last..eoi]);
        }
        bomb.extend_from_slice(&[0xFF, 0xD9]);
        for format in [Format::Jpeg, Format::Webp] {
            let e = make_variant(&bomb, &spec(1600, format)).unwrap_err();
            assert_eq!(
                e,
                ImageError::TooManyScans {
                    scans: scans + 500,
                    max: 100
                }
            );
            assert!(e.to_string().contains("media.max_scans"), "{e}");
        }
    }

    #[test]
    fn bombs_and_other_files_are_refused_unread() {
        let mut bomb = photo(None);
        let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        bomb[sof + 5..sof + 7].copy_from_slice(&60_000u16.to_be_bytes());
        bomb[sof + 7..sof + 9].copy_from_slice(&60_000u16.to_be_bytes());
        match make_variant(&bomb, &spec(320, Format::Jpeg)) {
            Err(ImageError::TooLarge { width, height, .. }) => {
                assert_eq!((width, height), (60_000, 60_000))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            make_variant(b"%PDF-1.4", &spec(320, Format::Jpeg)).unwrap_err(),
            ImageError::Unsupported(Some(MediaType::Pdf))
        );
        let truncated = make_variant(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 2], &spec(320, Format::Jpeg));
        assert!(
            matches!(truncated, Err(ImageError::Corrupt(_))),
            "{truncated:?}"
        );
    }
}

//! Variants of PNG originals (floorplans, EPC charts, logos): decoded with the pure-Rust
//! `png` crate after the header's size is checked, resized like photos, and encoded as
//! lossless WebP, or as PNG for clients without WebP, keeping transparency.
//!
//! Lossless WebP rather than lossy: PNGs here are mostly line drawings and text, where
//! lossy VP8 (its colour at half resolution, its blocks) blurs thin walls and small labels
//! and rings around them; lossless WebP of such a drawing is still smaller than the PNG it
//! replaces, and exact.

use std::io::Cursor;

use super::{fit, resize, webp, ImageError, Made, Spec};
use crate::policy::media_url::Format;

/// An image decoded to 8-bit RGB (3 channels) or RGBA (4).
struct Pixels {
    data: Vec<u8>,
    width: u32,
    height: u32,
    channels: u32,
}

/// The picture's size as its IHDR chunk says: the first chunk, right after the signature.
fn ihdr_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.get(12..16)? != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes(b.get(16..20)?.try_into().ok()?);
    let h = u32::from_be_bytes(b.get(20..24)?.try_into().ok()?);
    Some((w, h))
}

pub(super) fn make(original: &[u8], spec: &Spec) -> Result<Made, ImageError> {
    let (w, h) =
        ihdr_size(original).ok_or_else(|| ImageError::Corrupt("the PNG has no IHDR".into()))?;
    if w == 0 || h == 0 {
        return Err(ImageError::Corrupt("the image has no pixels".into()));
    }
    if u64::from(w).saturating_mul(u64::from(h)) > spec.max_pixels {
        return Err(ImageError::TooLarge {
            width: w.into(),
            height: h.into(),
            max: spec.max_pixels,
        });
    }
    let decoded = decode(original)?;
    // A PNG may say how it is to be turned too (an `eXIf` chunk): variants are upright.
    let (data, uw, uh) = super::orient::apply_n(
        decoded.data,
        decoded.width,
        decoded.height,
        super::orient::of(original),
        decoded.channels as usize,
    );
    let target = fit((uw, uh), spec.width);
    let from = (uw, uh);
    let pixels = if target == from {
        data
    } else {
        resize(data, from, target, decoded.channels)?
    };
    let (width, height) = target;
    let (bytes, content_type) = match spec.format {
        Format::Webp => (
            webp::encode_lossless(&pixels, width, height, decoded.channels)
                .ok_or_else(|| ImageError::Corrupt("the WebP encoder failed".into()))?,
            "image/webp",
        ),
        Format::Jpeg => (
            encode_png(&pixels, width, height, decoded.channels)?,
            "image/png",
        ),
    };
    Ok(Made {
        bytes,
        width,
        height,
        content_type,
    })
}

fn decode(original: &[u8]) -> Result<Pixels, ImageError> {
    let corrupt = |e: png::DecodingError| ImageError::Corrupt(format!("PNG: {e}"));
    let mut decoder = png::Decoder::new(Cursor::new(original));
    // Palettes and transparency chunks become RGB(A), 16-bit samples 8-bit.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Corrupt("the PNG is too large to hold".into()))?;
    let mut data = vec![0u8; size];
    // The first frame: an animated PNG's default image.
    let frame = reader.next_frame(&mut data).map_err(corrupt)?;
    data.truncate(frame.buffer_size());
    let (width, height) = (frame.width, frame.height);
    let (data, channels) = match frame.color_type {
        png::ColorType::Rgb => (data, 3),
        png::ColorType::Rgba => (data, 4),
        png::ColorType::Grayscale => (data.iter().flat_map(|&g| [g, g, g]).collect(), 3),
        png::ColorType::GrayscaleAlpha => (
            data.chunks_exact(2)
                .flat_map(|ga| {
                    let (g, a) = (ga.first().copied(), ga.get(1).copied());
                    let (g, a) = (g.unwrap_or(0), a.unwrap_or(255));
                    [g, g, g, a]
                })
                .collect(),
            4,
        ),
        png::ColorType::Indexed => {
            return Err(ImageError::Corrupt(
                "the PNG's palette was not expanded".into(),
            ))
        }
    };
    // Transparency only where a pixel uses it: an opaque picture is smaller as RGB.
    let (data, channels) = if channels == 4 && data.chunks_exact(4).all(|p| p.get(3) == Some(&255))
    {
        (
            data.chunks_exact(4)
                .flat_map(|p| p.iter().take(3).copied())
                .collect(),
            3,
        )
    } else {
        (data, channels)
    };
    let expected = width as usize * height as usize * channels as usize;
    if data.len() != expected {
        return Err(ImageError::Corrupt(format!(
            "PNG: {} bytes of pixels for {width}x{height}",
            data.len()
        )));
    }
    Ok(Pixels {
        data,
        width,
        height,
        channels,
    })
}

fn encode_png(
    pixels: &[u8],
    width: u32,
    height: u32,
    channels: u32,
) -> Result<Vec<u8>, ImageError> {
    let failed = |e: png::EncodingError| ImageError::Corrupt(format!("PNG encoder: {e}"));
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(if channels == 4 {
        png::ColorType::Rgba
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Balanced);
    let mut writer = encoder.write_header().map_err(failed)?;
    writer.write_image_data(pixels).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A floorplan-like PNG: white, with dark walls every 40 pixels, and (with `alpha`) a
    /// transparent left half.
    pub(crate) fn drawing(width: u32, height: u32, alpha: bool) -> Vec<u8> {
        let channels = if alpha { 4 } else { 3 };
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let wall = x % 40 < 2 || y % 40 < 2;
                let v = if wall { 20 } else { 250 };
                pixels.extend([v, v, v]);
                if alpha {
                    pixels.push(if x < width / 2 { 0 } else { 255 });
                }
            }
        }
        encode_png(&pixels, width, height, channels).unwrap()
    }

    use super::super::test_spec as spec;

    fn decode_png(b: &[u8]) -> Pixels {
        decode(b).unwrap()
    }

    /// A lossless WebP's size and whether it has alpha, from its VP8L header.
    fn webp_lossless_size(b: &[u8]) -> (u32, u32, bool) {
        assert_eq!(&b[..4], b"RIFF");
        assert_eq!(&b[8..16], b"WEBPVP8L", "lossless");
        assert_eq!(b[20], 0x2f);
        let bits = u32::from_le_bytes([b[21], b[22], b[23], b[24]]);
        (
            (bits & 0x3fff) + 1,
            ((bits >> 14) & 0x3fff) + 1,
            bits >> 28 & 1 == 1,
        )
    }

    #[test]
    fn png_variants_keep_the_aspect_and_alpha_and_are_never_upscaled() {
        let original = drawing(1000, 700, true);
        let m = make(&original, &spec(320, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height, m.content_type), (320, 224, "image/png"));
        let back = decode_png(&m.bytes);
        assert_eq!((back.width, back.height, back.channels), (320, 224, 4));
        // Transparent on the left, opaque on the right.
        assert_eq!(back.data[3], 0);
        assert_eq!(back.data[(320 - 1) * 4 + 3], 255);

        let w = make(&original, &spec(640, Format::Webp)).unwrap();
        assert_eq!(w.content_type, "image/webp");
        assert_eq!(webp_lossless_size(&w.bytes), (640, 448, true));

        let big = make(&original, &spec(1600, Format::Jpeg)).unwrap();
        assert_eq!((big.width, big.height), (1000, 700), "never upscaled");
        let opaque = make(&drawing(500, 300, false), &spec(1600, Format::Webp)).unwrap();
        assert_eq!(webp_lossless_size(&opaque.bytes), (500, 300, false));
        let rgb = make(&drawing(500, 300, false), &spec(100, Format::Jpeg)).unwrap();
        assert_eq!(decode_png(&rgb.bytes).channels, 3);
        assert_eq!((rgb.width, rgb.height), (100, 60));
    }

    /// An RGBA PNG of `w` x `h` pixels with an `eXIf` chunk giving `orientation`.
    fn oriented_png(w: u32, h: u32, pixels: &[u8], orientation: u16) -> Vec<u8> {
        // A big-endian TIFF header and one IFD entry: Orientation (0x0112), SHORT, 1 value.
        let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        exif.extend(orientation.to_be_bytes());
        exif.extend([0, 0, 0, 0, 0, 0]);
        let mut info = png::Info::with_size(w, h);
        info.color_type = png::ColorType::Rgba;
        info.bit_depth = png::BitDepth::Eight;
        info.exif_metadata = Some(exif.into());
        let mut out = Vec::new();
        let mut writer = png::Encoder::with_info(&mut out, info)
            .unwrap()
            .write_header()
            .unwrap();
        writer.write_image_data(pixels).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn png_variants_are_turned_as_their_exif_chunk_says() {
        // Two pixels side by side, red then half-transparent blue.
        let pixels = [255, 0, 0, 255, 0, 0, 255, 128];
        let upright = oriented_png(2, 1, &pixels, 1);
        assert_eq!(super::super::orient::of(&upright), 1);
        let turned = oriented_png(2, 1, &pixels, 6);
        assert_eq!(
            super::super::orient::of(&turned),
            6,
            "the eXIf chunk is read"
        );
        let m = make(&turned, &spec(1600, Format::Jpeg)).unwrap();
        assert_eq!((m.width, m.height), (1, 2), "turned a quarter");
        let back = decode_png(&m.bytes);
        // 6: turned clockwise, so the left pixel ends up on top.
        assert_eq!(
            (back.channels, &back.data[..]),
            (4, &[255, 0, 0, 255, 0, 0, 255, 128][..])
        );
        let m = make(&oriented_png(2, 1, &pixels, 3), &spec(1600, Format::Jpeg)).unwrap();
        assert_eq!(
            &decode_png(&m.bytes).data[..],
            &[0, 0, 255, 128, 255, 0, 0, 255][..]
        );
        let m = make(&upright, &spec(1600, Format::Jpeg)).unwrap();
        assert_eq!(&decode_png(&m.bytes).data[..], &pixels[..]);
    }

    /// A PNG of `color` and `depth` from raw samples, with a palette and its transparency.
    fn raw_png(
        (width, height): (u32, u32),
        color: png::ColorType,
        depth: png::BitDepth,
        samples: &[u8],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        if color == png::ColorType::Indexed {
            encoder.set_palette(vec![255, 0, 0, 0, 0, 255]);
            encoder.set_trns(vec![0, 255]);
        }
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(samples).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn palettes_grey_and_16_bit_samples_become_rgb_or_rgba() {
        // A transparent red pixel and an opaque blue one.
        let indexed = raw_png(
            (2, 1),
            png::ColorType::Indexed,
            png::BitDepth::Eight,
            &[0, 1],
        );
        let p = decode_png(&indexed);
        assert_eq!(
            (p.channels, &p.data[..]),
            (4, &[255, 0, 0, 0, 0, 0, 255, 255][..])
        );
        let grey16 = raw_png(
            (2, 1),
            png::ColorType::Grayscale,
            png::BitDepth::Sixteen,
            &[0x80, 0x00, 0xFF, 0xFF],
        );
        let p = decode_png(&grey16);
        assert_eq!(
            (p.channels, &p.data[..]),
            (3, &[128, 128, 128, 255, 255, 255][..])
        );
        let grey_alpha = raw_png(
            (1, 1),
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &[9, 100],
        );
        let p = decode_png(&grey_alpha);
        assert_eq!((p.channels, &p.data[..]), (4, &[9, 9, 9, 100][..]));
        let m = make(&indexed, &spec(320, Format::Webp)).unwrap();
        assert_eq!(webp_lossless_size(&m.bytes), (2, 1, true));
    }

    #[test]
    fn png_bombs_are_refused_before_decoding() {
        let mut bomb = drawing(10, 10, false);
        bomb[16..20].copy_from_slice(&100_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&100_000u32.to_be_bytes());
        assert!(matches!(
            make(&bomb, &spec(320, Format::Jpeg)),
            Err(ImageError::TooLarge {
                width: 100_000,
                height: 100_000,
                ..
            })
        ));
        let mut garbled = drawing(50, 50, false);
        let end = garbled.len() - 30;
        garbled[40..end].fill(7);
        assert!(matches!(
            make(&garbled, &spec(20, Format::Jpeg)),
            Err(ImageError::Corrupt(_))
        ));
    }
}

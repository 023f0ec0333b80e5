//! Whether a media file is whole. Files are stored as `immutable` for a year, so one that
//! Rentman (or a proxy on the way) cut short must never be: its magic bytes are intact,
//! only its end is missing. Each check walks the file's own structure where that is cheap
//! (JPEG markers, PNG chunks, GIF blocks, ISO boxes), so a cut anywhere is found, not only
//! one that happens to miss a closing byte; bytes after a whole file (padding, a phone's
//! motion-photo trailer) are left alone.

use super::jpeg_markers::{self, End};
use super::media::MediaType;

/// How far from the end a PDF's last `%%EOF` may be (PDF 32000-1 7.5.5 puts it on the last
/// line; writers add a little whitespace or padding after it).
const PDF_EOF_WITHIN: usize = 1024;

/// Whether `b`, a file of type `kind`, ends where its own structure says it does.
pub fn is_complete(kind: MediaType, b: &[u8]) -> bool {
    match kind {
        MediaType::Jpeg => jpeg_markers::walk(b).end != End::Truncated,
        MediaType::Png => png(b),
        MediaType::Gif => gif(b).is_some(),
        MediaType::Webp => webp(b),
        MediaType::Tiff => tiff(b).is_some(),
        MediaType::Bmp => bmp(b),
        MediaType::Heif => iso_boxes(b),
        MediaType::Pdf => {
            let tail = b
                .get(b.len().saturating_sub(PDF_EOF_WITHIN)..)
                .unwrap_or_default();
            tail.windows(5).any(|w| w == b"%%EOF")
        }
    }
}

fn bytes<const N: usize>(b: &[u8], at: usize) -> Option<[u8; N]> {
    b.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_be_bytes)
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    bytes(b, at).map(u32::from_le_bytes)
}

/// Chunks (length, type, data, CRC) from the signature to IEND.
fn png(b: &[u8]) -> bool {
    let mut i = 8usize;
    loop {
        let (Some(len), Some(kind)) = (be32(b, i), b.get(i + 4..i + 8)) else {
            return false;
        };
        let Some(end) = (len as usize).checked_add(i + 12) else {
            return false;
        };
        if end > b.len() {
            return false;
        }
        if kind == b"IEND" {
            return true;
        }
        i = end;
    }
}

/// Blocks from the screen descriptor to the trailer (`3B`); `None` when the bytes end
/// first. An unknown block ends the walk as it ends a browser's decoding.
fn gif(b: &[u8]) -> Option<()> {
    let table = |flags: u8| {
        if flags & 0x80 != 0 {
            3usize << ((flags & 7) + 1)
        } else {
            0
        }
    };
    let mut i = 13 + table(*b.get(10)?);
    let sub_blocks = |mut i: usize| -> Option<usize> {
        loop {
            let n = usize::from(*b.get(i)?);
            i += 1 + n;
            if n == 0 {
                return Some(i);
            }
        }
    };
    loop {
        match *b.get(i)? {
            0x3B => return Some(()),
            0x21 => i = sub_blocks(i + 2)?,
            0x2C => {
                let flags = *b.get(i + 9)?;
                // The descriptor, its colour table, the LZW code size, then the data.
                i = sub_blocks(i + 10 + table(flags) + 1)?;
            }
            _ => return Some(()),
        }
    }
}

/// The RIFF header's size counts every byte after its first 8.
fn webp(b: &[u8]) -> bool {
    le32(b, 4).is_some_and(|size| b.len() as u64 >= u64::from(size) + 8)
}

/// The first directory, every value it holds out of line and every strip or tile it points
/// to lie inside the file.
fn tiff(b: &[u8]) -> Option<()> {
    let little = b.first() == Some(&b'I');
    let u16_at = |at: usize| -> Option<u32> {
        let v = bytes::<2>(b, at)?;
        Some(u32::from(if little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        }))
    };
    let u32_at = |at: usize| if little { le32(b, at) } else { be32(b, at) };
    let ifd = u32_at(4)? as usize;
    let n = u16_at(ifd)? as usize;
    // The entries and the next directory's offset.
    b.get(ifd..ifd + 2 + 12 * n + 4)?;
    // Values of SHORT (3) or LONG (4) type: inline when they fit in 4 bytes.
    let values = |entry: usize| -> Option<Vec<u64>> {
        let (kind, count) = (u16_at(entry + 2)?, u32_at(entry + 4)? as usize);
        let size = match kind {
            3 => 2,
            4 => 4,
            _ => return Some(Vec::new()),
        };
        let at = if count.checked_mul(size)? <= 4 {
            entry + 8
        } else {
            u32_at(entry + 8)? as usize
        };
        b.get(at..at.checked_add(count.checked_mul(size)?)?)?;
        (0..count)
            .map(|k| {
                let v = if size == 2 {
                    u16_at(at + 2 * k)
                } else {
                    u32_at(at + 4 * k)
                };
                v.map(u64::from)
            })
            .collect()
    };
    let (mut offsets, mut counts) = (Vec::new(), Vec::new());
    for e in 0..n {
        let entry = ifd + 2 + 12 * e;
        // Bytes per value of each field type (TIFF 6.0 section 2; 13 is IFD, from TIFF/EP).
        let size = match u16_at(entry + 2)? {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 => 8,
            _ => 0,
        };
        let total = (u32_at(entry + 4)? as usize).checked_mul(size)?;
        if total > 4 {
            let at = u32_at(entry + 8)? as usize;
            b.get(at..at.checked_add(total)?)?;
        }
        match u16_at(entry)? {
            273 | 324 => offsets = values(entry)?,
            279 | 325 => counts = values(entry)?,
            _ => {}
        }
    }
    let len = b.len() as u64;
    offsets
        .iter()
        .zip(&counts)
        .all(|(o, c)| o + c <= len)
        .then_some(())
}

/// The file header's size (`bfSize`), or where the pixels start when a writer left it 0.
fn bmp(b: &[u8]) -> bool {
    match le32(b, 2) {
        Some(0) => le32(b, 10).is_some_and(|off| off as usize <= b.len()),
        Some(size) => size as usize <= b.len(),
        None => false,
    }
}

/// Top-level boxes (AVIF, HEIF) fill the file exactly, a cut leaving the last one short;
/// and a still image needs both its description (`meta`) and its data (`mdat`), for a cut
/// that falls between two boxes.
fn iso_boxes(b: &[u8]) -> bool {
    let (mut meta, mut mdat) = (false, false);
    let mut i = 0usize;
    while i < b.len() {
        match b.get(i + 4..i + 8) {
            Some(b"meta") => meta = true,
            Some(b"mdat") => mdat = true,
            _ => {}
        }
        let size = match be32(b, i) {
            // To the end of the file.
            Some(0) => return meta && mdat,
            Some(1) => match bytes(b, i + 8) {
                Some(large) => u64::from_be_bytes(large),
                None => return false,
            },
            Some(s) => u64::from(s),
            None => return false,
        };
        if size < 8 {
            return false;
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| s.checked_add(i)) else {
            return false;
        };
        i = end;
    }
    i == b.len() && meta && mdat
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::media::sniff;

    /// Every cut of `whole` short of `keep_from` bytes is found.
    fn cuts_found(whole: &[u8], keep_from: usize) {
        let kind = sniff(whole).unwrap();
        assert!(is_complete(kind, whole), "{kind:?} whole");
        for cut in 12..keep_from {
            assert!(!is_complete(kind, &whole[..cut]), "{kind:?} cut at {cut}");
        }
    }

    fn png_file() -> Vec<u8> {
        let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
        let chunks: [(&[u8], &[u8]); 3] =
            [(b"IHDR", &[0; 13]), (b"IDAT", &[1, 2, 3]), (b"IEND", &[])];
        for (kind, data) in chunks {
            v.extend((data.len() as u32).to_be_bytes());
            v.extend(kind);
            v.extend(data);
            v.extend([0xAE, 0x42, 0x60, 0x82]);
        }
        v
    }

    #[test]
    fn png_ends_with_iend() {
        let png = png_file();
        cuts_found(&png, png.len());
        let mut padded = png.clone();
        padded.extend([0, 0, b'\n']);
        assert!(is_complete(MediaType::Png, &padded));
    }

    #[test]
    fn gif_ends_with_its_trailer() {
        let mut gif = b"GIF89a".to_vec();
        gif.extend([2, 0, 2, 0, 0x80, 0, 0]); // global table of 2 colours
        gif.extend([0, 0, 0, 0xFF, 0xFF, 0xFF]);
        gif.extend([0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control extension
        gif.extend([0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0]); // image descriptor
        gif.extend([2, 3, 0x3B, 0x3B, 0x3B, 0]); // LZW data holding 3B bytes
        gif.push(0x3B);
        cuts_found(&gif, gif.len());
    }

    #[test]
    fn webp_bmp_heif_tiff_and_pdf() {
        let mut webp = b"RIFF\x0c\0\0\0WEBPVP8 ".to_vec();
        webp.extend([0; 4]);
        // `RIFF` + size + 12 bytes: 20.
        webp.truncate(20);
        cuts_found(&webp, webp.len());

        let mut bmp = b"BM".to_vec();
        bmp.extend(30u32.to_le_bytes());
        bmp.resize(30, 0);
        cuts_found(&bmp, bmp.len());

        let mut heif = Vec::new();
        heif.extend(20u32.to_be_bytes());
        heif.extend(b"ftypavif\0\0\0\0avif");
        heif.extend(12u32.to_be_bytes());
        heif.extend(b"meta\0\0\0\0");
        heif.extend(16u32.to_be_bytes());
        heif.extend(b"mdat12345678");
        cuts_found(&heif, heif.len());

        // Little-endian, one directory of two entries: a strip at 38, 6 bytes long.
        let mut tiff = b"II*\0".to_vec();
        tiff.extend(8u32.to_le_bytes());
        tiff.extend(2u16.to_le_bytes());
        for (tag, value) in [(273u16, 38u32), (279, 6)] {
            tiff.extend(tag.to_le_bytes());
            tiff.extend(4u16.to_le_bytes());
            tiff.extend(1u32.to_le_bytes());
            tiff.extend(value.to_le_bytes());
        }
        tiff.extend(0u32.to_le_bytes());
        tiff.extend([9; 6]);
        assert_eq!(tiff.len(), 44);
        cuts_found(&tiff, tiff.len());
        // A third entry, XResolution: a RATIONAL (8 bytes) stored after the strip, at the end.
        tiff[8] = 3;
        let mut with_value = tiff[..8 + 2 + 24].to_vec();
        with_value.extend(282u16.to_le_bytes());
        with_value.extend(5u16.to_le_bytes());
        with_value.extend(1u32.to_le_bytes());
        with_value.extend(56u32.to_le_bytes());
        with_value.extend(0u32.to_le_bytes());
        with_value.extend([9; 6]);
        with_value.extend([72, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(with_value.len(), 64);
        // The strip moved on by the third entry, to 50.
        with_value[18..22].copy_from_slice(&50u32.to_le_bytes());
        cuts_found(&with_value, with_value.len());

        let mut pdf = b"%PDF-1.4\n".to_vec();
        pdf.extend([b'x'; 3000]);
        pdf.extend(b"\nstartxref\n9\n%%EOF\n");
        assert!(is_complete(MediaType::Pdf, &pdf));
        assert!(!is_complete(MediaType::Pdf, &pdf[..pdf.len() - 3]));
        assert!(!is_complete(MediaType::Pdf, &pdf[..2000]));
        // An earlier revision's %%EOF far from the cut does not pass for the end.
        let mut updated = pdf.clone();
        updated.extend([b'y'; 2000]);
        assert!(!is_complete(MediaType::Pdf, &updated));
    }

    #[test]
    fn simulator_files_are_whole_and_their_halves_are_not() {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let palette = crate::simulator::jpeg::Palette::random(&mut rng);
        let jpeg = crate::simulator::jpeg::padded_photo(&palette, Some(6), 80_000, &mut rng);
        assert!(is_complete(MediaType::Jpeg, &jpeg));
        assert!(!is_complete(MediaType::Jpeg, &jpeg[..jpeg.len() / 2]));
        assert!(!is_complete(MediaType::Jpeg, &jpeg[..jpeg.len() - 1]));
        let mut padded = jpeg.clone();
        padded.extend(b"\0\0\r\n");
        assert!(is_complete(MediaType::Jpeg, &padded));
        let pdf = crate::simulator::pdf::padded_pdf("Brochure", 40_000, &mut rng);
        assert!(is_complete(MediaType::Pdf, &pdf));
        assert!(!is_complete(MediaType::Pdf, &pdf[..pdf.len() / 2]));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use crate::policy::jpeg_markers;
    use proptest::prelude::*;

    const KINDS: [MediaType; 8] = [
        MediaType::Jpeg,
        MediaType::Png,
        MediaType::Gif,
        MediaType::Webp,
        MediaType::Tiff,
        MediaType::Bmp,
        MediaType::Heif,
        MediaType::Pdf,
    ];

    /// Bytes that start like a file of each kind, then anything (FF-heavy, so JPEG markers
    /// and their lengths come up often).
    fn file_like() -> impl Strategy<Value = Vec<u8>> {
        let heads: [&'static [u8]; 8] = [
            &[0xFF, 0xD8, 0xFF],
            b"\x89PNG\r\n\x1a\n",
            b"GIF89a",
            b"RIFF\0\0\0\0WEBP",
            b"II*\0",
            b"BM",
            b"\0\0\0\x10ftyp",
            b"%PDF-",
        ];
        let byte = prop_oneof![Just(0xFFu8), Just(0u8), Just(0xDAu8), any::<u8>()];
        (0..heads.len(), prop::collection::vec(byte, 0..300)).prop_map(move |(i, tail)| {
            let mut v = heads.get(i).copied().unwrap_or_default().to_vec();
            v.extend(tail);
            v
        })
    }

    proptest! {
        /// Any bytes get a verdict, never a panic; and a JPEG whose walk reaches EOI is
        /// found cut short at every shorter length.
        #[test]
        fn verdicts_never_panic_and_jpeg_cuts_are_found(b in file_like()) {
            for kind in KINDS {
                let _ = is_complete(kind, &b);
            }
            let walk = jpeg_markers::walk(&b);
            if walk.end == jpeg_markers::End::Eoi {
                // Where the EOI ends: the shortest prefix that still reaches it.
                let whole = (2..=b.len())
                    .find(|&n| jpeg_markers::walk(&b[..n]).end == jpeg_markers::End::Eoi)
                    .unwrap_or(b.len());
                for cut in 2..whole {
                    prop_assert_eq!(jpeg_markers::walk(&b[..cut]).end, jpeg_markers::End::Truncated);
                }
            }
        }
    }
}

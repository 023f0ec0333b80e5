//! Real JPEG files of any size, made cheaply.
//!
//! A proxy in front of Rentman decodes the base64 and serves `image/jpeg` to browsers, so the
//! bytes must be a JPEG that image tools accept, yet photos must weigh 50-370 KB like the real
//! ones. A tiny baseline JPEG is encoded here (flat 8x8 blocks, so only DC coefficients and an
//! end-of-block per block are needed) and padded to the wanted size with comment (COM)
//! segments, which every decoder skips by their length.

use rand::RngCore;

/// Largest payload of one marker segment: its 16-bit length counts itself (2 bytes).
pub const MAX_SEGMENT_PAYLOAD: usize = 65_533;

/// Picture size in pixels of the small files (EPCs, floorplans); a multiple of 8 so every
/// block is whole.
const WIDTH: usize = 160;
const HEIGHT: usize = 120;
/// Photos are camera-sized, so that variants are real reductions (~34 KB before padding).
pub const PHOTO_WIDTH: usize = 1600;
pub const PHOTO_HEIGHT: usize = 1200;

/// Every quantiser is 8: a flat block's DC coefficient is 8*(v-128), so the quantised DC is
/// just the level-shifted sample and fits Huffman category 8.
const QUANT: u8 = 8;

/// JPEG's example luminance DC table (ITU T.81 Annex K.3): code-length counts, then symbols.
const DC_BITS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_VALS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
/// The AC table needs a single symbol: end-of-block (0x00), coded as the one bit `0`.
const AC_BITS: [u8; 16] = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const AC_VALS: [u8; 1] = [0];

/// Colours of the little picture: sky, ground, walls, roof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    pub sky: [u8; 3],
    pub ground: [u8; 3],
    pub walls: [u8; 3],
    pub roof: [u8; 3],
}

impl Palette {
    /// A palette drawn from `rng`, so photos of one property differ from each other.
    pub fn random(rng: &mut impl RngCore) -> Palette {
        let mut c = || {
            let mut b = [0u8; 3];
            rng.fill_bytes(&mut b);
            b
        };
        let sky = c();
        let ground = c();
        let walls = c();
        let roof = c();
        Palette {
            // Pull the sky towards blue and the ground towards green so it reads as a photo.
            sky: [sky[0] / 3 + 90, sky[1] / 3 + 140, sky[2] / 4 + 190],
            ground: [ground[0] / 4 + 40, ground[1] / 3 + 110, ground[2] / 4 + 30],
            walls: [walls[0] / 2 + 120, walls[1] / 2 + 80, walls[2] / 2 + 60],
            roof: [roof[0] / 4 + 60, roof[1] / 5 + 40, roof[2] / 5 + 40],
        }
    }
}

/// A JPEG of exactly `size` bytes (or of its natural size, a few hundred bytes, if `size` is
/// smaller), padded with comment segments of bytes from `rng`.
pub fn padded_jpeg(palette: &Palette, size: usize, rng: &mut impl RngCore) -> Vec<u8> {
    padded_picture(palette, (WIDTH, HEIGHT), None, size, rng)
}

/// A photo of `PHOTO_WIDTH` x `PHOTO_HEIGHT` pixels, padded like [`padded_jpeg`], with an
/// EXIF orientation when given (6: the camera was turned a quarter clockwise, so the
/// picture shows upright as a portrait, its sky on the right as stored).
pub fn padded_photo(
    palette: &Palette,
    orientation: Option<u16>,
    size: usize,
    rng: &mut impl RngCore,
) -> Vec<u8> {
    padded_picture(palette, (PHOTO_WIDTH, PHOTO_HEIGHT), orientation, size, rng)
}

fn padded_picture(
    palette: &Palette,
    dims: (usize, usize),
    orientation: Option<u16>,
    size: usize,
    rng: &mut impl RngCore,
) -> Vec<u8> {
    let (mut head, tail) = encode(palette, dims);
    if let Some(o) = orientation {
        push_exif_orientation(&mut head, o);
    }
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut out = Vec::with_capacity(head.len() + pad + tail.len());
    out.extend_from_slice(&head);
    push_comment_padding(&mut out, pad, rng);
    out.extend_from_slice(&tail);
    out
}

/// Appends comment segments totalling exactly `pad` bytes (markers and lengths included).
/// A segment costs at least 4 bytes, so a remainder under 4 is spread over the segments.
fn push_comment_padding(out: &mut Vec<u8>, pad: usize, rng: &mut impl RngCore) {
    if pad < 4 {
        return;
    }
    let per_segment = MAX_SEGMENT_PAYLOAD + 4;
    let n = pad.div_ceil(per_segment);
    let (base, extra) = (pad / n, pad % n);
    for i in 0..n {
        let seg = base + usize::from(i < extra);
        let payload = seg - 4;
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&((payload + 2) as u16).to_be_bytes());
        let start = out.len();
        out.resize(start + payload, 0);
        rng.fill_bytes(&mut out[start..]);
        // Bytes are arbitrary inside a segment, but keeping 0xFF out means even naive marker
        // scanners (which do not follow lengths) see FFD9 only at the very end.
        for b in &mut out[start..] {
            if *b == 0xFF {
                *b = 0xFE;
            }
        }
    }
}

/// An APP1 segment with a minimal EXIF block (big-endian TIFF, one IFD entry: the
/// orientation tag 0x0112, a SHORT).
fn push_exif_orientation(out: &mut Vec<u8>, orientation: u16) {
    let mut tiff: Vec<u8> = b"MM\0*".to_vec();
    tiff.extend_from_slice(&8u32.to_be_bytes());
    tiff.extend_from_slice(&1u16.to_be_bytes());
    tiff.extend_from_slice(&0x0112u16.to_be_bytes());
    tiff.extend_from_slice(&3u16.to_be_bytes());
    tiff.extend_from_slice(&1u32.to_be_bytes());
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(&tiff);
}

/// Encodes the picture; returns the bytes before the padding point (SOI, APP0) and after it
/// (tables, frame, scan, EOI).
fn encode(p: &Palette, (width, height): (usize, usize)) -> (Vec<u8>, Vec<u8>) {
    let mut head = vec![0xFF, 0xD8];
    // JFIF APP0, version 1.01, no density unit, 1:1 aspect, no thumbnail.
    head.extend_from_slice(&[
        0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0,
    ]);

    let mut tail = Vec::with_capacity(1024);
    tail.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]);
    tail.extend_from_slice(&[QUANT; 64]);
    let (h, w) = (height as u16, width as u16);
    tail.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08]);
    tail.extend_from_slice(&h.to_be_bytes());
    tail.extend_from_slice(&w.to_be_bytes());
    tail.extend_from_slice(&[0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x00, 0x03, 0x11, 0x00]);
    push_dht(&mut tail, 0x00, &DC_BITS, &DC_VALS);
    push_dht(&mut tail, 0x10, &AC_BITS, &AC_VALS);
    tail.extend_from_slice(&[
        0xFF, 0xDA, 0x00, 0x0C, 0x03, 0x01, 0x00, 0x02, 0x00, 0x03, 0x00, 0x00, 0x3F, 0x00,
    ]);

    let dc = huffman_codes(&DC_BITS, &DC_VALS);
    let ac = huffman_codes(&AC_BITS, &AC_VALS);
    let mut bits = BitWriter::new(&mut tail);
    let mut pred = [0i32; 3];
    for by in 0..height / 8 {
        for bx in 0..width / 8 {
            let ycc = to_ycbcr(block_colour(p, (width / 8, height / 8), bx, by));
            for c in 0..3 {
                let v = ycc[c] - 128;
                let diff = v - pred[c];
                pred[c] = v;
                let cat = category(diff);
                let (code, len) = dc[cat as usize];
                bits.put(code as u32, len);
                if cat > 0 {
                    let raw = if diff < 0 { diff - 1 } else { diff };
                    bits.put((raw as u32) & ((1 << cat) - 1), cat);
                }
                let (code, len) = ac[0];
                bits.put(code as u32, len);
            }
        }
    }
    bits.flush();
    tail.extend_from_slice(&[0xFF, 0xD9]);
    (head, tail)
}

/// A house in a landscape, drawn in 8x8 blocks (`bw` x `bh` of them).
fn block_colour(p: &Palette, (bw, bh): (usize, usize), bx: usize, by: usize) -> [u8; 3] {
    let horizon = bh * 2 / 3;
    let (x0, x1) = (bw * 7 / 20, bw * 13 / 20);
    if by + 1 == horizon / 2 + 1 && (x0 + 1..x1 - 1).contains(&bx) {
        return p.roof;
    }
    if (horizon / 2 + 1..horizon + 1).contains(&by) && (x0..x1).contains(&bx) {
        return p.walls;
    }
    if by < horizon {
        // The sky lightens towards the horizon.
        let t = by as u32 * 255 / horizon as u32 / 2;
        return p.sky.map(|c| (c as u32 + (255 - c as u32) * t / 255) as u8);
    }
    p.ground
}

/// JFIF's RGB to YCbCr conversion, rounded to integers.
fn to_ycbcr([r, g, b]: [u8; 3]) -> [i32; 3] {
    let (r, g, b) = (r as f32, g as f32, b as f32);
    let y = 0.299 * r + 0.587 * g + 0.114 * b;
    let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
    let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
    [y, cb, cr].map(|v| v.round().clamp(0.0, 255.0) as i32)
}

fn category(v: i32) -> u8 {
    (32 - v.unsigned_abs().leading_zeros()) as u8
}

fn push_dht(out: &mut Vec<u8>, class_id: u8, bits: &[u8; 16], vals: &[u8]) {
    let len = (2 + 1 + 16 + vals.len()) as u16;
    out.extend_from_slice(&[0xFF, 0xC4]);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(class_id);
    out.extend_from_slice(bits);
    out.extend_from_slice(vals);
}

/// Canonical Huffman codes (T.81 Annex C) indexed by symbol: (code, length).
fn huffman_codes(bits: &[u8; 16], vals: &[u8]) -> [(u16, u8); 256] {
    let mut table = [(0u16, 0u8); 256];
    let mut code = 0u16;
    let mut k = 0;
    for (i, &count) in bits.iter().enumerate() {
        for _ in 0..count {
            table[vals[k] as usize] = (code, i as u8 + 1);
            code += 1;
            k += 1;
        }
        code <<= 1;
    }
    table
}

/// Writes entropy-coded bits MSB first, stuffing a 0x00 after every 0xFF byte as JPEG requires.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u32,
    n: u8,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        BitWriter { out, acc: 0, n: 0 }
    }

    fn put(&mut self, bits: u32, len: u8) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((bits >> i) & 1);
            self.n += 1;
            if self.n == 8 {
                self.emit();
            }
        }
    }

    fn emit(&mut self) {
        let byte = self.acc as u8;
        self.out.push(byte);
        if byte == 0xFF {
            self.out.push(0x00);
        }
        self.acc = 0;
        self.n = 0;
    }

    /// Pads the last byte with 1-bits (T.81 F.1.2.3).
    fn flush(&mut self) {
        while self.n != 0 {
            self.put(1, 1);
        }
    }
}

/// Walks the marker segments of a JPEG up to the scan and checks that the file ends with EOI.
/// Returns the markers seen (used by tests to prove the padding kept the file well-formed).
#[cfg(test)]
pub fn check_structure(data: &[u8]) -> Result<Vec<u8>, String> {
    if data.len() < 4 || data[..2] != [0xFF, 0xD8] {
        return Err("no SOI".into());
    }
    if data[data.len() - 2..] != [0xFF, 0xD9] {
        return Err("no EOI at the end".into());
    }
    let mut markers = Vec::new();
    let mut i = 2;
    loop {
        if i + 4 > data.len() || data[i] != 0xFF {
            return Err(format!("expected a marker at {i}"));
        }
        let marker = data[i + 1];
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        if len < 2 || i + 2 + len > data.len() {
            return Err(format!("bad length {len} of marker {marker:02X} at {i}"));
        }
        markers.push(marker);
        i += 2 + len;
        if marker == 0xDA {
            break;
        }
    }
    // Entropy-coded data: 0xFF may only be followed by a stuffed 0x00 until EOI.
    while i < data.len() - 2 {
        if data[i] == 0xFF {
            if data[i + 1] != 0x00 {
                return Err(format!(
                    "unexpected marker {:02X} in the scan at {i}",
                    data[i + 1]
                ));
            }
            i += 1;
        }
        i += 1;
    }
    markers.push(0xD9);
    Ok(markers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    #[test]
    fn pads_to_the_exact_size_and_stays_well_formed() {
        let p = Palette::random(&mut rng(1));
        for size in [
            0,
            600,
            70_000,
            65_537 + 700,
            2 * 65_537 + 1,
            123_457,
            370_000,
        ] {
            let j = padded_jpeg(&p, size, &mut rng(size as u64));
            if size > 700 {
                assert_eq!(j.len(), size);
            }
            let photo = padded_photo(&p, Some(6), size, &mut rng(size as u64));
            if size > 40_000 {
                assert_eq!(photo.len(), size);
            }
            let markers = check_structure(&photo).unwrap_or_else(|e| panic!("photo {size}: {e}"));
            assert_eq!(&markers[..2], &[0xE0, 0xE1]);
            let markers = check_structure(&j).unwrap_or_else(|e| panic!("size {size}: {e}"));
            assert_eq!(markers.first(), Some(&0xE0));
            assert!(markers.contains(&0xC0) && markers.contains(&0xC4) && markers.contains(&0xDB));
            assert_eq!(&j[..2], &[0xFF, 0xD8]);
            assert_eq!(&j[j.len() - 2..], &[0xFF, 0xD9]);
            // FFD9 appears once, at the end.
            assert_eq!(j.windows(2).filter(|w| w == &[0xFF, 0xD9]).count(), 1);
        }
    }

    #[test]
    fn comment_segments_never_exceed_the_limit() {
        let p = Palette::random(&mut rng(2));
        let j = padded_jpeg(&p, 300_001, &mut rng(3));
        let mut i = 2;
        let mut comments = 0;
        while j[i + 1] != 0xDA {
            let len = u16::from_be_bytes([j[i + 2], j[i + 3]]) as usize;
            if j[i + 1] == 0xFE {
                assert!(len - 2 <= MAX_SEGMENT_PAYLOAD);
                comments += 1;
            }
            i += 2 + len;
        }
        assert_eq!(comments, 5);
    }

    #[test]
    fn same_inputs_same_bytes() {
        let p = Palette::random(&mut rng(9));
        assert_eq!(
            padded_jpeg(&p, 90_000, &mut rng(4)),
            padded_jpeg(&p, 90_000, &mut rng(4))
        );
        assert_ne!(
            padded_jpeg(&p, 90_000, &mut rng(4)),
            padded_jpeg(&p, 90_000, &mut rng(5))
        );
    }

    #[test]
    fn dc_categories() {
        assert_eq!(category(0), 0);
        assert_eq!(category(1), 1);
        assert_eq!(category(-1), 1);
        assert_eq!(category(-128), 8);
        assert_eq!(category(255), 8);
    }
}

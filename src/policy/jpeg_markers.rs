//! A JPEG's marker segments, walked the way libjpeg's own marker reader finds them: segment
//! payloads are skipped by their length (an EXIF thumbnail or an ICC profile may hold any
//! bytes, `FF DA` included), and inside entropy-coded data a marker is an `FF` followed by
//! neither a stuffed `00` nor a restart marker (ITU T.81 B.1.1.5; any number of `FF` fill
//! bytes may come before a marker, B.1.1.2). So every scan libjpeg would decode is counted
//! here, and a file whose walk does not reach EOI was cut short.

/// Where the walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// At the EOI marker (whatever follows it is not part of the picture).
    Eoi,
    /// The bytes ran out first: the file was cut short.
    Truncated,
    /// No SOI, or a segment length that cannot be (libjpeg gives up there too).
    Malformed,
}

/// What the walk saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    /// Start-of-scan markers: one per scan a decoder makes a pass over.
    pub scans: u32,
    pub end: End,
}

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const TEM: u8 = 0x01;

fn is_rst(m: u8) -> bool {
    (0xD0..=0xD7).contains(&m)
}

/// Walks `b` from its SOI to its EOI.
pub fn walk(b: &[u8]) -> Walk {
    let mut scans = 0u32;
    let done = |scans, end| Walk { scans, end };
    if !b.starts_with(&[0xFF, SOI]) {
        return done(scans, End::Malformed);
    }
    let mut i = 2;
    loop {
        let Some((marker, after)) = next_marker(b, i) else {
            return done(scans, End::Truncated);
        };
        i = after;
        match marker {
            EOI => return done(scans, End::Eoi),
            // Markers without a length.
            m if m == TEM || m == SOI || is_rst(m) => continue,
            _ => {}
        }
        let Some(len) = b
            .get(i..i + 2)
            .and_then(|l| <[u8; 2]>::try_from(l).ok())
            .map(|l| usize::from(u16::from_be_bytes(l)))
        else {
            return done(scans, End::Truncated);
        };
        if len < 2 {
            return done(scans, End::Malformed);
        }
        i += len;
        if i > b.len() {
            return done(scans, End::Truncated);
        }
        if marker == SOS {
            scans = scans.saturating_add(1);
            match entropy_end(b, i) {
                Some(at) => i = at,
                None => return done(scans, End::Truncated),
            }
        }
    }
}

/// The next marker from `i` on, as libjpeg's `next_marker` finds it (bytes before it are
/// skipped, `FF` fill bytes absorbed, `FF 00` is not a marker), and the index after it.
fn next_marker(b: &[u8], mut i: usize) -> Option<(u8, usize)> {
    loop {
        let ff = i + b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        let code_at = ff + 1 + b.get(ff + 1..)?.iter().position(|&x| x != 0xFF)?;
        let code = *b.get(code_at)?;
        if code != 0 {
            return Some((code, code_at + 1));
        }
        i = code_at + 1;
    }
}

/// Where the entropy-coded data that starts at `i` ends: the index of the `FF` that begins
/// the next marker other than a restart; `None` when the bytes end first.
fn entropy_end(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        let ff = i + b.get(i..)?.iter().position(|&x| x == 0xFF)?;
        let code_at = ff + 1 + b.get(ff + 1..)?.iter().position(|&x| x != 0xFF)?;
        let code = *b.get(code_at)?;
        if code != 0 && !is_rst(code) {
            return Some(ff);
        }
        i = code_at + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(marker: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, marker];
        v.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    /// SOI, an APP1 whose payload holds a whole JPEG of its own (as an EXIF thumbnail
    /// does), a COM holding `FF DA` and `FF D9`, one scan with stuffed bytes, a restart
    /// marker and fill bytes, then EOI.
    fn sample() -> Vec<u8> {
        let mut v = vec![0xFF, SOI];
        let thumbnail = [0xFF, SOI, 0xFF, SOS, 0, 2, 1, 2, 0xFF, EOI];
        v.extend(seg(0xE1, &thumbnail));
        v.extend(seg(0xFE, &[0xFF, SOS, 0xFF, EOI, 0xFF]));
        v.extend(seg(0xDB, &[0; 65]));
        v.extend(seg(0xC2, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        v.extend(seg(SOS, &[1, 1, 0, 0, 63, 0]));
        v.extend([
            0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD3, 0x56, 0xFF, 0xFF, 0x00, 0x78,
        ]);
        v.extend([0xFF, 0xFF, EOI]);
        v
    }

    #[test]
    fn follows_lengths_and_entropy_data() {
        let jpeg = sample();
        assert_eq!(
            walk(&jpeg),
            Walk {
                scans: 1,
                end: End::Eoi
            },
            "FF DA inside segments and entropy data is no scan"
        );
        // A naive count of FF DA would see three.
        assert_eq!(jpeg.windows(2).filter(|w| w == &[0xFF, SOS]).count(), 3);
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"\0\0\n motion photo data");
        assert_eq!(walk(&trailer).end, End::Eoi);
    }

    #[test]
    fn every_cut_is_truncated() {
        let jpeg = sample();
        for cut in 2..jpeg.len() {
            assert_eq!(walk(&jpeg[..cut]).end, End::Truncated, "cut at {cut}");
        }
        assert_eq!(walk(b"GIF89a").end, End::Malformed);
        let mut zero_length = vec![0xFF, SOI, 0xFF, 0xE0, 0, 1];
        zero_length.extend([0xFF, EOI]);
        assert_eq!(walk(&zero_length).end, End::Malformed);
    }

    #[test]
    fn counts_every_scan() {
        let mut jpeg = vec![0xFF, SOI];
        jpeg.extend(seg(0xC2, &[8, 0, 8, 0, 8, 1, 1, 0x11, 0]));
        for _ in 0..500 {
            jpeg.extend(seg(SOS, &[1, 1, 0, 1, 1, 0]));
            jpeg.extend([0x00, 0xFF, 0x00]);
        }
        jpeg.extend([0xFF, EOI]);
        assert_eq!(walk(&jpeg).scans, 500);
    }
}

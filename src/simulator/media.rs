//! Media files (photos, EPC, floorplan, brochure) rebuilt on demand from their seeds, and the
//! base64 forms the API wraps them in.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::dataset::MediaKind;
use super::dataset::{MediaFormat, MediaRef, Property};
use super::jpeg::{padded_jpeg, padded_photo, Palette};
use super::pdf::padded_pdf;
use super::php_json::{Record, Val};

/// Width at which `propertymedia.php` wraps `base64data` (MIME's line length).
pub const BASE64_LINE: usize = 76;

/// The file's bytes: a JPEG, or a PDF for some brochures.
pub fn media_bytes(p: &Property, m: &MediaRef) -> Vec<u8> {
    let mut rng = ChaCha8Rng::seed_from_u64(m.seed);
    match m.format {
        MediaFormat::Jpeg if m.kind == MediaKind::Photo => {
            let palette = Palette::random(&mut rng);
            // One photo in four was taken with the camera turned: stored landscape, shown
            // portrait by its EXIF orientation, as phones do.
            let orientation = m.seed.is_multiple_of(4).then_some(6);
            padded_photo(&palette, orientation, m.size, &mut rng)
        }
        MediaFormat::Jpeg => {
            let palette = Palette::random(&mut rng);
            padded_jpeg(&palette, m.size, &mut rng)
        }
        MediaFormat::Pdf => padded_pdf(
            &format!("Brochure - {}", p.displayaddress),
            m.size,
            &mut rng,
        ),
    }
}

/// Plain base64, as in `photo1binary`.
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Base64 with a `\n` after every 76 characters (none after the last line), as in
/// `base64data` and the bare `Accept: application/base64` answer.
pub fn base64_wrapped(bytes: &[u8]) -> String {
    let plain = STANDARD.encode(bytes);
    let mut out = String::with_capacity(plain.len() + plain.len() / BASE64_LINE + 1);
    for (i, line) in plain.as_bytes().chunks(BASE64_LINE).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        // Base64 output is ASCII, so any chunk boundary is a char boundary.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
    }
    out
}

/// Rentman's `imgorder` as the string it sends.
pub fn imgorder_text(n: u32) -> &'static str {
    match n {
        1 => "1",
        2 => "2",
        3 => "3",
        4 => "4",
        5 => "5",
        6 => "6",
        7 => "7",
        8 => "8",
        9 => "9",
        9000 => "9000",
        9005 => "9005",
        9006 => "9006",
        _ => "0",
    }
}

/// One element of a `propertymedia.php` answer.
pub fn media_item<'a>(p: &'a Property, m: &'a MediaRef, base64data: &'a str) -> Record<'a> {
    let mut r = Record::with_capacity(5);
    r.str("propref", &p.propref_text);
    r.str("filename", &m.filename);
    r.push("caption", Val::Null);
    r.str("base64data", base64data);
    r.str("imgorder", imgorder_text(m.imgorder));
    r
}

#[cfg(test)]
mod tests {
    use super::super::dataset::{Dataset, MediaKind};
    use super::super::jpeg::check_structure;
    use super::*;

    #[test]
    fn wrapped_base64_has_76_char_lines_and_decodes_back() {
        let d = Dataset::generate(1, 20, false);
        let p = d
            .properties
            .iter()
            .find(|p| p.first_photo().is_some())
            .unwrap();
        let m = p.first_photo().unwrap();
        let jpeg = media_bytes(p, m);
        assert_eq!(jpeg.len(), m.size);
        check_structure(&jpeg).unwrap();
        let wrapped = base64_wrapped(&jpeg);
        let lines: Vec<&str> = wrapped.split('\n').collect();
        assert!(lines.len() > 100);
        assert!(lines[..lines.len() - 1].iter().all(|l| l.len() == 76));
        assert!(!lines.last().unwrap().is_empty() && lines.last().unwrap().len() <= 76);
        assert!(!wrapped.contains('\r'));
        let decoded = STANDARD.decode(wrapped.replace('\n', "")).unwrap();
        assert_eq!(decoded, jpeg);
        assert_eq!(base64(&jpeg), wrapped.replace('\n', ""));
    }

    #[test]
    fn media_are_deterministic_and_distinct() {
        let a = Dataset::generate(5, 30, false);
        let b = Dataset::generate(5, 30, false);
        let p = a
            .properties
            .iter()
            .find(|p| p.photos().count() >= 2)
            .unwrap();
        let q = b.get(p.propref).unwrap();
        let photos: Vec<&MediaRef> = p.photos().collect();
        assert_eq!(
            media_bytes(p, photos[0]),
            media_bytes(q, q.first_photo().unwrap())
        );
        assert_ne!(media_bytes(p, photos[0]), media_bytes(p, photos[1]));
    }

    #[test]
    fn brochures_may_be_pdfs() {
        let d = Dataset::generate(1, 200, false);
        let (p, m) = d
            .properties
            .iter()
            .flat_map(|p| p.media.iter().map(move |m| (p, m)))
            .find(|(_, m)| m.kind == MediaKind::Brochure && m.format == MediaFormat::Pdf)
            .unwrap();
        assert!(m.filename.ends_with(".pdf"));
        assert_eq!(m.imgorder, 9006);
        assert!(media_bytes(p, m).starts_with(b"%PDF-"));
    }

    #[test]
    fn item_shape() {
        let d = Dataset::generate(1, 20, false);
        let p = d
            .properties
            .iter()
            .find(|p| p.first_photo().is_some())
            .unwrap();
        let m = p.first_photo().unwrap();
        let out = super::super::php_json::to_vec(&media_item(p, m, "ab/c\nd"));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                r#"{{"propref":"{}","filename":"{}","caption":null,"base64data":"ab\/c\nd","imgorder":"1"}}"#,
                p.propref, m.filename
            )
        );
    }
}

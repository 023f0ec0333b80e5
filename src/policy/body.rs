//! Sanity of response bodies. Rentman answers a bad or revoked token with HTTP 200 and an
//! empty, text or JSON-object body; such a response is an upstream failure, not content, and
//! must never be stored. Each route names the check that fits what it serves.

use std::io::Read;

use base64::Engine as _;
use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::config::BodyCheck;

use super::media;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    Empty,
    NotArray,
    Invalid(String),
    /// Not a media file, or media items without their file.
    NotMedia,
    /// A media file of a known type, cut short (never to be stored as immutable).
    IncompleteMedia,
}

impl BodyProblem {
    /// A short machine-friendly reason, used in headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BodyProblem::Empty => "empty-body",
            BodyProblem::NotArray => "not-json-array",
            BodyProblem::Invalid(_) => "invalid-json",
            BodyProblem::NotMedia => "not-media",
            BodyProblem::IncompleteMedia => "incomplete-media",
        }
    }
}

impl std::fmt::Display for BodyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            BodyProblem::Empty => f.write_str("the upstream sent an empty body"),
            BodyProblem::NotArray => f.write_str("the upstream body is not a JSON array"),
            BodyProblem::Invalid(e) => write!(f, "the upstream body is not valid JSON: {e}"),
            BodyProblem::NotMedia => f.write_str("the upstream body is not a media file"),
            BodyProblem::IncompleteMedia => {
                f.write_str("a media file in the upstream body is cut short")
            }
        }
    }
}

/// The check a route's `body` setting asks for, on a complete 200 body. `bare_base64`: the
/// request asked for the bare base64 form of one media file (`Accept: application/base64`).
pub fn check(kind: BodyCheck, bare_base64: bool, chunks: &[Bytes]) -> Result<(), BodyProblem> {
    match kind {
        BodyCheck::Any => Ok(()),
        BodyCheck::JsonArray => check_json_array(chunks),
        BodyCheck::Media if bare_base64 => check_bare_base64(chunks),
        BodyCheck::Media => check_media_array(chunks),
    }
}

/// Verdict on the first bytes of a body: `None` while only whitespace has been seen.
pub fn check_prefix(first: &[u8]) -> Option<Result<(), BodyProblem>> {
    let b = first.iter().find(|b| !b.is_ascii_whitespace())?;
    Some(if *b == b'[' {
        Ok(())
    } else {
        Err(BodyProblem::NotArray)
    })
}

/// Full check of a complete body: a well-formed JSON array.
pub fn check_json_array(chunks: &[Bytes]) -> Result<(), BodyProblem> {
    match chunks.iter().find_map(|c| check_prefix(c)) {
        None => return Err(BodyProblem::Empty),
        Some(Err(p)) => return Err(p),
        Some(Ok(())) => {}
    }
    let mut de = serde_json::Deserializer::from_reader(Chunks::new(chunks));
    de.deserialize_seq(ArrayOfAnything)
        .and_then(|_| de.end())
        .map_err(|e| BodyProblem::Invalid(e.to_string()))
}

/// A JSON array of media items, each carrying its file as base64 in `base64data` that
/// decodes to a whole file of a known media type (`[]` is a valid answer: no such file or
/// property).
pub fn check_media_array(chunks: &[Bytes]) -> Result<(), BodyProblem> {
    match chunks.iter().find_map(|c| check_prefix(c)) {
        None => return Err(BodyProblem::Empty),
        Some(Err(p)) => return Err(p),
        Some(Ok(())) => {}
    }
    let mut de = serde_json::Deserializer::from_reader(Chunks::new(chunks));
    de.deserialize_seq(MediaItems)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| BodyProblem::Invalid(e.to_string()))?
}

/// The bare base64 text of one media file.
pub fn check_bare_base64(chunks: &[Bytes]) -> Result<(), BodyProblem> {
    let text: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.iter().copied())
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if text.is_empty() {
        return Err(BodyProblem::Empty);
    }
    media_base64(&text)
}

/// Whether base64 text (whitespace removed) decodes, whole, to a whole file of a known
/// media type.
fn media_base64(text: &[u8]) -> Result<(), BodyProblem> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let bytes = engine.decode(text).map_err(|_| BodyProblem::NotMedia)?;
    match media::identify(&bytes) {
        Ok(_) => Ok(()),
        Err(media::Unfit::Unknown) => Err(BodyProblem::NotMedia),
        Err(media::Unfit::Incomplete(_)) => Err(BodyProblem::IncompleteMedia),
    }
}

/// The worse of two verdicts on media items: not media at all outweighs cut short.
fn worse(a: Result<(), BodyProblem>, b: Result<(), BodyProblem>) -> Result<(), BodyProblem> {
    match (a, b) {
        (Err(BodyProblem::IncompleteMedia), Err(other)) | (Err(other), _) => Err(other),
        (Ok(()), b) => b,
    }
}

/// Visits an array of media items: `Ok` when every item carries a whole media file.
struct MediaItems;

impl<'de> Visitor<'de> for MediaItems {
    type Value = Result<(), BodyProblem>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array of media items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Result<(), BodyProblem>, A::Error> {
        let mut all = Ok(());
        while let Some(item) = seq.next_element_seed(MediaItem)? {
            all = worse(all, item);
        }
        Ok(all)
    }
}

/// One media item: an object whose `base64data` is a media file's base64 (wrapped at 76
/// columns by Rentman).
struct MediaItem;

impl<'de> serde::de::DeserializeSeed<'de> for MediaItem {
    type Value = Result<(), BodyProblem>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MediaItem {
    type Value = Result<(), BodyProblem>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a media item")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut media = Err(BodyProblem::NotMedia);
        while let Some(k) = map.next_key::<String>()? {
            if k == "base64data" {
                let v: Option<String> = map.next_value()?;
                let text: Vec<u8> = v
                    .unwrap_or_default()
                    .bytes()
                    .filter(|b| !b.is_ascii_whitespace())
                    .collect();
                media = if text.is_empty() {
                    Err(BodyProblem::NotMedia)
                } else {
                    media_base64(&text)
                };
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(media)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_string<E: serde::de::Error>(self, _: String) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(BodyProblem::NotMedia))
    }
}

struct ArrayOfAnything;

impl<'de> Visitor<'de> for ArrayOfAnything {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

/// Reads a chunked body without copying it into one buffer first.
pub(crate) struct Chunks<'a> {
    chunks: &'a [Bytes],
    index: usize,
    offset: usize,
}

impl<'a> Chunks<'a> {
    pub(crate) fn new(chunks: &'a [Bytes]) -> Chunks<'a> {
        Chunks {
            chunks,
            index: 0,
            offset: 0,
        }
    }
}

impl Read for Chunks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while let Some(chunk) = self.chunks.get(self.index) {
            let rest = chunk.get(self.offset..).unwrap_or_default();
            if rest.is_empty() {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = rest.len().min(buf.len());
            let (into, from) = (buf.iter_mut(), rest.iter());
            for (b, r) in into.zip(from) {
                *b = *r;
            }
            self.offset += n;
            return Ok(n);
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: &[&'static str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::from_static(p.as_bytes()))
            .collect()
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            check_json_array(&chunks(&[" [1,", "{\"a\":2}", "] "])),
            Ok(())
        );
        assert_eq!(check_json_array(&chunks(&["[]"])), Ok(()));
        assert_eq!(check_json_array(&chunks(&[])), Err(BodyProblem::Empty));
        assert_eq!(
            check_json_array(&chunks(&["  ", "\n"])),
            Err(BodyProblem::Empty)
        );
        assert_eq!(
            check_json_array(&chunks(&["{\"error\":1}"])),
            Err(BodyProblem::NotArray)
        );
        assert_eq!(
            check_json_array(&chunks(&["Invalid token"])),
            Err(BodyProblem::NotArray)
        );
        assert!(matches!(
            check_json_array(&chunks(&["[1,2"])),
            Err(BodyProblem::Invalid(_))
        ));
        assert!(matches!(
            check_json_array(&chunks(&["[1] x"])),
            Err(BodyProblem::Invalid(_))
        ));
        assert_eq!(check_prefix(b"  "), None);
        assert_eq!(check(BodyCheck::Any, false, &chunks(&[])), Ok(()));
        assert_eq!(check_prefix(b" [").unwrap(), Ok(()));
    }

    /// Base64 wrapped every 76 characters, as Rentman sends it: inside JSON the line breaks
    /// are the escape `\n`, in bare text real ones.
    fn wrapped(bytes: &[u8], newline: &str) -> String {
        use base64::engine::general_purpose::STANDARD;
        let text = STANDARD.encode(bytes);
        text.as_bytes()
            .chunks(76)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(newline)
    }

    fn b64(bytes: &[u8]) -> String {
        wrapped(bytes, "\\n")
    }

    /// A JPEG's structure, whole: SOI, JFIF header, comments, EOI.
    fn jpeg() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16];
        v.extend(b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0");
        for _ in 0..20 {
            v.extend([0xFF, 0xFE, 0, 12]);
            v.extend(b"a comment!");
        }
        v.extend([0xFF, 0xD9]);
        v
    }

    #[test]
    fn media_arrays_carry_media_files() {
        let photo = b64(&jpeg());
        let good = format!(
            r#"[{{"propref":"4","filename":"A.jpg","caption":null,"base64data":"{photo}","imgorder":"1"}}]"#
        );
        let pdf = b64(b"%PDF-1.4\n%...\n%%EOF\n");
        let two = format!(r#"[{{"base64data":"{photo}"}},{{"base64data":"{pdf}"}}]"#);
        for ok in [good.as_str(), two.as_str(), "[]", " [ ] "] {
            let body = vec![Bytes::from(ok.to_string())];
            assert_eq!(check(BodyCheck::Media, false, &body), Ok(()), "{ok}");
        }
        let text = b64(b"Invalid token");
        let bad = [
            ("", BodyProblem::Empty),
            ("Invalid token", BodyProblem::NotArray),
            (r#"{"error":"bad token"}"#, BodyProblem::NotArray),
            (r#"[{"error":"bad token"}]"#, BodyProblem::NotMedia),
            (r#"[{"base64data":""}]"#, BodyProblem::NotMedia),
            (r#"[{"base64data":null}]"#, BodyProblem::NotMedia),
            (r#"["x"]"#, BodyProblem::NotMedia),
        ];
        for (body, problem) in bad {
            let body = vec![Bytes::from(body.to_string())];
            assert_eq!(check(BodyCheck::Media, false, &body), Err(problem));
        }
        let not_media = format!(r#"[{{"base64data":"{text}"}}]"#);
        assert_eq!(
            check(BodyCheck::Media, false, &[Bytes::from(not_media)]),
            Err(BodyProblem::NotMedia)
        );
        let corrupt = format!(r#"[{{"base64data":"{}!!"}}]"#, &photo[..40]);
        assert_eq!(
            check(BodyCheck::Media, false, &[Bytes::from(corrupt)]),
            Err(BodyProblem::NotMedia)
        );
        // A file cut short (here, at a base64 quantum) is refused, whatever is beside it.
        let whole = jpeg();
        let half = b64(&whole[..whole.len() / 2 / 3 * 3]);
        let pdf_cut = b64(b"%PDF-1.4\n%...\n%%EO");
        for items in [
            format!(r#"[{{"base64data":"{half}"}}]"#),
            format!(r#"[{{"base64data":"{photo}"}},{{"base64data":"{pdf_cut}"}}]"#),
        ] {
            assert_eq!(
                check(BodyCheck::Media, false, &[Bytes::from(items)]),
                Err(BodyProblem::IncompleteMedia)
            );
        }
        let both = format!(r#"[{{"base64data":"{half}"}},{{"base64data":"{text}"}}]"#);
        assert_eq!(
            check(BodyCheck::Media, false, &[Bytes::from(both)]),
            Err(BodyProblem::NotMedia),
            "not media at all is the worse"
        );
    }

    #[test]
    fn bare_base64_is_one_media_file() {
        let whole = jpeg();
        let photo = wrapped(&whole, "\n");
        let (head, tail) = photo.split_at(50);
        let body = vec![Bytes::from(head.to_string()), Bytes::from(tail.to_string())];
        assert_eq!(check(BodyCheck::Media, true, &body), Ok(()));
        for (text, problem) in [
            ("", BodyProblem::Empty),
            ("\n", BodyProblem::Empty),
            ("Invalid token", BodyProblem::NotMedia),
            (r#"{"error":1}"#, BodyProblem::NotMedia),
            ("SGVsbG8gd29ybGQ=", BodyProblem::NotMedia),
            (&photo[..photo.len() - 8], BodyProblem::IncompleteMedia),
        ] {
            let body = vec![Bytes::from(text.to_string())];
            assert_eq!(
                check(BodyCheck::Media, true, &body),
                Err(problem),
                "{text:?}"
            );
        }
    }
}

//! JSON as PHP's `json_encode` writes it, because that is what Rentman's API returns and what
//! a proxy in front of it must pass through untouched: `/` is escaped as `\/` and every
//! non-ASCII character as a lowercase `\uXXXX` (UTF-16, so astral characters become a
//! surrogate pair). Control characters are escaped by serde_json already, the same way.

use std::io::{self, Write};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::ser::Formatter;

/// A serde_json formatter that adds PHP's escapes to serde_json's compact output.
#[derive(Debug, Default, Clone, Copy)]
pub struct PhpFormatter;

impl Formatter for PhpFormatter {
    // serde_json hands over runs of characters it does not escape itself; `/` and non-ASCII
    // are among them, so this is the one place to add PHP's escapes.
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if ch != '/' && ch.is_ascii() {
                continue;
            }
            w.write_all(&bytes[start..i])?;
            if ch == '/' {
                w.write_all(b"\\/")?;
            } else {
                let mut units = [0u16; 2];
                for unit in ch.encode_utf16(&mut units) {
                    write!(w, "\\u{unit:04x}")?;
                }
            }
            start = i + ch.len_utf8();
        }
        w.write_all(&bytes[start..])
    }
}

/// Serialises a value as PHP would.
pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write(&mut out, value);
    out
}

/// Appends a value, serialised as PHP would, to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(out, PhpFormatter);
    // Writing our own plain data into a Vec cannot fail.
    value.serialize(&mut ser).expect("serialising to memory");
}

/// One JSON value of a record: Rentman sends strings, a few integers (with `--int-flags`) and
/// `null` (a media caption).
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Str(&'a str),
    Int(i64),
    Null,
}

impl Serialize for Val<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Val::Str(v) => s.serialize_str(v),
            Val::Int(v) => s.serialize_i64(*v),
            Val::Null => s.serialize_unit(),
        }
    }
}

/// A JSON object whose keys keep the order given (a PHP associative array keeps insertion
/// order; serde_json's map would sort them).
#[derive(Debug, Clone, Default)]
pub struct Record<'a>(pub Vec<(&'static str, Val<'a>)>);

impl<'a> Record<'a> {
    pub fn with_capacity(n: usize) -> Self {
        Record(Vec::with_capacity(n))
    }

    pub fn push(&mut self, key: &'static str, val: Val<'a>) {
        self.0.push((key, val));
    }

    pub fn str(&mut self, key: &'static str, val: &'a str) {
        self.0.push((key, Val::Str(val)));
    }

    #[cfg(test)]
    pub fn get(&self, key: &str) -> Option<&Val<'a>> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl Serialize for Record<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_slashes_and_non_ascii_like_php() {
        let out = to_vec("£1,450 pcm – https://a.b/c café 😀");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#""\u00a31,450 pcm \u2013 https:\/\/a.b\/c caf\u00e9 \ud83d\ude00""#
        );
    }

    #[test]
    fn control_characters_and_flags() {
        let out = to_vec(&["\u{0}", "\u{1}", "a\rb\nc\"d\\e"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"["\u0000","\u0001","a\rb\nc\"d\\e"]"#
        );
    }

    #[test]
    fn record_keeps_key_order_and_round_trips() {
        let mut r = Record::default();
        r.str("zeta", "1");
        r.push("alpha", Val::Int(2));
        r.push("caption", Val::Null);
        r.str("url", "http://x/y");
        let out = to_vec(&r);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            r#"{"zeta":"1","alpha":2,"caption":null,"url":"http:\/\/x\/y"}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["url"], "http://x/y");
    }
}

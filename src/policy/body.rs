//! Sanity of response bodies on JSON routes. Rentman answers a bad or revoked token with
//! HTTP 200 and an empty or non-array body; such a response is an upstream failure, not
//! content.

use std::io::Read;

use bytes::Bytes;
use serde::de::{Deserializer, IgnoredAny, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyProblem {
    Empty,
    NotArray,
    Invalid(String),
}

impl BodyProblem {
    /// A short machine-friendly reason, used in headers and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            BodyProblem::Empty => "empty-body",
            BodyProblem::NotArray => "not-json-array",
            BodyProblem::Invalid(_) => "invalid-json",
        }
    }
}

impl std::fmt::Display for BodyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            BodyProblem::Empty => f.write_str("the upstream sent an empty body"),
            BodyProblem::NotArray => f.write_str("the upstream body is not a JSON array"),
            BodyProblem::Invalid(e) => write!(f, "the upstream body is not valid JSON: {e}"),
        }
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
            let rest = &chunk[self.offset..];
            if rest.is_empty() {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            let n = rest.len().min(buf.len());
            buf[..n].copy_from_slice(&rest[..n]);
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
        assert_eq!(check_prefix(b" [").unwrap(), Ok(()));
    }
}

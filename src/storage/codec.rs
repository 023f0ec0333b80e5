//! One Redis value per entry: key, times, response header and body, length-prefixed, so a
//! truncated or foreign value is recognised and read as a miss, never as content.
//!
//! ```text
//! "RCE4" | u32 key len | key | u32 times len | times | u32 header len | header
//!        | u32 tags len | tags (joined by '\n')
//!        | u32 vary len | vary (empty, or names joined by ',' then '\n' and variant keys)
//!        | u64 body len | body   (integers big-endian)
//! times:  u64 fresh_until | u64 created | u64 updated (µs since the epoch) | u32 swr | u32 sie
//! header: u16 status, then per field: u16 name len | name | u32 value len | value
//! ```
//! The header is stored as plain fields rather than pingora's compressed `CacheMeta` form:
//! every Redis hit decodes it, and decompressing it cost more than the bytes it saved.
//! The body is written last, so it can be appended chunk by chunk without first being copied
//! into one buffer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes};
use pingora::http::ResponseHeader;

use super::{Entry, EntryTimes, VaryIndex};

const MAGIC: &[u8; 4] = b"RCE4";
const TIMES_LEN: usize = 3 * 8 + 2 * 4;
/// Room for the headers each response adds on the way out (see `validators::without_case`).
const ADDED_HEADERS: usize = 8;

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as u64
}

fn from_micros(us: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(us)
}

fn encode_times(t: &EntryTimes, out: &mut Vec<u8>) {
    out.put_u64(micros(t.fresh_until));
    out.put_u64(micros(t.created));
    out.put_u64(micros(t.updated));
    out.put_u32(t.swr_sec);
    out.put_u32(t.sie_sec);
}

fn decode_times(mut b: &[u8]) -> Result<EntryTimes, DecodeError> {
    if b.len() != TIMES_LEN {
        return Err(DecodeError::BadMeta(format!("times of {} bytes", b.len())));
    }
    Ok(EntryTimes {
        fresh_until: from_micros(b.get_u64()),
        created: from_micros(b.get_u64()),
        updated: from_micros(b.get_u64()),
        swr_sec: b.get_u32(),
        sie_sec: b.get_u32(),
    })
}

fn encode_header(h: &ResponseHeader) -> Vec<u8> {
    let fields: usize = h
        .headers
        .iter()
        .map(|(n, v)| 6 + n.as_str().len() + v.len())
        .sum();
    let mut out = Vec::with_capacity(2 + fields);
    out.put_u16(h.status.as_u16());
    for (name, value) in h.headers.iter() {
        out.put_u16(name.as_str().len() as u16);
        out.put_slice(name.as_str().as_bytes());
        out.put_u32(value.len() as u32);
        out.put_slice(value.as_bytes());
    }
    out
}

/// The next `n` bytes of a header field.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], DecodeError> {
    if b.len() < n {
        return Err(DecodeError::BadMeta("header field cut short".into()));
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Ok(head)
}

fn decode_header(mut b: &[u8]) -> Result<ResponseHeader, DecodeError> {
    let bad = |what: &str| DecodeError::BadMeta(what.to_string());
    if b.len() < 2 {
        return Err(bad("no status"));
    }
    let status = b.get_u16();
    let mut fields = Vec::new();
    while !b.is_empty() {
        let len = take(&mut b, 2)?.get_u16() as usize;
        let name = take(&mut b, len)?;
        let len = take(&mut b, 4)?.get_u32() as usize;
        let value = take(&mut b, len)?;
        let name = http::HeaderName::from_bytes(name).map_err(|_| bad("bad header name"))?;
        let value = http::HeaderValue::from_bytes(value).map_err(|_| bad("bad header value"))?;
        fields.push((name, value));
    }
    let mut h = ResponseHeader::build_no_case(status, Some(fields.len() + ADDED_HEADERS))
        .map_err(|_| bad("bad status"))?;
    for (name, value) in fields {
        h.append_header(name, value)
            .map_err(|_| bad("bad header field"))?;
    }
    Ok(h)
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Foreign,
    Truncated,
    BadMeta(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            DecodeError::Foreign => f.write_str("not a rentcache value"),
            DecodeError::Truncated => f.write_str("truncated value"),
            DecodeError::BadMeta(e) => write!(f, "unreadable metadata: {e}"),
        }
    }
}

/// Everything before the body (its length included): what goes into the first write.
pub fn encode_head(entry: &Entry) -> Vec<u8> {
    let mut times = Vec::with_capacity(TIMES_LEN);
    encode_times(&entry.times, &mut times);
    let header = encode_header(&entry.header);
    let tags = entry.tags.join("\n");
    let vary = entry.vary.as_ref().map_or_else(String::new, |v| {
        std::iter::once(v.names.join(","))
            .chain(v.variants.iter().cloned())
            .collect::<Vec<_>>()
            .join("\n")
    });
    let mut out = Vec::with_capacity(
        4 + 20 + 8 + entry.key.len() + TIMES_LEN + header.len() + tags.len() + vary.len(),
    );
    out.put_slice(MAGIC);
    for part in [
        entry.key.as_bytes(),
        &times,
        &header,
        tags.as_bytes(),
        vary.as_bytes(),
    ] {
        out.put_u32(part.len() as u32);
        out.put_slice(part);
    }
    out.put_u64(entry.body_len as u64);
    out
}

/// How many leading bytes of a value hold its key and times, for a key of `key_len` bytes.
pub fn times_prefix_len(key_len: usize) -> usize {
    4 + 4 + key_len + 4 + TIMES_LEN
}

/// The times of a value from its first `times_prefix_len` bytes, if they are of an entry
/// for `key`.
pub fn peek_times(prefix: &[u8], key: &str) -> Option<EntryTimes> {
    let rest = prefix.strip_prefix(MAGIC)?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let rest = rest
        .strip_prefix(key.as_bytes())
        .filter(|_| u32::from_be_bytes(*len) as usize == key.len())?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    if u32::from_be_bytes(*len) as usize != TIMES_LEN {
        return None;
    }
    decode_times(rest.get(..TIMES_LEN)?).ok()
}

/// Decodes a whole value; `hash` is the entry's key hash (not stored: it is the Redis key).
pub fn decode(value: Bytes, hash: pingora::cache::key::HashBinary) -> Result<Entry, DecodeError> {
    let rest = value.strip_prefix(MAGIC).ok_or(DecodeError::Foreign)?;
    let (key, rest) = length_prefixed(rest)?;
    let (times, rest) = length_prefixed(rest)?;
    let (header, rest) = length_prefixed(rest)?;
    let (tags, rest) = length_prefixed(rest)?;
    let (vary, rest) = length_prefixed(rest)?;
    let (body_len, body) = rest
        .split_first_chunk::<8>()
        .ok_or(DecodeError::Truncated)?;
    if u64::try_from(body.len()).ok() != Some(u64::from_be_bytes(*body_len)) {
        return Err(DecodeError::Truncated);
    }
    let key = std::str::from_utf8(key)
        .map_err(|_| DecodeError::Foreign)?
        .to_string();
    let times = decode_times(times)?;
    let header = decode_header(header)?;
    let tags = std::str::from_utf8(tags)
        .map_err(|_| DecodeError::BadMeta("tags".into()))?
        .split('\n')
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    let vary = std::str::from_utf8(vary).map_err(|_| DecodeError::BadMeta("vary".into()))?;
    let vary = (!vary.is_empty()).then(|| {
        let mut lines = vary.split('\n');
        let names = lines
            .next()
            .unwrap_or_default()
            .split(',')
            .map(str::to_string)
            .collect();
        VaryIndex {
            names,
            variants: lines.map(str::to_string).collect(),
        }
    });
    let body = if body.is_empty() {
        Vec::new()
    } else {
        // A view into the value read from Redis: no copy.
        vec![value.slice(value.len() - body.len()..)]
    };
    let entry = Entry::new(key, hash, times, header, body).with_tags(tags);
    Ok(match vary {
        Some(v) => entry.with_vary(v),
        None => entry,
    })
}

/// A `u32` length and that many bytes, and what follows them.
fn length_prefixed(b: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (len, rest) = b.split_first_chunk::<4>().ok_or(DecodeError::Truncated)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| DecodeError::Truncated)?;
    if rest.len() < len {
        return Err(DecodeError::Truncated);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    fn entry() -> Entry {
        let t = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h.insert_header("etag", "\"x\"").unwrap();
        Entry::new(
            "/p?a=1".into(),
            pingora::cache::key::hash_key("/p?a=1"),
            EntryTimes {
                fresh_until: t + Duration::from_secs(300),
                created: t,
                updated: t + Duration::from_secs(10),
                swr_sec: 60,
                sie_sec: 3600,
            },
            h,
            vec![Bytes::from_static(b"[1,"), Bytes::from_static(b"2,3]")],
        )
    }

    #[test]
    fn times_are_read_from_the_head_of_a_value() {
        let e = entry();
        let v = value(&e);
        let prefix = &v[..times_prefix_len(e.key.len())];
        assert_eq!(peek_times(prefix, &e.key), Some(e.times));
        // Another key's value, a short read, or a foreign value: nothing.
        assert_eq!(peek_times(prefix, "/p?a=2"), None);
        assert_eq!(peek_times(&prefix[..prefix.len() - 1], &e.key), None);
        assert_eq!(peek_times(b"", &e.key), None);
        assert_eq!(peek_times(b"hello world", &e.key), None);
    }

    fn value(e: &Entry) -> Bytes {
        let mut v = encode_head(e);
        for c in &e.body {
            v.extend_from_slice(c);
        }
        Bytes::from(v)
    }

    #[test]
    fn round_trip() {
        let e = entry();
        let d = decode(value(&e), e.hash).unwrap();
        assert_eq!(d.key, e.key);
        assert_eq!(d.times, e.times);
        assert_eq!(d.body_len, 7);
        assert_eq!(d.body.concat(), b"[1,2,3]");
        assert_eq!(d.header.status, 200);
        assert_eq!(d.header.headers["etag"], "\"x\"");
        assert!(d.tags.is_empty());
        let tagged = entry().with_tags(vec!["route:a".into(), "property:7".into()]);
        let d = decode(value(&tagged), tagged.hash).unwrap();
        assert_eq!(d.tags, ["route:a", "property:7"]);
        assert!(d.vary.is_none());
        let index = VaryIndex {
            names: vec!["accept".into(), "accept-language".into()],
            variants: vec!["/p?a=1\u{1f}accept=x".into(), "/p?a=1\u{1f}accept=y".into()],
        };
        let marked = entry().with_vary(index.clone());
        let d = decode(value(&marked), marked.hash).unwrap();
        assert_eq!(d.vary.as_deref(), Some(&index));
        assert_eq!(d.body.concat(), b"[1,2,3]");
        let _ = SystemTime::now();
    }

    #[test]
    fn truncated_and_foreign_values_are_refused() {
        let e = entry();
        let v = value(&e);
        for cut in [0, 3, 10, v.len() / 2, v.len() - 1] {
            let r = decode(v.slice(..cut), e.hash);
            assert!(r.is_err(), "cut at {cut} decoded");
        }
        let mut longer = v.to_vec();
        longer.push(b'!');
        assert_eq!(
            decode(Bytes::from(longer), e.hash).unwrap_err(),
            DecodeError::Truncated
        );
        assert_eq!(
            decode(Bytes::from_static(b"hello world, not ours"), e.hash).unwrap_err(),
            DecodeError::Foreign
        );
        let mut bad_meta = b"RCE4".to_vec();
        for part in [&b"k"[..], b"garbage", b"garbage", b"", b""] {
            bad_meta.extend_from_slice(&(part.len() as u32).to_be_bytes());
            bad_meta.extend_from_slice(part);
        }
        bad_meta.extend_from_slice(&0u64.to_be_bytes());
        assert!(matches!(
            decode(Bytes::from(bad_meta), e.hash),
            Err(DecodeError::BadMeta(_))
        ));
    }
}

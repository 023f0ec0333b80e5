//! One Redis value per entry: pingora's serialised `CacheMeta` and the body, length-prefixed,
//! so a truncated or foreign value is recognised and read as a miss, never as content.
//!
//! ```text
//! "RCE1" | u32 key len | key | u32 internal len | internal | u32 header len | header
//!        | u64 body len | body            (all integers big-endian)
//! ```
//! The body is written last, so it can be appended chunk by chunk without first being copied
//! into one buffer.

use bytes::{BufMut, Bytes};
use pingora::cache::CacheMeta;

use super::{Entry, EntryTimes};

const MAGIC: &[u8; 4] = b"RCE1";

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
pub fn encode_head(entry: &Entry) -> Result<Vec<u8>, String> {
    let (internal, header) = entry.meta().serialize().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(4 + 12 + 8 + entry.key.len() + internal.len() + header.len());
    out.put_slice(MAGIC);
    for part in [entry.key.as_bytes(), &internal, &header] {
        out.put_u32(part.len() as u32);
        out.put_slice(part);
    }
    out.put_u64(entry.body_len as u64);
    Ok(out)
}

/// Decodes a whole value; `hash` is the entry's key hash (not stored: it is the Redis key).
pub fn decode(value: Bytes, hash: pingora::cache::key::HashBinary) -> Result<Entry, DecodeError> {
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<std::ops::Range<usize>, DecodeError> {
        let end = at.checked_add(n).ok_or(DecodeError::Truncated)?;
        if end > value.len() {
            return Err(DecodeError::Truncated);
        }
        let r = *at..end;
        *at = end;
        Ok(r)
    };
    if value.len() < 4 || &value[..4] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    at += 4;
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = u32::from_be_bytes(value[take(&mut at, 4)?].try_into().expect("4 bytes"));
        parts.push(take(&mut at, len as usize)?);
    }
    let body_len = u64::from_be_bytes(value[take(&mut at, 8)?].try_into().expect("8 bytes"));
    if value.len() - at != body_len as usize {
        return Err(DecodeError::Truncated);
    }
    let key = std::str::from_utf8(&value[parts[0].clone()])
        .map_err(|_| DecodeError::Foreign)?
        .to_string();
    let meta = CacheMeta::deserialize(&value[parts[1].clone()], &value[parts[2].clone()])
        .map_err(|e| DecodeError::BadMeta(e.to_string()))?;
    let times = EntryTimes::of(&meta);
    let header = crate::policy::validators::without_case(meta.response_header());
    let body = if body_len == 0 {
        Vec::new()
    } else {
        // A view into the value read from Redis: no copy.
        vec![value.slice(at..)]
    };
    Ok(Entry::new(key, hash, times, header, body))
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

    fn value(e: &Entry) -> Bytes {
        let mut v = encode_head(e).unwrap();
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
        let mut bad_meta = b"RCE1".to_vec();
        for part in [&b"k"[..], b"garbage", b"garbage"] {
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

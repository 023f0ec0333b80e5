//! Gzip copies of memory entries for clients that accept gzip, made once per entry and kept
//! in the memory tier beside the plain entry (weighed against the same budget).
//!
//! Encoding on every hit, as pingora's compression module does, costs ~350 µs of CPU for a
//! 40 KB answer at level 6: 25 times the hit itself. A copy is served only while the plain
//! entry it was made from is the one in memory (same key and times), so a purge or a
//! refresh of the plain entry retires it; it is never written to Redis.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use pingora::cache::key::HashBinary;

use crate::policy::encoding;
use crate::storage::{Entry, MemoryTier, Tier};

/// Marks a copy's key: cannot occur in a canonical key.
const SUFFIX: &str = "\u{0}gzip";

/// Where a key's copy lives: a hash no canonical key is expected to have, and if one did,
/// the key comparison in `is_copy_of` tells them apart.
fn copy_hash(hash: &HashBinary) -> HashBinary {
    let mut h = *hash;
    for b in &mut h[..8] {
        *b ^= 0x5a;
    }
    h
}

fn is_copy_of(copy: &Entry, plain: &Entry) -> bool {
    copy.times == plain.times
        && copy
            .key
            .strip_suffix(SUFFIX)
            .is_some_and(|k| k == plain.key)
}

/// The gzip copy of `plain`, made now if memory holds none. When gzip does not make the
/// body smaller, the "copy" is the plain answer itself (sharing its bytes), so that the
/// attempt is not repeated on every hit.
pub async fn copy_of(memory: &MemoryTier, plain: &Arc<Entry>, level: u32) -> Arc<Entry> {
    let hash = copy_hash(&plain.hash);
    if let Some(copy) = memory.peek(&hash) {
        if is_copy_of(&copy, plain) {
            return copy;
        }
    }
    let key = format!("{}{SUFFIX}", plain.key);
    let copy = match gzip(&plain.body, level) {
        Some(body) if body.len() < plain.body_len => {
            let header = encoding::gzip_header(&plain.header, body.len());
            Entry::new(key, hash, plain.times, header, vec![Bytes::from(body)])
        }
        _ => Entry::new(
            key,
            hash,
            plain.times,
            plain.header.clone(),
            plain.body.clone(),
        ),
    };
    let copy = Arc::new(copy.derived().with_tags(plain.tags.clone()));
    // Too large for memory: served this once, made again next time (as pingora would).
    let _ = memory.put(copy.clone()).await;
    copy
}

fn gzip(chunks: &[Bytes], level: u32) -> Option<Vec<u8>> {
    let len: usize = chunks.iter().map(Bytes::len).sum();
    let mut encoder = GzEncoder::new(Vec::with_capacity(len / 4 + 64), Compression::new(level));
    for chunk in chunks {
        encoder.write_all(chunk).ok()?;
    }
    encoder.finish().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::http::ResponseHeader;
    use std::io::Read;

    fn plain(key: &str, body: &[u8]) -> Arc<Entry> {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h.insert_header("content-length", body.len()).unwrap();
        Arc::new(Entry::for_test(key, h, vec![Bytes::copy_from_slice(body)]))
    }

    #[tokio::test]
    async fn copy_is_made_once_decodes_to_the_body_and_follows_its_entry() {
        let memory = MemoryTier::new(1 << 20, 1 << 20);
        let body = br#"[{"propref":1,"displayaddress":"1 High Street"}]"#.repeat(50);
        let first = plain("/p?a=1", &body);
        let copy = copy_of(&memory, &first, 6).await;
        assert_eq!(copy.header.headers["content-encoding"], "gzip");
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&copy.body[0][..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, body);
        // Kept: the same copy comes back.
        assert!(Arc::ptr_eq(&copy, &copy_of(&memory, &first, 6).await));
        // A new plain entry (a refresh) gets a new copy.
        let refreshed = plain("/p?a=1", &body);
        assert!(!Arc::ptr_eq(&copy, &copy_of(&memory, &refreshed, 6).await));
    }

    #[tokio::test]
    async fn incompressible_bodies_are_served_plain() {
        let memory = MemoryTier::new(1 << 20, 1 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let entry = plain("/p?a=2", &noise);
        let copy = copy_of(&memory, &entry, 6).await;
        assert!(!copy.header.headers.contains_key("content-encoding"));
        assert_eq!(copy.body, entry.body);
    }
}

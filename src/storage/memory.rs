//! The in-process tier: TinyUFO, bounded by bytes.
//!
//! TinyUFO weighs entries with a u16, so weights are in KiB (rounded up): the sum of weights
//! never exceeds `max_bytes / 1024`, which keeps the bytes held within `max_bytes`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora::cache::key::HashBinary;
use tinyufo::TinyUfo;

use super::{Admission, Entry, Tier, TierError, TierStats};

pub struct MemoryTier {
    cache: TinyUfo<u64, Slot>,
    /// Held for every change to `cache`. TinyUFO 0.9's weight accounting is not safe under
    /// concurrent changes of one key (a removal racing an insertion subtracts a weight twice,
    /// and its total then overflows: a panic in debug builds, a cache that evicts everything
    /// in release ones). Changes are rare next to reads, which take no lock.
    writes: parking_lot::Mutex<()>,
    max_bytes: u64,
    max_object_bytes: u64,
    entries: AtomicU64,
    copies: AtomicU64,
    bytes: AtomicU64,
    /// Time origin for `Slot::stored` and `watermark`.
    epoch: Instant,
    /// Entries stored before this (nanoseconds since `epoch`) are no longer trusted.
    watermark: AtomicU64,
    /// Where large bodies are kept: memory files when `None`.
    body_dir: Option<std::path::PathBuf>,
}

/// An entry and when this tier stored it.
///
/// TinyUFO frees a removed item only when its concurrent map reclaims memory, in batches
/// (epoch-based): an evicted multi-megabyte body would stay allocated long after it left
/// the budget. So the entry sits in a cell shared with the map's copy, and eviction empties
/// the cell: the body is freed at once, and only this small slot waits for reclamation.
#[derive(Clone)]
struct Slot {
    entry: Arc<ArcSwapOption<Entry>>,
    stored: u64,
}

impl Slot {
    fn entry(&self) -> Option<Arc<Entry>> {
        self.entry.load_full()
    }
}

/// Weight of one entry in KiB, at least 1.
fn weight_kib(entry: &Entry) -> u16 {
    let kib = entry.size().div_ceil(1024).max(1);
    u16::try_from(kib).unwrap_or(u16::MAX)
}

/// The first 8 bytes of the 128-bit key hash; collisions are told apart by the full hash.
fn short(hash: &HashBinary) -> u64 {
    let (first, _) = hash.split_first_chunk::<8>().unwrap_or((&[0; 8], &[]));
    u64::from_le_bytes(*first)
}

impl MemoryTier {
    pub fn new(max_bytes: u64, max_object_bytes: u64) -> MemoryTier {
        let limit_kib = (max_bytes / 1024).max(1) as usize;
        // TinyUFO sizes its frequency sketch from the expected number of entries; Rentman
        // responses are mostly a few KiB (lists, details) with some large media.
        let estimated_entries = (limit_kib / 8).clamp(64, 1 << 20);
        MemoryTier {
            cache: TinyUfo::new(limit_kib, estimated_entries),
            writes: parking_lot::Mutex::new(()),
            max_bytes,
            max_object_bytes,
            entries: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            epoch: Instant::now(),
            watermark: AtomicU64::new(0),
            body_dir: None,
        }
    }

    /// Keeps large bodies in unnamed files in `dir` rather than in memory files
    /// (`memory.body_dir`; see `shared_body`).
    pub fn with_body_dir(mut self, dir: Option<std::path::PathBuf>) -> MemoryTier {
        self.body_dir = dir;
        self
    }

    pub fn body_dir(&self) -> Option<&std::path::Path> {
        self.body_dir.as_deref()
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The counter `entry` counts in.
    fn count_of(&self, entry: &Entry) -> &AtomicU64 {
        if entry.derived {
            &self.copies
        } else {
            &self.entries
        }
    }

    /// Stops trusting everything stored until now (entries are dropped as they are next
    /// read). Used when invalidations may have been missed, e.g. after a lost subscription.
    pub fn distrust_stored_before_now(&self) {
        self.watermark.store(self.now(), Ordering::Release);
    }

    /// Accounts for a slot that left the cache, and frees its entry.
    fn forget(&self, slot: &Slot) {
        if let Some(entry) = slot.entry.swap(None) {
            self.count_of(&entry).fetch_sub(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub(weight_kib(&entry) as u64 * 1024, Ordering::Relaxed);
        }
    }

    /// Synchronous lookup, for callers that are not async (stats, explain).
    pub fn peek(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
        let key = short(hash);
        let slot = self.cache.get(&key)?;
        if slot.stored < self.watermark.load(Ordering::Acquire) {
            self.take(key);
            return None;
        }
        slot.entry().filter(|e| e.hash == *hash)
    }

    /// Whether an entry of `size` bytes can be kept here.
    pub fn admits(&self, size: usize) -> bool {
        size as u64 <= self.max_object_bytes
    }

    /// Sizes now (the trait's `stats` without a trait object).
    pub fn stats_now(&self) -> TierStats {
        TierStats {
            entries: self.entries.load(Ordering::Relaxed),
            copies: self.copies.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
        }
    }

    /// Drops `hash` without telling anyone (the caller is an invalidation message).
    pub fn drop_local(&self, hash: &HashBinary) {
        self.take(short(hash));
    }

    /// Drops `entry` if it is still the one held for its key (a newer one stored meanwhile
    /// stays).
    pub fn drop_if_current(&self, entry: &Arc<Entry>) {
        let key = short(&entry.hash);
        let _one_change_at_a_time = self.writes.lock();
        let current = self
            .cache
            .get(&key)
            .and_then(|slot| slot.entry())
            .is_some_and(|e| Arc::ptr_eq(&e, entry));
        if current {
            if let Some(old) = self.cache.remove(&key) {
                self.forget(&old);
            }
        }
    }

    /// Removes a key; whether it was there.
    fn take(&self, key: u64) -> bool {
        let _one_change_at_a_time = self.writes.lock();
        match self.cache.remove(&key) {
            Some(old) => {
                self.forget(&old);
                true
            }
            None => false,
        }
    }
}

#[async_trait]
impl Tier for MemoryTier {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, hash: &HashBinary) -> Result<Option<Arc<Entry>>, TierError> {
        Ok(self.peek(hash))
    }

    async fn put(&self, entry: Arc<Entry>) -> Result<Admission, TierError> {
        if entry.size() as u64 > self.max_object_bytes {
            // A smaller copy of this key must not linger and be served instead.
            self.remove(&entry.hash).await?;
            return Ok(Admission::TooLarge);
        }
        let key = short(&entry.hash);
        let _one_change_at_a_time = self.writes.lock();
        // Replacing in place would hide the old weight from our byte count: remove first.
        if let Some(old) = self.cache.remove(&key) {
            self.forget(&old);
        }
        let weight = weight_kib(&entry);
        self.count_of(&entry).fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(weight as u64 * 1024, Ordering::Relaxed);
        let slot = Slot {
            entry: Arc::new(ArcSwapOption::new(Some(entry))),
            stored: self.now(),
        };
        for evicted in self.cache.put(key, slot, weight) {
            self.forget(&evicted.data);
        }
        Ok(Admission::Stored)
    }

    async fn remove(&self, hash: &HashBinary) -> Result<bool, TierError> {
        Ok(self.take(short(hash)))
    }

    fn stats(&self) -> TierStats {
        self.stats_now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use pingora::http::ResponseHeader;

    fn entry(n: u32, body_len: usize) -> Arc<Entry> {
        Arc::new(Entry::for_test(
            &format!("/k?n={n}"),
            ResponseHeader::build(200, None).unwrap(),
            vec![Bytes::from(vec![b'x'; body_len])],
        ))
    }

    #[tokio::test]
    async fn stays_within_max_bytes() {
        let tier = MemoryTier::new(256 * 1024, 64 * 1024);
        for n in 0..500 {
            tier.put(entry(n, 10_000)).await.unwrap();
            assert!(tier.stats().bytes <= 256 * 1024, "{:?}", tier.stats());
        }
        assert!(tier.stats().entries > 5);
    }

    #[tokio::test]
    async fn too_large_is_refused_and_replaces_nothing() {
        let tier = MemoryTier::new(1 << 20, 4096);
        tier.put(entry(1, 100)).await.unwrap();
        assert_eq!(
            tier.put(entry(1, 10_000)).await.unwrap(),
            Admission::TooLarge
        );
        assert!(tier.get(&entry(1, 1).hash).await.unwrap().is_none());
        assert_eq!(tier.stats().entries, 0);
        assert_eq!(tier.stats().bytes, 0);
    }

    #[tokio::test]
    async fn replace_and_remove_keep_counts() {
        let tier = MemoryTier::new(1 << 20, 1 << 20);
        tier.put(entry(1, 100)).await.unwrap();
        tier.put(entry(1, 5000)).await.unwrap();
        assert_eq!(tier.stats().entries, 1);
        let got = tier.get(&entry(1, 1).hash).await.unwrap().unwrap();
        assert_eq!(got.body_len, 5000);
        assert!(tier.remove(&got.hash).await.unwrap());
        assert_eq!(tier.stats().entries, 0);
        assert_eq!(tier.stats().bytes, 0);
    }

    #[tokio::test]
    async fn evicted_and_removed_bodies_are_freed_at_once() {
        let tier = MemoryTier::new(64 * 1024, 64 * 1024);
        let first = entry(0, 20_000);
        let first_alive = Arc::downgrade(&first);
        tier.put(first).await.unwrap();
        let removed = entry(1, 100);
        let removed_alive = Arc::downgrade(&removed);
        tier.put(removed).await.unwrap();
        assert!(tier.remove(&entry(1, 1).hash).await.unwrap());
        assert!(
            removed_alive.upgrade().is_none(),
            "removed, yet still allocated"
        );
        for n in 2..50 {
            tier.put(entry(n, 20_000)).await.unwrap();
        }
        assert!(tier.peek(&entry(0, 1).hash).is_none(), "evicted by now");
        assert!(
            first_alive.upgrade().is_none(),
            "evicted, yet still allocated"
        );
    }

    #[tokio::test]
    async fn distrusted_entries_are_dropped_on_read() {
        let tier = MemoryTier::new(1 << 20, 1 << 20);
        tier.put(entry(1, 100)).await.unwrap();
        tier.distrust_stored_before_now();
        tier.put(entry(2, 100)).await.unwrap();
        assert!(tier.get(&entry(1, 1).hash).await.unwrap().is_none());
        assert!(tier.get(&entry(2, 1).hash).await.unwrap().is_some());
        assert_eq!(tier.stats().entries, 1);
    }

    #[test]
    fn concurrent_changes_of_the_same_keys_keep_the_accounting_sound() {
        // Many threads storing and dropping the same few keys at once, as promotions from
        // Redis and invalidations do: TinyUFO alone underflows its weights under this.
        let tier = Arc::new(MemoryTier::new(64 * 1024, 16 * 1024));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let tier = tier.clone();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    rt.block_on(async {
                        for i in 0..3000u32 {
                            let e = entry(i % 3, 1000 + ((i + t) % 5) as usize * 3000);
                            if (i + t) % 4 == 0 {
                                tier.remove(&e.hash).await.unwrap();
                            } else {
                                tier.put(e).await.unwrap();
                            }
                        }
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic in the tier");
        }
        let stats = tier.stats_now();
        assert!(stats.entries <= 3, "{stats:?}");
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        // Still a working cache afterwards.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let e = entry(7, 100);
        rt.block_on(tier.put(e.clone())).unwrap();
        assert!(tier.peek(&e.hash).is_some());
    }
}

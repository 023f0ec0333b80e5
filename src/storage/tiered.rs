//! The one adapter between our tiers and pingora's `Storage`: lookups go fastest tier first
//! and promote what slower tiers hold; fills, revalidations and purges reach every tier.

use std::any::Any;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, warn};
use pingora::cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;
use pingora::Result;

use super::{Entry, EntryTimes, MemoryTier, RedisTier, Tier};
use crate::policy::validators;

/// Which tier answered a lookup; put in the returned meta's extensions for metrics and
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedFrom(pub &'static str);

/// Marks a response that is a copy of an entry another instance already put in the shared
/// tier (set by the proxy in the meta's extensions): it is stored in memory only.
#[derive(Debug, Clone, Copy)]
pub struct SharedCopy;

pub struct TieredStorage {
    /// Fastest first: memory, then Redis when configured.
    tiers: Vec<Arc<dyn Tier>>,
    memory: Arc<MemoryTier>,
    redis: Option<Arc<RedisTier>>,
}

impl TieredStorage {
    pub fn new(memory: Arc<MemoryTier>, redis: Option<Arc<RedisTier>>) -> TieredStorage {
        let mut tiers: Vec<Arc<dyn Tier>> = vec![memory.clone()];
        if let Some(r) = &redis {
            tiers.push(r.clone());
        }
        TieredStorage {
            tiers,
            memory,
            redis,
        }
    }

    pub fn tiers(&self) -> &[Arc<dyn Tier>] {
        &self.tiers
    }

    pub fn memory(&self) -> &Arc<MemoryTier> {
        &self.memory
    }

    pub fn redis(&self) -> Option<&Arc<RedisTier>> {
        self.redis.as_ref()
    }

    /// Removes (or, when `soft`, expires) an entry in every tier and tells every other
    /// instance to drop its memory copy. Returns whether any tier had it.
    pub async fn invalidate(&self, hash: &HashBinary, soft: bool) -> bool {
        let found = if soft {
            let now = SystemTime::now();
            self.rewrite(hash, |e| {
                let mut t = e.times;
                t.fresh_until = t.fresh_until.min(now);
                (t, e.header.clone())
            })
            .await
        } else {
            self.remove_all(hash).await
        };
        if let Some(r) = &self.redis {
            if let Err(e) = r.publish_invalidation(hash).await {
                warn!("could not tell other instances about an invalidation: {e}");
            }
        }
        found
    }

    /// Looks `hash` up in every tier, fastest first, without promoting (for operators).
    pub async fn find(&self, hash: &HashBinary) -> Vec<(&'static str, Option<Arc<Entry>>)> {
        let mut out = Vec::new();
        for tier in &self.tiers {
            out.push((tier.name(), tier.get(hash).await.ok().flatten()));
        }
        out
    }

    async fn put_all(&self, entry: Arc<Entry>, tiers: &[Arc<dyn Tier>]) -> bool {
        let mut stored = false;
        for tier in tiers {
            match tier.put(entry.clone()).await {
                Ok(super::Admission::Stored) => stored = true,
                Ok(super::Admission::TooLarge) => {
                    debug!(
                        "{} ({} bytes) too large for {}",
                        entry.key,
                        entry.body_len,
                        tier.name()
                    )
                }
                // Tier failures are logged once, as state changes, by the tier itself.
                Err(e) => debug!("cache write to {} failed: {e}", tier.name()),
            }
        }
        stored
    }

    async fn remove_all(&self, hash: &HashBinary) -> bool {
        let mut found = false;
        for tier in &self.tiers {
            match tier.remove(hash).await {
                Ok(true) => found = true,
                Ok(false) => {}
                Err(e) => debug!("cache removal from {} failed: {e}", tier.name()),
            }
        }
        found
    }

    /// The first copy of `hash` found, fastest tier first.
    async fn first(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
        for tier in &self.tiers {
            if let Ok(Some(e)) = tier.get(hash).await {
                return Some(e);
            }
        }
        None
    }

    /// Rewrites the times (and header) of a stored entry in every tier, keeping its body.
    async fn rewrite(
        &self,
        hash: &HashBinary,
        change: impl Fn(&Entry) -> (EntryTimes, ResponseHeader),
    ) -> bool {
        let Some(old) = self.first(hash).await else {
            return false;
        };
        let (times, header) = change(&old);
        let tiers = self.tiers.clone();
        self.put_all(Arc::new(old.with_times(times, header)), &tiers)
            .await
    }
}

fn target_hash(target: PurgeTarget<'_>) -> HashBinary {
    let key: &CompactCacheKey = target.key();
    key.primary
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = key.primary_bin();
        let now = SystemTime::now();
        let wanted = key.primary_key_str();
        for (i, tier) in self.tiers.iter().enumerate() {
            match tier.get(&hash).await {
                Ok(Some(entry)) if wanted.is_some_and(|k| k != entry.key) => {
                    warn!(
                        "{} holds {} under the hash of {:?}",
                        tier.name(),
                        entry.key,
                        wanted
                    );
                }
                Ok(Some(entry)) if entry.usable_until() >= now => {
                    if i > 0 {
                        self.put_all(entry.clone(), &self.tiers[..i]).await;
                    }
                    let mut meta = entry.meta();
                    meta.extensions_mut().insert(ServedFrom(tier.name()));
                    return Ok(Some((meta, Box::new(EntryHit::new(entry)))));
                }
                Ok(Some(_dead)) => {
                    // Past every serve-stale window: worthless, free the space now.
                    let _ = tier.remove(&hash).await;
                }
                Ok(None) => {}
                Err(e) => debug!("cache read from {} failed: {e}", tier.name()),
            }
        }
        Ok(None)
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Fill {
            storage: self,
            shared_copy: meta.extensions().get::<SharedCopy>().is_some(),
            key: key.primary_key_str().unwrap_or_default().to_string(),
            hash: key.primary_bin(),
            times: EntryTimes::of(meta),
            header: meta.response_header().clone(),
            body: Vec::new(),
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.invalidate(&target_hash(target), false).await {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn expire(
        &'static self,
        target: PurgeTarget<'_>,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.invalidate(&target_hash(target), true).await {
            PurgeOutcome::Expired
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let times = EntryTimes::of(meta);
        let header = meta.response_header().clone();
        Ok(self
            .rewrite(&key.primary_bin(), |_| (times, header.clone()))
            .await)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// Collects a response body, then stores the complete entry in every tier on `finish`.
/// Dropped without `finish` (an aborted or rejected fill), it stores nothing.
struct Fill {
    storage: &'static TieredStorage,
    /// Already in the shared tier (relayed from another instance's fill): memory only.
    shared_copy: bool,
    key: String,
    hash: HashBinary,
    times: EntryTimes,
    header: ResponseHeader,
    body: Vec<Bytes>,
}

#[async_trait]
impl HandleMiss for Fill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if !data.is_empty() {
            self.body.push(data);
        }
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let Fill {
            storage,
            shared_copy,
            key,
            hash,
            times,
            mut header,
            body,
        } = *self;
        validators::complete_stored_header(&mut header, &body);
        let entry = Arc::new(Entry::new(key, hash, times, header, body));
        let size = entry.size();
        let tiers = if shared_copy {
            &storage.tiers[..1]
        } else {
            &storage.tiers[..]
        };
        storage.put_all(entry, tiers).await;
        Ok(MissFinishType::Created(size))
    }
}

/// Serves one entry's body, optionally a byte range of it.
struct EntryHit {
    entry: Arc<Entry>,
    /// Next chunk to send.
    chunk: usize,
    /// Byte offset where `chunk` starts.
    offset: usize,
    /// Requested range [start, end).
    range: (usize, usize),
}

impl EntryHit {
    fn new(entry: Arc<Entry>) -> EntryHit {
        let len = entry.body_len;
        EntryHit {
            entry,
            chunk: 0,
            offset: 0,
            range: (0, len),
        }
    }
}

#[async_trait]
impl HandleHit for EntryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        let (start, end) = self.range;
        while let Some(chunk) = self.entry.body.get(self.chunk) {
            let chunk_start = self.offset;
            let chunk_end = chunk_start + chunk.len();
            self.chunk += 1;
            self.offset = chunk_end;
            if chunk_end <= start {
                continue;
            }
            if chunk_start >= end {
                return Ok(None);
            }
            let from = start.saturating_sub(chunk_start);
            let to = (end - chunk_start).min(chunk.len());
            return Ok(Some(chunk.slice(from..to)));
        }
        Ok(None)
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.entry.body_len;
        if start >= len && len > 0 {
            return pingora::Error::e_explain(
                pingora::ErrorType::InternalError,
                format!("seek start {start} beyond body length {len}"),
            );
        }
        self.range = (start, end.map_or(len, |e| e.min(len)));
        self.chunk = 0;
        self.offset = 0;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.entry.size()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

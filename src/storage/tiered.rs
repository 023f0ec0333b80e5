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

use super::{Entry, EntryTimes, Tier};
use crate::policy::validators;

/// Which tier answered a lookup; put in the returned meta's extensions for metrics and
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedFrom(pub &'static str);

pub struct TieredStorage {
    tiers: Vec<Arc<dyn Tier>>,
}

impl TieredStorage {
    /// `tiers` fastest first.
    pub fn new(tiers: Vec<Arc<dyn Tier>>) -> TieredStorage {
        TieredStorage { tiers }
    }

    pub fn tiers(&self) -> &[Arc<dyn Tier>] {
        &self.tiers
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
                Err(e) => warn!("cache write to {} failed: {e}", tier.name()),
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
                Err(e) => warn!("cache removal from {} failed: {e}", tier.name()),
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
        for (i, tier) in self.tiers.iter().enumerate() {
            match tier.get(&hash).await {
                Ok(Some(entry)) if entry.times.usable_until() >= now => {
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
        Ok(if self.remove_all(&target_hash(target)).await {
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
        let now = SystemTime::now();
        let found = self
            .rewrite(&target_hash(target), |e| {
                let mut t = e.times;
                t.fresh_until = t.fresh_until.min(now);
                (t, e.header.clone())
            })
            .await;
        Ok(if found {
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
            key,
            hash,
            times,
            mut header,
            body,
        } = *self;
        validators::complete_stored_header(&mut header, &body);
        let entry = Arc::new(Entry::new(key, hash, times, header, body));
        let size = entry.size();
        let tiers = storage.tiers.clone();
        storage.put_all(entry, &tiers).await;
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

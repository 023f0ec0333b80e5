//! The one adapter between our tiers and pingora's `Storage`: lookups go fastest tier first
//! and promote what slower tiers hold; fills, revalidations and purges reach every tier.

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};
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

use super::{Entry, EntryTimes, MemoryTier, RedisTier, TagIndex, Tier};
use crate::config::Config;
use crate::policy::{tags, validators};

/// Which tier answered the lookup that produced `hit` (for headers and metrics).
pub fn served_from(hit: &HitHandler) -> Option<&'static str> {
    hit.as_any().downcast_ref::<EntryHit>().map(|h| h.tier)
}

/// Marks a response that is a copy of an entry another instance already put in the shared
/// tier (set by the proxy in the meta's extensions): it is stored in memory only.
#[derive(Debug, Clone, Copy)]
pub struct SharedCopy;

/// What the proxy tells a fill about its entry (in the meta's extensions): the route, for
/// tags, and whether a changed body should refresh what depends on it.
#[derive(Clone)]
pub struct FillInfo {
    pub route: String,
    pub watch_changes: bool,
    pub config: Arc<Config>,
}

/// Set on a cache key by the proxy when its direct hit path has just looked the key up in
/// every tier and found nothing usable: the pingora lookup that follows at once asks memory
/// only, so a miss costs one Redis read, not two. Any later lookup of the same request
/// (after waiting for another request's fill) asks every tier again.
#[derive(Clone, Debug)]
pub struct JustLookedUp(Arc<AtomicBool>);

impl JustLookedUp {
    pub fn new() -> JustLookedUp {
        JustLookedUp(Arc::new(AtomicBool::new(true)))
    }

    fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Default for JustLookedUp {
    fn default() -> Self {
        JustLookedUp::new()
    }
}

pub struct TieredStorage {
    /// Fastest first: memory, then Redis when configured.
    tiers: Vec<Arc<dyn Tier>>,
    memory: Arc<MemoryTier>,
    redis: Option<Arc<RedisTier>>,
    pub index: Arc<TagIndex>,
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
            index: Arc::new(TagIndex::new(redis.clone())),
            redis,
        }
    }

    /// Purges each key (by its canonical form); returns those some tier held.
    pub async fn purge_keys(
        &self,
        keys: &[String],
        soft: bool,
        except: Option<&str>,
    ) -> Vec<String> {
        let mut purged = Vec::new();
        for k in keys {
            if except == Some(k.as_str()) {
                continue;
            }
            if self
                .invalidate(&pingora::cache::key::hash_key(k), soft)
                .await
            {
                purged.push(k.clone());
            }
            if !soft {
                self.index.forget(k);
            }
        }
        purged
    }

    /// Purges every key carrying one of `tags` (already expanded by dependency rules), and
    /// tells other instances to drop what their own index has under those tags.
    pub async fn purge_tags(
        &self,
        tags: &[String],
        soft: bool,
        except: Option<&str>,
    ) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for t in tags {
            keys.extend(self.index.keys(t).await);
            if let Some(r) = &self.redis {
                let _ = r.publish(&format!("t:{t}")).await;
            }
        }
        keys.sort();
        keys.dedup();
        self.purge_keys(&keys, soft, except).await
    }

    /// Purges every key matching `pattern` among the keys of `routes` (never a scan).
    pub async fn purge_glob(
        &self,
        pattern: &str,
        routes: &[String],
        soft: bool,
    ) -> Result<Vec<String>, String> {
        let glob = crate::glob::compile(pattern)?;
        let mut keys: Vec<String> = self.index.local_all();
        for r in routes {
            keys.extend(self.index.keys(&crate::policy::tags::route_tag(r)).await);
        }
        keys.retain(|k| glob.is_match(k));
        keys.sort();
        keys.dedup();
        if let Some(r) = &self.redis {
            let _ = r.publish(&format!("g:{pattern}")).await;
        }
        Ok(self.purge_keys(&keys, soft, None).await)
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

    /// The first usable copy of `hash` (one inside some serve-stale window), fastest tier
    /// first, and the name of the tier that held it. What a slower tier holds is promoted to
    /// the faster ones, so the next lookup finds it there; what is past every window is
    /// removed. Both pingora's lookup and the proxy's direct hit path go through here.
    pub async fn find_usable(
        &self,
        hash: &HashBinary,
        wanted: Option<&str>,
        now: SystemTime,
        memory_only: bool,
    ) -> Option<(Arc<Entry>, &'static str)> {
        let asked = if memory_only { 1 } else { self.tiers.len() };
        for (i, tier) in self.tiers[..asked].iter().enumerate() {
            // Memory answers synchronously: no boxed future on the hottest path.
            let got = if i == 0 {
                Ok(self.memory.peek(hash))
            } else {
                tier.get(hash).await
            };
            match got {
                Ok(Some(entry)) if wanted.is_some_and(|k| k != entry.key) => {
                    warn!(
                        "{} holds {} under the hash of {:?}",
                        tier.name(),
                        entry.key,
                        wanted
                    );
                }
                Ok(Some(entry)) if entry.usable_until() >= now => {
                    // Memory held no usable copy (it was asked first), so an entry it cannot
                    // keep needs no write there, not even the removal a refused put makes.
                    if i > 0 && self.memory.admits(entry.size()) {
                        self.put_all(entry.clone(), &self.tiers[..i]).await;
                    }
                    return Some((entry, tier.name()));
                }
                Ok(Some(_dead)) => {
                    // Past every serve-stale window: worthless, free the space now.
                    let _ = tier.remove(hash).await;
                }
                Ok(None) => {}
                Err(e) => debug!("cache read from {} failed: {e}", tier.name()),
            }
        }
        None
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
        let memory_only = key
            .extensions
            .get::<JustLookedUp>()
            .is_some_and(JustLookedUp::take);
        let Some((entry, tier)) = self
            .find_usable(&hash, key.primary_key_str(), SystemTime::now(), memory_only)
            .await
        else {
            return Ok(None);
        };
        let meta = entry.meta();
        Ok(Some((meta, Box::new(EntryHit::new(entry, tier)))))
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
            info: meta.extensions().get::<FillInfo>().cloned(),
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
    info: Option<FillInfo>,
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
            info,
            key,
            hash,
            times,
            mut header,
            body,
        } = *self;
        let mut entry_tags = Vec::new();
        let mut body_tags = Vec::new();
        if let Some(i) = &info {
            entry_tags.push(tags::route_tag(&i.route));
            // JSON arrays (lists, details, media) name their properties: `property:N` tags.
            if tags::looks_like_json_array(&body) {
                body_tags = tags::body_tags(&body);
                entry_tags.extend(body_tags.iter().cloned());
            }
        }
        let previous = match &info {
            Some(i) if i.watch_changes => storage.first(&hash).await,
            _ => None,
        };
        validators::complete_stored_header(&mut header, &body);
        let len: usize = body.iter().map(Bytes::len).sum();
        // What memory keeps, it keeps in one exact-size buffer: the chunks as read from the
        // upstream may hold on to larger read buffers, and a hit then needs one write.
        let body = if body.len() > 1 && storage.memory.admits(len) {
            let mut one = Vec::with_capacity(len);
            for chunk in &body {
                one.extend_from_slice(chunk);
            }
            vec![Bytes::from(one)]
        } else if body.len() == 1 && storage.memory.admits(len) {
            vec![Bytes::copy_from_slice(&body[0])]
        } else {
            body
        };
        let entry = Arc::new(Entry::new(key, hash, times, header, body));
        let size = entry.size();
        let tiers = if shared_copy {
            &storage.tiers[..1]
        } else {
            &storage.tiers[..]
        };
        storage.put_all(entry.clone(), tiers).await;
        if !entry_tags.is_empty() {
            storage
                .index
                .add(&entry.key, &entry_tags, entry.usable_until(), !shared_copy)
                .await;
        }
        if let (Some(old), Some(i)) = (previous, info) {
            if validators::etag(&old.header) != validators::etag(&entry.header)
                && !body_tags.is_empty()
            {
                // Rentman has no webhooks: a changed detail is how we learn that the lists
                // showing this property are out of date. They refresh while still served.
                let spread = tags::expand(&body_tags, &i.config.dependencies);
                log::info!("{} changed: soft-purging {}", entry.key, spread.join(", "));
                let key = entry.key.clone();
                tokio::spawn(async move {
                    storage.purge_tags(&spread, true, Some(&key)).await;
                });
            }
        }
        Ok(MissFinishType::Created(size))
    }
}

/// Serves one entry's body, optionally a byte range of it.
struct EntryHit {
    entry: Arc<Entry>,
    tier: &'static str,
    /// Next chunk to send.
    chunk: usize,
    /// Byte offset where `chunk` starts.
    offset: usize,
    /// Requested range [start, end).
    range: (usize, usize),
}

impl EntryHit {
    fn new(entry: Arc<Entry>, tier: &'static str) -> EntryHit {
        let len = entry.body_len;
        EntryHit {
            entry,
            tier,
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

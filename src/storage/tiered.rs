//! The tiers as one store: lookups go fastest tier first and promote what slower tiers
//! hold; fills, revalidations and purges reach every tier.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use log::{debug, warn};
use pingora::cache::key::HashBinary;
use pingora::http::ResponseHeader;

use super::{Entry, EntryTimes, MemoryTier, RedisTier, TagIndex, Tier};
use crate::config::Config;
use crate::policy::{tags, validators};

/// What a fill tells the store about its entry: the route, for tags, and whether a changed
/// body should refresh what depends on it.
pub struct StoreInfo<'a> {
    pub route: &'a str,
    pub watch_changes: bool,
    pub config: &'a Arc<Config>,
    /// A copy of what another instance already put in the shared tier: memory only.
    pub shared_copy: bool,
}

/// Which tiers kept an entry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kept {
    pub memory: bool,
    pub redis: bool,
}

impl Kept {
    fn add(&mut self, tier: &str) {
        match tier {
            "memory" => self.memory = true,
            _ => self.redis = true,
        }
    }

    pub fn any(self) -> bool {
        self.memory || self.redis
    }

    /// The fastest tier that kept it.
    pub fn first(self) -> Option<&'static str> {
        if self.memory {
            Some("memory")
        } else if self.redis {
            Some("redis")
        } else {
            None
        }
    }
}

pub struct TieredStorage {
    /// Fastest first: memory, then Redis when configured.
    tiers: Vec<Arc<dyn Tier>>,
    /// Told of every purge made here (not of other instances' purges, which their own
    /// instance tells), so that outer caches drop what is purged.
    outer: std::sync::OnceLock<Arc<dyn super::PurgeSink>>,
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
            outer: std::sync::OnceLock::new(),
            memory,
            index: Arc::new(TagIndex::new(redis.clone())),
            redis,
        }
    }

    /// Sends every later purge to `sink` as well (set once, at start).
    pub fn purge_outer_caches_with(&self, sink: Arc<dyn super::PurgeSink>) {
        let _ = self.outer.set(sink);
    }

    fn tell_outer(&self, tags: &[String], keys: &[String], soft: bool) {
        let Some(sink) = self.outer.get() else {
            return;
        };
        if tags.is_empty() && keys.is_empty() {
            return;
        }
        sink.purge(super::OuterPurge {
            tags: tags.to_vec(),
            keys: keys
                .iter()
                .map(|k| (k.clone(), tags::key_tag(&pingora::cache::key::hash_key(k))))
                .collect(),
            soft,
        });
    }

    /// Purges each key (by its canonical form), here and in outer caches; returns those some
    /// tier held.
    pub async fn purge_keys(
        &self,
        keys: &[String],
        soft: bool,
        except: Option<&str>,
    ) -> Vec<String> {
        let kept: Vec<String> = keys
            .iter()
            .filter(|k| except != Some(k.as_str()))
            .cloned()
            .collect();
        self.tell_outer(&[], &kept, soft);
        self.purge_keys_here(keys, soft, except).await
    }

    async fn purge_keys_here(
        &self,
        keys: &[String],
        soft: bool,
        except: Option<&str>,
    ) -> Vec<String> {
        let mut purged = Vec::new();
        let mut queue: Vec<String> = keys.to_vec();
        while let Some(k) = queue.pop() {
            if except == Some(k.as_str()) {
                continue;
            }
            let hash = pingora::cache::key::hash_key(&k);
            // A URL whose answers vary: its variants go with it.
            if let Some(index) = self.first(&hash).await.and_then(|e| e.vary.clone()) {
                queue.extend(index.variants.iter().filter(|v| **v != k).cloned());
            }
            if self.invalidate(&hash, soft).await {
                purged.push(k.clone());
            }
            if !soft {
                self.index.forget(&k);
            }
        }
        purged.sort();
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
        let purged = self.purge_keys_here(&keys, soft, except).await;
        self.tell_outer(tags, &purged, soft);
        purged
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
        let purged = self.purge_keys_here(&keys, soft, None).await;
        self.tell_outer(&[], &purged, soft);
        Ok(purged)
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
    ) -> Option<(Arc<Entry>, &'static str)> {
        for (i, tier) in self.tiers.iter().enumerate() {
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
                    let entry = if i > 0 && self.memory.admits(entry.size()) {
                        let entry = self.sealed(entry).await;
                        let faster = self.tiers.get(..i).unwrap_or_default();
                        self.put_all(entry.clone(), faster).await;
                        entry
                    } else {
                        entry
                    };
                    return Some((entry, tier.name()));
                }
                Ok(Some(dead)) if i == 0 => {
                    // Past every serve-stale window: worthless, free the space now (unless
                    // a newer copy took its place meanwhile). Redis lets its copies expire.
                    self.memory.drop_if_current(&dead);
                }
                Ok(Some(_)) => {}
                Ok(None) => {}
                Err(e) => debug!("cache read from {} failed: {e}", tier.name()),
            }
        }
        None
    }

    /// Stores a complete answer in every tier it fits, indexes its tags, and, when the route
    /// watches changes and the body differs from the stored one, soft-purges what shows it.
    /// Returns the entry as stored (its body in one buffer where memory keeps it) and the
    /// tiers that kept it.
    pub async fn store(&'static self, entry: Entry, info: StoreInfo<'_>) -> (Arc<Entry>, Kept) {
        let mut entry_tags = vec![tags::route_tag(info.route)];
        // JSON arrays (lists, details, media) name their properties: `property:N` tags.
        let body_tags = if tags::looks_like_json_array(&entry.body) {
            tags::body_tags(&entry.body)
        } else {
            Vec::new()
        };
        entry_tags.extend(body_tags.iter().cloned());
        // Tags the entry brings (a file made from a JSON answer keeps that answer's).
        for t in &entry.tags {
            if !entry_tags.contains(t) {
                entry_tags.push(t.clone());
            }
        }
        let previous = match info.watch_changes {
            true => self.first(&entry.hash).await,
            false => None,
        };
        let entry = Arc::new(self.compacted(entry).await.with_tags(entry_tags.clone()));
        let tiers = if info.shared_copy {
            self.tiers.get(..1).unwrap_or_default()
        } else {
            &self.tiers[..]
        };
        let kept = self.put_all(entry.clone(), tiers).await;
        if kept.any() {
            self.index
                .add(
                    &entry.key,
                    &entry_tags,
                    entry.usable_until(),
                    !info.shared_copy,
                )
                .await;
        }
        if let Some(old) = previous {
            if validators::etag(&old.header) != validators::etag(&entry.header)
                && !body_tags.is_empty()
            {
                // Rentman has no webhooks: a changed detail is how we learn that the lists
                // showing this property are out of date. They refresh while still served.
                let spread = tags::expand(&body_tags, &info.config.dependencies);
                log::info!("{} changed: soft-purging {}", entry.key, spread.join(", "));
                let key = entry.key.clone();
                tokio::spawn(async move {
                    self.purge_tags(&spread, true, Some(&key)).await;
                });
            }
        }
        (entry, kept)
    }

    /// `compact`, with a body large enough for its copy and file write to hold a worker
    /// thread away from other connections done on the blocking pool instead.
    async fn compacted(&self, entry: Entry) -> Entry {
        if entry.body_len < OFF_WORKERS_BYTES || !self.memory.admits(entry.body_len) {
            return compact(&self.memory, entry);
        }
        // The entry's parts again (reference counts), for the unexpected case of the
        // blocking task failing: the body is then stored as it came.
        let fallback = entry.with_times(entry.times, entry.header.clone());
        let memory = self.memory.clone();
        match tokio::task::spawn_blocking(move || compact(&memory, entry)).await {
            Ok(entry) => entry,
            Err(e) => {
                warn!("keeping {} in one buffer failed: {e}", fallback.key);
                fallback
            }
        }
    }

    /// Renews a stored entry confirmed by the upstream (a 304): new times and header, the
    /// same body, in every tier.
    pub async fn renew(
        &self,
        old: &Entry,
        times: EntryTimes,
        header: ResponseHeader,
    ) -> (Arc<Entry>, Kept) {
        let entry = Arc::new(old.with_times(times, header));
        let tiers = self.tiers.clone();
        let kept = self.put_all(entry.clone(), &tiers).await;
        (entry, kept)
    }

    /// Keeps a copy another instance stored (in Redis already) in memory too.
    pub async fn promote(&self, entry: Arc<Entry>) {
        if self.memory.admits(entry.size()) {
            let _ = self.memory.put(self.sealed(entry).await).await;
        }
    }

    /// A copy read from a slower tier as memory keeps it: a large body in a memory file,
    /// like the bodies this instance stores itself.
    async fn sealed(&self, entry: Arc<Entry>) -> Arc<Entry> {
        if entry.file.is_some() || entry.body_len < super::shared_body::MIN_BYTES {
            return entry;
        }
        let copy = entry.with_times(entry.times, entry.header.clone());
        Arc::new(self.compacted(copy).await)
    }

    async fn put_all(&self, entry: Arc<Entry>, tiers: &[Arc<dyn Tier>]) -> Kept {
        let mut kept = Kept::default();
        for tier in tiers {
            match tier.put(entry.clone()).await {
                Ok(super::Admission::Stored) => kept.add(tier.name()),
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
        kept
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
    pub async fn first(&self, hash: &HashBinary) -> Option<Arc<Entry>> {
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
            .any()
    }
}

/// Bodies at least this large are copied, and written to their file, on the blocking pool.
const OFF_WORKERS_BYTES: usize = 256 * 1024;

/// What memory keeps, it keeps in one exact-size buffer: the chunks as read from the
/// upstream may hold on to larger read buffers, and a hit then needs one write.
fn compact(memory: &MemoryTier, entry: Entry) -> Entry {
    if !memory.admits(entry.body_len) {
        return entry;
    }
    // A large body goes into a file: one copy, sent with `sendfile`.
    if entry.body_len >= super::shared_body::MIN_BYTES {
        let whole = entry.body.concat();
        if let Some((bytes, file)) = super::shared_body::seal(&whole, memory.body_dir()) {
            return Entry {
                body: vec![bytes],
                file: Some(file),
                ..entry
            };
        }
        return Entry {
            body: vec![Bytes::from(whole)],
            ..entry
        };
    }
    let body = match entry.body.as_slice() {
        [one] => vec![Bytes::copy_from_slice(one)],
        many => {
            let mut one = Vec::with_capacity(entry.body_len);
            for chunk in many {
                one.extend_from_slice(chunk);
            }
            vec![Bytes::from(one)]
        }
    };
    Entry { body, ..entry }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body over `OFF_WORKERS_BYTES` is made one buffer (in a file) on the blocking pool
    /// and stored whole; a smaller large body on the worker, the same way.
    #[test]
    fn large_bodies_are_kept_whole_in_files_whichever_thread_makes_them() {
        let routes = "routes:\n  - name: a\n    match: {path: /a}\n    ttl: 5m\n";
        let config = Arc::new(crate::config::parse_str(routes, "t.yaml").unwrap());
        let memory = Arc::new(MemoryTier::new(64 << 20, 8 << 20));
        let storage: &'static TieredStorage = Box::leak(Box::new(TieredStorage::new(memory, None)));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for (i, len) in [20_000usize, OFF_WORKERS_BYTES + 1, 3 << 20]
            .into_iter()
            .enumerate()
        {
            let data: Vec<u8> = (0..len).map(|j| (j % 251) as u8).collect();
            // In chunks, as the upstream delivers them.
            let chunks: Vec<Bytes> = data.chunks(16_384).map(Bytes::copy_from_slice).collect();
            let key = format!("k{i}");
            let mut entry =
                Entry::for_test(&key, ResponseHeader::build(200, None).unwrap(), chunks);
            entry.hash = [i as u8 + 1; 16];
            entry.times.fresh_until += std::time::Duration::from_secs(300);
            let info = StoreInfo {
                route: "a",
                watch_changes: false,
                config: &config,
                shared_copy: false,
            };
            let (stored, kept) = rt.block_on(storage.store(entry, info));
            assert!(kept.memory, "{len}");
            assert!(stored.file.is_some(), "{len} bytes in a file");
            assert_eq!(stored.body.len(), 1, "{len} bytes in one buffer");
            assert_eq!(&stored.body[0][..], &data[..], "{len} bytes whole");
            let found =
                rt.block_on(storage.find_usable(&[i as u8 + 1; 16], Some(&key), SystemTime::now()));
            let (found, tier) = found.expect("found");
            assert_eq!(tier, "memory");
            assert_eq!(&found.body[0][..], &data[..]);
        }
    }
}

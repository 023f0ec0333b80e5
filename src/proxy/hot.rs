//! Hits per key: for refresh-ahead (a key hit at least `hot_threshold` times during its
//! current lifetime is refreshed in the background shortly before it expires, so that
//! visitors never see it stale) and for the operators' top-keys list.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use pingora::cache::key::HashBinary;

use crate::config::RefreshAhead;

/// Shards keep hits on different keys from contending on one lock.
const SHARDS: usize = 32;
/// Above this many keys in a shard, entries for lifetimes long gone are swept.
const SWEEP_ABOVE: usize = 4096;

struct Heat {
    key: String,
    /// Which lifetime of the entry the count is for (its last fill or revalidation).
    lifetime: SystemTime,
    hits: u32,
    /// Hits over every lifetime.
    total: u64,
    refreshing: bool,
}

/// Keys are already uniform 128-bit hashes: their first 8 bytes are a perfectly good hash.
#[derive(Default)]
struct Prehashed(u64);

impl std::hash::Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        if let Some(first) = bytes.first_chunk::<8>() {
            self.0 = u64::from_le_bytes(*first);
        }
    }

    fn write_usize(&mut self, _: usize) {}
}

type HeatMap = HashMap<HashBinary, Heat, std::hash::BuildHasherDefault<Prehashed>>;

pub struct HotKeys {
    shards: Vec<Mutex<HeatMap>>,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HeatMap::default()))
                .collect(),
        }
    }
}

impl HotKeys {
    /// Counts a hit on a stored entry; true when this hit should start the key's refresh
    /// (`can_refresh`: the entry is fresh and its route serves stale while revalidating).
    #[allow(clippy::too_many_arguments)]
    pub fn hit(
        &self,
        hash: &HashBinary,
        key: &str,
        lifetime: SystemTime,
        fresh_until: SystemTime,
        ttl: Duration,
        cfg: &RefreshAhead,
        can_refresh: bool,
        now: SystemTime,
    ) -> bool {
        let Some(shard) = self.shards.get(usize::from(hash[15]) % SHARDS) else {
            return false;
        };
        let mut shard = shard.lock();
        if shard.len() > SWEEP_ABOVE {
            shard.retain(|_, h| {
                now.duration_since(h.lifetime)
                    .is_ok_and(|age| age < Duration::from_secs(86_400))
            });
        }
        let heat = shard.entry(*hash).or_insert_with(|| Heat {
            key: key.to_string(),
            lifetime,
            hits: 0,
            total: 0,
            refreshing: false,
        });
        if heat.lifetime != lifetime {
            heat.lifetime = lifetime;
            heat.hits = 0;
            heat.refreshing = false;
        }
        heat.hits = heat.hits.saturating_add(1);
        heat.total += 1;
        if !can_refresh || cfg.hot_threshold == 0 {
            return false;
        }
        let lead = cfg.lead.min(ttl / 2);
        let near_expiry = fresh_until
            .duration_since(now)
            .map_or(true, |left| left <= lead);
        if !heat.refreshing && heat.hits >= cfg.hot_threshold && near_expiry {
            heat.refreshing = true;
            return true;
        }
        false
    }
}

impl HotKeys {
    /// The `n` keys with the most hits, most first: (key, hash, hits).
    pub fn top(&self, n: usize) -> Vec<(String, HashBinary, u64)> {
        let mut all: Vec<(String, HashBinary, u64)> = self
            .shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .iter()
                    .map(|(h, heat)| (heat.key.clone(), *h, heat.total))
                    .collect::<Vec<_>>()
            })
            .collect();
        all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_once_per_lifetime_when_hot_and_near_expiry() {
        let hot = HotKeys::default();
        let cfg = RefreshAhead {
            hot_threshold: 3,
            lead: Duration::from_secs(10),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ttl = Duration::from_secs(60);
        let until = t0 + ttl;
        let h = [7u8; 16];
        // Hot early on, but not near expiry yet.
        for _ in 0..5 {
            assert!(!hot.hit(
                &h,
                "k",
                t0,
                until,
                ttl,
                &cfg,
                true,
                t0 + Duration::from_secs(1)
            ));
        }
        let late = until - Duration::from_secs(5);
        assert!(hot.hit(&h, "k", t0, until, ttl, &cfg, true, late));
        assert!(
            !hot.hit(&h, "k", t0, until, ttl, &cfg, true, late),
            "only once"
        );
        // A new lifetime starts cold again.
        let t1 = until;
        let until1 = t1 + ttl;
        let late1 = until1 - Duration::from_secs(5);
        assert!(!hot.hit(&h, "k", t1, until1, ttl, &cfg, true, late1));
        assert!(!hot.hit(&h, "k", t1, until1, ttl, &cfg, true, late1));
        assert!(hot.hit(&h, "k", t1, until1, ttl, &cfg, true, late1));
        // Off when the threshold is 0.
        let off = RefreshAhead {
            hot_threshold: 0,
            lead: Duration::from_secs(10),
        };
        assert!(!hot.hit(&[8u8; 16], "j", t0, until, ttl, &off, true, late));
        let top = hot.top(1);
        assert_eq!(top[0].0, "k");
        assert_eq!(top[0].2, 10);
    }
}

//! Hot keys, for refresh-ahead: a key hit at least `hot_threshold` times during its current
//! lifetime is refreshed in the background shortly before it expires, so that visitors never
//! see it stale.

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
    /// Which lifetime of the entry the count is for (its last fill or revalidation).
    lifetime: SystemTime,
    hits: u32,
    refreshing: bool,
}

pub struct HotKeys {
    shards: Vec<Mutex<HashMap<HashBinary, Heat>>>,
}

impl Default for HotKeys {
    fn default() -> Self {
        HotKeys {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl HotKeys {
    /// Counts a fresh hit; true when this hit should start the key's refresh.
    pub fn hit(
        &self,
        hash: &HashBinary,
        lifetime: SystemTime,
        fresh_until: SystemTime,
        ttl: Duration,
        cfg: &RefreshAhead,
        now: SystemTime,
    ) -> bool {
        if cfg.hot_threshold == 0 {
            return false;
        }
        let mut shard = self.shards[hash[0] as usize % SHARDS].lock();
        if shard.len() > SWEEP_ABOVE {
            shard.retain(|_, h| {
                now.duration_since(h.lifetime)
                    .is_ok_and(|age| age < Duration::from_secs(86_400))
            });
        }
        let heat = shard.entry(*hash).or_insert(Heat {
            lifetime,
            hits: 0,
            refreshing: false,
        });
        if heat.lifetime != lifetime {
            *heat = Heat {
                lifetime,
                hits: 0,
                refreshing: false,
            };
        }
        heat.hits = heat.hits.saturating_add(1);
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
            assert!(!hot.hit(&h, t0, until, ttl, &cfg, t0 + Duration::from_secs(1)));
        }
        let late = until - Duration::from_secs(5);
        assert!(hot.hit(&h, t0, until, ttl, &cfg, late));
        assert!(!hot.hit(&h, t0, until, ttl, &cfg, late), "only once");
        // A new lifetime starts cold again.
        let t1 = until;
        let until1 = t1 + ttl;
        let late1 = until1 - Duration::from_secs(5);
        assert!(!hot.hit(&h, t1, until1, ttl, &cfg, late1));
        assert!(!hot.hit(&h, t1, until1, ttl, &cfg, late1));
        assert!(hot.hit(&h, t1, until1, ttl, &cfg, late1));
        // Off when the threshold is 0.
        let off = RefreshAhead {
            hot_threshold: 0,
            lead: Duration::from_secs(10),
        };
        assert!(!hot.hit(&[8u8; 16], t0, until, ttl, &off, late));
    }
}

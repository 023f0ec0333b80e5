//! Which keys carry which tags, so that purges by tag or by pattern never scan storage.
//!
//! Every instance keeps a local index of what it stored; with Redis, a shared index lives
//! there too (a sorted set per tag, members scored by expiry, trimmed as it is written, and
//! expiring with its last member). A purge takes the union of both.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::warn;
use parking_lot::Mutex;

use super::RedisTier;

/// Keys beyond this many are not indexed locally (a warning says so once).
const MAX_LOCAL_KEYS: usize = 1_000_000;
/// Expired keys are swept from the local index every this many additions.
const SWEEP_EVERY: u64 = 1024;

#[derive(Default)]
struct Local {
    by_tag: HashMap<String, HashSet<String>>,
    by_key: HashMap<String, (Vec<String>, SystemTime)>,
    additions: u64,
    full_warned: bool,
}

impl Local {
    fn unlink(&mut self, key: &str) {
        if let Some((tags, _)) = self.by_key.remove(key) {
            for t in tags {
                if let Some(set) = self.by_tag.get_mut(&t) {
                    set.remove(key);
                    if set.is_empty() {
                        self.by_tag.remove(&t);
                    }
                }
            }
        }
    }

    fn sweep(&mut self, now: SystemTime) {
        let dead: Vec<String> = self
            .by_key
            .iter()
            .filter(|(_, (_, until))| *until < now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in dead {
            self.unlink(&k);
        }
    }
}

pub struct TagIndex {
    local: Mutex<Local>,
    redis: Option<Arc<RedisTier>>,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

impl TagIndex {
    pub fn new(redis: Option<Arc<RedisTier>>) -> TagIndex {
        TagIndex {
            local: Mutex::new(Local::default()),
            redis,
        }
    }

    /// Records that `key` (stored until `until`) carries `tags`, locally and, when `shared`,
    /// in Redis.
    pub async fn add(&self, key: &str, tags: &[String], until: SystemTime, shared: bool) {
        {
            let mut l = self.local.lock();
            l.additions += 1;
            if l.additions.is_multiple_of(SWEEP_EVERY) {
                l.sweep(SystemTime::now());
            }
            l.unlink(key);
            if l.by_key.len() >= MAX_LOCAL_KEYS {
                if !l.full_warned {
                    l.full_warned = true;
                    warn!("local tag index is full ({MAX_LOCAL_KEYS} keys): newer keys are not indexed here");
                }
            } else {
                for t in tags {
                    l.by_tag
                        .entry(t.clone())
                        .or_default()
                        .insert(key.to_string());
                }
                l.by_key.insert(key.to_string(), (tags.to_vec(), until));
            }
        }
        if let (Some(r), true) = (&self.redis, shared) {
            r.index_add(key, tags, epoch_ms(until)).await;
        }
    }

    /// Live keys carrying `tag`, here and in Redis.
    pub async fn keys(&self, tag: &str) -> Vec<String> {
        let now = SystemTime::now();
        let mut keys: HashSet<String> = {
            let l = self.local.lock();
            l.by_tag
                .get(tag)
                .map(|set| {
                    set.iter()
                        .filter(|k| l.by_key.get(*k).is_some_and(|(_, until)| *until >= now))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        if let Some(r) = &self.redis {
            keys.extend(r.index_keys(tag, epoch_ms(now)).await);
        }
        let mut v: Vec<String> = keys.into_iter().collect();
        v.sort();
        v
    }

    /// Keys indexed locally that carry `tag` (for invalidation messages from elsewhere).
    pub fn local_keys(&self, tag: &str) -> Vec<String> {
        let l = self.local.lock();
        l.by_tag
            .get(tag)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Every key indexed locally (for pattern purges).
    pub fn local_all(&self) -> Vec<String> {
        self.local.lock().by_key.keys().cloned().collect()
    }

    /// The tags of `key`, from here or from Redis.
    pub async fn tags_of(&self, key: &str, hash: &pingora::cache::key::HashBinary) -> Vec<String> {
        let local = self.local.lock().by_key.get(key).map(|(t, _)| t.clone());
        match local {
            Some(t) => t,
            None => match &self.redis {
                Some(r) => r.index_tags(hash).await,
                None => Vec::new(),
            },
        }
    }

    pub fn forget(&self, key: &str) {
        self.local.lock().unlink(key);
    }

    /// Live keys per tag, for stats.
    pub fn local_len(&self) -> usize {
        self.local.lock().by_key.len()
    }
}

/// How long a tag set outlives a member that just expired (a little slack for clocks).
pub const TAG_SET_SLACK: Duration = Duration::from_secs(60);

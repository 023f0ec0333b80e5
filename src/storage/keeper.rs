//! Keeps the Redis tier usable and the memory tiers of all instances coherent: connects,
//! probes while Redis is down (so requests never wait on it), listens for invalidations
//! published by any instance, and acknowledges purge markers (see `acks.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::invalidation::{self, Invalidation};
use super::redis::{connect, pubsub_urls, RedisTier};
use super::{MemoryTier, TagIndex};

/// How often a down Redis is probed, and an up one checked.
const PROBE_DOWN: Duration = Duration::from_millis(500);
const PROBE_UP: Duration = Duration::from_secs(2);

pub struct RedisKeeper {
    pub redis: Arc<RedisTier>,
    pub memory: Arc<MemoryTier>,
    pub index: Arc<TagIndex>,
    subscribed: Arc<AtomicBool>,
    /// Whether the last subscription attempt failed (to log failures once, not per retry).
    failing: AtomicBool,
}

impl RedisKeeper {
    pub fn new(
        redis: Arc<RedisTier>,
        memory: Arc<MemoryTier>,
        index: Arc<TagIndex>,
    ) -> RedisKeeper {
        RedisKeeper {
            memory,
            index,
            subscribed: redis.subscribed.clone(),
            failing: AtomicBool::new(false),
            redis,
        }
    }

    async fn keep_connected(&self) {
        if !self.redis.has_connection() {
            match connect(self.redis.config()).await {
                Ok(conn) => {
                    self.redis.set_connection(conn);
                    self.redis.mark_up();
                }
                Err(e) => self.redis.mark_down(&e.to_string()),
            }
            return;
        }
        match self.redis.ping().await {
            Ok(()) => self.redis.mark_up(),
            Err(e) => self.redis.mark_down(&e),
        }
    }

    /// Subscribes to the invalidation channel on the first node that accepts.
    async fn subscribe(&self) -> Result<(), String> {
        let channel = self.redis.channel();
        let cfg = self.redis.config();
        let mut last_err = String::from("no node");
        for url in pubsub_urls(cfg) {
            let attempt = async {
                let client = redis::Client::open(url.as_str())?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(cfg.connect_timeout, attempt).await {
                Ok(Ok(pubsub)) => {
                    // Invalidations sent while we were not listening are lost: whatever
                    // memory holds from before now can no longer be trusted.
                    self.memory.distrust_stored_before_now();
                    self.subscribed.store(true, Ordering::Release);
                    info!("listening for invalidations on {channel}");
                    let memory = self.memory.clone();
                    let index = self.index.clone();
                    let redis = self.redis.clone();
                    let flag = self.subscribed.clone();
                    tokio::spawn(async move {
                        let mut messages = pubsub.into_on_message();
                        while let Some(msg) = messages.next().await {
                            if let Some(id) = apply(&memory, &index, msg.get_payload_bytes()) {
                                // Everything before the marker is applied: the purge that
                                // sent it may answer. Acknowledged aside, so that a slow
                                // Redis does not hold up the messages that follow.
                                let redis = redis.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = redis.acknowledge(&id).await {
                                        warn!("could not acknowledge a purge: {e}");
                                    }
                                });
                            }
                        }
                        flag.store(false, Ordering::Release);
                        warn!("lost the invalidation subscription; will resubscribe");
                    });
                    return Ok(());
                }
                Ok(Err(e)) => last_err = e.to_string(),
                Err(_) => last_err = "timed out".into(),
            }
        }
        Err(last_err)
    }
}

/// Applies one invalidation message to this instance's memory tier (see `invalidation.rs`);
/// one that cannot be read is ignored with a warning. Returns the id of a purge's marker,
/// which this instance acknowledges.
fn apply(memory: &MemoryTier, index: &TagIndex, payload: &[u8]) -> Option<String> {
    let drop_keys = |keys: Vec<String>| {
        for k in keys {
            memory.drop_local(&pingora::cache::key::hash_key(&k));
        }
    };
    match invalidation::parse(payload) {
        Ok(Invalidation::Marker(id)) => return Some(id),
        Ok(Invalidation::All) => memory.distrust_stored_before_now(),
        Ok(Invalidation::Tag(tag)) => drop_keys(index.local_keys(&tag)),
        Ok(Invalidation::Glob(m)) => drop_keys(
            index
                .local_all()
                .into_iter()
                .filter(|k| m.is_match(k))
                .collect(),
        ),
        Ok(Invalidation::Key(hash)) => memory.drop_local(&hash),
        Err(e) => warn!(
            "ignoring an invalidation message ({e}): {}",
            invalidation::excerpt(payload)
        ),
    }
    None
}

#[async_trait]
impl BackgroundService for RedisKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            self.keep_connected().await;
            if self.redis.is_up() && !self.subscribed.load(Ordering::Acquire) {
                match self.subscribe().await {
                    Ok(()) => self.failing.store(false, Ordering::Relaxed),
                    Err(e) => {
                        if !self.failing.swap(true, Ordering::Relaxed) {
                            warn!("cannot subscribe to invalidations yet ({e}); retrying");
                        }
                    }
                }
            }
            let wait = if self.redis.is_up() {
                PROBE_UP
            } else {
                PROBE_DOWN
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Invalidation messages on generated bytes: applied or refused, never a panic
/// (`PROPTEST_CASES` sets how many; `bench/fuzz.sh` runs millions).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;
    use std::time::{Duration, SystemTime};

    /// One memory tier and index for every case; keys indexed under a few tags, so tag and
    /// glob messages have something to match.
    static TIERS: LazyLock<(MemoryTier, TagIndex)> = LazyLock::new(|| {
        let index = TagIndex::new(None);
        let until = SystemTime::now() + Duration::from_secs(86_400);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        for (key, tag) in [
            ("/propertyadvertising.php?featured=1", "route:featured"),
            ("/propertyadvertising.php?propref=4", "property:4"),
            ("/propertymedia.php?filename=a.jpg", "route:media"),
        ] {
            rt.block_on(index.add(key, &[tag.to_string()], until, false));
        }
        (MemoryTier::new(1 << 20, 1 << 16), index)
    });

    fn message() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..128),
            (
                prop::sample::select(vec!["g:", "t:", "a:", "*", "", "G:", "g"]),
                prop_oneof![
                    "[*?\\[\\]{},a-z/:]{0,700}",
                    "[0-9a-fA-F]{0,40}",
                    "\\PC{0,40}",
                    "property:[0-9]{1,3}|route:[a-z]{1,8}",
                ],
            )
                .prop_map(|(prefix, rest)| format!("{prefix}{rest}").into_bytes()),
        ]
    }

    proptest! {
        #[test]
        fn any_message_is_applied_or_refused(payload in message()) {
            let (memory, index) = &*TIERS;
            let marker = apply(memory, index, &payload);
            if let Some(id) = marker {
                prop_assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()) && id.len() <= 64);
            }
        }
    }
}

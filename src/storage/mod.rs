//! Where cached responses live: a small tier trait of our own (`get` / `put` / `remove` /
//! `stats`), the TinyUFO memory tier, and one adapter (`tiered`) to pingora's `Storage` trait
//! that looks tiers up fastest first and fills all of them.
//!
//! Storage never decides freshness: entries carry the times the policy computed, and the
//! adapter only drops entries that are past every window the policy allowed.

pub mod acks;
mod codec;
mod entry;
mod index;
pub mod invalidation;
mod keeper;
mod memory;
pub mod redis;
pub mod shared_body;
mod tiered;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::cache::key::HashBinary;

pub use entry::{Entry, EntryTimes, RenderedHead, VaryIndex};
pub use index::TagIndex;
pub use keeper::RedisKeeper;
pub use memory::MemoryTier;
pub use redis::RedisTier;
pub use tiered::{Kept, StoreInfo, TieredStorage};

/// What a purge on this instance asks of the caches outside it (CDNs): the tags purged, and
/// the canonical keys purged (as their `key:` tags and their targets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OuterPurge {
    pub tags: Vec<String>,
    /// (canonical key, its `key:` tag)
    pub keys: Vec<(String, String)>,
    pub soft: bool,
}

/// Where purges go beyond this instance's tiers (the CDN purger); never blocks.
pub trait PurgeSink: Send + Sync {
    fn purge(&self, purge: OuterPurge);
}

/// A tier failure; the adapter treats it as a miss (reads) or a skipped write, never as a
/// client-visible error.
#[derive(Debug, Clone)]
pub struct TierError(pub String);

impl std::fmt::Display for TierError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a tier did with a `put`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored,
    /// Larger than this tier's per-object limit.
    TooLarge,
}

/// Sizes of one tier, for stats and metrics.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TierStats {
    pub entries: u64,
    /// Encoded copies of entries, not counted in `entries` (their bytes are in `bytes`).
    pub copies: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// One cache tier. Keys are pingora's 128-bit primary hashes of the canonical key.
#[async_trait]
pub trait Tier: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn get(&self, hash: &HashBinary) -> Result<Option<Arc<Entry>>, TierError>;
    async fn put(&self, entry: Arc<Entry>) -> Result<Admission, TierError>;
    async fn remove(&self, hash: &HashBinary) -> Result<bool, TierError>;
    fn stats(&self) -> TierStats;
}

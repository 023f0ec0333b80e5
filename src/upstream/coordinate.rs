//! One upstream call per key across every instance sharing a Redis: before fetching, an
//! instance takes the key's lease; others wait for the entry the holder stores (newer than
//! its lease) and answer with that. A holder whose fetch fails turns its lease into the
//! record of that failure for the failure memo's time, so the others share the failure
//! instead of each asking the upstream again. A holder that dies stops renewing, its lease
//! expires, and a waiter takes over.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pingora::cache::key::HashBinary;

use crate::storage::redis::{FailedFill, Lease, LeaseState};
use crate::storage::{Entry, RedisTier, Tier};

const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);

pub enum Coordinated {
    /// Fetch from the origin; `Some` holds our lease (released by the store, or on failure).
    Fetch(Option<LeaseGuard>),
    /// Another instance stored this while we waited.
    Filled(Arc<Entry>),
    /// Another instance's fetch failed recently.
    Failed(FailedFill),
}

/// Our lease, renewed in the background until dropped.
pub struct LeaseGuard {
    pub value: String,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

fn guard(redis: &Arc<RedisTier>, hash: HashBinary, value: String) -> LeaseGuard {
    let r = redis.clone();
    let v = value.clone();
    let every = redis.config().lease / 3;
    let renewal = tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            r.renew_lease(&hash, &v).await;
        }
    });
    LeaseGuard { value, renewal }
}

/// Decides whether this instance fetches `key`, waiting at most `limit` for another's fill.
/// `replacing`: when the copy the fill is to replace was stored (none: there is none); a
/// fresh copy stored after that is what the fill was for.
pub async fn coordinate(
    redis: &Arc<RedisTier>,
    key: &str,
    hash: &HashBinary,
    replacing: Option<SystemTime>,
    limit: Duration,
) -> Coordinated {
    let deadline = Instant::now() + limit;
    loop {
        let since_ms = match redis.try_lease(key, hash).await {
            Lease::Acquired { value, stored } => {
                let newer = stored.is_some_and(|t| {
                    t.is_fresh(SystemTime::now()) && replacing.is_none_or(|r| t.updated > r)
                });
                if newer {
                    // Another fill stored it between our lookup and our lease.
                    if let Ok(Some(e)) = redis.get(hash).await {
                        redis.release_lease(hash, &value).await;
                        return Coordinated::Filled(e);
                    }
                }
                return Coordinated::Fetch(Some(guard(redis, *hash, value)));
            }
            Lease::Unavailable => return Coordinated::Fetch(None),
            Lease::Failed(f) => return Coordinated::Failed(f),
            // Released between our two calls: a fill just finished or failed; try again.
            // Bounded like any wait: an unreadable lease value also reads as 0.
            Lease::HeldSince(0) if Instant::now() < deadline => continue,
            Lease::HeldSince(0) => return Coordinated::Fetch(None),
            Lease::HeldSince(ms) => ms,
        };
        let since = UNIX_EPOCH + Duration::from_millis(since_ms);
        let mut pause = FIRST_PAUSE;
        loop {
            if Instant::now() >= deadline {
                return Coordinated::Fetch(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
            match redis.get(hash).await {
                Ok(Some(e)) if e.times.updated >= since => return Coordinated::Filled(e),
                Ok(_) => {}
                Err(_) => return Coordinated::Fetch(None),
            }
            match redis.lease_state(hash).await {
                Some(LeaseState::Held(ms)) if ms == since_ms => continue,
                Some(LeaseState::Failed(f)) => return Coordinated::Failed(f),
                None => return Coordinated::Fetch(None),
                Some(_) => {}
            }
            // The holder is done. It stores before it releases, so what it stored (if
            // anything) is there now, even if the read above came just before the store.
            if let Ok(Some(e)) = redis.get(hash).await {
                if e.times.updated >= since {
                    return Coordinated::Filled(e);
                }
            }
            // It stored nothing newer, or died: compete again.
            break;
        }
    }
}

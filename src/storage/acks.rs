//! How far a purge got: after its invalidations, the purging instance publishes a marker on
//! the same channel, and every instance that reads the marker has already applied what came
//! before it (one subscription reads its messages in order) and says so in Redis. The purge
//! answers once as many instances have acknowledged as the marker reached, or after `WAIT`.

use std::time::{Duration, Instant};

use super::invalidation;
use super::RedisTier;

/// The longest a purge waits for acknowledgements.
pub const WAIT: Duration = Duration::from_secs(1);

/// Longest pause between two looks at the acknowledgements.
const MAX_PAUSE: Duration = Duration::from_millis(20);

/// Instances a purge reached, and how many of them confirmed having applied it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub reached: u64,
    pub acknowledged: u64,
}

impl Reach {
    /// Without Redis, this instance is the only one, and it purged synchronously.
    pub const ALONE: Reach = Reach {
        reached: 1,
        acknowledged: 1,
    };
}

/// Publishes a marker after a purge's invalidations and waits (at most `wait`) until every
/// subscription it reached has acknowledged it.
pub async fn confirm(redis: &RedisTier, wait: Duration) -> Reach {
    let id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let Ok(reached) = redis.publish_counted(&invalidation::marker(&id)).await else {
        return Reach {
            reached: 0,
            acknowledged: 0,
        };
    };
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_millis(1);
    loop {
        let acknowledged = redis.acknowledgements(&id).await.unwrap_or(0);
        let now = Instant::now();
        if acknowledged >= reached || now >= deadline {
            return Reach {
                reached,
                acknowledged: acknowledged.min(reached),
            };
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

//! How hard Rentman is asked: a token-bucket budget per second and per minute, a limit on
//! requests in flight (learnt from the upstream, `limit`), and a pause when Rentman answers
//! 429. A fetch that cannot be admitted waits in a bounded queue for a bounded time, then
//! fails with 503 and `Retry-After`; the proxy then serves a stale entry where one is
//! allowed. The budget is never exceeded.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::limit::{ConcurrencyLimit, Sample, Slot};
use super::Failure;
use crate::config::Budget;

/// Pause used when a 429 carries no `Retry-After`.
pub const DEFAULT_PAUSE: Duration = Duration::from_secs(5);

struct Buckets {
    second: f64,
    minute: f64,
    last: Option<Instant>,
}

#[derive(Default)]
pub struct ThrottleCounters {
    pub admitted: AtomicU64,
    pub refused_budget: AtomicU64,
    pub refused_paused: AtomicU64,
    pub refused_busy: AtomicU64,
}

pub struct Throttle {
    buckets: Mutex<Buckets>,
    pub limit: Arc<ConcurrencyLimit>,
    waiting: AtomicUsize,
    paused_until: Mutex<Option<Instant>>,
    pub counters: ThrottleCounters,
}

/// Held for the duration of one upstream request.
pub struct Admission {
    slot: Slot,
}

impl Admission {
    /// What the call showed about the upstream, learnt from when the admission ends.
    pub fn record(&mut self, sample: Sample) {
        self.slot.record(sample);
    }
}

/// Leaves the waiting queue however the wait ends.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Throttle {
    /// `max_concurrent` 0 means no limit; `adaptive`: the limit is learnt up to it (both fixed
    /// for the life of the process).
    pub fn new(max_concurrent: usize, adaptive: bool) -> Throttle {
        Throttle {
            buckets: Mutex::new(Buckets {
                second: 0.0,
                minute: 0.0,
                last: None,
            }),
            limit: ConcurrencyLimit::new(max_concurrent, adaptive),
            waiting: AtomicUsize::new(0),
            paused_until: Mutex::new(None),
            counters: ThrottleCounters::default(),
        }
    }

    /// Rentman said 429: ask nothing more for this long.
    pub fn pause(&self, retry_after: Option<Duration>) {
        let until = Instant::now() + retry_after.unwrap_or(DEFAULT_PAUSE);
        let mut p = self.paused_until.lock();
        if p.is_none_or(|old| old < until) {
            *p = Some(until);
        }
    }

    pub fn paused_for(&self) -> Option<Duration> {
        let p = *self.paused_until.lock();
        p.and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Refills the buckets up to now; full at first use.
    fn refill(&self, b: &Budget, buckets: &mut Buckets) {
        let now = Instant::now();
        match buckets.last {
            None => {
                buckets.second = b.burst;
                buckets.minute = b.per_minute;
            }
            Some(last) => {
                let dt = now.duration_since(last).as_secs_f64();
                buckets.second = (buckets.second + dt * b.per_second).min(b.burst);
                buckets.minute = (buckets.minute + dt * b.per_minute / 60.0).min(b.per_minute);
            }
        }
        buckets.last = Some(now);
    }

    /// Takes one request's worth of budget, or says how long until there is some.
    fn try_take(&self, b: &Budget) -> Result<(), Duration> {
        if !b.is_limited() {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        self.refill(b, &mut buckets);
        let mut wait: f64 = 0.0;
        if b.per_second > 0.0 && buckets.second < 1.0 {
            wait = wait.max((1.0 - buckets.second) / b.per_second);
        }
        if b.per_minute > 0.0 && buckets.minute < 1.0 {
            wait = wait.max((1.0 - buckets.minute) / (b.per_minute / 60.0));
        }
        if wait > 0.0 {
            return Err(Duration::from_secs_f64(wait));
        }
        if b.per_second > 0.0 {
            buckets.second -= 1.0;
        }
        if b.per_minute > 0.0 {
            buckets.minute -= 1.0;
        }
        Ok(())
    }

    /// Whether there is budget to spare for optional work (refreshing ahead of expiry):
    /// more than half of each bucket is left.
    pub fn spare(&self, b: &Budget) -> bool {
        if self.paused_for().is_some() {
            return false;
        }
        if !b.is_limited() {
            return true;
        }
        let mut buckets = self.buckets.lock();
        self.refill(b, &mut buckets);
        (b.per_second <= 0.0 || buckets.second > b.burst / 2.0)
            && (b.per_minute <= 0.0 || buckets.minute > b.per_minute / 2.0)
    }

    /// Admits one upstream request, waiting (boundedly) for budget and a free slot.
    pub async fn admit(&self, b: &Budget) -> Result<Admission, Failure> {
        if let Some(left) = self.paused_for() {
            self.counters.refused_paused.fetch_add(1, Ordering::Relaxed);
            return Err(Failure::RateLimited {
                retry_after: Some(left),
            });
        }
        let deadline = Instant::now() + b.queue_wait;
        if let Err(mut wait) = self.try_take(b) {
            if self.waiting.fetch_add(1, Ordering::AcqRel) >= b.queue_size {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                self.counters.refused_budget.fetch_add(1, Ordering::Relaxed);
                return Err(Failure::BudgetExhausted { retry_after: wait });
            }
            let _queued = Waiting(&self.waiting);
            loop {
                let now = Instant::now();
                if now >= deadline {
                    self.counters.refused_budget.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure::BudgetExhausted { retry_after: wait });
                }
                tokio::time::sleep(wait.min(deadline - now)).await;
                match self.try_take(b) {
                    Ok(()) => break,
                    Err(w) => wait = w,
                }
            }
        }
        let slot = match self.limit.try_acquire() {
            Some(slot) => slot,
            None => match self.limit.acquire(deadline.into()).await {
                Some(slot) => slot,
                None => {
                    self.counters.refused_busy.fetch_add(1, Ordering::Relaxed);
                    return Err(Failure::Busy);
                }
            },
        };
        self.counters.admitted.fetch_add(1, Ordering::Relaxed);
        Ok(Admission { slot })
    }

    /// Budget left in the per-second and per-minute buckets (for metrics).
    pub fn remaining(&self, b: &Budget) -> (f64, f64) {
        let mut buckets = self.buckets.lock();
        self.refill(b, &mut buckets);
        (buckets.second, buckets.minute)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_second: f64, per_minute: f64, burst: f64) -> Budget {
        Budget {
            per_second,
            per_minute,
            burst,
            queue_size: 0,
            queue_wait: Duration::ZERO,
        }
    }

    #[tokio::test]
    async fn never_exceeds_the_bucket() {
        let t = Throttle::new(0, true);
        let b = budget(0.0, 3.0, 1.0);
        let admitted = futures::future::join_all((0..10).map(|_| t.admit(&b)))
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();
        assert_eq!(admitted, 3);
        let b = budget(2.0, 0.0, 2.0);
        let t = Throttle::new(0, true);
        let admitted = futures::future::join_all((0..10).map(|_| t.admit(&b)))
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count();
        assert_eq!(admitted, 2);
    }

    #[tokio::test]
    async fn queued_requests_get_budget_as_it_refills() {
        let t = Throttle::new(0, true);
        let mut b = budget(50.0, 0.0, 1.0);
        b.queue_size = 10;
        b.queue_wait = Duration::from_secs(30);
        let all = futures::future::join_all((0..3).map(|_| t.admit(&b))).await;
        assert!(all.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_pause_refuses_at_once() {
        let t = Throttle::new(0, true);
        t.pause(Some(Duration::from_secs(60)));
        match t.admit(&budget(0.0, 0.0, 1.0)).await {
            Err(Failure::RateLimited {
                retry_after: Some(d),
            }) => assert!(d.as_secs() >= 58),
            _ => panic!("admitted while paused"),
        }
        assert!(!t.spare(&budget(0.0, 0.0, 1.0)));
    }
}

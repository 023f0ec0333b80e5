//! How many upstream requests may be in flight at once, learnt from the upstream itself.
//!
//! After coalescing, every upstream call is for a distinct key: a fixed cap only delays calls
//! a healthy upstream could take at once, and is still too high for a struggling one. The
//! limit follows the gradient between the upstream's long-term and recent latency (as Netflix's
//! concurrency-limits "Gradient2" and Envoy's adaptive concurrency do): while recent calls take
//! about as long as usual it grows by about its square root per call, so a healthy Rentman is
//! never the bottleneck; when they take markedly longer (it is queueing work) or fail (5xx,
//! timeouts, resets), it shrinks. It stays within the operator's `max_concurrent`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Where the limit starts (within the operator's bound).
const INITIAL: f64 = 32.0;
/// It never falls below this: a sick upstream still gets probes to recover on.
const MIN: f64 = 2.0;
/// Recent latency may exceed the long-term one by this factor before the limit shrinks.
const TOLERANCE: f64 = 1.5;
/// Weight of one sample in the recent (about the last 10 calls) and the long-term (about the
/// last 500) latency averages.
const SHORT_WEIGHT: f64 = 2.0 / 11.0;
const LONG_WEIGHT: f64 = 2.0 / 501.0;
/// How far one step moves the limit towards its new estimate.
const SMOOTHING: f64 = 0.2;
/// A failed call cuts the limit by this factor.
const BACKOFF: f64 = 0.9;

/// What one upstream call says about the upstream's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    /// It answered; the call took this long.
    Answered(Duration),
    /// It failed in a way that means it is overloaded or unwell (5xx, timeout, reset, refused).
    Overloaded,
    /// Nothing to learn (the call was cut short by us).
    Ignored,
}

/// The gradient estimate, as plain arithmetic over samples.
#[derive(Debug, Clone)]
pub struct Gradient {
    limit: f64,
    min: f64,
    max: f64,
    /// Latency averages in seconds, once a sample has arrived.
    short: Option<f64>,
    long: Option<f64>,
}

impl Gradient {
    pub fn new(max: usize) -> Gradient {
        let max = max.max(1) as f64;
        let min = MIN.min(max);
        Gradient {
            limit: INITIAL.clamp(min, max),
            min,
            max,
            short: None,
            long: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit as usize
    }

    /// Learns from one call that answered in `rtt` while `in_flight` calls (itself included)
    /// were out.
    pub fn answered(&mut self, rtt: Duration, in_flight: usize) {
        let rtt = rtt.as_secs_f64().max(1e-6);
        let average = |old: Option<f64>, weight: f64| match old {
            Some(v) => v + (rtt - v) * weight,
            None => rtt,
        };
        let short = average(self.short, SHORT_WEIGHT);
        let mut long = average(self.long, LONG_WEIGHT);
        // After the upstream got faster, the long-term average is too pessimistic: let it
        // come down rather than grant a limit the old latency would not justify.
        if long / short > 2.0 {
            long *= 0.95;
        }
        self.short = Some(short);
        self.long = Some(long);
        // Too few calls out to have tested the limit: nothing to learn about it.
        if (in_flight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = (TOLERANCE * long / short).clamp(0.5, 1.0);
        let estimate = self.limit * gradient + self.limit.sqrt();
        self.limit =
            (self.limit * (1.0 - SMOOTHING) + estimate * SMOOTHING).clamp(self.min, self.max);
    }

    pub fn overloaded(&mut self) {
        self.limit = (self.limit * BACKOFF).max(self.min);
    }
}

struct State {
    gradient: Gradient,
    in_flight: usize,
}

/// The limit on upstream calls in flight, shared by every request of an instance.
pub struct ConcurrencyLimit {
    /// `None`: no limit at all (`max_concurrent: 0`).
    state: Option<Mutex<State>>,
    adaptive: bool,
    freed: Notify,
}

/// One upstream call's place under the limit; it is given back when dropped.
pub struct Slot {
    owner: Arc<ConcurrencyLimit>,
    started: Instant,
    sample: Sample,
}

impl ConcurrencyLimit {
    /// `max` 0: unlimited. Not `adaptive`: `max` is a fixed limit.
    pub fn new(max: usize, adaptive: bool) -> Arc<ConcurrencyLimit> {
        let state = (max > 0).then(|| {
            let mut gradient = Gradient::new(max);
            if !adaptive {
                gradient.limit = max as f64;
            }
            Mutex::new(State {
                gradient,
                in_flight: 0,
            })
        });
        Arc::new(ConcurrencyLimit {
            state,
            adaptive,
            freed: Notify::new(),
        })
    }

    /// The current limit (`None`: unlimited) and the calls in flight under it.
    pub fn current(&self) -> (Option<usize>, usize) {
        match &self.state {
            None => (None, 0),
            Some(s) => {
                let s = s.lock();
                (Some(s.gradient.limit().max(1)), s.in_flight)
            }
        }
    }

    /// A place for one call if the limit allows one now.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        if let Some(state) = &self.state {
            let mut s = state.lock();
            if s.in_flight >= s.gradient.limit().max(1) {
                return None;
            }
            s.in_flight += 1;
        }
        Some(Slot {
            owner: self.clone(),
            started: Instant::now(),
            sample: Sample::Ignored,
        })
    }

    /// A place for one call, waiting for one until `deadline`.
    pub async fn acquire(self: &Arc<Self>, deadline: tokio::time::Instant) -> Option<Slot> {
        loop {
            if let Some(slot) = self.try_acquire() {
                return Some(slot);
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // A place freed between the first try and registering for the wake-up.
            if let Some(slot) = self.try_acquire() {
                return Some(slot);
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return None;
            }
        }
    }

    fn release(&self, started: Instant, sample: Sample) {
        let Some(state) = &self.state else {
            return;
        };
        let grew = {
            let mut s = state.lock();
            let before = s.gradient.limit();
            if self.adaptive {
                match sample {
                    Sample::Answered(_) => {
                        let in_flight = s.in_flight;
                        s.gradient.answered(started.elapsed(), in_flight)
                    }
                    Sample::Overloaded => s.gradient.overloaded(),
                    Sample::Ignored => {}
                }
            }
            s.in_flight = s.in_flight.saturating_sub(1);
            s.gradient.limit() > before
        };
        if grew {
            self.freed.notify_waiters();
        }
        self.freed.notify_one();
    }
}

impl Slot {
    /// Records what the call showed; it is learnt from when the slot is given back.
    pub fn record(&mut self, sample: Sample) {
        self.sample = sample;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.owner.release(self.started, self.sample);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// Feeds `n` calls of `rtt` with the limit fully used.
    fn busy(g: &mut Gradient, rtt: Duration, n: usize) {
        for _ in 0..n {
            let in_flight = g.limit();
            g.answered(rtt, in_flight);
        }
    }

    #[test]
    fn a_healthy_upstream_is_never_the_bottleneck() {
        let mut g = Gradient::new(512);
        busy(&mut g, MS(150), 400);
        assert_eq!(
            g.limit(),
            512,
            "steady latency under full use grows to the bound"
        );
        // Jitter within the tolerance does not shrink it.
        for i in 0..400 {
            let in_flight = g.limit();
            g.answered(MS(120 + (i % 7) * 10), in_flight);
        }
        assert_eq!(g.limit(), 512);
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        let mut g = Gradient::new(512);
        for _ in 0..400 {
            g.answered(MS(150), 3);
        }
        assert_eq!(g.limit(), 32);
    }

    #[test]
    fn a_struggling_upstream_sees_the_limit_fall_then_recover() {
        let mut g = Gradient::new(512);
        busy(&mut g, MS(150), 400);
        let healthy = g.limit();
        busy(&mut g, MS(1500), 30);
        let degraded = g.limit();
        assert!(degraded * 4 < healthy, "{degraded} vs {healthy}");
        busy(&mut g, MS(150), 300);
        assert_eq!(g.limit(), 512, "recovered once latency is back");
    }

    #[test]
    fn failures_cut_the_limit_down_to_its_floor() {
        let mut g = Gradient::new(512);
        busy(&mut g, MS(150), 400);
        g.overloaded();
        assert_eq!(g.limit(), 460);
        for _ in 0..200 {
            g.overloaded();
        }
        assert_eq!(g.limit(), 2);
        let mut tiny = Gradient::new(1);
        tiny.overloaded();
        assert_eq!(tiny.limit(), 1);
    }

    #[tokio::test]
    async fn places_are_waited_for_and_given_back() {
        let limit = ConcurrencyLimit::new(2, false);
        let a = limit.try_acquire().expect("first");
        let _b = limit.try_acquire().expect("second");
        assert!(limit.try_acquire().is_none());
        assert_eq!(limit.current(), (Some(2), 2));
        let now = tokio::time::Instant::now();
        assert!(
            limit.acquire(now).await.is_none(),
            "deadline already passed"
        );
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move {
                let far = tokio::time::Instant::now() + Duration::from_secs(3600);
                limit.acquire(far).await.is_some()
            }
        });
        drop(a);
        assert!(waiter.await.unwrap());
        assert_eq!(limit.current(), (Some(2), 1));
    }

    #[test]
    fn zero_means_no_limit() {
        let limit = ConcurrencyLimit::new(0, true);
        let slots: Vec<Slot> = (0..10_000).filter_map(|_| limit.try_acquire()).collect();
        assert_eq!(slots.len(), 10_000);
        assert_eq!(limit.current(), (None, 0));
    }
}

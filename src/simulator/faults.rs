//! The dice behind injected faults and latency, and the optional rate limit.
//!
//! The dice are seeded, so a single-threaded test sees the same sequence of faults every run;
//! with concurrent requests the order in which requests take their rolls varies, as it would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::seeds::{self, Stream};

/// Extra time to first byte per `photo1binary` in an answer, at the default median of 350 ms
/// (scaled with the configured median), so a full list with images takes seconds as the real
/// one does.
const BINARY_EXTRA_MS_AT_DEFAULT: f64 = 15.0;
const DEFAULT_MEDIAN_MS: f64 = 350.0;
/// Cap of one sampled latency, so a long tail draw cannot hang a test for minutes.
const MAX_LATENCY: Duration = Duration::from_secs(60);

pub struct Dice {
    rng: Mutex<ChaCha8Rng>,
}

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice {
            rng: Mutex::new(seeds::rng(seed, Stream::Faults, 0, 0)),
        }
    }

    /// True with probability `p`; 0 and 1 are certain and take no roll, so switching one
    /// fault on does not shift the sequence of the others.
    pub fn roll(&self, p: f64) -> bool {
        if p <= 0.0 {
            false
        } else if p >= 1.0 {
            true
        } else {
            self.rng.lock().gen::<f64>() < p
        }
    }

    /// Time to first byte: log-normal around `median_ms` with shape `sigma` (fixed when
    /// sigma is 0), plus the per-`photo1binary` surcharge.
    pub fn latency(&self, median_ms: u64, sigma: f64, binaries: usize) -> Duration {
        if median_ms == 0 {
            return Duration::ZERO;
        }
        let median = median_ms as f64;
        let base = if sigma > 0.0 {
            seeds::log_normal(&mut *self.rng.lock(), median, sigma)
        } else {
            median
        };
        let extra = binaries as f64 * BINARY_EXTRA_MS_AT_DEFAULT * median / DEFAULT_MEDIAN_MS;
        Duration::from_secs_f64((base + extra) / 1000.0).min(MAX_LATENCY)
    }
}

/// A sliding one-second window of admitted API requests.
#[derive(Default)]
pub struct RateLimiter {
    admitted: Mutex<VecDeque<Instant>>,
}

impl RateLimiter {
    /// Admits a request if fewer than `limit` were admitted in the last second. Refused
    /// requests do not use up the budget (a client hammering with 429s still gets through
    /// once the window moves).
    pub fn admit(&self, limit: u32, now: Instant) -> bool {
        let mut q = self.admitted.lock();
        while q
            .front()
            .is_some_and(|&t| now.duration_since(t) >= Duration::from_secs(1))
        {
            q.pop_front();
        }
        if q.len() < limit as usize {
            q.push_back(now);
            true
        } else {
            false
        }
    }

    /// Forgets the window (on `/__sim/reset`, so a test phase starts with a full budget).
    pub fn clear(&self) {
        self.admitted.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certain_rolls() {
        let d = Dice::new(1);
        assert!((0..100).all(|_| d.roll(1.0)));
        assert!((0..100).all(|_| !d.roll(0.0)));
        let hits = (0..10_000).filter(|_| d.roll(0.25)).count();
        assert!((2_200..2_800).contains(&hits), "{hits}");
    }

    #[test]
    fn latency_is_fixed_without_sigma_and_grows_with_binaries() {
        let d = Dice::new(1);
        assert_eq!(d.latency(0, 0.6, 10), Duration::ZERO);
        assert_eq!(d.latency(350, 0.0, 0), Duration::from_millis(350));
        assert_eq!(d.latency(350, 0.0, 2), Duration::from_millis(380));
        assert_eq!(d.latency(700, 0.0, 2), Duration::from_millis(760));
    }

    #[test]
    fn rate_limiter_window_slides() {
        let r = RateLimiter::default();
        let t0 = Instant::now();
        assert!(r.admit(2, t0));
        assert!(r.admit(2, t0 + Duration::from_millis(100)));
        assert!(!r.admit(2, t0 + Duration::from_millis(200)));
        assert!(r.admit(2, t0 + Duration::from_millis(1000)));
        assert!(!r.admit(2, t0 + Duration::from_millis(1050)));
        assert!(r.admit(2, t0 + Duration::from_millis(1100)));
    }
}

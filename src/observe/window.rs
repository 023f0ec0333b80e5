//! A route's latency over the last minute, cheap enough to record on every hit: a ring of
//! 10-second buckets, each a small fixed histogram of atomic counters per kind of answer
//! (memory hit, Redis hit, waited for Rentman, other). Recording is a few relaxed atomic
//! additions; percentiles are read by summing the live buckets.
//!
//! A bucket is reused when its 10 seconds come round again: the first request of the new
//! period zeroes it. A request recorded into it by another thread at that very moment may be
//! lost or land in the new period; the figures are for operators, not accounting.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Seconds per bucket.
pub const BUCKET_SECS: u64 = 10;
/// Buckets in a window: the window is `BUCKETS * BUCKET_SECS` long.
pub const BUCKETS: usize = 6;
/// The window, for messages.
pub const WINDOW: Duration = Duration::from_secs(BUCKET_SECS * BUCKETS as u64);

/// Upper bounds of the histogram slots, in microseconds (the last slot takes the rest): steps
/// of 1.2x to 1.5x, so a figure is known within a quarter or so. The shipped targets (5, 10,
/// 15, 20 ms) are bounds, so a breach is decided exactly at them.
pub const BOUNDS_US: [u64; 42] = [
    50, 100, 150, 200, 300, 400, 500, 750, 1_000, 1_250, 1_500, 2_000, 2_500, 3_000, 4_000, 5_000,
    6_000, 7_500, 10_000, 12_500, 15_000, 20_000, 25_000, 30_000, 40_000, 50_000, 60_000, 75_000,
    100_000, 125_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000, 750_000, 1_000_000,
    1_500_000, 2_000_000, 3_000_000, 5_000_000,
];
pub const SLOTS: usize = BOUNDS_US.len() + 1;

/// What kind of answer a request got, for saying what dominated a slow window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Memory,
    Redis,
    /// Waited for Rentman (a miss, an expired or revalidated entry, a pass-through).
    Upstream,
    /// Everything else (errors rentcache wrote itself, preflights...).
    Other,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Memory, Class::Redis, Class::Upstream, Class::Other];

    fn index(self) -> usize {
        match self {
            Class::Memory => 0,
            Class::Redis => 1,
            Class::Upstream => 2,
            Class::Other => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Memory => "memory hits",
            Class::Redis => "Redis hits",
            Class::Upstream => "misses waiting for Rentman",
            Class::Other => "other answers",
        }
    }
}

/// The slot a duration falls in.
pub fn slot_of(us: u64) -> usize {
    BOUNDS_US.partition_point(|b| *b < us)
}

struct Bucket {
    /// Which 10-second period the counts are for (`secs / BUCKET_SECS`), plus one (0: never).
    period: AtomicU64,
    slots: [[AtomicU32; SLOTS]; 4],
    /// Of the requests over the route's target: their total and upstream time, µs.
    slow_total_us: AtomicU64,
    slow_upstream_us: AtomicU64,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            period: AtomicU64::new(0),
            slots: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU32::new(0))),
            slow_total_us: AtomicU64::new(0),
            slow_upstream_us: AtomicU64::new(0),
        }
    }

    fn reset(&self) {
        for class in &self.slots {
            for s in class {
                s.store(0, Relaxed);
            }
        }
        self.slow_total_us.store(0, Relaxed);
        self.slow_upstream_us.store(0, Relaxed);
    }
}

/// One route's window.
pub struct Window {
    buckets: [Bucket; BUCKETS],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: std::array::from_fn(|_| Bucket::new()),
        }
    }
}

/// What a window holds, summed over its live buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Counts per class and slot.
    pub slots: [[u64; SLOTS]; 4],
    pub slow_total_us: u64,
    pub slow_upstream_us: u64,
}

impl Window {
    /// Records one request that took `total` (of which `upstream` waiting for Rentman) at
    /// `secs` (seconds on a monotonic clock); `slow`: it took longer than the route's target.
    pub fn record(&self, secs: u64, class: Class, total: Duration, upstream: Duration, slow: bool) {
        let period = secs / BUCKET_SECS + 1;
        let Some(bucket) = self.buckets.get((period as usize) % BUCKETS) else {
            return;
        };
        let seen = bucket.period.load(Relaxed);
        if seen != period
            && bucket
                .period
                .compare_exchange(seen, period, Relaxed, Relaxed)
                .is_ok()
        {
            bucket.reset();
        }
        let us = total.as_micros().min(u128::from(u64::MAX)) as u64;
        if let Some(s) = bucket
            .slots
            .get(class.index())
            .and_then(|c| c.get(slot_of(us)))
        {
            s.fetch_add(1, Relaxed);
        }
        if slow {
            bucket.slow_total_us.fetch_add(us, Relaxed);
            let up = upstream.as_micros().min(u128::from(u64::MAX)) as u64;
            bucket.slow_upstream_us.fetch_add(up.min(us), Relaxed);
        }
    }

    /// The buckets of the window ending at `secs`.
    pub fn summary(&self, secs: u64) -> Summary {
        let now = secs / BUCKET_SECS + 1;
        let mut out = Summary::default();
        for b in &self.buckets {
            let p = b.period.load(Relaxed);
            if p == 0 || p > now || now - p >= BUCKETS as u64 {
                continue;
            }
            for (sum, class) in out.slots.iter_mut().zip(&b.slots) {
                for (s, c) in sum.iter_mut().zip(class) {
                    *s += u64::from(c.load(Relaxed));
                }
            }
            out.slow_total_us += b.slow_total_us.load(Relaxed);
            out.slow_upstream_us += b.slow_upstream_us.load(Relaxed);
        }
        out
    }
}

impl Default for Summary {
    fn default() -> Self {
        Summary {
            slots: [[0; SLOTS]; 4],
            slow_total_us: 0,
            slow_upstream_us: 0,
        }
    }
}

impl Summary {
    pub fn count(&self) -> u64 {
        self.slots.iter().flatten().sum()
    }

    /// All classes merged.
    fn merged(&self) -> [u64; SLOTS] {
        let mut m = [0u64; SLOTS];
        for class in &self.slots {
            for (a, b) in m.iter_mut().zip(class) {
                *a += b;
            }
        }
        m
    }

    /// The `q` quantile (0..1), interpolated linearly within its slot; None when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let merged = self.merged();
        let n: u64 = merged.iter().sum();
        if n == 0 {
            return None;
        }
        // The rank of the quantile among n sorted samples (1-based, nearest rank).
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).clamp(1, n);
        let mut below = 0u64;
        for (i, c) in merged.iter().enumerate() {
            if *c == 0 {
                continue;
            }
            if below + c >= rank {
                let lo = if i == 0 {
                    0
                } else {
                    BOUNDS_US.get(i - 1).copied().unwrap_or(0)
                };
                // The open last slot: report its lower bound, the most that is known.
                let Some(&hi) = BOUNDS_US.get(i) else {
                    return Some(Duration::from_micros(lo));
                };
                let within = (rank - below) as f64 / *c as f64;
                let us = lo as f64 + within * (hi - lo) as f64;
                return Some(Duration::from_micros(us.round() as u64));
            }
            below += c;
        }
        None
    }

    /// Requests per class in slots entirely above `target`.
    pub fn above(&self, target: Duration) -> [u64; 4] {
        let first = slot_of(target.as_micros().min(u128::from(u64::MAX)) as u64) + 1;
        let mut out = [0u64; 4];
        for (o, class) in out.iter_mut().zip(&self.slots) {
            *o = class.iter().skip(first).sum();
        }
        out
    }

    /// The class with the most requests over `target` (None when there are none).
    pub fn dominant(&self, target: Duration) -> Option<(Class, u64)> {
        Class::ALL
            .into_iter()
            .zip(self.above(target))
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn slots_split_at_the_bounds() {
        assert_eq!(slot_of(0), 0);
        assert_eq!(slot_of(50), 0);
        assert_eq!(slot_of(51), 1);
        assert_eq!(slot_of(10_000), 18);
        assert_eq!(slot_of(10_001), 19);
        assert_eq!(slot_of(u64::MAX), SLOTS - 1);
    }

    #[test]
    fn quantiles_interpolate_within_their_slot() {
        let w = Window::default();
        // 99 fast answers (40 µs) and one slow one (12 ms).
        for _ in 0..99 {
            w.record(
                5,
                Class::Memory,
                Duration::from_micros(40),
                Duration::ZERO,
                false,
            );
        }
        w.record(5, Class::Upstream, ms(12), ms(11), true);
        let s = w.summary(5);
        assert_eq!(s.count(), 100);
        // p50 and p99 are among the 99 in [0, 50] µs: interpolated by rank.
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(25)));
        assert_eq!(s.quantile(0.99), Some(Duration::from_micros(50)));
        // The maximum is in (10, 12.5] ms: the slot's top.
        assert_eq!(s.quantile(1.0), Some(Duration::from_micros(12_500)));
        assert_eq!(Summary::default().quantile(0.99), None);
    }

    #[test]
    fn the_window_forgets_buckets_older_than_a_minute() {
        let w = Window::default();
        w.record(0, Class::Memory, ms(1), Duration::ZERO, false);
        w.record(25, Class::Memory, ms(1), Duration::ZERO, false);
        assert_eq!(w.summary(25).count(), 2);
        // At 60 s the first bucket (0-9 s) is out of the window, the second (20-29 s) is in.
        assert_eq!(w.summary(60).count(), 1);
        assert_eq!(w.summary(79).count(), 1);
        assert_eq!(w.summary(80).count(), 0);
        // A bucket reused for a later period starts from zero.
        w.record(60, Class::Redis, ms(1), Duration::ZERO, false);
        let s = w.summary(60);
        assert_eq!(s.count(), 2);
        assert_eq!(s.slots[1].iter().sum::<u64>(), 1);
        // A reading for a time before the buckets' periods sees nothing from the future.
        assert_eq!(w.summary(5).count(), 0);
    }

    #[test]
    fn what_dominated_the_slow_answers_is_counted_per_class() {
        let w = Window::default();
        for _ in 0..3 {
            w.record(1, Class::Upstream, ms(200), ms(190), true);
        }
        w.record(1, Class::Redis, ms(30), Duration::ZERO, true);
        w.record(1, Class::Memory, ms(1), Duration::ZERO, false);
        let s = w.summary(1);
        assert_eq!(s.above(ms(20)), [0, 1, 3, 0]);
        assert_eq!(s.dominant(ms(20)), Some((Class::Upstream, 3)));
        assert_eq!(s.slow_total_us, 630_000);
        assert_eq!(s.slow_upstream_us, 570_000);
        assert_eq!(s.dominant(ms(500)), None);
        // p99 of these five is the slowest slot's top.
        assert_eq!(s.quantile(0.99), Some(ms(200)));
    }
}

//! Seed derivation and small random helpers.
//!
//! Every property and every media file gets its own generator seeded from (run seed, what,
//! ids), so any one of them can be rebuilt alone, lazily, in any order and in any process, and
//! always gives the same bytes. ChaCha is specified bit for bit, unlike `StdRng`.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a derived seed is for; keeps the streams of different purposes apart.
#[derive(Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    Layout = 1,
    Property = 2,
    Media = 3,
    Faults = 4,
}

/// SplitMix64's finaliser: a cheap, well-mixing bijection of 64-bit words.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

pub fn derive(seed: u64, stream: Stream, a: u64, b: u64) -> u64 {
    mix(mix(mix(seed ^ mix(stream as u64)) ^ a) ^ b.rotate_left(32))
}

pub fn rng(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, stream, a, b))
}

/// A uniform pick. Indices are drawn as `u32` so the result does not depend on the
/// platform's word size.
pub fn pick<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> &'a T {
    &items[rng.gen_range(0..items.len() as u32) as usize]
}

/// An index drawn with the given relative weights.
pub fn weighted(rng: &mut impl Rng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = rng.gen_range(0..total);
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// True with probability `p`.
pub fn chance(rng: &mut impl Rng, p: f64) -> bool {
    rng.gen::<f64>() < p
}

/// A standard normal deviate (Box-Muller; `rand_distr` is not a dependency).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.gen::<f64>(); // (0, 1], so ln is finite
    let u2: f64 = rng.gen::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A log-normal deviate with the given median and shape.
pub fn log_normal(rng: &mut impl Rng, median: f64, sigma: f64) -> f64 {
    median * (sigma * normal(rng)).exp()
}

/// An uppercase GUID like Rentman's media file names (`7EFC9B67-1A2B-4C3D-8E9F-0123456789AB`).
pub fn guid(rng: &mut impl Rng) -> String {
    let a: u128 = rng.gen();
    let h = format!("{a:032X}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_ids_give_different_seeds() {
        let s = derive(1, Stream::Property, 1, 0);
        assert_ne!(s, derive(1, Stream::Media, 1, 0));
        assert_ne!(s, derive(1, Stream::Property, 2, 0));
        assert_ne!(s, derive(2, Stream::Property, 1, 0));
        assert_ne!(
            derive(1, Stream::Media, 1, 2),
            derive(1, Stream::Media, 2, 1)
        );
        assert_eq!(s, derive(1, Stream::Property, 1, 0));
    }

    #[test]
    fn log_normal_median_is_about_right() {
        let mut r = rng(7, Stream::Faults, 0, 0);
        let mut v: Vec<f64> = (0..4001).map(|_| log_normal(&mut r, 350.0, 0.6)).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = v[2000];
        let p95 = v[3800];
        assert!((300.0..400.0).contains(&median), "median {median}");
        assert!((800.0..1200.0).contains(&p95), "p95 {p95}");
    }

    #[test]
    fn guid_shape() {
        let g = guid(&mut rng(1, Stream::Media, 0, 0));
        assert_eq!(g.len(), 36);
        assert_eq!(g.matches('-').count(), 4);
        assert!(g
            .chars()
            .all(|c| c == '-' || c.is_ascii_digit() || c.is_ascii_uppercase()));
    }
}

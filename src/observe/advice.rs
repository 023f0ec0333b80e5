//! TTL advice from what rentcache sees Rentman change. Never applied: it is printed
//! (`GET /advice`, `rentcache advise`) for an operator to act on.
//!
//! The method (also in the README):
//! - **Change rate.** Every refresh of a stored entry that reaches Rentman compares the new
//!   body's ETag with the stored one. Each such refresh had left its copy unconfirmed for
//!   some time; with `c` changes over a total `E` of such time, a key's body changes about
//!   once every `E / c` (changes taken as random events at a steady rate λ = c / E). With no
//!   change seen, λ is taken at its 95% upper bound, 3 / E.
//! - **Requests per key.** With a TTL `t` a key costs one upstream call per `t + 1/r`
//!   (expiry, then the next request), so the share of requests that reach Rentman is
//!   `1 / (1 + r·t)`, which gives the request rate per key `r` from the counts.
//! - **Chance of serving a changed body.** A hit is served a copy of an age spread evenly
//!   over `[0, t]`: it is out of date with probability `1 − (1 − e^(−λt)) / (λt)`. With
//!   stale-while-revalidate, the request that finds the copy expired is also served it (age
//!   at least `t`): `1 − e^(−λt)` for that share `1 / (1 + r·t)` of requests.
//! - **Suggestion.** The longest TTL from a fixed ladder (1 min to 7 days), with
//!   `stale_while_revalidate` equal to it, whose chance stays within the staleness budget;
//!   the change in upstream calls is `1 − (1 + r·t_now) / (1 + r·t_new)`.

use std::time::Duration;

use serde::Serialize;

/// TTLs the advice chooses from.
pub const LADDER_SECS: [u64; 15] = [
    60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200, 86_400, 172_800, 259_200,
    604_800,
];

/// What one route showed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evidence {
    pub route: String,
    pub ttl: Duration,
    pub swr: Duration,
    pub requests: u64,
    pub hits: u64,
    /// Upstream calls made for the route (fills, refreshes).
    pub upstream_calls: u64,
    pub refreshes: u64,
    pub changed: u64,
    /// Total time refreshed copies had gone unconfirmed.
    pub exposure: Duration,
    /// Median of how long a replaced body had been current.
    pub median_changed_age: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Suggestion {
    pub ttl_secs: u64,
    pub stale_while_revalidate_secs: u64,
    /// The chance a served answer has changed at Rentman, with the suggestion.
    pub stale_chance: f64,
    /// Upstream calls with the suggestion relative to now, minus one (−0.6: 60% fewer).
    pub upstream_change: Option<f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Advice {
    pub route: String,
    pub requests: u64,
    pub hit_ratio: Option<f64>,
    /// Requests per key per TTL now, estimated from the share that reached Rentman.
    pub requests_per_key_per_ttl: Option<f64>,
    pub upstream_calls: u64,
    pub refreshes: u64,
    pub changed: u64,
    pub change_ratio: Option<f64>,
    /// Mean time between changes of one key's body (an upper bound's reciprocal when no
    /// change was seen: `changes_seen` says which).
    pub mean_time_between_changes_secs: Option<f64>,
    pub median_changed_body_age_secs: Option<u64>,
    pub current: Current,
    pub stale_chance_now: Option<f64>,
    pub suggested: Option<Suggestion>,
    /// The advice in words, with its numbers.
    pub evidence: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Current {
    pub ttl_secs: u64,
    pub stale_while_revalidate_secs: u64,
}

/// Requests per key per second from the share of requests that reached Rentman.
pub fn rate_per_key(requests: u64, calls: u64, ttl: Duration) -> Option<f64> {
    let t = ttl.as_secs_f64();
    if calls == 0 || requests <= calls || t <= 0.0 {
        return None;
    }
    Some((requests as f64 / calls as f64 - 1.0) / t)
}

/// The chance that a served answer is out of date at Rentman, for change rate `lambda`
/// (per second), TTL `t` seconds, request rate per key `r` (unknown: hits only) and whether
/// stale-while-revalidate serves the expired copy once.
pub fn stale_chance(lambda: f64, t: f64, r: Option<f64>, swr: bool) -> f64 {
    if lambda <= 0.0 || t <= 0.0 {
        return 0.0;
    }
    let x = lambda * t;
    // 1 − (1 − e^−x)/x, written to keep precision for small x.
    let on_hits = if x < 1e-6 {
        x / 2.0
    } else {
        1.0 - (-(-x).exp_m1()) / x
    };
    let Some(r) = r else {
        return on_hits;
    };
    let upstream_share = 1.0 / (1.0 + r * t);
    let on_expired = if swr { -(-x).exp_m1() } else { 0.0 };
    (1.0 - upstream_share) * on_hits + upstream_share * on_expired
}

/// Upstream calls with TTL `new` relative to `now`, minus one.
pub fn upstream_change(r: f64, now: f64, new: f64) -> f64 {
    (1.0 + r * now) / (1.0 + r * new) - 1.0
}

fn show_secs(s: f64) -> String {
    match s {
        s if s < 90.0 => format!("{s:.0} s"),
        s if s < 5400.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.1} h", s / 3600.0),
        s => format!("{:.1} days", s / 86_400.0),
    }
}

/// A duration as the config writes it.
pub fn show_ttl(secs: u64) -> String {
    match secs {
        0 => "0".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn pct(x: f64) -> String {
    let p = x * 100.0;
    if p.abs() >= 10.0 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// The longest whole number of seconds under a minute that `fits` (at least 1).
fn shortest_fit(fits: impl Fn(f64) -> bool) -> u64 {
    (1..60).rev().find(|t| fits(*t as f64)).unwrap_or(1)
}

/// The advice for one route, for a staleness `budget` (the acceptable chance that a served
/// answer has changed at Rentman), once `min_refreshes` refreshes were seen.
pub fn advise(e: &Evidence, budget: f64, min_refreshes: u64) -> Advice {
    let ttl = e.ttl.as_secs_f64();
    let r = rate_per_key(e.requests, e.upstream_calls, e.ttl);
    let exposure = e.exposure.as_secs_f64();
    let lambda = if e.refreshes == 0 || exposure <= 0.0 {
        None
    } else if e.changed == 0 {
        Some(3.0 / exposure)
    } else {
        Some(e.changed as f64 / exposure)
    };
    let swr_now = !e.swr.is_zero();
    let mut advice = Advice {
        route: e.route.clone(),
        requests: e.requests,
        hit_ratio: (e.requests > 0).then(|| e.hits as f64 / e.requests as f64),
        requests_per_key_per_ttl: r.map(|r| r * ttl),
        upstream_calls: e.upstream_calls,
        refreshes: e.refreshes,
        changed: e.changed,
        change_ratio: (e.refreshes > 0).then(|| e.changed as f64 / e.refreshes as f64),
        mean_time_between_changes_secs: lambda.map(|l| 1.0 / l),
        median_changed_body_age_secs: e.median_changed_age.map(|d| d.as_secs()),
        current: Current {
            ttl_secs: e.ttl.as_secs(),
            stale_while_revalidate_secs: e.swr.as_secs(),
        },
        stale_chance_now: lambda.map(|l| stale_chance(l, ttl, r, swr_now)),
        suggested: None,
        evidence: String::new(),
    };
    let route = &e.route;
    let Some(lambda) = lambda.filter(|_| e.refreshes >= min_refreshes) else {
        advice.evidence = format!(
            "{route}: not enough evidence yet: {} refreshes reached Rentman (advice needs \
             {min_refreshes}); {} requests so far",
            e.refreshes, e.requests
        );
        return advice;
    };
    let chance = |t: f64, swr: bool| stale_chance(lambda, t, r, swr);
    let (pick, swr_pick) = match LADDER_SECS
        .iter()
        .rev()
        .find(|t| chance(**t as f64, true) <= budget)
    {
        Some(t) => (*t, *t),
        // Bodies change faster than the shortest rung allows: the longest TTL under a
        // minute that fits, without serving expired copies (at least one second).
        None => (shortest_fit(|t| chance(t, false) <= budget), 0),
    };
    let new = pick as f64;
    let suggestion = Suggestion {
        ttl_secs: pick,
        stale_while_revalidate_secs: swr_pick,
        stale_chance: chance(new, swr_pick > 0),
        upstream_change: r.map(|r| upstream_change(r, ttl, new)),
    };
    let changes = if e.changed == 0 {
        format!(
            "no refresh of {} changed the body (ETags compared): at most one change per ~{} \
             per key (95% bound)",
            e.refreshes,
            show_secs(1.0 / lambda)
        )
    } else {
        format!(
            "{} of {} refreshes changed the body (ETags compared), one change per ~{} per key \
             on average{}",
            pct(e.changed as f64 / e.refreshes as f64),
            e.refreshes,
            show_secs(1.0 / lambda),
            e.median_changed_age
                .map(|d| format!(
                    " (a replaced body had been current for {} at the median)",
                    show_secs(d.as_secs_f64())
                ))
                .unwrap_or_default()
        )
    };
    let calls = match suggestion.upstream_change {
        Some(c) if c < -0.005 => format!("would cut upstream calls by ~{}", pct(-c)),
        Some(c) if c > 0.005 => format!("would add ~{} upstream calls", pct(c)),
        Some(_) => "would leave upstream calls about the same".to_string(),
        None => "(upstream savings unknown: no upstream calls counted)".to_string(),
    };
    let verb = if pick == e.ttl.as_secs() && e.swr.as_secs() == swr_pick {
        format!("keep ttl {}", show_ttl(pick))
    } else {
        format!(
            "ttl {} → {} (stale_while_revalidate {} → {})",
            show_ttl(e.ttl.as_secs()),
            show_ttl(pick),
            show_ttl(e.swr.as_secs()),
            show_ttl(swr_pick)
        )
    };
    let within = if suggestion.stale_chance <= budget {
        "within"
    } else {
        "over (even a one-second TTL is not short enough)"
    };
    advice.evidence = format!(
        "{route}: hit ratio {}, {} requests; {changes}; {verb} {calls} with a {} chance of \
         serving a changed body ({within} the {} budget; now {})",
        advice.hit_ratio.map_or("-".into(), pct),
        e.requests,
        pct(suggestion.stale_chance),
        pct(budget),
        advice.stale_chance_now.map_or("-".into(), pct),
    );
    advice.suggested = Some(suggestion);
    advice
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: u64 = 3600;

    fn evidence() -> Evidence {
        // 2% of 1,900 refreshes changed the body, each refresh after ~1 h unconfirmed: a
        // change every ~50 h per key.
        Evidence {
            route: "property".into(),
            ttl: Duration::from_secs(H),
            swr: Duration::from_secs(H),
            requests: 20_000,
            hits: 18_000,
            upstream_calls: 2_000,
            refreshes: 1_900,
            changed: 38,
            exposure: Duration::from_secs(1_900 * H),
            median_changed_age: Some(Duration::from_secs(9 * H)),
        }
    }

    #[test]
    fn the_rate_per_key_comes_from_the_share_that_reached_rentman() {
        // 1 call in 10 requests with a 1 h TTL: 9 requests per key per hour.
        let r = rate_per_key(10_000, 1_000, Duration::from_secs(H)).unwrap();
        assert!((r * H as f64 - 9.0).abs() < 1e-9);
        assert_eq!(rate_per_key(10, 0, Duration::from_secs(H)), None);
        assert_eq!(rate_per_key(10, 10, Duration::from_secs(H)), None);
    }

    #[test]
    fn the_chance_of_a_changed_body_grows_with_the_ttl() {
        let lambda = 1.0 / (50.0 * H as f64);
        // Hits alone: about λt/2 for small λt.
        let one_hour = stale_chance(lambda, H as f64, None, false);
        assert!((one_hour - 0.01).abs() < 0.0002, "{one_hour}");
        assert!(stale_chance(lambda, 3.0 * H as f64, None, false) > one_hour);
        // Serving the expired copy once per expiry adds to it.
        let r = Some(9.0 / H as f64);
        assert!(stale_chance(lambda, H as f64, r, true) > stale_chance(lambda, H as f64, r, false));
        assert_eq!(stale_chance(0.0, H as f64, r, true), 0.0);
    }

    #[test]
    fn upstream_calls_fall_as_the_ttl_grows() {
        let r = 9.0 / H as f64;
        // 1 + 9 = 10 calls' worth at 1 h; 1 + 27 = 28 at 3 h: 10/28 − 1 = −64%.
        let c = upstream_change(r, H as f64, 3.0 * H as f64);
        assert!((c - (10.0 / 28.0 - 1.0)).abs() < 1e-9);
    }

    #[test]
    fn the_suggestion_is_the_longest_ttl_within_the_budget() {
        let a = advise(&evidence(), 0.01, 20);
        let s = a.suggested.clone().expect("enough evidence");
        assert!(s.stale_chance <= 0.01);
        // The next rung would exceed the budget.
        let i = LADDER_SECS.iter().position(|t| *t == s.ttl_secs).unwrap();
        let r = rate_per_key(20_000, 2_000, Duration::from_secs(H));
        let lambda = 38.0 / (1_900.0 * H as f64);
        assert!(stale_chance(lambda, LADDER_SECS[i + 1] as f64, r, true) > 0.01);
        assert_eq!(s.stale_while_revalidate_secs, s.ttl_secs);
        assert!((a.change_ratio.unwrap() - 0.02).abs() < 1e-9);
        assert!((a.mean_time_between_changes_secs.unwrap() - 50.0 * H as f64).abs() < 1.0);
        assert!(
            a.evidence
                .contains("2.0% of 1900 refreshes changed the body"),
            "{}",
            a.evidence
        );
        assert!(a.evidence.contains("upstream calls"), "{}", a.evidence);
        // A looser budget allows a longer TTL, and saves more calls.
        let loose = advise(&evidence(), 0.05, 20).suggested.unwrap();
        assert!(loose.ttl_secs > s.ttl_secs);
        assert!(loose.upstream_change.unwrap() < s.upstream_change.unwrap());
    }

    #[test]
    fn bodies_that_change_too_fast_get_a_ttl_under_a_minute_without_swr() {
        let mut e = evidence();
        // A change every ~2 s.
        e.changed = 950;
        e.exposure = Duration::from_secs(1_900);
        e.ttl = Duration::from_secs(1);
        e.swr = Duration::ZERO;
        let s = advise(&e, 0.5, 20).suggested.unwrap();
        assert!(s.ttl_secs < 60 && s.ttl_secs >= 1, "{s:?}");
        assert_eq!(s.stale_while_revalidate_secs, 0);
        assert!(s.stale_chance <= 0.5, "{s:?}");
    }

    #[test]
    fn no_change_seen_uses_the_upper_bound_and_little_evidence_suggests_nothing() {
        let mut e = evidence();
        e.changed = 0;
        let a = advise(&e, 0.01, 20);
        assert!((a.mean_time_between_changes_secs.unwrap() - 1_900.0 * H as f64 / 3.0).abs() < 1.0);
        assert!(a.evidence.contains("95% bound"), "{}", a.evidence);
        e.refreshes = 5;
        let a = advise(&e, 0.01, 20);
        assert_eq!(a.suggested, None);
        assert!(a.evidence.contains("not enough evidence"), "{}", a.evidence);
    }
}

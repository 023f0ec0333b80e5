//! Counters of the API requests the simulator received, for `GET /__sim/stats`.
//!
//! Tests of the proxy read these to prove what reached the origin (how many calls, with which
//! headers, whether a client's token leaked through), so every request is counted when it
//! arrives, whatever happens to it next, and tokens are redacted before anything is stored.

use std::collections::{BTreeMap, VecDeque};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{json, Value};

use super::request::{Request, TokenState};

/// How many recent requests `recent` keeps.
pub const RECENT: usize = 100;

/// Distinct targets counted one by one in `by_target`; past that (a benchmark with random
/// targets) the rest are added up under [`OTHER_TARGETS`] to bound memory.
pub const MAX_TARGETS: usize = 10_000;
pub const OTHER_TARGETS: &str = "(other)";

pub const ADVERTISING: &str = "propertyadvertising.php";
pub const MEDIA: &str = "propertymedia.php";

#[derive(Serialize, Debug, Clone)]
struct Recent {
    method: String,
    target: String,
    headers: BTreeMap<String, String>,
    token: &'static str,
    /// `null` when the connection was reset without a response.
    status: Option<u16>,
    /// The injected fault, if any: "error", "reset", "stall", "rate_limit", "bad_token".
    fault: Option<&'static str>,
}

#[derive(Default, Debug)]
struct Counters {
    total: u64,
    advertising: u64,
    media: u64,
    statuses: BTreeMap<u16, u64>,
    resets: u64,
    stalls: u64,
    bad_token: u64,
    errors: u64,
    rate_limited: u64,
    not_modified: u64,
    by_target: BTreeMap<String, u64>,
    in_flight: u64,
    max_in_flight: u64,
    recent: VecDeque<Recent>,
}

#[derive(Default, Debug)]
pub struct Stats {
    inner: Mutex<Counters>,
}

/// An API request being handled. It stays "in flight" until [`Tracked::finish`] or drop
/// (dropping covers a handler that bails out early).
pub struct Tracked<'a> {
    stats: &'a Stats,
    entry: Option<Recent>,
    fault: Option<&'static str>,
}

impl Stats {
    /// Counts a request on an API endpoint as it arrives.
    pub fn begin<'a>(
        &'a self,
        endpoint: &'static str,
        req: &Request,
        token: TokenState,
    ) -> Tracked<'a> {
        let target = req.redacted_target();
        let entry = Recent {
            method: req.method.clone(),
            target: target.clone(),
            headers: req.redacted_headers().into_iter().collect(),
            token: token.as_str(),
            status: None,
            fault: None,
        };
        let mut c = self.inner.lock();
        c.total += 1;
        if endpoint == ADVERTISING {
            c.advertising += 1;
        } else {
            c.media += 1;
        }
        if c.by_target.len() < MAX_TARGETS || c.by_target.contains_key(&target) {
            *c.by_target.entry(target).or_default() += 1;
        } else {
            *c.by_target.entry(OTHER_TARGETS.to_string()).or_default() += 1;
        }
        c.in_flight += 1;
        c.max_in_flight = c.max_in_flight.max(c.in_flight);
        Tracked {
            stats: self,
            entry: Some(entry),
            fault: None,
        }
    }

    pub fn stall(&self) {
        self.inner.lock().stalls += 1;
    }

    /// Zeroes every counter; `max_in_flight` restarts from the requests still in flight.
    pub fn reset(&self) {
        let mut c = self.inner.lock();
        let in_flight = c.in_flight;
        *c = Counters {
            in_flight,
            max_in_flight: in_flight,
            ..Counters::default()
        };
    }

    pub fn to_json(&self) -> Value {
        let c = self.inner.lock();
        let statuses: BTreeMap<String, u64> = c
            .statuses
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        json!({
            "total": c.total,
            "endpoints": { ADVERTISING: c.advertising, MEDIA: c.media },
            "statuses": statuses,
            "resets": c.resets,
            "stalls": c.stalls,
            "bad_token": c.bad_token,
            "errors": c.errors,
            "rate_limited": c.rate_limited,
            "not_modified": c.not_modified,
            "by_target": c.by_target,
            "in_flight": c.in_flight,
            "max_in_flight": c.max_in_flight,
            "recent": c.recent,
        })
    }

    fn end(&self, entry: Option<Recent>) {
        let mut c = self.inner.lock();
        c.in_flight = c.in_flight.saturating_sub(1);
        let Some(entry) = entry else { return };
        log::debug!(
            "simulator: {} {} -> {} (token {}, fault {})",
            entry.method,
            entry.target,
            entry.status.map_or("reset".to_string(), |s| s.to_string()),
            entry.token,
            entry.fault.unwrap_or("none")
        );
        match entry.status {
            Some(s) => *c.statuses.entry(s).or_default() += 1,
            None => c.resets += 1,
        }
        match entry.fault {
            Some("bad_token") => c.bad_token += 1,
            Some("error") => c.errors += 1,
            Some("rate_limit") => c.rate_limited += 1,
            _ => {}
        }
        if entry.status == Some(304) {
            c.not_modified += 1;
        }
        if c.recent.len() == RECENT {
            c.recent.pop_front();
        }
        c.recent.push_back(entry);
    }
}

impl Tracked<'_> {
    /// Marks the injected fault that shaped this answer (the last one set wins, except that
    /// a stall is kept when a later step adds nothing).
    pub fn fault(&mut self, fault: &'static str) {
        self.fault = Some(fault);
    }

    /// Records the answer's status (`None`: the connection was dropped without one).
    pub fn finish(mut self, status: Option<u16>) {
        if let Some(e) = self.entry.as_mut() {
            e.status = status;
            e.fault = if status.is_none() {
                Some("reset")
            } else {
                self.fault
            };
        }
        let entry = self.entry.take();
        self.stats.end(entry);
    }
}

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        if let Some(mut entry) = self.entry.take() {
            // Dropped without finish(): the handler gave up and the connection is closed.
            entry.fault = Some("reset");
            self.stats.end(Some(entry));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: vec![
                ("token".into(), "s3cret".into()),
                ("accept-encoding".into(), "identity".into()),
            ],
            body: Vec::new(),
        }
    }

    #[test]
    fn counts_statuses_targets_and_peak_concurrency() {
        let s = Stats::default();
        let a = s.begin(
            ADVERTISING,
            &req("/propertyadvertising.php?token=s3cret&featured=1"),
            TokenState::Ok,
        );
        let b = s.begin(MEDIA, &req("/propertymedia.php?propref=1"), TokenState::Ok);
        assert_eq!(s.to_json()["in_flight"], 2);
        a.finish(Some(200));
        let mut b2 = b;
        b2.fault("error");
        b2.finish(Some(500));
        let c = s.begin(
            MEDIA,
            &req("/propertymedia.php?propref=1"),
            TokenState::Missing,
        );
        c.finish(None);
        let v = s.to_json();
        assert_eq!(v["total"], 3);
        assert_eq!(v["endpoints"][ADVERTISING], 1);
        assert_eq!(v["endpoints"][MEDIA], 2);
        assert_eq!(v["statuses"]["200"], 1);
        assert_eq!(v["statuses"]["500"], 1);
        assert_eq!(v["errors"], 1);
        assert_eq!(v["resets"], 1);
        assert_eq!(v["in_flight"], 0);
        assert_eq!(v["max_in_flight"], 2);
        assert_eq!(v["by_target"]["/propertymedia.php?propref=1"], 2);
        assert_eq!(
            v["by_target"]["/propertyadvertising.php?token=REDACTED&featured=1"],
            1
        );
        assert_eq!(v["recent"][0]["headers"]["token"], "REDACTED");
        assert_eq!(v["recent"][0]["headers"]["accept-encoding"], "identity");
        assert_eq!(v["recent"][2]["status"], Value::Null);
        assert!(!v.to_string().contains("s3cret"));
        s.reset();
        let v = s.to_json();
        assert_eq!(v["total"], 0);
        assert_eq!(v["max_in_flight"], 0);
        assert_eq!(v["recent"].as_array().unwrap().len(), 0);
    }

    #[test]
    fn recent_keeps_the_last_hundred_and_drop_counts_as_reset() {
        let s = Stats::default();
        for i in 0..150 {
            s.begin(
                ADVERTISING,
                &req(&format!("/propertyadvertising.php?propref={i}")),
                TokenState::Any,
            )
            .finish(Some(200));
        }
        drop(s.begin(
            ADVERTISING,
            &req("/propertyadvertising.php"),
            TokenState::Any,
        ));
        let v = s.to_json();
        let recent = v["recent"].as_array().unwrap();
        assert_eq!(recent.len(), RECENT);
        assert_eq!(recent[0]["target"], "/propertyadvertising.php?propref=51");
        assert_eq!(recent[99]["fault"], "reset");
        assert_eq!(v["resets"], 1);
        assert_eq!(v["in_flight"], 0);
    }
}

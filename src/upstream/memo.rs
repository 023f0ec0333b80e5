//! Recent upstream failures by key: for `failure_memo` after a fill fails, further fills of
//! that key share the failure instead of asking Rentman again (a failing origin is not sent
//! one retry per waiting visitor).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use pingora::cache::key::HashBinary;

use super::Failure;

/// Above this many remembered keys, expired ones are swept.
const SWEEP_ABOVE: usize = 4096;

#[derive(Default)]
pub struct FailureMemo {
    map: Mutex<HashMap<HashBinary, (Instant, Failure)>>,
}

impl FailureMemo {
    pub fn record(&self, hash: HashBinary, failure: Failure, keep: Duration) {
        if keep.is_zero() {
            return;
        }
        let mut map = self.map.lock();
        if map.len() > SWEEP_ABOVE {
            let now = Instant::now();
            map.retain(|_, (until, _)| *until > now);
        }
        map.insert(hash, (Instant::now() + keep, failure));
    }

    pub fn recent(&self, hash: &HashBinary) -> Option<Failure> {
        let mut map = self.map.lock();
        match map.get(hash) {
            Some((until, f)) if *until > Instant::now() => Some(f.clone()),
            Some(_) => {
                map.remove(hash);
                None
            }
            None => None,
        }
    }

    pub fn forget(&self, hash: &HashBinary) {
        self.map.lock().remove(hash);
    }
}

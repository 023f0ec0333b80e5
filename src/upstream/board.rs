//! The gateway's failure reasons, readable by the proxy for the request that caused them.
//!
//! Pingora decides stale-if-error from the status alone; this board lets the proxy say *why*
//! it served stale (a revoked token reads differently from a timeout) without another
//! channel. Entries are taken by the proxy or cleared when its request ends.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::Failure;

/// Carries the proxy's request id to the gateway.
pub const REQUEST_ID_HEADER: &str = "x-rentcache-request";

#[derive(Default)]
pub struct FailureBoard {
    map: Mutex<HashMap<u64, Failure>>,
}

impl FailureBoard {
    pub fn post(&self, request: u64, failure: Failure) {
        self.map.lock().insert(request, failure);
    }

    pub fn take(&self, request: u64) -> Option<Failure> {
        self.map.lock().remove(&request)
    }
}

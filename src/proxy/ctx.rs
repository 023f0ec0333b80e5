//! What one request carries from hook to hook: where it stands, not a history of flags.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{Config, Route};
use crate::policy::key::Canonical;
use crate::policy::outer::CacheStatus;
use crate::storage::Entry;
use crate::upstream::Admission;

/// What looking the key up found.
#[derive(Clone, Default)]
pub enum Lookup {
    /// Not looked up yet.
    #[default]
    NotYet,
    /// No tier holds a usable copy.
    Nothing,
    /// A usable copy (fresh or within a serve-stale window), and the tier that held it.
    Found(Arc<Entry>, &'static str),
}

/// What the cache did for the request, once decided: what its headers and metrics report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub status: CacheStatus,
    /// The tier the answer came from, when it came from a stored copy.
    pub tier: Option<&'static str>,
    /// The status the upstream answered with, when it was asked (or the failure's status).
    pub upstream_status: Option<u16>,
    /// Why the upstream could not be used (a failure's code), when it could not.
    pub reason: Option<String>,
    /// This request's upstream answer was stored.
    pub stored: bool,
}

impl Served {
    pub fn new(status: CacheStatus) -> Served {
        Served {
            status,
            tier: None,
            upstream_status: None,
            reason: None,
            stored: false,
        }
    }
}

pub struct Ctx {
    pub started: Instant,
    /// The config this request runs under, even if a reload happens meanwhile.
    pub config: Arc<Config>,
    /// Set once the request is routed.
    pub canonical: Option<Arc<Canonical>>,
    /// Forwarded by pingora without the cache (other methods, a route that stores nothing,
    /// credentials on an `honor_origin` route).
    pub pass_through: bool,
    pub lookup: Lookup,
    pub served: Option<Served>,
    /// It waited for a fill another request started.
    pub coalesced: bool,
    /// The status of the answer, once written.
    pub sent_status: Option<u16>,
    /// The client stopped taking the answer.
    pub client_gone: bool,
    /// This request is already counted in the metrics.
    pub recorded: bool,
    /// A pass-through's place under the upstream budget and concurrency limit, held until
    /// the request ends.
    pub admission: Option<Admission>,
    /// A fresh hit the front door prepared that only pingora's writer can send.
    pub(crate) answer: Option<super::answer::Answer>,
    /// Set once a `/media/...` request is routed: the file it asks for.
    pub media: Option<Arc<super::media::MediaRequest>>,
    /// How long the request waited for Rentman (its key's fill, or a pass-through's
    /// answer), when it did.
    pub upstream_time: Option<Duration>,
    /// Body bytes written past pingora's writer (its own count misses them).
    pub direct_body_bytes: u64,
}

impl Ctx {
    pub fn new(config: Arc<Config>) -> Ctx {
        Ctx {
            started: Instant::now(),
            config,
            canonical: None,
            pass_through: false,
            lookup: Lookup::NotYet,
            served: None,
            coalesced: false,
            sent_status: None,
            client_gone: false,
            recorded: false,
            admission: None,
            answer: None,
            media: None,
            upstream_time: None,
            direct_body_bytes: 0,
        }
    }

    pub fn route(&self) -> Option<&Route> {
        self.canonical
            .as_ref()
            .and_then(|c| self.config.routes.get(c.route))
    }

    /// The canonical key, or `-` before routing: what logs show instead of the raw URI
    /// (which may carry a client's token).
    pub fn key(&self) -> &str {
        self.canonical.as_ref().map_or("-", |c| c.key.as_str())
    }

    /// What the cache did; `BYPASS` for what it did not handle.
    pub fn cache_status(&self) -> CacheStatus {
        self.served
            .as_ref()
            .map_or(CacheStatus::Bypass, |s| s.status)
    }
}

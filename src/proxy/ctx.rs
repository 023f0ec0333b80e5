//! What one request carries from hook to hook.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::config::{Config, Route};
use crate::policy::key::Canonical;

pub struct Ctx {
    /// Identifies this request to the gateway (for failure reasons).
    pub id: u64,
    pub started: Instant,
    /// The config this request runs under, even if a reload happens meanwhile.
    pub config: Arc<Config>,
    pub canonical: Option<Arc<Canonical>>,
    /// Which tier held the entry a lookup found.
    pub tier: Option<&'static str>,
    /// Forwarded without the cache (other methods, or a route that stores nothing).
    pub pass_through: bool,
    /// A lookup found an entry; `Some(fresh)`.
    pub found_fresh: Option<bool>,
    pub upstream_status: Option<u16>,
    /// The gateway's reason code when the upstream failed.
    pub upstream_failure: Option<String>,
    /// Why an expired entry was served instead of the upstream's answer.
    pub stale_reason: Option<String>,
    /// Body of a fill on a JSON route, checked once complete before it is stored.
    pub fill_body: Vec<Bytes>,
    pub check_fill_body: bool,
    /// The answer is another instance's stored entry, relayed through the shared tier.
    pub shared_copy: bool,
    /// This (fresh) hit started a refresh-ahead of its key.
    pub refresh_ahead: bool,
    /// The fast path found the key hot and due for refresh-ahead: pingora's path does it.
    pub refresh_ahead_due: bool,
    /// Answered by the fast path: a fresh hit (memory or Redis) written without pingora's cache state.
    pub fast_hit: bool,
    /// The status of a response written past pingora's writer (which then knows none).
    pub sent_status: Option<u16>,
    /// The client stopped taking a response the fast path was writing.
    pub client_gone: bool,
    /// This request is already counted in the metrics.
    pub recorded: bool,
    /// The fast path looked the key up in every tier and found nothing usable.
    pub looked_up: bool,
    /// The tier where the fast path found an entry it left to pingora's path.
    pub found_in: Option<&'static str>,
    /// The front door routed and looked up this request, then handed it to pingora.
    pub handed_off: bool,
    /// A fresh hit the front door prepared but only pingora's writer can send.
    pub(crate) answer: Option<super::Answer>,
}

impl Ctx {
    pub fn new(id: u64, config: Arc<Config>) -> Ctx {
        Ctx {
            id,
            started: Instant::now(),
            config,
            canonical: None,
            tier: None,
            pass_through: false,
            found_fresh: None,
            upstream_status: None,
            upstream_failure: None,
            stale_reason: None,
            fill_body: Vec::new(),
            check_fill_body: false,
            shared_copy: false,
            refresh_ahead: false,
            refresh_ahead_due: false,
            fast_hit: false,
            sent_status: None,
            client_gone: false,
            recorded: false,
            looked_up: false,
            found_in: None,
            handed_off: false,
            answer: None,
        }
    }

    pub fn route(&self) -> Option<&Route> {
        self.canonical
            .as_ref()
            .map(|c| &self.config.routes[c.route])
    }

    /// The canonical key, or `-` before routing: what logs show instead of the raw URI
    /// (which may carry a client's token).
    pub fn key(&self) -> &str {
        self.canonical.as_ref().map_or("-", |c| c.key.as_str())
    }
}

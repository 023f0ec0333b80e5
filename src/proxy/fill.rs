//! The miss path: one upstream call per key, however many requests want it.
//!
//! A fill runs as a task of its own (a client that goes away does not cancel it for the
//! others), and every request for the key meanwhile waits for its outcome instead of asking
//! again. The outcome is a typed value: the stored (or, when uncacheable, unstored) entry, or
//! the [`FetchError`] that says why there is none. In order, a fill:
//!
//! 1. shares a failure remembered for the key (`failure_memo`) instead of asking again;
//! 2. takes the entry a fill that just finished stored;
//! 3. with Redis, takes the key's lease or waits for the instance holding it, and then
//!    takes what it stored or shares how it failed;
//! 4. asks the upstream (`Upstream::fetch`: throttle, timeouts, whole body, body check),
//!    conditionally when the stale copy has the origin's validators;
//! 5. stores what may be stored, in every tier, or remembers the failure, here and in Redis.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{BoxFuture, FutureExt, Shared};
use log::{debug, warn};
use parking_lot::Mutex;
use pingora::cache::key::HashBinary;
use pingora::cache::RespCacheable;
use pingora::http::ResponseHeader;

use crate::config::{Config, Mode, Route};
use crate::metrics::Metrics;
use crate::policy::key::Canonical;
use crate::policy::{freshness, validators, vary};
use crate::storage::redis::FailedFill;
use crate::storage::{Entry, EntryTimes, Kept, StoreInfo, TieredStorage, VaryIndex};
use crate::upstream::{
    coordinate, Coordinated, Failure, FailureMemo, FetchError, FetchRequest, Fetched, LeaseGuard,
    Upstream, Validators,
};

/// How a fill came by its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// A full answer from the upstream.
    Fetched,
    /// The upstream confirmed the stale copy (304).
    Revalidated,
    /// Another instance fetched and stored it; this one read it from Redis.
    Relayed,
    /// A fill that finished just before this one started had stored it.
    Found,
}

/// A fill's entry, and what became of it.
pub struct Filled {
    pub entry: Arc<Entry>,
    pub how: How,
    /// The tiers that kept it (none: an answer not stored).
    pub kept: Kept,
    /// It may answer every request for the key. An uncacheable answer of an `honor_origin`
    /// route (`private`, `no-store`...) answers only the request that fetched it.
    pub shared: bool,
    /// The upstream's status, when this fill asked it.
    pub upstream_status: Option<u16>,
    /// When the answer varies on request headers: on which, and the variant it is (a
    /// request that selects another variant does not take it).
    pub variant: Option<(Vec<String>, String)>,
}

pub type FillOutcome = Result<Arc<Filled>, Arc<FetchError>>;

/// What a fill is for.
pub struct Want {
    /// The key filled: the URL's, or one variant's when its answers vary (`policy::vary`).
    pub canonical: Arc<Canonical>,
    pub config: Arc<Config>,
    /// The expired copy, if any: its validators make the request conditional.
    pub stale: Option<Arc<Entry>>,
    /// The request's headers the upstream is asked with (and a variant is chosen by).
    pub forward: Vec<(http::HeaderName, http::HeaderValue)>,
}

/// Why a background refresh starts (for metrics).
#[derive(Debug, Clone, Copy)]
pub enum Refresh {
    StaleWhileRevalidate,
    RefreshAhead,
}

impl Refresh {
    fn label(self) -> &'static str {
        match self {
            Refresh::StaleWhileRevalidate => "stale_while_revalidate",
            Refresh::RefreshAhead => "refresh_ahead",
        }
    }
}

/// What asking for a background refresh did.
pub enum Refreshing {
    /// A refresh of the key is running (started now or earlier).
    Yes,
    /// The key's last fetch failed within the failure memo: nothing runs.
    Failed(Failure),
}

type Flight = Shared<BoxFuture<'static, FillOutcome>>;

/// Takes a finished flight off its map when dropped, unless a newer one for the key
/// replaced it.
pub(crate) struct Landing<'a, F> {
    flights: &'a Mutex<HashMap<HashBinary, (u64, F)>>,
    hash: HashBinary,
    id: u64,
}

impl<'a, F> Landing<'a, F> {
    pub(crate) fn new(
        flights: &'a Mutex<HashMap<HashBinary, (u64, F)>>,
        hash: HashBinary,
        id: u64,
    ) -> Self {
        Landing { flights, hash, id }
    }
}

impl<F> Drop for Landing<'_, F> {
    fn drop(&mut self) {
        let mut flights = self.flights.lock();
        if flights.get(&self.hash).is_some_and(|(i, _)| *i == self.id) {
            flights.remove(&self.hash);
        }
    }
}

pub struct Fills {
    flights: Mutex<HashMap<HashBinary, (u64, Flight)>>,
    next: AtomicU64,
    upstream: Arc<Upstream>,
    storage: &'static TieredStorage,
    memo: FailureMemo,
    metrics: Arc<Metrics>,
    observer: Arc<crate::observe::Observer>,
}

impl Fills {
    pub fn new(
        upstream: Arc<Upstream>,
        storage: &'static TieredStorage,
        metrics: Arc<Metrics>,
        observer: Arc<crate::observe::Observer>,
    ) -> Arc<Fills> {
        Arc::new(Fills {
            flights: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            upstream,
            storage,
            memo: FailureMemo::default(),
            metrics,
            observer,
        })
    }

    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The outcome of the key's fill, joining the one in flight or starting one; waits at
    /// most `upstream.fill_wait` (then the failure is a timeout, and the fill goes on). The
    /// flag says whether this request joined another's fill.
    pub async fn fill(self: &Arc<Self>, want: Want) -> (FillOutcome, bool) {
        let wait = want.config.upstream.fill_wait;
        let (flight, joined) = self.flight(want);
        match tokio::time::timeout(wait, flight).await {
            Ok(outcome) => (outcome, joined),
            Err(_) => (Err(Arc::new(Failure::Timeout.into())), joined),
        }
    }

    /// Makes sure a refresh of the key runs, unless its last fetch failed within the
    /// failure memo (then there is nothing to wait for, and the caller says why).
    pub fn refresh(self: &Arc<Self>, want: Want, why: Refresh) -> Refreshing {
        if let Some(f) = self.memo.recent(&want.canonical.hash) {
            return Refreshing::Failed(f);
        }
        let (_flight, joined) = self.flight(want);
        if !joined {
            self.metrics
                .background_refreshes
                .with_label_values(&[why.label()])
                .inc();
        }
        Refreshing::Yes
    }

    /// Fetches for one request alone, storing nothing: for a request whose key's fill
    /// brought an answer only its own request may have.
    pub async fn fetch_alone(&self, want: &Want) -> Result<Fetched, FetchError> {
        let Some(route) = want.config.routes.get(want.canonical.route) else {
            return Err(Failure::Other("the route is gone".into()).into());
        };
        self.upstream
            .fetch(&FetchRequest {
                config: &want.config,
                route,
                target: &want.canonical.target,
                headers: &want.canonical.headers,
                validators: None,
                forward: &want.forward,
            })
            .await
    }

    /// The key's flight, started if none is in the air.
    fn flight(self: &Arc<Self>, want: Want) -> (Flight, bool) {
        let hash = want.canonical.hash;
        let mut flights = self.flights.lock();
        if let Some((_, flight)) = flights.get(&hash) {
            return (flight.clone(), true);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        let task = tokio::spawn(async move {
            // Dropped after the store (a request that finds no flight finds the entry), or
            // while a panic unwinds (so the key is not left joined to a dead flight).
            let _landing = Landing::new(&me.flights, hash, id);
            me.run(&want).await
        });
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(Arc::new(
                    Failure::Other(format!("the fill stopped: {e}")).into(),
                ))
            })
        }
        .boxed()
        .shared();
        flights.insert(hash, (id, flight.clone()));
        (flight, false)
    }

    async fn run(&self, want: &Want) -> FillOutcome {
        let c = &want.canonical;
        let Some(route) = want.config.routes.get(c.route) else {
            return Err(Arc::new(Failure::Other("the route is gone".into()).into()));
        };
        if let Some(f) = self.memo.recent(&c.hash) {
            debug!(
                "{}: sharing the failure of a recent fetch ({})",
                c.key,
                f.code()
            );
            return Err(Arc::new(f.into()));
        }
        if let Some(entry) = self.storage.memory().peek(&c.hash) {
            // Newer than the copy this fill is to replace (a refresh ahead of expiry starts
            // from a fresh copy, which is no reason not to fetch).
            let newer = want
                .stale
                .as_ref()
                .is_none_or(|s| entry.times.updated > s.times.updated);
            if newer && entry.key == c.key && entry.times.is_fresh(SystemTime::now()) {
                return Ok(Arc::new(Filled {
                    entry,
                    how: How::Found,
                    kept: Kept {
                        memory: true,
                        redis: false,
                    },
                    shared: true,
                    upstream_status: None,
                    variant: None,
                }));
            }
        }
        let lease = match self.coordinate(want).await {
            Ok(lease) => lease,
            Err(done) => return done,
        };
        let validators = want.stale.as_ref().and_then(|e| Validators::of(&e.header));
        let fetched = self
            .upstream
            .fetch(&FetchRequest {
                config: &want.config,
                route,
                target: &c.target,
                headers: &c.headers,
                validators: validators.as_ref(),
                forward: &want.forward,
            })
            .await;
        match fetched {
            Ok(f) => {
                self.memo.forget(&c.hash);
                let filled = self.keep(want, route, f).await;
                if !filled.kept.redis {
                    // Storing in Redis released the lease with the write.
                    self.release(&c.hash, lease).await;
                }
                Ok(Arc::new(filled))
            }
            Err(e) => {
                warn!(
                    "upstream failure for {} (route {}): {}",
                    c.key, route.name, e.failure
                );
                if e.failure.is_ours() {
                    self.release(&c.hash, lease).await;
                } else {
                    let memo = want.config.upstream.failure_memo;
                    self.memo.record(c.hash, e.failure.clone(), memo);
                    if let (Some(guard), Some(redis)) = (lease, self.storage.redis()) {
                        let failed = FailedFill {
                            code: e.failure.code(),
                            retry_after_ms: e
                                .failure
                                .retry_after()
                                .map(|d| d.as_millis().min(u64::MAX as u128) as u64),
                        };
                        redis.fail_lease(&c.hash, &guard.value, &failed, memo).await;
                    }
                }
                Err(Arc::new(e))
            }
        }
    }

    /// Step 3: with Redis, one instance fetches. `Err` is the fill's outcome already (what
    /// another instance stored, or how its fetch failed).
    async fn coordinate(&self, want: &Want) -> Result<Option<LeaseGuard>, FillOutcome> {
        let Some(redis) = self.storage.redis().filter(|r| r.is_up()) else {
            return Ok(None);
        };
        let c = &want.canonical;
        let up = &want.config.upstream;
        let limit = up.connect_timeout + up.read_timeout + redis.config().lease;
        let replacing = want.stale.as_ref().map(|s| s.times.updated);
        match coordinate(redis, &c.key, &c.hash, replacing, limit).await {
            Coordinated::Fetch(lease) => Ok(lease),
            Coordinated::Filled(entry) => {
                self.storage.promote(entry.clone()).await;
                Err(Ok(Arc::new(Filled {
                    entry,
                    how: How::Relayed,
                    kept: Kept {
                        memory: false,
                        redis: true,
                    },
                    shared: true,
                    upstream_status: None,
                    variant: None,
                })))
            }
            Coordinated::Failed(f) => {
                let failure =
                    Failure::from_code(&f.code, f.retry_after_ms.map(Duration::from_millis));
                debug!("{}: another instance's fetch failed ({})", c.key, f.code);
                if let Failure::RateLimited { retry_after } = &failure {
                    self.upstream.throttle.pause(*retry_after);
                }
                self.memo.record(c.hash, failure.clone(), up.failure_memo);
                Err(Err(Arc::new(failure.into())))
            }
        }
    }

    async fn release(&self, hash: &HashBinary, lease: Option<LeaseGuard>) {
        if let (Some(guard), Some(redis)) = (lease, self.storage.redis()) {
            redis.release_lease(hash, &guard.value).await;
        }
    }

    /// Step 5 for an answer: renew on a 304, store what the route and the answer allow,
    /// and keep the rest as an entry only this fill's requests see.
    async fn keep(&self, want: &Want, route: &Route, f: Fetched) -> Filled {
        let c = &want.canonical;
        let now = SystemTime::now();
        let status = f.header.status.as_u16();
        if status == 304 {
            if let Some(stale) = &want.stale {
                self.observe_refresh(route, stale, false, now);
                let targeted = want.config.upstream.cache_control_field.as_ref();
                return self.renew(route, targeted, stale, &f.header, now).await;
            }
        }
        let targeted = want.config.upstream.cache_control_field.as_ref();
        match freshness::decide(route, &f.header, false, targeted, now) {
            RespCacheable::Cacheable(meta) => {
                let mut header = meta.response_header().clone();
                validators::complete_stored_header(&mut header, &f.body);
                let times = EntryTimes::of(&meta);
                // An answer that varies is stored as the variant the request selects, and
                // the URL's key holds the index of its variants.
                let names = match route.mode {
                    Mode::HonorOrigin => vary::names(&f.header.headers),
                    Mode::Forced => None,
                };
                let url = url_of(c);
                let (key, hash, variant) = match &names {
                    Some(names) => {
                        let request = forwarded_map(&want.forward);
                        let v = vary::variant(&url, names, &request);
                        if !self
                            .index_variant(want, route, &url, names, &v.key, times)
                            .await
                        {
                            return self.unstorable(want, route, f, status, now);
                        }
                        (v.key.clone(), v.hash, Some((names.clone(), v.key)))
                    }
                    None => (c.key.clone(), c.hash, None),
                };
                if let Some(stale) = want.stale.as_ref().filter(|_| variant.is_none()) {
                    let changed = validators::etag(&stale.header) != validators::etag(&header);
                    self.observe_refresh(route, stale, changed, now);
                }
                let entry = Entry::new(key, hash, times, header, f.body);
                let info = StoreInfo {
                    route: &route.name,
                    watch_changes: route.watch_changes,
                    config: &want.config,
                    shared_copy: false,
                };
                let (entry, kept) = self.storage.store(entry, info).await;
                Filled {
                    entry,
                    how: How::Fetched,
                    kept,
                    shared: true,
                    upstream_status: Some(status),
                    variant,
                }
            }
            RespCacheable::Uncacheable(why) => {
                debug!("{}: not stored ({why:?})", c.key);
                if want.stale.is_some() {
                    // The upstream's newest answer for the key is not to be stored: the old
                    // copy must not outlive it (it is no failure to cover for).
                    self.storage.invalidate(&c.hash, false).await;
                }
                self.unstorable(want, route, f, status, now)
            }
        }
    }

    /// Evidence for TTL advice: a refresh of `stale` reached Rentman and found its body
    /// `changed` or not.
    fn observe_refresh(&self, route: &Route, stale: &Entry, changed: bool, now: SystemTime) {
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default();
        self.observer.refreshed(
            &route.name,
            changed,
            since(stale.times.updated),
            since(stale.times.created),
        );
    }

    /// An answer kept for this fill's requests only (not stored).
    fn unstorable(
        &self,
        want: &Want,
        route: &Route,
        f: Fetched,
        status: u16,
        now: SystemTime,
    ) -> Filled {
        // An answer that varies cannot be shared with requests that may select another
        // variant; one that does not, on a forced route, is the same for every request.
        let varies = vary::names(&f.header.headers).is_some();
        Filled {
            entry: Arc::new(unstored(
                &want.canonical,
                f,
                now,
                route.mode != Mode::Forced,
            )),
            how: How::Fetched,
            kept: Kept::default(),
            shared: route.mode == Mode::Forced && !varies,
            upstream_status: Some(status),
            variant: None,
        }
    }

    /// Records `variant` in the index of `url`'s variants (which vary on `names`); false when
    /// the URL has as many variants stored as it may have.
    async fn index_variant(
        &self,
        want: &Want,
        route: &Route,
        url: &Canonical,
        names: &[String],
        variant: &str,
        times: EntryTimes,
    ) -> bool {
        let current = self
            .storage
            .first(&url.hash)
            .await
            .and_then(|e| e.vary.clone())
            .filter(|v| v.names == names);
        let mut variants = current.map(|v| v.variants.clone()).unwrap_or_default();
        if !variants.iter().any(|v| v == variant) {
            if variants.len() >= vary::MAX_VARIANTS {
                self.metrics.vary_refused.inc();
                debug!("{}: {} variants stored, no more", url.key, variants.len());
                return false;
            }
            variants.push(variant.to_string());
        }
        let index = Entry::new(
            url.key.clone(),
            url.hash,
            times,
            crate::json_error::bare_header(http::StatusCode::OK),
            Vec::new(),
        )
        .with_vary(VaryIndex {
            names: names.to_vec(),
            variants,
        });
        let info = StoreInfo {
            route: &route.name,
            watch_changes: false,
            config: &want.config,
            shared_copy: false,
        };
        self.storage.store(index, info).await;
        true
    }

    /// A 304 for the stale copy: its header updated with the 304's (RFC 9111 4.3.4), its
    /// lifetimes renewed, its body kept.
    async fn renew(
        &self,
        route: &Route,
        targeted: Option<&http::header::HeaderName>,
        stale: &Arc<Entry>,
        not_modified: &ResponseHeader,
        now: SystemTime,
    ) -> Filled {
        let mut header = stale.header.clone();
        for (name, value) in not_modified.headers.iter() {
            if !matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "keep-alive"
            ) {
                let _ = header.insert_header(name.clone(), value.clone());
            }
        }
        let (entry, kept) = match freshness::decide(route, &header, false, targeted, now) {
            RespCacheable::Cacheable(meta) => {
                let mut times = EntryTimes::of(&meta);
                times.created = stale.times.created;
                let mut header = meta.response_header().clone();
                validators::complete_stored_header(&mut header, &stale.body);
                self.storage.renew(stale, times, header).await
            }
            RespCacheable::Uncacheable(_) => {
                let times = EntryTimes {
                    fresh_until: now,
                    updated: now,
                    ..stale.times
                };
                (Arc::new(stale.with_times(times, header)), Kept::default())
            }
        };
        Filled {
            entry,
            how: How::Revalidated,
            kept,
            shared: kept.any() || route.mode == Mode::Forced,
            upstream_status: Some(304),
            variant: None,
        }
    }
}

/// The URL's own canonical form of a key that may be a variant's.
pub(super) fn url_of(c: &Canonical) -> Canonical {
    let key = vary::url_key(&c.key).to_string();
    Canonical {
        hash: pingora::cache::key::hash_key(&key),
        key,
        ..c.clone()
    }
}

/// Forwarded headers as a map, to choose a variant by.
pub(super) fn forwarded_map(forward: &[(http::HeaderName, http::HeaderValue)]) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    for (n, v) in forward {
        map.append(n.clone(), v.clone());
    }
    map
}

/// An answer kept for the requests of one fill only: framed, never stored. Cookies stay
/// only on an answer that goes to the one request that fetched it.
pub(super) fn unstored(c: &Canonical, f: Fetched, now: SystemTime, own: bool) -> Entry {
    let mut header = validators::without_case(&f.header);
    for name in ["transfer-encoding", "connection", "keep-alive"] {
        header.remove_header(name);
    }
    if !own {
        header.remove_header(&http::header::SET_COOKIE);
    }
    let len = f.len();
    let _ = header.insert_header(http::header::CONTENT_LENGTH, len);
    let times = EntryTimes {
        fresh_until: now,
        created: now,
        updated: now,
        swr_sec: 0,
        sie_sec: 0,
    };
    Entry::new(c.key.clone(), c.hash, times, header, f.body)
}

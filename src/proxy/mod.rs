//! The caching proxy: pingora's hooks, each a few lines that hand off to `policy`,
//! `storage` and the gateway.
//!
//! Request path: route and canonical key (`request_filter`) -> cache enabled with our tiers
//! and lock (`request_cache_filter`) -> lookup, lock, SWR by pingora -> on a miss, to the
//! origin gateway over a Unix socket (`upstream_peer`, `upstream_request_filter`) -> storage
//! decision (`response_cache_filter`) -> headers for clients and outer caches
//! (`response_filter`). On plain HTTP/1, fresh hits never take this path: the front door
//! (`front`) answers them first, with the same `find_fresh` and `answer_for`.

mod ctx;
mod direct;
mod front;
mod gzip;
pub mod hot;
mod memo;
mod outcome;
mod reply;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use log::{debug, warn};
use pingora::cache::lock::CacheKeyLockImpl;
use pingora::cache::{CacheKey, CacheMeta, CacheOptionOverrides, HitHandler, NoCacheReason};
use pingora::cache::{ForcedFreshness, RespCacheable};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::ResponseCompressionBuilder;
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

pub use ctx::Ctx;
pub use front::Front;

use crate::config::{BodyCheck, Mode, SharedConfig};
use crate::metrics::Metrics;
use crate::policy::cors::{self, Preflight};
use crate::policy::outer::CacheStatus;
use crate::policy::{body, encoding, freshness, key, routes, validators};
use crate::storage::{
    served_from, FillInfo, JustLookedUp, RenderedHead, SharedCopy, TieredStorage,
};
use crate::upstream::{
    FailureBoard, Throttle, FILL_HEADER, KEY_HEADER, RELAYED_HEADER, REQUEST_ID_HEADER,
    ROUTE_HEADER,
};
use pingora::protocols::http::conditional_filter::{not_modified_filter, to_304};

/// A handle on the proxy's state: clones share it (the front door holds one).
#[derive(Clone)]
pub struct RentCache {
    config: SharedConfig,
    storage: &'static TieredStorage,
    lock: &'static CacheKeyLockImpl,
    board: Arc<FailureBoard>,
    throttle: Arc<Throttle>,
    hot: Arc<hot::HotKeys>,
    metrics: Arc<Metrics>,
    memo: Arc<memo::KeyMemo>,
    counters: Arc<arc_swap::ArcSwapOption<outcome::Counters>>,
    /// The origin gateway, over its Unix socket.
    gateway: HttpPeer,
    /// Largest body any tier can keep; larger responses are served but not stored.
    max_object_bytes: usize,
    compression_level: u32,
    next_id: Arc<AtomicU64>,
}

/// What the proxy is built from.
pub struct Parts {
    pub config: SharedConfig,
    pub storage: &'static TieredStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub board: Arc<FailureBoard>,
    pub throttle: Arc<Throttle>,
    pub metrics: Arc<Metrics>,
    pub hot: Arc<hot::HotKeys>,
    pub gateway_socket: std::path::PathBuf,
    pub max_object_bytes: usize,
}

/// A fresh hit, ready to write.
pub(crate) struct Answer {
    pub header: ResponseHeader,
    /// The entry whose body goes out; none for an answer without a body (HEAD, 304).
    pub entry: Option<Arc<crate::storage::Entry>>,
    /// Only pingora's writer can encode it the way this client asks.
    pub may_compress: bool,
}

/// What the front door can do with a request.
// Made and taken apart once per request: boxing the large variant would only add an
// allocation to every hit.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Early {
    /// A fresh hit, counted: write `head` and the entry's body (none for HEAD, 304...).
    Answered {
        head: Bytes,
        body: Option<Arc<crate::storage::Entry>>,
        ctx: Box<Ctx>,
    },
    /// Routed and looked up, and left to pingora's path with what the lookup found.
    LookedUp(Box<Ctx>),
    /// Pingora's from the start (no route, a route that stores nothing, a method it
    /// only passes through).
    NotHere,
}

/// A fresh entry found for a request, in the form this client takes it.
struct Found {
    entry: Arc<crate::storage::Entry>,
    /// A coding may apply to it (its answers vary on `Accept-Encoding`).
    encodable: bool,
    /// Only pingora's writer can encode it the way this client asks.
    may_compress: bool,
}

/// Whether an answer depends on nothing in the request but its target and method: no CORS
/// origin to echo, no validator that could make it a 304.
fn renders_alike(req: &RequestHeader) -> bool {
    let h = &req.headers;
    !h.contains_key(http::header::ORIGIN)
        && !h.contains_key(http::header::IF_NONE_MATCH)
        && !h.contains_key(http::header::IF_MODIFIED_SINCE)
}

impl Answer {
    pub fn body(&self) -> &[Bytes] {
        self.entry.as_ref().map_or(&[], |e| &e.body)
    }
}

impl RentCache {
    pub fn new(p: Parts) -> RentCache {
        let c = p.config.load_full();
        let mut gateway =
            HttpPeer::new_uds(&p.gateway_socket.to_string_lossy(), false, String::new())
                .expect("a valid socket path");
        // The gateway always answers, with its own 5xx if the upstream does not; this only
        // guards against a stuck gateway, so it allows for the longest legitimate wait: for
        // another instance's fill, for budget, then for a whole upstream attempt.
        let up = &c.upstream;
        let attempt = up.connect_timeout + up.read_timeout;
        let lease = c.redis.as_ref().map_or(Duration::ZERO, |r| r.lease);
        gateway.options.read_timeout =
            Some(attempt * 2 + lease + up.budget.queue_wait + Duration::from_secs(10));
        gateway.options.idle_timeout = Some(Duration::from_secs(60));
        RentCache {
            storage: p.storage,
            lock: p.lock,
            board: p.board,
            throttle: p.throttle,
            hot: p.hot,
            metrics: p.metrics,
            memo: Arc::default(),
            counters: Arc::default(),
            gateway,
            max_object_bytes: p.max_object_bytes,
            compression_level: c.server.compression_level,
            next_id: Arc::new(AtomicU64::new(1)),
            config: p.config,
        }
    }

    /// The hit path: a fresh entry, in memory or in the shared tier, is written straight from
    /// `request_filter`, without building pingora's cache state for it. Everything else
    /// (misses, stale entries, ranges, background refreshes, keys due for refresh-ahead)
    /// takes pingora's path. Most hits never get here: the front door (`front`) serves them
    /// before pingora reads the request; this serves the rest (TLS, HTTP/2, requests the
    /// front door leaves to pingora whole).
    async fn serve_fresh(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let background = session.subrequest_ctx.is_some();
        let Some(answer) = self
            .fresh_answer(session.req_header(), background, ctx)
            .await?
        else {
            return Ok(false);
        };
        self.count(session, ctx);
        self.write_answer(session, ctx, answer).await
    }

    /// The answer to a request for a fresh entry, with every header it goes out with, or
    /// None when pingora's path must answer.
    pub(crate) async fn fresh_answer(
        &self,
        req: &RequestHeader,
        background: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Answer>> {
        let Some(found) = self.find_fresh(req, background, ctx).await else {
            return Ok(None);
        };
        self.answer_for(req, ctx, found, SystemTime::now())
            .map(Some)
    }

    /// A fresh entry for a request, in the form this client takes it, or None when pingora's
    /// path must answer. A Redis entry found here is promoted to memory like any lookup
    /// would, so when a stale one goes on to pingora's path it is not fetched twice (unless
    /// memory cannot keep it); `ctx` records what the lookup found for that path.
    async fn find_fresh(
        &self,
        req: &RequestHeader,
        background: bool,
        ctx: &mut Ctx,
    ) -> Option<Found> {
        let c = ctx.canonical.clone()?;
        if ctx.pass_through || background || req.headers.contains_key(http::header::RANGE) {
            return None;
        }
        let Some((entry, tier)) = self
            .storage
            .find_usable(&c.hash, Some(&c.key), SystemTime::now(), false)
            .await
        else {
            ctx.looked_up = true;
            return None;
        };
        // After the read: an entry that expired while Redis answered is not fresh.
        let now = SystemTime::now();
        ctx.found_in = Some(tier);
        if !entry.times.is_fresh(now) {
            return None;
        }
        let route = &ctx.config.routes[c.route];
        let due = self.hot.hit(
            &c.hash,
            &c.key,
            entry.times.updated,
            entry.times.fresh_until,
            route.ttl,
            &ctx.config.refresh_ahead,
            !route.stale_while_revalidate.is_zero(),
            now,
        );
        if due && self.throttle.spare(&ctx.config.upstream.budget) {
            ctx.refresh_ahead_due = true;
            return None;
        }
        ctx.found_fresh = Some(true);
        ctx.tier = Some(tier);
        ctx.fast_hit = true;
        let accept = req.headers.get(http::header::ACCEPT_ENCODING);
        let encodable =
            self.compression_level > 0 && encoding::compressible(&entry.header, entry.body_len);
        // Copies are made whole and kept in memory: an entry too large for memory (kept in
        // Redis only) is encoded chunk by chunk on its way out instead, as below.
        let takes_gzip = encodable
            && encoding::accepts_gzip(accept)
            && self.storage.memory().admits(entry.size());
        // Pingora's compression module encodes on the way through its writer: answers it
        // may encode for this client (a coding other than gzip) must go that way.
        let may_compress = encodable && !takes_gzip && accept.is_some_and(|v| v != "identity");
        let entry = if takes_gzip {
            gzip::copy_of(self.storage.memory(), &entry, self.compression_level.min(9)).await
        } else {
            entry
        };
        Some(Found {
            entry,
            encodable,
            may_compress,
        })
    }

    /// The answer for a fresh entry `find_fresh` found, its headers as of `now`.
    fn answer_for(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
        found: Found,
        now: SystemTime,
    ) -> Result<Answer> {
        let Found {
            entry,
            encodable,
            may_compress,
        } = found;
        let age = entry.age(now);
        let mut header = entry.header.clone();
        if encodable {
            encoding::vary_on_accept_encoding(&mut header);
        }
        header.insert_header(http::header::AGE, age.as_secs())?;
        let clock = outcome::EntryClock {
            fresh_until: entry.times.fresh_until,
            age,
        };
        outcome::decorate_with(
            &mut header,
            req,
            ctx,
            CacheStatus::Hit,
            Some(clock),
            false,
            now,
        );
        let not_modified = not_modified_filter(req, &header);
        if not_modified {
            to_304(&mut header);
        }
        let header_only = not_modified || req.method == http::Method::HEAD || entry.body.is_empty();
        ctx.sent_status = Some(header.status.as_u16());
        Ok(Answer {
            header,
            entry: (!header_only).then_some(entry),
            may_compress,
        })
    }

    /// The front door's part of a request (see `front`): a fresh hit, counted, with its
    /// head ready to send, or what pingora's path needs to know to take over.
    ///
    /// Most hits are for a few hot entries, and everything in their heads but `Date`, `Age`
    /// and the remaining lifetimes is the same every time: an answer that depends on nothing
    /// else in the request (no `Origin`, no conditional header) is rendered once per entry
    /// and second, as of the start of that second, and kept with the entry. Ages and
    /// lifetimes are whole seconds in HTTP; this makes them at most one second younger and
    /// one second longer to live than to the nanosecond, as a cache that reads the clock
    /// once a second reports them. Whether the entry is fresh is decided to the nanosecond.
    pub(crate) async fn answer_early(&self, req: &RequestHeader, keepalive: bool) -> Early {
        let mut ctx = Box::new(self.new_ctx());
        let Some(canonical) = self.canonical(&ctx.config, req) else {
            return Early::NotHere;
        };
        let route = &ctx.config.routes[canonical.route];
        if !route.is_cached() || !routes::allows_method(route, &req.method) {
            return Early::NotHere;
        }
        ctx.canonical = Some(canonical);
        let Some(found) = self.find_fresh(req, false, &mut ctx).await else {
            ctx.handed_off = true;
            return Early::LookedUp(ctx);
        };
        let (head, body, status) = if !found.may_compress && renders_alike(req) {
            let body = (req.method != http::Method::HEAD && !found.entry.body.is_empty())
                .then(|| found.entry.clone());
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let key = [
                since_epoch.as_secs(),
                Arc::as_ptr(&ctx.config) as usize as u64,
                u64::from(ctx.tier == Some("redis")) | (u64::from(keepalive) << 1),
            ];
            let kept = found.entry.rendered.load();
            match kept.as_deref().filter(|r| r.key == key) {
                Some(r) => (r.bytes.clone(), body, r.status),
                None => {
                    let entry = found.entry.clone();
                    let second = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
                    let Ok(answer) = self.answer_for(req, &mut ctx, found, second) else {
                        return Early::NotHere;
                    };
                    let date = httpdate::fmt_http_date(second);
                    let head = direct::head_bytes_dated(&answer.header, keepalive, date.as_bytes())
                        .freeze();
                    let status = answer.header.status.as_u16();
                    entry.rendered.store(Some(Arc::new(RenderedHead {
                        key,
                        status,
                        bytes: head.clone(),
                    })));
                    (head, body, status)
                }
            }
        } else {
            let Ok(answer) = self.answer_for(req, &mut ctx, found, SystemTime::now()) else {
                return Early::NotHere;
            };
            if answer.may_compress {
                ctx.handed_off = true;
                ctx.answer = Some(answer);
                return Early::LookedUp(ctx);
            }
            let head = direct::head_bytes(&answer.header, keepalive).freeze();
            (head, answer.entry, answer.header.status.as_u16())
        };
        ctx.sent_status = Some(status);
        let from = outcome::Source {
            req,
            background: false,
            coalesced: false,
        };
        self.record(from, &mut ctx, CacheStatus::Hit);
        Early::Answered { head, body, ctx }
    }

    /// Writes an answer from `fresh_answer` through pingora's session (already counted).
    async fn write_answer(&self, session: &mut Session, ctx: &mut Ctx, a: Answer) -> Result<bool> {
        if !a.may_compress {
            match direct::send(session, &a.header, a.body()).await {
                direct::Sent::Whole => return Ok(true),
                direct::Sent::Broken => {
                    ctx.client_gone = true;
                    return Ok(true);
                }
                direct::Sent::NotTried => {}
            }
        }
        let Answer { header, entry, .. } = a;
        let body = entry.as_ref().map_or(&[][..], |e| &e.body[..]);
        session
            .write_response_header(Box::new(header), body.is_empty())
            .await?;
        let last = body.len().saturating_sub(1);
        for (i, chunk) in body.iter().enumerate() {
            session
                .write_response_body(Some(chunk.clone()), i == last)
                .await?;
        }
        Ok(true)
    }

    /// The canonical form of a request under `config` (None: no route takes it).
    fn canonical(
        &self,
        config: &Arc<crate::config::Config>,
        req: &RequestHeader,
    ) -> Option<Arc<key::Canonical>> {
        let target = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
        self.memo.canonical(
            config,
            req.uri.path(),
            req.uri.query(),
            target,
            &req.headers,
        )
    }

    /// Counts this request in the metrics, once, before the last byte of its answer leaves:
    /// a reading of /metrics or /stats taken after a client has its response includes it
    /// (counting in `logging`, which runs after the write, would race with that reading).
    fn count(&self, session: &Session, ctx: &mut Ctx) {
        let status = outcome::cache_status(session, ctx);
        self.record(outcome::Source::of(session), ctx, status);
    }

    fn record(&self, from: outcome::Source, ctx: &mut Ctx, status: CacheStatus) {
        if ctx.recorded {
            return;
        }
        ctx.recorded = true;
        outcome::record(&self.metrics, &self.counters, from, ctx, status);
    }

    /// Answers a CORS preflight; returns whether this request was one.
    async fn preflight(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (Some(origin), Some(method)) = (
            header(http::header::ORIGIN),
            header(http::header::ACCESS_CONTROL_REQUEST_METHOD),
        ) else {
            return Ok(false);
        };
        let requested_headers = header(http::header::ACCESS_CONTROL_REQUEST_HEADERS);
        let mut methods = vec![http::Method::GET, http::Method::HEAD];
        let canonical =
            key::canonicalize(&ctx.config, req.uri.path(), req.uri.query(), &req.headers);
        if let Some(c) = &canonical {
            methods.extend(
                ctx.config.routes[c.route]
                    .pass_through_methods
                    .iter()
                    .cloned(),
            );
        }
        match cors::preflight(
            &ctx.config.cors,
            &origin,
            &method,
            requested_headers.as_deref(),
            &methods,
        ) {
            Preflight::Allowed(headers) => {
                self.count(session, ctx);
                reply::send(session, 204, headers, Bytes::new()).await?
            }
            Preflight::Denied(why) => {
                self.count(session, ctx);
                reply::error(session, 403, "cors_denied", &why, Vec::new()).await?
            }
        }
        Ok(true)
    }
}

#[async_trait]
impl ProxyHttp for RentCache {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(
            self.next_id.fetch_add(1, Ordering::Relaxed),
            self.config.load_full(),
        )
    }

    fn init_downstream_modules(&self, modules: &mut HttpModules) {
        modules.add_module(ResponseCompressionBuilder::enable(self.compression_level));
    }

    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        found: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(found) = found.downcast::<Ctx>() {
            *ctx = *found;
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if ctx.handed_off {
            // Routed and looked up by the front door already.
            return match ctx.answer.take() {
                Some(answer) => {
                    self.count(session, ctx);
                    self.write_answer(session, ctx, answer).await
                }
                None => Ok(false),
            };
        }
        let method = session.req_header().method.clone();
        if method == http::Method::OPTIONS && self.preflight(session, ctx).await? {
            return Ok(true);
        }
        let req = session.req_header();
        let Some(canonical) = self.canonical(&ctx.config, req) else {
            let msg = format!("no route for {}", req.uri.path());
            self.count(session, ctx);
            reply::error(session, 404, "no_route", &msg, cors_headers(session, ctx)).await?;
            return Ok(true);
        };
        let route = &ctx.config.routes[canonical.route];
        if !routes::allows_method(route, &method) {
            let mut allow = vec!["GET", "HEAD"];
            allow.extend(route.pass_through_methods.iter().map(http::Method::as_str));
            let mut headers = cors_headers(session, ctx);
            headers.push(("allow", allow.join(", ")));
            let msg = format!("{method} is not allowed here; use {}", allow.join(" or "));
            self.count(session, ctx);
            reply::error(session, 405, "method_not_allowed", &msg, headers).await?;
            return Ok(true);
        }
        ctx.pass_through =
            !(method == http::Method::GET || method == http::Method::HEAD) || !route.is_cached();
        ctx.canonical = Some(canonical);
        self.serve_fresh(session, ctx).await
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if ctx.pass_through || ctx.canonical.is_none() {
            return Ok(());
        }
        let mut overrides = CacheOptionOverrides::default();
        overrides.wait_timeout = Some(ctx.config.upstream.fill_wait);
        session
            .cache
            .enable(self.storage, None, None, Some(self.lock), Some(overrides));
        session.cache.set_max_file_size_bytes(self.max_object_bytes);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        match &ctx.canonical {
            Some(c) => {
                let mut key = CacheKey::new(c.key.clone(), "");
                // Hashed once per distinct request target, not once per request.
                key.set_primary_bin_override(c.hash);
                if ctx.looked_up {
                    key.extensions.insert(JustLookedUp::new());
                }
                Ok(key)
            }
            None => Error::e_explain(ErrorType::InternalError, "no canonical key"),
        }
    }

    async fn cache_hit_filter(
        &self,
        session: &mut Session,
        meta: &CacheMeta,
        hit_handler: &mut HitHandler,
        is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        ctx.found_fresh = Some(is_fresh);
        // An entry the direct path found in Redis and promoted is found in memory now.
        ctx.tier = ctx.found_in.take().or_else(|| served_from(hit_handler));
        if session.subrequest_ctx.is_some() {
            // A background refresh (refresh-ahead) that found the entry still fresh: it
            // exists to fetch anyway.
            return Ok(is_fresh.then_some(ForcedFreshness::ForceExpired));
        }
        let (Some(route), Some(c)) = (ctx.route(), ctx.canonical.as_ref()) else {
            return Ok(None);
        };
        // Refresh-ahead rides on stale-while-revalidate: pingora serves this request from
        // the entry while one background subrequest refreshes it. The fast path may have
        // counted this hit already and found the key due.
        let can_refresh = is_fresh && !route.stale_while_revalidate.is_zero();
        let refresh = ctx.refresh_ahead_due
            || (self.hot.hit(
                &c.hash,
                &c.key,
                meta.epoch(),
                meta.fresh_until(),
                route.ttl,
                &ctx.config.refresh_ahead,
                can_refresh,
                SystemTime::now(),
            ) && self.throttle.spare(&ctx.config.upstream.budget));
        if !refresh {
            return Ok(None);
        }
        ctx.refresh_ahead = true;
        Ok(Some(ForcedFreshness::ForceExpiredServeStale {
            expired_at: None,
        }))
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.gateway.clone()))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let Some(c) = &ctx.canonical else {
            return Error::e_explain(ErrorType::InternalError, "unrouted request upstream");
        };
        let route = &ctx.config.routes[c.route];
        req.set_uri(
            c.target
                .parse()
                .map_err(|_| Error::explain(ErrorType::InternalError, "bad canonical target"))?,
        );
        req.remove_header(ctx.config.upstream.token_name.as_str());
        // Only rentcache speaks to its gateway in x-rentcache-* headers.
        let internal: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|n| n.as_str().starts_with("x-rentcache-"))
            .cloned()
            .collect();
        for name in internal {
            req.remove_header(&name);
        }
        if route.mode == Mode::Forced {
            // The key ignores credentials, so the upstream must not see any either.
            req.remove_header(&http::header::COOKIE);
            req.remove_header(&http::header::AUTHORIZATION);
        }
        // pingora revalidates with the stored ETag; the origin cannot know our own.
        let own_etag = req
            .headers
            .get(http::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(validators::is_own_etag);
        if own_etag {
            req.remove_header(&http::header::IF_NONE_MATCH);
        }
        for (name, _) in &route.key_headers {
            req.remove_header(name.as_str());
        }
        for (name, value) in &c.headers {
            req.insert_header(name.clone(), value.as_str())?;
        }
        req.insert_header(ROUTE_HEADER, route.name.as_str())?;
        req.insert_header(REQUEST_ID_HEADER, ctx.id.to_string())?;
        if !ctx.pass_through {
            // The gateway shares a recent failure of this key with every request for it, and
            // coordinates fills with other instances (only fills: the cache may have been
            // disabled for this request, e.g. when its lock's holder got an uncacheable answer).
            req.insert_header(KEY_HEADER, hex::encode(c.hash))?;
            if session.cache.enabled() {
                req.insert_header(FILL_HEADER, "1")?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.upstream_status = Some(resp.status.as_u16());
        ctx.shared_copy = resp.remove_header(RELAYED_HEADER).is_some();
        if let Some(reason) = resp.remove_header(crate::upstream::REASON_HEADER) {
            ctx.upstream_failure = reason.to_str().ok().map(str::to_string);
            self.board.take(ctx.id);
        }
        ctx.check_fill_body = session.cache.enabled()
            && resp.status == http::StatusCode::OK
            && ctx.route().is_some_and(|r| r.body == BodyCheck::JsonArray);
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if !ctx.check_fill_body {
            return Ok(None);
        }
        if let Some(b) = body {
            ctx.fill_body.push(b.clone());
        }
        if end_of_stream {
            ctx.check_fill_body = false;
            let chunks = std::mem::take(&mut ctx.fill_body);
            if let Err(problem) = body::check_json_array(&chunks) {
                warn!("not storing {}: {problem}", ctx.key());
                ctx.upstream_failure = Some(problem.code().to_string());
                session
                    .cache
                    .disable(NoCacheReason::Custom("invalid upstream body"));
            }
        }
        Ok(None)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        let Some(route) = ctx.route() else {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled));
        };
        if ctx.upstream_failure.is_some() {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let authorization = session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION);
        let mut decision = freshness::decide(route, resp, authorization, SystemTime::now());
        if let RespCacheable::Cacheable(meta) = &mut decision {
            if ctx.shared_copy {
                meta.extensions_mut().insert(SharedCopy);
            }
            meta.extensions_mut().insert(FillInfo {
                route: route.name.clone(),
                watch_changes: route.watch_changes,
                config: ctx.config.clone(),
            });
        }
        Ok(decision)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        let Some(e) = error else {
            // Stale-while-revalidate: pingora has checked the entry's own window.
            return true;
        };
        if e.esource() != &ErrorSource::Upstream {
            return false;
        }
        let failure = self.board.take(ctx.id);
        ctx.upstream_status = match (&failure, e.etype()) {
            (Some(f), _) => Some(f.status()),
            (None, ErrorType::HTTPStatus(code)) => Some(*code),
            _ => None,
        };
        ctx.stale_reason = Some(match (failure, e.etype()) {
            (Some(f), _) => f.code(),
            (None, ErrorType::HTTPStatus(code)) => format!("status-{code}"),
            (None, other) => other.as_str().to_ascii_lowercase(),
        });
        true
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = outcome::cache_status(session, ctx);
        outcome::decorate(resp, session, ctx, status);
        // An answer without a body gets no body filter call: count it now.
        let bodyless = session.req_header().method == http::Method::HEAD
            || matches!(resp.status.as_u16(), 204 | 304)
            || resp
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
        if bodyless {
            self.count(session, ctx);
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if end_of_stream {
            self.count(session, ctx);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                _ => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            let message = match code {
                502 | 504 => "the upstream could not be reached".to_string(),
                400 => "the request could not be read".to_string(),
                _ => "internal error".to_string(),
            };
            let headers = cors_headers(session, ctx);
            self.count(session, ctx);
            if let Err(we) = reply::error(session, code, "proxy_error", &message, headers).await {
                debug!("could not send error response: {we}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        // Never the raw URI: a client may have put a token in it.
        format!("{} {}", session.req_header().method, ctx.key())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        self.board.take(ctx.id);
        self.count(session, ctx);
        let cache_status = outcome::cache_status(session, ctx);
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.sent_status)
            .unwrap_or(0);
        debug!(
            "{} {} -> {} {} in {:?}{}",
            session.req_header().method,
            ctx.key(),
            status,
            cache_status.as_str(),
            ctx.started.elapsed(),
            e.map(|e| format!(" ({e})")).unwrap_or_default()
                + if ctx.client_gone {
                    " (client gone mid-response)"
                } else {
                    ""
                }
        );
    }
}

/// CORS headers for responses rentcache writes itself.
fn cors_headers(session: &Session, ctx: &Ctx) -> Vec<(&'static str, String)> {
    let origin = session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match cors::allow_origin(&ctx.config.cors, origin) {
        Some(o) => {
            let mut h = vec![("access-control-allow-origin", o.clone())];
            if o != "*" {
                h.push(("vary", "Origin".into()));
            }
            h
        }
        None => Vec::new(),
    }
}

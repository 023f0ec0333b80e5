//! The caching proxy: pingora's hooks, each a few lines that hand off to named functions.
//!
//! ```text
//!  connection ──► front door (front.rs) ── fresh hit, plain HTTP/1 ──► one writev, done
//!                      │ anything else, with what its lookup found
//!                      ▼
//!  request_filter ── preflight, no route (404), method (405) ──────────► JSON/CORS answer
//!       │ route + canonical key
//!       ├─ cached GET/HEAD: serve_cached (serve.rs) ─────────────────► answer, done
//!       │     fresh ─────────────────────────────► HIT (refresh-ahead in the background)
//!       │     stale within stale_while_revalidate ► UPDATING while a refresh runs,
//!       │                                            STALE if the key's last fetch failed
//!       │     otherwise: the key's fill (fill.rs): one per key, here and across instances
//!       │          entry ────────────────────────► MISS / EXPIRED / REVALIDATED
//!       │          FetchError, copy usable ──────► STALE (Warning, reason in Cache-Status)
//!       │          FetchError, no usable copy ───► JSON error, or the origin's own answer
//!       │                                           on honor_origin routes
//!       └─ pass-through (other methods, uncached routes): admitted by the throttle, then
//!          upstream_peer ─► upstream_request_filter (token, target) ─► pingora proxies
//!          ─► response_filter (headers) ─► fail_to_proxy on errors (JSON error)
//!  logging: counted once, one debug line
//! ```
//!
//! Pingora's own cache machinery is not used: a miss is one in-process pipeline whose facts
//! (route, key, lease, budget, failure) are Rust values from `request_filter` to the answer.

mod answer;
mod ctx;
mod direct;
mod fill;
mod front;
mod gzip;
pub mod head;
pub mod hot;
mod media;
mod memo;
mod outcome;
mod reply;
mod serve;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use log::debug;
use pingora::cache::CacheKey;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::compression::{ResponseCompression, ResponseCompressionBuilder};
use pingora::modules::http::HttpModules;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

pub use ctx::Ctx;
pub use fill::Fills;
pub use front::Front;

use crate::config::SharedConfig;
use crate::metrics::Metrics;
use crate::policy::cors::{self, Preflight};
use crate::policy::outer::CacheStatus;
use crate::policy::{key, routes};
use crate::storage::{RenderedHead, TieredStorage};
use crate::upstream::limit::Sample;
use crate::upstream::Failure;
use ctx::Served;

/// A handle on the proxy's state: clones share it (the front door holds one).
#[derive(Clone)]
pub struct RentCache {
    config: SharedConfig,
    storage: &'static TieredStorage,
    fills: Arc<Fills>,
    media: Arc<media::MediaFiles>,
    hot: Arc<hot::HotKeys>,
    metrics: Arc<Metrics>,
    memo: Arc<memo::KeyMemo>,
    counters: Arc<arc_swap::ArcSwapOption<outcome::Counters>>,
    compression_level: u32,
    observer: Arc<crate::observe::Observer>,
}

/// What the proxy is built from.
pub struct Parts {
    pub config: SharedConfig,
    pub storage: &'static TieredStorage,
    pub fills: Arc<Fills>,
    pub metrics: Arc<Metrics>,
    pub hot: Arc<hot::HotKeys>,
    pub observer: Arc<crate::observe::Observer>,
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

/// Whether an answer depends on nothing in the request but its target and method: no CORS
/// origin to echo, no validator that could make it a 304, no range.
fn renders_alike(req: &RequestHeader) -> bool {
    use http::header::{IF_MODIFIED_SINCE, IF_NONE_MATCH, ORIGIN, RANGE};
    let h = &req.headers;
    // A request head holds a dozen names or so: comparing each with four standard names is
    // cheaper than hashing four names for four lookups.
    if h.keys_len() > 16 {
        return ![ORIGIN, IF_NONE_MATCH, IF_MODIFIED_SINCE, RANGE]
            .iter()
            .any(|n| h.contains_key(n));
    }
    !h.keys()
        .any(|k| k == ORIGIN || k == IF_NONE_MATCH || k == IF_MODIFIED_SINCE || k == RANGE)
}

impl RentCache {
    pub fn new(p: Parts) -> RentCache {
        let c = p.config.load_full();
        RentCache {
            storage: p.storage,
            media: media::MediaFiles::new(p.fills.clone(), p.storage, &c.media),
            fills: p.fills,
            hot: p.hot,
            metrics: p.metrics,
            memo: Arc::default(),
            counters: Arc::default(),
            compression_level: c.server.compression_level,
            config: p.config,
            observer: p.observer,
        }
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
        let found = if crate::policy::media_url::is_media(req.uri.path()) {
            let get = req.method == http::Method::GET || req.method == http::Method::HEAD;
            if !get || self.route_media(req, &mut ctx).is_err() {
                return Early::NotHere;
            }
            self.media_fresh(&mut ctx).await
        } else {
            let Some(canonical) = self.canonical(&ctx.config, req) else {
                return Early::NotHere;
            };
            let Some(route) = ctx.config.routes.get(canonical.route) else {
                return Early::NotHere;
            };
            if !route.is_cached() || !routes::allows_method(route, &req.method) {
                return Early::NotHere;
            }
            ctx.canonical = Some(canonical);
            self.find_fresh(req, &mut ctx).await
        };
        let Some(found) = found else {
            return Early::LookedUp(ctx);
        };
        let (head, body, status) = if !found.may_compress && renders_alike(req) {
            let body = (req.method != http::Method::HEAD && !found.entry.body.is_empty())
                .then(|| found.entry.clone());
            let since_epoch = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let tier = ctx.served.as_ref().and_then(|s| s.tier);
            let key = [
                since_epoch.as_secs(),
                ctx.config.generation,
                u64::from(tier == Some("redis")) | (u64::from(keepalive) << 1),
            ];
            let kept = found.entry.rendered.load();
            match kept.as_deref().filter(|r| r.key == key) {
                Some(r) => (r.bytes.clone(), body, r.status),
                None => {
                    let entry = found.entry.clone();
                    let second = UNIX_EPOCH + Duration::from_secs(since_epoch.as_secs());
                    let answer = answer::compose(req, &ctx, found, second);
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
            let entry = found.entry.clone();
            let answer = answer::compose(req, &ctx, found, SystemTime::now());
            if answer.may_compress || answer.header.status == http::StatusCode::PARTIAL_CONTENT {
                // Pingora's writer encodes and sends parts; the front door sends whole entries.
                ctx.answer = Some(answer);
                return Early::LookedUp(ctx);
            }
            let head = direct::head_bytes(&answer.header, keepalive).freeze();
            let status = answer.header.status.as_u16();
            (head, (!answer.body.is_empty()).then_some(entry), status)
        };
        ctx.sent_status = Some(status);
        self.record(req, &mut ctx);
        Early::Answered { head, body, ctx }
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
    fn record(&self, req: &RequestHeader, ctx: &mut Ctx) {
        if std::mem::replace(&mut ctx.recorded, true) {
            return;
        }
        outcome::record(&self.metrics, &self.counters, req, ctx);
    }

    /// Reports a finished request to the console's figures and the access log (warming
    /// requests are not clients').
    pub(crate) fn finished(
        &self,
        req: &RequestHeader,
        ctx: &Ctx,
        status: u16,
        body_bytes: u64,
        client: Option<std::net::SocketAddr>,
    ) {
        if crate::warm::is_warming(&req.headers) {
            return;
        }
        let served = ctx.served.as_ref();
        self.observer.finished(crate::observe::Done {
            config: &ctx.config,
            canonical: ctx.canonical.as_ref(),
            method: &req.method,
            cache_status: ctx.cache_status(),
            tier: served.and_then(|s| s.tier),
            status,
            started: ctx.started,
            upstream: ctx.upstream_time,
            body_bytes,
            client,
        });
    }

    pub(crate) fn access_logging(&self) -> bool {
        self.observer.logging()
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
        if let Some(route) = canonical.and_then(|c| ctx.config.routes.get(c.route)) {
            methods.extend(route.pass_through_methods.listed().iter().cloned());
            if let (crate::config::PassThrough::Any, Ok(m)) = (
                &route.pass_through_methods,
                http::Method::from_bytes(method.as_bytes()),
            ) {
                methods.push(m);
            }
        }
        let verdict = cors::preflight(
            &ctx.config.cors,
            &origin,
            &method,
            requested_headers.as_deref(),
            &methods,
        );
        self.record(session.req_header(), ctx);
        match verdict {
            Preflight::Allowed(headers) => reply::send(session, 204, headers, Bytes::new()).await?,
            Preflight::Denied(why) => {
                reply::error(session, 403, "cors_denied", &why, Vec::new()).await?
            }
        }
        Ok(true)
    }

    /// Routes the request: its canonical key, or the error it gets (404, 405) written.
    async fn route(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        let method = req.method.clone();
        let Some(canonical) = self.canonical(&ctx.config, req) else {
            let msg = format!("no route for {}", req.uri.path());
            self.record(session.req_header(), ctx);
            reply::error(session, 404, "no_route", &msg, cors_headers(session, ctx)).await?;
            return Ok(false);
        };
        let Some(route) = ctx.config.routes.get(canonical.route) else {
            return Error::e_explain(ErrorType::InternalError, "a route of another config");
        };
        if !routes::allows_method(route, &method) {
            let mut allow = vec!["GET", "HEAD"];
            allow.extend(
                route
                    .pass_through_methods
                    .listed()
                    .iter()
                    .map(http::Method::as_str),
            );
            let mut headers = cors_headers(session, ctx);
            headers.push(("allow", allow.join(", ")));
            let msg = format!("{method} is not allowed here; use {}", allow.join(" or "));
            self.record(session.req_header(), ctx);
            reply::error(session, 405, "method_not_allowed", &msg, headers).await?;
            return Ok(false);
        }
        let req = session.req_header();
        let credentials = req.headers.contains_key(http::header::AUTHORIZATION)
            || req.headers.contains_key(http::header::COOKIE);
        ctx.pass_through = !(method == http::Method::GET || method == http::Method::HEAD)
            || !route.is_cached()
            // Answers for credentials are not shared (RFC 9111 3.5); forced routes drop them.
            || (credentials && route.mode == crate::config::Mode::HonorOrigin);
        ctx.canonical = Some(canonical);
        Ok(true)
    }

    /// Lets a pass-through go upstream if the throttle admits it; else answers its refusal.
    async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let throttle = &self.fills.upstream().throttle;
        match throttle.admit(&ctx.config.upstream.budget).await {
            Ok(admission) => {
                ctx.admission = Some(admission);
                Ok(true)
            }
            Err(refused) => {
                self.metrics
                    .upstream_refusals
                    .with_label_values(&[&refused.code()])
                    .inc();
                self.answer_failure_plainly(session, ctx, &refused).await?;
                Ok(false)
            }
        }
    }

    /// A JSON error for a failure nothing stale can cover.
    async fn answer_failure_plainly(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        failure: &Failure,
    ) -> Result<bool> {
        let mut served = Served::new(ctx.cache_status());
        served.reason = Some(failure.code());
        ctx.served = Some(served);
        let (header, body) = failure.response();
        let a = answer::plain(session.req_header(), ctx, header, body);
        self.record(session.req_header(), ctx);
        self.write_answer(session, ctx, a).await
    }
}

#[async_trait]
impl ProxyHttp for RentCache {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new(self.config.load_full())
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
        if let Some(a) = ctx.answer.take() {
            // A fresh hit the front door prepared for pingora's writer.
            self.record(session.req_header(), ctx);
            return self.write_answer(session, ctx, a).await;
        }
        if ctx.canonical.is_none() {
            if lacks_host(session.req_header()) {
                let headers = cors_headers(session, ctx);
                self.record(session.req_header(), ctx);
                let msg = "an HTTP/1.1 request needs a Host header";
                reply::refuse(session, 400, "bad_request", msg, headers).await?;
                return Ok(true);
            }
            if session.req_header().method == http::Method::OPTIONS
                && self.preflight(session, ctx).await?
            {
                return Ok(true);
            }
            if crate::policy::media_url::is_media(session.req_header().uri.path()) {
                return self.serve_media(session, ctx).await;
            }
            if !self.route(session, ctx).await? {
                return Ok(true);
            }
        }
        if ctx.media.is_some() {
            return self.serve_media(session, ctx).await;
        }
        if ctx.pass_through {
            return Ok(!self.admit(session, ctx).await?);
        }
        self.serve_cached(session, ctx).await
    }

    fn cache_key_callback(&self, _session: &Session, _ctx: &mut Ctx) -> Result<CacheKey> {
        // Pingora's cache is never enabled: fills run in `serve_cached`.
        Error::e_explain(ErrorType::InternalError, "pingora's cache is not used")
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let timeout = ctx
            .route()
            .and_then(|r| r.upstream_timeout)
            .unwrap_or(ctx.config.upstream.read_timeout);
        match self.fills.upstream().peer(&ctx.config, timeout).await {
            Ok(peer) => Ok(Box::new(peer)),
            Err(f) => Error::e_explain(ErrorType::ConnectError, f.message()),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (Some(c), Some(route)) = (&ctx.canonical, ctx.route()) else {
            return Error::e_explain(ErrorType::InternalError, "unrouted request upstream");
        };
        self.fills
            .upstream()
            .rewrite(&ctx.config, route, req, &c.target, &c.headers)
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if resp.status.is_informational() {
            return Ok(());
        }
        if !is_safe(&session.req_header().method)
            && (resp.status.is_success() || resp.status.is_redirection())
        {
            self.invalidate_after_unsafe(session.req_header(), resp, ctx)
                .await;
        }
        // Pingora frames the answer itself: only the fields it does not manage go.
        for name in &ctx.config.upstream.drop_headers {
            resp.remove_header(name);
        }
        let mut served = Served::new(CacheStatus::Bypass);
        served.upstream_status = Some(resp.status.as_u16());
        ctx.served = Some(served);
        let took = ctx.started.elapsed();
        if let Some(a) = &mut ctx.admission {
            a.record(if resp.status.is_server_error() {
                Sample::Overloaded
            } else {
                Sample::Answered(took)
            });
        }
        ctx.upstream_time = Some(took);
        let route = ctx.route().map_or("-", |r| r.name.as_str());
        self.fills
            .upstream()
            .record_call(route, resp.status.as_str(), took);
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        outcome::decorate(resp, session, ctx);
        // The origin forbade transforming it, or the route is not to be compressed.
        if ctx.route().is_some_and(|r| !r.compress) || crate::policy::encoding::no_transform(resp) {
            if let Some(c) = session
                .downstream_modules_ctx
                .get_mut::<ResponseCompression>()
            {
                c.adjust_level(0);
            }
        }
        // An answer without a body gets no body filter call: count it now.
        let bodyless = session.req_header().method == http::Method::HEAD
            || matches!(resp.status.as_u16(), 204 | 304)
            || resp
                .headers
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() == b"0");
        if bodyless {
            self.record(session.req_header(), ctx);
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
            self.record(session.req_header(), ctx);
        }
        Ok(None)
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy
    where
        Ctx: Send + Sync,
    {
        let code = match e.esource() {
            ErrorSource::Upstream => {
                let failure = Failure::from_error(e);
                if let Some(a) = &mut ctx.admission {
                    a.record(Sample::Overloaded);
                }
                let route = ctx.route().map_or("-", |r| r.name.as_str()).to_string();
                self.fills
                    .upstream()
                    .record_call(&route, &failure.code(), ctx.started.elapsed());
                if session.response_written().is_none() {
                    if let Err(we) = self.answer_failure_plainly(session, ctx, &failure).await {
                        debug!("could not send error response: {we}");
                    }
                }
                failure.status()
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            _ => 500,
        };
        if matches!(code, 400 | 500) && session.response_written().is_none() {
            let message = match code {
                400 => "the request could not be read",
                _ => "internal error",
            };
            let headers = cors_headers(session, ctx);
            self.record(session.req_header(), ctx);
            // The connection closes after this answer (`can_reuse_downstream`): it says so.
            if let Err(we) = reply::refuse(session, code, "proxy_error", message, headers).await {
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
        self.record(session.req_header(), ctx);
        ctx.admission = None;
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.sent_status)
            .unwrap_or(0);
        let bytes = (session.body_bytes_sent() as u64).max(ctx.direct_body_bytes);
        let client = if self.access_logging() {
            session.client_addr().and_then(|a| a.as_inet()).copied()
        } else {
            None
        };
        self.finished(session.req_header(), ctx, status, bytes, client);
        debug!(
            "{} {} -> {} {} in {:?}{}{}",
            session.req_header().method,
            ctx.key(),
            status,
            ctx.cache_status().as_str(),
            ctx.started.elapsed(),
            e.map(|e| format!(" ({e})")).unwrap_or_default(),
            if ctx.client_gone {
                " (client gone mid-response)"
            } else {
                ""
            }
        );
    }
}

/// Methods that change nothing at the origin (RFC 9110 9.2.1).
fn is_safe(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
    )
}

impl RentCache {
    /// RFC 9111 4.4: a successful unsafe request (POST, PUT, DELETE...) invalidates what is
    /// stored for its target, and for the `Location` and `Content-Location` it names on the
    /// same host (another host's could be named by anyone).
    async fn invalidate_after_unsafe(&self, req: &RequestHeader, resp: &ResponseHeader, ctx: &Ctx) {
        let host = req
            .headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
            .or(req.uri.authority().map(|a| a.as_str()));
        let mut targets = vec![req
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string()];
        for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
            let Some(uri) = resp
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_host = match uri.authority() {
                None => true,
                Some(a) => host.is_some_and(|h| a.as_str().eq_ignore_ascii_case(h)),
            };
            if let (true, Some(pq)) = (same_host, uri.path_and_query()) {
                if pq.as_str().starts_with('/') {
                    targets.push(pq.as_str().to_string());
                }
            }
        }
        let keys: Vec<String> = targets
            .iter()
            .filter_map(|t| key::keys_for_url(&ctx.config, t))
            .flatten()
            .collect();
        if !keys.is_empty() {
            debug!(
                "{} {}: invalidating {}",
                req.method,
                ctx.key(),
                keys.join(", ")
            );
            self.storage.purge_keys(&keys, false, None).await;
        }
    }
}

/// An HTTP/1.1 request without `Host` (RFC 9112 3.2 requires a 400).
fn lacks_host(req: &RequestHeader) -> bool {
    req.version == http::Version::HTTP_11 && !req.headers.contains_key(http::header::HOST)
}

/// CORS headers for responses rentcache writes itself.
fn cors_headers(session: &Session, ctx: &Ctx) -> Vec<(&'static str, String)> {
    let origin = session
        .req_header()
        .headers
        .get(http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let mut h = Vec::new();
    if let Some(o) = cors::allow_origin(&ctx.config.cors, origin) {
        h.push(("access-control-allow-origin", o));
    }
    if !ctx.config.cors.allowed_origins.is_empty() && !ctx.config.cors.any_origin {
        h.push(("vary", "Origin".into()));
    }
    h
}

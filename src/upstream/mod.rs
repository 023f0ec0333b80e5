//! The origin gateway: the only code that talks to Rentman.
//!
//! The proxy sends its upstream requests here over a private Unix socket. The gateway adds the
//! token, asks for an identity encoding, applies timeouts, and turns every kind of upstream
//! failure (5xx, 429, refused, reset, timeout, and a 200 whose body cannot be content) into a
//! 5xx with a JSON body and a reason header *before* any byte reaches the proxy. That ordering
//! is the point: pingora decides stale-if-error on the response header, so a soft error found
//! after the header had been forwarded could no longer be answered with the stale entry.

mod board;
mod coordinate;
mod failure;
mod memo;
mod origin;
mod ready;
mod throttle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;

pub use board::{FailureBoard, REQUEST_ID_HEADER};
pub use failure::{Failure, REASON_HEADER};
use memo::FailureMemo;
use origin::{Origin, IDLE_TIMEOUT};
pub use ready::ReadyWhenAccepting;
pub use throttle::Throttle;

use crate::config::{BodyCheck, Config, Route, SharedConfig, TokenIn};
use crate::metrics::Metrics;
use crate::policy::body::{self, BodyProblem};
use crate::storage::{Entry, RedisTier};
use coordinate::Coordinated;
use pingora::cache::key::HashBinary;

/// Names the route of a request from the proxy to the gateway.
pub const ROUTE_HEADER: &str = "x-rentcache-route";
/// Carries the key hash (hex) of a cacheable request.
pub const KEY_HEADER: &str = "x-rentcache-key";
/// Present when the request will fill the cache (and so may need a lease).
pub const FILL_HEADER: &str = "x-rentcache-fill";
/// Marks a response that is another instance's stored entry, not a fresh upstream answer.
pub const RELAYED_HEADER: &str = "x-rentcache-relayed";

/// The Rentman token: never printed, not even by `{:?}`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Reads the token from the environment variable `var`; empty counts as unset.
    pub fn from_env(var: &str) -> Option<Secret> {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Secret(v.trim().to_string()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Request headers that describe the hop to the gateway, not the request.
const HOP_HEADERS: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "accept-encoding",
];

pub struct Gateway {
    config: SharedConfig,
    token: Option<Secret>,
    origin: Origin,
    board: Arc<FailureBoard>,
    /// The shared tier, for fill leases across instances.
    redis: Option<Arc<RedisTier>>,
    throttle: Arc<Throttle>,
    memo: FailureMemo,
    metrics: Arc<Metrics>,
}

impl Gateway {
    pub fn new(
        config: SharedConfig,
        token: Option<Secret>,
        board: Arc<FailureBoard>,
        redis: Option<Arc<RedisTier>>,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            config,
            token,
            origin: Origin::default(),
            board,
            redis,
            throttle,
            memo: FailureMemo::default(),
            metrics,
        }
    }

    /// A pingora service answering on the Unix socket `path` (owner-only permissions).
    pub fn service(self, path: &Path) -> Service<Gateway> {
        use std::os::unix::fs::PermissionsExt;
        let mut svc = Service::new("origin gateway".to_string(), self);
        svc.add_uds(
            &path.to_string_lossy(),
            Some(std::fs::Permissions::from_mode(0o600)),
        );
        svc
    }

    /// The request to send upstream for `incoming` (already canonical: the proxy chose the
    /// path, query and key headers).
    fn upstream_request(&self, incoming: &RequestHeader, config: &Config) -> RequestHeader {
        let up = &config.upstream;
        let mut target = format!(
            "{}{}",
            up.path_prefix,
            incoming
                .uri
                .path_and_query()
                .map(|pq| pq.as_str())
                .unwrap_or("/")
        );
        if let (TokenIn::Query, Some(token)) = (up.token_in, &self.token) {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(&up.token_name);
            target.push('=');
            target.extend(percent_encoding::utf8_percent_encode(
                token.expose(),
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        let mut req = RequestHeader::build(incoming.method.clone(), target.as_bytes(), None)
            .expect("a canonical target is a valid request target");
        for (name, value) in incoming.headers.iter() {
            let n = name.as_str();
            if HOP_HEADERS.contains(&n) || n.starts_with("x-rentcache-") || n == up.token_name {
                continue;
            }
            let _ = req.append_header(name.clone(), value.clone());
        }
        let default_port = if up.tls { 443 } else { 80 };
        let host = if up.port == default_port {
            up.host.clone()
        } else {
            format!("{}:{}", up.host, up.port)
        };
        let _ = req.insert_header(http::header::HOST, host);
        // Compressed upstream bodies have been seen corrupt; the proxy compresses for clients.
        let _ = req.insert_header(http::header::ACCEPT_ENCODING, "identity");
        if let (TokenIn::Header, Some(token)) = (up.token_in, &self.token) {
            let _ = req.insert_header(up.token_name.clone(), token.expose());
        }
        req
    }

    async fn respond_failure(&self, s: &mut ServerSession, what: &str, failure: Failure) -> bool {
        warn!("upstream failure for {what}: {}", failure.message());
        let (header, body) = failure.response();
        if let Some(id) = s
            .get_header(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
        {
            self.board.post(id, failure);
        }
        // Drain what the proxy sent so the connection stays usable.
        let _ = s.drain_request_body().await;
        s.write_error_response(header, body).await.is_ok()
    }

    /// Relays one request; returns whether the connection to the proxy can be reused.
    async fn relay(&self, s: &mut ServerSession) -> bool {
        let config = self.config.load_full();
        let route: Option<&Route> = s
            .get_header(ROUTE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|name| config.routes.iter().find(|r| r.name == name));
        let what = format!(
            "{} {} (route {})",
            s.req_header().method,
            s.req_header().uri,
            route.map_or("-", |r| r.name.as_str())
        );

        let key = s
            .get_header(KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_hash);
        if let Some(f) = key.and_then(|h| self.memo.recent(&h)) {
            return self.respond_failure(s, &what, f).await;
        }
        // A fill: one instance fetches, the others wait for what it stores.
        let fill = key.filter(|_| s.get_header(FILL_HEADER).is_some());
        let mut lease = None;
        if let (Some(hash), Some(redis)) = (fill, &self.redis) {
            let up = &config.upstream;
            let limit = up.connect_timeout + up.read_timeout + redis.config().lease;
            match coordinate::coordinate(redis, &hash, limit).await {
                Coordinated::Filled(entry) => return relay_entry(s, &entry).await,
                Coordinated::Fetch(guard) => lease = guard,
            }
        }

        let route_name = route.map_or("-", |r| r.name.as_str());
        let outcome = match self.throttle.admit(&config.upstream.budget).await {
            Ok(admission) => {
                let mut call = CallRecord {
                    metrics: &self.metrics,
                    route: route_name,
                    started: std::time::Instant::now(),
                    done: false,
                };
                let outcome = self.forward(s, &config, route, &what, &mut call).await;
                drop(admission);
                call.finish(&match &outcome {
                    Ok((_, status)) => status.to_string(),
                    Err(f) => f.code(),
                });
                outcome
            }
            Err(refused) => {
                self.metrics
                    .upstream_refusals
                    .with_label_values(&[&refused.code()])
                    .inc();
                Err(refused)
            }
        };
        if let (Some(guard), Some(hash), Some(redis)) = (&lease, fill, &self.redis) {
            // The store releases the lease once the entry is written; when nothing will be
            // stored, release it now so that waiting instances need not wait for it to expire.
            let stored = matches!(&outcome, Ok((_, status))
                if route.is_some_and(|r| r.cacheable_statuses.contains(status)));
            if !stored {
                redis.release_lease(&hash, &guard.value).await;
            }
        }
        match outcome {
            Ok((reusable, _)) => {
                if let Some(hash) = key {
                    self.memo.forget(&hash);
                }
                reusable
            }
            Err(failure) => {
                if let Failure::RateLimited { retry_after } = &failure {
                    self.throttle.pause(*retry_after);
                }
                let ours = matches!(failure, Failure::BudgetExhausted { .. } | Failure::Busy);
                if let (Some(hash), false) = (key, ours) {
                    self.memo
                        .record(hash, failure.clone(), config.upstream.failure_memo);
                }
                self.respond_failure(s, &what, failure).await
            }
        }
    }

    /// Sends the request upstream and streams the answer back. `Err` means nothing has been
    /// written to the proxy yet; `Ok((reusable, status))` that a response was relayed.
    async fn forward(
        &self,
        s: &mut ServerSession,
        config: &Config,
        route: Option<&Route>,
        what: &str,
        call: &mut CallRecord<'_>,
    ) -> Result<(bool, u16), Failure> {
        let check_json = route.is_some_and(|r| r.body == BodyCheck::JsonArray);
        let req = self.upstream_request(s.req_header(), config);
        let read_timeout = route
            .and_then(|r| r.upstream_timeout)
            .unwrap_or(config.upstream.read_timeout);
        let peer = self.origin.peer(&config.upstream, read_timeout).await?;
        let fail = |e: Box<pingora::Error>| Failure::from_error(&e);
        let (mut client, _reused) = self
            .origin
            .connector
            .get_http_session(&peer)
            .await
            .map_err(fail)?;
        client.set_read_timeout(Some(read_timeout));
        client.set_write_timeout(Some(read_timeout));
        client
            .write_request_header(Box::new(req))
            .await
            .map_err(fail)?;
        while let Some(chunk) = s
            .read_request_body()
            .await
            .map_err(|e| Failure::Other(format!("reading the request body: {e}")))?
        {
            client
                .write_request_body(chunk, false)
                .await
                .map_err(fail)?;
        }
        client.finish_request_body().await.map_err(fail)?;
        client.read_response_header().await.map_err(fail)?;
        let resp = client
            .response_header()
            .expect("header was just read")
            .clone();
        let status = resp.status.as_u16();
        if status == 429 {
            let retry_after = resp
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            return Err(Failure::RateLimited { retry_after });
        }
        if resp.status.is_server_error() {
            return Err(Failure::Status(status));
        }

        // On JSON routes, hold the body back until its first byte proves it is an array.
        let mut held: Vec<Bytes> = Vec::new();
        if check_json && status == 200 {
            loop {
                let Some(chunk) = client.read_response_body().await.map_err(fail)? else {
                    return Err(Failure::SoftError(BodyProblem::Empty));
                };
                let verdict = body::check_prefix(&chunk);
                held.push(chunk);
                match verdict {
                    None => continue,
                    Some(Ok(())) => break,
                    Some(Err(p)) => return Err(Failure::SoftError(p)),
                }
            }
        }

        let mut out = resp;
        for h in [
            "connection",
            "keep-alive",
            "transfer-encoding",
            "proxy-connection",
        ] {
            out.remove_header(h);
        }
        let head_only = s.req_header().method == http::Method::HEAD
            || matches!(status, 204 | 304)
            || (100..200).contains(&status);
        let length: Option<usize> = out
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if !head_only && length.is_none() {
            let _ = out.insert_header(http::header::TRANSFER_ENCODING, "chunked");
        }
        // The call is counted before the proxy can have the whole answer: the last body
        // byte of a sized answer, the header of one without a body, the end of a chunked one.
        let result = status.to_string();
        if head_only || length == Some(0) {
            call.finish(&result);
        }
        if s.write_response_header(Box::new(out)).await.is_err() {
            return Ok((false, status));
        }
        let mut relayed = 0;
        let mut relay = |chunk: &Bytes| {
            relayed += chunk.len();
            if length == Some(relayed) {
                call.finish(&result);
            }
        };
        for chunk in held {
            relay(&chunk);
            if s.write_response_body(chunk, false).await.is_err() {
                return Ok((false, status));
            }
        }
        loop {
            match client.read_response_body().await {
                Ok(Some(chunk)) => {
                    relay(&chunk);
                    if s.write_response_body(chunk, false).await.is_err() {
                        return Ok((false, status));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Too late for a status: dropping the connection truncates the response,
                    // which the proxy treats as a failed fill (nothing is stored).
                    warn!("upstream failed mid-body for {what}: {e}");
                    return Ok((false, status));
                }
            }
        }
        call.finish(&result);
        if s.finish_body().await.is_err() {
            return Ok((false, status));
        }
        if client.response_done() {
            self.origin
                .connector
                .release_http_session(client, &peer, Some(IDLE_TIMEOUT))
                .await;
        }
        Ok((true, status))
    }
}

/// One upstream call's entry in the metrics, made once.
struct CallRecord<'a> {
    metrics: &'a Metrics,
    route: &'a str,
    started: std::time::Instant,
    done: bool,
}

impl CallRecord<'_> {
    /// Counts the call with its result (a status, or a failure's code) and its duration so far.
    fn finish(&mut self, result: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.metrics
            .upstream_requests
            .with_label_values(&[self.route, result])
            .inc();
        self.metrics
            .upstream_duration
            .with_label_values(&[self.route])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

/// Answers the proxy with an entry another instance stored, aged as it is.
async fn relay_entry(s: &mut ServerSession, entry: &Entry) -> bool {
    let mut header = entry.header.clone();
    let _ = header.insert_header(http::header::AGE, coordinate::age_of(entry));
    let _ = header.insert_header(RELAYED_HEADER, "1");
    let _ = s.drain_request_body().await;
    if s.write_response_header(Box::new(header)).await.is_err() {
        return false;
    }
    for chunk in &entry.body {
        if s.write_response_body(chunk.clone(), false).await.is_err() {
            return false;
        }
    }
    s.finish_body().await.is_ok()
}

fn parse_hash(hex_text: &str) -> Option<HashBinary> {
    let mut hash = [0u8; 16];
    hex::decode_to_slice(hex_text, &mut hash).ok()?;
    Some(hash)
}

#[async_trait]
impl HttpServerApp for Gateway {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            _ => return None,
        }
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        if !self.relay(&mut session).await {
            return None;
        }
        let settings = HttpPersistentSettings::for_session(&session);
        match session.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, settings)),
            Err(_) => None,
        }
    }
}

/// A socket path private to this process.
pub fn socket_path() -> PathBuf {
    std::env::temp_dir().join(format!("rentcache-{}-origin.sock", std::process::id()))
}

/// Logs, once at start, how the token will be sent (never the token itself).
pub fn log_token_state(config: &Config, token: &Option<Secret>) {
    match token {
        Some(_) => info!(
            "upstream {}: token from ${} sent as {}",
            config.upstream.base_url,
            config.upstream.token_env,
            match config.upstream.token_in {
                TokenIn::Header => "a header",
                TokenIn::Query => "a query parameter",
            }
        ),
        None => warn!(
            "upstream {}: ${} is not set, requests go upstream without a token",
            config.upstream.base_url, config.upstream.token_env
        ),
    }
}

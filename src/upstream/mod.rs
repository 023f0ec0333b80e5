//! The only code that talks to Rentman.
//!
//! A cacheable request is fetched whole, in process (`Upstream::fetch`): admitted by the
//! throttle (budget, adaptive concurrency limit, 429 pause), sent with the token and an
//! identity encoding, its interim 1xx answers read past, its body read to the end and checked
//! as the route asks, and every way it can go wrong returned as a typed [`FetchError`] before a
//! byte reaches any client. That ordering is the point: a 200 whose body is not content (a
//! revoked token) is found before anything is stored or sent, so the proxy can still answer
//! with the stale copy. Requests that are not cached go through pingora's proxy instead;
//! `Upstream::rewrite` prepares them the same way (token, host, encoding).

mod coordinate;
mod failure;
pub mod limit;
mod memo;
mod origin;
mod throttle;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::info;
use log::warn;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::upstreams::peer::HttpPeer;

pub use coordinate::{coordinate, Coordinated, LeaseGuard};
pub use failure::{Failure, FetchError, Fetched};
pub use memo::FailureMemo;
use origin::{Origin, IDLE_TIMEOUT};
pub use throttle::{Admission, Throttle};

use crate::config::{Config, Route, TokenIn};
use crate::metrics::Metrics;
use crate::policy::body;
use limit::Sample;

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

/// Request headers that describe one hop, not the request (RFC 9110 7.6.1), and the ones the
/// proxy sets itself for the upstream.
const HOP_HEADERS: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "host",
    "accept-encoding",
];

/// Bodies up to this size are always held whole, whatever the tiers keep; larger ones are
/// refused (`too-large`) rather than held in memory.
const MIN_BODY_CAP: usize = 64 << 20;

/// The validators of a stored copy, sent so that the upstream can answer 304.
#[derive(Debug, Clone, Default)]
pub struct Validators {
    pub etag: Option<http::HeaderValue>,
    pub last_modified: Option<http::HeaderValue>,
}

impl Validators {
    /// Those of `header` the origin issued (rentcache's own `"rc-…"` ETags mean nothing to
    /// it); `None` when there are none.
    pub fn of(header: &ResponseHeader) -> Option<Validators> {
        let etag = header
            .headers
            .get(http::header::ETAG)
            .filter(|v| {
                v.to_str()
                    .is_ok_and(|s| !crate::policy::validators::is_own_etag(s))
            })
            .cloned();
        let last_modified = header.headers.get(http::header::LAST_MODIFIED).cloned();
        (etag.is_some() || last_modified.is_some()).then_some(Validators {
            etag,
            last_modified,
        })
    }
}

/// One cacheable request for the upstream: exactly what its canonical key describes.
pub struct FetchRequest<'a> {
    pub config: &'a Config,
    pub route: &'a Route,
    /// Canonical path and query (before the base path and the token).
    pub target: &'a str,
    /// Key headers: (lower-case name, recognised value).
    pub headers: &'a [(String, String)],
    /// Ask for a 304 if the upstream's copy still matches these.
    pub validators: Option<&'a Validators>,
    /// The request's own headers that an `honor_origin` upstream may vary on.
    pub forward: &'a [(http::HeaderName, http::HeaderValue)],
}

impl FetchRequest<'_> {
    /// The request asked for one media file's bare base64 (`Accept: application/base64`).
    fn bare_base64(&self) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n == "accept" && v == "application/base64")
    }
}

pub struct Upstream {
    token: Option<Secret>,
    origin: Origin,
    pub throttle: Arc<Throttle>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(
        token: Option<Secret>,
        ca_file: Option<&str>,
        throttle: Arc<Throttle>,
        metrics: Arc<Metrics>,
    ) -> Upstream {
        Upstream {
            token,
            origin: Origin::new(ca_file),
            throttle,
            metrics,
        }
    }

    /// The peer for this config's upstream, with `read_timeout` for this request.
    pub async fn peer(&self, config: &Config, read_timeout: Duration) -> Result<HttpPeer, Failure> {
        self.origin.peer(&config.upstream, read_timeout).await
    }

    /// Fetches one cacheable request whole; see the module doc.
    pub async fn fetch(&self, r: &FetchRequest<'_>) -> Result<Fetched, FetchError> {
        let mut admission = match self.throttle.admit(&r.config.upstream.budget).await {
            Ok(a) => a,
            Err(refused) => {
                self.metrics
                    .upstream_refusals
                    .with_label_values(&[&refused.code()])
                    .inc();
                return Err(refused.into());
            }
        };
        let started = Instant::now();
        let outcome = self.exchange(r).await.and_then(|f| judge(r, f));
        admission.record(match &outcome {
            Ok(_) => Sample::Answered(started.elapsed()),
            Err(e) => match e.failure {
                Failure::Status(_)
                | Failure::Timeout
                | Failure::Reset
                | Failure::ConnectRefused
                | Failure::IncompleteBody => Sample::Overloaded,
                // A 429 pauses every call; a soft error says nothing about load.
                _ => Sample::Answered(started.elapsed()),
            },
        });
        drop(admission);
        let result = match &outcome {
            Ok(f) => f.header.status.as_str().to_string(),
            Err(e) => e.failure.code(),
        };
        self.record_call(&r.route.name, &result, started.elapsed());
        if let Err(FetchError {
            failure: Failure::RateLimited { retry_after },
            ..
        }) = &outcome
        {
            self.throttle.pause(*retry_after);
        }
        outcome
    }

    /// Counts one upstream call with its result (a status, or a failure's code).
    pub fn record_call(&self, route: &str, result: &str, took: Duration) {
        self.metrics
            .upstream_requests
            .with_label_values(&[route, result])
            .inc();
        self.metrics
            .upstream_duration
            .with_label_values(&[route])
            .observe(took.as_secs_f64());
    }

    /// Sends the request and reads the whole answer, past any interim 1xx.
    ///
    /// A request sent on a reused connection that the upstream closed before answering (its
    /// idle timeout firing as the request arrived) is sent once more, on another connection:
    /// fills are GETs, which may be retried (RFC 9110 9.2.2, RFC 9112 9.3.1), as nginx does
    /// for a cached connection. A reset, a timeout, or a close after the answer began is a
    /// failure of the upstream, not of the connection, and is not sent again: a sick Rentman
    /// gets one call per key.
    async fn exchange(&self, r: &FetchRequest<'_>) -> Result<Fetched, FetchError> {
        let up = &r.config.upstream;
        let read_timeout = r.route.upstream_timeout.unwrap_or(up.read_timeout);
        let peer = self.origin.peer(up, read_timeout).await?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (client, reused) = self
                .origin
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| FetchError::from(Failure::from_error(&e)))?;
            self.metrics
                .upstream_connections
                .with_label_values(&[if reused { "reused" } else { "new" }])
                .inc();
            match self.exchange_on(r, &peer, client, read_timeout).await {
                Err(Unanswered {
                    closed_cleanly: true,
                    ..
                }) if reused && attempts < 2 => {
                    self.metrics
                        .upstream_connections
                        .with_label_values(&["reused_closed"])
                        .inc();
                    log::debug!(
                        "{}: a reused upstream connection was closed; sending again",
                        r.target
                    );
                }
                Err(Unanswered { error, .. }) => return Err(error),
                Ok(answered) => return answered,
            }
        }
    }

    /// `exchange` on one connection: `Err` when no answer began on it.
    async fn exchange_on(
        &self,
        r: &FetchRequest<'_>,
        peer: &HttpPeer,
        mut client: pingora::protocols::http::client::HttpSession,
        read_timeout: Duration,
    ) -> Result<Result<Fetched, FetchError>, Unanswered> {
        let fail = |e: Box<pingora::Error>| Unanswered {
            error: FetchError::from(Failure::from_error(&e)),
            closed_cleanly: e.etype() == &pingora::ErrorType::ConnectionClosed,
        };
        client.set_read_timeout(Some(read_timeout));
        client.set_write_timeout(Some(read_timeout));
        let req = self.fill_request(r).map_err(|error| Unanswered {
            error,
            closed_cleanly: false,
        })?;
        client
            .write_request_header(Box::new(req))
            .await
            .map_err(fail)?;
        client.finish_request_body().await.map_err(fail)?;
        let header = loop {
            client.read_response_header().await.map_err(fail)?;
            let Some(h) = client.response_header() else {
                return Ok(Err(Failure::Other("no response header".into()).into()));
            };
            // Interim answers (100, 102, 103 Early Hints) come before the real one: they are
            // for the hop, never stored, never forwarded.
            if !h.status.is_informational() || h.status == http::StatusCode::SWITCHING_PROTOCOLS {
                break h.clone();
            }
        };
        Ok(self.read_answer(r, peer, client, header).await)
    }

    /// The rest of an answer whose header has arrived.
    async fn read_answer(
        &self,
        r: &FetchRequest<'_>,
        peer: &HttpPeer,
        mut client: pingora::protocols::http::client::HttpSession,
        header: ResponseHeader,
    ) -> Result<Fetched, FetchError> {
        let mut header = header;
        clean_response(r.config, &mut header);
        let cap = body_cap(r.config);
        let mut body: Vec<Bytes> = Vec::new();
        let mut len = 0usize;
        loop {
            match client.read_response_body().await {
                Ok(Some(chunk)) => {
                    len += chunk.len();
                    if len > cap {
                        return Err(Failure::TooLarge.into());
                    }
                    if !chunk.is_empty() {
                        body.push(chunk);
                    }
                }
                Ok(None) => break,
                Err(e) => return Err(Failure::from_body_error(&e).into()),
            }
        }
        if client.response_done() {
            self.origin
                .connector
                .release_http_session(client, peer, Some(IDLE_TIMEOUT))
                .await;
        }
        Ok(Fetched { header, body })
    }

    /// The request a fill sends: the canonical target and key headers, the token, and
    /// nothing of any one client's (the answer is shared).
    fn fill_request(&self, r: &FetchRequest<'_>) -> Result<RequestHeader, FetchError> {
        let target = self.upstream_target(r.config, r.target);
        let mut req = RequestHeader::build(http::Method::GET, target.as_bytes(), Some(8))
            .map_err(|_| Failure::Other("the canonical target is not a request target".into()))?;
        for (name, value) in r.forward {
            let _ = req.append_header(name.clone(), value.clone());
        }
        for (name, value) in r.headers {
            let _ = req.insert_header(name.clone(), value.as_str());
        }
        if let Some(v) = r.validators {
            if let Some(etag) = &v.etag {
                let _ = req.insert_header(http::header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = &v.last_modified {
                let _ = req.insert_header(http::header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        self.add_upstream_headers(r.config, &mut req);
        Ok(req)
    }

    /// Rewrites a client's request that pingora forwards uncached: the canonical target, the
    /// token, the upstream's host and identity encoding; no hop headers, no client token.
    pub fn rewrite(
        &self,
        config: &Config,
        route: &Route,
        req: &mut RequestHeader,
        target: &str,
        key_headers: &[(String, String)],
    ) -> pingora::Result<()> {
        let uri = self.upstream_target(config, target);
        req.set_uri(uri.parse().map_err(|_| {
            pingora::Error::explain(pingora::ErrorType::InternalError, "bad canonical target")
        })?);
        for name in HOP_HEADERS {
            req.remove_header(name);
        }
        req.remove_header(config.upstream.token_name.as_str());
        if route.mode == crate::config::Mode::Forced {
            // The key ignores credentials, so the upstream must not see any either.
            req.remove_header(&http::header::COOKIE);
            req.remove_header(&http::header::AUTHORIZATION);
        }
        for name in &route.key_header_names {
            req.remove_header(name);
        }
        for (name, value) in key_headers {
            req.insert_header(name.clone(), value.as_str())?;
        }
        self.add_upstream_headers(config, req);
        Ok(())
    }

    /// The path and query to ask the upstream for: its base path, the canonical target, and
    /// the token when it travels as a parameter.
    fn upstream_target(&self, config: &Config, target: &str) -> String {
        let up = &config.upstream;
        let mut t = format!("{}{}", up.path_prefix, target);
        if let (TokenIn::Query, Some(token)) = (up.token_in, &self.token) {
            t.push(if t.contains('?') { '&' } else { '?' });
            t.push_str(&up.token_name);
            t.push('=');
            t.extend(percent_encoding::utf8_percent_encode(
                token.expose(),
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        t
    }

    fn add_upstream_headers(&self, config: &Config, req: &mut RequestHeader) {
        let up = &config.upstream;
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
    }
}

/// Removes from an upstream answer what describes only its hop (RFC 9110 7.6.1: the fields
/// `Connection` names, and the hop-by-hop ones) and what the operator drops (`Server`,
/// `X-Powered-By`): none of it is stored or passed on.
pub fn clean_response(config: &Config, header: &mut ResponseHeader) {
    let named: Vec<String> = header
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && !matches!(t.as_str(), "close" | "keep-alive"))
        .collect();
    for name in named {
        header.remove_header(name.as_str());
    }
    for name in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
    ] {
        header.remove_header(name);
    }
    for name in &config.upstream.drop_headers {
        header.remove_header(name);
    }
}

/// The headers of a client's request that a fill for it forwards: on `honor_origin` routes,
/// its end-to-end headers (an origin that speaks HTTP may vary on any of them), minus what
/// describes the hop or the client's own state (credentials, conditionals, ranges: a fill is
/// a full, shareable request) and what rentcache sets itself. Forced routes forward only what
/// the key says.
pub fn forwarded(
    config: &Config,
    route: &Route,
    req: &RequestHeader,
) -> Vec<(http::HeaderName, http::HeaderValue)> {
    if route.mode != crate::config::Mode::HonorOrigin {
        return Vec::new();
    }
    req.headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            !HOP_HEADERS.contains(&n)
                && !n.starts_with("if-")
                && !matches!(
                    n,
                    "range"
                        | "cookie"
                        | "authorization"
                        | "transfer-encoding"
                        | "content-length"
                        | "expect"
                )
                && n != config.upstream.token_name
                && !route.key_header_names.contains(name)
                && !config.key.params_from_header_names.contains(name)
        })
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

/// Whether a complete answer is content: 429 and 5xx are failures (with the origin's own
/// answer kept), a 200 must pass the route's body check.
fn judge(r: &FetchRequest<'_>, f: Fetched) -> Result<Fetched, FetchError> {
    let status = f.header.status.as_u16();
    let failure = if status == 429 {
        // Without a Retry-After, fetching pauses for a default time: clients are told that.
        let asked = f
            .header
            .headers
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(86_400)));
        Some(Failure::RateLimited {
            retry_after: Some(asked.unwrap_or(throttle::DEFAULT_PAUSE)),
        })
    } else if f.header.status.is_server_error() {
        Some(Failure::Status(status))
    } else {
        None
    };
    if let Some(failure) = failure {
        return Err(FetchError {
            failure,
            origin: Some(Arc::new(f)),
        });
    }
    if status == 200 {
        if let Err(problem) = body::check(r.route.body, r.bare_base64(), &f.body) {
            return Err(Failure::SoftError(problem).into());
        }
    }
    Ok(f)
}

/// The largest body held for one answer: what the tiers may keep, and at least 64 MiB.
fn body_cap(config: &Config) -> usize {
    let tiers = config
        .redis
        .as_ref()
        .map_or(0, |r| r.max_object_bytes)
        .max(config.memory.max_object_bytes);
    usize::try_from(tiers)
        .unwrap_or(usize::MAX)
        .max(MIN_BODY_CAP)
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

/// A failure before any byte of an answer arrived on a connection.
struct Unanswered {
    error: FetchError,
    /// The upstream closed the connection (no reset, no timeout): what a keep-alive
    /// connection it timed out as the request arrived looks like.
    closed_cleanly: bool,
}

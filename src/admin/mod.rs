//! The operators' listener (separate from the public one): health and readiness without a
//! token; everything else behind `Authorization: Bearer` with the token from the environment,
//! and disabled (never open) when that variable is unset.
//!
//! | endpoint | what |
//! |---|---|
//! | `GET /health` | liveness |
//! | `GET /ready` | readiness: config loaded, Redis state |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /stats` | hit ratios, tier sizes, top keys, upstream calls saved |
//! | `GET /explain?url=` | how one URL is routed, keyed and stored |
//! | `POST /purge` | invalidate by url, key, pattern or tag; `soft` marks stale |
//! | `POST /warm`, `GET /warm` | start a warming job; jobs and their progress |
//! | `POST /reload` | reload the config file now |
//! | `GET /advice` | TTL advice per route, with its evidence |
//! | `GET /history` | the last hour at 10-second resolution |
//! | `GET /` | the dashboard (a static page; its data comes from the endpoints above) |

pub mod client;
mod console;
mod explain;
#[cfg(test)]
mod props;
mod purge;
mod stats;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::services::listening::Service;
use serde_json::{json, Value};

use crate::config::SharedConfig;
use crate::metrics::Metrics;
use crate::proxy::head::{self, Head};
use crate::proxy::hot::HotKeys;
use crate::reload::Reloader;
use crate::storage::TieredStorage;
use crate::upstream::{Secret, Throttle};
use crate::warm::Warmer;

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 1 << 20;

/// What the admin API reads and steers.
pub struct Handles {
    pub config: SharedConfig,
    pub storage: &'static TieredStorage,
    pub metrics: Arc<Metrics>,
    pub hot: Arc<HotKeys>,
    pub throttle: Arc<Throttle>,
    pub warmer: Arc<Warmer>,
    /// Absent when the config was not read from a file (the demo).
    pub reloader: Option<Arc<Reloader>>,
    /// Absent when no CDN is purged.
    pub cdn: Option<Arc<crate::cdn::CdnStats>>,
    pub observer: Arc<crate::observe::Observer>,
    /// The demo without an admin token: the protected endpoints are open (it says so).
    pub demo_open: bool,
}

pub struct Admin {
    h: Handles,
    token: Option<Secret>,
}

impl Admin {
    pub fn new(h: Handles) -> Admin {
        let token = Secret::from_env(&h.config.load().admin.token_env);
        Admin { h, token }
    }

    pub fn service(self, listen: &str) -> Service<AdminDoor> {
        let door = AdminDoor {
            admin: Arc::new(self),
        };
        let mut svc = Service::new("admin".to_string(), door);
        svc.threads = Some(1);
        svc.add_tcp(listen);
        svc
    }

    fn authorize(&self, s: &ServerSession) -> Result<(), ApiError> {
        if self.token.is_none() && self.h.demo_open {
            return Ok(());
        }
        let Some(token) = &self.token else {
            let var = self.h.config.load().admin.token_env.clone();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                format!("protected admin endpoints are disabled: set {var} to enable them"),
            ));
        };
        let given = s
            .get_header(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match given {
            Some(g) if constant_time_eq(g.as_bytes(), token.expose().as_bytes()) => Ok(()),
            _ => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing or wrong bearer token",
            )),
        }
    }

    async fn route(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        if s.req_header().version == http::Version::HTTP_11
            && !s.req_header().headers.contains_key(http::header::HOST)
        {
            s.set_keepalive(None);
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "an HTTP/1.1 request needs a Host header",
            )
            .response();
        }
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        match (&method, path.as_str()) {
            (&Method::GET, "/health") => return ok(json!({"status": "ok"})),
            (&Method::GET, "/ready") => return self.ready(),
            (&Method::GET, "/") => return console::page(),
            (&Method::GET, "/console/mode") => {
                // How the page gets in: with a token, open (the demo), or not at all.
                let mode = match (&self.token, self.h.demo_open) {
                    (Some(_), _) => "token",
                    (None, true) => "open",
                    (None, false) => "disabled",
                };
                let var = self.h.config.load().admin.token_env.clone();
                return ok(json!({"mode": mode, "token_env": var}));
            }
            (&Method::GET, asset) if asset.starts_with("/assets/") => return console::asset(asset),
            _ => {}
        }
        if let Err(denied) = self.authorize(s) {
            return denied.response();
        }
        let h = &self.h;
        let result = match (&method, path.as_str()) {
            (&Method::GET, "/metrics") => return self.metrics(),
            (&Method::GET, "/stats") => Ok(stats::stats(h).await),
            (&Method::GET, "/explain") => {
                let url = query_param(s, "url");
                explain::explain(h, url.as_deref()).await
            }
            (&Method::POST, "/purge") => match read_json(s).await {
                Ok(body) => purge::purge(h, &body).await,
                Err(e) => Err(e),
            },
            (&Method::POST, "/warm") => match read_json(s).await {
                Ok(body) => self.start_warm(&body),
                Err(e) => Err(e),
            },
            (&Method::GET, "/warm") => Ok(self.warm_jobs()),
            (&Method::GET, "/advice") => Ok(console::advice(h)),
            (&Method::GET, "/history") => Ok(console::history(h)),
            (&Method::POST, "/reload") => self.reload().await,
            _ => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no admin endpoint {method} {path}"),
            )),
        };
        match result {
            Ok(v) => ok(v),
            Err(e) => e.response(),
        }
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let config = self.h.config.load();
        let redis = match self.h.storage.redis() {
            None => json!("not configured"),
            Some(r) if r.is_up() && r.subscribed.load(std::sync::atomic::Ordering::Acquire) => {
                json!("up")
            }
            // Up but deaf to other instances' purges until it resubscribes (memory entries
            // from before the gap are dropped then).
            Some(r) if r.is_up() => json!({"state": "up", "invalidations": "not subscribed"}),
            Some(r) => json!({"state": "down", "reason": r.down_reason()}),
        };
        // Redis being down is not a reason to take traffic away: requests are still served
        // from memory and the origin. It is reported so operators can see it.
        ok(json!({
            "ready": true,
            "config": config.source,
            "routes": config.routes.len(),
            "redis": redis,
        }))
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let h = &self.h;
        let m = &h.metrics;
        let mem = h.storage.memory().stats_now();
        m.memory_bytes.set(mem.bytes as i64);
        m.memory_entries.set(mem.entries as i64);
        if let Some(r) = h.storage.redis() {
            use std::sync::atomic::Ordering::{Acquire, Relaxed};
            let redis = m.redis();
            redis.up.set(i64::from(r.is_up()));
            redis.subscribed.set(i64::from(r.subscribed.load(Acquire)));
            let errors = r.counters.errors.load(Relaxed);
            redis
                .errors
                .inc_by(errors.saturating_sub(redis.errors.get()));
        }
        let budget = &h.config.load().upstream.budget;
        let (second, minute) = h.throttle.remaining(budget);
        if budget.per_second > 0.0 {
            m.budget_remaining
                .with_label_values(&["second"])
                .set(second);
        }
        if budget.per_minute > 0.0 {
            m.budget_remaining
                .with_label_values(&["minute"])
                .set(minute);
        }
        let (limit, in_flight) = h.throttle.limit.current();
        if let Some(limit) = limit {
            m.upstream_limit.set(limit as i64);
        }
        m.upstream_in_flight.set(in_flight as i64);
        let body = m.render();
        let mut resp = respond(StatusCode::OK, Bytes::from(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    fn start_warm(&self, body: &Value) -> Result<Value, ApiError> {
        let (urls, follow) = read_warm(&self.h.config.load(), body)?;
        let job = self.h.warmer.job("adhoc");
        let warmer = self.h.warmer.clone();
        let id = job.id;
        self.h
            .observer
            .note_action("warm", json!({"job": id, "urls": urls.len()}));
        tokio::spawn(async move { warmer.run(&job, urls, &follow).await });
        Ok(json!({"job": id, "status": format!("/warm (job {id})")}))
    }

    fn warm_jobs(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let jobs: Vec<Value> = self
            .h
            .warmer
            .jobs()
            .iter()
            .map(|j| {
                json!({
                    "id": j.id,
                    "name": j.name,
                    "total": j.total.load(Relaxed),
                    "done": j.done.load(Relaxed),
                    "fetched": j.fetched.load(Relaxed),
                    "skipped_fresh": j.skipped_fresh.load(Relaxed),
                    "failed": j.failed.load(Relaxed),
                    "finished": j.finished.load(Relaxed),
                })
            })
            .collect();
        json!({ "jobs": jobs })
    }

    async fn reload(&self) -> Result<Value, ApiError> {
        let Some(r) = &self.h.reloader else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "no_config_file",
                "this instance runs a built-in config; there is no file to reload",
            ));
        };
        match r.reload("admin request").await {
            Ok(c) => Ok(json!({"reloaded": true, "routes": c.routes.len()})),
            Err(e) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_config",
                e.to_string(),
            )),
        }
    }
}

/// Reads a warm request body: the URLs and the follow templates to apply, or why not (400).
fn read_warm(
    config: &crate::config::Config,
    body: &Value,
) -> Result<(Vec<String>, Vec<String>), ApiError> {
    let urls = strings(body, "urls");
    if urls.is_empty() || urls.iter().any(|u| !u.starts_with('/')) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_warm",
            "give urls: a non-empty list of paths starting with / (and optionally follow: [template names])",
        ));
    }
    let follow = strings(body, "follow");
    if let Some(unknown) = follow
        .iter()
        .find(|f| !config.warm.follow.iter().any(|(n, _)| n == *f))
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_warm",
            format!("`{unknown}` is not one of warm.follow"),
        ));
    }
    Ok((urls, follow))
}

fn query_param(s: &ServerSession, name: &str) -> Option<String> {
    s.req_header().uri.query().and_then(|q| {
        crate::policy::query::parse(Some(q))
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A refusal, turned into a JSON error response at the edge.
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn response(&self) -> Response<Vec<u8>> {
        respond(
            self.status,
            crate::json_error::body(self.status.as_u16(), self.code, &self.message),
        )
    }
}

async fn read_json(s: &mut ServerSession) -> Result<Value, ApiError> {
    let mut body = Vec::new();
    loop {
        match s.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "request body over 1 MiB",
                    ));
                }
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read the body: {e}"),
                ))
            }
        }
    }
    parse_json(&body)
}

/// A request body as JSON, or 400.
fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })
}

fn ok(v: Value) -> Response<Vec<u8>> {
    respond(StatusCode::OK, Bytes::from(v.to_string()))
}

fn respond(status: StatusCode, body: Bytes) -> Response<Vec<u8>> {
    let len = http::HeaderValue::from(body.len());
    let mut resp = Response::new(body.to_vec());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    h.insert(http::header::CONTENT_LENGTH, len);
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        self.route(s).await
    }
}

/// Reads each request head on the admin listener before pingora does, with the same
/// deadline and bounds as the public one (`proxy::head`): a URL too long for pingora's
/// parser gets `414`, not a closed connection.
pub struct AdminDoor {
    admin: Arc<Admin>,
}

#[async_trait]
impl ServerApp for AdminDoor {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut stream = stream;
        let mut waits = head::Waits::new(shutdown);
        loop {
            let mut buf = bytes::BytesMut::with_capacity(4096);
            let within = self.admin.h.config.load().server.header_timeout;
            match head::read(&mut stream, &mut buf, &mut waits, within, |_, _| ()).await {
                Head::Gone => return None,
                Head::Refused(status) => {
                    head::refuse(&mut stream, status).await;
                    return None;
                }
                Head::Parsed(..) | Head::Unparsed => {}
            }
            let mut session = ServerSession::new_http1(stream);
            session.set_pipelined_prefix(buf);
            let reused = HttpServerApp::process_new_http(&self.admin, session, shutdown).await?;
            stream = reused.consume().0;
        }
    }
}

/// The strings of a JSON list field (none when absent or not a list).
fn strings(body: &Value, field: &str) -> Vec<String> {
    body.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

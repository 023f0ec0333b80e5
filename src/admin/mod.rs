//! The operators' listener (separate from the public one): health and readiness without a
//! token; everything else behind `Authorization: Bearer` with the token from the environment,
//! and disabled (never open) when that variable is unset.

mod purge;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;
use serde_json::{json, Value};

use crate::config::SharedConfig;
use crate::storage::TieredStorage;
use crate::upstream::Secret;

/// Request bodies larger than this are refused.
const MAX_BODY: usize = 1 << 20;

pub struct Admin {
    config: SharedConfig,
    storage: &'static TieredStorage,
    token: Option<Secret>,
}

impl Admin {
    pub fn new(config: SharedConfig, storage: &'static TieredStorage) -> Admin {
        let token = Secret::from_env(&config.load().admin.token_env);
        Admin {
            config,
            storage,
            token,
        }
    }

    pub fn service(self, listen: &str) -> Service<Admin> {
        let mut svc = Service::new("admin".to_string(), self);
        svc.add_tcp(listen);
        svc
    }

    fn authorize(&self, s: &ServerSession) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            let var = self.config.load().admin.token_env.clone();
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
        let method = s.req_header().method.clone();
        let path = s.req_header().uri.path().to_string();
        match (&method, path.as_str()) {
            (&Method::GET, "/health") => return ok(json!({"status": "ok"})),
            (&Method::GET, "/ready") => return self.ready(),
            _ => {}
        }
        if let Err(denied) = self.authorize(s) {
            return denied.response();
        }
        match (&method, path.as_str()) {
            (&Method::POST, "/purge") => match read_json(s).await {
                Ok(body) => purge::handle(&self.config.load(), self.storage, &body).await,
                Err(e) => e.response(),
            },
            _ => error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no admin endpoint {method} {path}"),
            ),
        }
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let config = self.config.load();
        let redis = match self.storage.redis() {
            None => json!("not configured"),
            Some(r) if r.is_up() => json!("up"),
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
        error(self.status, self.code, &self.message)
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
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the body is not JSON: {e}"),
        )
    })
}

pub(crate) fn ok(v: Value) -> Response<Vec<u8>> {
    respond(StatusCode::OK, Bytes::from(v.to_string()))
}

pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Vec<u8>> {
    respond(
        status,
        crate::json_error::body(status.as_u16(), code, message),
    )
}

fn respond(status: StatusCode, body: Bytes) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::CONTENT_LENGTH, body.len())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(body.to_vec())
        .expect("valid response")
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        self.route(s).await
    }
}

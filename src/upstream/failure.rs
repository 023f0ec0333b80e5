//! Upstream failures as the gateway reports them to the proxy: a 5xx status (so pingora's
//! stale-if-error applies), a machine-readable reason header, and a JSON body for clients
//! whose key has nothing stale to serve.

use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};

use crate::policy::body::BodyProblem;

/// Header carrying the failure reason from the gateway to the proxy (removed before clients).
pub const REASON_HEADER: &str = "x-rentcache-upstream-error";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The upstream answered 5xx.
    Status(u16),
    /// 429: the upstream asks us to slow down (or we are still pausing after one).
    RateLimited {
        retry_after: Option<Duration>,
    },
    /// Our own budget of upstream requests is spent for now.
    BudgetExhausted {
        retry_after: Duration,
    },
    /// Too many upstream requests in flight.
    Busy,
    /// A 200 whose body cannot be the content (revoked token, PHP error page).
    SoftError(BodyProblem),
    ConnectRefused,
    Timeout,
    /// The connection closed or reset before a complete response header.
    Reset,
    Tls,
    /// Anything else on the way (DNS, protocol errors).
    Other(String),
}

impl Failure {
    /// Classifies a pingora error from connecting or reading a response header.
    pub fn from_error(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Failure::Timeout
            }
            ErrorType::ConnectRefused => Failure::ConnectRefused,
            ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError => Failure::Tls,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                Failure::Reset
            }
            ErrorType::ConnectError | ErrorType::ConnectNoRoute | ErrorType::BindError => {
                Failure::ConnectRefused
            }
            other => Failure::Other(other.as_str().to_string()),
        }
    }

    /// Short code for headers, logs and metrics.
    pub fn code(&self) -> String {
        match self {
            Failure::Status(s) => format!("status-{s}"),
            Failure::RateLimited { .. } => "rate-limited".into(),
            Failure::BudgetExhausted { .. } => "budget-exhausted".into(),
            Failure::Busy => "upstream-busy".into(),
            Failure::SoftError(p) => p.code().into(),
            Failure::ConnectRefused => "connect-refused".into(),
            Failure::Timeout => "timeout".into(),
            Failure::Reset => "reset".into(),
            Failure::Tls => "tls".into(),
            Failure::Other(_) => "error".into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout => 504,
            Failure::RateLimited { .. } | Failure::BudgetExhausted { .. } | Failure::Busy => 503,
            _ => 502,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Status(s) => format!("the upstream answered HTTP {s}"),
            Failure::RateLimited { .. } => {
                "the upstream is rate limiting requests (HTTP 429)".into()
            }
            Failure::BudgetExhausted { .. } => {
                "the budget of upstream requests is spent for now".into()
            }
            Failure::Busy => "too many upstream requests in flight".into(),
            Failure::SoftError(p) => format!("{p} (a bad or revoked token looks like this)"),
            Failure::ConnectRefused => "could not connect to the upstream".into(),
            Failure::Timeout => "the upstream did not answer in time".into(),
            Failure::Reset => "the upstream closed the connection without an answer".into(),
            Failure::Tls => "the TLS handshake with the upstream failed".into(),
            Failure::Other(e) => format!("upstream request failed: {e}"),
        }
    }

    /// The response the gateway sends for this failure.
    pub fn response(&self) -> (ResponseHeader, Bytes) {
        let body = crate::json_error::body(self.status(), "upstream_failed", &self.message());
        let mut h = ResponseHeader::build(self.status(), Some(5)).expect("valid status");
        let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len());
        let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
        let _ = h.insert_header(REASON_HEADER, self.code());
        let retry_after = match self {
            Failure::RateLimited { retry_after } => *retry_after,
            Failure::BudgetExhausted { retry_after } => Some(*retry_after),
            Failure::Busy => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(d) = retry_after {
            // Whole seconds, rounded up: never invite a retry before budget is back.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            let _ = h.insert_header(http::header::RETRY_AFTER, secs.max(1));
        }
        (h, body)
    }
}

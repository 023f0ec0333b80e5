//! Why an upstream fetch produced no content, as a typed value: the proxy decides from it
//! whether to serve a stale copy, which reason to give, and which error a client without a
//! usable copy gets.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType};

use crate::policy::body::BodyProblem;

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
    /// Too many upstream requests in flight for what the upstream can take now.
    Busy,
    /// A 200 whose body cannot be the content (revoked token, PHP error page).
    SoftError(BodyProblem),
    ConnectRefused,
    Timeout,
    /// The connection closed or reset before a complete response header.
    Reset,
    /// The body ended before its announced length, or the connection broke mid-body.
    IncompleteBody,
    /// The body is larger than anything rentcache will hold for one answer.
    TooLarge,
    Tls,
    /// Anything else on the way (DNS, protocol errors).
    Other(String),
}

impl Failure {
    /// Classifies a pingora error from connecting, writing, or reading a response header.
    pub fn from_error(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout => {
                Failure::Timeout
            }
            ErrorType::ConnectRefused => Failure::ConnectRefused,
            ErrorType::TLSHandshakeFailure
            | ErrorType::TLSHandshakeTimedout
            | ErrorType::InvalidCert
            | ErrorType::HandshakeError
            | ErrorType::TLSWantX509Lookup => Failure::Tls,
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError => {
                Failure::Reset
            }
            ErrorType::ConnectError | ErrorType::ConnectNoRoute | ErrorType::BindError => {
                Failure::ConnectRefused
            }
            ErrorType::HTTPStatus(code) if *code >= 500 => Failure::Status(*code),
            other => Failure::Other(other.as_str().to_string()),
        }
    }

    /// Classifies an error met while reading a body whose header had arrived.
    pub fn from_body_error(e: &Error) -> Failure {
        match e.etype() {
            ErrorType::ReadTimedout => Failure::Timeout,
            _ => Failure::IncompleteBody,
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
            Failure::IncompleteBody => "incomplete-body".into(),
            Failure::TooLarge => "too-large".into(),
            Failure::Tls => "tls".into(),
            Failure::Other(_) => "error".into(),
        }
    }

    /// The failure a code stands for (what another instance shared through Redis); the
    /// detail of `Other` does not travel.
    pub fn from_code(code: &str, retry_after: Option<Duration>) -> Failure {
        if let Some(s) = code.strip_prefix("status-") {
            return s
                .parse()
                .map(Failure::Status)
                .unwrap_or_else(|_| Failure::Other(code.into()));
        }
        match code {
            "rate-limited" => Failure::RateLimited { retry_after },
            "budget-exhausted" => Failure::BudgetExhausted {
                retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            },
            "upstream-busy" => Failure::Busy,
            "empty-body" => Failure::SoftError(BodyProblem::Empty),
            "not-json-array" => Failure::SoftError(BodyProblem::NotArray),
            "invalid-json" => Failure::SoftError(BodyProblem::Invalid(String::new())),
            "not-media" => Failure::SoftError(BodyProblem::NotMedia),
            "incomplete-media" => Failure::SoftError(BodyProblem::IncompleteMedia),
            "connect-refused" => Failure::ConnectRefused,
            "timeout" => Failure::Timeout,
            "reset" => Failure::Reset,
            "incomplete-body" => Failure::IncompleteBody,
            "too-large" => Failure::TooLarge,
            "tls" => Failure::Tls,
            other => Failure::Other(other.into()),
        }
    }

    /// Refusals of our own making (budget, concurrency): they say nothing about the upstream,
    /// so they are neither remembered for the key nor shared with other instances.
    pub fn is_ours(&self) -> bool {
        matches!(self, Failure::BudgetExhausted { .. } | Failure::Busy)
    }

    /// The status of the JSON error a client gets when nothing stale can be served.
    pub fn status(&self) -> u16 {
        match self {
            Failure::Timeout => 504,
            Failure::RateLimited { .. } | Failure::BudgetExhausted { .. } | Failure::Busy => 503,
            _ => 502,
        }
    }

    /// How long a client should wait before asking again, where we know.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::RateLimited { retry_after } => *retry_after,
            Failure::BudgetExhausted { retry_after } => Some(*retry_after),
            Failure::Busy => Some(Duration::from_secs(1)),
            _ => None,
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
            Failure::SoftError(p @ BodyProblem::IncompleteMedia) => {
                format!("{p} (truncated by the upstream or on the way)")
            }
            Failure::SoftError(p) => format!("{p} (a bad or revoked token looks like this)"),
            Failure::ConnectRefused => "could not connect to the upstream".into(),
            Failure::Timeout => "the upstream did not answer in time".into(),
            Failure::Reset => "the upstream closed the connection without an answer".into(),
            Failure::IncompleteBody => "the upstream's answer broke off before its end".into(),
            Failure::TooLarge => "the upstream's answer is too large to relay".into(),
            Failure::Tls => "the TLS handshake with the upstream failed".into(),
            Failure::Other(e) => format!("upstream request failed: {e}"),
        }
    }

    /// The JSON error for a client that has no usable copy.
    pub fn response(&self) -> (ResponseHeader, Bytes) {
        let code = match self {
            Failure::SoftError(BodyProblem::IncompleteMedia) => "incomplete_media",
            _ => "upstream_failed",
        };
        let body = crate::json_error::body(self.status(), code, &self.message());
        let status =
            http::StatusCode::from_u16(self.status()).unwrap_or(http::StatusCode::BAD_GATEWAY);
        let mut h = crate::json_error::bare_header(status);
        let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len());
        let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
        if let Some(d) = self.retry_after() {
            // Whole seconds, rounded up: never invite a retry before budget is back.
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            let _ = h.insert_header(http::header::RETRY_AFTER, secs.max(1));
        }
        (h, body)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// A complete upstream answer, held in process: header and whole body.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub header: ResponseHeader,
    pub body: Vec<Bytes>,
}

impl Fetched {
    pub fn len(&self) -> usize {
        self.body.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A fetch that produced no content: why, and the origin's own answer when it sent a
/// complete one (a 5xx or 429 page), which `honor_origin` routes pass on to clients that
/// have no usable copy.
#[derive(Debug, Clone)]
pub struct FetchError {
    pub failure: Failure,
    pub origin: Option<Arc<Fetched>>,
}

impl From<Failure> for FetchError {
    fn from(failure: Failure) -> FetchError {
        FetchError {
            failure,
            origin: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        let all = [
            Failure::Status(503),
            Failure::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            },
            Failure::Busy,
            Failure::SoftError(BodyProblem::Empty),
            Failure::SoftError(BodyProblem::NotArray),
            Failure::SoftError(BodyProblem::NotMedia),
            Failure::SoftError(BodyProblem::IncompleteMedia),
            Failure::ConnectRefused,
            Failure::Timeout,
            Failure::Reset,
            Failure::IncompleteBody,
            Failure::TooLarge,
            Failure::Tls,
        ];
        for f in all {
            assert_eq!(Failure::from_code(&f.code(), f.retry_after()), f);
        }
    }

    #[test]
    fn statuses_and_retry_after() {
        assert_eq!(Failure::Timeout.status(), 504);
        assert_eq!(Failure::Busy.status(), 503);
        assert_eq!(Failure::Status(500).status(), 502);
        let (h, body) = Failure::BudgetExhausted {
            retry_after: Duration::from_millis(1500),
        }
        .response();
        assert_eq!(h.status, 503);
        assert_eq!(h.headers["retry-after"], "2");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["status"], 503);
        assert_eq!(json["error"]["code"], "upstream_failed");
        assert_eq!(h.headers["content-length"], body.len().to_string().as_str());
    }
}

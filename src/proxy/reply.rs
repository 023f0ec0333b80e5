//! Responses rentcache writes itself: JSON errors and CORS preflight answers.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::Result;

use crate::json_error;

/// Writes a complete response (no body for HEAD) that no cache may store.
pub async fn send(
    session: &mut Session,
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
) -> Result<()> {
    let mut h = ResponseHeader::build(status, Some(headers.len() + 3))?;
    if !body.is_empty() {
        h.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    }
    h.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    h.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (k, v) in headers {
        h.append_header(k, v)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    let no_body = body.is_empty() || head;
    session.write_response_header(Box::new(h), no_body).await?;
    if !no_body {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// A JSON error `{"error": {status, code, message}}`.
pub async fn error(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    headers: Vec<(&'static str, String)>,
) -> Result<()> {
    send(
        session,
        status,
        headers,
        json_error::body(status, code, message),
    )
    .await
}

/// A JSON error after which the connection closes, saying so (`Connection: close`).
pub async fn refuse(
    session: &mut Session,
    status: u16,
    code: &str,
    message: &str,
    headers: Vec<(&'static str, String)>,
) -> Result<()> {
    session.set_keepalive(None);
    error(session, status, code, message, headers).await
}

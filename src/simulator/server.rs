//! Pingora glue: reads a request from a session, lets the [`Simulator`] answer it, writes the
//! answer back.
//!
//! This is an `HttpServerApp` rather than a `ServeHttp` because a reset must drop the
//! connection without writing a byte, and stalls and latency must be async sleeps inside the
//! handler.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use log::debug;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use super::handler::{Outcome, Response};
use super::request::Request;
use super::Simulator;

/// Request bodies are only read for `/__sim/*` settings; anything bigger is refused.
const MAX_BODY: usize = 1 << 20;

/// The Pingora application serving a [`Simulator`].
pub struct SimApp {
    sim: Arc<Simulator>,
}

impl SimApp {
    pub fn new(sim: Arc<Simulator>) -> SimApp {
        SimApp { sim }
    }
}

#[async_trait]
impl HttpServerApp for SimApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match session.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                debug!("simulator: reading a request failed: {e}");
                return None;
            }
        }
        // Stop offering keep-alive once the server is shutting down.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });

        let req = match read_request(&mut session).await {
            Ok(r) => r,
            Err(resp) => {
                write(&mut session, resp, false).await;
                return None;
            }
        };
        let head = req.method == "HEAD";
        match self.sim.handle(req).await {
            // Dropping the session closes the connection without a response.
            Outcome::Reset => None,
            Outcome::Respond(resp) => {
                if !write(&mut session, resp, head).await {
                    return None;
                }
                let persistent = HttpPersistentSettings::for_session(&session);
                match session.finish().await {
                    Ok(reusable) => {
                        reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent))
                    }
                    Err(e) => {
                        debug!("simulator: finishing a response failed: {e}");
                        None
                    }
                }
            }
        }
    }
}

/// Copies what the simulator needs out of the session; the body (only `/__sim/*` POSTs have
/// one) is read whole.
async fn read_request(session: &mut ServerSession) -> Result<Request, Response> {
    let h = session.req_header();
    let mut req = Request {
        method: h.method.as_str().to_string(),
        target: String::from_utf8_lossy(h.raw_path()).into_owned(),
        headers: h
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: Vec::new(),
    };
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if req.body.len() + chunk.len() > MAX_BODY {
                    return Err(Response::new(413, "text/plain", "request body too large\n"));
                }
                req.body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => {
                debug!("simulator: reading a request body failed: {e}");
                return Err(Response::new(400, "text/plain", "bad request body\n"));
            }
        }
    }
    Ok(req)
}

/// Writes a whole response; false if the client went away.
async fn write(session: &mut ServerSession, resp: Response, head: bool) -> bool {
    let Ok(mut header) = ResponseHeader::build(resp.status, Some(resp.headers.len() + 4)) else {
        return false;
    };
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut ok = header.insert_header("Date", date).is_ok()
        && header.insert_header("Server", "rentman-sim").is_ok();
    for (k, v) in &resp.headers {
        ok &= header.append_header(*k, v.as_str()).is_ok();
    }
    // A 304 carries no body and no length of one.
    if resp.status != 304 {
        ok &= header
            .insert_header("Content-Length", resp.body.len().to_string())
            .is_ok();
    }
    if !ok {
        return false;
    }
    if let Err(e) = session.write_response_header(Box::new(header)).await {
        debug!("simulator: writing a response header failed: {e}");
        return false;
    }
    if head || resp.status == 304 || resp.body.is_empty() {
        return true;
    }
    match session.write_response_body(resp.body, true).await {
        Ok(()) => true,
        Err(e) => {
            debug!("simulator: writing a response body failed: {e}");
            false
        }
    }
}

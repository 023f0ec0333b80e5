//! The front door: every plain HTTP/1 connection is read here first, and a request for a
//! fresh entry is answered from the cache before pingora sees it. For a hit, pingora's
//! per-request machinery (its session, request parsing into several maps, the proxy's state
//! machine and its futures) costs more than the rest of the hit put together.
//!
//! Only the plainest requests are answered here: GET or HEAD, HTTP/1.0 or 1.1, no body, no
//! range, no upgrade, on a cached route, for an entry that is fresh and not due for
//! refresh-ahead. Everything else goes to pingora's proxy with the bytes already read (as
//! the prefix pingora parses before reading more), together with what the lookup found, so
//! nothing is looked up twice; the connection comes back here after pingora's answer. TLS
//! and HTTP/2 connections go to pingora whole.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use log::debug;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::{HttpProxy, ProxyHttp};
use pingora::server::configuration::ServerConf;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{direct, Early, RentCache};

/// How long a connection may sit without a complete request (nginx's `client_header_timeout`;
/// pingora's own HTTP/1 sessions wait between requests without limit).
const IDLE: Duration = Duration::from_secs(60);
/// A request head larger than this, or with more headers, is left to pingora (which
/// answers it, or refuses it with the right status).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const READ_BUF: usize = 4096;

pub struct Front {
    cache: RentCache,
    proxy: Arc<HttpProxy<RentCache>>,
}

impl Front {
    pub fn new(cache: RentCache, conf: &Arc<ServerConf>) -> Front {
        let proxy = Arc::new(pingora::proxy::http_proxy(conf, cache.clone()));
        Front { cache, proxy }
    }
}

/// A request the front door may answer.
struct Plain {
    req: RequestHeader,
    /// The client keeps the connection open after this answer.
    keepalive: bool,
}

// Made and taken apart once per request: boxing the large variant would only add an
// allocation to every hit.
#[allow(clippy::large_enum_variant)]
enum Head {
    /// A complete head of this many bytes, whether the request ends with it, and the
    /// request if it is plain enough.
    Complete(usize, bool, Option<Plain>),
    /// Not something to parse here (malformed, too large): pingora's to answer.
    Unreadable,
    /// Closed, idle too long, or the server is shutting down between requests.
    Gone,
}

#[async_trait]
impl ServerApp for Front {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        if !direct::writable(&stream) || stream.selected_alpn_proto().is_some() {
            return ServerApp::process_new(&self.proxy, stream, shutdown).await;
        }
        let mut stream = stream;
        let mut shutdown = shutdown.clone();
        let mut buf = BytesMut::with_capacity(READ_BUF);
        loop {
            let (len, whole, plain) = match read_head(&mut stream, &mut buf, &mut shutdown).await {
                Head::Gone => return None,
                Head::Unreadable => (0, false, None),
                Head::Complete(len, whole, plain) => (len, whole, plain),
            };
            let mut handoff = None;
            if let Some(Plain { req, keepalive }) = plain {
                let keepalive = keepalive && !*shutdown.borrow();
                match self.cache.answer_early(&req, keepalive).await {
                    Early::Answered { head, body, ctx } => {
                        let body = body.as_ref().map_or(&[][..], |e| &e.body[..]);
                        let sent = direct::write_head(&stream, head, body).await;
                        debug!(
                            "{} {} -> {} HIT in {:?}{}",
                            req.method,
                            ctx.key(),
                            ctx.sent_status.unwrap_or(0),
                            ctx.started.elapsed(),
                            if sent.is_ok() {
                                ""
                            } else {
                                " (client gone mid-response)"
                            }
                        );
                        if sent.is_err() {
                            return None;
                        }
                        buf.advance(len);
                        // Pipelined requests already read are answered without waiting on
                        // the socket: let other connections in between, as pingora does.
                        tokio::task::consume_budget().await;
                        if !keepalive {
                            let _ = stream.shutdown().await;
                            return None;
                        }
                        continue;
                    }
                    Early::LookedUp(ctx) => handoff = Some(ctx),
                    Early::NotHere => {}
                }
            }
            // Pingora gets this request's bytes; pipelined requests after it, as far as they
            // have been read, stay here (pingora would not reuse a connection it had read
            // past a request on; bytes still in the socket when it looks make it close the
            // connection after its answer, as it does without the front door).
            let prefix = if whole {
                buf.split_to(len)
            } else {
                buf.split()
            };
            stream = self.hand_off(stream, prefix, handoff, &shutdown).await?;
            if buf.capacity() < READ_BUF {
                let mut fresh = BytesMut::with_capacity(READ_BUF);
                fresh.extend_from_slice(&buf);
                buf = fresh;
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

impl Front {
    /// Lets pingora's proxy answer the request at the start of `prefix` (with what the
    /// front door's lookup found, if it made one); the connection, if it stays open.
    async fn hand_off(
        &self,
        stream: Stream,
        prefix: BytesMut,
        found: Option<Box<<RentCache as ProxyHttp>::CTX>>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        // As pingora's own accept loop does.
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        if !prefix.is_empty() {
            session.set_pipelined_prefix(prefix);
        }
        if let Some(ctx) = found {
            session.set_connection_user_context(Some(ctx));
        }
        let reused = self.proxy.process_new_http(session, shutdown).await?;
        // Pipelining is off on pingora's sessions, so no bytes of a next request come back
        // with the stream: a session that read past its request does not offer it for reuse.
        let (stream, _settings) = reused.consume();
        Some(stream)
    }
}

/// Reads until `buf` starts with a complete request head.
async fn read_head(stream: &mut Stream, buf: &mut BytesMut, shutdown: &mut ShutdownWatch) -> Head {
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut parsed = httparse::Request::new(&mut headers);
            match parsed.parse(buf) {
                Ok(httparse::Status::Complete(len)) => {
                    return Head::Complete(len, ends_with_head(&parsed), plain_request(&parsed))
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return Head::Unreadable,
            }
        }
        if *shutdown.borrow() {
            return Head::Gone;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUF);
        }
        // A head still incomplete at the deadline, like an idle connection, is closed.
        let read = tokio::select! {
            biased;
            _ = shutdown.changed() => return Head::Gone,
            r = tokio::time::timeout_at(deadline, stream.read_buf(buf)) => r,
        };
        match read {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Head::Gone,
        }
    }
}

/// Whether a request is all in its head: no body follows, and the connection stays HTTP.
fn ends_with_head(parsed: &httparse::Request) -> bool {
    parsed.method != Some("CONNECT")
        && parsed.headers.iter().all(|h| {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                h.value == b"0"
            } else {
                !name.eq_ignore_ascii_case(b"transfer-encoding")
                    && !name.eq_ignore_ascii_case(b"upgrade")
            }
        })
}

/// The request, if nothing about it needs more than a cache lookup.
fn plain_request(parsed: &httparse::Request) -> Option<Plain> {
    let method = match parsed.method? {
        "GET" => http::Method::GET,
        "HEAD" => http::Method::HEAD,
        _ => return None,
    };
    let path = parsed.path.filter(|p| p.starts_with('/'))?;
    let http11 = parsed.version? == 1;
    let mut req =
        RequestHeader::build_no_case(method, path.as_bytes(), Some(parsed.headers.len())).ok()?;
    if !http11 {
        req.set_version(http::Version::HTTP_10);
    }
    let (mut close, mut keep_alive) = (false, false);
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        if name == header::CONTENT_LENGTH {
            if h.value != b"0" {
                return None;
            }
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
            || name == header::RANGE
        {
            return None;
        } else if name == header::CONNECTION {
            for token in h.value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        let value = HeaderValue::from_bytes(h.value).ok()?;
        req.append_header(name, value).ok()?;
    }
    // Pingora refuses an ambiguous authority (two Host lines, userinfo) with a 400.
    pingora::protocols::http::authority::validate_request_authority(&req).ok()?;
    let keepalive = !close && (http11 || keep_alive);
    Some(Plain { req, keepalive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<Plain> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(text.as_bytes()).unwrap().is_complete());
        plain_request(&parsed)
    }

    #[test]
    fn plain_gets_and_heads_are_taken_with_their_keepalive() {
        let p = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n").unwrap();
        assert!(p.keepalive);
        assert_eq!(p.req.method, http::Method::GET);
        assert_eq!(p.req.uri.query(), Some("b=1"));
        assert_eq!(p.req.headers["accept-encoding"], "gzip");
        assert!(
            !parse("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keepalive
        );
        assert!(!parse("HEAD / HTTP/1.0\r\n\r\n").unwrap().keepalive);
        let p = parse("HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(p.keepalive);
        assert_eq!(p.req.version, http::Version::HTTP_10);
        assert!(parse("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn anything_more_than_a_lookup_is_left_to_pingora() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "OPTIONS / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nRange: bytes=0-1\r\n\r\n",
            "GET http://example.com/ HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n",
        ] {
            assert!(parse(text).is_none(), "{text:?}");
        }
    }
}

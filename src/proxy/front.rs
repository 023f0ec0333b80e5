//! The front door: every plain HTTP/1 connection is read here first, and a request for a
//! fresh entry is answered from the cache before pingora sees it. For a hit, pingora's
//! per-request machinery (its session, request parsing into several maps, the proxy's state
//! machine and its futures) costs more than the rest of the hit put together.
//!
//! Only the plainest requests are answered here: GET or HEAD, HTTP/1.0 or 1.1 with its `Host`,
//! no body, no range, no upgrade, on a cached route, for an entry that is fresh. Every head,
//! whoever answers it, must arrive whole within one deadline and within size bounds
//! (`head`). Everything else goes to pingora's proxy with the bytes already read (as
//! the prefix pingora parses before reading more), together with what the lookup found, so
//! nothing is looked up twice; the connection comes back here after pingora's answer. TLS
//! and HTTP/2 connections go to pingora whole.

use std::sync::Arc;

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
use tokio::io::AsyncWriteExt;

use super::head::{self, Head};
use super::{direct, Early, RentCache};

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
        let mut waits = head::Waits::new(shutdown);
        let mut buf = BytesMut::with_capacity(READ_BUF);
        loop {
            let inspect = |req: &httparse::Request, raw: &[u8]| {
                (ends_with_head(req), plain_request(req, raw))
            };
            let within = self.cache.config.load().server.header_timeout;
            let read = head::read(&mut stream, &mut buf, &mut waits, within, inspect);
            let (len, whole, plain) = match read.await {
                Head::Gone => return None,
                Head::Refused(status) => {
                    head::refuse(&mut stream, status).await;
                    return None;
                }
                Head::Unparsed => (0, false, None),
                Head::Parsed(len, (whole, plain)) => (len, whole, plain),
            };
            let mut handoff = None;
            if let Some(Plain { req, keepalive }) = plain {
                let keepalive = keepalive && !waits.shutting_down();
                match self.cache.answer_early(&req, keepalive).await {
                    Early::Answered { head, body, ctx } => {
                        let sent = match body.as_ref().and_then(|e| e.file.as_ref()) {
                            Some(file) => direct::write_head_file(&stream, head, file).await,
                            None => {
                                let body = body.as_ref().map_or(&[][..], |e| &e.body[..]);
                                direct::write_head(&stream, head, body).await
                            }
                        };
                        if sent.is_ok() {
                            let bytes = body.as_ref().map_or(0, |e| e.body_len as u64);
                            let client = if self.cache.access_logging() {
                                stream
                                    .get_socket_digest()
                                    .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
                            } else {
                                None
                            };
                            let status = ctx.sent_status.unwrap_or(0);
                            self.cache.finished(&req, &ctx, status, bytes, client);
                        }
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
            stream = self.hand_off(stream, prefix, handoff, shutdown).await?;
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

/// The request, if nothing about it needs more than a cache lookup. `raw` is the head the
/// parsed request's slices point into.
fn plain_request(parsed: &httparse::Request, raw: &[u8]) -> Option<Plain> {
    let method = match parsed.method? {
        "GET" => http::Method::GET,
        "HEAD" => http::Method::HEAD,
        _ => return None,
    };
    let path = parsed.path.filter(|p| p.starts_with('/'))?;
    let http11 = parsed.version? == 1;
    // Built from parts rather than with pingora's builder, which on a hit cost more than the
    // lookup: an origin-form target that `Uri` takes as it is reads the same either way
    // (pingora strips a fragment first: such a target is left to pingora).
    if path.contains('#') {
        return None;
    }
    // One copy of the head; the target and every value are views of it, where each would
    // otherwise be an allocation and a copy of its own.
    let head = bytes::Bytes::copy_from_slice(raw);
    let view = |part: &[u8]| {
        let start = (part.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
        let end = start.checked_add(part.len())?;
        (end <= head.len()).then(|| head.slice(start..end))
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = http::Uri::from_maybe_shared(view(path.as_bytes())?).ok()?;
    if !http11 {
        parts.version = http::Version::HTTP_10;
    }
    parts.headers.reserve(parsed.headers.len());
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
        let value = HeaderValue::from_maybe_shared(view(h.value)?).ok()?;
        parts.headers.append(name, value);
    }
    let req = RequestHeader::from(parts);
    // Pingora refuses an ambiguous authority (two Host lines, userinfo) with a 400, and
    // the proxy an HTTP/1.1 request without one (RFC 9112 3.2).
    pingora::protocols::http::authority::validate_request_authority(&req).ok()?;
    if http11 && !req.headers.contains_key(header::HOST) {
        return None;
    }
    let keepalive = !close && (http11 || keep_alive);
    Some(Plain { req, keepalive })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<Plain> {
        let mut headers = [httparse::EMPTY_HEADER; head::MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(text.as_bytes()).unwrap().is_complete());
        plain_request(&parsed, text.as_bytes())
    }

    #[test]
    fn plain_gets_and_heads_are_taken_with_their_keepalive() {
        let p = parse("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n").unwrap();
        assert!(p.keepalive);
        assert_eq!(p.req.method, http::Method::GET);
        assert_eq!(p.req.uri.query(), Some("b=1"));
        assert_eq!(p.req.headers["accept-encoding"], "gzip");
        assert!(
            !parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n")
                .unwrap()
                .keepalive
        );
        assert!(!parse("HEAD / HTTP/1.0\r\n\r\n").unwrap().keepalive);
        let p = parse("HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(p.keepalive);
        assert_eq!(p.req.version, http::Version::HTTP_10);
        assert!(parse("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").is_some());
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
            // HTTP/1.1 requires Host: the proxy answers 400.
            "GET / HTTP/1.1\r\n\r\n",
            // Pingora strips a fragment from the target before anything reads it.
            "GET /a#b HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert!(parse(text).is_none(), "{text:?}");
        }
    }
}

/// The front door and pingora read the same bytes the same way: whatever the front door
/// answers itself, pingora would have parsed as the same request (no desync between the two
/// parsers a connection can meet), and the front door answers nothing pingora refuses.
#[cfg(test)]
mod parity {
    use super::*;
    use proptest::prelude::*;

    /// What pingora makes of `bytes` as the start of a connection.
    fn pingora_reads(bytes: &[u8]) -> Option<RequestHeader> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 20);
            client.write_all(bytes).await.unwrap();
            client.shutdown().await.unwrap();
            let mut session = ServerSession::new_http1(Box::new(server));
            match session.read_request().await {
                Ok(true) => Some(session.req_header().clone()),
                _ => None,
            }
        })
    }

    fn piece(options: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(options).prop_map(String::from),
            1 => "[ -~\t]{0,12}",
            1 => proptest::collection::vec(any::<u8>(), 0..6)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    fn head() -> impl Strategy<Value = Vec<u8>> {
        let method = piece(&["GET", "HEAD", "POST", "get", "G ET", "OPTIONS", "CONNECT"]);
        let target = piece(&[
            "/",
            "/propertyadvertising.php?rob=rent&limit=10",
            "/a b",
            "/%zz",
            "*",
            "http://example.com/",
            "/x?token=1&token%00=2",
            "/\u{e9}",
        ]);
        let version = piece(&[
            "HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "http/1.1", "",
        ]);
        let name = piece(&[
            "Host",
            "host",
            "Content-Length",
            "Transfer-Encoding",
            "Connection",
            "Range",
            "Expect",
            "Upgrade",
            "Accept-Encoding",
            "X-A",
            "Bad Name",
            "Host ",
            "",
        ]);
        let value = piece(&[
            "x",
            "0",
            "2",
            "chunked",
            "close",
            "keep-alive",
            "application/base64",
            "bytes=0-1",
            "user@x",
            " padded ",
            "",
        ]);
        let eol = prop::sample::select(vec!["\r\n", "\n"]);
        (
            method,
            target,
            version,
            proptest::collection::vec((name, value), 0..6),
            eol,
        )
            .prop_map(|(m, t, v, headers, eol)| {
                let mut s = format!("{m} {t} {v}{eol}");
                for (n, val) in headers {
                    s.push_str(&format!("{n}: {val}{eol}"));
                }
                s.push_str(eol);
                s.into_bytes()
            })
    }

    proptest! {
        #[test]
        fn what_the_front_door_answers_pingora_reads_alike(bytes in head()) {
            let inspect = |req: &httparse::Request, raw: &[u8]| (ends_with_head(req), plain_request(req, raw));
            if let Some(head::Head::Parsed(len, (whole, Some(plain)))) = head::judge(&bytes, inspect) {
                let theirs = pingora_reads(&bytes[..len]);
                prop_assert!(theirs.is_some(), "pingora refuses what the front door takes: {:?}", String::from_utf8_lossy(&bytes));
                let theirs = theirs.unwrap();
                prop_assert_eq!(&theirs.method, &plain.req.method);
                prop_assert_eq!(theirs.uri.to_string(), plain.req.uri.to_string());
                prop_assert_eq!(theirs.version, plain.req.version);
                let headers = |r: &RequestHeader| -> Vec<(String, Vec<u8>)> {
                    r.headers.iter().map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec())).collect()
                };
                prop_assert_eq!(headers(&theirs), headers(&plain.req));
                // A request the front door takes as complete has no body for pingora either.
                prop_assert!(whole);
                let cl = theirs.headers.get(header::CONTENT_LENGTH).map(|v| v.as_bytes().to_vec());
                prop_assert!(cl.is_none() || cl.as_deref() == Some(&b"0"[..]));
                prop_assert!(!theirs.headers.contains_key(header::TRANSFER_ENCODING));
            }
        }
    }
}

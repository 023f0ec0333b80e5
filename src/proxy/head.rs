//! Reading an HTTP/1 request head off a connection before pingora does, for the public and
//! the admin listener alike: one deadline for the whole head, whichever parser ends up
//! reading it (pingora, once handed a head, would wait for each further byte without limit:
//! a client dripping a head it cannot parse could hold the connection forever), and bounds on
//! its size, answered as nginx answers them.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

/// A request line longer than this gets `414` (nginx: `large_client_header_buffers`).
pub const MAX_REQUEST_LINE: usize = 16 * 1024;
/// A head larger than this gets `431`.
pub const MAX_HEAD: usize = 64 * 1024;
/// Header lines httparse reads here; a head with more is pingora's to read (up to 256).
pub const MAX_HEADERS: usize = 64;
const READ_BUF: usize = 4096;

/// What the start of a connection's buffer holds.
pub enum Head<T> {
    /// A complete head httparse reads, of this many bytes, and what `inspect` made of it
    /// (given the parsed head and its bytes, which the parsed head's slices point into).
    Parsed(usize, T),
    /// A complete head httparse does not read: pingora's to answer (it escapes some request
    /// lines, refuses the rest with 400).
    Unparsed,
    /// Refused here with this status (the connection then closes).
    Refused(u16),
    /// Closed, not complete at the deadline, or the server is shutting down.
    Gone,
}

/// Where the head in `buf` ends (just past its blank line), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The status a head too large to take gets, judged on what has arrived of it (its request
/// line is already known to fit).
fn too_large(buf: &[u8], end: Option<usize>) -> Option<u16> {
    if end.unwrap_or(buf.len()) > MAX_HEAD {
        return Some(431);
    }
    None
}

/// Judges the bytes at the start of `buf`: a head, a refusal, or `None` (more is needed).
pub fn judge<T>(
    buf: &[u8],
    inspect: impl FnOnce(&httparse::Request, &[u8]) -> T,
) -> Option<Head<T>> {
    if buf.is_empty() {
        return None;
    }
    let line = buf.iter().position(|b| *b == b'\n');
    if line.unwrap_or(buf.len()) > MAX_REQUEST_LINE {
        return Some(Head::Refused(414));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // A head httparse reads ends where it says: the common case scans the bytes once.
    if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
        if len > MAX_HEAD {
            return Some(Head::Refused(431));
        }
        let head = buf.get(..len).unwrap_or_default();
        return Some(Head::Parsed(len, inspect(&req, head)));
    }
    let end = head_end(buf);
    if let Some(status) = too_large(buf, end) {
        return Some(Head::Refused(status));
    }
    // A head httparse cannot read is handed on whole, once it is whole.
    end.map(|_| Head::Unparsed)
}

/// What a connection's head reads wait on besides the socket: the server's shutdown and the
/// head's deadline, made once per connection. A timer armed and dropped for every request,
/// and a shutdown waiter queued and unqueued, cost more than the rest of a hit's
/// bookkeeping; moving one timer's deadline later is an atomic store.
pub struct Waits {
    shutdown: ShutdownWatch,
    stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    deadline: Pin<Box<Sleep>>,
}

impl Waits {
    pub fn new(shutdown: &ShutdownWatch) -> Waits {
        let mut watch = shutdown.clone();
        Waits {
            shutdown: shutdown.clone(),
            // Any change (pingora only ever sends `true`) or a dropped sender ends it.
            stop: Box::pin(async move {
                let _ = watch.changed().await;
            }),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Whether the server is shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// Reads until `buf` starts with a complete head, or the connection is done with: `within`
/// is how long the whole head may take, idle time before it included (nginx's
/// `client_header_timeout`; `server.header_timeout`).
pub async fn read<T>(
    stream: &mut Stream,
    buf: &mut BytesMut,
    waits: &mut Waits,
    within: Duration,
    inspect: impl Fn(&httparse::Request, &[u8]) -> T,
) -> Head<T> {
    if let Some(head) = judge(buf, &inspect) {
        return head;
    }
    waits
        .deadline
        .as_mut()
        .reset(tokio::time::Instant::now() + within);
    loop {
        // A head still incomplete at the deadline, like an idle connection, is closed.
        if waits.shutting_down() || waits.deadline.is_elapsed() {
            return Head::Gone;
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_BUF);
        }
        // The socket first: when it has bytes (it woke this task), the shutdown and the
        // deadline are not polled at all; they are when the read has to wait.
        let read = tokio::select! {
            biased;
            r = stream.read_buf(buf) => r,
            _ = waits.stop.as_mut() => return Head::Gone,
            _ = waits.deadline.as_mut() => return Head::Gone,
        };
        match read {
            Ok(n) if n > 0 => {}
            _ => return Head::Gone,
        }
        if let Some(head) = judge(buf, &inspect) {
            return head;
        }
    }
}

/// Answers a refused head (`414`, `431`) and closes the connection.
pub async fn refuse(stream: &mut Stream, status: u16) {
    let (reason, message) = match status {
        414 => ("URI Too Long", "the request line is too long"),
        431 => (
            "Request Header Fields Too Large",
            "the request head is too large",
        ),
        _ => ("Bad Request", "the request could not be read"),
    };
    let body = crate::json_error::body(status, "bad_request", message);
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         cache-control: no-store\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(&body).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(bytes: &[u8]) -> &'static str {
        match judge(bytes, |_, _| ()) {
            None => "more",
            Some(Head::Parsed(..)) => "parsed",
            Some(Head::Unparsed) => "unparsed",
            Some(Head::Refused(414)) => "414",
            Some(Head::Refused(431)) => "431",
            Some(_) => "other",
        }
    }

    #[test]
    fn heads_are_read_whole_or_bounded() {
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "parsed");
        assert_eq!(verdict(b"GET / HTTP/1.1\r\nHost: a\r\n"), "more");
        // Unreadable here, but only handed on once whole: a drip cannot hold pingora.
        assert_eq!(verdict(b"GET /a b HTTP/1.1\r\nHost: a"), "more");
        assert_eq!(verdict(b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), "unparsed");
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(verdict(long_line.as_bytes()), "414");
        assert_eq!(verdict(&vec![b'a'; MAX_REQUEST_LINE + 1]), "414");
        let big = format!(
            "GET / HTTP/1.1\r\n{}\r\n",
            "x-filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                .repeat(MAX_HEAD / 90 + 10)
        );
        assert_eq!(verdict(&big.as_bytes()[..MAX_HEAD + 10]), "431");
        // Many header lines: pingora reads up to 256 of them.
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "a: b\r\n".repeat(100));
        assert_eq!(verdict(many.as_bytes()), "unparsed");
    }
}

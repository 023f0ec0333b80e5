//! Writes a whole cached response to an HTTP/1 client's socket with one `writev`.
//!
//! Pingora's writer copies the header and then the body into its buffered stream before it
//! sends them; for a 40 KB entry that copy is a large share of a hit's cost, and a write
//! buffer smaller than the body costs a second `send` instead. Here the serialised header
//! and the stored body chunks go to the kernel as they are, in one system call. Whatever the
//! socket does not take at once is written asynchronously through a second handle on the
//! same socket, registered with tokio only for that.
//!
//! Only plain HTTP/1 connections qualify. Pingora's stream holds no unsent bytes at this
//! point (the request has just been read; the previous response was flushed), so the bytes
//! written here are the next on the wire. Pingora's session is then finished as for any
//! response a filter wrote: no body was framed through it, so it has nothing to add.

use std::io::{IoSlice, Write};
use std::mem::ManuallyDrop;
use std::os::fd::FromRawFd;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::Session;
use tokio::io::AsyncWriteExt;

use crate::storage::shared_body::SharedBody;

/// How long a client may take to accept the rest of a response before it is dropped.
const REST_TIMEOUT: Duration = Duration::from_secs(60);

/// What became of a direct write.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// The whole response is on the wire.
    Whole,
    /// Not a connection this path serves: nothing was written, pingora's writer must be used.
    NotTried,
    /// The client went away or stopped reading mid-response: the connection is closed.
    Broken,
}

/// Serialises a response header as HTTP/1 with the headers pingora's writer would add
/// (`Date`, `Connection`), into a buffer that leaves room for nothing else.
pub fn head_bytes(header: &ResponseHeader, keepalive: bool) -> BytesMut {
    head_bytes_dated(
        header,
        keepalive,
        pingora::protocols::http::date::get_cached_date().as_bytes(),
    )
}

/// `head_bytes` with the given `Date`.
pub fn head_bytes_dated(header: &ResponseHeader, keepalive: bool, date: &[u8]) -> BytesMut {
    let mut buf = BytesMut::with_capacity(64 + header.headers.len() * 48);
    buf.put_slice(match header.version {
        http::Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
    buf.put_slice(header.status.as_str().as_bytes());
    buf.put_u8(b' ');
    if let Some(reason) = header.get_reason_phrase() {
        buf.put_slice(reason.as_bytes());
    }
    buf.put_slice(b"\r\n");
    header.header_to_h1_wire(&mut buf);
    // A stored response keeps its origin's `Date` (RFC 9110 6.6.1); others are dated now.
    if !header.headers.contains_key(http::header::DATE) {
        buf.put_slice(b"date: ");
        buf.put_slice(date);
        buf.put_slice(b"\r\n");
    }
    buf.put_slice(if keepalive {
        b"connection: keep-alive\r\n\r\n"
    } else {
        b"connection: close\r\n\r\n"
    });
    buf
}

/// Writes `header` and `body` (empty for HEAD, 304...) to the client.
/// Stored headers hold no `Date` or `Connection` (see `Entry::new`): this adds both.
pub async fn send(session: &mut Session, header: &ResponseHeader, body: &[Bytes]) -> Sent {
    let ServerSession::H1(h1) = session.as_downstream_mut() else {
        return Sent::NotTried;
    };
    if !writable(h1.stream()) {
        return Sent::NotTried;
    }
    match write(h1.stream(), header, body, h1.will_keepalive()).await {
        Ok(()) => Sent::Whole,
        Err(_) => {
            h1.set_server_keepalive(None);
            Sent::Broken
        }
    }
}

/// Whether `stream` is a plain socket this module can write to.
pub fn writable(stream: &Stream) -> bool {
    stream.get_ssl().is_none() && stream.id() > 2
}

/// Writes a whole response to a `writable` stream that holds no unsent bytes. An error
/// means the client went away or stopped reading mid-response: the connection is done.
pub async fn write(
    stream: &Stream,
    header: &ResponseHeader,
    body: &[Bytes],
    keepalive: bool,
) -> std::io::Result<()> {
    write_head(stream, head_bytes(header, keepalive).freeze(), body).await
}

/// `write` for a head already serialised.
pub async fn write_head(stream: &Stream, head: Bytes, body: &[Bytes]) -> std::io::Result<()> {
    let mut pieces: Vec<Bytes> = Vec::with_capacity(1 + body.len());
    pieces.push(head);
    pieces.extend(body.iter().filter(|b| !b.is_empty()).cloned());

    // SAFETY: the descriptor is the open socket of `stream`, which outlives this call;
    // ManuallyDrop keeps this handle from closing it.
    let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(stream.id()) });
    let written = loop {
        let slices: Vec<IoSlice> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        match (&*socket).write_vectored(&slices) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break 0,
            Err(e) => return Err(e),
        }
    };
    let rest = skip(pieces, written);
    if rest.is_empty() {
        return Ok(());
    }
    write_rest(&socket, rest).await
}

/// `write_head` for a body kept in a memory file: the head with `MSG_MORE` (it leaves with
/// the body's first bytes), then the body with `sendfile`, without copying it through this
/// process.
pub async fn write_head_file(
    stream: &Stream,
    head: Bytes,
    file: &SharedBody,
) -> std::io::Result<()> {
    let fd = stream.id();
    // SAFETY: as in `write_head`.
    let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
    let mut sent = 0;
    while sent < head.len() {
        let rest = head.slice(sent..);
        // SAFETY: sends bytes of a live buffer on the stream's open socket.
        let n = unsafe {
            libc::send(
                fd,
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_MORE | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            sent += n as usize;
            continue;
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => continue,
            std::io::ErrorKind::WouldBlock => break,
            _ => return Err(e),
        }
    }
    if sent < head.len() {
        // The socket is full before the head is out (a slow client): the ordinary way.
        write_rest(&socket, vec![head.slice(sent..)]).await?;
    }
    let mut offset: libc::off_t = 0;
    let len = file.len();
    let mut waiter: Option<tokio::net::TcpStream> = None;
    let deadline = tokio::time::Instant::now() + REST_TIMEOUT;
    while (offset as usize) < len {
        // SAFETY: copies from the sealed file to the socket, both open for this call.
        let n = unsafe { libc::sendfile(fd, file.fd(), &mut offset, len - offset as usize) };
        if n > 0 {
            continue;
        }
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let e = std::io::Error::last_os_error();
        match e.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                if waiter.is_none() {
                    let dup = socket.try_clone()?;
                    dup.set_nonblocking(true)?;
                    waiter = Some(tokio::net::TcpStream::from_std(dup)?);
                }
                if let Some(w) = &waiter {
                    match tokio::time::timeout_at(deadline, w.writable()).await {
                        Ok(r) => r?,
                        Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
                    }
                    // Readiness is cleared when the next call would block again.
                    let _ = w.try_io(tokio::io::Interest::WRITABLE, || {
                        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
                    });
                }
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

/// Drops the first `n` bytes of `pieces`.
fn skip(pieces: Vec<Bytes>, mut n: usize) -> Vec<Bytes> {
    let mut rest = Vec::with_capacity(pieces.len());
    for mut p in pieces {
        if n >= p.len() {
            n -= p.len();
        } else {
            if n > 0 {
                p = p.slice(n..);
                n = 0;
            }
            rest.push(p);
        }
    }
    rest
}

/// Waits for the socket to take the rest, through a duplicate descriptor that tokio can
/// wait on (the original is registered with pingora's stream and cannot be registered twice).
async fn write_rest(socket: &std::net::TcpStream, rest: Vec<Bytes>) -> std::io::Result<()> {
    let dup = socket.try_clone()?;
    dup.set_nonblocking(true)?;
    let mut tokio_socket = tokio::net::TcpStream::from_std(dup)?;
    let all = async {
        for piece in &rest {
            tokio_socket.write_all(piece).await?;
        }
        Ok(())
    };
    match tokio::time::timeout(REST_TIMEOUT, all).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_drops_whole_and_partial_pieces() {
        let pieces = vec![
            Bytes::from_static(b"head"),
            Bytes::from_static(b"body1"),
            Bytes::from_static(b"body2"),
        ];
        assert_eq!(skip(pieces.clone(), 0), pieces);
        assert_eq!(
            skip(pieces.clone(), 6),
            vec![Bytes::from_static(b"dy1"), Bytes::from_static(b"body2")]
        );
        assert_eq!(skip(pieces.clone(), 9), vec![Bytes::from_static(b"body2")]);
        assert!(skip(pieces, 14).is_empty());
    }

    #[test]
    fn head_is_http1_with_date_and_connection() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-length", "2").unwrap();
        let text = String::from_utf8(head_bytes(&h, true).to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: "));
        assert!(text.ends_with("\r\nconnection: keep-alive\r\n\r\n"));
        let text = String::from_utf8(head_bytes(&h, false).to_vec()).unwrap();
        assert!(text.ends_with("\r\nconnection: close\r\n\r\n"));
    }
}

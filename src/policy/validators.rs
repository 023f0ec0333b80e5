//! Validators and framing of stored responses.

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use bytes::Bytes;
use pingora::http::ResponseHeader;

/// ETags rentcache makes itself start with this, so they are never sent upstream as if the
/// origin had issued them.
const OWN_ETAG_PREFIX: &str = "\"rc-";

/// Prepares a complete response for storage: an exact `Content-Length` (hits need no chunked
/// framing) and, when the origin sent no `ETag`, a strong one from a hash of the body, so
/// browsers and CDNs can revalidate with `If-None-Match`.
pub fn complete_stored_header(header: &mut ResponseHeader, body: &[Bytes]) {
    let len: usize = body.iter().map(Bytes::len).sum();
    header.remove_header(&http::header::TRANSFER_ENCODING);
    let _ = header.insert_header(http::header::CONTENT_LENGTH, len);
    if header.headers.get(http::header::ETAG).is_none() {
        let _ = header.insert_header(http::header::ETAG, body_etag(body));
    }
    *header = without_case(header);
}

/// The same header without the map that preserves the upstream's header-name case: every
/// hit copies the stored header, and the map would double that work. Names go out in lower
/// case, which HTTP/1.1 and HTTP/2 clients treat alike.
pub fn without_case(header: &ResponseHeader) -> ResponseHeader {
    // Room for the headers each response adds (Age, X-Cache-Status, Cache-Status,
    // Cache-Control, CORS...), so that adding them does not regrow the map on every hit.
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = header.status;
    parts.headers.reserve(header.headers.len() + 8);
    let mut out = ResponseHeader::from(parts);
    for (name, value) in header.headers.iter() {
        let _ = out.append_header(name.clone(), value.clone());
    }
    out
}

/// `"rc-<32 hex digits>"`: a 128-bit BLAKE2b of the body.
pub fn body_etag(body: &[Bytes]) -> String {
    let mut h = Blake2b::<U16>::new();
    for chunk in body {
        h.update(chunk);
    }
    format!("{OWN_ETAG_PREFIX}{}\"", hex::encode(h.finalize()))
}

/// The response's ETag, if any.
pub fn etag(header: &ResponseHeader) -> Option<&[u8]> {
    header.headers.get(http::header::ETAG).map(|v| v.as_bytes())
}

/// Whether the origin gave this response a validator (an ETag of its own, or a
/// Last-Modified), so that an expired copy can be revalidated with a conditional request.
pub fn has_origin_validator(header: &ResponseHeader) -> bool {
    let origin_etag = header
        .headers
        .get(http::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !is_own_etag(v));
    origin_etag || header.headers.contains_key(http::header::LAST_MODIFIED)
}

/// Whether an `If-None-Match` value only names rentcache's own ETags (the origin would not
/// know them).
pub fn is_own_etag(value: &str) -> bool {
    value
        .split(',')
        .map(str::trim)
        .all(|v| v.trim_start_matches("W/").starts_with(OWN_ETAG_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_header() {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("transfer-encoding", "chunked").unwrap();
        let body = vec![Bytes::from_static(b"[1,"), Bytes::from_static(b"2]")];
        complete_stored_header(&mut h, &body);
        assert_eq!(h.headers["content-length"], "5");
        assert!(h.headers.get("transfer-encoding").is_none());
        let etag = h.headers["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, body_etag(&[Bytes::from_static(b"[1,2]")]));
        assert!(is_own_etag(&etag));
        assert!(!is_own_etag("\"abc\""));
        // An origin ETag is kept.
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("etag", "\"origin\"").unwrap();
        complete_stored_header(&mut h, &body);
        assert_eq!(h.headers["etag"], "\"origin\"");
    }
}

//! Content coding: which clients take gzip, which stored answers are worth encoding, and
//! the header changes an encoded copy needs.

use http::header::{HeaderValue, ACCEPT_RANGES, CONTENT_ENCODING, CONTENT_TYPE, ETAG, VARY};
use pingora::http::ResponseHeader;

/// Below this, gzip's own framing outweighs what it saves (pingora's limit too).
const MIN_LEN: usize = 20;

/// Whether an `Accept-Encoding` value admits gzip (`gzip`, `x-gzip` or `*`, not at q=0).
pub fn accepts_gzip(accept_encoding: Option<&HeaderValue>) -> bool {
    let Some(Ok(value)) = accept_encoding.map(HeaderValue::to_str) else {
        return false;
    };
    value.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        let named = ["gzip", "x-gzip", "*"]
            .iter()
            .any(|c| coding.eq_ignore_ascii_case(c));
        let refused = parts.any(|p| {
            p.trim()
                .strip_prefix("q=")
                .and_then(|q| q.trim().parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        named && !refused
    })
}

/// Whether the origin forbade transforming the answer (RFC 9110 7.7: `no-transform`).
pub fn no_transform(header: &ResponseHeader) -> bool {
    header
        .headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|d| d.trim_ascii().eq_ignore_ascii_case(b"no-transform"))
        })
}

/// Whether a stored answer is text worth compressing, not encoded already (the origin's own
/// coding is left alone), and not one the origin said must not be transformed.
pub fn compressible(header: &ResponseHeader, body_len: usize) -> bool {
    if header.status != 200
        || body_len < MIN_LEN
        || header.headers.contains_key(CONTENT_ENCODING)
        || no_transform(header)
    {
        return false;
    }
    let Some(ct) = header.headers.get(CONTENT_TYPE).map(HeaderValue::as_bytes) else {
        return false;
    };
    // Runs on every hit: compared in place rather than lowercased into a new string.
    let has = |needle: &[u8]| {
        ct.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    !has(b"zip")
        && (ct
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"text/"))
            || has(b"json")
            || has(b"javascript")
            || has(b"xml"))
}

/// Adds `Accept-Encoding` to `Vary`, so that outer caches keep encoded and plain copies apart.
pub fn vary_on_accept_encoding(header: &mut ResponseHeader) {
    let current = header
        .headers
        .get(VARY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let value = match current {
        None => {
            let _ = header.insert_header(VARY, HeaderValue::from_static("Accept-Encoding"));
            return;
        }
        Some(v)
            if v.split(',')
                .any(|t| t.trim() == "*" || t.trim().eq_ignore_ascii_case("accept-encoding")) =>
        {
            return
        }
        Some(v) => format!("{v}, Accept-Encoding"),
    };
    let _ = header.insert_header(VARY, value);
}

/// Turns a plain answer's header into its gzip copy's: encoding, length, no byte ranges, and
/// a weak validator (the bytes differ, the representation does not).
pub fn gzip_header(plain: &ResponseHeader, gzip_len: usize) -> ResponseHeader {
    let mut header = plain.clone();
    let _ = header.insert_header(CONTENT_ENCODING, "gzip");
    let _ = header.insert_header(http::header::CONTENT_LENGTH, gzip_len);
    header.remove_header(&ACCEPT_RANGES);
    if let Some(etag) = header.headers.get(ETAG).map(|v| v.as_bytes().to_vec()) {
        if etag.starts_with(b"\"") {
            let weak = [b"W/".as_slice(), &etag].concat();
            if let Ok(v) = HeaderValue::from_bytes(&weak) {
                let _ = header.insert_header(ETAG, v);
            }
        } else if !etag.starts_with(b"W/") {
            header.remove_header(&ETAG);
        }
    }
    vary_on_accept_encoding(&mut header);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ae(v: &str) -> bool {
        accepts_gzip(Some(&HeaderValue::from_str(v).unwrap()))
    }

    #[test]
    fn gzip_accepted_unless_refused() {
        assert!(ae("gzip"));
        assert!(ae("gzip, deflate, br, zstd"));
        assert!(ae("br;q=1.0, GZIP;q=0.5"));
        assert!(ae("*"));
        assert!(!ae("gzip;q=0"));
        assert!(!ae("br, zstd"));
        assert!(!ae("identity"));
        assert!(!accepts_gzip(None));
    }

    fn json(len: usize) -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json; charset=utf-8")
            .unwrap();
        h.insert_header("content-length", len).unwrap();
        h
    }

    #[test]
    fn only_plain_text_answers_are_compressible() {
        assert!(compressible(&json(100), 100));
        assert!(!compressible(&json(10), 10));
        let mut encoded = json(100);
        encoded.insert_header("content-encoding", "br").unwrap();
        assert!(!compressible(&encoded, 100));
        let mut upper = json(100);
        upper.insert_header("content-type", "Text/HTML").unwrap();
        assert!(compressible(&upper, 100));
        let mut image = json(100);
        image.insert_header("content-type", "image/jpeg").unwrap();
        assert!(!compressible(&image, 100));
        let mut error = json(100);
        error.set_status(500).unwrap();
        assert!(!compressible(&error, 100));
    }

    #[test]
    fn gzip_header_weakens_the_validator_and_varies() {
        let mut plain = json(100);
        plain.insert_header("etag", "\"rc-1\"").unwrap();
        plain.insert_header("vary", "Origin").unwrap();
        plain.insert_header("accept-ranges", "bytes").unwrap();
        let gz = gzip_header(&plain, 42);
        assert_eq!(gz.headers["content-encoding"], "gzip");
        assert_eq!(gz.headers["content-length"], "42");
        assert_eq!(gz.headers["etag"], "W/\"rc-1\"");
        assert_eq!(gz.headers["vary"], "Origin, Accept-Encoding");
        assert!(!gz.headers.contains_key("accept-ranges"));
        let mut again = gz.clone();
        vary_on_accept_encoding(&mut again);
        assert_eq!(again.headers["vary"], "Origin, Accept-Encoding");
    }
}

//! The one shape of error bodies rentcache writes: `{"error": {"status", "code", "message"}}`.

use bytes::Bytes;
use pingora::http::ResponseHeader;

/// A response header with `status` and nothing else, built without a fallible step.
pub fn bare_header(status: http::StatusCode) -> ResponseHeader {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    ResponseHeader::from(parts)
}

pub fn body(status: u16, code: &str, message: &str) -> Bytes {
    let v = serde_json::json!({
        "error": { "status": status, "code": code, "message": message }
    });
    Bytes::from(v.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shape() {
        let b = super::body(404, "no_route", "No route for /x");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["status"], 404);
        assert_eq!(v["error"]["code"], "no_route");
    }
}

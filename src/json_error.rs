//! The one shape of error bodies rentcache writes: `{"error": {"status", "code", "message"}}`.

use bytes::Bytes;

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

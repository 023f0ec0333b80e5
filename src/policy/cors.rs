//! CORS for the configured origins, including preflight answers (made by rentcache itself:
//! never cached, never forwarded).

use crate::config::Cors;

/// Response headers browsers may read from script.
pub const EXPOSE_HEADERS: &str = "Age, Cache-Status, ETag, X-Cache-Status";

/// The `Access-Control-Allow-Origin` value for a request from `origin`, if it is allowed.
pub fn allow_origin(cors: &Cors, origin: Option<&str>) -> Option<String> {
    let origin = origin?;
    if cors.any_origin {
        return Some("*".into());
    }
    let lower = origin.to_ascii_lowercase();
    cors.allowed_origins
        .contains(&lower)
        .then(|| origin.to_string())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Preflight {
    /// 204 with these headers.
    Allowed(Vec<(&'static str, String)>),
    /// 403 with this reason.
    Denied(String),
}

/// The answer to `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
pub fn preflight(
    cors: &Cors,
    origin: &str,
    requested_method: &str,
    requested_headers: Option<&str>,
    methods: &[http::Method],
) -> Preflight {
    let Some(allowed) = allow_origin(cors, Some(origin)) else {
        return Preflight::Denied(format!("origin {origin} is not allowed"));
    };
    if !methods.iter().any(|m| m.as_str() == requested_method) {
        return Preflight::Denied(format!("method {requested_method} is not allowed"));
    }
    let mut headers = vec![
        ("access-control-allow-origin", allowed.clone()),
        (
            "access-control-allow-methods",
            methods
                .iter()
                .map(http::Method::as_str)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("access-control-max-age", cors.max_age.as_secs().to_string()),
    ];
    if let Some(h) = requested_headers.filter(|h| !h.trim().is_empty()) {
        // Requests carry no credentials, so echoing the requested headers grants nothing.
        headers.push(("access-control-allow-headers", h.to_string()));
    }
    if allowed != "*" {
        headers.push(("vary", "Origin".into()));
    }
    Preflight::Allowed(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cors(origins: &[&str], any: bool) -> Cors {
        Cors {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            any_origin: any,
            max_age: Duration::from_secs(600),
            timing_allow_origin: true,
        }
    }

    #[test]
    fn origins() {
        let c = cors(&["https://a.example"], false);
        assert_eq!(
            allow_origin(&c, Some("https://A.example")).as_deref(),
            Some("https://A.example")
        );
        assert_eq!(allow_origin(&c, Some("https://b.example")), None);
        assert_eq!(allow_origin(&c, None), None);
        assert_eq!(
            allow_origin(&cors(&[], true), Some("https://x")).as_deref(),
            Some("*")
        );
    }

    #[test]
    fn preflights() {
        let c = cors(&["https://a.example"], false);
        let get = [http::Method::GET, http::Method::HEAD];
        match preflight(
            &c,
            "https://a.example",
            "GET",
            Some("x-requested-with"),
            &get,
        ) {
            Preflight::Allowed(h) => {
                assert!(h.contains(&("access-control-max-age", "600".into())));
                assert!(h.contains(&("access-control-allow-headers", "x-requested-with".into())));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            preflight(&c, "https://a.example", "POST", None, &get),
            Preflight::Denied(_)
        ));
        assert!(matches!(
            preflight(&c, "https://evil.example", "GET", None, &get),
            Preflight::Denied(_)
        ));
    }
}

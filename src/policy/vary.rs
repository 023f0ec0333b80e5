//! `Vary` (RFC 9111 4.1): an origin that varies its answer on request headers gets one stored
//! answer per combination of their values. The URL's key then holds an index naming the
//! headers and the variants stored; each variant's key is the URL's key plus the normalised
//! values of those headers. `Accept-Encoding` is left out: the upstream is always asked for
//! identity, and rentcache encodes for each client itself.

use http::HeaderMap;

use super::key::Canonical;

/// Variants kept per URL, at most: the rest are served but not stored.
pub const MAX_VARIANTS: usize = 32;

/// Separates a URL's key from its variant's part (never in a canonical key).
const VARIANT: char = '\u{1f}';

/// The request headers an answer varies on (lower-case, sorted, without `Accept-Encoding`),
/// or `None` when it varies on nothing that matters here. `Vary: *` is refused earlier (it is
/// never stored).
pub fn names(response: &HeaderMap) -> Option<Vec<String>> {
    let mut names: Vec<String> = response
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "accept-encoding" && t != "*")
        .collect();
    names.sort();
    names.dedup();
    (!names.is_empty()).then_some(names)
}

/// A header's value as the variant key records it: every line joined, list items trimmed,
/// whitespace collapsed and case folded, so that values with the same meaning select the
/// same variant. An absent header is distinct from an empty one.
fn normalised(request: &HeaderMap, name: &str) -> String {
    let mut lines = request.get_all(name).iter().peekable();
    if lines.peek().is_none() {
        return "\u{0}".into();
    }
    let joined: Vec<String> = lines
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|item| {
            item.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_ascii_lowercase()
        })
        .filter(|item| !item.is_empty())
        .collect();
    joined.join(",")
}

/// The variant of `url` (a URL's canonical form) that `request` selects among answers that
/// vary on `names`.
pub fn variant(url: &Canonical, names: &[String], request: &HeaderMap) -> Canonical {
    let mut key = url.key.clone();
    key.push(VARIANT);
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            key.push('&');
        }
        key.push_str(name);
        key.push('=');
        key.push_str(&normalised(request, name));
    }
    Canonical {
        hash: pingora::cache::key::hash_key(&key),
        key,
        ..url.clone()
    }
}

/// The URL's own key of a variant's key.
pub fn url_key(key: &str) -> &str {
    key.split(VARIANT).next().unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn url() -> Canonical {
        Canonical {
            route: 0,
            key: "/a?x=1".into(),
            target: "/a?x=1".into(),
            headers: vec![],
            hash: pingora::cache::key::hash_key("/a?x=1"),
        }
    }

    #[test]
    fn names_leave_out_accept_encoding() {
        assert_eq!(
            names(&headers(&[
                ("vary", "Accept-Language, accept-encoding"),
                ("vary", "Accept")
            ])),
            Some(vec!["accept".into(), "accept-language".into()])
        );
        assert_eq!(names(&headers(&[("vary", "Accept-Encoding")])), None);
        assert_eq!(names(&headers(&[])), None);
    }

    #[test]
    fn equivalent_values_select_the_same_variant() {
        let n = vec!["accept-language".to_string()];
        let a = variant(
            &url(),
            &n,
            &headers(&[("accept-language", "en-GB,  fr;q=0.5")]),
        );
        let b = variant(
            &url(),
            &n,
            &headers(&[
                ("Accept-Language", "EN-gb"),
                ("accept-language", " fr;q=0.5"),
            ]),
        );
        assert_eq!(a.key, b.key);
        assert_eq!(a.hash, b.hash);
        let c = variant(&url(), &n, &headers(&[("accept-language", "de")]));
        assert_ne!(a.key, c.key);
        let absent = variant(&url(), &n, &headers(&[]));
        let empty = variant(&url(), &n, &headers(&[("accept-language", "")]));
        assert_ne!(absent.key, empty.key);
        assert_eq!(url_key(&a.key), "/a?x=1");
        assert_eq!(a.target, "/a?x=1");
    }
}

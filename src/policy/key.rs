//! Canonical cache keys. One logical request has one key: the token and tracking parameters
//! are dropped, parameters the route does not use are dropped, header-borne parameters are
//! folded in, repeated names keep the last value (as PHP reads them) and the rest are
//! sorted, so `?a=1&b=2` and `?b=2&a=1` share an entry. The upstream is asked for exactly the
//! request the key describes.

use http::HeaderMap;
use pingora::cache::key::HashBinary;

use crate::config::{Config, ParamFilter};

use super::php::{is_token, php_name};
use super::{query, routes};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canonical {
    /// Index of the matched route in `config.routes`.
    pub route: usize,
    /// The cache key: the canonical target, then ` name=value` for each key header.
    pub key: String,
    /// Path and canonical query to fetch upstream (before the base path and the token).
    pub target: String,
    /// Key headers to send upstream, (lower-case name, recognised value).
    pub headers: Vec<(String, String)>,
    /// The key's 128-bit hash, as pingora computes it (computed once, here).
    pub hash: HashBinary,
}

/// Whether the request carries a header that can change its canonical form, so that the
/// canonical form of its URI alone (which may be remembered) does not apply.
pub fn depends_on_headers(config: &Config, route: Option<usize>, headers: &HeaderMap) -> bool {
    if headers.is_empty() {
        return false;
    }
    config
        .key
        .params_from_header_names
        .iter()
        .any(|h| headers.contains_key(h))
        || route
            .and_then(|r| config.routes.get(r))
            .is_some_and(|r| r.key_header_names.iter().any(|h| headers.contains_key(h)))
}

/// The canonical form of a request, or `None` if no route matches it.
pub fn canonicalize(
    config: &Config,
    path: &str,
    raw_query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Canonical> {
    let token = config.upstream.token_name.as_str();
    // Names are compared as Rentman's PHP will read them: `token[]`, `%20token` or
    // `token%00` are the token there, and `utm.source` is `utm_source`.
    let mut params: Vec<(String, String)> = query::parse(raw_query)
        .into_iter()
        .filter(|(k, _)| !is_token(k, token) && !matches_any(&config.key.drop_params, k))
        .collect();
    for name in &config.key.params_from_headers {
        if is_token(name, token) || query::last(&params, name).is_some() {
            continue;
        }
        if let Some(v) = headers.get(name.as_str()).and_then(|v| v.to_str().ok()) {
            params.push((name.clone(), v.trim().to_string()));
        }
    }

    let route_index = routes::select(config, path, &params)?;
    let route = config.routes.get(route_index)?;
    params.retain(|(k, _)| match &route.params {
        ParamFilter::All => true,
        ParamFilter::Include(names) => names.iter().any(|n| n == k),
        ParamFilter::Exclude(patterns) => !matches_any(patterns, k),
    });
    keep_last_of_repeats(&mut params);
    params.sort();

    let q = query::encode(&params);
    let target = if q.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{q}")
    };
    let mut key = target.clone();
    let mut key_headers = Vec::new();
    for (name, values) in &route.key_headers {
        let sent: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(|v| v.to_ascii_lowercase())
            .collect();
        if let Some(v) = values
            .iter()
            .find(|v| sent.iter().any(|s| s.contains(v.as_str())))
        {
            key.push(' ');
            key.push_str(name);
            key.push('=');
            key.push_str(v);
            key_headers.push((name.clone(), v.clone()));
        }
    }
    Some(Canonical {
        route: route_index,
        hash: pingora::cache::key::hash_key(&key),
        key,
        target,
        headers: key_headers,
    })
}

/// Whether the parameter spelled `raw` matches one of `patterns`, as spelled or as PHP reads
/// it.
fn matches_any(patterns: &[crate::config::ParamPattern], raw: &str) -> bool {
    let php = php_name(raw);
    patterns.iter().any(|p| p.matches(raw) || p.matches(&php))
}

/// Every key a URL stands for: the canonical key, plus one per key-header value (a URL alone
/// cannot say which variant a client asked for).
pub fn keys_for_url(config: &Config, url: &str) -> Option<Vec<String>> {
    let path_and_query = path_and_query(url);
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let c = canonicalize(config, path, query, &http::HeaderMap::new())?;
    let mut keys = vec![c.key.clone()];
    let route = config.routes.get(c.route)?;
    for (name, values) in &route.key_headers {
        let base = keys.clone();
        for v in values {
            keys.extend(base.iter().map(|k| format!("{k} {name}={v}")));
        }
    }
    Some(keys)
}

/// The path and query of a URL given whole (`https://host/p?q`) or as a path (`/p?q`).
pub fn path_and_query(url: &str) -> &str {
    match url.find("://") {
        Some(i) => url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]),
        None => url,
    }
}

/// PHP keeps the last of repeated names, except `name[]` arrays which collect every value.
fn keep_last_of_repeats(params: &mut Vec<(String, String)>) {
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<(String, String)> = Vec::with_capacity(params.len());
    for (k, v) in params.drain(..).rev() {
        if k.ends_with("[]") || seen.insert(k.clone()) {
            kept.push((k, v));
        }
    }
    kept.reverse();
    *params = kept;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_str;

    fn config() -> Config {
        parse_str(include_str!("../../conf/rentcache.yaml"), "t").unwrap()
    }

    fn canon(q: &str, headers: &[(&str, &str)]) -> Canonical {
        let c = config();
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let (path, query) = q.split_once('?').map_or((q, None), |(p, q)| (p, Some(q)));
        canonicalize(&c, path, query, &h).unwrap()
    }

    #[test]
    fn order_token_and_tracking_do_not_matter() {
        let a = canon("/propertyadvertising.php?rob=rent&limit=25&page=1", &[]);
        let b = canon(
            "/propertyadvertising.php?page=1&utm_source=x&token=secret&limit=25&rob=rent&beds=2",
            &[],
        );
        assert_eq!(a.key, b.key);
        assert_eq!(a.key, "/propertyadvertising.php?limit=25&page=1&rob=rent");
        assert_eq!(a.target, a.key);
        assert!(!b.key.contains("secret"));
    }

    #[test]
    fn renamed_tokens_and_tracking_parameters_are_dropped_on_routes_without_include_params() {
        let text = include_str!("../../conf/rentcache.yaml").replace(
            "routes:\n",
            "routes:\n  - {name: all, match: {path: /all}, ttl: 1m}\n  - {name: most, match: {path: /most}, ttl: 1m, exclude_params: [beds]}\n",
        );
        let c = parse_str(&text, "t").unwrap();
        // `/most` excludes beds in any spelling PHP reads as beds; `/all` keeps them.
        for (path, kept) in [
            (
                "/all",
                "/all?%20beds=5&beds.=3&beds%5B%5D=4&page=2&rob=rent",
            ),
            // `beds.` is `beds_` to PHP, another parameter.
            ("/most", "/most?beds.=3&page=2&rob=rent"),
        ] {
            for spelling in [
                "token",
                "TOKEN",
                "%20token",
                "+token",
                "token%00",
                "token%00x",
                "token[]",
                "token[x]",
                "token.",
                "token%20",
                "token[",
                "%20Token[]",
                "utm.source",
                "utm%20source",
                "utm_source[]",
                "%20fbclid",
                "fbclid%00",
                ".",
            ] {
                let query = format!("rob=rent&{spelling}=SECRET&page=2&beds.=3&%20beds=5&beds[]=4");
                let got = canonicalize(&c, path, Some(&query), &HeaderMap::new()).unwrap();
                assert_eq!(got.key, kept, "{path} {spelling}");
                assert!(!got.target.contains("SECRET"));
            }
        }
    }

    #[test]
    fn routes_by_query() {
        let c = config();
        let name = |q: &str| c.routes[canon(q, &[]).route].name.clone();
        assert_eq!(
            name("/propertyadvertising.php?featured=1&noimage=1"),
            "featured"
        );
        assert_eq!(name("/propertyadvertising.php?propref=12"), "property");
        assert_eq!(name("/propertyadvertising.php?propref="), "listings");
        assert_eq!(name("/propertyadvertising.php?onlyarea=1"), "areas");
        assert_eq!(name("/propertyadvertising.php"), "listings");
        assert_eq!(name("/propertymedia.php?filename=a.jpg"), "media");
        assert!(canonicalize(&c, "/nope", None, &HeaderMap::new()).is_none());
    }

    #[test]
    fn header_params_fold_into_the_key() {
        let a = canon("/propertyadvertising.php", &[("propref", "42")]);
        let b = canon("/propertyadvertising.php?propref=42", &[]);
        assert_eq!(a, b);
        // The query wins over a header of the same name.
        let c = canon("/propertyadvertising.php?propref=7", &[("propref", "42")]);
        assert_eq!(c.key, "/propertyadvertising.php?propref=7");
    }

    #[test]
    fn repeated_names_keep_the_last() {
        let a = canon("/propertyadvertising.php?page=2&page=1", &[]);
        assert_eq!(a.key, "/propertyadvertising.php?page=1");
    }

    #[test]
    fn key_headers_are_normalised() {
        let plain = canon("/propertymedia.php?filename=a.jpg", &[("accept", "*/*")]);
        let b64 = canon(
            "/propertymedia.php?filename=a.jpg",
            &[("accept", "Application/Base64")],
        );
        assert_eq!(plain.key, "/propertymedia.php?filename=a.jpg");
        assert_eq!(
            b64.key,
            "/propertymedia.php?filename=a.jpg accept=application/base64"
        );
        assert_eq!(
            b64.headers,
            vec![("accept".to_string(), "application/base64".to_string())]
        );
    }
}

/// Properties over generated requests (`PROPTEST_CASES` sets how many; `bench/fuzz.sh` runs
/// millions).
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// The shipped routes (every one with `include_params`), and the same with two routes
    /// first that forward every parameter (`/all`) or all but some (`/most`).
    static CONFIGS: LazyLock<[Config; 2]> = LazyLock::new(|| {
        let shipped = include_str!("../../conf/rentcache.yaml");
        let open = shipped.replace(
            "routes:\n",
            "routes:\n  - {name: all, match: {path: /all}, ttl: 1m}\n  - {name: most, match: {path_prefix: /most}, ttl: 1m, exclude_params: [beds, \"x_*\"]}\n",
        );
        [shipped, &open].map(|t| crate::config::parse_str(t, "props").expect("a valid config"))
    });

    const PATHS: &[&str] = &[
        "/propertyadvertising.php",
        "/propertymedia.php",
        "/all",
        "/most",
        "/most/x",
        "/nope",
    ];

    /// `text` with each character percent-encoded or not, as `encode` says.
    fn spell(text: &str, encode: &[bool]) -> String {
        text.chars()
            .zip(encode.iter().chain(std::iter::repeat(&false)))
            .map(|(c, &e)| {
                if e {
                    let mut b = [0u8; 4];
                    c.encode_utf8(&mut b)
                        .bytes()
                        .map(|b| format!("%{b:02X}"))
                        .collect()
                } else {
                    c.to_string()
                }
            })
            .collect()
    }

    /// `token` as a client might spell it so that Rentman's PHP still reads it as the token.
    fn token_spelling() -> impl Strategy<Value = String> {
        (
            prop::sample::select(vec!["", " ", "+", "%20", "  ", "+%20"]),
            prop::collection::vec((any::<bool>(), any::<bool>()), 5),
            prop::sample::select(vec![
                "", ".", " ", "+", "%20", "%2E", "[", "%5B", "[]", "%5B%5D", "[x]", "[0][1]",
                "%00", "%00tail", "\0", "_", "[%20]", "%5Bk%5D", "[]%00",
            ]),
        )
            .prop_map(|(lead, chars, tail)| {
                let mut name = lead.to_string();
                for (c, (upper, encode)) in "token".chars().zip(chars) {
                    let c = if upper { c.to_ascii_uppercase() } else { c };
                    name.push_str(&spell(&c.to_string(), &[encode]));
                }
                name.push_str(tail);
                name
            })
    }

    /// Anything a query component might hold: Rentman's names, tracking parameters, PHP
    /// array and mangled spellings, and arbitrary text, raw or percent-encoded.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "rob",
                "featured",
                "noimage",
                "onlyarea",
                "propref",
                "limit",
                "page",
                "filename",
                "beds",
                "beds[]",
                "x_y",
                "utm_source",
                "utm.source",
                "fbclid",
                "_",
                ".",
                "1",
                "0",
                "rent",
                "sale",
                "",
            ])
            .prop_map(String::from),
            "[ -~]{0,10}",
            ".{0,6}",
            ("\\PC{0,8}", prop::collection::vec(any::<bool>(), 0..8))
                .prop_map(|(t, e)| spell(&t, &e)),
        ]
    }

    fn query() -> impl Strategy<Value = String> {
        prop::collection::vec((component(), component(), any::<bool>()), 0..8).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v, bare)| if *bare { k.clone() } else { format!("{k}={v}") })
                .collect::<Vec<_>>()
                .join("&")
        })
    }

    proptest! {
        /// Canonicalising a request's canonical target again gives the same key, target and
        /// route: the key is a fixed point, so what is fetched is what is keyed.
        #[test]
        fn canonical_form_is_a_fixed_point(
            which in 0usize..2,
            path in prop::sample::select(PATHS),
            q in query(),
        ) {
            let config = &CONFIGS[which];
            let h = HeaderMap::new();
            if let Some(c) = canonicalize(config, path, Some(&q), &h) {
                let (p2, q2) = c.target.split_once('?').map_or((c.target.as_str(), None), |(p, q)| (p, Some(q)));
                let again = canonicalize(config, p2, q2, &h);
                prop_assert_eq!(again.as_ref(), Some(&c), "from {}?{}", path, q);
            }
        }

        /// A client's token never survives into a key or an upstream target, whatever its
        /// spelling (case, percent-encoding, PHP's renamings) and wherever it sits.
        #[test]
        fn the_token_never_survives(
            which in 0usize..2,
            path in prop::sample::select(PATHS),
            before in query(),
            after in query(),
            name in token_spelling(),
            secret in "[0-9]{12}",
        ) {
            let config = &CONFIGS[which];
            let secret = format!("Tk{secret}");
            let q = format!("{before}&{name}={secret}&{after}");
            if let Some(c) = canonicalize(config, path, Some(&q), &HeaderMap::new()) {
                let elsewhere = before.contains(&secret) || after.contains(&secret);
                prop_assert!(elsewhere || !c.key.contains(&secret), "{} kept in {}", q, c.key);
                let forwarded = query::parse(c.target.split_once('?').map(|(_, q)| q));
                for (k, _) in forwarded {
                    prop_assert!(!super::is_token(&k, "token"), "{:?} forwarded from {}", k, q);
                }
            }
        }
    }
}

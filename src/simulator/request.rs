//! A request as the simulator sees it, independent of Pingora so the logic can be unit tested,
//! and the reading of Rentman's parameters from it.
//!
//! Rentman takes every parameter either from the query string or from a request header of
//! the same name; the query wins when both are present. Parameters with an empty value count
//! as absent.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use super::dataset::{ListQuery, PropSel, Rob};

/// The placeholder that replaces a token wherever the simulator reports a request.
pub const REDACTED: &str = "REDACTED";

#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// First value of a header (names are compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A parameter from the query, else from a header of the same name; empty means absent.
    pub fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        query_pairs(self.query())
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v)
            .or_else(|| {
                self.header(name)
                    .filter(|v| !v.trim().is_empty())
                    .map(Cow::Borrowed)
            })
    }

    /// The target with the value of any `token` query parameter replaced by `REDACTED`.
    pub fn redacted_target(&self) -> String {
        let Some((path, query)) = self.target.split_once('?') else {
            return self.target.clone();
        };
        let parts: Vec<Cow<'_, str>> = query
            .split('&')
            .map(|part| {
                let name = part.split_once('=').map_or(part, |(n, _)| n);
                if is_token_name(&decode(name)) {
                    Cow::Owned(format!("{name}={REDACTED}"))
                } else {
                    Cow::Borrowed(part)
                }
            })
            .collect();
        format!("{path}?{}", parts.join("&"))
    }

    /// Headers as reported by the stats, the token's value replaced by `REDACTED`; repeated
    /// headers are joined with ", ".
    pub fn redacted_headers(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            let v = if is_token_name(k) {
                REDACTED
            } else {
                v.as_str()
            };
            if let Some((_, existing)) = out.iter_mut().find(|(ek, _)| ek == k) {
                existing.push_str(", ");
                existing.push_str(v);
            } else {
                out.push((k.clone(), v.to_string()));
            }
        }
        out
    }

    /// The parameters of `propertyadvertising.php`.
    pub fn list_query(&self) -> ListQuery {
        ListQuery {
            rob: self
                .param("rob")
                .and_then(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "rent" => Some(Rob::Rent),
                    "sale" => Some(Rob::Sale),
                    _ => None,
                }),
            featured: self.flag("featured"),
            noimage: self.flag("noimage"),
            onlyarea: self.flag("onlyarea"),
            propref: self.propref(),
            limit: self.number("limit").filter(|&n| n > 0),
            page: self.number("page"),
        }
    }

    /// The parameters of `propertymedia.php`.
    pub fn media_query(&self) -> MediaQuery {
        MediaQuery {
            propref: self.propref(),
            filename: self.param("filename").map(|v| v.trim().to_string()),
            bare_base64: self
                .header("accept")
                .is_some_and(|a| a.to_ascii_lowercase().contains("application/base64")),
        }
    }

    fn flag(&self, name: &str) -> bool {
        self.param(name).is_some_and(|v| {
            let v = v.trim();
            match v.parse::<i64>() {
                Ok(n) => n != 0,
                Err(_) => matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on"),
            }
        })
    }

    fn number(&self, name: &str) -> Option<usize> {
        self.param(name).and_then(|v| v.trim().parse().ok())
    }

    fn propref(&self) -> Option<PropSel> {
        self.param("propref").map(|v| {
            v.trim()
                .parse::<u32>()
                .map_or(PropSel::NoMatch, PropSel::Id)
        })
    }
}

/// The parameters of `propertymedia.php` that change its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct MediaQuery {
    pub propref: Option<PropSel>,
    pub filename: Option<String>,
    /// `Accept: application/base64` (only meaningful with `filename`).
    pub bare_base64: bool,
}

/// Where a token came from, for the stats' `recent` entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenState {
    /// The simulator accepts any token (none configured).
    Any,
    Ok,
    Missing,
    Wrong,
}

impl TokenState {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenState::Any => "any",
            TokenState::Ok => "ok",
            TokenState::Missing => "missing",
            TokenState::Wrong => "wrong",
        }
    }

    pub fn check(req: &Request, expected: Option<&str>) -> TokenState {
        let Some(expected) = expected else {
            return TokenState::Any;
        };
        match req.param("token") {
            None => TokenState::Missing,
            Some(t) if t == expected => TokenState::Ok,
            Some(_) => TokenState::Wrong,
        }
    }
}

fn is_token_name(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("token")
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn decode(s: &str) -> Cow<'_, str> {
    if s.contains('+') {
        Cow::Owned(
            percent_decode_str(&s.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_decode_str(s).decode_utf8_lossy()
    }
}

fn query_pairs(query: &str) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    query.split('&').filter(|p| !p.is_empty()).map(|part| {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        (decode(k), decode(v))
    })
}

#[cfg(test)]
impl Request {
    /// A GET as the server would have parsed it (for unit tests).
    pub(crate) fn get(target: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: "GET".into(),
            target: target.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, headers: &[(&str, &str)]) -> Request {
        Request::get(target, headers)
    }

    #[test]
    fn query_wins_over_headers_and_empty_is_absent() {
        let r = req(
            "/p.php?rob=sale&featured=&limit=5",
            &[("rob", "rent"), ("featured", "1"), ("page", "2")],
        );
        let q = r.list_query();
        assert_eq!(q.rob, Some(Rob::Sale));
        assert!(q.featured);
        assert_eq!((q.limit, q.page), (Some(5), Some(2)));
        assert!(!q.noimage && !q.onlyarea && q.propref.is_none());
    }

    #[test]
    fn values_are_decoded_and_unknown_params_ignored() {
        let r = req("/p.php?beds=2&propref=%2042&filename=A%2FB+C.jpg", &[]);
        assert_eq!(
            r.list_query(),
            ListQuery {
                propref: Some(PropSel::Id(42)),
                ..Default::default()
            }
        );
        assert_eq!(r.media_query().filename.as_deref(), Some("A/B C.jpg"));
        assert_eq!(
            req("/p?propref=abc", &[]).list_query().propref,
            Some(PropSel::NoMatch)
        );
        assert_eq!(req("/p?limit=0&page=x", &[]).list_query().limit, None);
        assert!(req("/p?noimage=true", &[]).list_query().noimage);
        assert!(!req("/p?noimage=0", &[]).list_query().noimage);
    }

    #[test]
    fn token_from_query_or_header() {
        let secret = Some("s3cret");
        assert_eq!(
            TokenState::check(&req("/p?token=s3cret", &[]), secret),
            TokenState::Ok
        );
        assert_eq!(
            TokenState::check(&req("/p", &[("token", "s3cret")]), secret),
            TokenState::Ok
        );
        assert_eq!(
            TokenState::check(&req("/p?token=bad", &[("token", "s3cret")]), secret),
            TokenState::Wrong
        );
        assert_eq!(
            TokenState::check(&req("/p", &[]), secret),
            TokenState::Missing
        );
        assert_eq!(
            TokenState::check(&req("/p?token=x", &[]), None),
            TokenState::Any
        );
    }

    #[test]
    fn redaction() {
        let r = req(
            "/p.php?a=1&token=s3cret&%74oken=s3cret&b&Token=x",
            &[("token", "s3cret"), ("x-a", "1"), ("x-a", "2")],
        );
        let t = r.redacted_target();
        assert_eq!(
            t,
            "/p.php?a=1&token=REDACTED&%74oken=REDACTED&b&Token=REDACTED"
        );
        assert!(!t.contains("s3cret"));
        assert_eq!(
            r.redacted_headers(),
            vec![
                ("token".to_string(), "REDACTED".to_string()),
                ("x-a".to_string(), "1, 2".to_string())
            ]
        );
        assert_eq!(req("/p.php", &[]).redacted_target(), "/p.php");
    }

    #[test]
    fn bare_base64_accept() {
        assert!(
            req("/m?filename=a", &[("accept", "Application/Base64")])
                .media_query()
                .bare_base64
        );
        assert!(
            !req("/m?filename=a", &[("accept", "application/json")])
                .media_query()
                .bare_base64
        );
    }
}

//! Query strings: decoding into pairs and the one canonical encoding used for keys and for
//! the upstream request.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters is escaped, so one logical query has one
/// spelling.
const ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_decode_str(&plus_as_space)
        .decode_utf8_lossy()
        .into_owned()
}

/// Decoded `(name, value)` pairs in request order; `a` alone reads as `a=""`.
pub fn parse(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw else { return Vec::new() };
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// One query value, escaped the canonical way.
pub fn encode_component(value: &str) -> String {
    utf8_percent_encode(value, ESCAPE).to_string()
}

pub fn encode(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.extend(utf8_percent_encode(k, ESCAPE));
        out.push('=');
        out.extend(utf8_percent_encode(v, ESCAPE));
    }
    out
}

/// The value PHP would see for `name`: the last occurrence.
pub fn last<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_encode() {
        let p = parse(Some("a=1&b=hello+world&c&d=%2Fx%20y&&=z"));
        assert_eq!(
            p,
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "hello world".into()),
                ("c".into(), "".into()),
                ("d".into(), "/x y".into()),
            ]
        );
        assert_eq!(encode(&p), "a=1&b=hello%20world&c=&d=%2Fx%20y");
        assert_eq!(last(&parse(Some("a=1&a=2")), "a"), Some("2"));
    }
}

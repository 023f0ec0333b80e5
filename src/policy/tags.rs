//! Tags group cache entries for invalidation: `route:NAME` for every entry of a route, and
//! `property:N` for every property a JSON body mentions, so that purging one property
//! invalidates its detail, its media and every cached list that contains it. Dependency rules
//! from the config widen a purge (a property change also refreshes the featured list, say).

use bytes::Bytes;
use serde::Deserialize;

use super::body::Chunks;
use crate::config::Dependency;

/// Rules are followed at most this deep (a rule set may loop).
const MAX_DEPTH: usize = 8;

pub fn route_tag(route: &str) -> String {
    format!("route:{route}")
}

/// A tag naming one canonical key (its hash's first 8 bytes in hex): outer caches hold one
/// copy per URL a client sent, and purging them by this tag reaches every URL of the key.
pub fn key_tag(hash: &[u8; 16]) -> String {
    let mut s = String::with_capacity(20);
    s.push_str("key:");
    for b in hash.iter().take(8) {
        for nibble in [b >> 4, b & 15] {
            s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    s
}

pub fn property_tag(propref: &str) -> String {
    format!("property:{propref}")
}

/// One element of a Rentman array: only `propref` matters here; everything else is skipped
/// without being kept.
#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    propref: Option<serde_json::Value>,
}

/// `property:N` for each distinct `propref` in a JSON array body (records or media items).
pub fn body_tags(chunks: &[Bytes]) -> Vec<String> {
    let items: Vec<Item> = match serde_json::from_reader(Chunks::new(chunks)) {
        Ok(items) => items,
        Err(_) => return Vec::new(),
    };
    let mut tags: Vec<String> = items
        .into_iter()
        .filter_map(|i| match i.propref? {
            serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
        .map(|p| property_tag(&p))
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Whether a body is worth reading for `propref`s although its route does not promise JSON
/// (media answers are JSON arrays unless a client asked for bare base64).
pub fn looks_like_json_array(chunks: &[Bytes]) -> bool {
    chunks
        .iter()
        .flat_map(|c| c.iter())
        .find(|b| !b.is_ascii_whitespace())
        == Some(&b'[')
}

/// `tags` plus every tag the dependency rules add, transitively, without repeats.
pub fn expand(tags: &[String], rules: &[Dependency]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut frontier: Vec<String> = tags.to_vec();
    for _ in 0..MAX_DEPTH {
        let mut next = Vec::new();
        for t in frontier {
            if out.contains(&t) {
                continue;
            }
            for rule in rules.iter().filter(|r| r.when.is_match(&t)) {
                next.extend(rule.purge.iter().cloned());
            }
            out.push(t);
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(when: &str, purge: &[&str]) -> Dependency {
        Dependency {
            when: crate::glob::compile(when).unwrap(),
            purge: purge.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn media_bodies_are_read_for_tags_bare_base64_is_not() {
        let media = [
            Bytes::from_static(b" \n"),
            Bytes::from_static(b"[{\"propref\":\"42\"}]"),
        ];
        assert!(looks_like_json_array(&media));
        assert_eq!(body_tags(&media), vec!["property:42".to_string()]);
        assert!(!looks_like_json_array(&[Bytes::from_static(
            b"/9j/4AAQSkZJRg=="
        )]));
        assert!(!looks_like_json_array(&[]));
    }

    #[test]
    fn tags_from_bodies() {
        let body = vec![
            Bytes::from_static(br#"[{"propref":"12","x":{"y":[1,2]}},{"propref":"7"},"#),
            Bytes::from_static(br#"{"propref":"12"},{"nope":1},{"propref":3}]"#),
        ];
        assert_eq!(
            body_tags(&body),
            vec!["property:12", "property:3", "property:7"]
        );
        assert!(body_tags(&[Bytes::from_static(b"not json")]).is_empty());
    }

    #[test]
    fn expansion_follows_rules_once_each() {
        let rules = [
            rule("property:*", &["route:featured", "route:listings"]),
            rule("route:listings", &["route:areas", "property:1"]),
        ];
        let got = expand(&["property:9".to_string()], &rules);
        assert_eq!(
            got,
            vec![
                "property:9",
                "route:featured",
                "route:listings",
                "route:areas",
                "property:1"
            ]
        );
    }
}

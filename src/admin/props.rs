//! The admin API's request bodies on generated input: any bytes, any JSON, are read into a
//! request or refused with a 4xx, never a panic (`PROPTEST_CASES` sets how many;
//! `bench/fuzz.sh` runs millions).

use std::sync::LazyLock;

use proptest::prelude::*;
use serde_json::{Map, Value};

use super::purge::{self, Target};
use super::{parse_json, read_warm};
use crate::config::Config;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    crate::config::parse_str(include_str!("../../conf/rentcache.yaml"), "props")
        .expect("the shipped config is valid")
});

/// Strings shaped like what operators send, and arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "/propertyadvertising.php?featured=1&noimage=1",
            "/propertymedia.php?filename=a.jpg",
            "https://x/propertyadvertising.php?propref=4&token=t",
            "http://",
            "://",
            "/",
            "",
            "property:*",
            "route:featured",
            "details",
            "[oops",
        ])
        .prop_map(String::from),
        "/[ -~]{0,40}",
        "[a-z]{1,5}://[ -~]{0,30}",
        "[*?\\[{}\\]a-z/]{0,600}",
        "\\PC{0,40}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "url", "key", "pattern", "tag", "soft", "urls", "follow"
        ])
        .prop_map(String::from),
        "\\PC{0,8}",
    ];
    leaf.prop_recursive(3, 48, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn client_error(status: http::StatusCode) -> bool {
    status.is_client_error()
}

proptest! {
    #[test]
    fn any_body_bytes_are_json_or_400(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = parse_json(&bytes) {
            prop_assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn any_purge_body_is_a_purge_or_a_4xx(body in json()) {
        match purge::read(&CONFIG, &body) {
            Ok((Target::Keys { keys, .. }, _)) => prop_assert!(!keys.is_empty()),
            Ok((Target::Pattern(p), _)) => prop_assert!(crate::glob::compile(&p).is_ok()),
            Ok((Target::Tags(tags), _)) => prop_assert!(!tags.is_empty()),
            Err(e) => prop_assert!(client_error(e.status), "{}", e.status),
        }
    }

    #[test]
    fn any_warm_body_is_a_job_or_400(body in json()) {
        match read_warm(&CONFIG, &body) {
            Ok((urls, _)) => prop_assert!(!urls.is_empty() && urls.iter().all(|u| u.starts_with('/'))),
            Err(e) => prop_assert_eq!(e.status, http::StatusCode::BAD_REQUEST),
        }
    }

    /// The selectors themselves, without the JSON around them.
    #[test]
    fn any_selector_value_is_a_purge_or_a_4xx(
        field in prop::sample::select(vec!["url", "key", "pattern", "tag"]),
        value in text(),
        soft in any::<bool>(),
    ) {
        let body = serde_json::json!({ field: value, "soft": soft });
        match purge::read(&CONFIG, &body) {
            Ok((_, s)) => prop_assert_eq!(s, soft),
            Err(e) => prop_assert!(client_error(e.status), "{}", e.status),
        }
    }
}

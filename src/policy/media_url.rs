//! `/media/{file}` and `/media/{variant}/{file}`: what such a path asks for, the format a
//! client takes (`Accept`), and the cache key of each answer. Pure functions.

use http::HeaderMap;
use pingora::cache::key::HashBinary;

use super::query::encode_component;
use crate::config::{Config, Variant};

/// Where media files are served.
pub const PREFIX: &str = "/media/";
/// Where Rentman serves them (as base64 in JSON).
pub const SOURCE_PATH: &str = "/propertymedia.php";

/// The encodings a variant is served in, as negotiated before the original's type is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// For clients without WebP: JPEG of a JPEG photo, PNG of a PNG original (the key's
    /// `format=jpeg` names this choice, not the bytes).
    Jpeg,
    Webp,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Webp => "image/webp",
        }
    }

    /// Its name in keys.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Webp => "webp",
        }
    }
}

/// What a `/media/...` request asks for, with its cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaTarget {
    /// The file's name as Rentman knows it (percent-decoded).
    pub filename: String,
    /// A variant, and the format this client takes it in; `None`: the original file.
    pub variant: Option<(Variant, Format)>,
    /// `/media/{file}`, or `/media/{variant}/{file} format=webp`.
    pub key: String,
    pub hash: HashBinary,
}

impl MediaTarget {
    /// The query that asks Rentman for the file (`filename=...`).
    pub fn source_query(&self) -> String {
        format!("filename={}", encode_component(&self.filename))
    }
}

/// Why a `/media/...` path asks for nothing that can be served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaPathError {
    /// No such variant; the known ones are named.
    UnknownVariant { name: String, known: Vec<String> },
    /// Not a file name (empty, a path, control characters, too long, bad encoding).
    BadName(String),
}

impl MediaPathError {
    pub fn message(&self) -> String {
        match self {
            MediaPathError::UnknownVariant { name, known } => format!(
                "no variant `{name}`; the variants are: {} (or /media/FILE for the original)",
                known.join(", ")
            ),
            MediaPathError::BadName(why) => why.clone(),
        }
    }
}

/// The longest file name taken (Rentman's are GUIDs, about 40 characters).
const MAX_NAME: usize = 255;

/// Whether `path` is under `/media/`.
pub fn is_media(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// What `path` (under `/media/`) asks for, for a client that sends `headers`.
pub fn target(
    config: &Config,
    path: &str,
    headers: &HeaderMap,
) -> Result<MediaTarget, MediaPathError> {
    let rest = path.strip_prefix(PREFIX).unwrap_or(path);
    let (variant, raw_name) = match rest.split_once('/') {
        Some((v, name)) => (Some(v), name),
        None => (None, rest),
    };
    let filename = file_name(raw_name)?;
    let canonical_name = encode_component(&filename);
    let variant = match variant {
        None => None,
        Some(name) => {
            let Some(v) = config.media.variant(name) else {
                return Err(MediaPathError::UnknownVariant {
                    name: name.chars().take(64).collect(),
                    known: config
                        .media
                        .variants
                        .iter()
                        .map(|v| v.name.clone())
                        .collect(),
                });
            };
            let format = negotiate(headers, config.media.webp);
            Some((v.clone(), format))
        }
    };
    let key = match &variant {
        None => format!("{PREFIX}{canonical_name}"),
        Some((v, f)) => format!("{PREFIX}{}/{canonical_name} format={}", v.name, f.name()),
    };
    let hash = pingora::cache::key::hash_key(&key);
    Ok(MediaTarget {
        filename,
        variant,
        key,
        hash,
    })
}

/// The keys a purge of the `/media/...` path `path` covers. A variant's path: that variant
/// in every format. A file's path: the file, every variant of it in every format, and the
/// JSON answer it is decoded from (else the next request would decode the same bytes
/// again instead of asking Rentman).
pub fn purge_keys(config: &Config, path: &str) -> Result<Vec<String>, MediaPathError> {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    let t = target(config, path, &HeaderMap::new())?;
    let name = encode_component(&t.filename);
    let formats = [Format::Jpeg, Format::Webp];
    let variant_keys = |v: &Variant| {
        formats
            .iter()
            .map(|f| format!("{PREFIX}{}/{name} format={}", v.name, f.name()))
            .collect::<Vec<_>>()
    };
    Ok(match &t.variant {
        Some((v, _)) => variant_keys(v),
        None => {
            let mut keys = vec![t.key.clone()];
            for v in &config.media.variants {
                keys.extend(variant_keys(v));
            }
            let source = format!("{SOURCE_PATH}?{}", t.source_query());
            keys.extend(super::key::keys_for_url(config, &source).unwrap_or_default());
            keys
        }
    })
}

/// The original file a variant is made from.
pub fn original_of(t: &MediaTarget) -> MediaTarget {
    let key = format!("{PREFIX}{}", encode_component(&t.filename));
    MediaTarget {
        filename: t.filename.clone(),
        variant: None,
        hash: pingora::cache::key::hash_key(&key),
        key,
    }
}

/// A path segment as a file name.
fn file_name(raw: &str) -> Result<String, MediaPathError> {
    let bad = |why: &str| Err(MediaPathError::BadName(why.to_string()));
    let Ok(name) = percent_encoding::percent_decode_str(raw).decode_utf8() else {
        return bad("the file name is not UTF-8");
    };
    if name.is_empty() || name == "." || name == ".." {
        return bad("name a file: /media/FILE or /media/VARIANT/FILE");
    }
    if name.len() > MAX_NAME {
        return bad("the file name is too long");
    }
    if name.contains(['/', '\\']) || name.chars().any(char::is_control) {
        return bad("a file name has no slashes or control characters");
    }
    Ok(name.into_owned())
}

/// WebP when the client's `Accept` lists it (with a quality above 0) and it is enabled;
/// JPEG otherwise (`*/*` and `image/*` do not promise WebP: browsers that take it say so).
pub fn negotiate(headers: &HeaderMap, webp: bool) -> Format {
    if !webp {
        return Format::Jpeg;
    }
    let takes_webp = headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let kind = parts.next().unwrap_or("").trim();
            kind.eq_ignore_ascii_case("image/webp")
                && parts.all(|p| {
                    let p = p.trim();
                    match p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                        Some(q) => q.trim().parse::<f32>().is_ok_and(|q| q > 0.0),
                        None => true,
                    }
                })
        });
    if takes_webp {
        Format::Webp
    } else {
        Format::Jpeg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::header::ACCEPT, accept.parse().unwrap());
        h
    }

    #[test]
    fn negotiates_webp_only_when_listed() {
        let chrome = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
        assert_eq!(negotiate(&headers(chrome), true), Format::Webp);
        assert_eq!(negotiate(&headers(chrome), false), Format::Jpeg);
        assert_eq!(negotiate(&headers("*/*"), true), Format::Jpeg);
        assert_eq!(negotiate(&headers("image/*"), true), Format::Jpeg);
        assert_eq!(negotiate(&headers("image/webp;q=0"), true), Format::Jpeg);
        assert_eq!(negotiate(&headers("image/WebP; q=0.5"), true), Format::Webp);
        assert_eq!(negotiate(&HeaderMap::new(), true), Format::Jpeg);
    }

    #[test]
    fn targets_and_keys() {
        let config =
            crate::config::parse_str("routes: [{name: a, match: {path: /a}, ttl: 1}]", "t")
                .unwrap();
        let t = target(&config, "/media/7EFC9B67-AB.jpg", &HeaderMap::new()).unwrap();
        assert_eq!(t.key, "/media/7EFC9B67-AB.jpg");
        assert_eq!(t.variant, None);
        assert_eq!(t.source_query(), "filename=7EFC9B67-AB.jpg");
        let t = target(&config, "/media/card/A%20B.jpg", &headers("image/webp")).unwrap();
        assert_eq!(t.filename, "A B.jpg");
        assert_eq!(t.key, "/media/card/A%20B.jpg format=webp");
        assert_eq!(t.variant.as_ref().map(|(v, _)| v.width), Some(640));
        let jpeg = target(&config, "/media/card/A%20B.jpg", &HeaderMap::new()).unwrap();
        assert_ne!(jpeg.hash, t.hash);
        let original = target(&config, "/media/A%20B.jpg", &HeaderMap::new()).unwrap();
        assert_eq!(original_of(&t), original);
        match target(&config, "/media/huge/x.jpg", &HeaderMap::new()) {
            Err(MediaPathError::UnknownVariant { name, known }) => {
                assert_eq!(name, "huge");
                assert_eq!(known, ["card", "hero", "thumbnail"]);
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "/media/",
            "/media/card/",
            "/media/a/b/c",
            "/media/%2e%2e",
            "/media/a%00",
        ] {
            assert!(target(&config, bad, &HeaderMap::new()).is_err(), "{bad}");
        }
    }
}

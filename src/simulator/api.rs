//! The answers of the two API endpoints, and a bounded cache of them.
//!
//! Building a list with images means making and base64-encoding megabytes of JPEG, so
//! answers are cached by their normalised parameters (parameters the API ignores do not split
//! the cache) and built once even when many identical requests arrive together. This keeps
//! the simulator cheap enough to be hammered by a benchmark.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::dataset::{Dataset, ListQuery, PropSel, BASE_MODIFIED};
use super::media::{base64, base64_wrapped, media_bytes, media_item};
use super::php_json;
use super::request::MediaQuery;

pub const JSON: &str = "application/json";
pub const BASE64: &str = "application/base64";

/// A built answer of an API endpoint.
#[derive(Debug)]
pub struct Body {
    pub bytes: Bytes,
    pub content_type: &'static str,
    /// Strong validator (quoted): a hash of the bytes.
    pub etag: String,
    /// Unix seconds of the newest change among the records it contains.
    pub last_modified: u64,
}

impl Body {
    fn new(bytes: Vec<u8>, content_type: &'static str, last_modified: u64) -> Body {
        let etag = format!("\"{:016x}\"", fnv1a(&bytes));
        Body {
            bytes: Bytes::from(bytes),
            content_type,
            etag,
            last_modified,
        }
    }
}

/// FNV-1a, 64 bit: stable across processes and Rust versions, unlike std's hasher.
fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What an answer is built from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    List(ListQuery),
    Media(MediaQuery),
}

impl Query {
    /// `photo1binary` fields the answer will hold; cheap, so the latency can be known before
    /// the body is built.
    pub fn binaries(&self, ds: &Dataset) -> usize {
        match self {
            Query::List(q) if !q.noimage && !q.onlyarea => ds.select(q).len(),
            _ => 0,
        }
    }

    pub fn build(&self, ds: &Dataset) -> Body {
        match self {
            Query::List(q) => list_body(ds, q),
            Query::Media(q) => media_body(ds, q),
        }
    }
}

/// `propertyadvertising.php`.
pub fn list_body(ds: &Dataset, q: &ListQuery) -> Body {
    let props = ds.select(q);
    let mut out = Vec::with_capacity(
        if q.noimage || q.onlyarea {
            4096
        } else {
            200_000
        } * props.len().max(1),
    );
    out.push(b'[');
    for (i, p) in props.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if q.onlyarea {
            php_json::write(&mut out, &p.area_record());
        } else if q.noimage {
            php_json::write(&mut out, &p.record(None, ds.int_flags));
        } else {
            let binary = p
                .first_photo()
                .map(|m| base64(&media_bytes(p, m)))
                .unwrap_or_default();
            php_json::write(&mut out, &p.record(Some(&binary), ds.int_flags));
        }
    }
    out.push(b']');
    let last_modified = props
        .iter()
        .map(|p| p.modified)
        .max()
        .unwrap_or(BASE_MODIFIED);
    Body::new(out, JSON, last_modified)
}

/// `propertymedia.php`.
pub fn media_body(ds: &Dataset, q: &MediaQuery) -> Body {
    let items: Vec<_> = match (&q.filename, q.propref) {
        (Some(f), sel) => ds
            .media_by_filename(f)
            .filter(|(p, _)| sel.is_none() || sel == Some(PropSel::Id(p.propref)))
            .into_iter()
            .collect(),
        (None, Some(PropSel::Id(id))) => ds
            .get(id)
            .map(|p| p.media.iter().map(|m| (p, m)).collect())
            .unwrap_or_default(),
        (None, _) => Vec::new(),
    };
    if q.bare_base64 && q.filename.is_some() {
        let text = items
            .first()
            .map(|(p, m)| base64_wrapped(&media_bytes(p, m)))
            .unwrap_or_default();
        return Body::new(text.into_bytes(), BASE64, BASE_MODIFIED);
    }
    let mut out = Vec::with_capacity(
        items
            .iter()
            .map(|(_, m)| m.size * 14 / 10 + 200)
            .sum::<usize>()
            + 2,
    );
    out.push(b'[');
    for (i, (p, m)) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let data = base64_wrapped(&media_bytes(p, m));
        php_json::write(&mut out, &media_item(p, m, &data));
    }
    out.push(b']');
    Body::new(out, JSON, BASE_MODIFIED)
}

type Slot = Arc<OnceCell<Arc<Body>>>;

/// Built answers by (data generation, query), evicted oldest first past a byte budget.
pub struct BodyCache {
    budget: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    slots: HashMap<(u64, Query), Slot>,
    /// Filled slots in the order they were filled, with their sizes.
    order: VecDeque<((u64, Query), usize)>,
    bytes: usize,
}

impl BodyCache {
    pub fn new(budget: usize) -> BodyCache {
        BodyCache {
            budget,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The answer to `query` on `ds`, built on a blocking thread if not cached. Concurrent
    /// callers with the same query wait for one build.
    pub async fn get(&self, ds: &Arc<Dataset>, query: &Query) -> Arc<Body> {
        let key = (ds.generation, query.clone());
        let slot = self
            .inner
            .lock()
            .slots
            .entry(key.clone())
            .or_default()
            .clone();
        slot.get_or_init(|| async {
            let (ds, q) = (ds.clone(), query.clone());
            // Building can take a while (megabytes of base64): keep it off the I/O threads so
            // other connections' latencies stay true.
            let body = match tokio::task::spawn_blocking(move || Arc::new(q.build(&ds))).await {
                Ok(b) => b,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            };
            self.filled(key, body.bytes.len());
            body
        })
        .await
        .clone()
    }

    fn filled(&self, key: (u64, Query), size: usize) {
        let mut c = self.inner.lock();
        c.order.push_back((key, size));
        c.bytes += size;
        while c.bytes > self.budget && c.order.len() > 1 {
            let (old, n) = c.order.pop_front().expect("non-empty");
            c.bytes -= n;
            c.slots.remove(&old);
        }
    }

    /// Bytes and answers held, for the stats.
    pub fn usage(&self) -> (usize, usize) {
        let c = self.inner.lock();
        (c.bytes, c.order.len())
    }
}

#[cfg(test)]
mod tests {
    use super::super::dataset::Rob;
    use super::*;
    use base64::Engine as _;

    fn json(b: &Body) -> serde_json::Value {
        serde_json::from_slice(&b.bytes).unwrap()
    }

    #[test]
    fn list_with_images_holds_photo1binary_of_the_first_photo() {
        let ds = Dataset::generate(1, 12, false);
        let q = ListQuery {
            featured: true,
            ..Default::default()
        };
        let body = list_body(&ds, &q);
        let v = json(&body);
        let arr = v.as_array().unwrap();
        assert_eq!(
            arr.len(),
            ds.properties.iter().filter(|p| p.featured).count()
        );
        assert_eq!(Query::List(q.clone()).binaries(&ds), arr.len());
        for rec in arr {
            let p = ds
                .get(rec["propref"].as_str().unwrap().parse().unwrap())
                .unwrap();
            let b64 = rec["photo1binary"].as_str().unwrap();
            match p.first_photo() {
                Some(m) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap();
                    assert_eq!(bytes, media_bytes(p, m));
                    assert_eq!(&bytes[..2], &[0xFF, 0xD8]);
                }
                None => assert_eq!(b64, ""),
            }
        }
        // PHP escaping of the raw bytes: slashes escaped, pound sign as \u00a3, no raw UTF-8.
        let text = std::str::from_utf8(&body.bytes).unwrap();
        assert!(text.contains("\\/") && text.contains("\\u00a3") && text.is_ascii());
    }

    #[test]
    fn onlyarea_noimage_and_propref_shapes() {
        let ds = Dataset::generate(1, 30, false);
        let v = json(&list_body(
            &ds,
            &ListQuery {
                onlyarea: true,
                ..Default::default()
            },
        ));
        let first = v[0].as_object().unwrap();
        let mut keys: Vec<&String> = first.keys().collect();
        keys.sort();
        assert_eq!(keys, vec!["area", "postcode", "propref"]);
        assert_eq!(v.as_array().unwrap().len(), 30);
        let v = json(&list_body(
            &ds,
            &ListQuery {
                noimage: true,
                rob: Some(Rob::Sale),
                ..Default::default()
            },
        ));
        assert!(v
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.get("photo1binary").is_none()));
        assert!(v
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["rentorbuy"] == "2" || r["rentorbuy"] == "3"));
        let one = json(&list_body(
            &ds,
            &ListQuery {
                propref: Some(PropSel::Id(4)),
                noimage: true,
                ..Default::default()
            },
        ));
        assert_eq!(one.as_array().unwrap().len(), 1);
        assert_eq!(one[0]["propref"], "4");
        let none = list_body(
            &ds,
            &ListQuery {
                propref: Some(PropSel::Id(999)),
                ..Default::default()
            },
        );
        assert_eq!(&none.bytes[..], b"[]");
    }

    #[test]
    fn media_by_propref_filename_and_bare_base64() {
        let ds = Dataset::generate(1, 30, false);
        let p = ds.properties.iter().find(|p| p.media.len() >= 3).unwrap();
        let all = json(&media_body(
            &ds,
            &MediaQuery {
                propref: Some(PropSel::Id(p.propref)),
                ..Default::default()
            },
        ));
        let arr = all.as_array().unwrap();
        assert_eq!(arr.len(), p.media.len());
        for (item, m) in arr.iter().zip(&p.media) {
            assert_eq!(item["filename"], m.filename.as_str());
            assert_eq!(item["imgorder"], m.imgorder.to_string());
            assert!(item["caption"].is_null());
        }
        let m = &p.media[1];
        let q = MediaQuery {
            filename: Some(m.filename.clone()),
            ..Default::default()
        };
        let one = media_body(&ds, &q);
        let v = json(&one);
        assert_eq!(v.as_array().unwrap().len(), 1);
        let data = v[0]["base64data"].as_str().unwrap();
        assert!(data.contains('\n'));
        let bare = media_body(
            &ds,
            &MediaQuery {
                bare_base64: true,
                ..q.clone()
            },
        );
        assert_eq!(bare.content_type, BASE64);
        assert_eq!(std::str::from_utf8(&bare.bytes).unwrap(), data);
        let unknown = MediaQuery {
            filename: Some("nope.jpg".into()),
            ..Default::default()
        };
        assert_eq!(&media_body(&ds, &unknown).bytes[..], b"[]");
        assert_eq!(
            &media_body(
                &ds,
                &MediaQuery {
                    bare_base64: true,
                    ..unknown
                }
            )
            .bytes[..],
            b""
        );
        assert_eq!(&media_body(&ds, &MediaQuery::default()).bytes[..], b"[]");
        // The raw JSON escapes the slashes and newlines of the base64.
        let raw = std::str::from_utf8(&one.bytes).unwrap();
        assert!(raw.contains("\\n") && !raw.contains('\n'));
    }

    #[test]
    fn etag_follows_the_bytes() {
        let mut ds = Dataset::generate(1, 10, false);
        let q = ListQuery {
            noimage: true,
            ..Default::default()
        };
        let a = list_body(&ds, &q);
        assert_eq!(a.etag, list_body(&ds, &q).etag);
        ds.mutate(2);
        let b = list_body(&ds, &q);
        assert_ne!(a.etag, b.etag);
        assert!(b.last_modified > a.last_modified);
    }

    #[tokio::test]
    async fn cache_builds_once_and_respects_its_budget() {
        let ds = Arc::new(Dataset::generate(1, 10, false));
        let cache = BodyCache::new(20_000);
        let q = Query::List(ListQuery {
            noimage: true,
            ..Default::default()
        });
        let a = cache.get(&ds, &q).await;
        let b = cache.get(&ds, &q).await;
        assert!(Arc::ptr_eq(&a, &b));
        for id in 1..=10 {
            cache
                .get(
                    &ds,
                    &Query::List(ListQuery {
                        propref: Some(PropSel::Id(id)),
                        noimage: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
        let (bytes, entries) = cache.usage();
        assert!(
            bytes <= 20_000 || entries == 1,
            "{bytes} bytes in {entries}"
        );
    }
}

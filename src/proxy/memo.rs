//! Canonical forms of recently seen request targets. A site sends the same few hundred URIs
//! over and over; parsing, filtering, sorting and hashing each one every time would cost more
//! than the rest of a cache hit. Each remembered form belongs to the config generation it was
//! computed under and is only used under that one (requests of an older config may still be
//! running after a reload), and requests whose headers can change their key are computed
//! afresh.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use parking_lot::RwLock;

use crate::config::Config;
use crate::policy::key::{self, Canonical};

/// More distinct targets than this and the memo starts over (bounded memory, whatever the
/// traffic).
const CAPACITY: usize = 16_384;

type Map = HashMap<Box<str>, (u64, Option<Arc<Canonical>>), ahash::RandomState>;

#[derive(Default)]
pub struct KeyMemo {
    map: RwLock<Map>,
}

impl KeyMemo {
    /// The canonical form of a request (`target` is its path and query as received).
    pub fn canonical(
        &self,
        config: &Arc<Config>,
        path: &str,
        query: Option<&str>,
        target: &str,
        headers: &HeaderMap,
    ) -> Option<Arc<Canonical>> {
        let compute = || key::canonicalize(config, path, query, headers).map(Arc::new);
        if key::depends_on_headers(config, None, headers) {
            return compute();
        }
        let generation = config.generation;
        let known = self
            .map
            .read()
            .get(target)
            .filter(|(g, _)| *g == generation)
            .map(|(_, c)| c.clone());
        let found = match known {
            Some(c) => c,
            None => {
                let c = compute();
                let mut map = self.map.write();
                if map.len() >= CAPACITY {
                    map.clear();
                }
                map.insert(target.into(), (generation, c.clone()));
                c
            }
        };
        // A route may key on a header the URI says nothing about (Accept on media).
        match &found {
            Some(c) if key::depends_on_headers(config, Some(c.route), headers) => compute(),
            _ => found,
        }
    }
}

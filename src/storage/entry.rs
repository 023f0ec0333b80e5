//! One cached response, decoded and ready to send: times, header and body chunks.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use pingora::cache::key::HashBinary;
use pingora::cache::CacheMeta;
use pingora::http::ResponseHeader;

/// How long, at least, an expired entry with the origin's validators is kept to be
/// revalidated.
const KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(600);

/// The freshness times the policy gave an entry (storage keeps them, never computes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryTimes {
    pub fresh_until: SystemTime,
    pub created: SystemTime,
    /// Last revalidation (equals `created` until a 304 refreshes the entry).
    pub updated: SystemTime,
    pub swr_sec: u32,
    pub sie_sec: u32,
}

impl EntryTimes {
    pub fn of(meta: &CacheMeta) -> EntryTimes {
        EntryTimes {
            fresh_until: meta.fresh_until(),
            created: meta.created(),
            // `epoch` is the last revalidation, including one we recorded as an override.
            updated: meta.epoch(),
            swr_sec: meta.stale_while_revalidate_sec(),
            sie_sec: meta.stale_if_error_sec(),
        }
    }

    /// After this, no window allows serving the entry: it is dead weight.
    pub fn usable_until(&self) -> SystemTime {
        let stale = Duration::from_secs(self.swr_sec.max(self.sie_sec) as u64);
        self.fresh_until
            .checked_add(stale)
            .unwrap_or(self.fresh_until)
    }

    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.fresh_until >= now
    }

    /// Whether the entry may still be served within a window (stale-while-revalidate,
    /// stale-if-error) that starts when it stops being fresh.
    pub fn within(&self, window_secs: u32, now: SystemTime) -> bool {
        let until = self
            .fresh_until
            .checked_add(Duration::from_secs(u64::from(window_secs)))
            .unwrap_or(self.fresh_until);
        until >= now
    }
}

/// What an allocation of `n` bytes really takes: jemalloc rounds sizes up to one of four
/// classes per power of two (up to 25% more), and a memory budget should count that.
pub fn footprint(n: usize) -> usize {
    if n <= 128 {
        return (n + 15) & !15;
    }
    let group = usize::BITS - 1 - (n - 1).leading_zeros();
    let step = 1usize << (group - 2);
    (n + step - 1) & !(step - 1)
}

/// What a URL's key holds when its answers vary on request headers (RFC 9111 4.1): the
/// headers, and the keys of the variants stored. It is an entry of its own, with no body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaryIndex {
    pub names: Vec<String>,
    pub variants: Vec<String>,
}

/// A response head the proxy rendered for an entry, with what it was rendered for. Storage
/// only keeps it with its entry, so that it goes when the entry goes.
#[derive(Debug)]
pub struct RenderedHead {
    pub key: [u64; 3],
    pub status: u16,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct Entry {
    /// The canonical key, kept to tell apart keys whose hashes collide in a tier and to
    /// show operators what an entry is.
    pub key: String,
    pub hash: HashBinary,
    pub times: EntryTimes,
    pub header: ResponseHeader,
    /// The body as it arrived, chunk by chunk: stored without copying into one buffer.
    pub body: Vec<Bytes>,
    pub body_len: usize,
    /// Made by the proxy from another entry (an encoded copy): it weighs on the memory
    /// budget, but operators count the answers they cached, not the copies.
    pub derived: bool,
    /// The last head the proxy sent this entry with (see `RenderedHead`).
    pub rendered: arc_swap::ArcSwapOption<RenderedHead>,
    /// What purges select it by (`route:NAME`, `property:N`): also what outer caches are
    /// told, as surrogate keys.
    pub tags: Vec<String>,
    /// Set when this entry is a URL's index of variants rather than an answer.
    pub vary: Option<Arc<VaryIndex>>,
    /// The memory file `body` is mapped from, when memory keeps it in one (`shared_body`).
    pub file: Option<Arc<super::shared_body::SharedBody>>,
    /// Whether `header` carries a validator of the origin's: judged once here, as every
    /// lookup asks (`usable_until`) and the answer needs header lookups and a parse.
    pub revalidatable: bool,
}

impl Entry {
    pub fn new(
        key: String,
        hash: HashBinary,
        times: EntryTimes,
        mut header: ResponseHeader,
        body: Vec<Bytes>,
    ) -> Entry {
        // Each answer gets its own `Connection`. `Date` stays: it says when the origin made
        // the response, which `Age` counts from.
        if header.headers.contains_key(http::header::CONNECTION) {
            header.remove_header(&http::header::CONNECTION);
        }
        let body_len = body.iter().map(Bytes::len).sum();
        Entry {
            key,
            hash,
            times,
            revalidatable: crate::policy::validators::has_origin_validator(&header),
            header,
            body,
            body_len,
            derived: false,
            rendered: Default::default(),
            tags: Vec::new(),
            vary: None,
            file: None,
        }
    }

    /// This entry as the index of a URL's variants.
    pub fn with_vary(mut self, index: VaryIndex) -> Entry {
        self.vary = Some(Arc::new(index));
        self
    }

    /// This entry with its tags.
    pub fn with_tags(mut self, tags: Vec<String>) -> Entry {
        self.tags = tags;
        self
    }

    /// This entry, marked as made from another one.
    pub fn derived(mut self) -> Entry {
        self.derived = true;
        self
    }

    /// A fresh pingora `CacheMeta` for this entry (pingora's meta is not `Clone`).
    pub fn meta(&self) -> CacheMeta {
        let t = &self.times;
        let mut meta = CacheMeta::new(
            t.fresh_until,
            t.created,
            t.swr_sec,
            t.sie_sec,
            self.header.clone(),
        );
        if t.updated != t.created {
            // Age counts from the last revalidation, as pingora does for metas it updated.
            meta.set_epoch_override(t.updated);
        }
        meta
    }

    /// The same body under new times and header (a 304 revalidation, a soft purge).
    pub fn with_times(&self, times: EntryTimes, header: ResponseHeader) -> Entry {
        Entry {
            key: self.key.clone(),
            hash: self.hash,
            times,
            revalidatable: crate::policy::validators::has_origin_validator(&header),
            header,
            body: self.body.clone(),
            body_len: self.body_len,
            derived: self.derived,
            rendered: Default::default(),
            tags: self.tags.clone(),
            vary: self.vary.clone(),
            file: self.file.clone(),
        }
    }

    /// Memory held: the body as the allocator rounds it, header text, and bookkeeping.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 48)
            .sum();
        let body: usize = self.body.iter().map(|b| footprint(b.len())).sum();
        // The head rendered to send it: the stored headers' text and the ones each answer adds.
        let rendered = headers + 384;
        body + headers + rendered + self.key.len() + 256
    }

    /// Until when the entry is worth keeping: its serve-stale windows, and, when the origin
    /// gave it a validator, one more lifetime in which a conditional request can renew it
    /// without a body transfer.
    pub fn usable_until(&self) -> SystemTime {
        let base = self.times.usable_until();
        if !self.revalidatable {
            return base;
        }
        // At least a while, for answers the origin marks stale at once (`no-cache`, max-age=0):
        // they are worth keeping precisely to be revalidated.
        let lifetime = self
            .times
            .fresh_until
            .duration_since(self.times.updated)
            .unwrap_or_default()
            .max(KEEP_FOR_REVALIDATION);
        base.max(self.times.fresh_until + lifetime)
    }

    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.times.updated).unwrap_or_default()
    }
}

#[cfg(test)]
impl Entry {
    /// An entry for unit tests: stored now, already at the end of its freshness.
    pub fn for_test(key: &str, header: ResponseHeader, body: Vec<Bytes>) -> Entry {
        let now = SystemTime::now();
        let times = EntryTimes {
            fresh_until: now,
            created: now,
            updated: now,
            swr_sec: 0,
            sie_sec: 0,
        };
        let hash = pingora::cache::key::hash_key(key);
        Entry::new(key.to_string(), hash, times, header, body)
    }
}

#[cfg(test)]
mod footprint_tests {
    #[test]
    fn rounds_to_size_classes() {
        use super::footprint;
        assert_eq!(footprint(100), 112);
        assert_eq!(footprint(16384), 16384);
        assert_eq!(footprint(16385), 20480);
        assert_eq!(footprint(20000), 20480);
        assert_eq!(footprint(300_000), 327_680);
    }
}

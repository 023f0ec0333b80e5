//! `/media/{file}` and `/media/{variant}/{file}`: Rentman's base64 media as files an `<img>`
//! or `<a download>` can use.
//!
//! ```text
//!  /media/card/F (Accept: image/webp) ── key "/media/card/F format=webp" ── fresh ─► HIT
//!        │ missing or expired: that key's flight (one per key in this process)
//!        ▼
//!  the original's flight ("/media/F") ── its fill of /propertymedia.php?filename=F
//!        │   (the usual keyed, coalesced fill: one Rentman call, here and across instances)
//!        │   base64 decoded, type sniffed, stored as its own entry
//!        ▼
//!  the variant made on the image pool (off the runtime; full queue: 503 Retry-After)
//!        stored as its own entry, tagged like the original (`property:N`)
//! ```
//!
//! Every derived entry takes the times of the JSON answer it came from: when Rentman's copy
//! is due for a refresh, so are the files made from it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use log::{debug, warn};
use parking_lot::Mutex;
use pingora::cache::key::HashBinary;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;
use pingora::Result;
use serde::Deserialize;

use super::answer::{self, Found};
use super::ctx::{Ctx, Lookup, Served};
use super::fill::{Fills, Want};
use super::RentCache;
use crate::config::Config;
use crate::imaging::pool::{Pool, PoolError};
use crate::imaging::{self, ImageError, Spec};
use crate::policy::key::{self, Canonical};
use crate::policy::media::{identify, MediaType, Unfit};
use crate::policy::media_url::{self, MediaTarget};
use crate::policy::outer::CacheStatus;
use crate::policy::validators;
use crate::storage::{Entry, StoreInfo, TieredStorage};
use crate::upstream::{Failure, FetchError};

/// Files are named by GUIDs and never change under their name: a year, immutable.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// A routed `/media/...` request: what it asks for, and the JSON answer it comes from.
#[derive(Debug)]
pub struct MediaRequest {
    pub target: MediaTarget,
    pub source: Arc<Canonical>,
}

/// Why a media request has no file to answer with.
#[derive(Debug)]
pub enum MediaError {
    /// Rentman knows no such file (`[]`).
    NoSuchFile(String),
    /// The JSON answer could not be had.
    Upstream(Arc<FetchError>),
    /// The JSON answer holds no decodable file of a known type.
    Corrupt(String),
    /// The file is of a known type but cut short.
    Incomplete(String),
    /// No variant can be made of the file.
    Image(ImageError),
    /// The image pool is full.
    Busy,
    Failed(String),
}

impl MediaError {
    fn code(&self) -> String {
        match self {
            MediaError::NoSuchFile(_) => "no-such-file".into(),
            MediaError::Upstream(e) => e.failure.code(),
            MediaError::Corrupt(_) => "corrupt-media".into(),
            MediaError::Incomplete(_) => "incomplete-media".into(),
            MediaError::Image(ImageError::TooLarge { .. }) => "image-too-large".into(),
            MediaError::Image(ImageError::TooManyScans { .. }) => "too-many-scans".into(),
            MediaError::Image(ImageError::Unsupported(_)) => "no-variant".into(),
            MediaError::Image(ImageError::Corrupt(_)) => "corrupt-image".into(),
            MediaError::Busy => "media-busy".into(),
            MediaError::Failed(_) => "media-failed".into(),
        }
    }

    /// The JSON error a client gets when no copy covers for it.
    fn response(&self) -> (ResponseHeader, Bytes) {
        if let MediaError::Upstream(e) = self {
            return e.failure.response();
        }
        let (status, code, message) = match self {
            MediaError::NoSuchFile(f) => {
                (404, "no_such_file", format!("Rentman has no file `{f}`"))
            }
            MediaError::Corrupt(why) => (502, "corrupt_media", why.clone()),
            MediaError::Incomplete(why) => (502, "incomplete_media", why.clone()),
            MediaError::Image(e @ ImageError::Unsupported(_)) => {
                (415, "no_variant", format!("{e}: ask for /media/FILE"))
            }
            MediaError::Image(e) => (502, "bad_image", e.to_string()),
            MediaError::Busy => (
                503,
                "media_busy",
                "too many images are being made; retry shortly".into(),
            ),
            MediaError::Failed(why) => (500, "media_failed", why.clone()),
            MediaError::Upstream(_) => (502, "upstream_failed", String::new()),
        };
        error_response(status, code, &message)
    }
}

fn error_response(status: u16, code: &str, message: &str) -> (ResponseHeader, Bytes) {
    let body = crate::json_error::body(status, code, message);
    let s = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let mut h = crate::json_error::bare_header(s);
    let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
    let _ = h.insert_header(http::header::CONTENT_LENGTH, body.len());
    let _ = h.insert_header(http::header::CACHE_CONTROL, "no-store");
    if status == 503 {
        let _ = h.insert_header(http::header::RETRY_AFTER, "1");
    }
    (h, body)
}

pub type MediaOutcome = Result<Arc<Entry>, Arc<MediaError>>;
type Flight = Shared<BoxFuture<'static, MediaOutcome>>;

/// What one flight makes.
struct Job {
    request: Arc<MediaRequest>,
    config: Arc<Config>,
    /// The key has an old copy, which covers for a failure: then old inputs are not used
    /// (they would remake the same old file on every request while Rentman fails).
    covered: bool,
}

/// How many routed media paths are remembered (per format) before the memory starts over.
const REMEMBERED: usize = 10_000;

type Routed = (Arc<MediaRequest>, Arc<Canonical>);

fn slot(format: media_url::Format) -> usize {
    match format {
        media_url::Format::Jpeg => 0,
        media_url::Format::Webp => 1,
    }
}

/// Routed media paths of one config generation, by the format negotiated: a hit needs no
/// decoding, canonical form or hash of its own.
#[derive(Default)]
struct Memo {
    generation: u64,
    by_format: [HashMap<String, Routed, ahash::RandomState>; 2],
}

/// The flights of media keys in this process, and the pool images are made on.
pub struct MediaFiles {
    memo: Mutex<Memo>,
    flights: Mutex<HashMap<HashBinary, (u64, Flight)>>,
    next: std::sync::atomic::AtomicU64,
    fills: Arc<Fills>,
    storage: &'static TieredStorage,
    pool: Pool,
}

impl MediaFiles {
    pub fn new(
        fills: Arc<Fills>,
        storage: &'static TieredStorage,
        config: &crate::config::Media,
    ) -> Arc<MediaFiles> {
        Arc::new(MediaFiles {
            memo: Mutex::new(Memo::default()),
            flights: Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(1),
            fills,
            storage,
            pool: Pool::new(config.workers, config.queue),
        })
    }

    fn remembered(&self, generation: u64, format: media_url::Format, path: &str) -> Option<Routed> {
        let memo = self.memo.lock();
        if memo.generation != generation {
            return None;
        }
        memo.by_format.get(slot(format))?.get(path).cloned()
    }

    fn remember(&self, generation: u64, format: media_url::Format, path: &str, routed: Routed) {
        let mut memo = self.memo.lock();
        if memo.generation != generation {
            *memo = Memo {
                generation,
                ..Memo::default()
            };
        }
        if let Some(map) = memo.by_format.get_mut(slot(format)) {
            if map.len() >= REMEMBERED {
                map.clear();
            }
            map.insert(path.to_string(), routed);
        }
    }

    /// The key's flight, started if none is in the air; and whether it was joined.
    fn flight(self: &Arc<Self>, job: Job) -> (Flight, bool) {
        let hash = job.request.target.hash;
        let mut flights = self.flights.lock();
        if let Some((_, f)) = flights.get(&hash) {
            return (f.clone(), true);
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let me = self.clone();
        // A task of its own: a client that goes away does not cancel it for the others.
        let task = tokio::spawn(async move {
            let _landing = super::fill::Landing::new(&me.flights, hash, id);
            me.run(&job).await.map_err(Arc::new)
        });
        let flight = async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::new(MediaError::Failed(format!("stopped: {e}")))))
        }
        .boxed()
        .shared();
        flights.insert(hash, (id, flight.clone()));
        (flight, false)
    }

    async fn run(self: &Arc<Self>, job: &Job) -> Result<Arc<Entry>, MediaError> {
        let Some((variant, format)) = job.request.target.variant.clone() else {
            return self.original(job).await;
        };
        // The decoded original, as stored (or made now, by its own flight).
        let original_target = media_url::original_of(&job.request.target);
        let original = self
            .entry_for(
                Arc::new(MediaRequest {
                    target: original_target,
                    source: job.request.source.clone(),
                }),
                &job.config,
                job.covered,
            )
            .await
            .map_err(|e| match Arc::try_unwrap(e) {
                Ok(e) => e,
                Err(shared) => clone_error(&shared),
            })?;
        let spec = Spec {
            width: variant.width,
            quality: variant.quality,
            format,
            max_pixels: job.config.media.max_pixels,
            max_scans: job.config.media.max_scans,
        };
        let bytes = Bytes::from(original.body.concat());
        let made = self
            .pool
            .run(move || imaging::make_variant(&bytes, &spec))
            .await
            .map_err(|e| match e {
                PoolError::Full => MediaError::Busy,
                PoolError::Failed => MediaError::Failed("the image job failed".into()),
            })?
            .map_err(MediaError::Image)?;
        debug!(
            "{}: made {}x{} ({} bytes)",
            job.request.target.key,
            made.width,
            made.height,
            made.bytes.len()
        );
        let mut header = file_header(made.content_type, &made.bytes, None);
        let _ = header.insert_header(http::header::VARY, "Accept");
        self.keep(job, &original, header, made.bytes).await
    }

    /// A fresh entry of `request`'s key, from the store or from its flight.
    async fn entry_for(
        self: &Arc<Self>,
        request: Arc<MediaRequest>,
        config: &Arc<Config>,
        covered: bool,
    ) -> MediaOutcome {
        let t = &request.target;
        let found = self
            .storage
            .find_usable(&t.hash, Some(&t.key), SystemTime::now())
            .await;
        if let Some((entry, _)) = found
            .as_ref()
            .filter(|(e, _)| e.times.is_fresh(SystemTime::now()))
        {
            return Ok(entry.clone());
        }
        let stale = found.map(|(e, _)| e);
        let (flight, _) = self.flight(Job {
            request,
            config: config.clone(),
            covered: covered || stale.is_some(),
        });
        match flight.await {
            Ok(e) => Ok(e),
            // The original is only a step: a usable old copy of it does as well, unless the
            // file it is for has an old copy of its own.
            Err(e) if covered => Err(e),
            Err(e) => stale.ok_or(e),
        }
    }

    /// The file itself, decoded from the JSON answer.
    async fn original(&self, job: &Job) -> Result<Arc<Entry>, MediaError> {
        let source = self.source(job).await?;
        let item = file_of(&source.body, &job.request.target.filename)?;
        // The fill's body check refuses these already; a JSON answer stored before it did
        // (or by a route without it) must not become a file kept for a year either.
        let kind = identify(&item.bytes).map_err(|unfit| match unfit {
            Unfit::Unknown => MediaError::Corrupt(format!("the file Rentman sent is {unfit}")),
            Unfit::Incomplete(_) => {
                MediaError::Incomplete(format!("the file Rentman sent is {unfit}"))
            }
        })?;
        let brochure = (kind == MediaType::Pdf || item.imgorder.as_deref() == Some("9006"))
            .then_some(job.request.target.filename.as_str());
        let header = file_header(kind.content_type(), &item.bytes, brochure);
        self.keep(job, &source, header, item.bytes).await
    }

    /// The JSON answer holding the file: stored and fresh, else from the route's fill (one
    /// Rentman call per file, however many keys and instances want it), else a usable old
    /// copy when the fill fails.
    async fn source(&self, job: &Job) -> Result<Arc<Entry>, MediaError> {
        let c = &job.request.source;
        let now = SystemTime::now();
        let found = self.storage.find_usable(&c.hash, Some(&c.key), now).await;
        if let Some((entry, _)) = found.as_ref().filter(|(e, _)| e.times.is_fresh(now)) {
            return Ok(entry.clone());
        }
        let stale = found.map(|(e, _)| e);
        let want = Want {
            canonical: c.clone(),
            config: job.config.clone(),
            stale: stale.clone(),
            forward: Vec::new(),
        };
        match self.fills.fill(want).await {
            (Ok(filled), _) => Ok(filled.entry.clone()),
            (Err(e), _) => {
                let now = SystemTime::now();
                let usable = stale.filter(|s| !job.covered && s.times.within(s.times.sie_sec, now));
                match usable {
                    Some(s) => Ok(s),
                    None => Err(MediaError::Upstream(e)),
                }
            }
        }
    }

    /// Stores a file made from `from` (the JSON answer, or the original), with its times
    /// and its `property:N` tags.
    async fn keep(
        &self,
        job: &Job,
        from: &Entry,
        header: ResponseHeader,
        bytes: Vec<u8>,
    ) -> Result<Arc<Entry>, MediaError> {
        let t = &job.request.target;
        let tags: Vec<String> = from
            .tags
            .iter()
            .filter(|t| !t.starts_with("route:"))
            .cloned()
            .collect();
        let entry = Entry::new(
            t.key.clone(),
            t.hash,
            from.times,
            header,
            vec![Bytes::from(bytes)],
        )
        .with_tags(tags);
        let route = job
            .config
            .routes
            .get(job.request.source.route)
            .map_or("media", |r| r.name.as_str());
        let info = StoreInfo {
            route,
            watch_changes: false,
            config: &job.config,
            shared_copy: false,
        };
        let (entry, kept) = self.storage.store(entry, info).await;
        if !kept.any() {
            warn!("{}: {} bytes, stored in no tier", t.key, entry.body_len);
        }
        Ok(entry)
    }
}

/// Errors are shared between the requests of a flight; a step that needs its own copy
/// (the original's, inside a variant's flight) makes one.
fn clone_error(e: &MediaError) -> MediaError {
    match e {
        MediaError::NoSuchFile(f) => MediaError::NoSuchFile(f.clone()),
        MediaError::Upstream(u) => MediaError::Upstream(u.clone()),
        MediaError::Corrupt(w) => MediaError::Corrupt(w.clone()),
        MediaError::Incomplete(w) => MediaError::Incomplete(w.clone()),
        MediaError::Image(i) => MediaError::Image(i.clone()),
        MediaError::Busy => MediaError::Busy,
        MediaError::Failed(w) => MediaError::Failed(w.clone()),
    }
}

/// The stored header of a file: its type, length, a strong ETag of its bytes, a year of
/// immutability, and for brochures the name to save it under.
fn file_header(content_type: &str, bytes: &[u8], brochure: Option<&str>) -> ResponseHeader {
    let mut h = crate::json_error::bare_header(http::StatusCode::OK);
    let _ = h.insert_header(http::header::CONTENT_TYPE, content_type);
    let _ = h.insert_header(http::header::CONTENT_LENGTH, bytes.len());
    let _ = h.insert_header(
        http::header::ETAG,
        validators::body_etag(&[Bytes::copy_from_slice(bytes)]),
    );
    let _ = h.insert_header(http::header::CACHE_CONTROL, IMMUTABLE);
    let _ = h.insert_header(http::header::ACCEPT_RANGES, "bytes");
    let _ = h.insert_header(http::header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    if let Some(name) = brochure {
        // Shown in the browser when opened, saved under its own name (`<a download>`).
        let safe: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\' || *c == ' ')
            .collect();
        let _ = h.insert_header(
            http::header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{safe}\""),
        );
    }
    h
}

/// One file of a `propertymedia.php` answer.
struct Item {
    bytes: Vec<u8>,
    imgorder: Option<String>,
}

#[derive(Deserialize)]
struct RawItem {
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    base64data: Option<String>,
    #[serde(default)]
    imgorder: Option<serde_json::Value>,
}

/// The item named `filename` in a JSON answer (or its only item), decoded.
fn file_of(body: &[Bytes], filename: &str) -> Result<Item, MediaError> {
    use base64::Engine as _;
    let text = body.concat();
    let items: Vec<RawItem> = serde_json::from_slice(&text).map_err(|e| {
        MediaError::Corrupt(format!(
            "Rentman's answer is not a list of media items: {e}"
        ))
    })?;
    let only = items.len() == 1;
    let Some(item) = items
        .into_iter()
        .find(|i| only || i.filename.as_deref() == Some(filename))
    else {
        return Err(MediaError::NoSuchFile(filename.to_string()));
    };
    let data = item
        .base64data
        .ok_or_else(|| MediaError::Corrupt("the media item has no base64data".into()))?;
    let compact: Vec<u8> = data.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|e| MediaError::Corrupt(format!("the file's base64 is corrupt: {e}")))?;
    let imgorder = match item.imgorder {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(Item { bytes, imgorder })
}

/// The routing of a `/media/...` request: what it asks for, or the error it gets.
pub(super) fn route(
    config: &Config,
    req: &RequestHeader,
) -> Result<MediaRequest, (u16, &'static str, String)> {
    let target = media_url::target(config, req.uri.path(), &req.headers).map_err(|e| {
        let code = match e {
            media_url::MediaPathError::UnknownVariant { .. } => "unknown_variant",
            media_url::MediaPathError::BadName(_) => "bad_file_name",
        };
        (404, code, e.message())
    })?;
    let query = target.source_query();
    let Some(source) = key::canonicalize(
        config,
        media_url::SOURCE_PATH,
        Some(&query),
        &http::HeaderMap::new(),
    ) else {
        return Err((
            404,
            "no_route",
            format!("no route for {}", media_url::SOURCE_PATH),
        ));
    };
    Ok(MediaRequest {
        target,
        source: Arc::new(source),
    })
}

/// The canonical form a media request carries through the proxy (its key, hash and route;
/// logs, metrics and surrogate keys read it).
fn canonical_of(m: &MediaRequest) -> Arc<Canonical> {
    Arc::new(Canonical {
        route: m.source.route,
        key: m.target.key.clone(),
        target: m.source.target.clone(),
        headers: Vec::new(),
        hash: m.target.hash,
    })
}

impl RentCache {
    /// Routes a `/media/...` request into `ctx`; `Err` is the error it gets.
    pub(super) fn route_media(
        &self,
        req: &RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<(), (u16, &'static str, String)> {
        let format = media_url::negotiate(&req.headers, ctx.config.media.webp);
        let path = req.uri.path();
        if let Some((m, c)) = self.media.remembered(ctx.config.generation, format, path) {
            ctx.canonical = Some(c);
            ctx.media = Some(m);
            return Ok(());
        }
        let m = Arc::new(route(&ctx.config, req)?);
        let c = canonical_of(&m);
        self.media
            .remember(ctx.config.generation, format, path, (m.clone(), c.clone()));
        ctx.canonical = Some(c);
        ctx.media = Some(m);
        Ok(())
    }

    /// The fresh stored copy of a routed media request, for the front door.
    pub(super) async fn media_fresh(&self, ctx: &mut Ctx) -> Option<Found> {
        let m = ctx.media.clone()?;
        let t = &m.target;
        let now = SystemTime::now();
        ctx.lookup = match self.storage.find_usable(&t.hash, Some(&t.key), now).await {
            Some((e, tier)) => Lookup::Found(e, tier),
            None => Lookup::Nothing,
        };
        let Lookup::Found(entry, tier) = &ctx.lookup else {
            return None;
        };
        if !entry.times.is_fresh(now) {
            return None;
        }
        let mut served = Served::new(CacheStatus::Hit);
        served.tier = Some(*tier);
        ctx.served = Some(served);
        Some(found(entry.clone()))
    }

    /// Answers a `/media/...` request (GET or HEAD).
    pub(super) async fn serve_media(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let method = session.req_header().method.clone();
        if method != http::Method::GET && method != http::Method::HEAD {
            let (mut h, body) = error_response(
                405,
                "method_not_allowed",
                &format!("{method} is not allowed here; use GET or HEAD"),
            );
            let _ = h.insert_header(http::header::ALLOW, "GET, HEAD");
            return self.media_plain(session, ctx, h, body).await;
        }
        if ctx.media.is_none() {
            if let Err((status, code, message)) = self.route_media(session.req_header(), ctx) {
                let (h, body) = error_response(status, code, &message);
                return self.media_plain(session, ctx, h, body).await;
            }
        }
        let a = match self.media_fresh_or_looked_up(ctx).await {
            Some(found) => answer::compose(session.req_header(), ctx, found, SystemTime::now()),
            None => self.media_unfresh(session.req_header(), ctx).await,
        };
        self.record(session.req_header(), ctx);
        self.write_answer(session, ctx, a).await
    }

    async fn media_fresh_or_looked_up(&self, ctx: &mut Ctx) -> Option<Found> {
        match &ctx.lookup {
            Lookup::NotYet => self.media_fresh(ctx).await,
            // The front door looked it up and found nothing fresh.
            _ => None,
        }
    }

    /// The answer for a media key with no fresh copy: the old copy at once while it is
    /// remade (within its stale-while-revalidate window), else the flight's outcome, else
    /// the old copy (`STALE`), else the error.
    async fn media_unfresh(&self, req: &RequestHeader, ctx: &mut Ctx) -> answer::Answer {
        let stale = match &ctx.lookup {
            Lookup::Found(e, tier) => Some((e.clone(), *tier)),
            _ => None,
        };
        let Some(m) = ctx.media.clone() else {
            let (h, b) = error_response(500, "media_failed", "unrouted media request");
            return answer::plain(req, ctx, h, b);
        };
        let job = Job {
            request: m,
            config: ctx.config.clone(),
            covered: stale.is_some(),
        };
        let now = SystemTime::now();
        if let Some((entry, tier)) = &stale {
            if entry.times.swr_sec > 0 && entry.times.within(entry.times.swr_sec, now) {
                let _ = self.media.flight(job);
                let mut served = Served::new(CacheStatus::Updating);
                served.tier = Some(tier);
                ctx.served = Some(served);
                return answer::compose(req, ctx, found(entry.clone()), now);
            }
        }
        let (flight, joined) = self.media.flight(job);
        ctx.coalesced = joined;
        let outcome = match tokio::time::timeout(ctx.config.upstream.fill_wait, flight).await {
            Ok(o) => o,
            Err(_) => Err(Arc::new(MediaError::Upstream(Arc::new(
                Failure::Timeout.into(),
            )))),
        };
        match outcome {
            Ok(entry) => {
                let mut served = Served::new(if joined {
                    CacheStatus::Hit
                } else if stale.is_some() {
                    CacheStatus::Expired
                } else {
                    CacheStatus::Miss
                });
                served.stored = !joined;
                ctx.served = Some(served);
                answer::compose(req, ctx, found(entry), SystemTime::now())
            }
            Err(e) => {
                let mut served = Served::new(CacheStatus::Stale);
                served.reason = Some(e.code());
                if let Some((entry, tier)) = stale {
                    // A variant made before is served while a new one cannot be made.
                    served.tier = Some(tier);
                    ctx.served = Some(served);
                    return answer::compose(req, ctx, found(entry), SystemTime::now());
                }
                served.status = CacheStatus::Miss;
                ctx.served = Some(served);
                let (h, b) = e.response();
                answer::plain(req, ctx, h, b)
            }
        }
    }

    async fn media_plain(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        header: ResponseHeader,
        body: Bytes,
    ) -> Result<bool> {
        let a = answer::plain(session.req_header(), ctx, header, body);
        self.record(session.req_header(), ctx);
        self.write_answer(session, ctx, a).await
    }
}

/// A stored file as the client takes it: as it is (images and PDFs are not compressed).
fn found(entry: Arc<Entry>) -> Found {
    Found {
        entry,
        encodable: false,
        may_compress: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_decodes_the_named_item() {
        let body = vec![Bytes::from_static(
            br#"[{"propref":"1","filename":"a.jpg","base64data":"/9j/\n4A==","imgorder":"1"},
                 {"propref":"1","filename":"b.pdf","base64data":"JVBERi0=","imgorder":"9006"}]"#,
        )];
        let a = file_of(&body, "a.jpg").ok().unwrap();
        assert_eq!(a.bytes, [0xFF, 0xD8, 0xFF, 0xE0]);
        let b = file_of(&body, "b.pdf").ok().unwrap();
        assert_eq!(b.bytes, b"%PDF-");
        assert_eq!(b.imgorder.as_deref(), Some("9006"));
        assert!(matches!(
            file_of(&body, "c.jpg"),
            Err(MediaError::NoSuchFile(_))
        ));
        let empty = vec![Bytes::from_static(b"[]")];
        assert!(matches!(
            file_of(&empty, "a.jpg"),
            Err(MediaError::NoSuchFile(_))
        ));
        let corrupt = vec![Bytes::from_static(
            br#"[{"filename":"a.jpg","base64data":"/9j/4A=!"}]"#,
        )];
        assert!(matches!(
            file_of(&corrupt, "a.jpg"),
            Err(MediaError::Corrupt(_))
        ));
    }

    #[test]
    fn brochures_are_named() {
        let h = file_header("application/pdf", b"%PDF-", Some("x\"y.pdf"));
        assert_eq!(
            h.headers.get("content-disposition").unwrap(),
            "inline; filename=\"xy.pdf\""
        );
        assert_eq!(h.headers.get("cache-control").unwrap(), IMMUTABLE);
        let etag = h.headers.get("etag").unwrap().to_str().unwrap();
        assert!(etag.starts_with('"') && !etag.starts_with("W/"));
    }
}

//! Warming: fetching popular keys before visitors ask, through the proxy itself (so keys,
//! tiers, coalescing and the upstream budget all apply). Lists from the config run at start
//! and on their intervals; operators start ad-hoc jobs with `POST /warm`. Entries that are
//! still fresh are skipped; "follow" templates turn each record of a warmed list into more
//! URLs (each property's detail, the media of its first photo).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use log::{info, warn};
use parking_lot::Mutex;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;

use crate::config::{Config, SharedConfig};
use crate::policy::{key, media_url};
use crate::storage::{Entry, TieredStorage};
use crate::upstream::Throttle;

/// Marks the warmer's own requests (counted apart from visitors', and kept out of the
/// access log and the latency windows).
pub const WARM_HEADER: &str = "x-rentcache-warm";

/// The value that marks them: random per process, so that a client sending the header
/// cannot hide its requests from the access log and the figures.
fn warm_mark() -> &'static str {
    static MARK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MARK.get_or_init(|| {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    })
}

/// Whether `req` is one of this process's warming requests.
pub fn is_warming(headers: &http::HeaderMap) -> bool {
    // A typed name: looking a header up by `&str` parses the name on every request.
    const NAME: http::HeaderName = http::HeaderName::from_static(WARM_HEADER);
    headers
        .get(NAME)
        .is_some_and(|v| v.as_bytes() == warm_mark().as_bytes())
}
/// Jobs kept for `GET /warm`.
const KEEP_JOBS: usize = 20;
/// Upper bound on URLs one job may grow to by following links.
const MAX_URLS: usize = 10_000;
/// How long a warm request waits for spare budget before going ahead anyway (the gateway
/// still enforces the budget).
const BUDGET_PATIENCE: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Job {
    pub id: u64,
    pub name: String,
    pub total: AtomicUsize,
    pub done: AtomicUsize,
    pub fetched: AtomicUsize,
    pub skipped_fresh: AtomicUsize,
    pub failed: AtomicUsize,
    pub finished: AtomicBool,
    started: Option<Instant>,
}

impl Job {
    fn summary(&self) -> String {
        format!(
            "warm {}: {}/{} done ({} fetched, {} still fresh, {} failed)",
            self.name,
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
            self.fetched.load(Ordering::Relaxed),
            self.skipped_fresh.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

pub struct Warmer {
    config: SharedConfig,
    storage: &'static TieredStorage,
    throttle: Arc<Throttle>,
    connector: Connector,
    proxy: SocketAddr,
    jobs: Mutex<Vec<Arc<Job>>>,
    next_id: AtomicU64,
}

enum Fetched {
    Fresh(Arc<Entry>),
    Body(Bytes),
    Failed(String),
}

impl Warmer {
    pub fn new(
        config: SharedConfig,
        storage: &'static TieredStorage,
        throttle: Arc<Throttle>,
    ) -> Warmer {
        // The config was validated: at least one listen address, each a socket address.
        let mut proxy: SocketAddr = config
            .load()
            .server
            .listen
            .first()
            .and_then(|l| l.parse().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        if proxy.ip().is_unspecified() {
            proxy.set_ip(if proxy.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        Warmer {
            config,
            storage,
            throttle,
            connector: Connector::new(None),
            proxy,
            jobs: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        self.jobs.lock().clone()
    }

    /// Registers a job; run it with [`Warmer::run`].
    pub fn job(&self, name: &str) -> Arc<Job> {
        let job = Arc::new(Job {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            started: Some(Instant::now()),
            ..Default::default()
        });
        let mut jobs = self.jobs.lock();
        jobs.push(job.clone());
        let excess = jobs.len().saturating_sub(KEEP_JOBS);
        jobs.drain(..excess);
        job
    }

    /// Warms `urls`, following the named templates on each response.
    pub async fn run(&self, job: &Job, urls: Vec<String>, follow: &[String]) {
        let config = self.config.load_full();
        let templates: Vec<&str> = follow
            .iter()
            .filter_map(|name| {
                config
                    .warm
                    .follow
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.as_str())
            })
            .collect();
        let mut queue: Vec<(String, bool)> = urls.into_iter().map(|u| (u, true)).collect();
        let mut seen: HashSet<String> = queue.iter().map(|(u, _)| u.clone()).collect();
        job.total.store(queue.len(), Ordering::Relaxed);
        let mut i = 0;
        while let Some((url, follow_here)) = queue.get(i).cloned() {
            i += 1;
            let body = match self.warm_one(&url).await {
                Fetched::Fresh(entry) => {
                    job.skipped_fresh.fetch_add(1, Ordering::Relaxed);
                    Some(entry.body.concat().into())
                }
                Fetched::Body(b) => {
                    job.fetched.fetch_add(1, Ordering::Relaxed);
                    Some(b)
                }
                Fetched::Failed(why) => {
                    job.failed.fetch_add(1, Ordering::Relaxed);
                    warn!("warm {}: {url}: {why}", job.name);
                    None
                }
            };
            if let (Some(body), true) = (body, follow_here && !templates.is_empty()) {
                for link in links(&body, &templates) {
                    if queue.len() < MAX_URLS && seen.insert(link.clone()) {
                        // Links are warmed but not followed further.
                        queue.push((link, false));
                    }
                }
                job.total.store(queue.len(), Ordering::Relaxed);
            }
            let done = job.done.fetch_add(1, Ordering::Relaxed) + 1;
            if done.is_multiple_of(50) {
                info!("{}", job.summary());
            }
        }
        job.finished.store(true, Ordering::Release);
        info!(
            "{} in {:.1}s",
            job.summary(),
            job.started.map_or(0.0, |s| s.elapsed().as_secs_f64())
        );
    }

    async fn warm_one(&self, url: &str) -> Fetched {
        let config = self.config.load_full();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (url, None),
        };
        if media_url::is_media(path) {
            return self.warm_media(&config, path, url).await;
        }
        let Some(c) = key::canonicalize(&config, path, query, &http::HeaderMap::new()) else {
            return Fetched::Failed("no route matches it".into());
        };
        let hash = pingora::cache::key::hash_key(&c.key);
        let now = SystemTime::now();
        for (_, found) in self.storage.find(&hash).await {
            if let Some(e) = found.filter(|e| e.times.is_fresh(now)) {
                return Fetched::Fresh(e);
            }
        }
        // Leave room for visitors: warming waits while budget is scarce.
        let deadline = Instant::now() + BUDGET_PATIENCE;
        while !self.throttle.spare(&config.upstream.budget) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        match self.get(url, None).await {
            Ok((200, body)) => Fetched::Body(body),
            Ok((status, _)) => Fetched::Failed(format!("HTTP {status}")),
            Err(e) => Fetched::Failed(e),
        }
    }

    /// A media file, and for a variant each format browsers are served (JPEG, and WebP
    /// when it is enabled): each is its own entry.
    async fn warm_media(&self, config: &Config, path: &str, url: &str) -> Fetched {
        let webp = config.media.webp && path[media_url::PREFIX.len()..].contains('/');
        let accepts: &[Option<&str>] = if webp {
            &[None, Some("image/webp")]
        } else {
            &[None]
        };
        let now = SystemTime::now();
        let mut outcome = None;
        for accept in accepts {
            let mut headers = http::HeaderMap::new();
            if let Some(a) = accept {
                headers.insert(http::header::ACCEPT, http::HeaderValue::from_static(a));
            }
            let target = match media_url::target(config, path, &headers) {
                Ok(t) => t,
                Err(e) => return Fetched::Failed(e.message()),
            };
            let fresh = self
                .storage
                .find(&target.hash)
                .await
                .into_iter()
                .find_map(|(_, e)| e.filter(|e| e.times.is_fresh(now)));
            if let Some(e) = fresh {
                outcome.get_or_insert(Fetched::Fresh(e));
                continue;
            }
            match self.get(url, *accept).await {
                Ok((200, _)) => outcome = Some(Fetched::Body(Bytes::new())),
                Ok((status, _)) => return Fetched::Failed(format!("HTTP {status}")),
                Err(e) => return Fetched::Failed(e),
            }
        }
        outcome.unwrap_or_else(|| Fetched::Failed("nothing to warm".into()))
    }

    /// `GET url` through the proxy's own public listener.
    async fn get(&self, url: &str, accept: Option<&str>) -> Result<(u16, Bytes), String> {
        let peer = HttpPeer::new(self.proxy, false, String::new());
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| format!("cannot reach the proxy: {e}"))?;
        let mut req =
            RequestHeader::build("GET", url.as_bytes(), None).map_err(|e| e.to_string())?;
        let _ = req.insert_header(http::header::HOST, "rentcache-warm");
        let _ = req.insert_header(WARM_HEADER, warm_mark());
        if let Some(a) = accept {
            let _ = req.insert_header(http::header::ACCEPT, a);
        }
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(|e| e.to_string())?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        session
            .read_response_header()
            .await
            .map_err(|e| e.to_string())?;
        let status = session.response_header().map_or(0, |h| h.status.as_u16());
        let mut body = Vec::new();
        while let Some(chunk) = session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
        {
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &peer, Some(Duration::from_secs(30)))
            .await;
        Ok((status, Bytes::from(body)))
    }
}

/// URLs from filling each template with each record's fields (records without a field a
/// template needs, or with it empty, are skipped for that template).
fn links(body: &[u8], templates: &[&str]) -> Vec<String> {
    let Ok(serde_json::Value::Array(records)) = serde_json::from_slice(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for r in &records {
        'templates: for t in templates {
            let mut url = String::new();
            let mut rest = *t;
            while let Some(open) = rest.find('{') {
                url.push_str(&rest[..open]);
                let Some(close) = rest[open..].find('}') else {
                    continue 'templates;
                };
                let field = &rest[open + 1..open + close];
                let value = match r.get(field) {
                    Some(serde_json::Value::String(s)) if !s.trim().is_empty() => {
                        s.trim().to_string()
                    }
                    Some(serde_json::Value::Number(n)) => n.to_string(),
                    _ => continue 'templates,
                };
                url.push_str(&crate::policy::query::encode_component(&value));
                rest = &rest[open + close + 1..];
            }
            url.push_str(rest);
            out.push(url);
        }
    }
    out
}

/// Runs the configured lists: once at start (if asked), then each on its interval.
pub struct WarmService(pub Arc<Warmer>);

#[async_trait]
impl BackgroundService for WarmService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let warmer = &self.0;
        // The proxy starts alongside; give it a moment to listen.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(warmer.proxy).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut last_run: std::collections::HashMap<String, Instant> = Default::default();
        let mut first = true;
        loop {
            let config = warmer.config.load_full();
            for list in &config.warm.lists {
                let due = match last_run.get(&list.name) {
                    Some(t) => t.elapsed() >= list.every,
                    None => !first || config.warm.on_start,
                };
                if !due {
                    if first {
                        last_run.insert(list.name.clone(), Instant::now());
                    }
                    continue;
                }
                last_run.insert(list.name.clone(), Instant::now());
                let job = warmer.job(&list.name);
                warmer.run(&job, list.urls.clone(), &list.follow).await;
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_fill_templates_from_records() {
        let body = br#"[{"propref":"12","photo1":"A B.jpg"},{"propref":"7","photo1":""},{"x":1}]"#;
        let got = links(
            body,
            &[
                "/propertyadvertising.php?propref={propref}&noimage=1",
                "/propertymedia.php?filename={photo1}",
            ],
        );
        assert_eq!(
            got,
            vec![
                "/propertyadvertising.php?propref=12&noimage=1",
                "/propertymedia.php?filename=A%20B.jpg",
                "/propertyadvertising.php?propref=7&noimage=1",
            ]
        );
        assert!(links(b"{}", &["/x?{a}"]).is_empty());
    }
}

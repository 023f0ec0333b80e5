//! Configuration: the YAML file format (`file`), how it is read and checked (`load`, `build`),
//! and the resolved, validated [`Config`] the rest of the program runs on.
//!
//! Loading is parse -> locate -> deserialize section by section -> validate -> resolve, and it
//! reports every problem it finds as `FILE:LINE:COLUMN: key.path: what is wrong`.

mod build;
pub mod file;
mod load;
pub mod locate;
pub mod units;

use std::time::Duration;

pub use file::{BodyCheck, Mode, TokenIn};
pub use load::{load_file, load_file_caught, parse_str, ConfigError, ConfigErrors};

/// The whole validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Distinct for every config built in this process, in the order they were built.
    pub generation: u64,
    /// Where it was read from (for messages).
    pub source: String,
    pub server: Server,
    pub admin: Admin,
    pub upstream: Upstream,
    pub memory: Memory,
    /// The shared tier; `None` means memory only.
    pub redis: Option<Redis>,
    pub cors: Cors,
    pub cdn: Cdn,
    pub key: KeyRules,
    pub refresh_ahead: RefreshAhead,
    pub dependencies: Vec<Dependency>,
    pub warm: Warm,
    pub media: Media,
    pub access_log: AccessLogConfig,
    pub console: Console,
    pub routes: Vec<Route>,
}

impl Config {
    /// What is valid but probably not meant: `rentcache check` prints it, a server logs it.
    pub fn warnings(&self) -> Vec<String> {
        self.routes
            .iter()
            .filter(|r| r.is_cached() && r.body == BodyCheck::Any)
            .map(|r| {
                format!(
                    "route `{}` stores bodies that nothing checks (body: any): an answer such as \
                     Rentman's to a bad token (HTTP 200, empty or text) would be stored and \
                     served; set `body: json_array` or `body: media`",
                    r.name
                )
            })
            .collect()
    }
}

/// Keeping popular keys in the cache before visitors ask.
#[derive(Debug, Clone, Default)]
pub struct Warm {
    pub on_start: bool,
    /// Named URL templates filled from each record of a warmed list (`{propref}`, ...).
    pub follow: Vec<(String, String)>,
    pub lists: Vec<WarmList>,
}

#[derive(Debug, Clone)]
pub struct WarmList {
    pub name: String,
    pub every: Duration,
    pub urls: Vec<String>,
    /// Names of `follow` templates to apply to this list's responses.
    pub follow: Vec<String>,
}

/// Purging a tag that matches `when` also purges the tags in `purge`.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub when: globset::GlobMatcher,
    pub purge: Vec<String>,
}

/// Media files at `/media/{file}` and `/media/{variant}/{file}`.
#[derive(Debug, Clone)]
pub struct Media {
    /// Named variants, in name order.
    pub variants: Vec<Variant>,
    /// WebP for clients whose `Accept` allows it (else JPEG).
    pub webp: bool,
    /// Images processed at once, off the async runtime (restart to change).
    pub workers: usize,
    /// Images that may wait for a worker; more get 503 (restart to change).
    pub queue: usize,
    /// Larger images (width x height as their header says) are refused before decoding.
    pub max_pixels: u64,
    /// JPEGs with more scans (start-of-scan markers) are refused before decoding.
    pub max_scans: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    pub name: String,
    /// Largest width in pixels (never upscaled; the aspect ratio is kept).
    pub width: u32,
    /// Encoder quality, 1-100 (JPEG and WebP).
    pub quality: u8,
}

impl Media {
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }
}

/// Where the access log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    File(std::path::PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Combined,
}

/// The access log (read once at start).
#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// None: off.
    pub to: Option<LogTarget>,
    pub format: LogFormat,
    /// Share of requests logged, (0, 1].
    pub sample: f64,
    pub queue: usize,
}

/// The operator's console: TTL advice settings.
#[derive(Debug, Clone)]
pub struct Console {
    /// The acceptable chance that a served answer has changed at Rentman.
    pub staleness_budget: f64,
    pub min_refreshes: u64,
}

/// A route's latency target: the `quantile` of its answers within `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyTarget {
    pub quantile: f64,
    pub limit: Duration,
}

/// Background refresh of hot keys shortly before they expire.
#[derive(Debug, Clone)]
pub struct RefreshAhead {
    /// Hits during an entry's current lifetime that make it hot; 0 turns this off.
    pub hot_threshold: u32,
    /// How long before expiry a hot key is refreshed (at most half its ttl).
    pub lead: Duration,
}

/// Limits on how hard Rentman is asked.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Token-bucket rates; 0 means no limit of that kind.
    pub per_second: f64,
    pub per_minute: f64,
    /// Requests allowed at once by the per-second bucket.
    pub burst: f64,
    /// Misses that may wait for budget at once; more get 503 at once.
    pub queue_size: usize,
    /// How long a miss waits for budget before it gets 503 with Retry-After.
    pub queue_wait: Duration,
}

impl Budget {
    pub fn is_limited(&self) -> bool {
        self.per_second > 0.0 || self.per_minute > 0.0
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<String>,
    pub threads: usize,
    pub compression_level: u32,
    pub grace_period: Duration,
    /// Per-connection write buffer: a response that fits leaves in one send().
    pub write_buffer: usize,
    /// How long a connection may take to send a complete request head (idle time before it
    /// included), on both listeners.
    pub header_timeout: Duration,
    pub tls: Option<Tls>,
}

/// HTTPS listeners: certificate chain and key files (reloaded when they change), and
/// whether HTTP/2 is offered (by ALPN).
#[derive(Debug, Clone)]
pub struct Tls {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
    pub http2: bool,
}

#[derive(Debug, Clone)]
pub struct Admin {
    /// The operators' listener, separate from the public one.
    pub listen: String,
    /// Environment variable holding the bearer token; unset means protected endpoints are
    /// disabled.
    pub token_env: String,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// The configured base URL, for display.
    pub base_url: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prepended to every request path (without a trailing slash; usually empty).
    pub path_prefix: String,
    pub verify_tls: bool,
    /// PEM file of the certificate authorities trusted for the upstream's certificate
    /// (instead of the platform's store).
    pub ca_file: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    /// Name of the environment variable holding the Rentman token.
    pub token_env: String,
    pub token_in: TokenIn,
    /// Header or query parameter name of the token (`token`).
    pub token_name: String,
    /// Upstream requests in flight at once, at most (0: no limit). With
    /// `adaptive_concurrency`, the bound of the limit learnt from the upstream's latency and
    /// failures; without, the limit itself.
    pub max_concurrent: usize,
    pub adaptive_concurrency: bool,
    /// Upstream response headers never passed on nor stored (`server`, `x-powered-by`).
    pub drop_headers: Vec<http::HeaderName>,
    /// A targeted cache-control field of rentcache's own (RFC 9213), read on `honor_origin`
    /// routes before `CDN-Cache-Control` and `Cache-Control`.
    pub cache_control_field: Option<http::HeaderName>,
    /// How long a request waits for another request filling the same key.
    pub fill_wait: Duration,
    /// After a failed fetch, requests for that key within this long share the failure
    /// instead of asking the upstream again.
    pub failure_memo: Duration,
    pub budget: Budget,
}

#[derive(Debug, Clone)]
pub struct Memory {
    pub max_bytes: u64,
    pub max_object_bytes: u64,
    /// Large bodies live in unnamed files here (page cache) instead of memory files: the
    /// directory named, or the one `auto` (the default) found.
    pub body_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisNodes {
    Single(String),
    Cluster(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct Redis {
    pub nodes: RedisNodes,
    /// Prepended to every key and channel name.
    pub prefix: String,
    pub connect_timeout: Duration,
    /// No request waits longer than this on one Redis operation.
    pub op_timeout: Duration,
    pub max_object_bytes: u64,
    /// Lifetime of a fill lease; the holder renews it while its upstream call runs, so a
    /// dead holder is noticed within this long.
    pub lease: Duration,
}

impl Redis {
    /// The node addresses without credentials, for logs.
    pub fn display_nodes(&self) -> String {
        let strip = |u: &String| match (u.find("://"), u.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}{}", &u[..s + 3], &u[at + 1..]),
            _ => u.clone(),
        };
        match &self.nodes {
            RedisNodes::Single(u) => strip(u),
            RedisNodes::Cluster(us) => us.iter().map(strip).collect::<Vec<_>>().join(", "),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Cors {
    /// Exact origins (scheme://host[:port]); empty means no CORS headers at all.
    pub allowed_origins: Vec<String>,
    /// `*` was listed: any origin is allowed.
    pub any_origin: bool,
    pub max_age: Duration,
    /// `Timing-Allow-Origin` with the allowed origins, so that sites can measure what the
    /// browser cache saved them (the Performance API hides it otherwise).
    pub timing_allow_origin: bool,
}

/// What rentcache tells CDNs in front of it.
#[derive(Debug, Clone)]
pub struct Cdn {
    pub cache_control: bool,
    pub targeted_field: Option<http::HeaderName>,
    /// The header carrying an answer's tags, with its separator and its largest size.
    pub surrogate_keys: Option<SurrogateKeys>,
    pub purge: CdnPurge,
}

/// CDNs purged when rentcache purges.
#[derive(Debug, Clone, Default)]
pub struct CdnPurge {
    pub providers: Vec<PurgeProvider>,
    /// Purges waiting to be sent, at most; more are dropped (and counted).
    pub queue_size: usize,
    /// How long purges are gathered into one batch.
    pub batch_delay: Duration,
    /// Tries after the first, with exponential backoff from 1 s.
    pub retries: u32,
}

/// An API address: scheme, host, port and base path (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBase {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone)]
pub enum PurgeProvider {
    /// Purge by surrogate key (`POST /service/{id}/purge`), softly when `soft`.
    Fastly {
        api: ApiBase,
        service_id: String,
        token_env: String,
        soft: bool,
    },
    /// `POST /zones/{zone}/purge_cache`, by tags or by URLs under `public_url`.
    Cloudflare {
        api: ApiBase,
        zone_id: String,
        token_env: String,
        by_urls: Option<String>,
    },
    /// `POST url` with `body`, its `{tags}`, `{urls}` and `{soft}` filled in (JSON values).
    Webhook {
        url: ApiBase,
        token_env: Option<String>,
        body: String,
    },
}

impl PurgeProvider {
    pub fn name(&self) -> &'static str {
        match self {
            PurgeProvider::Fastly { .. } => "fastly",
            PurgeProvider::Cloudflare { .. } => "cloudflare",
            PurgeProvider::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SurrogateKeys {
    pub header: http::HeaderName,
    pub separator: String,
    pub max_bytes: usize,
}

/// A query parameter name, exact or with a trailing `*` (`utm_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParamPattern {
    Exact(String),
    Prefix(String),
}

impl ParamPattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            ParamPattern::Exact(n) => n == name,
            ParamPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct KeyRules {
    /// Never part of a key and never forwarded upstream (besides the token, always dropped).
    pub drop_params: Vec<ParamPattern>,
    /// Request headers the upstream also reads as parameters: folded into the query.
    pub params_from_headers: Vec<String>,
    /// The same, parsed once (for fast lookups on every request).
    pub params_from_header_names: Vec<http::HeaderName>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    Exact(String),
    Prefix(String),
}

#[derive(Debug, Clone)]
pub struct RouteMatch {
    pub path: PathMatch,
    pub query_equals: Vec<(String, String)>,
    pub query_present: Vec<String>,
    pub query_absent: Vec<String>,
}

/// Which query parameters make up the key (and are forwarded upstream).
#[derive(Debug, Clone)]
pub enum ParamFilter {
    All,
    Include(Vec<String>),
    Exclude(Vec<ParamPattern>),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    pub matcher: RouteMatch,
    pub mode: Mode,
    pub ttl: Duration,
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    pub browser_max_age: Duration,
    pub cdn_max_age: Duration,
    pub params: ParamFilter,
    /// Request headers that change the response: (lower-case name, recognised values). The key
    /// records which listed value the header contains, and only that value goes upstream.
    pub key_headers: Vec<(String, Vec<String>)>,
    /// The names of `key_headers`, parsed once.
    pub key_header_names: Vec<http::HeaderName>,
    pub cacheable_statuses: Vec<u16>,
    pub body: BodyCheck,
    pub pass_through_methods: PassThrough,
    /// Answers may be compressed for clients (unless the origin said `no-transform`).
    pub compress: bool,
    /// Overrides `upstream.read_timeout` for this route.
    pub upstream_timeout: Option<Duration>,
    /// When a refresh brings a different body, soft-purge the tags found in it (the lists
    /// that contain a changed property refresh too).
    pub watch_changes: bool,
    /// The latency the route's answers should keep to (`/stats`, warnings, the dashboard).
    pub latency_target: Option<LatencyTarget>,
}

impl Route {
    /// A `forced` route with a zero TTL is proxied but never stored; an `honor_origin` route
    /// always asks the origin's headers.
    pub fn is_cached(&self) -> bool {
        self.mode == Mode::HonorOrigin || !self.ttl.is_zero()
    }
}

/// Which methods other than GET and HEAD an `honor_origin` route forwards uncached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassThrough {
    Methods(Vec<http::Method>),
    /// Every method (for a generic upstream: WebDAV's, `M-SEARCH`...).
    Any,
}

impl PassThrough {
    pub fn allows(&self, method: &http::Method) -> bool {
        match self {
            PassThrough::Methods(m) => m.contains(method),
            PassThrough::Any => true,
        }
    }

    /// The methods to name in `Allow` and preflights (none to name for `Any`).
    pub fn listed(&self) -> &[http::Method] {
        match self {
            PassThrough::Methods(m) => m,
            PassThrough::Any => &[],
        }
    }
}

/// The config in force, swapped atomically on reload; a request keeps the snapshot it started
/// with.
pub type SharedConfig = std::sync::Arc<arc_swap::ArcSwap<Config>>;

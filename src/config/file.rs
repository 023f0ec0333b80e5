//! The YAML file as operators write it. Every default here is documented in
//! `conf/rentcache.yaml`; `build.rs` turns this into the resolved [`super::Config`].

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use super::units::{Dur, Size};

/// Top-level sections; see `load.rs` for how each is read separately so that one bad section
/// does not hide errors in the others.
#[derive(Debug, Default)]
pub struct FileConfig {
    pub server: ServerFile,
    pub upstream: UpstreamFile,
    pub memory: MemoryFile,
    pub cors: CorsFile,
    pub cdn: CdnFile,
    pub key: KeyFile,
    /// Absent: memory tier only.
    pub redis: Option<RedisFile>,
    pub admin: AdminFile,
    pub refresh_ahead: RefreshAheadFile,
    pub dependencies: Vec<DependencyFile>,
    pub warm: WarmFile,
    pub media: MediaFile,
    pub access_log: AccessLogFile,
    pub console: ConsoleFile,
    /// One slot per route in the file; `None` where the route could not be read (its error is
    /// already recorded), so that later messages keep the file's numbering.
    pub routes: Vec<Option<RouteFile>>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ServerFile {
    pub listen: Vec<String>,
    pub threads: usize,
    pub compression_level: u32,
    pub grace_period: Dur,
    pub write_buffer: Size,
    pub header_timeout: Dur,
    pub tls: Option<TlsFile>,
}

/// HTTPS listeners of the public side.
#[derive(Debug, Deserialize)]
pub struct TlsFile {
    pub listen: Vec<String>,
    pub cert: String,
    pub key: String,
    #[serde(default = "yes")]
    pub http2: bool,
}

impl Default for ServerFile {
    fn default() -> Self {
        ServerFile {
            listen: vec!["0.0.0.0:8080".into()],
            threads: 2,
            compression_level: 6,
            grace_period: Dur::secs(5),
            write_buffer: Size(64 << 10),
            header_timeout: Dur::secs(60),
            tls: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenIn {
    Header,
    Query,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct UpstreamFile {
    pub base_url: String,
    pub verify_tls: bool,
    pub ca_file: Option<String>,
    pub connect_timeout: Dur,
    pub read_timeout: Dur,
    pub token_env: String,
    pub token_in: TokenIn,
    pub token_name: String,
    pub max_concurrent: usize,
    pub adaptive_concurrency: bool,
    pub drop_headers: Vec<String>,
    pub cache_control_field: Option<String>,
    pub fill_wait: Option<Dur>,
    pub failure_memo: Dur,
    pub budget: BudgetFile,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub struct BudgetFile {
    pub per_second: f64,
    pub per_minute: f64,
    pub burst: Option<f64>,
    pub queue_size: Option<usize>,
    pub queue_wait: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct WarmFile {
    pub on_start: bool,
    pub follow: BTreeMap<String, String>,
    pub lists: Vec<WarmListFile>,
}

impl Default for WarmFile {
    fn default() -> Self {
        WarmFile {
            on_start: true,
            follow: BTreeMap::new(),
            lists: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct WarmListFile {
    pub name: String,
    pub every: Dur,
    pub urls: Vec<String>,
    #[serde(default)]
    pub follow: Vec<String>,
}

/// `when` a tag matching this glob is purged, the tags in `purge` are purged too.
#[derive(Debug, Deserialize)]
pub struct DependencyFile {
    pub when: String,
    pub purge: Vec<String>,
}

/// Media files served at `/media/...`: image variants and how they are made.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct MediaFile {
    pub variants: BTreeMap<String, VariantFile>,
    pub quality: u8,
    pub webp: bool,
    pub workers: usize,
    pub queue: usize,
    pub max_pixels: u64,
    pub max_scans: u32,
}

impl Default for MediaFile {
    fn default() -> Self {
        let v = |width| VariantFile {
            width,
            quality: None,
        };
        MediaFile {
            variants: BTreeMap::from([
                ("thumbnail".to_string(), v(320)),
                ("card".to_string(), v(640)),
                ("hero".to_string(), v(1600)),
            ]),
            quality: 80,
            webp: true,
            workers: 2,
            queue: 64,
            max_pixels: 50_000_000,
            max_scans: 100,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantFile {
    pub width: u32,
    pub quality: Option<u8>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RefreshAheadFile {
    pub hot_threshold: u32,
    pub lead: Dur,
}

impl Default for RefreshAheadFile {
    fn default() -> Self {
        RefreshAheadFile {
            hot_threshold: 20,
            lead: Dur::secs(30),
        }
    }
}

/// `access_log:` one line per request, off by default.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct AccessLogFile {
    /// `off`, `stdout` or a file path.
    pub to: String,
    /// `json` or `combined`.
    pub format: String,
    /// Share of requests logged, (0, 1].
    pub sample: f64,
    /// Lines waiting for the writer; more are dropped and counted.
    pub queue: usize,
}

impl Default for AccessLogFile {
    fn default() -> Self {
        AccessLogFile {
            to: "off".into(),
            format: "json".into(),
            sample: 1.0,
            queue: 10_000,
        }
    }
}

/// `console:` the operator's console (dashboard, TTL advice).
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ConsoleFile {
    /// The acceptable chance that an answer served has changed at Rentman, (0, 1).
    pub staleness_budget: f64,
    /// Refreshes a route needs before its TTL advice suggests anything.
    pub min_refreshes: u64,
}

impl Default for ConsoleFile {
    fn default() -> Self {
        ConsoleFile {
            staleness_budget: 0.01,
            min_refreshes: 20,
        }
    }
}

/// A route's latency target: one percentile and its limit, e.g. `{p99: 10ms}`.
#[derive(Debug, Deserialize, Default)]
pub struct LatencyTargetFile {
    pub p50: Option<Dur>,
    pub p90: Option<Dur>,
    pub p95: Option<Dur>,
    pub p99: Option<Dur>,
    pub p999: Option<Dur>,
}

impl Default for UpstreamFile {
    fn default() -> Self {
        UpstreamFile {
            base_url: "https://www.rentman.online".into(),
            verify_tls: true,
            ca_file: None,
            connect_timeout: Dur::secs(5),
            read_timeout: Dur::secs(30),
            token_env: "RENTMAN_TOKEN".into(),
            token_in: TokenIn::Header,
            token_name: "token".into(),
            max_concurrent: 256,
            adaptive_concurrency: true,
            drop_headers: vec!["server".into(), "x-powered-by".into()],
            cache_control_field: None,
            fill_wait: None,
            failure_memo: Dur::secs(2),
            budget: BudgetFile::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct MemoryFile {
    pub max_bytes: Size,
    pub max_object_bytes: Size,
    pub body_dir: Option<String>,
}

impl Default for MemoryFile {
    fn default() -> Self {
        MemoryFile {
            max_bytes: Size(256 << 20),
            max_object_bytes: Size(8 << 20),
            body_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct AdminFile {
    pub listen: String,
    pub token_env: String,
}

impl Default for AdminFile {
    fn default() -> Self {
        AdminFile {
            listen: "127.0.0.1:9091".into(),
            token_env: "RENTCACHE_ADMIN_TOKEN".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct RedisFile {
    pub url: Option<String>,
    pub cluster_urls: Vec<String>,
    pub prefix: String,
    pub connect_timeout: Dur,
    pub op_timeout: Dur,
    pub max_object_bytes: Size,
    pub lease: Dur,
}

impl Default for RedisFile {
    fn default() -> Self {
        RedisFile {
            url: None,
            cluster_urls: Vec::new(),
            prefix: "rc:".into(),
            connect_timeout: Dur(std::time::Duration::from_secs(1)),
            op_timeout: Dur(std::time::Duration::from_millis(250)),
            max_object_bytes: Size(64 << 20),
            lease: Dur::secs(5),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct CorsFile {
    pub allowed_origins: Vec<String>,
    pub max_age: Dur,
    pub timing_allow_origin: bool,
}

/// What rentcache tells CDNs in front of it.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct CdnFile {
    /// `CDN-Cache-Control` (RFC 9213) on forced routes.
    pub cache_control: bool,
    /// A CDN's own targeted field with the same value (`Cloudflare-CDN-Cache-Control`...).
    pub targeted_field: Option<String>,
    pub surrogate_keys: SurrogateKeysFile,
    pub purge: PurgeFile,
}

impl Default for CdnFile {
    fn default() -> Self {
        CdnFile {
            cache_control: true,
            targeted_field: None,
            surrogate_keys: SurrogateKeysFile::default(),
            purge: PurgeFile::default(),
        }
    }
}

/// CDNs to purge when rentcache purges.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct PurgeFile {
    pub fastly: Option<FastlyFile>,
    pub cloudflare: Option<CloudflareFile>,
    pub webhook: Option<WebhookFile>,
    pub queue_size: usize,
    pub batch_delay: Dur,
    pub retries: u32,
}

impl Default for PurgeFile {
    fn default() -> Self {
        PurgeFile {
            fastly: None,
            cloudflare: None,
            webhook: None,
            queue_size: 10_000,
            batch_delay: Dur::millis(250),
            retries: 5,
        }
    }
}

fn fastly_api() -> String {
    "https://api.fastly.com".into()
}
fn fastly_token_env() -> String {
    "FASTLY_API_TOKEN".into()
}
fn cloudflare_api() -> String {
    "https://api.cloudflare.com/client/v4".into()
}
fn cloudflare_token_env() -> String {
    "CLOUDFLARE_API_TOKEN".into()
}
fn yes() -> bool {
    true
}
fn webhook_body() -> String {
    r#"{"tags": {tags}, "urls": {urls}, "soft": {soft}}"#.into()
}

#[derive(Debug, Deserialize)]
pub struct FastlyFile {
    pub service_id: String,
    #[serde(default = "fastly_token_env")]
    pub token_env: String,
    #[serde(default = "fastly_api")]
    pub api: String,
    #[serde(default = "yes")]
    pub soft: bool,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PurgeBy {
    #[default]
    Tags,
    Urls,
}

#[derive(Debug, Deserialize)]
pub struct CloudflareFile {
    pub zone_id: String,
    #[serde(default = "cloudflare_token_env")]
    pub token_env: String,
    #[serde(default = "cloudflare_api")]
    pub api: String,
    #[serde(default)]
    pub by: PurgeBy,
    /// The site's address as clients reach rentcache through Cloudflare, for purges by URL.
    #[serde(default)]
    pub public_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct WebhookFile {
    pub url: String,
    #[serde(default)]
    pub token_env: Option<String>,
    #[serde(default = "webhook_body")]
    pub body: String,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct SurrogateKeysFile {
    /// Empty: no header.
    pub header: String,
    pub separator: String,
    pub max_bytes: Size,
}

impl Default for SurrogateKeysFile {
    fn default() -> Self {
        SurrogateKeysFile {
            header: "Surrogate-Key".into(),
            separator: " ".into(),
            max_bytes: Size(16 * 1024),
        }
    }
}

impl Default for CorsFile {
    fn default() -> Self {
        CorsFile {
            allowed_origins: Vec::new(),
            max_age: Dur::secs(3600),
            timing_allow_origin: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct KeyFile {
    pub drop_params: Vec<String>,
    pub params_from_headers: Vec<String>,
}

impl Default for KeyFile {
    fn default() -> Self {
        KeyFile {
            drop_params: ["utm_*", "fbclid", "gclid", "msclkid", "_"]
                .map(String::from)
                .to_vec(),
            params_from_headers: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Forced,
    HonorOrigin,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BodyCheck {
    #[default]
    Any,
    JsonArray,
    /// Property media: a JSON array of items with base64 files, or one file's bare base64.
    Media,
}

#[derive(Debug, Deserialize)]
pub struct RouteFile {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchFile,
    #[serde(default)]
    pub mode: Mode,
    pub ttl: Dur,
    #[serde(default)]
    pub stale_while_revalidate: Dur,
    #[serde(default)]
    pub stale_if_error: Dur,
    #[serde(default)]
    pub browser_max_age: Dur,
    pub cdn_max_age: Option<Dur>,
    pub include_params: Option<Vec<String>>,
    pub exclude_params: Option<Vec<String>>,
    #[serde(default)]
    pub key_headers: BTreeMap<String, Vec<String>>,
    #[serde(default = "default_statuses")]
    pub cacheable_statuses: Vec<u16>,
    #[serde(default)]
    pub body: BodyCheck,
    #[serde(default)]
    pub pass_through_methods: MethodsFile,
    pub upstream_timeout: Option<Dur>,
    #[serde(default)]
    pub watch_changes: bool,
    #[serde(default = "yes")]
    pub compress: bool,
    pub latency_target: Option<LatencyTargetFile>,
}

/// `pass_through_methods`: a list, or `any`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MethodsFile {
    Named(String),
    List(Vec<String>),
}

impl Default for MethodsFile {
    fn default() -> Self {
        MethodsFile::List(Vec::new())
    }
}

fn default_statuses() -> Vec<u16> {
    vec![200]
}

#[derive(Debug, Deserialize, Default)]
pub struct MatchFile {
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    #[serde(default)]
    pub query: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub query_present: Vec<String>,
    #[serde(default)]
    pub query_absent: Vec<String>,
}

/// A YAML scalar read as text, so `featured: 1` and `featured: "1"` mean the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

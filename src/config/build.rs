//! Rules that span fields, and resolution of the file format into [`Config`].

use std::net::SocketAddr;
use std::time::Duration;

use super::file::RedisFile;
use super::file::{FileConfig, Mode, RouteFile};
use super::load::Problems;
use super::locate::KeyPath;
use super::{
    Admin, ApiBase, Budget, Cdn, CdnPurge, Config, Cors, Dependency, KeyRules, Media, Memory,
    ParamFilter, ParamPattern, PathMatch, PurgeProvider, Redis, RedisNodes, RefreshAhead, Route,
    RouteMatch, Server, SurrogateKeys, Tls, Upstream, Variant, Warm, WarmList,
};

/// TinyUFO weighs entries in u16 units; with KiB units one object can be at most 64 MiB.
pub const MAX_MEMORY_OBJECT: u64 = (u16::MAX as u64) << 10;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Bounds of keys that a year (the limit of every duration) would still make harmful: a
/// request, a shutdown or a fill would be allowed to hang that long.
pub const MAX_CONNECT_TIMEOUT: Duration = MINUTE;
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub const MAX_WAIT: Duration = HOUR;
pub const MAX_QUEUE_WAIT: Duration = MINUTE;
pub const MAX_REDIS_TIMEOUT: Duration = MINUTE;
/// Counts the runtime allocates for up front (threads, semaphore permits, queue slots).
pub const MAX_THREADS: usize = 256;
pub const MAX_CONCURRENT: usize = 100_000;
pub const MAX_QUEUE_SIZE: usize = 1_000_000;

/// Records a problem at `at` when `d` is longer than `max`.
fn at_most(d: Duration, max: Duration, at: KeyPath, p: &mut Problems) {
    if d > max {
        p.push((
            at,
            format!(
                "{} is longer than {}, the most it may be",
                super::units::show_duration(d),
                super::units::show_duration(max)
            ),
        ));
    }
}

/// Records a problem at `at` when the count `n` is larger than `max`.
fn count_at_most(n: usize, max: usize, at: KeyPath, p: &mut Problems) {
    if n > max {
        p.push((at, format!("{n} is more than {max}, the most it may be")));
    }
}

/// Builds the resolved config, recording problems; the result is only meaningful when no
/// problem was recorded.
pub fn build(f: &FileConfig, source: &str, routes_reported: bool, p: &mut Problems) -> Config {
    // Everything derived from a config (remembered keys, rendered heads, counters) is
    // tagged with its generation: unlike an address, it is never reused by a later config.
    static GENERATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let root = KeyPath::root();
    Config {
        generation: GENERATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        source: source.to_string(),
        server: server(f, &root.key("server"), p),
        admin: admin(f, &root.key("admin"), p),
        upstream: upstream(f, &root.key("upstream"), p),
        memory: memory(f, &root.key("memory"), p),
        redis: f.redis.as_ref().map(|r| redis(r, &root.key("redis"), p)),
        cors: cors(f, &root.key("cors"), p),
        cdn: cdn(f, &root.key("cdn"), p),
        key: key_rules(f, &root.key("key"), p),
        dependencies: dependencies(f, &root.key("dependencies"), p),
        warm: warm(f, &root.key("warm"), p),
        media: media(f, &root.key("media"), p),
        refresh_ahead: RefreshAhead {
            hot_threshold: f.refresh_ahead.hot_threshold,
            lead: f.refresh_ahead.lead.0,
        },
        access_log: access_log(f, &root.key("access_log"), p),
        console: console(f, &root.key("console"), p),
        routes: routes(f, &root.key("routes"), routes_reported, p),
    }
}

fn access_log(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> super::AccessLogConfig {
    let a = &f.access_log;
    let format = match a.format.as_str() {
        "json" => super::LogFormat::Json,
        "combined" => super::LogFormat::Combined,
        other => {
            p.push((
                path.key("format"),
                format!("`{other}`: use json or combined"),
            ));
            super::LogFormat::Json
        }
    };
    if !(a.sample > 0.0 && a.sample <= 1.0) {
        p.push((
            path.key("sample"),
            "must be more than 0 and at most 1 (the share of requests logged)".into(),
        ));
    }
    if a.queue == 0 {
        p.push((path.key("queue"), "must be at least 1".into()));
    }
    count_at_most(a.queue, MAX_QUEUE_SIZE, path.key("queue"), p);
    super::AccessLogConfig {
        to: match a.to.trim() {
            "" | "off" => None,
            "stdout" | "-" => Some(super::LogTarget::Stdout),
            file => Some(super::LogTarget::File(file.into())),
        },
        format,
        sample: a.sample,
        queue: a.queue,
    }
}

fn console(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> super::Console {
    let c = &f.console;
    if !(c.staleness_budget > 0.0 && c.staleness_budget < 1.0) {
        p.push((
            path.key("staleness_budget"),
            "must be a chance between 0 and 1, e.g. 0.01 for 1%".into(),
        ));
    }
    super::Console {
        staleness_budget: c.staleness_budget,
        min_refreshes: c.min_refreshes,
    }
}

/// A route's `latency_target`: exactly one percentile, with a limit above 0.
fn latency_target(
    t: &super::file::LatencyTargetFile,
    path: &KeyPath,
    p: &mut Problems,
) -> Option<super::LatencyTarget> {
    let given: Vec<(f64, Duration)> = [
        (0.5, t.p50),
        (0.9, t.p90),
        (0.95, t.p95),
        (0.99, t.p99),
        (0.999, t.p999),
    ]
    .into_iter()
    .filter_map(|(q, d)| d.map(|d| (q, d.0)))
    .collect();
    match given.as_slice() {
        [(quantile, limit)] if !limit.is_zero() => Some(super::LatencyTarget {
            quantile: *quantile,
            limit: *limit,
        }),
        [_] => {
            p.push((path.clone(), "the limit must be more than 0".into()));
            None
        }
        _ => {
            p.push((
                path.clone(),
                "give one percentile and its limit: p50, p90, p95, p99 or p999, e.g. {p99: 10ms}"
                    .into(),
            ));
            None
        }
    }
}

fn server(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Server {
    let s = &f.server;
    if s.listen.is_empty() {
        p.push((path.key("listen"), "at least one address is needed".into()));
    }
    for (i, addr) in s.listen.iter().enumerate() {
        if addr.parse::<SocketAddr>().is_err() {
            p.push((
                path.key("listen").index(i),
                format!("`{addr}` is not an address such as 0.0.0.0:8080 or [::1]:8080"),
            ));
        }
    }
    if s.threads == 0 {
        p.push((path.key("threads"), "must be at least 1".into()));
    }
    count_at_most(s.threads, MAX_THREADS, path.key("threads"), p);
    at_most(s.grace_period.0, MAX_WAIT, path.key("grace_period"), p);
    at_most(s.header_timeout.0, MAX_WAIT, path.key("header_timeout"), p);
    if s.header_timeout.0.is_zero() {
        p.push((path.key("header_timeout"), "must be more than 0".into()));
    }
    if s.compression_level > 9 {
        p.push((path.key("compression_level"), "must be 0 (off) to 9".into()));
    }
    let tls = s.tls.as_ref().map(|t| {
        let at = path.key("tls");
        if t.listen.is_empty() {
            p.push((at.key("listen"), "at least one address is needed".into()));
        }
        for (i, addr) in t.listen.iter().enumerate() {
            if addr.parse::<SocketAddr>().is_err() {
                p.push((
                    at.key("listen").index(i),
                    format!("`{addr}` is not an address such as 0.0.0.0:8443"),
                ));
            } else if s.listen.contains(addr) {
                p.push((
                    at.key("listen").index(i),
                    "is also a plain HTTP listener".into(),
                ));
            }
        }
        if let Err(e) = crate::tls::load_pair(&t.cert, &t.key) {
            p.push((at.key("cert"), e));
        }
        Tls {
            listen: t.listen.clone(),
            cert: t.cert.clone(),
            key: t.key.clone(),
            http2: t.http2,
        }
    });
    Server {
        listen: s.listen.clone(),
        tls,
        threads: s.threads,
        compression_level: s.compression_level,
        grace_period: s.grace_period.0,
        write_buffer: s.write_buffer.0.clamp(1460, 1 << 24) as usize,
        header_timeout: s.header_timeout.0,
    }
}

fn admin(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Admin {
    let a = &f.admin;
    if a.listen.parse::<SocketAddr>().is_err() {
        p.push((
            path.key("listen"),
            format!("`{}` is not an address such as 127.0.0.1:9091", a.listen),
        ));
    }
    if a.token_env.is_empty()
        || !a
            .token_env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        p.push((
            path.key("token_env"),
            "must be an environment variable name".into(),
        ));
    }
    if f.server.listen.contains(&a.listen) {
        p.push((
            path.key("listen"),
            "must differ from server.listen: the public listener never serves admin requests"
                .into(),
        ));
    }
    Admin {
        listen: a.listen.clone(),
        token_env: a.token_env.clone(),
    }
}

fn upstream(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Upstream {
    let u = &f.upstream;
    let mut out = Upstream {
        base_url: u.base_url.clone(),
        tls: true,
        host: String::new(),
        port: 443,
        path_prefix: String::new(),
        verify_tls: u.verify_tls,
        ca_file: u.ca_file.clone(),
        connect_timeout: u.connect_timeout.0,
        read_timeout: u.read_timeout.0,
        token_env: u.token_env.clone(),
        token_in: u.token_in,
        token_name: u.token_name.to_ascii_lowercase(),
        max_concurrent: u.max_concurrent,
        adaptive_concurrency: u.adaptive_concurrency,
        drop_headers: header_names(&u.drop_headers, &path.key("drop_headers"), p),
        cache_control_field: u.cache_control_field.as_ref().and_then(|n| {
            header_names(std::slice::from_ref(n), &path.key("cache_control_field"), p).pop()
        }),
        fill_wait: u.fill_wait.map(|d| d.0).unwrap_or_else(|| {
            u.connect_timeout
                .0
                .checked_add(u.read_timeout.0)
                .and_then(|d| d.checked_add(Duration::from_secs(1)))
                // Only reached with timeouts already reported as too long below.
                .unwrap_or(MAX_WAIT)
        }),
        failure_memo: u.failure_memo.0,
        budget: budget(u, &path.key("budget"), p),
    };
    match u.base_url.parse::<http::Uri>() {
        Ok(uri) => {
            match uri.scheme_str() {
                Some("https") => out.tls = true,
                Some("http") => out.tls = false,
                _ => p.push((
                    path.key("base_url"),
                    format!("`{}` must start with http:// or https://", u.base_url),
                )),
            }
            match uri.host() {
                Some(h) if !h.is_empty() => {
                    out.host = h.trim_start_matches('[').trim_end_matches(']').to_string()
                }
                _ => p.push((path.key("base_url"), "has no host".into())),
            }
            out.port = uri.port_u16().unwrap_or(if out.tls { 443 } else { 80 });
            if uri.query().is_some() {
                p.push((path.key("base_url"), "must not carry a query string".into()));
            }
            out.path_prefix = uri.path().trim_end_matches('/').to_string();
        }
        Err(e) => p.push((
            path.key("base_url"),
            format!("`{}` is not a URL: {e}", u.base_url),
        )),
    }
    let env_ok = !u.token_env.is_empty()
        && u.token_env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !env_ok {
        p.push((
            path.key("token_env"),
            "must be an environment variable name such as RENTMAN_TOKEN".into(),
        ));
    }
    if u.token_name.is_empty() || http::HeaderName::from_bytes(u.token_name.as_bytes()).is_err() {
        p.push((
            path.key("token_name"),
            "must be a valid header and parameter name".into(),
        ));
    }
    if let Some(ca) = &u.ca_file {
        if let Err(why) = check_ca_file(ca) {
            p.push((path.key("ca_file"), why));
        }
    }
    if u.connect_timeout.0.is_zero() {
        p.push((path.key("connect_timeout"), "must be more than 0".into()));
    }
    if u.read_timeout.0.is_zero() {
        p.push((path.key("read_timeout"), "must be more than 0".into()));
    }
    at_most(
        u.connect_timeout.0,
        MAX_CONNECT_TIMEOUT,
        path.key("connect_timeout"),
        p,
    );
    at_most(
        u.read_timeout.0,
        MAX_READ_TIMEOUT,
        path.key("read_timeout"),
        p,
    );
    if let Some(w) = u.fill_wait {
        at_most(w.0, MAX_WAIT, path.key("fill_wait"), p);
    }
    at_most(u.failure_memo.0, MAX_WAIT, path.key("failure_memo"), p);
    count_at_most(
        u.max_concurrent,
        MAX_CONCURRENT,
        path.key("max_concurrent"),
        p,
    );
    out
}

/// Whether a CA file holds certificates the TLS connector can load (it panics on one it
/// cannot, so a bad file must be refused here, with its location).
fn check_ca_file(path: &str) -> Result<(), String> {
    let mut store = pingora::tls::RootCertStore::empty();
    match pingora::tls::load_ca_file_into_store(path, &mut store) {
        Ok(()) if store.is_empty() => Err(format!("`{path}` holds no certificate")),
        Ok(()) => Ok(()),
        Err(e) => Err(format!("`{path}` cannot be used: {e}")),
    }
}

fn budget(u: &super::file::UpstreamFile, path: &KeyPath, p: &mut Problems) -> Budget {
    let b = &u.budget;
    for (name, v) in [("per_second", b.per_second), ("per_minute", b.per_minute)] {
        if !(v >= 0.0 && v.is_finite()) {
            p.push((path.key(name), "must be 0 (no limit) or more".into()));
        }
    }
    let burst = b.burst.unwrap_or(b.per_second.max(1.0));
    if b.burst.is_some() && burst < 1.0 {
        p.push((path.key("burst"), "must be at least 1".into()));
    }
    if let Some(n) = b.queue_size {
        count_at_most(n, MAX_QUEUE_SIZE, path.key("queue_size"), p);
    }
    if let Some(w) = b.queue_wait {
        at_most(w.0, MAX_QUEUE_WAIT, path.key("queue_wait"), p);
    }
    Budget {
        per_second: b.per_second,
        per_minute: b.per_minute,
        burst,
        queue_size: b.queue_size.unwrap_or(100),
        queue_wait: b.queue_wait.map(|d| d.0).unwrap_or(Duration::from_secs(2)),
    }
}

fn warm(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Warm {
    let w = &f.warm;
    for (name, template) in &w.follow {
        if !template.starts_with('/') || !template.contains('{') {
            p.push((
                path.key("follow").key(name),
                format!("`{template}` must be a path with {{field}} placeholders, e.g. /propertyadvertising.php?propref={{propref}}"),
            ));
        }
    }
    let mut lists = Vec::new();
    for (i, l) in w.lists.iter().enumerate() {
        let at = path.key("lists").index(i);
        if l.every.0.is_zero() {
            p.push((at.key("every"), "must be more than 0".into()));
        }
        for (j, u) in l.urls.iter().enumerate() {
            if !u.starts_with('/') {
                p.push((
                    at.key("urls").index(j),
                    format!("`{u}` must be a path starting with /"),
                ));
            }
        }
        for (j, name) in l.follow.iter().enumerate() {
            if !w.follow.contains_key(name) {
                p.push((
                    at.key("follow").index(j),
                    format!("`{name}` is not one of warm.follow"),
                ));
            }
        }
        lists.push(WarmList {
            name: l.name.clone(),
            every: l.every.0,
            urls: l.urls.clone(),
            follow: l.follow.clone(),
        });
    }
    Warm {
        on_start: w.on_start,
        follow: w
            .follow
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        lists,
    }
}

/// Widest variant: a 16,384-pixel side is what the encoders accept.
const MAX_VARIANT_WIDTH: u32 = 16_384;
/// The limit on a JPEG's scans guards the CPU (each scan is a pass over the whole picture);
/// a photo has at most a few dozen, so a larger limit guards nothing.
const MAX_SCANS: u32 = 10_000;

fn media(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Media {
    let m = &f.media;
    let quality_ok = |q: u8, at: KeyPath, p: &mut Problems| {
        if !(1..=100).contains(&q) {
            p.push((at, format!("{q} is not a quality from 1 to 100")));
        }
    };
    quality_ok(m.quality, path.key("quality"), p);
    let mut variants = Vec::new();
    for (name, v) in &m.variants {
        let at = path.key("variants").key(name);
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !name_ok {
            p.push((
                at.clone(),
                format!("`{name}` must be letters, digits, _ or -"),
            ));
        }
        if v.width == 0 || v.width > MAX_VARIANT_WIDTH {
            p.push((
                at.key("width"),
                format!("{} is not a width from 1 to {MAX_VARIANT_WIDTH}", v.width),
            ));
        }
        if let Some(q) = v.quality {
            quality_ok(q, at.key("quality"), p);
        }
        variants.push(Variant {
            name: name.clone(),
            width: v.width,
            quality: v.quality.unwrap_or(m.quality),
        });
    }
    if m.workers == 0 {
        p.push((path.key("workers"), "must be at least 1".into()));
    }
    count_at_most(m.workers, MAX_THREADS, path.key("workers"), p);
    count_at_most(m.queue, MAX_QUEUE_SIZE, path.key("queue"), p);
    if m.max_pixels == 0 {
        p.push((path.key("max_pixels"), "must be more than 0".into()));
    }
    if !(1..=MAX_SCANS).contains(&m.max_scans) {
        p.push((
            path.key("max_scans"),
            format!(
                "{} is not a number of scans from 1 to {MAX_SCANS}",
                m.max_scans
            ),
        ));
    }
    Media {
        variants,
        webp: m.webp,
        workers: m.workers,
        queue: m.queue,
        max_pixels: m.max_pixels,
        max_scans: m.max_scans,
    }
}

fn dependencies(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Vec<Dependency> {
    let mut out = Vec::new();
    for (i, d) in f.dependencies.iter().enumerate() {
        let at = path.index(i);
        match crate::glob::compile(&d.when) {
            Ok(when) => out.push(Dependency {
                when,
                purge: d.purge.clone(),
            }),
            Err(e) => p.push((at.key("when"), e)),
        }
        if d.purge.is_empty() {
            p.push((at.key("purge"), "list at least one tag".into()));
        }
    }
    out
}

fn memory(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Memory {
    let m = &f.memory;
    if m.max_object_bytes.0 > m.max_bytes.0 {
        p.push((
            path.key("max_object_bytes"),
            format!(
                "{} is larger than memory.max_bytes ({})",
                m.max_object_bytes.0, m.max_bytes.0
            ),
        ));
    }
    if m.max_object_bytes.0 > MAX_MEMORY_OBJECT {
        p.push((
            path.key("max_object_bytes"),
            format!("must be at most {MAX_MEMORY_OBJECT} (64 MiB - 64 KiB)"),
        ));
    }
    let body_dir = match m.body_dir.as_deref().map(str::trim) {
        None | Some("" | "auto") => auto_body_dir(),
        Some("memory") => None,
        Some(d) => {
            let dir = std::path::PathBuf::from(d);
            let problem = if !dir.is_absolute() {
                Some("must be an absolute path, `auto` or `memory`".to_string())
            } else if !dir.is_dir() {
                Some(format!("{d} is not a directory"))
            } else {
                // Bodies are kept there in files without a name (`O_TMPFILE`), which some
                // filesystems cannot make.
                takes_unnamed_files(&dir)
                    .err()
                    .map(|e| format!("cannot make an unnamed file in {d} (O_TMPFILE): {e}"))
            };
            match problem {
                Some(why) => {
                    p.push((path.key("body_dir"), why));
                    None
                }
                None => Some(dir),
            }
        }
    };
    Memory {
        max_bytes: m.max_bytes.0,
        max_object_bytes: m.max_object_bytes.0,
        body_dir,
    }
}

/// Where `memory.body_dir: auto` (the default) keeps large bodies: the first of these that is
/// on a disk filesystem and makes unnamed files. `/var/tmp` is meant for files on disk that
/// outlive no reboot; rentcache's outlive not even the process.
pub const AUTO_BODY_DIRS: &[&str] = &["/var/tmp"];

/// The directory `auto` picks, if any: on tmpfs (or ramfs) an unnamed file is shared memory
/// as a sealed memory file is, without the seal, so memory files are kept there.
pub fn auto_body_dir() -> Option<std::path::PathBuf> {
    AUTO_BODY_DIRS
        .iter()
        .map(std::path::PathBuf::from)
        .find(|d| d.is_dir() && !in_memory_filesystem(d) && takes_unnamed_files(d).is_ok())
}

fn takes_unnamed_files(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .map(drop)
}

/// Whether `dir` is on a filesystem that lives in memory (tmpfs, ramfs).
pub fn in_memory_filesystem(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return true;
    };
    // SAFETY: statfs fills the zeroed struct it is given from a valid C string path.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return true;
    }
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.f_type as i64;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}

/// Redis refuses strings above 512 MB.
const MAX_REDIS_OBJECT: u64 = 512 << 20;

fn redis(r: &RedisFile, path: &KeyPath, p: &mut Problems) -> Redis {
    let url_ok = |u: &str| u.starts_with("redis://") || u.starts_with("rediss://");
    let nodes = match (&r.url, r.cluster_urls.is_empty()) {
        (Some(u), true) => {
            if !url_ok(u) {
                p.push((
                    path.key("url"),
                    "must start with redis:// or rediss://".into(),
                ));
            }
            RedisNodes::Single(u.clone())
        }
        (None, false) => {
            for (i, u) in r.cluster_urls.iter().enumerate() {
                if !url_ok(u) {
                    p.push((
                        path.key("cluster_urls").index(i),
                        "must start with redis:// or rediss://".into(),
                    ));
                }
            }
            RedisNodes::Cluster(r.cluster_urls.clone())
        }
        (Some(_), false) => {
            p.push((
                path.key("cluster_urls"),
                "give either url (one server) or cluster_urls (a cluster), not both".into(),
            ));
            RedisNodes::Cluster(Vec::new())
        }
        (None, true) => {
            p.push((
                path.clone(),
                "needs url (one server) or cluster_urls (a cluster); remove the section for memory only".into(),
            ));
            RedisNodes::Cluster(Vec::new())
        }
    };
    if r.prefix.is_empty() || r.prefix.contains(['{', '}', ' ']) {
        p.push((
            path.key("prefix"),
            "must be non-empty, without braces or spaces".into(),
        ));
    }
    for (name, d) in [
        ("connect_timeout", r.connect_timeout),
        ("op_timeout", r.op_timeout),
        ("lease", r.lease),
    ] {
        if d.0.is_zero() {
            p.push((path.key(name), "must be more than 0".into()));
        }
    }
    at_most(
        r.connect_timeout.0,
        MAX_REDIS_TIMEOUT,
        path.key("connect_timeout"),
        p,
    );
    at_most(r.op_timeout.0, MAX_REDIS_TIMEOUT, path.key("op_timeout"), p);
    at_most(r.lease.0, MAX_WAIT, path.key("lease"), p);
    if r.max_object_bytes.0 > MAX_REDIS_OBJECT {
        p.push((
            path.key("max_object_bytes"),
            "must be at most 512MiB (Redis' own limit)".into(),
        ));
    }
    Redis {
        nodes,
        prefix: r.prefix.clone(),
        connect_timeout: r.connect_timeout.0,
        op_timeout: r.op_timeout.0,
        max_object_bytes: r.max_object_bytes.0,
        lease: r.lease.0,
    }
}

fn cors(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Cors {
    let mut out = Cors {
        allowed_origins: Vec::new(),
        any_origin: false,
        max_age: f.cors.max_age.0,
        timing_allow_origin: f.cors.timing_allow_origin,
    };
    for (i, origin) in f.cors.allowed_origins.iter().enumerate() {
        if origin == "*" {
            out.any_origin = true;
            continue;
        }
        let ok = match origin.split_once("://") {
            Some((scheme, rest)) => {
                (scheme == "http" || scheme == "https")
                    && !rest.is_empty()
                    && !rest.contains('/')
                    && !rest.contains('?')
            }
            None => false,
        };
        if ok {
            out.allowed_origins.push(origin.to_ascii_lowercase());
        } else {
            p.push((
                path.key("allowed_origins").index(i),
                format!("`{origin}` is not an origin such as https://www.example.co.uk (no path, no trailing slash) or *"),
            ));
        }
    }
    out
}

/// Header names from the file, each checked.
fn header_names(names: &[String], path: &KeyPath, p: &mut Problems) -> Vec<http::HeaderName> {
    names
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match http::HeaderName::from_bytes(n.as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                p.push((path.index(i), format!("`{n}` is not a header name")));
                None
            }
        })
        .collect()
}

fn cdn(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> Cdn {
    let c = &f.cdn;
    let targeted_field = c.targeted_field.as_ref().and_then(|n| {
        let name = http::HeaderName::from_bytes(n.as_bytes()).ok();
        if name.is_none() {
            p.push((
                path.key("targeted_field"),
                format!("`{n}` is not a header name"),
            ));
        }
        name
    });
    let k = &c.surrogate_keys;
    let kpath = path.key("surrogate_keys");
    let surrogate_keys = if k.header.is_empty() {
        None
    } else {
        match http::HeaderName::from_bytes(k.header.as_bytes()) {
            Ok(header) => Some(SurrogateKeys {
                header,
                separator: k.separator.clone(),
                max_bytes: usize::try_from(k.max_bytes.0).unwrap_or(usize::MAX),
            }),
            Err(_) => {
                p.push((
                    kpath.key("header"),
                    format!("`{}` is not a header name", k.header),
                ));
                None
            }
        }
    };
    if !matches!(k.separator.as_str(), " " | "," | ", ") {
        p.push((
            kpath.key("separator"),
            "must be \" \" (Fastly's Surrogate-Key) or \",\" (Cloudflare's Cache-Tag)".into(),
        ));
    }
    if k.max_bytes.0 < 256 || k.max_bytes.0 > 64 * 1024 {
        p.push((
            kpath.key("max_bytes"),
            "must be within 256 B and 64 KiB".into(),
        ));
    }
    Cdn {
        cache_control: c.cache_control,
        targeted_field,
        surrogate_keys,
        purge: cdn_purge(&c.purge, &path.key("purge"), p),
    }
}

/// An API base URL (`https://api.fastly.com`), or a problem at `path`.
fn api_base(url: &str, path: KeyPath, p: &mut Problems) -> Option<ApiBase> {
    let uri = match url.parse::<http::Uri>() {
        Ok(u) => u,
        Err(e) => {
            p.push((path, format!("`{url}` is not a URL: {e}")));
            return None;
        }
    };
    let tls = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => {
            p.push((
                path,
                format!("`{url}` must start with https:// (or http://)"),
            ));
            return None;
        }
    };
    let Some(host) = uri.host().filter(|h| !h.is_empty()) else {
        p.push((path, format!("`{url}` has no host")));
        return None;
    };
    if uri.query().is_some() {
        p.push((path, "must not carry a query string".into()));
        return None;
    }
    Some(ApiBase {
        tls,
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: uri.port_u16().unwrap_or(if tls { 443 } else { 80 }),
        path: uri.path().trim_end_matches('/').to_string(),
    })
}

fn env_name_ok(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn cdn_purge(f: &super::file::PurgeFile, path: &KeyPath, p: &mut Problems) -> CdnPurge {
    let mut providers = Vec::new();
    let env = |name: &str, at: KeyPath, p: &mut Problems| {
        if !env_name_ok(name) {
            p.push((at, "must be an environment variable name".into()));
        }
        name.to_string()
    };
    if let Some(x) = &f.fastly {
        let at = path.key("fastly");
        let token_env = env(&x.token_env, at.key("token_env"), p);
        let id_ok =
            !x.service_id.is_empty() && x.service_id.chars().all(|c| c.is_ascii_alphanumeric());
        if !id_ok {
            p.push((at.key("service_id"), "must be a Fastly service id".into()));
        }
        if let Some(api) = api_base(&x.api, at.key("api"), p) {
            providers.push(PurgeProvider::Fastly {
                api,
                service_id: x.service_id.clone(),
                token_env,
                soft: x.soft,
            });
        }
    }
    if let Some(x) = &f.cloudflare {
        let at = path.key("cloudflare");
        let token_env = env(&x.token_env, at.key("token_env"), p);
        let id_ok = !x.zone_id.is_empty() && x.zone_id.chars().all(|c| c.is_ascii_alphanumeric());
        if !id_ok {
            p.push((at.key("zone_id"), "must be a Cloudflare zone id".into()));
        }
        let by_urls = match (x.by, &x.public_url) {
            (super::file::PurgeBy::Tags, _) => None,
            (super::file::PurgeBy::Urls, Some(u)) => {
                api_base(u, at.key("public_url"), p).map(|_| u.trim_end_matches('/').to_string())
            }
            (super::file::PurgeBy::Urls, None) => {
                p.push((
                    at.key("public_url"),
                    "is needed to purge by URL: the address clients reach through Cloudflare"
                        .into(),
                ));
                None
            }
        };
        if let Some(api) = api_base(&x.api, at.key("api"), p) {
            providers.push(PurgeProvider::Cloudflare {
                api,
                zone_id: x.zone_id.clone(),
                token_env,
                by_urls,
            });
        }
    }
    if let Some(x) = &f.webhook {
        let at = path.key("webhook");
        let token_env = x.token_env.as_ref().map(|t| env(t, at.key("token_env"), p));
        if let Some(url) = api_base(&x.url, at.key("url"), p) {
            providers.push(PurgeProvider::Webhook {
                url,
                token_env,
                body: x.body.clone(),
            });
        }
    }
    if f.queue_size == 0 || f.queue_size > 1_000_000 {
        p.push((
            path.key("queue_size"),
            "must be within 1 and 1000000".into(),
        ));
    }
    at_most(
        f.batch_delay.0,
        Duration::from_secs(60),
        path.key("batch_delay"),
        p,
    );
    if f.retries > 20 {
        p.push((path.key("retries"), "must be at most 20".into()));
    }
    CdnPurge {
        providers,
        queue_size: f.queue_size.clamp(1, 1_000_000),
        batch_delay: f.batch_delay.0,
        retries: f.retries.min(20),
    }
}

fn param_pattern(text: &str, at: KeyPath, p: &mut Problems) -> ParamPattern {
    match text.split_once('*') {
        None => ParamPattern::Exact(text.to_string()),
        Some((prefix, "")) => ParamPattern::Prefix(prefix.to_string()),
        Some(_) => {
            p.push((
                at,
                format!("`{text}`: only a trailing * is supported (as in utm_*)"),
            ));
            ParamPattern::Exact(text.to_string())
        }
    }
}

fn key_rules(f: &FileConfig, path: &KeyPath, p: &mut Problems) -> KeyRules {
    let drop_params = f
        .key
        .drop_params
        .iter()
        .enumerate()
        .map(|(i, s)| param_pattern(s, path.key("drop_params").index(i), p))
        .collect();
    for (i, h) in f.key.params_from_headers.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            p.push((
                path.key("params_from_headers").index(i),
                format!("`{h}` is not a valid header name"),
            ));
        }
    }
    let params_from_headers: Vec<String> = f
        .key
        .params_from_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    KeyRules {
        drop_params,
        params_from_header_names: params_from_headers
            .iter()
            .filter_map(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
            .collect(),
        params_from_headers,
    }
}

fn routes(f: &FileConfig, path: &KeyPath, reported: bool, p: &mut Problems) -> Vec<Route> {
    if f.routes.is_empty() && !reported {
        p.push((
            path.clone(),
            "at least one route is needed (requests that match no route get 404)".into(),
        ));
    }
    // (index in the file, route) so that messages use the file's numbering.
    let mut out: Vec<(usize, Route)> = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        let Some(r) = r else { continue };
        let rp = path.index(i);
        let route = route(r, &rp, p);
        if let Some((prev, _)) = out.iter().find(|(_, o)| o.name == route.name) {
            p.push((
                rp.key("name"),
                format!("`{}` is already the name of routes[{prev}]", route.name),
            ));
        }
        if let Some((prev, o)) = out.iter().find(|(_, o)| shadows(o, &route)) {
            p.push((
                rp.key("match"),
                format!(
                    "never used: routes[{prev}] (`{}`) matches every request this route matches, and comes first",
                    o.name
                ),
            ));
        }
        out.push((i, route));
    }
    out.into_iter().map(|(_, r)| r).collect()
}

/// `earlier` catches everything `later` would (same or wider path, no conditions of its own).
fn shadows(earlier: &Route, later: &Route) -> bool {
    let m = &earlier.matcher;
    if !m.query_equals.is_empty() || !m.query_present.is_empty() || !m.query_absent.is_empty() {
        return false;
    }
    match (&m.path, &later.matcher.path) {
        (PathMatch::Exact(a), PathMatch::Exact(b)) => a == b,
        (PathMatch::Prefix(a), PathMatch::Exact(b)) => b.starts_with(a.as_str()),
        (PathMatch::Prefix(a), PathMatch::Prefix(b)) => b.starts_with(a.as_str()),
        (PathMatch::Exact(_), PathMatch::Prefix(_)) => false,
    }
}

fn route(r: &RouteFile, path: &KeyPath, p: &mut Problems) -> Route {
    let name_ok = !r.name.is_empty()
        && r.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !name_ok {
        p.push((
            path.key("name"),
            format!("`{}` must be non-empty letters, digits, _ or -", r.name),
        ));
    }

    let mp = path.key("match");
    let path_match = match (&r.matcher.path, &r.matcher.path_prefix) {
        (Some(exact), None) => PathMatch::Exact(exact.clone()),
        (None, Some(prefix)) => PathMatch::Prefix(prefix.clone()),
        (Some(_), Some(_)) => {
            p.push((
                mp.clone(),
                "give either `path` or `path_prefix`, not both".into(),
            ));
            PathMatch::Prefix(String::new())
        }
        (None, None) => {
            p.push((mp.clone(), "needs `path` (exact) or `path_prefix`".into()));
            PathMatch::Prefix(String::new())
        }
    };
    let (PathMatch::Exact(s) | PathMatch::Prefix(s)) = &path_match;
    if !s.is_empty() && !s.starts_with('/') {
        let which = if matches!(path_match, PathMatch::Exact(_)) {
            "path"
        } else {
            "path_prefix"
        };
        p.push((mp.key(which), format!("`{s}` must start with /")));
    }

    let params = match (&r.include_params, &r.exclude_params) {
        (Some(_), Some(_)) => {
            p.push((
                path.key("exclude_params"),
                "give either include_params or exclude_params, not both".into(),
            ));
            ParamFilter::All
        }
        (Some(inc), None) => ParamFilter::Include(inc.clone()),
        (None, Some(exc)) => ParamFilter::Exclude(
            exc.iter()
                .enumerate()
                .map(|(i, s)| param_pattern(s, path.key("exclude_params").index(i), p))
                .collect(),
        ),
        (None, None) => ParamFilter::All,
    };

    let mut key_headers = Vec::new();
    for (name, values) in &r.key_headers {
        let at = path.key("key_headers").key(name);
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            p.push((at, format!("`{name}` is not a valid header name")));
        } else if values.is_empty() {
            p.push((at, "list the values that change the response".into()));
        } else {
            key_headers.push((
                name.to_ascii_lowercase(),
                values.iter().map(|v| v.to_ascii_lowercase()).collect(),
            ));
        }
    }

    if r.cacheable_statuses.is_empty() {
        p.push((
            path.key("cacheable_statuses"),
            "list at least one status (usually 200)".into(),
        ));
    }
    for (i, s) in r.cacheable_statuses.iter().enumerate() {
        if !(200..=599).contains(s) || *s == 206 || *s == 304 {
            p.push((
                path.key("cacheable_statuses").index(i),
                format!("{s} cannot be cached (use final statuses 200-599, not 206 or 304)"),
            ));
        }
    }

    let mut methods = Vec::new();
    let any = match &r.pass_through_methods {
        super::file::MethodsFile::Named(n) if n == "any" => true,
        super::file::MethodsFile::Named(n) => {
            p.push((
                path.key("pass_through_methods"),
                format!("`{n}`: give a list of methods, or `any`"),
            ));
            false
        }
        super::file::MethodsFile::List(_) => false,
    };
    let listed: &[String] = match &r.pass_through_methods {
        super::file::MethodsFile::List(l) => l,
        super::file::MethodsFile::Named(_) => &[],
    };
    for (i, m) in listed.iter().enumerate() {
        let at = path.key("pass_through_methods").index(i);
        match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(method) if method == http::Method::GET || method == http::Method::HEAD => p.push((
                at,
                format!("{m} is always allowed; list only other methods"),
            )),
            Ok(method) => methods.push(method),
            Err(_) => p.push((at, format!("`{m}` is not an HTTP method"))),
        }
    }
    if (any || !methods.is_empty()) && r.mode != Mode::HonorOrigin {
        p.push((
            path.key("pass_through_methods"),
            "only an honor_origin route may pass other methods through".into(),
        ));
    }
    if let Some(t) = r.upstream_timeout {
        at_most(t.0, MAX_READ_TIMEOUT, path.key("upstream_timeout"), p);
    }
    if r.mode == Mode::Forced && r.ttl.0.is_zero() && !r.stale_if_error.0.is_zero() {
        p.push((
            path.key("stale_if_error"),
            "a route with ttl 0 is never stored, so it has nothing stale to serve".into(),
        ));
    }

    Route {
        name: r.name.clone(),
        matcher: RouteMatch {
            path: path_match,
            query_equals: r
                .matcher
                .query
                .iter()
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect(),
            query_present: r.matcher.query_present.clone(),
            query_absent: r.matcher.query_absent.clone(),
        },
        mode: r.mode,
        ttl: r.ttl.0,
        stale_while_revalidate: r.stale_while_revalidate.0,
        stale_if_error: r.stale_if_error.0,
        browser_max_age: r.browser_max_age.0,
        cdn_max_age: r.cdn_max_age.map(|d| d.0).unwrap_or(r.ttl.0),
        params,
        key_header_names: key_headers
            .iter()
            .filter_map(|(n, _)| http::HeaderName::from_bytes(n.as_bytes()).ok())
            .collect(),
        key_headers,
        cacheable_statuses: r.cacheable_statuses.clone(),
        body: r.body,
        pass_through_methods: if any {
            crate::config::PassThrough::Any
        } else {
            crate::config::PassThrough::Methods(methods)
        },
        compress: r.compress,
        upstream_timeout: r.upstream_timeout.map(|d| d.0),
        watch_changes: r.watch_changes,
        latency_target: r
            .latency_target
            .as_ref()
            .and_then(|t| latency_target(t, &path.key("latency_target"), p)),
    }
}

//! The access log: one line per request, as JSON or a combined-like text line, written by a
//! thread of its own. A request only hands its facts to a bounded queue (no formatting, no
//! I/O, no allocation beyond reference counts); when the writer falls behind, lines are
//! dropped and counted (`rentcache_access_log_dropped_total`) rather than slowing requests.
//!
//! The line names the canonical key, never the raw target (a client may have put a token
//! in it). A file is reopened on SIGUSR1, after `logrotate` (or anyone) renamed it.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::RouteStats;
use crate::config::{AccessLogConfig, LogFormat, LogTarget};
use crate::policy::key::Canonical;
use crate::policy::outer::CacheStatus;

/// One request's facts.
pub struct Line {
    pub time: SystemTime,
    pub client: Option<SocketAddr>,
    pub method: http::Method,
    pub key: Option<Arc<Canonical>>,
    pub route: Arc<RouteStats>,
    pub status: u16,
    pub cache_status: CacheStatus,
    pub tier: Option<&'static str>,
    pub bytes: u64,
    pub total: Duration,
    pub upstream: Option<Duration>,
}

/// How often the writer looks for lines when the queue was empty: with the default queue of
/// 10,000 lines, up to 200,000 requests a second are logged without a drop.
const DRAIN_EVERY: Duration = Duration::from_millis(50);

pub struct AccessLog {
    queue: SyncSender<Line>,
    /// 1 in `every` requests is logged (1: all).
    every: u32,
    reopen: Arc<AtomicBool>,
    dropped: prometheus::IntCounter,
}

thread_local! {
    static SEED: Cell<u32> = const { Cell::new(0x9e37_79b9) };
}

/// A cheap per-thread pseudo-random draw (xorshift32), for sampling.
fn draw() -> u32 {
    SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.set(x);
        x
    })
}

impl AccessLog {
    /// Starts the writer thread; None when the log is off (or its file cannot be opened,
    /// which is logged).
    pub fn start(c: &AccessLogConfig, dropped: prometheus::IntCounter) -> Option<AccessLog> {
        let target = c.to.clone()?;
        let out = match open(&target) {
            Ok(o) => o,
            Err(e) => {
                log::error!("access log off: {e}");
                return None;
            }
        };
        let (queue, rx) = std::sync::mpsc::sync_channel(c.queue.max(1));
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            rx,
            target,
            format: c.format,
            out,
            reopen: reopen.clone(),
        };
        if let Err(e) = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run())
        {
            log::error!("access log off: cannot start its writer ({e})");
            return None;
        }
        let every = (1.0 / c.sample).round().clamp(1.0, f64::from(u32::MAX)) as u32;
        Some(AccessLog {
            queue,
            every,
            reopen,
            dropped,
        })
    }

    /// Queues a request's line (or drops it when sampled out or the queue is full).
    pub fn offer(&self, line: Line) {
        if self.every > 1 && !draw().is_multiple_of(self.every) {
            return;
        }
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Asks the writer to reopen its file (after a rename).
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
    }
}

enum Out {
    Stdout(std::io::Stdout),
    File(BufWriter<File>),
}

impl Out {
    fn write_line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            // Stdout is line-buffered by the standard library.
            Out::Stdout(s) => s.lock().write_all(line),
            Out::File(f) => f.write_all(line),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Out::Stdout(s) => s.flush(),
            Out::File(f) => f.flush(),
        }
    }
}

fn open(target: &LogTarget) -> Result<Out, String> {
    match target {
        LogTarget::Stdout => Ok(Out::Stdout(std::io::stdout())),
        LogTarget::File(path) => OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(|f| Out::File(BufWriter::with_capacity(64 << 10, f)))
            .map_err(|e| format!("cannot open {}: {e}", path.display())),
    }
}

struct Writer {
    rx: Receiver<Line>,
    target: LogTarget,
    format: LogFormat,
    out: Out,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        let mut buf = Vec::with_capacity(512);
        let mut failed = false;
        loop {
            if self.reopen.swap(false, Relaxed) {
                let _ = self.out.flush();
                match open(&self.target) {
                    Ok(o) => {
                        self.out = o;
                        failed = false;
                        log::info!("access log reopened");
                    }
                    Err(e) => log::error!("access log not reopened: {e}"),
                }
            }
            // The writer never blocks on the queue: a request that queues a line must not
            // have to wake a sleeping thread (a system call on the hit path). It drains what
            // is there, flushes, and looks again a moment later.
            let line = match self.rx.try_recv() {
                Ok(l) => l,
                Err(TryRecvError::Empty) => {
                    let _ = self.out.flush();
                    std::thread::sleep(DRAIN_EVERY);
                    continue;
                }
                Err(TryRecvError::Disconnected) => {
                    let _ = self.out.flush();
                    return;
                }
            };
            buf.clear();
            format_line(&mut buf, &line, self.format);
            if let Err(e) = self.out.write_line(&buf) {
                if !std::mem::replace(&mut failed, true) {
                    log::error!("access log write failed: {e} (lines are lost until it reopens)");
                }
            }
        }
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    time: String,
    client: Option<String>,
    method: &'a str,
    key: &'a str,
    route: &'a str,
    status: u16,
    cache: &'a str,
    tier: Option<&'a str>,
    bytes: u64,
    total_ms: f64,
    upstream_ms: Option<f64>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// `t` as `2026-11-30T22:30:00.123Z` (UTC).
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Appends the line for `l` in `format`, with its newline.
pub fn format_line(buf: &mut Vec<u8>, l: &Line, format: LogFormat) {
    let key = l.key.as_ref().map_or("-", |k| k.key.as_str());
    let time = rfc3339_millis(l.time);
    match format {
        LogFormat::Json => {
            let j = JsonLine {
                time,
                client: l.client.map(|c| c.to_string()),
                method: l.method.as_str(),
                key,
                route: &l.route.name,
                status: l.status,
                cache: l.cache_status.as_str(),
                tier: l.tier,
                bytes: l.bytes,
                total_ms: ms(l.total),
                upstream_ms: l.upstream.map(ms),
            };
            if serde_json::to_writer(&mut *buf, &j).is_err() {
                buf.clear();
            }
        }
        LogFormat::Combined => {
            let client = l.client.map_or("-".to_string(), |c| c.ip().to_string());
            // The key has no spaces but between its target and its key headers: quoted.
            let _ = write!(
                buf,
                "{client} - - [{time}] \"{} {}\" {} {} route={} cache={} tier={} total_ms={} upstream_ms={}",
                l.method,
                key.replace('"', "%22"),
                l.status,
                l.bytes,
                l.route.name,
                l.cache_status.as_str(),
                l.tier.unwrap_or("-"),
                ms(l.total),
                l.upstream.map_or("-".to_string(), |u| ms(u).to_string()),
            );
        }
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Line {
        Line {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_541_800),
            client: Some("127.0.0.1:40000".parse().unwrap()),
            method: http::Method::GET,
            key: Some(Arc::new(Canonical {
                route: 0,
                key: "/propertyadvertising.php?propref=7".into(),
                target: "/propertyadvertising.php?propref=7".into(),
                headers: Vec::new(),
                hash: [0; 16],
            })),
            route: Arc::new(RouteStats::new("property")),
            status: 200,
            cache_status: CacheStatus::Hit,
            tier: Some("memory"),
            bytes: 5120,
            total: Duration::from_micros(213),
            upstream: None,
        }
    }

    #[test]
    fn json_lines_carry_every_field() {
        let mut buf = Vec::new();
        format_line(&mut buf, &line(), LogFormat::Json);
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["time"], "2025-11-30T22:30:00.000Z");
        assert_eq!(v["client"], "127.0.0.1:40000");
        assert_eq!(v["key"], "/propertyadvertising.php?propref=7");
        assert_eq!(v["route"], "property");
        assert_eq!(v["cache"], "HIT");
        assert_eq!(v["tier"], "memory");
        assert_eq!(v["bytes"], 5120);
        assert_eq!(v["total_ms"], 0.213);
        assert!(v["upstream_ms"].is_null());
    }

    #[test]
    fn times_are_utc_rfc3339() {
        let t = |s: u64| rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(s));
        assert_eq!(t(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(t(1_798_761_599_999), "2026-12-31T23:59:59.999Z");
    }

    #[test]
    fn combined_lines_read_like_nginx_ones() {
        let mut buf = Vec::new();
        let mut l = line();
        l.upstream = Some(Duration::from_millis(350));
        l.cache_status = CacheStatus::Miss;
        l.tier = None;
        format_line(&mut buf, &l, LogFormat::Combined);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "127.0.0.1 - - [2025-11-30T22:30:00.000Z] \"GET /propertyadvertising.php?propref=7\" \
             200 5120 route=property cache=MISS tier=- total_ms=0.213 upstream_ms=350\n"
        );
    }
}

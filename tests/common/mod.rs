//! Shared test harness: starts the real `rentcache` binary (simulator, proxy) and `redis-server`
//! on free loopback ports and hands back small blocking HTTP helpers.
//!
//! Readiness is detected by connecting to the port (or by the child exiting), never by sleeping
//! a fixed time. A child that fails to bind (a port race with another test) is restarted on a
//! new port.

#![allow(dead_code)]

pub mod browser;
pub mod capture;
pub mod origin;

use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_rentcache");

/// Generous upper bound for a child to start listening (2 shared cores, debug build).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (released before returning; callers retry on a bind race).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// A scratch directory unique to this test process and call.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rentcache-test-{}-{}-{}",
        std::process::id(),
        tag,
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A child process whose stdout/stderr go to files (so tests can read its logs); killed on drop.
pub struct Proc {
    pub child: Child,
    pub log_path: PathBuf,
    pub name: String,
}

impl Proc {
    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log_path) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. "HUP", "TERM") with the `kill` command.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} {} failed", self.child.id());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `program args` with output to a log file in `dir` and waits until it listens on
/// `port`. Returns None if the process exited first (e.g. the port was taken).
pub fn spawn_listening(
    name: &str,
    program: &str,
    args: &[String],
    envs: &[(String, String)],
    dir: &Path,
    port: u16,
) -> Option<Proc> {
    let log_path = dir.join(format!("{name}.log"));
    let log = File::create(&log_path).expect("create log file");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .current_dir(dir);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut proc = Proc {
        child,
        log_path,
        name: name.to_string(),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if !proc.is_running() {
            eprintln!("{name} exited before listening on {port}:\n{}", proc.logs());
            return None;
        }
        if listens_on(proc.child.id(), port) {
            return Some(proc);
        }
        assert!(
            Instant::now() < deadline,
            "{name} did not listen on {port} within {START_TIMEOUT:?}:\n{}",
            proc.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` itself holds the listening socket on 127.0.0.1:`port`. A connection
/// that succeeds is not enough: tests run in parallel, and a port one of them was handed may
/// be listened on by another's child while this one's is failing to bind it.
fn listens_on(pid: u32, port: u16) -> bool {
    let local = format!("0100007F:{port:04X}");
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl, local_address, rem_address, st (0A: LISTEN), ..., inode (10th).
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| format!("socket:[{}]", f[9]))
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

/// Waits until `proc` listens on `port`; false if the process exits first.
pub fn wait_for_port(proc: &mut Proc, port: u16) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if !proc.is_running() {
            eprintln!("{} exited:\n{}", proc.name, proc.logs());
            return false;
        }
        if listens_on(proc.child.id(), port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} did not listen on {port}:\n{}", proc.name, proc.logs());
}

/// The test certificate authority (`tests/tls/`), given to rentcache as `upstream.ca_file`.
pub const TEST_CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem");

/// A test certificate and its key (`origin`, `unknown-ca`, `wrong-name`; see tests/tls).
pub fn test_cert(name: &str) -> (String, String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls");
    (format!("{dir}/{name}.pem"), format!("{dir}/{name}.key"))
}

/// `rentcache demo` (simulator, proxy, admin listener and agent website) on free ports,
/// simulated latency 0; retried a few times, as a free port may be taken before the demo
/// binds it.
pub struct Demo {
    pub proc: Proc,
    pub port: u16,
    pub admin: u16,
    pub site: u16,
}

impl Demo {
    pub fn start(envs: &[(String, String)]) -> Demo {
        let dir = scratch_dir("demo");
        for _ in 0..5 {
            let (port, admin, site) = (free_port(), free_port(), free_port());
            let args: Vec<String> = [
                "demo",
                "--port",
                &port.to_string(),
                "--sim-port",
                &free_port().to_string(),
                "--admin-port",
                &admin.to_string(),
                "--site-port",
                &site.to_string(),
                "--latency-ms",
                "0",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            // The demo's last listener to come up is the site; then the proxy must answer.
            if let Some(mut proc) = spawn_listening("demo", BIN, &args, envs, &dir, site) {
                if wait_for_port(&mut proc, port) && wait_for_port(&mut proc, admin) {
                    return Demo {
                        proc,
                        port,
                        admin,
                        site,
                    };
                }
            }
        }
        panic!("the demo did not start in 5 tries");
    }
}

/// A running simulator: plain HTTP on `port` (for its controls), and HTTPS on `tls_port`
/// with the test CA's certificate for 127.0.0.1, as Rentman is reached in production.
pub struct Sim {
    pub proc: Proc,
    pub port: u16,
    pub tls_port: u16,
}

impl Sim {
    /// Starts `rentcache simulate` plus `extra` arguments (zero latency unless `extra` says
    /// otherwise).
    pub fn start(extra: &[&str]) -> Sim {
        let dir = scratch_dir("sim");
        let (cert, key) = test_cert("origin");
        for _ in 0..5 {
            let port = free_port();
            let tls_port = free_port();
            let mut args: Vec<String> = vec!["simulate".into(), "--port".into(), port.to_string()];
            args.extend([
                "--tls-port".into(),
                tls_port.to_string(),
                "--tls-cert".into(),
                cert.clone(),
                "--tls-key".into(),
                key.clone(),
            ]);
            if !extra.contains(&"--latency-ms") {
                args.extend(["--latency-ms".to_string(), "0".to_string()]);
            }
            args.extend(extra.iter().map(|s| s.to_string()));
            if let Some(mut proc) = spawn_listening("simulator", BIN, &args, &[], &dir, port) {
                if wait_for_port(&mut proc, tls_port) {
                    return Sim {
                        proc,
                        port,
                        tls_port,
                    };
                }
            }
        }
        panic!("simulator failed to start 5 times");
    }

    /// The plain-HTTP address (the simulator's controls, and an `http://` upstream).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTPS address, for an upstream reached as Rentman is.
    pub fn tls_base(&self) -> String {
        format!("https://127.0.0.1:{}", self.tls_port)
    }

    /// The simulator's request counters (`GET /__sim/stats`).
    pub fn stats(&self) -> serde_json::Value {
        let r = get(&format!("{}/__sim/stats", self.base()), &[]);
        assert_eq!(r.status, 200, "sim stats: {}", r.text());
        serde_json::from_slice(&r.body).expect("sim stats JSON")
    }

    /// Total upstream calls the simulator answered on the two API endpoints.
    pub fn api_calls(&self) -> u64 {
        self.stats()["total"].as_u64().expect("stats.total")
    }

    /// Changes the simulator's behaviour at runtime (`POST /__sim/faults`).
    pub fn set(&self, settings: serde_json::Value) {
        let r = request(
            "POST",
            &format!("{}/__sim/faults", self.base()),
            &[("content-type", "application/json")],
            settings.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "sim faults: {}", r.text());
    }
}

/// A plain HTTP response as the tests see it.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// First value of a header (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections_per_host(64)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into()
    })
}

/// Sends a request with any method; panics on transport errors (never on HTTP statuses).
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Like [`request`] but returns transport errors.
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    let mut builder = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).unwrap())
        .uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let req = builder.body(body.to_vec()).map_err(|e| e.to_string())?;
    let mut resp = agent().run(req).map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = if method == "HEAD" {
        Vec::new()
    } else {
        resp.body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .map_err(|e| e.to_string())?
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Resp {
    request("GET", url, headers, b"")
}

/// The shipped `conf/rentcache.yaml` with `{{PORT}}` as the listen port and `{{ORIGIN}}` as
/// the upstream, for tests that want the real Rentman routes.
pub fn shipped_config() -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/conf/rentcache.yaml"))
        .expect("read conf/rentcache.yaml");
    text.replace(
        "listen: [\"0.0.0.0:8080\"]",
        "listen: [\"127.0.0.1:{{PORT}}\"]",
    )
    .replace(
        "listen: \"127.0.0.1:9091\"",
        "listen: \"127.0.0.1:{{ADMIN}}\"",
    )
    // Tests count upstream calls: no warming unless a test asks for it.
    .replace("on_start: true", "on_start: false")
    .replace(
        "base_url: https://www.rentman.online",
        "base_url: {{ORIGIN}}",
    )
}

/// `config` with the test CA as `upstream.ca_file` (block or flow style `upstream:`).
pub fn with_test_ca(config: &str) -> String {
    let line = format!("ca_file: \"{TEST_CA}\"");
    if config.contains("upstream: {") {
        config.replacen("upstream: {", &format!("upstream: {{{line}, "), 1)
    } else if config.contains("\nupstream:\n") {
        config.replacen("\nupstream:\n", &format!("\nupstream:\n  {line}\n"), 1)
    } else {
        format!("{config}\nupstream:\n  {line}\n")
    }
}

/// A running proxy.
pub struct Proxy {
    pub proc: Proc,
    pub port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
}

impl Proxy {
    /// Starts `rentcache serve` with `config` (placeholders `{{PORT}}`, `{{ORIGIN}}`, and
    /// `{{ADMIN}}` for the admin port, added when the config has no `admin:` section) in front
    /// of `origin`, with extra environment variables.
    pub fn start(config: &str, origin: &str, envs: &[(&str, &str)]) -> Proxy {
        let mut config = config.to_string();
        if origin.starts_with("https://") {
            config = with_test_ca(&config);
        }
        if !config.contains("\nadmin:") && !config.starts_with("admin:") {
            config.push_str("\nadmin:\n  listen: \"127.0.0.1:{{ADMIN}}\"\n");
        }
        let dir = scratch_dir("proxy");
        let config_path = dir.join("rentcache.yaml");
        let mut envs: Vec<(String, String)> = envs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if !envs.iter().any(|(k, _)| k == "RUST_LOG") {
            envs.push(("RUST_LOG".into(), "info".into()));
        }
        for _ in 0..5 {
            let port = free_port();
            let admin_port = free_port();
            let text = config
                .replace("{{PORT}}", &port.to_string())
                .replace("{{ADMIN}}", &admin_port.to_string())
                .replace("{{ORIGIN}}", origin);
            std::fs::write(&config_path, text).expect("write config");
            let args: Vec<String> = vec![
                "serve".into(),
                "-c".into(),
                config_path.to_string_lossy().into_owned(),
            ];
            if let Some(proc) = spawn_listening("proxy", BIN, &args, &envs, &dir, port) {
                let mut proxy = Proxy {
                    proc,
                    port,
                    admin_port,
                    config_path: config_path.clone(),
                };
                // The admin listener starts with the proxy; a bind race there means a retry.
                if wait_for_port(&mut proxy.proc, admin_port) {
                    return proxy;
                }
            }
        }
        panic!("proxy failed to start 5 times");
    }

    /// The shipped Rentman routes in front of `sim`, over HTTPS.
    pub fn rentman(sim: &Sim, envs: &[(&str, &str)]) -> Proxy {
        Proxy::start(&shipped_config(), &sim.tls_base(), envs)
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path_and_query)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// `POST` JSON to an admin endpoint with the bearer `token`.
    pub fn admin_post(&self, path: &str, token: &str, body: serde_json::Value) -> Resp {
        let auth = format!("Bearer {token}");
        request(
            "POST",
            &self.admin_url(path),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.to_string().as_bytes(),
        )
    }

    pub fn get(&self, path_and_query: &str) -> Resp {
        get(&self.url(path_and_query), &[])
    }
}

/// The decoded body of a gzip answer.
pub fn gunzip(body: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(body)
        .read_to_end(&mut plain)
        .expect("a gzip body");
    plain
}

/// Runs `f` on `n` threads at once (released together) and returns their results.
pub fn concurrently<T: Send + 'static>(
    n: usize,
    f: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let f = std::sync::Arc::new(f);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let f = f.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                f(i)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

/// Repeats `probe` (with a short pause) until it returns Some, for at most `limit`; for
/// waiting on a state change such as an entry expiring, never as a fixed sleep.
pub fn eventually<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Path of a binary on PATH, or a panic that says what to install.
fn require_binary(name: &str) -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p.to_string_lossy().into_owned(),
        None => panic!(
            "`{name}` is not installed: these tests start their own Redis. \
             Install it (Debian: apt-get install -y redis-server) and run again."
        ),
    }
}

/// A `redis-server` of our own on a free loopback port (never the machine's shared 6379).
pub struct RedisServer {
    pub proc: Option<Proc>,
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// On a given port (which must be free).
    pub fn start_on(port: u16) -> RedisServer {
        let mut r = RedisServer {
            proc: None,
            port,
            dir: scratch_dir("redis"),
            extra: Vec::new(),
        };
        assert!(r.launch(), "redis-server did not start on {port}");
        r
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        let dir = scratch_dir("redis");
        for _ in 0..5 {
            let mut r = RedisServer {
                proc: None,
                port: free_port(),
                dir: dir.clone(),
                extra: extra.iter().map(|s| s.to_string()).collect(),
            };
            if r.launch() {
                return r;
            }
        }
        panic!("redis-server failed to start 5 times");
    }

    fn launch(&mut self) -> bool {
        let bin = require_binary("redis-server");
        let mut args: Vec<String> = [
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            &self.dir.to_string_lossy(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(self.extra.iter().cloned());
        let name = format!("redis-{}", self.port);
        self.proc = spawn_listening(&name, &bin, &args, &[], &self.dir, self.port);
        self.proc.is_some()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server abruptly (as a crash would).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts it again on the same port (empty).
    pub fn restart(&mut self) {
        self.kill();
        assert!(
            self.launch(),
            "redis-server did not restart on {}",
            self.port
        );
    }

    /// `SET key value` with arbitrary bytes (redis-cli arguments cannot hold NUL).
    pub fn set_raw(&self, key: &str, value: &[u8]) {
        use std::io::{Read as _, Write};
        let mut cmd = Vec::new();
        cmd.extend_from_slice(b"*3\r\n$3\r\nSET\r\n");
        for part in [key.as_bytes(), value] {
            cmd.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
            cmd.extend_from_slice(part);
            cmd.extend_from_slice(b"\r\n");
        }
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        s.write_all(&cmd).expect("write");
        let mut reply = [0u8; 5];
        s.read_exact(&mut reply).expect("read reply");
        assert_eq!(&reply, b"+OK\r\n");
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }
}

pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new(require_binary("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A 3-master Redis Cluster on loopback ports.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|i| {
                let conf = format!("nodes-{}-{i}.conf", std::process::id());
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = redis_cli(nodes[0].port, &args);
        assert!(out.contains("[OK]"), "cluster create failed:\n{out}");
        for n in &nodes {
            eventually(Duration::from_secs(30), || {
                redis_cli(n.port, &["cluster", "info"])
                    .contains("cluster_state:ok")
                    .then_some(())
            });
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}

/// The shipped config plus a `redis:` section for `url` (or a cluster when `cluster`).
pub fn config_with_redis(urls: &[String], cluster: bool) -> String {
    let section = if cluster {
        let list: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        format!("redis:\n  cluster_urls: [{}]\n", list.join(", "))
    } else {
        format!("redis:\n  url: \"{}\"\n", urls[0])
    };
    format!("{}\n{section}", shipped_config())
}

/// Sends raw HTTP/1.1 bytes (for methods a client library refuses, such as PURGE) and returns
/// the whole answer as text; the request should carry `Connection: close`.
pub fn raw_http(port: u16, request: &str) -> String {
    use std::io::Write;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The proxy's Redis state as `/ready` reports it.
pub fn redis_state(p: &Proxy) -> String {
    let r = get(&p.admin_url("/ready"), &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    match &v["redis"] {
        serde_json::Value::String(s) => s.clone(),
        // Connected but not yet listening for invalidations: memory copies promoted now
        // would be distrusted (dropped) once the subscription comes.
        other if other["invalidations"] == "not subscribed" => "up, not subscribed".into(),
        other => other["state"].as_str().unwrap_or("?").to_string(),
    }
}

/// Until `p` is connected to Redis and listening for invalidations.
pub fn wait_redis_up(p: &Proxy) {
    eventually(Duration::from_secs(30), || {
        (redis_state(p) == "up").then_some(())
    });
}

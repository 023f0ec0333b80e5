//! A small origin for failure tests: it answers like Rentman (JSON arrays, media items with
//! base64 JPEGs, or bare base64), over HTTP or HTTPS, and misbehaves per key on command: any
//! status, 429 with or without `Retry-After`, resets before the header or mid-body, stalls,
//! bodies shorter than their `Content-Length`, bad-token bodies, and `103 Early Hints` before
//! its answer. A key is the value of the request's `propref` or `filename` parameter; the
//! origin counts the requests it receives per key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the origin answers one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// This status with a small HTML page, and `Retry-After` when given.
    Status(u16, Option<u64>),
    /// Closes the connection (RST) without a byte.
    ResetBeforeHeader,
    /// A good header and half the body, then RST.
    ResetMidBody,
    /// Never answers.
    Stall,
    /// On a connection that already carried a request, closes it without a byte (the
    /// origin's idle timeout firing as the request arrives); on a new one, a good answer.
    CloseIfReused,
    /// A good header and half the body, then a normal close.
    ShortBody,
    /// HTTP 200 with this body, as Rentman answers a bad token.
    BadToken(&'static str),
    /// `103 Early Hints` first, then a good 200 (`None`) or this status.
    EarlyHints(Option<u16>),
    /// A well-formed answer with these headers: a JSON array of the key's record, which
    /// shows the value of the request header `echo` names (for `Vary`), and the request's
    /// method. Status 304 sends no body.
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        echo: Option<String>,
    },
}

/// An answer with `headers` (see `Fault::Answer`).
pub fn answer(status: u16, headers: &[(&str, &str)], echo: Option<&str>) -> Fault {
    Fault::Answer {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        echo: echo.map(str::to_string),
    }
}

/// The JPEG the media answers carry (a valid header and an end marker are all a body
/// check looks at).
pub const JPEG: &[u8] = &[
    0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xFF, 0xD9,
];

/// A request's method and its headers (lower-case names).
pub type SeenRequest = (String, Vec<(String, String)>);

struct State {
    faults: Mutex<HashMap<String, Fault>>,
    calls: Mutex<HashMap<String, u64>>,
    /// The last request's method and headers, per key.
    last: Mutex<HashMap<String, SeenRequest>>,
    /// Part of every good body, so that a refreshed answer differs from an older one.
    version: AtomicU64,
}

/// A running origin; it stops with the test process.
pub struct Origin {
    pub port: u16,
    pub tls: bool,
    state: Arc<State>,
}

impl Origin {
    /// Plain HTTP.
    pub fn http() -> Origin {
        Origin::start(None)
    }

    /// HTTPS with one of the test certificates (`origin`, `unknown-ca`, `wrong-name`).
    pub fn https(cert: &str) -> Origin {
        Origin::start(Some(cert))
    }

    fn start(cert: Option<&str>) -> Origin {
        let acceptor = cert.map(|name| {
            let (cert, key) = super::test_cert(name);
            pingora::tls::install_default_crypto_provider();
            let (certs, key) = pingora::tls::load_certs_and_key_files(&cert, &key)
                .expect("test certificate")
                .expect("a certificate and a key");
            let config = pingora::tls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .expect("a usable certificate");
            pingora::tls::TlsAcceptor::from(Arc::new(config))
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an origin");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("local address").port();
        let state = Arc::new(State {
            faults: Mutex::new(HashMap::new()),
            calls: Mutex::new(HashMap::new()),
            last: Mutex::new(HashMap::new()),
            version: AtomicU64::new(1),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("origin runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("tokio listener");
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = shared.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // A second handle on the socket, to reset it whatever wraps it.
                        let Ok(raw) = tcp.into_std() else { return };
                        let Ok(resetter) = raw.try_clone() else {
                            return;
                        };
                        let Ok(tcp) = TcpStream::from_std(raw) else {
                            return;
                        };
                        match acceptor {
                            None => serve(tcp, resetter, &state).await,
                            Some(a) => {
                                if let Ok(tls) = a.accept(tcp).await {
                                    serve(tls, resetter, &state).await;
                                }
                            }
                        }
                    });
                }
            });
        });
        Origin {
            port,
            tls: cert.is_some(),
            state,
        }
    }

    pub fn base(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// How `key` is answered from now on (`None`: well).
    pub fn set(&self, key: &str, fault: Option<Fault>) {
        let mut faults = self.state.faults.lock().unwrap();
        match fault {
            Some(f) => faults.insert(key.to_string(), f),
            None => faults.remove(key),
        };
    }

    /// The method and headers (lower-case names) of the last request for `key`.
    pub fn last_request(&self, key: &str) -> Option<SeenRequest> {
        self.state.last.lock().unwrap().get(key).cloned()
    }

    /// Requests received for `key`.
    pub fn calls(&self, key: &str) -> u64 {
        self.state
            .calls
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

/// Whether `body` is a good answer for `key` (what the origin sends when well): a JSON array
/// of its one record, a media item with a JPEG, or (`bare`) the JPEG's base64.
pub fn is_good_body(body: &[u8], key: &str, bare: bool) -> bool {
    if bare {
        let text: Vec<u8> = body
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        return base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok_and(|b| b == JPEG);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_slice::<serde_json::Value>(body)
    else {
        return false;
    };
    items.len() == 1
        && items[0]["propref"] == key
        && items[0]
            .get("base64data")
            .and_then(|v| v.as_str())
            .is_none_or(|b| {
                base64::engine::general_purpose::STANDARD
                    .decode(b.replace('\n', ""))
                    .is_ok_and(|b| b == JPEG)
            })
}

/// One request head: its method, target and headers, lower-cased names.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

async fn read_head<S: AsyncRead + Unpin>(s: &mut S, buf: &mut Vec<u8>) -> Option<Head> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = req.parse(buf) {
            let head = Head {
                method: req.method.unwrap_or("GET").to_string(),
                target: req.path.unwrap_or("/").to_string(),
                headers: req
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect(),
            };
            buf.drain(..len);
            return Some(head);
        }
        let mut chunk = [0u8; 4096];
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The `propref` or `filename` parameter of a target.
fn key_of(target: &str) -> String {
    let query = target.split_once('?').map_or("", |(_, q)| q);
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "propref" || *k == "filename")
        .map(|(_, v)| v.to_string())
        .unwrap_or_default()
}

fn good_body(target: &str, key: &str, bare: bool, version: u64) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(JPEG);
    if bare {
        return b64.into_bytes();
    }
    let record = if target.starts_with("/propertymedia.php") {
        serde_json::json!([{"propref": key, "filename": format!("{key}.jpg"), "caption": null,
            "base64data": b64, "imgorder": "1", "v": version}])
    } else {
        serde_json::json!([{"propref": key, "displayaddress": format!("{key} High Street"),
            "v": version}])
    };
    record.to_string().into_bytes()
}

/// Makes the connection end with a reset (RST) rather than a normal close when its last
/// handle is dropped: SO_LINGER with a zero timeout.
fn reset(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc_linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a correctly sized option value.
    let rc = unsafe {
        setsockopt(
            s.as_raw_fd(),
            SOL_SOCKET,
            SO_LINGER,
            &linger as *const libc_linger as *const std::ffi::c_void,
            std::mem::size_of::<libc_linger>() as u32,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_LINGER): {}",
        std::io::Error::last_os_error()
    );
}

#[repr(C)]
struct libc_linger {
    l_onoff: i32,
    l_linger: i32,
}

const SOL_SOCKET: i32 = 1;
const SO_LINGER: i32 = 13;

extern "C" {
    fn setsockopt(fd: i32, level: i32, name: i32, value: *const std::ffi::c_void, len: u32) -> i32;
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    resetter: std::net::TcpStream,
    state: &State,
) {
    let mut buf = Vec::new();
    let mut answered = 0u64;
    while let Some(head) = read_head(&mut s, &mut buf).await {
        let key = key_of(&head.target);
        *state.calls.lock().unwrap().entry(key.clone()).or_insert(0) += 1;
        state
            .last
            .lock()
            .unwrap()
            .insert(key.clone(), (head.method.clone(), head.headers.clone()));
        // A request with a body (a POST passed through): read past it.
        let body_len: usize = head
            .headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < body_len {
            let mut chunk = [0u8; 4096];
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..body_len);
        let fault = state.faults.lock().unwrap().get(&key).cloned();
        let bare = head
            .headers
            .iter()
            .any(|(n, v)| n == "accept" && v.contains("application/base64"));
        let version = state.version.fetch_add(1, Ordering::Relaxed);
        let good = good_body(&head.target, &key, bare, version);
        let content_type = if bare {
            "text/plain"
        } else {
            "application/json"
        };
        let ok_head = |len: usize| {
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\n\r\n"
            )
        };
        let out: Vec<u8> = match fault {
            None => [ok_head(good.len()).into_bytes(), good].concat(),
            Some(Fault::CloseIfReused) if answered > 0 => {
                let _ = s.shutdown().await;
                return;
            }
            Some(Fault::CloseIfReused) => [ok_head(good.len()).into_bytes(), good].concat(),
            Some(Fault::Status(code, retry_after)) => {
                let body = format!("<html><body>error {code}</body></html>");
                let retry = retry_after
                    .map(|s| format!("retry-after: {s}\r\n"))
                    .unwrap_or_default();
                format!(
                    "HTTP/1.1 {code} Oops\r\ncontent-type: text/html\r\n{retry}content-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            }
            Some(Fault::ResetBeforeHeader) => {
                reset(&resetter);
                return;
            }
            Some(Fault::ResetMidBody) | Some(Fault::ShortBody) => {
                let half = [
                    ok_head(good.len()).into_bytes(),
                    good[..good.len() / 2].to_vec(),
                ]
                .concat();
                let _ = s.write_all(&half).await;
                let _ = s.flush().await;
                if fault == Some(Fault::ResetMidBody) {
                    reset(&resetter);
                } else {
                    let _ = s.shutdown().await;
                }
                return;
            }
            Some(Fault::Stall) => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Some(Fault::BadToken(body)) => {
                [ok_head(body.len()).into_bytes(), body.as_bytes().to_vec()].concat()
            }
            Some(Fault::Answer {
                status,
                headers,
                echo,
            }) => {
                let echoed = echo.as_ref().map(|name| {
                    head.headers
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| v.as_str())
                        .collect::<Vec<_>>()
                        .join(",")
                });
                let body = if status == 304 {
                    String::new()
                } else {
                    serde_json::json!([{"propref": key, "echo": echoed, "method": head.method,
                        "v": version}])
                    .to_string()
                };
                let mut out = format!("HTTP/1.1 {status} X\r\n");
                let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
                if !has("content-type") && status != 304 {
                    out.push_str("content-type: application/json\r\n");
                }
                for (k, v) in &headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                if status != 304 && !has("content-length") {
                    out.push_str(&format!("content-length: {}\r\n", body.len()));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                out.into_bytes()
            }
            Some(Fault::EarlyHints(then)) => {
                let hints = b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n";
                let _ = s.write_all(hints).await;
                let _ = s.flush().await;
                let rest = match then {
                    None => [ok_head(good.len()).into_bytes(), good].concat(),
                    Some(code) => {
                        format!("HTTP/1.1 {code} Oops\r\ncontent-length: 0\r\n\r\n").into_bytes()
                    }
                };
                rest
            }
        };
        if s.write_all(&out).await.is_err() || s.flush().await.is_err() {
            return;
        }
        answered += 1;
    }
}

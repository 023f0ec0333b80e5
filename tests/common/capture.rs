//! A fake HTTP API that records every request it gets (for checking the exact requests
//! rentcache sends to third parties, such as CDN purge APIs) and answers with a status the
//! test chooses.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub method: String,
    pub path: String,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Captured {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

pub struct CaptureServer {
    pub port: u16,
    got: Arc<Mutex<Vec<Captured>>>,
    /// Statuses for the next answers (then 200).
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl CaptureServer {
    pub fn start() -> CaptureServer {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let port = std_listener.local_addr().expect("address").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let (g, sc) = (got.clone(), script.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let Ok((mut s, _)) = listener.accept().await else {
                        continue;
                    };
                    let (g, sc) = (g.clone(), sc.clone());
                    tokio::spawn(async move {
                        let mut buf = Vec::new();
                        loop {
                            // One request: head, then Content-Length bytes of body.
                            let (head_len, method, path, headers) = loop {
                                let mut hs = [httparse::EMPTY_HEADER; 64];
                                let mut req = httparse::Request::new(&mut hs);
                                if let Ok(httparse::Status::Complete(n)) = req.parse(&buf) {
                                    let headers: Vec<(String, String)> = req
                                        .headers
                                        .iter()
                                        .map(|h| {
                                            (
                                                h.name.to_ascii_lowercase(),
                                                String::from_utf8_lossy(h.value).into_owned(),
                                            )
                                        })
                                        .collect();
                                    break (
                                        n,
                                        req.method.unwrap_or("").to_string(),
                                        req.path.unwrap_or("").to_string(),
                                        headers,
                                    );
                                }
                                let mut chunk = [0u8; 4096];
                                match s.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            };
                            let len: usize = headers
                                .iter()
                                .find(|(k, _)| k == "content-length")
                                .and_then(|(_, v)| v.trim().parse().ok())
                                .unwrap_or(0);
                            while buf.len() < head_len + len {
                                let mut chunk = [0u8; 4096];
                                match s.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                                }
                            }
                            let body = buf[head_len..head_len + len].to_vec();
                            buf.drain(..head_len + len);
                            g.lock().unwrap().push(Captured {
                                method,
                                path,
                                headers,
                                body,
                            });
                            let status = sc.lock().unwrap().pop_front().unwrap_or(200);
                            let answer = "{\"success\": true}";
                            let out = format!(
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                                answer.len()
                            );
                            if s.write_all(out.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
        });
        CaptureServer { port, got, script }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The next answers' statuses, in order (then 200s).
    pub fn answer_next_with(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses.iter().copied());
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.got.lock().unwrap().clone()
    }
}

//! What the simulator answers to a request, without any network code (the Pingora glue is
//! in `server.rs`), so the whole behaviour can be exercised in unit tests.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;

use super::api::{Body, Query};
use super::options::BadTokenBody;
use super::request::{Request, TokenState};
use super::stats::{ADVERTISING, MEDIA};
use super::{php_json, Simulator};

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body: body.into(),
        }
    }

    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> Response {
        Response::new(
            status,
            "application/json",
            serde_json::to_vec(value).expect("JSON to memory"),
        )
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Either an answer, or a dropped connection (the reset fault).
#[derive(Debug)]
pub enum Outcome {
    Respond(Response),
    Reset,
}

const HTML: &str = "text/html; charset=UTF-8";
const ADVERTISING_PATH: &str = "/propertyadvertising.php";
const MEDIA_PATH: &str = "/propertymedia.php";
pub const CONTROL_PREFIX: &str = "/__sim/";

impl Simulator {
    /// Answers one request.
    pub async fn handle(&self, req: Request) -> Outcome {
        match req.path() {
            ADVERTISING_PATH => self.api(req, ADVERTISING).await,
            MEDIA_PATH => self.api(req, MEDIA).await,
            p if p.starts_with(CONTROL_PREFIX) => Outcome::Respond(self.control(&req)),
            _ => Outcome::Respond(Response::new(404, HTML, not_found_html(req.path()))),
        }
    }

    /// The two API endpoints, with their faults applied in the order a client would meet
    /// them: refused at the door (405, 429), cut off (reset), held up (stall, latency), then
    /// answered badly (5xx, bad token) or properly.
    async fn api(&self, req: Request, endpoint: &'static str) -> Outcome {
        let settings = self.settings.read().clone();
        let token = TokenState::check(&req, settings.token.as_deref());
        let mut tracked = self.stats.begin(endpoint, &req, token);

        if req.method != "GET" {
            tracked.finish(Some(405));
            return Outcome::Respond(
                Response::new(405, HTML, status_html(405)).with("Allow", "GET"),
            );
        }
        if let Some(limit) = settings.rate_limit {
            if !self.limiter.admit(limit, Instant::now()) {
                tracked.fault("rate_limit");
                tracked.finish(Some(429));
                let resp = Response::new(429, HTML, status_html(429))
                    .with("Retry-After", settings.retry_after.to_string());
                return Outcome::Respond(resp);
            }
        }
        if self.dice.roll(settings.reset_rate) {
            tracked.finish(None);
            return Outcome::Reset;
        }
        if self.dice.roll(settings.stall_rate) {
            self.stats.stall();
            tracked.fault("stall");
            tokio::time::sleep(Duration::from_millis(settings.stall_ms)).await;
        }
        let started = Instant::now();

        if self.dice.roll(settings.error_rate) {
            self.wait(&settings, 0, started).await;
            tracked.fault("error");
            tracked.finish(Some(settings.error_status));
            let status = settings.error_status;
            return Outcome::Respond(Response::new(status, HTML, status_html(status)));
        }
        if matches!(token, TokenState::Missing | TokenState::Wrong) {
            self.wait(&settings, 0, started).await;
            tracked.fault("bad_token");
            tracked.finish(Some(200));
            return Outcome::Respond(bad_token_response(settings.bad_token_body));
        }

        let ds = self.data.read().clone();
        let query = if endpoint == ADVERTISING {
            Query::List(req.list_query())
        } else {
            Query::Media(req.media_query())
        };
        let binaries = query.binaries(&ds);
        let body = self.cache.get(&ds, &query).await;
        self.wait(&settings, binaries, started).await;

        let resp = if settings.validators {
            let etag = body.etag.clone();
            let last_modified =
                httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(body.last_modified));
            let resp = if not_modified(&req, &body) {
                Response {
                    status: 304,
                    headers: Vec::new(),
                    body: Bytes::new(),
                }
            } else {
                Response::new(200, body.content_type, body.bytes.clone())
            };
            resp.with("ETag", etag).with("Last-Modified", last_modified)
        } else {
            Response::new(200, body.content_type, body.bytes.clone())
        };
        tracked.finish(Some(resp.status));
        Outcome::Respond(resp)
    }

    /// Sleeps until the sampled time to first byte has passed since `started` (time already
    /// spent building the body counts towards it). Never blocks a thread.
    async fn wait(&self, settings: &super::options::Settings, binaries: usize, started: Instant) {
        let target = self
            .dice
            .latency(settings.latency_ms, settings.latency_sigma, binaries);
        let left = target.saturating_sub(started.elapsed());
        if !left.is_zero() {
            tokio::time::sleep(left).await;
        }
    }

    /// `/__sim/*`: never faulted, never counted.
    fn control(&self, req: &Request) -> Response {
        let name = &req.path()[CONTROL_PREFIX.len()..];
        let method = req.method.as_str();
        match (name, method) {
            ("stats", "GET") => {
                let mut v = self.stats.to_json();
                let (bytes, entries) = self.cache.usage();
                v["body_cache"] = json!({ "bytes": bytes, "entries": entries });
                Response::json(200, &v)
            }
            ("reset", "POST") => {
                self.stats.reset();
                self.limiter.clear();
                Response::json(200, &json!({ "reset": true }))
            }
            ("faults", "GET") => Response::json(200, &*self.settings.read()),
            ("faults", "POST") => {
                let mut settings = self.settings.write();
                match settings.patched(&req.body) {
                    Ok(new) => {
                        log::info!("simulator faults changed: {}", redacted_settings(&new));
                        *settings = new;
                        Response::json(200, &*settings)
                    }
                    Err(e) => Response::json(400, &json!({ "error": e })),
                }
            }
            ("mutate", "POST") => self.mutate(req),
            ("dataset", "GET") => Response::json(200, &self.dataset_summary()),
            ("stats" | "reset" | "faults" | "mutate" | "dataset", _) => {
                Response::json(405, &json!({ "error": "method not allowed" }))
            }
            _ => Response::json(
                404,
                &json!({ "error": format!("no such control endpoint: {}", req.path()) }),
            ),
        }
    }

    fn mutate(&self, req: &Request) -> Response {
        let Some(raw) = req.param("propref") else {
            return Response::json(400, &json!({ "error": "propref is required" }));
        };
        let Ok(id) = raw.trim().parse::<u32>() else {
            return Response::json(404, &json!({ "error": format!("unknown propref {raw}") }));
        };
        let mut data = self.data.write();
        // Copy on write: requests in flight keep the snapshot they started with.
        match Arc::make_mut(&mut *data).mutate(id) {
            Some(p) => {
                log::info!(
                    "simulator mutated propref {id} (version {}, {})",
                    p.version,
                    p.displayprice
                );
                Response::new(
                    200,
                    "application/json",
                    php_json::to_vec(&p.record(None, self.opts.int_flags)),
                )
            }
            None => Response::json(404, &json!({ "error": format!("unknown propref {id}") })),
        }
    }

    /// What a test or benchmark needs to address the data without calling the API (which
    /// would be counted): proprefs, featured ones, media file names.
    fn dataset_summary(&self) -> serde_json::Value {
        let ds = self.data.read().clone();
        let properties: Vec<_> = ds
            .properties
            .iter()
            .map(|p| {
                json!({
                    "propref": p.propref,
                    "rentorbuy": p.rentorbuy,
                    "featured": p.featured,
                    "version": p.version,
                    "media": p.media.iter().map(|m| json!({
                        "filename": m.filename,
                        "imgorder": m.imgorder,
                        "bytes": m.size,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({
            "seed": ds.seed,
            "count": ds.properties.len(),
            "generation": ds.generation,
            "featured": ds.properties.iter().filter(|p| p.featured).map(|p| p.propref).collect::<Vec<_>>(),
            "properties": properties,
        })
    }
}

/// `If-None-Match` decides when present; otherwise `If-Modified-Since` (RFC 9110 13.2.2).
fn not_modified(req: &Request, body: &Body) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        return inm
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == body.etag);
    }
    if let Some(ims) = req.header("if-modified-since") {
        if let Ok(t) = httpdate::parse_http_date(ims.trim()) {
            let since = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            return body.last_modified <= since;
        }
    }
    false
}

fn bad_token_response(kind: BadTokenBody) -> Response {
    match kind {
        BadTokenBody::Empty => Response::new(200, HTML, Bytes::new()),
        BadTokenBody::Text => Response::new(200, HTML, "Invalid token"),
        BadTokenBody::Object => {
            Response::json(200, &json!({ "error": "Invalid or missing token" }))
        }
    }
}

fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

fn status_html(status: u16) -> String {
    let reason = reason(status);
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>{status} {reason}</title>\n\
         </head><body>\n<h1>{reason}</h1>\n<p>The server encountered an error and could not complete your request.</p>\n\
         </body></html>\n"
    )
}

fn not_found_html(path: &str) -> String {
    let path: String = path
        .chars()
        .filter(|c| !matches!(c, '<' | '>' | '&' | '"'))
        .collect();
    format!(
        "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n<title>404 Not Found</title>\n\
         </head><body>\n<h1>Not Found</h1>\n<p>The requested URL {path} was not found on this server.</p>\n\
         </body></html>\n"
    )
}

/// Settings for the log, without the token.
fn redacted_settings(s: &super::options::Settings) -> serde_json::Value {
    let mut v = json!(s);
    if s.token.is_some() {
        v["token"] = json!(super::request::REDACTED);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::super::options::SimOptions;
    use super::*;

    fn sim(f: impl FnOnce(&mut SimOptions)) -> Arc<Simulator> {
        let mut o = SimOptions {
            properties: 20,
            latency_ms: 0,
            ..SimOptions::default()
        };
        f(&mut o);
        Simulator::new(o)
    }

    fn get(target: &str, headers: &[(&str, &str)]) -> Request {
        Request::get(target, headers)
    }

    fn post(target: &str, body: &str) -> Request {
        Request {
            method: "POST".into(),
            body: body.as_bytes().to_vec(),
            ..get(target, &[])
        }
    }

    async fn respond(s: &Simulator, r: Request) -> Response {
        match s.handle(r).await {
            Outcome::Respond(r) => r,
            Outcome::Reset => panic!("unexpected reset"),
        }
    }

    #[tokio::test]
    async fn routes_and_methods() {
        let s = sim(|_| {});
        assert_eq!(
            respond(&s, get("/propertyadvertising.php?noimage=1", &[]))
                .await
                .status,
            200
        );
        assert_eq!(respond(&s, get("/nope", &[])).await.status, 404);
        assert_eq!(respond(&s, get("/", &[])).await.status, 404);
        let r = respond(&s, post("/propertymedia.php", "")).await;
        assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
        assert_eq!(respond(&s, get("/__sim/reset", &[])).await.status, 405);
        assert_eq!(respond(&s, get("/__sim/what", &[])).await.status, 404);
        let stats = s.stats.to_json();
        assert_eq!(stats["total"], 2);
        assert_eq!(stats["statuses"]["405"], 1);
    }

    #[tokio::test]
    async fn faults_in_order() {
        let s = sim(|o| o.reset_rate = 1.0);
        assert!(matches!(
            s.handle(get("/propertymedia.php", &[])).await,
            Outcome::Reset
        ));
        let r = respond(
            &s,
            post(
                "/__sim/faults",
                r#"{"reset_rate":0,"error_rate":1,"error_status":503}"#,
            ),
        )
        .await;
        assert_eq!(r.status, 200);
        let r = respond(&s, get("/propertymedia.php", &[])).await;
        assert_eq!(r.status, 503);
        assert!(std::str::from_utf8(&r.body)
            .unwrap()
            .contains("Service Unavailable"));
        respond(
            &s,
            post(
                "/__sim/faults",
                r#"{"error_rate":0,"rate_limit":1,"retry_after":7}"#,
            ),
        )
        .await;
        assert_eq!(
            respond(&s, get("/propertymedia.php", &[])).await.status,
            200
        );
        let r = respond(&s, get("/propertymedia.php", &[])).await;
        assert_eq!((r.status, r.header("retry-after")), (429, Some("7")));
        respond(
            &s,
            post(
                "/__sim/faults",
                r#"{"rate_limit":null,"stall_rate":1,"stall_ms":1}"#,
            ),
        )
        .await;
        assert_eq!(
            respond(&s, get("/propertymedia.php", &[])).await.status,
            200
        );
        let v = s.stats.to_json();
        assert_eq!(v["resets"], 1);
        assert_eq!(v["stalls"], 1);
        assert_eq!(v["statuses"]["503"], 1);
        assert_eq!(v["statuses"]["429"], 1);
        assert_eq!(v["total"], 5);
    }

    #[tokio::test]
    async fn bad_tokens_get_200_with_a_bad_body() {
        let s = sim(|o| o.token = Some("s3cret".into()));
        let good = respond(
            &s,
            get("/propertyadvertising.php?noimage=1&token=s3cret", &[]),
        )
        .await;
        assert!(good.body.starts_with(b"[{"));
        let good = respond(
            &s,
            get("/propertyadvertising.php?noimage=1", &[("token", "s3cret")]),
        )
        .await;
        assert!(good.body.starts_with(b"[{"));
        let r = respond(&s, get("/propertyadvertising.php?noimage=1", &[])).await;
        assert_eq!((r.status, r.body.len()), (200, 0));
        for (kind, expect) in [
            ("text", "Invalid token"),
            ("object", "{\"error\":\"Invalid or missing token\"}"),
        ] {
            respond(
                &s,
                post(
                    "/__sim/faults",
                    &format!(r#"{{"bad_token_body":"{kind}"}}"#),
                ),
            )
            .await;
            let r = respond(&s, get("/propertyadvertising.php?token=nope", &[])).await;
            assert_eq!(r.status, 200);
            assert_eq!(std::str::from_utf8(&r.body).unwrap(), expect);
        }
        let v = s.stats.to_json();
        assert_eq!(v["bad_token"], 3);
        assert!(!v.to_string().contains("s3cret"));
        assert_eq!(v["recent"][0]["token"], "ok");
        assert_eq!(v["recent"][2]["token"], "missing");
        assert_eq!(v["recent"][3]["token"], "wrong");
    }

    #[tokio::test]
    async fn validators_and_mutate() {
        let s = sim(|o| o.validators = true);
        let target = "/propertyadvertising.php?propref=3&noimage=1";
        let a = respond(&s, get(target, &[])).await;
        let etag = a.header("etag").unwrap().to_string();
        let lm = a.header("last-modified").unwrap().to_string();
        assert!(etag.starts_with('"') && etag.ends_with('"'));
        let r = respond(&s, get(target, &[("if-none-match", &etag)])).await;
        assert_eq!((r.status, r.body.len()), (304, 0));
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        let r = respond(&s, get(target, &[("if-modified-since", &lm)])).await;
        assert_eq!(r.status, 304);
        let r = respond(
            &s,
            get(
                target,
                &[("if-none-match", "\"other\""), ("if-modified-since", &lm)],
            ),
        )
        .await;
        assert_eq!(r.status, 200, "If-None-Match decides when present");

        let m = respond(&s, post("/__sim/mutate?propref=3", "")).await;
        assert_eq!(m.status, 200);
        let rec: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        assert_eq!(rec["propref"], "3");
        let b = respond(&s, get(target, &[("if-none-match", &etag)])).await;
        assert_eq!(b.status, 200);
        assert_ne!(b.header("etag"), Some(etag.as_str()));
        assert_ne!(a.body, b.body);
        assert_eq!(b.body.slice(1..b.body.len() - 1), m.body);
        assert_eq!(
            respond(&s, post("/__sim/mutate?propref=999", ""))
                .await
                .status,
            404
        );
        assert_eq!(respond(&s, post("/__sim/mutate", "")).await.status, 400);
    }

    #[tokio::test]
    async fn no_validators_by_default() {
        let s = sim(|_| {});
        let r = respond(
            &s,
            get(
                "/propertyadvertising.php?propref=1&noimage=1",
                &[("if-none-match", "*")],
            ),
        )
        .await;
        assert_eq!(r.status, 200);
        for h in ["etag", "last-modified", "cache-control"] {
            assert!(r.header(h).is_none(), "{h}");
        }
    }
}

//! The demo's agent website: one page (featured properties with their photos, listings, a
//! property page) served on its own port, calling rentcache from the browser the way a site
//! built on Rentman's API does once its API base URL points at rentcache.

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora::services::listening::Service;

const PAGE: &str = include_str!("site.html");

pub struct DemoSite {
    page: String,
}

impl DemoSite {
    /// The site, calling rentcache at `api` (e.g. `http://127.0.0.1:8080`).
    pub fn new(api: &str) -> DemoSite {
        DemoSite {
            page: PAGE.replace("{{API}}", api),
        }
    }

    pub fn service(self, listen: &str) -> Service<DemoSite> {
        let mut svc = Service::new("demo site".to_string(), self);
        svc.threads = Some(1);
        svc.add_tcp(listen);
        svc
    }
}

fn answer(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let len = http::HeaderValue::from(body.len());
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    h.insert(http::header::CONTENT_LENGTH, len);
    h.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-cache"),
    );
    resp
}

#[async_trait]
impl ServeHttp for DemoSite {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        match s.req_header().uri.path() {
            "/" | "/index.html" => answer(
                StatusCode::OK,
                "text/html; charset=utf-8",
                self.page.clone().into_bytes(),
            ),
            _ => answer(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}

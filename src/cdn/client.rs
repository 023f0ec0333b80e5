//! A small HTTPS client for purge APIs, on pingora's connector (connections pooled, the
//! platform's certificate authorities).

use std::time::Duration;

use bytes::Bytes;
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use pingora::upstreams::peer::HttpPeer;

use super::providers::ApiRequest;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct ApiClient {
    connector: Connector,
}

impl Default for ApiClient {
    fn default() -> Self {
        ApiClient {
            connector: Connector::new(None),
        }
    }
}

impl ApiClient {
    /// Sends `req` (with the token's header, if any) and returns the answer's status.
    pub async fn post(
        &self,
        req: &ApiRequest,
        token: Option<(&'static str, String)>,
    ) -> Result<u16, String> {
        let base = &req.base;
        let addr = tokio::net::lookup_host((base.host.as_str(), base.port))
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", base.host))?
            .next()
            .ok_or_else(|| format!("{} has no address", base.host))?;
        let mut peer = HttpPeer::new(addr, base.tls, base.host.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(TIMEOUT);
        o.total_connection_timeout = Some(TIMEOUT);
        o.read_timeout = Some(TIMEOUT);
        o.write_timeout = Some(TIMEOUT);
        let (mut session, _) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(|e| e.to_string())?;
        let mut h = RequestHeader::build(http::Method::POST, req.path.as_bytes(), Some(8))
            .map_err(|e| e.to_string())?;
        let default_port = if base.tls { 443 } else { 80 };
        let host = if base.port == default_port {
            base.host.clone()
        } else {
            format!("{}:{}", base.host, base.port)
        };
        let _ = h.insert_header(http::header::HOST, host);
        let _ = h.insert_header(http::header::CONTENT_TYPE, "application/json");
        let _ = h.insert_header(http::header::CONTENT_LENGTH, req.body.len());
        for (name, value) in req.headers.iter().cloned().chain(token) {
            let _ = h.insert_header(name, value);
        }
        session
            .write_request_header(Box::new(h))
            .await
            .map_err(|e| e.to_string())?;
        session
            .write_request_body(Bytes::from(req.body.clone()), true)
            .await
            .map_err(|e| e.to_string())?;
        session
            .finish_request_body()
            .await
            .map_err(|e| e.to_string())?;
        let status = loop {
            session
                .read_response_header()
                .await
                .map_err(|e| e.to_string())?;
            match session.response_header() {
                Some(r) if r.status.is_informational() => continue,
                Some(r) => break r.status.as_u16(),
                None => return Err("no response header".into()),
            }
        };
        while let Some(_chunk) = session
            .read_response_body()
            .await
            .map_err(|e| e.to_string())?
        {}
        if session.response_done() {
            self.connector
                .release_http_session(session, &peer, Some(Duration::from_secs(30)))
                .await;
        }
        Ok(status)
    }
}

//! The HTTPS listener: TLS 1.2/1.3 on rustls with the configured certificate, HTTP/2 by ALPN
//! beside HTTP/1.1, and a renewed certificate taken into service without a restart.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use pingora::tls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATH: &str = "/propertyadvertising.php?featured=1&noimage=1";

fn pem_der(path: &str) -> Vec<u8> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path).unwrap();
    let b64: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Accepts any certificate: these tests look at which one is served.
#[derive(Debug)]
struct AnyCert;

impl pingora::tls::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &pingora::tls::CertificateDer<'_>,
        _: &[pingora::tls::CertificateDer<'_>],
        _: &pingora::tls::ServerName<'_>,
        _: &[u8],
        _: pingora::tls::UnixTime,
    ) -> Result<pingora::tls::ServerCertVerified, pingora::tls::RusTlsError> {
        Ok(pingora::tls::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &pingora::tls::CertificateDer<'_>,
        _: &pingora::tls::DigitallySignedStruct,
    ) -> Result<pingora::tls::HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(pingora::tls::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &pingora::tls::CertificateDer<'_>,
        _: &pingora::tls::DigitallySignedStruct,
    ) -> Result<pingora::tls::HandshakeSignatureValid, pingora::tls::RusTlsError> {
        Ok(pingora::tls::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<pingora::tls::SignatureScheme> {
        pingora::tls::CryptoProvider::get_default()
            .unwrap()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client(alpn: &[&[u8]], verify: bool) -> pingora::tls::TlsConnector {
    pingora::tls::install_default_crypto_provider();
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        roots.add(pem_der(TEST_CA).into()).unwrap();
        ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    } else {
        ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    pingora::tls::TlsConnector::from(Arc::new(config))
}

type Tls = pingora::tls::ClientTlsStream<tokio::net::TcpStream>;

async fn connect(port: u16, alpn: &[&[u8]], verify: bool) -> Tls {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = pingora::tls::ServerName::try_from("127.0.0.1").unwrap();
    client(alpn, verify).connect(name, tcp).await.unwrap()
}

fn served_cert(tls: &Tls) -> Vec<u8> {
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn https_with_http2_and_a_certificate_renewed_in_place() {
    let sim = Sim::start(&[]);
    let dir = scratch_dir("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (origin_cert, origin_key) = test_cert("origin");
    std::fs::copy(&origin_cert, &cert).unwrap();
    std::fs::copy(&origin_key, &key).unwrap();
    let tls_port = free_port();
    let text = format!(
        "server:\n  listen: [\"127.0.0.1:{{{{PORT}}}}\"]\n  tls: {{listen: [\"127.0.0.1:{tls_port}\"], cert: \"{}\", key: \"{}\"}}\n\
         upstream: {{base_url: \"{{{{ORIGIN}}}}\"}}\n\
         routes:\n  - {{name: featured, match: {{path: /propertyadvertising.php}}, ttl: 1h, body: json_array, include_params: [featured, noimage]}}\n",
        cert.display(),
        key.display()
    );
    let mut p = Proxy::start(&text, &sim.base(), &[]);
    assert!(wait_for_port(&mut p.proc, tls_port));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // HTTP/1.1 over TLS, the certificate verified against the test CA.
        let mut h1 = connect(tls_port, &[b"http/1.1"], true).await;
        assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        h1.write_all(
            format!("GET {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = h1.read_to_end(&mut answer).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer:.300}");
        assert!(answer.contains("x-cache-status: MISS"), "{answer:.600}");

        // HTTP/2 by ALPN: a real h2 exchange, served from the cache.
        let tls = connect(tls_port, &[b"h2", b"http/1.1"], true).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(served_cert(&tls), pem_der(&origin_cert));
        let (mut sender, conn) = h2::client::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(format!("https://127.0.0.1:{tls_port}{PATH}"))
            .body(())
            .unwrap();
        let (resp, _) = sender.send_request(req, true).unwrap();
        let resp = resp.await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-cache-status"], "HIT");
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.unwrap();
            let _ = body.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert!(got.starts_with(b"["), "{}", String::from_utf8_lossy(&got));

        // A renewal: half-way (a new chain, the old key), the old pair stays in service;
        // once both files are new, new connections get the new certificate.
        let (new_cert, new_key) = test_cert("unknown-ca");
        std::fs::copy(&new_cert, &cert).unwrap();
        let old = connect(tls_port, &[b"http/1.1"], false).await;
        assert_eq!(served_cert(&old), pem_der(&origin_cert));
        std::fs::copy(&new_key, &key).unwrap();
        let renewed = pem_der(&new_cert);
        for _ in 0..600 {
            let tls = connect(tls_port, &[b"http/1.1"], false).await;
            if served_cert(&tls) == renewed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the renewed certificate never came into service");
    });
    assert!(p.proc.logs().contains("TLS certificate reloaded"));
}

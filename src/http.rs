//! The HTTP client for the calls dronectl makes itself: readiness probes of containers and
//! the router's admin API (plain HTTP to an `ip:port`), and analysis checks and Prometheus
//! queries (any `http://` or `https://` URL). hyper's client; TLS is rustls with the
//! platform's trust store, as for the Kubernetes API. One request per connection (nothing
//! stays pooled between calls), a deadline on the whole exchange, bodies up to
//! [`MAX_BODY`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connect, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::ClientConfig;

/// The largest response body read; a longer one is an error.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// A response: status, headers (lower-cased names) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` to `addr` (`host:port`) over plain HTTP with an optional JSON body.
pub async fn request(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Response> {
    request_with_headers(method, addr, path, &[], body, timeout).await
}

/// [`request`] with extra request headers (names and values must be valid header text).
pub async fn request_with_headers(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let uri = parse_uri(&format!("http://{addr}{path}"))?;
    send(HttpConnector::new(), method, uri, headers, body, timeout).await
}

pub async fn get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<Response> {
    request("GET", addr, path, None, timeout).await
}

/// GETs an `http://` or `https://` URL. https servers are verified against the platform's
/// trust store (on Linux the system bundle, or the PEM file `SSL_CERT_FILE` / the
/// directories `SSL_CERT_DIR` name).
pub async fn get_url(url: &url::Url, timeout: Duration) -> std::io::Result<Response> {
    let uri = parse_uri(url.as_str())?;
    match url.scheme() {
        "http" => send(HttpConnector::new(), "GET", uri, &[], None, timeout).await,
        "https" => send(https(platform_tls()?), "GET", uri, &[], None, timeout).await,
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{url}`: the scheme `{other}` is not http or https"),
        )),
    }
}

/// The rustls configuration trusting the platform's roots, built once per process.
fn platform_tls() -> std::io::Result<Arc<ClientConfig>> {
    static TLS: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    TLS.get_or_init(|| {
        use rustls_platform_verifier::BuilderVerifierExt;
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map(|b| Arc::new(b.with_no_client_auth()))
            .map_err(|e| format!("TLS setup: {e}"))
    })
    .clone()
    .map_err(std::io::Error::other)
}

fn https(tls: Arc<ClientConfig>) -> hyper_rustls::HttpsConnector<HttpConnector> {
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(Arc::unwrap_or_clone(tls))
        .https_only()
        .enable_http1()
        .build()
}

fn parse_uri(text: &str) -> std::io::Result<Uri> {
    text.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("`{text}` is not a valid URL: {e}"),
        )
    })
}

async fn send<C>(
    connector: C,
    method: &str,
    uri: Uri,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> std::io::Result<Response>
where
    C: Connect + Clone + Send + Sync + 'static,
{
    let what = format!("{method} {uri}");
    let mut builder = hyper::Request::builder().method(method).uri(uri).header(
        hyper::header::USER_AGENT,
        concat!("dronectl/", env!("CARGO_PKG_VERSION")),
    );
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if body.is_some() {
        builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
    }
    let request = builder
        .body(Full::new(Bytes::copy_from_slice(body.unwrap_or_default())))
        .map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{what}: {e}"))
        })?;
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build::<_, Full<Bytes>>(connector);
    let exchange = async {
        let response = client.request(request).await.map_err(|e| io_error(&e))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| match e.downcast::<hyper::Error>() {
                Ok(e) => io_error(&*e),
                Err(e) => std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
            })?
            .to_bytes()
            .to_vec();
        Ok::<_, std::io::Error>(Response {
            status,
            headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map_err(|e| std::io::Error::new(e.kind(), format!("{what}: {e}"))),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("{what} timed out after {timeout:?}"),
        )),
    }
}

/// The error and its causes as one message, with the kind of the innermost I/O error (a
/// refused connection stays `ConnectionRefused`).
fn io_error(error: &(dyn std::error::Error + 'static)) -> std::io::Error {
    let mut kind = std::io::ErrorKind::Other;
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            kind = io.kind();
        }
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    std::io::Error::new(kind, parts.join(": "))
}

/// The self-signed certificate recipe the integration tests use.
#[cfg(test)]
#[path = "../tests/testsuite/common/tls.rs"]
mod test_tls;

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads one request head (and body of `Content-Length`), answers `reply`.
    async fn serve_once<S>(mut s: S, reply: impl Fn(&str) -> String)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= len || n == 0 {
                    s.write_all(reply(&text).as_bytes()).await.unwrap();
                    s.shutdown().await.unwrap();
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn talks_to_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            serve_once(s, |req| {
                let body = if req.starts_with("PUT /x ")
                    && req.ends_with("{}")
                    && req.contains("authorization: Bearer t")
                {
                    "ok"
                } else {
                    "bad"
                };
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            })
            .await;
        });
        let r = request_with_headers(
            "PUT",
            &addr,
            "/x",
            &[("Authorization", "Bearer t")],
            Some(b"{}"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.text(), "ok");
    }

    #[tokio::test]
    async fn chunked_bodies_statuses_refusals_and_deadlines() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            serve_once(s, |_| "HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n".into()).await;
            // The next connection is accepted and never answered.
            let (_silent, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let r = get(&addr, "/", Duration::from_secs(5)).await.unwrap();
        assert_eq!((r.status, r.text()), (503, "abcde".to_string()));
        assert!(r
            .headers
            .contains(&("transfer-encoding".into(), "chunked".into())));

        let e = get(&addr, "/slow", Duration::from_millis(300))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut, "{e}");
        assert!(e.to_string().contains("timed out after 300ms"), "{e}");

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        let e = get(&closed_addr, "/", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
    }

    /// A self-signed certificate for `localhost` (the integration tests' recipe,
    /// tests/testsuite/common/tls.rs): (cert, key) PEM.
    pub(crate) fn self_signed(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
        let (cert, key) = super::test_tls::self_signed_cert(dir);
        (std::fs::read(cert).unwrap(), std::fs::read(key).unwrap())
    }

    /// An https server on 127.0.0.1 answering every connection with `body`.
    pub(crate) async fn tls_server(cert: &[u8], key: &[u8], body: &'static str) -> u16 {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(cert).unwrap()],
            PrivateKeyDer::from_pem_slice(key).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(s).await {
                        serve_once(tls, |req| {
                            let request_line = req.lines().next().unwrap_or_default().to_string();
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Request: {request_line}\r\n\r\n{body}", body.len())
                        })
                        .await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn speaks_https_and_verifies_the_certificate() {
        use rustls::pki_types::pem::PemObject;
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path());
        let port = tls_server(&cert, &key, "secure").await;
        let uri: Uri = format!("https://localhost:{port}/q?x=1").parse().unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(&cert).unwrap())
            .unwrap();
        let trusting =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let r = send(
            https(Arc::new(trusting)),
            "GET",
            uri.clone(),
            &[],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!((r.status, r.text()), (200, "secure".to_string()));
        assert!(
            r.headers
                .contains(&("x-request".into(), "GET /q?x=1 HTTP/1.1".into())),
            "{:?}",
            r.headers
        );

        // The platform's roots do not include a self-signed certificate.
        let e = get_url(&uri.to_string().parse().unwrap(), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("certificate"), "{e}");
    }
}

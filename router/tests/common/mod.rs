//! Shared helpers: tiny in-process upstreams, a router on port 0, and an HTTP client.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dronectl_router::{bind, RouterHandle, RouterOptions};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// Generous per-request timeout for a loaded 2-core machine.
pub const T: Duration = Duration::from_secs(30);

/// The admin token of every test router.
pub const TOKEN: &str = "test-admin-token-0123456789abcdef0123456789";
/// The header an admin call carries.
pub const ADMIN: &[(&str, &str)] = &[(
    "authorization",
    "Bearer test-admin-token-0123456789abcdef0123456789",
)];

/// A tiny upstream: answers with its name; `/slow?ms=N` sleeps first; `/status/N` answers N;
/// echoes what it saw in `x-seen-*` headers and the request body length in `x-body-len`.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (n, h, f) = (name.to_string(), hits.clone(), in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, f) = (n.clone(), h.clone(), f.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| serve(n.clone(), h.clone(), f.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream {
            name: name.to_string(),
            addr,
            hits,
            in_flight,
            task,
        }
    }

    pub fn ep(&self) -> String {
        self.addr.to_string()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn serve(
    name: String,
    hits: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    in_flight.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let mut status = 200;
    if let Some(ms) = parts
        .uri
        .query()
        .and_then(|q| q.strip_prefix("ms="))
        .and_then(|v| v.parse::<u64>().ok())
    {
        if path.starts_with("/slow") {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if let Some(code) = path.strip_prefix("/status/") {
        status = code.parse().unwrap_or(500);
    }
    let body_len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let mut resp = Response::builder()
        .status(status)
        .header("x-upstream", &name)
        .header(
            "x-seen-path",
            parts.uri.path_and_query().map_or("", |p| p.as_str()),
        )
        .header("x-body-len", body_len.to_string())
        .header("connection", "keep-alive")
        .header("keep-alive", "timeout=5");
    for (seen, h) in [
        ("x-seen-correlation-id", "x-correlation-id"),
        ("x-seen-forwarded-for", "x-forwarded-for"),
        ("x-seen-host", "host"),
        ("x-seen-secret", "x-secret"),
        ("x-seen-token", "x-dronectl-token"),
    ] {
        if let Some(v) = parts.headers.get(h) {
            resp = resp.header(seen, v);
        }
    }
    in_flight.fetch_sub(1, Ordering::SeqCst);
    Ok(resp.body(Full::new(Bytes::from(name))).unwrap())
}

/// A router serving on 127.0.0.1 port 0 (internal, public and admin ports), stopped (and
/// awaited) by `stop()`.
pub struct TestRouter {
    pub data: SocketAddr,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub handle: RouterHandle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), dronectl_router::RouterError>>>,
}

impl TestRouter {
    pub fn opts() -> RouterOptions {
        RouterOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            public_listen: Some("127.0.0.1:0".parse().unwrap()),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            admin_token: Some(dronectl_router::AdminToken::new(TOKEN).unwrap()),
            upstream_timeout: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(20),
            ..RouterOptions::default()
        }
    }

    /// [`Self::opts`] with `config` as the initial routing table.
    pub fn opts_with(config: serde_json::Value) -> RouterOptions {
        RouterOptions {
            initial_config: Some(serde_json::from_value(config).unwrap()),
            ..Self::opts()
        }
    }

    pub async fn start(config: serde_json::Value) -> TestRouter {
        Self::start_with(Self::opts_with(config)).await
    }

    pub async fn start_with(opts: RouterOptions) -> TestRouter {
        let router = bind(opts).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (data, admin, handle) = (router.data_addr(), router.admin_addr(), router.handle());
        let public = router.public_addr().unwrap_or(data);
        let task = tokio::spawn(router.serve(async move {
            let _ = rx.await;
        }));
        TestRouter {
            data,
            public,
            admin,
            handle,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers shutdown; returns the serve task to await.
    pub fn begin_stop(
        &mut self,
    ) -> tokio::task::JoinHandle<Result<(), dronectl_router::RouterError>> {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap()
    }

    pub async fn stop(mut self) {
        let task = self.begin_stop();
        tokio::time::timeout(T, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.data, path)
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{}", self.public, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub async fn send(
    c: &HttpClient,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Resp {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b.body(Full::new(body.into())).unwrap();
    let resp = tokio::time::timeout(T, c.request(req))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = resp.into_parts();
    let bytes = tokio::time::timeout(T, body.collect())
        .await
        .expect("body timed out")
        .expect("body failed")
        .to_bytes();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

pub async fn get(c: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Resp {
    send(c, "GET", url, headers, Bytes::new()).await
}

/// `PUT /config` with the admin token, as a well-behaved writer: a table without a
/// generation gets the applied one + 1.
pub async fn put_config(c: &HttpClient, r: &TestRouter, cfg: &serde_json::Value) -> Resp {
    let mut cfg = cfg.clone();
    if cfg.get("generation").is_none() {
        cfg["generation"] = (r.handle.generation() + 1).into();
    }
    send(
        c,
        "PUT",
        &r.admin_url("/config"),
        &[ADMIN[0], ("content-type", "application/json")],
        cfg.to_string(),
    )
    .await
}

/// A port on 127.0.0.1 where nothing listens (connection refused).
pub fn dead_endpoint() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a.to_string()
}

/// The routing table most tests start from: one service `orders`, one version `v1` with
/// all the traffic, on `a`.
pub fn orders_on(a: &Upstream) -> serde_json::Value {
    serde_json::json!({"services": {"orders": svc(&[("v1", 100, vec![a.ep()])])}})
}

/// `{"versions": {name: {weight, endpoints}}}` helper.
pub fn svc(versions: &[(&str, u8, Vec<String>)]) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    for (name, w, eps) in versions {
        v.insert(
            name.to_string(),
            serde_json::json!({"weight": w, "endpoints": eps}),
        );
    }
    serde_json::json!({ "versions": v })
}

/// An endpoint that accepts connections, reads a little, and closes them without answering
/// (a container dying under a request).
pub struct Slammer {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Slammer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Slammer {
    pub async fn start() -> Slammer {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    let _ = s.read(&mut buf).await;
                    drop(s);
                });
            }
        });
        Slammer { addr, task }
    }

    pub fn ep(&self) -> String {
        self.addr.to_string()
    }
}

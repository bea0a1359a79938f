//! Request batching between services.
//!
//! Server side: every service answers `POST /internal/batch` with a JSON body
//! `{"requests": [{"method", "path", "body"?, "correlationId"?}, ...]}` by
//! running each item through its own router (same handlers, validation,
//! metrics, access log and fault injection as a direct call) and answering
//! `{"responses": [{"status", "body"}, ...]}` in the same order. The route is
//! internal: it is never among a service's public routes.
//!
//! Client side: [`Coalescer`] sits under [`crate::resilience::Downstream`].
//! While `BATCH_INFLIGHT` requests to a downstream are already on the wire,
//! further calls queue and leave together in one batch (at most `BATCH_MAX`
//! items). Under light load every call goes out alone, as a plain request, so
//! batching adds no latency; under heavy load one HTTP exchange carries
//! hundreds of calls. A downstream that does not know the batch route (an older
//! version during a rollout answers 404/405) gets plain requests for a while.
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tower::ServiceExt;

use crate::domain::now_ms;

/// Path of the batch endpoint every service serves.
pub const BATCH_PATH: &str = "/internal/batch";
/// Most items one batch may carry (server limit).
pub const MAX_ITEMS: usize = 1024;
/// Largest response body of one item that is passed back.
const MAX_ITEM_RESPONSE: usize = 4 << 20;

#[derive(Deserialize)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    requests: Vec<Item<'a>>,
}

#[derive(Serialize)]
struct BatchRequestOut<'a> {
    requests: Vec<Item<'a>>,
}

#[derive(Deserialize, Serialize)]
struct Item<'a> {
    method: &'a str,
    path: &'a str,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    body: Option<&'a RawValue>,
    #[serde(rename = "correlationId", default, skip_serializing_if = "Option::is_none")]
    correlation_id: Option<&'a str>,
}

#[derive(Serialize)]
struct ItemResponse {
    status: u16,
    body: Option<Box<RawValue>>,
}

fn bad_request(msg: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": msg, "field": "requests"})),
    )
        .into_response()
}

/// Run one item through `router`.
async fn run_item(router: Router, it: &Item<'_>) -> ItemResponse {
    let mut b = Request::builder().method(it.method).uri(it.path);
    if let Some(c) = it.correlation_id.and_then(|c| HeaderValue::from_str(c).ok()) {
        b = b.header("x-correlation-id", c);
    }
    let body = match it.body {
        Some(raw) => {
            b = b.header(header::CONTENT_TYPE, "application/json");
            Body::from(raw.get().to_owned())
        }
        None => Body::empty(),
    };
    let req = match b.body(body) {
        Ok(r) => r,
        Err(e) => {
            return ItemResponse {
                status: 400,
                body: RawValue::from_string(json!({"error": format!("invalid item: {e}")}).to_string()).ok(),
            }
        }
    };
    let resp = match router.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status().as_u16();
    let body = match axum::body::to_bytes(resp.into_body(), MAX_ITEM_RESPONSE).await {
        Ok(bytes) if !bytes.is_empty() => String::from_utf8(bytes.to_vec())
            .ok()
            .and_then(|s| RawValue::from_string(s).ok()),
        _ => None,
    };
    ItemResponse { status, body }
}

/// Handler of [`BATCH_PATH`]: the items run concurrently through `router`.
pub async fn serve_batch(router: Router, body: axum::body::Bytes) -> Response {
    let req: BatchRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("invalid batch: {e}")),
    };
    if req.requests.len() > MAX_ITEMS {
        return bad_request(format!("a batch carries at most {MAX_ITEMS} requests"));
    }
    for (i, it) in req.requests.iter().enumerate() {
        if Method::from_bytes(it.method.as_bytes()).is_err() {
            return bad_request(format!("requests[{i}].method: invalid method {:?}", it.method));
        }
        if !it.path.starts_with('/') || it.path.starts_with(BATCH_PATH) {
            return bad_request(format!("requests[{i}].path: must be a path of this service"));
        }
    }
    let responses = futures_util::future::join_all(req.requests.iter().map(|it| run_item(router.clone(), it))).await;
    let mut out = Vec::with_capacity(64 * responses.len());
    out.extend_from_slice(b"{\"responses\":");
    serde_json::to_writer(&mut out, &responses).expect("serialise batch");
    out.push(b'}');
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// An answer to one call: status and raw body, or a transport failure.
pub type CallResult = Result<(u16, bytes::Bytes), String>;

struct Call {
    method: Method,
    path: String,
    body: Option<Box<RawValue>>,
    correlation_id: Option<String>,
    reply: oneshot::Sender<CallResult>,
}

/// Coalesces concurrent calls to one downstream into batches (see the module
/// documentation). Cheap to share; the sending task starts on first use.
pub struct Coalescer {
    name: String,
    base: String,
    client: reqwest::Client,
    max: usize,
    inflight: usize,
    /// Unix ms until which the downstream is called without batching.
    plain_until: Arc<AtomicU64>,
    tx: std::sync::OnceLock<mpsc::UnboundedSender<Call>>,
}

impl Coalescer {
    /// `max` items per batch (≤ 1 disables batching), `inflight` exchanges on
    /// the wire at once.
    pub fn new(name: &str, base: &str, client: reqwest::Client, max: usize, inflight: usize) -> Self {
        Self {
            name: name.to_string(),
            base: base.to_string(),
            client,
            max: max.min(MAX_ITEMS),
            inflight: inflight.max(1),
            plain_until: Arc::default(),
            tx: std::sync::OnceLock::new(),
        }
    }

    /// Send one call (through a batch when others are waiting).
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> CallResult {
        let body = body.map(|b| serde_json::value::to_raw_value(b).expect("serialise body"));
        let cid = crate::telemetry::current_correlation_id();
        if self.max <= 1 {
            return send_plain(
                &self.client,
                &self.base,
                &self.name,
                method,
                path,
                body.as_deref(),
                cid.as_deref(),
            )
            .await;
        }
        let (reply, rx) = oneshot::channel();
        let call = Call {
            method,
            path: path.to_string(),
            body,
            correlation_id: cid,
            reply,
        };
        let tx = self.tx.get_or_init(|| self.start());
        if tx.send(call).is_err() {
            return Err(format!("{}: batch sender stopped", self.name));
        }
        rx.await
            .unwrap_or_else(|_| Err(format!("{}: batch sender dropped the call", self.name)))
    }

    fn start(&self) -> mpsc::UnboundedSender<Call> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Call>();
        let (client, base, name, max) = (self.client.clone(), self.base.clone(), self.name.clone(), self.max);
        let plain_until = self.plain_until.clone();
        let slots = Arc::new(Semaphore::new(self.inflight));
        tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Some(first) = rx.recv().await else { return };
                let mut calls = vec![first];
                while calls.len() < max {
                    match rx.try_recv() {
                        Ok(c) => calls.push(c),
                        Err(_) => break,
                    }
                }
                let (client, base, name, plain_until) =
                    (client.clone(), base.clone(), name.clone(), plain_until.clone());
                tokio::spawn(async move {
                    send_calls(&client, &base, &name, &plain_until, calls).await;
                    drop(slot);
                });
            }
        });
        tx
    }
}

async fn send_plain(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    method: Method,
    path: &str,
    body: Option<&RawValue>,
    cid: Option<&str>,
) -> CallResult {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(c) = cid {
        req = req.header("x-correlation-id", c);
    }
    if let Some(b) = body {
        req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(b.get().to_owned());
    }
    let resp = req.send().await.map_err(|e| format!("{name}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.map_err(|e| format!("{name}: {e}"))?;
    Ok((status, bytes))
}

async fn send_each(client: &reqwest::Client, base: &str, name: &str, calls: Vec<Call>) {
    futures_util::future::join_all(calls.into_iter().map(|c| async move {
        let r = send_plain(
            client,
            base,
            name,
            c.method,
            &c.path,
            c.body.as_deref(),
            c.correlation_id.as_deref(),
        )
        .await;
        let _ = c.reply.send(r);
    }))
    .await;
}

#[derive(Deserialize)]
struct BatchReply {
    responses: Vec<ReplyItem>,
}

#[derive(Deserialize)]
struct ReplyItem {
    status: u16,
    #[serde(default)]
    body: Option<Box<RawValue>>,
}

async fn send_calls(client: &reqwest::Client, base: &str, name: &str, plain_until: &AtomicU64, calls: Vec<Call>) {
    if calls.len() == 1 || plain_until.load(Ordering::Relaxed) > now_ms() {
        return send_each(client, base, name, calls).await;
    }
    let items: Vec<Item> = calls
        .iter()
        .map(|c| Item {
            method: c.method.as_str(),
            path: &c.path,
            body: c.body.as_deref(),
            correlation_id: c.correlation_id.as_deref(),
        })
        .collect();
    let payload = serde_json::to_vec(&BatchRequestOut { requests: items }).expect("serialise batch");
    let sent = client
        .post(format!("{base}{BATCH_PATH}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(payload)
        .send()
        .await;
    let failure = match sent {
        Err(e) => format!("{name}: {e}"),
        Ok(resp) => {
            let status = resp.status().as_u16();
            if status == 404 || status == 405 {
                // This version of the downstream has no batch route.
                tracing::info!(
                    target_service = name,
                    "downstream does not batch; sending plain requests for a while"
                );
                plain_until.store(now_ms() + PLAIN_FALLBACK.as_millis() as u64, Ordering::Relaxed);
                return send_each(client, base, name, calls).await;
            }
            match resp.bytes().await {
                Err(e) => format!("{name}: {e}"),
                Ok(bytes) if status == 200 => match serde_json::from_slice::<BatchReply>(&bytes) {
                    Ok(r) if r.responses.len() == calls.len() => {
                        for (c, r) in calls.into_iter().zip(r.responses) {
                            let body = r
                                .body
                                .map(|b| bytes::Bytes::from(b.get().to_owned()))
                                .unwrap_or_default();
                            let _ = c.reply.send(Ok((r.status, body)));
                        }
                        return;
                    }
                    Ok(r) => format!(
                        "{name}: batch answered {} responses for {} requests",
                        r.responses.len(),
                        calls.len()
                    ),
                    Err(e) => format!("{name}: invalid batch response: {e}"),
                },
                // The exchange itself failed (overload, limits): not an answer to
                // any one call, so every call sees a transient failure.
                Ok(bytes) => format!(
                    "{name}: batch failed with status {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ),
            }
        }
    };
    for c in calls {
        let _ = c.reply.send(Err(failure.clone()));
    }
}

/// Default `BATCH_MAX` / `BATCH_INFLIGHT` from the environment.
pub fn limits_from_env() -> (usize, usize) {
    (
        crate::config::env_or("BATCH_MAX", 256),
        crate::config::env_or("BATCH_INFLIGHT", 2),
    )
}

/// How long a downstream without the batch route gets plain requests.
const PLAIN_FALLBACK: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::Path;
    use axum::http::HeaderMap;
    use axum::routing::{get, put};
    use axum::Json;
    use std::sync::atomic::AtomicUsize;

    /// A service with an echo route, served on a free loopback port; counts
    /// the HTTP exchanges that reach it (batches and plain requests).
    async fn serve(with_batch: bool) -> (String, Arc<AtomicUsize>, Arc<AtomicUsize>) {
        let app = Router::new()
            .route(
                "/echo/{id}",
                put(
                    |Path(id): Path<String>, h: HeaderMap, Json(b): Json<Value>| async move {
                        let cid = h
                            .get("x-correlation-id")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        Json(json!({"id": id, "body": b, "cid": cid}))
                    },
                ),
            )
            .route(
                "/status/{code}",
                get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
            );
        let app = if with_batch {
            crate::server::with_runtime(app)
        } else {
            app
        };
        let (batches, plain) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (b2, p2) = (batches.clone(), plain.clone());
        let app = app.layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let counter = if req.uri().path() == BATCH_PATH {
                    b2.clone()
                } else {
                    p2.clone()
                };
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(req)
            },
        ));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (base, batches, plain)
    }

    async fn call_many(c: &Coalescer, n: usize) -> Vec<(usize, CallResult)> {
        futures_util::future::join_all((0..n).map(|i| async move {
            let r = if i % 10 == 9 {
                c.call(Method::GET, "/status/404", None).await
            } else {
                let cid = format!("cid-{i}");
                let body = json!({"n": i});
                crate::telemetry::with_correlation_id(cid, c.call(Method::PUT, &format!("/echo/{i}"), Some(&body)))
                    .await
            };
            (i, r)
        }))
        .await
    }

    fn check_answers(answers: Vec<(usize, CallResult)>) {
        for (i, r) in answers {
            let (status, body) = r.unwrap_or_else(|e| panic!("call {i} failed: {e}"));
            if i % 10 == 9 {
                assert_eq!(status, 404, "call {i}");
                continue;
            }
            assert_eq!(status, 200, "call {i}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["id"], i.to_string(), "call {i} got another call's answer");
            assert_eq!(v["body"]["n"], i);
            assert_eq!(v["cid"], format!("cid-{i}"), "correlation id of call {i}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_travel_in_batches_and_each_gets_its_answer() {
        let (base, batches, plain) = serve(true).await;
        let c = Coalescer::new("echo", &base, reqwest::Client::new(), 64, 1);
        check_answers(call_many(&c, 300).await);
        let (b, p) = (batches.load(Ordering::SeqCst), plain.load(Ordering::SeqCst));
        assert!(b >= 1, "no batch was sent");
        assert!(b + p < 100, "300 calls took {b} batches + {p} plain requests");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_call_is_a_plain_request() {
        let (base, batches, plain) = serve(true).await;
        let c = Coalescer::new("echo", &base, reqwest::Client::new(), 64, 2);
        check_answers(call_many(&c, 1).await);
        assert_eq!((batches.load(Ordering::SeqCst), plain.load(Ordering::SeqCst)), (0, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_downstream_without_the_batch_route_gets_plain_requests() {
        let (base, batches, plain) = serve(false).await;
        let c = Coalescer::new("echo", &base, reqwest::Client::new(), 64, 1);
        check_answers(call_many(&c, 200).await);
        assert_eq!(
            batches.load(Ordering::SeqCst),
            1,
            "one probe batch (answered 404), then plain"
        );
        assert!(plain.load(Ordering::SeqCst) >= 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_downstream_fails_every_call_transiently() {
        let c = Coalescer::new("gone", "http://127.0.0.1:1", reqwest::Client::new(), 64, 1);
        for (_, r) in call_many(&c, 50).await {
            assert!(r.unwrap_err().starts_with("gone: "));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bad_batches_are_refused_with_400() {
        let (base, _, _) = serve(true).await;
        let http = reqwest::Client::new();
        let post = |body: Value| http.post(format!("{base}{BATCH_PATH}")).json(&body).send();
        let cases = [
            json!({"requests": [{"method": "G ET", "path": "/status/200"}]}),
            json!({"requests": [{"method": "POST", "path": BATCH_PATH}]}),
            json!({"requests": [{"method": "GET", "path": "http://elsewhere/"}]}),
            json!({"requests": vec![json!({"method": "GET", "path": "/status/200"}); MAX_ITEMS + 1]}),
            json!({"calls": []}),
        ];
        for body in cases {
            let r = post(body.clone()).await.unwrap();
            assert_eq!(r.status(), 400, "{body}");
            let v: Value = r.json().await.unwrap();
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        }
        let r = post(json!({"requests": [{"method": "GET", "path": "/status/204"}]}))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"responses": [{"status": 204, "body": null}]}));
    }
}

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
/// Default of `MAX_BATCH_BODY_BYTES`.
const DEFAULT_MAX_BATCH_BYTES: usize = 4 << 20;
/// Bytes a batch item adds to the request besides its path and body.
const ITEM_OVERHEAD: usize = 96;

/// `MAX_BATCH_BODY_BYTES`: the most bytes one batch may carry, in its request
/// and again in its response (each item is also bounded on its own:
/// `MAX_BODY_BYTES` for its body). Senders cut their batches to fit.
pub fn max_batch_bytes() -> usize {
    crate::config::env_or("MAX_BATCH_BODY_BYTES", DEFAULT_MAX_BATCH_BYTES)
}

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

fn refuse(status: StatusCode, msg: String) -> Response {
    (status, axum::Json(json!({"error": msg, "field": "requests"}))).into_response()
}

fn bad_request(msg: String) -> Response {
    refuse(StatusCode::BAD_REQUEST, msg)
}

/// What is left of a batch's response budget.
struct Budget(std::sync::atomic::AtomicUsize);

impl Budget {
    /// Take `n` bytes; false (and nothing taken) when they do not fit.
    fn take(&self, n: usize) -> bool {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| left.checked_sub(n))
            .is_ok()
    }
}

/// Run one item through `router`; its answer counts against `budget`.
async fn run_item(router: Router, it: &Item<'_>, budget: &Budget) -> ItemResponse {
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
        Ok(bytes) if !bytes.is_empty() => {
            if !budget.take(bytes.len() + ITEM_OVERHEAD) {
                // The call ran, but its answer does not fit in this batch's
                // response: a transient failure, retried on its own
                // (every operation is idempotent).
                return ItemResponse {
                    status: 503,
                    body: RawValue::from_string(
                        json!({"error": "the batch's response is over MAX_BATCH_BODY_BYTES; retry this call alone"})
                            .to_string(),
                    )
                    .ok(),
                };
            }
            String::from_utf8(bytes.to_vec())
                .ok()
                .and_then(|s| RawValue::from_string(s).ok())
        }
        _ => None,
    };
    ItemResponse { status, body }
}

/// Handler of [`BATCH_PATH`]: the items run concurrently through `router`.
/// A request over `max_bytes` is refused with 413 (the route's body limit is
/// `max_bytes`); the answers together are bounded by `max_bytes` too.
pub async fn serve_batch(
    router: Router,
    max_bytes: usize,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a batch carries at most {max_bytes} bytes (MAX_BATCH_BODY_BYTES)"),
            )
        }
        Err(e) => return bad_request(format!("cannot read batch: {e}")),
    };
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
    let budget = Budget(std::sync::atomic::AtomicUsize::new(max_bytes));
    let responses =
        futures_util::future::join_all(req.requests.iter().map(|it| run_item(router.clone(), it, &budget))).await;
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

impl Call {
    /// Bytes this call adds to a batch request, at most: the body is copied
    /// as is, the path and correlation id may double when escaped.
    fn size(&self) -> usize {
        let cid = self.correlation_id.as_ref().map_or(0, String::len);
        ITEM_OVERHEAD + 2 * (self.path.len() + cid) + self.body.as_ref().map_or(0, |b| b.get().len())
    }
}

/// Coalesces concurrent calls to one downstream into batches (see the module
/// documentation). Cheap to share; the sending task starts on first use.
pub struct Coalescer {
    name: String,
    base: String,
    client: reqwest::Client,
    max: usize,
    /// Most bytes of one batch request (`MAX_BATCH_BODY_BYTES`).
    max_bytes: usize,
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
            max_bytes: max_batch_bytes(),
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
        let max_bytes = self.max_bytes;
        let plain_until = self.plain_until.clone();
        let slots = Arc::new(Semaphore::new(self.inflight));
        tokio::spawn(async move {
            // A call that did not fit in the previous batch opens the next one.
            let mut carried: Option<Call> = None;
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let first = match carried.take() {
                    Some(c) => c,
                    None => match rx.recv().await {
                        Some(c) => c,
                        None => return,
                    },
                };
                let mut bytes = first.size();
                let mut calls = vec![first];
                while calls.len() < max {
                    match rx.try_recv() {
                        Ok(c) if bytes + c.size() > max_bytes => {
                            carried = Some(c);
                            break;
                        }
                        Ok(c) => {
                            bytes += c.size();
                            calls.push(c);
                        }
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

    /// Every item is under MAX_BODY_BYTES, the batch as a whole is not under
    /// MAX_BATCH_BODY_BYTES (default 4 MiB): 413 with a JSON error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_over_the_total_byte_bound_is_refused_with_413() {
        let (base, _, _) = serve(true).await;
        let item = json!({"method": "PUT", "path": "/echo/1", "body": {"n": "x".repeat(60_000)}});
        let body = json!({"requests": vec![item; 100]});
        let r = reqwest::Client::new()
            .post(format!("{base}{BATCH_PATH}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], "requests");
        assert!(v["error"].as_str().unwrap().contains("MAX_BATCH_BODY_BYTES"), "{v}");
    }

    /// Answers larger than their requests: the ones past the response budget
    /// come back as transient 503s, so the whole answer stays bounded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_answer_is_bounded_in_total_bytes() {
        let (base, _, _) = serve(true).await;
        let items: Vec<Value> = (0..1000)
            .map(|i| json!({"method": "PUT", "path": format!("/echo/{i}"), "body": {"n": "y".repeat(4090)}}))
            .collect();
        let r = reqwest::Client::new()
            .post(format!("{base}{BATCH_PATH}"))
            .json(&json!({"requests": items}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let text = r.text().await.unwrap();
        assert!(text.len() <= DEFAULT_MAX_BATCH_BYTES, "answer of {} bytes", text.len());
        let v: Value = serde_json::from_str(&text).unwrap();
        let statuses: Vec<u64> = v["responses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["status"].as_u64().unwrap())
            .collect();
        assert_eq!(statuses.len(), 1000);
        let over = statuses.iter().filter(|s| **s == 503).count();
        assert!(over > 0 && over < 100, "{over} answers over the budget");
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1000 - over);
    }

    /// The sender cuts its batches to MAX_BATCH_BODY_BYTES, so large calls
    /// still all get their answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn senders_cut_batches_to_the_byte_bound() {
        let (base, batches, _) = serve(true).await;
        let c = Coalescer::new("echo", &base, reqwest::Client::new(), 256, 1);
        let answers = futures_util::future::join_all((0..200).map(|i| {
            let c = &c;
            async move {
                let body = json!({"n": i, "pad": "z".repeat(60_000)});
                c.call(Method::PUT, &format!("/echo/{i}"), Some(&body)).await
            }
        }))
        .await;
        for (i, r) in answers.into_iter().enumerate() {
            let (status, body) = r.unwrap_or_else(|e| panic!("call {i}: {e}"));
            assert_eq!(status, 200, "call {i}");
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["body"]["n"], i);
        }
        assert!(
            batches.load(Ordering::SeqCst) >= 3,
            "200 x 60 kB need several 4 MiB batches"
        );
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

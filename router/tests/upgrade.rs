//! Upgraded connections (WebSocket) and streamed responses (server-sent events) through the
//! router, over real sockets with a real WebSocket client and server (tokio-tungstenite).

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server: every text or binary message comes back as it was sent.
async fn ws_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

type Ws = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket to `ws://<host>/socket` through the router's internal port.
async fn connect(router: &TestRouter, host: &str) -> (Ws, http::HeaderMap) {
    let stream = TcpStream::connect(router.data).await.unwrap();
    let (ws, resp) = tokio::time::timeout(
        T,
        tokio_tungstenite::client_async(format!("ws://{host}/socket"), stream),
    )
    .await
    .expect("handshake timed out")
    .expect("handshake through the router");
    assert_eq!(resp.status(), 101);
    (ws, resp.headers().clone())
}

async fn echo(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let back = tokio::time::timeout(T, ws.next())
        .await
        .expect("echo timed out")
        .expect("connection open")
        .expect("a message");
    assert_eq!(back, Message::text(text));
}

fn table(generation: u64, value: serde_json::Value) -> dronectl_router::RouterConfig {
    let mut cfg: dronectl_router::RouterConfig = serde_json::from_value(value).unwrap();
    cfg.generation = generation;
    cfg
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_survives_a_weight_change_of_another_service() {
    let (echo_addr, _echo) = ws_echo().await;
    let (a1, a2) = (Upstream::start("a1").await, Upstream::start("a2").await);
    let services = |w1: u8, w2: u8| {
        json!({"services": {
            "chat": {"versions": {"v1": {"weight": 100, "endpoints": [echo_addr.to_string()]}}},
            "orders": {"versions": {
                "v1": {"weight": w1, "endpoints": [a1.ep()]},
                "v2": {"weight": w2, "endpoints": [a2.ep()]}}}
        }})
    };
    let router = TestRouter::start(services(100, 0)).await;
    let (mut ws, head) = connect(&router, "chat").await;
    assert_eq!(head.get("x-dronectl-version").unwrap(), "v1");
    assert!(head.get("x-correlation-id").is_some());
    echo(&mut ws, "before the weight change").await;

    router.handle.apply(table(2, services(0, 100))).unwrap();
    let c = client();
    let r = send(&c, "GET", &router.url("/"), &[("host", "orders")], "").await;
    assert_eq!(r.header("x-upstream"), Some("a2"), "the new weights apply");
    echo(&mut ws, "after the weight change").await;
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let back = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::binary(vec![0u8, 1, 2, 255]));

    // Counted for its version (status 101), and in flight on its endpoint while open.
    let stats = router.handle.stats();
    let v1 = stats.version("chat", "v1").unwrap();
    assert_eq!(v1.requests, 1);
    assert_eq!(v1.errors_5xx, 0);
    let in_flight = |r: &TestRouter| {
        r.handle
            .endpoints()
            .into_iter()
            .find(|e| e.endpoint == echo_addr.to_string())
            .map_or(0, |e| e.in_flight)
    };
    assert_eq!(in_flight(&router), 1);
    assert!(router
        .handle
        .metrics_text()
        .contains(r#"router_requests_total{service="chat",version="v1",code="101"} 1"#));

    ws.close(None).await.unwrap();
    drop(ws);
    wait_for("the tunnel to end", || in_flight(&router) == 0).await;
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgraded_connection_to_a_removed_endpoint_closes_after_the_grace_period() {
    let (echo_addr, _echo) = ws_echo().await;
    let (other, _other) = ws_echo().await;
    let chat = |ep: String| json!({"services": {"chat": {"versions": {"v1": {"weight": 100, "endpoints": [ep]}}}}});
    let grace = Duration::from_millis(800);
    let mut opts = TestRouter::opts();
    opts.initial_config = Some(table(1, chat(echo_addr.to_string())));
    opts.upgrade_grace = grace;
    let router = TestRouter::start_with(opts).await;
    let (mut ws, _) = connect(&router, "chat").await;
    echo(&mut ws, "first").await;

    // The endpoint leaves the table (its replacement takes new connections at once); the
    // open connection keeps working during the grace period, then the router closes it.
    router
        .handle
        .apply(table(2, chat(other.to_string())))
        .unwrap();
    let removed_at = Instant::now();
    echo(&mut ws, "within the grace period").await;
    let (mut fresh, _) = connect(&router, "chat").await;
    echo(&mut fresh, "a new connection").await;

    let end = tokio::time::timeout(T, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => panic!("unexpected message {t}"),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => break,
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the upgraded connection was not closed");
    let after = removed_at.elapsed();
    assert!(
        after >= grace - Duration::from_millis(100),
        "closed after {after:?}, before the {grace:?} grace period"
    );
    // The drained endpoint has nothing in flight any more; the new connection is untouched.
    let eps = router.handle.endpoints();
    let old = eps.iter().find(|e| e.endpoint == echo_addr.to_string());
    assert!(old.is_none_or(|e| e.in_flight == 0), "{eps:?}");
    echo(&mut fresh, "still open").await;
    router.stop().await;
}

/// An event-stream upstream: each message sent on the returned channel becomes one chunk
/// of a `text/event-stream` response (chunked, no length), written when it is sent.
async fn sse_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::mpsc::UnboundedSender<String>>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams_tx, streams_rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let streams_tx = streams_tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                    let _ = streams_tx.send(tx);
                    let events = futures_util::stream::unfold(rx, |mut rx| async move {
                        let ev = rx.recv().await?;
                        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(ev))), rx))
                    });
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .header("cache-control", "no-cache")
                                .body(StreamBody::new(events))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, streams_rx, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_stream_without_buffering() {
    let (addr, mut streams, _up) = sse_upstream().await;
    let router = TestRouter::start(json!({"services": {"feed": {
        "routes": ["/events"],
        "versions": {"v1": {"weight": 100, "endpoints": [addr.to_string()]}}}}}))
    .await;
    let c = client();
    let req = http::Request::get(router.url("/events"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(T, c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-dronectl-version"], "v1");
    let events = tokio::time::timeout(T, streams.recv())
        .await
        .unwrap()
        .unwrap();
    let mut body = resp.into_body();
    // Each event reaches the client before the upstream writes the next one.
    let mut seen = String::new();
    for i in 1..=3 {
        let ev = format!("id: {i}\ndata: event {i}\n\n");
        events.send(ev.clone()).unwrap();
        while !seen.ends_with(&ev) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("event {i} was held back by the router"))
                .expect("stream open")
                .unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }
    drop(events);
    let rest = tokio::time::timeout(T, body.collect())
        .await
        .unwrap()
        .unwrap();
    assert!(rest.to_bytes().is_empty());
    assert_eq!(seen.matches("data: event").count(), 3);
    let v1 = router.handle.stats().version("feed", "v1").unwrap().clone();
    assert_eq!(v1.requests, 1);
    router.stop().await;
}

//! What makes rollouts lose zero requests: atomic config swaps under load, draining removed
//! endpoints, transparent retries on refused connections, graceful shutdown.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_flips_under_load_fail_nothing() {
    let ups = [
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    ];
    let eps: Vec<String> = ups.iter().map(|u| u.ep()).collect();
    let r = TestRouter::start(
        json!({"services": {"orders": svc(&[("v1", 100, vec![eps[0].clone()])])}}),
    )
    .await;
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let (c, url, stop, ok) = (c.clone(), r.url("/"), stop.clone(), ok.clone());
        workers.spawn(async move {
            let mut failures = Vec::new();
            // Bounded: stops when flips are done, or after 20,000 requests per worker.
            for i in 0..20_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let method = if i % 5 == 0 { "POST" } else { "GET" };
                let path = if (i + w) % 7 == 0 { "/slow?ms=20" } else { "/" };
                let res = send(
                    &c,
                    method,
                    &format!("{url}{}", &path[1..]),
                    &[("host", "orders")],
                    "payload",
                )
                .await;
                if res.status == 200 {
                    ok.fetch_add(1, Ordering::SeqCst);
                } else {
                    failures.push((res.status, res.body));
                }
            }
            failures
        });
    }
    for flip in 0..20u64 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let cfg = match flip % 4 {
            0 => svc(&[
                ("v1", 50, vec![eps[0].clone()]),
                ("v2", 50, vec![eps[1].clone()]),
            ]),
            1 => svc(&[
                ("v1", 0, vec![eps[0].clone()]),
                ("v2", 100, vec![eps[1].clone(), eps[2].clone()]),
            ]),
            2 => svc(&[
                ("v2", 80, vec![eps[2].clone()]),
                ("v3", 20, vec![eps[0].clone()]),
            ]),
            _ => svc(&[("v1", 100, vec![eps[1].clone()]), ("v4", 0, vec![])]),
        };
        let res = put_config(
            &c,
            &r,
            &json!({"generation": flip + 10, "services": {"orders": cfg}}),
        )
        .await;
        assert_eq!(res.status, 200, "{}", res.body);
        assert_eq!(res.json()["generation"], flip + 10);
    }
    tokio::time::sleep(Duration::from_millis(60)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    while let Some(f) = workers.join_next().await {
        failures.extend(f.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let ok = ok.load(Ordering::SeqCst);
    eprintln!("config flips under load: {ok} requests, 0 failed");
    assert!(ok >= 60, "load actually ran");
    assert!(
        ups.iter().all(|u| u.hits() > 0),
        "every upstream served some traffic"
    );
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_endpoint_finishes_in_flight_and_gets_nothing_new() {
    let (old, new) = (Upstream::start("old").await, Upstream::start("new").await);
    let r = TestRouter::start(json!({"services": {"orders": svc(&[("v1", 100, vec![old.ep()])])}}))
        .await;
    let c = client();
    let slow = {
        let (c, url) = (c.clone(), r.url("/slow?ms=4000"));
        tokio::spawn(async move { get(&c, &url, &[("host", "orders")]).await })
    };
    // Wait until the slow request is in flight at the old endpoint.
    let in_flight = |r: &TestRouter, ep: &str| {
        r.handle
            .endpoints()
            .into_iter()
            .find(|e| e.endpoint == ep)
            .map(|e| (e.in_flight, e.in_config))
    };
    let mut waited = 0;
    while in_flight(&r, &old.ep()) != Some((1, true)) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 2000, "slow request never reached the upstream");
    }
    let res = put_config(
        &c,
        &r,
        &json!({"services": {"orders": svc(&[("v2", 100, vec![new.ep()])])}}),
    )
    .await;
    assert_eq!(res.status, 200);
    // The admin API reports the drain: still in flight, no longer configured.
    let res = get(&c, &r.admin_url("/endpoints"), ADMIN).await;
    let rows = res.json()["endpoints"].as_array().unwrap().clone();
    let row = rows
        .iter()
        .find(|e| e["endpoint"] == old.ep().as_str())
        .unwrap();
    assert_eq!(
        (row["in_flight"].as_u64(), row["in_config"].as_bool()),
        (Some(1), Some(false))
    );

    let old_hits = old.hits();
    for _ in 0..20 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "new"));
    }
    assert_eq!(
        old.hits(),
        old_hits,
        "no new request went to the removed endpoint"
    );
    let res = tokio::time::timeout(T, slow).await.unwrap().unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "old"));
    assert_eq!(res.header("x-dronectl-version"), Some("v1"));
    let mut waited = 0;
    while in_flight(&r, &old.ep()).is_some_and(|(n, _)| n != 0) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 2000, "in-flight count never drained");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_retried_transparently() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let (dead1, dead2) = (dead_endpoint(), dead_endpoint());
    let r = TestRouter::start(json!({"services": {
        // A dead endpoint next to a live one in the same version.
        "orders": svc(&[("v1", 100, vec![dead1.clone(), a.ep()])]),
        // A version whose only endpoint is dead: falls over to the other weighted version.
        "billing": svc(&[("v1", 50, vec![dead2.clone()]), ("v2", 50, vec![b.ep()])]),
    }}))
    .await;
    let c = client();
    for i in 0..40 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "a"), "request {i}");
        // Bodies are retried too when nothing was sent (connect failed).
        let res = send(&c, "POST", &r.url("/"), &[("host", "orders")], "hello").await;
        assert_eq!(
            (res.status, res.header("x-body-len")),
            (200, Some("5")),
            "post {i}"
        );
        let res = send(&c, "POST", &r.url("/"), &[("host", "billing")], "hello").await;
        assert_eq!((res.status, res.body.as_str()), (200, "b"), "billing {i}");
    }
    let st = r.handle.stats();
    let v = st.version("orders", "v1").unwrap();
    assert_eq!(v.requests, 80);
    assert_eq!(v.errors_5xx, 0);
    assert!(
        v.upstream_errors >= 30,
        "connect errors are counted: {}",
        v.upstream_errors
    );
    assert!(st.version("billing", "v1").unwrap().upstream_errors >= 15);
    // Nothing left to try: 502 with JSON.
    let res = put_config(
        &c,
        &r,
        &json!({"services": {"orders": svc(&[("v1", 100, vec![dead1])])}}),
    )
    .await;
    assert_eq!(res.status, 200);
    let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
    assert_eq!(res.status, 502);
    assert!(res.json()["error"].as_str().unwrap().contains("connect"));
    let text = r.handle.metrics_text();
    assert!(text
        .contains(r#"router_upstream_errors_total{service="orders",version="v1",kind="connect"}"#));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains_in_flight_requests() {
    let a = Upstream::start("a").await;
    let mut r = TestRouter::start(orders_on(&a)).await;
    let c = client();
    // An idle keep-alive connection must not hold up shutdown.
    assert_eq!(
        get(&c, &r.url("/"), &[("host", "orders")]).await.status,
        200
    );
    let slow = {
        let (c, url) = (c.clone(), r.url("/slow?ms=1500"));
        tokio::spawn(async move { get(&c, &url, &[("host", "orders")]).await })
    };
    let mut waited = 0;
    while a.in_flight.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        waited += 1;
        assert!(waited < 2000);
    }
    let data = r.data;
    let serve = r.begin_stop();
    // New connections are refused once the listener is closed.
    let mut refused = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(data).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "data port still accepting after shutdown");
    let res = tokio::time::timeout(T, slow).await.unwrap().unwrap();
    assert_eq!((res.status, res.body.as_str()), (200, "a"));
    tokio::time::timeout(T, serve)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_closed_after_send_retries_only_idempotent_requests() {
    let a = Upstream::start("a").await;
    let slam = Slammer::start().await;
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("v1", 100, vec![slam.ep(), a.ep()])]),
    }}))
    .await;
    let c = client();
    let mut post_failures = 0;
    for i in 0..20 {
        // GET without body: the request was written, but retrying it is safe.
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "a"), "get {i}");
        // POST with a body that was sent: never replayed, 502 when it hit the closing
        // endpoint. (Two, so that round robin sends one of them there.)
        for _ in 0..2 {
            let res = send(
                &c,
                "POST",
                &r.url("/"),
                &[("host", "orders")],
                "charge-once",
            )
            .await;
            match res.status {
                200 => assert_eq!(res.body, "a"),
                502 => post_failures += 1,
                s => panic!("unexpected status {s}: {}", res.body),
            }
        }
    }
    assert!(
        post_failures > 0,
        "some POSTs met the closing endpoint and were not retried"
    );
    let v = r.handle.stats();
    let v = v.version("orders", "v1").unwrap();
    assert_eq!(v.errors_5xx, post_failures);
    r.stop().await;
}

/// A raw HTTP/1.1 upstream that answers every request with 200 `ok`, closes the connection
/// after `close_after` responses, and counts the connections it accepted.
async fn closing_upstream(
    close_after: usize,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut served = 0;
                let mut chunk = [0u8; 4096];
                while served < close_after {
                    let Ok(n) = s.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        served += 1;
                        let last = served >= close_after;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n{}\r\nok",
                            if last { "connection: close\r\n" } else { "" }
                        );
                        if s.write_all(resp.as_bytes()).await.is_err() || last {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_closing_its_connections_costs_no_request() {
    use std::sync::atomic::Ordering;
    // Closes after every response: each request of one client connection needs a fresh
    // upstream connection (the connection's own one is replaced, never reused closed).
    let (ep, accepted) = closing_upstream(1).await;
    let r = TestRouter::start(json!({"services": {"s": svc(&[("v1", 100, vec![ep])])}})).await;
    let c = client();
    for _ in 0..5 {
        let res = get(&c, &r.url("/x"), &[("host", "s")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "ok"));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    // Keeps connections for two responses, and the client pauses in between: the idle
    // upstream close is noticed and the next request still succeeds.
    let (ep2, accepted2) = closing_upstream(2).await;
    let cfg = json!({"generation": 2, "services": {"s": svc(&[("v1", 100, vec![ep2])])}});
    assert_eq!(put_config(&c, &r, &cfg).await.status, 200);
    for _ in 0..6 {
        let res = get(&c, &r.url("/x"), &[("host", "s")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "ok"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(accepted2.load(Ordering::SeqCst) >= 3);
    r.stop().await;
}

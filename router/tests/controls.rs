//! Traffic controls over real sockets: header and cookie match rules, mirroring (shadow
//! traffic) and sticky sessions.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;

/// What a [`Recorder`] saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    body_len: usize,
    mirror: Option<String>,
    correlation: Option<String>,
}

/// A candidate that records every request, then waits `delay` and answers `status`.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(delay: Duration, status: u16) -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let s = s.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body_len = body.collect().await.map_or(0, |b| b.to_bytes().len());
                            let h = |n: &str| {
                                parts
                                    .headers
                                    .get(n)
                                    .map(|v| v.to_str().unwrap().to_string())
                            };
                            s.lock().unwrap().push(Seen {
                                body_len,
                                mirror: h("x-dronectl-mirror"),
                                correlation: h("x-correlation-id"),
                            });
                            tokio::time::sleep(delay).await;
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from_static(b"candidate")))
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
        Recorder { addr, seen, task }
    }

    fn ep(&self) -> String {
        self.addr.to_string()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_match_routes_every_matching_request_and_none_of_the_rest() {
    let (stable, candidate) = (
        Upstream::start("stable").await,
        Upstream::start("candidate").await,
    );
    // The candidate has 10 % by weight; the match sends testers there regardless.
    let mut s = svc(&[
        ("v1", 90, vec![stable.ep()]),
        ("v2", 10, vec![candidate.ep()]),
    ]);
    s["matches"] = json!([{"version": "v2", "headers": [{"name": "x-beta", "exact": "true"}]}]);
    let r = TestRouter::start(json!({"services": {"orders": s}})).await;
    let c = client();
    for _ in 0..100 {
        let res = get(&c, &r.url("/"), &[("host", "orders"), ("x-beta", "true")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "candidate"));
    }
    assert_eq!(candidate.hits(), 100);

    // A/B: the candidate has no weight; only the match reaches it (exact, regex, cookie).
    let mut s = svc(&[
        ("v1", 100, vec![stable.ep()]),
        ("v2", 0, vec![candidate.ep()]),
    ]);
    s["matches"] = json!([
        {"version": "v2", "headers": [{"name": "x-beta", "exact": "true"}]},
        {"version": "v2", "cookies": [{"name": "group", "regex": "b|beta-[0-9]+"}]},
    ]);
    let res = put_config(&c, &r, &json!({"services": {"orders": s}})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let before = candidate.hits();
    let matching: [&[(&str, &str)]; 3] = [
        &[("x-beta", "true")],
        &[("cookie", "sid=1; group=b")],
        &[("cookie", "group=beta-42")],
    ];
    let other: [&[(&str, &str)]; 4] = [
        &[],
        &[("x-beta", "false")],
        &[("cookie", "group=beta-42x")],
        &[("cookie", "xgroup=b")],
    ];
    for _ in 0..50 {
        for h in matching {
            let mut h = h.to_vec();
            h.push(("host", "orders"));
            let res = get(&c, &r.url("/"), &h).await;
            assert_eq!(res.body, "candidate", "{h:?}");
        }
        for h in other {
            let mut h = h.to_vec();
            h.push(("host", "orders"));
            let res = get(&c, &r.url("/"), &h).await;
            assert_eq!(res.body, "stable", "{h:?}");
        }
    }
    assert_eq!(candidate.hits() - before, 150);
    let stats = r.handle.stats();
    assert_eq!(stats.services["orders"].versions["v2"].requests, 250);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_requests_reach_the_candidate_at_the_rate_and_clients_see_only_stable() {
    let stable = Upstream::start("stable").await;
    let candidate = Recorder::start(Duration::ZERO, 200).await;
    let mut s = svc(&[
        ("v1", 100, vec![stable.ep()]),
        ("v2", 0, vec![candidate.ep()]),
    ]);
    s["mirror"] = json!({"version": "v2", "percent": 20});
    let r = TestRouter::start(json!({"services": {"orders": s}})).await;
    let c = client();
    for i in 0..200 {
        let body = "x".repeat(i % 7 * 100);
        let res = send(
            &c,
            "POST",
            &r.url("/"),
            &[("host", "orders"), ("x-correlation-id", &format!("id-{i}"))],
            body,
        )
        .await;
        assert_eq!((res.status, res.body.as_str()), (200, "stable"));
        assert_eq!(res.header("x-dronectl-version"), Some("v1"));
    }
    let deadline = Instant::now() + T;
    while candidate.seen().len() < 40 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seen = candidate.seen();
    assert_eq!(seen.len(), 40, "20 % of 200 requests");
    for s in &seen {
        assert_eq!(s.mirror.as_deref(), Some("true"));
        // The copy carries the real request's body and correlation id.
        let i: usize = s.correlation.as_deref().unwrap()[3..].parse().unwrap();
        assert_eq!(s.body_len, i % 7 * 100, "{s:?}");
    }
    assert_eq!(stable.hits(), 200);
    let v2 = r.handle.stats().services["orders"].versions["v2"].clone();
    assert_eq!((v2.requests, v2.mirrored, v2.errors_5xx), (40, 40, 0));
    assert_eq!(v2.latency.count, 40);

    // Bodies above the mirror bound are not copied (the real request still is served).
    let big = "y".repeat(2 * 1024 * 1024);
    for _ in 0..10 {
        let res = send(&c, "POST", &r.url("/"), &[("host", "orders")], big.clone()).await;
        assert_eq!((res.status, res.body.as_str()), (200, "stable"));
    }
    let v2 = r.handle.stats().services["orders"].versions["v2"].clone();
    assert_eq!(v2.mirror_skipped, 2, "{v2:?}");
    assert_eq!(candidate.seen().len(), 40);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_or_failing_mirror_never_delays_or_fails_the_real_request() {
    let stable = Upstream::start("stable").await;
    let slow = Recorder::start(Duration::from_secs(3), 500).await;
    let mut s = svc(&[("v1", 100, vec![stable.ep()]), ("v2", 0, vec![slow.ep()])]);
    s["mirror"] = json!({"version": "v2", "percent": 100});
    let r = TestRouter::start(json!({"services": {"orders": s}})).await;
    let c = client();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (c, url) = (c.clone(), r.url("/"));
        tasks.spawn(async move {
            for _ in 0..10 {
                let res = send(&c, "POST", &url, &[("host", "orders")], "body").await;
                assert_eq!((res.status, res.body.as_str()), (200, "stable"));
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.unwrap();
    }
    // 80 requests while every copy takes 3 s: the clients never waited for one.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The copies' 500s are the candidate's errors, measured for analysis.
    let deadline = Instant::now() + T;
    let v2 = loop {
        let v2 = r.handle.stats().services["orders"].versions["v2"].clone();
        if v2.mirrored + v2.mirror_skipped >= 80 || Instant::now() > deadline {
            break v2;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v2.mirrored + v2.mirror_skipped, 80, "{v2:?}");
    assert_eq!(v2.errors_5xx, v2.mirrored);
    assert!(v2.error_rate() == Some(1.0));
    assert!(v2.latency.quantile(0.5).unwrap() >= 2.0, "{v2:?}");
    let v1 = &r.handle.stats().services["orders"].versions["v1"];
    assert_eq!((v1.requests, v1.errors_5xx), (80, 0));

    // A candidate that refuses connections: still no client failure.
    let mut s = svc(&[
        ("v1", 100, vec![stable.ep()]),
        ("v2", 0, vec![dead_endpoint()]),
    ]);
    s["mirror"] = json!({"version": "v2", "percent": 100});
    let res = put_config(&c, &r, &json!({"services": {"orders": s}})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    for _ in 0..20 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!((res.status, res.body.as_str()), (200, "stable"));
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_stay_on_their_version_across_weight_changes() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let table = |w1: u8, w2: u8| {
        let mut s = svc(&[("v1", w1, vec![a.ep()]), ("v2", w2, vec![b.ep()])]);
        s["sticky"] = json!(true);
        json!({"services": {"orders": s}})
    };
    let r = TestRouter::start(table(50, 50)).await;
    let c = client();
    // 40 sessions start at 50/50.
    let mut sessions = Vec::new();
    for _ in 0..40 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        let cookie = res.header("set-cookie").expect("sticky cookie").to_string();
        assert!(cookie.starts_with("dronectl-orders="), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();
        sessions.push((pair, res.body.clone()));
    }
    assert_eq!(sessions.iter().filter(|(_, v)| v == "b").count(), 20);
    // The canary moves to 90/10: old sessions stay where they were.
    let res = put_config(&c, &r, &table(90, 10)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    for (pair, version) in &sessions {
        for _ in 0..5 {
            let res = get(&c, &r.url("/"), &[("host", "orders"), ("cookie", pair)]).await;
            assert_eq!(&res.body, version);
            assert_eq!(res.header("set-cookie"), None);
        }
    }
    // New sessions follow the new weights.
    let mut new_b = 0;
    for _ in 0..100 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert!(res.header("set-cookie").is_some());
        new_b += usize::from(res.body == "b");
    }
    assert_eq!(new_b, 10);
    // An abort (v2 to 0) moves v2's sessions back, with a new cookie.
    let res = put_config(&c, &r, &table(100, 0)).await;
    assert_eq!(res.status, 200, "{}", res.body);
    for (pair, _) in &sessions {
        let res = get(&c, &r.url("/"), &[("host", "orders"), ("cookie", pair)]).await;
        assert_eq!(res.body, "a");
    }
    r.stop().await;
}

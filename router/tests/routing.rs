//! Routing over real sockets: host, preview host, path prefixes, weights, forced versions,
//! unroutable services, headers.

mod common;

use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_host_with_and_without_port() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("v1", 100, vec![a.ep()])]),
        "billing": svc(&[("v7", 100, vec![b.ep()])]),
    }}))
    .await;
    let c = client();
    let res = get(&c, &r.url("/x"), &[("host", "orders")]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "a"));
    assert_eq!(res.header("x-dronectl-version"), Some("v1"));
    let res = get(&c, &r.url("/x"), &[("host", "billing:8080")]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "b"));
    assert_eq!(res.header("x-dronectl-version"), Some("v7"));
    // Case-insensitive host; the original Host is forwarded.
    let res = get(&c, &r.url("/x"), &[("host", "Billing:8080")]).await;
    assert_eq!(res.body, "b");
    assert_eq!(res.header("x-seen-host"), Some("Billing:8080"));
    // Unknown host and no route: 404 JSON.
    let res = get(&c, &r.url("/x"), &[("host", "nope:8080")]).await;
    assert_eq!(res.status, 404);
    assert_eq!(res.json(), json!({"error": "no route"}));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_host_reaches_preview_version() {
    let (blue, green) = (
        Upstream::start("blue").await,
        Upstream::start("green").await,
    );
    let mut s = svc(&[("v1", 100, vec![blue.ep()]), ("v2", 0, vec![green.ep()])]);
    s["preview"] = json!("v2");
    let r = TestRouter::start(
        json!({"services": {"orders": s, "other": svc(&[("v1", 100, vec![blue.ep()])])}}),
    )
    .await;
    let c = client();
    for _ in 0..5 {
        let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!(res.body, "blue");
        let res = get(&c, &r.url("/"), &[("host", "orders-preview:8080")]).await;
        assert_eq!(res.body, "green");
        assert_eq!(res.header("x-dronectl-version"), Some("v2"));
    }
    // A service without preview: 503 naming the problem.
    let res = get(&c, &r.url("/"), &[("host", "other-preview")]).await;
    assert_eq!(res.status, 503);
    assert!(res.json()["error"].as_str().unwrap().contains("preview"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_prefix_longest_match() {
    let (o, i, w) = (
        Upstream::start("orders").await,
        Upstream::start("items").await,
        Upstream::start("web").await,
    );
    let mut orders = svc(&[("v1", 100, vec![o.ep()])]);
    orders["routes"] = json!(["/api/orders"]);
    let mut items = svc(&[("v1", 100, vec![i.ep()])]);
    items["routes"] = json!(["/api/orders/items"]);
    let r = TestRouter::start(json!({"services": {"orders": orders, "items": items}})).await;
    let c = client();
    let body = |p: &'static str| {
        let (c, url) = (c.clone(), r.url(p));
        async move { get(&c, &url, &[("host", "localhost")]).await }
    };
    assert_eq!(body("/api/orders").await.body, "orders");
    assert_eq!(body("/api/orders/42?x=1").await.body, "orders");
    assert_eq!(body("/api/orders/items").await.body, "items");
    assert_eq!(body("/api/orders/items/9").await.body, "items");
    assert_eq!(body("/api/ordersx").await.status, 404);
    assert_eq!(body("/api/orders/itemsx").await.body, "orders");
    assert_eq!(body("/").await.status, 404);

    // A catch-all "/" service takes what nothing longer matches.
    let mut orders = svc(&[("v1", 100, vec![o.ep()])]);
    orders["routes"] = json!(["/api/orders"]);
    let mut web = svc(&[("v1", 100, vec![w.ep()])]);
    web["routes"] = json!(["/"]);
    let res = put_config(&c, &r, &json!({"services": {"orders": orders, "web": web}})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(body("/api/ordersx").await.body, "web");
    assert_eq!(body("/api/orders/1").await.body, "orders");
    r.stop().await;
}

async fn count_versions(
    c: &HttpClient,
    r: &TestRouter,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (c, url, host) = (c.clone(), r.url("/"), host.to_string());
        tasks.spawn(async move {
            let mut v = Vec::new();
            for _ in (w..n).step_by(8) {
                let res = get(&c, &url, &[("host", &host)]).await;
                assert_eq!(res.status, 200);
                v.push(res.header("x-dronectl-version").unwrap().to_string());
            }
            v
        });
    }
    while let Some(v) = tasks.join_next().await {
        for name in v.unwrap() {
            *counts.entry(name).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_honoured() {
    let (a, b, cc) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("c").await,
    );
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("stable", 90, vec![a.ep()]), ("canary", 10, vec![b.ep(), cc.ep()])]),
        "three": svc(&[("x", 50, vec![a.ep()]), ("y", 30, vec![b.ep()]), ("z", 20, vec![cc.ep()])]),
    }}))
    .await;
    let c = client();
    let counts = count_versions(&c, &r, "orders", 2000).await;
    let canary = counts.get("canary").copied().unwrap_or(0);
    assert!((170..=230).contains(&canary), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 2000);
    // The canary's two endpoints share its traffic.
    let (hb, hc) = (b.hits(), cc.hits());
    assert!(hb.abs_diff(hc) <= 10, "{hb} vs {hc}");

    let counts = count_versions(&c, &r, "three", 2000).await;
    for (v, want) in [("x", 1000), ("y", 600), ("z", 400)] {
        let got = counts[v] as i64;
        assert!((got - want).abs() <= 60, "{v}: {counts:?}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_endpoint_version_never_chosen_and_503_when_unroutable() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("v1", 50, vec![]), ("v2", 50, vec![a.ep()])]),
        "empty": svc(&[("v1", 100, vec![])]),
        "zero": svc(&[("v1", 0, vec![a.ep()]), ("v2", 0, vec![a.ep()])]),
        "none": svc(&[]),
    }}))
    .await;
    let c = client();
    let counts = count_versions(&c, &r, "orders", 200).await;
    assert_eq!(counts.get("v2"), Some(&200), "{counts:?}");
    for host in ["empty", "zero", "none"] {
        let res = get(&c, &r.url("/"), &[("host", host)]).await;
        assert_eq!(res.status, 503, "{host}");
        assert_eq!(res.header("content-type"), Some("application/json"));
        assert!(res.json()["error"].as_str().unwrap().contains(host));
    }
    // Forcing a version without endpoints is 503 too, never a connection attempt.
    let res = get(
        &c,
        &r.url("/"),
        &[("host", "orders"), ("x-dronectl-version", "v1")],
    )
    .await;
    assert_eq!(res.status, 503);
    assert_eq!(r.handle.stats().services["empty"].unroutable, 1);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_header_forces_an_existing_version() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let r = TestRouter::start(json!({"services": {
        "orders": svc(&[("v1", 100, vec![a.ep()]), ("v2", 0, vec![b.ep()])]),
    }}))
    .await;
    let c = client();
    for _ in 0..10 {
        let res = get(
            &c,
            &r.url("/"),
            &[("host", "orders"), ("x-dronectl-version", "v2")],
        )
        .await;
        assert_eq!(
            (res.body.as_str(), res.header("x-dronectl-version")),
            ("b", Some("v2"))
        );
    }
    // Unknown version: ignored, weights apply.
    let res = get(
        &c,
        &r.url("/"),
        &[("host", "orders"), ("x-dronectl-version", "v9")],
    )
    .await;
    assert_eq!(res.body, "a");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_id_forwarding_and_proxy_headers() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(orders_on(&a)).await;
    let c = client();
    // Forwarded as is, and x-forwarded-for appended.
    let res = get(
        &c,
        &r.url("/"),
        &[
            ("host", "orders"),
            ("x-correlation-id", "abc-123"),
            ("x-forwarded-for", "203.0.113.9"),
            ("connection", "x-secret"),
            ("x-secret", "hop"),
        ],
    )
    .await;
    assert_eq!(res.header("x-seen-correlation-id"), Some("abc-123"));
    assert_eq!(res.header("x-correlation-id"), Some("abc-123"));
    assert_eq!(
        res.header("x-seen-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(
        res.header("x-seen-secret"),
        None,
        "hop-by-hop header named in Connection is stripped"
    );
    assert_eq!(
        res.header("keep-alive"),
        None,
        "hop-by-hop response header is stripped"
    );
    // Generated when absent (UUID v4 shape), and echoed to the caller.
    let res = get(&c, &r.url("/"), &[("host", "orders")]).await;
    let id = res.header("x-seen-correlation-id").unwrap().to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(res.header("x-correlation-id"), Some(id.as_str()));
    let res2 = get(&c, &r.url("/"), &[("host", "orders")]).await;
    assert_ne!(res2.header("x-seen-correlation-id"), Some(id.as_str()));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_streamed_and_limited() {
    let a = Upstream::start("a").await;
    let mut opts = TestRouter::opts_with(orders_on(&a));
    opts.max_body_bytes = 1024;
    let r = TestRouter::start_with(opts).await;
    let c = client();
    let res = send(
        &c,
        "POST",
        &r.url("/"),
        &[("host", "orders")],
        vec![b'x'; 1000],
    )
    .await;
    assert_eq!((res.status, res.header("x-body-len")), (200, Some("1000")));
    let res = send(
        &c,
        "POST",
        &r.url("/"),
        &[("host", "orders")],
        vec![b'x'; 2000],
    )
    .await;
    assert_eq!(res.status, 413);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504() {
    let a = Upstream::start("a").await;
    let mut opts = TestRouter::opts_with(orders_on(&a));
    opts.upstream_timeout = std::time::Duration::from_millis(300);
    let r = TestRouter::start_with(opts).await;
    let c = client();
    let res = get(&c, &r.url("/slow?ms=5000"), &[("host", "orders")]).await;
    assert_eq!(res.status, 504);
    assert_eq!(res.header("x-dronectl-version"), Some("v1"));
    let st = r.handle.stats();
    let v = st.version("orders", "v1").unwrap();
    assert_eq!((v.requests, v.errors_5xx, v.upstream_errors), (1, 1, 1));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_served() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(orders_on(&a)).await;
    let c: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let res = get(&c, &r.url("/x"), &[("host", "orders")]).await;
    assert_eq!((res.status, res.body.as_str()), (200, "a"));
    r.stop().await;
}

/// With busy polling on, the workers serve requests (idle gaps between them included) and
/// drain on shutdown as without it (the poller is stopped with the worker).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_polling_workers_serve_and_drain() {
    let a = Upstream::start("a").await;
    let mut opts = TestRouter::opts_with(orders_on(&a));
    opts.workers = 2;
    opts.busy_poll = Duration::from_micros(200);
    let r = TestRouter::start_with(opts).await;
    let c = client();
    for i in 0..20 {
        let resp = get(&c, &r.url("/"), &[("host", "orders")]).await;
        assert_eq!((resp.status, resp.body.as_str()), (200, "a"), "request {i}");
        if i % 5 == 0 {
            // Longer than the budget: the poller parks, and the next request re-arms it.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    r.stop().await;
}

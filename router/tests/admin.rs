//! The admin API: config replace/validation, stats + delta/quantiles, metrics, health.

mod common;

use common::*;
use dronectl_router::{Stats, VersionStats};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_put_get_and_validation() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(json!({"services": {}})).await;
    let c = client();
    assert_eq!(
        r.handle.generation(),
        1,
        "initial config without generation gets 1"
    );
    let good = json!({"generation": 5, "services": {"orders": {
        "versions": {"v1": {"weight": 100, "endpoints": [a.ep()]}},
        "routes": ["/api/orders"]}}});
    let res = put_config(&c, &r, &good).await;
    assert_eq!((res.status, res.json()), (200, json!({"generation": 5})));
    let res = get(&c, &r.admin_url("/config"), ADMIN).await;
    assert_eq!(res.json(), good);

    for (bad, needle) in [
        (
            json!({"services": {"orders": svc(&[("v1", 60, vec![a.ep()]), ("v2", 30, vec![])])}}),
            "sum to 90",
        ),
        (json!({"services": {"Bad_Name": svc(&[])}}), "Bad_Name"),
        (
            json!({"services": {"orders": svc(&[("v1", 100, vec!["not-an-endpoint".into()])])}}),
            "not-an-endpoint",
        ),
        (
            json!({"services": {"orders": {"versions": {}, "preview": "v2"}}}),
            "preview",
        ),
        (
            json!({"services": {"orders": {"versions": {}, "colour": "red"}}}),
            "colour",
        ),
    ] {
        let res = put_config(&c, &r, &bad).await;
        assert_eq!(res.status, 400, "{bad}");
        let msg = res.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(needle), "{needle} not in {msg}");
    }
    let res = send(&c, "PUT", &r.admin_url("/config"), ADMIN, "{not json").await;
    assert_eq!(res.status, 400);
    assert!(res.json()["error"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    // Stale generation: 409; a rejected config changes nothing.
    let res = put_config(&c, &r, &json!({"generation": 4, "services": {}})).await;
    assert_eq!(res.status, 409);
    assert_eq!(get(&c, &r.admin_url("/config"), ADMIN).await.json(), good);
    assert_eq!(get(&c, &r.url("/api/orders"), &[]).await.body, "a");
    // A following writer sends the applied generation + 1.
    let res = put_config(&c, &r, &json!({"services": {}})).await;
    assert_eq!(res.json(), json!({"generation": 6}));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_delta_and_quantiles_over_http() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(orders_on(&a)).await;
    let c = client();
    for _ in 0..5 {
        get(&c, &r.url("/"), &[("host", "orders")]).await;
    }
    let before: Stats =
        serde_json::from_str(&get(&c, &r.admin_url("/stats"), ADMIN).await.body).unwrap();
    for _ in 0..16 {
        assert_eq!(
            get(&c, &r.url("/"), &[("host", "orders")]).await.status,
            200
        );
    }
    for _ in 0..4 {
        assert_eq!(
            get(&c, &r.url("/status/503"), &[("host", "orders")])
                .await
                .status,
            503
        );
    }
    get(&c, &r.url("/slow?ms=1000"), &[("host", "orders")]).await;
    get(&c, &r.url("/nowhere"), &[("host", "nobody")]).await;
    let after: Stats =
        serde_json::from_str(&get(&c, &r.admin_url("/stats"), ADMIN).await.body).unwrap();
    let d = Stats::delta(&before, &after);
    let v: &VersionStats = d.version("orders", "v1").unwrap();
    assert_eq!((v.requests, v.errors_5xx, v.upstream_errors), (21, 4, 0));
    assert!((v.error_rate().unwrap() - 4.0 / 21.0).abs() < 1e-9);
    assert_eq!(v.latency.count, 21);
    assert_eq!(d.no_route, 1);
    let p50 = v.latency.quantile(0.5).unwrap();
    let p99 = v.latency.quantile(0.99).unwrap();
    assert!(p50 < 0.75, "p50 {p50}");
    assert!(p99 >= 0.75, "the slow request dominates p99: {p99}");
    assert!(v.latency.sum >= 1.0);
    // No traffic in an interval: inconclusive.
    let again: Stats =
        serde_json::from_str(&get(&c, &r.admin_url("/stats"), ADMIN).await.body).unwrap();
    let idle = Stats::delta(&after, &again);
    assert_eq!(idle.version("orders", "v1").unwrap().error_rate(), None);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_endpoints() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(
        json!({"generation": 3, "services": {"orders": svc(&[("v1", 100, vec![a.ep()])])}}),
    )
    .await;
    let c = client();
    for _ in 0..3 {
        get(&c, &r.url("/"), &[("host", "orders")]).await;
    }
    let res = get(&c, &r.admin_url("/metrics"), ADMIN).await;
    assert_eq!(res.status, 200);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));
    let m = res.body;
    for needle in [
        "# TYPE router_requests_total counter",
        r#"router_requests_total{service="orders",version="v1",code="200"} 3"#,
        "# TYPE router_request_duration_seconds histogram",
        r#"router_request_duration_seconds_bucket{service="orders",version="v1",le="+Inf"} 3"#,
        r#"router_request_duration_seconds_count{service="orders",version="v1"} 3"#,
        r#"router_request_duration_seconds_sum{service="orders",version="v1"} "#,
        r#"router_upstream_errors_total{service="orders",version="v1",kind="connect"} 0"#,
        &format!(r#"router_endpoint_in_flight{{endpoint="{}"}} 0"#, a.ep()),
        "router_config_generation 3",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
    // Every sample line parses as `name{labels} number`.
    for line in m.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let res = get(&c, &r.admin_url("/healthz"), ADMIN).await;
    assert_eq!((res.status, res.json()), (200, json!({"status": "ok"})));
    let res = get(&c, &r.admin_url("/readyz"), ADMIN).await;
    assert_eq!(res.status, 200);
    let res = get(&c, &r.admin_url("/endpoints"), ADMIN).await;
    assert_eq!(
        res.json()["endpoints"],
        json!([{"endpoint": a.ep(), "in_flight": 0, "requests": 3, "in_config": true}])
    );
    assert_eq!(get(&c, &r.admin_url("/nope"), ADMIN).await.status, 404);
    assert_eq!(
        send(&c, "DELETE", &r.admin_url("/config"), ADMIN, "")
            .await
            .status,
        405
    );
    r.stop().await;
}

/// `router_worker_connections`: a new connection goes to the first worker holding fewer
/// than `pack_connections`, to the one holding the fewest once all hold that many, and
/// one that closes leaves its worker's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_connections_follow_open_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let a = Upstream::start("a").await;
    let mut opts = TestRouter::opts_with(orders_on(&a));
    opts.workers = 2;
    opts.pack_connections = 2;
    let r = TestRouter::start_with(opts).await;
    let c = client();
    let gauge = |m: &str, w: usize| -> u64 {
        let needle = format!("router_worker_connections{{worker=\"{w}\"}} ");
        let line = m
            .lines()
            .find(|l| l.starts_with(&needle))
            .unwrap_or_else(|| panic!("{needle} in\n{m}"));
        line[needle.len()..].parse().unwrap()
    };
    // Polls the gauges until they read `want` (a connection's end is counted when its
    // task has finished, a moment after the client saw it close).
    let expect = |want: [u64; 2]| {
        let (c, url) = (c.clone(), r.admin_url("/metrics"));
        async move {
            let deadline = tokio::time::Instant::now() + T;
            loop {
                let m = get(&c, &url, ADMIN).await.body;
                let got = [gauge(&m, 0), gauge(&m, 1)];
                if got == want {
                    return;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "worker connections {got:?}, want {want:?}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    expect([0, 0]).await;
    // Keep-alive connections, each answered once (so each has reached its worker).
    let data = r.data;
    let open = move || async move {
        let mut s = tokio::net::TcpStream::connect(data).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nhost: orders\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
        s
    };
    // Worker 0 is filled up to `pack_connections` (2) before worker 1 gets one.
    let mut conns = vec![open().await, open().await];
    expect([2, 0]).await;
    conns.push(open().await);
    conns.push(open().await);
    expect([2, 2]).await;
    // Every worker holds 2: the fewest, the first on a tie.
    conns.push(open().await);
    expect([3, 2]).await;
    conns.push(open().await);
    expect([3, 3]).await;
    // Two of worker 0's connections close: it is below 2 again and is filled first, though
    // worker 1 now holds more than it.
    drop(conns.remove(0));
    drop(conns.remove(0));
    expect([1, 3]).await;
    conns.push(open().await);
    expect([2, 3]).await;
    // Both at or above 2: the next goes where there are fewest (round robin would have
    // handed it to whichever came next, whatever each holds).
    conns.push(open().await);
    expect([3, 3]).await;
    drop(conns);
    expect([0, 0]).await;
    r.stop().await;
}

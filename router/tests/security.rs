//! What the router refuses, over real sockets: admin calls without the admin token, blind
//! writes that would skip compare-and-set, paths that leave their public route through
//! dot-segments, `Host` routing and forced versions on the public port.

mod common;

use common::*;
use serde_json::json;

const ADMIN_PATHS: &[(&str, &str)] = &[
    ("GET", "/config"),
    ("PUT", "/config"),
    ("GET", "/stats"),
    ("GET", "/endpoints"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/nope"),
    ("DELETE", "/config"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token() {
    let a = Upstream::start("a").await;
    let r = TestRouter::start(orders_on(&a)).await;
    let c = client();
    let evil = json!({"generation": 99, "services": {}}).to_string();
    let wrong_same_length = format!("Bearer {}", "x".repeat(TOKEN.len()));
    let longer = format!("Bearer {TOKEN}x");
    let shorter = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = format!("Basic {TOKEN}");
    let bare = TOKEN.to_string();
    let refused: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", wrong_same_length.as_str())],
        vec![("authorization", longer.as_str())],
        vec![("authorization", shorter.as_str())],
        vec![("authorization", basic.as_str())],
        vec![("authorization", bare.as_str())],
        vec![("authorization", "Bearer")],
        vec![("x-dronectl-token", TOKEN)],
    ];
    for headers in &refused {
        for (method, path) in ADMIN_PATHS {
            let res = send(&c, method, &r.admin_url(path), headers, evil.clone()).await;
            assert_eq!(res.status, 401, "{method} {path} with {headers:?}");
            assert_eq!(
                res.header("www-authenticate"),
                Some("Bearer realm=\"dronectl-router\"")
            );
            assert!(!res.body.contains(TOKEN));
        }
    }
    // Nothing changed; with the token everything answers.
    assert_eq!(r.handle.generation(), 1);
    assert_eq!(get(&c, &r.url("/"), &[("host", "orders")]).await.body, "a");
    let res = get(&c, &r.admin_url("/config"), ADMIN).await;
    assert_eq!(res.status, 200);
    let lower = format!("bearer {TOKEN}");
    let res = get(&c, &r.admin_url("/stats"), &[("authorization", &lower)]).await;
    assert_eq!(res.status, 200, "the scheme is case-insensitive");
    r.stop().await;

    // A router without a token refuses every admin call, whatever is presented.
    let mut opts = TestRouter::opts();
    opts.admin_token = None;
    let r = TestRouter::start_with(opts).await;
    for (method, path) in ADMIN_PATHS {
        let res = send(&c, method, &r.admin_url(path), ADMIN, evil.clone()).await;
        assert_eq!(res.status, 401, "{method} {path}");
    }
    assert_eq!(r.handle.generation(), 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_zero_does_not_bypass_compare_and_set() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let good = json!({"generation": 7, "services": {"orders": svc(&[("v1", 100, vec![a.ep()])])}});
    let r = TestRouter::start(good.clone()).await;
    let c = client();
    assert_eq!(r.handle.generation(), 7);
    let takeover = |generation: Option<u64>| {
        let mut cfg = json!({"services": {"orders": svc(&[("v1", 100, vec![b.ep()])])}});
        if let Some(g) = generation {
            cfg["generation"] = g.into();
        }
        cfg.to_string()
    };
    for body in [takeover(None), takeover(Some(0)), takeover(Some(7))] {
        let res = send(&c, "PUT", &r.admin_url("/config"), ADMIN, body.clone()).await;
        assert_eq!(res.status, 409, "{body}: {}", res.body);
        assert!(res.json()["error"].as_str().unwrap().contains("generation"));
    }
    assert_eq!(get(&c, &r.admin_url("/config"), ADMIN).await.json(), good);
    assert_eq!(get(&c, &r.url("/"), &[("host", "orders")]).await.body, "a");
    // In-process too.
    let blind: dronectl_router::RouterConfig = serde_json::from_str(&takeover(None)).unwrap();
    assert!(r.handle.apply(blind).is_err());
    // Two writers that both read generation 7: exactly one of them applies 8.
    let url = r.admin_url("/config");
    let (one, two) = tokio::join!(
        send(&c, "PUT", &url, ADMIN, takeover(Some(8))),
        send(&c, "PUT", &url, ADMIN, takeover(Some(8))),
    );
    let mut codes = [one.status, two.status];
    codes.sort();
    assert_eq!(codes, [200, 409]);
    assert_eq!(get(&c, &r.url("/"), &[("host", "orders")]).await.body, "b");
    r.stop().await;
}

/// `public` publishes `/api/deliveries/public`; `delivery` publishes nothing (it is internal).
async fn two_services(
    public: &Upstream,
    internal: &Upstream,
    internal_candidate: Option<&Upstream>,
) -> TestRouter {
    let mut pub_svc = svc(&[("v1", 100, vec![public.ep()])]);
    pub_svc["routes"] = json!(["/api/deliveries/public"]);
    let mut versions = vec![("v1", 100, vec![internal.ep()])];
    if let Some(c) = internal_candidate {
        versions.push(("v2", 0, vec![c.ep()]));
    }
    let mut internal_svc = svc(&versions);
    if internal_candidate.is_some() {
        internal_svc["routes"] = json!(["/api/orders"]);
    }
    TestRouter::start(json!({"services": {"web": pub_svc, "delivery": internal_svc}})).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_are_normalised_before_routing_on_both_ports() {
    let public = Upstream::start("public").await;
    let internal = Upstream::start("internal").await;
    let r = two_services(&public, &internal, None).await;
    let c = client();
    for base in [r.public_url(""), r.url("")] {
        // Leaving the public route through dot-segments reaches no route at all.
        for path in [
            "/api/deliveries/public/../1",
            "/api/deliveries/public/%2e%2e/1",
            "/api/deliveries/public/%2E%2E/1",
            "/api/deliveries/public/.%2e/1",
            "/api/deliveries/public/./../1",
        ] {
            let res = get(&c, &format!("{base}{path}"), &[("host", "x")]).await;
            assert_eq!(res.status, 404, "{base}{path}: {}", res.body);
        }
        // Ambiguous encodings are refused.
        for path in [
            "/api/deliveries/public/..%2f1",
            "/api/deliveries/public/..%2F..%2Finternal",
            "/api/deliveries/public/..%5c1",
            "/api/deliveries/public/..;/1",
            "/api/deliveries/public/%00",
            "/api/deliveries/public/%zz",
        ] {
            let res = get(&c, &format!("{base}{path}"), &[("host", "x")]).await;
            assert_eq!(res.status, 400, "{base}{path}: {}", res.body);
        }
        // Normal forms are routed and forwarded as routed.
        for (path, forwarded) in [
            ("//api//deliveries/public/1", "/api/deliveries/public/1"),
            (
                "/api/deliveries/x/../public/1?q=%2e",
                "/api/deliveries/public/1?q=%2e",
            ),
            ("/api/deliveries/public/%31", "/api/deliveries/public/1"),
            ("/api/deliveries/public/1", "/api/deliveries/public/1"),
        ] {
            let res = get(&c, &format!("{base}{path}"), &[("host", "x")]).await;
            assert_eq!(res.status, 200, "{base}{path}");
            assert_eq!(res.body, "public");
            assert_eq!(res.header("x-seen-path"), Some(forwarded), "{base}{path}");
        }
    }
    // Internal port, Host routing: the service gets the normal form too.
    let res = get(&c, &r.url("/a/b/../../c//d"), &[("host", "delivery")]).await;
    assert_eq!(
        (res.body.as_str(), res.header("x-seen-path")),
        ("internal", Some("/c/d"))
    );
    assert_eq!(public.hits() + internal.hits(), 9);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_port_ignores_host_and_the_preview_host() {
    let public = Upstream::start("public").await;
    let internal = Upstream::start("internal").await;
    let r = two_services(&public, &internal, None).await;
    let c = client();
    for host in [
        "delivery",
        "DELIVERY",
        "delivery:8080",
        "delivery-preview",
        "web",
    ] {
        let res = get(&c, &r.public_url("/api/deliveries/7"), &[("host", host)]).await;
        assert_eq!(res.status, 404, "Host: {host} on the public port");
        let res = get(&c, &r.public_url("/"), &[("host", host)]).await;
        assert_eq!(res.status, 404, "Host: {host} on the public port");
        // The public route still works whatever the Host says.
        let res = get(
            &c,
            &r.public_url("/api/deliveries/public/7"),
            &[("host", host)],
        )
        .await;
        assert_eq!(res.body, "public", "Host: {host}");
    }
    assert_eq!(internal.hits(), 0);
    // h2c: the :authority is ignored too.
    let res = send_h2(r.public, "delivery", "/api/deliveries/7").await;
    assert_eq!(res, 404);
    assert_eq!(internal.hits(), 0);
    // The internal port routes by Host as before.
    let res = get(&c, &r.url("/api/deliveries/7"), &[("host", "delivery")]).await;
    assert_eq!(res.body, "internal");
    r.stop().await;
}

/// One h2c (prior knowledge) GET to `addr` with `:authority` = `authority`; its status.
async fn send_h2(addr: std::net::SocketAddr, authority: &str, path: &str) -> u16 {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("http://{authority}{path}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = tokio::time::timeout(T, sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    res.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_version_on_the_public_port_needs_the_token() {
    let public = Upstream::start("public").await;
    let stable = Upstream::start("stable").await;
    let candidate = Upstream::start("candidate").await;
    let r = two_services(&public, &stable, Some(&candidate)).await;
    let c = client();
    let wrong = "y".repeat(TOKEN.len());
    for headers in [
        vec![("x-dronectl-version", "v2")],
        vec![
            ("x-dronectl-version", "v2"),
            ("x-dronectl-token", wrong.as_str()),
        ],
        vec![("x-dronectl-version", "v2"), ("authorization", ADMIN[0].1)],
        vec![("host", "delivery-preview"), ("x-dronectl-version", "v2")],
    ] {
        for _ in 0..5 {
            let res = get(&c, &r.public_url("/api/orders/1"), &headers).await;
            assert_eq!(
                (res.body.as_str(), res.header("x-dronectl-version")),
                ("stable", Some("v1")),
                "{headers:?}"
            );
            assert_eq!(res.header("x-seen-token"), None);
        }
    }
    assert_eq!(
        candidate.hits(),
        0,
        "a weight-0 version is never served anonymously"
    );
    // With the admin token: the preview flow from the host. The token is not forwarded.
    let res = get(
        &c,
        &r.public_url("/api/orders/1"),
        &[("x-dronectl-version", "v2"), ("x-dronectl-token", TOKEN)],
    )
    .await;
    assert_eq!(res.body, "candidate");
    assert_eq!(res.header("x-seen-token"), None);
    // Inside the app network the header forces the version (and a token is still stripped).
    let res = get(
        &c,
        &r.url("/api/orders/1"),
        &[
            ("host", "delivery"),
            ("x-dronectl-version", "v2"),
            ("x-dronectl-token", "whatever"),
        ],
    )
    .await;
    assert_eq!(res.body, "candidate");
    assert_eq!(res.header("x-seen-token"), None);
    r.stop().await;
}

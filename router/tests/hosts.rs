//! Public routes with host names, over real sockets: a route with `hosts` answers only
//! requests whose `Host` (port stripped, any case) is one of them, on both ports.

mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_with_hosts_match_the_host_header_only() {
    let (shop, admin, any) = (
        Upstream::start("shop").await,
        Upstream::start("admin").await,
        Upstream::start("any").await,
    );
    let mut shop_svc = svc(&[("v1", 100, vec![shop.ep()])]);
    shop_svc["routes"] = json!(["/api"]);
    shop_svc["hosts"] = json!(["shop.example.com", "*.shop.example.com"]);
    let mut admin_svc = svc(&[("v1", 100, vec![admin.ep()])]);
    admin_svc["routes"] = json!(["/api"]);
    admin_svc["hosts"] = json!(["admin.example.com"]);
    let r = TestRouter::start(json!({"services": {"shop": shop_svc, "admin": admin_svc}})).await;
    let c = client();
    for url in [r.public_url("/api/orders"), r.url("/api/orders")] {
        let body = |host: &'static str| {
            let (c, url) = (c.clone(), url.clone());
            async move { get(&c, &url, &[("host", host)]).await }
        };
        assert_eq!(body("shop.example.com").await.body, "shop");
        assert_eq!(body("SHOP.Example.COM:8080").await.body, "shop");
        assert_eq!(body("eu.shop.example.com").await.body, "shop");
        assert_eq!(body("admin.example.com:80").await.body, "admin");
        // Another host (or a look-alike) matches no route.
        for host in ["localhost", "example.com", "shop.example.com.evil", "127.0.0.1:1"] {
            let res = body(host).await;
            assert_eq!(res.status, 404, "{host}: {}", res.body);
            assert_eq!(res.json(), json!({"error": "no route"}));
        }
    }

    // A route for any host answers the other hosts; the host's own route still wins.
    let mut shop_svc = svc(&[("v1", 100, vec![shop.ep()])]);
    shop_svc["routes"] = json!(["/api"]);
    shop_svc["hosts"] = json!(["shop.example.com"]);
    let mut any_svc = svc(&[("v1", 100, vec![any.ep()])]);
    any_svc["routes"] = json!(["/api"]);
    let res = put_config(
        &c,
        &r,
        &json!({"services": {"shop": shop_svc, "any": any_svc}}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let url = r.public_url("/api/x");
    assert_eq!(get(&c, &url, &[("host", "shop.example.com")]).await.body, "shop");
    assert_eq!(get(&c, &url, &[("host", "localhost:9000")]).await.body, "any");
    r.stop().await;
    assert_eq!(any.hits(), 1);
}

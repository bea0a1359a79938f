//! Loopback benchmark: a tiny in-process upstream, the router in front of it, and Debian's
//! `wrk` run twice — straight at the upstream, then through the router — so the router's
//! throughput and added latency can be read side by side. Bounded (~15 s); see `bench.sh`.
//!
//! Four runs: throughput (BENCH_CONNECTIONS connections, BENCH_SECS each) and unloaded latency
//! (1 connection, 3 s each), direct and through the router.
//!
//! Env: BENCH_SECS (per throughput run, default 5), BENCH_CONNECTIONS (default 64),
//! BENCH_THREADS (wrk threads, default 1), BENCH_WORKERS (tokio workers, default 2).

use std::convert::Infallible;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let secs = env("BENCH_SECS", 5);
    let conns = env("BENCH_CONNECTIONS", 64);
    let threads = env("BENCH_THREADS", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env("BENCH_WORKERS", 2) as usize)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        // Upstream: answers 200 "ok" on every request.
        let up = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up_addr = up.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = up.accept().await else {
                    continue;
                };
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"ok",
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });

        let cfg = serde_json::json!({"services": {"bench": {
            "versions": {
                "v1": {"weight": 90, "endpoints": [up_addr.to_string()]},
                "v2": {"weight": 10, "endpoints": [up_addr.to_string()]}
            },
            "routes": ["/"]
        }}});
        let opts = dronectl_router::RouterOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            initial_config: Some(serde_json::from_value(cfg).unwrap()),
            ..Default::default()
        };
        let router = dronectl_router::bind(opts).unwrap();
        let router_addr = router.data_addr();
        let handle = router.handle();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(router.serve(async move {
            let _ = rx.await;
        }));

        let wrk = |label: &'static str, url: String, conns: u64, secs: u64| {
            tokio::task::spawn_blocking(move || {
                let out = Command::new("wrk")
                    .args([
                        "-t",
                        &threads.min(conns).to_string(),
                        "-c",
                        &conns.to_string(),
                        "-d",
                        &format!("{secs}s"),
                        "--latency",
                        "-H",
                        "Host: bench",
                        &url,
                    ])
                    .output()
                    .expect("wrk (apt-get install wrk) must be on PATH");
                println!(
                    "=== {label}: {url}\n{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (direct, routed) = (
            format!("http://{up_addr}/"),
            format!("http://{router_addr}/"),
        );
        wrk(
            "throughput, direct to upstream",
            direct.clone(),
            conns,
            secs,
        )
        .await
        .unwrap();
        wrk(
            "throughput, through the router",
            routed.clone(),
            conns,
            secs,
        )
        .await
        .unwrap();
        wrk("latency (1 connection), direct", direct, 1, 3)
            .await
            .unwrap();
        wrk("latency (1 connection), through the router", routed, 1, 3)
            .await
            .unwrap();

        let stats = handle.stats();
        for (v, s) in &stats.services["bench"].versions {
            println!(
                "router stats {v}: requests={} 5xx={} upstream_errors={} p50={:.3}ms p99={:.3}ms",
                s.requests,
                s.errors_5xx,
                s.upstream_errors,
                s.latency.quantile(0.5).unwrap_or(0.0) * 1e3,
                s.latency.quantile(0.99).unwrap_or(0.0) * 1e3,
            );
        }
        let _ = tx.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), serving).await;
    });
}

//! Upstream for measuring the load generator's client alone: answers every
//! `POST /api/deliveryrequests` as ingestion does (202, a `Location` and a small JSON body)
//! without doing any work, on one runtime thread.
//!
//! ```text
//! cargo run --release --example sink -- 18080 &
//! loadgen --ingestion http://127.0.0.1:18080 --delivery http://127.0.0.1:18081 \
//!     --duration 4 --concurrency 16 --drain-timeout 1 --client raw   # or hyper
//! ```
//! (There is no delivery service, so every request counts as lost and loadgen exits 1;
//! read `loadgen_cpu_us_per_request` and the request rate.)
use axum::http::{header, StatusCode};
use axum::routing::post;
use axum::Router;

const ID: &str = "00000000-0000-4000-8000-000000000000";

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse().expect("PORT"))
        .unwrap_or(18080);
    let location = format!("/api/deliveries/{ID}");
    let body = format!(r#"{{"deliveryId":"{ID}"}}"#);
    let app = Router::new().route(
        "/api/deliveryrequests",
        post(move |_request: axum::body::Bytes| async move {
            (
                StatusCode::ACCEPTED,
                [
                    (header::LOCATION, location),
                    (header::CONTENT_TYPE, "application/json".into()),
                ],
                body,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    axum::serve(listener, app).await.expect("serve");
}

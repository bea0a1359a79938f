//! Debug endpoints, served only when `ENABLE_DEBUG_ENDPOINTS=true`. dronectl's rollout tests
//! use `GET /debug/sleep?ms=N` to hold requests in flight while a version is drained.

use std::time::Duration;

use axum::extract::Query;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::AppState;

/// Longest sleep accepted, in milliseconds.
const MAX_SLEEP_MS: u64 = 300_000;

pub fn routes() -> Router<AppState> {
    Router::new().route("/debug/sleep", get(sleep))
}

#[derive(Debug, Deserialize)]
struct SleepParams {
    ms: Option<u64>,
}

/// `GET /debug/sleep?ms=N`: sleeps N milliseconds (default 1000), then answers 200.
async fn sleep(Query(params): Query<SleepParams>) -> Json<Value> {
    let ms = params.ms.unwrap_or(1000).min(MAX_SLEEP_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({ "slept_ms": ms }))
}

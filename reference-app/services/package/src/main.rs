//! package: the package aggregate. Owns keys `package:*`.
//! `PUT /api/packages/{id}` 201 created / 204 updated (409 once cancelled),
//! `GET`, and `DELETE` (cancel; idempotent, leaves a tombstone so a late
//! create cannot resurrect it).
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::domain::{check_id, SIZES};
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct Package {
    #[serde(default)]
    package_id: String,
    #[serde(default)]
    owner_id: String,
    size: String,
    #[serde(default)]
    weight: f64,
    #[serde(default)]
    tag: String,
}

const UPSERT: &str = r#"
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'Cancelled' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'status', 'Active')
if st then return 'updated' end
return 'created'
"#;

const CANCEL: &str = r#"
redis.call('HSET', KEYS[1], 'status', 'Cancelled')
return 1
"#;

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    upsert: Arc<redis::Script>,
    cancel: Arc<redis::Script>,
}

fn key(id: &str) -> String {
    format!("package:p:{id}")
}

async fn put_package(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<Package>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let Json(mut p) = body.map_err(|e| ApiError::field("size", format!("invalid package: {e}")))?;
    if !SIZES.contains(&p.size.as_str()) {
        return Err(ApiError::field("size", "size must be one of Small|Medium|Large"));
    }
    if !(0.0..=100_000.0).contains(&p.weight) {
        return Err(ApiError::field("weight", "weight must be between 0 and 100000"));
    }
    p.package_id = id.clone();
    let doc = serde_json::to_string(&p).unwrap_or_default();
    let mut r = s.redis.clone();
    let out: String = s.upsert.key(key(&id)).arg(doc).invoke_async(&mut r).await?;
    Ok(match out.as_str() {
        "created" => StatusCode::CREATED.into_response(),
        "updated" => StatusCode::NO_CONTENT.into_response(),
        _ => ApiError::conflict("package was cancelled").into_response(),
    })
}

async fn get_package(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let (doc, status): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(key(&id))
        .arg("doc")
        .arg("status")
        .query_async(&mut r)
        .await?;
    let Some(status) = status else {
        return Err(ApiError::not_found("package"));
    };
    let mut v: serde_json::Value = doc
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or_else(|| serde_json::json!({"packageId": id}));
    v["status"] = serde_json::Value::String(status);
    Ok(Json(v).into_response())
}

async fn delete_package(State(s): State<AppState>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let _: i64 = s.cancel.key(key(&id)).invoke_async(&mut r).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("package", env!("CARGO_PKG_VERSION"));
    let (_client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let state = AppState {
        redis,
        upsert: Arc::new(redis::Script::new(UPSERT)),
        cancel: Arc::new(redis::Script::new(CANCEL)),
    };
    let app = Router::new()
        .route(
            "/api/packages/{id}",
            get(get_package).put(put_package).delete(delete_package),
        )
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

//! account: is the customer's account active? Owns keys `account:*`.
//! Unknown accounts are treated as active (self-service sign-up); an account
//! is suspended with `PUT /api/accounts/{id}` `{"active": false}`.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::domain::check_id;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::json;

fn key(id: &str) -> String {
    format!("account:a:{id}")
}

#[derive(Deserialize)]
struct AccountBody {
    active: bool,
    #[serde(default)]
    name: Option<String>,
}

async fn get_account(State(mut r): State<ConnectionManager>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let (active, name): (Option<String>, Option<String>) = redis::cmd("HMGET")
        .arg(key(&id))
        .arg("active")
        .arg("name")
        .query_async(&mut r)
        .await?;
    let known = active.is_some();
    let active = active.map(|a| a == "1").unwrap_or(true);
    Ok(Json(json!({"id": id, "active": active, "known": known, "name": name})).into_response())
}

async fn put_account(
    State(mut r): State<ConnectionManager>,
    Path(id): Path<String>,
    body: Result<Json<AccountBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let Json(b) = body.map_err(|e| ApiError::field("active", format!("body must be {{\"active\": bool}}: {e}")))?;
    let created: bool = !r.exists(key(&id)).await?;
    let _: () = r
        .hset_multiple(
            key(&id),
            &[
                ("active", if b.active { "1" } else { "0" }),
                ("name", b.name.as_deref().unwrap_or("")),
            ],
        )
        .await?;
    Ok(if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    }
    .into_response())
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("account", env!("CARGO_PKG_VERSION"));
    let (_client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let app = Router::new()
        .route("/api/accounts/{id}", get(get_account).put(put_account))
        .with_state(redis);
    drone_common::server::serve(app, 8080).await
}

//! ingestion: the public API. Validates delivery requests and buffers them
//! durably on the `ingestion:requests` stream (load levelling); answers 202
//! only once the request is queued (503 if the broker is unavailable).
//! Owns keys `ingestion:*` (a marker per accepted delivery id, so that
//! reschedule / cancel of an unknown id is a 404; each expires after
//! `RETENTION_SECS`).
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use drone_common::domain::{check_id, validate_request, validate_reschedule};
use drone_common::telemetry::current_correlation_id;
use drone_common::topics::REQUESTS;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use serde_json::json;

/// The OpenAPI document of the public API (kept as a file next to the crate).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The body's bytes (413 over the limit, 400 when empty); the JSON is read by
/// the validation, which keeps numbers as written.
fn read_body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").with_field("body")
        } else {
            ApiError::field("body", format!("cannot read body: {e}"))
        }
    })?;
    if bytes.is_empty() {
        return Err(ApiError::field("body", "a JSON body is required"));
    }
    Ok(bytes)
}

trait WithField {
    fn with_field(self, f: &str) -> Self;
}
impl WithField for ApiError {
    fn with_field(mut self, f: &str) -> Self {
        self.field = Some(f.to_string());
        self
    }
}

async fn enqueue(
    r: &mut ConnectionManager,
    kind: &str,
    id: &str,
    body: &str,
    mark_accepted: bool,
) -> Result<(), ApiError> {
    let cid = current_correlation_id().unwrap_or_default();
    let mut p = redis::pipe();
    p.atomic()
        .cmd("XADD")
        .arg(REQUESTS)
        .arg("*")
        .arg("type")
        .arg(kind)
        .arg("deliveryId")
        .arg(id)
        .arg("body")
        .arg(body)
        .arg("correlationId")
        .arg(cid)
        .ignore();
    if mark_accepted {
        // Kept for RETENTION_SECS: a reschedule or cancel of an older request is a 404.
        p.cmd("SET")
            .arg(format!("ingestion:accepted:{id}"))
            .arg(1)
            .arg("PX")
            .arg(drone_common::config::retention_ms())
            .ignore();
    }
    p.query_async::<()>(r).await.map_err(|e| {
        tracing::error!(error = %e, delivery_id = id, "could not queue request");
        ApiError::unavailable("could not queue the request; retry later")
    })
}

async fn known(r: &mut ConnectionManager, id: &str) -> Result<(), ApiError> {
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("ingestion:accepted:{id}"))
        .query_async(r)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(ApiError::not_found("delivery request"))
    }
}

async fn create(
    State(mut r): State<ConnectionManager>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let mut req = validate_request(&read_body(body)?)?;
    let id = uuid::Uuid::new_v4().to_string();
    req.delivery_id = Some(id.clone());
    let text = serde_json::to_string(&req).unwrap_or_default();
    enqueue(&mut r, "create", &id, &text, true).await?;
    drone_common::server::runtime()
        .metrics
        .inc("ingestion_accepted_total", &[("type", "create")]);
    Ok((
        StatusCode::ACCEPTED,
        [
            (header::LOCATION, format!("/api/deliveries/{id}")),
            (header::CONTENT_TYPE, "application/json".to_string()),
        ],
        text,
    )
        .into_response())
}

async fn reschedule(
    State(mut r): State<ConnectionManager>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let changes = validate_reschedule(&read_body(body)?)?;
    known(&mut r, &id).await?;
    let text = serde_json::to_string(&changes).unwrap_or_default();
    enqueue(&mut r, "reschedule", &id, &text, false).await?;
    drone_common::server::runtime()
        .metrics
        .inc("ingestion_accepted_total", &[("type", "reschedule")]);
    let mut out = serde_json::to_value(&changes).unwrap_or_default();
    out["deliveryId"] = json!(id);
    Ok((StatusCode::OK, Json(out)).into_response())
}

async fn cancel(State(mut r): State<ConnectionManager>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    known(&mut r, &id).await?;
    enqueue(&mut r, "cancel", &id, "{}", false).await?;
    drone_common::server::runtime()
        .metrics
        .inc("ingestion_accepted_total", &[("type", "cancel")]);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn probe() -> Response {
    match drone_common::server::runtime().not_ready_reason() {
        None => Json(json!({"status": "ready"})).into_response(),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": r})),
        )
            .into_response(),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("ingestion", env!("CARGO_PKG_VERSION"));
    let (_client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let app = Router::new()
        .route("/api/deliveryrequests", post(create))
        .route("/api/deliveryrequests/{id}", patch(reschedule).delete(cancel))
        .route("/api/openapi.json", get(openapi))
        .route("/api/probe", get(probe))
        .with_state(redis);
    drone_common::server::serve(app, 8080).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn openapi_is_valid_json_and_lists_the_public_paths() {
        let v: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(v["openapi"].as_str().unwrap().chars().next(), Some('3'));
        for p in [
            "/api/deliveryrequests",
            "/api/deliveryrequests/{id}",
            "/api/deliveries/public/{id}",
            "/api/deliveries/{id}/status",
            "/api/drone/{id}",
            "/api/deliveries/{id}/owner",
            "/api/deliveries/summary",
        ] {
            assert!(v["paths"].get(p).is_some(), "missing {p}");
        }
    }

    #[test]
    fn body_errors_name_the_body() {
        let e = read_body(Ok(Bytes::new())).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        let e = validate_request(&read_body(Ok(Bytes::from_static(b"{nope"))).unwrap()).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("body"));
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}

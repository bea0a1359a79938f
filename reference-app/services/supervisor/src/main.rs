//! supervisor: reads failed workflows from `workflow:failed`, compensates
//! (release the drone, cancel the package), records the failure on the
//! delivery (so `GET /api/deliveries/public/{id}` shows it) and keeps its own
//! record under `supervisor:*`. Every step is idempotent; a message is
//! acknowledged only when all steps succeeded.
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::client::HttpClient;
use drone_common::config::dependency_url;
use drone_common::domain::{check_id, fmt_rfc3339, now_ms};
use drone_common::resilience::Downstream;
use drone_common::streams::{run_consumer, ConsumerConfig, Message};
use drone_common::telemetry::{new_correlation_id, with_correlation_id};
use drone_common::topics::FAILED;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Deps {
    dronescheduler: Downstream,
    package: Downstream,
    delivery: Downstream,
}

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    deps: Arc<Deps>,
}

fn fkey(id: &str) -> String {
    format!("supervisor:f:{id}")
}

/// Run the compensations; `Err` = a transient failure (retry later).
async fn compensate(s: &AppState, id: &str, reason: &str, request: &Value) -> Result<Vec<String>, String> {
    let mut actions = Vec::new();
    let r = s
        .deps
        .dronescheduler
        .call(Method::DELETE, &format!("/api/dronedeliveries/{id}"), None)
        .await?;
    actions.push(match r.status {
        204 | 200 => "drone released".to_string(),
        409 => format!(
            "drone not released: {}",
            r.body.get("error").and_then(Value::as_str).unwrap_or("in flight")
        ),
        s => format!("drone release answered {s}"),
    });
    let r = s
        .deps
        .package
        .call(Method::DELETE, &format!("/api/packages/{id}"), None)
        .await?;
    actions.push(if r.status < 300 {
        "package cancelled".into()
    } else {
        format!("package cancel answered {}", r.status)
    });
    let body = json!({"reason": reason, "request": request});
    let r = s
        .deps
        .delivery
        .call(Method::PUT, &format!("/api/deliveries/{id}/failure"), Some(&body))
        .await?;
    actions.push(if r.status < 300 {
        "failure recorded on delivery".into()
    } else {
        format!("delivery answered {}", r.status)
    });
    Ok(actions)
}

async fn on_failed(s: AppState, m: Message) -> bool {
    let Some(id) = m.get("deliveryId").map(str::to_string) else {
        return true;
    };
    let cid = m
        .get("correlationId")
        .map(str::to_string)
        .unwrap_or_else(new_correlation_id);
    with_correlation_id(cid, async move {
        let mut r = s.redis.clone();
        let done: Option<String> = r.hget(fkey(&id), "status").await.unwrap_or(None);
        if done.as_deref() == Some("compensated") {
            return true;
        }
        let reason = m.get("reason").unwrap_or("unknown").to_string();
        let request: Value = m
            .get("request")
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        match compensate(&s, &id, &reason, &request).await {
            Ok(actions) => {
                let rec: redis::RedisResult<()> = r
                    .hset_multiple(
                        fkey(&id),
                        &[
                            ("status", "compensated".to_string()),
                            ("reason", reason.clone()),
                            ("actions", serde_json::to_string(&actions).unwrap_or_default()),
                            ("at", now_ms().to_string()),
                        ],
                    )
                    .await;
                if rec.is_err() {
                    return false;
                }
                let _: redis::RedisResult<()> = r.incr("supervisor:count", 1).await;
                drone_common::server::runtime()
                    .metrics
                    .inc("supervisor_compensations_total", &[]);
                tracing::warn!(delivery_id = %id, reason = %reason, ?actions, "workflow failure compensated");
                true
            }
            Err(e) => {
                tracing::warn!(delivery_id = %id, error = %e, "compensation incomplete; will retry");
                false
            }
        }
    })
    .await
}

async fn get_failure(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let h: HashMap<String, String> = r.hgetall(fkey(&id)).await?;
    if h.is_empty() {
        return Err(ApiError::not_found("failure record"));
    }
    let actions: Value = h
        .get("actions")
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or(Value::Null);
    let at = h.get("at").and_then(|a| a.parse::<u64>().ok()).map(fmt_rfc3339);
    Ok(Json(
        json!({"deliveryId": id, "status": h.get("status"), "reason": h.get("reason"), "actions": actions, "at": at}),
    ))
}

async fn count(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut r = s.redis.clone();
    let n: Option<u64> = r.get("supervisor:count").await?;
    Ok(Json(json!({"compensated": n.unwrap_or(0)})))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("supervisor", env!("CARGO_PKG_VERSION"));
    let (client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let http = HttpClient::new(Duration::from_millis(drone_common::config::env_or(
        "HTTP_TIMEOUT_MS",
        5000,
    )));
    let deps = Arc::new(Deps {
        dronescheduler: Downstream::new(
            "dronescheduler",
            dependency_url("dronescheduler", "http://127.0.0.1:8086"),
            http.clone(),
        ),
        package: Downstream::new(
            "package",
            dependency_url("package", "http://127.0.0.1:8085"),
            http.clone(),
        ),
        delivery: Downstream::new("delivery", dependency_url("delivery", "http://127.0.0.1:8087"), http),
    });
    let state = AppState {
        redis: redis.clone(),
        deps,
    };
    let cfg = ConsumerConfig::from_env(FAILED, "supervisor", Some("deliveryId"));
    let st = state.clone();
    tokio::spawn(run_consumer(client, redis, cfg, move |m| on_failed(st.clone(), m)));
    let app = Router::new()
        .route("/api/failures", get(count))
        .route("/api/failures/{id}", get(get_failure))
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

//! workflow (the Scheduler): reads `ingestion:requests` in the `workflow`
//! consumer group and runs, for each delivery request,
//! account active? -> third party needed? -> create package -> assign drone ->
//! create delivery. Every step is idempotent by delivery id, so redelivery
//! after a crash is harmless. Transient failures are retried (backoff, circuit
//! breaker and bulkhead per downstream, see `drone_common::resilience`); a
//! message whose downstreams stay unavailable is left pending and retried
//! (reclaimed after `CLAIM_IDLE_MS`) up to `MAX_MESSAGE_ATTEMPTS` times.
//! Non-transient failures are handed to the supervisor (`workflow:failed`)
//! atomically with the workflow's own state. Messages of one delivery are
//! processed in order; a message is acknowledged only at a final state.
//! Owns keys `workflow:*`.
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::client::HttpClient;
use drone_common::config::{dependency_url, env_or};
use drone_common::domain::{check_id, DeliveryRequest};
use drone_common::resilience::Downstream;
use drone_common::streams::{run_consumer, ConsumerConfig, Message};
use drone_common::telemetry::{new_correlation_id, with_correlation_id};
use drone_common::topics::{FAILED, REQUESTS};
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

struct Deps {
    account: Downstream,
    thirdparty: Downstream,
    package: Downstream,
    dronescheduler: Downstream,
    delivery: Downstream,
}

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    deps: Arc<Deps>,
    max_attempts: u64,
}

/// Result of handling one message.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Final state reached: acknowledge.
    Done(&'static str),
    /// Transient failure: leave pending, retry later.
    Retry(String),
    /// Non-transient failure: hand to the supervisor.
    Fail(String),
}

use Outcome::*;

/// Field of the state hash set while a cancellation is under way, so a create
/// handled after it compensates instead of scheduling.
const CANCEL_REQUESTED: &str = "cancelRequested";

fn skey(id: &str) -> String {
    format!("workflow:s:{id}")
}

macro_rules! call {
    ($dep:expr, $m:expr, $path:expr, $body:expr) => {
        match $dep.call($m, &$path, $body).await {
            Ok(r) => r,
            Err(e) => return Retry(e),
        }
    };
}

fn err_text(v: &Value) -> String {
    v.get("error").and_then(Value::as_str).unwrap_or("").to_string()
}

async fn status(s: &AppState, id: &str) -> Result<Option<String>, String> {
    let mut r = s.redis.clone();
    r.hget(skey(id), "status").await.map_err(|e| format!("redis: {e}"))
}

async fn set_status(s: &AppState, id: &str, fields: &[(&str, &str)]) -> Result<(), String> {
    let mut r = s.redis.clone();
    r.hset_multiple::<_, _, _, ()>(skey(id), fields)
        .await
        .map_err(|e| format!("redis: {e}"))
}

/// Undo whatever a create may have done, after a cancellation.
async fn compensate_cancelled(s: &AppState, id: &str) -> Outcome {
    let d = &s.deps;
    let r = call!(
        d.dronescheduler,
        Method::DELETE,
        format!("/api/dronedeliveries/{id}"),
        None
    );
    if r.status == 409 {
        // The drone already picked the package up: the cancellation lost the race.
        tracing::warn!(
            delivery_id = id,
            "cancellation arrived after pickup; delivery continues"
        );
    }
    call!(d.package, Method::DELETE, format!("/api/packages/{id}"), None);
    call!(d.delivery, Method::DELETE, format!("/api/deliveries/{id}"), None);
    if let Err(e) = set_status(s, id, &[("status", "cancelled")]).await {
        return Retry(e);
    }
    Done("cancelled")
}

async fn run_create(s: &AppState, id: &str, m: &Message) -> Outcome {
    let mut r = s.redis.clone();
    let state: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("HMGET")
        .arg(skey(id))
        .arg("status")
        .arg(CANCEL_REQUESTED)
        .query_async(&mut r)
        .await;
    let cancelled = match state {
        Err(e) => return Retry(format!("redis: {e}")),
        Ok((Some(st), _)) if st == "completed" || st == "failed" || st == "cancelled" => return Done("duplicate"),
        Ok((_, c)) => c.is_some(),
    };
    let Some(req) = m
        .get("body")
        .and_then(|b| serde_json::from_str::<DeliveryRequest>(b).ok())
    else {
        return Fail("malformed queued request".into());
    };
    if cancelled {
        return compensate_cancelled(s, id).await;
    }
    let d = &s.deps;
    // 1. account active?
    let a = call!(d.account, Method::GET, format!("/api/accounts/{}", req.owner_id), None);
    if a.status != 200 {
        return Fail(format!("account check failed ({}): {}", a.status, err_text(&a.body)));
    }
    if a.body.get("active").and_then(Value::as_bool) != Some(true) {
        return Fail(format!("account {} is not active", req.owner_id));
    }
    // 2. third party needed?
    let route = json!({"pickupLocation": req.pickup_location, "dropOffLocation": req.drop_off_location});
    let t = call!(d.thirdparty, Method::PUT, format!("/api/thirdparty/{id}"), Some(&route));
    if t.status != 200 {
        return Fail(format!(
            "third-party check failed ({}): {}",
            t.status,
            err_text(&t.body)
        ));
    }
    let third_party = t.body.get("required").and_then(Value::as_bool).unwrap_or(false);
    // 3. package
    let p = &req.package_info;
    let pkg = json!({"ownerId": req.owner_id, "size": p.size, "weight": p.weight, "tag": p.tag});
    let pr = call!(d.package, Method::PUT, format!("/api/packages/{id}"), Some(&pkg));
    match pr.status {
        200..=299 => {}
        409 => return compensate_cancelled(s, id).await,
        st => return Fail(format!("package rejected ({st}): {}", err_text(&pr.body))),
    }
    // 4. drone
    let dr = call!(
        d.dronescheduler,
        Method::PUT,
        format!("/api/dronedeliveries/{id}"),
        Some(&route)
    );
    let drone_id = match dr.status {
        200 | 201 => dr.body.get("droneId").and_then(Value::as_str).unwrap_or("").to_string(),
        409 => return compensate_cancelled(s, id).await,
        st => return Fail(format!("drone assignment rejected ({st}): {}", err_text(&dr.body))),
    };
    // 5. delivery
    let mut doc = serde_json::to_value(&req).unwrap_or_default();
    doc["deliveryId"] = json!(id);
    doc["droneId"] = json!(drone_id);
    doc["thirdPartyRequired"] = json!(third_party);
    let dl = call!(d.delivery, Method::PUT, format!("/api/deliveries/{id}"), Some(&doc));
    match dl.status {
        200 | 201 => {}
        409 => return compensate_cancelled(s, id).await,
        st => return Fail(format!("delivery rejected ({st}): {}", err_text(&dl.body))),
    }
    if let Err(e) = set_status(s, id, &[("status", "completed"), ("droneId", &drone_id)]).await {
        return Retry(e);
    }
    tracing::info!(delivery_id = id, drone_id = %drone_id, "delivery scheduled");
    Done("scheduled")
}

async fn run_cancel(s: &AppState, id: &str) -> Outcome {
    let mut r = s.redis.clone();
    if let Err(e) = r.hset::<_, _, _, ()>(skey(id), CANCEL_REQUESTED, 1).await {
        return Retry(format!("redis: {e}"));
    }
    match status(s, id).await {
        Err(e) => return Retry(e),
        Ok(Some(st)) if st == "failed" || st == "cancelled" => return Done("nothing to cancel"),
        Ok(_) => {}
    }
    let d = &s.deps;
    let rel = call!(
        d.dronescheduler,
        Method::DELETE,
        format!("/api/dronedeliveries/{id}"),
        None
    );
    if rel.status == 409 {
        let _: redis::RedisResult<()> = r.hdel(skey(id), CANCEL_REQUESTED).await;
        let _ = set_status(s, id, &[("cancel", "rejected: package already picked up")]).await;
        tracing::warn!(delivery_id = id, "cancel rejected: package already picked up");
        return Done("cancel rejected");
    }
    compensate_cancelled(s, id).await
}

async fn run_reschedule(s: &AppState, id: &str, m: &Message) -> Outcome {
    match status(s, id).await {
        Err(e) => return Retry(e),
        Ok(None) => return Retry("delivery not scheduled yet".into()),
        Ok(Some(st)) if st != "completed" => return Done("nothing to reschedule"),
        Ok(Some(_)) => {}
    }
    let Some(mut changes) = m.get("body").and_then(|b| serde_json::from_str::<Value>(b).ok()) else {
        return Done("malformed reschedule");
    };
    let d = &s.deps;
    if changes.get("pickupLocation").is_some() || changes.get("dropOffLocation").is_some() {
        let route =
            json!({"pickupLocation": changes.get("pickupLocation"), "dropOffLocation": changes.get("dropOffLocation")});
        let rr = call!(
            d.dronescheduler,
            Method::PATCH,
            format!("/api/dronedeliveries/{id}"),
            Some(&route)
        );
        if rr.status >= 400 {
            tracing::warn!(delivery_id = id, status = rr.status, error = %err_text(&rr.body), "reschedule rejected by drone scheduler");
            return Done("reschedule rejected");
        }
    }
    changes["requestId"] = json!(m.id);
    let dr = call!(
        d.delivery,
        Method::PATCH,
        format!("/api/deliveries/{id}"),
        Some(&changes)
    );
    if dr.status >= 400 {
        tracing::warn!(delivery_id = id, status = dr.status, error = %err_text(&dr.body), "reschedule rejected by delivery");
        return Done("reschedule rejected");
    }
    Done("rescheduled")
}

/// Hand a failed workflow to the supervisor, atomically with our own state.
async fn hand_to_supervisor(s: &AppState, id: &str, m: &Message, reason: &str) -> bool {
    let mut r = s.redis.clone();
    let res: redis::RedisResult<()> = redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(FAILED)
        .arg("*")
        .arg("deliveryId")
        .arg(id)
        .arg("reason")
        .arg(reason)
        .arg("request")
        .arg(m.get("body").unwrap_or("{}"))
        .arg("correlationId")
        .arg(m.get("correlationId").unwrap_or(""))
        .ignore()
        .hset_multiple(skey(id), &[("status", "failed"), ("reason", reason)])
        .ignore()
        .query_async(&mut r)
        .await;
    match res {
        Ok(()) => {
            tracing::warn!(delivery_id = id, reason, "workflow failed; handed to supervisor");
            true
        }
        Err(e) => {
            tracing::warn!(delivery_id = id, error = %e, "could not hand to supervisor; will retry");
            false
        }
    }
}

async fn on_message(s: AppState, m: Message) -> bool {
    let Some(id) = m.get("deliveryId").map(str::to_string) else {
        return true;
    };
    let kind = m.get("type").unwrap_or("create").to_string();
    let cid = m
        .get("correlationId")
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .unwrap_or_else(new_correlation_id);
    let span = tracing::info_span!("message", correlation_id = %cid, delivery_id = %id, kind = %kind);
    let fut = async {
        let outcome = match kind.as_str() {
            "create" => run_create(&s, &id, &m).await,
            "cancel" => run_cancel(&s, &id).await,
            "reschedule" => run_reschedule(&s, &id, &m).await,
            _ => Done("unknown message type"),
        };
        let metrics = &drone_common::server::runtime().metrics;
        let mut r = s.redis.clone();
        match outcome {
            Done(what) => {
                metrics.inc("workflow_messages_total", &[("type", &kind), ("outcome", what)]);
                true
            }
            Fail(reason) => {
                metrics.inc("workflow_messages_total", &[("type", &kind), ("outcome", "failed")]);
                hand_to_supervisor(&s, &id, &m, &reason).await
            }
            Retry(err) => {
                // Attempts per queue message (expire on their own; no clean-up on success).
                let akey = format!("workflow:attempts:{}", m.id);
                let n: u64 = redis::pipe()
                    .incr(&akey, 1)
                    .pexpire(&akey, 86_400_000)
                    .ignore()
                    .query_async::<(u64,)>(&mut r)
                    .await
                    .map(|(n,)| n)
                    .unwrap_or(0);
                if n < s.max_attempts {
                    metrics.inc(
                        "workflow_messages_total",
                        &[("type", &kind), ("outcome", "retry_later")],
                    );
                    tracing::warn!(attempt = n, error = %err, "transient failure; message left pending");
                    return false;
                }
                metrics.inc(
                    "workflow_messages_total",
                    &[("type", &kind), ("outcome", "attempts_exhausted")],
                );
                if kind == "create" {
                    hand_to_supervisor(
                        &s,
                        &id,
                        &m,
                        &format!("downstream unavailable after {n} attempts: {err}"),
                    )
                    .await
                } else {
                    tracing::error!(error = %err, "giving up on {kind} after {n} attempts");
                    true
                }
            }
        }
    };
    with_correlation_id(cid.clone(), tracing::Instrument::instrument(fut, span)).await
}

async fn get_state(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let h: HashMap<String, String> = r.hgetall(skey(&id)).await?;
    if h.is_empty() {
        return Err(ApiError::not_found("workflow"));
    }
    Ok(Json(json!({"deliveryId": id, "state": h})))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("workflow", env!("CARGO_PKG_VERSION"));
    let (client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let http = HttpClient::new(Duration::from_millis(env_or("HTTP_TIMEOUT_MS", 5000)));
    let dep = |name: &str, port: u16| {
        Downstream::new(
            name,
            dependency_url(name, &format!("http://127.0.0.1:{port}")),
            http.clone(),
        )
    };
    let deps = Arc::new(Deps {
        account: dep("account", 8083),
        thirdparty: dep("thirdparty", 8084),
        package: dep("package", 8085),
        dronescheduler: dep("dronescheduler", 8086),
        delivery: dep("delivery", 8087),
    });
    let state = AppState {
        redis: redis.clone(),
        deps,
        max_attempts: env_or("MAX_MESSAGE_ATTEMPTS", 5),
    };
    let cfg = ConsumerConfig::from_env(REQUESTS, "workflow", Some("deliveryId"));
    let st = state.clone();
    tokio::spawn(run_consumer(client, redis, cfg, move |m| on_message(st.clone(), m)));
    let app = Router::new()
        .route("/api/workflows/{id}", get(get_state))
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

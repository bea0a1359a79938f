//! deliveryhistory: subscribes to delivery tracking events and keeps the
//! long-term history of every delivery. Owns keys `deliveryhistory:*`.
//! Appends are idempotent by event (stream entry) id.
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::domain::{check_id, fmt_rfc3339};
use drone_common::streams::{run_consumer, ConsumerConfig, Message};
use drone_common::topics::TRACKING_EVENTS;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const APPEND: &str = r#"
local id, eid, ev, typ = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('SADD', 'deliveryhistory:seen:' .. id, eid) == 0 then return 0 end
redis.call('RPUSH', 'deliveryhistory:h:' .. id, ev)
redis.call('HINCRBY', 'deliveryhistory:stats', typ, 1)
return 1
"#;

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    append: Arc<redis::Script>,
}

/// JSON record of one tracking event.
fn event_json(m: &Message) -> Value {
    let ts = m.get("ts").and_then(|t| t.parse::<u64>().ok()).map(fmt_rfc3339);
    json!({
        "eventId": m.id,
        "type": m.get("type"),
        "stage": m.get("stage"),
        "location": m.get("location").filter(|l| !l.is_empty()),
        "timestamp": ts,
    })
}

async fn on_event(s: AppState, m: Message) -> bool {
    let Some(id) = m.get("deliveryId") else { return true };
    let mut r = s.redis.clone();
    let res: redis::RedisResult<i64> = s
        .append
        .arg(id)
        .arg(&m.id)
        .arg(event_json(&m).to_string())
        .arg(m.get("type").unwrap_or("Unknown"))
        .invoke_async(&mut r)
        .await;
    match res {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, delivery_id = id, "history append failed; will retry");
            false
        }
    }
}

async fn get_history(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let raw: Vec<String> = r.lrange(format!("deliveryhistory:h:{id}"), 0, -1).await?;
    if raw.is_empty() {
        return Err(ApiError::not_found("delivery history"));
    }
    let events: Vec<Value> = raw.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
    let last = events
        .last()
        .and_then(|e| e.get("stage"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok(Json(json!({"deliveryId": id, "stage": last, "events": events})))
}

async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut r = s.redis.clone();
    let h: HashMap<String, u64> = r.hgetall("deliveryhistory:stats").await?;
    Ok(Json(json!(h)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("deliveryhistory", env!("CARGO_PKG_VERSION"));
    let (client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let state = AppState {
        redis: redis.clone(),
        append: Arc::new(redis::Script::new(APPEND)),
    };
    let cfg = ConsumerConfig::from_env(TRACKING_EVENTS, "deliveryhistory", Some("deliveryId"));
    let st = state.clone();
    tokio::spawn(run_consumer(client, redis, cfg, move |m| on_event(st.clone(), m)));
    let app = Router::new()
        .route("/api/deliveryhistory/stats", get(stats))
        .route("/api/deliveryhistory/{id}", get(get_history))
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_record() {
        let mut fields = HashMap::new();
        fields.insert("type".to_string(), "Created".to_string());
        fields.insert("stage".to_string(), "Created".to_string());
        fields.insert("location".to_string(), String::new());
        fields.insert("ts".to_string(), "0".to_string());
        let v = event_json(&Message {
            id: "1-0".into(),
            fields,
        });
        assert_eq!(v["type"], "Created");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert!(v["location"].is_null());
    }
}

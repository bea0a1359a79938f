//! deliveryhistory: subscribes to delivery tracking events and keeps the
//! long-term history of every delivery. Owns keys `deliveryhistory:*`.
//! Appends are idempotent by event (stream entry) id; events are consumed in
//! batches, each batch appended by one script call.
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::domain::{check_id, fmt_rfc3339};
use drone_common::streams::{
    run_batch_consumer, stream_id, BatchOutcome, ConsumerConfig, Message, OffsetStep, OFFSET_PRELUDE,
};
use drone_common::topics::TRACKING_EVENTS;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// Records a batch of events (after [`OFFSET_PRELUDE`], which takes
/// ARGV[1..=3]): then (delivery id, event id, event JSON, type) four at a time. A delivery's history is a hash from event id (the
/// stream entry id, which orders the events) to the event, so recording an
/// event twice is a no-op. Returns the number of events recorded (the others
/// were seen before) as a string, or `'moved'`.
const APPEND: &str = r#"
local counts, n = {}, 0
for i = 4, #ARGV, 4 do
  local typ = ARGV[i + 3]
  if redis.call('HSETNX', 'deliveryhistory:e:' .. ARGV[i], ARGV[i + 1], ARGV[i + 2]) == 1 then
    counts[typ] = (counts[typ] or 0) + 1
    n = n + 1
  end
end
for typ, c in pairs(counts) do redis.call('HINCRBY', 'deliveryhistory:stats', typ, c) end
return tostring(n)
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

async fn on_events(s: AppState, batch: Vec<Message>, step: OffsetStep) -> Result<BatchOutcome, String> {
    let mut call = s.append.prepare_invoke();
    step.args(&mut call);
    for m in &batch {
        let Some(id) = m.get("deliveryId") else { continue };
        call.arg(id)
            .arg(&m.id)
            .arg(event_json(m).to_string())
            .arg(m.get("type").unwrap_or("Unknown"));
    }
    let mut r = s.redis.clone();
    call.invoke_async::<String>(&mut r)
        .await
        .map(|reply| BatchOutcome::from_reply(&reply))
        .map_err(|e| format!("history append ({}): {e}", batch.len()))
}

async fn get_history(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let mut raw: Vec<(String, String)> = r.hgetall(format!("deliveryhistory:e:{id}")).await?;
    if raw.is_empty() {
        return Err(ApiError::not_found("delivery history"));
    }
    raw.sort_by_key(|(eid, _)| stream_id(eid));
    let events: Vec<Value> = raw.iter().filter_map(|(_, e)| serde_json::from_str(e).ok()).collect();
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
        append: Arc::new(redis::Script::new(&format!("{OFFSET_PRELUDE}\n{APPEND}"))),
    };
    let cfg = ConsumerConfig::from_env(TRACKING_EVENTS, "deliveryhistory", Some("deliveryId"));
    let st = state.clone();
    tokio::spawn(run_batch_consumer(client, redis, cfg, move |b, step| {
        on_events(st.clone(), b, step)
    }));
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
    fn events_sort_by_stream_id() {
        let mut ids = vec!["10-2", "9-5", "10-10", "10-1"];
        ids.sort_by_key(|i| stream_id(i));
        assert_eq!(ids, ["9-5", "10-1", "10-2", "10-10"]);
    }

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

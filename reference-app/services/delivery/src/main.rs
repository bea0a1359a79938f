//! delivery: the delivery aggregate and its live status. Owns keys
//! `delivery:*`. Turns drone status events into delivery tracking events
//! (Created, Rescheduled, HeadedToPickup, HeadedToDropoff, Completed,
//! Cancelled, Failed) on the `delivery:events` stream. Every state change and
//! its event are written together by one Lua script, so an event is emitted
//! exactly once per change even when drone events are redelivered.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use drone_common::domain::{check_id, fmt_rfc3339, now_ms, parse_coordinates, resolve_location, validate_reschedule};
use drone_common::streams::{run_batch_consumer, BatchOutcome, ConsumerConfig, Message, OffsetStep, OFFSET_PRELUDE};
use drone_common::topics::{DRONE_EVENTS, TRACKING_EVENTS};
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

const PRELUDE: &str = r#"
local NAMES = {'HeadedToPickup', 'HeadedToDropoff', 'Completed'}
local RANK = {HeadedToPickup = 1, HeadedToDropoff = 2, Completed = 3}
local function final(st) return st == 'Completed' or st == 'Cancelled' or st == 'Failed' end
local function emit(id, typ, stage, loc, now)
  redis.call('XADD', KEYS[1], '*', 'deliveryId', id, 'type', typ, 'stage', stage, 'location', loc or '', 'ts', now)
end
-- A delivery that reached a final stage keeps its hot state for the
-- retention (ms) only; its long-term record is deliveryhistory's.
local function retire(id, ttl)
  redis.call('PEXPIRE', 'delivery:d:' .. id, ttl)
  redis.call('PEXPIRE', 'delivery:rs:' .. id, ttl)
end
"#;

/// Creates the delivery (ARGV: id, document, time, retention, owner id,
/// month `yyyy-mm` of the owner's summary). Drone events that arrived
/// first (the drone is assigned before the delivery is created) left their
/// furthest stage in `early_rank` (with location and ETA) in the same hash:
/// the creation catches up with them.
const CREATE: &str = r#"
local id, doc, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = 'delivery:d:' .. id
local cur = redis.call('HMGET', k, 'stage', 'early_rank', 'location')
if cur[1] then return cur[1] end
local r = tonumber(cur[2] or '0')
redis.call('HSET', k, 'doc', doc, 'stage', r > 0 and NAMES[r] or 'Created', 'created', now, 'updated', now, 'version', 1)
emit(id, 'Created', 'Created', '', now)
redis.call('HINCRBY', 'delivery:stats', 'created', 1)
redis.call('HINCRBY', 'delivery:owner:' .. ARGV[5], ARGV[6], 1)
for i = 1, r do emit(id, NAMES[i], NAMES[i], cur[3], now) end
if r == 3 then
  redis.call('HINCRBY', 'delivery:stats', 'completed', 1)
  retire(id, ttl)
end
return 'new'
"#;

/// Applies a batch of drone status events (after [`OFFSET_PRELUDE`], which
/// takes ARGV[1..=3]): ARGV[4] is the time, ARGV[5] the retention, then
/// (delivery id, stage rank, location, ETA) four at a time, in stream order.
/// A stage only ever moves forward.
const DRONE: &str = r#"
local now, ttl = ARGV[4], ARGV[5]
local function apply(id, r, loc, eta)
  local k = 'delivery:d:' .. id
  local h = redis.call('HMGET', k, 'stage', 'early_rank')
  local st = h[1]
  if not st then
    -- Not created yet: remember the furthest stage for the creation.
    if r >= tonumber(h[2] or '0') then redis.call('HSET', k, 'early_rank', r, 'location', loc, 'eta', eta) end
    return
  end
  if final(st) then return end
  local cur = RANK[st] or 0
  if r < cur then return end
  if r == cur then
    redis.call('HSET', k, 'location', loc, 'eta', eta, 'updated', now)
    return
  end
  redis.call('HSET', k, 'location', loc, 'eta', eta, 'updated', now, 'stage', NAMES[r])
  for i = cur + 1, r do emit(id, NAMES[i], NAMES[i], loc, now) end
  if r == 3 then
    redis.call('HINCRBY', 'delivery:stats', 'completed', 1)
    retire(id, ttl)
  end
end
for i = 6, #ARGV, 4 do apply(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]) end
return 'ok'
"#;

const RESCHEDULE: &str = r#"
local id, doc, ver, req, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = 'delivery:d:' .. id
local cur = redis.call('HMGET', k, 'stage', 'version')
if not cur[1] then return 'missing' end
if req ~= '' and redis.call('SISMEMBER', 'delivery:rs:' .. id, req) == 1 then return 'dup' end
if final(cur[1]) then return cur[1] end
if cur[2] ~= ver then return 'retry' end
redis.call('HSET', k, 'doc', doc, 'version', tonumber(ver) + 1, 'updated', now)
redis.call('HINCRBY', k, 'rescheduled', 1)
if req ~= '' then redis.call('SADD', 'delivery:rs:' .. id, req) end
emit(id, 'Rescheduled', cur[1], '', now)
return 'ok'
"#;

const CANCEL: &str = r#"
local id, now, doc, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = 'delivery:d:' .. id
local st = redis.call('HGET', k, 'stage')
if st == 'Cancelled' then return st end
if st and st ~= 'Created' and st ~= 'HeadedToPickup' then return st end
if not st then redis.call('HSET', k, 'doc', doc, 'created', now, 'version', 1) end
redis.call('HSET', k, 'stage', 'Cancelled', 'updated', now)
emit(id, 'Cancelled', 'Cancelled', '', now)
redis.call('HINCRBY', 'delivery:stats', 'cancelled', 1)
retire(id, ttl)
return 'Cancelled'
"#;

const FAIL: &str = r#"
local id, reason, doc, now, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = 'delivery:d:' .. id
local st = redis.call('HGET', k, 'stage')
if st and final(st) then return st end
if not st then redis.call('HSET', k, 'doc', doc, 'created', now, 'version', 1) end
redis.call('HSET', k, 'stage', 'Failed', 'reason', reason, 'updated', now)
emit(id, 'Failed', 'Failed', '', now)
redis.call('HINCRBY', 'delivery:stats', 'failed', 1)
retire(id, ttl)
return 'Failed'
"#;

fn script(body: &str) -> Arc<redis::Script> {
    Arc::new(redis::Script::new(&format!("{PRELUDE}\n{body}")))
}

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    create: Arc<redis::Script>,
    drone: Arc<redis::Script>,
    reschedule: Arc<redis::Script>,
    cancel: Arc<redis::Script>,
    fail: Arc<redis::Script>,
    /// `RETENTION_SECS` in ms: a finished delivery's keys expire after it.
    retention_ms: u64,
}

fn dkey(id: &str) -> String {
    format!("delivery:d:{id}")
}

fn rank(stage: &str) -> Option<u8> {
    match stage {
        "HeadedToPickup" => Some(1),
        "HeadedToDropoff" => Some(2),
        "Completed" => Some(3),
        _ => None,
    }
}

type Body = Result<Json<Value>, axum::extract::rejection::JsonRejection>;

fn body_obj(b: Body) -> Result<Value, ApiError> {
    let Json(v) = b.map_err(|e| ApiError::field("body", format!("invalid JSON body: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::field("body", "body must be a JSON object"));
    }
    Ok(v)
}

async fn create(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut doc = body_obj(body)?;
    let Some(owner) = doc.get("ownerId").and_then(Value::as_str).map(str::to_string) else {
        return Err(ApiError::field("ownerId", "ownerId is required"));
    };
    doc["deliveryId"] = json!(id);
    let mut r = s.redis.clone();
    let now = now_ms();
    let out: String = s
        .create
        .key(TRACKING_EVENTS)
        .arg(&id)
        .arg(doc.to_string())
        .arg(now)
        .arg(s.retention_ms)
        .arg(owner)
        .arg(&fmt_rfc3339(now)[..7])
        .invoke_async(&mut r)
        .await?;
    match out.as_str() {
        "new" => Ok((StatusCode::CREATED, Json(json!({"deliveryId": id, "stage": "Created"}))).into_response()),
        "Cancelled" | "Failed" => Err(ApiError::conflict(format!("delivery is {out}"))),
        st => Ok((StatusCode::OK, Json(json!({"deliveryId": id, "stage": st}))).into_response()),
    }
}

fn render(id: &str, h: &HashMap<String, String>, public: bool) -> Value {
    let doc: Value = h
        .get("doc")
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_else(|| json!({}));
    let loc = h
        .get("location")
        .filter(|l| !l.is_empty())
        .and_then(|l| parse_coordinates(l))
        .and_then(Result::ok);
    let eta = h.get("eta").and_then(|e| e.parse::<u64>().ok()).map(fmt_rfc3339);
    let ms = |k: &str| h.get(k).and_then(|e| e.parse::<u64>().ok()).map(fmt_rfc3339);
    let stage = h.get("stage").cloned().unwrap_or_default();
    let mut v = json!({
        "id": id,
        "deliveryId": id,
        "stage": stage,
        "lastKnownLocation": loc,
        "eta": if stage == "Completed" || stage == "Cancelled" || stage == "Failed" { None } else { eta },
        "ownerId": doc.get("ownerId"),
        "pickupLocation": doc.get("pickupLocation"),
        "dropOffLocation": doc.get("dropOffLocation"),
        "pickupTime": doc.get("pickupTime"),
        "deadline": doc.get("deadline"),
        "expedited": doc.get("expedited"),
        "confirmationRequired": doc.get("confirmationRequired"),
        "packageId": doc.get("packageInfo").and_then(|p| p.get("packageId")),
        "droneId": doc.get("droneId"),
        "rescheduled": h.get("rescheduled").and_then(|r| r.parse::<u64>().ok()).unwrap_or(0),
        "createdAt": ms("created"),
        "updatedAt": ms("updated"),
    });
    if let Some(r) = h.get("reason") {
        v["failureReason"] = json!(r);
    }
    if !public {
        v["thirdPartyRequired"] = doc.get("thirdPartyRequired").cloned().unwrap_or(Value::Null);
        v["packageInfo"] = doc.get("packageInfo").cloned().unwrap_or(Value::Null);
        v["confirmation"] = h
            .get("confirmation")
            .and_then(|c| serde_json::from_str::<Value>(c).ok())
            .unwrap_or(Value::Null);
    }
    v
}

async fn load(s: &AppState, id: &str) -> Result<HashMap<String, String>, ApiError> {
    check_id(id)?;
    let mut r = s.redis.clone();
    let h: HashMap<String, String> = r.hgetall(dkey(id)).await?;
    // Without a stage the hash only holds drone events that came first.
    if !h.contains_key("stage") {
        return Err(ApiError::not_found("delivery"));
    }
    Ok(h)
}

async fn get_public(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let h = load(&s, &id).await?;
    Ok(Json(render(&id, &h, true)))
}

/// The original's `DeliveryStatus` (`GET /api/deliveries/{id}/status`, and
/// `GET /api/drone/{id}` which its drone ingress published): the stage, the
/// last known position and the ETA at the drop-off while in flight. No
/// pickup ETA is tracked (`pickupETA` is null).
fn status_view(h: &HashMap<String, String>) -> Value {
    let v = render("", h, true);
    json!({
        "stage": v["stage"],
        "lastKnownLocation": v["lastKnownLocation"],
        "pickupETA": Value::Null,
        "deliveryETA": v["eta"],
    })
}

async fn get_status(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let h = load(&s, &id).await?;
    Ok(Json(status_view(&h)))
}

/// The original's `UserAccount` of a delivery (`GET /api/deliveries/{id}/owner`):
/// `userId` is the request's `ownerId`; the original filled `accountId` with a
/// fresh random GUID, here it is the owner id too.
async fn get_owner(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let h = load(&s, &id).await?;
    let v = render(&id, &h, true);
    Ok(Json(json!({"userId": v["ownerId"], "accountId": v["ownerId"]})))
}

/// `GET /api/deliveries/summary?ownerId=&year=&month=` → `{"count": n}`: the
/// deliveries created for the owner in that month (UTC), as the original
/// published. A missing owner, or a year / month that is not a number in
/// range, is a 400 naming it.
async fn summary(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Result<Json<Value>, ApiError> {
    let owner = q
        .get("ownerId")
        .filter(|o| !o.is_empty() && o.len() <= 128)
        .ok_or_else(|| ApiError::field("ownerId", "ownerId (1-128 characters) is required"))?;
    let num = |k: &str, range: std::ops::RangeInclusive<u32>| {
        q.get(k)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                ApiError::field(
                    k,
                    format!("{k} must be a number from {} to {}", range.start(), range.end()),
                )
            })
    };
    let (year, month) = (num("year", 1970..=9999)?, num("month", 1..=12)?);
    let mut r = s.redis.clone();
    let n: Option<u64> = r
        .hget(format!("delivery:owner:{owner}"), format!("{year:04}-{month:02}"))
        .await?;
    Ok(Json(json!({"count": n.unwrap_or(0)})))
}

async fn get_internal(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let h = load(&s, &id).await?;
    Ok(Json(render(&id, &h, false)))
}

async fn patch(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    check_id(&id)?;
    let b = body_obj(body)?;
    let changes = validate_reschedule(b.to_string().as_bytes())?;
    let req_id = b.get("requestId").and_then(Value::as_str).unwrap_or("").to_string();
    let mut r = s.redis.clone();
    for _ in 0..5 {
        let h = load(&s, &id).await?;
        let mut doc: Value = h
            .get("doc")
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_else(|| json!({}));
        if let Value::Object(ch) = serde_json::to_value(&changes).unwrap_or_default() {
            for (k, v) in ch {
                doc[k] = v;
            }
        }
        let ver = h.get("version").cloned().unwrap_or_default();
        let out: String = s
            .reschedule
            .key(TRACKING_EVENTS)
            .arg(&id)
            .arg(doc.to_string())
            .arg(ver)
            .arg(&req_id)
            .arg(now_ms())
            .invoke_async(&mut r)
            .await?;
        match out.as_str() {
            "ok" | "dup" => {
                let h = load(&s, &id).await?;
                return Ok(Json(render(&id, &h, false)).into_response());
            }
            "retry" => continue,
            "missing" => return Err(ApiError::not_found("delivery")),
            st => return Err(ApiError::conflict(format!("delivery is {st}"))),
        }
    }
    Err(ApiError::unavailable("concurrent updates; retry"))
}

async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let tomb = json!({"deliveryId": id}).to_string();
    let out: String = s
        .cancel
        .key(TRACKING_EVENTS)
        .arg(&id)
        .arg(now_ms())
        .arg(tomb)
        .arg(s.retention_ms)
        .invoke_async(&mut r)
        .await?;
    if out == "Cancelled" {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::conflict(format!("cannot cancel: delivery is {out}")))
    }
}

async fn record_failure(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    check_id(&id)?;
    let b = body_obj(body)?;
    let reason = b.get("reason").and_then(Value::as_str).unwrap_or("failed").to_string();
    let mut doc = b
        .get("request")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}));
    doc["deliveryId"] = json!(id);
    let mut r = s.redis.clone();
    let out: String = s
        .fail
        .key(TRACKING_EVENTS)
        .arg(&id)
        .arg(&reason)
        .arg(doc.to_string())
        .arg(now_ms())
        .arg(s.retention_ms)
        .invoke_async(&mut r)
        .await?;
    Ok(Json(json!({"deliveryId": id, "stage": out})).into_response())
}

async fn confirm(State(s): State<AppState>, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    let h = load(&s, &id).await?;
    let b = body_obj(body)?;
    if h.get("stage").map(String::as_str) != Some("Completed") {
        return Err(ApiError::conflict("delivery is not completed"));
    }
    let mut r = s.redis.clone();
    let _: () = r.hset(dkey(&id), "confirmation", b.to_string()).await?;
    Ok(Json(json!({"deliveryId": id, "confirmed": true})).into_response())
}

async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut r = s.redis.clone();
    let h: HashMap<String, u64> = r.hgetall("delivery:stats").await?;
    let g = |k: &str| h.get(k).copied().unwrap_or(0);
    Ok(Json(
        json!({"created": g("created"), "completed": g("completed"), "cancelled": g("cancelled"), "failed": g("failed")}),
    ))
}

/// Apply a batch of drone status events and the consumer's new offset in one
/// script call.
async fn on_drone_events(s: AppState, batch: Vec<Message>, step: OffsetStep) -> Result<BatchOutcome, String> {
    let mut call = s.drone.key(TRACKING_EVENTS);
    step.args(&mut call);
    call.arg(now_ms()).arg(s.retention_ms);
    for m in &batch {
        let (Some(id), Some(rk)) = (m.get("deliveryId"), m.get("stage").and_then(rank)) else {
            continue;
        };
        let loc = match m.get("location") {
            Some(l) if !l.is_empty() => drone_common::domain::loc_to_string(&resolve_location(l)),
            _ => String::new(),
        };
        call.arg(id).arg(rk).arg(loc).arg(m.get("eta").unwrap_or(""));
    }
    let mut r = s.redis.clone();
    call.invoke_async::<String>(&mut r)
        .await
        .map(|reply| BatchOutcome::from_reply(&reply))
        .map_err(|e| format!("drone events ({}): {e}", batch.len()))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    drone_common::server::init("delivery", env!("CARGO_PKG_VERSION"));
    let (client, redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let state = AppState {
        redis: redis.clone(),
        create: script(CREATE),
        drone: Arc::new(redis::Script::new(&format!("{PRELUDE}\n{OFFSET_PRELUDE}\n{DRONE}"))),
        reschedule: script(RESCHEDULE),
        cancel: script(CANCEL),
        fail: script(FAIL),
        retention_ms: drone_common::config::retention_ms(),
    };
    let cfg = ConsumerConfig::from_env(DRONE_EVENTS, "delivery", Some("deliveryId"));
    let st = state.clone();
    tokio::spawn(run_batch_consumer(client, redis, cfg, move |b, step| {
        on_drone_events(st.clone(), b, step)
    }));
    let app = Router::new()
        .route("/api/deliveries/public/{id}", get(get_public))
        .route("/api/deliveries/stats", get(stats))
        .route("/api/deliveries/summary", get(summary))
        .route("/api/deliveries/{id}/status", get(get_status))
        .route("/api/deliveries/{id}/owner", get(get_owner))
        .route("/api/drone/{id}", get(get_status))
        .route(
            "/api/deliveries/{id}",
            get(get_internal).put(create).patch(patch).delete(cancel),
        )
        .route("/api/deliveries/{id}/failure", put(record_failure))
        .route("/api/deliveries/{id}/confirmations", post(confirm))
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_public_view() {
        let mut h = HashMap::new();
        h.insert(
            "doc".to_string(),
            json!({"ownerId": "o", "packageInfo": {"packageId": "p"}, "droneId": "drone-1"}).to_string(),
        );
        h.insert("stage".to_string(), "HeadedToDropoff".to_string());
        h.insert("location".to_string(), "0,47.5,-122.3".to_string());
        h.insert("eta".to_string(), "1557345600000".to_string());
        let v = render("d1", &h, true);
        assert_eq!(v["stage"], "HeadedToDropoff");
        assert_eq!(v["lastKnownLocation"]["latitude"], 47.5);
        assert_eq!(v["eta"], "2019-05-08T20:00:00.000Z");
        assert_eq!(v["packageId"], "p");
        assert!(v.get("thirdPartyRequired").is_none());
    }

    #[test]
    fn renders_the_original_status_shape() {
        let mut h = HashMap::new();
        h.insert("doc".to_string(), json!({"ownerId": "o"}).to_string());
        h.insert("stage".to_string(), "HeadedToDropoff".to_string());
        h.insert("location".to_string(), "0,47.5,-122.3".to_string());
        h.insert("eta".to_string(), "1557345600000".to_string());
        let v = status_view(&h);
        assert_eq!(
            v,
            json!({"stage": "HeadedToDropoff", "lastKnownLocation": {"altitude": 0.0, "latitude": 47.5, "longitude": -122.3},
                   "pickupETA": null, "deliveryETA": "2019-05-08T20:00:00.000Z"})
        );
        h.insert("stage".to_string(), "Completed".to_string());
        assert!(status_view(&h)["deliveryETA"].is_null());
    }

    #[test]
    fn ranks() {
        assert_eq!(rank("Completed"), Some(3));
        assert_eq!(rank("Released"), None);
    }
}

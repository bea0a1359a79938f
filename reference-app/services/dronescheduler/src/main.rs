//! dronescheduler: the drone fleet. Owns keys `dronescheduler:*`.
//!
//! * `PUT /api/dronedeliveries/{id}` assigns a drone (atomically, in one Lua
//!   script: one delivery never gets two drones, a drone never flies two
//!   deliveries) and starts its flight: 201 new, 200 already assigned (same
//!   drone), 409 cancelled, 503 no drone free.
//! * `DELETE /api/dronedeliveries/{id}` releases the drone while it is still
//!   headed to the pickup (204), 409 once the package is picked up. Releasing
//!   an unknown delivery leaves a tombstone so a late assignment is refused.
//! * `PATCH /api/dronedeliveries/{id}` changes the route of a flight.
//! * A simulation loop moves drones (speed `DRONE_SPEED_MPS`) and emits drone
//!   status events on the `dronescheduler:events` stream, each transition
//!   written together with its event in one Lua script.
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use drone_common::domain::{check_id, distance_m, lerp, loc_to_string, now_ms, resolve_location, Location, DEPOT};
use drone_common::topics::DRONE_EVENTS;
use drone_common::ApiError;
use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const ASSIGN: &str = r#"
local k = 'dronescheduler:f:' .. ARGV[1]
local st = redis.call('HGET', k, 'stage')
if st then
  if st == 'Released' then return {'released', ''} end
  return {'existing', redis.call('HGET', k, 'drone')}
end
local d = redis.call('SPOP', 'dronescheduler:idle')
if not d then return {'none', ''} end
redis.call('HSET', k, 'drone', d, 'stage', 'HeadedToPickup', 'leg_start', ARGV[2], 'leg_ms', ARGV[6], 'leg2_ms', ARGV[7],
  'from', ARGV[3], 'to', ARGV[4], 'pickup', ARGV[4], 'dropoff', ARGV[5], 'assignments', 1)
redis.call('INCR', 'dronescheduler:assignments_total')
redis.call('SADD', 'dronescheduler:active', ARGV[1])
redis.call('XADD', KEYS[1], '*', 'deliveryId', ARGV[1], 'droneId', d, 'stage', 'HeadedToPickup', 'location', ARGV[3], 'eta', ARGV[8], 'ts', ARGV[2])
return {'assigned', d}
"#;

/// Moves a batch of due flights to their next stage: ARGV[1] is the time,
/// then (delivery id, expected stage, expected leg start, next stage, leg ms,
/// from, to, location, ETA) nine at a time. A flight whose stored stage or leg
/// start differs (rerouted or released meanwhile) is left alone. Returns one
/// 1/0 per flight.
const ADVANCE: &str = r#"
local now, out = ARGV[1], {}
for i = 2, #ARGV, 9 do
  local id, nxt = ARGV[i], ARGV[i + 3]
  local k = 'dronescheduler:f:' .. id
  local cur = redis.call('HMGET', k, 'stage', 'leg_start', 'drone')
  if cur[1] ~= ARGV[i + 1] or cur[2] ~= ARGV[i + 2] then
    out[#out + 1] = 0
  else
    redis.call('HSET', k, 'stage', nxt, 'leg_start', now, 'leg_ms', ARGV[i + 4], 'from', ARGV[i + 5], 'to', ARGV[i + 6])
    if nxt == 'Completed' then
      redis.call('SREM', 'dronescheduler:active', id)
      redis.call('SADD', 'dronescheduler:idle', cur[3])
    end
    redis.call('XADD', KEYS[1], '*', 'deliveryId', id, 'droneId', cur[3], 'stage', nxt, 'location', ARGV[i + 7], 'eta', ARGV[i + 8], 'ts', now)
    out[#out + 1] = 1
  end
end
return out
"#;

const RELEASE: &str = r#"
local k = 'dronescheduler:f:' .. ARGV[1]
local cur = redis.call('HMGET', k, 'stage', 'drone')
if not cur[1] then
  redis.call('HSET', k, 'stage', 'Released', 'assignments', 0)
  return 'Released'
end
if cur[1] == 'HeadedToPickup' then
  redis.call('HSET', k, 'stage', 'Released')
  redis.call('SREM', 'dronescheduler:active', ARGV[1])
  redis.call('SADD', 'dronescheduler:idle', cur[2])
  return 'Released'
end
return cur[1]
"#;

const REROUTE: &str = r#"
local k = 'dronescheduler:f:' .. ARGV[1]
local cur = redis.call('HMGET', k, 'stage', 'leg_start', 'drone')
if cur[1] ~= ARGV[2] or cur[2] ~= ARGV[3] then return 0 end
redis.call('HSET', k, 'leg_start', ARGV[4], 'leg_ms', ARGV[5], 'leg2_ms', ARGV[6], 'from', ARGV[7], 'to', ARGV[8], 'pickup', ARGV[9], 'dropoff', ARGV[10])
redis.call('XADD', KEYS[1], '*', 'deliveryId', ARGV[1], 'droneId', cur[3], 'stage', cur[1], 'location', ARGV[7], 'eta', ARGV[11], 'ts', ARGV[4], 'kind', 'rerouted')
return 1
"#;

/// One active flight (cached copy of `dronescheduler:f:{id}`).
#[derive(Debug, Clone)]
struct Flight {
    drone: String,
    stage: String,
    leg_start: u64,
    leg_ms: u64,
    leg2_ms: u64,
    from: Location,
    to: Location,
    pickup: Location,
    dropoff: Location,
    last_position: u64,
}

impl Flight {
    fn from_hash(h: &HashMap<String, String>) -> Option<Self> {
        let loc = |k: &str| h.get(k).map(|s| resolve_location(s));
        let num = |k: &str| h.get(k).and_then(|s| s.parse::<u64>().ok());
        Some(Self {
            drone: h.get("drone")?.clone(),
            stage: h.get("stage")?.clone(),
            leg_start: num("leg_start")?,
            leg_ms: num("leg_ms")?,
            leg2_ms: num("leg2_ms").unwrap_or(0),
            from: loc("from")?,
            to: loc("to")?,
            pickup: loc("pickup")?,
            dropoff: loc("dropoff")?,
            last_position: 0,
        })
    }
    fn position(&self, now: u64) -> Location {
        if self.leg_ms == 0 {
            return self.to;
        }
        lerp(
            &self.from,
            &self.to,
            now.saturating_sub(self.leg_start) as f64 / self.leg_ms as f64,
        )
    }
    fn eta(&self) -> u64 {
        match self.stage.as_str() {
            "HeadedToPickup" => self.leg_start + self.leg_ms + self.leg2_ms,
            _ => self.leg_start + self.leg_ms,
        }
    }
    fn in_flight(&self) -> bool {
        self.stage == "HeadedToPickup" || self.stage == "HeadedToDropoff"
    }
}

/// Flight-time model.
#[derive(Clone, Copy)]
struct Sim {
    speed_mps: f64,
    min_leg_ms: u64,
    max_leg_ms: u64,
}

impl Sim {
    fn leg_ms(&self, a: &Location, b: &Location) -> u64 {
        let ms = (distance_m(a, b) / self.speed_mps.max(0.001) * 1000.0) as u64;
        ms.clamp(self.min_leg_ms, self.max_leg_ms.max(self.min_leg_ms))
    }
}

#[derive(Clone)]
struct AppState {
    redis: ConnectionManager,
    flights: Arc<Mutex<HashMap<String, Flight>>>,
    sim: Sim,
    assign: Arc<redis::Script>,
    advance: Arc<redis::Script>,
    release: Arc<redis::Script>,
    reroute: Arc<redis::Script>,
}

fn fkey(id: &str) -> String {
    format!("dronescheduler:f:{id}")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssignBody {
    pickup_location: String,
    drop_off_location: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RerouteBody {
    pickup_location: Option<String>,
    drop_off_location: Option<String>,
}

async fn assign(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<AssignBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let Json(b) =
        body.map_err(|e| ApiError::field("body", format!("pickupLocation and dropOffLocation are required: {e}")))?;
    let pickup = resolve_location(&b.pickup_location);
    let dropoff = resolve_location(&b.drop_off_location);
    let now = now_ms();
    let leg_ms = s.sim.leg_ms(&DEPOT, &pickup);
    let leg2_ms = s.sim.leg_ms(&pickup, &dropoff);
    let mut r = s.redis.clone();
    let (outcome, drone): (String, String) = s
        .assign
        .key(DRONE_EVENTS)
        .arg(&id)
        .arg(now)
        .arg(loc_to_string(&DEPOT))
        .arg(loc_to_string(&pickup))
        .arg(loc_to_string(&dropoff))
        .arg(leg_ms)
        .arg(leg2_ms)
        .arg(now + leg_ms + leg2_ms)
        .invoke_async(&mut r)
        .await?;
    match outcome.as_str() {
        "assigned" => {
            let f = Flight {
                drone: drone.clone(),
                stage: "HeadedToPickup".into(),
                leg_start: now,
                leg_ms,
                leg2_ms,
                from: DEPOT,
                to: pickup,
                pickup,
                dropoff,
                last_position: now,
            };
            s.flights.lock().unwrap().insert(id.clone(), f);
            drone_common::server::runtime()
                .metrics
                .inc("drone_assignments_total", &[]);
            tracing::info!(delivery_id = %id, drone_id = %drone, "drone assigned");
            Ok((StatusCode::CREATED, Json(json!({"deliveryId": id, "droneId": drone}))).into_response())
        }
        "existing" => {
            // The first call may have been cut off (client gone) after the
            // script ran: make sure the flight is simulated.
            let cached = s.flights.lock().unwrap().contains_key(&id);
            if !cached {
                if let Some(f) = load_flight(&mut r, &id).await?.filter(Flight::in_flight) {
                    s.flights.lock().unwrap().entry(id.clone()).or_insert(f);
                }
            }
            Ok((StatusCode::OK, Json(json!({"deliveryId": id, "droneId": drone}))).into_response())
        }
        "released" => Err(ApiError::conflict("delivery was cancelled")),
        _ => Err(ApiError::unavailable("no drone available")),
    }
}

async fn release(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let stage: String = s.release.arg(&id).invoke_async(&mut r).await?;
    if stage == "Released" {
        s.flights.lock().unwrap().remove(&id);
        tracing::info!(delivery_id = %id, "drone released");
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::conflict(format!("cannot release: flight is {stage}")))
    }
}

async fn load_flight(r: &mut ConnectionManager, id: &str) -> redis::RedisResult<Option<Flight>> {
    let h: HashMap<String, String> = r.hgetall(fkey(id)).await?;
    Ok(Flight::from_hash(&h))
}

async fn reroute(
    State(s): State<AppState>,
    Path(id): Path<String>,
    body: Result<Json<RerouteBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let Json(b) = body.map_err(|e| ApiError::field("body", format!("invalid body: {e}")))?;
    let mut r = s.redis.clone();
    for _ in 0..5 {
        let Some(mut f) = load_flight(&mut r, &id).await? else {
            return Err(ApiError::not_found("drone delivery"));
        };
        if !f.in_flight() {
            return Err(ApiError::conflict(format!("cannot reroute: flight is {}", f.stage)));
        }
        let now = now_ms();
        let here = f.position(now);
        let (expect_stage, expect_start) = (f.stage.clone(), f.leg_start);
        let new_drop = b.drop_off_location.as_deref().map(resolve_location);
        if f.stage == "HeadedToPickup" {
            if let Some(p) = b.pickup_location.as_deref() {
                f.pickup = resolve_location(p);
            }
            if let Some(d) = new_drop {
                f.dropoff = d;
            }
            f.to = f.pickup;
            f.leg2_ms = s.sim.leg_ms(&f.pickup, &f.dropoff);
        } else {
            let Some(d) = new_drop else {
                return Err(ApiError::conflict(
                    "package already picked up; only the drop-off can change",
                ));
            };
            f.dropoff = d;
            f.to = d;
        }
        f.from = here;
        f.leg_start = now;
        f.leg_ms = s.sim.leg_ms(&here, &f.to);
        let ok: i64 = s
            .reroute
            .key(DRONE_EVENTS)
            .arg(&id)
            .arg(&expect_stage)
            .arg(expect_start)
            .arg(now)
            .arg(f.leg_ms)
            .arg(f.leg2_ms)
            .arg(loc_to_string(&f.from))
            .arg(loc_to_string(&f.to))
            .arg(loc_to_string(&f.pickup))
            .arg(loc_to_string(&f.dropoff))
            .arg(f.eta())
            .invoke_async(&mut r)
            .await?;
        if ok == 1 {
            f.last_position = now;
            s.flights.lock().unwrap().insert(id.clone(), f.clone());
            return Ok(
                Json(json!({"deliveryId": id, "droneId": f.drone, "stage": f.stage, "eta": f.eta()})).into_response(),
            );
        }
    }
    Err(ApiError::unavailable("flight kept changing; retry"))
}

async fn get_delivery(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let h: HashMap<String, String> = r.hgetall(fkey(&id)).await?;
    if h.is_empty() {
        return Err(ApiError::not_found("drone delivery"));
    }
    let assignments: u64 = h.get("assignments").and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut v =
        json!({"deliveryId": id, "droneId": h.get("drone"), "stage": h.get("stage"), "assignments": assignments});
    if let Some(f) = Flight::from_hash(&h) {
        let now = now_ms();
        v["location"] = json!(if f.in_flight() { f.position(now) } else { f.to });
        v["eta"] = json!(f.eta());
        v["pickup"] = json!(f.pickup);
        v["dropoff"] = json!(f.dropoff);
    }
    Ok(Json(v).into_response())
}

async fn get_drone(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    check_id(&id)?;
    let mut r = s.redis.clone();
    let idle: bool = r.sismember("dronescheduler:idle", &id).await?;
    Ok(Json(json!({"id": id, "status": if idle { "idle" } else { "busy" }})).into_response())
}

async fn fleet(State(s): State<AppState>) -> Result<Response, ApiError> {
    let mut r = s.redis.clone();
    let (size, idle, active, total): (Option<u64>, u64, u64, Option<u64>) = redis::pipe()
        .get("dronescheduler:fleet_size")
        .scard("dronescheduler:idle")
        .scard("dronescheduler:active")
        .get("dronescheduler:assignments_total")
        .query_async(&mut r)
        .await?;
    Ok(
        Json(
            json!({"size": size.unwrap_or(0), "idle": idle, "active": active, "assignmentsTotal": total.unwrap_or(0)}),
        )
        .into_response(),
    )
}

/// Grow the fleet to `FLEET_SIZE` drones (never shrinks; idempotent).
async fn init_fleet(r: &mut ConnectionManager, size: u64) -> redis::RedisResult<()> {
    let cur: Option<u64> = r.get("dronescheduler:fleet_size").await?;
    let cur = cur.unwrap_or(0);
    let mut n = cur;
    while n < size {
        let end = (n + 1000).min(size);
        let ids: Vec<String> = (n..end).map(|i| format!("drone-{i}")).collect();
        let _: () = r.sadd("dronescheduler:idle", ids).await?;
        let _: () = r.set("dronescheduler:fleet_size", end).await?;
        n = end;
    }
    Ok(())
}

/// Load every active flight that is missing from the cache. Run at start and
/// periodically, so a flight whose assignment request was cut off (client
/// disconnected after the script ran) is still simulated.
async fn load_active(s: &AppState) -> redis::RedisResult<usize> {
    let mut r = s.redis.clone();
    let ids: Vec<String> = r.smembers("dronescheduler:active").await?;
    let missing: Vec<String> = {
        let fl = s.flights.lock().unwrap();
        ids.into_iter().filter(|id| !fl.contains_key(id)).collect()
    };
    let mut n = 0;
    for id in missing {
        if let Some(f) = load_flight(&mut r, &id).await? {
            if f.in_flight() {
                s.flights.lock().unwrap().entry(id).or_insert(f);
                n += 1;
            }
        }
    }
    Ok(n)
}

async fn resync(s: AppState, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match load_active(&s).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "flights recovered from the store"),
            Err(e) => tracing::warn!(error = %e, "flight resync failed"),
        }
    }
}

/// Move due flights to their next stage in one script call. A flight that
/// changed under us (rerouted / released) is refreshed from the store.
async fn advance(s: &AppState, due: &[(String, Flight)], now: u64) -> redis::RedisResult<()> {
    let mut r = s.redis.clone();
    let next_legs: Vec<(&'static str, u64, Location, Location)> = due
        .iter()
        .map(|(_, f)| {
            if f.stage == "HeadedToPickup" {
                ("HeadedToDropoff", f.leg2_ms, f.pickup, f.dropoff)
            } else {
                ("Completed", 0, f.dropoff, f.dropoff)
            }
        })
        .collect();
    let mut call = s.advance.key(DRONE_EVENTS);
    call.arg(now);
    for ((id, f), (next, leg_ms, from, to)) in due.iter().zip(&next_legs) {
        let from_s = loc_to_string(from);
        call.arg(id)
            .arg(&f.stage)
            .arg(f.leg_start)
            .arg(*next)
            .arg(*leg_ms)
            .arg(&from_s)
            .arg(loc_to_string(to))
            .arg(&from_s)
            .arg(now + leg_ms);
    }
    let moved: Vec<i64> = call.invoke_async(&mut r).await?;
    let mut changed = Vec::new();
    {
        let mut fl = s.flights.lock().unwrap();
        for (((id, _), (next, leg_ms, from, to)), ok) in due.iter().zip(next_legs).zip(moved) {
            if ok != 1 {
                changed.push(id);
            } else if next == "Completed" {
                fl.remove(id);
            } else if let Some(c) = fl.get_mut(id) {
                c.stage = next.into();
                c.leg_start = now;
                c.leg_ms = leg_ms;
                c.from = from;
                c.to = to;
                c.last_position = now;
            }
        }
    }
    for id in changed {
        let fresh = load_flight(&mut r, id).await?;
        let mut fl = s.flights.lock().unwrap();
        match fresh {
            Some(f) if f.in_flight() => {
                fl.insert(id.clone(), f);
            }
            _ => {
                fl.remove(id);
            }
        }
    }
    Ok(())
}

/// Most flights moved by one script call.
const ADVANCE_BATCH: usize = 256;

async fn simulate(s: AppState, tick: Duration, position_every: u64) {
    let mut busy: std::collections::HashSet<String> = Default::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    loop {
        tokio::time::sleep(tick).await;
        while let Ok(id) = done_rx.try_recv() {
            busy.remove(&id);
        }
        let now = now_ms();
        let mut due = Vec::new();
        let mut positions = Vec::new();
        {
            let mut fl = s.flights.lock().unwrap();
            for (id, f) in fl.iter_mut() {
                if busy.contains(id) {
                    continue;
                }
                if now >= f.leg_start + f.leg_ms {
                    due.push((id.clone(), f.clone()));
                } else if position_every > 0 && now >= f.last_position + position_every {
                    f.last_position = now;
                    positions.push((id.clone(), f.drone.clone(), f.stage.clone(), f.position(now), f.eta()));
                }
            }
        }
        for chunk in due.chunks(ADVANCE_BATCH) {
            let chunk = chunk.to_vec();
            busy.extend(chunk.iter().map(|(id, _)| id.clone()));
            let s2 = s.clone();
            let tx = done_tx.clone();
            tokio::spawn(async move {
                if let Err(e) = advance(&s2, &chunk, now).await {
                    tracing::warn!(error = %e, count = chunk.len(), "flight transitions failed; will retry");
                }
                for (id, _) in chunk {
                    let _ = tx.send(id);
                }
            });
        }
        if !positions.is_empty() {
            let mut p = redis::pipe();
            for (id, drone, stage, loc, eta) in positions {
                p.cmd("XADD")
                    .arg(DRONE_EVENTS)
                    .arg("*")
                    .arg("deliveryId")
                    .arg(id)
                    .arg("droneId")
                    .arg(drone)
                    .arg("stage")
                    .arg(stage)
                    .arg("location")
                    .arg(loc_to_string(&loc))
                    .arg("eta")
                    .arg(eta)
                    .arg("ts")
                    .arg(now)
                    .arg("kind")
                    .arg("position")
                    .ignore();
            }
            let mut r = s.redis.clone();
            if let Err(e) = p.query_async::<()>(&mut r).await {
                tracing::warn!(error = %e, "position events failed");
            }
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    use drone_common::config::env_or;
    drone_common::server::init("dronescheduler", env!("CARGO_PKG_VERSION"));
    let (_client, mut redis) = drone_common::store::connect().await;
    drone_common::server::spawn_redis_readiness(redis.clone());
    let fleet_size: u64 = env_or("FLEET_SIZE", 1000);
    while let Err(e) = init_fleet(&mut redis, fleet_size).await {
        tracing::warn!(error = %e, "fleet init failed; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let state = AppState {
        redis,
        flights: Arc::default(),
        sim: Sim {
            speed_mps: env_or("DRONE_SPEED_MPS", 2000.0),
            min_leg_ms: env_or("MIN_LEG_MS", 300),
            max_leg_ms: env_or("MAX_LEG_MS", 5000),
        },
        assign: Arc::new(redis::Script::new(ASSIGN)),
        advance: Arc::new(redis::Script::new(ADVANCE)),
        release: Arc::new(redis::Script::new(RELEASE)),
        reroute: Arc::new(redis::Script::new(REROUTE)),
    };
    while let Err(e) = load_active(&state).await {
        tracing::warn!(error = %e, "loading flights failed; retrying");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::spawn(resync(state.clone(), Duration::from_millis(env_or("RESYNC_MS", 2000))));
    tokio::spawn(simulate(
        state.clone(),
        Duration::from_millis(env_or("TICK_MS", 100)),
        env_or("POSITION_EVENTS_MS", 1000),
    ));
    let app = Router::new()
        .route(
            "/api/dronedeliveries/{id}",
            get(get_delivery).put(assign).delete(release).patch(reroute),
        )
        .route("/api/drones/{id}", get(get_drone))
        .route("/api/fleet", get(fleet))
        .with_state(state);
    drone_common::server::serve(app, 8080).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_are_clamped() {
        let sim = Sim {
            speed_mps: 1000.0,
            min_leg_ms: 100,
            max_leg_ms: 2000,
        };
        assert_eq!(sim.leg_ms(&DEPOT, &DEPOT), 100);
        let far = Location {
            altitude: 0.0,
            latitude: 0.0,
            longitude: 0.0,
        };
        assert_eq!(sim.leg_ms(&DEPOT, &far), 2000);
    }

    #[test]
    fn position_interpolates() {
        let a = Location {
            altitude: 0.0,
            latitude: 0.0,
            longitude: 0.0,
        };
        let b = Location {
            altitude: 0.0,
            latitude: 10.0,
            longitude: 10.0,
        };
        let f = Flight {
            drone: "d".into(),
            stage: "HeadedToPickup".into(),
            leg_start: 1000,
            leg_ms: 100,
            leg2_ms: 50,
            from: a,
            to: b,
            pickup: b,
            dropoff: b,
            last_position: 0,
        };
        assert_eq!(f.position(1050).latitude, 5.0);
        assert_eq!(f.position(5000).latitude, 10.0);
        assert_eq!(f.eta(), 1150);
    }
}

//! thirdparty: does a route need third-party transport? A route longer than
//! the drones' range (`DRONE_RANGE_M`, default 50 km) does. Stateless.
use axum::extract::Path;
use axum::routing::put;
use axum::{Json, Router};
use drone_common::domain::{check_id, distance_m, resolve_location};
use drone_common::ApiError;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Route {
    pickup_location: String,
    drop_off_location: String,
}

/// Decide for one route.
fn required(r: &Route, range_m: f64) -> (bool, f64) {
    let d = distance_m(
        &resolve_location(&r.pickup_location),
        &resolve_location(&r.drop_off_location),
    );
    (d > range_m, d)
}

async fn check(
    Path(id): Path<String>,
    body: Result<Json<Route>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let Json(r) =
        body.map_err(|e| ApiError::field("body", format!("pickupLocation and dropOffLocation are required: {e}")))?;
    let range: f64 = drone_common::config::env_or("DRONE_RANGE_M", 50_000.0);
    let (req, d) = required(&r, range);
    Ok(Json(json!({"id": id, "required": req, "distanceMeters": d.round()})))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let rt = drone_common::server::init("thirdparty", env!("CARGO_PKG_VERSION"));
    rt.set_problem(None);
    let app = Router::new().route("/api/thirdparty/{id}", put(check));
    drone_common::server::serve(app, 8080).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_routes_need_third_party() {
        let near = Route {
            pickup_location: "a".into(),
            drop_off_location: "b".into(),
        };
        assert!(!required(&near, 50_000.0).0);
        let far = Route {
            pickup_location: "0,47.6,-122.3".into(),
            drop_off_location: "0,36.7,-119.4".into(),
        };
        assert!(required(&far, 50_000.0).0);
    }
}

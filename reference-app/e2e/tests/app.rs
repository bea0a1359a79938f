//! End-to-end tests over real sockets with a real Redis: every service runs as
//! its own process (see `e2e::Stack`).
use e2e::{eventually, reference_request, Stack, StackOptions, SERVICES};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

async fn get(c: &Client, url: String) -> (StatusCode, Value) {
    let r = c.get(url).send().await.expect("GET");
    let st = r.status();
    (st, r.json().await.unwrap_or(Value::Null))
}

/// POST the request; returns the delivery id (asserting 202 + Location).
async fn submit(c: &Client, s: &Stack, body: &Value) -> String {
    let r = c
        .post(format!("{}/api/deliveryrequests", s.url("ingestion")))
        .json(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = r
        .headers()
        .get("location")
        .expect("Location header")
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    let id = v["deliveryId"].as_str().expect("deliveryId").to_string();
    assert_eq!(loc, format!("/api/deliveries/{id}"));
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    id
}

async fn wait_stage(c: &Client, s: &Stack, id: &str, stage: &str, timeout: Duration) -> Value {
    let url = format!("{}/api/deliveries/public/{id}", s.url("delivery"));
    eventually(timeout, &format!("{id} to reach {stage}"), || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let (st, v) = get(&c, url).await;
            (st == StatusCode::OK && v["stage"] == stage).then_some(v)
        }
    })
    .await
}

async fn history_types(c: &Client, s: &Stack, id: &str) -> Vec<String> {
    let (st, v) = get(c, format!("{}/api/deliveryhistory/{id}", s.url("deliveryhistory"))).await;
    assert_eq!(st, StatusCode::OK, "history of {id}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn fast() -> StackOptions {
    StackOptions::default()
        .service_env("dronescheduler", "MIN_LEG_MS", "200")
        .service_env("dronescheduler", "MAX_LEG_MS", "600")
        .service_env("dronescheduler", "TICK_MS", "50")
        .service_env("dronescheduler", "POSITION_EVENTS_MS", "200")
}

fn slow() -> StackOptions {
    StackOptions::default()
        .service_env("dronescheduler", "MIN_LEG_MS", "3000")
        .service_env("dronescheduler", "MAX_LEG_MS", "3000")
        .service_env("dronescheduler", "POSITION_EVENTS_MS", "300")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_request_is_accepted_and_completes() {
    let s = Stack::start(
        fast()
            .service_env("account", "ENABLE_DEBUG_ENDPOINTS", "true")
            .service_env("account", "SHUTDOWN_DELAY_MS", "500")
            .env("LOG_LEVEL", "info"),
    );
    let c = client();
    // Operational endpoints on every service.
    for svc in SERVICES {
        let (st, v) = get(&c, format!("{}/healthz", s.url(svc))).await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::OK, Some("ok")),
            "{svc} /healthz"
        );
        let (st, v) = get(&c, format!("{}/readyz", s.url(svc))).await;
        assert_eq!(
            (st, v["status"].as_str()),
            (StatusCode::OK, Some("ready")),
            "{svc} /readyz"
        );
        let m = c.get(format!("{}/metrics", s.url(svc))).send().await.unwrap();
        assert!(m.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"));
        let text = m.text().await.unwrap();
        assert!(
            text.contains(&format!("service_info{{service=\"{svc}\"")),
            "{svc} metrics"
        );
        assert!(
            text.contains("http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}"),
            "{svc} metrics"
        );
    }
    let (st, _) = get(&c, format!("{}/api/probe", s.url("ingestion"))).await;
    assert_eq!(st, StatusCode::OK);
    let (st, api) = get(&c, format!("{}/api/openapi.json", s.url("ingestion"))).await;
    assert_eq!(st, StatusCode::OK);
    assert!(api["paths"]["/api/deliveryrequests"]["post"].is_object());

    // The request from REFERENCE_APP.md, with a correlation id that must be echoed.
    let r = c
        .post(format!("{}/api/deliveryrequests", s.url("ingestion")))
        .header("x-correlation-id", "e2e-corr-1")
        .json(&reference_request())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["x-correlation-id"], "e2e-corr-1");
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    let echo: Value = r.json().await.unwrap();
    let id = echo["deliveryId"].as_str().unwrap().to_string();
    assert_eq!(loc, format!("/api/deliveries/{id}"));
    for k in [
        "ownerId",
        "pickupLocation",
        "dropOffLocation",
        "pickupTime",
        "confirmationRequired",
    ] {
        assert_eq!(echo[k], reference_request()[k], "echoed {k}");
    }
    assert_eq!(echo["packageInfo"]["packageId"], "mypackage");

    // In flight: stage, location and ETA are visible.
    let v = wait_stage(&c, &s, &id, "HeadedToDropoff", Duration::from_secs(20)).await;
    assert!(v["lastKnownLocation"]["latitude"].is_number(), "{v}");
    assert!(v["eta"].is_string(), "{v}");
    let done = wait_stage(&c, &s, &id, "Completed", Duration::from_secs(20)).await;
    assert!(done["lastKnownLocation"]["latitude"].is_number());
    assert!(done["droneId"].as_str().unwrap().starts_with("drone-"));

    // History: every tracking event exactly once, in order.
    let types = eventually(Duration::from_secs(10), "history to record Completed", || {
        let c = c.clone();
        let s = &s;
        let id = id.clone();
        async move {
            let t = history_types(&c, s, &id).await;
            t.contains(&"Completed".to_string()).then_some(t)
        }
    })
    .await;
    assert_eq!(types, ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"]);

    let (_, d) = get(&c, format!("{}/api/dronedeliveries/{id}", s.url("dronescheduler"))).await;
    assert_eq!(d["assignments"], 1);

    // The POST's correlation id travelled with the queued message to every call
    // the workflow made, and every service logged it (JSON lines).
    for svc in [
        "ingestion",
        "workflow",
        "account",
        "thirdparty",
        "package",
        "dronescheduler",
        "delivery",
    ] {
        let log = std::fs::read_to_string(s.dir.join(format!("{svc}.log"))).unwrap_or_default();
        let line = log
            .lines()
            .find(|l| l.contains("e2e-corr-1"))
            .unwrap_or_else(|| panic!("{svc} never logged the id"));
        let v: Value = serde_json::from_str(line).expect("JSON log line");
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
    }
    let (st, _) = get(
        &c,
        format!("{}/api/deliveries/public/{}", s.url("delivery"), uuid::Uuid::new_v4()),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);

    // Graceful shutdown: SIGTERM flips readiness, drains the in-flight request, exits 0.
    let slow = tokio::spawn({
        let c = c.clone();
        let u = format!("{}/debug/sleep?ms=1500", s.url("account"));
        async move { c.get(u).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = s.pid("account").unwrap();
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, v) = get(&c, format!("{}/readyz", s.url("account"))).await;
    assert_eq!(
        (st, v["reason"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("draining"))
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        StatusCode::OK,
        "in-flight request drained"
    );
    let s2 = Arc::new(s);
    let code = tokio::task::spawn_blocking({
        let s2 = s2.clone();
        move || s2.terminate("account")
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0));
}

/// Bodies exactly as the original implementation's own clients sent them
/// (its load tests, its ingestion unit test) and values in the other JSON
/// types its Jackson accepted: each is accepted and becomes a delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_the_original_clients_are_accepted_and_complete() {
    let s = Stack::start(fast());
    let c = client();
    let url = format!("{}/api/deliveryrequests", s.url("ingestion"));
    let pickup = "0,36.778261,-119.41793200000001";
    let drop = "0,37.4315730000000,-78.65689399999997";
    let bodies: Vec<(&str, String)> = vec![
        // Fabrikam.Shipping.LoadTests (Newtonsoft): the weight as a string.
        (
            "load test",
            format!(
                r#"{{"confirmationRequired":"FingerPrint","deadline":"DeadlyQueueOfZombiatedDemons","deliveryId":"42","dropOffLocation":"{drop}","expedited":true,"ownerId":"1","packageInfo":{{"packageId":"442","size":"Small","tag":"{}","weight":"14"}},"pickupLocation":"{pickup}","pickupTime":"2019-04-05T11:00:00.000Z"}}"#,
                uuid::Uuid::new_v4()
            ),
        ),
        // Fabrikam.Ingress.Ingestion.LoadTests: hand-written JSON, weight a number.
        (
            "ingestion load test",
            format!(
                "{{\n    \"confirmationRequired\": \"FingerPrint\",\n    \"deadline\": \"DeadlyQueueOfZombiatedDemons\",\n    \"deliveryId\": \"42\",\n    \"dropOffLocation\": \"{drop}\",\n    \"expedited\": true,\n    \"ownerId\": \"1\",\n    \"packageInfo\": {{\n        \"packageId\": \"442\",\n        \"size\": \"Small\",\n        \"tag\": \"{}\",\n        \"weight\": 14\n    }},\n    \"pickupLocation\": \"{pickup}\",\n    \"pickupTime\": \"2017-11-08T23:26:30.118Z\"\n}}",
                uuid::Uuid::new_v4()
            ),
        ),
        // IngestionControllerTest (a plain ObjectMapper writing ExternalDelivery):
        // the date as epoch milliseconds, nulls, no `expedited`.
        (
            "ingestion unit test",
            r#"{"deliveryId":null,"ownerId":"5f0d7e44-7d43-4e0b-9d3e-0b8f2c6a1c11","pickupLocation":"Texas","pickupTime":1557345600123,"deadline":"LineOfDeadlyZombiatedPeople","confirmationRequired":"FingerPrint","packageInfo":{"packageId":"0e9d","size":"Large","weight":0.0,"tag":null},"dropOffLocation":"Austin"}"#.to_string(),
        ),
        (
            "numbers for strings, strings for numbers and booleans, enum indexes",
            r#"{"ownerId":12345,"pickupLocation":"my pickup","dropOffLocation":"drop off","pickupTime":"Wed, 08 May 2019 20:00:00 GMT","deadline":20190509,"expedited":"true","confirmationRequired":3,"packageInfo":{"packageId":442,"size":"1","tag":true,"weight":" 10.5 "},"extra":{"ignored":[1,2]}}"#.to_string(),
        ),
    ];
    let mut ids = Vec::new();
    for (what, body) in &bodies {
        let r = c
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let st = r.status();
        let echo: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(st, StatusCode::ACCEPTED, "{what}: {echo}");
        let id = echo["deliveryId"].as_str().unwrap().to_string();
        assert_ne!(id, "42", "{what}: the service assigns the id");
        ids.push((what, id, echo));
    }
    let (_, _, load) = &ids[0];
    assert_eq!(load["packageInfo"]["weight"], 14.0);
    assert_eq!(load["deadline"], "DeadlyQueueOfZombiatedDemons");
    let (_, _, unit) = &ids[2];
    assert_eq!(unit["pickupTime"], "2019-05-08T20:00:00.123Z");
    assert_eq!(unit["expedited"], false);
    let (_, _, coerced) = &ids[3];
    assert_eq!(coerced["ownerId"], "12345");
    assert_eq!(coerced["expedited"], true);
    assert_eq!(coerced["confirmationRequired"], "None");
    assert_eq!(coerced["packageInfo"]["size"], "Medium");
    assert_eq!(coerced["packageInfo"]["weight"], 10.5);
    assert_eq!(coerced["packageInfo"]["packageId"], "442");
    assert_eq!(coerced["pickupTime"], "2019-05-08T20:00:00.000Z");
    for (what, id, _) in &ids {
        let done = wait_stage(&c, &s, id, "Completed", Duration::from_secs(30)).await;
        assert!(done["droneId"].as_str().is_some(), "{what}: {done}");
    }
    // The original's reschedule body (ExternalRescheduledDelivery): free-text
    // deadline and a deliveryId member.
    let (_, id, _) = &ids[0];
    let r = c
        .patch(format!("{url}/{id}"))
        .json(&json!({"deadline":"deadline","deliveryId":id,"dropOffLocation":"location","pickupLocation":"location"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_naming_the_field() {
    let s = Stack::start(StackOptions::default().service_env("ingestion", "MAX_BODY_BYTES", "4096"));
    let c = client();
    let url = format!("{}/api/deliveryrequests", s.url("ingestion"));
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut v = reference_request();
    v.as_object_mut().unwrap().remove("ownerId");
    cases.push((v, "ownerId"));
    let mut v = reference_request();
    v.as_object_mut().unwrap().remove("packageInfo");
    cases.push((v, "packageInfo"));
    let mut v = reference_request();
    v["packageInfo"]["size"] = json!("Gigantic");
    cases.push((v, "packageInfo.size"));
    let mut v = reference_request();
    v["confirmationRequired"] = json!("Telepathy");
    cases.push((v, "confirmationRequired"));
    let mut v = reference_request();
    v["pickupLocation"] = json!("0,95.5,-119.4");
    cases.push((v, "pickupLocation"));
    let mut v = reference_request();
    v["dropOffLocation"] = json!("0,36.7,-190");
    cases.push((v, "dropOffLocation"));
    let mut v = reference_request();
    v["ownerId"] = json!({"id": 42});
    cases.push((v, "ownerId"));
    let mut v = reference_request();
    v["pickupTime"] = json!("next tuesday");
    cases.push((v, "pickupTime"));
    // Refused by the original's Jackson too: a space for the `T`, a float for
    // a date, a lower-case enum constant, an object where a string belongs.
    let mut v = reference_request();
    v["pickupTime"] = json!("2019-05-08 20:00:00Z");
    cases.push((v, "pickupTime"));
    let mut v = reference_request();
    v["pickupTime"] = json!(1.5e12);
    cases.push((v, "pickupTime"));
    let mut v = reference_request();
    v["packageInfo"]["size"] = json!("small");
    cases.push((v, "packageInfo.size"));
    let mut v = reference_request();
    v["expedited"] = json!("yes");
    cases.push((v, "expedited"));
    let mut v = reference_request();
    v["packageInfo"]["weight"] = json!("ten");
    cases.push((v, "packageInfo.weight"));
    let mut v = reference_request();
    v["deliveryId"] = json!({"id": "42"});
    cases.push((v, "deliveryId"));
    cases.push((json!([1, 2]), "body"));
    for (body, field) in cases {
        let r = c.post(&url).json(&body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "field {field}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json"));
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["field"], field, "{e}");
        assert!(e["error"].is_string());
    }
    // Not JSON at all.
    let r = c
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "body");
    // Too large.
    let mut big = reference_request();
    big["packageInfo"]["tag"] = json!("x".repeat(8000));
    let r = c.post(&url).json(&big).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    // PATCH validation and unknown ids.
    let id = submit(&c, &s, &reference_request()).await;
    let r = c.patch(format!("{url}/{id}")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = c
        .patch(format!("{url}/{id}"))
        .json(&json!({"dropOffLocation": "0,-100,0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["field"], "dropOffLocation");
    let unknown = uuid::Uuid::new_v4();
    let r = c
        .patch(format!("{url}/{unknown}"))
        .json(&json!({"dropOffLocation": "elsewhere"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = c.delete(format!("{url}/{unknown}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Broker down: never a 202 (the request is not accepted), readiness goes 503.
    s.kill("redis");
    let r = c.post(&url).json(&reference_request()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let ready = format!("{}/readyz", s.url("ingestion"));
    eventually(Duration::from_secs(10), "ingestion not ready without redis", || {
        let c = c.clone();
        let u = ready.clone();
        async move {
            let (st, v) = get(&c, u).await;
            (st == StatusCode::SERVICE_UNAVAILABLE && v["status"] == "not ready").then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_before_pickup_releases_the_drone_and_reschedule_changes_the_route() {
    let s = Stack::start(slow());
    let c = client();
    let ing = s.url("ingestion");
    let sched = s.url("dronescheduler");

    // Cancel while the drone is headed to the pickup.
    let a = submit(&c, &s, &reference_request()).await;
    let v = wait_stage(&c, &s, &a, "HeadedToPickup", Duration::from_secs(15)).await;
    let drone = v["droneId"].as_str().unwrap().to_string();
    let (_, d) = get(&c, format!("{sched}/api/drones/{drone}")).await;
    assert_eq!(d["status"], "busy");
    let r = c
        .delete(format!("{ing}/api/deliveryrequests/{a}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    wait_stage(&c, &s, &a, "Cancelled", Duration::from_secs(10)).await;
    let (_, d) = get(&c, format!("{sched}/api/drones/{drone}")).await;
    assert_eq!(d["status"], "idle", "drone released");
    let (_, f) = get(&c, format!("{sched}/api/dronedeliveries/{a}")).await;
    assert_eq!(f["stage"], "Released");
    let (_, p) = get(&c, format!("{}/api/packages/{a}", s.url("package"))).await;
    assert_eq!(p["status"], "Cancelled");
    // Stays cancelled (no further drone events are applied).
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let (_, v) = get(&c, format!("{}/api/deliveries/public/{a}", s.url("delivery"))).await;
    assert_eq!(v["stage"], "Cancelled");
    let t = eventually(Duration::from_secs(5), "Cancelled in history", || {
        let c = c.clone();
        let s = &s;
        let a = a.clone();
        async move {
            let t = history_types(&c, s, &a).await;
            t.contains(&"Cancelled".to_string()).then_some(t)
        }
    })
    .await;
    assert!(!t.contains(&"HeadedToDropoff".to_string()), "{t:?}");

    // Reschedule: a new drop-off while headed to the pickup.
    let b = submit(&c, &s, &reference_request()).await;
    wait_stage(&c, &s, &b, "HeadedToPickup", Duration::from_secs(15)).await;
    let new_drop = "0,47.65,-122.25";
    let r = c
        .patch(format!("{ing}/api/deliveryrequests/{b}"))
        .json(&json!({"dropOffLocation": new_drop}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let url = format!("{}/api/deliveries/public/{b}", s.url("delivery"));
    eventually(Duration::from_secs(10), "reschedule applied", || {
        let c = c.clone();
        let url = url.clone();
        async move {
            let (_, v) = get(&c, url).await;
            (v["dropOffLocation"] == new_drop && v["rescheduled"] == 1).then_some(())
        }
    })
    .await;
    let (_, f) = get(&c, format!("{sched}/api/dronedeliveries/{b}")).await;
    assert_eq!(f["dropoff"]["latitude"], 47.65, "{f}");
    assert_eq!(f["dropoff"]["longitude"], -122.25, "{f}");
    let done = wait_stage(&c, &s, &b, "Completed", Duration::from_secs(20)).await;
    assert_eq!(
        done["lastKnownLocation"]["latitude"], 47.65,
        "landed at the new drop-off: {done}"
    );
    let t = history_types(&c, &s, &b).await;
    assert_eq!(
        t,
        [
            "Created",
            "HeadedToPickup",
            "Rescheduled",
            "HeadedToDropoff",
            "Completed"
        ]
    );
}

/// The delivery queries the original published to its clients (its
/// DeliveriesController under `api/deliveries*` and DroneController under
/// `api/drone*`): status, owner and the monthly summary, with its shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_queries_of_the_original_answer_with_its_shapes() {
    let s = Stack::start(slow());
    let c = client();
    let d = s.url("delivery");
    let owner = format!("owner-{}", uuid::Uuid::new_v4().simple());
    let mut body = reference_request();
    body["ownerId"] = json!(owner);
    let a = submit(&c, &s, &body).await;
    let b = submit(&c, &s, &body).await;
    wait_stage(&c, &s, &a, "HeadedToPickup", Duration::from_secs(20)).await;
    for url in [format!("{d}/api/deliveries/{a}/status"), format!("{d}/api/drone/{a}")] {
        let (st, v) = get(&c, url.clone()).await;
        assert_eq!(st, StatusCode::OK, "{url}");
        let keys: HashSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            HashSet::from(["stage", "lastKnownLocation", "pickupETA", "deliveryETA"]),
            "{v}"
        );
        assert!(v["deliveryETA"].is_string(), "in flight: {v}");
    }
    let (st, o) = get(&c, format!("{d}/api/deliveries/{a}/owner")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(o["userId"], owner.as_str());
    assert!(o["accountId"].is_string());
    wait_stage(&c, &s, &a, "Completed", Duration::from_secs(30)).await;
    let (_, v) = get(&c, format!("{d}/api/deliveries/{a}/status")).await;
    assert_eq!(v["stage"], "Completed");
    assert!(v["lastKnownLocation"]["latitude"].is_number(), "{v}");
    assert!(v["deliveryETA"].is_null());
    wait_stage(&c, &s, &b, "Completed", Duration::from_secs(30)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // This month (UTC), from the days since the epoch.
    let days = (now / 86_400) as i64 + 719_468;
    let (era, doe) = (days.div_euclid(146_097), days.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let mp = (5 * (doe - (365 * yoe + yoe / 4 - yoe / 100)) + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let summary = |q: String| get(&c, format!("{d}/api/deliveries/summary?{q}"));
    let (st, v) = summary(format!("ownerId={owner}&year={year}&month={month}")).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"count": 2})));
    let (_, v) = summary(format!("ownerId=someone-else&year={year}&month={month}")).await;
    assert_eq!(v, json!({"count": 0}));
    let (st, v) = summary(format!("ownerId={owner}&year={year}&month=13")).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("month")));
    let (st, v) = summary(format!("year={year}&month={month}")).await;
    assert_eq!((st, v["field"].as_str()), (StatusCode::BAD_REQUEST, Some("ownerId")));
    let unknown = uuid::Uuid::new_v4();
    for path in [
        format!("api/deliveries/{unknown}/status"),
        format!("api/drone/{unknown}"),
        format!("api/deliveries/{unknown}/owner"),
    ] {
        let (st, _) = get(&c, format!("{d}/{path}")).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "{path}");
    }
}

/// Milliseconds to live of a key (-1: no expiry, -2: no key).
async fn pttl(r: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query_async(r).await.unwrap()
}

/// Redis runs with a memory bound and a policy that never evicts in-flight
/// work; a finished delivery's hot keys and an accepted request's marker
/// expire after RETENTION_SECS, while in-flight state never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_deliveries_expire_after_the_retention_in_flight_work_never() {
    let s = Stack::start(slow().env("RETENTION_SECS", "3600"));
    let c = client();
    let mut r = redis::Client::open(s.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let cfg: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query_async(&mut r)
        .await
        .unwrap();
    let get_cfg = |k: &str| cfg.iter().position(|x| x == k).map(|i| cfg[i + 1].clone()).unwrap();
    assert_eq!(get_cfg("maxmemory-policy"), "noeviction");
    assert!(get_cfg("maxmemory").parse::<u64>().unwrap() > 0, "{cfg:?}");
    let hour = 3_600_000;
    let within = |t: i64| t > hour - 120_000 && t <= hour;

    // Completed: the delivery's hot state and the marker carry the retention.
    let done = submit(&c, &s, &reference_request()).await;
    // Cancelled before pickup, and one that stays in flight meanwhile.
    let cancelled = submit(&c, &s, &reference_request()).await;
    let in_flight = submit(&c, &s, &reference_request()).await;
    wait_stage(&c, &s, &in_flight, "HeadedToPickup", Duration::from_secs(20)).await;
    assert_eq!(
        pttl(&mut r, &format!("delivery:d:{in_flight}")).await,
        -1,
        "in-flight delivery expires"
    );
    assert_eq!(pttl(&mut r, &format!("workflow:s:{in_flight}")).await, -1);
    let st = c
        .delete(format!("{}/api/deliveryrequests/{cancelled}", s.url("ingestion")))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st, StatusCode::NO_CONTENT);
    wait_stage(&c, &s, &cancelled, "Cancelled", Duration::from_secs(20)).await;
    wait_stage(&c, &s, &done, "Completed", Duration::from_secs(30)).await;
    for id in [&done, &cancelled] {
        let t = pttl(&mut r, &format!("delivery:d:{id}")).await;
        assert!(within(t), "delivery:d:{id} ttl {t}");
        let t = pttl(&mut r, &format!("ingestion:accepted:{id}")).await;
        assert!(within(t), "ingestion:accepted:{id} ttl {t}");
    }
    // Failed (suspended account) too.
    let put = c
        .put(format!("{}/api/accounts/gone-co", s.url("account")))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let mut body = reference_request();
    body["ownerId"] = json!("gone-co");
    let failed = submit(&c, &s, &body).await;
    wait_stage(&c, &s, &failed, "Failed", Duration::from_secs(20)).await;
    let t = pttl(&mut r, &format!("delivery:d:{failed}")).await;
    assert!(within(t), "failed delivery ttl {t}");
    // The long-term history does not expire.
    assert_eq!(pttl(&mut r, &format!("deliveryhistory:e:{done}")).await, -1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_account_ends_as_a_recorded_compensated_failure() {
    let s = Stack::start(fast());
    let c = client();
    let r = c
        .put(format!("{}/api/accounts/suspended-co", s.url("account")))
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut body = reference_request();
    body["ownerId"] = json!("suspended-co");
    let id = submit(&c, &s, &body).await;
    let v = wait_stage(&c, &s, &id, "Failed", Duration::from_secs(20)).await;
    assert!(v["failureReason"].as_str().unwrap().contains("not active"), "{v}");
    let (st, f) = get(&c, format!("{}/api/failures/{id}", s.url("supervisor"))).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(f["status"], "compensated");
    let actions = f["actions"].to_string();
    assert!(
        actions.contains("drone released") && actions.contains("package cancelled"),
        "{actions}"
    );
    // No drone was ever assigned, and none can be later (tombstone).
    let (_, d) = get(&c, format!("{}/api/dronedeliveries/{id}", s.url("dronescheduler"))).await;
    assert_eq!(d["assignments"], 0);
    assert_eq!(d["stage"], "Released");
    let (_, fleet) = get(&c, format!("{}/api/fleet", s.url("dronescheduler"))).await;
    assert_eq!(fleet["assignmentsTotal"], 0);
    let t = eventually(Duration::from_secs(5), "Failed in history", || {
        let c = c.clone();
        let s = &s;
        let id = id.clone();
        async move {
            let t = history_types(&c, s, &id).await;
            t.contains(&"Failed".to_string()).then_some(t)
        }
    })
    .await;
    assert_eq!(t, ["Failed"]);
    // An active account still works on the same stack.
    let ok = submit(&c, &s, &reference_request()).await;
    wait_stage(&c, &s, &ok, "Completed", Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_outage_is_retried_not_lost() {
    let s = Stack::start(fast().service_env("workflow", "CLAIM_IDLE_MS", "1000").service_env(
        "workflow",
        "MAX_MESSAGE_ATTEMPTS",
        "50",
    ));
    let c = client();
    s.kill("package");
    let id = submit(&c, &s, &reference_request()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (st, _) = get(&c, format!("{}/api/deliveries/public/{id}", s.url("delivery"))).await;
    assert_eq!(st, StatusCode::NOT_FOUND, "cannot progress while package is down");
    s.spawn("package", &[]);
    s.wait_ready("package", Duration::from_secs(20));
    wait_stage(&c, &s, &id, "Completed", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workflow_crash_mid_burst_loses_nothing_and_duplicates_nothing() {
    crash_mid_burst(400, &["workflow"], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scheduler_and_delivery_crash_mid_burst_loses_nothing_and_duplicates_nothing() {
    crash_mid_burst(192, &["dronescheduler", "delivery", "workflow"], &[]).await;
}

/// A second instance of each event consumer runs next to the first (as during
/// a canary rollout): every event is still applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_each_consumer_apply_every_event_once() {
    crash_mid_burst(192, &[], &["delivery", "deliveryhistory", "workflow"]).await;
}

/// Send a burst of N requests (with a second instance of each of
/// `second_instances` running), SIGKILL `victims` once a third is accepted,
/// restart them (as new consumers), then check every accepted id.
#[allow(non_snake_case)]
async fn crash_mid_burst(N: usize, victims: &[&str], second_instances: &[&str]) {
    let s = Arc::new(Stack::start(
        fast()
            .env("CLAIM_IDLE_MS", "1500")
            .service_env("workflow", "MAX_MESSAGE_ATTEMPTS", "100")
            .service_env("workflow", "CONSUMER_CONCURRENCY", "32"),
    ));
    for svc in second_instances {
        s.spawn_instance(svc, &format!("{svc}-2"));
    }
    let c = client();
    let accepted = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let n = N;
    for w in 0..16 {
        let c = c.clone();
        let s = s.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..n / 16 {
                let mut body = reference_request();
                body["ownerId"] = json!(format!("owner-{w}-{i}"));
                let id = submit(&c, &s, &body).await;
                accepted.lock().await.push(id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // Crash the workflow in the middle of the burst, restart it as a new consumer.
    eventually(Duration::from_secs(30), "a third of the burst accepted", || {
        let a = accepted.clone();
        async move { (a.lock().await.len() >= N / 3).then_some(()) }
    })
    .await;
    for v in victims {
        s.kill(v);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for v in victims {
        s.spawn(v, &[]);
    }
    let s2 = s.clone();
    let names: Vec<String> = victims.iter().map(|v| v.to_string()).collect();
    tokio::task::spawn_blocking(move || names.iter().for_each(|v| s2.wait_ready(v, Duration::from_secs(30))))
        .await
        .unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let ids: Vec<String> = accepted.lock().await.clone();
    assert_eq!(ids.len(), N);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), N);
    let stats_url = format!("{}/api/deliveries/stats", s.url("delivery"));
    let mut waited = 0;
    let stats = loop {
        let (_, v) = get(&c, stats_url.clone()).await;
        if v["completed"].as_u64() == Some(N as u64) {
            break v;
        }
        waited += 1;
        if waited > 600 {
            let mut missing = Vec::new();
            for id in &ids {
                let (_, v) = get(&c, format!("{}/api/deliveries/public/{id}", s.url("delivery"))).await;
                if v["stage"] != "Completed" {
                    let (_, w) = get(&c, format!("{}/api/workflows/{id}", s.url("workflow"))).await;
                    let (_, d) = get(&c, format!("{}/api/dronedeliveries/{id}", s.url("dronescheduler"))).await;
                    missing.push(format!("{id}: delivery={v} workflow={w} drone={d}"));
                }
            }
            panic!("not all completed: {v}\n{}", missing.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stats["created"], N as u64, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    for id in &ids {
        let (st, v) = get(&c, format!("{}/api/deliveries/public/{id}", s.url("delivery"))).await;
        assert_eq!((st, v["stage"].as_str()), (StatusCode::OK, Some("Completed")), "{id}");
        let (_, d) = get(&c, format!("{}/api/dronedeliveries/{id}", s.url("dronescheduler"))).await;
        assert_eq!(d["assignments"], 1, "one drone for {id}: {d}");
    }
    let (_, fleet) = get(&c, format!("{}/api/fleet", s.url("dronescheduler"))).await;
    assert_eq!(fleet["assignmentsTotal"], N as u64, "{fleet}");
    assert_eq!(fleet["active"], 0, "{fleet}");
    assert_eq!(fleet["idle"], fleet["size"], "every drone back: {fleet}");
    let hist = eventually(Duration::from_secs(20), "history complete", || {
        let c = c.clone();
        let u = format!("{}/api/deliveryhistory/stats", s.url("deliveryhistory"));
        async move {
            let (_, v) = get(&c, u).await;
            (v["Completed"].as_u64() == Some(N as u64)).then_some(v)
        }
    })
    .await;
    let exact = ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"]
        .iter()
        .all(|t| hist[*t].as_u64() == Some(N as u64));
    if !exact {
        let mut odd = Vec::new();
        for id in &ids {
            let t = history_types(&c, &s, id).await;
            if t != ["Created", "HeadedToPickup", "HeadedToDropoff", "Completed"] {
                odd.push(format!("{id}: {t:?}"));
            }
        }
        panic!("tracking events missing or duplicated: {hist}\n{}", odd.join("\n"));
    }
    // Handled entries leave the streams (trimmed in whole nodes of at most 100
    // entries; the drone and tracking streams held 3 and 4 entries per delivery).
    let mut r = redis::Client::open(s.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "streams trimmed", || {
        let mut r = r.clone();
        async move {
            let mut lens = Vec::new();
            for stream in ["ingestion:requests", "dronescheduler:events", "delivery:events"] {
                let n: u64 = redis::cmd("XLEN").arg(stream).query_async(&mut r).await.ok()?;
                lens.push(n);
            }
            lens.iter().all(|n| *n <= 100).then_some(())
        }
    })
    .await;
    let offset: Option<String> = redis::cmd("GET")
        .arg("delivery:offset:dronescheduler:events")
        .query_async(&mut r)
        .await
        .unwrap();
    assert!(offset.is_some(), "delivery keeps its offset");
}

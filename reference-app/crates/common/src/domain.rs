//! Domain types shared by the services: the public request shape, its
//! validation, locations and geometry.
use crate::error::ApiError;
use crate::jackson::{self, Object};
use serde::{Deserialize, Serialize};

pub const CONFIRMATIONS: [&str; 4] = ["FingerPrint", "Picture", "Voice", "None"];
pub const SIZES: [&str; 3] = ["Small", "Medium", "Large"];
const MAX_TEXT: usize = 1024;

/// Package part of a delivery request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PackageInfo {
    pub package_id: String,
    pub size: String,
    pub tag: String,
    pub weight: f64,
}

/// The public delivery request (field names as the original's clients send them).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_id: Option<String>,
    pub owner_id: String,
    pub pickup_location: String,
    pub pickup_time: String,
    pub deadline: String,
    pub expedited: bool,
    pub confirmation_required: String,
    pub package_info: PackageInfo,
    pub drop_off_location: String,
}

/// Reschedule (PATCH) body: any subset of the route / time fields.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Reschedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_off_location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pickup_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<String>,
}

fn text_limit(v: Option<String>, path: &str) -> Result<Option<String>, ApiError> {
    match v {
        Some(s) if s.len() > MAX_TEXT => Err(ApiError::field(
            path,
            format!("{path} is longer than {MAX_TEXT} characters"),
        )),
        v => Ok(v),
    }
}

/// A `String` field of the original model, coerced as Jackson did, within
/// our length limit.
fn text(o: &Object, key: &str, path: &str) -> Result<Option<String>, ApiError> {
    text_limit(o.string(key, path)?, path)
}

/// A string the delivery is meaningless without: present and not blank.
fn required_text(o: &Object, key: &str, path: &str) -> Result<String, ApiError> {
    match text(o, key, path)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ApiError::field(path, format!("{path} is required"))),
    }
}

fn check_location(s: &str, path: &str) -> Result<(), ApiError> {
    match parse_coordinates(s) {
        Some(Err(msg)) => Err(ApiError::field(path, format!("{path}: {msg}"))),
        _ => Ok(()),
    }
}

/// A `java.util.Date` field: stored as canonical UTC text (empty when absent).
fn time(o: &Object, key: &str) -> Result<String, ApiError> {
    Ok(o.date(key, key)?.map(jackson::date_text).unwrap_or_default())
}

/// Validate a POST body (the original's `ExternalDelivery`, read with
/// Jackson 2.8's default coercions: see [`jackson`]) and build the request
/// (400 naming the field on error). Unknown members are ignored, as Spring
/// Boot's ObjectMapper did (FAIL_ON_UNKNOWN_PROPERTIES off); a `deliveryId`
/// in the body is ignored (the service assigns one), but must be a scalar.
pub fn validate_request(body: &[u8]) -> Result<DeliveryRequest, ApiError> {
    let o = Object::parse_body(body)?;
    text(&o, "deliveryId", "deliveryId")?;
    let owner_id = required_text(&o, "ownerId", "ownerId")?;
    if owner_id.len() > 128 {
        return Err(ApiError::field("ownerId", "ownerId is longer than 128 characters"));
    }
    let p = match o.get("packageInfo") {
        None => return Err(ApiError::field("packageInfo", "packageInfo is required")),
        Some(p) => Object::of(p, "packageInfo")?,
    };
    let package_id = text(&p, "packageId", "packageInfo.packageId")?.unwrap_or_default();
    let size = p
        .enumeration("size", "packageInfo.size", &SIZES)?
        .ok_or_else(|| ApiError::field("packageInfo.size", "packageInfo.size is required"))?
        .to_string();
    let tag = text(&p, "tag", "packageInfo.tag")?.unwrap_or_default();
    let weight = p.double("weight", "packageInfo.weight")?;
    if !(0.0..=100_000.0).contains(&weight) {
        return Err(ApiError::field(
            "packageInfo.weight",
            "packageInfo.weight must be between 0 and 100000",
        ));
    }
    let confirmation_required = o
        .enumeration("confirmationRequired", "confirmationRequired", &CONFIRMATIONS)?
        .unwrap_or("None")
        .to_string();
    let pickup_location = required_text(&o, "pickupLocation", "pickupLocation")?;
    check_location(&pickup_location, "pickupLocation")?;
    let drop_off_location = required_text(&o, "dropOffLocation", "dropOffLocation")?;
    check_location(&drop_off_location, "dropOffLocation")?;
    let pickup_time = time(&o, "pickupTime")?;
    let deadline = text(&o, "deadline", "deadline")?.unwrap_or_default();
    let expedited = o.boolean("expedited", "expedited")?.unwrap_or(false);
    Ok(DeliveryRequest {
        delivery_id: None,
        owner_id,
        pickup_location,
        pickup_time,
        deadline,
        expedited,
        confirmation_required,
        package_info: PackageInfo {
            package_id,
            size,
            tag,
            weight,
        },
        drop_off_location,
    })
}

/// Validate a PATCH (reschedule) body: the original's
/// `ExternalRescheduledDelivery` (`pickupLocation`, `dropOffLocation`,
/// `deadline` strings, `pickupTime` a date), with the same coercions.
pub fn validate_reschedule(body: &[u8]) -> Result<Reschedule, ApiError> {
    let o = Object::parse_body(body)?;
    text(&o, "deliveryId", "deliveryId")?;
    let pickup_location = text(&o, "pickupLocation", "pickupLocation")?;
    let drop_off_location = text(&o, "dropOffLocation", "dropOffLocation")?;
    for (val, name) in [
        (&pickup_location, "pickupLocation"),
        (&drop_off_location, "dropOffLocation"),
    ] {
        if let Some(s) = val {
            if s.trim().is_empty() {
                return Err(ApiError::field(name, format!("{name} must not be empty")));
            }
            check_location(s, name)?;
        }
    }
    let pickup_time = time(&o, "pickupTime")?;
    let deadline = text(&o, "deadline", "deadline")?.filter(|d| !d.is_empty());
    let r = Reschedule {
        pickup_location,
        drop_off_location,
        pickup_time: (!pickup_time.is_empty()).then_some(pickup_time),
        deadline,
    };
    if r == Reschedule::default() {
        return Err(ApiError::field(
            "body",
            "one of pickupLocation, dropOffLocation, pickupTime, deadline is required",
        ));
    }
    Ok(r)
}

/// A point on the map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Location {
    pub altitude: f64,
    pub latitude: f64,
    pub longitude: f64,
}

/// `Some(Ok)` for a well-formed `"altitude,latitude,longitude"`, `Some(Err)`
/// when it is numeric but out of range, `None` for free text.
pub fn parse_coordinates(s: &str) -> Option<Result<Location, String>> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return None;
    }
    let nums: Vec<f64> = parts.iter().filter_map(|p| p.parse::<f64>().ok()).collect();
    if nums.len() != 3 {
        return None;
    }
    let (alt, lat, lon) = (nums[0], nums[1], nums[2]);
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        return Some(Err("latitude must be between -90 and 90".into()));
    }
    if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
        return Some(Err("longitude must be between -180 and 180".into()));
    }
    if !alt.is_finite() {
        return Some(Err("altitude must be a number".into()));
    }
    Some(Ok(Location {
        altitude: alt,
        latitude: lat,
        longitude: lon,
    }))
}

fn fnv1a(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Resolve a location: coordinates as given, or a deterministic point within
/// ~5 km of the depot for free-text addresses (a stand-in for geocoding).
pub fn resolve_location(s: &str) -> Location {
    if let Some(Ok(l)) = parse_coordinates(s) {
        return l;
    }
    let h = fnv1a(s);
    let a = ((h & 0xffff) as f64 / 65535.0) - 0.5;
    let b = (((h >> 16) & 0xffff) as f64 / 65535.0) - 0.5;
    Location {
        altitude: 0.0,
        latitude: DEPOT.latitude + a * 0.09,
        longitude: DEPOT.longitude + b * 0.13,
    }
}

/// Where idle drones wait.
pub const DEPOT: Location = Location {
    altitude: 0.0,
    latitude: 47.6062,
    longitude: -122.3321,
};

/// Great-circle distance in metres.
pub fn distance_m(a: &Location, b: &Location) -> f64 {
    let r = 6_371_000.0;
    let (la1, la2) = (a.latitude.to_radians(), b.latitude.to_radians());
    let dla = la2 - la1;
    let dlo = (b.longitude - a.longitude).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * r * h.sqrt().asin()
}

/// Linear interpolation between two points (`t` in [0, 1]).
pub fn lerp(a: &Location, b: &Location, t: f64) -> Location {
    let t = t.clamp(0.0, 1.0);
    Location {
        altitude: a.altitude + (b.altitude - a.altitude) * t,
        latitude: a.latitude + (b.latitude - a.latitude) * t,
        longitude: a.longitude + (b.longitude - a.longitude) * t,
    }
}

/// Milliseconds since the unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Ids in paths: 1..=128 chars of `[A-Za-z0-9_.:-]`.
pub fn check_id(id: &str) -> Result<(), ApiError> {
    if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) {
        Ok(())
    } else {
        Err(ApiError::field(
            "id",
            "id must be 1-128 characters of A-Z a-z 0-9 - _ . :",
        ))
    }
}

/// Format epoch milliseconds as RFC 3339 UTC (`2019-05-08T20:00:00.000Z`).
pub fn fmt_rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// `"altitude,latitude,longitude"` text for a location.
pub fn loc_to_string(l: &Location) -> String {
    format!("{},{},{}", l.altitude, l.latitude, l.longitude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn sample() -> Value {
        json!({"confirmationRequired":"None","deadline":"","dropOffLocation":"drop off","expedited":true,
          "ownerId":"myowner","packageInfo":{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10},
          "pickupLocation":"my pickup","pickupTime":"2019-05-08T20:00:00.000Z"})
    }

    fn parse(v: &Value) -> Result<DeliveryRequest, ApiError> {
        validate_request(v.to_string().as_bytes())
    }

    /// A member added to a body, and what the bound value must satisfy.
    type Case<T> = (&'static str, fn(&T) -> bool);

    fn field_of(v: Value) -> String {
        parse(&v).unwrap_err().field.unwrap()
    }

    #[test]
    fn accepts_the_reference_request() {
        let r = parse(&sample()).unwrap();
        assert_eq!(r.owner_id, "myowner");
        assert_eq!(r.package_info.size, "Small");
        assert!(r.expedited);
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["dropOffLocation"], "drop off");
        assert_eq!(back["packageInfo"]["packageId"], "mypackage");
        assert_eq!(back["pickupTime"], "2019-05-08T20:00:00.000Z");
    }

    /// Bodies as the original's own clients sent them, and the values the
    /// original (Jackson 2.8 defaults) bound them to.
    #[test]
    fn accepts_what_the_original_accepted_with_the_same_values() {
        // Its load test (Fabrikam.Shipping.LoadTests, serialised by Newtonsoft):
        // weight as a string, a free-text deadline, a client-side deliveryId.
        let load_test = json!({"confirmationRequired":"FingerPrint","deadline":"DeadlyQueueOfZombiatedDemons",
            "deliveryId":"42","dropOffLocation":"0,37.4315730000000,-78.65689399999997","expedited":true,"ownerId":"1",
            "packageInfo":{"packageId":"442","size":"Small","tag":"5c3fa1a4-2c5a-4d4e-9b43-7f0c1f2e0b6a","weight":"14"},
            "pickupLocation":"0,36.778261,-119.41793200000001","pickupTime":"2019-04-05T11:00:00.000Z"});
        let r = parse(&load_test).unwrap();
        assert_eq!(r.package_info.weight, 14.0);
        assert_eq!(r.deadline, "DeadlyQueueOfZombiatedDemons");
        assert_eq!(r.confirmation_required, "FingerPrint");
        assert_eq!(r.delivery_id, None);
        // Its ingestion unit test (a plain ObjectMapper writing ExternalDelivery):
        // the date as epoch milliseconds, nulls, no `expedited` at all.
        let unit_test = json!({"deliveryId":null,"ownerId":"3f1c2a8e-1111-4b7e-a0a5-93c1f0e5d0aa","pickupLocation":"Texas",
            "pickupTime":1557345600123u64,"deadline":"LineOfDeadlyZombiatedPeople","confirmationRequired":"FingerPrint",
            "packageInfo":{"packageId":"9a7b","size":"Large","weight":0.0,"tag":null},"dropOffLocation":"Austin"});
        let r = parse(&unit_test).unwrap();
        assert_eq!(r.pickup_time, "2019-05-08T20:00:00.123Z");
        assert!(!r.expedited);
        assert_eq!(r.package_info.tag, "");
        // Type coercions, field by field (raw text: numbers keep their spelling).
        let cases: [Case<DeliveryRequest>; 14] = [
            (r#""ownerId":1e3"#, |r| r.owner_id == "1e3"),
            (r#""ownerId":true"#, |r| r.owner_id == "true"),
            (r#""pickupLocation":10.50"#, |r| r.pickup_location == "10.50"),
            (r#""deadline":20190508"#, |r| r.deadline == "20190508"),
            (r#""expedited":"false""#, |r| !r.expedited),
            (r#""expedited":1"#, |r| r.expedited),
            (r#""expedited":null"#, |r| !r.expedited),
            (r#""confirmationRequired":1"#, |r| r.confirmation_required == "Picture"),
            (r#""confirmationRequired":"3""#, |r| r.confirmation_required == "None"),
            (r#""pickupTime":"1557345600000""#, |r| {
                r.pickup_time == "2019-05-08T20:00:00.000Z"
            }),
            (r#""pickupTime":"Wed, 08 May 2019 22:00:00 +0200""#, |r| {
                r.pickup_time == "2019-05-08T20:00:00.000Z"
            }),
            (r#""pickupTime":"2019-05-08T22:00:00.5+02:00""#, |r| {
                r.pickup_time == "2019-05-08T20:00:00.500Z"
            }),
            (r#""pickupTime":"""#, |r| r.pickup_time.is_empty()),
            (r#""unknownField":{"x":[1]}"#, |r| r.owner_id == "myowner"),
        ];
        let base = sample().to_string();
        for (member, check) in cases {
            // A later member replaces the sample's one (the last value wins).
            let body = format!("{},{member}}}", &base[..base.len() - 1]);
            let r = validate_request(body.as_bytes()).unwrap_or_else(|e| panic!("{member}: {e:?}"));
            assert!(check(&r), "{member}: {r:?}");
        }
        let pkg: [Case<PackageInfo>; 7] = [
            (r#""weight":"10.5""#, |p| p.weight == 10.5),
            (r#""weight":" 7 ""#, |p| p.weight == 7.0),
            (r#""weight":"""#, |p| p.weight == 0.0),
            (r#""weight":null"#, |p| p.weight == 0.0),
            (r#""size":2"#, |p| p.size == "Large"),
            (r#""packageId":442"#, |p| p.package_id == "442"),
            (r#""tag":false"#, |p| p.tag == "false"),
        ];
        for (member, check) in pkg {
            let body = format!(
                r#"{{"ownerId":"o","pickupLocation":"a","dropOffLocation":"b","packageInfo":{{"size":"Small",{member}}}}}"#
            );
            let r = validate_request(body.as_bytes()).unwrap_or_else(|e| panic!("{member}: {e:?}"));
            assert!(check(&r.package_info), "{member}: {r:?}");
        }
    }

    /// What the original refused (400), or what makes a delivery meaningless.
    #[test]
    fn refuses_naming_the_field() {
        let mut cases: Vec<(Value, &str)> = Vec::new();
        let mut with = |path: &[&str], v: Value, field: &'static str| {
            let mut b = sample();
            let mut at = &mut b;
            for k in &path[..path.len() - 1] {
                at = &mut at[*k];
            }
            at[path[path.len() - 1]] = v;
            cases.push((b, field));
        };
        with(&["ownerId"], Value::Null, "ownerId");
        with(&["ownerId"], json!(""), "ownerId");
        with(&["ownerId"], json!({"id": 1}), "ownerId");
        with(&["packageInfo"], Value::Null, "packageInfo");
        with(&["packageInfo"], json!("small box"), "packageInfo");
        with(&["packageInfo", "size"], json!("Huge"), "packageInfo.size");
        with(&["packageInfo", "size"], json!("small"), "packageInfo.size");
        with(&["packageInfo", "size"], json!(""), "packageInfo.size");
        with(&["packageInfo", "size"], json!(3), "packageInfo.size");
        with(&["packageInfo", "size"], json!(1.0), "packageInfo.size");
        with(&["packageInfo", "size"], Value::Null, "packageInfo.size");
        with(&["packageInfo", "weight"], json!(true), "packageInfo.weight");
        with(&["packageInfo", "weight"], json!("ten"), "packageInfo.weight");
        with(&["packageInfo", "weight"], json!(-1), "packageInfo.weight");
        with(&["packageInfo", "weight"], json!("NaN"), "packageInfo.weight");
        with(&["packageInfo", "tag"], json!([]), "packageInfo.tag");
        with(&["confirmationRequired"], json!("Retina"), "confirmationRequired");
        with(&["confirmationRequired"], json!("none"), "confirmationRequired");
        with(&["confirmationRequired"], json!(4), "confirmationRequired");
        with(&["expedited"], json!("yes"), "expedited");
        with(&["expedited"], json!(1.5), "expedited");
        with(&["pickupTime"], json!("yesterday"), "pickupTime");
        with(&["pickupTime"], json!("2019-05-08 20:00:00Z"), "pickupTime");
        with(&["pickupTime"], json!(1.5e12), "pickupTime");
        with(&["pickupTime"], json!(true), "pickupTime");
        with(&["deadline"], json!({}), "deadline");
        with(&["deliveryId"], json!({}), "deliveryId");
        with(&["pickupLocation"], json!("0,91,10"), "pickupLocation");
        with(&["pickupLocation"], json!(" "), "pickupLocation");
        with(&["dropOffLocation"], json!("0,10,-181"), "dropOffLocation");
        with(&["dropOffLocation"], Value::Null, "dropOffLocation");
        for (body, field) in cases {
            assert_eq!(field_of(body.clone()), field, "{body}");
        }
        assert_eq!(field_of(json!([1])), "body");
        assert_eq!(validate_request(b"{\"ownerId\":").unwrap_err().field.unwrap(), "body");
    }

    #[test]
    fn coordinates() {
        let l = parse_coordinates("0,36.778261,-119.41793200000001").unwrap().unwrap();
        assert!((l.latitude - 36.778261).abs() < 1e-9);
        assert!(parse_coordinates("my pickup").is_none());
        assert!(parse_coordinates("0,-91,0").unwrap().is_err());
        let a = resolve_location("a street");
        assert_eq!(a, resolve_location("a street"));
        assert!(distance_m(&a, &DEPOT) < 10_000.0);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(fmt_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_rfc3339(1_557_345_600_123), "2019-05-08T20:00:00.123Z");
        assert!(check_id("abc-1").is_ok());
        assert!(check_id("a/b").is_err());
    }

    #[test]
    fn reschedule_like_the_original() {
        let r = |v: Value| validate_reschedule(v.to_string().as_bytes());
        assert!(r(json!({})).is_err());
        let ok = r(json!({"dropOffLocation":"0,1,2"})).unwrap();
        assert_eq!(ok.drop_off_location.as_deref(), Some("0,1,2"));
        assert_eq!(
            r(json!({"pickupLocation":"0,100,2"})).unwrap_err().field.unwrap(),
            "pickupLocation"
        );
        // The original's own test body: a free-text deadline, a deliveryId.
        let ok =
            r(json!({"deadline":"deadline","deliveryId":"x","dropOffLocation":"location","pickupLocation":"location"}))
                .unwrap();
        assert_eq!(ok.deadline.as_deref(), Some("deadline"));
        let ok = r(json!({"pickupTime": 1557345600000u64})).unwrap();
        assert_eq!(ok.pickup_time.as_deref(), Some("2019-05-08T20:00:00.000Z"));
        assert_eq!(
            r(json!({"pickupTime": "soon"})).unwrap_err().field.unwrap(),
            "pickupTime"
        );
    }
}

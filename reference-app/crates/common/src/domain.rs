//! Domain types shared by the services: the public request shape, its
//! validation, locations and geometry.
use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

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

fn obj<'a>(v: &'a Value, name: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object()
        .ok_or_else(|| ApiError::field(name, format!("{name} must be a JSON object")))
}

fn opt_str(o: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, ApiError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_TEXT => Err(ApiError::field(
            path,
            format!("{path} is longer than {MAX_TEXT} characters"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::field(path, format!("{path} must be a string"))),
    }
}

fn req_str(o: &Map<String, Value>, key: &str, path: &str) -> Result<String, ApiError> {
    match opt_str(o, key, path)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(ApiError::field(path, format!("{path} is required"))),
    }
}

fn one_of(value: String, allowed: &[&str], path: &str) -> Result<String, ApiError> {
    if allowed.contains(&value.as_str()) {
        Ok(value)
    } else {
        Err(ApiError::field(
            path,
            format!("{path} must be one of {}", allowed.join("|")),
        ))
    }
}

/// Validate an ISO-8601 / RFC 3339 timestamp such as `2019-05-08T20:00:00.000Z`.
pub fn is_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(99);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let (mo, d, h, mi, se) = (num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let n = r.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    match rest {
        "Z" | "z" => true,
        tz if tz.len() == 6 => {
            let t = tz.as_bytes();
            (t[0] == b'+' || t[0] == b'-')
                && t[1..3].iter().all(u8::is_ascii_digit)
                && t[3] == b':'
                && t[4..6].iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

fn check_location(s: &str, path: &str) -> Result<(), ApiError> {
    match parse_coordinates(s) {
        Some(Err(msg)) => Err(ApiError::field(path, format!("{path}: {msg}"))),
        _ => Ok(()),
    }
}

fn check_time(o: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    let v = opt_str(o, key, key)?.unwrap_or_default();
    if !v.is_empty() && !is_timestamp(&v) {
        return Err(ApiError::field(
            key,
            format!("{key} must be an ISO-8601 timestamp such as 2019-05-08T20:00:00.000Z"),
        ));
    }
    Ok(v)
}

/// Validate a POST body and build the request (400 naming the field on error).
pub fn validate_request(v: &Value) -> Result<DeliveryRequest, ApiError> {
    let o = obj(v, "body")?;
    let owner_id = req_str(o, "ownerId", "ownerId")?;
    if owner_id.len() > 128 {
        return Err(ApiError::field("ownerId", "ownerId is longer than 128 characters"));
    }
    let p = match o.get("packageInfo") {
        None | Some(Value::Null) => return Err(ApiError::field("packageInfo", "packageInfo is required")),
        Some(p) => obj(p, "packageInfo")?,
    };
    let package_id = opt_str(p, "packageId", "packageInfo.packageId")?.unwrap_or_default();
    let size = one_of(req_str(p, "size", "packageInfo.size")?, &SIZES, "packageInfo.size")?;
    let tag = opt_str(p, "tag", "packageInfo.tag")?.unwrap_or_default();
    let weight = match p.get("weight") {
        None | Some(Value::Null) => 0.0,
        Some(Value::Number(n)) => n.as_f64().unwrap_or(-1.0),
        Some(_) => {
            return Err(ApiError::field(
                "packageInfo.weight",
                "packageInfo.weight must be a number",
            ))
        }
    };
    if !(0.0..=100_000.0).contains(&weight) {
        return Err(ApiError::field(
            "packageInfo.weight",
            "packageInfo.weight must be between 0 and 100000",
        ));
    }
    let confirmation_required = one_of(
        opt_str(o, "confirmationRequired", "confirmationRequired")?.unwrap_or_else(|| "None".into()),
        &CONFIRMATIONS,
        "confirmationRequired",
    )?;
    let pickup_location = req_str(o, "pickupLocation", "pickupLocation")?;
    check_location(&pickup_location, "pickupLocation")?;
    let drop_off_location = req_str(o, "dropOffLocation", "dropOffLocation")?;
    check_location(&drop_off_location, "dropOffLocation")?;
    let pickup_time = check_time(o, "pickupTime")?;
    let deadline = check_time(o, "deadline")?;
    let expedited = match o.get("expedited") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("expedited", "expedited must be a boolean")),
    };
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

/// Validate a PATCH (reschedule) body.
pub fn validate_reschedule(v: &Value) -> Result<Reschedule, ApiError> {
    let o = obj(v, "body")?;
    let pickup_location = opt_str(o, "pickupLocation", "pickupLocation")?;
    let drop_off_location = opt_str(o, "dropOffLocation", "dropOffLocation")?;
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
    let pickup_time = check_time(o, "pickupTime")?;
    let deadline = check_time(o, "deadline")?;
    let r = Reschedule {
        pickup_location,
        drop_off_location,
        pickup_time: (!pickup_time.is_empty()).then_some(pickup_time),
        deadline: (!deadline.is_empty()).then_some(deadline),
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
    use serde_json::json;

    fn sample() -> Value {
        json!({"confirmationRequired":"None","deadline":"","dropOffLocation":"drop off","expedited":true,
          "ownerId":"myowner","packageInfo":{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10},
          "pickupLocation":"my pickup","pickupTime":"2019-05-08T20:00:00.000Z"})
    }

    fn field_of(v: Value) -> String {
        validate_request(&v).unwrap_err().field.unwrap()
    }

    #[test]
    fn accepts_the_reference_request() {
        let r = validate_request(&sample()).unwrap();
        assert_eq!(r.owner_id, "myowner");
        assert_eq!(r.package_info.size, "Small");
        assert!(r.expedited);
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back["dropOffLocation"], "drop off");
        assert_eq!(back["packageInfo"]["packageId"], "mypackage");
    }

    #[test]
    fn rejects_bad_fields_naming_them() {
        let mut v = sample();
        v.as_object_mut().unwrap().remove("ownerId");
        assert_eq!(field_of(v), "ownerId");
        let mut v = sample();
        v.as_object_mut().unwrap().remove("packageInfo");
        assert_eq!(field_of(v), "packageInfo");
        let mut v = sample();
        v["packageInfo"]["size"] = json!("Huge");
        assert_eq!(field_of(v), "packageInfo.size");
        let mut v = sample();
        v["confirmationRequired"] = json!("Retina");
        assert_eq!(field_of(v), "confirmationRequired");
        let mut v = sample();
        v["pickupLocation"] = json!("0,91,10");
        assert_eq!(field_of(v), "pickupLocation");
        let mut v = sample();
        v["dropOffLocation"] = json!("0,10,-181");
        assert_eq!(field_of(v), "dropOffLocation");
        let mut v = sample();
        v["pickupTime"] = json!("yesterday");
        assert_eq!(field_of(v), "pickupTime");
        let mut v = sample();
        v["packageInfo"]["weight"] = json!(-1);
        assert_eq!(field_of(v), "packageInfo.weight");
        let mut v = sample();
        v["expedited"] = json!("yes");
        assert_eq!(field_of(v), "expedited");
        assert_eq!(field_of(json!([1])), "body");
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
        assert!(is_timestamp(&fmt_rfc3339(now_ms())));
        assert!(check_id("abc-1").is_ok());
        assert!(check_id("a/b").is_err());
    }

    #[test]
    fn timestamps() {
        assert!(is_timestamp("2019-05-08T20:00:00.000Z"));
        assert!(is_timestamp("2019-05-08T20:00:00+02:00"));
        assert!(!is_timestamp("2019-13-08T20:00:00Z"));
        assert!(!is_timestamp("2019-05-08"));
    }

    #[test]
    fn reschedule_requires_something() {
        assert!(validate_reschedule(&json!({})).is_err());
        let r = validate_reschedule(&json!({"dropOffLocation":"0,1,2"})).unwrap();
        assert_eq!(r.drop_off_location.as_deref(), Some("0,1,2"));
        assert_eq!(
            validate_reschedule(&json!({"pickupLocation":"0,100,2"}))
                .unwrap_err()
                .field
                .unwrap(),
            "pickupLocation"
        );
    }
}

//! Reading request bodies the way the original ingestion service did.
//!
//! The original (Java, Spring Boot 1.5.2, so Jackson 2.8 with Spring's
//! defaults) bound `POST /api/deliveryrequests` to plain Java beans and let
//! Jackson's default coercions turn a value of another JSON type into the
//! declared field type. Its clients (its load test, its own tests) relied on
//! that: `"weight": "14"`, `"pickupTime": 1557345600000`, free-text
//! `deadline`. This module reproduces those coercions field type by field
//! type, with the same resulting values, and names the field in every error.
//! Numbers keep the text they were written with (Jackson's `getText()`),
//! which is why members are read as raw JSON rather than `serde_json::Value`.
use crate::domain::fmt_rfc3339;
use crate::error::ApiError;
use serde_json::value::RawValue;
use std::collections::HashMap;

/// The members of a JSON object, each as written. A member given twice keeps
/// its last value (as a bean setter called twice).
pub struct Object<'a>(HashMap<String, &'a RawValue>);

/// One JSON value, by token type.
enum Token<'a> {
    Null,
    Bool(bool),
    /// A number, as written.
    Number(&'a str),
    Str(String),
    /// An object or an array: never coerced to a scalar.
    Structure,
}

fn token(raw: &RawValue) -> Token<'_> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Token::Null,
        Some(b't') => Token::Bool(true),
        Some(b'f') => Token::Bool(false),
        Some(b'"') => Token::Str(serde_json::from_str(text).unwrap_or_default()),
        Some(b'{') | Some(b'[') => Token::Structure,
        _ => Token::Number(text),
    }
}

impl<'a> Object<'a> {
    /// Parse a whole body: 400 naming `body` unless it is one JSON object.
    pub fn parse_body(bytes: &'a [u8]) -> Result<Object<'a>, ApiError> {
        let raw: &RawValue =
            serde_json::from_slice(bytes).map_err(|e| ApiError::field("body", format!("invalid JSON: {e}")))?;
        Object::of(raw, "body")
    }

    /// The members of a nested object (`name` is its path in errors).
    pub fn of(raw: &'a RawValue, name: &str) -> Result<Object<'a>, ApiError> {
        if !raw.get().starts_with('{') {
            return Err(ApiError::field(name, format!("{name} must be a JSON object")));
        }
        serde_json::from_str(raw.get())
            .map(Object)
            .map_err(|e| ApiError::field(name, format!("{name}: {e}")))
    }

    /// The raw member, `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.get(key).copied().filter(|r| !matches!(token(r), Token::Null))
    }

    /// A `String` field: strings as given; numbers as written and booleans as
    /// `true`/`false` (Jackson's `StringDeserializer` takes any scalar);
    /// objects and arrays refused. `None` when absent or `null`.
    pub fn string(&self, key: &str, path: &str) -> Result<Option<String>, ApiError> {
        let Some(raw) = self.get(key) else { return Ok(None) };
        match token(raw) {
            Token::Str(s) => Ok(Some(s)),
            Token::Number(n) => Ok(Some(n.to_string())),
            Token::Bool(b) => Ok(Some(b.to_string())),
            Token::Null => Ok(None),
            Token::Structure => Err(ApiError::field(
                path,
                format!("{path} must be a string (or a number or boolean)"),
            )),
        }
    }

    /// A primitive `double` field: numbers; numeric strings (trimmed, as
    /// Java's `Double.parseDouble`, which also takes a trailing `d`/`f`);
    /// `null`, absent, `""` and `"null"` give 0.0 (primitives are never
    /// null: FAIL_ON_NULL_FOR_PRIMITIVES is off). Booleans, objects, arrays
    /// and other strings are refused.
    pub fn double(&self, key: &str, path: &str) -> Result<f64, ApiError> {
        let bad = || ApiError::field(path, format!("{path} must be a number"));
        let Some(raw) = self.get(key) else { return Ok(0.0) };
        match token(raw) {
            Token::Null => Ok(0.0),
            Token::Number(n) => n.parse::<f64>().map_err(|_| bad()),
            Token::Str(s) => {
                let t = s.trim();
                if t.is_empty() || t == "null" {
                    return Ok(0.0);
                }
                java_double(t).ok_or_else(bad)
            }
            Token::Bool(_) | Token::Structure => Err(bad()),
        }
    }

    /// A `Boolean` (wrapper) field: `true`/`false`; integers (0 is false, any
    /// other integer true); the strings `true`, `True`, `false`, `False`
    /// (trimmed); `null`, absent, `""` and `"null"` give `None`. Floats,
    /// other strings, objects and arrays are refused.
    pub fn boolean(&self, key: &str, path: &str) -> Result<Option<bool>, ApiError> {
        let bad = || ApiError::field(path, format!("{path} must be a boolean"));
        let Some(raw) = self.get(key) else { return Ok(None) };
        match token(raw) {
            Token::Null => Ok(None),
            Token::Bool(b) => Ok(Some(b)),
            Token::Number(n) if is_integer(n) => Ok(Some(n.trim_start_matches('-').bytes().any(|b| b != b'0'))),
            Token::Str(s) => match s.trim() {
                "true" | "True" => Ok(Some(true)),
                "false" | "False" => Ok(Some(false)),
                "" | "null" => Ok(None),
                _ => Err(bad()),
            },
            Token::Number(_) | Token::Structure => Err(bad()),
        }
    }

    /// An enum field (Jackson's `EnumDeserializer`, case-sensitive): a
    /// constant's exact name, or its index (declaration order) as a JSON
    /// integer or as a string of digits (trimmed). `None` when absent or
    /// `null`. Anything else, including `""`, is refused.
    pub fn enumeration(&self, key: &str, path: &str, names: &[&'static str]) -> Result<Option<&'static str>, ApiError> {
        let bad = || ApiError::field(path, format!("{path} must be one of {}", names.join("|")));
        let Some(raw) = self.get(key) else { return Ok(None) };
        let index = |text: &str| {
            text.parse::<usize>()
                .ok()
                .filter(|_| text.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|i| names.get(i).copied())
        };
        match token(raw) {
            Token::Null => Ok(None),
            Token::Str(s) => names
                .iter()
                .find(|n| **n == s)
                .copied()
                .or_else(|| index(s.trim()))
                .map(Some)
                .ok_or_else(bad),
            Token::Number(n) => index(n).map(Some).ok_or_else(bad),
            Token::Bool(_) | Token::Structure => Err(bad()),
        }
    }

    /// A `java.util.Date` field, as epoch milliseconds: a JSON integer (epoch
    /// ms); or a string (trimmed) that is digits (epoch ms), ISO-8601
    /// (`yyyy-MM-dd`, `yyyy-MM-ddTHH:mm[:ss[.SSS]]` with `Z`, `±hh`, `±hhmm`,
    /// `±hh:mm` or no zone = UTC) or RFC 1123 (`Wed, 08 May 2019 20:00:00
    /// GMT`). `null`, absent, `""` and `"null"` give `None`. Floats,
    /// booleans, other strings and instants before 1970 or after 9999 are
    /// refused.
    pub fn date(&self, key: &str, path: &str) -> Result<Option<u64>, ApiError> {
        let bad = || {
            ApiError::field(
                path,
                format!(
                    "{path} must be an ISO-8601 timestamp such as 2019-05-08T20:00:00.000Z (or epoch milliseconds)"
                ),
            )
        };
        let Some(raw) = self.get(key) else { return Ok(None) };
        let ms = match token(raw) {
            Token::Null => return Ok(None),
            Token::Number(n) if is_integer(n) => n.parse::<i64>().ok(),
            Token::Str(s) => {
                let t = s.trim();
                if t.is_empty() || t == "null" {
                    return Ok(None);
                }
                parse_date(t)
            }
            Token::Number(_) | Token::Bool(_) | Token::Structure => None,
        };
        match ms {
            Some(ms) if (0..=MAX_MS).contains(&ms) => Ok(Some(ms as u64)),
            _ => Err(bad()),
        }
    }
}

/// 9999-12-31T23:59:59.999Z.
const MAX_MS: i64 = 253_402_300_799_999;

fn is_integer(n: &str) -> bool {
    let d = n.strip_prefix('-').unwrap_or(n);
    !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())
}

/// Java's `Double.parseDouble` for decimal text: optional sign, digits with
/// an optional fraction and exponent, and an optional `d`/`D`/`f`/`F`
/// suffix. `NaN` and `Infinity` parse too (and are then out of any range).
fn java_double(t: &str) -> Option<f64> {
    let body = t.strip_suffix(['d', 'D', 'f', 'F']).unwrap_or(t);
    let unsigned = body.strip_prefix(['+', '-']).unwrap_or(body);
    match unsigned {
        "NaN" => return Some(f64::NAN),
        "Infinity" => {
            return Some(if body.starts_with('-') {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            })
        }
        _ => {}
    }
    let numeric = !unsigned.is_empty()
        && unsigned.bytes().any(|b| b.is_ascii_digit())
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric {
        body.parse().ok()
    } else {
        None
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn num(s: &str, len: usize) -> Option<i64> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// Epoch milliseconds of (year, month, day) and (hour, minute, second,
/// millisecond) at a UTC offset in minutes; `None` for a field out of range.
fn instant((y, mo, d): (i64, i64, i64), (h, mi, s, ms): (i64, i64, i64, i64), offset_min: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi - offset_min) * 60_000 + s * 1000 + ms)
}

/// `Z`, `±hh`, `±hhmm`, `±hh:mm` → offset in minutes.
fn zone(z: &str) -> Option<i64> {
    if z == "Z" {
        return Some(0);
    }
    let sign = match z.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let r = &z[1..];
    let (h, m) = match r.len() {
        2 => (num(r, 2)?, 0),
        4 => (num(&r[..2], 2)?, num(&r[2..], 2)?),
        5 if &r[2..3] == ":" => (num(&r[..2], 2)?, num(&r[3..], 2)?),
        _ => return None,
    };
    (h < 24 && m < 60).then_some(sign * (h * 60 + m))
}

fn parse_iso(t: &str) -> Option<i64> {
    let date = t.get(..10)?;
    let (y, mo, d) = (num(&date[..4], 4)?, num(date.get(5..7)?, 2)?, num(date.get(8..10)?, 2)?);
    if &date[4..5] != "-" || &date[7..8] != "-" {
        return None;
    }
    let rest = &t[10..];
    if rest.is_empty() {
        return instant((y, mo, d), (0, 0, 0, 0), 0);
    }
    let time = rest.strip_prefix('T')?;
    let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
    let (clock, z) = time.split_at(zone_at);
    let offset = if z.is_empty() { 0 } else { zone(z)? };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut parts = hms.split(':');
    let h = num(parts.next()?, 2)?;
    let mi = num(parts.next()?, 2)?;
    let s = parts.next().map(|s| num(s, 2)).unwrap_or(Some(0))?;
    if parts.next().is_some() || (clock.contains('.') && (frac.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit())))
    {
        return None;
    }
    let ms = format!("{frac:0<3}")[..3].parse::<i64>().ok()?;
    instant((y, mo, d), (h, mi, s, ms), offset)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// `EEE, dd MMM yyyy HH:mm:ss zzz` with zone GMT, UT, UTC, Z, `±hhmm` or
/// `GMT±hh:mm`.
fn parse_rfc1123(t: &str) -> Option<i64> {
    let (day, rest) = t.split_once(", ")?;
    if !DAYS.contains(&day) {
        return None;
    }
    let f: Vec<&str> = rest.split(' ').collect();
    let [d, mon, y, clock, z] = f.as_slice() else {
        return None;
    };
    let d = if d.len() == 1 { num(d, 1)? } else { num(d, 2)? };
    let mo = MONTHS.iter().position(|m| m == mon)? as i64 + 1;
    let y = num(y, 4)?;
    let c: Vec<&str> = clock.split(':').collect();
    let [h, mi, s] = c.as_slice() else { return None };
    let offset = match *z {
        "GMT" | "UT" | "UTC" | "Z" => 0,
        z => zone(z.strip_prefix("GMT").unwrap_or(z))?,
    };
    instant((y, mo, d), (num(h, 2)?, num(mi, 2)?, num(s, 2)?, 0), offset)
}

/// Jackson's `StdDateFormat.parse`: ISO-8601 when it starts `dddd-`, epoch
/// milliseconds when all digits, else RFC 1123.
fn parse_date(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() >= 5 && b[0].is_ascii_digit() && b[3].is_ascii_digit() && b[4] == b'-' {
        parse_iso(t)
    } else if is_integer(t) {
        t.parse().ok()
    } else {
        parse_rfc1123(t)
    }
}

/// Canonical text of an instant, as the service stores and echoes it.
pub fn date_text(ms: u64) -> String {
    fmt_rfc3339(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> Object<'_> {
        Object::parse_body(text.as_bytes()).unwrap()
    }

    #[test]
    fn strings_take_any_scalar_as_written() {
        let o = obj(r#"{"a":"x","b":42,"c":10.50,"d":true,"e":null,"f":{},"g":[1],"h":1e3}"#);
        assert_eq!(o.string("a", "a").unwrap().as_deref(), Some("x"));
        assert_eq!(o.string("b", "b").unwrap().as_deref(), Some("42"));
        assert_eq!(o.string("c", "c").unwrap().as_deref(), Some("10.50"));
        assert_eq!(o.string("d", "d").unwrap().as_deref(), Some("true"));
        assert_eq!(o.string("h", "h").unwrap().as_deref(), Some("1e3"));
        assert_eq!(o.string("e", "e").unwrap(), None);
        assert_eq!(o.string("zz", "zz").unwrap(), None);
        assert_eq!(o.string("f", "p.f").unwrap_err().field.as_deref(), Some("p.f"));
        assert_eq!(o.string("g", "g").unwrap_err().field.as_deref(), Some("g"));
    }

    #[test]
    fn doubles_like_jackson() {
        let o = obj(
            r#"{"a":14,"b":"14","c":" 2.5 ","d":"","e":null,"f":"1e2","g":"14f","h":true,"i":"ten","j":"null","k":[1],"l":-3}"#,
        );
        assert_eq!(o.double("a", "a").unwrap(), 14.0);
        assert_eq!(o.double("b", "b").unwrap(), 14.0);
        assert_eq!(o.double("c", "c").unwrap(), 2.5);
        assert_eq!(o.double("d", "d").unwrap(), 0.0);
        assert_eq!(o.double("e", "e").unwrap(), 0.0);
        assert_eq!(o.double("missing", "m").unwrap(), 0.0);
        assert_eq!(o.double("f", "f").unwrap(), 100.0);
        assert_eq!(o.double("g", "g").unwrap(), 14.0);
        assert_eq!(o.double("j", "j").unwrap(), 0.0);
        assert_eq!(o.double("l", "l").unwrap(), -3.0);
        for k in ["h", "i", "k"] {
            assert_eq!(o.double(k, k).unwrap_err().field.as_deref(), Some(k));
        }
        assert!(java_double("Infinity").unwrap().is_infinite());
        assert!(java_double("inf").is_none());
        assert!(java_double("0x10").is_none());
    }

    #[test]
    fn booleans_like_jackson() {
        let o = obj(
            r#"{"a":true,"b":0,"c":7,"d":"true","e":"False","f":"","g":null,"h":1.0,"i":"yes","j":"TRUE","k":" true "}"#,
        );
        assert_eq!(o.boolean("a", "a").unwrap(), Some(true));
        assert_eq!(o.boolean("b", "b").unwrap(), Some(false));
        assert_eq!(o.boolean("c", "c").unwrap(), Some(true));
        assert_eq!(o.boolean("d", "d").unwrap(), Some(true));
        assert_eq!(o.boolean("e", "e").unwrap(), Some(false));
        assert_eq!(o.boolean("f", "f").unwrap(), None);
        assert_eq!(o.boolean("g", "g").unwrap(), None);
        assert_eq!(o.boolean("k", "k").unwrap(), Some(true));
        for k in ["h", "i", "j"] {
            assert_eq!(o.boolean(k, k).unwrap_err().field.as_deref(), Some(k));
        }
    }

    #[test]
    fn enums_by_name_or_index() {
        const N: [&str; 3] = ["Small", "Medium", "Large"];
        let o = obj(r#"{"a":"Large","b":1,"c":"2","d":" 0 ","e":"small","f":"","g":3,"h":1.0,"i":" Small","j":null}"#);
        assert_eq!(o.enumeration("a", "a", &N).unwrap(), Some("Large"));
        assert_eq!(o.enumeration("b", "b", &N).unwrap(), Some("Medium"));
        assert_eq!(o.enumeration("c", "c", &N).unwrap(), Some("Large"));
        assert_eq!(o.enumeration("d", "d", &N).unwrap(), Some("Small"));
        assert_eq!(o.enumeration("j", "j", &N).unwrap(), None);
        for k in ["e", "f", "g", "h", "i"] {
            let e = o.enumeration(k, k, &N).unwrap_err();
            assert_eq!(e.field.as_deref(), Some(k));
            assert!(e.message.contains("Small|Medium|Large"));
        }
    }

    #[test]
    fn dates_like_std_date_format() {
        let z = 1_557_345_600_000u64; // 2019-05-08T20:00:00.000Z
        let cases = [
            (r#"1557345600000"#, Some(z)),
            (r#""1557345600000""#, Some(z)),
            (r#""2019-05-08T20:00:00.000Z""#, Some(z)),
            (r#""2019-05-08T20:00:00Z""#, Some(z)),
            (r#""2019-05-08T20:00:00""#, Some(z)),
            (r#""2019-05-08T20:00""#, Some(z)),
            (r#""2019-05-08T22:00:00.000+02:00""#, Some(z)),
            (r#""2019-05-08T22:00:00+0200""#, Some(z)),
            (r#""2019-05-08T15:00:00-05""#, Some(z)),
            (r#""2019-05-08T20:00:00.1Z""#, Some(z + 100)),
            (r#""2019-05-08T20:00:00.123456Z""#, Some(z + 123)),
            (r#""2019-05-08""#, Some(z - 20 * 3_600_000)),
            (r#""Wed, 08 May 2019 20:00:00 GMT""#, Some(z)),
            (r#""Wed, 8 May 2019 22:00:00 +0200""#, Some(z)),
            (r#"" 2019-05-08T20:00:00Z ""#, Some(z)),
            (r#""""#, None),
            (r#"null"#, None),
        ];
        for (v, want) in cases {
            let body = format!(r#"{{"t":{v}}}"#);
            assert_eq!(obj(&body).date("t", "t").unwrap(), want, "{v}");
        }
        for v in [
            r#""next tuesday""#,
            r#""2019-13-08T20:00:00Z""#,
            r#""2019-02-30""#,
            r#""2019-05-08 20:00:00Z""#,
            r#""2019-05-08T20:00:00z""#,
            r#"1557345600000.0"#,
            r#"true"#,
            r#"-1"#,
            r#"{}"#,
        ] {
            let body = format!(r#"{{"t":{v}}}"#);
            assert_eq!(
                obj(&body).date("t", "t").unwrap_err().field.as_deref(),
                Some("t"),
                "{v}"
            );
        }
        assert_eq!(date_text(z), "2019-05-08T20:00:00.000Z");
    }

    #[test]
    fn bodies_must_be_objects() {
        for b in ["[1]", "42", "null", "{nope", ""] {
            assert_eq!(
                Object::parse_body(b.as_bytes()).err().unwrap().field.as_deref(),
                Some("body"),
                "{b}"
            );
        }
        let o = obj(r#"{"p":"x","q":{"a":1}}"#);
        assert!(Object::of(o.get("p").unwrap(), "p").is_err());
        let q = Object::of(o.get("q").unwrap(), "q").unwrap();
        assert_eq!(q.double("a", "q.a").unwrap(), 1.0);
        assert_eq!(obj(r#"{"a":1,"a":2}"#).double("a", "a").unwrap(), 2.0);
    }
}

//! Small helpers: timestamps, ids, hashing, JSON path access, query strings.

use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 3339 timestamp (second precision, UTC) as Kubernetes renders `metav1.Time`.
pub(crate) fn now_rfc3339() -> String {
    format_unix(jiff::Timestamp::now().as_second())
}

/// `secs` since the Unix epoch as an RFC 3339 timestamp in UTC (`1970-01-01T00:00:00Z`).
pub(crate) fn format_unix(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

/// Deterministic-enough pseudo random generator (splitmix64).
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x1234_5678);
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub(crate) fn uid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        let h = format!("{a:016x}{b:016x}");
        format!(
            "{}-{}-4{}-a{}-{}",
            &h[0..8],
            &h[8..12],
            &h[13..16],
            &h[17..20],
            &h[20..32]
        )
    }
    /// Suffix like the one `generateName` produces (5 chars from the "safe" alphabet).
    pub(crate) fn suffix(&mut self, n: usize) -> String {
        let mut v = self.next_u64();
        let mut s = String::new();
        for _ in 0..n {
            s.push(SAFE_ALPHABET[(v % SAFE_ALPHABET.len() as u64) as usize] as char);
            v /= SAFE_ALPHABET.len() as u64;
        }
        s
    }
    pub(crate) fn hex(&mut self, n: usize) -> String {
        let mut s = String::new();
        while s.len() < n {
            s.push_str(&format!("{:016x}", self.next_u64()));
        }
        s.truncate(n);
        s
    }
}

/// The alphabet Kubernetes uses for `rand.SafeEncodeString` (no vowels, no ambiguous chars).
const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a 64-bit.
pub(crate) fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Hash of a JSON value independent of map key order, encoded like a pod-template-hash.
pub(crate) fn stable_hash(v: &Value) -> String {
    let canonical = canonical_json(v);
    let mut h = fnv1a(canonical.as_bytes());
    let mut s = String::new();
    for _ in 0..10 {
        s.push(SAFE_ALPHABET[(h % SAFE_ALPHABET.len() as u64) as usize] as char);
        h /= SAFE_ALPHABET.len() as u64;
    }
    s
}

pub(crate) fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&m[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Walk a dotted path (`a.b.c`) in a JSON value.
pub(crate) fn dotted<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path.split('.') {
        cur = cur.get(seg)?;
    }
    Some(cur)
}

pub(crate) fn str_at<'a>(v: &'a Value, path: &str) -> Option<&'a str> {
    dotted(v, path).and_then(Value::as_str)
}

pub(crate) fn i64_at(v: &Value, path: &str) -> Option<i64> {
    dotted(v, path).and_then(Value::as_i64)
}

/// Get (creating intermediate objects) a mutable object at a dotted path.
pub(crate) fn obj_mut<'a>(v: &'a mut Value, path: &str) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for seg in path.split('.').filter(|s| !s.is_empty()) {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let m = cur.as_object_mut().expect("object");
        cur = m
            .entry(seg.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    cur.as_object_mut().expect("object")
}

pub(crate) fn name_of(v: &Value) -> &str {
    str_at(v, "metadata.name").unwrap_or("")
}

pub(crate) fn ns_of(v: &Value) -> &str {
    str_at(v, "metadata.namespace").unwrap_or("")
}

pub(crate) fn uid_of(v: &Value) -> &str {
    str_at(v, "metadata.uid").unwrap_or("")
}

pub(crate) fn labels_of(v: &Value) -> Map<String, Value> {
    dotted(v, "metadata.labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// Parse a query string into (key, value) pairs, decoded (`application/x-www-form-urlencoded`:
/// `+` is a space, `%XX` a byte), as Go's `url.ParseQuery` does for the API server.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Resolve an int-or-percent value (`maxSurge`, `maxUnavailable`) against a total.
pub(crate) fn int_or_percent(
    v: Option<&Value>,
    total: i64,
    default_pct: i64,
    round_up: bool,
) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => {
            if let Some(p) = s.strip_suffix('%') {
                let p: i64 = p.trim().parse().unwrap_or(default_pct);
                pct(total, p, round_up)
            } else {
                s.trim().parse().unwrap_or(0)
            }
        }
        _ => pct(total, default_pct, round_up),
    }
}

fn pct(total: i64, p: i64, round_up: bool) -> i64 {
    if round_up {
        (total * p + 99) / 100
    } else {
        total * p / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(format_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_unix(1_700_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn decodes() {
        assert_eq!(
            parse_query("labelSelector=app%3Dweb%2Ctier%21%3Dx&watch=1&x=a+b%&flag"),
            [
                ("labelSelector".into(), "app=web,tier!=x".into()),
                ("watch".into(), "1".into()),
                ("x".into(), "a b%".into()),
                ("flag".into(), String::new()),
            ]
        );
    }

    #[test]
    fn percents() {
        assert_eq!(int_or_percent(Some(&Value::from("25%")), 3, 25, true), 1);
        assert_eq!(int_or_percent(Some(&Value::from("25%")), 3, 25, false), 0);
        assert_eq!(int_or_percent(Some(&Value::from(2)), 3, 25, false), 2);
        assert_eq!(int_or_percent(None, 4, 25, true), 1);
    }
}

//! Small helpers: timestamps, ids, hashing, JSON path access, percent decoding.

use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// RFC 3339 timestamp (second precision, UTC) as Kubernetes renders `metav1.Time`.
pub(crate) fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_unix(secs as i64)
}

pub(crate) fn format_unix(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        y,
        m,
        d,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

// Howard Hinnant's days -> civil date algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
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

/// Percent-decode a query component (`+` means space).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a query string into (key, value) pairs, decoded.
pub(crate) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(kv), String::new()),
        })
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
        assert_eq!(percent_decode("app%3Dweb%2Ctier%21%3Dx"), "app=web,tier!=x");
        assert_eq!(percent_decode("a+b%"), "a b%");
    }

    #[test]
    fn percents() {
        assert_eq!(int_or_percent(Some(&Value::from("25%")), 3, 25, true), 1);
        assert_eq!(int_or_percent(Some(&Value::from("25%")), 3, 25, false), 0);
        assert_eq!(int_or_percent(Some(&Value::from(2)), 3, 25, false), 2);
        assert_eq!(int_or_percent(None, 4, 25, true), 1);
    }
}

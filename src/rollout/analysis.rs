//! Analysis providers every platform can use: HTTP checks and Prometheus queries.
//! (Router metrics are read by the local platform; see `local::platform`.)

use std::time::Duration;

use super::plan::AnalysisPlan;
use super::platform::Measurement;
use crate::http;

/// Splits `http://host:port/path?query` into (`host:port`, `/path?query`).
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((authority, path.to_string()))
}

/// GETs the analysis URL; passes when the status is the expected one (200 by default).
pub async fn http_check(analysis: &AnalysisPlan) -> Measurement {
    let url = analysis.url.as_deref().unwrap_or_default();
    let expected = analysis.expect_status.unwrap_or(200);
    let Some((addr, path)) = split_url(url) else {
        return Measurement::Check {
            ok: false,
            detail: format!("`{url}` is not an http:// URL"),
        };
    };
    match http::get(&addr, &path, Duration::from_secs(10)).await {
        Ok(r) => Measurement::Check {
            ok: r.status == expected,
            detail: format!("GET {url} answered {} (expected {expected})", r.status),
        },
        Err(e) => Measurement::Check {
            ok: false,
            detail: format!("GET {url} failed: {e}"),
        },
    }
}

/// Runs an instant Prometheus query; `{{service}}` and `{{version}}` are substituted.
/// The first sample's value is the measurement; an empty result is no data.
pub async fn prometheus_query(
    analysis: &AnalysisPlan,
    service: &str,
    version: &str,
) -> Measurement {
    let address = analysis
        .address
        .as_deref()
        .unwrap_or("http://prometheus:9090");
    let query = analysis
        .query
        .as_deref()
        .unwrap_or_default()
        .replace("{{service}}", service)
        .replace("{{version}}", version);
    let Some((addr, base)) = split_url(address) else {
        return Measurement::Check {
            ok: false,
            detail: format!("prometheus address `{address}` is not an http:// URL"),
        };
    };
    let path = format!(
        "{}/api/v1/query?query={}",
        base.trim_end_matches('/'),
        url_encode(&query)
    );
    let response = match http::get(&addr, &path, Duration::from_secs(10)).await {
        Ok(r) if r.status == 200 => r,
        Ok(r) => {
            return Measurement::Check {
                ok: false,
                detail: format!("prometheus answered {}: {}", r.status, r.text()),
            }
        }
        Err(e) => {
            return Measurement::Check {
                ok: false,
                detail: format!("prometheus at {address}: {e}"),
            }
        }
    };
    parse_prometheus(&response.body).unwrap_or_else(|why| Measurement::Check {
        ok: false,
        detail: why,
    })
}

fn parse_prometheus(body: &[u8]) -> Result<Measurement, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("prometheus answer is not JSON: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("prometheus query failed: {}", v["error"]));
    }
    let data = &v["data"];
    let sample = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .and_then(|r| r.first())
            .map(|s| &s["value"][1]),
        Some("scalar") => Some(&data["result"][1]),
        other => return Err(format!("unsupported prometheus result type {other:?}")),
    };
    match sample
        .and_then(|s| s.as_str())
        .and_then(|s| s.parse::<f64>().ok())
    {
        Some(v) if v.is_nan() => Ok(Measurement::NoData),
        Some(v) => Ok(Measurement::Value(v)),
        None => Ok(Measurement::NoData),
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://svc:8080/healthz"),
            Some(("svc:8080".into(), "/healthz".into()))
        );
        assert_eq!(split_url("http://svc"), Some(("svc:80".into(), "/".into())));
        assert_eq!(split_url("https://svc"), None);
        assert_eq!(url_encode("a b{c}"), "a%20b%7Bc%7D");
    }

    #[test]
    fn prometheus_answers() {
        let vector = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#;
        assert_eq!(parse_prometheus(vector).unwrap(), Measurement::Value(0.25));
        let empty = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_prometheus(empty).unwrap(), Measurement::NoData);
        assert!(parse_prometheus(br#"{"status":"error","error":"bad"}"#).is_err());
    }
}

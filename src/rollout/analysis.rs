//! Analysis providers every platform can use: HTTP checks and Prometheus queries.
//! (Router metrics are read by the local platform; see `local::platform`.)

use std::time::Duration;

use super::plan::AnalysisPlan;
use super::platform::Measurement;
use crate::http;

/// Parses an analysis URL: `http://` or `https://` with a host, without credentials (they
/// would show in every measurement's detail).
pub fn parse_url(text: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "a URL with credentials (`user:password@`) is refused: {}://…@{}",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http:// or https:// URL"));
    }
    Ok(url)
}

/// GETs the analysis URL; passes when the status is the expected one (200 by default).
pub async fn http_check(analysis: &AnalysisPlan) -> Measurement {
    let url = analysis.url.as_deref().unwrap_or_default();
    let expected = analysis.expect_status.unwrap_or(200);
    let target = match parse_url(url) {
        Ok(target) => target,
        Err(detail) => return Measurement::Check { ok: false, detail },
    };
    match http::get_url(&target, Duration::from_secs(10)).await {
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
    let url = match query_url(address, &query) {
        Ok(url) => url,
        Err(why) => {
            return Measurement::Check {
                ok: false,
                detail: format!("prometheus address: {why}"),
            }
        }
    };
    let response = match http::get_url(&url, Duration::from_secs(10)).await {
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

/// `<address>/api/v1/query?query=<query>` (the address may carry a path prefix).
fn query_url(address: &str, query: &str) -> Result<url::Url, String> {
    let mut url = parse_url(address)?;
    let path = format!("{}/api/v1/query", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url.query_pairs_mut().append_pair("query", query);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://svc:8080/healthz").unwrap().as_str(),
            "http://svc:8080/healthz"
        );
        assert!(parse_url("https://svc").is_ok());
        assert!(parse_url("ftp://svc/x").is_err());
        assert!(parse_url("svc:8080").is_err());
        let e = parse_url("https://admin:hunter2@prom:9090").unwrap_err();
        assert!(!e.contains("hunter2") && e.contains("prom"), "{e}");
        assert_eq!(
            query_url("https://prom.example:9443/prefix/", "sum(x{a=\"b c\"}) & 1")
                .unwrap()
                .as_str(),
            "https://prom.example:9443/prefix/api/v1/query?query=sum%28x%7Ba%3D%22b+c%22%7D%29+%26+1"
        );
        assert_eq!(
            query_url("http://prometheus:9090", "up").unwrap().as_str(),
            "http://prometheus:9090/api/v1/query?query=up"
        );
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

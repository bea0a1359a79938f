//! Hand-written Prometheus text exposition (no extra dependency).
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; 12],
    sum: f64,
    count: u64,
}

/// Process-wide metrics registry.
pub struct Metrics {
    service: String,
    version: String,
    start_time: f64,
    http_total: Mutex<BTreeMap<(String, String, u16), u64>>,
    http_duration: Mutex<BTreeMap<(String, String), Histogram>>,
    /// Free-form counters: name -> (label string -> value).
    counters: Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Metrics {
    pub fn new(service: &str, version: &str) -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Self {
            service: service.into(),
            version: version.into(),
            start_time,
            http_total: Mutex::default(),
            http_duration: Mutex::default(),
            counters: Mutex::default(),
        }
    }

    /// Record one HTTP request.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        *self
            .http_total
            .lock()
            .unwrap()
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
        let mut h = self.http_duration.lock().unwrap();
        let e = h.entry((method.to_string(), route.to_string())).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                e.counts[i] += 1;
            }
        }
        e.sum += seconds;
        e.count += 1;
    }

    /// Increment counter `name` with labels `[(k, v)]`.
    pub fn inc(&self, name: &str, labels: &[(&str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &str, labels: &[(&str, &str)], n: u64) {
        let l = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        *self
            .counters
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .entry(l)
            .or_default() += n;
    }

    /// Render the text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP service_info Service name and version.\n# TYPE service_info gauge"
        );
        let _ = writeln!(
            out,
            "service_info{{service=\"{}\",version=\"{}\"}} 1",
            escape(&self.service),
            escape(&self.version)
        );
        let _ = writeln!(out, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge");
        let _ = writeln!(out, "process_start_time_seconds {}", self.start_time);
        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP requests handled.\n# TYPE http_requests_total counter"
        );
        for ((m, r, s), v) in self.http_total.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}",
                m,
                escape(r),
                s,
                v
            );
        }
        let _ = writeln!(out, "# HELP http_request_duration_seconds HTTP request latency.\n# TYPE http_request_duration_seconds histogram");
        for ((m, r), h) in self.http_duration.lock().unwrap().iter() {
            let r = escape(r);
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{method=\"{m}\",route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{method=\"{m}\",route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{method=\"{m}\",route=\"{r}\"}} {}",
                h.count
            );
        }
        for (name, series) in self.counters.lock().unwrap().iter() {
            let _ = writeln!(out, "# TYPE {name} counter");
            for (l, v) in series {
                if l.is_empty() {
                    let _ = writeln!(out, "{name} {v}");
                } else {
                    let _ = writeln!(out, "{name}{{{l}}} {v}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_required_series() {
        let m = Metrics::new("svc", "1.0.0");
        m.observe_http("GET", "/api/x/{id}", 200, 0.02);
        m.inc("workflow_messages_total", &[("outcome", "completed")]);
        let t = m.render();
        assert!(t.contains("http_requests_total{method=\"GET\",route=\"/api/x/{id}\",status=\"200\"} 1"));
        assert!(t.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/x/{id}\",le=\"0.025\"} 1"));
        assert!(t.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/api/x/{id}\",le=\"0.01\"} 0"));
        assert!(t.contains("service_info{service=\"svc\",version=\"1.0.0\"} 1"));
        assert!(t.contains("workflow_messages_total{outcome=\"completed\"} 1"));
        assert!(t.contains("process_start_time_seconds"));
    }
}

//! Prometheus metrics, rendered in the text exposition format (version 0.0.4) by the
//! [`prometheus_client`] crate:
//! - `http_requests_total{method,route,status}` (counter) and
//!   `http_request_duration_seconds{method,route}` (histogram), `route` being the matched
//!   route template (`unmatched` when none matched),
//! - `service_info{service,version}` and `process_start_time_seconds` (gauges),
//! - the services' own counters, named and labelled where they count ([`Metrics::inc`]).
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Content type of `/metrics` (`text/plain; version=0.0.4; charset=utf-8`).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Help texts of the services' counters (`# HELP` lines); a counter not listed here is
/// described by its name.
const COUNTER_HELP: [(&str, &str); 7] = [
    (
        "downstream_calls_total",
        "Calls to other services, by target and outcome",
    ),
    (
        "workflow_messages_total",
        "Workflow messages handled, by type and outcome",
    ),
    ("stream_messages_total", "Stream messages dispatched, by stream"),
    (
        "stream_reclaimed_total",
        "Pending stream messages reclaimed from other consumers, by stream",
    ),
    ("ingestion_accepted_total", "Delivery requests accepted, by type"),
    ("drone_assignments_total", "Drones assigned to deliveries"),
    ("supervisor_compensations_total", "Workflow failures compensated"),
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// The labels of a free-form counter, in the order given.
type Labels = Vec<(&'static str, String)>;

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Process-wide metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    http_total: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Free-form counters by exported name (registered on first use).
    counters: Mutex<HashMap<String, Family<Labels, Counter>>>,
}

impl Metrics {
    pub fn new(service: &str, version: &str) -> Self {
        // prometheus-client adds `_total` to counter names and a full stop to help texts.
        let mut registry = Registry::default();
        registry.register(
            "service",
            "Service name and version",
            Info::new(vec![("service", service.to_owned()), ("version", version.to_owned())]),
        );
        let start_time = Gauge::<f64, AtomicU64>::default();
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds",
            start_time,
        );
        let http_total = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests handled", http_total.clone());
        let http_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            http_duration.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            http_total,
            http_duration,
            counters: Mutex::default(),
        }
    }

    /// Record one HTTP request.
    pub fn observe_http(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.http_total
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    /// Increment counter `name` (ending in `_total`) with labels `[(k, v)]`.
    pub fn inc(&self, name: &str, labels: &[(&'static str, &str)]) {
        self.add(name, labels, 1);
    }

    pub fn add(&self, name: &str, labels: &[(&'static str, &str)], n: u64) {
        let family = {
            let mut counters = lock(&self.counters);
            match counters.get(name) {
                Some(family) => family.clone(),
                None => {
                    let family = Family::<Labels, Counter>::default();
                    let base = name.strip_suffix("_total").unwrap_or(name);
                    let help = COUNTER_HELP
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or_else(|| base.replace('_', " "), |(_, help)| (*help).to_owned());
                    lock(&self.registry).register(base, help, family.clone());
                    counters.insert(name.to_owned(), family.clone());
                    family
                }
            }
        };
        let labels: Labels = labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        family.get_or_create(&labels).inc_by(n);
    }

    /// Render the text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &lock(&self.registry));
        out
    }
}

/// A poisoned lock only means another thread panicked mid-update; the counts are still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// What the old hand-written encoder wrote and scrapers, dashboards and the e2e tests
    /// read: the same names, label order, bucket bounds, HELP/TYPE lines and no `# EOF`.
    #[test]
    fn exposition_keeps_the_hand_written_format() {
        let m = Metrics::new("svc", "1.0.0");
        m.observe_http("POST", "/api/deliveryrequests", 202, 0.0005);
        m.observe_http("POST", "/api/deliveryrequests", 202, 20.0);
        m.add("stream_messages_total", &[("stream", "deliveries")], 3);
        m.inc("stream_messages_total", &[("stream", "deliveries")]);
        m.inc("drone_assignments_total", &[]);
        m.inc("downstream_calls_total", &[("target", "a\"b\\c\nd"), ("outcome", "ok")]);
        let t = m.render();
        let r = r#"method="POST",route="/api/deliveryrequests""#;
        for expected in [
            "# HELP service_info Service name and version.\n# TYPE service_info gauge\nservice_info{service=\"svc\",version=\"1.0.0\"} 1\n".to_owned(),
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ".to_owned(),
            "# HELP http_requests_total HTTP requests handled.\n# TYPE http_requests_total counter\n".to_owned(),
            format!("\nhttp_requests_total{{{r},status=\"202\"}} 2\n"),
            "# HELP http_request_duration_seconds HTTP request latency.\n# TYPE http_request_duration_seconds histogram\n".to_owned(),
            format!("\nhttp_request_duration_seconds_bucket{{{r},le=\"0.001\"}} 1\n"),
            format!("\nhttp_request_duration_seconds_bucket{{{r},le=\"1\"}} 1\n"),
            format!("\nhttp_request_duration_seconds_bucket{{{r},le=\"10\"}} 1\n"),
            format!("\nhttp_request_duration_seconds_bucket{{{r},le=\"+Inf\"}} 2\n"),
            format!("\nhttp_request_duration_seconds_count{{{r}}} 2\n"),
            "# TYPE stream_messages_total counter\nstream_messages_total{stream=\"deliveries\"} 4\n".to_owned(),
            "# TYPE drone_assignments_total counter\ndrone_assignments_total 1\n".to_owned(),
            "\ndownstream_calls_total{target=\"a\\\"b\\\\c\\nd\",outcome=\"ok\"} 1\n".to_owned(),
        ] {
            assert!(t.contains(&expected), "missing {expected:?} in:\n{t}");
        }
        assert_eq!(t.matches("# TYPE stream_messages_total").count(), 1, "{t}");
        assert!(!t.contains("# EOF"), "{t}");
        let sum = t
            .lines()
            .find_map(|l| l.strip_prefix(&format!("http_request_duration_seconds_sum{{{r}}} ")))
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 20.0005).abs() < 1e-9, "{sum}");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"));
    }
}

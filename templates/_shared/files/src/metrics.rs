//! Prometheus metrics, rendered in the text exposition format (version 0.0.4) by the
//! [`prometheus_client`] crate. Built in:
//! - `http_requests_total{method,route,status}` (counter; `route` is the matched route
//!   template such as `/items/{id}`, never the raw path, to keep label cardinality bounded;
//!   requests that match no route are counted as `unmatched`),
//! - `http_request_duration_seconds{method,route}` (histogram),
//! - `process_start_time_seconds` and `service_info{service,version}` (gauges).
//!
//! Add your own counters with [`Metrics::counter`]:
//! `let orders = state.metrics.counter("orders_created_total", "Orders created.");`
//! For other kinds (gauges, histograms, labelled families), register a
//! [`prometheus_client`] metric with [`Metrics::register`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{prometheus_text, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Metric, Registry};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE_TEXT: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the request duration histogram buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonically increasing counter without labels (`inc`, `inc_by`, `get`). Cheap to
/// clone: clones count together.
pub type Counter = prometheus_client::metrics::counter::Counter;

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

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

struct Inner {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// The counters registered through [`Metrics::counter`], by exported name.
    counters: Mutex<BTreeMap<String, Counter>>,
}

/// The registry of the service's metrics. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// A registry for `service` at `version` (normally the crate name and version).
    pub fn new(service: &'static str, version: &'static str) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        // prometheus-client appends `_total` to counters and a full stop to help texts.
        registry.register(
            "http_requests",
            "HTTP requests handled, by method, route template and status code",
            requests.clone(),
        );
        let durations: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds, by method and route template",
            durations.clone(),
        );
        let start_time = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        start_time.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch, in seconds",
            start_time,
        );
        registry.register(
            "service",
            "Service name and version",
            Info::new([("service", service), ("version", version)]),
        );
        Self {
            inner: Arc::new(Inner {
                registry: Mutex::new(registry),
                requests,
                durations,
                counters: Mutex::default(),
            }),
        }
    }

    /// Registers (or returns the already registered) counter `name`. The exported name
    /// always ends in `_total` (added when `name` lacks it), so `jobs` and `jobs_total` are
    /// the same counter.
    pub fn counter(&self, name: &str, help: &str) -> Counter {
        let base = name.strip_suffix("_total").unwrap_or(name);
        let mut counters = lock(&self.inner.counters);
        if let Some(counter) = counters.get(base) {
            return counter.clone();
        }
        let counter = Counter::default();
        self.register(base, help, counter.clone());
        counters.insert(base.to_owned(), counter.clone());
        counter
    }

    /// Registers any [`prometheus_client`] metric (gauge, histogram, labelled family, ...)
    /// under `name` (for a counter, without the `_total` the encoder adds).
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        let help = help.strip_suffix('.').unwrap_or(help);
        lock(&self.inner.registry).register(name, help, metric);
    }

    /// Records one handled HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.inner
            .requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.inner
            .durations
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_text::encode(&mut out, &lock(&self.inner.registry))?;
        Ok(out)
    }
}

/// Middleware: counts and times every request under its matched route template.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    metrics.observe_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// `GET /metrics`
pub async fn handler(State(metrics): State<Metrics>) -> Response {
    match metrics.render() {
        Ok(text) => ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A poisoned lock only means another thread panicked mid-update; the counts are still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_requests_histogram_and_info() {
        let metrics = Metrics::new("svc", "1.2.3");
        metrics.observe_request("GET", "/items/{id}", 200, Duration::from_millis(30));
        metrics.observe_request("GET", "/items/{id}", 200, Duration::from_secs(20));
        let text = metrics.render().unwrap();
        for expected in [
            "# HELP http_requests_total HTTP requests handled, by method, route template and status code.\n",
            "# TYPE http_requests_total counter\n",
            "\nhttp_requests_total{method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2\n",
            "# TYPE http_request_duration_seconds histogram\n",
            "\nhttp_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"0.025\"} 0\n",
            "\nhttp_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"0.05\"} 1\n",
            "\nhttp_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"10\"} 1\n",
            "\nhttp_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"+Inf\"} 2\n",
            "\nhttp_request_duration_seconds_count{method=\"GET\",route=\"/items/{id}\"} 2\n",
            "# HELP service_info Service name and version.\n# TYPE service_info gauge\n",
            "\nservice_info{service=\"svc\",version=\"1.2.3\"} 1\n",
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds ",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert!(!text.contains(".."), "{text}");
        let sum = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(
                    "http_request_duration_seconds_sum{method=\"GET\",route=\"/items/{id}\"} ",
                )
            })
            .unwrap();
        assert!((sum.parse::<f64>().unwrap() - 20.03).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn custom_counters_are_registered_once() {
        let metrics = Metrics::new("svc", "0.1.0");
        metrics.counter("jobs_total", "Jobs.").inc();
        metrics.counter("jobs_total", "Jobs.").inc_by(2);
        metrics.counter("jobs", "Jobs.").inc();
        let text = metrics.render().unwrap();
        assert!(
            text.contains("\n# HELP jobs_total Jobs.\n# TYPE jobs_total counter\njobs_total 4\n"),
            "{text}"
        );
        assert_eq!(text.matches("# TYPE jobs_total").count(), 1, "{text}");
    }

    #[test]
    fn label_values_are_escaped() {
        let metrics = Metrics::new("svc", "0.1.0");
        metrics.observe_request("GET", "a\"b\\c\nd", 200, Duration::ZERO);
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"route="a\"b\\c\nd",status="200"} 1"#),
            "{text}"
        );
    }
}

//! Prometheus metrics, rendered in the text exposition format (version 0.0.4).
//!
//! Hand-written on purpose: a few dozen lines instead of a dependency, and exactly the format
//! the dronectl conventions ask for. Built in:
//! - `http_requests_total{method,route,status}` (counter; `route` is the matched route
//!   template such as `/items/{id}`, never the raw path, to keep label cardinality bounded;
//!   requests that match no route are counted as `unmatched`),
//! - `http_request_duration_seconds{method,route}` (histogram),
//! - `process_start_time_seconds` and `service_info{service,version}` (gauges).
//!
//! Add your own counters with [`Metrics::counter`]:
//! `let orders = state.metrics.counter("orders_created_total", "Orders created.");`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Content type of the Prometheus text format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds (seconds) of the request duration histogram buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A monotonically increasing counter without labels. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Histogram {
    /// Observations per bucket (not cumulative); the last slot is `+Inf`.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        let slot = BUCKETS
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum += value;
        self.count += 1;
    }
}

type RequestKey = (String, String, u16);
type RouteKey = (String, String);

struct Inner {
    service: &'static str,
    version: &'static str,
    start_time: f64,
    requests: Mutex<BTreeMap<RequestKey, u64>>,
    durations: Mutex<BTreeMap<RouteKey, Histogram>>,
    counters: Mutex<Vec<(&'static str, &'static str, Counter)>>,
}

/// The registry of the service's metrics. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    /// A registry for `service` at `version` (normally the crate name and version).
    pub fn new(service: &'static str, version: &'static str) -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        Self {
            inner: Arc::new(Inner {
                service,
                version,
                start_time,
                requests: Mutex::default(),
                durations: Mutex::default(),
                counters: Mutex::default(),
            }),
        }
    }

    /// Registers (or returns the already registered) counter `name`. By convention counter
    /// names end in `_total`.
    pub fn counter(&self, name: &'static str, help: &'static str) -> Counter {
        let mut counters = lock(&self.inner.counters);
        if let Some((_, _, counter)) = counters.iter().find(|(n, _, _)| *n == name) {
            return counter.clone();
        }
        let counter = Counter::default();
        counters.push((name, help, counter.clone()));
        counter
    }

    /// Records one handled HTTP request.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        *lock(&self.inner.requests)
            .entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
        lock(&self.inner.durations)
            .entry((method.to_owned(), route.to_owned()))
            .or_default()
            .observe(elapsed.as_secs_f64());
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);

        header(
            &mut out,
            "http_requests_total",
            "counter",
            "HTTP requests handled, by method, route template and status code.",
        );
        for ((method, route, status), count) in lock(&self.inner.requests).iter() {
            let _ = writeln!(
                out,
                "http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {count}",
                escape(method),
                escape(route),
            );
        }

        header(
            &mut out,
            "http_request_duration_seconds",
            "histogram",
            "HTTP request latency in seconds, by method and route template.",
        );
        for ((method, route), histogram) in lock(&self.inner.durations).iter() {
            let labels = format!("method=\"{}\",route=\"{}\"", escape(method), escape(route));
            let mut cumulative = 0;
            for (i, count) in histogram.buckets.iter().enumerate() {
                cumulative += count;
                let le = BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), f64::to_string);
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{{labels}}} {}",
                histogram.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {}",
                histogram.count
            );
        }

        for (name, help, counter) in lock(&self.inner.counters).iter() {
            header(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.get());
        }

        header(
            &mut out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch, in seconds.",
        );
        let _ = writeln!(out, "process_start_time_seconds {}", self.inner.start_time);

        header(
            &mut out,
            "service_info",
            "gauge",
            "Service name and version.",
        );
        let _ = writeln!(
            out,
            "service_info{{service=\"{}\",version=\"{}\"}} 1",
            escape(self.inner.service),
            escape(self.inner.version),
        );
        out
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
pub async fn handler(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], metrics.render())
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote and newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
        let text = metrics.render();
        assert!(text.contains("# TYPE http_requests_total counter"));
        assert!(text.contains(
            "http_requests_total{method=\"GET\",route=\"/items/{id}\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/items/{id}\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_count{method=\"GET\",route=\"/items/{id}\"} 2"
        ));
        assert!(text.contains("service_info{service=\"svc\",version=\"1.2.3\"} 1"));
        assert!(text.contains("process_start_time_seconds "));
    }

    #[test]
    fn custom_counters_are_registered_once() {
        let metrics = Metrics::new("svc", "0.1.0");
        metrics.counter("jobs_total", "Jobs.").inc();
        metrics.counter("jobs_total", "Jobs.").inc_by(2);
        assert!(metrics.render().contains("\njobs_total 3\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

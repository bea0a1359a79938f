//! Live counters (atomics, lock-free on the request path) and their two renderings:
//! Prometheus text (`GET /metrics`) and [`Stats`] JSON (`GET /stats`).
//!
//! Counter objects are created (under a mutex) only when a routing table is compiled; the
//! compiled table holds `Arc`s to them so a request never looks anything up by name.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::stats::{
    bucket_index, LatencyHistogram, ServiceStats, Stats, VersionStats, LATENCY_BUCKETS,
};

/// Kinds of failed upstream attempts (`router_upstream_errors_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Could not connect (refused, unreachable, connect timeout). Nothing was sent.
    Connect = 0,
    /// The connection failed after the request was (partly) sent.
    Reset = 1,
    /// No response head within the upstream timeout.
    Timeout = 2,
    /// Anything else (malformed response, request body error...).
    Other = 3,
}

const KIND_NAMES: [&str; 4] = ["connect", "reset", "timeout", "other"];
const CODE_MIN: u16 = 100;
const CODE_SLOTS: usize = 500; // 100..=599

/// Counter shards: a worker thread counts in its own shard (see [`set_shard`]), so the
/// workers never write to the same cache line on the request path; readers add the shards
/// up. More workers than shards share shards (still correct, only contended).
const SHARDS: usize = 4;

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread count in shard `worker % SHARDS` (data-plane worker `worker`).
/// Threads that never call it use shard 0.
pub(crate) fn set_shard(worker: usize) {
    SHARD.with(|s| s.set(worker % SHARDS));
}

/// One value per shard, each on its own cache lines.
#[repr(align(128))]
struct Padded<T>(T);

struct Sharded<T>(Box<[Padded<T>; SHARDS]>);

impl<T> Sharded<T> {
    fn new(f: impl Fn() -> T) -> Self {
        Sharded(Box::new(std::array::from_fn(|_| Padded(f()))))
    }

    /// The calling thread's shard.
    fn local(&self) -> &T {
        &self.0[SHARD.with(std::cell::Cell::get)].0
    }

    fn iter(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|p| &p.0)
    }

    fn sum(&self, f: impl Fn(&T) -> &AtomicU64) -> u64 {
        self.iter()
            .fold(0u64, |n, t| n.wrapping_add(f(t).load(Relaxed)))
    }
}

/// A counter that every worker increments in its own shard.
pub(crate) struct Counter(Sharded<AtomicU64>);

impl Counter {
    fn new() -> Self {
        Counter(Sharded::new(|| AtomicU64::new(0)))
    }

    pub(crate) fn add(&self, n: u64) {
        self.0.local().fetch_add(n, Relaxed);
    }

    /// Wrapping, so that a gauge decremented in another shard than it was incremented in
    /// still adds up.
    pub(crate) fn sub(&self, n: u64) {
        self.0.local().fetch_sub(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.sum(|c| c)
    }
}

pub(crate) struct AtomicHistogram {
    counts: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    /// Sum in nanoseconds.
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    fn new() -> Self {
        AtomicHistogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: std::time::Duration) {
        let i = bucket_index(&LATENCY_BUCKETS, d.as_secs_f64());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }
}

/// Counters of one (service, version), in one shard.
struct VersionShard {
    codes: [AtomicU64; CODE_SLOTS],
    other_codes: AtomicU64,
    errors: [AtomicU64; 4],
    latency: AtomicHistogram,
    /// Mirrored copies answered (also counted in the codes and latency above).
    mirrored: AtomicU64,
    /// Copies not sent: body above the mirror bound, or too many mirrors in flight.
    mirror_skipped: AtomicU64,
}

/// Counters of one (service, version).
pub(crate) struct VersionMetrics(Sharded<VersionShard>);

impl VersionMetrics {
    fn new() -> Self {
        VersionMetrics(Sharded::new(|| VersionShard {
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
            other_codes: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: AtomicHistogram::new(),
            mirrored: AtomicU64::new(0),
            mirror_skipped: AtomicU64::new(0),
        }))
    }

    pub(crate) fn response(&self, code: u16) {
        let s = self.0.local();
        match code.checked_sub(CODE_MIN) {
            Some(i) if (i as usize) < CODE_SLOTS => {
                s.codes[i as usize].fetch_add(1, Relaxed);
            }
            _ => {
                s.other_codes.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn upstream_error(&self, kind: ErrorKind) {
        self.0.local().errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// One request's time to the upstream response head.
    pub(crate) fn observe(&self, d: std::time::Duration) {
        self.0.local().latency.observe(d);
    }

    /// A mirrored copy was answered.
    pub(crate) fn mirrored(&self) {
        self.0.local().mirrored.fetch_add(1, Relaxed);
    }

    /// A mirrored copy was not sent.
    pub(crate) fn mirror_skipped(&self) {
        self.0.local().mirror_skipped.fetch_add(1, Relaxed);
    }

    /// Requests answered per status code (index `code - 100`), and those outside 100..=599.
    fn codes(&self) -> ([u64; CODE_SLOTS], u64) {
        let mut codes = [0u64; CODE_SLOTS];
        for s in self.0.iter() {
            for (n, c) in codes.iter_mut().zip(&s.codes) {
                *n += c.load(Relaxed);
            }
        }
        (codes, self.0.sum(|s| &s.other_codes))
    }

    fn errors(&self, kind: usize) -> u64 {
        self.0.sum(|s| &s.errors[kind])
    }

    fn latency(&self) -> LatencyHistogram {
        let mut counts = vec![0u64; LATENCY_BUCKETS.len() + 1];
        for s in self.0.iter() {
            for (n, c) in counts.iter_mut().zip(&s.latency.counts) {
                *n += c.load(Relaxed);
            }
        }
        LatencyHistogram {
            bounds: LATENCY_BUCKETS.to_vec(),
            count: counts.iter().sum(),
            counts,
            sum: self.0.sum(|s| &s.latency.sum_ns) as f64 / 1e9,
        }
    }

    fn snapshot(&self) -> VersionStats {
        let (codes, other) = self.codes();
        let mut requests = other;
        let mut errors_5xx = 0;
        for (i, n) in codes.iter().enumerate() {
            requests += n;
            if i + CODE_MIN as usize >= 500 {
                errors_5xx += n;
            }
        }
        VersionStats {
            requests,
            errors_5xx,
            upstream_errors: (0..KIND_NAMES.len()).map(|k| self.errors(k)).sum(),
            latency: self.latency(),
            mirrored: self.0.sum(|s| &s.mirrored),
            mirror_skipped: self.0.sum(|s| &s.mirror_skipped),
        }
    }
}

/// In-flight requests of one upstream endpoint, shared by every table that lists it.
pub(crate) struct EndpointState {
    pub(crate) in_flight: Counter,
    pub(crate) served: Counter,
    /// True while the routing table in force does not list the endpoint (upgraded
    /// connections to it close after the grace period).
    removed: tokio::sync::watch::Sender<bool>,
}

impl EndpointState {
    /// Follows whether the endpoint is out of the routing table.
    pub(crate) fn removed(&self) -> tokio::sync::watch::Receiver<bool> {
        self.removed.subscribe()
    }
}

/// Decrements the endpoint's in-flight count when the response (body included) is done or
/// abandoned.
pub(crate) struct InFlightGuard(pub(crate) Arc<EndpointState>);

impl InFlightGuard {
    pub(crate) fn new(ep: &Arc<EndpointState>) -> Self {
        ep.in_flight.add(1);
        ep.served.add(1);
        InFlightGuard(ep.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.sub(1);
    }
}

/// One row of `GET /endpoints`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct EndpointInfo {
    /// `host:port` as written in the config.
    pub endpoint: String,
    /// Requests currently being served by it (until their response body is finished).
    pub in_flight: u64,
    /// Requests sent to it since the router started.
    pub requests: u64,
    /// Whether the current routing table lists it (new requests may go there).
    pub in_config: bool,
}

#[derive(Default)]
struct Registry {
    versions: BTreeMap<(String, String), Arc<VersionMetrics>>,
    unroutable: BTreeMap<String, Arc<AtomicU64>>,
    endpoints: HashMap<String, Arc<EndpointState>>,
}

/// All live counters of one router instance.
#[derive(Default)]
pub(crate) struct Metrics {
    reg: Mutex<Registry>,
    pub(crate) no_route: AtomicU64,
}

impl Metrics {
    pub(crate) fn version(&self, service: &str, version: &str) -> Arc<VersionMetrics> {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        reg.versions
            .entry((service.to_string(), version.to_string()))
            .or_insert_with(|| Arc::new(VersionMetrics::new()))
            .clone()
    }

    pub(crate) fn unroutable(&self, service: &str) -> Arc<AtomicU64> {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        reg.unroutable
            .entry(service.to_string())
            .or_default()
            .clone()
    }

    pub(crate) fn endpoint(&self, addr: &str) -> Arc<EndpointState> {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        reg.endpoints
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(EndpointState {
                    in_flight: Counter::new(),
                    served: Counter::new(),
                    removed: tokio::sync::watch::Sender::new(false),
                })
            })
            .clone()
    }

    /// Marks every endpoint as in or out of the routing table, and forgets those that are
    /// no longer configured and have nothing in flight.
    pub(crate) fn gc_endpoints(&self, keep: &dyn Fn(&str) -> bool) {
        let mut reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        reg.endpoints.retain(|addr, st| {
            let kept = keep(addr);
            let removed = !kept;
            st.removed
                .send_if_modified(|r| std::mem::replace(r, removed) != removed);
            kept || st.in_flight.get() > 0 || Arc::strong_count(st) > 1
        });
    }

    pub(crate) fn endpoints(&self, in_config: &dyn Fn(&str) -> bool) -> Vec<EndpointInfo> {
        let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<EndpointInfo> = reg
            .endpoints
            .iter()
            .map(|(addr, st)| EndpointInfo {
                endpoint: addr.clone(),
                in_flight: st.in_flight.get(),
                requests: st.served.get(),
                in_config: in_config(addr),
            })
            .collect();
        v.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        v
    }

    pub(crate) fn stats(&self, generation: u64) -> Stats {
        let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let mut services: BTreeMap<String, ServiceStats> = BTreeMap::new();
        for ((s, v), m) in &reg.versions {
            services
                .entry(s.clone())
                .or_default()
                .versions
                .insert(v.clone(), m.snapshot());
        }
        for (s, n) in &reg.unroutable {
            services.entry(s.clone()).or_default().unroutable = n.load(Relaxed);
        }
        Stats {
            generation,
            no_route: self.no_route.load(Relaxed),
            services,
        }
    }

    /// Prometheus text exposition format 0.0.4.
    pub(crate) fn prometheus(&self, generation: u64) -> String {
        let reg = self.reg.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP router_config_generation Generation of the routing table in force."
        );
        let _ = writeln!(out, "# TYPE router_config_generation gauge");
        let _ = writeln!(out, "router_config_generation {generation}");
        let _ = writeln!(
            out,
            "# HELP router_no_route_total Requests that matched no service (404)."
        );
        let _ = writeln!(out, "# TYPE router_no_route_total counter");
        let _ = writeln!(out, "router_no_route_total {}", self.no_route.load(Relaxed));

        let _ = writeln!(
            out,
            "# HELP router_unroutable_total Requests for a service with no routable version (503)."
        );
        let _ = writeln!(out, "# TYPE router_unroutable_total counter");
        for (s, n) in &reg.unroutable {
            let _ = writeln!(
                out,
                "router_unroutable_total{{service=\"{}\"}} {}",
                esc(s),
                n.load(Relaxed)
            );
        }

        let _ = writeln!(
            out,
            "# HELP router_requests_total Requests answered, by service, version and status code."
        );
        let _ = writeln!(out, "# TYPE router_requests_total counter");
        for ((s, v), m) in &reg.versions {
            let (s, v) = (esc(s), esc(v));
            let (codes, other) = m.codes();
            for (i, &n) in codes.iter().enumerate() {
                if n > 0 {
                    let code = i + CODE_MIN as usize;
                    let _ = writeln!(
                        out,
                        "router_requests_total{{service=\"{s}\",version=\"{v}\",code=\"{code}\"}} {n}"
                    );
                }
            }
            if other > 0 {
                let _ = writeln!(
                    out,
                    "router_requests_total{{service=\"{s}\",version=\"{v}\",code=\"other\"}} {other}"
                );
            }
        }

        let _ = writeln!(out, "# HELP router_upstream_errors_total Failed upstream attempts, by kind (connect, reset, timeout, other).");
        let _ = writeln!(out, "# TYPE router_upstream_errors_total counter");
        for ((s, v), m) in &reg.versions {
            let (s, v) = (esc(s), esc(v));
            for (k, name) in KIND_NAMES.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "router_upstream_errors_total{{service=\"{s}\",version=\"{v}\",kind=\"{name}\"}} {}",
                    m.errors(k)
                );
            }
        }

        let _ = writeln!(out, "# HELP router_request_duration_seconds Time from request head to upstream response head.");
        let _ = writeln!(out, "# TYPE router_request_duration_seconds histogram");
        for ((s, v), m) in &reg.versions {
            let (s, v) = (esc(s), esc(v));
            let h = m.latency();
            let mut cum = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cum += c;
                let le = match h.bounds.get(i) {
                    Some(b) => format!("{b}"),
                    None => "+Inf".to_string(),
                };
                let _ = writeln!(
                    out,
                    "router_request_duration_seconds_bucket{{service=\"{s}\",version=\"{v}\",le=\"{le}\"}} {cum}"
                );
            }
            let _ = writeln!(
                out,
                "router_request_duration_seconds_sum{{service=\"{s}\",version=\"{v}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "router_request_duration_seconds_count{{service=\"{s}\",version=\"{v}\"}} {}",
                h.count
            );
        }

        let _ = writeln!(
            out,
            "# HELP router_endpoint_in_flight Requests in flight per upstream endpoint."
        );
        let _ = writeln!(out, "# TYPE router_endpoint_in_flight gauge");
        let mut eps: Vec<_> = reg.endpoints.iter().collect();
        eps.sort_by(|a, b| a.0.cmp(b.0));
        for (addr, st) in eps {
            let _ = writeln!(
                out,
                "router_endpoint_in_flight{{endpoint=\"{}\"}} {}",
                esc(addr),
                st.in_flight.get()
            );
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_codes_errors_and_latency() {
        let m = Metrics::default();
        let v = m.version("orders", "v1");
        v.response(200);
        v.response(200);
        v.response(503);
        v.response(999);
        v.upstream_error(ErrorKind::Connect);
        v.observe(Duration::from_millis(4));
        let s = m.stats(7);
        let vs = s.version("orders", "v1").unwrap();
        assert_eq!(vs.requests, 4);
        assert_eq!(vs.errors_5xx, 1);
        assert_eq!(vs.upstream_errors, 1);
        assert_eq!(vs.latency.count, 1);
        assert_eq!(s.generation, 7);

        let text = m.prometheus(7);
        assert!(
            text.contains(r#"router_requests_total{service="orders",version="v1",code="200"} 2"#)
        );
        assert!(
            text.contains(r#"router_requests_total{service="orders",version="v1",code="503"} 1"#)
        );
        assert!(text.contains(
            r#"router_upstream_errors_total{service="orders",version="v1",kind="connect"} 1"#
        ));
        assert!(text.contains(
            r#"router_request_duration_seconds_bucket{service="orders",version="v1",le="0.005"} 1"#
        ));
        assert!(text.contains(
            r#"router_request_duration_seconds_bucket{service="orders",version="v1",le="+Inf"} 1"#
        ));
        assert!(text
            .contains(r#"router_request_duration_seconds_count{service="orders",version="v1"} 1"#));
    }

    #[test]
    fn endpoint_registry_tracks_in_flight_and_gc() {
        let m = Metrics::default();
        let ep = m.endpoint("10.0.0.1:80");
        let g = InFlightGuard::new(&ep);
        drop(ep);
        let rows = m.endpoints(&|_| false);
        assert_eq!(rows[0].in_flight, 1);
        m.gc_endpoints(&|_| false);
        assert_eq!(m.endpoints(&|_| false).len(), 1, "in flight: kept");
        drop(g);
        m.gc_endpoints(&|_| false);
        assert!(m.endpoints(&|_| false).is_empty());
    }
}

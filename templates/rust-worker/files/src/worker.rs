//! The background loop.
//!
//! Every `WORK_INTERVAL_MS` the loop runs one iteration of a [`Job`]; replace [`ExampleJob`]
//! with your own work (poll a queue, call a service, compact data, ...). Each iteration:
//! - runs with a fresh correlation id, so its log lines and outgoing calls
//!   ([`crate::client::HttpClient`]) can be traced,
//! - is counted in `worker_iterations_total`, failures also in `worker_failures_total`,
//! - proves the loop is alive: if no iteration makes progress for `WORK_INTERVAL_MS` +
//!   `WORK_STALL_TIMEOUT_MS`, `/readyz` answers 503 ("worker: stalled ...").
//!
//! On SIGTERM the loop finishes the iteration in progress, starts no new one, and returns.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use crate::metrics::Counter;
use crate::telemetry::{new_correlation_id, with_correlation_id};
use crate::{AppState, BoxError};

/// One unit of background work, run once per interval.
pub trait Job: Send + 'static {
    /// Runs iteration number `iteration` (starting at 1). An error is logged and counted; the
    /// loop carries on with the next iteration.
    fn run_once(&mut self, iteration: u64) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Example job: pretends to process a small batch. Replace it with real work, and add the
/// resources it needs as fields (for example a clone of the [`AppState`] for `state.http`
/// and `state.config`).
pub struct ExampleJob {
    processed: Counter,
}

impl ExampleJob {
    pub fn new(state: &AppState) -> Self {
        Self {
            processed: state.metrics.counter(
                "example_items_processed_total",
                "Items processed by the example job.",
            ),
        }
    }
}

impl Job for ExampleJob {
    async fn run_once(&mut self, iteration: u64) -> Result<(), BoxError> {
        // Real work goes here, for example fetching from a dependency declared in
        // dronectl.yaml (the correlation id of this iteration is forwarded):
        //     let base = self.state.config.dependency_url("orders").ok_or("ORDERS_URL not set")?;
        //     let batch: Vec<Order> = self.state.http.get(format!("{base}/api/orders/pending"))
        //         .send().await?.error_for_status()?.json().await?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.processed.inc();
        tracing::debug!(iteration, "example batch processed");
        Ok(())
    }
}

/// Records when the loop last made progress.
#[derive(Clone)]
struct Heartbeat {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::default(),
        }
    }

    fn beat(&self) {
        let now = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn since_last(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The loop that drives a [`Job`].
pub struct Worker {
    interval: Duration,
    iterations: Counter,
    failures: Counter,
    heartbeat: Heartbeat,
}

impl Worker {
    /// Registers the worker's metrics and its readiness check ("stalled") on `state`.
    pub fn new(state: &AppState) -> Self {
        let interval = state.config.work_interval;
        let stall_after = interval + state.config.work_stall_timeout;
        let heartbeat = Heartbeat::new();
        let check = heartbeat.clone();
        state.health.add_check("worker", move || {
            let idle = check.since_last();
            if idle > stall_after {
                Err(format!("stalled: no progress for {}ms", idle.as_millis()))
            } else {
                Ok(())
            }
        });
        Self {
            interval,
            iterations: state.metrics.counter(
                "worker_iterations_total",
                "Work iterations completed (including failed ones).",
            ),
            failures: state
                .metrics
                .counter("worker_failures_total", "Work iterations that failed."),
            heartbeat,
        }
    }

    /// Runs `job` every interval until `stop` turns true (or its sender is dropped).
    pub async fn run<J: Job>(self, mut job: J, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut iteration = 0;
        tracing::info!(
            interval_ms = self.interval.as_millis() as u64,
            "worker started"
        );
        loop {
            self.heartbeat.beat();
            tokio::select! {
                biased;
                _ = stop.wait_for(|stopped| *stopped) => break,
                _ = ticker.tick() => {}
            }
            iteration += 1;
            self.heartbeat.beat();

            let correlation_id = new_correlation_id();
            let span =
                tracing::info_span!("iteration", iteration, correlation_id = %correlation_id);
            let result = with_correlation_id(correlation_id, job.run_once(iteration))
                .instrument(span.clone())
                .await;
            self.iterations.inc();
            if let Err(err) = result {
                self.failures.inc();
                span.in_scope(|| tracing::warn!(error = %err, "iteration failed"));
            }
        }
        tracing::info!(iterations = iteration, "worker stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    struct Flaky;

    impl Job for Flaky {
        async fn run_once(&mut self, iteration: u64) -> Result<(), BoxError> {
            if iteration % 2 == 1 {
                Err("odd iterations fail".into())
            } else {
                Ok(())
            }
        }
    }

    fn state(interval_ms: u64, stall_ms: u64) -> AppState {
        let mut config = Config::from_lookup(|_| None).unwrap();
        config.work_interval = Duration::from_millis(interval_ms);
        config.work_stall_timeout = Duration::from_millis(stall_ms);
        let state = AppState::new(config).unwrap();
        state.health.set_ready();
        state
    }

    #[tokio::test]
    async fn counts_iterations_and_failures_and_stops_on_request() {
        let state = state(5, 1000);
        let worker = Worker::new(&state);
        let (iterations, failures) = (worker.iterations.clone(), worker.failures.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(worker.run(Flaky, stop_rx));
        while iterations.get() < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("worker did not stop")
            .unwrap();
        let done = iterations.get();
        assert!(done >= 4);
        assert_eq!(failures.get(), done.div_ceil(2));
    }

    #[test]
    fn readiness_fails_when_the_loop_stalls() {
        let state = state(1, 1);
        let worker = Worker::new(&state);
        worker.heartbeat.beat();
        assert_eq!(state.health.readiness(), Ok(()));
        std::thread::sleep(Duration::from_millis(20));
        let reason = state.health.readiness().unwrap_err();
        assert!(reason.starts_with("worker: stalled"), "{reason}");
    }
}

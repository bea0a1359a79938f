//! The worker as a library: [`serve`] runs the background loop of [`worker`] next to a small
//! HTTP server for probes and metrics, until shutdown. `main.rs` only wires [`run`] to the
//! process (environment, port, signals), and the tests in `tests/` run it in process.

pub mod client;
pub mod config;
pub mod debug;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod worker;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::get;
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::client::HttpClient;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::worker::{ExampleJob, Job, Worker};

/// Error type of start-up, serving and jobs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// State shared by the HTTP handlers and the job. Add your own shared resources here.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub health: Health,
    pub metrics: Metrics,
    /// Client for calls to other services; forwards the correlation id.
    pub http: HttpClient,
}

impl AppState {
    pub fn new(config: Config) -> Result<Self, BoxError> {
        Ok(Self {
            http: HttpClient::new(config.http_client_timeout)?,
            config: Arc::new(config),
            health: Health::new(),
            metrics: Metrics::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        })
    }
}

impl FromRef<AppState> for Health {
    fn from_ref(state: &AppState) -> Self {
        state.health.clone()
    }
}

impl FromRef<AppState> for Metrics {
    fn from_ref(state: &AppState) -> Self {
        state.metrics.clone()
    }
}

/// The HTTP surface of the worker: probes, metrics and (optionally) debug endpoints.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::handler));
    if state.config.enable_debug_endpoints {
        router = router.merge(debug::routes());
    }
    instrument(router.with_state(state.clone()), &state)
}

/// Adds the standard middleware to `router`: correlation id and request logging (outermost),
/// then metrics. Apply it after all routes have been added.
pub fn instrument(router: Router, state: &AppState) -> Router {
    router
        .layer(middleware::from_fn_with_state(
            state.metrics.clone(),
            metrics::track,
        ))
        .layer(middleware::from_fn(telemetry::correlation_id))
}

/// Creates the state from `config` and runs the example job until `shutdown` resolves.
pub async fn run<F>(listener: TcpListener, config: Config, shutdown: F) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let state = AppState::new(config)?;
    let job = ExampleJob::new(&state);
    serve(listener, state, job, shutdown).await
}

/// Runs `job` in the background loop and serves [`app`] on `listener` until `shutdown`
/// resolves. Then: readiness fails and the loop is told to stop at once (the current
/// iteration finishes, no new one starts), the listener closes after `SHUTDOWN_DELAY_MS`,
/// and the function returns once both the HTTP server and the loop are done (waiting at most
/// `SHUTDOWN_TIMEOUT_SECS`).
pub async fn serve<J, F>(
    listener: TcpListener,
    state: AppState,
    job: J,
    shutdown: F,
) -> Result<(), BoxError>
where
    J: Job,
    F: Future<Output = ()> + Send + 'static,
{
    let health = state.health.clone();
    let delay = state.config.shutdown_delay;
    let timeout = state.config.shutdown_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (closing_tx, closing_rx) = oneshot::channel();

    let worker = Worker::new(&state);
    let worker_task = tokio::spawn(worker.run(job, stop_rx));

    let signal = async move {
        shutdown.await;
        health.start_draining();
        let _ = stop_tx.send(true);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: readiness now fails, the worker stops after its current iteration"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("closing the listener");
        let _ = closing_tx.send(());
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(signal);

    state.health.set_ready();
    let drain = async {
        server.await?;
        worker_task.await?;
        Ok::<(), BoxError>(())
    };
    tokio::select! {
        result = drain => result?,
        () = deadline(closing_rx, timeout) => {
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "drain timed out, abandoning the current iteration"
            );
        }
    }
    Ok(())
}

/// Resolves `timeout` after the listener was closed; never if it was not.
async fn deadline(closing: oneshot::Receiver<()>, timeout: Duration) {
    if closing.await.is_err() {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(timeout).await;
}

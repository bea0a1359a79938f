//! The service as a library: [`app`] builds the router, [`run`] serves it until shutdown.
//! `main.rs` only wires these to the process (environment, port, signals), and the tests in
//! `tests/` run the whole service in process on a random port.

pub mod api;
pub mod client;
pub mod config;
pub mod debug;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::get;
use axum::{middleware, Router};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::client::HttpClient;
use crate::config::Config;
use crate::health::Health;
use crate::metrics::Metrics;

/// Error type of start-up and serving.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// State shared by all handlers. Add your own shared resources (database pools, caches) here.
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

/// The complete router: operational endpoints, the service API and the standard middleware.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(metrics::handler))
        .merge(api::routes());
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

/// Creates the state from `config` and serves until `shutdown` resolves, then drains.
pub async fn run<F>(listener: TcpListener, config: Config, shutdown: F) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    serve(listener, AppState::new(config)?, shutdown).await
}

/// Serves [`app`] on `listener` until `shutdown` resolves, then shuts down gracefully:
/// readiness fails at once, the listener closes after `SHUTDOWN_DELAY_MS`, in-flight requests
/// finish (for at most `SHUTDOWN_TIMEOUT_SECS`), and the function returns.
pub async fn serve<F>(listener: TcpListener, state: AppState, shutdown: F) -> Result<(), BoxError>
where
    F: Future<Output = ()> + Send + 'static,
{
    let health = state.health.clone();
    let delay = state.config.shutdown_delay;
    let timeout = state.config.shutdown_timeout;
    let (closing_tx, closing_rx) = oneshot::channel();

    let signal = async move {
        shutdown.await;
        health.start_draining();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: readiness now fails"
        );
        tokio::time::sleep(delay).await;
        tracing::info!("closing the listener, waiting for in-flight requests");
        let _ = closing_tx.send(());
    };
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown(signal);

    state.health.set_ready();
    tokio::select! {
        result = async { server.await } => result?,
        () = deadline(closing_rx, timeout) => {
            tracing::warn!(
                timeout_secs = timeout.as_secs(),
                "drain timed out, abandoning in-flight requests"
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

//! The HTTP runtime every service shares: correlation-id + metrics + access-log
//! middleware, `/healthz`, `/readyz`, `/metrics`, body limits and graceful
//! shutdown on SIGTERM / SIGINT.
use crate::metrics::Metrics;
use crate::telemetry;
use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// Process-wide runtime state (readiness, metrics, shutdown signal).
pub struct Runtime {
    pub service: &'static str,
    pub version: &'static str,
    pub metrics: Metrics,
    draining: AtomicBool,
    problem: Mutex<Option<String>>,
    shutdown_tx: watch::Sender<bool>,
}

static RUNTIME: OnceLock<Arc<Runtime>> = OnceLock::new();

/// Initialise logging and the runtime. Call once at the start of `main`.
pub fn init(service: &'static str, version: &'static str) -> Arc<Runtime> {
    telemetry::init_logging();
    RUNTIME
        .get_or_init(|| {
            let (shutdown_tx, _) = watch::channel(false);
            Arc::new(Runtime {
                service,
                version,
                metrics: Metrics::new(service, version),
                draining: AtomicBool::new(false),
                problem: Mutex::new(Some("starting".into())),
                shutdown_tx,
            })
        })
        .clone()
}

/// The runtime (initialising a default one for unit tests).
pub fn runtime() -> Arc<Runtime> {
    RUNTIME.get().cloned().unwrap_or_else(|| init("test", "0.0.0"))
}

impl Runtime {
    /// `None` = every dependency is fine; `Some(reason)` = not ready.
    pub fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap() = problem;
    }
    /// Reason the service is not ready, if any.
    pub fn not_ready_reason(&self) -> Option<String> {
        if self.draining.load(Ordering::SeqCst) {
            return Some("draining".into());
        }
        self.problem.lock().unwrap().clone()
    }
    /// A receiver that flips to `true` when shutdown starts.
    pub fn shutdown_rx(&self) -> watch::Receiver<bool> {
        self.shutdown_tx.subscribe()
    }
    pub fn is_shutting_down(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
    fn begin_shutdown(&self) {
        self.draining.store(true, Ordering::SeqCst);
        let _ = self.shutdown_tx.send(true);
    }
}

/// Spawn a task that runs `check` every `every` and updates readiness.
pub fn spawn_readiness_probe<F, Fut>(every: Duration, check: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let rt = runtime();
    tokio::spawn(async move {
        loop {
            let res = tokio::time::timeout(Duration::from_secs(2), check()).await;
            let problem = match res {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("dependency check timed out".to_string()),
            };
            rt.set_problem(problem);
            tokio::time::sleep(every).await;
        }
    });
}

/// Readiness check that PINGs Redis.
pub fn spawn_redis_readiness(conn: redis::aio::ConnectionManager) {
    spawn_readiness_probe(Duration::from_millis(1000), move || {
        let mut c = conn.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
                .map_err(|e| format!("redis: {e}"))
        }
    });
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz() -> Response {
    match runtime().not_ready_reason() {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Some(r) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not ready", "reason": r})),
        )
            .into_response(),
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        runtime().metrics.render(),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct SleepQuery {
    ms: Option<u64>,
}

async fn debug_sleep(Query(q): Query<SleepQuery>) -> Json<serde_json::Value> {
    let ms = q.ms.unwrap_or(0).min(600_000);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Json(json!({"slept_ms": ms}))
}

/// Correlation id, metrics and access log for every request.
async fn observe(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let cid = telemetry::sanitize_correlation_id(req.headers().get("x-correlation-id").and_then(|v| v.to_str().ok()));
    let span = tracing::info_span!("request", correlation_id = %cid, method = %method, route = %route);
    let mut resp = telemetry::with_correlation_id(cid.clone(), next.run(req).instrument(span.clone())).await;
    let status = resp.status().as_u16();
    let secs = start.elapsed().as_secs_f64();
    if let Ok(v) = HeaderValue::from_str(&cid) {
        resp.headers_mut().insert("x-correlation-id", v);
    }
    runtime().metrics.observe_http(method.as_str(), &route, status, secs);
    let _e = span.enter();
    if status >= 500 {
        tracing::warn!(correlation_id = %cid, status, latency_ms = secs * 1000.0, "request");
    } else if !route.starts_with("/healthz") && !route.starts_with("/readyz") && !route.starts_with("/metrics") {
        tracing::info!(correlation_id = %cid, status, latency_ms = secs * 1000.0, "request");
    }
    resp
}

/// Fault injection for rollout drills: with `CHAOS_ERROR_RATE=0.3`, 30% of the requests
/// (never the health, readiness and metrics probes) are answered 503 before reaching the
/// handler. Off (0) by default. Deterministic: exactly that fraction, spread evenly.
async fn chaos(req: Request, next: Next) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let rate = *RATE.get_or_init(|| crate::config::env_or::<f64>("CHAOS_ERROR_RATE", 0.0).clamp(0.0, 1.0));
    let path = req.uri().path();
    let probe = path == "/healthz" || path == "/readyz" || path == "/metrics";
    if rate > 0.0 && !probe {
        let n = COUNT.fetch_add(1, Ordering::Relaxed) as f64;
        if ((n + 1.0) * rate).floor() > (n * rate).floor() {
            let body = Json(json!({"error": "injected fault (CHAOS_ERROR_RATE)"}));
            return (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        }
    }
    next.run(req).await
}

/// Add the operational routes and middleware to a service router.
pub fn with_runtime(app: Router) -> Router {
    let mut ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics));
    if crate::config::env_flag("ENABLE_DEBUG_ENDPOINTS") {
        ops = ops.route("/debug/sleep", get(debug_sleep));
    }
    let max_body: usize = crate::config::env_or("MAX_BODY_BYTES", 65536);
    let max_batch_body = crate::batch::max_batch_bytes();
    let service = app
        .merge(ops)
        .layer(middleware::from_fn(chaos))
        .layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(max_body));
    // The batch route runs each item through `service` (so fault injection and
    // the access log apply per item, not to the batch as a whole).
    let inner = service.clone();
    let batch = Router::new()
        .route(
            crate::batch::BATCH_PATH,
            axum::routing::post(
                move |body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>| {
                    crate::batch::serve_batch(inner.clone(), max_batch_body, body)
                },
            ),
        )
        .layer(middleware::from_fn(observe))
        .layer(DefaultBodyLimit::max(max_batch_body));
    service.merge(batch)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Serve `app` (plus the operational routes) on `0.0.0.0:$PORT` until SIGTERM /
/// SIGINT, then drain in-flight requests bounded by `SHUTDOWN_TIMEOUT_SECS`.
pub async fn serve(app: Router, default_port: u16) -> std::io::Result<()> {
    let rt = runtime();
    let port: u16 = crate::config::env_or("PORT", default_port);
    let host = crate::config::env_str("BIND_ADDR", "0.0.0.0");
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    tracing::info!(port, service = rt.service, version = rt.version, "listening");
    let delay = Duration::from_millis(crate::config::env_or("SHUTDOWN_DELAY_MS", 0));
    let timeout = Duration::from_secs(crate::config::env_or("SHUTDOWN_TIMEOUT_SECS", 30));
    let router = with_runtime(app);
    let rt2 = rt.clone();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received; draining");
        rt2.begin_shutdown();
        tokio::time::sleep(delay).await;
    });
    let mut rx = rt.shutdown_rx();
    let deadline = async move {
        let _ = rx.wait_for(|v| *v).await;
        tokio::time::sleep(delay + timeout).await;
    };
    tokio::select! {
        r = std::future::IntoFuture::into_future(server) => r?,
        _ = deadline => tracing::warn!("drain timeout reached; exiting"),
    }
    tracing::info!("stopped");
    Ok(())
}

//! Logging and correlation ids.
//!
//! Logs are JSON, one object per line on stdout. Every request runs inside a `request` span
//! that carries its `correlation_id`, so every log line written while handling it includes
//! the id. The id comes from the `x-correlation-id` request header, or is generated (UUID v4)
//! when absent; it is echoed in the response and forwarded by [`crate::client::HttpClient`]
//! on outgoing calls.

use std::future::Future;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

/// Header that carries the correlation id between services.
pub const CORRELATION_ID_HEADER: &str = "x-correlation-id";

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// Installs the global JSON logger. The level comes from `RUST_LOG` (full filter syntax) or
/// else `LOG_LEVEL` (default `info`). Calling it twice is harmless.
pub fn init() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .or_else(|| std::env::var("LOG_LEVEL").ok())
        .unwrap_or_else(|| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true)
        .try_init();
}

/// The correlation id of the request (or worker iteration) being handled by this task.
///
/// Task-locals do not cross `tokio::spawn`: to keep the id in a spawned task, wrap its
/// future with [`with_correlation_id`].
pub fn current_correlation_id() -> Option<String> {
    CORRELATION_ID.try_with(Clone::clone).ok()
}

/// Runs `future` with `id` as its correlation id.
pub async fn with_correlation_id<F: Future>(id: String, future: F) -> F::Output {
    CORRELATION_ID.scope(id, future).await
}

/// A new random correlation id.
pub fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Accepts an incoming id only if it is a reasonable token (it ends up in logs and headers).
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Middleware: takes or generates the correlation id, opens the request span, logs one line
/// per request and echoes the id in the response.
pub async fn correlation_id(request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(CORRELATION_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| valid_id(id))
        .map(str::to_owned)
        .unwrap_or_else(new_correlation_id);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let span = tracing::info_span!("request", correlation_id = %id, %method, %path);

    let started = Instant::now();
    let mut response = with_correlation_id(id.clone(), next.run(request))
        .instrument(span.clone())
        .await;
    let status = response.status().as_u16();
    // Milliseconds with microsecond precision.
    let latency_ms = started.elapsed().as_micros() as f64 / 1000.0;

    span.in_scope(|| {
        // Probes and scrapes are frequent: log them only at debug level.
        if matches!(route.as_deref(), Some("/healthz" | "/readyz" | "/metrics")) {
            tracing::debug!(status, latency_ms, "request completed");
        } else {
            tracing::info!(status, latency_ms, "request completed");
        }
    });

    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(CORRELATION_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_usual_ids_and_rejects_odd_ones() {
        assert!(valid_id("3f2b8c1e-0d7a-4c1b-9f4e-2a6d5b7c8e9f"));
        assert!(valid_id("req_42.retry:1"));
        assert!(!valid_id(""));
        assert!(!valid_id("has space"));
        assert!(!valid_id(&"x".repeat(129)));
    }

    #[tokio::test]
    async fn correlation_id_is_visible_inside_the_scope_only() {
        assert_eq!(current_correlation_id(), None);
        let seen = with_correlation_id("abc".into(), async { current_correlation_id() }).await;
        assert_eq!(seen.as_deref(), Some("abc"));
    }

    #[test]
    fn generated_ids_are_uuids() {
        let id = new_correlation_id();
        assert!(uuid::Uuid::parse_str(&id).is_ok());
        assert!(valid_id(&id));
    }
}

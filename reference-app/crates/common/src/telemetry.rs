//! JSON logs and the correlation id carried by each request / message.
use std::future::Future;
use tracing_subscriber::EnvFilter;

tokio::task_local! {
    static CORRELATION_ID: String;
}

/// Initialise one-JSON-object-per-line logs on stdout. Level from `LOG_LEVEL`
/// (default `info`), `RUST_LOG` honoured when set.
pub fn init_logging() {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| {
            EnvFilter::try_new(crate::config::env_str("LOG_LEVEL", "info")).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .try_init();
}

/// A new correlation id (UUID v4).
pub fn new_correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Accept a client-provided correlation id only if it is short printable ASCII.
pub fn sanitize_correlation_id(raw: Option<&str>) -> String {
    match raw {
        Some(s) if !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()) => s.to_string(),
        _ => new_correlation_id(),
    }
}

/// The correlation id of the request / message being handled, if any.
pub fn current_correlation_id() -> Option<String> {
    CORRELATION_ID.try_with(|c| c.clone()).ok()
}

/// Run `fut` with `id` as the current correlation id.
pub async fn with_correlation_id<F: Future>(id: String, fut: F) -> F::Output {
    CORRELATION_ID.scope(id, fut).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_rejects_garbage() {
        assert_eq!(sanitize_correlation_id(Some("abc-1")), "abc-1");
        assert_ne!(sanitize_correlation_id(Some("a b")), "a b");
        assert_eq!(sanitize_correlation_id(None).len(), 36);
    }

    #[tokio::test]
    async fn scope_is_visible() {
        assert!(current_correlation_id().is_none());
        let got = with_correlation_id("cid-1".into(), async { current_correlation_id() }).await;
        assert_eq!(got.as_deref(), Some("cid-1"));
    }
}

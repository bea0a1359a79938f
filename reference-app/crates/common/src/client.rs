//! HTTP client wrapper that propagates `x-correlation-id`.
use crate::telemetry::current_correlation_id;
use reqwest::{Method, RequestBuilder};
use std::time::Duration;

/// A pooled HTTP client; every request carries the current correlation id.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Self {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(512)
            .tcp_nodelay(true)
            .build()
            .expect("http client");
        Self { inner }
    }

    /// The underlying client (no correlation id added).
    pub fn raw(&self) -> &reqwest::Client {
        &self.inner
    }

    /// Start a request; adds `x-correlation-id` from the current task, if any.
    pub fn request(&self, method: Method, url: &str) -> RequestBuilder {
        let b = self.inner.request(method, url);
        match current_correlation_id() {
            Some(c) => b.header("x-correlation-id", c),
            None => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::with_correlation_id;

    #[tokio::test]
    async fn propagates_correlation_id() {
        let c = HttpClient::new(Duration::from_secs(1));
        let req = with_correlation_id("abc".into(), async {
            c.request(Method::GET, "http://127.0.0.1:1/").build().unwrap()
        })
        .await;
        assert_eq!(req.headers().get("x-correlation-id").unwrap(), "abc");
        let req = c.request(Method::GET, "http://127.0.0.1:1/").build().unwrap();
        assert!(req.headers().get("x-correlation-id").is_none());
    }
}

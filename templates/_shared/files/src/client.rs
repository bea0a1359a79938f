//! Outgoing HTTP calls.
//!
//! [`HttpClient`] wraps a shared [`reqwest::Client`] (connection pool, rustls for HTTPS, no
//! OpenSSL) and adds the `x-correlation-id` of the request being handled to every call, so
//! a request can be followed through all the services it touches. Use it for every call to
//! another service:
//!
//! ```text
//! let base = state.config.dependency_url("account").unwrap_or("http://account:8080");
//! let account: Account = state
//!     .http
//!     .get(format!("{base}/api/accounts/{id}"))
//!     .send()
//!     .await?
//!     .error_for_status()?
//!     .json()
//!     .await?;
//! ```

use std::time::Duration;

use reqwest::{IntoUrl, Method, RequestBuilder};

use crate::telemetry::{current_correlation_id, CORRELATION_ID_HEADER};

/// HTTP client that propagates the correlation id. Cheap to clone (shared pool).
#[derive(Clone, Debug)]
pub struct HttpClient {
    inner: reqwest::Client,
}

impl HttpClient {
    /// A client whose requests time out after `timeout` in total.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let inner = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!(
                env!("CARGO_PKG_NAME"),
                "/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Self { inner })
    }

    /// Starts a request; the current correlation id (if any) is added as a header.
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        let builder = self.inner.request(method, url);
        match current_correlation_id() {
            Some(id) => builder.header(CORRELATION_ID_HEADER, id),
            None => builder,
        }
    }

    pub fn get(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::GET, url)
    }

    pub fn post(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::POST, url)
    }

    pub fn put(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::PUT, url)
    }

    pub fn delete(&self, url: impl IntoUrl) -> RequestBuilder {
        self.request(Method::DELETE, url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::with_correlation_id;

    fn header_of(builder: RequestBuilder) -> Option<String> {
        let request = builder.build().unwrap();
        request
            .headers()
            .get(CORRELATION_ID_HEADER)
            .map(|value| value.to_str().unwrap().to_owned())
    }

    #[tokio::test]
    async fn adds_the_current_correlation_id() {
        let client = HttpClient::new(Duration::from_secs(1)).unwrap();
        assert_eq!(header_of(client.get("http://example.invalid/")), None);
        let inside = with_correlation_id("abc-123".into(), async {
            header_of(client.post("http://example.invalid/"))
        })
        .await;
        assert_eq!(inside.as_deref(), Some("abc-123"));
    }
}

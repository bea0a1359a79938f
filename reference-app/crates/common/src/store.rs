//! Redis connection helpers. Every service keeps its data under its own key
//! prefix (`<service>:`), so no two services share a schema.
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Connect to `REDIS_URL`, retrying until Redis answers (services may start
/// before the broker).
pub async fn connect() -> (redis::Client, ConnectionManager) {
    let url = crate::config::dependency_url("redis", "redis://127.0.0.1:6379");
    let client = redis::Client::open(url.as_str()).expect("valid REDIS_URL");
    let cfg = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(5))
        .set_number_of_retries(3)
        .set_max_delay(1000);
    loop {
        match client.get_connection_manager_with_config(cfg.clone()).await {
            Ok(m) => return (client, m),
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

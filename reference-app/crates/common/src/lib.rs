//! Shared runtime for every drone-delivery service: configuration from the
//! environment, JSON logs with correlation ids, Prometheus metrics, health and
//! readiness, graceful shutdown, an HTTP client that propagates
//! `x-correlation-id`, resilience helpers (retry, circuit breaker, bulkhead),
//! Redis Streams consumers and the shared domain types.

pub mod batch;
pub mod client;
pub mod config;
pub mod domain;
pub mod error;
pub mod jackson;
pub mod metrics;
pub mod resilience;
pub mod server;
pub mod store;
pub mod streams;
pub mod telemetry;

pub use error::ApiError;

/// Every service allocates through mimalloc: many small, short-lived
/// allocations on several threads (requests, JSON, Redis replies) are where
/// glibc's allocator spent a sixth of the pipeline's CPU time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stream names (the broker's topology). Each stream is written by one owner.
pub mod topics {
    /// ingestion -> workflow: create / reschedule / cancel requests.
    pub const REQUESTS: &str = "ingestion:requests";
    /// workflow -> supervisor: failed workflows to compensate.
    pub const FAILED: &str = "workflow:failed";
    /// dronescheduler -> delivery: drone status events.
    pub const DRONE_EVENTS: &str = "dronescheduler:events";
    /// delivery -> deliveryhistory: delivery tracking events.
    pub const TRACKING_EVENTS: &str = "delivery:events";
}

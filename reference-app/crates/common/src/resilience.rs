//! Retry with exponential backoff and jitter, a circuit breaker and a bulkhead,
//! combined in [`Downstream`]: one per downstream service.
use crate::batch::Coalescer;
use crate::client::HttpClient;
use crate::server::runtime;
use reqwest::Method;
use serde_json::Value;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Cheap pseudo-random number in [0, 1) (no `rand` dependency).
pub fn jitter() -> f64 {
    let b = uuid::Uuid::new_v4().as_u128();
    ((b >> 64) as u64 >> 11) as f64 / (1u64 << 53) as f64
}

/// Retry policy: `max_attempts` tries, exponential backoff with full jitter.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_env() -> Self {
        Self {
            max_attempts: crate::config::env_or("RETRY_MAX_ATTEMPTS", 4),
            base: Duration::from_millis(crate::config::env_or("RETRY_BASE_MS", 50)),
            max: Duration::from_millis(crate::config::env_or("RETRY_MAX_MS", 2000)),
        }
    }
    /// Backoff before attempt `attempt` (1-based retry number).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.min(16));
        let cap = exp.min(self.max);
        // "equal jitter": half fixed, half random, so backoff never collapses to 0.
        cap / 2 + cap.mul_f64(jitter() / 2.0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

struct BreakerInner {
    state: BreakerState,
    failures: u32,
    opened_at: Instant,
    trial_in_flight: bool,
}

/// Consecutive-failure circuit breaker with a half-open trial call.
pub struct CircuitBreaker {
    inner: Mutex<BreakerInner>,
    threshold: u32,
    cooldown: Duration,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            inner: Mutex::new(BreakerInner {
                state: BreakerState::Closed,
                failures: 0,
                opened_at: Instant::now(),
                trial_in_flight: false,
            }),
            threshold: threshold.max(1),
            cooldown,
        }
    }
    pub fn state(&self) -> BreakerState {
        self.inner.lock().unwrap().state
    }
    /// May a call go through now?
    pub fn allow(&self) -> bool {
        let mut i = self.inner.lock().unwrap();
        match i.state {
            BreakerState::Closed => true,
            BreakerState::Open => {
                if i.opened_at.elapsed() >= self.cooldown {
                    i.state = BreakerState::HalfOpen;
                    i.trial_in_flight = true;
                    true
                } else {
                    false
                }
            }
            BreakerState::HalfOpen => {
                if i.trial_in_flight {
                    false
                } else {
                    i.trial_in_flight = true;
                    true
                }
            }
        }
    }
    pub fn on_success(&self) {
        let mut i = self.inner.lock().unwrap();
        i.state = BreakerState::Closed;
        i.failures = 0;
        i.trial_in_flight = false;
    }
    pub fn on_failure(&self) {
        let mut i = self.inner.lock().unwrap();
        i.trial_in_flight = false;
        i.failures += 1;
        if i.state == BreakerState::HalfOpen || i.failures >= self.threshold {
            if i.state != BreakerState::Open {
                tracing::warn!(failures = i.failures, "circuit breaker opened");
            }
            i.state = BreakerState::Open;
            i.opened_at = Instant::now();
        }
    }
}

/// Bounds concurrent calls to one downstream.
pub struct Bulkhead {
    sem: Semaphore,
    wait: Duration,
}

impl Bulkhead {
    pub fn new(max_concurrent: usize, wait: Duration) -> Self {
        Self {
            sem: Semaphore::new(max_concurrent.max(1)),
            wait,
        }
    }
    /// A slot, or `None` when the bulkhead stays full for longer than `wait`.
    pub async fn acquire(&self) -> Option<SemaphorePermit<'_>> {
        tokio::time::timeout(self.wait, self.sem.acquire()).await.ok()?.ok()
    }
}

/// A non-transient answer from a downstream (any status < 500 except 429).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// One downstream service: base URL + breaker + bulkhead + retry policy, its
/// calls coalesced into batches under load ([`crate::batch`]).
pub struct Downstream {
    pub name: String,
    pub base: String,
    sender: Coalescer,
    pub breaker: CircuitBreaker,
    bulkhead: Bulkhead,
    retry: RetryPolicy,
}

impl Downstream {
    pub fn new(name: &str, base: String, client: HttpClient) -> Self {
        let (max, inflight) = crate::batch::limits_from_env();
        Self {
            name: name.to_string(),
            sender: Coalescer::new(name, &base, client.raw().clone(), max, inflight),
            base,
            breaker: CircuitBreaker::new(
                crate::config::env_or("BREAKER_THRESHOLD", 5),
                Duration::from_millis(crate::config::env_or("BREAKER_COOLDOWN_MS", 2000)),
            ),
            bulkhead: Bulkhead::new(
                crate::config::env_or("BULKHEAD_MAX", 128),
                Duration::from_millis(crate::config::env_or("BULKHEAD_WAIT_MS", 2000)),
            ),
            retry: RetryPolicy::from_env(),
        }
    }

    async fn attempt(&self, method: &Method, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        if !self.breaker.allow() {
            return Err(format!("{}: circuit open", self.name));
        }
        let Some(_slot) = self.bulkhead.acquire().await else {
            // Not the downstream's fault: do not count against the breaker, but
            // release a half-open trial slot.
            self.breaker.inner.lock().unwrap().trial_in_flight = false;
            return Err(format!("{}: bulkhead full", self.name));
        };
        match self.sender.call(method.clone(), path, body).await {
            Err(e) => {
                self.breaker.on_failure();
                Err(e)
            }
            Ok((status, bytes)) => {
                if status >= 500 || status == 429 {
                    self.breaker.on_failure();
                    return Err(format!("{}: status {status}", self.name));
                }
                self.breaker.on_success();
                let body = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                };
                Ok(Reply { status, body })
            }
        }
    }

    /// Call `method base+path` with retries on transient failures. `Err` means
    /// every attempt failed transiently; `Ok` carries any other status.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let mut last = String::new();
        for attempt in 0..self.retry.max_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
            match self.attempt(&method, path, body).await {
                Ok(r) => {
                    runtime()
                        .metrics
                        .inc("downstream_calls_total", &[("target", &self.name), ("outcome", "ok")]);
                    return Ok(r);
                }
                Err(e) => {
                    runtime().metrics.inc(
                        "downstream_calls_total",
                        &[("target", &self.name), ("outcome", "transient_error")],
                    );
                    tracing::debug!(target_service = %self.name, attempt, error = %e, "transient failure");
                    last = e;
                }
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_and_half_opens() {
        let b = CircuitBreaker::new(2, Duration::from_millis(30));
        assert!(b.allow());
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow(), "trial call after cooldown");
        assert!(!b.allow(), "only one trial at a time");
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.allow());
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow() && b.allow());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            base: Duration::from_millis(10),
            max: Duration::from_millis(100),
        };
        let b1 = p.backoff(1);
        assert!(b1 >= Duration::from_millis(10) && b1 <= Duration::from_millis(20));
        let b10 = p.backoff(10);
        assert!(b10 >= Duration::from_millis(50) && b10 <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn bulkhead_limits() {
        let b = Bulkhead::new(1, Duration::from_millis(20));
        let p = b.acquire().await;
        assert!(p.is_some());
        assert!(b.acquire().await.is_none());
        drop(p);
        assert!(b.acquire().await.is_some());
    }

    #[tokio::test]
    async fn unreachable_downstream_is_transient() {
        std::env::set_var("RETRY_BASE_MS", "1");
        let d = Downstream::new(
            "x",
            "http://127.0.0.1:1".into(),
            HttpClient::new(Duration::from_millis(200)),
        );
        assert!(d.call(Method::GET, "/", None).await.is_err());
    }
}

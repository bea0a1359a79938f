//! Liveness and readiness.
//!
//! `GET /healthz` answers 200 while the process is alive. `GET /readyz` answers 200 only when
//! the service should receive traffic: not while starting, not while draining after SIGTERM,
//! and not while one of the registered readiness checks fails (use [`Health::add_check`] for a
//! dependency the service cannot work without; keep checks cheap and non-blocking, e.g. read
//! a flag that a background task keeps up to date).

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

type Check = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting,
    Ready,
    Draining,
}

struct Inner {
    phase: Phase,
    checks: Vec<(String, Check)>,
}

/// Shared readiness state. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Mutex<Inner>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A new state, not ready yet ("starting").
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                phase: Phase::Starting,
                checks: Vec::new(),
            })),
        }
    }

    /// Marks start-up as complete. Has no effect once draining has begun.
    pub fn set_ready(&self) {
        let mut inner = self.lock();
        if inner.phase == Phase::Starting {
            inner.phase = Phase::Ready;
        }
    }

    /// Marks the service as shutting down: readiness fails from now on.
    pub fn start_draining(&self) {
        self.lock().phase = Phase::Draining;
    }

    /// Adds a readiness check; `Err(reason)` makes `/readyz` answer 503 with that reason.
    pub fn add_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.lock().checks.push((name.into(), Arc::new(check)));
    }

    /// `Ok(())` when ready, otherwise the reason why not.
    pub fn readiness(&self) -> Result<(), String> {
        let (phase, checks) = {
            let inner = self.lock();
            (inner.phase.clone(), inner.checks.clone())
        };
        match phase {
            Phase::Starting => return Err("starting".into()),
            Phase::Draining => return Err("shutting down".into()),
            Phase::Ready => {}
        }
        for (name, check) in &checks {
            check().map_err(|reason| format!("{name}: {reason}"))?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `GET /healthz`
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`
pub async fn readyz(State(health): State<Health>) -> (StatusCode, Json<Value>) {
    match health.readiness() {
        Ok(()) => (StatusCode::OK, Json(json!({ "status": "ready" }))),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_not_ready_then_ready_then_draining_for_good() {
        let health = Health::new();
        assert_eq!(health.readiness(), Err("starting".into()));
        health.set_ready();
        assert_eq!(health.readiness(), Ok(()));
        health.start_draining();
        health.set_ready();
        assert_eq!(health.readiness(), Err("shutting down".into()));
    }

    #[test]
    fn failing_checks_make_it_not_ready() {
        let health = Health::new();
        health.set_ready();
        health.add_check("database", || Err("connection refused".into()));
        assert_eq!(
            health.readiness(),
            Err("database: connection refused".into())
        );
    }
}

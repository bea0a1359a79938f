//! A revision's status: replicas running and ready, crash loops, exits and replicas that
//! never become ready (with their last log lines), and the router's endpoints kept equal to
//! the ready replicas.

use super::LocalPlatform;
use crate::rollout::{Failure, Revision, RevisionStatus};

impl LocalPlatform {
    /// [`Platform::status`](crate::rollout::Platform::status): a failure found while
    /// scaling, else the replicas' states and readiness.
    pub(super) async fn revision_status(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<RevisionStatus> {
        if let Some(failure) = self
            .failures
            .lock()
            .expect("failures")
            .get(&revision.id)
            .cloned()
        {
            return Ok(RevisionStatus {
                failure: Some(failure),
                ..Default::default()
            });
        }
        let runtime = self.runtime(service)?;
        let replicas = self.replicas(service, &revision.id).await?;
        let mut status = RevisionStatus {
            desired: replicas.len() as u32,
            current: 0,
            ready: 0,
            failure: None,
        };
        let mut ready_endpoints = Vec::new();
        for replica in &replicas {
            if replica.running {
                status.current += 1;
            }
            let crashed = replica.restarting
                || replica.restart_count > 0
                || (!replica.running
                    && replica
                        .started_at
                        .as_deref()
                        .is_some_and(|s| !s.starts_with("0001")));
            if crashed && status.failure.is_none() {
                let logs = self.tail_logs(&replica.name, 20).await;
                let reason = if replica.restarting || replica.restart_count > 0 {
                    "CrashLoopBackOff"
                } else {
                    "Exited"
                };
                let message = match (&replica.error, replica.exit_code) {
                    (Some(e), _) => format!("{} failed to run: {e}", replica.name),
                    (None, Some(code)) => format!(
                        "{} exited with code {code} (restarted {} times)",
                        replica.name, replica.restart_count
                    ),
                    (None, None) => format!("{} stopped", replica.name),
                };
                status.failure = Some(Failure {
                    reason: reason.into(),
                    message,
                    logs,
                });
                continue;
            }
            if self.ready(runtime, replica).await {
                status.ready += 1;
                ready_endpoints.push(format!(
                    "{}:{}",
                    replica.ip.as_deref().unwrap_or_default(),
                    runtime.port
                ));
            } else if status.failure.is_none()
                && replica.running
                && replica
                    .started_at
                    .as_deref()
                    .and_then(seconds_since)
                    .is_some_and(|s| s > (self.never_ready_after + runtime.start_period).as_secs())
            {
                let logs = self.tail_logs(&replica.name, 20).await;
                status.failure = Some(Failure {
                    reason: "NeverReady".into(),
                    message: format!(
                        "{} has run for over {}s without answering {} with 200",
                        replica.name,
                        (self.never_ready_after + runtime.start_period).as_secs(),
                        runtime.readiness
                    ),
                    logs,
                });
            }
        }
        if status.failure.is_none() {
            self.sync_endpoints(service, &revision.id, &ready_endpoints)
                .await?;
        }
        Ok(status)
    }
}

/// Seconds since an RFC 3339 timestamp from the engine (`None` when unparsable).
fn seconds_since(timestamp: &str) -> Option<u64> {
    // "2026-11-22T01:02:03.123456789Z", against the same clock as the rest of the rollout.
    let then: jiff::Timestamp = timestamp.parse().ok()?;
    let now = (crate::rollout::now_ms() / 1000) as i64;
    Some(now.saturating_sub(then.as_second()).max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let now = (crate::rollout::now_ms() / 1000) as i64;
        let day = seconds_since("1970-01-02T00:00:00.25Z").unwrap() as i64;
        assert!((now - 86_400 - day).abs() <= 1, "{day}");
        assert!(seconds_since("garbage").is_none());
    }
}

//! Swapping a freshly built image in: the rollout engine's rolling path on the local
//! platform, so "ready before traffic", "only ready replicas are endpoints" and "drain
//! before stop" hold exactly as for `dronectl deploy --rolling`; the engine's fail-fast
//! checks turn a crash-looping or never-ready revision into an abort that leaves (or
//! puts) all traffic on the running one.

use std::time::Duration;

use crate::build::BuiltImage;
use crate::events::{DevEvent, DevWhat, Event, Reporter};
use crate::local::LocalTarget;
use crate::manifest::StrategyKind;
use crate::rollout::{ops, Outcome, Plan, Timing};

use super::report::Tap;

/// The engine's timing in the loop: readiness is polled often (the swap's latency is
/// mostly the new process starting), a never-ready revision fails after
/// `progress_deadline`, an aborted one is removed after a second.
pub fn timing(progress_deadline: Duration) -> Timing {
    Timing {
        poll: Duration::from_millis(50),
        progress_deadline,
        abort_delay: Duration::from_secs(1),
    }
}

/// How a swap ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swapped {
    /// The new revision serves all traffic.
    Live { version: String, revision: String },
    /// It already was the running revision.
    Unchanged { version: String, revision: String },
    /// It failed and was rolled back.
    RolledBack { message: String },
}

/// Swaps `image` in for its service and reports the outcome as a dev event.
pub async fn swap(
    target: &LocalTarget,
    image: &BuiltImage,
    progress_deadline: Duration,
    reporter: &dyn Reporter,
) -> anyhow::Result<Swapped> {
    let service = image.service.clone();
    let reference = format!("{}:{}", image.image, image.tag);
    let revision = target.revision(&service, &reference, &image.tag).await?;
    let (version, id) = (revision.version.clone(), revision.id.clone());
    reporter.event(Event::Dev(DevEvent {
        version: Some(version.clone()),
        revision: Some(id.clone()),
        ..DevEvent::new(
            DevWhat::Swapping,
            vec![service.clone()],
            format!("swapping in {}", revision.label()),
        )
    }));
    let tap = Tap::new(reporter);
    let engine = target.engine(&tap, timing(progress_deadline));
    let report = ops::deploy(
        &engine,
        &service,
        revision,
        Plan::builtin(StrategyKind::Rolling),
        None,
    )
    .await?;
    Ok(match report.outcome {
        Outcome::Completed => Swapped::Live {
            version,
            revision: id,
        },
        Outcome::Unchanged => Swapped::Unchanged {
            version,
            revision: id,
        },
        _ => {
            let logs = tap.take_logs();
            let message = format!(
                "{} did not become ready ({}); traffic stays on the running version",
                version, report.message
            );
            reporter.event(Event::Dev(DevEvent {
                version: Some(version),
                revision: Some(id),
                logs,
                ..DevEvent::new(DevWhat::RolledBack, vec![service], message.clone())
            }));
            Swapped::RolledBack { message }
        }
    })
}

//! Set-up shared by the Kubernetes rollout tests (the modules `kube`, `kube_rollout` and
//! `scale`): the service they roll out, fast engine timings, revisions and plans.

use std::time::Duration;

use dronectl::events::Collect;
use dronectl::k8s::KubeTarget;
use dronectl::manifest::StrategyKind;
use dronectl::rollout::{ops, Plan, PlanStep, Request, Revision, Timing};

/// The reference-app service the Kubernetes rollout tests deploy.
pub const SVC: &str = "delivery";

/// Engine timings for tests: fast polls, a short deadline and abort delay.
pub fn timing() -> Timing {
    Timing {
        poll: Duration::from_millis(50),
        progress_deadline: Duration::from_secs(30),
        abort_delay: Duration::from_millis(100),
    }
}

/// [`SVC`]'s revision for an image `tag`.
pub fn revision(t: &KubeTarget, tag: &str) -> Revision {
    let image = t.kenv.image(SVC, tag, None);
    t.revision(SVC, &image, tag).unwrap()
}

/// A plan of `kind` with these steps and a 60 s scale-down delay.
pub fn plan(kind: StrategyKind, steps: Vec<PlanStep>) -> Plan {
    let mut p = Plan::builtin(kind);
    p.steps = steps;
    p.scale_down_delay = Duration::from_secs(60);
    p
}

/// `dronectl rollout promote --full` of [`SVC`]'s paused rollout, waiting up to `timeout`;
/// the rollout must complete.
pub async fn promote_full(t: &KubeTarget, timeout: Duration) {
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing());
    let report = ops::request(&engine, SVC, Request::PromoteFull, Some(timeout))
        .await
        .unwrap();
    assert_eq!(report.outcome, "completed", "{}", report.message);
}

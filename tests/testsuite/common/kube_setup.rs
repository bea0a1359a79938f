//! Set-up shared by the Kubernetes rollout tests (the modules `kube`, `kube_rollout` and
//! `scale`): the service they roll out, kube-fake, fast engine timings, revisions, plans,
//! deploys and promotions.

use std::time::Duration;

use dronectl::events::Collect;
use dronectl::k8s::{DeployOptions, Images, KubeTarget};
use dronectl::manifest::StrategyKind;
use dronectl::rollout::ops::DriveReport;
use dronectl::rollout::{ops, Plan, PlanStep, Request, Revision, Timing};
use kube_fake::FakeCluster;

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

/// kube-fake with its controllers ticking every 20 ms.
pub async fn fake() -> FakeCluster {
    let cluster = FakeCluster::start().await;
    cluster.set_tick(Duration::from_millis(20));
    cluster
}

/// Rolls [`SVC`] out to `rev` with `plan` (its objects prepared first), waiting up to 60 s.
pub async fn deploy(t: &KubeTarget, rev: Revision, plan: Plan, timing: Timing) -> DriveReport {
    t.platform.prepare(SVC).await.unwrap();
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing);
    // Boxed: the whole rollout's future is large for a debug build's test-thread stack.
    Box::pin(ops::deploy(
        &engine,
        SVC,
        rev,
        plan,
        Some(Duration::from_secs(60)),
    ))
    .await
    .unwrap()
}

/// A whole-app `deploy --tag <tag>` with the rolling strategy, waiting up to `timeout`.
pub fn whole_app_options(tag: &str, timeout: Duration) -> DeployOptions {
    DeployOptions {
        services: vec![],
        images: Images {
            tag: Some(tag.into()),
            ..Default::default()
        },
        kind: Some(StrategyKind::Rolling),
        strategy: None,
        timing: timing(),
        timeout: Some(timeout),
        dry_run: None,
        create_namespace: false,
    }
}

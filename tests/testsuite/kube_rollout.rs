//! Rollout behaviour on Kubernetes that only shows when pods take time (kube-fake as a
//! faithful stand-in: pods not ready at once, graceful termination, StatefulSet rolling
//! replacement): readiness before traffic on every weight change, progress counted on the
//! new revision's own pods, rollout-aware infrastructure waits, `diff` during the
//! scale-down delay, and retired versions removed on time.

use crate::common;

use common::kube_setup::{
    deploy, fake, plan, promote_full, revision, timing, whole_app_options, SVC,
};

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube_fake::{Behavior, FakeCluster};
use serde_json::Value;

use dronectl::events::{Collect, Event, RolloutWhat};
use dronectl::k8s::{KubeEnv, KubeTarget};
use dronectl::manifest::{LoadedManifest, StrategyKind};
use dronectl::rollout::ops;
use dronectl::rollout::{Plan, PlanStep, Timing};

const APP: &str = "tests/fixtures/kube-app";
const NS: &str = "default";

fn target(client: Client) -> KubeTarget {
    let loaded = LoadedManifest::read_valid(Path::new(APP)).unwrap();
    let kenv = KubeEnv::from_manifest(&loaded.manifest, "staging", Some(NS)).unwrap();
    KubeTarget::with_client(loaded.manifest, kenv, client)
}

/// The Deployment running revision `id`, straight from kube-fake's store.
fn deployment_of(c: &FakeCluster, id: &str) -> Option<Value> {
    c.list_json("apps", "v1", "deployments", Some(NS))
        .into_iter()
        .find(|d| d["metadata"]["labels"]["dronectl.io/revision"] == id)
}

/// Ready pods of revision `id` (not terminating).
fn ready_pods(c: &FakeCluster, id: &str) -> usize {
    c.list_json("", "v1", "pods", Some(NS))
        .iter()
        .filter(|p| p["metadata"]["labels"]["dronectl.io/revision"] == id)
        .filter(|p| p["metadata"].get("deletionTimestamp").is_none())
        .filter(|p| {
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .count()
}

fn service_revision(c: &FakeCluster) -> Option<String> {
    c.get_json("", "v1", "services", NS, SVC)?["spec"]["selector"]["dronectl.io/revision"]
        .as_str()
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_full_after_a_canary_split_gives_traffic_only_to_a_ready_candidate() {
    let c = fake().await;
    let t = target(c.kube_client());
    let v1 = revision(&t, "1.0.0");
    let report = deploy(
        &t,
        v1.clone(),
        Plan::builtin(StrategyKind::Rolling),
        timing(),
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let v2 = revision(&t, "2.0.0");
    let steps = vec![PlanStep::Weight(50), PlanStep::Pause(None)];
    let report = deploy(&t, v2.clone(), plan(StrategyKind::Canary, steps), timing()).await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    assert_eq!(deployment_of(&c, &v2.id).unwrap()["spec"]["replicas"], 1);

    // Watch, from inside the server, how many candidate pods are ready when the Service
    // switches to it.
    let c = Arc::new(c);
    let seen: Arc<Mutex<Option<usize>>> = Arc::default();
    let watch = {
        let (c, seen, id) = (c.clone(), seen.clone(), v2.id.clone());
        tokio::spawn(async move {
            loop {
                if service_revision(&c).as_deref() == Some(id.as_str()) {
                    *seen.lock().unwrap() = Some(ready_pods(&c, &id));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    promote_full(&t, Duration::from_secs(60)).await;
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        Some(2),
        "the Service moved to the candidate before both its pods were ready"
    );
    let status = ops::status(&t.platform, &t.store, SVC).await.unwrap();
    assert_eq!(status.stable.unwrap().status.ready, 2);
    assert_eq!(
        deployment_of(&c, &v1.id).unwrap()["spec"]["replicas"],
        2,
        "the previous stable is kept warm at full size, not at its canary share"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_progress_counts_only_the_new_revisions_pods() {
    let c = fake().await;
    let t = target(c.kube_client());
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1, Plan::builtin(StrategyKind::Rolling), timing()).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    c.set_image_behavior("delivery:2.0.0", Behavior::NeverReady);
    let v2 = revision(&t, "2.0.0");
    t.platform.prepare(SVC).await.unwrap();
    let reporter = Collect::default();
    let mut fast = timing();
    fast.progress_deadline = Duration::from_secs(2);
    let engine = t.engine(&reporter, fast);
    let report = ops::deploy(
        &engine,
        SVC,
        v2,
        Plan::builtin(StrategyKind::Rolling),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, "failed", "{}", report.message);
    assert!(
        report.message.contains("0 of 2 new replicas ready"),
        "{}",
        report.message
    );
    for e in reporter.take() {
        if let Event::Rollout(r) = e {
            if r.what == RolloutWhat::Scaling {
                assert_eq!(r.ready.map(|r| r.0), Some(0), "{}", r.message);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_during_the_scale_down_delay_compares_with_the_serving_deployment() {
    use dronectl::k8s::{self, Images};
    let c = fake().await;
    let t = target(c.kube_client());
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1, Plan::builtin(StrategyKind::Rolling), timing()).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let v2 = revision(&t, "2.0.0");
    let report = deploy(
        &t,
        v2,
        plan(StrategyKind::BlueGreen, vec![PlanStep::Weight(100)]),
        timing(),
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    // v1 stays warm under the plain name; v2 serves from `delivery-<id>`.
    let images = Images {
        tag: Some("2.0.0".into()),
        ..Default::default()
    };
    let again = deploy(
        &t,
        revision(&t, "2.0.0"),
        Plan::builtin(StrategyKind::Rolling),
        timing(),
    )
    .await;
    assert_eq!(again.outcome, "unchanged");
    let diffs = k8s::diff(&t, &[SVC.to_string()], &images).await.unwrap();
    let deployment = diffs.iter().find(|d| d.kind == "Deployment").unwrap();
    assert_eq!(
        deployment.change, "unchanged",
        "{}: {}",
        deployment.name, deployment.diff
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_rollouts_wait_until_the_infrastructure_rollout_is_complete() {
    use dronectl::k8s;
    let c = Arc::new(fake().await);
    let opts = |tag: &str| whole_app_options(tag, Duration::from_secs(60));
    let reporter = Collect::default();
    let t = target(c.kube_client());
    let first = k8s::deploy(&t, &opts("1.0.0"), &reporter).await.unwrap();
    assert_eq!(first.infrastructure, vec!["redis"]);

    // A new redis image and new service images in one whole-app deploy; redis-0 takes a
    // while to terminate, as a real database does.
    c.set_termination_ticks(40);
    let mut loaded = LoadedManifest::read_valid(Path::new(APP)).unwrap();
    loaded.manifest.infrastructure["redis"].value.image = "redis:7.2".into();
    let kenv = KubeEnv::from_manifest(&loaded.manifest, "staging", Some(NS)).unwrap();
    let t = KubeTarget::with_client(loaded.manifest, kenv, c.kube_client());
    // Record, from inside the server, when redis is rolled out and when the first service
    // Deployment gets its new image.
    let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let watch = {
        let (c, order) = (c.clone(), order.clone());
        tokio::spawn(async move {
            let mut redis_done = false;
            loop {
                let sts = c
                    .get_json("apps", "v1", "statefulsets", NS, "redis")
                    .unwrap();
                let st = &sts["status"];
                if !redis_done
                    && sts["spec"]["template"]["spec"]["containers"][0]["image"] == "redis:7.2"
                    && st["observedGeneration"] == sts["metadata"]["generation"]
                    && st["currentRevision"] == st["updateRevision"]
                    && st["readyReplicas"] == 1
                {
                    redis_done = true;
                    order.lock().unwrap().push("redis rolled out");
                }
                let started = c
                    .list_json("apps", "v1", "deployments", Some(NS))
                    .iter()
                    .any(|d| {
                        d["spec"]["template"]["spec"]["containers"][0]["image"]
                            .as_str()
                            .is_some_and(|i| i.ends_with(":2.0.0"))
                    });
                if started {
                    order.lock().unwrap().push("a service rollout started");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let second = k8s::deploy(&t, &opts("2.0.0"), &reporter).await.unwrap();
    assert_eq!(second.infrastructure, vec!["redis"]);
    tokio::time::timeout(Duration::from_secs(5), watch)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        *order.lock().unwrap(),
        ["redis rolled out", "a service rollout started"],
        "service rollouts began while redis-0 was being replaced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_version_is_removed_when_its_delay_ends() {
    let c = fake().await;
    let t = target(c.kube_client());
    let v1 = revision(&t, "1.0.0");
    let report = deploy(
        &t,
        v1.clone(),
        Plan::builtin(StrategyKind::Rolling),
        timing(),
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let mut bg = plan(StrategyKind::BlueGreen, vec![PlanStep::Weight(100)]);
    bg.scale_down_delay = Duration::from_secs(1);

    // The command waits out the delay and removes v1: nothing is left for a later run.
    let v2 = revision(&t, "2.0.0");
    let report = deploy(&t, v2.clone(), bg.clone(), timing()).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    assert!(ops::retires_after(&report));
    assert!(
        deployment_of(&c, &v1.id).is_some(),
        "warm for an instant undo"
    );
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing());
    let started = std::time::Instant::now();
    ops::retire(&engine, SVC).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(
        deployment_of(&c, &v1.id).is_none(),
        "removed after its delay"
    );
    let notes: Vec<String> = reporter
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Note { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert!(notes.iter().any(|n| n.contains("warm until")), "{notes:?}");

    // Handed off (no wait): status shows what is warm until when; the next command removes it.
    let v3 = revision(&t, "3.0.0");
    let report = deploy(&t, v3.clone(), bg, timing()).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let status = ops::status(&t.platform, &t.store, SVC).await.unwrap();
    assert_eq!(status.retired.len(), 1);
    assert_eq!(status.retired[0].revision.id, v2.id);
    assert!(status.retired[0].warm);
    tokio::time::sleep(Duration::from_millis(
        status.retired[0]
            .until_ms
            .saturating_sub(dronectl::rollout::now_ms())
            + 100,
    ))
    .await;
    assert!(deployment_of(&c, &v2.id).is_some());
    let again = deploy(&t, v3, Plan::builtin(StrategyKind::Rolling), timing()).await;
    assert_eq!(again.outcome, "unchanged");
    assert!(deployment_of(&c, &v2.id).is_none());
}

/// Requests kube-fake receives in `seconds` while a canary of `delivery` waits in a timed
/// pause (driven with the CLI's default timing), and their count by verb and resource.
async fn requests_while_paused(seconds: u64) -> (usize, std::collections::BTreeMap<String, usize>) {
    let c = Arc::new(FakeCluster::start().await);
    let t = Arc::new(target(c.kube_client()));
    let v1 = revision(&t, "1.0.0");
    let report = deploy(
        &t,
        v1,
        Plan::builtin(StrategyKind::Rolling),
        Timing::default(),
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let v2 = revision(&t, "2.0.0");
    let steps = vec![
        PlanStep::Weight(50),
        PlanStep::Pause(Some(Duration::from_secs(seconds + 30))),
    ];
    t.platform.prepare(SVC).await.unwrap();
    let reporter = Arc::new(Collect::default());
    let driver = {
        let (t, reporter) = (t.clone(), reporter.clone());
        tokio::spawn(async move {
            let engine = t.engine(&*reporter, Timing::default());
            ops::deploy(&engine, SVC, v2, plan(StrategyKind::Canary, steps), None).await
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !reporter
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Rollout(r) if r.what == RolloutWhat::Paused))
    {
        assert!(std::time::Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.clear_requests();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let requests = c.requests();
    driver.abort();
    let mut by_kind = std::collections::BTreeMap::new();
    for r in &requests {
        let mut parts: Vec<&str> = r.path.split('/').collect();
        if matches!(r.verb.as_str(), "get" | "update" | "patch" | "delete") {
            parts.pop();
        }
        let resource = parts.last().copied().unwrap_or("").to_string();
        *by_kind.entry(format!("{} {resource}", r.verb)).or_default() += 1;
    }
    (requests.len(), by_kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_in_a_pause_costs_at_most_one_request_per_second() {
    let seconds = 6;
    let (n, by_kind) = requests_while_paused(seconds).await;
    assert!(
        n as u64 <= seconds,
        "{n} requests in {seconds} s while paused: {by_kind:?}"
    );
}

/// API requests per second while a rollout waits in a timed pause, counted by kube-fake
/// (`scripts/bench-kube-requests.sh` runs it; figures in docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by scripts/bench-kube-requests.sh"]
async fn bench_requests_per_second_while_paused() {
    let seconds: u64 = std::env::var("BENCH_PAUSE_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let (n, by_kind) = requests_while_paused(seconds).await;
    eprintln!(
        "BENCH requests while paused: {n} in {seconds} s = {:.2} requests/s; {by_kind:?}",
        n as f64 / seconds as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_ratio_canary_reports_the_split_it_really_gives() {
    let c = fake().await;
    let t = target(c.kube_client());
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1, Plan::builtin(StrategyKind::Rolling), timing()).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let v2 = revision(&t, "2.0.0");
    t.platform.prepare(SVC).await.unwrap();
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing());
    let steps = vec![PlanStep::Weight(20), PlanStep::Pause(None)];
    let report = ops::deploy(
        &engine,
        SVC,
        v2,
        plan(StrategyKind::Canary, steps),
        Some(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    assert_eq!(report.outcome, "paused", "{}", report.message);
    let events = reporter.take();
    assert!(
        events.iter().any(|e| matches!(e, Event::Hint { message }
            if message.contains("weight 20% cannot be approximated with 2 replicas")
                && message.contains("gives 50%"))),
        "{events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Rollout(r)
            if r.what == RolloutWhat::Traffic
                && r.message.contains("20% of traffic requested")
                && r.message.contains("gives it 50% (1+1 pods behind one Service)"))),
        "{events:#?}"
    );
    // Two pods behind one Service: status says 50/50, and what was asked for.
    let status = ops::status(&t.platform, &t.store, SVC).await.unwrap();
    let (cand, stable) = (status.candidate.unwrap(), status.stable.unwrap());
    assert_eq!((cand.weight, cand.effective_weight), (20, 50));
    assert_eq!((stable.weight, stable.effective_weight), (80, 50));
}

/// Scenarios that run against kube-fake here and against a real cluster in
/// `e2e_real_cluster_rollouts` (only API reads, no kube-fake internals).
mod scenarios {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;
    use kube::api::{Api, ListParams};

    fn target_in(client: Client, ns: &str) -> KubeTarget {
        let loaded = LoadedManifest::read_valid(Path::new(APP)).unwrap();
        let kenv = KubeEnv::from_manifest(&loaded.manifest, "staging", Some(ns)).unwrap();
        KubeTarget::with_client(loaded.manifest, kenv, client)
    }

    /// `promote --full` after a 50 % canary: when the Service selects the candidate alone,
    /// the candidate's Deployment already has every replica available.
    pub async fn promote_full_readiness(client: Client, ns: &str) {
        let t = target_in(client.clone(), ns);
        let v1 = revision(&t, "1.0.0");
        let report = deploy(&t, v1, Plan::builtin(StrategyKind::Rolling), timing()).await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        let v2 = revision(&t, "2.0.0");
        let steps = vec![PlanStep::Weight(50), PlanStep::Pause(None)];
        let report = deploy(&t, v2.clone(), plan(StrategyKind::Canary, steps), timing()).await;
        assert_eq!(report.outcome, "paused", "{}", report.message);
        let watch = {
            let (client, ns, id) = (client.clone(), ns.to_string(), v2.id.clone());
            tokio::spawn(async move {
                let services: Api<Service> = Api::namespaced(client.clone(), &ns);
                let deployments: Api<Deployment> = Api::namespaced(client, &ns);
                loop {
                    let selected = services
                        .get(SVC)
                        .await
                        .ok()
                        .and_then(|s| s.spec?.selector?.get("dronectl.io/revision").cloned());
                    if selected.as_deref() == Some(id.as_str()) {
                        let lp =
                            ListParams::default().labels(&format!("dronectl.io/revision={id}"));
                        let d = deployments.list(&lp).await.unwrap().items.remove(0);
                        return d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        };
        promote_full(&t, Duration::from_secs(120)).await;
        let available = tokio::time::timeout(Duration::from_secs(10), watch)
            .await
            .unwrap()
            .unwrap();
        assert!(available >= 2, "switched with {available} of 2 available");
    }

    /// A candidate whose image cannot be pulled fails the rollout in seconds, not after
    /// the progress deadline, and traffic stays on the stable version.
    pub async fn fail_fast_on_unpullable_image(client: Client, ns: &str) {
        let t = target_in(client.clone(), ns);
        let v1 = revision(&t, "1.0.0");
        let report = deploy(
            &t,
            v1.clone(),
            Plan::builtin(StrategyKind::Rolling),
            timing(),
        )
        .await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        let bad = revision(&t, "0.0.0-does-not-exist");
        let started = std::time::Instant::now();
        let report = deploy(
            &t,
            bad,
            plan(StrategyKind::Canary, vec![PlanStep::Weight(50)]),
            timing(),
        )
        .await;
        assert_eq!(report.outcome, "failed", "{}", report.message);
        assert!(
            report.message.contains("ImagePullBackOff") || report.message.contains("ErrImagePull"),
            "{}",
            report.message
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "took {:?}",
            started.elapsed()
        );
        let services: Api<Service> = Api::namespaced(client, ns);
        let selector = services
            .get(SVC)
            .await
            .unwrap()
            .spec
            .unwrap()
            .selector
            .unwrap();
        assert_eq!(selector.get("dronectl.io/revision"), Some(&v1.id));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_promote_full_readiness() {
    let c = fake().await;
    scenarios::promote_full_readiness(c.kube_client(), NS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_fail_fast_on_unpullable_image() {
    let c = fake().await;
    c.set_image_behavior("does-not-exist", Behavior::ImagePullBackOff);
    scenarios::fail_fast_on_unpullable_image(c.kube_client(), NS).await;
}

/// The scenarios above against a real cluster (`DRONECTL_E2E_KUBECONFIG`; the images
/// `registry.example.com/drone/drone-delivery/delivery:1.0.0` and `2.0.0` must be pullable,
/// `0.0.0-does-not-exist` must not). Each runs in its own namespace, deleted afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: DRONECTL_E2E_KUBECONFIG=<kubeconfig> cargo test -- --ignored e2e_real_cluster"]
async fn e2e_real_cluster_rollouts() {
    let path = std::env::var_os("DRONECTL_E2E_KUBECONFIG")
        .expect("DRONECTL_E2E_KUBECONFIG: the kubeconfig of the real cluster to test against");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(client.clone());
    for name in ["promote-full", "fail-fast"] {
        let ns = format!("dronectl-e2e-{name}-{}", std::process::id());
        let object = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        namespaces
            .create(&Default::default(), &object)
            .await
            .unwrap();
        match name {
            "promote-full" => scenarios::promote_full_readiness(client.clone(), &ns).await,
            _ => scenarios::fail_fast_on_unpullable_image(client.clone(), &ns).await,
        }
        let _ = namespaces.delete(&ns, &Default::default()).await;
    }
}

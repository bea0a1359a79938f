//! The Kubernetes target against kube-fake (a real HTTP API server with a simulated
//! Deployment controller): rollouts through the shared engine, state and lease in the
//! cluster, fail-fast on a crash-looping candidate, resume after a killed driver.
//!
//! The same scenarios run against a real cluster in `e2e_real_cluster` when
//! `DRONECTL_E2E_KUBECONFIG` is set.

use crate::common;

use common::kube_setup::{plan, revision, timing, SVC};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::Client;
use kube_fake::{Behavior, FakeCluster};

use dronectl::events::Collect;
use dronectl::k8s::{self, DeployOptions, Images, KubeEnv, KubeTarget};
use dronectl::manifest::{LoadedManifest, StrategyKind};
use dronectl::rollout::ops::{self, DriveReport};
use dronectl::rollout::{LockHeld, Plan, PlanStep, Request, Revision, StateStore};

const APP: &str = "tests/fixtures/kube-app";

fn target(client: Client, env: &str, namespace: &str) -> KubeTarget {
    let loaded = LoadedManifest::read_valid(Path::new(APP)).unwrap();
    let kenv = KubeEnv::from_manifest(&loaded.manifest, env, Some(namespace)).unwrap();
    KubeTarget::with_client(loaded.manifest, kenv, client)
}

async fn deploy(t: &KubeTarget, rev: Revision, plan: Plan, reporter: &Collect) -> DriveReport {
    t.platform.prepare(SVC).await.unwrap();
    let mut engine = t.engine(reporter, timing());
    engine.timing = timing();
    ops::deploy(&engine, SVC, rev, plan, Some(Duration::from_secs(60)))
        .await
        .unwrap()
}

async fn drive(t: &KubeTarget, request: Option<Request>, reporter: &Collect) -> DriveReport {
    let engine = t.engine(reporter, timing());
    match request {
        Some(r) => ops::request(&engine, SVC, r, Some(Duration::from_secs(60)))
            .await
            .unwrap(),
        None => ops::resume(&engine, SVC, Some(Duration::from_secs(60)))
            .await
            .unwrap(),
    }
}

async fn selector(client: &Client, ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    api.get(name).await.unwrap().spec.unwrap().selector.unwrap()
}

async fn deployments(client: &Client, ns: &str) -> Vec<Deployment> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|d| {
            d.metadata
                .name
                .as_deref()
                .unwrap_or_default()
                .starts_with(SVC)
        })
        .collect()
}

fn image_of(d: &Deployment) -> String {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap()
}

async fn first(t: &KubeTarget, reporter: &Collect) -> Revision {
    let v1 = revision(t, "1.0.0");
    let report = deploy(
        t,
        v1.clone(),
        Plan::builtin(StrategyKind::Rolling),
        reporter,
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    v1
}

/// Every scenario, against any cluster (kube-fake here, a real one in the e2e suite).
mod scenarios {
    use super::*;

    /// The resourceVersion of every object in `ns`, of every namespaced kind the server
    /// lists (Events aside: the cluster writes those on its own).
    pub async fn resource_versions(client: &Client, ns: &str) -> BTreeMap<String, String> {
        let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
        let mut out = BTreeMap::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if caps.scope != kube::discovery::Scope::Namespaced
                    || !caps.supports_operation(kube::discovery::verbs::LIST)
                    || ar.kind == "Event"
                {
                    continue;
                }
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(client.clone(), ns, &ar);
                let Ok(list) = api.list(&Default::default()).await else {
                    continue;
                };
                for o in list {
                    out.insert(
                        format!("{}/{}", ar.kind, o.metadata.name.unwrap_or_default()),
                        o.metadata.resource_version.unwrap_or_default(),
                    );
                }
            }
        }
        out
    }

    pub fn whole_app_options(tag: &str) -> DeployOptions {
        common::kube_setup::whole_app_options(tag, Duration::from_secs(120))
    }

    /// A second unchanged whole-app deploy writes nothing but dronectl's own Leases.
    pub async fn whole_app_twice_writes_nothing(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let opts = whole_app_options("1.0.0");
        let first = k8s::deploy(&t, &opts, &reporter).await.unwrap();
        assert!(
            first.services.iter().all(|r| r.outcome == "completed"),
            "{:?}",
            first
                .services
                .iter()
                .map(|r| (&r.service, &r.outcome, &r.message))
                .collect::<Vec<_>>()
        );
        let before = resource_versions(&client, ns).await;
        let again = k8s::deploy(&t, &opts, &reporter).await.unwrap();
        assert!(again.services.iter().all(|r| r.outcome == "unchanged"));
        let after = resource_versions(&client, ns).await;
        let keys: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
        let written: Vec<String> = keys
            .into_iter()
            .filter(|k| !k.starts_with("Lease/dronectl-"))
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| format!("{k}: {:?} → {:?}", before.get(k), after.get(k)))
            .collect();
        assert!(written.is_empty(), "an unchanged deploy wrote {written:#?}");
    }

    /// Another manager owns a field dronectl applies: the deploy names the object, the field
    /// and the manager, and --force-conflicts takes the field over.
    pub async fn field_conflict(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        t.platform.prepare(SVC).await.unwrap();
        let api: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            Api::namespaced(client.clone(), ns);
        let patch = serde_json::json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": SVC}, "spec": {"maxUnavailable": 2}});
        api.patch(
            SVC,
            &kube::api::PatchParams::apply("kubectl").force(),
            &kube::api::Patch::Apply(&patch),
        )
        .await
        .unwrap();
        let err = t.platform.prepare(SVC).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("--force-conflicts"), "{text}");
        assert!(text.contains("PodDisruptionBudget"), "{text}");
        assert!(text.contains(".spec.maxUnavailable"), "{text}");
        assert!(text.contains("\"kubectl\""), "{text}");
        let mut forced = target(client.clone(), "staging", ns);
        forced.platform.force_conflicts = true;
        forced.platform.prepare(SVC).await.unwrap();
        let pdb = api.get(SVC).await.unwrap();
        assert_eq!(
            pdb.spec.unwrap().max_unavailable,
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
        );
    }

    pub async fn rolling(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let v1 = first(&t, &reporter).await;
        let deps = deployments(&client, ns).await;
        assert_eq!(deps.len(), 1);
        assert_eq!(deps[0].metadata.name.as_deref(), Some(SVC));
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v1.id)
        );

        let v2 = revision(&t, "2.0.0");
        let report = deploy(
            &t,
            v2.clone(),
            Plan::builtin(StrategyKind::Rolling),
            &reporter,
        )
        .await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        // Native rolling update: the same Deployment now runs v2.
        let deps = deployments(&client, ns).await;
        assert_eq!(deps.len(), 1, "{deps:?}");
        assert_eq!(image_of(&deps[0]), v2.image);
        let status = deps[0].status.clone().unwrap();
        assert_eq!(status.updated_replicas, Some(2));
        assert_eq!(status.replicas, Some(2));
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v2.id)
        );
        assert_eq!(
            t.store.load_record(SVC).await.unwrap().stable.unwrap().id,
            v2.id
        );
    }

    pub async fn blue_green_and_undo(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let v1 = first(&t, &reporter).await;
        let v2 = revision(&t, "2.0.0");
        let report = deploy(
            &t,
            v2.clone(),
            plan(StrategyKind::BlueGreen, vec![PlanStep::Weight(100)]),
            &reporter,
        )
        .await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        let deps = deployments(&client, ns).await;
        assert_eq!(deps.len(), 2, "the old version stays warm");
        assert!(deps
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some(&format!("{SVC}-{}", v2.id))));
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v2.id)
        );

        // Instant undo: a selector switch back to the warm Deployment.
        let engine = t.engine(&reporter, timing());
        let started = std::time::Instant::now();
        let report = ops::undo(&engine, SVC, None, Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(report.outcome, "completed", "{}", report.message);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "undo took {:?}",
            started.elapsed()
        );
        assert_eq!(report.state.unwrap().plan.name, "undo (instant switch)");
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v1.id)
        );
    }

    pub async fn canary(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let v1 = first(&t, &reporter).await;
        let v2 = revision(&t, "2.0.0");
        let steps = vec![PlanStep::Weight(50), PlanStep::Pause(None)];
        let report = deploy(&t, v2.clone(), plan(StrategyKind::Canary, steps), &reporter).await;
        assert_eq!(report.outcome, "paused", "{}", report.message);
        // Replica ratio: 50% of 2 replicas = one pod each, all behind the Service.
        let deps = deployments(&client, ns).await;
        let replicas = |id: &str| {
            deps.iter()
                .find(|d| {
                    d.metadata
                        .labels
                        .as_ref()
                        .unwrap()
                        .get("dronectl.io/revision")
                        .map(String::as_str)
                        == Some(id)
                })
                .and_then(|d| d.spec.replicas)
        };
        assert_eq!(replicas(&v1.id), Some(1));
        assert_eq!(replicas(&v2.id), Some(1));
        assert!(!selector(&client, ns, SVC)
            .await
            .contains_key("dronectl.io/revision"));

        let status = ops::status(&t.platform, &t.store, SVC).await.unwrap();
        assert_eq!(status.candidate.unwrap().weight, 50);

        let report = drive(&t, Some(Request::Promote), &reporter).await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v2.id)
        );
        let deps = deployments(&client, ns).await;
        let v2_dep = deps.iter().find(|d| image_of(d) == v2.image).unwrap();
        assert_eq!(
            v2_dep.spec.replicas,
            Some(2),
            "the candidate is scaled up before it takes all traffic"
        );
    }

    pub async fn abort(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let v1 = first(&t, &reporter).await;
        let v2 = revision(&t, "2.0.0");
        let steps = vec![PlanStep::Weight(50), PlanStep::Pause(None)];
        let report = deploy(&t, v2.clone(), plan(StrategyKind::Canary, steps), &reporter).await;
        assert_eq!(report.outcome, "paused");
        // Posted by "another machine": a fresh store over the same cluster.
        let other = target(client.clone(), "staging", ns);
        let report = drive(&other, Some(Request::Abort), &reporter).await;
        assert_eq!(report.outcome, "aborted", "{}", report.message);
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v1.id)
        );
        let deps = deployments(&client, ns).await;
        assert_eq!(
            deps.len(),
            1,
            "the candidate is removed after the abort delay"
        );
        assert_eq!(image_of(&deps[0]), v1.image);
        assert_eq!(
            deps[0].spec.replicas,
            Some(2),
            "stable is back to full size"
        );
    }

    pub async fn resume_after_kill(client: Client, ns: &str) {
        let t = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        first(&t, &reporter).await;
        let v2 = revision(&t, "2.0.0");
        let steps = vec![
            PlanStep::Weight(50),
            PlanStep::Pause(Some(Duration::from_secs(2))),
            PlanStep::Weight(100),
        ];
        t.platform.prepare(SVC).await.unwrap();
        // The driver dies mid-rollout (its future is dropped during the timed pause).
        {
            let engine = t.engine(&reporter, timing());
            let killed = tokio::time::timeout(
                Duration::from_millis(1500),
                ops::deploy(
                    &engine,
                    SVC,
                    v2.clone(),
                    plan(StrategyKind::Canary, steps),
                    None,
                ),
            )
            .await;
            assert!(killed.is_err(), "the driver was still running");
        }
        // Another machine sees where it stopped, and finishes the job.
        let fresh = target(client.clone(), "staging", ns);
        let status = ops::status(&fresh.platform, &fresh.store, SVC)
            .await
            .unwrap();
        assert!(
            status
                .rollout
                .as_ref()
                .is_some_and(|r| !r.phase.is_terminal()),
            "{}",
            status.phase
        );
        let report = drive(&fresh, None, &reporter).await;
        assert_eq!(report.outcome, "completed", "{}", report.message);
        assert_eq!(
            selector(&client, ns, SVC).await.get("dronectl.io/revision"),
            Some(&v2.id)
        );
    }

    pub async fn lease(client: Client, ns: &str) {
        let a = target(client.clone(), "staging", ns);
        let b = target(client.clone(), "staging", ns);
        let reporter = Collect::default();
        let held = a.store.lock(SVC, "ci job 1").await.unwrap();
        a.platform.prepare(SVC).await.unwrap();
        let engine = b.engine(&reporter, timing());
        let err = ops::deploy(
            &engine,
            SVC,
            revision(&b, "1.0.0"),
            Plan::builtin(StrategyKind::Rolling),
            None,
        )
        .await
        .unwrap_err();
        let held_err = err.downcast_ref::<LockHeld>().expect("LockHeld");
        assert!(held_err.holder.contains("ci job 1"), "{err}");
        assert!(
            ops::status(&b.platform, &b.store, SVC)
                .await
                .unwrap()
                .driven
        );
        a.store.unlock(held).await;
        assert!(
            b.store.lock(SVC, "ci job 2").await.is_ok(),
            "a released lease can be taken"
        );
    }
}

async fn fake() -> FakeCluster {
    let cluster = FakeCluster::start().await;
    cluster.set_tick(Duration::from_millis(20));
    cluster
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_uses_the_deployment_strategy() {
    let c = fake().await;
    scenarios::rolling(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_and_undo_is_instant() {
    let c = fake().await;
    scenarios::blue_green_and_undo(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_replica_ratio_then_promote() {
    let c = fake().await;
    scenarios::canary(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_from_another_machine_rolls_back() {
    let c = fake().await;
    scenarios::abort(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_driver_is_resumed_from_cluster_state() {
    let c = fake().await;
    scenarios::resume_after_kill(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_driver_is_refused_by_the_lease() {
    let c = fake().await;
    scenarios::lease(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_lease_is_taken_over() {
    let c = fake().await;
    let t = target(c.kube_client(), "staging", "default");
    c.create_json(serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "dronectl-delivery", "namespace": "default"},
        "spec": {"holderIdentity": "dead dronectl", "leaseDurationSeconds": 15, "renewTime": "2020-01-01T00:00:00.000000Z"}
    }))
    .unwrap();
    let _lock = t.store.lock(SVC, "new driver").await.unwrap();
    let lease = c
        .get_json(
            "coordination.k8s.io",
            "v1",
            "leases",
            "default",
            "dronectl-delivery",
        )
        .unwrap();
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap()
            .starts_with("new driver"),
        "{lease}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_candidate_fails_fast_with_logs() {
    let c = fake().await;
    c.set_image_behavior(
        "delivery:bad",
        Behavior::CrashLoop {
            exit_code: 1,
            logs: vec!["starting".into(), "panicked: boom".into()],
        },
    );
    let client = c.kube_client();
    let t = target(client.clone(), "staging", "default");
    let reporter = Collect::default();
    let v1 = first(&t, &reporter).await;
    let started = std::time::Instant::now();
    let report = deploy(
        &t,
        revision(&t, "bad"),
        Plan::builtin(StrategyKind::Rolling),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "failed", "{}", report.message);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let state = report.state.unwrap();
    let dronectl::rollout::Phase::Failed { failure } = state.phase else {
        panic!("{:?}", state.phase)
    };
    assert_eq!(failure.reason, "CrashLoopBackOff");
    assert!(
        failure.logs.iter().any(|l| l.contains("boom")),
        "{failure:?}"
    );
    assert!(
        failure.message.contains("BackOff"),
        "pod events are reported: {failure:?}"
    );
    // Rolled back in place: the Deployment runs v1 again, with all its replicas.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deps = deployments(&client, "default").await;
    assert_eq!(deps.len(), 1);
    assert_eq!(image_of(&deps[0]), v1.image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_fails_fast() {
    let c = fake().await;
    c.set_image_behavior("delivery:missing", Behavior::ImagePullBackOff);
    let t = target(c.kube_client(), "staging", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let steps = vec![PlanStep::Weight(100)];
    let report = deploy(
        &t,
        revision(&t, "missing"),
        plan(StrategyKind::BlueGreen, steps),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "failed", "{}", report.message);
    assert!(
        report.message.contains("ImagePullBackOff") || report.message.contains("ErrImagePull"),
        "{}",
        report.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_canary_sets_httproute_weights() {
    let c = fake().await;
    c.register_resource(kube_fake::ResourceType::new(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
    ));
    let t = target(c.kube_client(), "production", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let v2 = revision(&t, "2.0.0");
    let report = deploy(
        &t,
        v2.clone(),
        plan(
            StrategyKind::Canary,
            vec![PlanStep::Weight(30), PlanStep::Pause(None)],
        ),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    let route = c
        .get_json(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "default",
            SVC,
        )
        .unwrap();
    let backends = route["spec"]["rules"][0]["backendRefs"]
        .as_array()
        .unwrap()
        .clone();
    let weight = |name: String| {
        backends
            .iter()
            .find(|b| b["name"] == name.as_str())
            .map(|b| b["weight"].as_u64().unwrap())
    };
    assert_eq!(weight(format!("{SVC}-{}", v2.id)), Some(30), "{route}");
    assert_eq!(
        backends
            .iter()
            .map(|b| b["weight"].as_u64().unwrap())
            .sum::<u64>(),
        100,
        "{route}"
    );
    let report = drive(&t, Some(Request::Promote), &reporter).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let route = c
        .get_json(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "default",
            SVC,
        )
        .unwrap();
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"],
        format!("{SVC}-{}", v2.id),
        "{route}"
    );
}

/// Issue 18 on a gateway: a `match` step adds an HTTPRoute rule with the header condition to
/// the candidate's Service only, a `mirror` step a `RequestMirror` filter with `percent` (both
/// accepted by kube-fake's CRD validation); full promotion writes the plain route again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_canary_carries_matches_and_mirror_in_the_httproute() {
    use dronectl::rollout::{MatchValue, TrafficMatch};
    let c = fake().await;
    c.register_resource(kube_fake::ResourceType::new(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
    ));
    let t = target(c.kube_client(), "production", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let v2 = revision(&t, "2.0.0");
    let beta = TrafficMatch {
        headers: vec![("x-beta".into(), MatchValue::Exact("true".into()))],
        cookies: vec![("group".into(), MatchValue::Regex("qa-[0-9]+".into()))],
    };
    let report = deploy(
        &t,
        v2.clone(),
        plan(
            StrategyKind::Canary,
            vec![
                PlanStep::Match(beta),
                PlanStep::Mirror(25),
                PlanStep::Pause(None),
                PlanStep::Weight(30),
            ],
        ),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    let route = c
        .get_json(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "default",
            SVC,
        )
        .unwrap();
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 2, "{route}");
    let candidate = format!("{SVC}-{}", v2.id);
    assert_eq!(
        rules[0]["backendRefs"].as_array().unwrap().len(),
        1,
        "{route}"
    );
    assert_eq!(rules[0]["backendRefs"][0]["name"], candidate.as_str());
    let headers = &rules[0]["matches"][0]["headers"];
    assert_eq!(headers[0]["type"], "Exact", "{route}");
    assert_eq!(headers[0]["name"], "x-beta");
    assert_eq!(headers[1]["name"], "Cookie");
    assert_eq!(headers[1]["type"], "RegularExpression");
    let mirror = &rules[1]["filters"][0];
    assert_eq!(mirror["type"], "RequestMirror", "{route}");
    assert_eq!(mirror["requestMirror"]["percent"], 25);
    assert_eq!(
        mirror["requestMirror"]["backendRef"]["name"],
        candidate.as_str()
    );
    // The candidate's own Service exists (it is a backend before it has weight).
    assert!(c
        .get_json("", "v1", "services", "default", &candidate)
        .is_some());
    let report = drive(&t, Some(Request::Promote), &reporter).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let route = c
        .get_json(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "default",
            SVC,
        )
        .unwrap();
    let rules = route["spec"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 1, "{route}");
    assert!(rules[0].get("filters").is_none(), "{route}");
}

/// With a gateway too, a ready candidate without traffic is reachable as `<svc>-preview`, as
/// the rollout's message says; the preview goes when the candidate has all the traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_candidate_without_traffic_has_its_preview_service() {
    let c = fake().await;
    c.register_resource(kube_fake::ResourceType::new(
        "gateway.networking.k8s.io",
        "v1",
        "httproutes",
        "HTTPRoute",
        true,
    ));
    let t = target(c.kube_client(), "production", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let v2 = revision(&t, "2.0.0");
    let report = deploy(
        &t,
        v2.clone(),
        plan(
            StrategyKind::Canary,
            vec![PlanStep::Pause(None), PlanStep::Weight(100)],
        ),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    let preview = format!("{SVC}-preview");
    assert!(
        reporter
            .take()
            .iter()
            .any(|e| format!("{e:?}").contains(&format!("preview at `{preview}`"))),
        "the engine announces the preview"
    );
    let service = c
        .get_json("", "v1", "services", "default", &preview)
        .expect("the preview Service the message names exists");
    assert_eq!(
        service["spec"]["selector"][k8s::render::REVISION],
        v2.id.as_str(),
        "{service}"
    );
    let report = drive(&t, Some(Request::Promote), &reporter).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    assert!(
        c.get_json("", "v1", "services", "default", &preview)
            .is_none(),
        "no preview once the candidate has all the traffic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_app_deploy_in_dependency_order() {
    let c = fake().await;
    let t = target(c.kube_client(), "staging", "default");
    let reporter = Collect::default();
    let opts = DeployOptions {
        services: vec![],
        images: Images {
            tag: Some("1.0.0".into()),
            ..Default::default()
        },
        kind: Some(StrategyKind::Rolling),
        strategy: None,
        timing: timing(),
        timeout: Some(Duration::from_secs(60)),
        dry_run: None,
        create_namespace: false,
    };
    let outcome = match tokio::time::timeout(
        Duration::from_secs(60),
        k8s::deploy(&t, &opts, &reporter),
    )
    .await
    {
        Ok(o) => o.unwrap(),
        Err(_) => panic!("deploy hangs; events: {:#?}", reporter.0.lock().unwrap()),
    };
    assert_eq!(outcome.infrastructure, vec!["redis"]);
    assert_eq!(outcome.services.len(), 9);
    assert!(
        outcome.services.iter().all(|r| r.outcome == "completed"),
        "{:?}",
        outcome
            .services
            .iter()
            .map(|r| (&r.service, &r.outcome, &r.message))
            .collect::<Vec<_>>()
    );
    // workflow depends on delivery (and more): it comes after them.
    let pos = |s: &str| {
        outcome
            .services
            .iter()
            .position(|r| r.service == s)
            .unwrap()
    };
    assert!(pos("workflow") > pos("delivery"));
    assert!(pos("supervisor") > pos("dronescheduler"));
    assert!(c
        .get_json("apps", "v1", "statefulsets", "default", "redis")
        .is_some());
    assert!(c
        .get_json(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "default",
            "drone-delivery-default-deny"
        )
        .is_some());

    // Deploying the same again changes nothing.
    let again = k8s::deploy(&t, &opts, &reporter).await.unwrap();
    assert!(again.services.iter().all(|r| r.outcome == "unchanged"));

    // diff: nothing to change for the same tag, a change for a new one.
    let diffs = k8s::diff(
        &t,
        &["delivery".to_string()],
        &Images {
            tag: Some("1.0.0".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let changed: Vec<_> = diffs
        .iter()
        .filter(|d| d.change != "unchanged")
        .map(|d| format!("{}/{}\n{}", d.kind, d.name, d.diff))
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");
    let diffs = k8s::diff(
        &t,
        &["delivery".to_string()],
        &Images {
            tag: Some("2.0.0".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let deployment = diffs.iter().find(|d| d.kind == "Deployment").unwrap();
    assert_eq!(deployment.change, "update");
    assert!(
        deployment
            .diff
            .contains("+        image: registry.example.com/drone/drone-delivery/delivery:2.0.0"),
        "{}",
        deployment.diff
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_conflicts_are_reported() {
    let c = fake().await;
    scenarios::field_conflict(c.kube_client(), "default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_whole_app_deploy_writes_nothing() {
    let c = fake().await;
    scenarios::whole_app_twice_writes_nothing(c.kube_client(), "default").await;
}

/// The same scenarios against a real cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: DRONECTL_E2E_KUBECONFIG=<kubeconfig> cargo test -- --ignored e2e_real_cluster"]
async fn e2e_real_cluster() {
    let path = std::env::var_os("DRONECTL_E2E_KUBECONFIG")
        .expect("DRONECTL_E2E_KUBECONFIG: the kubeconfig of the real cluster to test against");
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let run = |name: &'static str| {
        let (client, namespaces) = (client.clone(), namespaces.clone());
        async move {
            let ns = format!("dronectl-e2e-{name}-{}", std::process::id());
            let object =
                serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
            namespaces
                .create(&Default::default(), &object)
                .await
                .unwrap();
            (client, ns)
        }
    };
    // Real images must be pullable: DRONECTL_E2E_REGISTRY should hold drone-delivery/delivery:1.0.0 and 2.0.0.
    let (c, ns) = run("rolling").await;
    scenarios::rolling(c, &ns).await;
    let (c, ns) = run("bluegreen").await;
    scenarios::blue_green_and_undo(c, &ns).await;
    let (c, ns) = run("canary").await;
    scenarios::canary(c, &ns).await;
    let (c, ns) = run("abort").await;
    scenarios::abort(c, &ns).await;
    let (c, ns) = run("resume").await;
    scenarios::resume_after_kill(c, &ns).await;
    let (c, ns) = run("lease").await;
    scenarios::lease(c, &ns).await;
    let (c, ns) = run("conflict").await;
    scenarios::field_conflict(c, &ns).await;
    let (c, ns) = run("twice").await;
    scenarios::whole_app_twice_writes_nothing(c, &ns).await;
    for name in namespaces.list(&Default::default()).await.unwrap().items {
        let n = name.metadata.name.unwrap_or_default();
        if n.starts_with("dronectl-e2e-") && n.ends_with(&std::process::id().to_string()) {
            let _ = namespaces.delete(&n, &Default::default()).await;
        }
    }
}

/// The `dronectl` binary against kube-fake through a kubeconfig: deploy, status, the
/// pinned context, and `--dry-run=server`.
#[test]
fn cli_deploy_status_and_pinned_context() {
    let cluster = FakeCluster::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    cluster
        .write_kubeconfig(&kubeconfig, "staging", "default")
        .unwrap();
    let other = dir.path().join("other");
    cluster
        .write_kubeconfig(&other, "kind-dev", "default")
        .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_dronectl"))
            .env("KUBECONFIG", &kubeconfig)
            .env("CI", "1")
            .args(["-C", APP])
            .args(args)
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let out = run(&[
        "deploy", "delivery", "--env", "staging", "--tag", "1.0.0", "-n", "default",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&[
        "-o", "json", "rollout", "status", "delivery", "--env", "staging", "-n", "default",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("\"phase\":\"completed\""),
        "{}",
        text(&out)
    );

    // The environment pins the context `staging`: another one is refused without --yes.
    let kc = other.to_str().unwrap();
    let out = run(&[
        "deploy",
        "delivery",
        "--env",
        "staging",
        "--tag",
        "1.0.0",
        "-n",
        "default",
        "--kubeconfig",
        kc,
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("pins the kubeconfig context `staging`"),
        "{}",
        text(&out)
    );
    let out = run(&[
        "deploy",
        "delivery",
        "--env",
        "staging",
        "--tag",
        "1.0.0",
        "-n",
        "default",
        "--kubeconfig",
        kc,
        "--yes",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nothing to do"), "{}", text(&out));

    // A server-side dry run persists nothing.
    let out = run(&[
        "deploy",
        "account",
        "--env",
        "staging",
        "--tag",
        "9.9.9",
        "-n",
        "default",
        "--dry-run",
        "server",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("kind: Deployment"), "{}", text(&out));
    assert!(cluster
        .get_json("apps", "v1", "deployments", "default", "account")
        .is_none());

    // Every request says who sent it, as kubectl's do.
    let agent = format!("dronectl/{} (", env!("CARGO_PKG_VERSION"));
    let anonymous: Vec<_> = cluster
        .requests()
        .into_iter()
        .filter(|r| !r.user_agent.starts_with(&agent))
        .map(|r| format!("{} {} {:?}", r.method, r.path, r.user_agent))
        .collect();
    assert!(anonymous.is_empty(), "{anonymous:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_metric_analysis_without_prometheus_is_inconclusive() {
    let c = fake().await;
    let t = target(c.kube_client(), "staging", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let mut p = plan(
        StrategyKind::Canary,
        vec![
            PlanStep::Weight(50),
            PlanStep::Analysis("error-rate".into()),
        ],
    );
    p.analyses.insert(
        "error-rate".into(),
        dronectl::rollout::AnalysisPlan {
            name: "error-rate".into(),
            metric: dronectl::manifest::Metric::ErrorRate,
            threshold: Some(0.01),
            interval: Duration::from_millis(100),
            count: 2,
            failure_limit: 1,
            url: None,
            expect_status: None,
            query: None,
            address: None,
        },
    );
    let report = deploy(&t, revision(&t, "2.0.0"), p, &reporter).await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    assert!(
        report.message.contains("inconclusive") && report.message.contains("no router"),
        "{}",
        report.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_candidate_fails_fast() {
    let c = fake().await;
    c.set_image_behavior("delivery:huge", Behavior::Unschedulable);
    let t = target(c.kube_client(), "staging", "default");
    let reporter = Collect::default();
    first(&t, &reporter).await;
    let report = deploy(
        &t,
        revision(&t, "huge"),
        plan(StrategyKind::BlueGreen, vec![PlanStep::Weight(100)]),
        &reporter,
    )
    .await;
    assert_eq!(report.outcome, "failed", "{}", report.message);
    assert!(
        report.message.contains("Unschedulable"),
        "{}",
        report.message
    );
}

fn service_options(services: &[&str], tag: &str) -> DeployOptions {
    DeployOptions {
        services: services.iter().map(|s| s.to_string()).collect(),
        ..scenarios::whole_app_options(tag)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_dry_run_shows_the_live_revision_selector() {
    let c = fake().await;
    let client = c.kube_client();
    let t = target(client.clone(), "staging", "default");
    let reporter = Collect::default();
    let v1 = first(&t, &reporter).await;
    let mut opts = service_options(&[SVC], "1.0.0");
    opts.dry_run = Some(k8s::DryRun::Server);
    let outcome = k8s::deploy(&t, &opts, &reporter).await.unwrap();
    let service = outcome
        .objects
        .iter()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == SVC)
        .unwrap();
    // A real deploy never re-applies the Service: the dry run shows it with its traffic.
    assert_eq!(
        service["spec"]["selector"]["dronectl.io/revision"],
        v1.id.as_str(),
        "{service}"
    );
    assert_eq!(
        selector(&client, "default", SVC)
            .await
            .get("dronectl.io/revision"),
        Some(&v1.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_gateway_api_is_named_before_anything_is_applied() {
    let c = fake().await;
    c.remove_api_group("gateway.networking.k8s.io");
    let t = target(c.kube_client(), "production", "default");
    let reporter = Collect::default();
    c.clear_requests();
    let err = k8s::deploy(&t, &service_options(&["ingestion"], "1.0.0"), &reporter)
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(
        dronectl::error::exit_code(&err),
        dronectl::error::ExitCode::Usage,
        "{text}"
    );
    for part in [
        "HTTPRoute (gateway.networking.k8s.io/v1)",
        "HTTPRoute ingestion",
        "Gateway API CRDs",
        "remove `gateway:` from environment `production`",
    ] {
        assert!(text.contains(part), "{part}: {text}");
    }
    assert!(
        c.requests().iter().all(|r| r.method == "GET"),
        "nothing was applied: {:?}",
        c.requests()
    );

    // diff reports the route and compares everything else.
    let diffs = k8s::diff(
        &t,
        &["ingestion".to_string()],
        &Images {
            tag: Some("1.0.0".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let route = diffs.iter().find(|d| d.kind == "HTTPRoute").unwrap();
    assert_eq!(route.change, "error");
    assert!(route.diff.contains("Gateway API CRDs"), "{}", route.diff);
    assert!(
        diffs
            .iter()
            .any(|d| d.kind == "Deployment" && d.change == "create"),
        "{diffs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_is_named_or_created_on_request() {
    let c = fake().await;
    let t = target(c.kube_client(), "staging", "drone-new");
    let reporter = Collect::default();
    let mut opts = service_options(&[SVC], "1.0.0");
    let err = k8s::deploy(&t, &opts, &reporter).await.unwrap_err();
    let text = format!("{err:#}");
    assert_eq!(
        dronectl::error::exit_code(&err),
        dronectl::error::ExitCode::Usage
    );
    assert!(
        text.contains("namespace `drone-new` does not exist")
            && text.contains("--create-namespace"),
        "{text}"
    );
    opts.create_namespace = true;
    let outcome = k8s::deploy(&t, &opts, &reporter).await.unwrap();
    assert_eq!(outcome.services[0].outcome, "completed");
    let ns = c.get_json("", "v1", "namespaces", "", "drone-new").unwrap();
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "dronectl"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_dependency_is_reported_as_paused_with_how_to_continue() {
    let c = fake().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(Path::new(APP).join("dronectl.yaml"))
        .unwrap()
        .replace(
            "strategies:\n",
            "strategies:\n  hold:\n    type: canary\n    steps:\n      - weight: 50\n      - pause: {}\n",
        );
    std::fs::write(dir.path().join("dronectl.yaml"), yaml).unwrap();
    let loaded = LoadedManifest::read_valid(dir.path()).unwrap();
    let kenv = KubeEnv::from_manifest(&loaded.manifest, "staging", Some("default")).unwrap();
    let t = KubeTarget::with_client(loaded.manifest, kenv, c.kube_client());
    let reporter = Collect::default();
    let services = ["delivery", "dronescheduler", "package", "supervisor"];
    let outcome = k8s::deploy(&t, &service_options(&services, "1.0.0"), &reporter)
        .await
        .unwrap();
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    let mut opts = service_options(&services, "2.0.0");
    opts.strategy = Some("hold".into());
    let outcome = k8s::deploy(&t, &opts, &reporter).await.unwrap();
    let skipped = &outcome.skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].service, "supervisor");
    assert_eq!(skipped[0].outcome, "paused");
    assert!(
        skipped[0].message.contains("is paused")
            && skipped[0].message.contains("dronectl rollout promote")
            && skipped[0].message.contains("--env staging"),
        "{}",
        skipped[0].message
    );
    assert!(
        !skipped[0].message.contains("failed"),
        "{}",
        skipped[0].message
    );
}

/// Without any kubeconfig the binary says so (not that the pinned context is wrong), and API
/// errors read as message, reason and object, not as a dump of kube's `Status` struct.
#[test]
fn cli_errors_say_what_is_missing_and_read_like_messages() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dronectl"))
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("DRONECTL_KUBECONFIG")
        .env("HOME", home.path())
        .env("CI", "1")
        .args([
            "-C", APP, "deploy", "delivery", "--env", "staging", "--tag", "1.0.0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("no kubeconfig found"), "{text}");
    assert!(!text.contains("pins the kubeconfig context"), "{text}");

    let cluster = FakeCluster::start_blocking();
    let kubeconfig = home.path().join("config");
    cluster
        .write_kubeconfig(&kubeconfig, "staging", "default")
        .unwrap();
    cluster.inject_error(Some("PATCH"), Some("/serviceaccounts/"), 500, 1);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dronectl"))
        .env("KUBECONFIG", &kubeconfig)
        .env("CI", "1")
        .args([
            "-C", APP, "deploy", "delivery", "--env", "staging", "--tag", "1.0.0", "-n", "default",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(!text.contains("Status {"), "{text}");
    assert!(
        text.contains(
            "injected failure (InternalError) by kube-fake (reason InternalError, HTTP 500)"
        ),
        "{text}"
    );
    assert!(text.contains("ServiceAccount delivery"), "{text}");
}

/// A Prometheus stand-in on a real TLS socket (127.0.0.1, its own runtime thread): every
/// query answers the value 0; the request lines it saw are recorded.
fn https_prometheus(
    cert: &Path,
    key: &Path,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_file(cert).unwrap()],
        PrivateKeyDer::from_pem_file(key).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let (acceptor, record) = (acceptor.clone(), record.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(s).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    record
                        .lock()
                        .unwrap()
                        .push(head.lines().next().unwrap_or_default().to_string());
                    let body = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0"]}]}}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
    });
    (port, seen)
}

/// A canary checked by a Prometheus query over https: the `dronectl` binary trusts the
/// server's (self-signed) certificate through `SSL_CERT_FILE`, the query reaches it
/// encoded with the service and version substituted, and the rollout completes.
#[test]
fn prometheus_analysis_over_https() {
    let cluster = FakeCluster::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::tls::self_signed_cert(dir.path());
    let (port, seen) = https_prometheus(&cert, &key);
    let app = dir.path().join("app");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("dronectl.yaml"),
        format!(
            r#"app: shop
services:
  delivery:
    path: services/delivery
    template: rust-http
    port: 8080
    health: {{ liveness: /healthz, readiness: /readyz }}
    replicas: 2
    routes: [/api/deliveries]
    strategy: checked
environments:
  staging: {{ target: kubernetes, context: staging, namespace: default, registry: registry.example.com/shop }}
strategies:
  checked:
    type: canary
    steps:
      - weight: 50
      - analysis: errors
analyses:
  errors:
    metric: prometheus
    query: 'sum(rate(http_requests_total{{service="{{{{service}}}}",version="{{{{version}}}}",status=~"5.."}}[1m]))'
    address: https://localhost:{port}/prom
    threshold: 0.01
    interval: 1s
    count: 1
"#
        ),
    )
    .unwrap();
    let kubeconfig = dir.path().join("config");
    cluster
        .write_kubeconfig(&kubeconfig, "staging", "default")
        .unwrap();
    let run = |tag: &str| {
        common::dronectl()
            .env("KUBECONFIG", &kubeconfig)
            .env("SSL_CERT_FILE", &cert)
            .env("CI", "1")
            .arg("-C")
            .arg(&app)
            .args(["deploy", "delivery", "--env", "staging", "--tag", tag])
            .output()
            .unwrap()
    };
    let out = run("1.0.0");
    common::assert_code(&out, 0);
    let out = run("2.0.0");
    common::assert_code(&out, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec!["GET /prom/api/v1/query?query=sum%28rate%28http_requests_total%7Bservice%3D%22delivery%22%2Cversion%3D%222.0.0%22%2Cstatus%3D%7E%225..%22%7D%5B1m%5D%29%29 HTTP/1.1".to_string()],
        "{}{}",
        common::stdout(&out),
        common::stderr(&out)
    );
}

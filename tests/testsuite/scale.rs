//! Replica counts on Kubernetes (kube-fake): the HorizontalPodAutoscaler of an autoscaled
//! service, the rollout moving it to the revision that becomes stable, server-side apply
//! that never resets what the autoscaler set, and canary splits from the live count.

use crate::common;

use common::kube_setup::{fake, plan, promote_full, revision, timing, SVC};

use std::path::Path;
use std::time::Duration;

use kube::Client;
use kube_fake::FakeCluster;
use serde_json::Value;

use dronectl::events::Collect;
use dronectl::k8s::{KubeEnv, KubeTarget};
use dronectl::manifest::StrategyKind;
use dronectl::rollout::ops::{self, DriveReport};
use dronectl::rollout::{Plan, PlanStep, Revision};

const APP: &str = "tests/fixtures/kube-app/dronectl.yaml";
const NS: &str = "default";

/// The fixture app, with `autoscale` for `delivery` when given.
fn target(client: Client, autoscale: Option<&str>) -> KubeTarget {
    let mut text = std::fs::read_to_string(APP).unwrap();
    if let Some(a) = autoscale {
        text = text.replacen(
            "    routes: [/api/deliveries/public]",
            &format!("    autoscale: {a}\n    routes: [/api/deliveries/public]"),
            1,
        );
    }
    let manifest = dronectl::manifest::parse(Path::new("dronectl.yaml"), &text).unwrap();
    assert!(dronectl::manifest::validate(&manifest)
        .iter()
        .all(|d| d.severity != dronectl::manifest::Severity::Error));
    let kenv = KubeEnv::from_manifest(&manifest, "staging", Some(NS)).unwrap();
    KubeTarget::with_client(manifest, kenv, client)
}

async fn deploy(t: &KubeTarget, rev: Revision, plan: Plan) -> DriveReport {
    common::kube_setup::deploy(t, rev, plan, timing()).await
}

fn deployment_of(c: &FakeCluster, id: &str) -> Value {
    c.list_json("apps", "v1", "deployments", Some(NS))
        .into_iter()
        .find(|d| d["metadata"]["labels"]["dronectl.io/revision"] == id)
        .unwrap_or_else(|| panic!("no Deployment runs {id}"))
}

fn hpa(c: &FakeCluster) -> Value {
    c.get_json("autoscaling", "v2", "horizontalpodautoscalers", NS, SVC)
        .expect("the HorizontalPodAutoscaler")
}

/// Managers owning `.spec.replicas` of a Deployment.
fn replicas_owners(d: &Value) -> Vec<String> {
    d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["fieldsV1"]["f:spec"].get("f:replicas").is_some())
        .map(|m| {
            format!(
                "{}/{}{}",
                m["manager"].as_str().unwrap_or(""),
                m["operation"].as_str().unwrap_or(""),
                m["subresource"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hpa_targets_the_stable_and_a_redeploy_keeps_the_count_it_set() {
    Box::pin(hpa_targets_the_stable()).await;
}

async fn hpa_targets_the_stable() {
    let c = fake().await;
    let t = target(c.kube_client(), Some("{ min: 2, max: 6, cpu: 70 }"));
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let h = hpa(&c);
    assert_eq!(h["spec"]["scaleTargetRef"]["name"], SVC);
    assert_eq!(h["spec"]["scaleTargetRef"]["kind"], "Deployment");
    assert_eq!(
        (
            h["spec"]["minReplicas"].clone(),
            h["spec"]["maxReplicas"].clone()
        ),
        (2.into(), 6.into())
    );
    assert_eq!(
        h["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        70
    );
    let d = deployment_of(&c, &v1.id);
    assert_eq!(d["spec"]["replicas"], 2);
    // dronectl's apply does not own the count; it was set through /scale.
    assert!(
        !replicas_owners(&d).contains(&"dronectl/Apply".to_string()),
        "{:?}",
        replicas_owners(&d)
    );

    // The autoscaler scales the stable to 5.
    c.set_autoscaler_recommendation(NS, SVC, 5);
    wait_for("the HPA to scale to 5", || {
        deployment_of(&c, &v1.id)["spec"]["replicas"] == 5
    })
    .await;
    let d = deployment_of(&c, &v1.id);
    assert!(
        replicas_owners(&d).contains(&"kube-controller-manager/Update/scale".to_string()),
        "{:?}",
        replicas_owners(&d)
    );

    // A new revision rolled natively into the same Deployment keeps the 5 pods.
    let v2 = revision(&t, "2.0.0");
    assert_eq!(v2.autoscale.map(|b| (b.min, b.max)), Some((2, 6)));
    let report = deploy(&t, v2.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let d = deployment_of(&c, &v2.id);
    assert_eq!(d["metadata"]["name"], SVC);
    assert_eq!(
        d["spec"]["replicas"], 5,
        "the apply did not reset the HPA's count"
    );
    assert_eq!(hpa(&c)["spec"]["scaleTargetRef"]["name"], SVC);
    // Preparing again (an unchanged deploy) leaves target and count alone.
    t.platform.prepare(SVC).await.unwrap();
    assert_eq!(deployment_of(&c, &v2.id)["spec"]["replicas"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_sized_from_the_live_count_and_the_hpa_moves_to_the_new_stable() {
    let c = fake().await;
    let t = target(c.kube_client(), Some("{ min: 2, max: 8 }"));
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    c.set_autoscaler_recommendation(NS, SVC, 4);
    wait_for("the HPA to scale to 4", || {
        deployment_of(&c, &v1.id)["spec"]["replicas"] == 4
    })
    .await;

    let v2 = revision(&t, "2.0.0");
    let steps = vec![PlanStep::Weight(20), PlanStep::Pause(None)];
    let report = deploy(&t, v2.clone(), plan(StrategyKind::Canary, steps)).await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    // The stable keeps the autoscaler's 4; one canary pod is 20 % of 5.
    assert_eq!(deployment_of(&c, &v1.id)["spec"]["replicas"], 4);
    assert_eq!(deployment_of(&c, &v2.id)["spec"]["replicas"], 1);
    assert_eq!(hpa(&c)["spec"]["scaleTargetRef"]["name"], SVC);

    promote_full(&t, Duration::from_secs(60)).await;
    let d2 = deployment_of(&c, &v2.id);
    let name = d2["metadata"]["name"].as_str().unwrap().to_string();
    assert_ne!(name, SVC, "the candidate runs beside the old stable");
    assert_eq!(
        d2["spec"]["replicas"], 4,
        "the new stable runs at the live count"
    );
    assert_eq!(hpa(&c)["spec"]["scaleTargetRef"]["name"], name.as_str());
    // The old stable stays warm at the count the autoscaler had given it.
    assert_eq!(deployment_of(&c, &v1.id)["spec"]["replicas"], 4);
}

/// Autoscaling first added after a canary, while the stable runs as `<svc>-<rev>` and the
/// previous version's `<svc>` Deployment waits out its scale-down delay: the new HPA scales
/// the stable (the revision the Service selects), not the Deployment merely named `<svc>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscaling_added_after_a_canary_targets_the_stable_deployment() {
    Box::pin(autoscale_added_after_canary()).await;
}

async fn autoscale_added_after_canary() {
    let c = fake().await;
    let plain = target(c.kube_client(), None);
    let v1 = revision(&plain, "1.0.0");
    let report = deploy(&plain, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let v2 = revision(&plain, "2.0.0");
    let report = deploy(
        &plain,
        v2.clone(),
        plan(StrategyKind::Canary, vec![PlanStep::Weight(50)]),
    )
    .await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let stable = deployment_of(&c, &v2.id)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(stable, SVC, "the canary ran beside `{SVC}`");
    assert_eq!(deployment_of(&c, &v1.id)["metadata"]["name"], SVC);

    // The same revision, now autoscaled (bounds are not part of the revision id).
    let scaled = target(c.kube_client(), Some("{ min: 2, max: 5 }"));
    let report = deploy(
        &scaled,
        revision(&scaled, "2.0.0"),
        Plan::builtin(StrategyKind::Rolling),
    )
    .await;
    assert_eq!(report.outcome, "unchanged", "{}", report.message);
    assert_eq!(
        hpa(&c)["spec"]["scaleTargetRef"]["name"],
        stable.as_str(),
        "the HPA scales the Deployment with the traffic"
    );
    // `rollout status` reports the autoscaler as the cluster has it.
    let view = ops::status(&scaled.platform, &scaled.store, SVC)
        .await
        .unwrap();
    let a = view.autoscaler.expect("the autoscaler in the status");
    assert_eq!(a.name, format!("HorizontalPodAutoscaler/{SVC}"));
    assert_eq!(a.target, format!("Deployment/{stable}"));
    assert_eq!((a.min, a.max), (2, 5));
    assert_eq!(a.metrics, vec!["cpu 80%".to_string()], "the default target");
    wait_for("the HPA's status", || {
        hpa(&c)["status"]["desiredReplicas"].as_u64() == Some(2)
    })
    .await;
    let a = ops::status(&scaled.platform, &scaled.store, SVC)
        .await
        .unwrap()
        .autoscaler
        .unwrap();
    assert_eq!((a.current, a.desired), (2, 2), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_fake_validates_hpas_like_the_real_server() {
    let c = fake().await;
    let client = c.kube_client();
    let api: kube::Api<k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler> =
        kube::Api::namespaced(client, NS);
    for (min, max, message) in [
        (
            0,
            3,
            "spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        ),
        (
            4,
            2,
            "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`",
        ),
    ] {
        let body: k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler =
            serde_json::from_value(serde_json::json!({
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": { "name": "bad" },
                "spec": {
                    "scaleTargetRef": { "apiVersion": "apps/v1", "kind": "Deployment", "name": "x" },
                    "minReplicas": min,
                    "maxReplicas": max,
                }
            }))
            .unwrap();
        let err = api
            .create(&Default::default(), &body)
            .await
            .expect_err("refused");
        let kube::Error::Api(s) = err else {
            panic!("{err:?}")
        };
        assert_eq!(s.code, 422);
        assert!(s.message.contains(message), "{}", s.message);
    }
    // Discovery lists the kind.
    let discovery = kube::Discovery::new(c.kube_client())
        .filter(&["autoscaling"])
        .run()
        .await
        .unwrap();
    assert!(discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .any(|(r, _)| r.kind == "HorizontalPodAutoscaler" && r.version == "v2"));
}

#[test]
fn an_autoscaled_service_renders_an_hpa_and_a_deployment_without_a_count() {
    let text = std::fs::read_to_string(APP).unwrap().replacen(
        "    routes: [/api/deliveries/public]",
        "    autoscale: { min: 2, max: 6, cpu: 70, memory: 80 }\n    routes: [/api/deliveries/public]",
        1,
    );
    let m = dronectl::manifest::parse(Path::new("dronectl.yaml"), &text).unwrap();
    let kenv = KubeEnv::from_manifest(&m, "staging", None).unwrap();
    let images = dronectl::k8s::Images {
        tag: Some("1.4.0-abc1234".into()),
        ..Default::default()
    };
    let services = vec![SVC.to_string()];
    let revisions = images.revisions(&kenv, &m, &services).unwrap();
    let objects = dronectl::k8s::render::render_app(
        &kenv,
        &m,
        &services,
        &revisions,
        dronectl::k8s::RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    );
    let deployment = objects
        .iter()
        .find(|o| o.kind() == "Deployment")
        .unwrap()
        .to_value();
    assert!(deployment["spec"].get("replicas").is_none());
    let shown: Vec<_> = objects
        .into_iter()
        .filter(|o| o.kind() == "HorizontalPodAutoscaler")
        .collect();
    assert_eq!(shown.len(), 1);
    insta::assert_snapshot!(
        "autoscaled_delivery_hpa",
        dronectl::k8s::render::to_yaml(&shown).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_becomes_autoscaled_keeps_its_running_count() {
    Box::pin(becomes_autoscaled()).await;
}

async fn becomes_autoscaled() {
    let c = fake().await;
    // Without autoscale dronectl's apply owns `.spec.replicas` (2).
    let plain = target(c.kube_client(), None);
    let v1 = revision(&plain, "1.0.0");
    let report = deploy(&plain, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let d = deployment_of(&c, &v1.id);
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(replicas_owners(&d).contains(&"dronectl/Apply".to_string()));
    // Now autoscaled from 1: the next apply leaves the count out. Had the field stayed
    // dronectl's alone, the server would drop it and default it to 1.
    let scaled = target(c.kube_client(), Some("{ min: 1, max: 4 }"));
    let v2 = revision(&scaled, "2.0.0");
    let report = deploy(&scaled, v2.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let d = deployment_of(&c, &v2.id);
    assert_eq!(d["spec"]["replicas"], 2, "{:?}", replicas_owners(&d));
    let owners = replicas_owners(&d);
    assert!(
        !owners.contains(&"dronectl/Apply".to_string())
            && owners.contains(&"dronectl-replicas/Apply".to_string()),
        "{owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_sets_the_live_deployments_count_and_the_next_deploy_keeps_it() {
    Box::pin(scale_live()).await;
}

async fn scale_live() {
    let c = fake().await;
    let t = target(c.kube_client(), None);
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing());
    let scaled = Box::pin(ops::scale(&engine, SVC, 3)).await.unwrap();
    assert_eq!((scaled.to, scaled.ready), (3, 3));
    assert_eq!(deployment_of(&c, &v1.id)["spec"]["replicas"], 3);
    // The same manifest again: unchanged, the count stays.
    let report = deploy(
        &t,
        revision(&t, "1.0.0"),
        Plan::builtin(StrategyKind::Rolling),
    )
    .await;
    assert_eq!(report.outcome, "unchanged", "{}", report.message);
    assert_eq!(deployment_of(&c, &v1.id)["spec"]["replicas"], 3);
    // A new version starts at the scaled count.
    let v2 = revision(&t, "1.1.0");
    let report = deploy(&t, v2.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    assert_eq!(deployment_of(&c, &v2.id)["spec"]["replicas"], 3);

    // Refused while a rollout is in progress (a paused canary), nothing changed.
    let v3 = revision(&t, "1.2.0");
    let report = deploy(
        &t,
        v3,
        plan(
            StrategyKind::Canary,
            vec![PlanStep::Weight(50), PlanStep::Pause(None)],
        ),
    )
    .await;
    assert_eq!(report.outcome, "paused", "{}", report.message);
    let err = Box::pin(ops::scale(&engine, SVC, 1)).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("finish it with `dronectl rollout promote|abort delivery`"),
        "{err}"
    );
    assert!(err.is::<dronectl::error::UsageError>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_is_refused_for_an_autoscaled_service() {
    Box::pin(scale_autoscaled()).await;
}

async fn scale_autoscaled() {
    let c = fake().await;
    let t = target(c.kube_client(), Some("{ min: 2, max: 6, cpu: 70 }"));
    let v1 = revision(&t, "1.0.0");
    let report = deploy(&t, v1.clone(), Plan::builtin(StrategyKind::Rolling)).await;
    assert_eq!(report.outcome, "completed", "{}", report.message);
    let reporter = Collect::default();
    let engine = t.engine(&reporter, timing());
    let err = Box::pin(ops::scale(&engine, SVC, 4)).await.unwrap_err();
    assert!(err.is::<dronectl::error::UsageError>());
    assert!(err.to_string().contains("autoscale.min"), "{err}");
    assert_eq!(deployment_of(&c, &v1.id)["spec"]["replicas"], 2);
}

use crate::{deployment, eventually, WAIT};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube_fake::{Behavior, FakeCluster};
use serde_json::json;
use std::time::Duration;

fn progressing(d: &Deployment) -> Option<(String, String)> {
    d.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .map(|c| {
            (
                c.status.clone().unwrap_or_default(),
                c.reason.clone().unwrap_or_default(),
            )
        })
}

async fn wait_complete(deps: &Api<Deployment>, name: &str) -> Deployment {
    tokio::time::timeout(
        WAIT,
        await_condition(deps.clone(), name, conditions::is_deployment_completed()),
    )
    .await
    .expect("deployment completes in time")
    .unwrap()
    .unwrap()
}

fn revision(o: &kube::core::ObjectMeta) -> String {
    o.annotations
        .as_ref()
        .and_then(|a| a.get("deployment.kubernetes.io/revision"))
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_completes_and_undo_reuses_old_replicaset() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let ssa = PatchParams::apply("dronectl");

    deps.patch("web", &ssa, &Patch::Apply(deployment("web", "web:1", 3)))
        .await
        .unwrap();
    let d = wait_complete(&deps, "web").await;
    let st = d.status.clone().unwrap();
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(
        (
            st.replicas,
            st.updated_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(st.unavailable_replicas, None);
    let avail = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Available"))
        .unwrap();
    assert_eq!(
        (avail.status.as_deref(), avail.reason.as_deref()),
        (Some("True"), Some("MinimumReplicasAvailable"))
    );
    assert_eq!(revision(&d.metadata), "1");

    let list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 1);
    let rs1 = list[0].clone();
    let hash = rs1.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        rs1.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    assert_eq!(
        rs1.metadata.owner_references.as_ref().unwrap()[0].uid,
        d.metadata.uid.clone().unwrap()
    );
    // Replaced pods stay Terminating for their grace period: wait until they are gone.
    let ps = eventually("old pods gone", || async {
        let ps = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        ps.iter()
            .all(|p| p.metadata.deletion_timestamp.is_none())
            .then_some(ps)
    })
    .await;
    assert_eq!(ps.len(), 3);
    for p in &ps {
        let s = p.status.as_ref().unwrap();
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert!(s.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(
            p.metadata.owner_references.as_ref().unwrap()[0].name,
            rs1.metadata.name.clone().unwrap()
        );
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["pod-template-hash"],
            hash
        );
    }

    // Roll to a new image.
    let d2 = deps
        .patch("web", &ssa, &Patch::Apply(deployment("web", "web:2", 3)))
        .await
        .unwrap();
    assert_eq!(d2.metadata.generation, Some(2));
    let d2 = eventually("rollout to web:2 complete", || async {
        let d = deps.get("web").await.unwrap();
        let s = d.status.clone()?;
        (s.observed_generation == Some(2)
            && progressing(&d) == Some(("True".into(), "NewReplicaSetAvailable".into()))
            && s.updated_replicas == Some(3)
            && s.replicas == Some(3))
        .then_some(d)
    })
    .await;
    assert_eq!(revision(&d2.metadata), "2");
    let list = rss.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(list.len(), 2);
    let old = list
        .iter()
        .find(|r| r.metadata.name == rs1.metadata.name)
        .unwrap();
    assert_eq!(old.spec.replicas, Some(0));
    // Replaced pods stay Terminating for their grace period: wait until they are gone.
    let ps = eventually("old pods gone", || async {
        let ps = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        ps.iter()
            .all(|p| p.metadata.deletion_timestamp.is_none())
            .then_some(ps)
    })
    .await;
    assert_eq!(ps.len(), 3);
    assert!(ps
        .iter()
        .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("web:2")));

    // Scaling events were recorded against the deployment.
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let evs = events
        .list(&ListParams::default().fields("involvedObject.name=web"))
        .await
        .unwrap()
        .items;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("ScalingReplicaSet")),
        "{evs:?}"
    );

    // Undo: the old template comes back, its ReplicaSet is reused with the next revision.
    deps.patch("web", &ssa, &Patch::Apply(deployment("web", "web:1", 3)))
        .await
        .unwrap();
    let d3 = eventually("undo complete", || async {
        let d = deps.get("web").await.unwrap();
        let s = d.status.clone()?;
        (s.observed_generation == Some(3)
            && progressing(&d) == Some(("True".into(), "NewReplicaSetAvailable".into()))
            && s.replicas == Some(3))
        .then_some(d)
    })
    .await;
    assert_eq!(revision(&d3.metadata), "3");
    let rs1_again = rss
        .get(rs1.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(revision(&rs1_again.metadata), "3");
    assert_eq!(rs1_again.spec.replicas, Some(3));
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_looping_candidate_stalls_rollout_and_reports_backoff() {
    let cluster = FakeCluster::start().await;
    cluster.set_image_behavior(
        "web:bad",
        Behavior::CrashLoop {
            exit_code: 3,
            logs: vec!["starting".into(), "panic: config missing".into()],
        },
    );
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let ssa = PatchParams::apply("dronectl");
    deps.patch("web", &ssa, &Patch::Apply(deployment("web", "web:good", 2)))
        .await
        .unwrap();
    wait_complete(&deps, "web").await;

    cluster.set_progress_deadline_scale(0.005); // 600s → 3s
    deps.patch("web", &ssa, &Patch::Apply(deployment("web", "web:bad", 2)))
        .await
        .unwrap();
    let bad = eventually("crash-looping pod with restarts", || async {
        let ps = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items;
        ps.into_iter().find(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|cs| cs.first())
                .is_some_and(|c| {
                    c.restart_count >= 2
                        && c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                })
        })
    })
    .await;
    let cs = &bad
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert!(!cs.ready);
    let term = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!(term.exit_code, 3);
    assert_eq!(term.reason.as_deref(), Some("Error"));
    assert_eq!(
        bad.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );

    // Logs of the crashing container, with tailLines.
    let name = bad.metadata.name.clone().unwrap();
    let logs = pods.logs(&name, &LogParams::default()).await.unwrap();
    assert_eq!(logs, "starting\npanic: config missing\n");
    let tail = pods
        .logs(
            &name,
            &LogParams {
                tail_lines: Some(1),
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "panic: config missing\n");

    // BackOff events on the pod.
    let events: Api<Event> = Api::default_namespaced(client.clone());
    let evs = eventually("BackOff event", || async {
        let evs = events
            .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
            .await
            .unwrap()
            .items;
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("BackOff"))
            .then_some(evs)
    })
    .await;
    let backoff = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("BackOff"))
        .unwrap();
    assert_eq!(backoff.type_.as_deref(), Some("Warning"));
    assert!(backoff
        .message
        .as_deref()
        .unwrap()
        .contains("Back-off restarting failed container app"));
    assert_eq!(backoff.involved_object.kind.as_deref(), Some("Pod"));

    // The old replica set keeps serving (maxUnavailable 0 for 2 replicas) and the rollout
    // eventually exceeds its (scaled) progress deadline.
    let d = eventually("ProgressDeadlineExceeded", || async {
        let d = deps.get("web").await.unwrap();
        (progressing(&d) == Some(("False".into(), "ProgressDeadlineExceeded".into()))).then_some(d)
    })
    .await;
    let s = d.status.unwrap();
    assert_eq!(s.available_replicas, Some(2));
    assert_eq!(s.updated_replicas, Some(1));
    assert!(s.unavailable_replicas.unwrap_or(0) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_backoff_unschedulable_and_never_ready() {
    let cluster = FakeCluster::start().await;
    cluster.set_image_behavior("typo", Behavior::ImagePullBackOff);
    cluster.set_image_behavior("huge", Behavior::Unschedulable);
    cluster.set_image_behavior("slow", Behavior::NeverReady);
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let events: Api<Event> = Api::default_namespaced(client.clone());
    for (name, image) in [
        ("pull", "registry/typo:1"),
        ("sched", "huge:1"),
        ("slow", "slow:1"),
    ] {
        deps.create(&PostParams::default(), &deployment(name, image, 1))
            .await
            .unwrap();
    }

    let waiting_reason = |p: &Pod| {
        p.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .first()?
            .state
            .as_ref()?
            .waiting
            .as_ref()?
            .reason
            .clone()
    };
    let p = eventually("ImagePullBackOff", || async {
        pods.list(&ListParams::default().labels("app=pull"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
    })
    .await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    let pname = p.metadata.name.clone().unwrap();
    let evs = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pname}")))
        .await
        .unwrap()
        .items;
    let failed: Vec<String> = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Failed"))
        .filter_map(|e| e.message.clone())
        .collect();
    assert!(
        failed
            .iter()
            .any(|m| m.starts_with("Failed to pull image \"registry/typo:1\"")),
        "{failed:?}"
    );
    assert!(
        failed.iter().any(|m| m == "Error: ErrImagePull"),
        "{failed:?}"
    );

    let p = eventually("Unschedulable", || async {
        pods.list(&ListParams::default().labels("app=sched"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            c.type_ == "PodScheduled"
                                && c.status == "False"
                                && c.reason.as_deref() == Some("Unschedulable")
                        })
                    })
            })
    })
    .await;
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Pending"));
    let pname = p.metadata.name.clone().unwrap();
    let evs = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pname}")))
        .await
        .unwrap()
        .items;
    assert!(
        evs.iter()
            .any(|e| e.reason.as_deref() == Some("FailedScheduling")),
        "{evs:?}"
    );

    let p = eventually("running but not ready", || async {
        pods.list(&ListParams::default().labels("app=slow"))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| {
                p.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.first())
                    .is_some_and(|c| {
                        c.state.as_ref().and_then(|s| s.running.as_ref()).is_some() && !c.ready
                    })
            })
    })
    .await;
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let d = deps.get("slow").await.unwrap();
    assert_eq!(d.status.as_ref().unwrap().available_replicas, Some(0));
    assert_ne!(
        progressing(&d).map(|p| p.1),
        Some("NewReplicaSetAvailable".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_deployment_recreate_strategy_and_controller_pause() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let ssa = PatchParams::apply("dronectl");

    // Recreate.
    let mut d = deployment("web", "web:1", 2);
    d.spec.strategy = Some(serde_json::from_value(json!({"type": "Recreate"})).unwrap());
    deps.patch("web", &ssa, &Patch::Apply(&d)).await.unwrap();
    wait_complete(&deps, "web").await;

    // Pause, change the template: no new replica set, Progressing=Unknown/DeploymentPaused.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": true}})),
    )
    .await
    .unwrap();
    d.spec.template.spec.as_mut().unwrap().containers[0].image = Some("web:2".into());
    deps.patch("web", &ssa, &Patch::Apply(&d)).await.unwrap();
    eventually("paused condition", || async {
        let d = deps.get("web").await.unwrap();
        (progressing(&d) == Some(("Unknown".into(), "DeploymentPaused".into()))).then_some(())
    })
    .await;
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    // Resume: rolls out with Recreate (old scaled to zero first).
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"paused": false}})),
    )
    .await
    .unwrap();
    eventually("resumed rollout complete", || async {
        let d = deps.get("web").await.unwrap();
        (progressing(&d) == Some(("True".into(), "NewReplicaSetAvailable".into()))
            && revision(&d.metadata) == "2")
            .then_some(())
    })
    .await;
    let ps = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap()
        .items;
    assert!(ps
        .iter()
        .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("web:2")));

    // With the controller paused nothing happens to a new deployment.
    cluster.pause_controller();
    deps.create(&PostParams::default(), &deployment("frozen", "f:1", 1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(pods
        .list(&ListParams::default().labels("app=frozen"))
        .await
        .unwrap()
        .items
        .is_empty());
    assert!(deps.get("frozen").await.unwrap().status.is_none());
    cluster.resume_controller();
    wait_complete(&deps, "frozen").await;

    // A killed pod is replaced.
    let victim = pods
        .list(&ListParams::default().labels("app=frozen"))
        .await
        .unwrap()
        .items[0]
        .metadata
        .name
        .clone()
        .unwrap();
    assert!(cluster.kill_pod("default", &victim));
    eventually("replacement pod", || async {
        let ps = pods
            .list(&ListParams::default().labels("app=frozen"))
            .await
            .unwrap()
            .items;
        (ps.len() == 1 && ps[0].metadata.name.as_deref() != Some(victim.as_str())).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_gets_ready_status() {
    let cluster = FakeCluster::start().await;
    let sts: Api<StatefulSet> = Api::default_namespaced(cluster.kube_client());
    let s: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 2, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}}}
    }))
    .unwrap();
    sts.create(&PostParams::default(), &s).await.unwrap();
    eventually("statefulset ready", || async {
        let s = sts.get("db").await.unwrap();
        (s.status?.ready_replicas == Some(2)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_stepping_is_deterministic() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let deps: Api<Deployment> = Api::default_namespaced(cluster.kube_client());
    deps.create(&PostParams::default(), &deployment("web", "web:1", 2))
        .await
        .unwrap();
    // tick 1: RS created and scaled, pods created (ContainerCreating); then running; then ready.
    cluster.step(1);
    let pods = cluster.list_json("", "v1", "pods", Some("default"));
    assert_eq!(pods.len(), 2);
    assert_eq!(
        pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"],
        "ContainerCreating"
    );
    assert!(
        deps.get("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .available_replicas
            == Some(0)
    );
    cluster.step(8);
    let d = deps.get("web").await.unwrap();
    assert_eq!(
        progressing(&d),
        Some(("True".into(), "NewReplicaSetAvailable".into()))
    );
    assert_eq!(d.status.unwrap().available_replicas, Some(2));
}

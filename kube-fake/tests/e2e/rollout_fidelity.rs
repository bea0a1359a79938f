//! Rollout behaviour a real cluster has and a client must wait for: pods take time to
//! become ready, deleted pods stay `Terminating` for a while, StatefulSets replace their
//! pods one at a time from the highest ordinal, and the controllers' status fields say
//! where a rollout stands.

use crate::deployment;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_fake::FakeCluster;
use serde_json::{json, Value};

fn pods(cluster: &FakeCluster) -> Vec<Value> {
    cluster.list_json("", "v1", "pods", Some("default"))
}

fn ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn terminating(p: &Value) -> bool {
    p["metadata"].get("deletionTimestamp").is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_are_not_ready_at_once_by_default() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let deps: Api<Deployment> = Api::default_namespaced(cluster.kube_client());
    deps.create(&PostParams::default(), &deployment("web", "web:1", 1))
        .await
        .unwrap();
    // Six ticks (300 ms at the default tick) after starting, not before.
    cluster.step(6);
    assert!(!ready(&pods(&cluster)[0]), "ready too early");
    let st = deps.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.available_replicas, Some(0));
    assert_eq!(st.updated_replicas, Some(1));
    cluster.step(2);
    assert!(ready(&pods(&cluster)[0]));
    let st = deps.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.available_replicas, Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_down_pods_terminate_gracefully() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    cluster.set_termination_ticks(3);
    let deps: Api<Deployment> = Api::default_namespaced(cluster.kube_client());
    deps.create(&PostParams::default(), &deployment("web", "web:1", 2))
        .await
        .unwrap();
    cluster.step(10);
    assert_eq!(pods(&cluster).iter().filter(|p| ready(p)).count(), 2);
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    cluster.step(1);
    let all = pods(&cluster);
    assert_eq!(all.len(), 2, "the scaled-down pod is still there");
    let dying: Vec<&Value> = all.iter().filter(|p| terminating(p)).collect();
    assert_eq!(dying.len(), 1);
    assert_eq!(dying[0]["metadata"]["deletionGracePeriodSeconds"], 30);
    cluster.step(1);
    let all = pods(&cluster);
    let dying = all.iter().find(|p| terminating(p)).unwrap();
    assert!(!ready(dying), "a terminating pod is not ready");
    let rs = &cluster.list_json("apps", "v1", "replicasets", Some("default"))[0];
    assert_eq!(rs["status"]["replicas"], 1, "{rs}");
    assert_eq!(rs["status"]["terminatingReplicas"], 1, "{rs}");
    let st = deps.get("web").await.unwrap().status.unwrap();
    assert_eq!((st.replicas, st.available_replicas), (Some(1), Some(1)));
    assert_eq!(st.terminating_replicas, Some(1));
    cluster.step(3);
    assert_eq!(pods(&cluster).len(), 1, "gone after its grace period");
    let st = deps.get("web").await.unwrap().status.unwrap();
    assert_eq!(st.terminating_replicas, None);
}

fn statefulset(image: &str) -> StatefulSet {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"replicas": 3, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": image}]}}}
    }))
    .unwrap()
}

/// (ordinal name, revision, ready, terminating) of every pod.
fn sts_pods(cluster: &FakeCluster) -> Vec<(String, String, bool, bool)> {
    pods(cluster)
        .iter()
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                p["metadata"]["labels"]["controller-revision-hash"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                ready(p),
                terminating(p),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pods_start_in_order_and_roll_from_the_highest_ordinal() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    cluster.set_termination_ticks(2);
    let api: Api<StatefulSet> = Api::default_namespaced(cluster.kube_client());
    api.create(&PostParams::default(), &statefulset("redis:7.0"))
        .await
        .unwrap();
    // OrderedReady: db-1 only once db-0 is ready.
    cluster.step(1);
    assert_eq!(sts_pods(&cluster).len(), 1);
    cluster.step(5);
    assert_eq!(sts_pods(&cluster).len(), 1, "db-1 waits for db-0");
    let mut ticks = 0;
    while api
        .get("db")
        .await
        .unwrap()
        .status
        .is_none_or(|s| s.ready_replicas != Some(3))
    {
        cluster.step(1);
        ticks += 1;
        assert!(ticks < 100, "never ready: {:?}", sts_pods(&cluster));
    }
    let s = api.get("db").await.unwrap().status.unwrap();
    let first = s.update_revision.clone().unwrap();
    assert_eq!(s.current_revision.as_deref(), Some(first.as_str()));
    assert_eq!((s.updated_replicas, s.current_replicas), (Some(3), Some(3)));
    let names: Vec<String> = sts_pods(&cluster).into_iter().map(|p| p.0).collect();
    assert_eq!(names, ["db-0", "db-1", "db-2"]);

    // A new image: one pod at a time, db-2 first, current revision kept until the end.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "db", "image": "redis:7.2"}]}}}})),
    )
    .await
    .unwrap();
    let mut replaced = vec![];
    let mut saw_mid_rollout_status = false;
    for _ in 0..200 {
        cluster.step(1);
        let now = sts_pods(&cluster);
        let dying: Vec<&String> = now.iter().filter(|p| p.3).map(|p| &p.0).collect();
        assert!(dying.len() <= 1, "one pod at a time: {now:?}");
        if let Some(d) = dying.first() {
            if replaced.last() != Some(*d) {
                replaced.push((*d).clone());
            }
        }
        let s = api.get("db").await.unwrap();
        let st = s.status.unwrap();
        assert_eq!(st.observed_generation, Some(2));
        if st.update_revision.as_deref() != Some(first.as_str())
            && st.current_revision.as_deref() == Some(first.as_str())
            && st.updated_replicas.unwrap_or(0) < 3
        {
            saw_mid_rollout_status = true;
        }
        if st.current_revision == st.update_revision && st.ready_replicas == Some(3) {
            break;
        }
    }
    assert_eq!(replaced, ["db-2", "db-1", "db-0"]);
    assert!(saw_mid_rollout_status);
    let st = api.get("db").await.unwrap().status.unwrap();
    assert_ne!(st.update_revision.as_deref(), Some(first.as_str()));
    assert_eq!(st.current_revision, st.update_revision);
    assert_eq!(
        (st.updated_replicas, st.current_replicas),
        (Some(3), Some(3))
    );
    assert!(sts_pods(&cluster)
        .iter()
        .all(|p| Some(&p.1) == st.update_revision.as_ref() && p.2));
}

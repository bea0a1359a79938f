//! Simulated controllers, one file per controller: [`deployment`] (rolling update / recreate,
//! revisions, conditions), [`replicaset`] (pods), [`statefulset`] (ordinal pods, OrderedReady,
//! rolling replacement from the highest ordinal, revisions), [`hpa`] (the metrics-free
//! HorizontalPodAutoscaler decisions), [`gc`] (the garbage collector) and [`kubelet`] (pod
//! status by image behaviour, events, logs, graceful termination). [`events`] and [`pod`] hold
//! what several of them share. Tick-based, all under the store lock; each controller reads the
//! stored JSON into its `k8s-openapi` type and writes typed status back.

mod deployment;
mod events;
mod gc;
mod hpa;
mod kubelet;
mod pod;
mod replicaset;
mod statefulset;

use crate::store::{owned_by, State};
use crate::types::ResourceType;
use crate::util::{self, name_of, str_at};
use crate::{Behavior, Shared};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug)]
pub(crate) struct Sim {
    pub tick_no: u64,
    /// Ticks a pod stays `Terminating` (deletionTimestamp set) before it disappears.
    pub termination_ticks: u64,
    pods: HashMap<String, kubelet::PodSim>,
    deploys: HashMap<String, deployment::DeploySim>,
    /// (namespace, involved uid, reason, message) → (event name, tick of last emission)
    events: HashMap<(String, String, String, String), (String, u64)>,
    /// What the metrics would make each HorizontalPodAutoscaler ("ns/name") want, set by a
    /// test ([`crate::FakeCluster::set_autoscaler_recommendation`]); no metrics are invented.
    pub hpa_recommendations: HashMap<String, i64>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            tick_no: 0,
            termination_ticks: 5,
            pods: HashMap::new(),
            deploys: HashMap::new(),
            events: HashMap::new(),
            hpa_recommendations: HashMap::new(),
        }
    }
}

impl Sim {
    pub(crate) fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.deploys.remove(uid);
    }

    pub(crate) fn container_logs(
        &self,
        knobs: &crate::store::Knobs,
        _uid: &str,
        pod: &Value,
        container: &str,
        image: &str,
    ) -> Vec<String> {
        if let Behavior::CrashLoop { logs, .. } = behavior_for(knobs, image) {
            return logs;
        }
        if let Some((_, lines)) = knobs
            .logs
            .iter()
            .filter(|(s, _)| image.contains(s.as_str()))
            .max_by_key(|(s, _)| s.len())
        {
            return lines.clone();
        }
        vec![
            format!(
                "kube-fake: container {container} (image {image}) of pod {} started",
                name_of(pod)
            ),
            "kube-fake: listening".to_string(),
        ]
    }
}

pub(crate) fn behavior_for(knobs: &crate::store::Knobs, image: &str) -> Behavior {
    knobs
        .behaviors
        .iter()
        .filter(|(s, _)| image.contains(s.as_str()))
        .max_by_key(|(s, _)| s.len())
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| knobs.default_behavior.clone())
}

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let tick = shared.lock().knobs.tick;
        tokio::time::sleep(tick).await;
        let mut st = shared.lock();
        if st.knobs.controller_paused {
            continue;
        }
        tick_once(&mut st);
    }
}

fn ty(st: &State, group: &str, plural: &str) -> ResourceType {
    st.type_by_plural(group, plural).expect("built-in type")
}

pub(crate) fn tick_once(st: &mut State) {
    st.sim.tick_no += 1;
    gc::garbage_collector(st);
    deployment::deployments(st);
    replicaset::replicasets(st);
    kubelet::kubelet(st);
    replicaset::replicaset_status(st);
    deployment::deployment_status(st);
    statefulset::statefulsets(st);
    hpa::autoscalers(st);
}

/// The objects of a type in `ns` that `uid` owns, oldest (lowest resourceVersion) first.
fn owned_list(st: &State, rt: &ResourceType, ns: &str, uid: &str) -> Vec<Value> {
    let mut v: Vec<Value> = st
        .list(rt, Some(ns))
        .into_iter()
        .filter(|o| owned_by(o, uid))
        .collect();
    v.sort_by_key(|o| {
        str_at(o, "metadata.resourceVersion")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    });
    v
}

/// A stored object read as its `k8s-openapi` type. The store only holds built-in objects that
/// went through that type (see `typed.rs`), so this fails only for an object written around
/// the API; the controller then leaves it alone, as the real one would not see it either.
fn typed<T: DeserializeOwned>(v: &Value) -> Option<T> {
    match serde_json::from_value(v.clone()) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("kube-fake controller: {} does not decode: {e}", name_of(v));
            None
        }
    }
}

/// The stored objects of a type, each with its `k8s-openapi` form, for one controller pass
/// (an object that does not decode is left alone, see [`typed`]).
fn decoded<T: DeserializeOwned>(st: &State, rt: &ResourceType) -> Vec<(Value, T)> {
    st.list(rt, None)
        .into_iter()
        .filter_map(|raw| typed(&raw).map(|t| (raw, t)))
        .collect()
}

/// `obj` (stored JSON) with its `status` replaced by the typed `status`.
fn with_status<S: Serialize>(obj: &Value, status: &S) -> Value {
    let mut cur = obj.clone();
    cur["status"] = serde_json::to_value(status).expect("status serializes");
    cur
}

/// A controller's status write: the typed `status` into the stored `obj`, unless it equals
/// the `current` one (then nothing is written: no new resourceVersion, no watch event).
fn write_status<S: Serialize + PartialEq>(
    st: &mut State,
    rt: &ResourceType,
    obj: &Value,
    current: Option<&S>,
    status: &S,
) {
    if current != Some(status) {
        st.write_internal(rt, with_status(obj, status));
    }
}

/// Now, as a `metav1.Time` (second precision, like the API server's).
fn now_time() -> Time {
    Time(
        util::now_rfc3339()
            .parse()
            .expect("now_rfc3339 is RFC 3339"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteOpts;
    use serde_json::json;

    fn workload(kind: &str, name: &str, replicas: i64) -> Value {
        let mut spec = json!({
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": format!("{name}:1")}]},
            },
        });
        if kind == "StatefulSet" {
            spec["serviceName"] = json!(name);
        }
        json!({
            "apiVersion": "apps/v1",
            "kind": kind,
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        })
    }

    /// Typed status written back must compare equal to what is stored, or every tick would
    /// write (a new resourceVersion and a watch event) although nothing changed.
    #[test]
    fn a_settled_cluster_is_not_written_to() {
        let mut st = State::new();
        let dt = ty(&st, "apps", "deployments");
        let sst = ty(&st, "apps", "statefulsets");
        let ht = ty(&st, "autoscaling", "horizontalpodautoscalers");
        let opts = WriteOpts::default();
        st.create(&dt, "default", workload("Deployment", "web", 2), &opts)
            .expect("deployment");
        st.create(&sst, "default", workload("StatefulSet", "db", 2), &opts)
            .expect("statefulset");
        let hpa = json!({
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 2,
                "maxReplicas": 4,
            },
        });
        st.create(&ht, "default", hpa, &opts).expect("hpa");
        for _ in 0..60 {
            tick_once(&mut st);
        }
        let d = st.get(&dt, "default", "web").expect("deployment").clone();
        assert_eq!(d.pointer("/status/availableReplicas"), Some(&json!(2)));
        assert_eq!(
            d.pointer("/status/conditions/1/reason"),
            Some(&json!("NewReplicaSetAvailable"))
        );
        let s = st.get(&sst, "default", "db").expect("statefulset").clone();
        assert_eq!(s.pointer("/status/readyReplicas"), Some(&json!(2)));
        let h = st.get(&ht, "default", "web").expect("hpa").clone();
        assert_eq!(h.pointer("/status/desiredReplicas"), Some(&json!(2)));
        let rv = st.rv;
        for _ in 0..20 {
            tick_once(&mut st);
        }
        assert_eq!(st.rv, rv, "a settled cluster was written to");
    }
}

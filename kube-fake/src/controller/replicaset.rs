//! The ReplicaSet controller: pods from the template up to `spec.replicas` (not-ready and
//! youngest removed first, gracefully), and the ReplicaSet's status.

use super::events::normal_event;
use super::pod::{begin_termination, pod_from_template, pod_ready, terminating};
use super::{decoded, owned_list, ty, write_status};
use crate::store::State;
use crate::util::{name_of, str_at};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use serde_json::Value;

/// The events' source.
const COMPONENT: &str = "replicaset-controller";

pub(super) fn replicasets(st: &mut State) {
    let rst = ty(st, "apps", "replicasets");
    let pt = ty(st, "", "pods");
    for (raw, rs) in decoded::<ReplicaSet>(st, &rst) {
        // Like the real controllers: nothing is created for an object being deleted.
        if rs.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = rs.metadata.namespace.clone().unwrap_or_default();
        let name = rs.metadata.name.clone().unwrap_or_default();
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let spec = &rs.spec;
        let want = spec.replicas.unwrap_or(1).max(0) as usize;
        // Like the real controller, only active pods count: a terminating pod is replaced.
        let mut pods: Vec<Value> = owned_list(st, &pt, &ns, &uid)
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
        if pods.len() < want {
            let template = spec.template.clone().unwrap_or_default();
            for _ in pods.len()..want {
                let mut pod = pod_from_template(&template, "ReplicaSet", &name, &uid);
                pod.metadata.generate_name = Some(format!("{name}-"));
                pod.metadata.namespace = Some(ns.clone());
                let pod = serde_json::to_value(pod).expect("pod serializes");
                if let Some(p) = st.create_internal(&pt, pod) {
                    let msg = format!("Created pod: {}", name_of(&p));
                    normal_event(st, &raw, "SuccessfulCreate", &msg, COMPONENT);
                }
            }
        } else if pods.len() > want {
            // Delete not-ready pods first, then the youngest.
            pods.sort_by_key(|p| {
                (
                    pod_ready(p),
                    std::cmp::Reverse(
                        str_at(p, "metadata.resourceVersion")
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0),
                    ),
                )
            });
            let n = pods.len() - want;
            for p in pods.iter().take(n) {
                if begin_termination(st, &pt, p) {
                    let msg = format!("Deleted pod: {}", name_of(p));
                    normal_event(st, &raw, "SuccessfulDelete", &msg, COMPONENT);
                }
            }
        }
    }
}

pub(super) fn replicaset_status(st: &mut State) {
    let rst = ty(st, "apps", "replicasets");
    let pt = ty(st, "", "pods");
    for (raw, rs) in decoded::<ReplicaSet>(st, &rst) {
        let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
        let uid = rs.metadata.uid.as_deref().unwrap_or_default();
        let (pods, gone): (Vec<Value>, Vec<Value>) = owned_list(st, &pt, ns, uid)
            .into_iter()
            .partition(|p| !terminating(p));
        let ready = pods.iter().filter(|p| pod_ready(p)).count() as i32;
        let status = ReplicaSetStatus {
            replicas: pods.len() as i32,
            fully_labeled_replicas: Some(pods.len() as i32),
            ready_replicas: Some(ready),
            available_replicas: Some(ready),
            observed_generation: Some(rs.metadata.generation.unwrap_or(1)),
            terminating_replicas: (!gone.is_empty()).then_some(gone.len() as i32),
            conditions: None,
        };
        write_status(st, &rst, &raw, rs.status.as_ref(), &status);
    }
}

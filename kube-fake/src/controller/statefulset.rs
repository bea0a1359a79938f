//! The StatefulSet controller.

use super::events::normal_event;
use super::pod::{begin_termination, pod_from_template, pod_ready, terminating};
use super::{decoded, owned_list, ty, write_status};
use crate::store::State;
use crate::types::ResourceType;
use crate::util::{name_of, stable_hash};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use serde_json::Value;

const STS_REVISION: &str = "controller-revision-hash";

/// The events' source.
const COMPONENT: &str = "statefulset-controller";

fn ordinal(sts: &str, pod: &Value) -> Option<i64> {
    name_of(pod)
        .strip_prefix(sts)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
}

fn pod_revision(pod: &Value) -> &str {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(STS_REVISION))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn sts_pod(set: &StatefulSet, ord: i64, revision: &str) -> Value {
    let sname = set.metadata.name.as_deref().unwrap_or_default();
    let name = format!("{sname}-{ord}");
    let uid = set.metadata.uid.as_deref().unwrap_or_default();
    let mut pod = pod_from_template(&set.spec.template, "StatefulSet", sname, uid);
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(STS_REVISION.into(), revision.into());
    labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
    labels.insert("apps.kubernetes.io/pod-index".into(), ord.to_string());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.hostname = Some(name);
    if let Some(svc) = &set.spec.service_name {
        spec.subdomain = Some(svc.clone());
    }
    serde_json::to_value(pod).expect("pod serializes")
}

/// Starts the graceful deletion of a StatefulSet's pod, with the controller's event (nothing
/// when it is terminating already).
fn delete_stateful_pod(st: &mut State, pt: &ResourceType, set: &Value, sname: &str, pod: &Value) {
    if begin_termination(st, pt, pod) {
        let msg = format!(
            "delete Pod {} in StatefulSet {sname} successful",
            name_of(pod)
        );
        normal_event(st, set, "SuccessfulDelete", &msg, COMPONENT);
    }
}

/// The StatefulSet controller with `podManagementPolicy: OrderedReady` (parallel is treated
/// the same) and the `RollingUpdate` strategy: pods `<name>-<ordinal>` are created one at a
/// time in order, each only once the ones before it are Running and Ready; surplus pods are
/// removed from the highest ordinal down; after a template change the pods whose revision
/// differs are replaced one at a time, highest ordinal first, each after the others are
/// ready again. `currentRevision` becomes `updateRevision` only once every pod runs the
/// update revision and is ready. `OnDelete` replaces nothing; `partition` is honoured.
pub(super) fn statefulsets(st: &mut State) {
    let sst = ty(st, "apps", "statefulsets");
    let pt = ty(st, "", "pods");
    for (raw, set) in decoded::<StatefulSet>(st, &sst) {
        // Like the real controllers: nothing is created for an object being deleted.
        if set.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ns = set.metadata.namespace.clone().unwrap_or_default();
        let sname = set.metadata.name.clone().unwrap_or_default();
        let uid = set.metadata.uid.clone().unwrap_or_default();
        let replicas = i64::from(set.spec.replicas.unwrap_or(1)).max(0);
        let template = raw
            .pointer("/spec/template")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let update_rev = format!("{sname}-{}", &stable_hash(&template)[..10]);
        let current_rev = set
            .status
            .as_ref()
            .and_then(|s| s.current_revision.clone())
            .unwrap_or_else(|| update_rev.clone());
        let strategy = set.spec.update_strategy.clone().unwrap_or_default();
        let on_delete = strategy.type_.as_deref() == Some("OnDelete");
        let partition = i64::from(
            strategy
                .rolling_update
                .and_then(|r| r.partition)
                .unwrap_or(0),
        );
        let mut pods: Vec<(i64, Value)> = owned_list(st, &pt, &ns, &uid)
            .into_iter()
            .filter_map(|p| ordinal(&sname, &p).map(|o| (o, p)))
            .collect();
        pods.sort_by_key(|(o, _)| *o);
        let healthy = |p: &Value| !terminating(p) && pod_ready(p);
        // Scale up: the first missing ordinal, once every lower one is ready.
        let mut acted = false;
        for ord in 0..replicas {
            match pods.iter().find(|(o, _)| *o == ord) {
                Some((_, p)) if healthy(p) => continue,
                Some(_) => {
                    acted = true;
                    break;
                }
                None => {
                    let rev = if ord < partition {
                        current_rev.as_str()
                    } else {
                        update_rev.as_str()
                    };
                    if let Some(p) = st.create_internal(&pt, sts_pod(&set, ord, rev)) {
                        let msg = format!(
                            "create Pod {} in StatefulSet {sname} successful",
                            name_of(&p)
                        );
                        normal_event(st, &raw, "SuccessfulCreate", &msg, COMPONENT);
                    }
                    acted = true;
                    break;
                }
            }
        }
        // Scale down: the highest surplus ordinal, once everything else is ready.
        if !acted {
            if let Some((_, p)) = pods.iter().rev().find(|(o, _)| *o >= replicas) {
                delete_stateful_pod(st, &pt, &raw, &sname, p);
                acted = true;
            }
        }
        // Rolling update: the highest ordinal not on the update revision.
        if !acted && !on_delete && !pods.iter().any(|(_, p)| terminating(p)) {
            if let Some((_, p)) = pods
                .iter()
                .rev()
                .find(|(o, p)| *o < replicas && *o >= partition && pod_revision(p) != update_rev)
            {
                delete_stateful_pod(st, &pt, &raw, &sname, p);
            }
        }
        // Status, counted like the real controller.
        let pods = owned_list(st, &pt, &ns, &uid);
        let created = pods.len() as i64;
        let ready = pods.iter().filter(|p| healthy(p)).count() as i64;
        let live: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
        let current = live
            .iter()
            .filter(|p| pod_revision(p) == current_rev)
            .count() as i64;
        let updated = live
            .iter()
            .filter(|p| pod_revision(p) == update_rev)
            .count() as i64;
        let (current_rev, current) =
            if updated == replicas && ready == replicas && created == replicas {
                (update_rev.clone(), updated)
            } else {
                (current_rev, current)
            };
        let status = StatefulSetStatus {
            observed_generation: Some(set.metadata.generation.unwrap_or(1)),
            replicas: created as i32,
            ready_replicas: Some(ready as i32),
            current_replicas: Some(current as i32),
            updated_replicas: Some(updated as i32),
            available_replicas: Some(ready as i32),
            current_revision: Some(current_rev),
            update_revision: Some(update_rev),
            collision_count: Some(0),
            conditions: None,
        };
        write_status(st, &sst, &raw, set.status.as_ref(), &status);
    }
}

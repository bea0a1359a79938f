//! What several controllers need to know about pods and conditions: readiness, graceful
//! deletion, and conditions that keep their transition time.

use crate::store::{mark_for_deletion, State};
use crate::types::ResourceType;
use crate::util::i64_at;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::Value;

/// The `ownerReferences` entry a controller of `kind` (apps/v1) sets on what it creates.
pub(super) fn controller_ref(kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: kind.into(),
        name: name.into(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A pod from a controller's template: its labels, annotations and spec, owned by the
/// controller (name and namespace are the caller's).
pub(super) fn pod_from_template(
    template: &PodTemplateSpec,
    kind: &str,
    name: &str,
    uid: &str,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            labels: meta.labels,
            annotations: meta.annotations,
            owner_references: Some(vec![controller_ref(kind, name, uid)]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

pub(super) fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Whether a graceful deletion of the pod has begun (`metadata.deletionTimestamp`).
pub(crate) fn terminating(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some()
}

/// Deletes a pod the way the API server does for a DELETE with the default grace period:
/// `deletionTimestamp` = now + `terminationGracePeriodSeconds` (default 30) and
/// `deletionGracePeriodSeconds`; the pod stays (`Terminating`) until the kubelet has
/// stopped it ([`Sim::termination_ticks`] later), then it is removed.
pub(super) fn begin_termination(st: &mut State, pt: &ResourceType, pod: &Value) -> bool {
    if terminating(pod) {
        return false;
    }
    let grace = i64_at(pod, "spec.terminationGracePeriodSeconds").unwrap_or(30);
    let mut cur = pod.clone();
    mark_for_deletion(&mut cur, grace);
    st.write_internal(pt, cur).is_some()
}

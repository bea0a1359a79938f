//! What the real API server's Go types do to an object of a built-in kind on its way in:
//! the body is decoded into a Go struct and encoded again, so
//!
//! * unknown fields disappear (dropped with a warning by default, refused with
//!   `fieldValidation=Strict`, and always refused by server-side apply), and
//! * empty lists and maps of `omitempty` fields disappear (`ingress: []`, `labels: {}`), while
//!   required ones (`containers: []`) and structs (`podSelector: {}`, `emptyDir: {}`) stay.
//!
//! kube-fake finds out which field is which by round-tripping the object through its
//! k8s-openapi type (generated from the same OpenAPI schema): a field the type drops is unknown;
//! an empty list or map the type does not bring back when removed is optional (`omitempty`); an
//! empty object that keeps a probe key is a map, one that drops it is a struct. Custom
//! resources (CRDs, the Gateway API) are stored as sent, as the real server does for them.

use k8s_openapi::api::{
    apps, autoscaling, batch, coordination, core, events, networking, policy, rbac,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions;
use serde_json::{Map, Value};

/// One step into a JSON document.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

type Path = Vec<Step>;

const PROBE: &str = "kube-fake-probe";

fn via<T: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Option<Value> {
    let typed: T = serde_json::from_value(v.clone()).ok()?;
    serde_json::to_value(typed).ok()
}

/// `obj` decoded into and encoded from its k8s-openapi type; `None` for kinds without one (or a
/// body that does not decode, which is left alone).
fn round_trip(obj: &Value) -> Option<Value> {
    let av = obj.get("apiVersion")?.as_str()?;
    let kind = obj.get("kind")?.as_str()?;
    macro_rules! table {
        ($($av:literal $kind:literal => $t:ty),* $(,)?) => {
            match (av, kind) {
                $(($av, $kind) => via::<$t>(obj),)*
                _ => None,
            }
        };
    }
    table! {
        "v1" "Namespace" => core::v1::Namespace,
        "v1" "ConfigMap" => core::v1::ConfigMap,
        "v1" "Secret" => core::v1::Secret,
        "v1" "Service" => core::v1::Service,
        "v1" "ServiceAccount" => core::v1::ServiceAccount,
        "v1" "Pod" => core::v1::Pod,
        "v1" "Event" => core::v1::Event,
        "v1" "Endpoints" => core::v1::Endpoints,
        "v1" "PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "v1" "ResourceQuota" => core::v1::ResourceQuota,
        "v1" "LimitRange" => core::v1::LimitRange,
        "v1" "Node" => core::v1::Node,
        "apps/v1" "Deployment" => apps::v1::Deployment,
        "apps/v1" "ReplicaSet" => apps::v1::ReplicaSet,
        "apps/v1" "StatefulSet" => apps::v1::StatefulSet,
        "apps/v1" "DaemonSet" => apps::v1::DaemonSet,
        "apps/v1" "ControllerRevision" => apps::v1::ControllerRevision,
        "batch/v1" "Job" => batch::v1::Job,
        "batch/v1" "CronJob" => batch::v1::CronJob,
        "policy/v1" "PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "networking.k8s.io/v1" "NetworkPolicy" => networking::v1::NetworkPolicy,
        "networking.k8s.io/v1" "Ingress" => networking::v1::Ingress,
        "networking.k8s.io/v1" "IngressClass" => networking::v1::IngressClass,
        "autoscaling/v2" "HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "coordination.k8s.io/v1" "Lease" => coordination::v1::Lease,
        "events.k8s.io/v1" "Event" => events::v1::Event,
        "rbac.authorization.k8s.io/v1" "Role" => rbac::v1::Role,
        "rbac.authorization.k8s.io/v1" "RoleBinding" => rbac::v1::RoleBinding,
        "rbac.authorization.k8s.io/v1" "ClusterRole" => rbac::v1::ClusterRole,
        "rbac.authorization.k8s.io/v1" "ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "apiextensions.k8s.io/v1" "CustomResourceDefinition" => apiextensions::v1::CustomResourceDefinition,
    }
}

fn get<'a>(v: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, s| match s {
        Step::Key(k) => cur.get(k.as_str()),
        Step::Index(i) => cur.get(*i),
    })
}

fn get_mut<'a>(v: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |cur, s| match s {
        Step::Key(k) => cur.get_mut(k.as_str()),
        Step::Index(i) => cur.get_mut(*i),
    })
}

/// Removes the value at `path` (an object key; list items are never removed).
fn remove(v: &mut Value, path: &[Step]) {
    if let Some((Step::Key(k), parent)) = path.split_last() {
        if let Some(m) = get_mut(v, parent).and_then(Value::as_object_mut) {
            m.remove(k);
        }
    }
}

/// Every path below `v` (pre-order), skipping `metadata.managedFields` (raw FieldsV1).
fn walk(v: &Value, path: &mut Path, out: &mut Vec<Path>) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                if path.len() == 1
                    && path[0] == Step::Key("metadata".into())
                    && k == "managedFields"
                {
                    continue;
                }
                path.push(Step::Key(k.clone()));
                out.push(path.clone());
                walk(c, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                path.push(Step::Index(i));
                out.push(path.clone());
                walk(c, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn is_empty_collection(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// The fields of `obj` that its built-in type does not know (outermost ones only); empty for
/// kinds without a type.
fn unknown_paths(obj: &Value) -> Vec<Path> {
    let Some(back) = round_trip(obj) else {
        return vec![];
    };
    let mut paths = vec![];
    walk(obj, &mut vec![], &mut paths);
    let mut out: Vec<Path> = vec![];
    for p in paths {
        if get(obj, &p).is_some_and(Value::is_null) || get(&back, &p).is_some() {
            continue;
        }
        if out.iter().any(|o| p.starts_with(o)) {
            continue;
        }
        out.push(p);
    }
    out
}

/// Unknown fields as server-side apply's typed conversion reports them
/// (`.spec.template.spec.containers[name="app"].foo`).
pub(crate) fn unknown_fields(obj: &Value) -> Vec<String> {
    unknown_paths(obj)
        .iter()
        .map(|p| {
            let mut s = String::new();
            for (i, step) in p.iter().enumerate() {
                match step {
                    Step::Key(k) => {
                        s.push('.');
                        s.push_str(k);
                    }
                    Step::Index(n) => {
                        let name = get(obj, &p[..=i])
                            .and_then(|it| it.get("name"))
                            .and_then(Value::as_str);
                        match name {
                            Some(name) => s.push_str(&format!("[name={}]", Value::from(name))),
                            None => s.push_str(&format!("[{n}]")),
                        }
                    }
                }
            }
            s
        })
        .collect()
}

/// Unknown fields as strict decoding reports them (`spec.template.spec.containers[0].foo`).
pub(crate) fn unknown_fields_strict(obj: &Value) -> Vec<String> {
    unknown_paths(obj)
        .iter()
        .map(|p| {
            let mut s = String::new();
            for step in p {
                match step {
                    Step::Key(k) => {
                        if !s.is_empty() {
                            s.push('.');
                        }
                        s.push_str(k);
                    }
                    Step::Index(n) => s.push_str(&format!("[{n}]")),
                }
            }
            s
        })
        .collect()
}

/// `obj` as the real server stores it: unknown fields, nulls and the empty lists and maps of
/// optional (`omitempty`) fields removed. Objects of kinds without a type are returned as sent.
pub(crate) fn normalize(obj: &Value) -> Value {
    let Some(back) = round_trip(obj) else {
        return obj.clone();
    };
    let mut paths = vec![];
    walk(obj, &mut vec![], &mut paths);
    let mut drop: Vec<Path> = vec![];
    for p in paths {
        if drop.iter().any(|d| p.starts_with(d)) {
            continue;
        }
        // Only object fields go; list items and map entries always stay.
        if !matches!(p.last(), Some(Step::Key(_))) {
            continue;
        }
        let Some(v) = get(obj, &p) else { continue };
        if get(&back, &p).is_none() {
            // Unknown (or null): the Go struct has nowhere to put it.
            drop.push(p);
            continue;
        }
        if !is_empty_collection(v) || parent_is_map(obj, &p) {
            continue;
        }
        if v.is_object() && !holds_probe(obj, &p) {
            // A struct (`podSelector: {}`, `emptyDir: {}`): encoded even when empty.
            continue;
        }
        let mut without = obj.clone();
        remove(&mut without, &p);
        let required = round_trip(&without).is_some_and(|b| get(&b, &p).is_some());
        if !required {
            drop.push(p);
        }
    }
    let mut out = obj.clone();
    for p in drop.iter().rev() {
        remove(&mut out, p);
    }
    go_struct_defaults(&mut out);
    out
}

/// Fields that are non-pointer structs in the Go types, so an absent one is decoded as its
/// zero value and encoded as `{}` (a struct is never omitted, `omitempty` or not), where
/// k8s-openapi makes them `Option`s: `NetworkPolicy.spec` (`Spec NetworkPolicySpec
/// json:"spec,omitempty"`) and `NetworkPolicySpec.podSelector` (`PodSelector
/// metav1.LabelSelector json:"podSelector"`, k8s.io/api networking/v1/types.go).
const GO_STRUCTS: &[(&str, &str, &[&str])] = &[(
    "networking.k8s.io/v1",
    "NetworkPolicy",
    &["spec", "podSelector"],
)];

fn go_struct_defaults(obj: &mut Value) {
    let (Some(av), Some(kind)) = (
        obj.get("apiVersion").and_then(Value::as_str),
        obj.get("kind").and_then(Value::as_str),
    ) else {
        return;
    };
    let Some((_, _, path)) = GO_STRUCTS.iter().find(|(a, k, _)| *a == av && *k == kind) else {
        return;
    };
    let mut at = obj;
    for key in path.iter() {
        let Value::Object(m) = at else { return };
        let slot = m.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if slot.is_null() {
            *slot = Value::Object(Map::new());
        }
        at = slot;
    }
}

/// Whether the object holding `path` is a map (its entries are never dropped).
fn parent_is_map(obj: &Value, path: &[Step]) -> bool {
    let parent = &path[..path.len() - 1];
    if parent.is_empty() {
        return false;
    }
    let Some(Value::Object(m)) = get(obj, parent) else {
        return false;
    };
    let mut probe = obj.clone();
    let sample = m.values().next().cloned().unwrap_or(Value::Null);
    if let Some(Value::Object(pm)) = get_mut(&mut probe, parent) {
        pm.insert(PROBE.into(), sample);
    }
    let mut probe_path = parent.to_vec();
    probe_path.push(Step::Key(PROBE.into()));
    round_trip(&probe).is_some_and(|b| get(&b, &probe_path).is_some())
}

/// Whether the empty object at `path` keeps an extra key through the round trip (a map).
fn holds_probe(obj: &Value, path: &[Step]) -> bool {
    let mut probe = obj.clone();
    if let Some(slot) = get_mut(&mut probe, path) {
        let mut m = Map::new();
        m.insert(PROBE.into(), Value::String(String::new()));
        *slot = Value::Object(m);
    }
    let mut probe_path = path.to_vec();
    probe_path.push(Step::Key(PROBE.into()));
    round_trip(&probe).is_some_and(|b| get(&b, &probe_path).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_optional_lists_and_maps_go_structs_stay() {
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "p", "labels": {}, "annotations": {"a": ""}},
            "spec": {"podSelector": {}, "ingress": [], "policyTypes": ["Ingress"]}});
        let n = normalize(&np);
        assert_eq!(
            n,
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "p", "annotations": {"a": ""}},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [{"name": "tmp", "emptyDir": {}}], "nodeSelector": {},
                     "securityContext": {}}});
        let n = normalize(&pod);
        assert_eq!(n["spec"]["containers"], json!([]), "required: stays");
        assert_eq!(
            n["spec"]["volumes"][0]["emptyDir"],
            json!({}),
            "struct: stays"
        );
        assert_eq!(n["spec"]["securityContext"], json!({}), "struct: stays");
        assert!(n["spec"].get("nodeSelector").is_none(), "{n}");
    }

    #[test]
    fn a_network_policy_without_pod_selector_selects_all_pods() {
        for np in [
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "all"}, "spec": {"policyTypes": ["Ingress"]}}),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "all"}}),
        ] {
            let n = normalize(&np);
            assert_eq!(n["spec"]["podSelector"], json!({}), "{n}");
        }
        // A selector that is there is kept as it is.
        let np = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "a"}, "spec": {"podSelector": {"matchLabels": {"a": "b"}}}});
        assert_eq!(normalize(&np), np);
    }

    #[test]
    fn unknown_fields_are_found_and_dropped() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {}, "replicas": 1, "bogus": {"x": 1},
                "template": {"spec": {"containers": [{"name": "app", "image": "i", "colour": "red"}]}}}});
        assert_eq!(
            unknown_fields(&d),
            [
                ".spec.bogus",
                ".spec.template.spec.containers[name=\"app\"].colour"
            ]
        );
        let n = normalize(&d);
        assert!(n["spec"].get("bogus").is_none());
        assert!(n["spec"]["template"]["spec"]["containers"][0]
            .get("colour")
            .is_none());
        let cr = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "r"}, "spec": {"rules": []}});
        assert_eq!(normalize(&cr), cr, "custom resources are stored as sent");
        assert!(unknown_fields(&cr).is_empty());
        assert_eq!(
            unknown_fields_strict(&d),
            ["spec.bogus", "spec.template.spec.containers[0].colour"]
        );
    }
}

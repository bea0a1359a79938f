//! Resource type table, API errors (`Status` objects) and selectors.

use serde_json::{json, Value};

/// One served resource: the table entry that maps a REST plural to its group/version/kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for the core group.
    pub group: String,
    pub version: String,
    /// Lower-case plural used in REST paths (`deployments`).
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Serves a `/status` subresource (status is ignored on the main resource, generation is kept).
    pub status: bool,
    /// Serves a `/scale` subresource (reads/writes `spec.replicas`).
    pub scale: bool,
    /// Lists of objects with a `name` (or `containerPort`, `port`, `mountPath`, ...) field are
    /// treated as keyed maps for strategic merge patch and server-side apply, like built-in types.
    /// `false` treats every list as atomic, like a CRD without list-type annotations.
    pub keyed_lists: bool,
    pub short_names: Vec<String>,
    /// Has `metadata.generation` (1 on create, +1 on every change outside `metadata`/`status`),
    /// as the real registry strategies of workloads, policies, routes and custom resources do.
    pub generation: bool,
    /// A PUT without `metadata.resourceVersion` is an unconditional update (the strategy's
    /// `AllowUnconditionalUpdate`); `false` refuses it with 422, as for Leases and custom resources.
    pub unconditional_update: bool,
}

impl ResourceType {
    /// A namespaced resource with no subresources and keyed lists.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced,
            status: false,
            scale: false,
            keyed_lists: true,
            short_names: vec![],
            generation: false,
            unconditional_update: true,
        }
    }
    /// Objects get `metadata.generation`.
    pub fn with_generation(mut self) -> Self {
        self.generation = true;
        self
    }
    /// A PUT must carry `metadata.resourceVersion` (422 otherwise).
    pub fn conditional_updates(mut self) -> Self {
        self.unconditional_update = false;
        self
    }
    /// A custom resource (from a CRD): generation, atomic lists, PUT needs a resourceVersion.
    pub fn custom(self) -> Self {
        self.with_generation().atomic_lists().conditional_updates()
    }
    pub fn with_status(mut self) -> Self {
        self.status = true;
        self
    }
    pub fn with_scale(mut self) -> Self {
        self.scale = true;
        self
    }
    pub fn atomic_lists(mut self) -> Self {
        self.keyed_lists = false;
        self
    }
    fn short(mut self, s: &[&str]) -> Self {
        self.short_names = s.iter().map(|s| s.to_string()).collect();
        self
    }
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `deployments.apps` or `pods`, as used in error messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
    pub fn singular(&self) -> String {
        self.kind.to_lowercase()
    }
    pub(crate) fn has_generation(&self) -> bool {
        self.generation
    }
}

/// The resources served out of the box.
pub(crate) fn builtin_types() -> Vec<ResourceType> {
    let r = ResourceType::new;
    let mut types = vec![
        r("", "v1", "namespaces", "Namespace", false)
            .with_status()
            .short(&["ns"]),
        r("", "v1", "configmaps", "ConfigMap", true).short(&["cm"]),
        r("", "v1", "secrets", "Secret", true),
        r("", "v1", "services", "Service", true)
            .with_status()
            .short(&["svc"]),
        r("", "v1", "serviceaccounts", "ServiceAccount", true).short(&["sa"]),
        r("", "v1", "pods", "Pod", true)
            .with_status()
            .short(&["po"]),
        r("", "v1", "events", "Event", true).short(&["ev"]),
        r("", "v1", "endpoints", "Endpoints", true).short(&["ep"]),
        r(
            "",
            "v1",
            "persistentvolumeclaims",
            "PersistentVolumeClaim",
            true,
        )
        .with_status()
        .short(&["pvc"]),
        r("", "v1", "resourcequotas", "ResourceQuota", true).with_status(),
        r("", "v1", "limitranges", "LimitRange", true),
        r("", "v1", "nodes", "Node", false).with_status(),
        r("apps", "v1", "deployments", "Deployment", true)
            .with_status()
            .with_scale()
            .short(&["deploy"]),
        r("apps", "v1", "replicasets", "ReplicaSet", true)
            .with_status()
            .with_scale()
            .short(&["rs"]),
        r("apps", "v1", "statefulsets", "StatefulSet", true)
            .with_status()
            .with_scale()
            .short(&["sts"]),
        r("apps", "v1", "daemonsets", "DaemonSet", true)
            .with_status()
            .short(&["ds"]),
        r(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
        ),
        r("batch", "v1", "jobs", "Job", true).with_status(),
        r("batch", "v1", "cronjobs", "CronJob", true).with_status(),
        r(
            "policy",
            "v1",
            "poddisruptionbudgets",
            "PodDisruptionBudget",
            true,
        )
        .with_status()
        .short(&["pdb"]),
        r(
            "networking.k8s.io",
            "v1",
            "networkpolicies",
            "NetworkPolicy",
            true,
        )
        .short(&["netpol"]),
        r("networking.k8s.io", "v1", "ingresses", "Ingress", true)
            .with_status()
            .short(&["ing"]),
        r(
            "networking.k8s.io",
            "v1",
            "ingressclasses",
            "IngressClass",
            false,
        ),
        r(
            "autoscaling",
            "v2",
            "horizontalpodautoscalers",
            "HorizontalPodAutoscaler",
            true,
        )
        .with_status()
        .short(&["hpa"]),
        r("coordination.k8s.io", "v1", "leases", "Lease", true).conditional_updates(),
        r("events.k8s.io", "v1", "events", "Event", true),
        r("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
        ),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
        ),
        r(
            "rbac.authorization.k8s.io",
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
        ),
        r(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
        )
        .with_status()
        .short(&["crd"]),
        r(
            "gateway.networking.k8s.io",
            "v1",
            "httproutes",
            "HTTPRoute",
            true,
        )
        .with_status()
        .custom(),
        r(
            "gateway.networking.k8s.io",
            "v1",
            "grpcroutes",
            "GRPCRoute",
            true,
        )
        .with_status()
        .custom(),
        r(
            "gateway.networking.k8s.io",
            "v1",
            "gateways",
            "Gateway",
            true,
        )
        .with_status()
        .custom(),
        r(
            "gateway.networking.k8s.io",
            "v1",
            "gatewayclasses",
            "GatewayClass",
            false,
        )
        .with_status()
        .custom(),
    ];
    // The kinds whose registry strategy sets `metadata.generation` (pods since v1.33).
    const GENERATION: &[(&str, &str)] = &[
        ("", "pods"),
        ("apps", "deployments"),
        ("apps", "replicasets"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("batch", "jobs"),
        ("batch", "cronjobs"),
        ("policy", "poddisruptionbudgets"),
        ("networking.k8s.io", "networkpolicies"),
        ("networking.k8s.io", "ingresses"),
        ("networking.k8s.io", "ingressclasses"),
        ("autoscaling", "horizontalpodautoscalers"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    ];
    for t in &mut types {
        if GENERATION.contains(&(t.group.as_str(), t.plural.as_str())) {
            t.generation = true;
        }
    }
    types
}

/// An API error rendered as a `Status` object.
#[derive(Clone, Debug)]
pub(crate) struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn details(mut self, d: Value) -> Self {
        self.details = Some(d);
        self
    }
    pub fn not_found(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", rt.group_resource(), name),
        )
        .details(json!({"name": name, "group": rt.group, "kind": rt.plural}))
    }
    pub fn already_exists(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", rt.group_resource(), name),
        )
        .details(json!({"name": name, "group": rt.group, "kind": rt.plural}))
    }
    pub fn conflict(rt: &ResourceType, name: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": the object has been modified; please apply your changes to the latest version and try again",
                rt.group_resource(),
                name
            ),
        )
        .details(json!({"name": name, "group": rt.group, "kind": rt.plural}))
    }
    pub fn bad_request(msg: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", msg)
    }
    pub fn invalid(rt: &ResourceType, name: &str, msg: impl Into<String>) -> Self {
        let msg = msg.into();
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{}\" is invalid: {}", rt.kind, name, msg),
        )
        .details(json!({"name": name, "group": rt.group, "kind": rt.kind, "causes": [{"reason": "FieldValueInvalid", "message": msg}]}))
    }
    pub fn status_json(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if self.reason.is_empty() {
            // Errors that are not API errors (e.g. a failed typed conversion) carry no reason.
            v.as_object_mut().expect("object").remove("reason");
        }
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

/// A parsed label selector (equality- and set-based).
#[derive(Clone, Debug, Default)]
pub(crate) struct LabelSelector {
    reqs: Vec<LabelReq>,
}

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = vec![];
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let bad = || {
                ApiError::bad_request(format!(
                    "unable to parse requirement: invalid label selector {part:?}"
                ))
            };
            if let Some((k, v)) = part.split_once("!=") {
                reqs.push(LabelReq::NotEq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push(LabelReq::Eq(k.trim().into(), v.trim().into()));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push(LabelReq::Eq(k.trim().into(), v.trim().into()));
            } else if let Some(k) = part.strip_prefix('!') {
                reqs.push(LabelReq::NotExists(k.trim().into()));
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                reqs.push(LabelReq::NotIn(
                    k.trim().into(),
                    parse_set(rest).ok_or_else(bad)?,
                ));
            } else if let Some((k, rest)) = part.split_once(" in ") {
                reqs.push(LabelReq::In(
                    k.trim().into(),
                    parse_set(rest).ok_or_else(bad)?,
                ));
            } else if part.contains(' ') || part.contains('(') {
                return Err(bad());
            } else {
                reqs.push(LabelReq::Exists(part.into()));
            }
        }
        Ok(LabelSelector { reqs })
    }

    pub fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
        })
    }
}

fn parse_set(s: &str) -> Option<Vec<String>> {
    let s = s.trim().strip_prefix('(')?.strip_suffix(')')?;
    Some(
        s.split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
    )
}

fn split_top_level(s: &str) -> Vec<String> {
    let mut out = vec![];
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// A parsed field selector: `metadata.name=x,status.phase!=Running` (any dotted path, string compare).
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector {
    reqs: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = vec![];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((k, v)) = part.split_once("!=") {
                reqs.push((k.trim().to_string(), false, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push((k.trim().to_string(), true, v.trim().to_string()));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push((k.trim().to_string(), true, v.trim().to_string()));
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {part:?}"
                )));
            }
        }
        Ok(FieldSelector { reqs })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|(path, eq, want)| {
            let got = match crate::util::dotted(obj, path) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(v) => v.to_string(),
            };
            (got == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_selectors() {
        let l = json!({"app": "web", "tier": "front"});
        let l = l.as_object().unwrap();
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(l);
        assert!(m("app=web"));
        assert!(m("app==web,tier"));
        assert!(m("app=web,tier!=back,!missing"));
        assert!(!m("app=web,tier!=front"));
        assert!(m("app in (web, api),tier notin (back)"));
        assert!(!m("missing"));
        assert!(m(""));
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "a"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&o));
        assert!(!FieldSelector::parse("metadata.name=b").unwrap().matches(&o));
        assert!(FieldSelector::parse("status.phase!=Pending")
            .unwrap()
            .matches(&o));
    }
}

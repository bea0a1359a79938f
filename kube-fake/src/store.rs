//! The object store: generic JSON objects keyed by (group, plural, namespace, name),
//! server-maintained metadata, optimistic concurrency, watch history and garbage collection.

use crate::controller::Sim;
use crate::patch;
use crate::typed;
use crate::types::{builtin_types, ApiError, ResourceType};
use crate::util::{self, Rng};
use crate::{Behavior, RequestRecord};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

pub(crate) type ObjKey = (String, String, String, String);

/// One change, as delivered to watchers.
#[derive(Debug)]
pub(crate) struct WatchEvent {
    pub rv: u64,
    pub group: String,
    pub plural: String,
    pub ns: String,
    pub etype: &'static str,
    pub object: Value,
    pub old: Option<Value>,
}

#[derive(Clone, Debug)]
pub(crate) struct Injection {
    pub method: Option<String>,
    pub path_contains: Option<String>,
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub remaining: u32,
}

#[derive(Debug)]
pub(crate) struct Knobs {
    pub tick: Duration,
    pub controller_paused: bool,
    pub behaviors: Vec<(String, Behavior)>,
    pub default_behavior: Behavior,
    pub logs: Vec<(String, Vec<String>)>,
    pub progress_deadline_scale: f64,
    pub require_namespaces: bool,
    pub history_limit: usize,
}

pub(crate) struct State {
    pub rv: u64,
    pub types: Vec<ResourceType>,
    pub objects: BTreeMap<ObjKey, Value>,
    pub history: VecDeque<Arc<WatchEvent>>,
    pub tx: broadcast::Sender<Arc<WatchEvent>>,
    pub requests: Vec<RequestRecord>,
    pub rng: Rng,
    pub knobs: Knobs,
    pub sim: Sim,
    pub injections: Vec<Injection>,
    /// resourceVersion of the newest event dropped from the watch history.
    pub history_floor: u64,
    next_ip: u32,
}

/// Options for a write.
#[derive(Clone, Debug, Default)]
pub(crate) struct WriteOpts {
    /// Field manager to record in managedFields; `None` for controller-internal writes.
    pub manager: Option<String>,
    pub dry_run: bool,
    /// managedFields were computed by server-side apply already: keep them.
    pub preset_managed: bool,
}

impl State {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(8192);
        let mut st = State {
            rv: 0,
            types: builtin_types(),
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            tx,
            requests: vec![],
            rng: Rng::new(),
            knobs: Knobs {
                tick: Duration::from_millis(50),
                controller_paused: false,
                behaviors: vec![],
                default_behavior: Behavior::default(),
                logs: vec![],
                progress_deadline_scale: 1.0,
                require_namespaces: true,
                history_limit: 10_000,
            },
            sim: Sim::default(),
            injections: vec![],
            history_floor: 0,
            next_ip: 10,
        };
        let ns_type = st.find_type("", "v1", "namespaces").expect("namespaces");
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            st.create(&ns_type, "", obj, &WriteOpts::default())
                .expect("seed namespace");
        }
        st
    }

    pub fn find_type(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.version == version && t.plural == plural)
            .cloned()
    }

    pub fn type_by_plural(&self, group: &str, plural: &str) -> Option<ResourceType> {
        self.types
            .iter()
            .find(|t| t.group == group && t.plural == plural)
            .cloned()
    }

    pub fn register(&mut self, rt: ResourceType) {
        self.types
            .retain(|t| !(t.group == rt.group && t.plural == rt.plural));
        self.types.push(rt);
    }

    fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjKey {
        let ns = if rt.namespaced { ns } else { "" };
        (
            rt.group.clone(),
            rt.plural.clone(),
            ns.to_string(),
            name.to_string(),
        )
    }

    pub fn get(&self, rt: &ResourceType, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(rt, ns, name))
    }

    /// All objects of a type, optionally in one namespace, sorted by namespace/name.
    pub fn list(&self, rt: &ResourceType, ns: Option<&str>) -> Vec<Value> {
        let start = (
            rt.group.clone(),
            rt.plural.clone(),
            String::new(),
            String::new(),
        );
        self.objects
            .range(start..)
            .take_while(|(k, _)| k.0 == rt.group && k.1 == rt.plural)
            .filter(|(k, _)| ns.is_none_or(|n| !rt.namespaced || k.2 == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn emit(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        etype: &'static str,
        object: Value,
        old: Option<Value>,
    ) {
        let ev = Arc::new(WatchEvent {
            rv: self.rv,
            group: rt.group.clone(),
            plural: rt.plural.clone(),
            ns: if rt.namespaced {
                ns.to_string()
            } else {
                String::new()
            },
            etype,
            object,
            old,
        });
        self.history.push_back(ev.clone());
        while self.history.len() > self.knobs.history_limit {
            if let Some(e) = self.history.pop_front() {
                self.history_floor = e.rv;
            }
        }
        let _ = self.tx.send(ev);
    }

    /// Store an object, bumping the global resourceVersion and notifying watchers.
    fn commit(&mut self, rt: &ResourceType, mut obj: Value) -> Value {
        self.rv += 1;
        util::obj_mut(&mut obj, "metadata")
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        let ns = util::ns_of(&obj).to_string();
        let name = util::name_of(&obj).to_string();
        let key = Self::key(rt, &ns, &name);
        let old = self.objects.insert(key, obj.clone());
        let etype = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.emit(rt, &ns, etype, obj.clone(), old);
        obj
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects.contains_key(&(
            String::new(),
            "namespaces".into(),
            String::new(),
            ns.to_string(),
        ))
    }

    /// Create (POST). Fills server-managed metadata and type defaults.
    pub fn create(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        opts: &WriteOpts,
    ) -> Result<Value, ApiError> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let body_ns = util::ns_of(&obj).to_string();
        if rt.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if self.knobs.require_namespaces && !self.namespace_exists(ns) {
                return Err(ApiError::new(
                    404,
                    "NotFound",
                    format!("namespaces \"{ns}\" not found"),
                )
                .details(json!({"name": ns, "kind": "namespaces"})));
            }
        }
        {
            let m = obj.as_object_mut().expect("object");
            m.insert("apiVersion".into(), Value::String(rt.api_version()));
            m.insert("kind".into(), Value::String(rt.kind.clone()));
        }
        let mut name = util::name_of(&obj).to_string();
        if name.is_empty() {
            if let Some(gn) = util::str_at(&obj, "metadata.generateName") {
                name = format!("{gn}{}", self.rng.suffix(5));
            } else {
                return Err(ApiError::invalid(
                    rt,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        }
        validate_name(rt, &name)?;
        check_schema(rt, &name, &obj)?;
        if self.get(rt, ns, &name).is_some() {
            return Err(ApiError::already_exists(rt, &name));
        }
        let uid = self.rng.uid();
        {
            let meta = util::obj_mut(&mut obj, "metadata");
            meta.insert("name".into(), Value::String(name.clone()));
            if rt.namespaced {
                meta.insert("namespace".into(), Value::String(ns.to_string()));
            } else {
                meta.remove("namespace");
            }
            meta.insert("uid".into(), Value::String(uid));
            meta.insert(
                "creationTimestamp".into(),
                Value::String(util::now_rfc3339()),
            );
            meta.remove("resourceVersion");
            meta.remove("deletionTimestamp");
            if !opts.preset_managed {
                meta.remove("managedFields");
            }
            if rt.has_generation() {
                meta.insert("generation".into(), json!(1));
            } else {
                meta.remove("generation");
            }
        }
        if rt.status {
            obj.as_object_mut().expect("object").remove("status");
        }
        self.apply_defaults(rt, &mut obj, None);
        secret_rules(rt, &name, &obj, None)?;
        validate_object(rt, &name, &obj)?;
        let mut obj = typed::normalize(&obj);
        if let Some(m) = &opts.manager {
            patch::record_update(None, &mut obj, m, &rt.api_version(), "", rt.keyed_lists);
        }
        if opts.dry_run {
            return Ok(obj);
        }
        if rt.group == "apiextensions.k8s.io" && rt.plural == "customresourcedefinitions" {
            self.register_crd(&obj);
        }
        Ok(self.commit(rt, obj))
    }

    /// Finish an update (PUT, PATCH, apply): keep identity, handle status, generation,
    /// managedFields and no-op detection, then commit.
    #[allow(clippy::too_many_arguments)]
    pub fn update(
        &mut self,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        subresource: &str,
        opts: &WriteOpts,
        managed_done: bool,
    ) -> Result<Value, ApiError> {
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request was not a JSON object",
            ));
        }
        let name = util::name_of(old).to_string();
        let body_name = util::name_of(&new).to_string();
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(rv) = util::str_at(&new, "metadata.resourceVersion") {
            if !rv.is_empty() && Some(rv) != util::str_at(old, "metadata.resourceVersion") {
                return Err(ApiError::conflict(rt, &name));
            }
        }
        if subresource.is_empty() {
            check_schema(rt, &name, &new)?;
        }
        if subresource == "status" {
            let status = new.get("status").cloned();
            let managed = util::dotted(&new, "metadata.managedFields").cloned();
            new = old.clone();
            match status {
                Some(s) => {
                    new["status"] = s;
                }
                None => {
                    new.as_object_mut().expect("object").remove("status");
                }
            }
            if managed_done {
                if let Some(mf) = managed {
                    util::obj_mut(&mut new, "metadata").insert("managedFields".into(), mf);
                }
            }
        } else {
            {
                let m = new.as_object_mut().expect("object");
                m.insert("apiVersion".into(), Value::String(rt.api_version()));
                m.insert("kind".into(), Value::String(rt.kind.clone()));
                if rt.status {
                    match old.get("status") {
                        Some(s) => {
                            m.insert("status".into(), s.clone());
                        }
                        None => {
                            m.remove("status");
                        }
                    }
                }
            }
            let meta = util::obj_mut(&mut new, "metadata");
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "generation",
            ] {
                match util::dotted(old, &format!("metadata.{k}")) {
                    Some(v) => {
                        meta.insert(k.into(), v.clone());
                    }
                    None => {
                        meta.remove(k);
                    }
                }
            }
            if !managed_done {
                match util::dotted(old, "metadata.managedFields") {
                    Some(v) => {
                        meta.insert("managedFields".into(), v.clone());
                    }
                    None => {
                        meta.remove("managedFields");
                    }
                }
            }
            self.apply_defaults(rt, &mut new, Some(old));
            validate_object(rt, &name, &new)?;
            // Compared before the empty lists go, as the real strategies compare the decoded
            // objects: `ingress: []` (an empty slice) differs from no ingress (nil) there.
            if rt.has_generation() && spec_of(old) != spec_of(&new) {
                let g = util::i64_at(old, "metadata.generation").unwrap_or(1) + 1;
                util::obj_mut(&mut new, "metadata").insert("generation".into(), json!(g));
            }
        }
        secret_rules(rt, &name, &new, Some(old))?;
        let mut new = typed::normalize(&new);
        if !managed_done {
            if let Some(m) = &opts.manager {
                patch::record_update(
                    Some(old),
                    &mut new,
                    m,
                    &rt.api_version(),
                    subresource,
                    rt.keyed_lists,
                );
            }
        }
        util::obj_mut(&mut new, "metadata").insert(
            "resourceVersion".into(),
            old["metadata"]["resourceVersion"].clone(),
        );
        if comparable(&new) == comparable(old) {
            return Ok(old.clone());
        }
        if opts.dry_run {
            return Ok(new);
        }
        Ok(self.commit(rt, new))
    }

    /// Controller-internal write of an existing object (no managedFields, no generation bump
    /// for status-only changes). Returns the stored object, or `None` if unchanged.
    pub fn write_internal(&mut self, rt: &ResourceType, new: Value) -> Option<Value> {
        let ns = util::ns_of(&new).to_string();
        let name = util::name_of(&new).to_string();
        let old = self.get(rt, &ns, &name)?.clone();
        let mut new = new;
        if rt.has_generation() && spec_of(&old) != spec_of(&new) {
            let g = util::i64_at(&old, "metadata.generation").unwrap_or(1) + 1;
            util::obj_mut(&mut new, "metadata").insert("generation".into(), json!(g));
        }
        if comparable(&new) == comparable(&old) {
            return None;
        }
        Some(self.commit(rt, new))
    }

    /// Controller-internal create, keeping the given status.
    pub fn create_internal(&mut self, rt: &ResourceType, obj: Value) -> Option<Value> {
        let status = obj.get("status").cloned();
        let ns = util::ns_of(&obj).to_string();
        let created = self.create(rt, &ns, obj, &WriteOpts::default()).ok()?;
        match status {
            Some(s) if rt.status => {
                let mut o = created;
                o["status"] = s;
                self.write_internal(rt, o)
            }
            _ => Some(created),
        }
    }

    /// Delete an object immediately, cascading to dependents (unless `orphan`).
    #[allow(clippy::too_many_arguments)]
    pub fn delete(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
        precondition_uid: Option<&str>,
        orphan: bool,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = Self::key(rt, ns, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        if let Some(rv) = precondition_rv {
            if Some(rv) != util::str_at(&old, "metadata.resourceVersion") {
                return Err(ApiError::conflict(rt, name).details(json!({"name": name})));
            }
        }
        if let Some(uid) = precondition_uid {
            if uid != util::uid_of(&old) {
                return Err(ApiError::conflict(rt, name));
            }
        }
        if dry_run {
            return Ok(old);
        }
        Ok(self.delete_now(rt, &key, orphan))
    }

    fn delete_now(&mut self, rt: &ResourceType, key: &ObjKey, orphan: bool) -> Value {
        let Some(mut obj) = self.objects.remove(key) else {
            return Value::Null;
        };
        self.rv += 1;
        util::obj_mut(&mut obj, "metadata")
            .insert("resourceVersion".into(), Value::String(self.rv.to_string()));
        self.emit(rt, &key.2, "DELETED", obj.clone(), None);
        let uid = util::uid_of(&obj).to_string();
        self.sim.forget(&uid);
        // Namespace deletion removes everything inside it.
        if rt.group.is_empty() && rt.plural == "namespaces" {
            let inside: Vec<ObjKey> = self
                .objects
                .keys()
                .filter(|k| !k.2.is_empty() && k.2 == key.3)
                .cloned()
                .collect();
            for k in inside {
                if let Some(t) = self.type_by_plural(&k.0, &k.1) {
                    self.delete_now(&t, &k, false);
                }
            }
        }
        // Garbage collection of dependents.
        let dependents: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(_, v)| owned_by(v, &uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            let Some(t) = self.type_by_plural(&k.0, &k.1) else {
                continue;
            };
            if orphan {
                if let Some(mut v) = self.objects.get(&k).cloned() {
                    if let Some(refs) = v["metadata"]
                        .get_mut("ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(&uid));
                    }
                    self.commit(&t, v);
                }
            } else {
                self.delete_now(&t, &k, false);
            }
        }
        obj
    }

    fn register_crd(&mut self, crd: &Value) {
        let group = util::str_at(crd, "spec.group").unwrap_or("").to_string();
        let plural = util::str_at(crd, "spec.names.plural")
            .unwrap_or("")
            .to_string();
        let kind = util::str_at(crd, "spec.names.kind")
            .unwrap_or("")
            .to_string();
        let namespaced = util::str_at(crd, "spec.scope") != Some("Cluster");
        let versions = util::dotted(crd, "spec.versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ver = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .or(versions.first());
        let Some(ver) = ver else {
            return;
        };
        let version = ver.get("name").and_then(Value::as_str).unwrap_or("v1");
        let mut rt = ResourceType::new(&group, version, &plural, &kind, namespaced).custom();
        rt.status = ver.pointer("/subresources/status").is_some();
        rt.scale = ver.pointer("/subresources/scale").is_some();
        if !group.is_empty() && !plural.is_empty() && !kind.is_empty() {
            self.register(rt);
        }
    }

    fn alloc_ip(&mut self, prefix: &str) -> String {
        self.next_ip += 1;
        format!(
            "{prefix}.{}.{}",
            (self.next_ip / 250) % 250,
            self.next_ip % 250 + 2
        )
    }

    /// Type-specific defaulting, roughly what the real API server's defaulters do.
    fn apply_defaults(&mut self, rt: &ResourceType, obj: &mut Value, old: Option<&Value>) {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("apps", "deployments") => {
                let spec = util::obj_mut(obj, "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                spec.entry("progressDeadlineSeconds").or_insert(json!(600));
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(s) = strategy.as_object_mut() {
                    let ty = s
                        .entry("type")
                        .or_insert(json!("RollingUpdate"))
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if ty == "RollingUpdate" {
                        let ru = util::obj_mut(strategy, "rollingUpdate");
                        ru.entry("maxSurge").or_insert(json!("25%"));
                        ru.entry("maxUnavailable").or_insert(json!("25%"));
                    }
                }
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("apps", "replicasets") | ("apps", "daemonsets") | ("batch", "jobs") => {
                if rt.plural == "replicasets" {
                    util::obj_mut(obj, "spec")
                        .entry("replicas")
                        .or_insert(json!(1));
                }
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("apps", "statefulsets") => {
                let spec = util::obj_mut(obj, "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("podManagementPolicy")
                    .or_insert(json!("OrderedReady"));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("", "pods") => {
                default_pod_spec(util::obj_mut(obj, "spec"));
                if old.is_none() && obj.get("status").is_none() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            ("", "namespaces") => {
                if obj.get("status").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
                let name = util::name_of(obj).to_string();
                util::obj_mut(obj, "metadata.labels")
                    .insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
            ("", "services") => {
                let old_ip = old.and_then(|o| util::dotted(o, "spec.clusterIP")).cloned();
                let ty = util::str_at(obj, "spec.type")
                    .unwrap_or("ClusterIP")
                    .to_string();
                let needs_ip = util::str_at(obj, "spec.clusterIP").is_none_or(str::is_empty);
                let ip = if needs_ip && ty != "ExternalName" {
                    Some(old_ip.unwrap_or_else(|| Value::String(self.alloc_ip("10.96"))))
                } else {
                    None
                };
                let spec = util::obj_mut(obj, "spec");
                spec.entry("type").or_insert(json!(ty));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                if let Some(ip) = ip {
                    spec.insert("clusterIP".into(), ip.clone());
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
                if obj.get("status").is_none() {
                    obj["status"] = json!({"loadBalancer": {}});
                }
            }
            ("", "secrets") => secret_defaults(obj),
            _ => {}
        }
    }

    pub fn pod_ip(&mut self) -> String {
        self.alloc_ip("10.244")
    }
}

/// What the real API server does to a Secret on the way in: `stringData` (write-only) is
/// merged into `data` (base64) and dropped, winning over a key of the same name; `type`
/// defaults to `Opaque`.
fn secret_defaults(obj: &mut Value) {
    use base64::Engine as _;
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = m.remove("stringData") {
        if let Some(data) = m.entry("data").or_insert_with(|| json!({})).as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default().to_string();
                data.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    m.entry("type").or_insert(json!("Opaque"));
}

/// The Secret validation of the real API server: `data` values are base64 (else the body
/// does not decode: 400), keys are `[-._a-zA-Z0-9]+`, at most 1 MiB in all, and `type` is
/// immutable.
fn secret_rules(
    rt: &ResourceType,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    use base64::Engine as _;
    if !(rt.group.is_empty() && rt.plural == "secrets") {
        return Ok(());
    }
    let mut total = 0usize;
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let bytes = v
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
                    ))
                })?;
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && k != "."
                && k != "..";
            if !key_ok {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    format!("data[{k}]: Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            total += bytes.len();
        }
    }
    if total > 1 << 20 {
        return Err(ApiError::invalid(
            rt,
            name,
            "data: Too long: must have at most 1048576 bytes",
        ));
    }
    if let Some(old) = old {
        let ty = |o: &Value| {
            o.get("type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque")
                .to_string()
        };
        if ty(old) != ty(obj) {
            return Err(ApiError::invalid(
                rt,
                name,
                "type: Invalid value: field is immutable",
            ));
        }
    }
    Ok(())
}

fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !tag.contains(':') || tag.ends_with(":latest");
                let policy = if latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
}

/// The registry strategies' semantic checks dronectl can run into (the real server's
/// `ValidateHorizontalPodAutoscaler`): `minReplicas` at least 1 (scale-to-zero is behind
/// a feature gate), `maxReplicas` at least 1 and at least `minReplicas`, a target name.
fn validate_object(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if (rt.group.as_str(), rt.plural.as_str()) != ("autoscaling", "horizontalpodautoscalers") {
        return Ok(());
    }
    let mut errors = vec![];
    let min = util::i64_at(obj, "spec.minReplicas");
    let max = util::i64_at(obj, "spec.maxReplicas").unwrap_or(0);
    if let Some(min) = min.filter(|m| *m < 1) {
        errors.push(format!(
            "spec.minReplicas: Invalid value: {min}: must be greater than or equal to 1"
        ));
    }
    if max < 1 {
        errors.push(format!(
            "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to 1"
        ));
    } else if max < min.unwrap_or(1) {
        errors.push(format!(
            "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to `minReplicas`"
        ));
    }
    for f in ["kind", "name"] {
        if util::str_at(obj, &format!("spec.scaleTargetRef.{f}")).is_none_or(str::is_empty) {
            errors.push(format!("spec.scaleTargetRef.{f}: Required value"));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let msg = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(ApiError::invalid(rt, name, msg))
}

/// The CRD schema checks kube-fake knows (HTTPRoute: see `gateway.rs`): 422 with every
/// violation, as the API server words a custom resource's validation failure.
fn check_schema(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if rt.group != "gateway.networking.k8s.io" || rt.kind != "HTTPRoute" {
        return Ok(());
    }
    let errors = crate::gateway::http_route_errors(obj);
    let msg = match errors.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let kind = format!("{}.{}", rt.kind, rt.group);
    let mut err = ApiError::invalid(rt, name, msg.clone());
    err.message = format!("{kind} \"{name}\" is invalid: {msg}");
    Err(err)
}

fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    // Events are named `<object>.<hex>`; other objects follow RFC 1123 subdomain rules.
    if ok || (rt.kind == "Event" && !name.is_empty()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ))
    }
}

pub(crate) fn owned_by(v: &Value, uid: &str) -> bool {
    util::dotted(v, "metadata.ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(uid))
        })
}

/// Everything but metadata and status (what `generation` tracks).
fn spec_of(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("apiVersion");
        m.remove("kind");
    }
    v
}

/// An object with the parts that don't make a write "real" removed (resourceVersion,
/// managedFields timestamps).
fn comparable(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
        if let Some(mf) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
    }
    v
}

//! The object store: generic JSON objects keyed by (group, plural, namespace, name),
//! server-maintained metadata, resourceVersions and the watch history (here), writes with
//! optimistic concurrency ([`write`]: create, update), deletion and cascading ([`delete`]),
//! what the API server fills in ([`defaults`]) and the checks it makes ([`validation`]).

mod defaults;
mod delete;
mod validation;
mod write;

pub(crate) use delete::mark_for_deletion;

use validation::*;

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

    pub(super) fn key(rt: &ResourceType, ns: &str, name: &str) -> ObjKey {
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

    pub(super) fn emit(
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
    pub(super) fn commit(&mut self, rt: &ResourceType, mut obj: Value) -> Value {
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

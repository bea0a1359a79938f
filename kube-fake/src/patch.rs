//! Strategic merge patch and server-side apply with per-manager field ownership
//! (`managedFields`, FieldsV1): what no crate provides. RFC 7386 merge patches and RFC 6902
//! JSON patches are the `json-patch` crate's (see `server.rs`).

use crate::types::ApiError;
use crate::util;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A field path in FieldsV1 tokens: `["f:spec", "f:template", ..., "k:{\"name\":\"app\"}", "f:image"]`.
pub(crate) type FieldPath = Vec<String>;
pub(crate) type FieldSet = BTreeSet<FieldPath>;

// ---------------------------------------------------------------------------
// Strategic merge patch

/// Which field keys a list of objects, if it should be merged by key.
/// Mirrors the `patchMergeKey`s / `listMapKeys` of the built-in types closely enough.
pub(crate) fn list_key(items: &[Value]) -> Option<&'static str> {
    if items.is_empty() || !items.iter().all(Value::is_object) {
        return None;
    }
    [
        "name",
        "containerPort",
        "port",
        "mountPath",
        "devicePath",
        "type",
        "ip",
        "uid",
        "topologyKey",
    ]
    .into_iter()
    .find(|k| {
        items
            .iter()
            .all(|i| i.get(*k).is_some_and(|v| !v.is_null()))
    })
}

/// Strategic merge patch: a merge patch where lists of objects with a merge key (`name`,
/// `containerPort`, ...) are merged item by item, and `$patch: delete|replace` directives work.
pub(crate) fn strategic_merge_patch(target: &mut Value, patch: &Value, keyed: bool) {
    match patch {
        Value::Object(pm) => {
            if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut p = pm.clone();
                p.remove("$patch");
                *target = Value::Object(p);
                return;
            }
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let tm = target.as_object_mut().expect("object");
            for (k, pv) in pm {
                if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
                    continue;
                }
                if pv.is_null() {
                    tm.remove(k);
                    continue;
                }
                match (tm.get_mut(k), pv) {
                    (Some(Value::Array(ta)), Value::Array(pa)) if keyed => {
                        let key = list_key(pa).or_else(|| list_key(ta));
                        match key {
                            Some(key) => merge_keyed_list(ta, pa, key),
                            None => *ta = pa.clone(),
                        }
                    }
                    (Some(tv), _) => strategic_merge_patch(tv, pv, keyed),
                    (None, _) => {
                        let mut nv = Value::Null;
                        strategic_merge_patch(&mut nv, pv, keyed);
                        strip_directives(&mut nv);
                        tm.insert(k.clone(), nv);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn merge_keyed_list(ta: &mut Vec<Value>, pa: &[Value], key: &str) {
    for item in pa {
        let kv = item.get(key);
        let directive = item.get("$patch").and_then(Value::as_str);
        let pos = ta.iter().position(|t| t.get(key) == kv);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                ta.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_merge_patch(&mut ta[i], item, true),
            (None, _) => {
                let mut nv = item.clone();
                strip_directives(&mut nv);
                ta.push(nv);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Field sets (FieldsV1)

fn key_token(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

/// Top-level metadata fields that are owned (everything else in metadata is server-managed).
const OWNED_METADATA: &[&str] = &["labels", "annotations", "ownerReferences", "finalizers"];

/// The leaf field set of an object (what a manager owns when it sets this object).
pub(crate) fn leaf_set(obj: &Value, keyed: bool, status_only: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        let include = match k.as_str() {
            "apiVersion" | "kind" => false,
            "status" => status_only,
            "metadata" => !status_only,
            _ => !status_only,
        };
        if !include {
            continue;
        }
        if k == "metadata" {
            if let Some(mm) = v.as_object() {
                for (mk, mv) in mm {
                    if OWNED_METADATA.contains(&mk.as_str()) {
                        let mut p = vec!["f:metadata".to_string(), format!("f:{mk}")];
                        collect_child(mv, &mut p, &mut out, keyed);
                    }
                }
            }
            continue;
        }
        let mut p = vec![format!("f:{k}")];
        collect_child(v, &mut p, &mut out, keyed);
    }
    out
}

fn collect_child(v: &Value, path: &mut FieldPath, out: &mut FieldSet, keyed: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                path.push(format!("f:{k}"));
                collect_child(c, path, out, keyed);
                path.pop();
            }
        }
        Value::Array(a) if keyed && list_key(a).is_some() => {
            let key = list_key(a).expect("checked");
            for item in a {
                path.push(key_token(item, key));
                out.insert(path.clone());
                collect_child(item, path, out, keyed);
                path.pop();
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// Resolve a field path in an object.
pub(crate) fn get_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for tok in path {
        cur = step(cur, tok)?;
    }
    Some(cur)
}

fn step<'a>(cur: &'a Value, tok: &str) -> Option<&'a Value> {
    if let Some(f) = tok.strip_prefix("f:") {
        cur.get(f)
    } else if let Some(k) = tok.strip_prefix("k:") {
        let keyv: Value = serde_json::from_str(k).ok()?;
        let km = keyv.as_object()?;
        cur.as_array()?
            .iter()
            .find(|item| km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
    } else {
        None
    }
}

fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for tok in parent {
        let next = if let Some(f) = tok.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = tok.strip_prefix("k:") {
            let Ok(keyv) = serde_json::from_str::<Value>(k) else {
                return;
            };
            let Some(km) = keyv.as_object().cloned() else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(keyv), Some(a)) = (serde_json::from_str::<Value>(k), cur.as_array_mut()) {
            if let Some(km) = keyv.as_object() {
                a.retain(|item| !km.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
            }
        }
    }
}

#[derive(Default)]
struct Node {
    member: bool,
    children: BTreeMap<String, Node>,
}

/// Encode a field set as FieldsV1 JSON.
pub(crate) fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for tok in p {
            n = n.children.entry(tok.clone()).or_default();
        }
        n.member = true;
    }
    fn render(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), render(c));
        }
        Value::Object(m)
    }
    render(&root)
}

/// Decode FieldsV1 JSON into a field set.
pub(crate) fn from_fields_v1(v: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    fn walk(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        let Some(m) = v.as_object() else {
            return;
        };
        let children: Vec<_> = m.iter().filter(|(k, _)| k.as_str() != ".").collect();
        if !path.is_empty() && (children.is_empty() || m.contains_key(".")) {
            out.insert(path.clone());
        }
        for (k, c) in children {
            path.push(k.clone());
            walk(c, path, out);
            path.pop();
        }
    }
    walk(v, &mut vec![], &mut out);
    out
}

/// One `managedFields` entry, decoded.
#[derive(Clone, Debug)]
pub(crate) struct ManagerEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub subresource: String,
    pub time: String,
    pub set: FieldSet,
}

pub(crate) fn read_managers(obj: &Value) -> Vec<ManagerEntry> {
    util::dotted(obj, "metadata.managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| ManagerEntry {
                    manager: e
                        .get("manager")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    operation: e
                        .get("operation")
                        .and_then(Value::as_str)
                        .unwrap_or("Update")
                        .into(),
                    api_version: e
                        .get("apiVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    subresource: e
                        .get("subresource")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .into(),
                    time: e.get("time").and_then(Value::as_str).unwrap_or("").into(),
                    set: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_managers(obj: &mut Value, entries: &[ManagerEntry]) {
    let arr: Vec<Value> = entries
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = Value::String(e.subresource.clone());
            }
            v
        })
        .collect();
    let meta = util::obj_mut(obj, "metadata");
    if arr.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(arr));
    }
}

fn is_prefix(p: &[String], of: &[String]) -> bool {
    of.len() > p.len() && of[..p.len()] == *p
}

/// Record an `Update` operation (create, PUT, non-apply PATCH) by `manager`:
/// the manager takes ownership of every leaf it changed; others lose those leaves.
pub(crate) fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    keyed: bool,
) {
    let status_only = subresource == "status";
    let new_leaves = leaf_set(new, keyed, status_only);
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|p| old.and_then(|o| get_at(o, p)) != get_at(new, p))
        .cloned()
        .collect();
    let mut entries = old.map(read_managers).unwrap_or_default();
    for e in entries.iter_mut() {
        e.set.retain(|p| get_at(new, p).is_some());
        if !(e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            e.set.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        let now = util::now_rfc3339();
        match entries.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.set.extend(changed);
                e.time = now;
                e.api_version = api_version.into();
            }
            None => entries.push(ManagerEntry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource.into(),
                time: now,
                set: changed,
            }),
        }
    }
    write_managers(new, &entries);
}

/// Server-side apply `applied` (a partial object) onto `live` as `manager`.
/// Returns the merged object with updated `managedFields`, or a 409 Conflict listing the
/// conflicting fields and their managers (unless `force`).
pub(crate) fn server_side_apply(
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    keyed: bool,
    api_version: &str,
    subresource: &str,
) -> Result<Value, ApiError> {
    let status_only = subresource == "status";
    let mut applied = applied.clone();
    // Only user-settable metadata participates.
    if let Some(meta) = applied.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| {
            OWNED_METADATA.contains(&k.as_str())
                || k == "name"
                || k == "namespace"
                || k == "generateName"
        });
    }
    if let Some(m) = applied.as_object_mut() {
        if status_only {
            m.retain(|k, _| k == "status" || k == "apiVersion" || k == "kind" || k == "metadata");
        } else {
            m.remove("status");
        }
    }
    let applied_set = leaf_set(&applied, keyed, status_only);
    let mut entries = read_managers(live);

    // Conflicts: leaves owned by someone else whose live value differs from the applied value.
    let mut conflicts: Vec<(ManagerEntry, FieldPath)> = vec![];
    for e in entries.iter() {
        if e.manager == manager && e.operation == "Apply" && e.subresource == subresource {
            continue;
        }
        // Managers of other subresources conflict too: `.spec.replicas` set through
        // `/scale` (an autoscaler, `kubectl scale`) is theirs until someone takes it.
        for p in e.set.intersection(&applied_set) {
            if p.last().is_some_and(|t| t.starts_with("k:")) {
                continue;
            }
            if get_at(live, p) != get_at(&applied, p) {
                conflicts.push((e.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() {
        if !force {
            return Err(conflict_error(&conflicts));
        }
        for e in entries.iter_mut() {
            e.set.retain(|p| {
                !conflicts
                    .iter()
                    .any(|(c, cp)| c.manager == e.manager && c.operation == e.operation && cp == p)
            });
        }
    }

    // Remove fields this manager applied before but no longer applies (and nobody else owns).
    let mut merged = live.clone();
    let previous: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let others: FieldSet = entries
        .iter()
        .filter(|e| {
            !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        })
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let mut removed: Vec<&FieldPath> = previous.difference(&applied_set).collect();
    // Shortest first: removing a list item removes everything under it (its key included).
    removed.sort_by_key(|p| p.len());
    for p in removed {
        if others.contains(p) || others.iter().any(|o| is_prefix(p, o)) {
            continue;
        }
        if applied_set.iter().any(|a| is_prefix(p, a)) {
            continue;
        }
        remove_at(&mut merged, p);
    }

    apply_merge(&mut merged, &applied, keyed);

    let now = util::now_rfc3339();
    entries.retain(|e| {
        !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    });
    // Keep the applier's entry first among appliers, as the real server roughly does.
    entries.push(ManagerEntry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        subresource: subresource.into(),
        time: now,
        set: applied_set,
    });
    for e in entries.iter_mut() {
        e.set.retain(|p| get_at(&merged, p).is_some());
    }
    write_managers(&mut merged, &entries);
    Ok(merged)
}

/// Deep-merge an applied configuration into an object (keyed lists merge by key,
/// atomic lists and scalars replace, maps merge).
fn apply_merge(target: &mut Value, applied: &Value, keyed: bool) {
    match (target, applied) {
        (Value::Object(tm), Value::Object(am)) => {
            for (k, av) in am {
                if av.is_null() {
                    continue;
                }
                match tm.get_mut(k) {
                    Some(tv) => apply_merge(tv, av, keyed),
                    None => {
                        tm.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(ta), Value::Array(aa)) if keyed && list_key(aa).is_some() => {
            let key = list_key(aa).expect("checked");
            for item in aa {
                match ta.iter_mut().find(|t| t.get(key) == item.get(key)) {
                    Some(t) => apply_merge(t, item, keyed),
                    None => ta.push(item.clone()),
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// A field path as structured-merge-diff prints it: `.spec.containers[name="app"].image`.
fn render_path(p: &FieldPath) -> String {
    let mut s = String::new();
    for tok in p {
        if let Some(f) = tok.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = tok.strip_prefix("k:") {
            let keys: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(n, v)| format!("{n}={v}")).collect())
                .unwrap_or_default();
            s.push('[');
            s.push_str(&keys.join(","));
            s.push(']');
        }
    }
    s
}

/// A manager as the apiserver's conflict message prints it (`printManager`): appliers by name
/// only, `Update` managers with the API version they wrote with.
fn print_manager(e: &ManagerEntry) -> String {
    let mut s = format!("{:?}", e.manager);
    if !e.subresource.is_empty() {
        s.push_str(&format!(" with subresource {:?}", e.subresource));
    }
    if e.operation == "Update" {
        s.push_str(&format!(" using {}", e.api_version));
    }
    s
}

/// The real 409: `Apply failed with 1 conflict: conflict with "kubectl" using apps/v1:
/// .spec.replicas`; several conflicts are grouped by manager, one `- path` line each.
fn conflict_error(conflicts: &[(ManagerEntry, FieldPath)]) -> ApiError {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, p)| {
            json!({
                "reason": "FieldManagerConflict",
                "message": format!("conflict with {}", print_manager(m)),
                "field": render_path(p),
            })
        })
        .collect();
    let msg = if let [(m, p)] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            print_manager(m),
            render_path(p)
        )
    } else {
        let mut by_manager: BTreeMap<(String, String, String, String), Vec<&FieldPath>> =
            BTreeMap::new();
        for (m, p) in conflicts {
            by_manager
                .entry((
                    m.manager.clone(),
                    m.operation.clone(),
                    m.api_version.clone(),
                    m.subresource.clone(),
                ))
                .or_default()
                .push(p);
        }
        let mut lines = vec![];
        for ((manager, operation, api_version, subresource), paths) in by_manager {
            let entry = ManagerEntry {
                manager,
                operation,
                api_version,
                subresource,
                time: String::new(),
                set: FieldSet::new(),
            };
            lines.push(format!("conflicts with {}:", print_manager(&entry)));
            lines.extend(paths.iter().map(|p| format!("- {}", render_path(p))));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    ApiError::new(409, "Conflict", msg).details(json!({ "causes": causes }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merges_containers_by_name() {
        let mut t = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
            true,
        );
        assert_eq!(t["spec"]["containers"][0]["image"], "x");
        assert_eq!(t["spec"]["containers"][1]["image"], "z");
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}}),
            true,
        );
        assert_eq!(t["spec"]["containers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn fields_v1_roundtrip() {
        let obj = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "app", "image": "i", "ports": [{"containerPort": 80}]}]}});
        let set = leaf_set(&obj, true, false);
        let v1 = to_fields_v1(&set);
        assert_eq!(v1["f:metadata"]["f:labels"]["f:a"], json!({}));
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["."],
            json!({})
        );
        assert_eq!(from_fields_v1(&v1), set);
    }

    #[test]
    fn ssa_removes_list_items_a_manager_stops_applying() {
        let base = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let two = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "a"}, {"name": "side", "image": "s"}]}});
        let a = server_side_apply(&base, &two, "m", false, true, "v1", "").unwrap();
        // Another manager adds its own container.
        let other = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "debug", "image": "d"}]}});
        let b = server_side_apply(&a, &other, "n", false, true, "v1", "").unwrap();
        assert_eq!(b["spec"]["containers"].as_array().unwrap().len(), 3);
        let one = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "app", "image": "a2"}]}});
        let c = server_side_apply(&b, &one, "m", false, true, "v1", "").unwrap();
        let names: Vec<&str> = c["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app", "debug"]);
        assert_eq!(c["spec"]["containers"][0]["image"], "a2");
    }

    #[test]
    fn ssa_conflicts_and_force() {
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 1}});
        let a = server_side_apply(&live, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "x": 1}}), "one", false, true, "apps/v1", "").unwrap();
        assert_eq!(a["spec"]["replicas"], 2);
        let err = server_side_apply(&a, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 3}}), "two", false, true, "apps/v1", "").unwrap_err();
        assert_eq!(err.code, 409);
        assert!(err.message.contains(".spec.replicas"), "{}", err.message);
        // Same value: no conflict, shared ownership.
        server_side_apply(&a, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2}}), "two", false, true, "apps/v1", "").unwrap();
        let b = server_side_apply(&a, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 3}}), "two", true, true, "apps/v1", "").unwrap();
        assert_eq!(b["spec"]["replicas"], 3);
        // "one" drops x by not applying it any more.
        let c = server_side_apply(&b, &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}}), "one", false, true, "apps/v1", "").unwrap();
        assert!(c["spec"].get("x").is_none());
        assert_eq!(c["spec"]["replicas"], 3);
    }
}

//! Server-side apply: `managedFields` entries, ownership taken by updates, merging an
//! applied configuration, and the conflicts the real server reports.

use super::fields::{from_fields_v1, get_at, leaf_set, remove_at, to_fields_v1, OWNED_METADATA};
use super::strategic::list_key;
use super::{FieldPath, FieldSet};
use crate::types::ApiError;
use crate::util;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

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
    use serde_json::json;

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

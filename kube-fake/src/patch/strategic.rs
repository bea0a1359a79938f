//! Strategic merge patch: merge patches where lists of objects merge by key.

use serde_json::{Map, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}

//! Field sets (what a manager owns) and their FieldsV1 encoding in `managedFields`.

use super::strategic::list_key;
use super::{FieldPath, FieldSet};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

fn key_token(item: &Value, key: &str) -> String {
    let mut m = Map::new();
    m.insert(
        key.to_string(),
        item.get(key).cloned().unwrap_or(Value::Null),
    );
    format!("k:{}", Value::Object(m))
}

/// Top-level metadata fields that are owned (everything else in metadata is server-managed).
pub(super) const OWNED_METADATA: &[&str] =
    &["labels", "annotations", "ownerReferences", "finalizers"];

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

pub(super) fn remove_at(obj: &mut Value, path: &[String]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}

//! The garbage collector: owner references, background and foreground deletion.

use crate::store::{owned_by, State};
use crate::util::uid_of;
use serde_json::Value;
use std::collections::HashMap;

/// The garbage collector, one pass: an object all of whose owners are gone (or are being
/// deleted in the foreground) is deleted like a `Background` DELETE would (pods gracefully,
/// so they are `Terminating` first); an owner deleted in the foreground loses its
/// `foregroundDeletion` finalizer, and goes, once nothing it owns is left. Deleting a
/// Deployment thus takes a pass for its ReplicaSets, one for their pods, and the pods' grace.
pub(super) fn garbage_collector(st: &mut State) {
    let foreground = |v: &Value| {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
            && v.pointer("/metadata/deletionTimestamp").is_some()
    };
    let owners: HashMap<String, bool> = st
        .objects
        .values()
        .map(|v| (uid_of(v).to_string(), foreground(v)))
        .collect();
    // (object, whether an owner waits for it in the foreground)
    let collectable: Vec<(crate::store::ObjKey, bool)> = st
        .objects
        .iter()
        .filter(|(_, v)| v.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|(k, v)| {
            let refs = v
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)?;
            let uids = refs
                .iter()
                .map(|r| r.get("uid").and_then(Value::as_str).unwrap_or(""));
            let all_gone =
                !refs.is_empty() && uids.clone().all(|u| owners.get(u).copied().unwrap_or(true));
            let waited_for = uids
                .clone()
                .any(|u| owners.get(u).copied().unwrap_or(false));
            all_gone.then(|| (k.clone(), waited_for))
        })
        .collect();
    for (k, waited_for) in collectable {
        let Some(t) = st.type_by_plural(&k.0, &k.1) else {
            continue;
        };
        // Like the real collector: a dependent that an owner waits for and that has
        // dependents of its own is deleted in the foreground too, so the chain holds.
        let policy = if waited_for {
            "Foreground"
        } else {
            "Background"
        };
        let _ = st.delete_api(&t, &k.2, &k.3, None, None, policy, None, false);
    }
    let waiting: Vec<(crate::store::ObjKey, Value)> = st
        .objects
        .iter()
        .filter(|(_, v)| foreground(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, owner) in waiting {
        let uid = uid_of(&owner).to_string();
        if st.objects.values().any(|v| owned_by(v, &uid)) {
            continue;
        }
        let Some(t) = st.type_by_plural(&k.0, &k.1) else {
            continue;
        };
        let mut cur = owner.clone();
        if let Some(f) = cur
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != "foregroundDeletion");
        }
        let left = cur
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if left {
            st.write_internal(&t, cur);
        } else {
            let _ = st.delete(&t, &k.2, &k.3, None, None, false, false);
        }
    }
}

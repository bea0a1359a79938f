//! Deletion: immediate, graceful (pods), with finalizers, and the propagation policies
//! (`Background`, `Foreground`, `Orphan`).

use super::*;

impl State {
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
        check_preconditions(rt, name, &old, precondition_rv, precondition_uid)?;
        if dry_run {
            return Ok(old);
        }
        Ok(self.delete_now(rt, &key, orphan))
    }

    pub(super) fn delete_now(&mut self, rt: &ResourceType, key: &ObjKey, orphan: bool) -> Value {
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
        // Dependents: `Orphan` strips the owner reference now; otherwise the garbage
        // collector (a controller, [`crate::controller`]) deletes them on its next pass, as
        // on a real cluster, where GC is asynchronous.
        if orphan {
            self.orphan_dependents(&uid);
        }
        obj
    }

    /// `Orphan` propagation: the objects `uid` owns lose that owner reference.
    fn orphan_dependents(&mut self, uid: &str) {
        let dependents: Vec<ObjKey> = self
            .objects
            .iter()
            .filter(|(_, v)| owned_by(v, uid))
            .map(|(k, _)| k.clone())
            .collect();
        for k in dependents {
            if let (Some(t), Some(mut v)) = (
                self.type_by_plural(&k.0, &k.1),
                self.objects.get(&k).cloned(),
            ) {
                if let Some(refs) = v["metadata"]
                    .get_mut("ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                }
                self.commit(&t, v);
            }
        }
    }

    /// A DELETE through the API, as the real server does it: an object with finalizers (or a
    /// `Foreground` deletion of an object with dependents, which adds the
    /// `foregroundDeletion` finalizer) gets `deletionTimestamp` and stays until its finalizers
    /// are gone; a scheduled, running pod is deleted gracefully (`deletionTimestamp` = now +
    /// grace, `deletionGracePeriodSeconds`; the kubelet removes it when it has stopped); a
    /// grace period of 0, an unscheduled pod or a finished one goes at once. Returns the
    /// object and whether it is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn delete_api(
        &mut self,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        precondition_rv: Option<&str>,
        precondition_uid: Option<&str>,
        policy: &str,
        grace: Option<i64>,
        dry_run: bool,
    ) -> Result<(Value, bool), ApiError> {
        let key = Self::key(rt, ns, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(rt, name));
        };
        let orphan = policy == "Orphan";
        let mut finalizers: Vec<Value> = util::dotted(&old, "metadata.finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let is_pod = rt.group.is_empty() && rt.plural == "pods";
        let uid = util::uid_of(&old).to_string();
        let has_dependents = self.objects.values().any(|v| owned_by(v, &uid));
        if policy == "Foreground"
            && has_dependents
            && !finalizers.contains(&json!("foregroundDeletion"))
        {
            finalizers.push(json!("foregroundDeletion"));
        }
        let already = old.pointer("/metadata/deletionTimestamp").is_some();
        let pod_grace = is_pod.then(|| {
            let scheduled = util::str_at(&old, "spec.nodeName").is_some_and(|n| !n.is_empty());
            let finished = matches!(
                util::str_at(&old, "status.phase"),
                Some("Succeeded") | Some("Failed")
            );
            if !scheduled || finished {
                0
            } else {
                grace
                    .or_else(|| {
                        util::dotted(&old, "spec.terminationGracePeriodSeconds")
                            .and_then(Value::as_i64)
                    })
                    .unwrap_or(30)
                    .max(0)
            }
        });
        if finalizers.is_empty() && pod_grace.unwrap_or(0) == 0 {
            let gone = self.delete(
                rt,
                ns,
                name,
                precondition_rv,
                precondition_uid,
                orphan,
                dry_run,
            )?;
            return Ok((gone, true));
        }
        check_preconditions(rt, name, &old, precondition_rv, precondition_uid)?;
        if already || dry_run {
            return Ok((old, false));
        }
        let mut cur = old.clone();
        mark_for_deletion(&mut cur, pod_grace.unwrap_or(0));
        if !finalizers.is_empty() {
            util::obj_mut(&mut cur, "metadata")
                .insert("finalizers".into(), Value::Array(finalizers));
        }
        if orphan {
            self.orphan_dependents(&uid);
        }
        let stored = self.commit(rt, cur);
        Ok((stored, false))
    }
}

/// A DELETE's preconditions: the object's resourceVersion and uid, where given.
fn check_preconditions(
    rt: &ResourceType,
    name: &str,
    obj: &Value,
    resource_version: Option<&str>,
    uid: Option<&str>,
) -> Result<(), ApiError> {
    if let Some(rv) = resource_version {
        if Some(rv) != util::str_at(obj, "metadata.resourceVersion") {
            return Err(ApiError::conflict(rt, name).details(json!({"name": name})));
        }
    }
    if let Some(uid) = uid {
        if uid != util::uid_of(obj) {
            return Err(ApiError::conflict(rt, name));
        }
    }
    Ok(())
}

/// Starts a graceful deletion: `deletionTimestamp` = now + `grace` seconds and
/// `deletionGracePeriodSeconds` = `grace`, as the API server writes them.
pub(crate) fn mark_for_deletion(obj: &mut Value, grace: i64) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let meta = util::obj_mut(obj, "metadata");
    meta.insert(
        "deletionTimestamp".into(),
        json!(util::format_unix(now + grace)),
    );
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
}

//! Create (POST) and update (PUT, and PATCH once patched): server-managed metadata,
//! optimistic concurrency, managedFields, generation.

use super::*;

impl State {
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
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
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
        let stored = self.commit(rt, new);
        // The update that removes the last finalizer of an object being deleted deletes it.
        let is_pod = rt.group.is_empty() && rt.plural == "pods";
        let finalizers_left = util::dotted(&stored, "metadata.finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if !is_pod && stored.pointer("/metadata/deletionTimestamp").is_some() && !finalizers_left {
            let key = Self::key(rt, util::ns_of(&stored), util::name_of(&stored));
            return Ok(self.delete_now(rt, &key, false));
        }
        Ok(stored)
    }
}

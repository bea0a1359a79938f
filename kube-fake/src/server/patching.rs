//! PATCH: merge (RFC 7386) and JSON (RFC 6902) patches through the `json-patch` crate,
//! strategic merge and server-side apply through `crate::patch`.

use super::*;

pub(super) fn patch_object(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    sub: &str,
    body: Value,
) -> (u16, Result<Value, ApiError>) {
    let ct = ctx
        .content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let mut st = sh.lock();
    let old = st.get(rt, ns, name).cloned();
    let dry_run = ctx.dry_run();
    if ct == "application/apply-patch+yaml" {
        let manager = match ctx.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => {
                return (
                    200,
                    Err(ApiError::new(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                    )),
                )
            }
        };
        if body.get("apiVersion").and_then(Value::as_str).is_none()
            || body.get("kind").and_then(Value::as_str).is_none()
        {
            return (200, Err(ApiError::bad_request("invalid object: Object 'Kind' or 'apiVersion' is missing in the applied configuration")));
        }
        if body.get("kind").and_then(Value::as_str) != Some(rt.kind.as_str()) && sub != "scale" {
            return (
                200,
                Err(ApiError::bad_request(format!(
                    "the kind of the applied configuration ({}) does not match the resource ({})",
                    body["kind"], rt.kind
                ))),
            );
        }
        if let Err(e) = apply_schema_check(rt, &body) {
            return (200, Err(e));
        }
        let force = ctx.flag("force") && ctx.q("force").is_some();
        let av = rt.api_version();
        match old {
            None => {
                if !sub.is_empty() {
                    return (200, Err(ApiError::not_found(rt, name)));
                }
                let mut base =
                    json!({"apiVersion": av, "kind": rt.kind, "metadata": {"name": name}});
                if rt.namespaced {
                    base["metadata"]["namespace"] = json!(ns);
                }
                let merged = match patch::server_side_apply(
                    &base,
                    &body,
                    &manager,
                    force,
                    rt.keyed_lists,
                    &av,
                    "",
                ) {
                    Ok(m) => m,
                    Err(e) => return (200, Err(e)),
                };
                let opts = WriteOpts {
                    manager: None,
                    dry_run,
                    preset_managed: true,
                };
                (201, st.create(rt, ns, merged, &opts))
            }
            Some(old) => {
                if let Some(rv) = util::str_at(&body, "metadata.resourceVersion") {
                    if Some(rv) != util::str_at(&old, "metadata.resourceVersion") {
                        return (200, Err(ApiError::conflict(rt, name)));
                    }
                }
                let merged = match patch::server_side_apply(
                    &old,
                    &body,
                    &manager,
                    force,
                    rt.keyed_lists,
                    &av,
                    sub,
                ) {
                    Ok(m) => m,
                    Err(e) => return (200, Err(e)),
                };
                let opts = WriteOpts {
                    manager: Some(manager),
                    dry_run,
                    preset_managed: true,
                };
                (200, st.update(rt, &old, merged, sub, &opts, true))
            }
        }
    } else {
        let Some(old) = old else {
            return (200, Err(ApiError::not_found(rt, name)));
        };
        let mut target = if sub == "scale" {
            to_scale(&old)
        } else {
            old.clone()
        };
        let res = match ct.as_str() {
            "application/merge-patch+json" => {
                json_patch::merge(&mut target, &body);
                Ok(())
            }
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge_patch(&mut target, &body, rt.keyed_lists);
                Ok(())
            }
            "application/json-patch+json" => serde_json::from_value::<json_patch::Patch>(body.clone())
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
                .and_then(|p| {
                    // Atomic: a failing operation (e.g. `test`) leaves the document unchanged.
                    json_patch::patch(&mut target, &p).map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))
                }),
            other => Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            )),
        };
        if let Err(e) = res.and_then(|_| {
            if sub == "scale" {
                Ok(())
            } else {
                strict_check(ctx, rt, &target)
            }
        }) {
            return (200, Err(e));
        }
        let opts = WriteOpts {
            manager: Some(ctx.manager()),
            dry_run,
            preset_managed: false,
        };
        if sub == "scale" {
            if let Some(rv) = util::str_at(&target, "metadata.resourceVersion") {
                if Some(rv) != util::str_at(&old, "metadata.resourceVersion") {
                    return (200, Err(ApiError::conflict(rt, name)));
                }
            }
            let mut new = old.clone();
            let replicas = util::dotted(&target, "spec.replicas")
                .cloned()
                .unwrap_or(json!(0));
            util::obj_mut(&mut new, "spec").insert("replicas".into(), replicas);
            // Recorded as the real server does: an Update through the `scale` subresource.
            return (
                200,
                st.update(rt, &old, new, "scale", &opts, false)
                    .map(|v| to_scale(&v)),
            );
        }
        (200, st.update(rt, &old, target, sub, &opts, false))
    }
}

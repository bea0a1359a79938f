//! Handlers per verb on resources: get, list, create, replace, delete, deletecollection,
//! pod logs and the `scale` subresource.

use super::*;

pub(super) fn resource(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    group: &str,
    version: &str,
    rest: &[&str],
) -> (Response, &'static str) {
    let not_found = || {
        error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ))
    };
    // A known group/version answers with a Status; an unknown one never reaches an API.
    if !sh
        .lock()
        .types
        .iter()
        .any(|t| t.group == group && t.version == version)
    {
        return (page_not_found(), "unknown");
    }
    let namespaced_path = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && (rest[2] == "status" || rest[2] == "finalize"));
    let (ns, rest) = if namespaced_path {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    let Some(plural) = rest.first() else {
        return (not_found(), "unknown");
    };
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    if rest.len() > 3 {
        return (not_found(), "unknown");
    }
    let Some(rt) = sh.lock().find_type(group, version, plural) else {
        return (not_found(), "unknown");
    };
    if (ns.is_some() && !rt.namespaced) || (ns.is_none() && rt.namespaced && name.is_some()) {
        return (not_found(), "unknown");
    }
    let ns_str = ns.clone().unwrap_or_default();
    let sub = sub.as_deref().unwrap_or("");
    let sub_ok = match sub {
        "" => true,
        "status" => rt.status,
        "scale" => rt.scale,
        "log" => rt.group.is_empty() && rt.plural == "pods",
        _ => false,
    };
    if !sub_ok {
        return (not_found(), "unknown");
    }
    let m = ctx.method.clone();
    match (m, name) {
        (Method::GET, None) => {
            if ctx.flag("watch") && ctx.q("watch").is_some() {
                (watch(sh, ctx, &rt, ns), "watch")
            } else {
                (list(sh, ctx, &rt, ns.as_deref()), "list")
            }
        }
        (Method::GET, Some(name)) => match sub {
            "log" => (pod_logs(sh, ctx, &rt, &ns_str, &name), "get"),
            "scale" => {
                let st = sh.lock();
                let r = st
                    .get(&rt, &ns_str, &name)
                    .map(to_scale)
                    .ok_or_else(|| ApiError::not_found(&rt, &name));
                (result_response(200, r, false), "get")
            }
            _ => {
                let st = sh.lock();
                let r = st
                    .get(&rt, &ns_str, &name)
                    .cloned()
                    .ok_or_else(|| ApiError::not_found(&rt, &name));
                (result_response(200, r, ctx.meta_only()), "get")
            }
        },
        (Method::POST, None) => {
            if rt.namespaced && ns.is_none() {
                return (not_found(), "create");
            }
            let r = parse_body(ctx).and_then(|body| {
                strict_check(ctx, &rt, &body)?;
                let opts = WriteOpts {
                    manager: Some(ctx.manager()),
                    dry_run: ctx.dry_run(),
                    preset_managed: false,
                };
                sh.lock().create(&rt, &ns_str, body, &opts)
            });
            (result_response(201, r, false), "create")
        }
        (Method::PUT, Some(name)) => {
            let r =
                parse_body(ctx).and_then(|body| replace(sh, ctx, &rt, &ns_str, &name, sub, body));
            (result_response(200, r, false), "update")
        }
        (Method::PATCH, Some(name)) => {
            let (code, r) = match parse_body(ctx) {
                Ok(body) => patch_object(sh, ctx, &rt, &ns_str, &name, sub, body),
                Err(e) => (200, Err(e)),
            };
            (result_response(code, r, false), "patch")
        }
        (Method::DELETE, Some(name)) if sub.is_empty() => {
            (delete(sh, ctx, &rt, &ns_str, &name), "delete")
        }
        (Method::DELETE, None) => (
            delete_collection(sh, ctx, &rt, ns.as_deref()),
            "deletecollection",
        ),
        _ => (
            error_response(&ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            )),
            "unknown",
        ),
    }
}

pub(super) fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""))?,
    ))
}

pub(super) fn list(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: Option<&str>) -> Response {
    let (ls, fs) = match selectors(ctx) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let st = sh.lock();
    let rv = st.rv;
    let mut items: Vec<Value> = st
        .list(rt, ns)
        .into_iter()
        .filter(|o| ls.matches(&util::labels_of(o)) && fs.matches(o))
        .collect();
    drop(st);
    let offset: usize = ctx.q("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = ctx
        .q("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let total = items.len();
    items = items.into_iter().skip(offset).take(limit).collect();
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if offset.saturating_add(limit) < total {
        meta["continue"] = json!((offset + limit).to_string());
        meta["remainingItemCount"] = json!(total - offset - limit);
    }
    let v = if ctx.meta_only() {
        json!({
            "kind": "PartialObjectMetadataList",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": meta,
            "items": items.iter().map(to_partial).collect::<Vec<_>>(),
        })
    } else {
        json!({
            "kind": format!("{}List", rt.kind),
            "apiVersion": rt.api_version(),
            "metadata": meta,
            "items": items,
        })
    };
    json_response(200, &v)
}

pub(super) fn replace(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: &str,
    name: &str,
    sub: &str,
    body: Value,
) -> Result<Value, ApiError> {
    let mut st = sh.lock();
    let old = st
        .get(rt, ns, name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(rt, name))?;
    let opts = WriteOpts {
        manager: Some(ctx.manager()),
        dry_run: ctx.dry_run(),
        preset_managed: false,
    };
    // The strategy's AllowUnconditionalUpdate: Leases and custom resources need a resourceVersion.
    if !rt.unconditional_update
        && util::str_at(&body, "metadata.resourceVersion").is_none_or(str::is_empty)
    {
        let msg = "Invalid value: 0: must be specified for an update";
        return Err(ApiError::new(
            422,
            "Invalid",
            format!(
                "{} {name:?} is invalid: metadata.resourceVersion: {msg}",
                rt.group_resource()
            ),
        )
        .details(json!({"name": name, "group": rt.group, "kind": rt.plural,
            "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": "metadata.resourceVersion"}]})));
    }
    if sub != "scale" {
        strict_check(ctx, rt, &body)?;
    }
    if sub == "scale" {
        let mut new = old.clone();
        if let Some(rv) = util::str_at(&body, "metadata.resourceVersion") {
            if Some(rv) != util::str_at(&old, "metadata.resourceVersion") {
                return Err(ApiError::conflict(rt, name));
            }
        }
        let replicas = util::dotted(&body, "spec.replicas")
            .cloned()
            .unwrap_or(json!(0));
        util::obj_mut(&mut new, "spec").insert("replicas".into(), replicas);
        let stored = st.update(rt, &old, new, "scale", &opts, false)?;
        return Ok(to_scale(&stored));
    }
    st.update(rt, &old, body, sub, &opts, false)
}

pub(super) fn to_scale(obj: &Value) -> Value {
    let selector = util::dotted(obj, "spec.selector")
        .map(|s| {
            s.get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        })
        .unwrap_or_default();
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": util::i64_at(obj, "spec.replicas").unwrap_or(0)},
        "status": {"replicas": util::i64_at(obj, "status.replicas").unwrap_or(0), "selector": selector},
    })
}

pub(super) struct DeleteOptions {
    rv: Option<String>,
    uid: Option<String>,
    /// `Background` (the default), `Foreground` or `Orphan`.
    policy: String,
    /// `gracePeriodSeconds` (pods: the spec's `terminationGracePeriodSeconds` when absent).
    grace: Option<i64>,
    dry_run: bool,
}

pub(super) fn delete_options(ctx: &Ctx) -> DeleteOptions {
    let body: Value = serde_json::from_slice(ctx.body).unwrap_or(Value::Null);
    let mut policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(ctx.q("propagationPolicy"))
        .unwrap_or("Background")
        .to_string();
    if body.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
        policy = "Orphan".into();
    }
    let grace = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| ctx.q("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let dry_run = ctx.dry_run()
        || body
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|v| v == "All"));
    DeleteOptions {
        rv: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        policy,
        grace,
        dry_run,
    }
}

/// A DELETE answers the object while it is still there (a pod in its grace period, an object
/// waiting for finalizers), and for pods always; otherwise a `Success` Status.
pub(super) fn delete(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Response {
    let o = delete_options(ctx);
    let r = sh.lock().delete_api(
        rt,
        ns,
        name,
        o.rv.as_deref(),
        o.uid.as_deref(),
        &o.policy,
        o.grace,
        o.dry_run,
    );
    match r {
        Ok((obj, gone)) if !gone || (rt.group.is_empty() && rt.plural == "pods") => {
            json_response(200, &obj)
        }
        Ok((obj, _)) => json_response(
            200,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": {"name": name, "group": rt.group, "kind": rt.plural, "uid": util::uid_of(&obj)},
            }),
        ),
        Err(e) => error_response(&e),
    }
}

pub(super) fn delete_collection(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: Option<&str>,
) -> Response {
    let (ls, fs) = match selectors(ctx) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let o = delete_options(ctx);
    let mut st = sh.lock();
    let victims: Vec<Value> = st
        .list(rt, ns)
        .into_iter()
        .filter(|v| ls.matches(&util::labels_of(v)) && fs.matches(v))
        .collect();
    let mut deleted = vec![];
    for v in victims {
        let (vns, vname) = (util::ns_of(&v).to_string(), util::name_of(&v).to_string());
        if let Ok((d, _)) =
            st.delete_api(rt, &vns, &vname, None, None, &o.policy, o.grace, o.dry_run)
        {
            deleted.push(d);
        }
    }
    let rv = st.rv;
    json_response(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    )
}

pub(super) fn pod_logs(
    sh: &Arc<Shared>,
    ctx: &Ctx,
    rt: &ResourceType,
    ns: &str,
    name: &str,
) -> Response {
    let st = sh.lock();
    let Some(pod) = st.get(rt, ns, name).cloned() else {
        return error_response(&ApiError::not_found(rt, name));
    };
    let containers: Vec<(String, String)> = util::dotted(&pod, "spec.containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.get("image")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let container = match ctx.q("container") {
        Some(c) if !c.is_empty() => c.to_string(),
        _ if containers.len() == 1 => containers[0].0.clone(),
        _ => {
            let names: Vec<&str> = containers.iter().map(|c| c.0.as_str()).collect();
            return error_response(&ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )));
        }
    };
    let Some((_, image)) = containers.iter().find(|c| c.0 == container) else {
        return error_response(&ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    };
    let uid = util::uid_of(&pod).to_string();
    let mut lines = st
        .sim
        .container_logs(&st.knobs, &uid, &pod, &container, image);
    drop(st);
    if let Some(n) = ctx.q("tailLines").and_then(|t| t.parse::<usize>().ok()) {
        let skip = lines.len().saturating_sub(n);
        lines = lines.split_off(skip);
    }
    let ts = ctx.flag("timestamps") && ctx.q("timestamps").is_some();
    let mut text = String::new();
    for l in lines {
        if ts {
            text.push_str(&util::now_rfc3339());
            text.push(' ');
        }
        text.push_str(&l);
        text.push('\n');
    }
    let mut r = Response::new(Body::from(text));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

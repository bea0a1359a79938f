//! HTTP front end: REST paths, verbs, content types, discovery and watch streaming.

use crate::patch;
use crate::store::{State, WatchEvent, WriteOpts};
use crate::typed;
use crate::types::{ApiError, FieldSelector, LabelSelector, ResourceType};
use crate::util::{self, parse_query};
use crate::{RequestRecord, Shared};
use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio::time::Instant;

const MAX_BODY: usize = 256 * 1024 * 1024;

struct Ctx<'a> {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: String,
    accept: String,
    user_agent: String,
    body: &'a [u8],
    host: String,
    /// `Warning` response headers (`299 - "…"`), as the real server adds them.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Ctx<'_> {
    fn q(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .rev()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.as_str())
    }
    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1") | Some(""))
    }
    fn dry_run(&self) -> bool {
        self.query.iter().any(|(k, v)| k == "dryRun" && v == "All")
    }
    fn manager(&self) -> String {
        match self.q("fieldManager") {
            Some(m) if !m.is_empty() => m.to_string(),
            _ => self
                .user_agent
                .split('/')
                .next()
                .filter(|s| !s.is_empty())
                .unwrap_or("unknown")
                .to_string(),
        }
    }
    fn meta_only(&self) -> bool {
        self.accept.contains("as=PartialObjectMetadata")
    }
}

pub(crate) async fn handle(
    axum::extract::State(sh): axum::extract::State<Arc<Shared>>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let header = |n: http::header::HeaderName| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let content_type = header(http::header::CONTENT_TYPE);
    let accept = header(http::header::ACCEPT);
    let user_agent = header(http::header::USER_AGENT);
    let host = header(http::header::HOST);
    let raw_query = parts.uri.query().unwrap_or("").to_string();
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => return error_response(&ApiError::bad_request(format!("reading body: {e}"))),
    };
    let ctx = Ctx {
        method: parts.method.clone(),
        path: parts.uri.path().to_string(),
        query: parse_query(&raw_query),
        content_type: content_type.clone(),
        accept,
        user_agent,
        body: &bytes,
        host,
        warnings: Default::default(),
    };
    let (mut resp, verb) = dispatch(&sh, &ctx);
    for w in ctx.warnings.borrow().iter() {
        if let Ok(v) = HeaderValue::from_str(&warning_header(w)) {
            resp.headers_mut().append(http::header::WARNING, v);
        }
    }
    tracing::debug!(method = %ctx.method, path = %ctx.path, query = %raw_query, status = resp.status().as_u16(), "kube-fake request");
    let record = RequestRecord {
        user_agent: ctx.user_agent.clone(),
        method: ctx.method.to_string(),
        path: ctx.path.clone(),
        query: raw_query,
        content_type: if content_type.is_empty() {
            None
        } else {
            Some(content_type)
        },
        verb: verb.to_string(),
        status: resp.status().as_u16(),
    };
    sh.lock().requests.push(record);
    resp
}

fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// What the real server's mux answers for a path no API serves (an API group or version that
/// is not installed, e.g. the Gateway API without its CRDs): plain text, not a `Status`.
fn page_not_found() -> Response {
    let mut r = Response::new(Body::from("404 page not found\n"));
    *r.status_mut() = StatusCode::NOT_FOUND;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.status_json())
}

fn result_response(code: u16, r: Result<Value, ApiError>, meta_only: bool) -> Response {
    match r {
        Ok(v) => json_response(code, &if meta_only { to_partial(&v) } else { v }),
        Err(e) => error_response(&e),
    }
}

fn to_partial(v: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": v.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

fn parse_body(ctx: &Ctx) -> Result<Value, ApiError> {
    if ctx.body.is_empty() {
        return Err(ApiError::bad_request("request body is empty"));
    }
    match serde_json::from_slice::<Value>(ctx.body) {
        Ok(v) => Ok(v),
        Err(je) => {
            let text = std::str::from_utf8(ctx.body)
                .map_err(|_| ApiError::bad_request(format!("invalid body: {je}")))?;
            serde_saphyr::from_str::<Value>(text).map_err(|ye| {
                ApiError::bad_request(format!("error decoding body: json: {je}; yaml: {ye}"))
            })
        }
    }
}

/// A warning as the real server writes it (k8s.io/apiserver/pkg/warning, RFC 7234 code 299
/// with the agent `-`): `299 - "unknown field \"spec.colour\""`.
fn warning_header(text: &str) -> String {
    format!(
        "299 - \"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    )
}

/// `fieldValidation`: with `Strict` (what kubectl sends) a create, update or patch whose
/// result has fields the kind does not know is refused; with `Warn` (the server's default
/// when the parameter is absent, as from kube-rs) they are dropped on store and each is named
/// in a `Warning: 299 - "unknown field \"…\""` response header; with `Ignore` they are
/// dropped silently.
fn strict_check(ctx: &Ctx, rt: &ResourceType, obj: &Value) -> Result<(), ApiError> {
    let directive = ctx.q("fieldValidation").unwrap_or("Warn");
    if directive == "Ignore" {
        return Ok(());
    }
    let mut typed_obj = obj.clone();
    if let Some(m) = typed_obj.as_object_mut() {
        m.insert("apiVersion".into(), Value::String(rt.api_version()));
        m.insert("kind".into(), Value::String(rt.kind.clone()));
    }
    let unknown = typed::unknown_fields_strict(&typed_obj);
    if unknown.is_empty() {
        return Ok(());
    }
    if directive != "Strict" {
        ctx.warnings.borrow_mut().extend(
            unknown
                .iter()
                .map(|f| format!("unknown field {}", Value::from(f.as_str()))),
        );
        return Ok(());
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|f| format!("unknown field {}", Value::from(f.as_str())))
        .collect();
    Err(ApiError::bad_request(format!(
        "{k} in version {v:?} cannot be handled as a {k}: strict decoding error: {}",
        fields.join(", "),
        k = rt.kind,
        v = rt.version,
    )))
}

/// Server-side apply converts the applied configuration to its typed form first; a field the
/// kind does not declare fails that conversion. The real server answers this with a 500 that
/// has no reason (kubernetes/kubernetes#122480), whatever `fieldValidation` says.
fn apply_schema_check(rt: &ResourceType, body: &Value) -> Result<(), ApiError> {
    let unknown = typed::unknown_fields(body);
    if unknown.is_empty() {
        return Ok(());
    }
    let errors: Vec<String> = unknown
        .iter()
        .map(|f| format!("{f}: field not declared in schema"))
        .collect();
    let errors = match errors.as_slice() {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    Err(ApiError::new(
        500,
        "",
        format!(
            "failed to create typed patch object ({}/{}; {}/{}, Kind={}): {errors}",
            util::ns_of(body),
            util::name_of(body),
            rt.group,
            rt.version,
            rt.kind
        ),
    ))
}

fn dispatch(sh: &Arc<Shared>, ctx: &Ctx) -> (Response, &'static str) {
    // Injected failures first.
    {
        let mut st = sh.lock();
        let method = ctx.method.as_str();
        if let Some(inj) = st.injections.iter_mut().find(|i| {
            i.remaining > 0
                && i.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && i.path_contains
                    .as_deref()
                    .is_none_or(|p| ctx.path.contains(p))
        }) {
            inj.remaining -= 1;
            let e = ApiError::new(inj.code, inj.reason, inj.message.clone());
            st.injections.retain(|i| i.remaining > 0);
            return (error_response(&e), "injected");
        }
    }
    let segs: Vec<&str> = ctx.path.split('/').filter(|s| !s.is_empty()).collect();
    let get = ctx.method == Method::GET;
    match segs.as_slice() {
        ["version"] if get => (json_response(200, &version_info()), "get"),
        ["healthz"] | ["readyz"] | ["livez"] if get => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain"),
            );
            (r, "get")
        }
        ["api"] if get => (discovery_api(sh, ctx), "get"),
        ["apis"] if get => (discovery_apis(sh, ctx), "get"),
        ["api", "v1"] if get => (resource_list(sh, "", "v1"), "get"),
        ["apis", g] if get => (api_group(sh, g), "get"),
        ["apis", g, v] if get => (resource_list(sh, g, v), "get"),
        ["api", "v1", rest @ ..] => resource(sh, ctx, "", "v1", rest),
        ["apis", g, v, rest @ ..] => resource(sh, ctx, g, v, rest),
        _ => (page_not_found(), "unknown"),
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-kube-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

// ---------------------------------------------------------------------------
// Discovery

fn groups(st: &State) -> BTreeMap<String, Vec<ResourceType>> {
    let mut m: BTreeMap<String, Vec<ResourceType>> = BTreeMap::new();
    for t in &st.types {
        m.entry(t.group.clone()).or_default().push(t.clone());
    }
    m
}

fn wants_aggregated(ctx: &Ctx) -> bool {
    ctx.accept.contains("as=APIGroupDiscoveryList")
}

fn aggregated(types: &[ResourceType], groups: &[String]) -> Value {
    let mut items = vec![];
    for g in groups {
        let mut versions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for t in types.iter().filter(|t| &t.group == g) {
            let mut subs = vec![];
            if t.status {
                subs.push(json!({"subresource": "status", "responseKind": {"group": t.group, "version": t.version, "kind": t.kind}, "verbs": ["get", "patch", "update"]}));
            }
            if t.scale {
                subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
            }
            if t.group.is_empty() && t.plural == "pods" {
                subs.push(json!({"subresource": "log", "responseKind": {"group": "", "version": "v1", "kind": "Pod"}, "verbs": ["get"]}));
            }
            versions.entry(t.version.clone()).or_default().push(json!({
                "resource": t.plural,
                "responseKind": {"group": t.group, "version": t.version, "kind": t.kind},
                "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": t.singular(),
                "verbs": verbs(),
                "shortNames": t.short_names,
                "subresources": subs,
            }));
        }
        let versions: Vec<Value> = versions
            .into_iter()
            .map(|(v, resources)| json!({"version": v, "freshness": "Current", "resources": resources}))
            .collect();
        let mut meta = json!({});
        if !g.is_empty() {
            meta = json!({"name": g});
        }
        items.push(json!({"metadata": meta, "versions": versions}));
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn aggregated_response(v: &Value) -> Response {
    let mut r = json_response(200, v);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    r
}

fn verbs() -> Value {
    json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ])
}

fn discovery_api(sh: &Arc<Shared>, ctx: &Ctx) -> Response {
    if wants_aggregated(ctx) {
        let st = sh.lock();
        return aggregated_response(&aggregated(&st.types, &[String::new()]));
    }
    json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.host}],
        }),
    )
}

fn discovery_apis(sh: &Arc<Shared>, ctx: &Ctx) -> Response {
    let st = sh.lock();
    let gs = groups(&st);
    let names: Vec<String> = gs.keys().filter(|g| !g.is_empty()).cloned().collect();
    if wants_aggregated(ctx) {
        return aggregated_response(&aggregated(&st.types, &names));
    }
    let groups: Vec<Value> = names.iter().map(|g| group_json(g, &gs[g])).collect();
    json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

fn group_json(g: &str, types: &[ResourceType]) -> Value {
    let mut versions: Vec<String> = types.iter().map(|t| t.version.clone()).collect();
    versions.sort();
    versions.dedup();
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
}

fn api_group(sh: &Arc<Shared>, g: &str) -> Response {
    let st = sh.lock();
    let gs = groups(&st);
    match gs.get(g) {
        Some(types) if !g.is_empty() => {
            let mut v = group_json(g, types);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            json_response(200, &v)
        }
        _ => page_not_found(),
    }
}

fn resource_list(sh: &Arc<Shared>, g: &str, v: &str) -> Response {
    let st = sh.lock();
    let types: Vec<&ResourceType> = st
        .types
        .iter()
        .filter(|t| t.group == g && t.version == v)
        .collect();
    if types.is_empty() {
        return page_not_found();
    }
    let mut resources = vec![];
    for t in types {
        let mut r = json!({
            "name": t.plural,
            "singularName": t.singular(),
            "namespaced": t.namespaced,
            "kind": t.kind,
            "verbs": verbs(),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        resources.push(r);
        if t.status {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.scale {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
        if t.group.is_empty() && t.plural == "pods" {
            resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        }
    }
    let gv = if g.is_empty() {
        v.to_string()
    } else {
        format!("{g}/{v}")
    };
    json_response(
        200,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

// ---------------------------------------------------------------------------
// Resources

fn resource(
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

fn selectors(ctx: &Ctx) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(ctx.q("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(ctx.q("fieldSelector").unwrap_or(""))?,
    ))
}

fn list(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: Option<&str>) -> Response {
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

fn replace(
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

fn patch_object(
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

fn to_scale(obj: &Value) -> Value {
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

struct DeleteOptions {
    rv: Option<String>,
    uid: Option<String>,
    orphan: bool,
    dry_run: bool,
}

fn delete_options(ctx: &Ctx) -> DeleteOptions {
    let body: Value = serde_json::from_slice(ctx.body).unwrap_or(Value::Null);
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(ctx.q("propagationPolicy"))
        .unwrap_or("Background")
        .to_string();
    let orphan =
        policy == "Orphan" || body.get("orphanDependents").and_then(Value::as_bool) == Some(true);
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
        orphan,
        dry_run,
    }
}

fn delete(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: &str, name: &str) -> Response {
    let o = delete_options(ctx);
    let r = sh.lock().delete(
        rt,
        ns,
        name,
        o.rv.as_deref(),
        o.uid.as_deref(),
        o.orphan,
        o.dry_run,
    );
    match r {
        Ok(obj) if rt.group.is_empty() && rt.plural == "pods" => json_response(200, &obj),
        Ok(obj) => json_response(
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

fn delete_collection(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: Option<&str>) -> Response {
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
        if let Ok(d) = st.delete(rt, &vns, &vname, None, None, o.orphan, o.dry_run) {
            deleted.push(d);
        }
    }
    let rv = st.rv;
    json_response(
        200,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    )
}

fn pod_logs(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: &str, name: &str) -> Response {
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

// ---------------------------------------------------------------------------
// Watch

struct WatchFilter {
    group: String,
    plural: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    meta_only: bool,
}

impl WatchFilter {
    fn matches(&self, o: &Value) -> bool {
        self.labels.matches(&util::labels_of(o)) && self.fields.matches(o)
    }
    fn line(&self, etype: &str, obj: &Value) -> Bytes {
        let obj = if self.meta_only {
            to_partial(obj)
        } else {
            obj.clone()
        };
        let mut s =
            serde_json::to_string(&json!({"type": etype, "object": obj})).unwrap_or_default();
        s.push('\n');
        Bytes::from(s)
    }
    fn render(&self, ev: &WatchEvent) -> Option<Bytes> {
        if ev.group != self.group || ev.plural != self.plural {
            return None;
        }
        if let Some(ns) = &self.ns {
            if &ev.ns != ns {
                return None;
            }
        }
        let new_m = self.matches(&ev.object);
        let etype = match ev.etype {
            "MODIFIED" => {
                let old_m = ev.old.as_ref().is_some_and(|o| self.matches(o));
                match (old_m, new_m) {
                    (true, true) => "MODIFIED",
                    (false, true) => "ADDED",
                    (true, false) => "DELETED",
                    (false, false) => return None,
                }
            }
            t if new_m => t,
            _ => return None,
        };
        Some(self.line(etype, &ev.object))
    }
}

struct WatchStream {
    rx: broadcast::Receiver<Arc<WatchEvent>>,
    pending: VecDeque<Bytes>,
    deadline: Option<Instant>,
    filter: WatchFilter,
    done: bool,
}

fn expired_line(msg: &str) -> Bytes {
    let e = ApiError::new(410, "Expired", msg.to_string());
    let mut s = serde_json::to_string(&json!({"type": "ERROR", "object": e.status_json()}))
        .unwrap_or_default();
    s.push('\n');
    Bytes::from(s)
}

fn watch(sh: &Arc<Shared>, ctx: &Ctx, rt: &ResourceType, ns: Option<String>) -> Response {
    let (labels, fields) = match selectors(ctx) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let filter = WatchFilter {
        group: rt.group.clone(),
        plural: rt.plural.clone(),
        ns: ns.clone(),
        labels,
        fields,
        meta_only: ctx.meta_only(),
    };
    let send_initial = ctx.q("sendInitialEvents") == Some("true");
    let bookmarks = ctx.q("allowWatchBookmarks") == Some("true");
    let rv_param = ctx.q("resourceVersion").unwrap_or("").to_string();
    let timeout = ctx
        .q("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|t| *t > 0);
    let mut pending = VecDeque::new();
    let mut done = false;
    let st = sh.lock();
    let rx = st.tx.subscribe();
    if send_initial || rv_param.is_empty() || rv_param == "0" {
        for o in st.list(rt, ns.as_deref()) {
            if filter.matches(&o) {
                pending.push_back(filter.line("ADDED", &o));
            }
        }
        if send_initial && bookmarks {
            let bm = json!({
                "kind": rt.kind, "apiVersion": rt.api_version(),
                "metadata": {"resourceVersion": st.rv.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}},
            });
            let mut s = serde_json::to_string(&json!({"type": "BOOKMARK", "object": bm}))
                .unwrap_or_default();
            s.push('\n');
            pending.push_back(Bytes::from(s));
        }
    } else {
        let Ok(from) = rv_param.parse::<u64>() else {
            return error_response(&ApiError::bad_request(format!(
                "invalid resourceVersion {rv_param:?}"
            )));
        };
        if from < st.history_floor {
            pending.push_back(expired_line(&format!(
                "too old resource version: {from} ({})",
                st.history_floor + 1
            )));
            done = true;
        } else {
            for ev in st.history.iter().filter(|e| e.rv > from) {
                if let Some(l) = filter.render(ev) {
                    pending.push_back(l);
                }
            }
        }
    }
    drop(st);
    let state = WatchStream {
        rx,
        pending,
        deadline: timeout.map(|t| Instant::now() + std::time::Duration::from_secs(t)),
        filter,
        done,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(b) = s.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(b), s));
            }
            if s.done {
                return None;
            }
            let far = Instant::now() + std::time::Duration::from_secs(365 * 24 * 3600);
            let deadline = s.deadline.unwrap_or(far);
            tokio::select! {
                r = s.rx.recv() => match r {
                    Ok(ev) => {
                        if let Some(l) = s.filter.render(&ev) {
                            s.pending.push_back(l);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        s.pending.push_back(expired_line("watch channel lagged; too old resource version"));
                        s.done = true;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

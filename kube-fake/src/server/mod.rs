//! HTTP front end: request context, routing (`dispatch`), responses and body checks. The
//! handlers are beside it: [`discovery`] (/api, /apis, aggregated discovery), [`resources`]
//! (get, list, create, replace, delete, deletecollection, pod logs, the scale
//! subresource), [`patching`] (the four patch types and apply) and [`watch`] (watch
//! streams with resumption and bookmarks).

mod discovery;
mod patching;
mod resources;
mod watch;

use discovery::*;
use patching::*;
use resources::*;
use watch::*;

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

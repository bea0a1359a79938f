//! Discovery: `/api`, `/apis`, group and resource lists, aggregated discovery (v2).

use super::*;

pub(super) fn groups(st: &State) -> BTreeMap<String, Vec<ResourceType>> {
    let mut m: BTreeMap<String, Vec<ResourceType>> = BTreeMap::new();
    for t in &st.types {
        m.entry(t.group.clone()).or_default().push(t.clone());
    }
    m
}

pub(super) fn wants_aggregated(ctx: &Ctx) -> bool {
    ctx.accept.contains("as=APIGroupDiscoveryList")
}

pub(super) fn aggregated(types: &[ResourceType], groups: &[String]) -> Value {
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

pub(super) fn aggregated_response(v: &Value) -> Response {
    let mut r = json_response(200, v);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
        ),
    );
    r
}

pub(super) fn verbs() -> Value {
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

pub(super) fn discovery_api(sh: &Arc<Shared>, ctx: &Ctx) -> Response {
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

pub(super) fn discovery_apis(sh: &Arc<Shared>, ctx: &Ctx) -> Response {
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

pub(super) fn group_json(g: &str, types: &[ResourceType]) -> Value {
    let mut versions: Vec<String> = types.iter().map(|t| t.version.clone()).collect();
    versions.sort();
    versions.dedup();
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": g, "versions": vs, "preferredVersion": vs[0]})
}

pub(super) fn api_group(sh: &Arc<Shared>, g: &str) -> Response {
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

pub(super) fn resource_list(sh: &Arc<Shared>, g: &str, v: &str) -> Response {
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

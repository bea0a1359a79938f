//! Where kube-fake behaves like the real kube-apiserver in ways clients trip over: omitempty
//! fields dropped on store, `404 page not found` for APIs that are not installed, generation,
//! Leases that need a resourceVersion, SSA conflict texts, unknown fields, the User-Agent.

use crate::api_err;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_fake::FakeCluster;
use serde_json::{json, Value};
use std::io::{Read, Write};

fn policy(ingress: Value) -> Value {
    json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "p", "labels": {}},
        "spec": {"podSelector": {}, "ingress": ingress, "policyTypes": ["Ingress"]}})
}

/// One raw HTTP/1.1 GET: (status line, content type, body).
fn raw_get(cluster: &FakeCluster, path: &str) -> (String, String, String) {
    let mut s = std::net::TcpStream::connect(cluster.addr()).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: kube\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.lines().next().unwrap().to_string();
    let ct = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(String::from)
        })
        .unwrap_or_default();
    (status, ct, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_omitempty_lists_and_maps_are_dropped_structs_stay() {
    let cluster = FakeCluster::start().await;
    let api: Api<NetworkPolicy> = Api::default_namespaced(cluster.kube_client());
    let ssa = PatchParams::apply("dronectl");
    api.patch("p", &ssa, &Patch::Apply(policy(json!([]))))
        .await
        .unwrap();
    let stored = cluster
        .get_json("networking.k8s.io", "v1", "networkpolicies", "default", "p")
        .unwrap();
    assert!(stored["spec"].get("ingress").is_none(), "{stored}");
    assert!(stored["metadata"].get("labels").is_none(), "{stored}");
    assert_eq!(stored["spec"]["podSelector"], json!({}), "a struct stays");
    assert_eq!(stored["metadata"]["generation"], 1);

    // As on the real server, re-applying `ingress: []` is a change every time: the decoded
    // empty slice differs from the stored nil one, so generation and resourceVersion move.
    let rv = stored["metadata"]["resourceVersion"].clone();
    let again = api
        .patch("p", &ssa, &Patch::Apply(policy(json!([]))))
        .await
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));
    assert_ne!(json!(again.metadata.resource_version), rv);
    // Not sending the empty list is a no-op.
    let mut without = policy(json!([]));
    without["spec"].as_object_mut().unwrap().remove("ingress");
    let a = api.patch("p", &ssa, &Patch::Apply(&without)).await.unwrap();
    let b = api.patch("p", &ssa, &Patch::Apply(&without)).await.unwrap();
    assert_eq!(a.metadata.resource_version, b.metadata.resource_version);
    assert_eq!(a.metadata.generation, b.metadata.generation);

    // Create and replace too; required lists stay (PodSpec.containers).
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c", "annotations": {}}, "data": {}}))
            .unwrap();
    let created = cms.create(&PostParams::default(), &cm).await.unwrap();
    assert!(created.data.is_none() && created.metadata.annotations.is_none());
    let stored = cluster
        .get_json("", "v1", "configmaps", "default", "c")
        .unwrap();
    assert!(stored.get("data").is_none(), "{stored}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apis_that_are_not_installed_answer_404_page_not_found() {
    let cluster = FakeCluster::start().await;
    let route_path = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/r";
    let (status, ct, body) = raw_get(&cluster, route_path);
    assert!(status.contains("404"), "{status}");
    assert!(
        ct.starts_with("application/json"),
        "installed: a Status ({ct})"
    );
    assert!(body.contains("\"kind\":\"Status\""), "{body}");

    cluster.remove_api_group("gateway.networking.k8s.io");
    for path in [
        route_path,
        "/apis/gateway.networking.k8s.io/v1",
        "/apis/gateway.networking.k8s.io",
        "/apis/nope.example.com/v1/namespaces/default/things",
    ] {
        let (status, ct, body) = raw_get(&cluster, path);
        assert!(status.contains("404"), "{path}: {status}");
        assert_eq!(ct, "text/plain; charset=utf-8", "{path}");
        assert_eq!(body, "404 page not found\n", "{path}");
    }
    // A served group/version with an unknown resource still answers with a Status.
    let (_, ct, body) = raw_get(&cluster, "/apis/apps/v1/namespaces/default/widgets");
    assert!(
        ct.starts_with("application/json") && body.contains("NotFound"),
        "{body}"
    );
    // Discovery lists only what is served.
    let (_, _, apis) = raw_get(&cluster, "/apis");
    assert!(!apis.contains("gateway.networking.k8s.io"), "{apis}");
    assert!(apis.contains("\"apps\""), "{apis}");

    // kube-rs sees a non-Status error body (the real server's "Failed to parse error data").
    let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
    let routes: Api<DynamicObject> = Api::namespaced_with(cluster.kube_client(), "default", &ar);
    let err = api_err(routes.get("r").await.unwrap_err());
    assert_eq!(err.code, 404);
    assert!(err.message.contains("404 page not found"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_moves_on_spec_changes_for_every_kind_that_has_one() {
    let cluster = FakeCluster::start().await;
    let ssa = PatchParams::apply("dronectl");
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(cluster.kube_client());
    let pdb = |max: i32, label: &str| {
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "d", "labels": {"l": label}},
            "spec": {"maxUnavailable": max, "selector": {"matchLabels": {"app": "d"}}}})
    };
    let p = pdbs
        .patch("d", &ssa, &Patch::Apply(pdb(1, "a")))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    let p = pdbs
        .patch("d", &ssa, &Patch::Apply(pdb(1, "b")))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1), "metadata only");
    let p = pdbs
        .patch("d", &ssa, &Patch::Apply(pdb(2, "b")))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(2), "spec change");

    let nps: Api<NetworkPolicy> = Api::default_namespaced(cluster.kube_client());
    let np = nps
        .patch(
            "p",
            &ssa,
            &Patch::Apply(policy(
                json!([{"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}]),
            )),
        )
        .await
        .unwrap();
    assert_eq!(np.metadata.generation, Some(1));

    // Kinds without one: ConfigMaps, Services, Namespaces.
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    assert_eq!(
        cms.create(&PostParams::default(), &cm)
            .await
            .unwrap()
            .metadata
            .generation,
        None
    );
    let ns = cluster
        .get_json("", "v1", "namespaces", "", "default")
        .unwrap();
    assert!(ns["metadata"].get("generation").is_none(), "{ns}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_put_needs_a_resource_version_configmap_put_does_not() {
    let cluster = FakeCluster::start().await;
    let leases: Api<Lease> = Api::default_namespaced(cluster.kube_client());
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}}))
            .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let err = api_err(
        leases
            .replace("l", &PostParams::default(), &lease)
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 422);
    assert_eq!(err.reason, "Invalid");
    assert_eq!(
        err.message,
        "leases.coordination.k8s.io \"l\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update"
    );
    // With the resourceVersion it read, the update goes through.
    let mut update = created.clone();
    update.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("l", &PostParams::default(), &update)
        .await
        .unwrap();

    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "1"}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "c"}, "data": {"a": "2"}})).unwrap();
    let replaced = cms.replace("c", &PostParams::default(), &cm).await.unwrap();
    assert_eq!(replaced.data.unwrap()["a"], "2", "unconditional update");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssa_conflicts_name_the_api_version_of_update_managers_only() {
    let cluster = FakeCluster::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let body = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": v, "b": v}});
    cms.patch("c", &PatchParams::apply("ci"), &Patch::Apply(body("1")))
        .await
        .unwrap();
    let err = api_err(
        cms.patch(
            "c",
            &PatchParams::apply("dronectl"),
            &Patch::Apply(body("2")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"ci\":\n- .data.a\n- .data.b"
    );
    // An Update manager (a merge patch, as kubectl edit or an HPA) is named with its API version.
    let edit = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    cms.patch("c", &edit, &Patch::Merge(json!({"data": {"a": "3"}})))
        .await
        .unwrap();
    let err = api_err(
        cms.patch(
            "c",
            &PatchParams::apply("dronectl"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "4"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_fail_apply_are_dropped_by_default_and_refused_when_strict() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"}, "data": {"a": "1"}, "colour": "red"});
    let err = api_err(
        cms.patch("c", &PatchParams::apply("dronectl"), &Patch::Apply(&body))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 500);
    assert_eq!(
        err.message,
        "failed to create typed patch object (default/c; /v1, Kind=ConfigMap): .colour: field not declared in schema"
    );
    assert!(cluster
        .get_json("", "v1", "configmaps", "default", "c")
        .is_none());

    // A create without fieldValidation (the server's default, Warn) drops the field.
    let dynamic: Api<DynamicObject> =
        Api::default_namespaced_with(client.clone(), &ApiResource::erase::<ConfigMap>(&()));
    let obj: DynamicObject = serde_json::from_value(body.clone()).unwrap();
    dynamic.create(&PostParams::default(), &obj).await.unwrap();
    let stored = cluster
        .get_json("", "v1", "configmaps", "default", "c")
        .unwrap();
    assert!(stored.get("colour").is_none(), "{stored}");
    assert_eq!(stored["data"]["a"], "1");

    // fieldValidation=Strict (kubectl's default) refuses it.
    let mut strict = obj.clone();
    strict.metadata.name = Some("d".into());
    let err = api_err(
        client
            .request::<DynamicObject>(
                http::Request::post("/api/v1/namespaces/default/configmaps?fieldValidation=Strict")
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&strict).unwrap())
                    .unwrap(),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 400);
    assert_eq!(
        err.message,
        "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: strict decoding error: unknown field \"colour\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_agent_is_recorded() {
    let cluster = FakeCluster::start().await;
    let mut config = cluster.kube_config();
    config
        .headers
        .push((http::header::USER_AGENT, "dronectl/9.9.9".parse().unwrap()));
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    cms.list(&Default::default()).await.unwrap();
    let last = cluster.requests().pop().unwrap();
    assert_eq!(last.user_agent, "dronectl/9.9.9");
}

/// One raw HTTP/1.1 request with a JSON body: (status code, the `Warning` headers, body).
fn raw_send(cluster: &FakeCluster, method: &str, path: &str, body: &Value) -> (u16, Vec<String>, String) {
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(cluster.addr()).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: kube\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let warnings = head
        .lines()
        .filter_map(|l| l.split_once(": ").filter(|(k, _)| k.eq_ignore_ascii_case("warning")))
        .map(|(_, v)| v.to_string())
        .collect();
    (code, warnings, rest.to_string())
}

/// `fieldValidation` absent (kube-rs's default, the server's `Warn`) or `Warn`: unknown fields
/// are dropped and each is named in a `Warning: 299 - "unknown field \"…\""` header, like the
/// real server; `Ignore` drops them silently; known fields give no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_warned_about_in_warning_headers() {
    let cluster = FakeCluster::start().await;
    let cm = |name: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"a": "1"}, "colour": "red", "metadata2": {"x": 1}})
    };
    for (query, expected) in [
        ("", vec![r#"299 - "unknown field \"colour\"""#, r#"299 - "unknown field \"metadata2\"""#]),
        ("?fieldValidation=Warn", vec![r#"299 - "unknown field \"colour\"""#, r#"299 - "unknown field \"metadata2\"""#]),
        ("?fieldValidation=Ignore", vec![]),
    ] {
        let name = format!("c{}", query.len());
        let (code, warnings, body) = raw_send(
            &cluster,
            "POST",
            &format!("/api/v1/namespaces/default/configmaps{query}"),
            &cm(&name),
        );
        assert_eq!(code, 201, "{query}: {body}");
        assert_eq!(warnings, expected, "{query}");
        let stored = cluster.get_json("", "v1", "configmaps", "default", &name).unwrap();
        assert!(stored.get("colour").is_none(), "{stored}");
    }
    // A nested unknown field on an update is named by its path; a clean body warns nothing.
    let mut update = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0", "labels": {"a": "b"}, "colour": "x"}, "data": {"a": "2"}});
    let (code, warnings, body) = raw_send(&cluster, "PUT", "/api/v1/namespaces/default/configmaps/c0", &update);
    assert_eq!(code, 200, "{body}");
    assert_eq!(warnings, [r#"299 - "unknown field \"metadata.colour\"""#]);
    update["metadata"].as_object_mut().unwrap().remove("colour");
    update["data"]["a"] = json!("3");
    let (code, warnings, _) = raw_send(&cluster, "PUT", "/api/v1/namespaces/default/configmaps/c0", &update);
    assert_eq!((code, warnings.len()), (200, 0));
}

/// `podSelector` is a non-pointer struct in the Go type: a NetworkPolicy sent without it is
/// stored (and returned) with `podSelector: {}`, which selects every pod of the namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_policy_without_pod_selector_is_stored_with_an_empty_one() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let dynamic: Api<DynamicObject> =
        Api::default_namespaced_with(client.clone(), &ApiResource::erase::<NetworkPolicy>(&()));
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy", "metadata": {"name": "deny-all"}, "spec": {"policyTypes": ["Ingress"]}}))
    .unwrap();
    let created = dynamic.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.data["spec"]["podSelector"], json!({}));
    let typed: Api<NetworkPolicy> = Api::default_namespaced(client);
    let got = typed.get("deny-all").await.unwrap();
    assert_eq!(got.spec.unwrap().pod_selector, Some(Default::default()));
    let stored = cluster
        .get_json("networking.k8s.io", "v1", "networkpolicies", "default", "deny-all")
        .unwrap();
    assert_eq!(stored["spec"], json!({"podSelector": {}, "policyTypes": ["Ingress"]}));
}

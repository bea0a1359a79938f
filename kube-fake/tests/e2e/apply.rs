use crate::{api_err, deployment};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_fake::FakeCluster;
use serde_json::{json, Value};

fn managers(d: &Deployment) -> Vec<(String, String)> {
    d.metadata
        .managed_fields
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.manager.unwrap_or_default(),
                m.operation.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply_create_update_conflict_force() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let deps: Api<Deployment> = Api::default_namespaced(cluster.kube_client());
    let ssa = PatchParams::apply("dronectl");

    // Create through apply.
    let d = deps
        .patch("web", &ssa, &Patch::Apply(deployment("web", "web:1", 2)))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(
        managers(&d),
        [("dronectl".to_string(), "Apply".to_string())]
    );
    let fields = d.metadata.managed_fields.as_ref().unwrap()[0]
        .fields_v1
        .as_ref()
        .unwrap()
        .0
        .clone();
    assert_eq!(fields["f:spec"]["f:replicas"], json!({}));
    assert_eq!(
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"app\"}"]["f:image"],
        json!({})
    );

    // Re-applying the same configuration is a no-op: no new resourceVersion.
    let again = deps
        .patch("web", &ssa, &Patch::Apply(deployment("web", "web:1", 2)))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);

    // Changing the image bumps generation; a metadata-only change does not.
    let d2 = deps
        .patch("web", &ssa, &Patch::Apply(deployment("web", "web:2", 2)))
        .await
        .unwrap();
    assert_eq!(d2.metadata.generation, Some(2));
    let mut labelled = deployment("web", "web:2", 2);
    labelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("team".into(), "a".into());
    let d3 = deps
        .patch("web", &ssa, &Patch::Apply(labelled))
        .await
        .unwrap();
    assert_eq!(d3.metadata.generation, Some(2));
    assert_eq!(d3.metadata.labels.as_ref().unwrap()["team"], "a");

    // Dropping a field from the applied configuration removes it.
    let d4 = deps
        .patch("web", &ssa, &Patch::Apply(deployment("web", "web:2", 2)))
        .await
        .unwrap();
    assert!(!d4.metadata.labels.as_ref().unwrap().contains_key("team"));

    // Another manager changing an owned field conflicts...
    let other = PatchParams::apply("hpa-like");
    let partial = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let err = api_err(
        deps.patch("web", &other, &Patch::Apply(&partial))
            .await
            .unwrap_err(),
    );
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("conflict with \"dronectl\""),
        "{}",
        err.message
    );
    assert!(err.message.contains(".spec.replicas"), "{}", err.message);
    let causes = err.details.as_ref().unwrap().causes.clone();
    assert_eq!(causes[0].field, ".spec.replicas");
    assert_eq!(causes[0].reason, "FieldManagerConflict");

    // ...but applying the same value does not.
    let same = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}});
    deps.patch("web", &other, &Patch::Apply(&same))
        .await
        .unwrap();

    // dryRun does not persist.
    let dry = deps
        .patch(
            "web",
            &PatchParams::apply("hpa-like").force().dry_run(),
            &Patch::Apply(&partial),
        )
        .await
        .unwrap();
    assert_eq!(dry.spec.replicas, Some(5));
    assert_eq!(deps.get("web").await.unwrap().spec.replicas, Some(2));

    // force takes ownership.
    let forced = deps
        .patch(
            "web",
            &PatchParams::apply("hpa-like").force(),
            &Patch::Apply(&partial),
        )
        .await
        .unwrap();
    assert_eq!(forced.spec.replicas, Some(5));
    let owners = managers(&forced);
    assert!(owners.contains(&("hpa-like".into(), "Apply".into())));
    // Now dronectl's apply of replicas=2 conflicts with hpa-like.
    let err = api_err(
        deps.patch("web", &ssa, &Patch::Apply(deployment("web", "web:2", 2)))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("conflict with \"hpa-like\""),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_requires_field_manager_and_update_ops_own_fields() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    // Raw apply without fieldManager → 422.
    let req = http::Request::patch("/api/v1/namespaces/default/configmaps/x")
        .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
        .body(br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec())
        .unwrap();
    let err = api_err(client.request::<Value>(req).await.unwrap_err());
    assert_eq!(err.code, 422);
    // YAML bodies are accepted too.
    let req =
        http::Request::patch("/api/v1/namespaces/default/configmaps/x?fieldManager=yaml-user")
            .header(http::header::CONTENT_TYPE, "application/apply-patch+yaml")
            .body(
                b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: '1'\n"
                    .to_vec(),
            )
            .unwrap();
    let v: Value = client.request(req).await.unwrap();
    assert_eq!(v["data"]["a"], "1");

    // A PUT by another manager takes ownership of the field it changed → apply conflicts.
    let mut c = cms.get("x").await.unwrap();
    c.data.as_mut().unwrap().insert("a".into(), "2".into());
    let pp = PostParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let c = cms.replace("x", &pp, &c).await.unwrap();
    let mgrs: Vec<String> = c
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(mgrs.contains(&"kubectl-edit".to_string()), "{mgrs:?}");
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
    let err = api_err(
        cms.patch("x", &PatchParams::apply("yaml-user"), &Patch::Apply(&apply))
            .await
            .unwrap_err(),
    );
    assert!(
        err.message.contains("kubectl-edit") && err.message.contains(".data.a"),
        "{}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_strategic_and_json_patches() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let mut d = deployment("web", "web:1", 2);
    let pod_spec = d.spec.template.spec.as_mut().unwrap();
    let mut sidecar = pod_spec.containers[0].clone();
    sidecar.name = "sidecar".into();
    sidecar.image = Some("proxy:1".into());
    pod_spec.containers.push(sidecar);
    deps.create(&PostParams::default(), &d).await.unwrap();

    // RFC 7386 merge patch: null deletes, maps merge, lists replace.
    let pp = PatchParams::default();
    let d = deps
        .patch(
            "web",
            &pp,
            &Patch::Merge(
                json!({"metadata": {"labels": {"app": null, "x": "y"}}, "spec": {"replicas": 4}}),
            ),
        )
        .await
        .unwrap();
    let labels = d.metadata.labels.clone().unwrap();
    assert!(!labels.contains_key("app") && labels["x"] == "y");
    assert_eq!(d.spec.replicas, Some(4));
    assert_eq!(d.metadata.generation, Some(2));

    // Strategic merge: containers merge by name.
    let d = deps
        .patch("web", &pp, &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "web:2"}]}}}})))
        .await
        .unwrap();
    let cs = d.spec.template.spec.unwrap().containers;
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0].image.as_deref(), Some("web:2"));
    assert_eq!(cs[1].image.as_deref(), Some("proxy:1"));

    // RFC 6902 JSON patch (raw, so no extra kube feature is needed).
    let body = json!([
        {"op": "test", "path": "/spec/replicas", "value": 4},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
        {"op": "add", "path": "/metadata/annotations", "value": {"note": "hi"}}
    ]);
    let req = http::Request::patch("/apis/apps/v1/namespaces/default/deployments/web")
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    let v: Value = client.request(req).await.unwrap();
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["metadata"]["annotations"]["note"], "hi");
    let failing = json!([{"op": "test", "path": "/spec/replicas", "value": 99}]);
    let req = http::Request::patch("/apis/apps/v1/namespaces/default/deployments/web")
        .header(http::header::CONTENT_TYPE, "application/json-patch+json")
        .body(serde_json::to_vec(&failing).unwrap())
        .unwrap();
    assert_eq!(
        api_err(client.request::<Value>(req).await.unwrap_err()).code,
        422
    );

    // A merge patch carrying a stale resourceVersion is a conflict.
    let err = api_err(
        deps.patch(
            "web",
            &pp,
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(err.code, 409);
    // Patching something missing is a 404.
    assert_eq!(
        api_err(
            deps.patch("nope", &pp, &Patch::Merge(json!({})))
                .await
                .unwrap_err()
        )
        .code,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_scale_subresources() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let deps: Api<Deployment> = Api::default_namespaced(cluster.kube_client());
    deps.create(&PostParams::default(), &deployment("web", "web:1", 2))
        .await
        .unwrap();

    // Status written through /status; spec and generation untouched.
    let d = deps
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"readyReplicas": 7}, "spec": {"replicas": 9}})),
        )
        .await
        .unwrap();
    assert_eq!(d.status.as_ref().unwrap().ready_replicas, Some(7));
    assert_eq!(d.spec.replicas, Some(2));
    assert_eq!(d.metadata.generation, Some(1));
    assert_eq!(
        deps.get_status("web")
            .await
            .unwrap()
            .status
            .unwrap()
            .ready_replicas,
        Some(7)
    );

    // Status sent to the main resource is ignored.
    let mut cur = deps.get("web").await.unwrap();
    cur.status.as_mut().unwrap().ready_replicas = Some(1);
    let after = deps
        .replace("web", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(after.status.unwrap().ready_replicas, Some(7));

    // replace_status works with optimistic concurrency.
    let mut cur = deps.get("web").await.unwrap();
    cur.status.as_mut().unwrap().ready_replicas = Some(3);
    let d = deps
        .replace_status("web", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert_eq!(d.status.unwrap().ready_replicas, Some(3));

    // Scale subresource.
    let s = deps.get_scale("web").await.unwrap();
    assert_eq!(s.spec.unwrap().replicas, Some(2));
    assert_eq!(s.status.unwrap().selector.as_deref(), Some("app=web"));
    deps.patch_scale(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    let d = deps.get("web").await.unwrap();
    assert_eq!(d.spec.replicas, Some(5));
    assert_eq!(d.metadata.generation, Some(2));
}

use crate::{api_err, deployment, eventually};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{Discovery, Scope};
use kube_fake::{FakeCluster, ResourceType};
use serde_json::json;
use std::collections::BTreeMap;

fn cm(name: &str, labels: &[(&str, &str)], data: &[(&str, &str)]) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.into());
    c.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    c.data = Some(
        data.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_create_get_list_replace_delete() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let pp = PostParams::default();

    let created = api
        .create(&pp, &cm("a", &[("app", "web")], &[("k", "v")]))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    let rv1: u64 = meta.resource_version.as_deref().unwrap().parse().unwrap();
    api.create(&pp, &cm("b", &[("app", "api")], &[]))
        .await
        .unwrap();
    api.create(&pp, &cm("c", &[("app", "web"), ("tier", "x")], &[]))
        .await
        .unwrap();

    // AlreadyExists as a proper Status.
    let err = api_err(api.create(&pp, &cm("a", &[], &[])).await.unwrap_err());
    assert_eq!(err.code, 409);
    assert_eq!(err.reason, "AlreadyExists");
    assert!(
        err.message.contains("configmaps \"a\" already exists"),
        "{}",
        err.message
    );

    // Get, NotFound.
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "v");
    let nf = api_err(api.get("zzz").await.unwrap_err());
    assert_eq!((nf.code, nf.reason.as_str()), (404, "NotFound"));
    assert!(api.get_opt("zzz").await.unwrap().is_none());

    // List with label and field selectors.
    let all = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(all.items.len(), 3);
    let list_rv: u64 = all
        .metadata
        .resource_version
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(list_rv > rv1);
    let names = |l: kube::core::ObjectList<ConfigMap>| {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=web,tier!=x"))
                .await
                .unwrap()
        ),
        ["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("tier"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (api,x)"))
                .await
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
        ),
        ["b"]
    );

    // Pagination.
    let page = api.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(names(rest), ["c"]);

    // Replace with the current resourceVersion works; a stale one is a 409 Conflict.
    let mut a = api.get("a").await.unwrap();
    let stale = a.clone();
    a.data.as_mut().unwrap().insert("k".into(), "v2".into());
    let a2 = api.replace("a", &pp, &a).await.unwrap();
    assert_ne!(
        a2.metadata.resource_version,
        stale.metadata.resource_version
    );
    let err = api_err(api.replace("a", &pp, &stale).await.unwrap_err());
    assert_eq!((err.code, err.reason.as_str()), (409, "Conflict"));
    assert!(
        err.message.contains("the object has been modified"),
        "{}",
        err.message
    );

    // Delete returns a Status; the object is gone.
    let del = api.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(del.is_right());
    assert_eq!(api_err(api.get("a").await.unwrap_err()).code, 404);
    assert_eq!(
        api_err(api.delete("a", &DeleteParams::default()).await.unwrap_err()).code,
        404
    );

    // Delete collection by label.
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=api"),
    )
    .await
    .unwrap();
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap()),
        ["c"]
    );

    // Metadata-only get/list.
    let pm = api.get_metadata("c").await.unwrap();
    assert_eq!(pm.metadata.name.as_deref(), Some("c"));
    assert_eq!(
        api.list_metadata(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_are_required_and_cascade() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let in_ns: Api<ConfigMap> = Api::namespaced(client.clone(), "team-a");
    let err = api_err(
        in_ns
            .create(&PostParams::default(), &cm("x", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, 404);
    assert!(
        err.message.contains("namespaces \"team-a\" not found"),
        "{}",
        err.message
    );

    let nss: Api<Namespace> = Api::all(client.clone());
    let mut ns = Namespace::default();
    ns.metadata.name = Some("team-a".into());
    let created = nss.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(created.status.unwrap().phase.as_deref(), Some("Active"));
    in_ns
        .create(&PostParams::default(), &cm("x", &[], &[]))
        .await
        .unwrap();
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"team-a".to_string()));

    // Cluster-wide list sees the namespaced object.
    let all: Api<ConfigMap> = Api::all(client.clone());
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );

    nss.delete("team-a", &DeleteParams::default())
        .await
        .unwrap();
    assert!(in_ns.get_opt("x").await.unwrap().is_none());

    // Invalid names are rejected like a real API server would.
    let bad = api_err(
        Api::<ConfigMap>::default_namespaced(client)
            .create(&PostParams::default(), &cm("Bad_Name", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!((bad.code, bad.reason.as_str()), (422, "Invalid"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_create_does_not_persist_and_defaults_apply() {
    let cluster = FakeCluster::start().await;
    cluster.pause_controller();
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let d = deps
        .create(&pp, &deployment("web", "web:1", 2))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    assert!(deps.get_opt("web").await.unwrap().is_none());

    let d = deps
        .create(&PostParams::default(), &deployment("web", "web:1", 2))
        .await
        .unwrap();
    let spec = d.spec;
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    assert_eq!(
        spec.strategy.unwrap().type_.as_deref(),
        Some("RollingUpdate")
    );
    let c = &spec.template.spec.unwrap().containers[0];
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));

    let svcs: Api<Service> = Api::default_namespaced(client);
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}
    }))
    .unwrap();
    let svc = svcs.create(&PostParams::default(), &svc).await.unwrap();
    let spec = svc.spec.unwrap();
    assert!(spec.cluster_ip.unwrap().starts_with("10.96."));
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_deployment_cascades_to_replicasets_and_pods() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    deps.create(&PostParams::default(), &deployment("web", "web:1", 2))
        .await
        .unwrap();
    eventually("2 pods", || async {
        (pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .unwrap()
            .items
            .len()
            == 2)
            .then_some(())
    })
    .await;
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    deps.delete("web", &DeleteParams::background())
        .await
        .unwrap();
    // The garbage collector is asynchronous, as on a real cluster: the ReplicaSet outlives
    // its Deployment for a moment, then its pods terminate gracefully, then they are gone.
    assert_eq!(
        rss.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    eventually("pods terminating", || async {
        let items = pods.list(&ListParams::default()).await.unwrap().items;
        (items.len() == 2
            && items.iter().all(|p| {
                p.metadata.deletion_timestamp.is_some()
                    && p.metadata.deletion_grace_period_seconds == Some(30)
            }))
        .then_some(())
    })
    .await;
    assert!(rss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .is_empty());
    eventually("pods gone", || async {
        pods.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_version() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");

    for discovery in [
        Discovery::new(client.clone()).run().await.unwrap(),
        Discovery::new(client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    ] {
        let gvk = GroupVersionKind::gvk("apps", "v1", "Deployment");
        let (ar, caps) = discovery.resolve_gvk(&gvk).expect("deployments discovered");
        assert_eq!(ar.plural, "deployments");
        assert_eq!(caps.scope, Scope::Namespaced);
        let gvk = GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute");
        assert!(discovery.resolve_gvk(&gvk).is_some());
        let gvk = GroupVersionKind::gvk("", "v1", "Namespace");
        let (_, caps) = discovery.resolve_gvk(&gvk).expect("namespaces discovered");
        assert_eq!(caps.scope, Scope::Cluster);
        for g in [
            "policy",
            "networking.k8s.io",
            "autoscaling",
            "coordination.k8s.io",
        ] {
            assert!(discovery.has_group(g), "group {g}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_objects_registered_types_and_crds() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    cluster.register_resource(
        ResourceType::new("example.com", "v1", "widgets", "Widget", true).with_status(),
    );
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Widget"),
        "widgets",
    );
    let api: Api<DynamicObject> = Api::default_namespaced_with(client.clone(), &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 3}
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(api.get("w").await.unwrap().data["spec"]["size"], 3);

    // A CRD registers its kind.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.org"},
        "spec": {"group": "example.org", "scope": "Namespaced",
                 "names": {"plural": "gadgets", "kind": "Gadget", "singular": "gadget"},
                 "versions": [{"name": "v1alpha1", "served": true, "storage": true, "subresources": {"status": {}}}]}
    }))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let gar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.org", "v1alpha1", "Gadget"),
        "gadgets",
    );
    let gadgets: Api<DynamicObject> = Api::default_namespaced_with(client, &gar);
    let g: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "example.org/v1alpha1", "kind": "Gadget", "metadata": {"name": "g"}}),
    )
    .unwrap();
    gadgets.create(&PostParams::default(), &g).await.unwrap();
    assert_eq!(
        cluster
            .list_json("example.org", "v1alpha1", "gadgets", Some("default"))
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_counts_requests() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    cluster.clear_requests();
    api.create(&PostParams::default(), &cm("a", &[], &[]))
        .await
        .unwrap();
    api.get("a").await.unwrap();
    api.list(&ListParams::default().labels("x=y"))
        .await
        .unwrap();
    let reqs = cluster.requests();
    assert_eq!(cluster.request_count(), 3);
    assert_eq!(reqs[0].method, "POST");
    assert_eq!(reqs[0].verb, "create");
    assert_eq!(reqs[0].path, "/api/v1/namespaces/default/configmaps");
    assert_eq!(reqs[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(reqs[0].status, 201);
    assert_eq!(
        (reqs[1].verb.as_str(), reqs[1].path.as_str()),
        ("get", "/api/v1/namespaces/default/configmaps/a")
    );
    assert_eq!(reqs[2].verb, "list");
    assert!(
        reqs[2].query.contains("labelSelector=x%3Dy"),
        "{}",
        reqs[2].query
    );
}

/// DELETE of a running pod is graceful (deletionTimestamp = now + grace,
/// deletionGracePeriodSeconds; the pod answers GET as Terminating until the kubelet has
/// stopped it); `gracePeriodSeconds: 0` deletes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_is_graceful_unless_the_grace_period_is_zero() {
    let cluster = FakeCluster::start().await;
    cluster.set_termination_ticks(10);
    let client = cluster.kube_client();
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let pod: Pod = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"terminationGracePeriodSeconds": 20, "containers": [{"name": "app", "image": "web:1"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("scheduled", || async {
        pods.get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .map(|_| ())
    })
    .await;
    let answered = pods.delete("p", &DeleteParams::default()).await.unwrap();
    let terminating = answered.left().expect("the pod, not a Status");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(20));
    let still = pods.get("p").await.unwrap();
    assert_eq!(
        still.metadata.deletion_timestamp,
        terminating.metadata.deletion_timestamp
    );
    // A second DELETE changes nothing.
    let again = pods
        .delete("p", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        still.metadata.resource_version
    );
    eventually("gone", || async {
        pods.get_opt("p").await.unwrap().is_none().then_some(())
    })
    .await;

    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("scheduled", || async {
        pods.get("p")
            .await
            .unwrap()
            .spec
            .unwrap()
            .node_name
            .map(|_| ())
    })
    .await;
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("p", &now).await.unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
}

/// An object with finalizers stays (deletionTimestamp set) until an update removes the last
/// one; a Foreground deletion keeps the owner until its dependents are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_foreground_deletion_keep_the_object_until_done() {
    let cluster = FakeCluster::start().await;
    let client = cluster.kube_client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let mut c = cm("held", &[], &[("a", "1")]);
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    cms.create(&PostParams::default(), &c).await.unwrap();
    let answered = cms.delete("held", &DeleteParams::default()).await.unwrap();
    let held = answered
        .left()
        .expect("the object while finalizers hold it");
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.metadata.deletion_grace_period_seconds, Some(0));
    let mut cur = cms.get("held").await.unwrap();
    assert!(cur.metadata.deletion_timestamp.is_some());
    cur.metadata.finalizers = None;
    cms.replace("held", &PostParams::default(), &cur)
        .await
        .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());

    let deps: Api<Deployment> = Api::default_namespaced(client.clone());
    let rss: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    deps.create(&PostParams::default(), &deployment("fg", "web:1", 1))
        .await
        .unwrap();
    eventually("a ReplicaSet", || async {
        (rss.list(&ListParams::default()).await.unwrap().items.len() == 1).then_some(())
    })
    .await;
    let answered = deps
        .delete("fg", &DeleteParams::foreground())
        .await
        .unwrap();
    let owner = answered
        .left()
        .expect("the Deployment while its dependents go");
    assert_eq!(
        owner.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()])
    );
    assert!(deps.get_opt("fg").await.unwrap().is_some());
    eventually("dependents and owner gone", || async {
        (rss.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
            && deps.get_opt("fg").await.unwrap().is_none())
        .then_some(())
    })
    .await;
}

use crate::{api_err, eventually};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, LogParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_fake::FakeCluster;
use serde_json::json;

fn lease(holder: &str) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "dronectl-deploy-web"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 30, "renewTime": "2026-01-01T00:00:00.000000Z"}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_optimistic_concurrency() {
    let cluster = FakeCluster::start().await;
    let leases: Api<Lease> = Api::default_namespaced(cluster.kube_client());
    let pp = PostParams::default();
    let l = leases.create(&pp, &lease("dronectl-1")).await.unwrap();
    // A second creator loses with AlreadyExists.
    assert_eq!(
        api_err(leases.create(&pp, &lease("dronectl-2")).await.unwrap_err()).reason,
        "AlreadyExists"
    );

    // Both read the same version; the first replace wins, the second gets 409.
    let mut a = l.clone();
    let mut b = l.clone();
    a.spec.as_mut().unwrap().holder_identity = Some("dronectl-1".into());
    a.spec.as_mut().unwrap().lease_transitions = Some(1);
    b.spec.as_mut().unwrap().holder_identity = Some("dronectl-2".into());
    let won = leases
        .replace("dronectl-deploy-web", &pp, &a)
        .await
        .unwrap();
    assert_eq!(won.spec.unwrap().lease_transitions, Some(1));
    let lost = api_err(
        leases
            .replace("dronectl-deploy-web", &pp, &b)
            .await
            .unwrap_err(),
    );
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    assert!(
        lost.message
            .contains("leases.coordination.k8s.io \"dronectl-deploy-web\""),
        "{}",
        lost.message
    );

    // Injected conflict on an otherwise valid PUT.
    let mut cur = leases.get("dronectl-deploy-web").await.unwrap();
    cur.spec.as_mut().unwrap().lease_duration_seconds = Some(60);
    cluster.inject_conflict_on_next_put();
    assert_eq!(
        api_err(
            leases
                .replace("dronectl-deploy-web", &pp, &cur)
                .await
                .unwrap_err()
        )
        .code,
        409
    );
    leases
        .replace("dronectl-deploy-web", &pp, &cur)
        .await
        .unwrap();

    // Generic failure injection.
    cluster.inject_error(Some("GET"), Some("/leases/"), 500, 1);
    assert_eq!(
        api_err(leases.get("dronectl-deploy-web").await.unwrap_err()).code,
        500
    );
    assert!(leases.get("dronectl-deploy-web").await.is_ok());
    // kube-rs retries 503s by default: two injected failures are invisible to the caller.
    cluster.clear_requests();
    cluster.inject_error(Some("GET"), Some("/leases/"), 503, 2);
    assert!(leases.get("dronectl-deploy-web").await.is_ok());
    let statuses: Vec<u16> = cluster.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubeconfig_file_loads_and_works() {
    let cluster = FakeCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    cluster
        .write_kubeconfig(&path, "kube-fake", "staging")
        .unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    assert_eq!(kc.current_context.as_deref(), Some("kube-fake"));
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, "staging");
    assert_eq!(
        cfg.cluster_url.to_string().trim_end_matches('/'),
        cluster.url()
    );
    let client = kube::Client::try_from(cfg).unwrap();
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let mut ns = k8s_openapi::api::core::v1::Namespace::default();
    ns.metadata.name = Some("staging".into());
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(client);
    let mut c = ConfigMap::default();
    c.metadata.name = Some("x".into());
    cms.create(&PostParams::default(), &c).await.unwrap();
    assert!(cluster
        .get_json("", "v1", "configmaps", "staging", "x")
        .is_some());
    // The bearer token is sent (and accepted).
    assert!(cluster.requests().iter().all(|r| r.status < 400));
}

#[test]
fn start_blocking_serves_synchronous_tests() {
    let cluster = FakeCluster::start_blocking();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cms: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
        let mut c = ConfigMap::default();
        c.metadata.name = Some("sync".into());
        cms.create(&PostParams::default(), &c).await.unwrap();
    });
    assert!(cluster
        .get_json("", "v1", "configmaps", "default", "sync")
        .is_some());
    assert!(cluster
        .all_objects()
        .iter()
        .any(|o| o["metadata"]["name"] == "sync"));
    let url = cluster.url();
    drop(cluster);
    // The server is gone after drop.
    let addr = url.trim_start_matches("http://").to_string();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_for_multi_container_pods() {
    let cluster = FakeCluster::start().await;
    cluster.set_image_logs("web:", vec!["GET / 200".into(), "GET /healthz 200".into()]);
    let pods: Api<Pod> = Api::default_namespaced(cluster.kube_client());
    let p: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "web", "image": "web:1"}, {"name": "proxy", "image": "envoy:1"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &p).await.unwrap();
    let err = api_err(pods.logs("p", &LogParams::default()).await.unwrap_err());
    assert_eq!(err.code, 400);
    assert!(
        err.message.contains("choose one of: [web proxy]"),
        "{}",
        err.message
    );
    let logs = pods
        .logs(
            "p",
            &LogParams {
                container: Some("web".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logs, "GET / 200\nGET /healthz 200\n");
    let tail = pods
        .logs(
            "p",
            &LogParams {
                container: Some("web".into()),
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "GET /healthz 200\n");
    eventually("bare pod running and ready", || async {
        let p = pods.get("p").await.unwrap();
        let s = p.status?;
        (s.phase.as_deref() == Some("Running") && s.container_statuses?.iter().all(|c| c.ready))
            .then_some(())
    })
    .await;
    assert_eq!(
        pods.list(&ListParams::default().fields("status.phase=Running"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

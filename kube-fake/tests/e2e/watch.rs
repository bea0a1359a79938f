use crate::{eventually, WAIT};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::watcher;
use kube_fake::FakeCluster;
use serde_json::json;
use std::time::Duration;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": app}}, "data": {"v": "0"}}))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_watch_streams_added_modified_deleted() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let first = api
        .create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();

    let stream = api
        .watch(&WatchParams::default().timeout(60), &rv)
        .await
        .unwrap();
    let mut stream = stream.boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("b", "web"))
        .await
        .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();

    let mut seen = vec![];
    while seen.len() < 3 {
        let ev = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("event in time")
            .unwrap()
            .expect("stream open");
        seen.push(match ev {
            WatchEvent::Added(c) => format!("ADDED {}", c.metadata.name.unwrap()),
            WatchEvent::Modified(c) => format!(
                "MODIFIED {} {}",
                c.metadata.name.unwrap(),
                c.data.unwrap()["v"]
            ),
            WatchEvent::Deleted(c) => format!("DELETED {}", c.metadata.name.unwrap()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["MODIFIED a 1", "ADDED b", "DELETED a"]);

    // Watching from "0" starts with synthetic ADDED events for what exists.
    let mut s0 = api
        .watch(&WatchParams::default().timeout(60), "0")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, s0.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Added(c) => assert_eq!(c.metadata.name.as_deref(), Some("b")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_label_selector_and_timeout() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    api.create(&PostParams::default(), &cm("a", "web"))
        .await
        .unwrap();
    let rv = cluster.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web").timeout(60), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &cm("other", "api"))
        .await
        .unwrap();
    // Relabelling out of the selector shows up as DELETED.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "api"}}})),
    )
    .await
    .unwrap();
    match tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Deleted(c) => assert_eq!(c.metadata.name.as_deref(), Some("a")),
        other => panic!("unexpected {other:?}"),
    }

    // timeoutSeconds ends the stream.
    let mut short = api
        .watch(
            &WatchParams::default().timeout(1),
            &cluster.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(WAIT, short.try_next())
        .await
        .expect("stream ends")
        .unwrap();
    assert!(end.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_resource_version_gets_410() {
    let cluster = FakeCluster::start().await;
    cluster.set_watch_history_limit(2);
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "web"))
            .await
            .unwrap();
    }
    let mut s = api
        .watch(&WatchParams::default().timeout(60), "1")
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(WAIT, s.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_runtime_watcher_sees_added_and_modified() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    api.create(&PostParams::default(), &cm("pre", "web"))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let w = watcher(api.clone(), watcher::Config::default().labels("app=web"));
    let task = tokio::spawn(async move {
        let mut w = w.boxed();
        while let Some(ev) = w.next().await {
            if let Ok(ev) = ev {
                let _ = tx.send(ev);
            }
        }
    });
    let mut names = vec![];
    let mut got_init_done = false;
    while !got_init_done {
        match tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(c) => names.push(c.metadata.name.unwrap()),
            watcher::Event::InitDone => got_init_done = true,
            _ => {}
        }
    }
    assert_eq!(names, ["pre"]);
    api.create(&PostParams::default(), &cm("new", "web"))
        .await
        .unwrap();
    api.patch(
        "pre",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "9"}})),
    )
    .await
    .unwrap();
    let mut applied = vec![];
    while applied.len() < 2 {
        if let watcher::Event::Apply(c) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
        {
            applied.push((c.metadata.name.unwrap(), c.data.unwrap()["v"].clone()));
        }
    }
    assert_eq!(
        applied,
        [
            ("new".to_string(), "0".to_string()),
            ("pre".to_string(), "9".to_string())
        ]
    );
    task.abort();

    // Streaming-list initial strategy (sendInitialEvents + bookmark) works too.
    let cfg = watcher::Config::default().streaming_lists();
    let mut w = watcher(api.clone(), cfg).boxed();
    let mut init = vec![];
    loop {
        match tokio::time::timeout(WAIT, w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            watcher::Event::InitApply(c) => init.push(c.metadata.name.unwrap()),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    init.sort();
    assert_eq!(init, ["new", "pre"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn await_condition_created_and_deleted() {
    let cluster = FakeCluster::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.kube_client());
    let waiter = tokio::spawn(await_condition(
        api.clone(),
        "later",
        conditions::is_created(),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = api
        .create(&PostParams::default(), &cm("later", "web"))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.unwrap().metadata.uid, c.metadata.uid);

    let uid = c.metadata.uid.clone().unwrap();
    let api2 = api.clone();
    let deleter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        api2.delete("later", &DeleteParams::default())
            .await
            .unwrap();
    });
    tokio::time::timeout(
        WAIT,
        await_condition(api.clone(), "later", conditions::is_deleted(&uid)),
    )
    .await
    .unwrap()
    .unwrap();
    deleter.await.unwrap();
    eventually("gone", || async {
        api.get_opt("later").await.unwrap().is_none().then_some(())
    })
    .await;
}

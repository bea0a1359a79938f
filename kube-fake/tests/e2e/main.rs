//! End-to-end tests: real kube-rs clients (typed k8s-openapi objects) against `kube-fake`.
//! One test binary (modules below) to keep link time down on small machines.

mod apply;
mod controller;
mod crud;
mod fidelity;
mod misc;
mod rollout_fidelity;
mod watch;

use std::future::Future;
use std::time::Duration;

/// Generous upper bound for anything that waits on the simulated controller.
pub const WAIT: Duration = Duration::from_secs(90);

/// Poll `f` until it returns `Some`, panicking with `what` after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The `Status` of a kube API error.
pub fn api_err(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

pub fn deployment(
    name: &str,
    image: &str,
    replicas: i32,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": [{"containerPort": 8080}]}]}
            }
        }
    }))
    .expect("deployment")
}

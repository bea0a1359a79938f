//! The rollout engine's [`Platform`] on Kubernetes.
//!
//! * A revision runs in a Deployment found by its labels (`app.kubernetes.io/name`,
//!   `dronectl.io/revision`), named `<svc>` when that name is free, else `<svc>-<revision>`
//!   (blue-green and canary keep two Deployments side by side).
//! * Rolling updates are native: the running Deployment is re-applied with the
//!   candidate's pod template and the plan's maxSurge/maxUnavailable, and the Deployment
//!   controller replaces the pods ([`Platform::native_rolling`]). An abort rolls it back in
//!   place.
//! * Traffic without a gateway: the Service `<svc>` selects one revision's pods when that
//!   revision has all the traffic (blue-green switch, instant undo), else every pod of the
//!   service with the replica counts set to the weights (`rollout::replicas`: nearest
//!   split, at least one pod per side, the total scaled up by the plan's `max_surge`; with
//!   an autoscaler the stable keeps its live count). A candidate without traffic is
//!   reachable as `<svc>-preview`.
//! * Traffic with a gateway: a Service `<svc>-<revision>` per revision, and the HTTPRoute's
//!   backend weights; in-cluster callers follow the revision with the most weight.
//! * Waiting has `kubectl rollout status` semantics (observed generation, updated and
//!   available replicas, old replicas gone) and fails fast on CrashLoopBackOff,
//!   ImagePullBackOff, Unschedulable and ProgressDeadlineExceeded with the pod's events and
//!   last log lines.
//! * Waiting costs no requests: statuses are read from watches of the app's Deployments,
//!   ReplicaSets and Pods (`cache`), except right after this process changed a Deployment
//!   the watch has not caught up with (then from the API).
//!
//! One file per job: `status.rs` (what waiting reads), `apply.rs` (applying, scaling and
//! rolling revisions, the autoscaler), `traffic.rs` (selectors, HTTPRoute weights and
//! controls, preview), `retire.rs` (removing a revision), `analysis.rs` (measurements).
//! This module holds [`KubePlatform`] and its [`Platform`] implementation, which hands
//! each call to the file of its job.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::Client;
use serde_json::json;

use super::cache::Cached;
use super::render::{KubeEnv, RollingParams};
use super::store::is_status;
use crate::manifest::Manifest;
use crate::rollout::platform::{
    Autoscaler, Measurement, Platform, Revision, RevisionStatus, Traffic, Weights,
};
use crate::rollout::AnalysisPlan;

mod analysis;
mod apply;
mod retire;
mod status;
mod traffic;

/// Kubernetes as a place services run.
#[derive(Clone)]
pub struct KubePlatform {
    pub client: Client,
    pub kenv: KubeEnv,
    pub manifest: std::sync::Arc<Manifest>,
    /// Take over fields other managers own (`--force-conflicts`) for shared objects.
    pub force_conflicts: bool,
    /// The app's Deployments, ReplicaSets and Pods by watch, started on the first status.
    watched: std::sync::Arc<tokio::sync::OnceCell<Watched>>,
    /// The generation of each revision's Deployment as this process last applied it: a
    /// cached Deployment older than that is stale and the API is asked instead.
    applied: std::sync::Arc<std::sync::Mutex<BTreeMap<String, i64>>>,
}

/// What a waiting rollout reads: the app's objects, kept current by watches.
struct Watched {
    deployments: Cached<Deployment>,
    replicasets: Cached<ReplicaSet>,
    pods: Cached<Pod>,
}

fn labelled(meta: &kube::core::ObjectMeta, key: &str, value: &str) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value)
}

/// The field manager that holds `.spec.replicas` of a Deployment that became autoscaled,
/// until the HPA (or `dronectl scale`) sets it.
pub const REPLICAS_MANAGER: &str = "dronectl-replicas";

const DEFAULT_ROLLING: RollingParams = RollingParams {
    max_surge: 1,
    max_unavailable: 0,
};

impl KubePlatform {
    pub fn new(client: Client, kenv: KubeEnv, manifest: std::sync::Arc<Manifest>) -> KubePlatform {
        KubePlatform {
            client,
            kenv,
            manifest,
            force_conflicts: false,
            watched: Default::default(),
            applied: Default::default(),
        }
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }

    fn hpas(&self) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }
}

fn delete_ok<T>(r: Result<T, kube::Error>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Platform for KubePlatform {
    async fn autoscaler(&self, service: &str) -> anyhow::Result<Option<Autoscaler>> {
        self.read_autoscaler(service).await
    }

    async fn scale(&self, service: &str, revision: &Revision, replicas: u32) -> anyhow::Result<()> {
        self.scale_revision(service, revision, replicas).await
    }

    async fn status(&self, service: &str, revision: &Revision) -> anyhow::Result<RevisionStatus> {
        self.revision_status(service, revision).await
    }

    async fn set_traffic(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        self.split_traffic(service, weights, revisions, max_surge)
            .await
    }

    fn replicas_for(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> Weights {
        self.split_replicas(service, weights, revisions, max_surge)
    }

    fn effective_weights(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> (Weights, Option<String>) {
        self.split_in_effect(service, weights, revisions, max_surge)
    }

    async fn set_routing(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        self.route(service, traffic, revisions, max_surge).await
    }

    async fn snapshot(
        &self,
        _service: &str,
        _revision: &Revision,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(json!({}))
    }

    async fn measure(
        &self,
        service: &str,
        revision: &Revision,
        analysis: &AnalysisPlan,
        baseline: &serde_json::Value,
    ) -> anyhow::Result<(Measurement, serde_json::Value)> {
        self.measure_analysis(service, revision, analysis, baseline)
            .await
    }

    async fn remove(&self, service: &str, revision: &Revision) -> anyhow::Result<()> {
        self.remove_revision(service, revision).await
    }

    fn native_rolling(&self) -> bool {
        true
    }

    async fn roll(
        &self,
        service: &str,
        from: &Revision,
        to: &Revision,
        max_surge: u32,
        max_unavailable: u32,
    ) -> anyhow::Result<()> {
        self.roll_revision(service, from, to, max_surge, max_unavailable)
            .await
    }
}

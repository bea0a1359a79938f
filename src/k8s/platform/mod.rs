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
//! This module holds [`KubePlatform`] and its [`Platform`] implementation (what the
//! engine calls); what those calls need is in one file per job: `status.rs` (what waiting
//! reads: watches, failures), `apply.rs` (applying and scaling revisions, the autoscaler),
//! `traffic.rs` (selectors, HTTPRoute weights and controls, preview) and `analysis.rs`
//! (router metrics as Prometheus queries).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams};
use kube::Client;
use serde_json::json;

use super::cache::Cached;
use super::render::{self, KubeEnv, RollingParams};
use super::store::is_status;
use crate::manifest::{Manifest, Metric};
use crate::rollout::platform::{
    Autoscaler, Measurement, Platform, Revision, RevisionStatus, Traffic, Weights,
};
use crate::rollout::replicas::ratio_counts;
use crate::rollout::AnalysisPlan;

mod analysis;
mod apply;
mod status;
mod traffic;

use analysis::prometheus_for;

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
        let Some(h) = self.hpas().get_opt(service).await? else {
            return Ok(None);
        };
        let status = h.status.as_ref();
        let metrics = h
            .spec
            .metrics
            .iter()
            .flatten()
            .filter_map(|m| {
                let r = m.resource.as_ref()?;
                Some(match r.target.average_utilization {
                    Some(u) => format!("{} {u}%", r.name),
                    None => r.name.clone(),
                })
            })
            .collect();
        let count = |n: i32| n.max(0) as u32;
        Ok(Some(Autoscaler {
            name: format!("HorizontalPodAutoscaler/{service}"),
            target: format!(
                "{}/{}",
                h.spec.scale_target_ref.kind, h.spec.scale_target_ref.name
            ),
            // `minReplicas` defaults to 1 on the server.
            min: count(h.spec.min_replicas.unwrap_or(1)),
            max: count(h.spec.max_replicas),
            current: count(status.and_then(|s| s.current_replicas).unwrap_or(0)),
            desired: count(status.map_or(0, |s| s.desired_replicas)),
            metrics,
        }))
    }

    async fn scale(&self, service: &str, revision: &Revision, replicas: u32) -> anyhow::Result<()> {
        match self.find(service, &revision.id).await? {
            Some(d) => {
                if d.spec.replicas == Some(replicas as i32) {
                    return Ok(());
                }
                let name = d.metadata.name.clone().unwrap_or_default();
                if revision.autoscale.is_some() {
                    return Box::pin(self.set_scale(&name, revision, replicas)).await;
                }
                self.run(service, &name, revision, replicas, DEFAULT_ROLLING)
                    .await
            }
            None if replicas == 0 => Ok(()),
            None => {
                let name = self.free_name(service, revision).await?;
                self.run(service, &name, revision, replicas, DEFAULT_ROLLING)
                    .await?;
                if revision.autoscale.is_some() {
                    // Applied without a count (the server's default is 1): set it.
                    Box::pin(self.set_scale(&name, revision, replicas)).await?;
                }
                Ok(())
            }
        }
    }

    async fn status(&self, service: &str, revision: &Revision) -> anyhow::Result<RevisionStatus> {
        let Some(d) = self.lookup(service, revision).await? else {
            return Ok(RevisionStatus::default());
        };
        let desired = d.spec.replicas.unwrap_or(1).max(0) as u32;
        let st = d.status.clone().unwrap_or_default();
        let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
        let n = |v: Option<i32>| v.unwrap_or(0).max(0) as u32;
        // The revision's own ReplicaSet(s): during a native rolling update the Deployment's
        // availableReplicas still counts the old pods.
        let ready = if observed {
            self.revision_available(service, revision, &d).await?
        } else {
            0
        };
        let failure = if ready < desired {
            self.failure(service, revision, &d).await?
        } else {
            None
        };
        Ok(RevisionStatus {
            desired,
            current: n(st.replicas),
            ready,
            failure,
        })
    }

    async fn set_traffic(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        let weight = |r: &Revision| weights.get(&r.id).copied().unwrap_or(0);
        let full = revisions.iter().find(|r| weight(r) >= 100).copied();
        if self.public(service) {
            return Box::pin(self.set_gateway_traffic(
                service,
                &Traffic::weights(weights.clone()),
                revisions,
            ))
            .await;
        }
        match full {
            Some(r) => {
                match self.find(service, &r.id).await? {
                    Some(d) => {
                        // Scale up before it gets the traffic (after a canary split).
                        if d.spec.replicas.unwrap_or(0) < r.replicas as i32 {
                            self.scale(service, r, r.replicas).await?;
                        }
                        self.set_selector(service, service, Some(&r.id)).await?;
                        // The autoscaler follows the revision with all the traffic.
                        let name = d.metadata.name.clone().unwrap_or_default();
                        Box::pin(self.sync_hpa(service, Some(&name))).await?;
                    }
                    None => {
                        // A native rolling update being aborted: roll the Deployment back.
                        let mut rolled = None;
                        for other in revisions.iter().filter(|o| o.id != r.id) {
                            if let Some(d) = self.find(service, &other.id).await? {
                                rolled = Some(d);
                                break;
                            }
                        }
                        let d = rolled.ok_or_else(|| {
                            anyhow::anyhow!(
                                "no Deployment of `{service}` runs {} or can be rolled back to it",
                                r.label()
                            )
                        })?;
                        let name = d.metadata.name.clone().unwrap_or_default();
                        self.set_selector(service, service, None).await?;
                        self.run(service, &name, r, r.replicas, DEFAULT_ROLLING)
                            .await?;
                    }
                }
                self.set_preview(service, revisions, &weight).await?;
            }
            None => {
                // Replica ratio: every pod of the service behind the Service.
                let counts = ratio_counts(weights, revisions, max_surge);
                let plan: Vec<(&Revision, u32)> = revisions
                    .iter()
                    .filter_map(|r| counts.get(&r.id).map(|n| (*r, *n)))
                    .collect();
                if plan.is_empty() {
                    anyhow::bail!("no revision to route to");
                }
                let current = |r: &Revision| {
                    let r = r.id.clone();
                    async move {
                        self.find(service, &r)
                            .await
                            .map(|d| d.and_then(|d| d.spec.replicas).unwrap_or(0) as u32)
                    }
                };
                // Scale up first, switch the selector, then scale down.
                let mut downs = vec![];
                for (r, n) in &plan {
                    if current(r).await? < *n {
                        self.scale(service, r, *n).await?;
                    } else {
                        downs.push((*r, *n));
                    }
                }
                self.set_selector(service, service, None).await?;
                for (r, n) in downs {
                    self.scale(service, r, n).await?;
                }
            }
        }
        Ok(())
    }

    fn replicas_for(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> Weights {
        let weight = |r: &Revision| weights.get(&r.id).copied().unwrap_or(0);
        if self.public(service) {
            // HTTPRoute weights: each revision with traffic runs in full.
            return revisions
                .iter()
                .filter(|r| weight(r) > 0)
                .map(|r| (r.id.clone(), r.replicas))
                .collect();
        }
        match revisions.iter().find(|r| weight(r) >= 100) {
            Some(r) => Weights::from([(r.id.clone(), r.replicas)]),
            None => ratio_counts(weights, revisions, max_surge)
                .into_iter()
                .filter(|(id, _)| weights.get(id).copied().unwrap_or(0) > 0)
                .collect(),
        }
    }

    fn effective_weights(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> (Weights, Option<String>) {
        let weight = |r: &Revision| weights.get(&r.id).copied().unwrap_or(0);
        if self.public(service) || revisions.iter().any(|r| weight(r) >= 100) {
            return (weights.clone(), None);
        }
        let counts = ratio_counts(weights, revisions, max_surge);
        let total: u32 = counts.values().sum();
        let effective = counts
            .iter()
            .map(|(id, n)| (id.clone(), (n * 100 + total / 2) / total.max(1)))
            .collect();
        let pods = revisions
            .iter()
            .filter_map(|r| counts.get(&r.id).map(|n| n.to_string()))
            .collect::<Vec<_>>()
            .join("+");
        (effective, Some(format!("{pods} pods behind one Service")))
    }

    async fn set_routing(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        if !traffic.has_controls() {
            return self
                .set_traffic(service, &traffic.weights, revisions, max_surge)
                .await;
        }
        if !self.public(service) {
            anyhow::bail!(
                "`{service}`: header/cookie matches and mirroring need a Gateway API gateway and public routes on Kubernetes (`dronectl validate` names the step)"
            );
        }
        self.set_gateway_traffic(service, traffic, revisions).await
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
        _baseline: &serde_json::Value,
    ) -> anyhow::Result<(Measurement, serde_json::Value)> {
        let m = match analysis.metric {
            Metric::Http => crate::rollout::analysis::http_check(analysis).await,
            Metric::Prometheus => crate::rollout::analysis::prometheus_query(analysis, service, &revision.version).await,
            _ => match prometheus_for(analysis) {
                Some(plan) => crate::rollout::analysis::prometheus_query(&plan, service, &revision.version).await,
                None => Measurement::Inconclusive {
                    detail: format!(
                        "analysis `{}` measures router metrics, which Kubernetes has no router for; give it an `address` (Prometheus) to measure it there",
                        analysis.name
                    ),
                },
            },
        };
        Ok((m, json!({})))
    }

    async fn remove(&self, service: &str, revision: &Revision) -> anyhow::Result<()> {
        if let Some(d) = self.find(service, &revision.id).await? {
            let name = d.metadata.name.clone().unwrap_or_default();
            delete_ok(
                self.deployments()
                    .delete(&name, &DeleteParams::background())
                    .await,
            )?;
        }
        // The ConfigMap may be shared with a revision that has the same environment.
        let cm_name = render::config_map_name(service, revision);
        let used = self.service_deployments(service).await?.iter().any(|d| {
            d.spec.template.spec.as_ref().is_some_and(|p| {
                p.containers.iter().any(|c| {
                    c.env_from
                        .iter()
                        .flatten()
                        .any(|e| e.config_map_ref.as_ref().is_some_and(|r| r.name == cm_name))
                })
            })
        });
        if !used {
            let cms: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.kenv.namespace);
            delete_ok(cms.delete(&cm_name, &DeleteParams::default()).await)?;
        }
        if self.public(service) {
            let services: Api<Service> = Api::namespaced(self.client.clone(), &self.kenv.namespace);
            delete_ok(
                services
                    .delete(
                        &format!("{service}-{}", revision.id),
                        &DeleteParams::default(),
                    )
                    .await,
            )?;
        }
        self.drop_preview(service, Some(&revision.id)).await
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
        if self.lookup(service, to).await?.is_some() {
            return Ok(());
        }
        let name = match self.find(service, &from.id).await? {
            Some(d) => d.metadata.name.clone().unwrap_or_default(),
            None => self.free_name(service, to).await?,
        };
        // During the update both revisions serve.
        self.set_selector(service, service, None).await?;
        if self.public(service) {
            self.set_route(service, &[(service.to_string(), 100)])
                .await?;
        }
        self.run(
            service,
            &name,
            to,
            to.replicas,
            RollingParams {
                max_surge,
                max_unavailable,
            },
        )
        .await
    }
}

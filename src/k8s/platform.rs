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

use std::collections::BTreeMap;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Event as KubeEvent, Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::Client;
use serde_json::json;

use super::cache::Cached;
use super::render::{self, KubeEnv, Object, RollingParams};
use super::store::is_status;
use crate::manifest::{Manifest, Metric};
use crate::rollout::platform::{
    Autoscaler, Failure, Measurement, Platform, Revision, RevisionStatus, Traffic, Weights,
};
use crate::rollout::replicas::ratio_counts;
use crate::rollout::AnalysisPlan;

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

    async fn watched(&self) -> &Watched {
        self.watched
            .get_or_init(|| async {
                let config = watcher::Config::default().labels(&format!(
                    "{}={}",
                    render::PART_OF,
                    self.kenv.app
                ));
                let ns = &self.kenv.namespace;
                Watched {
                    deployments: Cached::start(
                        Api::namespaced(self.client.clone(), ns),
                        config.clone(),
                    ),
                    replicasets: Cached::start(
                        Api::namespaced(self.client.clone(), ns),
                        config.clone(),
                    ),
                    pods: Cached::start(Api::namespaced(self.client.clone(), ns), config),
                }
            })
            .await
    }

    /// The Deployment running `revision` for a status: from the watch when it is at least
    /// as new as what this process applied, else from the API.
    async fn lookup(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<Option<Deployment>> {
        let applied = self
            .applied
            .lock()
            .expect("lock")
            .get(&revision.id)
            .copied();
        if let Some(all) = self.watched().await.deployments.objects().await {
            let found = all.into_iter().find(|d| {
                labelled(&d.metadata, render::NAME, service)
                    && labelled(&d.metadata, render::PART_OF, &self.kenv.app)
                    && labelled(&d.metadata, render::REVISION, &revision.id)
            });
            let fresh = match (&found, applied) {
                (Some(d), Some(g)) => d.metadata.generation.unwrap_or(0) >= g,
                (None, Some(_)) => false,
                (_, None) => true,
            };
            if fresh {
                return Ok(found.map(|d| (*d).clone()));
            }
        }
        self.find(service, &revision.id).await
    }

    /// Pods of `revision`, from the watch (else the API).
    async fn revision_pods(&self, service: &str, revision: &Revision) -> anyhow::Result<Vec<Pod>> {
        if let Some(all) = self.watched().await.pods.objects().await {
            return Ok(all
                .into_iter()
                .filter(|p| {
                    labelled(&p.metadata, render::NAME, service)
                        && labelled(&p.metadata, render::REVISION, &revision.id)
                })
                .map(|p| (*p).clone())
                .collect());
        }
        let lp = ListParams::default().labels(&format!(
            "{}={service},{}={}",
            render::NAME,
            render::REVISION,
            revision.id
        ));
        Ok(self.pods().list(&lp).await?.items)
    }

    fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }

    /// Server-side applies `object` with field manager `dronectl`; `force` takes over
    /// fields other managers own.
    pub async fn apply(
        &self,
        object: &Object,
        force: bool,
        dry_run: bool,
    ) -> anyhow::Result<DynamicObject> {
        let ar = object.api_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.kenv.namespace, &ar);
        let mut params = PatchParams::apply(render::FIELD_MANAGER);
        if force {
            params = params.force();
        }
        if dry_run {
            params = params.dry_run();
        }
        api.patch(object.name(), &params, &Patch::Apply(object.to_value()))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 409 => {
                    anyhow::Error::new(super::KubeError::Conflict {
                        kind: object.kind().to_string(),
                        name: object.name().to_string(),
                        message: s.message.clone(),
                    })
                }
                e => anyhow::Error::new(e).context(format!(
                    "cannot apply {} {}",
                    object.kind(),
                    object.name()
                )),
            })
    }

    /// Applies the objects a service has whatever revision runs (ServiceAccount, Service,
    /// PodDisruptionBudget, NetworkPolicy, route).
    pub async fn prepare(&self, service: &str) -> anyhow::Result<()> {
        for object in render::service_objects(&self.kenv, &self.manifest, service) {
            // The autoscaler's target belongs to the rollout: kept where it is.
            if matches!(object, Object::HorizontalPodAutoscaler(_)) {
                continue;
            }
            // The Service's selector and the route's weights belong to the rollout: only
            // create them here, never move traffic.
            if matches!(object, Object::Service(_) | Object::HttpRoute(_))
                && self.exists(&object).await?
            {
                continue;
            }
            self.apply(&object, self.force_conflicts, false).await?;
        }
        Box::pin(self.sync_hpa(service, None)).await
    }

    fn hpas(&self) -> Api<HorizontalPodAutoscaler> {
        Api::namespaced(self.client.clone(), &self.kenv.namespace)
    }

    /// Applies the service's HorizontalPodAutoscaler (bounds and targets from the manifest)
    /// scaling `target`, else the Deployment it scales now, else the one serving the
    /// service; deletes it when the service is no longer autoscaled.
    pub async fn sync_hpa(&self, service: &str, target: Option<&str>) -> anyhow::Result<()> {
        let live = self.hpas().get_opt(service).await?;
        let target = match (target, &live) {
            (Some(t), _) => t.to_string(),
            (None, Some(h)) => super::hpa::target(h).to_string(),
            // No autoscaler yet: the Deployment of the revision the Service `<svc>` selects
            // (the one with the traffic), not merely the one named `<svc>`: after a canary
            // the stable runs as `<svc>-<rev>` while the previous `<svc>` waits out its
            // scale-down delay.
            (None, None) => {
                let services: Api<Service> =
                    Api::namespaced(self.client.clone(), &self.kenv.namespace);
                let selected = services
                    .get_opt(service)
                    .await?
                    .and_then(|s| s.spec?.selector?.get(render::REVISION).cloned());
                self.serving_deployment(service, selected.as_deref())
                    .await?
            }
        };
        match super::hpa::hpa(&self.kenv, &self.manifest, service, &target) {
            Some(h) => {
                self.apply(&Object::HorizontalPodAutoscaler(Box::new(h)), true, false)
                    .await?;
            }
            None if live.as_ref().is_some_and(|h| {
                labelled(&h.metadata, render::MANAGED_BY, "dronectl")
                    && labelled(&h.metadata, render::PART_OF, &self.kenv.app)
            }) =>
            {
                delete_ok(self.hpas().delete(service, &DeleteParams::default()).await)?;
            }
            None => {}
        }
        Ok(())
    }

    /// Sets the replicas of the Deployment `name` through its `scale` subresource (an
    /// Update of `.spec.replicas` only, as `kubectl scale` and the HPA do), for autoscaled
    /// revisions whose applied Deployment has no count.
    async fn set_scale(
        &self,
        name: &str,
        revision: &Revision,
        replicas: u32,
    ) -> anyhow::Result<()> {
        let params = PatchParams {
            field_manager: Some(render::FIELD_MANAGER.into()),
            ..Default::default()
        };
        self.deployments()
            .patch_scale(
                name,
                &params,
                &Patch::Merge(json!({ "spec": { "replicas": replicas } })),
            )
            .await
            .with_context(|| format!("cannot scale Deployment {name} to {replicas}"))?;
        // Scaling bumps the Deployment's generation: a cached status older than that is stale.
        if let Some(d) = self.deployments().get_opt(name).await? {
            if let Some(g) = d.metadata.generation {
                self.applied
                    .lock()
                    .expect("lock")
                    .insert(revision.id.clone(), g);
            }
        }
        Ok(())
    }

    /// Before dronectl's apply stops carrying `.spec.replicas` (the service became
    /// autoscaled), hands the field to a separate manager at its live value: a field the
    /// applier alone owned and no longer applies is removed by the server (and defaulted to
    /// 1), which would reset what ran. The Kubernetes docs' "transferring ownership" recipe.
    async fn hand_over_replicas(&self, name: &str) -> anyhow::Result<()> {
        let Some(d) = self.deployments().get_opt(name).await? else {
            return Ok(());
        };
        let owned = d.metadata.managed_fields.iter().flatten().any(|m| {
            m.manager.as_deref() == Some(render::FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref().unwrap_or("").is_empty()
                && m.fields_v1
                    .as_ref()
                    .and_then(|f| f.0.get("f:spec"))
                    .and_then(|s| s.get("f:replicas"))
                    .is_some()
        });
        let Some(replicas) = d.spec.replicas.filter(|_| owned) else {
            return Ok(());
        };
        let patch = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "replicas": replicas },
        });
        self.deployments()
            .patch(
                name,
                &PatchParams::apply(REPLICAS_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .with_context(|| format!("cannot hand the replicas of Deployment {name} over"))?;
        Ok(())
    }

    async fn exists(&self, object: &Object) -> anyhow::Result<bool> {
        let ar = object.api_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.kenv.namespace, &ar);
        Ok(api.get_opt(object.name()).await?.is_some())
    }

    /// The Deployments of a service.
    pub async fn service_deployments(&self, service: &str) -> anyhow::Result<Vec<Deployment>> {
        let lp = ListParams::default().labels(&format!(
            "{}={service},{}={}",
            render::NAME,
            render::PART_OF,
            self.kenv.app
        ));
        Ok(self.deployments().list(&lp).await?.items)
    }

    /// The Deployment running `revision`, if any.
    pub async fn find(&self, service: &str, revision: &str) -> anyhow::Result<Option<Deployment>> {
        let lp = ListParams::default().labels(&format!(
            "{}={service},{}={},{}={revision}",
            render::NAME,
            render::PART_OF,
            self.kenv.app,
            render::REVISION
        ));
        Ok(self.deployments().list(&lp).await?.items.into_iter().next())
    }

    async fn free_name(&self, service: &str, revision: &Revision) -> anyhow::Result<String> {
        let taken = self
            .service_deployments(service)
            .await?
            .iter()
            .any(|d| d.metadata.name.as_deref() == Some(service));
        Ok(if taken {
            format!("{service}-{}", revision.id)
        } else {
            service.to_string()
        })
    }

    async fn run(
        &self,
        service: &str,
        name: &str,
        revision: &Revision,
        replicas: u32,
        rolling: RollingParams,
    ) -> anyhow::Result<()> {
        if revision.autoscale.is_some() {
            Box::pin(self.hand_over_replicas(name)).await?;
        }
        for object in render::revision_objects(
            &self.kenv,
            &self.manifest,
            service,
            name,
            revision,
            replicas,
            rolling,
        ) {
            let is_deployment = matches!(object, Object::Deployment(_));
            let applied = self.apply(&object, true, false).await?;
            if is_deployment {
                if let Some(g) = applied.metadata.generation {
                    self.applied
                        .lock()
                        .expect("lock")
                        .insert(revision.id.clone(), g);
                }
            }
        }
        Ok(())
    }

    async fn set_selector(
        &self,
        service: &str,
        name: &str,
        revision: Option<&str>,
    ) -> anyhow::Result<()> {
        let object = Object::Service(Box::new(render::service(
            &self.kenv,
            &self.manifest,
            service,
            name,
            revision,
        )));
        self.apply(&object, true, false).await?;
        Ok(())
    }

    fn public(&self, service: &str) -> bool {
        self.kenv.gateway.is_some() && !self.manifest.services[service].value.routes.is_empty()
    }

    /// Gateway: a Service per revision, weighted backends, and the rollout's controls
    /// (match rules to the candidate, `RequestMirror` to it). Sticky sessions are not
    /// carried (the HTTPRoute v1 has no standard session affinity; `validate` warns).
    async fn set_gateway_traffic(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
    ) -> anyhow::Result<()> {
        let weights = &traffic.weights;
        let weight = |r: &Revision| weights.get(&r.id).copied().unwrap_or(0);
        let controlled = traffic.has_controls();
        let mut backends = vec![];
        for r in revisions {
            let is_target = controlled && r.id == traffic.candidate;
            if weight(r) > 0 || revisions.len() == 1 || is_target {
                self.set_selector(service, &format!("{service}-{}", r.id), Some(&r.id))
                    .await?;
            }
            if weight(r) > 0 || revisions.len() == 1 {
                backends.push((format!("{service}-{}", r.id), weight(r)));
            }
        }
        let controls = render::RouteControls {
            candidate: format!("{service}-{}", traffic.candidate),
            matches: traffic.matches.clone(),
            mirror: traffic.mirror,
        };
        self.set_route_with(service, &backends, &controls).await?;
        if let Some(main) = revisions.iter().max_by_key(|r| weight(r)) {
            if let Some(d) = self.find(service, &main.id).await? {
                self.set_selector(service, service, Some(&main.id)).await?;
                if weight(main) >= 100 {
                    let name = d.metadata.name.clone().unwrap_or_default();
                    self.sync_hpa(service, Some(&name)).await?;
                }
            }
        }
        // As without a gateway: a candidate without traffic yet is reachable as
        // `<svc>-preview` (the engine says so when the candidate is ready).
        self.set_preview(service, revisions, &weight).await?;
        Ok(())
    }

    async fn set_route(&self, service: &str, backends: &[(String, u32)]) -> anyhow::Result<()> {
        self.set_route_with(service, backends, &render::RouteControls::default())
            .await
    }

    async fn set_route_with(
        &self,
        service: &str,
        backends: &[(String, u32)],
        controls: &render::RouteControls,
    ) -> anyhow::Result<()> {
        if let Some(route) =
            render::http_route_with(&self.kenv, &self.manifest, service, backends, controls)
        {
            self.apply(&Object::HttpRoute(Box::new(route)), true, false)
                .await?;
        }
        Ok(())
    }

    /// Why pods of `revision` will not become ready, if that is certain already.
    async fn failure(
        &self,
        service: &str,
        revision: &Revision,
        deployment: &Deployment,
    ) -> anyhow::Result<Option<Failure>> {
        let pods = self.revision_pods(service, revision).await?;
        let mut found: Option<(String, String, String)> = None;
        'pods: for pod in &pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let status = pod.status.clone().unwrap_or_default();
            for cs in status.container_statuses.unwrap_or_default() {
                if let Some(w) = cs.state.and_then(|s| s.waiting) {
                    let reason = w.reason.unwrap_or_default();
                    if matches!(
                        reason.as_str(),
                        "CrashLoopBackOff"
                            | "ImagePullBackOff"
                            | "ErrImagePull"
                            | "InvalidImageName"
                            | "CreateContainerConfigError"
                    ) {
                        found = Some((name, reason, w.message.unwrap_or_default()));
                        break 'pods;
                    }
                }
            }
            for c in status.conditions.unwrap_or_default() {
                if c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                {
                    found = Some((name, "Unschedulable".into(), c.message.unwrap_or_default()));
                    break 'pods;
                }
            }
        }
        if found.is_none() {
            let conditions = deployment
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if let Some(c) = conditions
                .iter()
                .find(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
            {
                let pod = pods
                    .first()
                    .and_then(|p| p.metadata.name.clone())
                    .unwrap_or_default();
                found = Some((
                    pod,
                    "ProgressDeadlineExceeded".into(),
                    c.message.clone().unwrap_or_default(),
                ));
            }
        }
        let Some((pod, reason, message)) = found else {
            return Ok(None);
        };
        let mut lines = vec![];
        if !pod.is_empty() {
            lines.push(format!(
                "pod {pod}: {reason}{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ));
            let events: Api<KubeEvent> = Api::namespaced(self.client.clone(), &self.kenv.namespace);
            let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
            if let Ok(list) = events.list(&lp).await {
                for e in list
                    .items
                    .iter()
                    .filter(|e| e.type_.as_deref() == Some("Warning"))
                    .rev()
                    .take(5)
                {
                    lines.push(format!(
                        "event {}: {}",
                        e.reason.clone().unwrap_or_default(),
                        e.message.clone().unwrap_or_default()
                    ));
                }
            }
        }
        let logs = if pod.is_empty() || reason == "Unschedulable" || reason.contains("Image") {
            vec![]
        } else {
            let params = LogParams {
                tail_lines: Some(20),
                ..Default::default()
            };
            match self.pods().logs(&pod, &params).await {
                Ok(text) if !text.trim().is_empty() => text.lines().map(str::to_string).collect(),
                _ => {
                    let params = LogParams {
                        tail_lines: Some(20),
                        previous: true,
                        ..Default::default()
                    };
                    self.pods()
                        .logs(&pod, &params)
                        .await
                        .map(|t| t.lines().map(str::to_string).collect())
                        .unwrap_or_default()
                }
            }
        };
        Ok(Some(Failure {
            reason,
            message: lines.join("; "),
            logs,
        }))
    }

    /// Available pods of `revision` in `deployment`: the availableReplicas of the
    /// deployment's ReplicaSets whose pod template is this revision's.
    async fn revision_available(
        &self,
        service: &str,
        revision: &Revision,
        deployment: &Deployment,
    ) -> anyhow::Result<u32> {
        let rss: Vec<ReplicaSet> = match self.watched().await.replicasets.objects().await {
            Some(all) => all
                .into_iter()
                .filter(|rs| {
                    labelled(&rs.metadata, render::NAME, service)
                        && labelled(&rs.metadata, render::REVISION, &revision.id)
                })
                .map(|rs| (*rs).clone())
                .collect(),
            None => {
                let api: Api<ReplicaSet> =
                    Api::namespaced(self.client.clone(), &self.kenv.namespace);
                let lp = ListParams::default().labels(&format!(
                    "{}={service},{}={}",
                    render::NAME,
                    render::REVISION,
                    revision.id
                ));
                api.list(&lp).await?.items
            }
        };
        let uid = deployment.metadata.uid.as_deref();
        Ok(rss
            .iter()
            .filter(|rs| {
                rs.metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| Some(o.uid.as_str()) == uid)
            })
            .map(|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0)
                    .max(0) as u32
            })
            .sum())
    }

    async fn scale_to(
        &self,
        service: &str,
        revision: &Revision,
        replicas: u32,
    ) -> anyhow::Result<()> {
        self.scale(service, revision, replicas).await
    }

    /// A candidate (the first revision) without traffic yet is reachable as `<svc>-preview`;
    /// otherwise there is no preview Service.
    async fn set_preview(
        &self,
        service: &str,
        revisions: &[&Revision],
        weight: &(dyn Fn(&Revision) -> u32 + Sync),
    ) -> anyhow::Result<()> {
        match revisions.first() {
            Some(c)
                if revisions.len() > 1
                    && weight(c) == 0
                    && self.find(service, &c.id).await?.is_some() =>
            {
                self.set_selector(service, &format!("{service}-preview"), Some(&c.id))
                    .await
            }
            _ => self.drop_preview(service, None).await,
        }
    }

    /// Removes the preview Service (only when it points at `revision`, if given).
    async fn drop_preview(&self, service: &str, revision: Option<&str>) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.kenv.namespace);
        let name = format!("{service}-preview");
        if let Some(s) = services.get_opt(&name).await? {
            let selects = s
                .spec
                .and_then(|s| s.selector)
                .and_then(|s| s.get(render::REVISION).cloned());
            if revision.is_none() || selects.as_deref() == revision {
                delete_ok(services.delete(&name, &DeleteParams::default()).await)?;
            }
        }
        Ok(())
    }
}

fn delete_ok<T>(r: Result<T, kube::Error>) -> anyhow::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn prometheus_for(analysis: &AnalysisPlan) -> Option<AnalysisPlan> {
    analysis.address.as_ref()?;
    let selector = r#"service="{{service}}",version="{{version}}""#;
    let query = match analysis.metric {
        Metric::ErrorRate => format!(
            r#"sum(rate(http_requests_total{{{selector},status=~"5.."}}[1m])) / sum(rate(http_requests_total{{{selector}}}[1m]))"#
        ),
        Metric::LatencyP50 | Metric::LatencyP95 | Metric::LatencyP99 => {
            let q = match analysis.metric {
                Metric::LatencyP50 => "0.5",
                Metric::LatencyP95 => "0.95",
                _ => "0.99",
            };
            format!(
                r#"histogram_quantile({q}, sum by (le) (rate(http_request_duration_seconds_bucket{{{selector}}}[1m])))"#
            )
        }
        _ => return None,
    };
    let mut plan = analysis.clone();
    plan.query = Some(query);
    Some(plan)
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
                            self.scale_to(service, r, r.replicas).await?;
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
                        self.scale_to(service, r, *n).await?;
                    } else {
                        downs.push((*r, *n));
                    }
                }
                self.set_selector(service, service, None).await?;
                for (r, n) in downs {
                    self.scale_to(service, r, n).await?;
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

impl KubePlatform {
    /// The name of the Deployment that serves `service` now, for `diff`: the one running
    /// the stable revision (`stable`, from the rollout record) — during a scale-down delay
    /// the previous version's Deployment is still there, often under the plain name —
    /// else the one named `<svc>`, else any; `<svc>` when there is none.
    pub async fn serving_deployment(
        &self,
        service: &str,
        stable: Option<&str>,
    ) -> anyhow::Result<String> {
        let live = self.service_deployments(service).await?;
        fn revision(d: &Deployment) -> Option<&str> {
            d.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(render::REVISION))
                .map(String::as_str)
        }
        Ok(live
            .iter()
            .find(|d| stable.is_some() && revision(d) == stable)
            .or_else(|| {
                live.iter()
                    .find(|d| d.metadata.name.as_deref() == Some(service))
            })
            .or(live.first())
            .and_then(|d| d.metadata.name.clone())
            .unwrap_or_else(|| service.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis(metric: Metric, address: Option<&str>) -> AnalysisPlan {
        AnalysisPlan {
            name: "a".into(),
            metric,
            threshold: Some(0.01),
            interval: std::time::Duration::from_secs(10),
            count: 3,
            failure_limit: 1,
            url: None,
            expect_status: None,
            query: None,
            address: address.map(str::to_string),
        }
    }

    #[test]
    fn router_metrics_become_prometheus_queries_when_there_is_an_address() {
        let p =
            prometheus_for(&analysis(Metric::ErrorRate, Some("http://prometheus:9090"))).unwrap();
        let q = p.query.unwrap();
        assert!(
            q.contains("http_requests_total") && q.contains(r#"status=~"5..""#),
            "{q}"
        );
        let p = prometheus_for(&analysis(
            Metric::LatencyP95,
            Some("http://prometheus:9090"),
        ))
        .unwrap();
        assert!(p.query.unwrap().starts_with("histogram_quantile(0.95"));
        assert!(prometheus_for(&analysis(Metric::ErrorRate, None)).is_none());
    }
}

//! What a waiting rollout reads: the app's Deployments, ReplicaSets and Pods from watches
//! (the API right after this process changed a Deployment the watch has not caught up
//! with), a revision's status with the reasons its pods will not become ready (events and
//! last log lines), the Deployments of a service and the one serving it.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use kube::api::{Api, ListParams, LogParams};
use kube::runtime::watcher;

use super::{labelled, KubePlatform, Watched};
use crate::k8s::cache::Cached;
use crate::k8s::render;
use crate::rollout::platform::{Failure, Revision};

impl KubePlatform {
    pub(super) async fn watched(&self) -> &Watched {
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
    pub(super) async fn lookup(
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
    pub(super) async fn revision_pods(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<Vec<Pod>> {
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

    /// Why pods of `revision` will not become ready, if that is certain already.
    pub(super) async fn failure(
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
    pub(super) async fn revision_available(
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

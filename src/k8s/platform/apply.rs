//! Applying a revision: server-side apply of objects, the service's own objects
//! (`prepare`), the revision's ConfigMap and Deployment under a free name, scaling (through
//! the `scale` subresource for autoscaled revisions), and the HorizontalPodAutoscaler with
//! the hand-over of `.spec.replicas` to it.

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::json;

use super::{delete_ok, labelled, KubePlatform, REPLICAS_MANAGER};
use crate::k8s::render::{self, Object, RollingParams};
use crate::rollout::platform::Revision;

impl KubePlatform {
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
                    anyhow::Error::new(crate::k8s::KubeError::Conflict {
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

    /// Applies the service's HorizontalPodAutoscaler (bounds and targets from the manifest)
    /// scaling `target`, else the Deployment it scales now, else the one serving the
    /// service; deletes it when the service is no longer autoscaled.
    pub async fn sync_hpa(&self, service: &str, target: Option<&str>) -> anyhow::Result<()> {
        let live = self.hpas().get_opt(service).await?;
        let target = match (target, &live) {
            (Some(t), _) => t.to_string(),
            (None, Some(h)) => crate::k8s::hpa::target(h).to_string(),
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
        match crate::k8s::hpa::hpa(&self.kenv, &self.manifest, service, &target) {
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
    pub(super) async fn set_scale(
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
            self.record_generation(revision, d.metadata.generation);
        }
        Ok(())
    }

    /// Remembers the generation of `revision`'s Deployment as this process changed it: a
    /// cached Deployment older than that is stale.
    fn record_generation(&self, revision: &Revision, generation: Option<i64>) {
        if let Some(g) = generation {
            self.applied
                .lock()
                .expect("lock")
                .insert(revision.id.clone(), g);
        }
    }

    /// Before dronectl's apply stops carrying `.spec.replicas` (the service became
    /// autoscaled), hands the field to a separate manager at its live value: a field the
    /// applier alone owned and no longer applies is removed by the server (and defaulted to
    /// 1), which would reset what ran. The Kubernetes docs' "transferring ownership" recipe.
    pub(super) async fn hand_over_replicas(&self, name: &str) -> anyhow::Result<()> {
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

    pub(super) async fn exists(&self, object: &Object) -> anyhow::Result<bool> {
        let ar = object.api_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.kenv.namespace, &ar);
        Ok(api.get_opt(object.name()).await?.is_some())
    }

    pub(super) async fn free_name(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<String> {
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

    pub(super) async fn run(
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
                self.record_generation(revision, applied.metadata.generation);
            }
        }
        Ok(())
    }
}

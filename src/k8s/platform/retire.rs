//! Removing a retired revision: its Deployment, its ConfigMap unless another revision with
//! the same environment uses it, its Service behind a gateway, and a preview Service that
//! points at it.

use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, DeleteParams};

use super::{delete_ok, KubePlatform};
use crate::k8s::render;
use crate::rollout::platform::Revision;

impl KubePlatform {
    /// [`Platform::remove`](crate::rollout::Platform::remove): every object of the
    /// revision, after it was scaled to 0.
    pub(super) async fn remove_revision(
        &self,
        service: &str,
        revision: &Revision,
    ) -> anyhow::Result<()> {
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
}

//! Moving traffic: the Service `<svc>`'s selector (one revision, or every pod with replica
//! counts set to the weights), the HTTPRoute's weighted backends and controls behind a
//! gateway (a Service per revision), and the `<svc>-preview` Service of a candidate
//! without traffic.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};

use super::{delete_ok, KubePlatform};
use crate::k8s::render::{self, Object};
use crate::rollout::platform::{Revision, Traffic};

impl KubePlatform {
    pub(super) async fn set_selector(
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

    pub(super) fn public(&self, service: &str) -> bool {
        self.kenv.gateway.is_some() && !self.manifest.services[service].value.routes.is_empty()
    }

    /// Gateway: a Service per revision, weighted backends, and the rollout's controls
    /// (match rules to the candidate, `RequestMirror` to it). Sticky sessions are not
    /// carried (the HTTPRoute v1 has no standard session affinity; `validate` warns).
    pub(super) async fn set_gateway_traffic(
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

    pub(super) async fn set_route(
        &self,
        service: &str,
        backends: &[(String, u32)],
    ) -> anyhow::Result<()> {
        self.set_route_with(service, backends, &render::RouteControls::default())
            .await
    }

    pub(super) async fn set_route_with(
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

    /// A candidate (the first revision) without traffic yet is reachable as `<svc>-preview`;
    /// otherwise there is no preview Service.
    pub(super) async fn set_preview(
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
    pub(super) async fn drop_preview(
        &self,
        service: &str,
        revision: Option<&str>,
    ) -> anyhow::Result<()> {
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

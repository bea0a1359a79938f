//! Moving traffic: the Service `<svc>`'s selector (one revision, or every pod with replica
//! counts set to the weights), the HTTPRoute's weighted backends and controls behind a
//! gateway (a Service per revision), and the `<svc>-preview` Service of a candidate
//! without traffic.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, DeleteParams};

use super::{delete_ok, KubePlatform, DEFAULT_ROLLING};
use crate::k8s::render::{self, Object};
use crate::rollout::platform::{Platform, Revision, Traffic, Weights};
use crate::rollout::replicas::ratio_counts;

impl KubePlatform {
    /// [`Platform::set_traffic`](crate::rollout::Platform::set_traffic): by the HTTPRoute's
    /// weights behind a gateway, else by the Service's selector and replica counts.
    pub(super) async fn split_traffic(
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

    /// [`Platform::replicas_for`](crate::rollout::Platform::replicas_for): each revision
    /// with traffic in full behind a gateway, else the replica ratio.
    pub(super) fn split_replicas(
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

    /// [`Platform::effective_weights`](crate::rollout::Platform::effective_weights): the
    /// replica ratio a split without a gateway really gets.
    pub(super) fn split_in_effect(
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

    /// [`Platform::set_routing`](crate::rollout::Platform::set_routing): match rules and
    /// mirroring need a gateway.
    pub(super) async fn route(
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

//! The HorizontalPodAutoscaler (autoscaling/v2) of a service with `autoscale:`.
//!
//! One HPA per service, named like the service, scaling the Deployment of the live (stable)
//! revision: `scaleTargetRef` is moved by the rollout to the revision that takes all the
//! traffic (`KubePlatform::set_traffic`), never by a plain re-apply. The HPA owns the
//! Deployment's `spec.replicas`: dronectl's server-side apply of an autoscaled Deployment
//! leaves the field out (so the apply neither resets nor conflicts with what the HPA set),
//! and the rollout sets a count only through the `scale` subresource, when it must (a new
//! candidate, the canary's share).

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::render::{labels, KubeEnv};
use crate::manifest::Manifest;

/// The HPA of `service` scaling the Deployment `target`, if the service is autoscaled.
pub fn hpa(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    target: &str,
) -> Option<HorizontalPodAutoscaler> {
    let a = manifest.services.get(service)?.value.autoscale.as_ref()?;
    let (cpu, memory) = a.targets();
    let metric = |resource: &str, percent: u32| MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: resource.into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent as i32),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let metrics = [("cpu", cpu), ("memory", memory)]
        .into_iter()
        .filter_map(|(r, p)| p.map(|p| metric(r, p)))
        .collect();
    Some(HorizontalPodAutoscaler {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(service.to_string()),
            namespace: Some(kenv.namespace.clone()),
            labels: Some(labels(kenv, service, "service", "")),
            ..Default::default()
        },
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: target.to_string(),
            },
            min_replicas: Some(a.min.value as i32),
            max_replicas: a.max.value as i32,
            metrics: Some(metrics),
            behavior: None,
        },
        status: None,
    })
}

/// The Deployment an existing HPA scales.
pub fn target(hpa: &HorizontalPodAutoscaler) -> &str {
    &hpa.spec.scale_target_ref.name
}

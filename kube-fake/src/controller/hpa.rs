//! The HorizontalPodAutoscaler controller (autoscaling/v2), without metrics.

use super::{decoded, now_time, ty, typed, write_status};
use crate::store::{State, WriteOpts};
use crate::util;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde_json::json;

/// The HPA controller's decisions that need no metrics, as in `reconcileAutoscaler`: a
/// target scaled to 0 disables autoscaling; above `maxReplicas` → max, below `minReplicas`
/// → min; otherwise the recommendation a test set (what metrics would say), clamped to the
/// bounds, or no change. The target's `spec.replicas` is written through the `scale`
/// subresource as `kube-controller-manager` (an Update, so managedFields give it
/// `.spec.replicas`), and the HPA's status says what it did.
pub(super) fn autoscalers(st: &mut State) {
    let ht = ty(st, "autoscaling", "horizontalpodautoscalers");
    let dt = ty(st, "apps", "deployments");
    for (raw, hpa) in decoded::<HorizontalPodAutoscaler>(st, &ht) {
        let ns = hpa.metadata.namespace.clone().unwrap_or_default();
        let name = hpa.metadata.name.clone().unwrap_or_default();
        let spec = &hpa.spec;
        if spec.scale_target_ref.kind != "Deployment" {
            continue;
        }
        let target = spec.scale_target_ref.name.clone();
        let min = i64::from(spec.min_replicas.unwrap_or(1));
        let max = i64::from(spec.max_replicas);
        let Some(d) = st.get(&dt, &ns, &target).cloned() else {
            continue;
        };
        let Some(deployment) = typed::<Deployment>(&d) else {
            continue;
        };
        let current = i64::from(deployment.spec.replicas.unwrap_or(1));
        if current == 0 {
            continue;
        }
        let wanted = st
            .sim
            .hpa_recommendations
            .get(&format!("{ns}/{name}"))
            .copied()
            .unwrap_or(current);
        let desired = wanted.clamp(min, max.max(min));
        if desired != current {
            let mut new = d.clone();
            util::obj_mut(&mut new, "spec").insert("replicas".into(), json!(desired));
            let opts = WriteOpts {
                manager: Some("kube-controller-manager".into()),
                dry_run: false,
                preset_managed: false,
            };
            let _ = st.update(&dt, &d, new, "scale", &opts, false);
        }
        let mut status = hpa.status.clone().unwrap_or_default();
        status.current_replicas = Some(current as i32);
        status.desired_replicas = desired as i32;
        if desired != current {
            status.last_scale_time = Some(now_time());
        }
        write_status(st, &ht, &raw, hpa.status.as_ref(), &status);
    }
}

//! Infrastructure entries (a StatefulSet with its headless Service and NetworkPolicy) and
//! the PersistentVolumeClaims of volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{labels, meta, service_selector};
use super::network::network_policy;
use super::workload::{container_security, pod_security};
use super::{KubeEnv, Object};
use crate::manifest::Manifest;

/// An infrastructure entry: a StatefulSet (one replica, a volumeClaimTemplate when it has a
/// volume), a headless Service and a NetworkPolicy for its callers.
pub fn infrastructure_objects(kenv: &KubeEnv, manifest: &Manifest, name: &str) -> Vec<Object> {
    let infra = &manifest.infrastructure[name].value;
    let version = infra.image.rsplit_once(':').map_or("latest", |(_, t)| t);
    let pod_labels = labels(kenv, name, "infrastructure", version);
    let selector = service_selector(kenv, name);
    let mut mounts = vec![];
    let mut claims = vec![];
    if let Some(path) = &infra.volume {
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: path.clone(),
            ..Default::default()
        });
        let mut claim = pvc(kenv, "data", name, "infrastructure");
        claim.metadata.namespace = None;
        claims.push(claim);
    }
    let container = Container {
        name: name.to_string(),
        image: Some(infra.image.clone()),
        args: (!infra.command.is_empty()).then(|| infra.command.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("main".into()),
            container_port: infra.port.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: (!infra.env.is_empty()).then(|| {
            infra
                .env
                .iter()
                .map(|(k, v)| EnvVar {
                    name: k.clone(),
                    value: Some(v.0.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        readiness_probe: Some(Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::String("main".into()),
                host: None,
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        // Restart a server that stops accepting connections (Redis listens before it loads its
        // data, so a long load is not a failure); three misses 10 s apart.
        liveness_probe: Some(Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::String("main".into()),
                host: None,
            }),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Default::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("100m".into())),
                ("memory".to_string(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity("1".into())),
                ("memory".to_string(), Quantity("512Mi".into())),
            ])),
            ..Default::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        ..Default::default()
    };
    let sts = StatefulSet {
        metadata: meta(kenv, name, pod_labels.clone()),
        spec: StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name.to_string()),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    termination_grace_period_seconds: Some(30),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            volume_claim_templates: (!claims.is_empty()).then_some(claims),
            ..Default::default()
        },
        ..Default::default()
    };
    let headless = Service {
        metadata: meta(kenv, name, labels(kenv, name, "infrastructure", "")),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("main".into()),
                port: infra.port.into(),
                target_port: Some(IntOrString::String("main".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    vec![
        Object::StatefulSet(Box::new(sts)),
        Object::Service(Box::new(headless)),
        Object::NetworkPolicy(Box::new(network_policy(
            kenv, manifest, name, infra.port, false,
        ))),
    ]
}

pub(super) fn pvc(
    kenv: &KubeEnv,
    name: &str,
    owner: &str,
    component: &str,
) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta(kenv, name, labels(kenv, owner, component, "")),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity("1Gi".into()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

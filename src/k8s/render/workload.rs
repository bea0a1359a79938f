//! A revision's workload: its ConfigMap (the environment, named by a hash of it) and its
//! Deployment (probes, resources, volumes, secrets, rolling parameters, spread), and the
//! pod and container security every workload runs with.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    HTTPGetAction, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, SecurityContext, TopologySpreadConstraint, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::labels::{labels, meta, DEPLOYMENT, NAME, REVISION};
use super::KubeEnv;
use crate::manifest::Manifest;
use crate::rollout::Revision;

/// The non-root user every pod runs as (the `nonroot` user of distroless images).
pub const RUN_AS_USER: i64 = 65532;
/// How long a pod keeps serving after it is told to stop, so that Service endpoints and
/// gateways drop it first (`SHUTDOWN_DELAY_MS`, see the service conventions).
pub const SHUTDOWN_DELAY_MS: u32 = 5000;
/// `SHUTDOWN_DELAY_MS` plus the services' drain bound (`SHUTDOWN_TIMEOUT_SECS`, 30 s) plus slack.
pub const TERMINATION_GRACE_SECONDS: i64 = 40;

/// Environment variables of a service on Kubernetes: dependencies are reached through
/// their Kubernetes Service, which listens on the service's own port.
pub fn service_env(manifest: &Manifest, service: &str) -> BTreeMap<String, String> {
    crate::manifest::service_env(manifest, service, |name, port| {
        format!("http://{name}:{port}")
    })
}

/// The ConfigMap of a revision's environment: `<service>-env-<hash of the content>`.
pub fn config_map_name(service: &str, revision: &Revision) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (k, v) in &revision.env {
        hash.update(k.as_bytes());
        hash.update([0]);
        hash.update(v.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let h: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    format!("{service}-env-{h}")
}

pub fn config_map(kenv: &KubeEnv, service: &str, revision: &Revision) -> ConfigMap {
    ConfigMap {
        metadata: meta(
            kenv,
            &config_map_name(service, revision),
            labels(kenv, service, "config", &revision.version),
        ),
        data: Some(revision.env.clone()),
        ..Default::default()
    }
}

fn quantity(v: &Option<crate::manifest::ScalarString>, default: &str) -> Quantity {
    Quantity(v.as_ref().map_or(default.to_string(), |s| s.0.clone()))
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy)]
pub struct RollingParams {
    pub max_surge: u32,
    pub max_unavailable: u32,
}

/// The Deployment `name` running `revision` of `service` with `replicas` replicas.
pub fn deployment(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    name: &str,
    revision: &Revision,
    replicas: u32,
    rolling: RollingParams,
) -> Deployment {
    let s = &manifest.services[service].value;
    let mut pod_labels = labels(kenv, service, "service", &revision.version);
    pod_labels.insert(REVISION.into(), revision.id.clone());
    pod_labels.insert(DEPLOYMENT.into(), name.to_string());
    let mut dep_labels = pod_labels.clone();
    dep_labels.remove(DEPLOYMENT);
    let selector = BTreeMap::from([
        (NAME.to_string(), service.to_string()),
        (DEPLOYMENT.to_string(), name.to_string()),
    ]);
    let (surge, unavailable) = match (rolling.max_surge, rolling.max_unavailable) {
        (0, 0) => (1, 0),
        p => p,
    };
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    if let Some(path) = &s.volume {
        volumes.push(Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{service}-data"),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: path.clone(),
            ..Default::default()
        });
    }
    if let Some((volume, mount)) = crate::k8s::secret::volume(manifest, service) {
        volumes.push(volume);
        mounts.push(mount);
    }
    let timings = s.health.timings();
    let seconds = |d: std::time::Duration| d.as_secs().clamp(1, i32::MAX as u64) as i32;
    let probe = |path: &str, period: std::time::Duration| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(seconds(period)),
        failure_threshold: Some(timings.retries.min(i32::MAX as u32) as i32),
        timeout_seconds: Some(seconds(timings.timeout)),
        initial_delay_seconds: (!timings.start_period.is_zero())
            .then(|| timings.start_period.as_secs().min(i32::MAX as u64) as i32),
        ..Default::default()
    };
    let container = Container {
        name: "app".into(),
        image: Some(revision.image.clone()),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: s.port.into(),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        env: Some(
            vec![
                EnvVar {
                    name: "PORT".into(),
                    value: Some(s.port.to_string()),
                    ..Default::default()
                },
                EnvVar {
                    name: "SHUTDOWN_DELAY_MS".into(),
                    value: Some(SHUTDOWN_DELAY_MS.to_string()),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain(crate::k8s::secret::env_vars(manifest, service))
            .collect(),
        ),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: config_map_name(service, revision),
                optional: None,
            }),
            ..Default::default()
        }]),
        readiness_probe: Some(probe(&s.health.readiness, timings.readiness_interval)),
        liveness_probe: Some(probe(&s.health.liveness, timings.liveness_interval)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                (
                    "cpu".to_string(),
                    quantity(&s.resources.requests.cpu, "50m"),
                ),
                (
                    "memory".to_string(),
                    quantity(&s.resources.requests.memory, "32Mi"),
                ),
            ])),
            limits: Some(BTreeMap::from([
                ("cpu".to_string(), quantity(&s.resources.limits.cpu, "500m")),
                (
                    "memory".to_string(),
                    quantity(&s.resources.limits.memory, "128Mi"),
                ),
            ])),
            ..Default::default()
        }),
        security_context: Some(container_security()),
        volume_mounts: Some(mounts),
        ..Default::default()
    };
    Deployment {
        metadata: meta(kenv, name, dep_labels),
        spec: DeploymentSpec {
            // An autoscaled Deployment's count is the HPA's: not applied (see `k8s/hpa.rs`).
            replicas: revision.autoscale.is_none().then_some(replicas as i32),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(surge as i32)),
                    max_unavailable: Some(IntOrString::Int(unavailable as i32)),
                }),
            }),
            revision_history_limit: Some(3),
            progress_deadline_seconds: Some(600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    // A new secret value rolls the pods like an environment change.
                    annotations: (!revision.secrets.is_empty()).then(|| {
                        BTreeMap::from([(
                            crate::k8s::secret::POD_SECRETS.to_string(),
                            crate::secrets::digest(&revision.secrets),
                        )])
                    }),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(service.to_string()),
                    automount_service_account_token: Some(false),
                    security_context: Some(pod_security()),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    topology_spread_constraints: Some(spread(service, name)),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    }
}

pub(super) fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

pub(super) fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..Default::default()
    }
}

fn spread(name: &str, deployment: &str) -> Vec<TopologySpreadConstraint> {
    ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
        .into_iter()
        .map(|key| TopologySpreadConstraint {
            max_skew: 1,
            topology_key: key.into(),
            when_unsatisfiable: "ScheduleAnyway".into(),
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([
                    (NAME.to_string(), name.to_string()),
                    (DEPLOYMENT.to_string(), deployment.to_string()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect()
}

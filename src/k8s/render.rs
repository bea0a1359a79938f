//! The Kubernetes objects of an app, built as typed k8s-openapi structs.
//!
//! Everything dronectl applies to a cluster comes from here, so `dronectl render` prints
//! exactly what `deploy` applies. Naming and labels:
//!
//! * a service `svc` gets a Deployment `svc` (or `svc-<revision>` beside it during a
//!   blue-green or canary rollout), a Service `svc` listening on the service's own port, a
//!   ConfigMap `svc-env-<hash>` with its environment (the hash changes with the content, so a
//!   config change is a new revision and rolls out), a ServiceAccount, a
//!   PodDisruptionBudget, a NetworkPolicy admitting only its declared callers, and an
//!   HTTPRoute (when the environment names a gateway) or an Ingress for its public routes;
//! * an autoscaled service also gets a HorizontalPodAutoscaler `svc` for its live
//!   Deployment, which then has no `spec.replicas` (the HPA owns it, see `hpa.rs`);
//! * infrastructure gets a StatefulSet with a volumeClaimTemplate and a headless Service;
//! * every object carries `app.kubernetes.io/{name,instance,version,component,part-of}` and
//!   `app.kubernetes.io/managed-by: dronectl`; pods also carry `dronectl.io/revision`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment, StatefulSet,
    StatefulSetSpec,
};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, TopologySpreadConstraint, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

use crate::manifest::{Environment, GatewayRef, IngressSettings, Manifest};
use crate::rollout::Revision;

/// Label keys.
pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const VERSION: &str = "app.kubernetes.io/version";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const REVISION: &str = "dronectl.io/revision";
pub const DEPLOYMENT: &str = "dronectl.io/deployment";
pub const ROLE: &str = "dronectl.io/role";

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "dronectl";
/// The non-root user every pod runs as (the `nonroot` user of distroless images).
pub const RUN_AS_USER: i64 = 65532;
/// How long a pod keeps serving after it is told to stop, so that Service endpoints and
/// gateways drop it first (`SHUTDOWN_DELAY_MS`, see the service conventions).
pub const SHUTDOWN_DELAY_MS: u32 = 5000;
/// `SHUTDOWN_DELAY_MS` plus the services' drain bound (`SHUTDOWN_TIMEOUT_SECS`, 30 s) plus slack.
pub const TERMINATION_GRACE_SECONDS: i64 = 40;

/// Where and how an environment runs on Kubernetes.
#[derive(Debug, Clone)]
pub struct KubeEnv {
    pub app: String,
    pub env: String,
    pub namespace: String,
    pub registry: Option<String>,
    pub gateway: Option<GatewayRef>,
    /// The Ingress class and TLS (environments without a gateway).
    pub ingress: IngressSettings,
    /// The environment's default rollout strategy.
    pub strategy: Option<String>,
}

impl KubeEnv {
    /// The Kubernetes settings of the environment `env` (which must target Kubernetes).
    pub fn from_manifest(
        manifest: &Manifest,
        env: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<KubeEnv> {
        let environment =
            Environment::resolve_for(manifest, Some(env), crate::manifest::Target::Kubernetes)?;
        Ok(KubeEnv::new(&environment, namespace))
    }

    /// The Kubernetes settings of a resolved environment; `namespace` (`-n`) wins over the
    /// environment's.
    pub fn new(environment: &Environment, namespace: Option<&str>) -> KubeEnv {
        let k = environment.kubernetes().cloned().unwrap_or_default();
        KubeEnv {
            app: environment.manifest.app.value.clone(),
            env: environment.name.clone(),
            namespace: namespace
                .map(str::to_string)
                .or(k.namespace)
                .unwrap_or_else(|| "default".into()),
            registry: environment.registry.clone(),
            gateway: k.gateway,
            ingress: k.ingress,
            strategy: environment.strategy.clone(),
        }
    }

    /// `<registry>/<app>/<service>:<tag>` (or `@digest` when the image was pushed).
    pub fn image(&self, service: &str, tag: &str, digest: Option<&str>) -> String {
        let repo = match &self.registry {
            Some(r) => format!("{}/{}/{service}", r.trim_end_matches('/'), self.app),
            None => format!("{}/{service}", self.app),
        };
        match digest {
            Some(d) if d.starts_with("sha256:") => format!("{repo}:{tag}@{d}"),
            _ => format!("{repo}:{tag}"),
        }
    }
}

/// One rendered object, typed.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    ServiceAccount(Box<ServiceAccount>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    NetworkPolicy(Box<NetworkPolicy>),
    Ingress(Box<Ingress>),
    PersistentVolumeClaim(Box<PersistentVolumeClaim>),
    HttpRoute(Box<HttpRoute>),
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
}

impl Object {
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Deployment(_) => "Deployment",
            Object::StatefulSet(_) => "StatefulSet",
            Object::Service(_) => "Service",
            Object::ConfigMap(_) => "ConfigMap",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::PodDisruptionBudget(_) => "PodDisruptionBudget",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::Ingress(_) => "Ingress",
            Object::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Object::HttpRoute(_) => "HTTPRoute",
            Object::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Deployment(o) => &o.metadata,
            Object::StatefulSet(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::PodDisruptionBudget(o) => &o.metadata,
            Object::NetworkPolicy(o) => &o.metadata,
            Object::Ingress(o) => &o.metadata,
            Object::PersistentVolumeClaim(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::HorizontalPodAutoscaler(o) => &o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The API resource, for applying the object through a dynamic API.
    pub fn api_resource(&self) -> ApiResource {
        match self {
            Object::Deployment(_) => ApiResource::erase::<Deployment>(&()),
            Object::StatefulSet(_) => ApiResource::erase::<StatefulSet>(&()),
            Object::Service(_) => ApiResource::erase::<Service>(&()),
            Object::ConfigMap(_) => ApiResource::erase::<ConfigMap>(&()),
            Object::ServiceAccount(_) => ApiResource::erase::<ServiceAccount>(&()),
            Object::PodDisruptionBudget(_) => ApiResource::erase::<PodDisruptionBudget>(&()),
            Object::NetworkPolicy(_) => ApiResource::erase::<NetworkPolicy>(&()),
            Object::Ingress(_) => ApiResource::erase::<Ingress>(&()),
            Object::PersistentVolumeClaim(_) => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Object::HttpRoute(_) => http_route_resource(),
            Object::HorizontalPodAutoscaler(_) => {
                ApiResource::erase::<HorizontalPodAutoscaler>(&())
            }
        }
    }

    /// The object as JSON (with `apiVersion` and `kind`).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("k8s objects serialize")
    }

    /// Parses an object of this object's kind back from JSON (for round-trip checks).
    pub fn reparse(&self, value: serde_json::Value) -> Result<Object, serde_json::Error> {
        Ok(match self {
            Object::Deployment(_) => Object::Deployment(serde_json::from_value(value)?),
            Object::StatefulSet(_) => Object::StatefulSet(serde_json::from_value(value)?),
            Object::Service(_) => Object::Service(serde_json::from_value(value)?),
            Object::ConfigMap(_) => Object::ConfigMap(serde_json::from_value(value)?),
            Object::ServiceAccount(_) => Object::ServiceAccount(serde_json::from_value(value)?),
            Object::PodDisruptionBudget(_) => {
                Object::PodDisruptionBudget(serde_json::from_value(value)?)
            }
            Object::NetworkPolicy(_) => Object::NetworkPolicy(serde_json::from_value(value)?),
            Object::Ingress(_) => Object::Ingress(serde_json::from_value(value)?),
            Object::PersistentVolumeClaim(_) => {
                Object::PersistentVolumeClaim(serde_json::from_value(value)?)
            }
            Object::HttpRoute(_) => Object::HttpRoute(serde_json::from_value(value)?),
            Object::HorizontalPodAutoscaler(_) => {
                Object::HorizontalPodAutoscaler(serde_json::from_value(value)?)
            }
        })
    }
}

/// Gateway API `HTTPRoute` (gateway.networking.k8s.io/v1): k8s-openapi has no Gateway API
/// types, so this is the small subset dronectl writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: HttpRouteSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteSpec {
    pub parent_refs: Vec<ParentRef>,
    /// The service's `hosts` (absent: every host the gateway's listener accepts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteRule {
    pub matches: Vec<HttpRouteMatch>,
    /// `RequestMirror` (a rollout's `mirror` step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    pub backend_refs: Vec<BackendRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteMatch {
    pub path: HttpPathMatch,
    /// Header conditions (a rollout's `match` step; cookies as a regex on `Cookie`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpHeaderMatch>,
}

/// `HTTPHeaderMatch`: `type` is `Exact` or `RegularExpression`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeaderMatch {
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    pub value: String,
}

/// `HTTPRouteFilter` of type `RequestMirror` (the only filter dronectl writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    pub request_mirror: RequestMirror,
}

/// `HTTPRequestMirrorFilter`: the backend and the share of requests (`percent`, Gateway
/// API v1.3 standard channel; older gateways mirror every request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMirror {
    pub backend_ref: MirrorBackendRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MirrorBackendRef {
    pub name: String,
    pub port: u16,
}

/// A rollout's traffic controls as an HTTPRoute carries them: requests matching any of
/// `matches` go to the `candidate` Service; `mirror` percent of the rest is copied to it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteControls {
    pub candidate: String,
    pub matches: Vec<crate::rollout::TrafficMatch>,
    pub mirror: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPathMatch {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    pub name: String,
    pub port: u16,
    pub weight: u32,
}

/// The API resource of Gateway API HTTPRoutes.
pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// The common labels of an object of `name`.
pub fn labels(
    kenv: &KubeEnv,
    name: &str,
    component: &str,
    version: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (NAME.to_string(), name.to_string()),
        (INSTANCE.to_string(), format!("{}-{}", kenv.app, kenv.env)),
        (COMPONENT.to_string(), component.to_string()),
        (PART_OF.to_string(), kenv.app.clone()),
        (MANAGED_BY.to_string(), "dronectl".to_string()),
    ]);
    let version = label_value(version);
    if !version.is_empty() {
        labels.insert(VERSION.to_string(), version);
    }
    labels
}

/// The labels every pod of `service` has (what Services and policies select).
pub fn service_selector(kenv: &KubeEnv, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), service.to_string()),
        (PART_OF.to_string(), kenv.app.clone()),
    ])
}

fn label_value(v: &str) -> String {
    let v: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn meta(kenv: &KubeEnv, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(kenv.namespace.clone()),
        labels: Some(labels),
        ..Default::default()
    }
}

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
    if let Some((volume, mount)) = super::secret::volume(manifest, service) {
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
            .chain(super::secret::env_vars(manifest, service))
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
            // An autoscaled Deployment's count is the HPA's: not applied (see `hpa.rs`).
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
                            super::secret::POD_SECRETS.to_string(),
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

fn pod_security() -> PodSecurityContext {
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

fn container_security() -> SecurityContext {
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

/// The Service `name` of `service`, selecting every pod of the service, or only those of
/// `revision`.
pub fn service(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    name: &str,
    revision: Option<&str>,
) -> Service {
    let port = manifest.services[service].value.port;
    let mut selector = service_selector(kenv, service);
    if let Some(r) = revision {
        selector.insert(REVISION.into(), r.to_string());
    }
    Service {
        metadata: meta(kenv, name, labels(kenv, service, "service", "")),
        spec: Some(ServiceSpec {
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: port.into(),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The services that declare `name` in their `depends_on`.
pub fn callers<'m>(manifest: &'m Manifest, name: &str) -> Vec<&'m str> {
    manifest
        .services
        .iter()
        .filter(|(_, s)| s.value.depends_on.iter().any(|d| d.value == name))
        .map(|(n, _)| n.as_str())
        .collect()
}

/// Admits only the declared callers (and the gateway or ingress controller when the
/// service has public routes) to `name`'s port.
pub fn network_policy(
    kenv: &KubeEnv,
    manifest: &Manifest,
    name: &str,
    port: u16,
    public: bool,
) -> NetworkPolicy {
    let mut from: Vec<NetworkPolicyPeer> = callers(manifest, name)
        .into_iter()
        .map(|caller| NetworkPolicyPeer {
            pod_selector: Some(LabelSelector {
                match_labels: Some(service_selector(kenv, caller)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    if public {
        let ns = match &kenv.gateway {
            Some(g) => g
                .namespace
                .clone()
                .unwrap_or_else(|| kenv.namespace.clone()),
            None => "ingress-nginx".to_string(),
        };
        from.push(NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".to_string(),
                    ns,
                )])),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let component = if manifest.services.contains_key(name) {
        "service"
    } else {
        "infrastructure"
    };
    NetworkPolicy {
        metadata: meta(
            kenv,
            &format!("{name}-ingress"),
            labels(kenv, name, component, ""),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(service_selector(kenv, name)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            // No callers: no rules (policyTypes Ingress alone denies everything). Never
            // `ingress: []`: the API server drops empty lists, so an empty one would differ
            // from the stored object on every apply and make each deploy a write.
            ingress: (!from.is_empty()).then(|| {
                vec![NetworkPolicyIngressRule {
                    from: Some(from),
                    ports: Some(vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(port.into())),
                        protocol: Some("TCP".into()),
                        end_port: None,
                    }]),
                }]
            }),
            ..Default::default()
        }),
    }
}

/// Denies all ingress to the app's pods unless another policy admits it.
pub fn default_deny(kenv: &KubeEnv) -> NetworkPolicy {
    NetworkPolicy {
        metadata: meta(
            kenv,
            &format!("{}-default-deny", kenv.app),
            labels(kenv, &kenv.app, "policy", ""),
        ),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(PART_OF.to_string(), kenv.app.clone())])),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        }),
    }
}

/// The HTTPRoute of a service's public routes, sending to `backends` (Service, weight).
pub fn http_route(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    backends: &[(String, u32)],
) -> Option<HttpRoute> {
    http_route_with(kenv, manifest, service, backends, &RouteControls::default())
}

/// The header conditions of a match: headers as given, cookies as an anchored regular
/// expression on the `Cookie` header (`(.*;\s*)?name=value(;.*)?`), which holds whether the
/// gateway matches the whole value or searches it.
pub fn header_matches(m: &crate::rollout::TrafficMatch) -> Vec<HttpHeaderMatch> {
    use crate::rollout::MatchValue;
    let mut out: Vec<HttpHeaderMatch> = m
        .headers
        .iter()
        .map(|(name, v)| match v {
            MatchValue::Exact(e) => HttpHeaderMatch {
                type_: "Exact".into(),
                name: name.clone(),
                value: e.clone(),
            },
            MatchValue::Regex(r) => HttpHeaderMatch {
                type_: "RegularExpression".into(),
                name: name.clone(),
                value: format!("^(?:{r})$"),
            },
        })
        .collect();
    for (name, v) in &m.cookies {
        let value = match v {
            MatchValue::Exact(e) => regex_escape(e),
            MatchValue::Regex(r) => format!("(?:{r})"),
        };
        out.push(HttpHeaderMatch {
            type_: "RegularExpression".into(),
            name: "Cookie".into(),
            value: format!("^(.*;\\s*)?{}={value}(;.*)?$", regex_escape(name)),
        });
    }
    out
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// [`http_route`] with a rollout's controls: one rule per match (all its conditions on
/// every public path, to the candidate only: a rule with header matches takes precedence
/// over the plain one), and the weighted rule with a `RequestMirror` filter.
pub fn http_route_with(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    backends: &[(String, u32)],
    controls: &RouteControls,
) -> Option<HttpRoute> {
    let gateway = kenv.gateway.as_ref()?;
    let s = &manifest.services[service].value;
    if s.routes.is_empty() {
        return None;
    }
    Some(HttpRoute {
        api_version: "gateway.networking.k8s.io/v1".into(),
        kind: "HTTPRoute".into(),
        metadata: meta(kenv, service, labels(kenv, service, "route", "")),
        spec: HttpRouteSpec {
            parent_refs: vec![ParentRef {
                name: gateway.name.clone(),
                namespace: gateway.namespace.clone(),
            }],
            hostnames: s.hosts.iter().map(|h| h.value.clone()).collect(),
            rules: controls
                .matches
                .iter()
                .map(|m| HttpRouteRule {
                    matches: s
                        .routes
                        .iter()
                        .map(|r| HttpRouteMatch {
                            path: HttpPathMatch {
                                type_: "PathPrefix".into(),
                                value: r.value.clone(),
                            },
                            headers: header_matches(m),
                        })
                        .collect(),
                    filters: vec![],
                    backend_refs: vec![BackendRef {
                        name: controls.candidate.clone(),
                        port: s.port,
                        weight: 1,
                    }],
                })
                .chain(std::iter::once(HttpRouteRule {
                    matches: s
                        .routes
                        .iter()
                        .map(|r| HttpRouteMatch {
                            path: HttpPathMatch {
                                type_: "PathPrefix".into(),
                                value: r.value.clone(),
                            },
                            headers: vec![],
                        })
                        .collect(),
                    filters: (controls.mirror > 0)
                        .then(|| HttpRouteFilter {
                            type_: "RequestMirror".into(),
                            request_mirror: RequestMirror {
                                backend_ref: MirrorBackendRef {
                                    name: controls.candidate.clone(),
                                    port: s.port,
                                },
                                percent: Some(controls.mirror.min(100)),
                            },
                        })
                        .into_iter()
                        .collect(),
                    backend_refs: backends
                        .iter()
                        .map(|(name, weight)| BackendRef {
                            name: name.clone(),
                            port: s.port,
                            weight: *weight,
                        })
                        .collect(),
                }))
                .collect(),
        },
    })
}

/// cert-manager's annotations: the Ingress names its issuer, cert-manager fills the Secret.
pub const CERT_MANAGER_ISSUER: &str = "cert-manager.io/issuer";
pub const CERT_MANAGER_CLUSTER_ISSUER: &str = "cert-manager.io/cluster-issuer";

/// The Ingress of a service's public routes: one rule per host (one rule for any host when
/// the service names none), the environment's class, and TLS for the hosts when the
/// environment sets it (a Secret, or a cert-manager issuer annotation).
fn ingress(kenv: &KubeEnv, manifest: &Manifest, service: &str) -> Option<Ingress> {
    let s = &manifest.services[service].value;
    if s.routes.is_empty() || kenv.gateway.is_some() {
        return None;
    }
    let paths: Vec<HTTPIngressPath> = s
        .routes
        .iter()
        .map(|r| HTTPIngressPath {
            path: Some(r.value.clone()),
            path_type: "Prefix".into(),
            backend: IngressBackend {
                service: Some(IngressServiceBackend {
                    name: service.to_string(),
                    port: Some(ServiceBackendPort {
                        number: Some(s.port.into()),
                        name: None,
                    }),
                }),
                resource: None,
            },
        })
        .collect();
    let hosts: Vec<String> = s.hosts.iter().map(|h| h.value.clone()).collect();
    let rules = if hosts.is_empty() {
        vec![IngressRule {
            host: None,
            http: Some(HTTPIngressRuleValue {
                paths: paths.clone(),
            }),
        }]
    } else {
        hosts
            .iter()
            .map(|h| IngressRule {
                host: Some(h.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: paths.clone(),
                }),
            })
            .collect()
    };
    let mut metadata = meta(kenv, service, labels(kenv, service, "route", ""));
    let tls = kenv.ingress.tls.as_ref().filter(|_| !hosts.is_empty());
    if let Some(t) = tls {
        let annotations: BTreeMap<String, String> = [
            (CERT_MANAGER_ISSUER, &t.issuer),
            (CERT_MANAGER_CLUSTER_ISSUER, &t.cluster_issuer),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k.to_string(), v.clone())))
        .collect();
        if !annotations.is_empty() {
            metadata.annotations = Some(annotations);
        }
    }
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: kenv.ingress.class.clone(),
            rules: Some(rules),
            tls: tls.map(|t| {
                vec![IngressTLS {
                    hosts: Some(hosts.clone()),
                    secret_name: Some(
                        t.secret
                            .clone()
                            .unwrap_or_else(|| format!("{service}-tls")),
                    ),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The objects that belong to a service whatever revision runs: ServiceAccount, Service,
/// PodDisruptionBudget, NetworkPolicy, PVC, and its HTTPRoute or Ingress.
pub fn service_objects(kenv: &KubeEnv, manifest: &Manifest, name: &str) -> Vec<Object> {
    let s = &manifest.services[name].value;
    let mut objects = vec![
        Object::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta(kenv, name, labels(kenv, name, "service", "")),
            automount_service_account_token: Some(false),
            ..Default::default()
        })),
        Object::Service(Box::new(service(kenv, manifest, name, name, None))),
        Object::PodDisruptionBudget(Box::new(PodDisruptionBudget {
            metadata: meta(kenv, name, labels(kenv, name, "service", "")),
            spec: Some(PodDisruptionBudgetSpec {
                max_unavailable: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(service_selector(kenv, name)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        })),
        Object::NetworkPolicy(Box::new(network_policy(
            kenv,
            manifest,
            name,
            s.port,
            !s.routes.is_empty(),
        ))),
    ];
    if s.volume.is_some() {
        objects.push(Object::PersistentVolumeClaim(Box::new(pvc(
            kenv,
            &format!("{name}-data"),
            name,
            "service",
        ))));
    }
    if let Some(route) = http_route(kenv, manifest, name, &[(name.to_string(), 100)]) {
        objects.push(Object::HttpRoute(Box::new(route)));
    }
    if let Some(i) = ingress(kenv, manifest, name) {
        objects.push(Object::Ingress(Box::new(i)));
    }
    // Shown scaling the Deployment `<svc>`; a deploy keeps it on the live revision's.
    if let Some(h) = super::hpa::hpa(kenv, manifest, name, name) {
        objects.push(Object::HorizontalPodAutoscaler(Box::new(h)));
    }
    objects
}

fn pvc(kenv: &KubeEnv, name: &str, owner: &str, component: &str) -> PersistentVolumeClaim {
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

/// The objects of a service running `revision` in its Deployment `name`.
pub fn revision_objects(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    name: &str,
    revision: &Revision,
    replicas: u32,
    rolling: RollingParams,
) -> Vec<Object> {
    vec![
        Object::ConfigMap(Box::new(config_map(kenv, service, revision))),
        Object::Deployment(Box::new(deployment(
            kenv, manifest, service, name, revision, replicas, rolling,
        ))),
    ]
}

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

/// Everything `render` prints for `services` (all when empty; infrastructure too then),
/// each service running the revision `revisions` gives it.
pub fn render_app(
    kenv: &KubeEnv,
    manifest: &Manifest,
    services: &[String],
    revisions: &BTreeMap<String, Revision>,
    rolling: RollingParams,
) -> Vec<Object> {
    let mut objects = Vec::new();
    let all = services.is_empty();
    if all {
        objects.push(Object::NetworkPolicy(Box::new(default_deny(kenv))));
        for name in manifest.infrastructure.keys() {
            objects.extend(infrastructure_objects(kenv, manifest, name));
        }
    }
    for name in manifest.services.keys() {
        if !all && !services.contains(name) {
            continue;
        }
        objects.extend(service_objects(kenv, manifest, name));
        if let Some(revision) = revisions.get(name) {
            objects.extend(revision_objects(
                kenv,
                manifest,
                name,
                name,
                revision,
                revision.replicas,
                rolling,
            ));
        }
    }
    objects
}

/// The objects as one multi-document YAML stream.
pub fn to_yaml(objects: &[Object]) -> anyhow::Result<String> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&o.to_value())?);
    }
    Ok(out)
}

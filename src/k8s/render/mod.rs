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
//!   Deployment, which then has no `spec.replicas` (the HPA owns it, see `k8s/hpa.rs`);
//! * infrastructure gets a StatefulSet with a volumeClaimTemplate and a headless Service;
//! * every object carries `app.kubernetes.io/{name,instance,version,component,part-of}` and
//!   `app.kubernetes.io/managed-by: dronectl`; pods also carry `dronectl.io/revision`.
//!
//! One file per part of the app:
//! * `labels.rs`: label keys, the common labels and selectors, object metadata;
//! * `workload.rs`: a revision's Deployment and ConfigMap, pod and container security;
//! * `network.rs`: Services, NetworkPolicies, the HTTPRoute (Gateway API) and the Ingress;
//! * `infrastructure.rs`: StatefulSets, headless Services and volume claims.
//!
//! This module holds the typed [`Object`] and the entry points that assemble an app's
//! objects ([`service_objects`], [`revision_objects`], [`render_app`], [`to_yaml`]).

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::ApiResource;
use serde::Serialize;

use crate::manifest::{Environment, GatewayRef, IngressSettings, Manifest};
use crate::rollout::Revision;

mod infrastructure;
mod labels;
mod network;
mod workload;

pub use infrastructure::infrastructure_objects;
use infrastructure::pvc;
use labels::meta;
pub use labels::{
    labels, service_selector, COMPONENT, DEPLOYMENT, INSTANCE, MANAGED_BY, NAME, PART_OF, REVISION,
    ROLE, VERSION,
};
use network::ingress;
pub use network::{
    callers, default_deny, header_matches, http_route, http_route_resource, http_route_with,
    network_policy, service, BackendRef, HttpHeaderMatch, HttpPathMatch, HttpRoute,
    HttpRouteFilter, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, MirrorBackendRef, ParentRef,
    RequestMirror, RouteControls, CERT_MANAGER_CLUSTER_ISSUER, CERT_MANAGER_ISSUER,
};
pub use workload::{
    config_map, config_map_name, deployment, service_env, RollingParams, RUN_AS_USER,
    SHUTDOWN_DELAY_MS, TERMINATION_GRACE_SECONDS,
};

/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "dronectl";

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
    if let Some(h) = crate::k8s::hpa::hpa(kenv, manifest, name, name) {
        objects.push(Object::HorizontalPodAutoscaler(Box::new(h)));
    }
    objects
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

//! How traffic reaches a service: its Service, the NetworkPolicies (declared callers only,
//! and a default deny), the HTTPRoute of an environment with a Gateway API gateway (weights,
//! match rules, mirroring) and the Ingress of one without.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::core::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

use super::labels::{labels, meta, service_selector, PART_OF, REVISION};
use super::KubeEnv;
use crate::manifest::Manifest;

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
pub(super) fn ingress(kenv: &KubeEnv, manifest: &Manifest, service: &str) -> Option<Ingress> {
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
                    secret_name: Some(t.secret.clone().unwrap_or_else(|| format!("{service}-tls"))),
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

//! The Kubernetes side of secrets as objects: the Secret `<service>-secrets` dronectl
//! manages (applied by `dronectl secret set`, never by `deploy`), and how a pod template
//! refers to secrets — a projected volume at `/run/secrets` (one file per secret, from the
//! managed Secret or from the existing Secret a `from:` names) and, for `env: true`
//! secrets, a `secretKeyRef` variable. Pod templates carry a digest of the secret versions
//! (`dronectl.io/secrets`), never a value.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, KeyToPath, ProjectedVolumeSource, Secret, SecretKeySelector,
    SecretProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use serde::{Deserialize, Serialize};

use super::render::{labels, KubeEnv};
use crate::manifest::{Manifest, SecretDecl};
use crate::secrets::MOUNT_DIR;

/// Annotation of a managed Secret: `NAME` → its version and when it was set (JSON).
pub const VERSIONS: &str = "dronectl.io/secret-versions";
/// Annotation of a pod template: the digest of its secrets' versions.
pub const POD_SECRETS: &str = "dronectl.io/secrets";
/// What `render` shows instead of a value.
pub const REDACTED: &str = "<redacted>";

/// The version of one value in a managed Secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    pub version: String,
    pub set_at: String,
}

/// The versions annotation of a Secret (empty when missing or unreadable).
pub fn versions(secret: &Secret) -> BTreeMap<String, KeyVersion> {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(VERSIONS))
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// The name of the Secret dronectl manages for `service`.
pub fn name(service: &str) -> String {
    format!("{service}-secrets")
}

/// The declared secrets whose values dronectl manages (no `from:`).
pub fn managed<'m>(manifest: &'m Manifest, service: &str) -> Vec<&'m SecretDecl> {
    crate::secrets::declared(manifest, service)
        .into_iter()
        .filter(|d| d.from().is_none())
        .collect()
}

/// Where a declared secret's value is in the cluster: (Secret, key).
pub fn source(service: &str, decl: &SecretDecl) -> (String, String) {
    match decl.from() {
        Some(f) => (f.secret.clone(), f.key.clone()),
        None => (name(service), decl.name().to_string()),
    }
}

/// The managed Secret of `service` holding `data`, with its versions annotation.
pub fn secret(
    kenv: &KubeEnv,
    service: &str,
    data: BTreeMap<String, ByteString>,
    versions: &BTreeMap<String, KeyVersion>,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name(service)),
            namespace: Some(kenv.namespace.clone()),
            labels: Some(labels(kenv, service, "secrets", "")),
            annotations: Some(BTreeMap::from([(
                VERSIONS.to_string(),
                serde_json::to_string(versions).expect("versions serialize"),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The managed Secret of `service` as `render` shows it: every managed key, with the value
/// `<redacted>` unless `values` holds it (`--show-secrets`). `None` without managed secrets.
pub fn rendered(
    kenv: &KubeEnv,
    manifest: &Manifest,
    service: &str,
    values: Option<&BTreeMap<String, ByteString>>,
) -> Option<serde_json::Value> {
    let names = managed(manifest, service);
    if names.is_empty() {
        return None;
    }
    let mut s = secret(kenv, service, BTreeMap::new(), &BTreeMap::new());
    s.metadata.annotations = None;
    s.data = None;
    let shown = |n: &str| match values.and_then(|v| v.get(n)) {
        Some(b) => String::from_utf8_lossy(&b.0).into_owned(),
        None if values.is_some() => "<not set>".to_string(),
        None => REDACTED.to_string(),
    };
    s.string_data = Some(
        names
            .iter()
            .map(|d| (d.name().to_string(), shown(d.name())))
            .collect(),
    );
    let mut value = serde_json::to_value(&s).expect("a Secret serializes");
    let m = value.as_object_mut().expect("an object");
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Secret".into());
    Some(value)
}

/// The projected volume and its mount that put `service`'s secrets under `/run/secrets`
/// (files readable by the pod's group only, read-only); `None` without secrets.
pub fn volume(manifest: &Manifest, service: &str) -> Option<(Volume, VolumeMount)> {
    let declared = crate::secrets::declared(manifest, service);
    if declared.is_empty() {
        return None;
    }
    // One projection per Secret, in first-use order.
    let mut by_secret: Vec<(String, Vec<KeyToPath>)> = Vec::new();
    for decl in declared {
        let (secret, key) = source(service, decl);
        let item = KeyToPath {
            key,
            path: decl.name().to_string(),
            ..Default::default()
        };
        match by_secret.iter_mut().find(|(s, _)| *s == secret) {
            Some((_, items)) => items.push(item),
            None => by_secret.push((secret, vec![item])),
        }
    }
    let sources = by_secret
        .into_iter()
        .map(|(secret, items)| VolumeProjection {
            secret: Some(SecretProjection {
                name: secret,
                items: Some(items),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    Some((
        Volume {
            name: "secrets".into(),
            projected: Some(ProjectedVolumeSource {
                default_mode: Some(0o440),
                sources: Some(sources),
                ..Default::default()
            }),
            ..Default::default()
        },
        VolumeMount {
            name: "secrets".into(),
            mount_path: MOUNT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ))
}

/// `secretKeyRef` variables of `service`'s `env: true` secrets.
pub fn env_vars(manifest: &Manifest, service: &str) -> Vec<EnvVar> {
    crate::secrets::declared(manifest, service)
        .into_iter()
        .filter(|d| d.env())
        .map(|d| {
            let (secret, key) = source(service, d);
            EnvVar {
                name: d.name().to_string(),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret,
                        key,
                        optional: Some(false),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect()
}

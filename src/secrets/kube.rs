//! Secrets on a Kubernetes environment: values live in the cluster only, in the Secret
//! `<service>-secrets` (server-side applied, field manager `dronectl`, type Opaque) with a
//! versions annotation; or in an existing Secret a `from:` names. Nothing is kept locally.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use serde::Serialize;

use super::{Missing, MissingSecrets, SecretInfo};
use crate::k8s::render::{KubeEnv, FIELD_MANAGER};
use crate::k8s::secret::{self, KeyVersion};
use crate::manifest::Manifest;

fn api(client: &Client, kenv: &KubeEnv) -> Api<Secret> {
    Api::namespaced(client.clone(), &kenv.namespace)
}

async fn get(client: &Client, kenv: &KubeEnv, name: &str) -> anyhow::Result<Option<Secret>> {
    api(client, kenv).get_opt(name).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot read Secret {}/{name}: {}",
            kenv.namespace,
            crate::k8s::describe_error(&e)
        )
    })
}

async fn apply(client: &Client, kenv: &KubeEnv, s: &Secret) -> anyhow::Result<()> {
    let name = s.metadata.name.clone().unwrap_or_default();
    let mut body = serde_json::to_value(s)?;
    let m = body.as_object_mut().expect("an object");
    m.insert("apiVersion".into(), "v1".into());
    m.insert("kind".into(), "Secret".into());
    api(client, kenv)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Apply(body),
        )
        .await
        // The server's message, never the request body (it holds values).
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot apply Secret {}/{name}: {}",
                kenv.namespace,
                crate::k8s::describe_error(&e)
            )
        })?;
    Ok(())
}

/// Sets `service`'s secret `name` in the managed Secret (created when missing), with a new
/// version; the other keys are kept.
pub async fn set(
    client: &Client,
    kenv: &KubeEnv,
    service: &str,
    name: &str,
    value: &[u8],
) -> anyhow::Result<SecretInfo> {
    let current = get(client, kenv, &secret::name(service)).await?;
    let mut data = current
        .as_ref()
        .and_then(|s| s.data.clone())
        .unwrap_or_default();
    let mut versions = current.as_ref().map(secret::versions).unwrap_or_default();
    let info = SecretInfo::new_version(service, name)?;
    data.insert(name.to_string(), ByteString(value.to_vec()));
    versions.insert(
        name.to_string(),
        KeyVersion {
            version: info.version.clone(),
            set_at: info.set_at.clone(),
        },
    );
    write(client, kenv, service, data, versions).await?;
    Ok(info)
}

/// Removes `service`'s secret `name` from the managed Secret (the Secret goes with its last
/// key); whether it was there.
pub async fn remove(
    client: &Client,
    kenv: &KubeEnv,
    service: &str,
    name: &str,
) -> anyhow::Result<bool> {
    let secret_name = secret::name(service);
    let Some(current) = get(client, kenv, &secret_name).await? else {
        return Ok(false);
    };
    let mut data = current.data.clone().unwrap_or_default();
    if data.remove(name).is_none() {
        return Ok(false);
    }
    if data.is_empty() {
        api(client, kenv)
            .delete(&secret_name, &DeleteParams::default())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot delete Secret {}/{secret_name}: {}",
                    kenv.namespace,
                    crate::k8s::describe_error(&e)
                )
            })?;
        return Ok(true);
    }
    write(client, kenv, service, data, secret::versions(&current)).await?;
    Ok(true)
}

/// Applies `service`'s managed Secret with `data`, and the versions of the keys it has.
async fn write(
    client: &Client,
    kenv: &KubeEnv,
    service: &str,
    data: BTreeMap<String, ByteString>,
    mut versions: BTreeMap<String, KeyVersion>,
) -> anyhow::Result<()> {
    versions.retain(|k, _| data.contains_key(k));
    apply(
        client,
        kenv,
        &secret::secret(kenv, service, data, &versions),
    )
    .await
}

/// One declared secret as the cluster has it (keys only).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSecret {
    pub service: String,
    pub name: String,
    /// `Secret <namespace>/<name> key <key>`.
    pub location: String,
    pub set: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_at: Option<String>,
    /// The version (managed) or `rv:<resourceVersion>` of an existing Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Every declared secret of `services` (all when empty) as the cluster has it.
pub async fn status(
    client: &Client,
    kenv: &KubeEnv,
    manifest: &Manifest,
    services: &[String],
) -> anyhow::Result<Vec<ClusterSecret>> {
    let mut cache: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    let mut out = Vec::new();
    for service in manifest.services.keys() {
        if !services.is_empty() && !services.contains(service) {
            continue;
        }
        for decl in super::declared(manifest, service) {
            let (secret_name, key) = secret::source(service, decl);
            if !cache.contains_key(&secret_name) {
                let s = get(client, kenv, &secret_name).await?;
                cache.insert(secret_name.clone(), s);
            }
            let live = cache[&secret_name].as_ref();
            let has = |s: &Secret| {
                s.data.as_ref().is_some_and(|d| d.contains_key(&key))
                    || s.string_data.as_ref().is_some_and(|d| d.contains_key(&key))
            };
            let set = live.is_some_and(has);
            let (version, set_at) = match (live, decl.from()) {
                (Some(s), None) if set => match secret::versions(s).remove(&key) {
                    Some(v) => (Some(v.version), Some(v.set_at)),
                    None => (
                        s.metadata
                            .resource_version
                            .clone()
                            .map(|rv| format!("rv:{rv}")),
                        None,
                    ),
                },
                (Some(s), Some(_)) if set => (
                    s.metadata
                        .resource_version
                        .clone()
                        .map(|rv| format!("rv:{rv}")),
                    None,
                ),
                _ => (None, None),
            };
            out.push(ClusterSecret {
                service: service.clone(),
                name: decl.name().to_string(),
                location: format!("Secret {}/{secret_name} key {key}", kenv.namespace),
                set,
                set_at,
                version,
            });
        }
    }
    Ok(out)
}

/// The secret versions of each of `services` (all when empty), read from the cluster; a
/// declared secret without its Secret or key is a [`MissingSecrets`] error (exit 2) before
/// anything is applied.
pub async fn check(
    client: &Client,
    kenv: &KubeEnv,
    manifest: &Manifest,
    services: &[String],
) -> anyhow::Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut versions: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut missing = Vec::new();
    for s in status(client, kenv, manifest, services).await? {
        let entry = versions.entry(s.service.clone()).or_default();
        match (&s.version, s.set) {
            (Some(v), true) => {
                entry.insert(s.name.clone(), v.clone());
            }
            _ => {
                let decl = super::declared(manifest, &s.service)
                    .into_iter()
                    .find(|d| d.name() == s.name);
                let detail = decl.and_then(|d| d.from()).map(|f| {
                    format!(
                        "the existing Secret `{}` has no key `{}` in namespace `{}` (or does not exist); create it where your secrets are managed",
                        f.secret, f.key, kenv.namespace
                    )
                });
                missing.push(Missing {
                    service: s.service.clone(),
                    name: s.name.clone(),
                    env: kenv.env.clone(),
                    detail,
                });
            }
        }
    }
    if !missing.is_empty() {
        return Err(MissingSecrets(missing).into());
    }
    Ok(versions)
}

/// The values of `service`'s managed Secret (`render --show-secrets`).
pub async fn values(
    client: &Client,
    kenv: &KubeEnv,
    service: &str,
) -> anyhow::Result<BTreeMap<String, ByteString>> {
    Ok(get(client, kenv, &secret::name(service))
        .await?
        .and_then(|s| s.data)
        .unwrap_or_default())
}

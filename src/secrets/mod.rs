//! Secrets: values a service reads that never live in `dronectl.yaml`, git, ConfigMaps,
//! rollout state, events, labels or output.
//!
//! * A service declares them by name (`secrets:` in the manifest, [`SecretDecl`]).
//! * `dronectl secret set` stores a value: for a local (Docker) environment in the per-user
//!   [`SecretStore`]; for a Kubernetes environment in the Secret `<service>-secrets`
//!   applied with server-side apply ([`kube`]).
//! * Each value has a *version* (random, made at every `set`). Revisions carry the versions
//!   (never the values), so a new value makes a new revision that rolls out like an
//!   environment change ([`digest`] is what labels and annotations show).
//! * A declared secret without a value stops `up`/`deploy` before anything is applied
//!   ([`MissingSecrets`], exit 2), naming the command that sets it.

pub mod input;
pub mod kube;
pub mod ops;
pub mod store;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use store::{SecretInfo, SecretStore, SecretValue};

use crate::manifest::{Manifest, SecretDecl};

/// Where a secret's value appears inside the container.
pub const MOUNT_DIR: &str = "/run/secrets";

/// One declared secret that has no value in an environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub service: String,
    pub name: String,
    pub env: String,
    /// What is missing, for a secret taken from an existing Kubernetes Secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Missing {
    /// The command that sets the value.
    pub fn command(&self) -> String {
        set_command(&self.service, &self.name, &self.env)
    }
}

/// `dronectl secret set <service> <NAME> --env <env>`.
pub fn set_command(service: &str, name: &str, env: &str) -> String {
    format!("dronectl secret set {service} {name} --env {env}")
}

/// Declared secrets without a value: nothing was applied (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MissingSecrets(pub Vec<Missing>);

impl crate::exit::ExitStatus for MissingSecrets {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

impl fmt::Display for MissingSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self
            .0
            .iter()
            .map(|m| match &m.detail {
                Some(detail) => format!(
                    "service `{}` needs the secret `{}` in environment `{}`: {detail}",
                    m.service, m.name, m.env
                ),
                None => format!(
                    "service `{}` needs the secret `{}`, which has no value in environment `{}`; set it with `{}` (the value is read from stdin)",
                    m.service,
                    m.name,
                    m.env,
                    m.command()
                ),
            })
            .collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A short digest of a revision's secret versions (`NAME` → version id), for container
/// labels and pod-template annotations. Versions are random, so it says nothing about the
/// values; it changes whenever a value is set again.
pub fn digest(versions: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for (name, version) in versions {
        hash.update(name.as_bytes());
        hash.update([0]);
        hash.update(version.as_bytes());
        hash.update([0]);
    }
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The secrets `service` declares in the (effective) manifest.
pub fn declared<'m>(manifest: &'m Manifest, service: &str) -> Vec<&'m SecretDecl> {
    manifest
        .services
        .get(service)
        .map(|s| s.value.secrets.iter().map(|d| &d.value).collect())
        .unwrap_or_default()
}

/// The versions of `service`'s secrets in a local environment, or the ones that have no
/// value.
pub fn local_versions(
    store: &SecretStore,
    manifest: &Manifest,
    env: &str,
    service: &str,
) -> anyhow::Result<Result<BTreeMap<String, String>, Vec<Missing>>> {
    let mut versions = BTreeMap::new();
    let mut missing = Vec::new();
    for decl in declared(manifest, service) {
        match store.info(service, decl.name())? {
            Some(info) => {
                versions.insert(decl.name().to_string(), info.version);
            }
            None => missing.push(Missing {
                service: service.to_string(),
                name: decl.name().to_string(),
                env: env.to_string(),
                detail: None,
            }),
        }
    }
    Ok(if missing.is_empty() {
        Ok(versions)
    } else {
        Err(missing)
    })
}

/// Checks that every secret `services` (all when empty) declare has a value in the local
/// environment `env`.
pub fn check_local(
    store: &SecretStore,
    manifest: &Manifest,
    env: &str,
    services: &[String],
) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for service in manifest.services.keys() {
        if !services.is_empty() && !services.contains(service) {
            continue;
        }
        if let Err(m) = local_versions(store, manifest, env, service)? {
            missing.extend(m);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(MissingSecrets(missing).into())
    }
}

/// `validate --env E` for a local environment: one error per declared secret that has no
/// value, at its place in the manifest, naming the command that sets it. Kubernetes
/// environments are checked against the cluster by `deploy` instead.
pub fn local_diagnostics(
    environment: &crate::manifest::Environment,
) -> anyhow::Result<Vec<crate::manifest::Diagnostic>> {
    use crate::manifest::{Diagnostic, Position, Severity, Target};
    let m = &environment.manifest;
    if environment.target_kind() != Target::Docker
        || !m.services.values().any(|s| !s.value.secrets.is_empty())
    {
        return Ok(Vec::new());
    }
    let store = SecretStore::open(&m.app.value, &environment.name)?;
    let mut out = Vec::new();
    for (service, s) in &m.services {
        let Err(missing) = local_versions(&store, m, &environment.name, service)? else {
            continue;
        };
        for miss in missing {
            let (i, decl) = s
                .value
                .secrets
                .iter()
                .enumerate()
                .find(|(_, d)| d.value.name() == miss.name)
                .expect("a declared secret");
            out.push(Diagnostic {
                severity: Severity::Error,
                field: format!("services.{service}.secrets[{i}]"),
                position: Position::from_location(decl.referenced),
                message: MissingSecrets(vec![miss]).to_string(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_names_service_secret_and_command() {
        let e = MissingSecrets(vec![Missing {
            service: "api".into(),
            name: "DB_PASSWORD".into(),
            env: "local".into(),
            detail: None,
        }]);
        assert_eq!(e.to_string(), "service `api` needs the secret `DB_PASSWORD`, which has no value in environment `local`; set it with `dronectl secret set api DB_PASSWORD --env local` (the value is read from stdin)");
    }

    #[test]
    fn digest_follows_versions() {
        let a = BTreeMap::from([("A".to_string(), "1".repeat(32))]);
        let b = BTreeMap::from([("A".to_string(), "2".repeat(32))]);
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest(&a), digest(&a.clone()));
        assert_eq!(digest(&a).len(), 16);
    }
}

//! `dronectl secret set|list|rm` on either target.

use std::path::PathBuf;

use serde::Serialize;

use super::{declared, SecretStore};
use crate::exit::UsageError;
use crate::k8s::{ConnectOptions, KubeTarget};
use crate::manifest::{Environment, LoadedManifest, Manifest, Target};

/// Which app and environment a secret command acts on.
#[derive(Debug, Clone)]
pub struct SecretScope {
    pub app_dir: PathBuf,
    pub env: Option<String>,
    /// How to reach the cluster of a Kubernetes environment.
    pub connect: ConnectOptions,
}

/// What `set` did (no value).
#[derive(Debug, Clone, Serialize)]
pub struct SetOutcome {
    pub env: String,
    pub target: Target,
    pub service: String,
    pub name: String,
    pub version: String,
    pub set_at: String,
    /// Where the value is kept now.
    pub location: String,
    /// What makes the service use it.
    pub next: String,
}

/// One secret in `list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    pub service: String,
    pub name: String,
    /// Whether the manifest declares it (a stored value of a secret no longer declared is
    /// listed so that it can be removed).
    pub declared: bool,
    pub set: bool,
    pub location: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set_at: Option<String>,
}

/// What `list` found.
#[derive(Debug, Clone, Serialize)]
pub struct ListOutcome {
    pub env: String,
    pub target: Target,
    pub secrets: Vec<Listed>,
}

/// What `rm` did.
#[derive(Debug, Clone, Serialize)]
pub struct RemoveOutcome {
    pub env: String,
    pub service: String,
    pub name: String,
    pub removed: bool,
}

fn resolve(scope: &SecretScope) -> anyhow::Result<Environment> {
    let loaded = LoadedManifest::read_valid(&scope.app_dir)?;
    Ok(Environment::resolve(
        &loaded.manifest,
        scope.env.as_deref(),
    )?)
}

/// The declaration of `service`'s secret `name`, or why there is none (exit 2).
fn check_declared(m: &Manifest, env: &str, service: &str, name: &str) -> anyhow::Result<()> {
    let Some(s) = m.services.get(service) else {
        return Err(UsageError(format!(
            "no service `{}` in dronectl.yaml",
            crate::names::shown(service)
        ))
        .into());
    };
    if !declared(m, service).iter().any(|d| d.name() == name) {
        let at = crate::manifest::Position::from_location(s.referenced)
            .map(|p| format!(" (dronectl.yaml:{}:{})", p.line, p.column))
            .unwrap_or_default();
        return Err(UsageError(format!(
            "service `{service}`{at} does not declare the secret `{}` in environment `{env}`; add it to `services.{service}.secrets` first",
            crate::names::shown(name)
        ))
        .into());
    }
    Ok(())
}

fn local_location(store: &SecretStore, service: &str, name: &str) -> String {
    store
        .dir()
        .join(service)
        .join(format!("{name}.json"))
        .display()
        .to_string()
}

/// Checks, before a value is read, that `set` can store `service`'s secret `name` in the
/// environment (declared, and not taken from an existing Kubernetes Secret).
pub fn check_set(scope: &SecretScope, service: &str, name: &str) -> anyhow::Result<()> {
    let environment = resolve(scope)?;
    let m = &environment.manifest;
    check_declared(m, &environment.name, service, name)?;
    if environment.target_kind() == Target::Kubernetes {
        check_not_external(m, &environment.name, service, name)?;
    }
    Ok(())
}

fn check_not_external(m: &Manifest, env: &str, service: &str, name: &str) -> anyhow::Result<()> {
    if let Some(from) = declared(m, service)
        .into_iter()
        .find(|d| d.name() == name)
        .and_then(|d| d.from())
    {
        return Err(UsageError(format!(
            "`{name}` of service `{service}` comes from the existing Secret `{}` (key `{}`) in environment `{env}`; dronectl does not manage its value",
            from.secret, from.key
        ))
        .into());
    }
    Ok(())
}

/// Stores `value` as `service`'s secret `name` in the environment.
pub async fn set(
    scope: &SecretScope,
    service: &str,
    name: &str,
    value: &[u8],
) -> anyhow::Result<SetOutcome> {
    let environment = resolve(scope)?;
    let m = &environment.manifest;
    check_declared(m, &environment.name, service, name)?;
    let next = format!(
        "`dronectl deploy {service} --env {}` rolls it out",
        environment.name
    );
    match environment.target_kind() {
        Target::Docker => {
            let store = SecretStore::open(&m.app.value, &environment.name)?;
            let info = store.set(service, name, value)?;
            Ok(SetOutcome {
                env: environment.name.clone(),
                target: Target::Docker,
                service: service.into(),
                name: name.into(),
                version: info.version,
                set_at: info.set_at,
                location: local_location(&store, service, name),
                next,
            })
        }
        Target::Kubernetes => {
            check_not_external(m, &environment.name, service, name)?;
            let target = KubeTarget::connect(&environment, &scope.connect).await?;
            // The Secret comes before the first deploy: its namespace may not exist yet.
            crate::k8s::ensure_namespace(&target, true, false).await?;
            let info =
                super::kube::set(&target.platform.client, &target.kenv, service, name, value)
                    .await?;
            Ok(SetOutcome {
                env: environment.name.clone(),
                target: Target::Kubernetes,
                service: service.into(),
                name: name.into(),
                version: info.version,
                set_at: info.set_at,
                location: format!(
                    "Secret {}/{} key {name}",
                    target.kenv.namespace,
                    crate::k8s::secret::name(service)
                ),
                next,
            })
        }
    }
}

/// The secrets of `services` (all when empty) in the environment: names, where, when.
pub async fn list(scope: &SecretScope, services: &[String]) -> anyhow::Result<ListOutcome> {
    let environment = resolve(scope)?;
    let m = &environment.manifest;
    for s in services {
        if !m.services.contains_key(s) {
            return Err(UsageError(format!(
                "no service `{}` in dronectl.yaml",
                crate::names::shown(s)
            ))
            .into());
        }
    }
    let wanted = |s: &str| services.is_empty() || services.iter().any(|x| x == s);
    let mut secrets = Vec::new();
    match environment.target_kind() {
        Target::Docker => {
            let store = SecretStore::open(&m.app.value, &environment.name)?;
            let stored = store.list()?;
            for (service, _) in m.services.iter().filter(|(s, _)| wanted(s)) {
                for decl in declared(m, service) {
                    let info = stored
                        .iter()
                        .find(|i| &i.service == service && i.name == decl.name());
                    secrets.push(Listed {
                        service: service.clone(),
                        name: decl.name().into(),
                        declared: true,
                        set: info.is_some(),
                        location: local_location(&store, service, decl.name()),
                        set_at: info.map(|i| i.set_at.clone()),
                    });
                }
            }
            for info in stored.iter().filter(|i| wanted(&i.service)) {
                if !declared(m, &info.service)
                    .iter()
                    .any(|d| d.name() == info.name)
                {
                    secrets.push(Listed {
                        service: info.service.clone(),
                        name: info.name.clone(),
                        declared: false,
                        set: true,
                        location: local_location(&store, &info.service, &info.name),
                        set_at: Some(info.set_at.clone()),
                    });
                }
            }
        }
        Target::Kubernetes => {
            let target = KubeTarget::connect(&environment, &scope.connect).await?;
            for s in super::kube::status(&target.platform.client, &target.kenv, m, services).await?
            {
                secrets.push(Listed {
                    service: s.service,
                    name: s.name,
                    declared: true,
                    set: s.set,
                    location: s.location,
                    set_at: s.set_at,
                });
            }
        }
    }
    Ok(ListOutcome {
        env: environment.name.clone(),
        target: environment.target_kind(),
        secrets,
    })
}

/// Removes `service`'s secret `name` from the environment.
pub async fn remove(
    scope: &SecretScope,
    service: &str,
    name: &str,
) -> anyhow::Result<RemoveOutcome> {
    let environment = resolve(scope)?;
    let m = &environment.manifest;
    let removed = match environment.target_kind() {
        Target::Docker => {
            let store = SecretStore::open(&m.app.value, &environment.name)?;
            // A value of a secret no longer declared can be removed too.
            if store.info(service, name).is_err() || store.info(service, name)?.is_none() {
                check_declared(m, &environment.name, service, name)?;
            }
            store.remove(service, name)?
        }
        Target::Kubernetes => {
            check_declared(m, &environment.name, service, name)?;
            let target = KubeTarget::connect(&environment, &scope.connect).await?;
            super::kube::remove(&target.platform.client, &target.kenv, service, name).await?
        }
    };
    Ok(RemoveOutcome {
        env: environment.name.clone(),
        service: service.into(),
        name: name.into(),
        removed,
    })
}

//! Resolving the environment a command acts on, once per command (uv's settings pattern:
//! flags and the manifest in, one typed value out). Every command that works in an
//! environment asks [`Environment::resolve`] (or [`Environment::resolve_for`] when it needs
//! one target) and then reads only the result: its name, its target with that target's
//! settings, and the effective manifest with the environment's overrides applied.

use std::fmt;

use super::{GatewayRef, IngressSettings, Manifest, Position, Target, MANIFEST_FILE};

/// The environment used when `--env` is not given, and the implicit Docker environment of a
/// manifest that does not define it.
pub const DEFAULT_ENV: &str = "local";

/// An environment, resolved: what every command that acts on an environment works from.
#[derive(Debug, Clone)]
pub struct Environment {
    /// The environment's name (`local`, `staging`).
    pub name: String,
    /// Where it deploys to, with that target's settings.
    pub target: EnvironmentTarget,
    /// Registry images are pushed to.
    pub registry: Option<String>,
    /// The default rollout strategy in this environment.
    pub strategy: Option<String>,
    /// Where the environment is defined in dronectl.yaml (`None`: the implicit `local`).
    pub defined_at: Option<Position>,
    /// The manifest as it applies to this environment.
    pub manifest: Manifest,
}

/// The target of an environment and the settings only that target has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvironmentTarget {
    /// The local Docker engine.
    Docker,
    /// A Kubernetes cluster.
    Kubernetes(KubernetesSettings),
}

/// The settings of a Kubernetes environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// The kubeconfig context the environment pins.
    pub context: Option<String>,
    /// The namespace (`default` when unset).
    pub namespace: Option<String>,
    /// A Gateway API gateway for public routes and weighted canaries.
    pub gateway: Option<GatewayRef>,
    /// The Ingress class and TLS of the public routes (without a gateway).
    pub ingress: IngressSettings,
}

/// An environment that cannot be used: the one wording of every such error (exit 2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvironmentError {
    #[error("unknown environment `{name}` (--env {name}); {}", defined(known))]
    Unknown { name: String, known: Vec<String> },
    #[error("environment `{name}` ({}) has `target: {}`; this command needs an environment with `target: {}`", place(*defined_at), target_name(*target), target_name(*needed))]
    WrongTarget {
        name: String,
        defined_at: Option<Position>,
        target: Target,
        needed: Target,
    },
    #[error("no environment with `target: {}`; {}", target_name(*needed), defined(known))]
    NoneWithTarget { needed: Target, known: Vec<String> },
    #[error("pass --env: several environments have `target: {}` ({})", target_name(*needed), candidates.join(", "))]
    Ambiguous {
        needed: Target,
        candidates: Vec<String>,
    },
}

impl crate::exit::ExitStatus for EnvironmentError {
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

fn defined(known: &[String]) -> String {
    if known.is_empty() {
        format!("{MANIFEST_FILE} defines no environments")
    } else {
        format!("{MANIFEST_FILE} defines: {}", known.join(", "))
    }
}

fn place(at: Option<Position>) -> String {
    match at {
        Some(p) => format!("{MANIFEST_FILE}:{}:{}", p.line, p.column),
        None => format!("implicit: not defined in {MANIFEST_FILE}"),
    }
}

fn target_name(target: Target) -> &'static str {
    match target {
        Target::Docker => "docker",
        Target::Kubernetes => "kubernetes",
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Environment {
    /// The environment `name` (from `--env`), or `local` when none is given. `local` need not
    /// be defined: a manifest without it has an implicit Docker environment of that name.
    pub fn resolve(
        manifest: &Manifest,
        name: Option<&str>,
    ) -> Result<Environment, EnvironmentError> {
        let name = name.unwrap_or(DEFAULT_ENV);
        let Some(entry) = manifest.environments.get(name) else {
            if name == DEFAULT_ENV {
                return Ok(Environment {
                    name: name.to_string(),
                    target: EnvironmentTarget::Docker,
                    registry: None,
                    strategy: None,
                    defined_at: None,
                    manifest: super::effective(manifest, name),
                });
            }
            return Err(EnvironmentError::Unknown {
                name: name.to_string(),
                known: manifest.environments.keys().cloned().collect(),
            });
        };
        let e = &entry.value;
        let target = match e.target {
            Target::Docker => EnvironmentTarget::Docker,
            Target::Kubernetes => EnvironmentTarget::Kubernetes(KubernetesSettings {
                context: e.context.clone(),
                namespace: e.namespace.clone(),
                gateway: e.gateway.clone(),
                ingress: e
                    .ingress
                    .as_ref()
                    .map(|i| i.value.clone())
                    .unwrap_or_default(),
            }),
        };
        Ok(Environment {
            name: name.to_string(),
            target,
            registry: e.registry.clone(),
            strategy: e.strategy.as_ref().map(|s| s.value.clone()),
            defined_at: Position::from_location(entry.referenced),
            manifest: super::effective(manifest, name),
        })
    }

    /// The environment a command that works on one target acts on: `name` when it has that
    /// target; without a name, `local` for Docker and the only Kubernetes environment for
    /// Kubernetes.
    pub fn resolve_for(
        manifest: &Manifest,
        name: Option<&str>,
        needed: Target,
    ) -> Result<Environment, EnvironmentError> {
        let name = match (name, needed) {
            (Some(name), _) => Some(name),
            (None, Target::Docker) => None,
            (None, Target::Kubernetes) => {
                let candidates: Vec<&String> = manifest
                    .environments
                    .iter()
                    .filter(|(_, e)| e.value.target == Target::Kubernetes)
                    .map(|(n, _)| n)
                    .collect();
                match candidates.as_slice() {
                    [one] => Some(one.as_str()),
                    [] => {
                        return Err(EnvironmentError::NoneWithTarget {
                            needed,
                            known: manifest.environments.keys().cloned().collect(),
                        })
                    }
                    _ => {
                        return Err(EnvironmentError::Ambiguous {
                            needed,
                            candidates: candidates.into_iter().cloned().collect(),
                        })
                    }
                }
            }
        };
        let environment = Self::resolve(manifest, name)?;
        let target = environment.target_kind();
        if target != needed {
            return Err(EnvironmentError::WrongTarget {
                name: environment.name,
                defined_at: environment.defined_at,
                target,
                needed,
            });
        }
        Ok(environment)
    }

    /// `docker` or `kubernetes`.
    pub fn target_kind(&self) -> Target {
        match self.target {
            EnvironmentTarget::Docker => Target::Docker,
            EnvironmentTarget::Kubernetes(_) => Target::Kubernetes,
        }
    }

    /// The Kubernetes settings, when the environment targets Kubernetes.
    pub fn kubernetes(&self) -> Option<&KubernetesSettings> {
        match &self.target {
            EnvironmentTarget::Kubernetes(k) => Some(k),
            EnvironmentTarget::Docker => None,
        }
    }
}

/// The effective manifest as data (`dronectl config`): every default filled in and unset
/// (null) fields left out, in manifest order. It parses back as a manifest.
pub fn effective_document(environment: &Environment) -> serde_json::Result<serde_json::Value> {
    fn prune(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.retain(|_, v| !v.is_null());
                map.values_mut().for_each(prune);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(prune),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(&environment.manifest)?;
    prune(&mut value);
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(environments: &str) -> Manifest {
        crate::manifest::parse(
            std::path::Path::new("dronectl.yaml"),
            &format!("app: shop\nservices:\n  api: {{ path: api }}\nenvironments:\n{environments}"),
        )
        .unwrap()
    }

    #[test]
    fn local_is_implicit_and_the_default() {
        let m = manifest("  staging: { target: kubernetes, namespace: shop }\n");
        let e = Environment::resolve(&m, None).unwrap();
        assert_eq!(e.name, "local");
        assert_eq!(e.target, EnvironmentTarget::Docker);
        assert_eq!(e.defined_at, None);
        let e = Environment::resolve_for(&m, Some("staging"), Target::Kubernetes).unwrap();
        assert_eq!(e.kubernetes().unwrap().namespace.as_deref(), Some("shop"));
        assert_eq!(
            e.defined_at,
            Some(Position {
                line: 5,
                column: 12
            })
        );
    }

    #[test]
    fn one_wording_for_an_unknown_environment() {
        let m = manifest("  local: { target: docker }\n  staging: { target: kubernetes }\n");
        for err in [
            Environment::resolve(&m, Some("prod")).unwrap_err(),
            Environment::resolve_for(&m, Some("prod"), Target::Docker).unwrap_err(),
            Environment::resolve_for(&m, Some("prod"), Target::Kubernetes).unwrap_err(),
        ] {
            assert_eq!(
                err.to_string(),
                "unknown environment `prod` (--env prod); dronectl.yaml defines: local, staging"
            );
        }
    }

    #[test]
    fn target_is_checked_with_the_definition_s_position() {
        let m = manifest("  local: { target: docker }\n  staging: { target: kubernetes }\n");
        let err = Environment::resolve_for(&m, Some("staging"), Target::Docker).unwrap_err();
        assert_eq!(err.to_string(), "environment `staging` (dronectl.yaml:6:12) has `target: kubernetes`; this command needs an environment with `target: docker`");
        let err = Environment::resolve_for(&m, Some("local"), Target::Kubernetes).unwrap_err();
        assert!(
            err.to_string()
                .contains("(dronectl.yaml:5:10) has `target: docker`"),
            "{err}"
        );
    }

    #[test]
    fn kubernetes_without_a_name_takes_the_only_one() {
        let m = manifest("  local: { target: docker }\n  staging: { target: kubernetes }\n");
        let e = Environment::resolve_for(&m, None, Target::Kubernetes).unwrap();
        assert_eq!(e.name, "staging");
        let m = manifest("  a: { target: kubernetes }\n  b: { target: kubernetes }\n");
        let err = Environment::resolve_for(&m, None, Target::Kubernetes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pass --env: several environments have `target: kubernetes` (a, b)"
        );
        let m = manifest("  local: { target: docker }\n");
        let err = Environment::resolve_for(&m, None, Target::Kubernetes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no environment with `target: kubernetes`; dronectl.yaml defines: local"
        );
    }
}

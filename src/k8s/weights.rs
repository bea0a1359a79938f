//! Which canary weights a Kubernetes environment without a gateway can only approximate.
//!
//! Without a gateway a canary splits traffic by replica ratio: every pod of both revisions is
//! behind one Service. With few replicas a weight is far from what clients get (2 replicas:
//! 20 % is one pod of two, ≈ 50 %). `validate` says so per environment, service and step,
//! before anything is deployed; the engine says it again when a rollout starts.

use crate::manifest::{
    Diagnostic, Environment, EnvironmentTarget, KubernetesSettings, Manifest, Position, Service,
    Severity, Step, Strategy, StrategyKind,
};

use serde_saphyr::Spanned;

use crate::rollout::replicas;
use crate::rollout::Plan;

/// How far (in percentage points) the replica ratio may be from a weight before it is worth
/// a warning.
pub const TOLERANCE: u32 = 5;

/// The split the replica ratio gives a canary `weight` with `replicas` pods:
/// `(candidate pods, stable pods, candidate's effective percent)`.
/// `max_surge` extra pods may be added to get closer (the strategy's `max_surge`).
pub fn replica_split(replicas: u32, weight: u32, max_surge: u32) -> (u32, u32, u32) {
    let (candidate, stable) = replicas::canary_counts(replicas, weight, max_surge);
    (
        candidate,
        stable,
        replicas::effective_percent(candidate, stable),
    )
}

/// A service's rollout strategy in a Kubernetes environment, as the checks below see it.
struct StrategyUse<'a> {
    env_name: &'a str,
    settings: &'a KubernetesSettings,
    service: &'a str,
    spec: &'a Service,
    /// The strategy's name and definition.
    name: &'a str,
    strategy: &'a Spanned<Strategy>,
}

/// Calls `f` for every service of every Kubernetes environment with the strategy it rolls
/// out with (its own, or the environment's default); services without one are skipped.
fn each_strategy_use(manifest: &Manifest, mut f: impl FnMut(StrategyUse<'_>)) {
    for env_name in manifest.environments.keys() {
        let Ok(env) = Environment::resolve(manifest, Some(env_name)) else {
            continue;
        };
        let EnvironmentTarget::Kubernetes(settings) = &env.target else {
            continue;
        };
        for (service, spec) in &env.manifest.services {
            let strategy = spec
                .value
                .strategy
                .as_ref()
                .map(|s| s.value.clone())
                .or_else(|| env.strategy.clone());
            let Some((name, strategy)) = strategy
                .as_deref()
                .and_then(|n| manifest.strategies.get_key_value(n))
            else {
                continue;
            };
            f(StrategyUse {
                env_name,
                settings,
                service,
                spec: &spec.value,
                name,
                strategy,
            });
        }
    }
}

/// Warnings for every canary weight step that a Kubernetes environment without a gateway can
/// only approximate by more than [`TOLERANCE`] points, at the step's position.
pub fn nominal_weights(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut out = vec![];
    each_strategy_use(manifest, |u| {
        let (env_name, service, spec) = (u.env_name, u.service, u.spec);
        let (name, strategy) = (u.name, u.strategy);
        // With a gateway, public services get HTTPRoute weights: exact. An autoscaled
        // stable keeps its count: the canary is sized to the weight.
        let exact = u.settings.gateway.is_some() && !spec.routes.is_empty();
        if exact || strategy.value.kind != StrategyKind::Canary || spec.autoscale.is_some() {
            return;
        }
        let replicas = spec.replicas;
        let surge = Plan::from_manifest(manifest, name, replicas).map_or(0, |p| p.max_surge);
        for step in &strategy.value.steps {
            let Step::Weight(w) = step.value else {
                continue;
            };
            if w == 0 || w >= 100 {
                continue;
            }
            let (c, s, got) = replica_split(replicas, w, surge);
            if got.abs_diff(w) >= TOLERANCE {
                out.push(Diagnostic {
                    severity: Severity::Warning,
                    field: format!("strategies.{name}.steps"),
                    position: Position::from_location(step.referenced),
                    message: format!(
                        "environment `{env_name}`: `{service}` runs {replicas} replica(s), so weight {w}% of strategy `{name}` gives {got}% by replica ratio ({c}+{s} pods behind one Service); more replicas, the strategy's `max_surge` (extra pods during the canary) or a `gateway:` (HTTPRoute weights) split it closer"
                    ),
                });
            }
        }
    });
    out
}

/// Errors for every `match` or `mirror` step (and warnings for `sticky`) of a strategy a
/// Kubernetes environment uses where no HTTPRoute carries the service's traffic (no
/// `gateway:`, or a service without public routes): only the Gateway API routes by header
/// or mirrors there. At the step's position; `validate` exits 2 on them.
pub fn traffic_controls(manifest: &Manifest) -> Vec<Diagnostic> {
    let mut out = vec![];
    each_strategy_use(manifest, |u| {
        let (env_name, service) = (u.env_name, u.service);
        let (name, strategy) = (u.name, u.strategy);
        let routed = u.settings.gateway.is_some() && !u.spec.routes.is_empty();
        let why = if u.settings.gateway.is_none() {
            format!("environment `{env_name}` names no `gateway:`")
        } else {
            format!("`{service}` has no public `routes`, so no HTTPRoute carries its traffic")
        };
        for (i, step) in strategy.value.steps.iter().enumerate() {
            let what = match step.value {
                Step::Match(_) => "a `match` step",
                Step::Mirror(_) => "a `mirror` step",
                _ => continue,
            };
            if routed {
                continue;
            }
            out.push(Diagnostic {
                severity: Severity::Error,
                field: format!("strategies.{name}.steps[{i}]"),
                position: Position::from_location(step.referenced),
                message: format!(
                    "environment `{env_name}` (kubernetes): {what} of strategy `{name}` needs a Gateway API gateway for `{service}` (HTTPRoute matches and RequestMirror), but {why}"
                ),
            });
        }
        if strategy.value.sticky {
            out.push(Diagnostic {
                severity: Severity::Warning,
                field: format!("strategies.{name}.sticky"),
                position: Position::from_location(strategy.referenced),
                message: format!(
                    "environment `{env_name}` (kubernetes): `sticky` of strategy `{name}` has no effect for `{service}`: only dronectl's router (docker target) sets the session cookie; the Gateway API v1 HTTPRoute has no standard session affinity"
                ),
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_replicas_cannot_give_twenty_percent() {
        assert_eq!(replica_split(2, 20, 0), (1, 1, 50));
        assert_eq!(replica_split(10, 20, 0), (2, 8, 20));
        assert_eq!(replica_split(4, 50, 0), (2, 2, 50));
        // With a surge of 3 the total grows to 5: 4 stable + 1 canary.
        assert_eq!(replica_split(2, 20, 3), (1, 4, 20));
    }
}

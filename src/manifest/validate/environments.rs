//! Environments: names, target-specific settings, registry, context, gateway, namespace,
//! default strategy, the Ingress class and TLS, and each Kubernetes environment's public
//! entry with its overrides applied.

use serde_saphyr::Spanned;

use super::paths::check_host;
use super::strategies::check_strategy_ref;
use super::Findings;
use crate::manifest::{Manifest, Target};
use crate::names;

pub(super) fn check_environments(m: &Manifest, out: &mut Findings) {
    for (name, env) in &m.environments {
        let field = format!("environments.{name}");
        if let Err(e) = names::validate_label(name) {
            out.error(field.clone(), Some(env), e.to_string());
        }
        let e = &env.value;
        if e.target == Target::Docker {
            for (key, set) in [
                ("context", e.context.is_some()),
                ("namespace", e.namespace.is_some()),
                ("gateway", e.gateway.is_some()),
                ("ingress", e.ingress.is_some()),
            ] {
                if set {
                    out.warning(
                        format!("{field}.{key}"),
                        Some(env),
                        format!(
                            "`{key}` only applies to kubernetes environments and is ignored here"
                        ),
                    );
                }
            }
        }
        if let Some(registry) = &e.registry {
            if let Err(why) = crate::manifest::check_registry(registry) {
                out.error(format!("{field}.registry"), Some(env), why);
            }
        }
        if let Some(context) = &e.context {
            out.single_line(format!("{field}.context"), Some(env), context, true);
        }
        if let Some(gateway) = &e.gateway {
            out.single_line(
                format!("{field}.gateway.name"),
                Some(env),
                &gateway.name,
                false,
            );
            if let Some(ns) = &gateway.namespace {
                if let Err(err) = names::validate_label(ns) {
                    out.error(
                        format!("{field}.gateway.namespace"),
                        Some(env),
                        err.to_string(),
                    );
                }
            }
        }
        if let Some(ns) = &e.namespace {
            if let Err(err) = names::validate_label(ns) {
                out.error(format!("{field}.namespace"), Some(env), err.to_string());
            }
        }
        if let Some(strategy) = &e.strategy {
            check_strategy_ref(m, format!("{field}.strategy"), strategy, out);
        }
        if let Some(ingress) = &e.ingress {
            check_ingress(&field, e, ingress, out);
        }
    }
}

fn check_ingress(
    field: &str,
    e: &crate::manifest::EnvironmentSpec,
    ingress: &Spanned<crate::manifest::IngressSettings>,
    out: &mut Findings,
) {
    let i = &ingress.value;
    if let Some(class) = &i.class {
        if let Err(why) = check_object_name("ingress class", class) {
            out.error(format!("{field}.ingress.class"), Some(ingress), why);
        }
    }
    if let Some(tls) = &i.tls {
        if tls.secret.is_none() && tls.issuer.is_none() && tls.cluster_issuer.is_none() {
            out.error(
                format!("{field}.ingress.tls"),
                Some(ingress),
                "TLS needs a certificate: `secret` (an existing kubernetes.io/tls Secret), or `issuer` / `cluster_issuer` (cert-manager fills the Secret)",
            );
        }
        if tls.issuer.is_some() && tls.cluster_issuer.is_some() {
            out.error(
                format!("{field}.ingress.tls"),
                Some(ingress),
                "set `issuer` or `cluster_issuer`, not both",
            );
        }
        for (key, value, what) in [
            ("secret", &tls.secret, "secret"),
            ("issuer", &tls.issuer, "issuer"),
            ("cluster_issuer", &tls.cluster_issuer, "cluster issuer"),
        ] {
            if let Some(v) = value {
                if let Err(why) = check_object_name(what, v) {
                    out.error(format!("{field}.ingress.tls.{key}"), Some(ingress), why);
                }
            }
        }
    }
    if e.target == Target::Kubernetes && e.gateway.is_some() {
        for (key, set, why) in [
            ("class", i.class.is_some(), "the gateway's own class decides which controller serves it"),
            ("tls", i.tls.is_some(), "the gateway's listeners terminate TLS (the Gateway's `spec.listeners[].tls`), not the HTTPRoutes dronectl writes"),
        ] {
            if set {
                out.warning(
                    format!("{field}.ingress.{key}"),
                    Some(ingress),
                    format!("ignored in an environment with a gateway: {why}"),
                );
            }
        }
    }
}

/// Each Kubernetes environment's public entry with its overrides applied: TLS needs every
/// public service to name its hosts; publishing routes through an Ingress without TLS is
/// plain HTTP (a warning). A gateway's listeners own TLS, so gateway environments are not
/// judged here.
pub(super) fn check_public_entry(m: &Manifest, out: &mut Findings) {
    for (name, env) in &m.environments {
        let e = &env.value;
        if e.target != Target::Kubernetes || e.gateway.is_some() {
            continue;
        }
        let effective = crate::manifest::effective(m, name);
        let public: Vec<(&String, &crate::manifest::Service)> = effective
            .services
            .iter()
            .filter(|(_, s)| !s.value.routes.is_empty())
            .map(|(n, s)| (n, &s.value))
            .collect();
        let tls = e.ingress.as_ref().filter(|i| i.value.tls.is_some());
        match tls {
            Some(ingress) => {
                for (service, s) in &public {
                    if s.hosts.is_empty() {
                        out.error(
                            format!("environments.{name}.ingress.tls"),
                            Some(ingress),
                            format!("TLS needs host names, and service `{service}` publishes routes without `hosts`: set `services.{service}.hosts` or `environments.{name}.services.{service}.hosts`"),
                        );
                    }
                }
            }
            None if !public.is_empty() => {
                let names: Vec<&str> = public.iter().map(|(n, _)| n.as_str()).collect();
                out.warning(
                    format!("environments.{name}"),
                    Some(env),
                    format!(
                        "publishes the routes of {} over plain HTTP: set `ingress.tls` (a Secret, or a cert-manager issuer) and the services' `hosts`",
                        names.join(", ")
                    ),
                );
            }
            None => {}
        }
    }
}

/// A Kubernetes object name (DNS-1123 subdomain): a Secret, an IngressClass, an issuer.
fn check_object_name(what: &str, name: &str) -> Result<(), String> {
    if name.starts_with("*.") || check_host(name).is_err() {
        return Err(format!(
            "{what} `{name}` is not a Kubernetes object name: lowercase letters, digits, `-` and `.`, at most 253 characters"
        ));
    }
    Ok(())
}

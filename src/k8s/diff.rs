//! `diff`: what applying would change, object by object (server-side dry run).

use std::collections::BTreeMap;

use kube::api::{Api, DynamicObject};
use serde::Serialize;

use super::apply::secret_versions;
use super::*;

/// One object's difference between the cluster and what dronectl would apply.
#[derive(Debug, Clone, Serialize)]
pub struct ObjectDiff {
    pub kind: String,
    pub name: String,
    /// `create`, `update`, `unchanged`, or `error` (the server refused the dry run).
    pub change: String,
    /// A unified diff of the YAML (live → after apply).
    pub diff: String,
}

fn clean(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
            "selfLink",
        ] {
            meta.remove(key);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

/// Compares the rendered objects with the live ones: each is sent as a server-side
/// dry-run apply, and the result is diffed against what the cluster holds now.
pub async fn diff(
    target: &KubeTarget,
    services: &[String],
    images: &Images,
) -> anyhow::Result<Vec<ObjectDiff>> {
    let m = &*target.manifest;
    let mut revisions = images.revisions(&target.kenv, m, services)?;
    secret_versions(target, &mut revisions, services, false).await?;
    let mut objects = render::render_app(
        &target.kenv,
        m,
        services,
        &BTreeMap::new(),
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    );
    for (service, revision) in &revisions {
        // Compare with the Deployment that serves the service now (whatever its name).
        use crate::rollout::StateStore as _;
        let stable = target
            .store
            .load_record(service)
            .await?
            .stable
            .map(|s| s.id);
        let name = target
            .platform
            .serving_deployment(service, stable.as_deref())
            .await?;
        objects.extend(render::revision_objects(
            &target.kenv,
            m,
            service,
            &name,
            revision,
            revision.replicas,
            RollingParams {
                max_surge: 1,
                max_unavailable: 0,
            },
        ));
    }
    ensure_namespace(target, false, true).await?;
    let missing = missing_apis(&target.platform.client, &target.kenv.env, &objects).await?;
    let mut out = vec![];
    for mut o in objects {
        let ar = o.api_resource();
        let refused = |diff: String| ObjectDiff {
            kind: o.kind().into(),
            name: o.name().into(),
            change: "error".into(),
            diff,
        };
        if let Some(m) = missing
            .iter()
            .find(|m| m.kind == ar.kind && m.api_version == ar.api_version)
        {
            out.push(refused(format!("{}/{}: {m}\n", o.kind(), o.name())));
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(target.platform.client.clone(), &target.kenv.namespace, &ar);
        let live = match api.get_opt(o.name()).await {
            Ok(l) => l.map(|l| clean(serde_json::to_value(l).unwrap_or_default())),
            Err(e) => {
                out.push(refused(format!(
                    "{}/{}: cannot read the live object: {}\n",
                    o.kind(),
                    o.name(),
                    describe_error(&e)
                )));
                continue;
            }
        };
        // Traffic (the Service's revision selector, the route's weights) belongs to the
        // rollout, not to the rendered objects: keep what is live.
        if let Some(l) = &live {
            match &mut o {
                Object::Service(svc) => {
                    if let (Some(rev), Some(sel)) = (
                        l.pointer("/spec/selector/dronectl.io~1revision")
                            .and_then(|v| v.as_str()),
                        svc.spec.as_mut().and_then(|s| s.selector.as_mut()),
                    ) {
                        sel.insert(render::REVISION.to_string(), rev.to_string());
                    }
                }
                Object::HttpRoute(route) => {
                    if let Some(backends) = l
                        .pointer("/spec/rules/0/backendRefs")
                        .and_then(|b| serde_json::from_value(b.clone()).ok())
                    {
                        if let Some(rule) = route.spec.rules.first_mut() {
                            rule.backend_refs = backends;
                        }
                    }
                }
                _ => {}
            }
        }
        let after = match target.platform.apply(&o, true, true).await {
            Ok(a) => clean(serde_json::to_value(a)?),
            Err(e) => {
                // The server refused the object: say so, go on with the others.
                let diff = format!(
                    "{}/{}: the server refused the dry-run apply: {}\n",
                    o.kind(),
                    o.name(),
                    describe_chain(&e)
                );
                out.push(ObjectDiff {
                    kind: o.kind().into(),
                    name: o.name().into(),
                    change: "error".into(),
                    diff,
                });
                continue;
            }
        };
        let before_text = match &live {
            Some(l) => serde_saphyr::to_string(l)?,
            None => String::new(),
        };
        let after_text = serde_saphyr::to_string(&after)?;
        let change = match &live {
            None => "create",
            Some(_) if before_text == after_text => "unchanged",
            Some(_) => "update",
        };
        let title = format!("{}/{}", o.kind(), o.name());
        let diff = if change == "unchanged" {
            String::new()
        } else {
            similar::TextDiff::from_lines(&before_text, &after_text)
                .unified_diff()
                .context_radius(3)
                .header(&format!("live {title}"), &format!("rendered {title}"))
                .to_string()
        };
        out.push(ObjectDiff {
            kind: o.kind().into(),
            name: o.name().into(),
            change: change.into(),
            diff,
        });
    }
    Ok(out)
}

//! Deploying the whole app: its objects in dependency order, infrastructure first,
//! services through the rollout engine, and the check that the cluster serves every API
//! the objects need.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DynamicObject};
use kube::Client;
use serde::Serialize;

use crate::events::{Event, Reporter};
use crate::exit::UsageError;
use crate::manifest::{Manifest, StrategyKind};
use crate::rollout::ops::{self, DriveReport};
use crate::rollout::replicas::Bounds;
use crate::rollout::{Outcome, Plan, Revision, Timing};

use super::*;

/// Which image each service runs: from a build artifacts file, or one tag for all.
#[derive(Debug, Clone, Default)]
pub struct Images {
    pub artifacts: Vec<crate::build::artifacts::Artifact>,
    pub tag: Option<String>,
    /// Explicit `(image, version)` per service (`--image`).
    pub overrides: BTreeMap<String, (String, String)>,
}

impl Images {
    /// `(image, version)` of `service`: `<registry>/<app>/<service>:<tag>`, pinned to the
    /// digest when the artifacts file says the image was pushed.
    pub fn resolve(&self, kenv: &KubeEnv, service: &str) -> anyhow::Result<(String, String)> {
        if let Some(o) = self.overrides.get(service) {
            return Ok(o.clone());
        }
        if let Some(a) = self.artifacts.iter().find(|a| a.service == service) {
            let digest = (a.pushed && !a.digest.is_empty()).then_some(a.digest.as_str());
            return Ok((kenv.image(service, &a.tag, digest), a.tag.clone()));
        }
        match &self.tag {
            Some(tag) => Ok((kenv.image(service, tag, None), tag.clone())),
            None => Err(UsageError(format!(
                "no image for `{service}`: pass --artifacts <build.json> (from `dronectl build --push --artifacts`) or --tag <tag>"
            ))
            .into()),
        }
    }

    /// The revisions of `services` (every service when empty).
    pub fn revisions(
        &self,
        kenv: &KubeEnv,
        manifest: &Manifest,
        services: &[String],
    ) -> anyhow::Result<BTreeMap<String, Revision>> {
        let mut out = BTreeMap::new();
        for (name, s) in &manifest.services {
            if !services.is_empty() && !services.contains(name) {
                continue;
            }
            let (image, version) = self.resolve(kenv, name)?;
            out.insert(
                name.clone(),
                Revision::new(
                    &image,
                    &version,
                    s.value.replicas,
                    render::service_env(manifest, name),
                )
                .autoscaled(Bounds::of(s.value.autoscale.as_ref())),
            );
        }
        Ok(out)
    }
}

/// `--dry-run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DryRun {
    /// Render only; nothing is sent.
    Client,
    /// Send every object as a server-side dry-run apply; nothing is persisted.
    Server,
}

/// Options of a Kubernetes deploy.
#[derive(Debug, Clone)]
pub struct DeployOptions {
    /// The services to deploy; empty: every service plus the infrastructure.
    pub services: Vec<String>,
    pub images: Images,
    /// `--canary` / `--blue-green` / `--rolling`.
    pub kind: Option<StrategyKind>,
    /// `--strategy NAME`.
    pub strategy: Option<String>,
    pub timing: Timing,
    pub timeout: Option<Duration>,
    pub dry_run: Option<DryRun>,
    /// Create the namespace when it does not exist (`--create-namespace`).
    pub create_namespace: bool,
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub env: String,
    pub namespace: String,
    pub context: String,
    pub infrastructure: Vec<String>,
    pub services: Vec<DriveReport>,
    /// Dependents not deployed because a dependency did not complete.
    pub skipped: Vec<Skipped>,
    /// With `--dry-run`: the objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<serde_json::Value>,
    #[serde(skip)]
    pub code: crate::exit::ExitCode,
}

/// A service a deploy left out because a dependency did not complete.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub service: String,
    /// The dependency that stopped it (the first one that did not complete, also when the
    /// service depends on it through others).
    pub dependency: String,
    /// That dependency's outcome: `paused`, `failed`, `aborted`, `timed_out`.
    pub outcome: Outcome,
    /// What happened and how to go on.
    pub message: String,
}

impl Skipped {
    fn new(env: &str, service: &str, dependency: &str, outcome: Outcome) -> Skipped {
        let message = match outcome {
            Outcome::Paused => format!(
                "{service} not deployed: its dependency {dependency} is paused, waiting for promotion; continue with `dronectl rollout promote {dependency} --env {env}` (or `rollout abort`), then deploy {service} again"
            ),
            Outcome::TimedOut => format!(
                "{service} not deployed: its dependency {dependency} timed out; `dronectl rollout status {dependency} --env {env}` shows where it stopped, `rollout resume` finishes it"
            ),
            other => format!(
                "{service} not deployed: its dependency {dependency} {other}; see `dronectl rollout status {dependency} --env {env}`"
            ),
        };
        Skipped {
            service: service.into(),
            dependency: dependency.into(),
            outcome,
            message,
        }
    }
}

/// Services grouped so that each group only depends on earlier ones (Kahn's algorithm,
/// linear in services and dependencies: a valid manifest may hold a 25,000-service chain).
/// Each group is in manifest order; services left over by a cycle (the manifest validator
/// refuses cycles) form a last group.
pub fn dependency_levels(manifest: &Manifest, services: &[String]) -> Vec<Vec<String>> {
    let wanted: BTreeSet<&str> = services.iter().map(String::as_str).collect();
    // Selected services by manifest index.
    let index: BTreeMap<&str, usize> = manifest
        .services
        .keys()
        .enumerate()
        .filter(|(_, s)| wanted.is_empty() || wanted.contains(s.as_str()))
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let mut waiting_on: BTreeMap<usize, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&name, &i) in &index {
        let deps: BTreeSet<usize> = manifest.services[name]
            .value
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.value.as_str()).copied())
            .collect();
        waiting_on.insert(i, deps.len());
        for d in deps {
            dependents.entry(d).or_default().push(i);
        }
    }
    let name_of = |i: usize| {
        manifest
            .services
            .get_index(i)
            .map(|(n, _)| n.clone())
            .unwrap_or_default()
    };
    let mut levels = vec![];
    let mut level: Vec<usize> = waiting_on
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(i, _)| *i)
        .collect();
    while !level.is_empty() {
        let mut next = vec![];
        for i in &level {
            waiting_on.remove(i);
            for d in dependents.get(i).into_iter().flatten() {
                if let Some(n) = waiting_on.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        next.push(*d);
                    }
                }
            }
        }
        levels.push(level.into_iter().map(name_of).collect());
        next.sort_unstable();
        level = next;
    }
    if !waiting_on.is_empty() {
        let mut rest: Vec<String> = waiting_on.into_keys().map(name_of).collect();
        rest.sort();
        levels.push(rest);
    }
    levels
}

/// Deploys services (and, for a whole-app deploy, the infrastructure first) in dependency
/// order, services of one level in parallel, each through the rollout engine.
pub async fn deploy(
    target: &KubeTarget,
    opts: &DeployOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<DeployOutcome> {
    let m = &*target.manifest;
    for s in &opts.services {
        if !m.services.contains_key(s) {
            return Err(UsageError(format!("no service `{s}` in dronectl.yaml")).into());
        }
    }
    let mut revisions = opts.images.revisions(&target.kenv, m, &opts.services)?;
    if opts.dry_run != Some(DryRun::Client) {
        // Every declared secret must be in the cluster before anything is applied; their
        // versions make the revisions (a new value rolls the service out).
        secret_versions(target, &mut revisions, &opts.services, true).await?;
    }
    let whole = opts.services.is_empty();
    let mut outcome = DeployOutcome {
        env: target.kenv.env.clone(),
        namespace: target.kenv.namespace.clone(),
        context: target.context.clone(),
        infrastructure: vec![],
        services: vec![],
        skipped: vec![],
        objects: vec![],
        code: crate::exit::ExitCode::Success,
    };
    let objects = render::render_app(
        &target.kenv,
        m,
        &opts.services,
        &revisions,
        RollingParams {
            max_surge: 1,
            max_unavailable: 0,
        },
    );
    if opts.dry_run != Some(DryRun::Client) {
        if ensure_namespace(target, opts.create_namespace, opts.dry_run.is_some()).await? {
            reporter.event(Event::Started {
                action: "Created".into(),
                subject: format!("namespace {}", target.kenv.namespace),
            });
        }
        require_apis(target, &objects).await?;
    }
    if let Some(dry) = opts.dry_run {
        // A deploy creates a service's Service and HTTPRoute but never re-applies them: their
        // selector and weights belong to the rollout. A server-side dry run shows what a deploy
        // would leave there: the live object.
        let rollout_owned: BTreeSet<(String, String)> = revisions
            .keys()
            .flat_map(|s| render::service_objects(&target.kenv, m, s))
            .filter(|o| matches!(o, Object::Service(_) | Object::HttpRoute(_)))
            .map(|o| (o.kind().to_string(), o.name().to_string()))
            .collect();
        for o in &objects {
            let live = if dry == DryRun::Server
                && rollout_owned.contains(&(o.kind().to_string(), o.name().to_string()))
            {
                live_object(target, o).await?
            } else {
                None
            };
            let (value, how) = match (dry, live) {
                (DryRun::Client, _) => (o.to_value(), "dry run, client"),
                (DryRun::Server, Some(live)) => (
                    live,
                    "exists, left as it is: traffic belongs to the rollout",
                ),
                (DryRun::Server, None) => (
                    serde_json::to_value(
                        target
                            .platform
                            .apply(o, target.platform.force_conflicts, true)
                            .await?,
                    )?,
                    "dry run, server",
                ),
            };
            reporter.event(Event::Note {
                message: format!("{} {} ({how})", o.kind(), o.name()),
                verbose: false,
            });
            outcome.objects.push(value);
        }
        return Ok(outcome);
    }
    if whole {
        target
            .platform
            .apply(
                &Object::NetworkPolicy(Box::new(render::default_deny(&target.kenv))),
                target.platform.force_conflicts,
                false,
            )
            .await?;
        for name in m.infrastructure.keys() {
            reporter.event(Event::Started {
                action: "Applying".into(),
                subject: format!("infrastructure {name}"),
            });
            for o in render::infrastructure_objects(&target.kenv, m, name) {
                target
                    .platform
                    .apply(&o, target.platform.force_conflicts, false)
                    .await?;
            }
        }
        for name in m.infrastructure.keys() {
            wait_statefulset(target, name, opts.timing.progress_deadline).await?;
            outcome.infrastructure.push(name.clone());
        }
    }
    // Service → (the dependency that did not complete, its outcome), for it and its dependents.
    let mut stopped: BTreeMap<String, (String, Outcome)> = BTreeMap::new();
    for level in dependency_levels(m, &opts.services) {
        let mut run = vec![];
        for s in level {
            let cause = m.services[&s]
                .value
                .depends_on
                .iter()
                .find_map(|d| stopped.get(&d.value).cloned());
            match cause {
                Some((dependency, result)) => {
                    outcome
                        .skipped
                        .push(Skipped::new(&target.kenv.env, &s, &dependency, result));
                    stopped.insert(s, (dependency, result));
                }
                None => run.push(s),
            }
        }
        let reports = futures_util::future::join_all(run.iter().map(|service| async {
            let revision = revisions[service].clone();
            let result = match Plan::select(
                m,
                service,
                target.kenv.strategy.as_deref(),
                opts.strategy.as_deref(),
                opts.kind,
                revision.replicas,
            ) {
                Ok(plan) => deploy_service(target, service, revision, plan, opts, reporter).await,
                Err(e) => Err(e.into()),
            };
            (service.clone(), result)
        }))
        .await;
        for (service, result) in reports {
            let report = result?;
            let code = report.exit_code();
            if code != crate::exit::ExitCode::Success {
                stopped.insert(service.clone(), (service.clone(), report.outcome));
                if outcome.code == crate::exit::ExitCode::Success {
                    outcome.code = code;
                }
            }
            outcome.services.push(report);
        }
    }
    Ok(outcome)
}

/// Gives each revision the versions of its secrets as the cluster has them. `strict`: a
/// declared secret without a value is an error (exit 2); otherwise the revisions are left
/// without versions (`diff` compares what it can).
pub(super) async fn secret_versions(
    target: &KubeTarget,
    revisions: &mut BTreeMap<String, Revision>,
    services: &[String],
    strict: bool,
) -> anyhow::Result<()> {
    let m = &*target.manifest;
    if !m.services.values().any(|s| !s.value.secrets.is_empty()) {
        return Ok(());
    }
    let client = &target.platform.client;
    let versions = match crate::secrets::kube::check(client, &target.kenv, m, services).await {
        Ok(v) => v,
        Err(e) if !strict && e.is::<crate::secrets::MissingSecrets>() => return Ok(()),
        Err(e) => return Err(e),
    };
    for (service, revision) in revisions.iter_mut() {
        if let Some(v) = versions.get(service).filter(|v| !v.is_empty()) {
            *revision = revision.clone().with_secrets(v.clone());
        }
    }
    Ok(())
}

/// The live object of `o`'s kind and name, if any.
async fn live_object(target: &KubeTarget, o: &Object) -> anyhow::Result<Option<serde_json::Value>> {
    let ar = o.api_resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(target.platform.client.clone(), &target.kenv.namespace, &ar);
    let live = api.get_opt(o.name()).await.map_err(|e| {
        anyhow::Error::new(e).context(format!("cannot read {} {}", o.kind(), o.name()))
    })?;
    Ok(live.map(|l| serde_json::to_value(l).unwrap_or_default()))
}

/// Applies a service's own objects and rolls `revision` out with `plan` (the caller chose
/// it, [`Plan::select`]) through the engine.
pub async fn deploy_service(
    target: &KubeTarget,
    service: &str,
    revision: Revision,
    plan: Plan,
    opts: &DeployOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<DriveReport> {
    target.platform.prepare(service).await?;
    let engine = target.engine(reporter, opts.timing);
    ops::deploy(&engine, service, revision, plan, opts.timeout).await
}

async fn wait_statefulset(
    target: &KubeTarget,
    name: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let api: Api<StatefulSet> =
        Api::namespaced(target.platform.client.clone(), &target.kenv.namespace);
    wait::statefulset(&api, "infrastructure", name, deadline).await
}

/// An API (group/version and kind) the objects need that the cluster does not serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingApi {
    pub api_version: String,
    pub kind: String,
    /// The objects of that kind dronectl would apply.
    pub objects: Vec<String>,
    /// What to install, or which setting to change.
    pub hint: String,
}

impl std::fmt::Display for MissingApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the cluster does not serve {} ({}), needed for {}: {}",
            self.kind,
            self.api_version,
            self.objects.join(", "),
            self.hint
        )
    }
}

fn missing_api_hint(env: &str, api_version: &str) -> String {
    if api_version.starts_with("gateway.networking.k8s.io/") {
        format!(
            "install the Gateway API CRDs (`kubectl apply -f https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.3.0/standard-install.yaml`, see https://gateway-api.sigs.k8s.io/guides/) and a gateway controller, or remove `gateway:` from environment `{env}` in dronectl.yaml (canaries then split traffic by replica ratio and public routes get an Ingress)"
        )
    } else {
        format!("this Kubernetes version does not serve {api_version}; dronectl needs Kubernetes 1.25 or newer")
    }
}

/// Asks the server's discovery which of the kinds of `objects` (and of dronectl's own state:
/// ConfigMaps, Leases) it does not serve. A cluster without the Gateway API, for example,
/// answers `404 page not found` in plain text for HTTPRoutes, which says nothing about what
/// is missing; this names it before anything is applied.
pub async fn missing_apis(
    client: &Client,
    env: &str,
    objects: &[Object],
) -> anyhow::Result<Vec<MissingApi>> {
    let mut wanted: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for (av, kind) in [("v1", "ConfigMap"), ("coordination.k8s.io/v1", "Lease")] {
        wanted.entry((av.into(), kind.into())).or_default();
    }
    for o in objects {
        let ar = o.api_resource();
        wanted
            .entry((ar.api_version.clone(), ar.kind.clone()))
            .or_default()
            .push(format!("{} {}", o.kind(), o.name()));
    }
    let mut served: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    let mut missing = vec![];
    for ((api_version, kind), names) in wanted {
        if !served.contains_key(&api_version) {
            let list = if api_version == "v1" {
                client.list_core_api_resources("v1").await
            } else {
                client.list_api_group_resources(&api_version).await
            };
            let kinds = match list {
                Ok(l) => Some(
                    l.resources
                        .into_iter()
                        .filter(|r| !r.name.contains('/'))
                        .map(|r| r.kind)
                        .collect(),
                ),
                Err(kube::Error::Api(s)) if s.code == 404 => None,
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot read the API discovery of {api_version}")))
                }
            };
            served.insert(api_version.clone(), kinds);
        }
        if !served[&api_version]
            .as_ref()
            .is_some_and(|k| k.contains(&kind))
        {
            missing.push(MissingApi {
                hint: missing_api_hint(env, &api_version),
                api_version,
                kind,
                objects: names,
            });
        }
    }
    Ok(missing)
}

/// Refuses to go on when the cluster lacks an API the objects need (exit 2: a setting to
/// change or something to install).
async fn require_apis(target: &KubeTarget, objects: &[Object]) -> anyhow::Result<()> {
    let missing = missing_apis(&target.platform.client, &target.kenv.env, objects).await?;
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing.iter().map(|m| format!("  {m}")).collect();
    Err(UsageError(format!(
        "environment `{}` needs APIs that the cluster (context `{}`) does not serve; nothing was applied:\n{}",
        target.kenv.env,
        target.context,
        lines.join("\n")
    ))
    .into())
}

#[cfg(test)]
mod tests {
    use super::dependency_levels;

    fn manifest(services: &str) -> crate::manifest::Manifest {
        let text = format!("app: a\nservices:\n{services}");
        crate::manifest::parse(std::path::Path::new("dronectl.yaml"), &text).unwrap()
    }

    #[test]
    fn levels_follow_dependencies_in_manifest_order() {
        let m = manifest(
            "  web: { path: web, depends_on: [api, auth] }\n  api: { path: api, depends_on: [db, auth, auth] }\n  auth: { path: auth }\n  db: { path: db }\n  cron: { path: cron, depends_on: [db] }\n",
        );
        assert_eq!(
            dependency_levels(&m, &[]),
            vec![vec!["auth", "db"], vec!["api", "cron"], vec!["web"]]
        );
        // Unselected dependencies do not hold a service back.
        let selected = ["web".to_string(), "api".to_string()];
        assert_eq!(
            dependency_levels(&m, &selected),
            vec![vec!["api"], vec!["web"]]
        );
    }

    #[test]
    fn services_in_a_cycle_form_a_last_level() {
        let m = manifest(
            "  b: { path: b, depends_on: [a] }\n  a: { path: a, depends_on: [b] }\n  c: { path: c }\n",
        );
        assert_eq!(dependency_levels(&m, &[]), vec![vec!["c"], vec!["a", "b"]]);
    }

    #[test]
    fn a_25000_service_chain_is_ordered_in_linear_time() {
        let n = 25_000;
        let services: String = (0..n)
            .map(|i| {
                let next = if i + 1 < n {
                    format!(", depends_on: [s{}]", i + 1)
                } else {
                    String::new()
                };
                format!("  s{i}: {{ path: s{i}{next} }}\n")
            })
            .collect();
        let m = manifest(&services);
        let started = std::time::Instant::now();
        let levels = dependency_levels(&m, &[]);
        // The quadratic version took minutes for 1,000 selected services of this chain.
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(levels.len(), n);
        assert_eq!(levels[0], vec![format!("s{}", n - 1)]);
        assert_eq!(levels[n - 1], vec!["s0".to_string()]);
    }
}

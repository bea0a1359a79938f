//! The Kubernetes target: environments with `target: kubernetes`.
//!
//! * [`render`]: the app's objects as typed k8s-openapi structs (what `render` prints and
//!   `deploy` applies).
//! * [`platform`]: the rollout engine's platform (Deployments, Services, HTTPRoutes).
//! * [`store`]: rollout state in ConfigMaps and a Lease, so any machine can steer a rollout.
//! * this module: connecting (kubeconfig resolution as kubectl does it), deploying the whole
//!   app in dependency order, and `diff`.

mod cache;
pub mod hpa;
pub mod platform;
pub mod render;
pub mod secret;
pub mod store;
pub mod wait;
pub mod weights;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;

use crate::events::{Event, Reporter};
use crate::exit::UsageError;
use crate::manifest::{Environment, Manifest, StrategyKind};
use crate::rollout::ops::{self, DriveReport};
use crate::rollout::{Engine, Outcome, Plan, Revision, Timing};
pub use platform::KubePlatform;

use crate::rollout::replicas::Bounds;
pub use render::{KubeEnv, Object, RollingParams};
pub use store::KubeStore;

/// Errors of the Kubernetes target a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("conflict applying {kind} {name}: {message}\n  another field manager owns these fields; rerun with --force-conflicts to take them over")]
    Conflict {
        kind: String,
        name: String,
        message: String,
    },
    #[error("cannot load the Kubernetes configuration: {0}")]
    Config(String),
}

impl crate::exit::ExitStatus for KubeError {
    /// A kubeconfig that cannot be loaded is a configuration error (2); a conflict a
    /// failure (1).
    fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            KubeError::Config(_) => crate::exit::ExitCode::Usage,
            KubeError::Conflict { .. } => crate::exit::ExitCode::Failed,
        }
    }
}

/// How to reach the cluster.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file (else `KUBECONFIG`, else `~/.kube/config`, else in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// A kubeconfig context (else the environment's pinned one, else the current one).
    pub context: Option<String>,
    /// A namespace (else the environment's, else `default`).
    pub namespace: Option<String>,
    /// Allow a context other than the one the environment pins (`--yes`).
    pub allow_other_context: bool,
}

/// Loads the client configuration the way kubectl does, and checks the context against
/// the one the environment pins. Returns the client and the context name.
pub async fn client_for(
    opts: &ConnectOptions,
    env: &str,
    pinned: Option<&str>,
) -> anyhow::Result<(Client, String)> {
    let kubeconfig = match &opts.kubeconfig {
        Some(path) => Some(
            Kubeconfig::read_from(path)
                .map_err(|e| KubeError::Config(format!("{}: {e}", path.display())))?,
        ),
        None => match Kubeconfig::from_env()
            .map_err(|e| KubeError::Config(format!("KUBECONFIG: {e}")))?
        {
            Some(k) => Some(k),
            None => std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".kube/config"))
                .filter(|p| p.exists())
                .map(|p| {
                    Kubeconfig::read_from(&p)
                        .map_err(|e| KubeError::Config(format!("{}: {e}", p.display())))
                })
                .transpose()?,
        },
    };
    let (config, context) = match kubeconfig {
        Some(kc) => {
            let context = opts
                .context
                .clone()
                .or_else(|| {
                    pinned
                        .filter(|p| kc.contexts.iter().any(|c| c.name == *p))
                        .map(str::to_string)
                })
                .or_else(|| kc.current_context.clone())
                .unwrap_or_default();
            check_context(env, pinned, &context, opts.allow_other_context)?;
            let options = KubeConfigOptions {
                context: Some(context.clone()),
                ..Default::default()
            };
            let config = Config::from_custom_kubeconfig(kc, &options)
                .await
                .map_err(|e| KubeError::Config(e.to_string()))?;
            (config, context)
        }
        None => {
            // No kubeconfig at all: that is the problem to report, not the context (which
            // only a kubeconfig has).
            let config = Config::incluster().map_err(|e| {
                let wanted = pinned.map_or(String::new(), |p| {
                    format!("; environment `{env}` expects a kubeconfig with the context `{p}`")
                });
                KubeError::Config(format!(
                    "no kubeconfig found (looked at --kubeconfig / DRONECTL_KUBECONFIG, $KUBECONFIG, ~/.kube/config) and not running inside a cluster ({e}){wanted}"
                ))
            })?;
            let context = "in-cluster".to_string();
            check_context(env, pinned, &context, opts.allow_other_context)?;
            (config, context)
        }
    };
    let mut config = config;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&user_agent()).map_err(|e| KubeError::Config(e.to_string()))?,
    ));
    let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
    Ok((client, context))
}

/// `dronectl/<version> (<os>/<arch>)`, as kubectl sends `kubectl/<version> (<os>/<arch>) …`:
/// audit logs name the client, and the API server takes the part before `/` as the default
/// field manager of every non-apply write.
pub fn user_agent() -> String {
    format!(
        "dronectl/{} ({}/{})",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::OS,
        std::env::consts::ARCH
    )
}

fn check_context(
    env: &str,
    pinned: Option<&str>,
    context: &str,
    allow: bool,
) -> anyhow::Result<()> {
    match pinned {
        Some(p) if p != context && !allow => Err(UsageError(format!(
            "environment `{env}` pins the kubeconfig context `{p}`, but the context in use is `{context}`; pass --yes to use `{context}` anyway"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Everything needed to act on the app in a Kubernetes environment.
pub struct KubeTarget {
    pub manifest: Arc<Manifest>,
    pub kenv: KubeEnv,
    pub platform: KubePlatform,
    pub store: KubeStore,
    pub context: String,
}

impl KubeTarget {
    /// Connects to a resolved Kubernetes environment's cluster; the target acts on the
    /// environment's effective manifest.
    pub async fn connect(
        environment: &Environment,
        opts: &ConnectOptions,
    ) -> anyhow::Result<KubeTarget> {
        let manifest = environment.manifest.clone();
        let kenv = KubeEnv::new(environment, opts.namespace.as_deref());
        let pinned = environment.kubernetes().and_then(|k| k.context.clone());
        let env = environment.name.as_str();
        // A kubeconfig that cannot be loaded is a configuration error (exit 2).
        let (client, context) = client_for(opts, env, pinned.as_deref()).await?;
        let mut target = Self::with_client(manifest, kenv, client);
        target.context = context;
        Ok(target)
    }

    /// A target over an existing client (tests, embedding).
    pub fn with_client(manifest: Manifest, kenv: KubeEnv, client: Client) -> KubeTarget {
        let manifest = Arc::new(manifest);
        let store = KubeStore::new(client.clone(), &kenv.namespace, &kenv.app);
        let platform = KubePlatform::new(client, kenv.clone(), manifest.clone());
        KubeTarget {
            manifest,
            kenv,
            platform,
            store,
            context: String::new(),
        }
    }

    pub fn engine<'a>(
        &'a self,
        reporter: &'a dyn Reporter,
        timing: Timing,
    ) -> Engine<'a, KubePlatform, KubeStore> {
        let mut engine = Engine::new(&self.platform, &self.store, reporter);
        engine.timing = timing;
        engine
    }

    /// The revision of `service` running `image`, shown as `version`.
    pub fn revision(&self, service: &str, image: &str, version: &str) -> anyhow::Result<Revision> {
        let s = self
            .manifest
            .services
            .get(service)
            .ok_or_else(|| UsageError(format!("no service `{service}` in dronectl.yaml")))?;
        Ok(Revision::new(
            image,
            version,
            s.value.replicas,
            render::service_env(&self.manifest, service),
        )
        .autoscaled(Bounds::of(s.value.autoscale.as_ref())))
    }
}

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
            let result = deploy_service(target, service, revision, opts, reporter).await;
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
async fn secret_versions(
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

/// Applies a service's own objects and rolls `revision` out through the engine.
pub async fn deploy_service(
    target: &KubeTarget,
    service: &str,
    revision: Revision,
    opts: &DeployOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<DriveReport> {
    let m = &*target.manifest;
    target.platform.prepare(service).await?;
    let plan = match &opts.strategy {
        Some(name) => Plan::from_manifest(m, name, revision.replicas)?,
        None => Plan::choose(
            m,
            service,
            target.kenv.strategy.as_deref(),
            opts.kind,
            revision.replicas,
        )?,
    };
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

/// An API error as a person reads it: the server's message, its reason and HTTP code, and the
/// object it names — instead of kube's `ApiError: … (Status { … })` dump of the whole struct.
pub fn describe_status(s: &kube::core::Status) -> String {
    // kube-rs's own reason when the body was not a Status (e.g. the mux's plain-text 404).
    if s.reason == "Failed to parse error data" {
        let what = if s.code == 404 {
            ": this API is not served by the cluster (not installed?)"
        } else {
            ""
        };
        return format!(
            "the server answered HTTP {} `{}`, not an API response{what}",
            s.code,
            s.message.trim()
        );
    }
    let mut extra = vec![];
    if !s.reason.is_empty() {
        extra.push(format!("reason {}", s.reason));
    }
    extra.push(format!("HTTP {}", s.code));
    if let Some(d) = s.details.as_ref().filter(|d| !d.name.is_empty()) {
        let resource = if d.group.is_empty() {
            d.kind.clone()
        } else {
            format!("{}.{}", d.kind, d.group)
        };
        extra.push(format!("object {resource} {}", d.name));
    }
    format!("{} ({})", s.message, extra.join(", "))
}

/// [`describe_status`] for a kube error; other errors as they display.
pub fn describe_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => describe_status(s),
        other => other.to_string(),
    }
}

/// A readable text for one cause of an error chain when it is a kube API error (for the
/// printer, which shows every cause on its own line).
pub fn api_error_text(cause: &(dyn std::error::Error + 'static)) -> Option<String> {
    match cause.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => Some(describe_status(s)),
        _ => None,
    }
}

/// An error chain on one line, kube API errors described by [`describe_status`].
pub fn describe_chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| api_error_text(c).unwrap_or_else(|| c.to_string()))
        .collect::<Vec<_>>()
        .join(": ")
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

/// Checks that the namespace exists, creating it with `create` (as `helm --create-namespace`
/// does; returns whether it did). A missing namespace otherwise is a usage error that says
/// how to create it. A client that may not read namespaces goes on (the server will say what
/// it refuses).
pub async fn ensure_namespace(
    target: &KubeTarget,
    create: bool,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let ns = &target.kenv.namespace;
    let api: Api<Namespace> = Api::all(target.platform.client.clone());
    match api.get_opt(ns).await {
        Ok(Some(_)) => Ok(false),
        Ok(None) if create && !dry_run => {
            let object = serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.kubernetes.io/managed-by": render::FIELD_MANAGER}},
            });
            api.patch(
                ns,
                &PatchParams::apply(render::FIELD_MANAGER),
                &Patch::Apply(&object),
            )
            .await
            .map_err(|e| {
                anyhow::Error::new(e).context(format!("cannot create namespace `{ns}`"))
            })?;
            Ok(true)
        }
        Ok(None) => {
            let how = if create {
                "a server-side dry run cannot show objects in a namespace that does not exist; --create-namespace creates it on a real deploy".to_string()
            } else {
                format!("create it (`kubectl create namespace {ns}`), or pass --create-namespace (DRONECTL_CREATE_NAMESPACE=true) to let dronectl create it")
            };
            Err(UsageError(format!(
                "namespace `{ns}` does not exist in the cluster (context `{}`): {how}",
                target.context
            ))
            .into())
        }
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
        Err(e) => Err(anyhow::Error::new(e).context(format!("cannot read namespace `{ns}`"))),
    }
}

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

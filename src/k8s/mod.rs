//! The Kubernetes target: environments with `target: kubernetes`.
//!
//! * [`render`]: the app's objects as typed k8s-openapi structs (what `render` prints and
//!   `deploy` applies).
//! * [`platform`]: the rollout engine's platform (Deployments, Services, HTTPRoutes).
//! * [`store`]: rollout state in ConfigMaps and a Lease, so any machine can steer a rollout.
//! * this module: connecting (kubeconfig resolution as kubectl does it), deploying the whole
//!   app in dependency order, and `diff`.

mod cache;
pub mod platform;
pub mod render;
pub mod store;
pub mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;

use crate::error::UsageError;
use crate::events::{Event, Reporter};
use crate::manifest::{LoadedManifest, Manifest, StrategyKind};
use crate::rollout::ops::{self, DriveReport};
use crate::rollout::{Engine, Plan, Revision, Timing};
pub use platform::KubePlatform;
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
            let context = "in-cluster".to_string();
            check_context(env, pinned, &context, opts.allow_other_context)?;
            let config = Config::incluster().map_err(|e| KubeError::Config(format!("no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config) and not in a cluster: {e}")))?;
            (config, context)
        }
    };
    let client = Client::try_from(config).map_err(|e| KubeError::Config(e.to_string()))?;
    Ok((client, context))
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
    /// Reads the manifest and connects to the environment's cluster.
    pub async fn connect(
        app_dir: &Path,
        env: &str,
        opts: &ConnectOptions,
    ) -> anyhow::Result<KubeTarget> {
        let loaded = LoadedManifest::read_valid(app_dir)?;
        let manifest = loaded.manifest;
        let kenv = KubeEnv::from_manifest(&manifest, env, opts.namespace.as_deref())?;
        let pinned = manifest.environments[env].value.context.clone();
        // A kubeconfig that cannot be loaded is a configuration error (exit 2).
        let (client, context) = client_for(opts, env, pinned.as_deref())
            .await
            .map_err(|e| match e.downcast_ref::<KubeError>() {
                Some(k @ KubeError::Config(_)) => UsageError(k.to_string()).into(),
                _ => e,
            })?;
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
        ))
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
                ),
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
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployOutcome {
    pub env: String,
    pub namespace: String,
    pub context: String,
    pub infrastructure: Vec<String>,
    pub services: Vec<DriveReport>,
    /// Dependents not deployed because a dependency failed.
    pub skipped: Vec<String>,
    /// With `--dry-run`: the objects.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<serde_json::Value>,
    #[serde(skip)]
    pub code: crate::error::ExitCode,
}

/// Services grouped so that each group only depends on earlier ones (Kahn's algorithm;
/// the manifest validator already refuses cycles).
pub fn dependency_levels(manifest: &Manifest, services: &[String]) -> Vec<Vec<String>> {
    let selected: BTreeSet<&String> = manifest
        .services
        .keys()
        .filter(|s| services.is_empty() || services.contains(s))
        .collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut levels = vec![];
    loop {
        let level: Vec<String> = manifest
            .services
            .iter()
            .filter(|(n, _)| selected.contains(n) && !done.contains(*n))
            .filter(|(_, s)| {
                s.value
                    .depends_on
                    .iter()
                    .all(|d| done.contains(&d.value) || !selected.contains(&d.value))
            })
            .map(|(n, _)| n.clone())
            .collect();
        if level.is_empty() {
            let rest: Vec<String> = selected
                .iter()
                .filter(|s| !done.contains(**s))
                .map(|s| s.to_string())
                .collect();
            if !rest.is_empty() {
                levels.push(rest);
            }
            return levels;
        }
        done.extend(level.iter().cloned());
        levels.push(level);
    }
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
    let revisions = opts.images.revisions(&target.kenv, m, &opts.services)?;
    let whole = opts.services.is_empty();
    let mut outcome = DeployOutcome {
        env: target.kenv.env.clone(),
        namespace: target.kenv.namespace.clone(),
        context: target.context.clone(),
        infrastructure: vec![],
        services: vec![],
        skipped: vec![],
        objects: vec![],
        code: crate::error::ExitCode::Success,
    };
    if let Some(dry) = opts.dry_run {
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
        for o in &objects {
            let value = match dry {
                DryRun::Client => o.to_value(),
                DryRun::Server => serde_json::to_value(
                    target
                        .platform
                        .apply(o, target.platform.force_conflicts, true)
                        .await?,
                )?,
            };
            reporter.event(Event::Note {
                message: format!("{} {} (dry run, {dry:?})", o.kind(), o.name()),
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
    let mut failed: BTreeSet<String> = BTreeSet::new();
    for level in dependency_levels(m, &opts.services) {
        let (run, skip): (Vec<String>, Vec<String>) = level.into_iter().partition(|s| {
            m.services[s]
                .value
                .depends_on
                .iter()
                .all(|d| !failed.contains(&d.value))
        });
        failed.extend(skip.iter().cloned());
        outcome.skipped.extend(skip);
        let reports = futures_util::future::join_all(run.iter().map(|service| async {
            let revision = revisions[service].clone();
            let result = deploy_service(target, service, revision, opts, reporter).await;
            (service.clone(), result)
        }))
        .await;
        for (service, result) in reports {
            let report = result?;
            let code = report.exit_code();
            if code != crate::error::ExitCode::Success {
                failed.insert(service.clone());
                if outcome.code == crate::error::ExitCode::Success {
                    outcome.code = code;
                }
            }
            outcome.services.push(report);
        }
    }
    Ok(outcome)
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
        Some(name) => Plan::from_manifest(m, name, revision.replicas)
            .map_err(|e| UsageError(e.to_string()))?,
        None => Plan::choose(
            m,
            service,
            Some(&target.kenv.env),
            opts.kind,
            revision.replicas,
        )
        .map_err(|e| UsageError(e.to_string()))?,
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
    let revisions = images.revisions(&target.kenv, m, services)?;
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
        let stable = target.store.load_record(service)?.stable.map(|s| s.id);
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
    let mut out = vec![];
    for mut o in objects {
        let ar = o.api_resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(target.platform.client.clone(), &target.kenv.namespace, &ar);
        let live = api
            .get_opt(o.name())
            .await?
            .map(|l| clean(serde_json::to_value(l).unwrap_or_default()));
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
                // e.g. HTTPRoute on a cluster without the Gateway API: say so, go on.
                let diff = format!(
                    "{}/{}: the server refused the dry-run apply: {e:#}\n",
                    o.kind(),
                    o.name()
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

//! `dronectl up`: the whole app on the local engine, from images to ready services.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::containers::{bind_network, ensure_infrastructure, ensure_network};
use super::router_container::{ensure_router, wait_router, RouterSetup};
use super::{read_environment, LocalTarget};
use crate::error::UsageError;
use crate::events::{Event, Reporter};
use crate::local::{router, Names};
use crate::rollout::state::ensure_router_token;
use crate::rollout::{ops, FileStore, Outcome, Plan, Timing};

/// Options of `dronectl up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub app_dir: PathBuf,
    pub env: Option<String>,
    /// Build images first (incremental: unchanged services are not rebuilt).
    pub build: bool,
    /// Use images from an artifacts file instead of building.
    pub artifacts: Option<PathBuf>,
    pub timing: Timing,
    pub timeout: Option<Duration>,
    /// The cargo profile of the images `up` builds (`dronectl dev` builds for loop speed).
    pub profile: crate::build::Profile,
}

/// A service as `up` left it.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceUp {
    pub service: String,
    pub image: String,
    pub revision: String,
    pub replicas: u32,
    /// `unchanged`, `completed`, or a failure.
    pub outcome: Outcome,
}

/// What `up` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpOutcome {
    pub app: String,
    pub env: String,
    pub entry_url: String,
    pub services: Vec<ServiceUp>,
    pub infrastructure: Vec<String>,
    /// Whether anything was created or replaced.
    pub changed: bool,
}

/// Brings the whole app up on the local engine and waits until every service is ready.
pub async fn up(opts: &UpOptions, reporter: &dyn Reporter) -> anyhow::Result<UpOutcome> {
    let (manifest, environment) = read_environment(&opts.app_dir, opts.env.as_deref())?;
    let env = environment.name.clone();
    let m = &manifest.manifest;
    let names = Names {
        app: m.app.value.clone(),
    };
    // The state directory must be usable before anything is started.
    FileStore::new(FileStore::default_dir(&names.app, &env)?)?;
    // Every declared secret needs a value before anything is built or started.
    crate::secrets::check_local(
        &crate::secrets::SecretStore::open(&names.app, &env)?,
        m,
        &env,
        &[],
    )?;

    // Images first: nothing is touched when a service does not compile.
    let images = service_images(opts, reporter).await?;
    let docker = crate::docker::connect().await?;
    for (name, infra) in &m.infrastructure {
        if docker.inspect_image(&infra.value.image).await.is_err() {
            bail!(UsageError(format!(
                "infrastructure `{name}` needs the image {}, which is not in the local engine and cannot be pulled here; build or pack it first (e.g. `dronectl image pack /usr/bin/redis-server --tag {}`)",
                infra.value.image, infra.value.image
            )));
        }
    }
    let mut changed = false;
    changed |= ensure_network(&docker, &names.network(), &names, &env).await?;
    changed |= ensure_network(&docker, &names.admin_network(), &names, &env).await?;
    let admin_network = bind_network(&docker, &names.admin_network()).await?;
    for name in m.infrastructure.keys() {
        changed |= ensure_infrastructure(&docker, &names, &env, m, name, reporter).await?;
    }
    let state_dir = FileStore::default_dir(&names.app, &env)?;
    FileStore::new(&state_dir)?;
    let (token, _) = ensure_router_token(&state_dir)?;
    let router_image = router::ensure_image(&docker).await?;
    // A router that answers but refuses the token (the token file was removed or replaced
    // since it started) is replaced once with one that knows the token.
    let mut replace = false;
    let (ports, admin) = loop {
        let setup = RouterSetup {
            image: &router_image,
            admin_network: &admin_network,
            token: &token,
            replace,
        };
        changed |= ensure_router(&docker, &names, &env, m, &setup, reporter).await?;
        match wait_router(&docker, &names, &token).await? {
            Some(ready) => break ready,
            None if !replace => {
                reporter.event(Event::Note {
                    message: "the router refused the app's admin token; replacing it".into(),
                    verbose: false,
                });
                replace = true;
            }
            None => bail!(router::TokenRefused),
        }
    };
    let target = LocalTarget::assemble(
        manifest.clone(),
        &environment,
        docker,
        names.clone(),
        ports,
        admin,
    )?;

    // Every service at once; each waits for its own readiness (which waits for its deps).
    let engine = target.engine(reporter, opts.timing);
    let rollouts = m.services.keys().map(|service| {
        let engine = &engine;
        let target = &target;
        let image = images.get(service).cloned();
        async move {
            let (image, version) = image.with_context(|| format!("no image for `{service}`"))?;
            let revision = target.revision(service, &image, &version).await?;
            let plan = Plan::builtin(crate::manifest::StrategyKind::Rolling);
            let report = ops::deploy(engine, service, revision.clone(), plan, opts.timeout).await?;
            let mut revision = revision;
            if report.outcome == Outcome::Unchanged {
                // Make sure it still runs as recorded (containers removed by hand come back),
                // at the recorded count (a `dronectl scale` override is kept).
                use crate::rollout::{Platform, StateStore as _};
                if let Some(live) = target.store.load_record(service).await?.stable {
                    revision = live;
                }
                target
                    .platform
                    .scale(service, &revision, revision.replicas)
                    .await?;
                let mut weights = crate::rollout::Weights::new();
                weights.insert(revision.id.clone(), 100);
                target
                    .platform
                    .set_traffic(service, &weights, &[&revision], 0)
                    .await?;
            }
            Ok::<_, anyhow::Error>((service.clone(), revision, report))
        }
    });
    let results = futures_util::future::join_all(rollouts).await;
    let mut services = Vec::new();
    let mut failures = Vec::new();
    for result in results {
        let (service, revision, report) = result?;
        if !matches!(report.outcome, Outcome::Completed | Outcome::Unchanged) {
            failures.push(format!("{service}: {}", report.message));
        }
        changed |= report.outcome == Outcome::Completed;
        services.push(ServiceUp {
            service,
            image: revision.image.clone(),
            revision: revision.id.clone(),
            replicas: revision.replicas,
            outcome: report.outcome,
        });
    }
    if !failures.is_empty() {
        bail!(
            "some services did not come up:\n  {}",
            failures.join("\n  ")
        );
    }
    Ok(UpOutcome {
        app: names.app.clone(),
        env,
        entry_url: target.entry_url(),
        services,
        infrastructure: m.infrastructure.keys().cloned().collect(),
        changed,
    })
}

/// Image reference and version per service: from an artifacts file, or by building.
async fn service_images(
    opts: &UpOptions,
    reporter: &dyn Reporter,
) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    if let Some(path) = &opts.artifacts {
        let artifacts = crate::build::artifacts::read(path)?;
        return Ok(artifacts
            .into_iter()
            .map(|a| (a.service.clone(), (a.reference(), a.tag.clone())))
            .collect());
    }
    let options = crate::build::BuildOptions {
        app_dir: opts.app_dir.clone(),
        profile: opts.profile,
        ..Default::default()
    };
    if !opts.build {
        bail!(UsageError(
            "--no-build needs --artifacts FILE to know which images to run".into()
        ));
    }
    let outcome = crate::build::build(&options, reporter).await?;
    Ok(outcome
        .images
        .into_iter()
        .map(|i| (i.service.clone(), (format!("{}:{}", i.image, i.tag), i.tag)))
        .collect())
}

//! The app on the local target: the target that `deploy` and the rollout commands act on
//! (this file), and the commands on the whole app, one file each: `up`, `down`, `ps`, with
//! the containers `up` keeps (networks, volumes, infrastructure) and the router container.

mod containers;
mod down;
mod ps;
mod router_container;
mod up;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use bollard::Docker;

pub use down::{down, DownOutcome};
pub use ps::{ps, Ps, PsRow, PsScaling};
pub use up::{up, ServiceUp, UpOptions, UpOutcome};

use super::platform::{LocalPlatform, ServiceRuntime};
use super::{router, Names, ROUTER_PORT};
use crate::error::UsageError;
use crate::events::Reporter;
use crate::manifest::{Environment, LoadedManifest, Manifest, Target};
use crate::rollout::state::{read_router_token, ROUTER_TOKEN_FILE};
use crate::rollout::{Engine, FileStore, Revision, Timing};

/// manifest returned is the one that applies in that environment.
pub(crate) fn read_environment(
    app_dir: &Path,
    env: Option<&str>,
) -> anyhow::Result<(LoadedManifest, Environment)> {
    let mut loaded = LoadedManifest::read_valid(app_dir)?;
    let environment = Environment::resolve_for(&loaded.manifest, env, Target::Docker)?;
    loaded.manifest = environment.manifest.clone();
    Ok((loaded, environment))
}

/// The environment variables of a service on the local target: dependencies are reached
/// through the router, which holds every service name on the app network.
pub fn service_env(manifest: &Manifest, service: &str) -> BTreeMap<String, String> {
    crate::manifest::service_env(manifest, service, |name, _| {
        format!("http://{name}:{ROUTER_PORT}")
    })
}

/// Everything needed to act on the app on the local engine.
pub struct LocalTarget {
    pub manifest: LoadedManifest,
    pub env: String,
    /// The environment's default rollout strategy.
    pub strategy: Option<String>,
    pub names: Names,
    pub platform: LocalPlatform,
    pub store: FileStore,
    pub entry_port: u16,
}

impl LocalTarget {
    /// Connects to the app as it runs in `environment`, a Docker environment resolved from
    /// `manifest` (whose manifest is the environment's effective one); fails when it is
    /// not up.
    pub async fn connect(
        manifest: LoadedManifest,
        environment: &Environment,
    ) -> anyhow::Result<LocalTarget> {
        let docker = crate::docker::connect().await?;
        let names = Names {
            app: manifest.manifest.app.value.clone(),
        };
        let ports = router::find(&docker, &names).await?.ok_or_else(|| {
            UsageError(format!(
                "app `{}` is not up on the local Docker engine; run `dronectl up` first",
                names.app
            ))
        })?;
        let dir = FileStore::default_dir(&names.app, &environment.name)?;
        let token = read_router_token(&dir)?.ok_or_else(|| {
            UsageError(format!(
                "the router's admin token {} is missing; run `dronectl up`, which replaces the router with one that knows a new token",
                dir.join(ROUTER_TOKEN_FILE).display()
            ))
        })?;
        let admin = ports.admin(token);
        Self::assemble(manifest, environment, docker, names, ports, admin)
    }

    fn assemble(
        manifest: LoadedManifest,
        environment: &Environment,
        docker: Docker,
        names: Names,
        ports: router::RouterPorts,
        admin: router::RouterAdmin,
    ) -> anyhow::Result<LocalTarget> {
        let env = environment.name.clone();
        let services = manifest
            .manifest
            .services
            .iter()
            .map(|(name, s)| {
                let runtime = ServiceRuntime::new(&s.value);
                (name.clone(), runtime)
            })
            .collect();
        let store = FileStore::new(FileStore::default_dir(&names.app, &env)?)?;
        let mut platform = LocalPlatform::new(docker, names.clone(), &env, admin, services);
        platform.secrets = Some(crate::secrets::SecretStore::open(&names.app, &env)?);
        Ok(LocalTarget {
            manifest,
            env,
            strategy: environment.strategy.clone(),
            names,
            platform,
            store,
            entry_port: ports.entry,
        })
    }

    pub fn engine<'a>(
        &'a self,
        reporter: &'a dyn Reporter,
        timing: Timing,
    ) -> Engine<'a, LocalPlatform, FileStore> {
        let mut engine = Engine::new(&self.platform, &self.store, reporter);
        engine.timing = timing;
        engine
    }

    pub fn entry_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.entry_port)
    }

    /// The revision of `service` running `image` with `version`. The image is pinned to its
    /// content id, so a tag that moves (a `-dirty` rebuild) makes a new revision and the
    /// replicas of one revision always run the same bits.
    pub async fn revision(
        &self,
        service: &str,
        image: &str,
        version: &str,
    ) -> anyhow::Result<Revision> {
        let s = self
            .manifest
            .manifest
            .services
            .get(service)
            .with_context(|| format!("no service `{service}` in dronectl.yaml"))?;
        let inspect = self.platform.docker.inspect_image(image).await.map_err(|e| {
            if crate::docker::is_not_found(&e) {
                anyhow::Error::new(UsageError(format!("image {image} is not in the local engine; build it with `dronectl build {service}`")))
            } else {
                e.into()
            }
        })?;
        let id = inspect
            .id
            .with_context(|| format!("the engine reported no id for {image}"))?;
        // Secrets by version: a value set again makes a new revision (and a rollout).
        let store = crate::secrets::SecretStore::open(&self.names.app, &self.env)?;
        let versions =
            crate::secrets::local_versions(&store, &self.manifest.manifest, &self.env, service)?
                .map_err(crate::secrets::MissingSecrets)?;
        // The local target has no autoscaler: an autoscaled service runs its `min`.
        let replicas = s
            .value
            .autoscale
            .as_ref()
            .map_or(s.value.replicas, |a| a.min.value);
        Ok(Revision::new(
            &id,
            version,
            replicas,
            service_env(&self.manifest.manifest, service),
        )
        .with_secrets(versions))
    }
}

/// A container's name from the engine's listing (`/name` → `name`; empty when absent).
pub(crate) fn container_name(names: Option<Vec<String>>) -> String {
    names
        .unwrap_or_default()
        .first()
        .map_or(String::new(), |n| n.trim_start_matches('/').to_string())
}

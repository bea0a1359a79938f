//! The app on the local target: `up`, `down`, `ps`, and the set-up that `deploy`
//! and the rollout commands share.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkingConfig, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use bollard::Docker;
use dronectl_router::{AdminToken, BindNetwork};
use serde::Serialize;

use super::platform::{LocalPlatform, ServiceRuntime};
use super::router;
use super::{
    label_filter, labels, Names, ROUTER_ADMIN_PORT, ROUTER_PORT, ROUTER_PUBLIC_PORT,
    ROUTER_TOKEN_PATH,
};
use crate::error::UsageError;
use crate::events::{Event, Reporter};
use crate::manifest::{Environment, LoadedManifest, Manifest, Target};
use crate::rollout::state::{ensure_router_token, read_router_token, ROUTER_TOKEN_FILE};
use crate::rollout::{ops, Engine, FileStore, Outcome, Plan, Revision, Timing};

/// Reads the manifest and resolves the Docker environment `env` (`local` by default); the
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
    /// Connects to the app as it runs; fails when it is not up.
    pub async fn connect(app_dir: &Path, env: Option<&str>) -> anyhow::Result<LocalTarget> {
        let (manifest, environment) = read_environment(app_dir, env)?;
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
        Self::assemble(manifest, &environment, docker, names, ports, admin)
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

fn base_labels(names: &Names, env: &str, kind: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::APP.to_string(), names.app.clone()),
        (labels::ENV.to_string(), env.to_string()),
        (labels::KIND.to_string(), kind.to_string()),
    ])
}

fn config_hash(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn ensure_network(
    docker: &Docker,
    name: &str,
    names: &Names,
    env: &str,
) -> anyhow::Result<bool> {
    if docker.inspect_network(name, None).await.is_ok() {
        return Ok(false);
    }
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("bridge".into()),
            labels: Some(base_labels(names, env, "network")),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating network {name}"))?;
    Ok(true)
}

/// A network's IPv4 gateway and prefix length, as the router's `--bind-network` takes them.
async fn bind_network(docker: &Docker, name: &str) -> anyhow::Result<BindNetwork> {
    let inspect = docker
        .inspect_network(name, None)
        .await
        .with_context(|| format!("inspecting network {name}"))?;
    inspect
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .iter()
        .find_map(|c| {
            let gateway: std::net::Ipv4Addr = c.gateway.as_deref()?.parse().ok()?;
            let prefix = c.subnet.as_deref()?.split_once('/')?.1;
            format!("{gateway}/{prefix}").parse().ok()
        })
        .with_context(|| format!("network {name} has no IPv4 subnet with a gateway"))
}

async fn ensure_volume(
    docker: &Docker,
    names: &Names,
    env: &str,
    owner: &str,
) -> anyhow::Result<()> {
    let mut l = base_labels(names, env, "volume");
    l.insert(labels::SERVICE.into(), owner.into());
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(names.volume(owner)),
            labels: Some(l),
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// What is done to a newly created container before it first starts.
#[derive(Default)]
struct BeforeStart {
    /// Further networks to join (the create call takes one).
    networks: Vec<String>,
    /// A tar archive extracted at `/` (files that must not be in the container's settings).
    archive: Option<Vec<u8>>,
    /// Replace the container even when its settings did not change.
    replace: bool,
}

/// Creates (or replaces, when its settings changed) a long-running container.
async fn ensure_container(
    docker: &Docker,
    name: &str,
    hash: &str,
    mut body: ContainerCreateBody,
    before_start: BeforeStart,
) -> anyhow::Result<bool> {
    if let Ok(existing) = docker.inspect_container(name, None).await {
        let same = !before_start.replace
            && existing
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(labels::CONFIG).cloned())
                .as_deref()
                == Some(hash);
        let running = existing.state.and_then(|s| s.running).unwrap_or(false);
        if same && running {
            return Ok(false);
        }
        if same {
            docker.start_container(name, None).await?;
            return Ok(true);
        }
        docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await?;
    }
    body.labels
        .get_or_insert_with(HashMap::new)
        .insert(labels::CONFIG.into(), hash.into());
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(name).build()),
            body,
        )
        .await
        .with_context(|| format!("creating container {name}"))?;
    let prepared = prepare(docker, name, before_start).await;
    if let Err(e) = prepared {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        return Err(e);
    }
    docker
        .start_container(name, None)
        .await
        .with_context(|| format!("starting container {name}"))?;
    Ok(true)
}

async fn prepare(docker: &Docker, name: &str, before_start: BeforeStart) -> anyhow::Result<()> {
    for network in &before_start.networks {
        docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: name.to_string(),
                    endpoint_config: Some(EndpointSettings::default()),
                },
            )
            .await
            .with_context(|| format!("connecting container {name} to network {network}"))?;
    }
    if let Some(archive) = before_start.archive {
        docker
            .upload_to_container(
                name,
                Some(UploadToContainerOptionsBuilder::default().path("/").build()),
                bollard::body_full(bytes::Bytes::from(archive)),
            )
            .await
            .with_context(|| format!("copying files into container {name}"))?;
    }
    Ok(())
}

async fn ensure_infrastructure(
    docker: &Docker,
    names: &Names,
    env: &str,
    m: &Manifest,
    name: &str,
    reporter: &dyn Reporter,
) -> anyhow::Result<bool> {
    let infra = &m.infrastructure[name].value;
    let container = names.infrastructure(name);
    let env_vars: Vec<String> = infra
        .env
        .iter()
        .map(|(k, v)| format!("{k}={}", v.0))
        .collect();
    let binds = infra
        .volume
        .as_ref()
        .map(|path| vec![format!("{}:{path}", names.volume(name))]);
    if infra.volume.is_some() {
        ensure_volume(docker, names, env, name).await?;
    }
    let hash = config_hash(&[
        &infra.image,
        &infra.command.join(" "),
        &env_vars.join(" "),
        infra.volume.as_deref().unwrap_or(""),
        &infra.port.to_string(),
    ]);
    let mut l = base_labels(names, env, "infrastructure");
    l.insert(labels::SERVICE.into(), name.into());
    let body = ContainerCreateBody {
        image: Some(infra.image.clone()),
        cmd: (!infra.command.is_empty()).then(|| infra.command.clone()),
        env: Some(env_vars),
        labels: Some(l),
        host_config: Some(HostConfig {
            binds,
            ..names.host_config()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                names.network(),
                EndpointSettings {
                    aliases: Some(vec![name.to_string()]),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let changed = ensure_container(docker, &container, &hash, body, BeforeStart::default()).await?;
    if changed {
        reporter.event(Event::Note {
            message: format!("started infrastructure `{name}` ({})", infra.image),
            verbose: false,
        });
    }
    // Ready when its port accepts connections.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let ip = container_ip(docker, &container, &names.network()).await;
        if let Some(ip) = ip {
            if tokio::net::TcpStream::connect((ip.as_str(), infra.port))
                .await
                .is_ok()
            {
                return Ok(changed);
            }
        }
        if tokio::time::Instant::now() > deadline {
            let logs = super::platform::tail_logs(docker, &container, 20).await;
            bail!("infrastructure `{name}` did not accept connections on port {} within 60s; last log lines:\n  {}", infra.port, logs.join("\n  "));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn container_ip(docker: &Docker, container: &str, network: &str) -> Option<String> {
    docker
        .inspect_container(container, None)
        .await
        .ok()?
        .network_settings?
        .networks?
        .get(network)?
        .ip_address
        .clone()
        .filter(|ip| !ip.is_empty())
}

/// How the router container is to be set up.
struct RouterSetup<'a> {
    image: &'a str,
    /// Its host-facing network (where its ports are published).
    admin_network: &'a BindNetwork,
    token: &'a AdminToken,
    /// Replace it even when its settings did not change.
    replace: bool,
}

/// The router container: on the app network with every service name (and
/// `<service>-preview`) as alias, internal data port 8080 there; on its own host-facing
/// network, where its public data port and admin API are bound and published on 127.0.0.1.
/// The admin token is copied into the created container before it starts, so it is in no
/// setting `docker inspect` shows (environment, command, labels).
async fn ensure_router(
    docker: &Docker,
    names: &Names,
    env: &str,
    m: &Manifest,
    setup: &RouterSetup<'_>,
    reporter: &dyn Reporter,
) -> anyhow::Result<bool> {
    let aliases: Vec<String> = m
        .services
        .keys()
        .flat_map(|s| [s.clone(), format!("{s}-preview")])
        .collect();
    let cmd: Vec<String> = [
        "--listen".to_string(),
        format!("0.0.0.0:{ROUTER_PORT}"),
        "--public-listen".into(),
        format!("0.0.0.0:{ROUTER_PUBLIC_PORT}"),
        "--admin-listen".into(),
        format!("0.0.0.0:{ROUTER_ADMIN_PORT}"),
        "--bind-network".into(),
        setup.admin_network.to_string(),
        "--admin-token-file".into(),
        ROUTER_TOKEN_PATH.into(),
    ]
    .into();
    let hash = config_hash(&[
        setup.image,
        &aliases.join(","),
        &cmd.join(" "),
        &names.admin_network(),
    ]);
    let publish = |port: u16| {
        (
            format!("{port}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new()),
            }]),
        )
    };
    let body = ContainerCreateBody {
        image: Some(setup.image.to_string()),
        cmd: Some(cmd),
        labels: Some(base_labels(names, env, "router")),
        exposed_ports: Some(vec![
            format!("{ROUTER_PUBLIC_PORT}/tcp"),
            format!("{ROUTER_ADMIN_PORT}/tcp"),
        ]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([
                publish(ROUTER_PUBLIC_PORT),
                publish(ROUTER_ADMIN_PORT),
            ])),
            ..names.host_config()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                names.network(),
                EndpointSettings {
                    aliases: Some(aliases),
                    ..Default::default()
                },
            )])),
        }),
        ..Default::default()
    };
    let before_start = BeforeStart {
        networks: vec![names.admin_network()],
        archive: Some(token_archive(setup.token)?),
        replace: setup.replace,
    };
    // A replaced router starts with an empty table: routes are restored below by the
    // services' rollouts (`up` re-applies traffic for unchanged services).
    let changed = ensure_container(docker, &names.router(), &hash, body, before_start).await?;
    if changed {
        reporter.event(Event::Note {
            message: format!("started the router ({})", setup.image),
            verbose: true,
        });
    }
    Ok(changed)
}

/// A tar archive with the admin token at [`ROUTER_TOKEN_PATH`], readable only by the
/// router's user (the image runs as 65532).
fn token_archive(token: &AdminToken) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(ROUTER_TOKEN_PATH.trim_start_matches('/'));
    let mut tar = tar::Builder::new(Vec::new());
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(65532);
        h.set_gid(65532);
        h.set_size(size);
        h
    };
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.retain(|d| !d.as_os_str().is_empty());
    for dir in dirs.into_iter().rev() {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        tar.append_data(&mut h, dir, std::io::empty())?;
    }
    let content = format!("{}\n", token.expose());
    let mut h = header(tar::EntryType::Regular, 0o400, content.len() as u64);
    tar.append_data(&mut h, path, content.as_bytes())?;
    Ok(tar.into_inner()?)
}

/// Waits until the router's admin API answers ready to `token`; `None` when it answers but
/// refuses the token.
async fn wait_router(
    docker: &Docker,
    names: &Names,
    token: &AdminToken,
) -> anyhow::Result<Option<(router::RouterPorts, router::RouterAdmin)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(ports) = router::find(docker, names).await? {
            let admin = ports.admin(token.clone());
            match admin.readiness().await {
                router::Readiness::Ready => return Ok(Some((ports, admin))),
                router::Readiness::TokenRefused => return Ok(None),
                router::Readiness::NotReady => {}
            }
        }
        if tokio::time::Instant::now() > deadline {
            let logs = super::platform::tail_logs(docker, &names.router(), 20).await;
            bail!(
                "the router's admin API did not become ready on its published port within 30s; last log lines:\n  {}",
                logs.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DownOutcome {
    pub containers: Vec<String>,
    pub networks: Vec<String>,
    pub volumes: Vec<String>,
}

/// Removes everything dronectl created for the app (found by labels); volumes only when
/// asked. The rollout records go too: nothing they describe runs any more.
pub async fn down(app_dir: &Path, env: Option<&str>, volumes: bool) -> anyhow::Result<DownOutcome> {
    let (manifest, environment) = read_environment(app_dir, env)?;
    let env = environment.name;
    let names = Names {
        app: manifest.manifest.app.value.clone(),
    };
    let state_dir = FileStore::default_dir(&names.app, &env)?;
    let docker = crate::docker::connect().await?;
    let filter = label_filter(&[(labels::APP, &names.app), (labels::ENV, &env)]);
    let mut outcome = DownOutcome::default();
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await?;
    // Services first (they may still be serving through the router), then the router and
    // infrastructure.
    let mut ordered: Vec<_> = containers.into_iter().collect();
    ordered.sort_by_key(|c| {
        match c
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::KIND))
            .map(String::as_str)
        {
            Some("service") => 0,
            Some("router") => 1,
            _ => 2,
        }
    });
    for c in ordered {
        let name = container_name(c.names);
        let stop = bollard::query_parameters::StopContainerOptionsBuilder::default()
            .t(10)
            .build();
        let _ = docker.stop_container(&name, Some(stop)).await;
        match docker
            .remove_container(
                &name,
                Some(
                    RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .v(false)
                        .build(),
                ),
            )
            .await
        {
            Ok(()) => outcome.containers.push(name),
            Err(e) if crate::docker::is_not_found(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filter)
                .build(),
        ))
        .await?;
    for n in networks {
        if let Some(name) = n.name {
            docker
                .remove_network(&name)
                .await
                .with_context(|| format!("removing network {name}"))?;
            outcome.networks.push(name);
        }
    }
    if volumes {
        let list = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await?;
        for v in list.volumes.unwrap_or_default() {
            docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .with_context(|| format!("removing volume {}", v.name))?;
            outcome.volumes.push(v.name);
        }
    }
    if state_dir.exists() {
        std::fs::remove_dir_all(&state_dir)
            .with_context(|| format!("removing rollout state in {}", state_dir.display()))?;
    }
    Ok(outcome)
}

/// One row of `dronectl ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsRow {
    pub container: String,
    pub kind: String,
    pub name: String,
    pub version: String,
    pub revision: String,
    pub state: String,
    /// Traffic share of the revision (services), in percent.
    pub weight: Option<u32>,
    /// A retired revision (kept warm for an instant undo, or an aborted candidate): when
    /// it is removed, in milliseconds since the Unix epoch.
    pub retired_until_ms: Option<u64>,
}

/// A service whose replica count is not simply the manifest's `replicas`, for `dronectl ps`.
#[derive(Debug, Clone, Serialize)]
pub struct PsScaling {
    pub service: String,
    /// The count `dronectl scale` set (and the manifest's `replicas` it overrides).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaled: Option<crate::rollout::state::Scaled>,
    /// The manifest's `autoscale` bounds: the local target has no autoscaler and runs `min`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<crate::rollout::replicas::Bounds>,
}

/// What `dronectl ps` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Ps {
    /// The router's public URL, when it runs.
    pub entry_url: Option<String>,
    pub containers: Vec<PsRow>,
    /// Services scaled by `dronectl scale` or autoscaled in the manifest.
    pub scaling: Vec<PsScaling>,
}

/// What runs, by container; the entry URL when the router runs; and how replica counts
/// were decided where it is not the manifest's `replicas`.
pub async fn ps(app_dir: &Path, env: Option<&str>) -> anyhow::Result<Ps> {
    let (manifest, environment) = read_environment(app_dir, env)?;
    let env = environment.name;
    let names = Names {
        app: manifest.manifest.app.value.clone(),
    };
    let docker = crate::docker::connect().await?;
    let filter = label_filter(&[(labels::APP, &names.app), (labels::ENV, &env)]);
    let ports = router::find(&docker, &names).await?;
    let state_dir = FileStore::default_dir(&names.app, &env)?;
    let token = read_router_token(&state_dir)?;
    let config = match (&ports, token) {
        (Some(p), Some(token)) => p.admin(token).config().await.ok(),
        _ => None,
    };
    // Retired revisions and when they go, and `dronectl scale` counts, from the rollout
    // records (nothing is created).
    let mut retired = std::collections::BTreeMap::new();
    let mut scaled = std::collections::BTreeMap::new();
    if state_dir.exists() {
        use crate::rollout::StateStore as _;
        let store = FileStore::new(&state_dir)?;
        for service in manifest.manifest.services.keys() {
            let record = store.load_record(service).await?;
            if let Some(s) = record.scaled {
                scaled.insert(service.clone(), s);
            }
            for r in record.retired {
                retired.insert((service.clone(), r.revision.id), r.remove_after_ms);
            }
        }
    }
    let scaling = manifest
        .manifest
        .services
        .iter()
        .map(|(name, s)| PsScaling {
            service: name.clone(),
            scaled: scaled.get(name).copied(),
            autoscale: crate::rollout::replicas::Bounds::of(s.value.autoscale.as_ref()),
        })
        .filter(|s| s.scaled.is_some() || s.autoscale.is_some())
        .collect();
    let mut rows = Vec::new();
    for c in docker
        .list_containers(Some(
            ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filter)
                .build(),
        ))
        .await?
    {
        let l = c.labels.unwrap_or_default();
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let (service, revision) = (get(labels::SERVICE), get(labels::REVISION));
        let weight = config.as_ref().and_then(|cfg| {
            cfg.services
                .get(&service)?
                .versions
                .get(&revision)
                .map(|v| v.weight as u32)
        });
        let retired_until_ms = retired.get(&(service.clone(), revision.clone())).copied();
        rows.push(PsRow {
            retired_until_ms,
            container: container_name(c.names),
            kind: get(labels::KIND),
            name: if service.is_empty() {
                "router".into()
            } else {
                service
            },
            version: get(labels::VERSION),
            revision,
            state: c.status.unwrap_or_default(),
            weight,
        });
    }
    rows.sort_by(|a, b| (&a.kind, &a.name, &a.container).cmp(&(&b.kind, &b.name, &b.container)));
    Ok(Ps {
        entry_url: ports.map(|p| format!("http://127.0.0.1:{}", p.entry)),
        containers: rows,
        scaling,
    })
}

/// A container's name from the engine's listing (`/name` → `name`; empty when absent).
pub(crate) fn container_name(names: Option<Vec<String>>) -> String {
    names
        .unwrap_or_default()
        .first()
        .map_or(String::new(), |n| n.trim_start_matches('/').to_string())
}

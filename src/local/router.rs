//! dronectl's router on the local target: its container, and a client for its admin API.
//!
//! The router image is the running dronectl binary itself (with its shared-library
//! closure), started as `dronectl router`, so the router always matches the dronectl that
//! drives it and nothing has to be pulled.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bollard::Docker;
use dronectl_router::{EndpointInfo, RouterConfig, Stats};

use super::{labels, Names, ROUTER_ADMIN_PORT, ROUTER_PORT};
use crate::http;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The router's admin API, reached on 127.0.0.1 through its published port.
#[derive(Debug, Clone)]
pub struct RouterAdmin {
    pub addr: String,
    /// Serialises this process's read-modify-write updates (other processes are kept
    /// apart by the router's compare-and-set on the generation).
    updates: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl RouterAdmin {
    pub fn new(addr: String) -> RouterAdmin {
        RouterAdmin {
            addr,
            updates: Default::default(),
        }
    }

    pub async fn config(&self) -> anyhow::Result<RouterConfig> {
        let r = http::get(&self.addr, "/config", ADMIN_TIMEOUT)
            .await
            .context("router admin API")?;
        serde_json::from_slice(&r.body).with_context(|| format!("router config: {}", r.text()))
    }

    /// Changes the routing table with `change`; retries when another dronectl changed it
    /// in between (the router refuses stale generations).
    pub async fn update(&self, change: impl Fn(&mut RouterConfig)) -> anyhow::Result<u64> {
        let _one_at_a_time = self.updates.lock().await;
        for _ in 0..20 {
            let mut config = self.config().await?;
            let before = config.clone();
            change(&mut config);
            if config == before {
                return Ok(config.generation);
            }
            config.generation += 1;
            let body = serde_json::to_vec(&config)?;
            let r = http::request("PUT", &self.addr, "/config", Some(&body), ADMIN_TIMEOUT)
                .await
                .context("router admin API")?;
            match r.status {
                200 => return Ok(config.generation),
                409 => continue,
                status => bail!(
                    "the router refused the routing table ({status}): {}",
                    r.text()
                ),
            }
        }
        bail!("the routing table kept changing under dronectl; try again")
    }

    pub async fn stats(&self) -> anyhow::Result<Stats> {
        let r = http::get(&self.addr, "/stats", ADMIN_TIMEOUT)
            .await
            .context("router admin API")?;
        serde_json::from_slice(&r.body).with_context(|| format!("router stats: {}", r.text()))
    }

    pub async fn endpoints(&self) -> anyhow::Result<Vec<EndpointInfo>> {
        #[derive(serde::Deserialize)]
        struct Endpoints {
            endpoints: Vec<EndpointInfo>,
        }
        let r = http::get(&self.addr, "/endpoints", ADMIN_TIMEOUT)
            .await
            .context("router admin API")?;
        Ok(serde_json::from_slice::<Endpoints>(&r.body)
            .with_context(|| format!("router endpoints: {}", r.text()))?
            .endpoints)
    }

    /// Waits until no request is in flight on any of `endpoints` (or `timeout` passes).
    pub async fn drain(&self, endpoints: &[String], timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let busy: u64 = self
                .endpoints()
                .await?
                .iter()
                .filter(|e| endpoints.contains(&e.endpoint))
                .map(|e| e.in_flight)
                .sum();
            if busy == 0 || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn ready(&self) -> bool {
        http::get(&self.addr, "/readyz", Duration::from_secs(2))
            .await
            .is_ok_and(|r| r.status == 200)
    }
}

/// Where the router container publishes its ports on this machine.
#[derive(Debug, Clone)]
pub struct RouterPorts {
    /// The entry URL's port (the router's data port).
    pub entry: u16,
    pub admin: RouterAdmin,
}

/// Reads the published ports of the app's router container, if it runs.
pub async fn find(docker: &Docker, names: &Names) -> anyhow::Result<Option<RouterPorts>> {
    let inspect = match docker.inspect_container(&names.router(), None).await {
        Ok(i) => i,
        Err(e) if crate::docker::is_not_found(&e) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if !inspect
        .state
        .as_ref()
        .and_then(|s| s.running)
        .unwrap_or(false)
    {
        return Ok(None);
    }
    let ports = inspect
        .network_settings
        .and_then(|n| n.ports)
        .unwrap_or_default();
    let host_port = |port: u16| -> Option<u16> {
        ports
            .get(&format!("{port}/tcp"))?
            .as_ref()?
            .iter()
            .find_map(|b| b.host_port.as_ref()?.parse().ok())
    };
    match (host_port(ROUTER_PORT), host_port(ROUTER_ADMIN_PORT)) {
        (Some(entry), Some(admin)) => Ok(Some(RouterPorts {
            entry,
            admin: RouterAdmin::new(format!("127.0.0.1:{admin}")),
        })),
        _ => Ok(None),
    }
}

/// The router image for this dronectl binary, packed on first use.
pub async fn ensure_image(docker: &Docker) -> anyhow::Result<String> {
    // /proc/self/exe stays readable even when the file was replaced since dronectl started.
    let exe = std::path::PathBuf::from("/proc/self/exe");
    let bytes = tokio::fs::read(&exe)
        .await
        .context("cannot read the dronectl executable to run as the router")?;
    let digest = {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(&bytes);
        d.iter()
            .take(6)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let tag = format!("dronectl-router:{}-{digest}", env!("CARGO_PKG_VERSION"));
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    // Pack a copy: /proc/self/exe means another program to `ldd`.
    let dir = tempfile::tempdir()?;
    let copy = dir.path().join("dronectl");
    tokio::fs::write(&copy, &bytes).await?;
    let options = crate::build::pack::PackOptions {
        executable: copy,
        tag: tag.clone(),
        user: 65532,
        allow_root: false,
        args: vec!["router".into()],
        as_command: false,
        expose: vec![ROUTER_PORT, ROUTER_ADMIN_PORT],
        workdir: None,
        env: vec![],
        labels: BTreeMap::from([(labels::KIND.to_string(), "router".to_string())]),
    };
    // `pack` runs its own runtime: keep it off this one.
    let collected = crate::events::Collect::default();
    tokio::task::spawn_blocking(move || crate::build::pack::pack(&options, &collected).map(|_| ()))
        .await?
        .context("packing the router image")?;
    drop(dir);
    Ok(tag)
}

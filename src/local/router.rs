//! dronectl's router on the local target: its container, and a client for its admin API.
//!
//! The router image is the running dronectl binary itself (with its shared-library
//! closure), started as `dronectl router`, so the router always matches the dronectl that
//! drives it and nothing has to be pulled. Every admin call carries the app's admin token.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bollard::Docker;
use dronectl_router::{AdminToken, EndpointInfo, RouterConfig, Stats};

use super::{labels, Names, ROUTER_ADMIN_PORT, ROUTER_PORT, ROUTER_PUBLIC_PORT};
use crate::http;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The router's admin API, reached on 127.0.0.1 through its published port.
#[derive(Debug, Clone)]
pub struct RouterAdmin {
    pub addr: String,
    token: AdminToken,
    /// Serialises this process's read-modify-write updates (other processes are kept
    /// apart by the router's compare-and-set on the generation).
    updates: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// The router refused the admin token (it was started with another one).
#[derive(Debug, thiserror::Error)]
#[error("the router refused dronectl's admin token (401); run `dronectl up` to replace the router")]
pub struct TokenRefused;

/// What the router's readiness endpoint says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not reachable or not ready (yet).
    NotReady,
    /// It answers, but not to this token.
    TokenRefused,
}

impl RouterAdmin {
    pub fn new(addr: String, token: AdminToken) -> RouterAdmin {
        RouterAdmin {
            addr,
            token,
            updates: Default::default(),
        }
    }

    /// One admin call with the token; a 401 is [`TokenRefused`].
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<http::Response> {
        let auth = format!("Bearer {}", self.token.expose());
        let r = http::request_with_headers(
            method,
            &self.addr,
            path,
            &[("Authorization", &auth)],
            body,
            timeout,
        )
        .await
        .context("router admin API")?;
        if r.status == 401 {
            return Err(TokenRefused.into());
        }
        Ok(r)
    }

    pub async fn config(&self) -> anyhow::Result<RouterConfig> {
        let r = self.call("GET", "/config", None, ADMIN_TIMEOUT).await?;
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
            let r = self
                .call("PUT", "/config", Some(&body), ADMIN_TIMEOUT)
                .await?;
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
        let r = self.call("GET", "/stats", None, ADMIN_TIMEOUT).await?;
        serde_json::from_slice(&r.body).with_context(|| format!("router stats: {}", r.text()))
    }

    pub async fn endpoints(&self) -> anyhow::Result<Vec<EndpointInfo>> {
        #[derive(serde::Deserialize)]
        struct Endpoints {
            endpoints: Vec<EndpointInfo>,
        }
        let r = self.call("GET", "/endpoints", None, ADMIN_TIMEOUT).await?;
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

    pub async fn readiness(&self) -> Readiness {
        match self
            .call("GET", "/readyz", None, Duration::from_secs(2))
            .await
        {
            Ok(r) if r.status == 200 => Readiness::Ready,
            Err(e) if e.is::<TokenRefused>() => Readiness::TokenRefused,
            _ => Readiness::NotReady,
        }
    }
}

/// Where the router container publishes its ports on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub struct RouterPorts {
    /// The entry URL's port (the router's public data port).
    pub entry: u16,
    /// The admin API's port.
    pub admin: u16,
}

impl RouterPorts {
    /// A client for the admin API with the app's token.
    pub fn admin(&self, token: AdminToken) -> RouterAdmin {
        RouterAdmin::new(format!("127.0.0.1:{}", self.admin), token)
    }
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
    match (host_port(ROUTER_PUBLIC_PORT), host_port(ROUTER_ADMIN_PORT)) {
        (Some(entry), Some(admin)) => Ok(Some(RouterPorts { entry, admin })),
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
        expose: vec![ROUTER_PORT, ROUTER_PUBLIC_PORT, ROUTER_ADMIN_PORT],
        workdir: None,
        env: vec![],
        labels: BTreeMap::from([(labels::KIND.to_string(), "router".to_string())]),
    };
    crate::build::pack::pack(&options, &crate::events::Collect::default())
        .await
        .context("packing the router image")?;
    drop(dir);
    Ok(tag)
}

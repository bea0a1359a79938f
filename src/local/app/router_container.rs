//! The router container `up` starts, and the wait until its admin API answers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig, PortBinding,
};
use bollard::Docker;
use dronectl_router::{AdminToken, BindNetwork};

use super::containers::{base_labels, config_hash, ensure_container, BeforeStart};
use crate::events::{Event, Reporter};
use crate::local::{
    router, Names, ROUTER_ADMIN_PORT, ROUTER_PORT, ROUTER_PUBLIC_PORT, ROUTER_TOKEN_PATH,
};
use crate::manifest::Manifest;

/// How the router container is to be set up.
pub(super) struct RouterSetup<'a> {
    pub(super) image: &'a str,
    /// Its host-facing network (where its ports are published).
    pub(super) admin_network: &'a BindNetwork,
    pub(super) token: &'a AdminToken,
    /// Replace it even when its settings did not change.
    pub(super) replace: bool,
}

/// The router container: on the app network with every service name (and
/// `<service>-preview`) as alias, internal data port 8080 there; on its own host-facing
/// network, where its public data port and admin API are bound and published on 127.0.0.1.
/// The admin token is copied into the created container before it starts, so it is in no
/// setting `docker inspect` shows (environment, command, labels).
pub(super) async fn ensure_router(
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
pub(super) async fn wait_router(
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
            let logs = crate::local::platform::tail_logs(docker, &names.router(), 20).await;
            bail!(
                "the router's admin API did not become ready on its published port within 30s; last log lines:\n  {}",
                logs.join("\n  ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

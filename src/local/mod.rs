//! The local target: the app on the Docker engine of this machine, behind dronectl's own
//! router. This is dronectl's default target; it needs nothing but a Docker engine.
//!
//! Everything dronectl creates carries `dev.dronectl.*` labels, so `down` removes exactly
//! what was created and `ps` shows exactly what runs:
//!
//! * the network `<app>` — the router holds every service name as a network alias, so
//!   service-to-service calls (`http://<service>:8080`) pass through the router and can be
//!   split between versions;
//! * the network `0dronectl-admin-<app>`, which only the router joins: Docker publishes the
//!   router's ports on it (a container's ports go to its first network in lexical order,
//!   hence the leading `0`), and the router binds its admin API and public data port to its
//!   address there, so no app container can reach them;
//! * infrastructure containers `<app>-<name>` (alias `<name>`), with volumes `<app>-<name>-data`;
//! * service replicas `<app>-<service>-<revision>-<n>`;
//! * the router `<app>-router`, publishing its public data port (the entry URL) and its
//!   admin API on 127.0.0.1. The admin API needs the app's admin token, which `up` makes and
//!   keeps in the app's state directory (`router.token`, 0600) and copies into the router
//!   container before it starts.

pub mod app;
pub mod logs;
pub mod platform;
pub mod router;

pub use app::*;
pub use platform::LocalPlatform;

/// Label keys.
pub mod labels {
    pub const APP: &str = "dev.dronectl.app";
    pub const ENV: &str = "dev.dronectl.env";
    /// `service`, `infrastructure` or `router`.
    pub const KIND: &str = "dev.dronectl.kind";
    pub const SERVICE: &str = "dev.dronectl.service";
    pub const REVISION: &str = "dev.dronectl.revision";
    pub const VERSION: &str = "dev.dronectl.version";
    pub const REPLICA: &str = "dev.dronectl.replica";
    /// A digest of the secret versions a service replica runs with (never a value).
    pub const SECRETS: &str = "dev.dronectl.secrets";
    /// Hash of a container's settings: a changed hash means the container is replaced.
    pub const CONFIG: &str = "dev.dronectl.config";
}

/// The router's internal data port on the app network; services call
/// `http://<name>:ROUTER_PORT`. Not published.
pub const ROUTER_PORT: u16 = 8080;
/// The router's public data port (public routes only), published on 127.0.0.1: the entry URL.
pub const ROUTER_PUBLIC_PORT: u16 = 8081;
/// The router's admin API port, published on 127.0.0.1 for dronectl.
pub const ROUTER_ADMIN_PORT: u16 = 9901;
/// Where the router container reads the admin token (copied in before it first starts).
pub const ROUTER_TOKEN_PATH: &str = "/etc/dronectl/admin-token";

/// Names of what dronectl creates for an app.
#[derive(Debug, Clone)]
pub struct Names {
    pub app: String,
}

impl Names {
    pub fn network(&self) -> String {
        self.app.clone()
    }
    /// The router's host-facing network. It must sort before [`Names::network`] (app names
    /// start with a letter), so that Docker publishes the router's ports on it.
    pub fn admin_network(&self) -> String {
        format!("0dronectl-admin-{}", self.app)
    }
    pub fn router(&self) -> String {
        format!("{}-router", self.app)
    }
    pub fn infrastructure(&self, name: &str) -> String {
        format!("{}-{name}", self.app)
    }
    pub fn replica(&self, service: &str, revision: &str, index: u32) -> String {
        format!("{}-{service}-{revision}-{index}", self.app)
    }
    pub fn volume(&self, owner: &str) -> String {
        format!("{}-{owner}-data", self.app)
    }
    /// What every container dronectl runs for the app shares: the app network, restarted
    /// unless stopped.
    pub fn host_config(&self) -> bollard::models::HostConfig {
        bollard::models::HostConfig {
            network_mode: Some(self.network()),
            restart_policy: Some(bollard::models::RestartPolicy {
                name: Some(bollard::models::RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }
    }
}

/// Label filters for the Engine API (`label=k=v`).
pub(crate) fn label_filter(
    pairs: &[(&str, &str)],
) -> std::collections::HashMap<String, Vec<String>> {
    let mut filters = std::collections::HashMap::new();
    filters.insert(
        "label".to_string(),
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    );
    filters
}

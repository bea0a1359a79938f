//! The local target: the app on the Docker engine of this machine, behind dronectl's own
//! router. This is dronectl's default target; it needs nothing but a Docker engine.
//!
//! Everything dronectl creates carries `dev.dronectl.*` labels, so `down` removes exactly
//! what was created and `ps` shows exactly what runs:
//!
//! * the network `<app>` — the router holds every service name as a network alias, so
//!   service-to-service calls (`http://<service>:8080`) pass through the router and can be
//!   split between versions;
//! * infrastructure containers `<app>-<name>` (alias `<name>`), with volumes `<app>-<name>-data`;
//! * service replicas `<app>-<service>-<revision>-<n>`;
//! * the router `<app>-router`, publishing its data port (the entry URL) and its admin API
//!   on 127.0.0.1.

pub mod app;
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
    /// Hash of a container's settings: a changed hash means the container is replaced.
    pub const CONFIG: &str = "dev.dronectl.config";
}

/// The port the router listens on inside the network; services call `http://<name>:ROUTER_PORT`.
pub const ROUTER_PORT: u16 = 8080;
/// The router's admin port inside the network.
pub const ROUTER_ADMIN_PORT: u16 = 9901;

/// Names of what dronectl creates for an app.
#[derive(Debug, Clone)]
pub struct Names {
    pub app: String,
}

impl Names {
    pub fn network(&self) -> String {
        self.app.clone()
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

//! dronectl: scaffold, build, containerise, deploy and progressively roll out
//! microservices on the local Docker engine and on Kubernetes.
//!
//! The library holds all of dronectl's logic; the binary (`src/main.rs` and `cli/`) turns
//! arguments into option structs and calls it. Library code never prints: it reports
//! progress through [`events::Reporter`] and returns typed errors.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod build;
pub mod check;
pub mod ci;
pub mod deploy;
pub mod dev;
pub mod docker;
pub mod error;
pub mod events;
pub mod exit;
pub mod http;
pub mod k8s;
pub mod local;
pub mod manifest;
pub mod names;
pub mod rollout;
pub mod scaffold;
pub mod secrets;

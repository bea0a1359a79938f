//! dronectl's integration tests, one module per area, linked into one test binary (each
//! `tests/*.rs` file would be a binary of its own linking the whole library). Run one area
//! with `cargo test --test testsuite <module>::`, e.g. `cargo test --test testsuite kube::`.
//! Shared helpers are in `common`.

mod common;

mod build;
mod ci;
mod config;
mod dev;
mod generated;
mod help;
mod kube;
mod kube_render;
mod kube_rollout;
mod local;
mod local_retire;
mod local_scale;
mod logs;
mod new;
mod router;
mod scale;
mod secrets;
mod validate;

//! The one cargo invocation that compiles every selected Rust service as a static binary.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use std::time::Instant;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::BuildError;
use crate::events::{BuildStage, Event, Reporter, StepStatus};

/// The target triple every service is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// The rustflags that make a fully static glibc binary.
pub const STATIC_RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// The cargo `--config` of a dev build: dependencies optimised a little (see [`build`]).
pub const DEV_DEPENDENCY_OPT_LEVEL: &str = "profile.dev.package.\"*\".opt-level=1";

/// The cargo profile a build compiles with.
///
/// `Release` is what `dronectl build` ships: optimised, thin LTO as the workspace's release
/// profile says. `Dev` is what `dronectl dev` uses for the edit loop: the dev profile
/// (incremental, the app's own crates unoptimised, dependencies at opt-level 1) without
/// debug info, still static and for the same target, so
/// the image and its runtime behaviour are the same apart from speed. Its images carry a
/// different inputs hash (and a `-dev` tag suffix), so a dev image is never taken for a
/// release one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Profile {
    #[default]
    Release,
    Dev,
}

impl Profile {
    /// How the compile step describes itself.
    pub fn describe(self) -> String {
        match self {
            Profile::Release => format!("cargo build --release --target {TARGET} (static)"),
            Profile::Dev => {
                format!("cargo build --target {TARGET} (static, dev profile, incremental)")
            }
        }
    }
}

/// One crate of the workspace to build: the service it belongs to and its package name.
pub struct Unit {
    pub service: String,
    pub package: String,
}

/// Builds `units` (all in `workspace`) with one `cargo build` in `profile`, reporting
/// progress and compiler messages, and returns each service's executable. Dropping the
/// future kills cargo.
pub async fn build(
    workspace: &Path,
    units: &[Unit],
    profile: Profile,
    reporter: &dyn Reporter,
) -> Result<HashMap<String, PathBuf>, BuildError> {
    let start = Instant::now();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // No --locked: a service just added by `dronectl new service` may need a lock update;
    // the inputs hash is taken after cargo ran, so such an update is part of it.
    command
        .current_dir(workspace)
        .arg("build")
        .args(match profile {
            Profile::Release => &["--release"][..],
            Profile::Dev => &[][..],
        })
        .args(["--target", TARGET])
        .arg("--message-format=json");
    if profile == Profile::Dev {
        // No debug info (not even the standard library's): a binary a third of the size
        // links, hashes and loads into the engine faster.
        command
            .env("CARGO_PROFILE_DEV_DEBUG", "0")
            .env("CARGO_PROFILE_DEV_STRIP", "debuginfo")
            .env("CARGO_PROFILE_DEV_INCREMENTAL", "true")
            // Dependencies (never the app's own crates, which are workspace members) at
            // opt-level 1: the binary of a generated service is 10 instead of 17 MB, so it
            // links, is hashed and loads into the engine faster, and it runs at a useful
            // speed; it costs a slower first build of the dependencies, once.
            .args(["--config", DEV_DEPENDENCY_OPT_LEVEL]);
    }
    for unit in units {
        command.args(["-p", &unit.package]);
    }
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(existing) if !existing.trim().is_empty() => format!("{existing} {STATIC_RUSTFLAGS}"),
        _ => STATIC_RUSTFLAGS.to_string(),
    };
    command
        .env("RUSTFLAGS", rustflags)
        .env("CARGO_TERM_PROGRESS_WHEN", "never")
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for unit in units {
        reporter.event(Event::BuildStep {
            service: unit.service.clone(),
            stage: BuildStage::Compile,
            status: StepStatus::Started,
            detail: Some(profile.describe()),
            bytes: None,
            elapsed_ms: None,
        });
    }
    let mut child = command.spawn().map_err(|e| BuildError::Cargo {
        message: format!("cannot run cargo: {e}"),
    })?;
    let stderr = child.stderr.take().expect("piped stderr");
    // cargo's own messages (not the compiler's): kept for the error, shown with -v.
    let stderr_task = tokio::spawn(async move {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            lines.push(line);
        }
        lines
    });
    let by_package: HashMap<&str, &str> = units
        .iter()
        .map(|u| (u.package.as_str(), u.service.as_str()))
        .collect();
    let mut executables = HashMap::new();
    let mut crates_done = 0u32;
    let mut errors = 0usize;
    let mut failed_services: Vec<String> = Vec::new();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stdout = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = stdout.next_line().await {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let package = package_name(&message);
        match message["reason"].as_str() {
            Some("compiler-artifact") => {
                crates_done += 1;
                let target_name = message["target"]["name"].as_str().unwrap_or_default();
                let is_bin = message["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"));
                let service = by_package.get(package.as_str()).copied();
                match (service, message["executable"].as_str()) {
                    (Some(service), Some(exe)) if is_bin && target_name == package => {
                        executables.insert(service.to_string(), PathBuf::from(exe));
                        reporter.event(Event::BuildStep {
                            service: service.to_string(),
                            stage: BuildStage::Compile,
                            status: StepStatus::Finished,
                            detail: None,
                            bytes: std::fs::metadata(exe).ok().map(|m| m.len()),
                            elapsed_ms: Some(start.elapsed().as_millis() as u64),
                        });
                    }
                    _ => reporter.event(Event::CompileProgress {
                        crates_done,
                        current: target_name.to_string(),
                    }),
                }
            }
            Some("compiler-message") => {
                let level = message["message"]["level"]
                    .as_str()
                    .unwrap_or("note")
                    .to_string();
                let rendered = message["message"]["rendered"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let service = by_package.get(package.as_str()).map(|s| s.to_string());
                if level == "error" {
                    errors += 1;
                    let who = service.clone().unwrap_or_else(|| package.clone());
                    if !failed_services.contains(&who) {
                        failed_services.push(who);
                    }
                }
                reporter.event(Event::CompilerMessage {
                    service,
                    package: package.clone(),
                    level,
                    rendered,
                });
            }
            _ => {}
        }
    }
    let status = child.wait().await.map_err(|e| BuildError::Cargo {
        message: format!("waiting for cargo: {e}"),
    })?;
    let cargo_lines = stderr_task.await.unwrap_or_default();
    for line in &cargo_lines {
        reporter.event(Event::Note {
            message: format!("cargo: {line}"),
            verbose: true,
        });
    }
    if !status.success() {
        let tail: Vec<&str> = cargo_lines
            .iter()
            .map(String::as_str)
            .filter(|l| !l.trim_start().starts_with("Compiling"))
            .collect();
        return Err(BuildError::Compile {
            services: failed_services,
            errors,
            cargo_output: tail.join("\n"),
        });
    }
    for unit in units {
        if !executables.contains_key(&unit.service) {
            return Err(BuildError::Cargo {
                message: format!(
                    "cargo built package `{}` but reported no binary named `{}` (dronectl expects the binary name to equal the package name)",
                    unit.package, unit.package
                ),
            });
        }
    }
    Ok(executables)
}

/// The package name in a cargo JSON message's `package_id`, which is either
/// `name version (source)` (old cargo) or `path+file:///dir#name@version` / `...#version`.
fn package_name(message: &serde_json::Value) -> String {
    if let Some(name) = message["target"]["name"].as_str() {
        if message["reason"] == "compiler-artifact" {
            // For artifacts the manifest path's package is what we want; fall through to the id
            // but keep the target name as a fallback.
            let id = message["package_id"].as_str().unwrap_or_default();
            return parse_package_id(id).unwrap_or_else(|| name.to_string());
        }
    }
    let id = message["package_id"].as_str().unwrap_or_default();
    parse_package_id(id).unwrap_or_default()
}

fn parse_package_id(id: &str) -> Option<String> {
    if let Some((url, fragment)) = id.split_once('#') {
        return Some(match fragment.split_once('@') {
            Some((name, _)) => name.to_string(),
            // `path+file:///x/services/account#0.1.0`: the name is the last path segment.
            None => url.rsplit('/').next()?.to_string(),
        });
    }
    id.split_whitespace().next().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::parse_package_id;

    #[test]
    fn package_ids() {
        assert_eq!(
            parse_package_id("path+file:///a/services/account#0.1.0").as_deref(),
            Some("account")
        );
        assert_eq!(
            parse_package_id("path+file:///a/crates/common#drone-common@0.1.0").as_deref(),
            Some("drone-common")
        );
        assert_eq!(
            parse_package_id("registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1")
                .as_deref(),
            Some("serde")
        );
        assert_eq!(
            parse_package_id("serde 1.0.1 (registry+https://...)").as_deref(),
            Some("serde")
        );
    }
}

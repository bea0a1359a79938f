//! `dronectl image pack`: a prebuilt Linux executable (static, or dynamic together with its
//! shared-library closure from `ldd`, the dynamic loader included) as a minimal image that
//! runs as a numeric non-root user.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::image::{self, ImageConfig, Layer, LABEL_PACKED};
use super::BuildError;
use crate::docker;
use crate::events::{BuildStage, Event, Reporter, StepStatus};

/// What to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub executable: PathBuf,
    /// `name[:tag]` (`:latest` when no tag is given).
    pub tag: String,
    /// uid and gid to run as.
    pub user: u32,
    pub allow_root: bool,
    /// Arguments after the executable.
    pub args: Vec<String>,
    /// Put the executable and `args` in the image's CMD instead of its ENTRYPOINT, so that
    /// a container command replaces them entirely (as infrastructure `command:` does).
    pub as_command: bool,
    pub expose: Vec<u16>,
    /// Working directory; created in the image, owned by `user`.
    pub workdir: Option<String>,
    /// `KEY=VALUE` environment variables.
    pub env: Vec<String>,
    /// Extra labels.
    pub labels: BTreeMap<String, String>,
}

/// Less common `pack` settings (kept apart so that [`PackOptions`] literals stay valid).
#[derive(Debug, Clone, Default)]
pub struct PackExtras {
    /// An ENTRYPOINT to use instead of the executable (the executable and `args` become
    /// the CMD), e.g. a shell wrapper from `include`.
    pub entrypoint: Vec<String>,
    /// More host files to copy at their own paths (executables with their shared
    /// libraries).
    pub include: Vec<PathBuf>,
}

/// What `pack` made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PackOutcome {
    /// `name:tag`.
    pub image: String,
    pub id: String,
    pub size: u64,
    /// Whether the executable is statically linked.
    pub static_binary: bool,
    /// The shared libraries (and loader) copied in, at their real paths.
    pub libraries: Vec<PathBuf>,
}

/// Splits and checks `name[:tag]`.
pub fn parse_reference(reference: &str) -> Result<(String, String), BuildError> {
    let bad = || BuildError::BadImageName(reference.to_string());
    let (name, tag) = match reference.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (reference, "latest"),
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.chars().all(|c| {
                    c.is_ascii_lowercase()
                        || c.is_ascii_digit()
                        || matches!(c, '.' | '_' | '-' | ':')
                })
        });
    if !name_ok {
        return Err(bad());
    }
    super::check_tag(tag)?;
    Ok((name.to_string(), tag.to_string()))
}

/// The shared libraries `ldd` lists for `exe` (absolute paths); empty for a static binary.
pub fn shared_libraries(exe: &Path) -> Result<Vec<PathBuf>, BuildError> {
    let output = Command::new("ldd")
        .arg(exe)
        .output()
        .map_err(|e| BuildError::Pack {
            path: exe.to_path_buf(),
            message: format!("cannot run ldd: {e}"),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !output.status.success() {
        return Err(BuildError::Pack {
            path: exe.to_path_buf(),
            message: format!("ldd failed: {}", text.trim()),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.contains("=> not found") {
            return Err(BuildError::Pack {
                path: exe.to_path_buf(),
                message: format!("a shared library is missing on this machine: {line}"),
            });
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim(),
            None => line,
        };
        let path = path.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Adds a host path to the layer at the same path, reproducing every symlink on the way
/// (in directories and in the file itself) and following it to the real file.
fn add_host_path(layer: &mut Layer, path: &Path, depth: usize) -> Result<(), BuildError> {
    let io = |source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    };
    if depth > 40 {
        return Err(BuildError::Pack {
            path: path.to_path_buf(),
            message: "too many levels of symbolic links".into(),
        });
    }
    let parts: Vec<Component> = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    let mut current = PathBuf::from("/");
    for (i, part) in parts.iter().enumerate() {
        let next = current.join(part);
        let rel = next
            .strip_prefix("/")
            .unwrap_or(&next)
            .to_string_lossy()
            .into_owned();
        let meta = std::fs::symlink_metadata(&next).map_err(io)?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&next).map_err(io)?;
            layer.symlink(&rel, &target.to_string_lossy()).map_err(io)?;
            let mut resolved = if target.is_absolute() {
                target
            } else {
                current.join(target)
            };
            for rest in &parts[i + 1..] {
                resolved.push(rest);
            }
            return add_host_path(layer, &normalize(&resolved), depth + 1);
        }
        if i + 1 == parts.len() {
            if meta.is_dir() {
                layer.dir(&rel, 0o755, 0).map_err(io)?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let data = std::fs::read(&next).map_err(io)?;
                layer
                    .file(&rel, &data, meta.permissions().mode() & 0o755)
                    .map_err(io)?;
            }
        } else if !layer.contains(&rel) {
            layer.dir(&rel, 0o755, 0).map_err(io)?;
        }
        current = next;
    }
    Ok(())
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(p) => out.push(p),
            _ => {}
        }
    }
    out
}

/// Packs the executable into an image tagged `options.tag`.
pub async fn pack(
    options: &PackOptions,
    reporter: &dyn Reporter,
) -> Result<PackOutcome, BuildError> {
    pack_with(options, &PackExtras::default(), reporter).await
}

/// [`pack`] with [`PackExtras`].
pub async fn pack_with(
    options: &PackOptions,
    extras: &PackExtras,
    reporter: &dyn Reporter,
) -> Result<PackOutcome, BuildError> {
    if options.user == 0 && !options.allow_root {
        return Err(BuildError::PackRoot);
    }
    let (name, tag) = parse_reference(&options.tag)?;
    for kv in &options.env {
        if !kv.split_once('=').is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }) {
            return Err(BuildError::BadValue {
                what: "--env",
                value: kv.clone(),
                why: "write KEY=VALUE",
            });
        }
    }
    if let Some(dir) = &options.workdir {
        if !dir.starts_with('/') || dir.split('/').any(|p| p == "..") {
            return Err(BuildError::BadValue {
                what: "--workdir",
                value: dir.clone(),
                why: "use an absolute path without `..`",
            });
        }
    }
    reporter.event(Event::BuildStep {
        service: name.clone(),
        stage: BuildStage::Image,
        status: StepStatus::Started,
        detail: Some(format!("packing {}", options.executable.display())),
        bytes: None,
        elapsed_ms: None,
    });
    let started = std::time::Instant::now();
    // Reading the files, `ldd` and hashing the layer are blocking work.
    let (assembled, libraries) = {
        let (job, extras) = (options.clone(), extras.clone());
        tokio::task::spawn_blocking(move || assemble(&job, &extras))
            .await
            .map_err(|e| BuildError::Pack {
                path: options.executable.clone(),
                message: format!("packing stopped: {e}"),
            })??
    };
    let size = assembled.size;
    let docker = docker::connect().await?;
    let id = image::load(&docker, assembled).await?;
    image::tag(&docker, &id, &name, &tag).await?;
    reporter.event(Event::BuildStep {
        service: name.clone(),
        stage: BuildStage::Image,
        status: StepStatus::Finished,
        detail: Some(format!("{name}:{tag}")),
        bytes: Some(size),
        elapsed_ms: Some(started.elapsed().as_millis() as u64),
    });
    Ok(PackOutcome {
        image: format!("{name}:{tag}"),
        id,
        size,
        static_binary: libraries.is_empty(),
        libraries,
    })
}

/// The image of a pack: the executable, its shared libraries and `extras.include`, and the
/// config; with the libraries found.
fn assemble(
    options: &PackOptions,
    extras: &PackExtras,
) -> Result<(image::Assembled, Vec<PathBuf>), BuildError> {
    let exe = &options.executable;
    let data = std::fs::read(exe).map_err(|source| BuildError::Io {
        path: exe.clone(),
        source,
    })?;
    if !data.starts_with(b"\x7fELF") {
        return Err(BuildError::Pack {
            path: exe.clone(),
            message: "not a Linux (ELF) executable".into(),
        });
    }
    let exe_name = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let libraries = shared_libraries(exe)?;
    let io = |source| BuildError::Io {
        path: exe.clone(),
        source,
    };
    let mut layer = Layer::new();
    layer.base(options.user).map_err(io)?;
    for lib in &libraries {
        add_host_path(&mut layer, lib, 0)?;
    }
    for extra in &extras.include {
        if !extra.is_absolute() {
            return Err(BuildError::BadValue {
                what: "--include",
                value: extra.display().to_string(),
                why: "use an absolute path",
            });
        }
        add_host_path(&mut layer, extra, 0)?;
        let is_elf = std::fs::read(extra)
            .map(|d| d.starts_with(b"\x7fELF"))
            .unwrap_or(false);
        if is_elf {
            for lib in shared_libraries(extra)? {
                add_host_path(&mut layer, &lib, 0)?;
            }
        }
    }
    let target = format!("/usr/local/bin/{exe_name}");
    layer.file(&target, &data, 0o755).map_err(io)?;
    if let Some(dir) = &options.workdir {
        layer.dir(dir, 0o755, options.user).map_err(io)?;
    }
    let mut argv = vec![target];
    argv.extend(options.args.iter().cloned());
    let mut env = vec!["PATH=/usr/local/bin:/usr/bin:/bin".to_string()];
    env.extend(options.env.iter().cloned());
    let mut labels = options.labels.clone();
    labels.insert(LABEL_PACKED.into(), exe_name.clone());
    let (entrypoint, cmd) = if !extras.entrypoint.is_empty() {
        (extras.entrypoint.clone(), argv)
    } else if options.as_command {
        (Vec::new(), argv)
    } else {
        (argv, Vec::new())
    };
    let config = ImageConfig {
        entrypoint,
        cmd,
        env,
        user: options.user,
        workdir: options.workdir.clone(),
        exposed_ports: options.expose.clone(),
        labels,
        created: image::rfc3339(
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
        ),
    };
    let assembled = image::assemble(layer.finish().map_err(io)?, &config).map_err(io)?;
    Ok((assembled, libraries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("redis:7").unwrap(),
            ("redis".into(), "7".into())
        );
        assert_eq!(
            parse_reference("127.0.0.1:5000/x/y").unwrap(),
            ("127.0.0.1:5000/x/y".into(), "latest".into())
        );
        assert!(parse_reference("Redis:7").is_err());
        assert!(parse_reference("redis:-x").is_err());
    }

    #[test]
    fn ldd_closure_of_a_dynamic_binary() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        let mut layer = Layer::new();
        for lib in &libs {
            add_host_path(&mut layer, lib, 0).unwrap();
        }
        assert!(!layer.finish().unwrap().is_empty());
    }
}

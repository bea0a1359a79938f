//! Images: assembling a minimal image ourselves (one deterministic layer, an OCI config)
//! and loading it into the engine, building a service's own Dockerfile, tagging, pushing.
//!
//! An assembled image is a `docker save`-format archive: `manifest.json`, the config JSON,
//! and one layer tar whose entries all have mtime 0 and owner 0:0. The image id is the
//! SHA-256 of the config bytes, so the same binary with the same labels gives the same
//! image id on every machine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use bollard::Docker;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::inputs::hex;
use super::BuildError;
use crate::docker::DockerError;

/// The uid and gid images run as unless told otherwise (distroless' "nonroot").
pub const DEFAULT_USER: u32 = 65532;

/// Label keys.
pub const LABEL_APP: &str = "dev.dronectl.app";
pub const LABEL_SERVICE: &str = "dev.dronectl.service";
pub const LABEL_INPUTS: &str = "dev.dronectl.inputs-hash";
pub const LABEL_PACKED: &str = "dev.dronectl.packed";

/// One image layer under construction. Entries are written in call order with fixed
/// metadata; parent directories are added automatically.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
    seen: BTreeSet<String>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        Layer {
            builder,
            seen: BTreeSet::new(),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(uid.into());
        header.set_gid(uid.into());
        header.set_mtime(0);
        header.set_size(size);
        header
    }

    fn parents(&mut self, path: &str) -> std::io::Result<()> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        for i in 1..parts.len() {
            let dir = parts[..i].join("/");
            if !self.seen.contains(&dir) {
                self.dir(&dir, 0o755, 0)?;
            }
        }
        Ok(())
    }

    /// A directory owned by `uid`.
    pub fn dir(&mut self, path: &str, mode: u32, uid: u32) -> std::io::Result<()> {
        let path = path.trim_matches('/').to_string();
        if path.is_empty() || self.seen.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        let mut header = Self::header(tar::EntryType::Directory, mode, uid, 0);
        self.builder
            .append_data(&mut header, format!("{path}/"), std::io::empty())?;
        self.seen.insert(path);
        Ok(())
    }

    /// A regular file owned by root.
    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
        let path = path.trim_matches('/').to_string();
        if self.seen.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        let mut header = Self::header(tar::EntryType::Regular, mode, 0, data.len() as u64);
        self.builder.append_data(&mut header, &path, data)?;
        self.seen.insert(path);
        Ok(())
    }

    /// A symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let path = path.trim_matches('/').to_string();
        if self.seen.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0, 0);
        self.builder.append_link(&mut header, &path, target)?;
        self.seen.insert(path);
        Ok(())
    }

    /// Whether `path` is already in the layer.
    pub fn contains(&self, path: &str) -> bool {
        self.seen.contains(path.trim_matches('/'))
    }

    /// The base every image gets: /etc/passwd and /etc/group naming the user, and /tmp.
    pub fn base(&mut self, uid: u32) -> std::io::Result<()> {
        let passwd = if uid == 0 {
            "root:x:0:0:root:/root:/sbin/nologin\n".to_string()
        } else {
            format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{uid}:{uid}:nonroot:/home/nonroot:/sbin/nologin\n")
        };
        let group = if uid == 0 {
            "root:x:0:\n".to_string()
        } else {
            format!("root:x:0:\nnonroot:x:{uid}:\n")
        };
        self.file("etc/passwd", passwd.as_bytes(), 0o644)?;
        self.file("etc/group", group.as_bytes(), 0o644)?;
        self.dir("tmp", 0o1777, 0)?;
        if uid != 0 {
            self.dir("home/nonroot", 0o755, uid)?;
        }
        Ok(())
    }

    pub fn finish(self) -> std::io::Result<Vec<u8>> {
        self.builder.into_inner()
    }
}

/// The runtime configuration of an assembled image.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: u32,
    pub workdir: Option<String>,
    pub exposed_ports: Vec<u16>,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339 creation time (derived from the git commit, never the wall clock).
    pub created: String,
}

/// An assembled image, ready to load.
pub struct Assembled {
    /// `sha256:<hex>` of the config: the engine's image id.
    pub id: String,
    /// The `docker save`-format archive.
    pub archive: Vec<u8>,
    /// The layer's size in bytes (the image's size).
    pub size: u64,
}

/// Builds the `docker save` archive of a one-layer image.
pub fn assemble(layer: Vec<u8>, config: &ImageConfig) -> std::io::Result<Assembled> {
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&layer)));
    let mut container = serde_json::Map::new();
    container.insert("User".into(), format!("{0}:{0}", config.user).into());
    if !config.exposed_ports.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = config
            .exposed_ports
            .iter()
            .map(|p| (format!("{p}/tcp"), serde_json::json!({})))
            .collect();
        container.insert("ExposedPorts".into(), ports.into());
    }
    container.insert("Env".into(), serde_json::json!(config.env));
    if !config.entrypoint.is_empty() {
        container.insert("Entrypoint".into(), serde_json::json!(config.entrypoint));
    }
    if !config.cmd.is_empty() {
        container.insert("Cmd".into(), serde_json::json!(config.cmd));
    }
    container.insert(
        "WorkingDir".into(),
        config.workdir.clone().unwrap_or_else(|| "/".into()).into(),
    );
    container.insert("Labels".into(), serde_json::json!(config.labels));
    let image_config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": config.created,
        "author": "dronectl",
        "config": container,
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{ "created": config.created, "created_by": "dronectl (assembled image)" }],
    });
    let config_bytes = serde_json::to_vec(&image_config).map_err(std::io::Error::other)?;
    let config_hex = hex(&Sha256::digest(&config_bytes));
    let layer_hex = &diff_id["sha256:".len()..];
    let manifest = serde_json::json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": null,
        "Layers": [format!("{layer_hex}/layer.tar")],
    }]);
    let size = layer.len() as u64;
    let mut archive = Layer::new();
    archive.file(&format!("{config_hex}.json"), &config_bytes, 0o644)?;
    archive.file(&format!("{layer_hex}/layer.tar"), &layer, 0o644)?;
    archive.file(
        "manifest.json",
        &serde_json::to_vec(&manifest).map_err(std::io::Error::other)?,
        0o644,
    )?;
    Ok(Assembled {
        id: format!("sha256:{config_hex}"),
        archive: archive.finish()?,
        size,
    })
}

/// Loads an assembled image into the engine (untagged) and returns its id.
pub async fn load(docker: &Docker, image: Assembled) -> Result<String, DockerError> {
    let options = bollard::query_parameters::ImportImageOptionsBuilder::default()
        .quiet(true)
        .build();
    let mut stream = docker.import_image(
        options,
        bollard::body_full(bytes::Bytes::from(image.archive)),
        None,
    );
    while let Some(item) = stream.next().await {
        item?;
    }
    // The engine keeps the config bytes as given, so the id is ours; check it is there.
    docker.inspect_image(&image.id).await?;
    Ok(image.id)
}

/// Builds a service's own Dockerfile (context: its directory) untagged, with `labels`.
/// Returns the image id; `output` receives the builder's output lines.
pub async fn build_dockerfile(
    docker: &Docker,
    service: &str,
    dir: &Path,
    labels: &BTreeMap<String, String>,
    mut output: impl FnMut(&str),
) -> Result<String, BuildError> {
    let context = context_tar(dir).map_err(|source| BuildError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let labels: HashMap<String, String> = labels.clone().into_iter().collect();
    let options = bollard::query_parameters::BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    let mut stream = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    let mut id = None;
    let mut transcript = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for line in text.lines().filter(|l| !l.trim().is_empty()) {
                        output(line);
                        transcript.push_str(line);
                        transcript.push('\n');
                    }
                }
                if let Some(aux) = info.aux.and_then(|a| a.id) {
                    id = Some(aux);
                }
            }
            Err(e) => {
                return Err(BuildError::ImageBuild {
                    service: service.to_string(),
                    message: format!("{}\n{transcript}", docker_message(&e)),
                })
            }
        }
    }
    id.ok_or_else(|| BuildError::ImageBuild {
        service: service.to_string(),
        message: format!("the engine reported no image id\n{transcript}"),
    })
}

/// The text of an engine error, without bollard's wrapping.
pub fn docker_message(err: &bollard::errors::Error) -> String {
    match err {
        bollard::errors::Error::DockerStreamError { error } => error.clone(),
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// A tar of `dir` for a Docker build context, without `target/` and `.git/`.
fn context_tar(dir: &Path) -> std::io::Result<Vec<u8>> {
    fn walk(root: &Path, dir: &Path, layer: &mut Layer) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name();
            if name == "target" || name == ".git" {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                layer.dir(&rel, 0o755, 0)?;
                walk(root, &path, layer)?;
            } else if kind.is_symlink() {
                let target = std::fs::read_link(&path)?;
                layer.symlink(&rel, &target.to_string_lossy())?;
            } else {
                use std::os::unix::fs::PermissionsExt;
                let mode = entry.metadata()?.permissions().mode() & 0o777;
                layer.file(&rel, &std::fs::read(&path)?, mode)?;
            }
        }
        Ok(())
    }
    let mut layer = Layer::new();
    walk(dir, dir, &mut layer)?;
    layer.finish()
}

/// Tags image `id` as `repository:tag`.
pub async fn tag(
    docker: &Docker,
    id: &str,
    repository: &str,
    tag: &str,
) -> Result<(), DockerError> {
    let options = bollard::query_parameters::TagImageOptionsBuilder::default()
        .repo(repository)
        .tag(tag)
        .build();
    docker.tag_image(id, Some(options)).await?;
    Ok(())
}

/// Pushes `repository:tag` and returns the registry's manifest digest. `progress` gets the
/// bytes pushed so far and the total known so far.
pub async fn push(
    docker: &Docker,
    repository: &str,
    tag: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
    mut progress: impl FnMut(u64, u64),
) -> Result<String, bollard::errors::Error> {
    let options = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let mut stream = docker.push_image(repository, Some(options), credentials);
    let mut digest = None;
    let mut layers: HashMap<String, (u64, u64)> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item?;
        if let Some(status) = info.status.as_deref() {
            // "0.1.0-abc1234: digest: sha256:… size: 528"
            if let Some(rest) = status.split("digest: ").nth(1) {
                digest = rest.split_whitespace().next().map(str::to_string);
            }
        }
        if let (Some(detail), Some(id)) = (info.progress_detail, info.status.as_ref()) {
            if let (Some(current), Some(total)) = (detail.current, detail.total) {
                layers.insert(id.clone(), (current.max(0) as u64, total.max(0) as u64));
                let (done, total) = layers
                    .values()
                    .fold((0, 0), |(d, t), (c, tt)| (d + c, t + tt));
                progress(done, total);
            }
        }
    }
    digest.ok_or_else(|| bollard::errors::Error::DockerStreamError {
        error: "the registry reported no manifest digest".into(),
    })
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-11-22T00:25:00Z`); a time outside the
/// years -9999 to 9999 is taken as the nearest end of that range.
pub fn rfc3339(secs: i64) -> String {
    let (min, max) = (
        jiff::Timestamp::MIN.as_second(),
        jiff::Timestamp::MAX.as_second(),
    );
    jiff::Timestamp::from_second(secs.clamp(min, max))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_307_100), "2026-11-22T00:25:00Z");
    }

    #[test]
    fn assembled_images_are_deterministic() {
        let build = || {
            let mut layer = Layer::new();
            layer.base(DEFAULT_USER).unwrap();
            layer
                .file("usr/local/bin/svc", b"\x7fELF...", 0o755)
                .unwrap();
            let config = ImageConfig {
                entrypoint: vec!["/usr/local/bin/svc".into()],
                user: DEFAULT_USER,
                created: rfc3339(1_700_000_000),
                ..Default::default()
            };
            assemble(layer.finish().unwrap(), &config).unwrap()
        };
        let (a, b) = (build(), build());
        assert_eq!(a.id, b.id);
        assert_eq!(a.archive, b.archive);
    }
}

//! What a service's image is made from, and a content hash of it.
//!
//! A service's inputs are: the files of its crate directory, the files of every local
//! crate it depends on (path and `workspace = true` path dependencies, transitively), the
//! workspace `Cargo.lock` and `Cargo.toml`, the manifest settings that reach the image
//! (path, port, template), and dronectl's version. The hash of those is the image's
//! `dev.dronectl.inputs-hash` label: a service whose hash matches an existing image is
//! up to date and is not built again.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BuildError;
use crate::manifest::{Manifest, Service};

/// Bumped whenever the image layout dronectl produces changes, so that old images are
/// no longer taken as up to date.
pub const IMAGE_FORMAT: u32 = 1;

/// Directory names never taken as inputs.
const SKIPPED_DIRS: &[&str] = &["target", ".git", ".dronectl", "node_modules"];

/// The inputs of one service, resolved to files and directories on disk.
#[derive(Debug, Clone)]
pub struct ServiceInputs {
    /// The service's name in the manifest.
    pub service: String,
    /// Its crate directory (absolute).
    pub dir: PathBuf,
    /// The Cargo workspace root (absolute), the app dir when the service has no Cargo.toml.
    pub workspace: PathBuf,
    /// The crate's package name and version (from its Cargo.toml), if it is a Rust crate.
    pub package: Option<String>,
    pub version: String,
    /// The service has its own Dockerfile (built from it, context = its directory).
    pub dockerfile: bool,
    /// Directories whose files are inputs (the crate and its local dependencies).
    pub dirs: Vec<PathBuf>,
    /// Single files that are inputs (workspace Cargo.toml and Cargo.lock).
    pub files: Vec<PathBuf>,
    /// The service's image-relevant manifest settings, as text.
    pub settings: String,
    /// Whether the image needs CA certificates (the crate uses the system's roots).
    pub needs_ca_certs: bool,
}

impl ServiceInputs {
    /// Every input path (directories and files), absolute.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.dirs
            .iter()
            .chain(self.files.iter())
            .map(PathBuf::as_path)
    }

    /// The content hash of every input, as lowercase hex (64 chars).
    pub fn hash(&self) -> Result<String, BuildError> {
        let mut hasher = Sha256::new();
        hasher.update(format!(
            "dronectl {} image-format {IMAGE_FORMAT}\n",
            env!("CARGO_PKG_VERSION")
        ));
        hasher.update(format!("settings {}\n", self.settings));
        let mut files = BTreeSet::new();
        for dir in &self.dirs {
            collect_files(dir, &mut files)?;
        }
        for file in &self.files {
            if file.is_file() {
                files.insert(file.clone());
            }
        }
        let mut buf = Vec::new();
        for file in &files {
            let rel = file.strip_prefix(&self.workspace).unwrap_or(file);
            buf.clear();
            std::fs::File::open(file)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(|source| BuildError::Io {
                    path: file.clone(),
                    source,
                })?;
            hasher.update(format!("file {} {}\n", rel.display(), buf.len()));
            hasher.update(&buf);
        }
        Ok(hex(&hasher.finalize()))
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn collect_files(dir: &Path, out: &mut BTreeSet<PathBuf>) -> Result<(), BuildError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(BuildError::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| BuildError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| BuildError::Io {
            path: path.clone(),
            source,
        })?;
        let name = entry.file_name();
        if kind.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                collect_files(&path, out)?;
            }
        } else if kind.is_file() || (kind.is_symlink() && path.is_file()) {
            out.insert(path);
        }
    }
    Ok(())
}

/// Resolves the inputs of a service of the manifest in `app_dir`.
pub fn resolve(app_dir: &Path, name: &str, service: &Service) -> Result<ServiceInputs, BuildError> {
    let dir = app_dir.join(service.path.value.as_str());
    let cargo_toml = dir.join("Cargo.toml");
    let dockerfile = dir.join("Dockerfile").is_file();
    let settings = format!(
        "path={} port={} template={}",
        service.path.value,
        service.port,
        service.template.as_deref().unwrap_or("")
    );
    if !cargo_toml.is_file() {
        if !dockerfile {
            return Err(BuildError::NoRecipe {
                service: name.to_string(),
                dir,
            });
        }
        return Ok(ServiceInputs {
            service: name.to_string(),
            dir: dir.clone(),
            workspace: app_dir.to_path_buf(),
            package: None,
            version: "0.0.0".into(),
            dockerfile,
            dirs: vec![dir],
            files: Vec::new(),
            settings,
            needs_ca_certs: false,
        });
    }
    let workspace = find_workspace_root(&dir, app_dir);
    let doc = read_toml(&cargo_toml)?;
    let ws_doc = read_toml(&workspace.join("Cargo.toml"))?;
    let package = doc
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let version = match doc.get("package").and_then(|p| p.get("version")) {
        Some(v) if v.as_str().is_some() => v.as_str().unwrap_or_default().to_string(),
        // `version.workspace = true`
        Some(_) => ws_doc
            .get("workspace")
            .and_then(|w| w.get("package"))
            .and_then(|p| p.get("version"))
            .and_then(|v| v.as_str())
            .unwrap_or("0.0.0")
            .to_string(),
        None => "0.0.0".to_string(),
    };
    let mut dirs = vec![dir.clone()];
    let mut needs_ca_certs = uses_system_roots(&doc);
    let mut queue = vec![(dir.clone(), doc)];
    while let Some((crate_dir, doc)) = queue.pop() {
        for dep_dir in local_dependencies(&crate_dir, &doc, &workspace, &ws_doc) {
            let dep_dir = normalize(&dep_dir);
            if dirs.contains(&dep_dir) {
                continue;
            }
            dirs.push(dep_dir.clone());
            if let Ok(dep_doc) = read_toml(&dep_dir.join("Cargo.toml")) {
                needs_ca_certs |= uses_system_roots(&dep_doc);
                queue.push((dep_dir, dep_doc));
            }
        }
    }
    needs_ca_certs |= uses_system_roots(&ws_doc);
    Ok(ServiceInputs {
        service: name.to_string(),
        dir,
        files: vec![workspace.join("Cargo.toml"), workspace.join("Cargo.lock")],
        workspace,
        package,
        version,
        dockerfile,
        dirs,
        settings,
        needs_ca_certs,
    })
}

/// Resolves the inputs of every named service.
pub fn resolve_all(
    app_dir: &Path,
    manifest: &Manifest,
    names: &[String],
) -> Result<Vec<ServiceInputs>, BuildError> {
    names
        .iter()
        .map(|name| {
            let service = &manifest.services[name.as_str()].value;
            resolve(app_dir, name, service)
        })
        .collect()
}

/// The nearest directory from `dir` up to `app_dir` whose Cargo.toml has `[workspace]`.
fn find_workspace_root(dir: &Path, app_dir: &Path) -> PathBuf {
    for candidate in dir.ancestors() {
        let is_root = read_toml(&candidate.join("Cargo.toml"))
            .is_ok_and(|doc| doc.get("workspace").is_some());
        if is_root {
            return candidate.to_path_buf();
        }
        if candidate == app_dir {
            break;
        }
    }
    if app_dir.join("Cargo.toml").is_file() {
        app_dir.to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn read_toml(path: &Path) -> Result<toml_edit::DocumentMut, BuildError> {
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse()
        .map_err(|e: toml_edit::TomlError| BuildError::Cargo {
            message: format!("{}: {e}", path.display()),
        })
}

/// Directories of the local crates `doc` depends on (not dev-dependencies: they do not go
/// into the binary).
fn local_dependencies(
    crate_dir: &Path,
    doc: &toml_edit::DocumentMut,
    workspace: &Path,
    ws_doc: &toml_edit::DocumentMut,
) -> Vec<PathBuf> {
    let mut tables: Vec<&dyn toml_edit::TableLike> = Vec::new();
    for key in ["dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(key).and_then(|t| t.as_table_like()) {
            tables.push(t);
        }
    }
    if let Some(targets) = doc.get("target").and_then(|t| t.as_table_like()) {
        for (_, target) in targets.iter() {
            for key in ["dependencies", "build-dependencies"] {
                if let Some(t) = target.get(key).and_then(|t| t.as_table_like()) {
                    tables.push(t);
                }
            }
        }
    }
    let ws_deps = ws_doc
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table_like());
    let mut out = Vec::new();
    for table in tables {
        for (name, dep) in table.iter() {
            let Some(dep) = dep.as_table_like() else {
                continue;
            };
            if let Some(path) = dep.get("path").and_then(|p| p.as_str()) {
                out.push(crate_dir.join(path));
            } else if dep
                .get("workspace")
                .and_then(|w| w.as_bool())
                .unwrap_or(false)
            {
                if let Some(path) = ws_deps
                    .and_then(|d| d.get(name))
                    .and_then(|d| d.as_table_like())
                    .and_then(|d| d.get("path"))
                    .and_then(|p| p.as_str())
                {
                    out.push(workspace.join(path));
                }
            }
        }
    }
    out
}

/// Whether the crate asks for the operating system's CA roots (rustls native roots or
/// native-tls), in which case the image gets the host's CA bundle. rustls with the
/// bundled webpki roots (the template's default) needs no files.
fn uses_system_roots(doc: &toml_edit::DocumentMut) -> bool {
    let text = doc.to_string();
    [
        "rustls-tls-native-roots",
        "native-tls",
        "rustls-native-certs",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

/// `a/b/../c` → `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

//! Which services a build takes: named ones (all when none are), the ones changed since a
//! git revision (`--changed-since`), and the check of a `--tag`.

use std::path::{Path, PathBuf};

use super::git::GitInfo;
use super::inputs::{self, ServiceInputs};
use super::BuildError;
use crate::manifest::{LoadedManifest, Manifest};

/// The services `names` picks out of the manifest (all of them when empty), in manifest
/// order.
pub fn select_services(manifest: &Manifest, names: &[String]) -> Result<Vec<String>, BuildError> {
    let known: Vec<String> = manifest.services.keys().cloned().collect();
    for name in names {
        if !manifest.services.contains_key(name.as_str()) {
            return Err(BuildError::UnknownService {
                name: name.clone(),
                known,
            });
        }
    }
    Ok(known
        .into_iter()
        .filter(|k| names.is_empty() || names.contains(k))
        .collect())
}

/// The services of the app in `app_dir` whose inputs (files, local crates, workspace
/// Cargo.toml/Cargo.lock, manifest settings) differ between git revision `since` and the
/// working tree, uncommitted changes included. Services new since then count as changed.
pub fn changed_services(app_dir: &Path, since: &str) -> Result<Vec<String>, BuildError> {
    let app_dir = canonical(app_dir);
    let loaded = LoadedManifest::read_valid(&app_dir)?;
    let names = select_services(&loaded.manifest, &[])?;
    let inputs = inputs::resolve_all(&app_dir, &loaded.manifest, &names)?;
    let git = GitInfo::discover(&app_dir)?.ok_or(BuildError::NotGit {
        dir: app_dir.clone(),
    })?;
    changed_among(&git, &loaded, &inputs, since)
}

pub(super) fn changed_among(
    git: &GitInfo,
    loaded: &LoadedManifest,
    inputs: &[ServiceInputs],
    since: &str,
) -> Result<Vec<String>, BuildError> {
    let changed = git.changed_paths(since)?;
    let manifest_rel = git.relative_path(&loaded.path);
    let old_manifest = match &manifest_rel {
        Some(rel) if changed.contains(rel) => Some(
            git.file_at(since, &loaded.path)
                .and_then(|text| crate::manifest::parse(&loaded.path, &text).ok()),
        ),
        _ => None,
    };
    Ok(inputs
        .iter()
        .filter(|i| {
            if git.touches(i, &changed) {
                return true;
            }
            match &old_manifest {
                None => false,
                // The manifest changed: compare this service's settings then and now.
                Some(None) => true,
                Some(Some(old)) => match old.services.get(i.service.as_str()) {
                    None => true,
                    Some(old_service) => {
                        inputs::resolve(&loaded.dir, &i.service, &old_service.value)
                            .map(|o| o.settings != i.settings)
                            .unwrap_or(true)
                    }
                },
            }
        })
        .map(|i| i.service.clone())
        .collect())
}

pub(super) fn canonical(dir: &Path) -> PathBuf {
    dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf())
}

/// Checks a Docker tag.
pub fn check_tag(tag: &str) -> Result<(), BuildError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(BuildError::BadTag(tag.to_string()))
    }
}

//! `dronectl ci init`: a CI/CD pipeline for the app, for GitHub Actions, GitLab CI or Azure
//! Pipelines. Every pipeline runs validate → test → build on every push and, on the main
//! branch, builds what changed, pushes, deploys to staging with a canary and waits, then
//! (after a manual approval) deploys to production — calling only dronectl.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::UsageError;
use crate::events::{Event, Reporter};
use crate::manifest::LoadedManifest;

/// A CI provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    Github,
    Gitlab,
    AzurePipelines,
}

impl Provider {
    /// Where the provider reads its pipeline, relative to the repository root.
    pub fn path(self) -> &'static str {
        match self {
            Provider::Github => ".github/workflows/dronectl.yml",
            Provider::Gitlab => ".gitlab-ci.yml",
            Provider::AzurePipelines => "azure-pipelines.yml",
        }
    }

    fn template(self) -> &'static str {
        match self {
            Provider::Github => "ci/github.yml.tera",
            Provider::Gitlab => "ci/gitlab.yml.tera",
            Provider::AzurePipelines => "ci/azure-pipelines.yml.tera",
        }
    }
}

/// Options of `ci init`.
#[derive(Debug, Clone)]
pub struct CiInitOptions {
    pub app_dir: PathBuf,
    pub provider: Provider,
    /// The branch that deploys (default: the repository's current branch, else `main`).
    pub branch: Option<String>,
    pub staging: String,
    pub production: String,
    /// Replace an existing pipeline file.
    pub force: bool,
    pub dry_run: bool,
}

/// What `ci init` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CiInitOutcome {
    pub provider: Provider,
    pub path: PathBuf,
    pub branch: String,
    pub contents: String,
    pub dry_run: bool,
}

/// Renders the pipeline for `provider` (no file is touched).
pub fn render(
    manifest: &LoadedManifest,
    provider: Provider,
    branch: &str,
    staging: &str,
    production: &str,
) -> anyhow::Result<String> {
    let template = crate::scaffold::embedded_file(provider.template())
        .ok_or_else(|| anyhow::anyhow!("missing pipeline template {}", provider.template()))?;
    let mut context = tera::Context::new();
    context.insert("app", &manifest.manifest.app.value);
    context.insert("branch", branch);
    context.insert("staging", staging);
    context.insert("production", production);
    context.insert(
        "services",
        &manifest.manifest.services.keys().collect::<Vec<_>>(),
    );
    context.insert("dronectl_version", env!("CARGO_PKG_VERSION"));
    let text = std::str::from_utf8(template)?;
    Ok(tera::Tera::one_off(text, &context, false)?)
}

/// Writes the pipeline file (atomically; an existing one only with `force`).
pub fn init(opts: &CiInitOptions, reporter: &dyn Reporter) -> anyhow::Result<CiInitOutcome> {
    let manifest = LoadedManifest::read_valid(&opts.app_dir)?;
    for (role, env) in [("staging", &opts.staging), ("production", &opts.production)] {
        crate::names::validate_label(env).map_err(|e| UsageError(format!("--{role}: {e}")))?;
        if !manifest.manifest.environments.contains_key(env.as_str()) {
            reporter.event(Event::Note {
                message: format!("dronectl.yaml has no environment `{env}` yet; add it (target, registry, context, namespace) before the pipeline runs"),
                verbose: false,
            });
        }
    }
    let branch = match &opts.branch {
        Some(b) => b.clone(),
        None => current_branch(&opts.app_dir).unwrap_or_else(|| "main".to_string()),
    };
    let contents = render(
        &manifest,
        opts.provider,
        &branch,
        &opts.staging,
        &opts.production,
    )?;
    let root = repository_root(&opts.app_dir);
    let path = root.join(opts.provider.path());
    if path.exists() && !opts.force && !opts.dry_run {
        return Err(UsageError(format!(
            "{} already exists; pass --force to replace it",
            path.display()
        ))
        .into());
    }
    reporter.event(Event::File {
        path: path.clone(),
        dry_run: opts.dry_run,
    });
    if !opts.dry_run {
        let dir = path.parent().unwrap_or(&root);
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, contents.as_bytes())?;
        {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        tmp.persist(&path).map_err(|e| e.error)?;
    }
    Ok(CiInitOutcome {
        provider: opts.provider,
        path,
        branch,
        contents,
        dry_run: opts.dry_run,
    })
}

fn repository_root(dir: &Path) -> PathBuf {
    git2::Repository::discover(dir)
        .ok()
        .and_then(|r| r.workdir().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_path_buf())
}

fn current_branch(dir: &Path) -> Option<String> {
    let repo = git2::Repository::discover(dir).ok()?;
    let head = repo.head().ok()?;
    head.shorthand().ok().map(str::to_string)
}

/// A `run:` step of a GitHub workflow job.
#[derive(Debug, Clone)]
pub struct PipelineStep {
    pub name: String,
    pub run: String,
    pub env: BTreeMap<String, String>,
}

/// The pipeline's `run:` steps for a job, for running a generated GitHub workflow as a
/// script (tests do this against the local target).
pub fn github_job_steps(workflow: &str, job: &str) -> anyhow::Result<Vec<PipelineStep>> {
    let doc: serde_json::Value = serde_saphyr::from_str(workflow)?;
    let steps = doc["jobs"][job]["steps"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no job `{job}`"))?;
    Ok(steps
        .iter()
        .filter_map(|s| {
            let run = s["run"].as_str()?.to_string();
            let name = s["name"].as_str().unwrap_or("step").to_string();
            let env = s["env"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Some(PipelineStep { name, run, env })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> LoadedManifest {
        let text = "app: shop\nservices:\n  api: { path: services/api }\nenvironments:\n  staging: { target: docker }\n";
        LoadedManifest {
            path: "dronectl.yaml".into(),
            dir: ".".into(),
            text: text.into(),
            manifest: crate::manifest::parse(Path::new("dronectl.yaml"), text).unwrap(),
        }
    }

    #[test]
    fn every_provider_renders_yaml() {
        for provider in [Provider::Github, Provider::Gitlab, Provider::AzurePipelines] {
            let text = render(&manifest(), provider, "main", "staging", "production").unwrap();
            let parsed: serde_json::Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{provider:?}: {e}\n{text}"));
            assert!(parsed.is_object());
            assert!(
                text.contains(
                    "dronectl --env staging -o json deploy --artifacts build.json --canary"
                ),
                "{provider:?}"
            );
        }
    }

    #[test]
    fn github_steps_are_extracted() {
        let text = render(
            &manifest(),
            Provider::Github,
            "main",
            "staging",
            "production",
        )
        .unwrap();
        let steps = github_job_steps(&text, "staging").unwrap();
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert!(names.contains(&"Build what changed and push"), "{names:?}");
        assert!(
            names.contains(&"Deploy to staging with a canary and wait"),
            "{names:?}"
        );
        assert!(text.contains("${{ github.event.before }}"));
    }
}

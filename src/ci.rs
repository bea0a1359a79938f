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

/// The Rust toolchain the pipelines install (GitHub, Azure) or run in (GitLab's
/// `rust:<version>-bookworm` image): pinned, never `latest`, so a pipeline builds the same
/// way until someone changes this line of the pipeline on purpose.
pub const RUST_VERSION: &str = "1.95";

/// The actions the GitHub workflow uses: GitHub's own only (no third-party action runs with
/// the job's secrets), each at a major whose `action.yml` declares `runs.using: node24`
/// (Node 20 actions are deprecated on hosted runners). The toolchain comes from `rustup`,
/// which the hosted runners ship, instead of a third-party setup action.
pub const GITHUB_ACTIONS: [(&str, &str); 3] = [
    ("checkout", "actions/checkout@v7"),
    ("cache", "actions/cache@v5"),
    ("upload_artifact", "actions/upload-artifact@v7"),
];

/// Why a value cannot go into a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineValueError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error(
        "contains {0:?}: pipeline values may hold only ASCII letters, digits, `.`, `_`, `-` and `/`"
    )]
    BadChar(char),
    #[error("starts with `-`")]
    LeadingDash,
    #[error("names a full ref; give the branch name without `refs/`")]
    FullRef,
    #[error("is not a valid git branch name (see `git check-ref-format`)")]
    NotARefName,
}

/// The longest branch name accepted (git has no limit; CI providers and humans do).
const MAX_BRANCH_LEN: usize = 200;

/// Checks that `branch` is a git branch name (`git check-ref-format --branch` rules: no `..`,
/// no `@{`, no component starting with `.` or ending in `.lock`, no `//`, no trailing `/` or
/// `.`, not `HEAD`, not starting with `-`) made only of characters that mean nothing to
/// YAML, to the providers' expression languages and to a shell: ASCII letters, digits, `.`,
/// `_`, `-` and `/`. Anything else is refused rather than escaped, so a branch can never
/// carry a quote, `||`, a newline, `$`, `${{`, a backtick or a space into a pipeline.
pub fn validate_branch(branch: &str) -> Result<(), PipelineValueError> {
    if branch.is_empty() {
        return Err(PipelineValueError::Empty);
    }
    if branch.len() > MAX_BRANCH_LEN {
        return Err(PipelineValueError::TooLong {
            max: MAX_BRANCH_LEN,
        });
    }
    if let Some(ch) = branch
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')))
    {
        return Err(PipelineValueError::BadChar(ch));
    }
    if branch.starts_with('-') {
        return Err(PipelineValueError::LeadingDash);
    }
    if branch == "refs" || branch.starts_with("refs/") {
        return Err(PipelineValueError::FullRef);
    }
    if branch == "HEAD" || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
        return Err(PipelineValueError::NotARefName);
    }
    Ok(())
}

/// The values a pipeline is rendered from, each checked before it reaches a template.
struct PipelineValues<'a> {
    app: &'a str,
    branch: &'a str,
    staging: &'a str,
    production: &'a str,
}

impl PipelineValues<'_> {
    fn validate(&self) -> Result<(), UsageError> {
        validate_branch(self.branch)
            .map_err(|e| UsageError(format!("--branch `{}` {e}", self.branch.escape_debug())))?;
        for (what, value) in [
            ("--staging", self.staging),
            ("--production", self.production),
            ("the app name", self.app),
        ] {
            crate::names::validate_label(value).map_err(|e| UsageError(format!("{what}: {e}")))?;
        }
        Ok(())
    }
}

/// Renders the pipeline for `provider` (no file is touched). Every value is validated first
/// (a bad one is a [`UsageError`]); the templates quote each one in YAML and never put one
/// into a script: scripts read them from pipeline variables, double-quoted.
pub fn render(
    manifest: &LoadedManifest,
    provider: Provider,
    branch: &str,
    staging: &str,
    production: &str,
) -> anyhow::Result<String> {
    PipelineValues {
        app: &manifest.manifest.app.value,
        branch,
        staging,
        production,
    }
    .validate()?;
    let template = crate::scaffold::embedded_file(provider.template())
        .ok_or_else(|| anyhow::anyhow!("missing pipeline template {}", provider.template()))?;
    let mut context = tera::Context::new();
    context.insert("app", &manifest.manifest.app.value);
    context.insert("branch", branch);
    context.insert("staging", staging);
    context.insert("production", production);
    context.insert("dronectl_version", env!("CARGO_PKG_VERSION"));
    context.insert("rust_version", RUST_VERSION);
    context.insert(
        "actions",
        &GITHUB_ACTIONS.into_iter().collect::<BTreeMap<_, _>>(),
    );
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
        None => {
            let current = current_branch(&opts.app_dir).unwrap_or_else(|| "main".to_string());
            validate_branch(&current).map_err(|e| {
                UsageError(format!(
                    "the current git branch `{}` {e}; pass --branch with the branch that deploys",
                    current.escape_debug()
                ))
            })?;
            current
        }
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
    /// The step's environment as the runner builds it: the workflow's `env:`, then the
    /// job's, then the step's (later ones win). Values are as written: an expression such
    /// as `${{ secrets.X }}` is left for the caller to evaluate.
    pub env: BTreeMap<String, String>,
}

/// The pipeline's `run:` steps for a job, for running a generated GitHub workflow as a
/// script (tests do this against the local target).
pub fn github_job_steps(workflow: &str, job: &str) -> anyhow::Result<Vec<PipelineStep>> {
    let doc: serde_json::Value = serde_saphyr::from_str(workflow)?;
    let steps = doc["jobs"][job]["steps"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no job `{job}`"))?;
    let env_of = |value: &serde_json::Value| -> BTreeMap<String, String> {
        value
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        let v = match v {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        (k.clone(), v)
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut inherited = env_of(&doc["env"]);
    inherited.extend(env_of(&doc["jobs"][job]["env"]));
    Ok(steps
        .iter()
        .filter_map(|s| {
            let run = s["run"].as_str()?.to_string();
            let name = s["name"].as_str().unwrap_or("step").to_string();
            let mut env = inherited.clone();
            env.extend(env_of(&s["env"]));
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
                    "dronectl --env \"$STAGING_ENV\" -o json deploy --artifacts build.json --canary"
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
        let build = steps
            .iter()
            .find(|s| s.name == "Build what changed and push")
            .unwrap();
        assert_eq!(build.env["BEFORE_SHA"], "${{ github.event.before }}");
        assert_eq!(
            build.env["STAGING_ENV"], "staging",
            "inherited from the workflow"
        );
        assert!(!build.run.contains("${{"), "{}", build.run);
    }

    #[test]
    fn branch_names_follow_git_and_stay_inert() {
        for ok in [
            "main",
            "trunk",
            "release/1.2",
            "feature/x-y_z",
            "v1.0",
            "a.b/c",
        ] {
            assert_eq!(validate_branch(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", PipelineValueError::Empty),
            ("main\"; rm -rf /", PipelineValueError::BadChar('"')),
            ("a||b", PipelineValueError::BadChar('|')),
            ("x\ny", PipelineValueError::BadChar('\n')),
            ("${{ github.token }}", PipelineValueError::BadChar('$')),
            ("a`id`", PipelineValueError::BadChar('`')),
            ("it's", PipelineValueError::BadChar('\'')),
            ("a b", PipelineValueError::BadChar(' ')),
            ("-rf", PipelineValueError::LeadingDash),
            ("refs/heads/../x", PipelineValueError::FullRef),
            ("refs/heads/main", PipelineValueError::FullRef),
            ("a..b", PipelineValueError::NotARefName),
            ("a//b", PipelineValueError::NotARefName),
            ("a/", PipelineValueError::NotARefName),
            ("/a", PipelineValueError::NotARefName),
            ("a.", PipelineValueError::NotARefName),
            (".hidden", PipelineValueError::NotARefName),
            ("x/.y", PipelineValueError::NotARefName),
            ("a.lock", PipelineValueError::NotARefName),
            ("HEAD", PipelineValueError::NotARefName),
        ] {
            assert_eq!(validate_branch(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            validate_branch(&"b".repeat(201)),
            Err(PipelineValueError::TooLong { max: 200 })
        );
    }

    #[test]
    fn render_refuses_values_that_are_not_inert() {
        for (branch, staging, production, flag) in [
            ("a||b", "staging", "production", "--branch"),
            ("main", "st'aging", "production", "--staging"),
            ("main", "staging", "prod$x", "--production"),
        ] {
            for provider in [Provider::Github, Provider::Gitlab, Provider::AzurePipelines] {
                let err = render(&manifest(), provider, branch, staging, production).unwrap_err();
                assert!(err.is::<UsageError>(), "{err}");
                assert!(err.to_string().starts_with(flag), "{err}");
            }
        }
    }
}

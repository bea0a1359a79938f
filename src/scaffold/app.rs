//! `dronectl new app`: the app repository (manifest, workspace, CI-ready layout) from the
//! `app` template, checked, written and committed as the first git commit.

use std::path::{Path, PathBuf};

use super::*;

/// Options for `dronectl new app`.
#[derive(Debug, Clone)]
pub struct NewAppOptions {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// App name; defaults to the directory's name.
    pub name: Option<String>,
    pub template: String,
    pub templates: TemplateSource,
    pub vars: Vec<String>,
    /// Create a git repository with an initial commit.
    pub git: bool,
    pub dry_run: bool,
}

/// What `new app` created (or would create).
#[derive(Debug, Clone)]
pub struct NewAppOutcome {
    pub name: String,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub commit: Option<String>,
}

/// Creates an app repository.
pub fn new_app(
    opts: &NewAppOptions,
    reporter: &dyn Reporter,
) -> Result<NewAppOutcome, ScaffoldError> {
    let dir = &opts.dir;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ScaffoldError::BadPath {
                path: dir.display().to_string(),
                why: "give a directory name, or --name".into(),
            })?,
    };
    names::validate_name(&name)?;
    if let Ok(meta) = dir.symlink_metadata() {
        let empty = meta.is_dir()
            && std::fs::read_dir(dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(ScaffoldError::PathExists(dir.clone()));
        }
    }
    let vars = parse_vars(&opts.vars)?;
    let template = opts.templates.load(&opts.template, TemplateKind::App)?;
    let context = base_context(&name, &vars);

    reporter.event(Event::Started {
        action: "Creating".into(),
        subject: format!("app `{name}` in {}", dir.display()),
    });
    // Everything is rendered and checked in memory before anything is written.
    let rendered = render_files(&template, &context)?;
    // The app template must produce a manifest this version of dronectl accepts.
    check_app_manifest(&template, dir, &rendered)?;
    let files: Vec<PathBuf> = rendered.iter().map(|f| f.output.clone()).collect();
    for f in &files {
        reporter.event(Event::File {
            path: dir.join(f),
            dry_run: opts.dry_run,
        });
    }
    if opts.dry_run {
        return Ok(NewAppOutcome {
            name,
            dir: dir.clone(),
            files,
            commit: None,
        });
    }

    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let created_parents = create_parents(&parent)?;
    let result: Result<NewAppOutcome, ScaffoldError> = (|| {
        let staging = tempfile::Builder::new()
            .prefix(".dronectl-new-")
            .tempdir_in(&parent)
            .map_err(io(&parent))?;
        let out = staging.path().join("app");
        write_files(&rendered, &out)?;
        let commit = if opts.git {
            Some(git_init_commit(&out, &name).map_err(|e| ScaffoldError::Io {
                path: dir.clone(),
                source: std::io::Error::other(e.message().to_string()),
            })?)
        } else {
            None
        };
        if dir.exists() {
            std::fs::remove_dir(dir).map_err(io(dir))?;
        }
        std::fs::rename(&out, dir).map_err(io(dir))?;
        Ok(NewAppOutcome {
            name: name.clone(),
            dir: dir.clone(),
            files,
            commit,
        })
    })();
    if result.is_err() {
        remove_created(&created_parents);
    }
    let outcome = result?;
    if let Some(commit) = &outcome.commit {
        reporter.event(Event::Note {
            message: format!(
                "initialised a git repository (commit {})",
                &commit[..7.min(commit.len())]
            ),
            verbose: false,
        });
    }
    Ok(outcome)
}

/// Parses and validates the `dronectl.yaml` an app template rendered, in memory.
fn check_app_manifest(
    template: &Template,
    dir: &Path,
    rendered: &[RenderedFile],
) -> Result<(), ScaffoldError> {
    let path = dir.join(manifest::MANIFEST_FILE);
    let Some(file) = rendered
        .iter()
        .find(|f| f.output == Path::new(manifest::MANIFEST_FILE))
    else {
        return Err(ScaffoldError::Template {
            template: template.name.clone(),
            file: format!("files/{}.tera", manifest::MANIFEST_FILE),
            message: format!("an app template must create {}", manifest::MANIFEST_FILE),
        });
    };
    let text = String::from_utf8(file.contents.clone()).map_err(|_| {
        ScaffoldError::GeneratedManifest(ManifestError::Parse {
            path: path.clone(),
            position: None,
            message: "not UTF-8 text".into(),
        })
    })?;
    let parsed = manifest::parse(&path, &text).map_err(ScaffoldError::GeneratedManifest)?;
    LoadedManifest {
        path,
        dir: dir.to_path_buf(),
        text,
        manifest: parsed,
    }
    .check()
    .map_err(ScaffoldError::GeneratedManifest)
}

/// `git init` + an initial commit of everything in `dir`, on branch `main`.
fn git_init_commit(dir: &Path, app: &str) -> Result<String, git2::Error> {
    let mut init = git2::RepositoryInitOptions::new();
    init.initial_head("main");
    let repo = git2::Repository::init_opts(dir, &init)?;
    let mut index = repo.index()?;
    index.add_all(["*"].iter(), git2::IndexAddOption::DEFAULT, None)?;
    index.write()?;
    let tree = repo.find_tree(index.write_tree()?)?;
    let signature = repo
        .signature()
        .or_else(|_| git2::Signature::now("dronectl", "dronectl@localhost"))?;
    let oid = repo.commit(
        Some("HEAD"),
        &signature,
        &signature,
        &format!("Create app {app} with dronectl"),
        &tree,
        &[],
    )?;
    Ok(oid.to_string())
}

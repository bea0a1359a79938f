//! `dronectl new service`: a service from a template into an existing app, with the
//! manifest and workspace edits computed and checked in memory before anything is written.

use std::path::{Component, Path, PathBuf};

use super::*;

/// Options for `dronectl new service`.
#[derive(Debug, Clone)]
pub struct NewServiceOptions {
    pub app_dir: PathBuf,
    pub name: String,
    pub template: String,
    pub templates: TemplateSource,
    pub port: Option<u32>,
    pub route: Option<String>,
    /// Directory of the service relative to the app; default `services/<name>`.
    pub path: Option<String>,
    pub vars: Vec<String>,
    pub dry_run: bool,
}

/// What `new service` created (or would create).
#[derive(Debug, Clone)]
pub struct NewServiceOutcome {
    pub name: String,
    /// The service directory, relative to the app.
    pub path: String,
    pub port: u16,
    pub route: Option<String>,
    pub template: String,
    /// Files created, relative to the app.
    pub files: Vec<PathBuf>,
    /// Whether the Cargo workspace's members were changed.
    pub workspace_updated: bool,
}

/// Everything `new service` decided before touching the disk.
struct ServicePlan {
    name: String,
    path: String,
    port: u16,
    route: Option<String>,
    template: Template,
    context: tera::Context,
}

fn plan_service(
    opts: &NewServiceOptions,
    loaded: &LoadedManifest,
) -> Result<ServicePlan, ScaffoldError> {
    let name = opts.name.clone();
    names::validate_name(&name)?;
    let m = &loaded.manifest;
    if m.services.contains_key(&name) {
        return Err(ScaffoldError::ServiceExists(name));
    }
    if m.infrastructure.contains_key(&name) {
        return Err(ScaffoldError::InfrastructureExists(name));
    }
    let template = opts.templates.load(&opts.template, TemplateKind::Service)?;

    let raw_path = opts
        .path
        .clone()
        .unwrap_or_else(|| format!("services/{name}"));
    let path = manifest::check_relative_path(&raw_path).map_err(|why| ScaffoldError::BadPath {
        path: raw_path.clone(),
        why,
    })?;
    for (other, service) in &m.services {
        let theirs = manifest::check_relative_path(&service.value.path.value).unwrap_or_default();
        if is_same_or_nested(&path, &theirs) {
            return Err(ScaffoldError::BadPath {
                path: raw_path,
                why: format!("overlaps the directory of service `{other}` ({theirs})"),
            });
        }
    }
    check_inside(&loaded.dir, &path).map_err(|why| ScaffoldError::BadPath {
        path: raw_path.clone(),
        why,
    })?;
    let dest = loaded.dir.join(&path);
    if dest.symlink_metadata().is_ok() {
        return Err(ScaffoldError::PathExists(dest));
    }

    let port = match opts.port {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => return Err(ScaffoldError::BadPort(p)),
        None => template.meta.default_port.unwrap_or(8080),
    };
    let has_routes = template.meta.default_port.is_some() && template.name != "rust-worker";
    let route = match (&opts.route, has_routes) {
        (Some(r), _) => Some(r.clone()),
        (None, true) => Some(format!("/api/{name}")),
        (None, false) => None,
    };
    let route =
        match route {
            None => None,
            Some(r) => {
                let normal =
                    manifest::normalize_route(&r).map_err(|why| ScaffoldError::BadRoute {
                        route: r.clone(),
                        why,
                    })?;
                for (owner, service) in &m.services {
                    if service.value.routes.iter().any(|o| {
                        manifest::normalize_route(&o.value).as_deref() == Ok(normal.as_str())
                    }) {
                        return Err(ScaffoldError::RouteTaken {
                            route: normal,
                            owner: owner.clone(),
                        });
                    }
                }
                Some(normal)
            }
        };
    let vars = parse_vars(&opts.vars)?;
    let mut context = base_context(&m.app.value, &vars);
    context.insert("name", &name);
    context.insert("crate_name", &names::crate_ident(&name));
    context.insert("port", &port);
    context.insert("route", route.as_deref().unwrap_or(""));
    context.insert("path", &path);
    context.insert("template", &template.name);
    Ok(ServicePlan {
        name,
        path,
        port,
        route,
        template,
        context,
    })
}

/// Adds a service to the app in `opts.app_dir`.
pub fn new_service(
    opts: &NewServiceOptions,
    reporter: &dyn Reporter,
) -> Result<NewServiceOutcome, ScaffoldError> {
    let loaded = LoadedManifest::read_valid(&opts.app_dir)?;
    let plan = plan_service(opts, &loaded)?;
    let app_dir = &loaded.dir;
    reporter.event(Event::Started {
        action: "Creating".into(),
        subject: format!(
            "service `{}` ({}, port {}) in {}",
            plan.name, plan.template.name, plan.port, plan.path
        ),
    });

    // 1. Render in memory; nothing is written before every check has passed.
    let rendered = render_files(&plan.template, &plan.context)?;
    check_crate_name_free(&plan.name, &plan.template.name, &rendered)?;

    // 2. The manifest entry, spliced into the text and parsed again.
    let entry = render_text(
        &plan.template,
        "manifest.yaml.tera",
        plan.template
            .manifest_entry
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
        &plan.context,
    )?;
    let new_manifest = manifest::add_service_entry(&loaded.text, &plan.name, &entry)
        .map_err(|e| ScaffoldError::Invalid(format!("{}: {e}", loaded.path.display())))?;
    let reparsed =
        manifest::parse(&loaded.path, &new_manifest).map_err(ScaffoldError::GeneratedManifest)?;
    let reloaded = LoadedManifest {
        manifest: reparsed,
        text: new_manifest.clone(),
        ..loaded.clone()
    };
    reloaded.check().map_err(ScaffoldError::GeneratedManifest)?;
    match reloaded.manifest.services.get(&plan.name) {
        Some(s)
            if manifest::check_relative_path(&s.value.path.value).as_deref()
                == Ok(plan.path.as_str()) => {}
        _ => {
            return Err(ScaffoldError::GeneratedManifest(ManifestError::Parse {
                path: loaded.path.clone(),
                position: None,
                message: format!(
                    "the entry for `{}` does not have path `{}`",
                    plan.name, plan.path
                ),
            }))
        }
    }

    // 3. The Cargo workspace's members.
    let cargo_toml = app_dir.join("Cargo.toml");
    let workspace_edit = match std::fs::read_to_string(&cargo_toml) {
        Ok(text) => add_workspace_member(&text, &plan.path)
            .map_err(|why| ScaffoldError::Invalid(format!("{}: {why}", cargo_toml.display())))?,
        Err(_) => None,
    };

    let files: Vec<PathBuf> = rendered
        .iter()
        .map(|f| Path::new(&plan.path).join(&f.output))
        .collect();
    for f in &files {
        reporter.event(Event::File {
            path: f.clone(),
            dry_run: opts.dry_run,
        });
    }
    reporter.event(Event::Modified {
        path: manifest::MANIFEST_FILE.into(),
        dry_run: opts.dry_run,
        what: format!("added service `{}`", plan.name),
    });
    if workspace_edit.is_some() {
        reporter.event(Event::Modified {
            path: "Cargo.toml".into(),
            dry_run: opts.dry_run,
            what: format!("added `{}` to workspace members", plan.path),
        });
    } else if cargo_toml.exists() {
        reporter.event(Event::Note {
            message: format!(
                "Cargo.toml already covers {} (or has no [workspace]); left unchanged",
                plan.path
            ),
            verbose: false,
        });
    }
    let outcome = NewServiceOutcome {
        name: plan.name.clone(),
        path: plan.path.clone(),
        port: plan.port,
        route: plan.route.clone(),
        template: plan.template.name.clone(),
        files,
        workspace_updated: workspace_edit.is_some(),
    };
    if opts.dry_run {
        return Ok(outcome);
    }

    // 4. Write into a staging directory inside the app (same file system: moves are
    // atomic), then move everything into place; undo on failure.
    let staging = tempfile::Builder::new()
        .prefix(".dronectl-new-")
        .tempdir_in(app_dir)
        .map_err(io(app_dir))?;
    let out = staging.path().join("service");
    write_files(&rendered, &out)?;
    let manifest_tmp = staged_copy(&loaded.path, &new_manifest)?;
    let cargo_tmp = match &workspace_edit {
        Some(text) => Some(staged_copy(&cargo_toml, text)?),
        None => None,
    };
    let dest = app_dir.join(&plan.path);
    let created_parents = create_parents(dest.parent().unwrap_or(app_dir))?;
    if let Err(e) = std::fs::rename(&out, &dest) {
        remove_created(&created_parents);
        return Err(io(&dest)(e));
    }
    let undo_dir = |e: ScaffoldError| {
        let _ = std::fs::remove_dir_all(&dest);
        remove_created(&created_parents);
        e
    };
    let original_cargo = workspace_edit
        .as_ref()
        .and_then(|_| std::fs::read(&cargo_toml).ok());
    if let Some(tmp) = cargo_tmp {
        tmp.persist(&cargo_toml)
            .map_err(|e| undo_dir(io(&cargo_toml)(e.error)))?;
    }
    if let Err(e) = manifest_tmp.persist(&loaded.path) {
        if let Some(original) = original_cargo {
            let _ = std::fs::write(&cargo_toml, original);
        }
        return Err(undo_dir(io(&loaded.path)(e.error)));
    }
    Ok(outcome)
}

/// A temporary file beside `path` holding `contents`, with `path`'s permissions.
fn staged_copy(path: &Path, contents: &str) -> Result<tempfile::NamedTempFile, ScaffoldError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".dronectl-edit-")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(contents.as_bytes()).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(path))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    Ok(tmp)
}

/// `a` and `b` are the same directory, or one contains the other.
fn is_same_or_nested(a: &str, b: &str) -> bool {
    let (a, b) = (Path::new(a), Path::new(b));
    a.starts_with(b) || b.starts_with(a)
}

/// Refuses a path whose existing prefix leaves the app through a symbolic link.
fn check_inside(app_dir: &Path, rel: &str) -> Result<(), String> {
    let root = app_dir.canonicalize().map_err(|e| e.to_string())?;
    let mut current = app_dir.to_path_buf();
    for part in Path::new(rel).components() {
        let Component::Normal(part) = part else {
            continue;
        };
        current.push(part);
        match current.canonicalize() {
            Ok(real) if !real.starts_with(&root) => {
                return Err(format!(
                    "{} leads outside the app directory",
                    current.display()
                ))
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// A service's crate must not share its name with one of its own dependencies.
fn check_crate_name_free(
    name: &str,
    template: &str,
    rendered: &[RenderedFile],
) -> Result<(), ScaffoldError> {
    let Some(text) = rendered
        .iter()
        .find(|f| f.output == Path::new("Cargo.toml"))
        .and_then(|f| std::str::from_utf8(&f.contents).ok())
    else {
        return Ok(());
    };
    let doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        ScaffoldError::Invalid(format!(
            "the {template} template's Cargo.toml does not parse: {e}"
        ))
    })?;
    let ident = names::crate_ident(name);
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(table).and_then(|t| t.as_table_like()) {
            if deps.iter().any(|(dep, _)| names::crate_ident(dep) == ident) {
                return Err(ScaffoldError::Invalid(format!(
                    "invalid name: `{name}` is the name of a crate the {template} template depends on; choose another name"
                )));
            }
        }
    }
    Ok(())
}

/// Adds `path` to `[workspace] members` unless a member (or glob) already covers it.
/// Returns the new text, or `None` when nothing needs to change.
fn add_workspace_member(text: &str, path: &str) -> Result<Option<String>, String> {
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    let Some(workspace) = doc.get_mut("workspace").and_then(|w| w.as_table_like_mut()) else {
        return Ok(None);
    };
    if workspace.get("members").is_none() {
        workspace.insert(
            "members",
            toml_edit::Item::Value(toml_edit::Array::new().into()),
        );
    }
    let members = workspace
        .get_mut("members")
        .and_then(|m| m.as_array_mut())
        .ok_or("`workspace.members` is not an array")?;
    let covered = members.iter().filter_map(|m| m.as_str()).any(|m| {
        let m = m.trim_end_matches('/');
        m == path
            || m.strip_suffix("/*")
                .is_some_and(|prefix| Path::new(path).parent() == Some(Path::new(prefix)))
    });
    if covered {
        return Ok(None);
    }
    // Keep the array's layout: one member per line if it already is written that way.
    let multiline = members.iter().next().is_some_and(|v| {
        v.decor()
            .prefix()
            .and_then(|p| p.as_str())
            .is_some_and(|p| p.contains('\n'))
    }) || (members.is_empty()
        && members
            .trailing()
            .as_str()
            .is_some_and(|t| t.contains('\n')));
    members.push(path);
    if multiline {
        let count = members.len();
        if let Some(last) = members.get_mut(count - 1) {
            last.decor_mut().set_prefix("\n    ");
        }
        members.set_trailing("\n");
        members.set_trailing_comma(true);
    }
    Ok(Some(doc.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_members() {
        let text = "[workspace]\nresolver = \"2\"\nmembers = [\n    \"services/a\",\n]\n";
        assert_eq!(
            add_workspace_member(text, "services/b").unwrap().unwrap(),
            "[workspace]\nresolver = \"2\"\nmembers = [\n    \"services/a\",\n    \"services/b\",\n]\n"
        );
        let empty = "[workspace]\nmembers = [\n]\n";
        assert_eq!(
            add_workspace_member(empty, "services/b").unwrap().unwrap(),
            "[workspace]\nmembers = [\n    \"services/b\",\n]\n"
        );
        let inline = "[workspace]\nmembers = [\"a\"]\n";
        assert_eq!(
            add_workspace_member(inline, "b").unwrap().unwrap(),
            "[workspace]\nmembers = [\"a\", \"b\"]\n"
        );
        assert_eq!(
            add_workspace_member("[workspace]\nmembers = [\"services/*\"]\n", "services/b")
                .unwrap(),
            None
        );
        assert_eq!(
            add_workspace_member("[package]\nname = \"x\"\n", "b").unwrap(),
            None
        );
    }

    #[test]
    fn nesting() {
        assert!(is_same_or_nested("services/a", "services/a"));
        assert!(is_same_or_nested("services/a/b", "services/a"));
        assert!(is_same_or_nested("services", "services/a"));
        assert!(!is_same_or_nested("services/ab", "services/a"));
    }
}

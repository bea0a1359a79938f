//! Template sets: the ones embedded in the binary, or a directory given by the user.
//!
//! Layout of a template (see `templates/README.md`):
//! `<name>/template.toml` (description, kind, default_port), `<name>/files/**` (rendered
//! when the name ends in `.tera`, copied otherwise; a leading `dot-` becomes `.`), and
//! for services `<name>/manifest.yaml.tera`, the service's entry in `dronectl.yaml`.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use serde::Deserialize;

use super::ScaffoldError;

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// A file of the embedded templates by its path under `templates/` (e.g. `ci/github.yml.tera`).
pub fn embedded_file(path: &str) -> Option<&'static [u8]> {
    EMBEDDED.get_file(path).map(|f| f.contents())
}

/// What a template creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TemplateKind {
    /// A new app repository (`dronectl new app`).
    App,
    /// A service inside an app (`dronectl new service`).
    Service,
}

/// `template.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMeta {
    pub description: String,
    pub kind: TemplateKind,
    #[serde(default)]
    pub default_port: Option<u16>,
}

/// One file of a template, with its output path already derived.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// Where the file goes, relative to the output directory.
    pub output: PathBuf,
    /// Where it came from, for error messages.
    pub source: String,
    pub contents: Vec<u8>,
    /// Rendered with tera (the source name ended in `.tera`).
    pub render: bool,
}

/// A loaded template.
#[derive(Debug, Clone)]
pub struct Template {
    pub name: String,
    pub meta: TemplateMeta,
    pub files: Vec<TemplateFile>,
    /// `manifest.yaml.tera`, for service templates.
    pub manifest_entry: Option<String>,
}

/// Where templates come from.
#[derive(Debug, Clone)]
pub enum TemplateSource {
    /// Built into the binary from the repository's `templates/`.
    Embedded,
    /// A directory holding one sub-directory per template (`--template-dir`).
    Dir(PathBuf),
}

impl TemplateSource {
    pub fn new(dir: Option<&Path>) -> TemplateSource {
        dir.map_or(TemplateSource::Embedded, |d| {
            TemplateSource::Dir(d.to_path_buf())
        })
    }

    /// The names of the templates of a kind, sorted.
    pub fn list(&self, kind: TemplateKind) -> Result<Vec<(String, TemplateMeta)>, ScaffoldError> {
        let mut names: Vec<String> = match self {
            TemplateSource::Embedded => EMBEDDED
                .dirs()
                .filter_map(|d| {
                    d.path()
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .collect(),
            TemplateSource::Dir(dir) => std::fs::read_dir(dir)
                .map_err(|e| ScaffoldError::TemplateDir {
                    dir: dir.clone(),
                    message: e.to_string(),
                })?
                .filter_map(Result::ok)
                .filter(|e| e.path().join("template.toml").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
        };
        names.sort();
        let mut out = Vec::new();
        for name in names {
            if let Ok(meta) = self.meta(&name) {
                if meta.kind == kind {
                    out.push((name, meta));
                }
            }
        }
        Ok(out)
    }

    fn meta(&self, name: &str) -> Result<TemplateMeta, ScaffoldError> {
        let text = self
            .read(&format!("{name}/template.toml"))?
            .ok_or_else(|| ScaffoldError::UnknownTemplate {
                name: name.to_string(),
                available: vec![],
            })?;
        let text = String::from_utf8_lossy(&text);
        toml_edit::de::from_str(&text).map_err(|e| ScaffoldError::Template {
            template: name.to_string(),
            file: "template.toml".into(),
            message: e.to_string(),
        })
    }

    /// Loads a template of the given kind by name.
    pub fn load(&self, name: &str, kind: TemplateKind) -> Result<Template, ScaffoldError> {
        let unknown = || -> Result<ScaffoldError, ScaffoldError> {
            Ok(ScaffoldError::UnknownTemplate {
                name: name.to_string(),
                available: self.list(kind)?.into_iter().map(|(n, _)| n).collect(),
            })
        };
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            return Err(unknown()?);
        }
        let meta = match self.meta(name) {
            Err(ScaffoldError::UnknownTemplate { .. }) => return Err(unknown()?),
            other => other?,
        };
        if meta.kind != kind {
            return Err(unknown()?);
        }
        let mut files = Vec::new();
        self.collect_files(name, &mut files)?;
        files.sort_by(|a, b| a.output.cmp(&b.output));
        let manifest_entry = self
            .read(&format!("{name}/manifest.yaml.tera"))?
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        if kind == TemplateKind::Service && manifest_entry.is_none() {
            return Err(ScaffoldError::Template {
                template: name.to_string(),
                file: "manifest.yaml.tera".into(),
                message: "a service template needs a manifest.yaml.tera".into(),
            });
        }
        Ok(Template {
            name: name.to_string(),
            meta,
            files,
            manifest_entry,
        })
    }

    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, ScaffoldError> {
        match self {
            TemplateSource::Embedded => Ok(EMBEDDED.get_file(rel).map(|f| f.contents().to_vec())),
            TemplateSource::Dir(dir) => match std::fs::read(dir.join(rel)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(ScaffoldError::TemplateDir {
                    dir: dir.clone(),
                    message: format!("{rel}: {e}"),
                }),
            },
        }
    }

    fn collect_files(&self, name: &str, out: &mut Vec<TemplateFile>) -> Result<(), ScaffoldError> {
        let root = format!("{name}/files");
        match self {
            TemplateSource::Embedded => {
                fn walk(dir: &Dir<'static>, root: &str, out: &mut Vec<TemplateFile>) {
                    for file in dir.files() {
                        let rel = file.path().strip_prefix(root).unwrap_or(file.path());
                        out.push(template_file(
                            rel,
                            file.path().display().to_string(),
                            file.contents().to_vec(),
                        ));
                    }
                    for sub in dir.dirs() {
                        walk(sub, root, out);
                    }
                }
                if let Some(dir) = EMBEDDED.get_dir(&root) {
                    walk(dir, &root, out);
                }
            }
            TemplateSource::Dir(base) => {
                fn walk(
                    dir: &Path,
                    root: &Path,
                    out: &mut Vec<TemplateFile>,
                ) -> std::io::Result<()> {
                    for entry in std::fs::read_dir(dir)? {
                        let entry = entry?;
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            walk(&path, root, out)?;
                        } else {
                            let rel = path.strip_prefix(root).unwrap_or(&path);
                            out.push(template_file(
                                rel,
                                path.display().to_string(),
                                std::fs::read(&path)?,
                            ));
                        }
                    }
                    Ok(())
                }
                let root = base.join(&root);
                if root.is_dir() {
                    walk(&root, &root, out).map_err(|e| ScaffoldError::TemplateDir {
                        dir: base.clone(),
                        message: e.to_string(),
                    })?;
                }
            }
        }
        Ok(())
    }
}

/// Derives the output path: `dot-` prefixes become `.`, a `.tera` suffix is dropped.
fn template_file(rel: &Path, source: String, contents: Vec<u8>) -> TemplateFile {
    let mut output = PathBuf::new();
    let mut render = false;
    let count = rel.components().count();
    for (i, part) in rel.components().enumerate() {
        let mut part = part.as_os_str().to_string_lossy().into_owned();
        if let Some(rest) = part.strip_prefix("dot-") {
            part = format!(".{rest}");
        }
        if i + 1 == count {
            if let Some(stem) = part.strip_suffix(".tera") {
                part = stem.to_string();
                render = true;
            }
        }
        output.push(part);
    }
    TemplateFile {
        output,
        source,
        contents,
        render,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths() {
        let f = template_file(Path::new("dot-gitignore"), String::new(), vec![]);
        assert_eq!(f.output, Path::new(".gitignore"));
        assert!(!f.render);
        let f = template_file(Path::new("src/main.rs.tera"), String::new(), vec![]);
        assert_eq!(f.output, Path::new("src/main.rs"));
        assert!(f.render);
        let f = template_file(Path::new("dot-config/x.toml.tera"), String::new(), vec![]);
        assert_eq!(f.output, Path::new(".config/x.toml"));
    }

    #[test]
    fn embedded_templates_load() {
        let source = TemplateSource::Embedded;
        let services: Vec<String> = source
            .list(TemplateKind::Service)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(services, vec!["rust-http", "rust-worker"]);
        for name in &services {
            let t = source.load(name, TemplateKind::Service).unwrap();
            assert!(
                t.files.iter().any(|f| f.output == Path::new("Cargo.toml")),
                "{name}"
            );
        }
        let app = source.load("app", TemplateKind::App).unwrap();
        assert!(app
            .files
            .iter()
            .any(|f| f.output == Path::new("dronectl.yaml")));
        assert!(matches!(
            source.load("app", TemplateKind::Service),
            Err(ScaffoldError::UnknownTemplate { .. })
        ));
        assert!(matches!(
            source.load("../x", TemplateKind::Service),
            Err(ScaffoldError::UnknownTemplate { .. })
        ));
    }
}

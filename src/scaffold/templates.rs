//! Template sets: the ones embedded in the binary, or a directory given by the user.
//!
//! Layout of a template set (see `templates/README.md`): one directory per template,
//! `<name>/template.toml` (description, kind, default_port, shared), `<name>/files/**`
//! (rendered when the name ends in `.tera`, copied otherwise; a leading `dot-` becomes `.`),
//! and for services `<name>/manifest.yaml.tera`, the service's entry in `dronectl.yaml`.
//! `_shared/files/**` is the set's shared layer: a template with `shared = true` gets every
//! shared file whose output path it does not render itself (its own file wins). Names that
//! start with `_` are never templates.
//!
//! A template directory is untrusted input. Everything below the directory the user names
//! must be a regular file or a directory (links are refused, never followed), and every
//! output path must be a plain relative path: the template cannot read the host or write
//! outside the directory it creates. The shared layer is read and checked the same way.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};
use serde::Deserialize;

use super::{vars, ScaffoldError};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/templates");

/// The shared layer's files, relative to the template set.
const SHARED_FILES: &str = "_shared/files";

/// Whether a directory of a template set can be a template: `_shared` (and any other name
/// starting with `_`) is reserved for the set's own use.
fn is_template_name(name: &str) -> bool {
    !name.starts_with('_')
}

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
    /// Also render the set's shared layer (`_shared/files/`) under the template's own files.
    #[serde(default)]
    pub shared: bool,
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
            // Only real directories with a plain name: links are never followed.
            TemplateSource::Dir(dir) => std::fs::read_dir(dir)
                .map_err(|e| ScaffoldError::TemplateDir {
                    dir: dir.clone(),
                    message: e.to_string(),
                })?
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.chars().any(vars::is_forbidden_char))
                .collect(),
        };
        names.retain(|n| is_template_name(n));
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
        let fail = |message: String| ScaffoldError::Template {
            template: name.to_string(),
            file: "template.toml".into(),
            message,
        };
        let meta: TemplateMeta = toml_edit::de::from_str(&text).map_err(|e| fail(e.to_string()))?;
        if let Some(c) = meta
            .description
            .chars()
            .find(|&c| vars::is_forbidden_char(c))
        {
            return Err(fail(format!(
                "the description contains {}",
                vars::describe_forbidden(c)
            )));
        }
        Ok(meta)
    }

    /// Loads a template of the given kind by name.
    pub fn load(&self, name: &str, kind: TemplateKind) -> Result<Template, ScaffoldError> {
        let unknown = || -> Result<ScaffoldError, ScaffoldError> {
            Ok(ScaffoldError::UnknownTemplate {
                name: name.to_string(),
                available: self.list(kind)?.into_iter().map(|(n, _)| n).collect(),
            })
        };
        if name.is_empty()
            || name.contains(['/', '\\'])
            || name.starts_with('.')
            || !is_template_name(name)
        {
            return Err(unknown()?);
        }
        let meta = match self.meta(name) {
            Err(ScaffoldError::UnknownTemplate { .. }) => return Err(unknown()?),
            other => other?,
        };
        if meta.kind != kind {
            return Err(unknown()?);
        }
        let mut files = self
            .collect_files(name, &format!("{name}/files"))?
            .unwrap_or_default();
        if meta.shared {
            let shared = self.collect_files(name, SHARED_FILES)?.ok_or_else(|| {
                ScaffoldError::Template {
                    template: name.to_string(),
                    file: "template.toml".into(),
                    message: format!(
                        "`shared = true` needs the template set's {SHARED_FILES}/ directory, which does not exist"
                    ),
                }
            })?;
            files = merge_shared(name, files, shared)?;
        }
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
            TemplateSource::Dir(dir) => read_regular(dir, Path::new(rel)),
        }
    }

    /// The files under `root` (a template's `files/` or the shared layer), for template
    /// `name`, sorted by output path and checked to be distinct; `None` when `root` does not
    /// exist.
    fn collect_files(
        &self,
        name: &str,
        root: &str,
    ) -> Result<Option<Vec<TemplateFile>>, ScaffoldError> {
        let mut out = Vec::new();
        match self {
            TemplateSource::Embedded => {
                fn walk(
                    dir: &Dir<'static>,
                    name: &str,
                    root: &str,
                    out: &mut Vec<TemplateFile>,
                ) -> Result<(), ScaffoldError> {
                    for file in dir.files() {
                        let rel = file.path().strip_prefix(root).unwrap_or(file.path());
                        out.push(template_file(
                            name,
                            rel,
                            file.path().display().to_string(),
                            file.contents().to_vec(),
                        )?);
                    }
                    for sub in dir.dirs() {
                        walk(sub, name, root, out)?;
                    }
                    Ok(())
                }
                let Some(dir) = EMBEDDED.get_dir(root) else {
                    return Ok(None);
                };
                walk(dir, name, root, &mut out)?;
            }
            TemplateSource::Dir(base) => {
                let root_rel = Path::new(root);
                // `<name>` and `<name>/files` themselves must not be links either.
                let Some(meta) = entry_metadata(base, root_rel)? else {
                    return Ok(None);
                };
                if !meta.is_dir() {
                    return Err(ScaffoldError::TemplateEntry {
                        path: base.join(root_rel),
                        what: "not a directory".into(),
                    });
                }
                let mut stack = vec![base.join(root_rel)];
                while let Some(dir) = stack.pop() {
                    let entries = std::fs::read_dir(&dir).map_err(dir_error(base, &dir))?;
                    for entry in entries {
                        let path = entry.map_err(dir_error(base, &dir))?.path();
                        let meta =
                            std::fs::symlink_metadata(&path).map_err(dir_error(base, &path))?;
                        if meta.is_dir() {
                            stack.push(path);
                        } else if meta.is_file() {
                            let rel = path.strip_prefix(base.join(root_rel)).unwrap_or(&path);
                            let contents =
                                read_same_file(&path, &meta).map_err(dir_error(base, &path))?;
                            out.push(template_file(
                                name,
                                rel,
                                vars::printable(&path.to_string_lossy()),
                                contents,
                            )?);
                        } else {
                            return Err(ScaffoldError::TemplateEntry {
                                path,
                                what: kind_of(&meta),
                            });
                        }
                    }
                }
            }
        }
        out.sort_by(|a, b| a.output.cmp(&b.output));
        check_distinct(name, &out)?;
        Ok(Some(out))
    }
}

/// The template's own files plus every shared file whose output path none of them has
/// (both lists sorted and distinct), sorted and checked again: a shared file may not need a
/// directory where an own file renders, nor the other way round.
fn merge_shared(
    template: &str,
    own: Vec<TemplateFile>,
    shared: Vec<TemplateFile>,
) -> Result<Vec<TemplateFile>, ScaffoldError> {
    let overridden: std::collections::BTreeSet<PathBuf> =
        own.iter().map(|f| f.output.clone()).collect();
    let mut files = own;
    files.extend(
        shared
            .into_iter()
            .filter(|f| !overridden.contains(&f.output)),
    );
    files.sort_by(|a, b| a.output.cmp(&b.output));
    check_distinct(template, &files)?;
    Ok(files)
}

fn dir_error<'a>(
    base: &'a Path,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ScaffoldError + 'a {
    move |e| ScaffoldError::TemplateDir {
        dir: base.to_path_buf(),
        message: format!("{}: {e}", vars::printable(&path.to_string_lossy())),
    }
}

/// What a non-regular, non-directory entry is, for messages.
fn kind_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    let kind = if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a named pipe"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    kind.to_string()
}

/// The metadata of `base/rel`, refusing a symbolic link at any component below `base`
/// (`base` itself is the directory the user chose and may be reached through a link).
/// `None` when the entry does not exist.
fn entry_metadata(base: &Path, rel: &Path) -> Result<Option<std::fs::Metadata>, ScaffoldError> {
    let mut path = base.to_path_buf();
    let mut meta = None;
    for part in rel.components() {
        let std::path::Component::Normal(part) = part else {
            return Ok(None);
        };
        if meta
            .as_ref()
            .is_some_and(|m: &std::fs::Metadata| !m.is_dir())
        {
            return Ok(None);
        }
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ScaffoldError::TemplateEntry {
                    path,
                    what: kind_of(&m),
                })
            }
            Ok(m) => meta = Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(dir_error(base, &path)(e)),
        }
    }
    Ok(meta)
}

/// Reads `base/rel` if it is a regular file reached without links; `None` if absent.
fn read_regular(base: &Path, rel: &Path) -> Result<Option<Vec<u8>>, ScaffoldError> {
    let Some(meta) = entry_metadata(base, rel)? else {
        return Ok(None);
    };
    let path = base.join(rel);
    if !meta.is_file() {
        return Err(ScaffoldError::TemplateEntry {
            what: if meta.is_dir() {
                "a directory, not a file".into()
            } else {
                kind_of(&meta)
            },
            path,
        });
    }
    read_same_file(&path, &meta)
        .map(Some)
        .map_err(dir_error(base, &path))
}

/// Reads `path`, checking that what was opened is the regular file `meta` described (so a
/// link swapped in after the check is not followed).
fn read_same_file(path: &Path, meta: &std::fs::Metadata) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut file = std::fs::File::open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(std::io::Error::other(
            "changed while being read (replaced by a link or another file)",
        ));
    }
    let mut contents = Vec::with_capacity(usize::try_from(opened.len()).unwrap_or(0));
    file.read_to_end(&mut contents)?;
    Ok(contents)
}

/// Derives the output path: `dot-` prefixes become `.`, a `.tera` suffix is dropped. Every
/// component of the result must be a plain name, so the file lands inside the directory the
/// template creates: no `..`, `.`, empty or root component, no `.git`, no control or
/// bidirectional formatting characters.
fn template_file(
    template: &str,
    rel: &Path,
    source: String,
    contents: Vec<u8>,
) -> Result<TemplateFile, ScaffoldError> {
    let refuse = |message: String| ScaffoldError::Template {
        template: template.to_string(),
        file: source.clone(),
        message,
    };
    let mut output = PathBuf::new();
    let mut render = false;
    let count = rel.components().count();
    for (i, part) in rel.components().enumerate() {
        let std::path::Component::Normal(part) = part else {
            return Err(refuse(format!(
                "the path `{}` is not a plain relative path",
                vars::printable(&rel.to_string_lossy())
            )));
        };
        let Some(part) = part.to_str() else {
            return Err(refuse("the file name is not valid UTF-8".into()));
        };
        let mut part = part.to_string();
        if let Some(rest) = part.strip_prefix("dot-") {
            part = format!(".{rest}");
        }
        if i + 1 == count {
            if let Some(stem) = part.strip_suffix(".tera") {
                part = stem.to_string();
                render = true;
            }
        }
        check_component(&part).map_err(|why| {
            refuse(format!(
                "the output path component `{}` {why}; every path a template writes must stay inside the directory it creates",
                vars::printable(&part)
            ))
        })?;
        output.push(part);
    }
    if output.as_os_str().is_empty() {
        return Err(refuse("the output path is empty".into()));
    }
    Ok(TemplateFile {
        output,
        source,
        contents,
        render,
    })
}

/// Why one output path component is refused.
fn check_component(part: &str) -> Result<(), String> {
    match part {
        "" => return Err("is empty".into()),
        "." => return Err("is the directory itself".into()),
        ".." => return Err("is the parent directory".into()),
        _ => {}
    }
    if part.eq_ignore_ascii_case(".git") {
        return Err("is git's own directory".into());
    }
    if let Some(c) = part.chars().find(|&c| vars::is_forbidden_char(c)) {
        return Err(format!("contains {}", vars::describe_forbidden(c)));
    }
    if part.contains(['/', '\\']) {
        return Err("contains a path separator".into());
    }
    Ok(())
}

/// Two files with the same output path, or a file where another needs a directory.
fn check_distinct(template: &str, files: &[TemplateFile]) -> Result<(), ScaffoldError> {
    for pair in files.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.output.starts_with(&a.output) {
            return Err(ScaffoldError::Template {
                template: template.to_string(),
                file: b.source.clone(),
                message: if a.output == b.output {
                    format!(
                        "renders to {}, as {} does",
                        vars::printable(&b.output.to_string_lossy()),
                        a.source
                    )
                } else {
                    format!(
                        "needs {} to be a directory, but {} renders a file there",
                        vars::printable(&a.output.to_string_lossy()),
                        a.source
                    )
                },
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(rel: &Path) -> Result<TemplateFile, String> {
        let source = vars::printable(&rel.to_string_lossy());
        template_file("t", rel, source, vec![]).map_err(|e| e.to_string())
    }

    #[test]
    fn output_paths() {
        let f = output(Path::new("dot-gitignore")).unwrap();
        assert_eq!(f.output, Path::new(".gitignore"));
        assert!(!f.render);
        let f = output(Path::new("src/main.rs.tera")).unwrap();
        assert_eq!(f.output, Path::new("src/main.rs"));
        assert!(f.render);
        let f = output(Path::new("dot-config/x.toml.tera")).unwrap();
        assert_eq!(f.output, Path::new(".config/x.toml"));
        let f = output(Path::new("dot-..config/dot-git-hooks.tera")).unwrap();
        assert_eq!(f.output, Path::new("...config/.git-hooks"));
    }

    #[test]
    fn output_paths_that_leave_the_destination_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        for (rel, why) in [
            ("dot-./dot-./dot-./evil.txt", "`..` is the parent directory"),
            ("dot-..tera", "`..` is the parent directory"),
            ("a/dot-./b", "`..` is the parent directory"),
            ("dot-/x", "`.` is the directory itself"),
            ("dot-.tera", "`.` is the directory itself"),
            ("x/.tera", "is empty"),
            ("/etc/passwd", "not a plain relative path"),
            ("dot-git/config", "git's own directory"),
            ("sub/dot-GIT/hooks/pre-commit", "git's own directory"),
            ("a\\..\\b", "path separator"),
            ("new\nline", "U+000A (a control character)"),
            ("nul\u{7f}", "U+007F (a control character)"),
            (
                "rlo\u{202e}txt.rs",
                "U+202E (a bidirectional formatting character)",
            ),
        ] {
            let err = output(Path::new(rel)).unwrap_err();
            assert!(
                err.starts_with("template `t`, file ") && err.contains(why),
                "{rel:?}: {err}"
            );
            assert!(!err.contains('\n') && !err.contains('\u{202e}'), "{err}");
        }
        let err = output(Path::new(std::ffi::OsStr::from_bytes(b"bad\xffname"))).unwrap_err();
        assert!(err.contains("not valid UTF-8"), "{err}");
    }

    #[test]
    fn two_files_for_one_path_are_refused() {
        let files = |rels: &[&str]| {
            let mut files: Vec<TemplateFile> =
                rels.iter().map(|r| output(Path::new(r)).unwrap()).collect();
            files.sort_by(|a, b| a.output.cmp(&b.output));
            check_distinct("t", &files).map_err(|e| e.to_string())
        };
        assert!(files(&["a", "a-b", "b/a"]).is_ok());
        let err = files(&["dot-env", ".env.tera"]).unwrap_err();
        assert!(err.contains("renders to .env, as"), "{err}");
        let err = files(&["src", "a", "src/main.rs.tera"]).unwrap_err();
        assert!(err.contains("needs src to be a directory"), "{err}");
    }

    /// A template directory with one service template `tiny`.
    fn template_dir() -> tempfile::TempDir {
        let tmp = tempfile::tempdir().unwrap();
        let t = tmp.path().join("set/tiny");
        std::fs::create_dir_all(t.join("files/src")).unwrap();
        std::fs::write(
            t.join("template.toml"),
            "description = \"tiny\"\nkind = \"service\"\n",
        )
        .unwrap();
        std::fs::write(t.join("manifest.yaml.tera"), "path: {{ path }}\n").unwrap();
        std::fs::write(t.join("files/src/main.rs"), "fn main() {}\n").unwrap();
        tmp
    }

    fn load(base: &Path) -> Result<Template, String> {
        TemplateSource::Dir(base.to_path_buf())
            .load("tiny", TemplateKind::Service)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn links_inside_a_template_dir_are_refused() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("id_rsa");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        type Make<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Make); 6] = [
            ("files/src/key.txt", &|t| {
                symlink(&secret, t.join("files/src/key.txt")).unwrap()
            }),
            ("files/ssh", &|t| {
                symlink(outside.path(), t.join("files/ssh")).unwrap()
            }),
            ("files", &|t| {
                std::fs::rename(t.join("files"), outside.path().join("files")).unwrap();
                symlink(outside.path().join("files"), t.join("files")).unwrap();
            }),
            ("template.toml", &|t| {
                std::fs::rename(
                    t.join("template.toml"),
                    outside.path().join("template.toml"),
                )
                .unwrap();
                symlink(
                    outside.path().join("template.toml"),
                    t.join("template.toml"),
                )
                .unwrap();
            }),
            ("manifest.yaml.tera", &|t| {
                std::fs::remove_file(t.join("manifest.yaml.tera")).unwrap();
                symlink(&secret, t.join("manifest.yaml.tera")).unwrap();
            }),
            ("files/src/loop", &|t| {
                symlink("loop", t.join("files/src/loop")).unwrap()
            }),
        ];
        for (link, make) in cases {
            let tmp = template_dir();
            let base = tmp.path().join("set");
            make(&base.join("tiny"));
            let err = load(&base).unwrap_err();
            let named = base.join("tiny").join(link);
            assert_eq!(
                err,
                format!("{} is a symbolic link; a template may hold only regular files and directories (links are not followed: copy the file instead)", named.display()),
                "{link}"
            );
            if std::fs::rename(outside.path().join("files"), outside.path().join("used")).is_ok() {
                std::fs::remove_dir_all(outside.path().join("used")).unwrap();
            }
            let _ = std::fs::remove_file(outside.path().join("template.toml"));
        }
        // The template itself reached through a link.
        let tmp = template_dir();
        let real = tmp.path().join("real-tiny");
        std::fs::rename(tmp.path().join("set/tiny"), &real).unwrap();
        symlink(&real, tmp.path().join("set/tiny")).unwrap();
        let err = load(&tmp.path().join("set")).unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{} is a symbolic link",
                tmp.path().join("set/tiny").display()
            )),
            "{err}"
        );
        let listed = TemplateSource::Dir(tmp.path().join("set"))
            .list(TemplateKind::Service)
            .unwrap();
        assert!(listed.is_empty(), "a linked template is not listed");
        // The directory the user names may itself be a link; what is inside may not.
        let tmp = template_dir();
        symlink(tmp.path().join("set"), tmp.path().join("alias")).unwrap();
        let t = load(&tmp.path().join("alias")).unwrap();
        assert_eq!(t.files.len(), 1);
    }

    #[test]
    fn special_files_inside_a_template_dir_are_refused() {
        let tmp = template_dir();
        let base = tmp.path().join("set");
        let fifo = base.join("tiny/files/pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        let err = load(&base).unwrap_err();
        assert!(
            err.starts_with(&format!("{} is a named pipe", fifo.display())),
            "{err}"
        );
    }

    /// `template_dir()` with `tiny` opting into a shared layer holding `shared`.
    fn shared_dir(shared: &[(&str, &str)]) -> tempfile::TempDir {
        let tmp = template_dir();
        let set = tmp.path().join("set");
        let toml = set.join("tiny/template.toml");
        let mut meta = std::fs::read_to_string(&toml).unwrap();
        meta.push_str("shared = true\n");
        std::fs::write(&toml, meta).unwrap();
        for (rel, contents) in shared {
            let path = set.join("_shared/files").join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        tmp
    }

    fn outputs(t: &Template) -> Vec<(String, String, bool)> {
        t.files
            .iter()
            .map(|f| {
                (
                    f.output.display().to_string(),
                    String::from_utf8(f.contents.clone()).unwrap(),
                    f.render,
                )
            })
            .collect()
    }

    #[test]
    fn the_shared_layer_fills_in_what_a_template_lacks() {
        let tmp = shared_dir(&[
            ("src/health.rs", "shared health\n"),
            ("src/main.rs.tera", "shared main\n"),
            ("dot-env", "SHARED=1\n"),
        ]);
        let t = load(&tmp.path().join("set")).unwrap();
        assert_eq!(
            outputs(&t),
            [
                (".env".into(), "SHARED=1\n".into(), false),
                ("src/health.rs".into(), "shared health\n".into(), false),
                // The template's own `src/main.rs` wins over the shared `src/main.rs.tera`.
                ("src/main.rs".into(), "fn main() {}\n".into(), false),
            ]
        );
        assert!(t.files[1].source.contains("_shared/files/src/health.rs"));
        assert!(t.files[2].source.contains("tiny/files/src/main.rs"));

        // Without `shared = true` the layer is not used.
        let toml = tmp.path().join("set/tiny/template.toml");
        let meta = std::fs::read_to_string(&toml).unwrap();
        std::fs::write(&toml, meta.replace("shared = true\n", "")).unwrap();
        let t = load(&tmp.path().join("set")).unwrap();
        assert_eq!(t.files.len(), 1);
    }

    #[test]
    fn a_broken_shared_layer_is_refused() {
        let err = |shared: &[(&str, &str)]| {
            let tmp = shared_dir(shared);
            load(&tmp.path().join("set")).unwrap_err()
        };
        let e = err(&[]);
        assert_eq!(e, "template `tiny`, file template.toml: `shared = true` needs the template set's _shared/files/ directory, which does not exist");
        let e = err(&[("dot-env", "A=1\n"), (".env.tera", "A=2\n")]);
        assert!(
            e.contains("_shared/files/") && e.contains("renders to .env, as"),
            "{e}"
        );
        // A clash the template's own file would hide is still reported.
        let e = err(&[("src/main.rs", "a\n"), ("src/main.rs.tera", "b\n")]);
        assert!(e.contains("renders to src/main.rs, as"), "{e}");
        let e = err(&[("src/main.rs/x", "nested\n")]);
        assert!(e.contains("needs src/main.rs to be a directory"), "{e}");
        let e = err(&[("dot-./escape", "x\n")]);
        assert!(
            e.contains("_shared/files/") && e.contains("is the parent directory"),
            "{e}"
        );
    }

    #[test]
    fn links_in_the_shared_layer_are_refused() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("id_rsa");
        std::fs::write(&secret, "PRIVATE KEY").unwrap();
        type Make<'a> = &'a dyn Fn(&Path);
        let cases: [(&str, Make); 3] = [
            ("_shared/files/src/key.txt", &|set| {
                symlink(&secret, set.join("_shared/files/src/key.txt")).unwrap()
            }),
            ("_shared/files", &|set| {
                std::fs::remove_dir_all(set.join("_shared/files")).unwrap();
                symlink(outside.path(), set.join("_shared/files")).unwrap()
            }),
            ("_shared", &|set| {
                std::fs::remove_dir_all(set.join("_shared")).unwrap();
                std::fs::create_dir_all(outside.path().join("files")).unwrap();
                symlink(outside.path(), set.join("_shared")).unwrap()
            }),
        ];
        for (link, make) in cases {
            let tmp = shared_dir(&[("src/health.rs", "ok\n")]);
            let set = tmp.path().join("set");
            make(&set);
            let err = load(&set).unwrap_err();
            assert!(
                err.starts_with(&format!("{} is a symbolic link", set.join(link).display())),
                "{link}: {err}"
            );
            assert!(!err.contains("PRIVATE KEY"), "{err}");
        }
    }

    #[test]
    fn shared_is_not_a_template() {
        let tmp = shared_dir(&[("src/health.rs", "ok\n")]);
        let set = tmp.path().join("set");
        // Even with a template.toml of its own, `_shared` is neither listed nor loaded.
        std::fs::write(
            set.join("_shared/template.toml"),
            "description = \"sneaky\"\nkind = \"service\"\n",
        )
        .unwrap();
        std::fs::write(set.join("_shared/manifest.yaml.tera"), "path: x\n").unwrap();
        for source in [TemplateSource::Dir(set), TemplateSource::Embedded] {
            let listed: Vec<String> = source
                .list(TemplateKind::Service)
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert!(!listed.iter().any(|n| n.starts_with('_')), "{listed:?}");
            let err = source
                .load("_shared", TemplateKind::Service)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("unknown template `_shared`"), "{err}");
        }
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
            let metrics = t
                .files
                .iter()
                .find(|f| f.output == Path::new("src/metrics.rs"))
                .unwrap();
            assert_eq!(metrics.source, "_shared/files/src/metrics.rs", "{name}");
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

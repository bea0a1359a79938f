//! What git knows about the app: the commit being built, its time, and which service
//! inputs changed (uncommitted, or since a ref).

use std::path::{Path, PathBuf};

use git2::{Repository, StatusOptions};

use super::inputs::ServiceInputs;
use super::BuildError;

/// The repository holding the app, if any.
pub struct GitInfo {
    repo: Repository,
    /// The repository's working directory (absolute, canonical).
    workdir: PathBuf,
    /// `HEAD`'s commit id (full) and commit time (seconds since the epoch), when HEAD has one.
    pub head: Option<(String, i64)>,
}

impl GitInfo {
    /// Opens the repository containing `app_dir`; `None` when the app is not in git.
    pub fn discover(app_dir: &Path) -> Result<Option<GitInfo>, BuildError> {
        let repo = match Repository::discover(app_dir) {
            Ok(repo) => repo,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(BuildError::Git(e)),
        };
        let Some(workdir) = repo.workdir() else {
            return Ok(None);
        };
        let workdir = workdir
            .canonicalize()
            .unwrap_or_else(|_| workdir.to_path_buf());
        let head = match repo.head().and_then(|h| h.peel_to_commit()) {
            Ok(commit) => Some((commit.id().to_string(), commit.time().seconds())),
            Err(_) => None,
        };
        Ok(Some(GitInfo {
            repo,
            workdir,
            head,
        }))
    }

    /// The public address of the `origin` remote (see [`public_remote_url`]), if there is
    /// one that can be shown.
    pub fn origin_url(&self) -> Option<String> {
        let remote = self.repo.find_remote("origin").ok()?;
        public_remote_url(remote.url().ok()?)
    }

    /// The first 7 hex digits of HEAD's commit id.
    pub fn short_sha(&self) -> Option<&str> {
        self.head.as_ref().map(|(id, _)| &id[..7])
    }

    /// A path relative to the working directory, `/`-separated, for pathspecs.
    fn relative(&self, path: &Path) -> Option<String> {
        let abs = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let rel = abs.strip_prefix(&self.workdir).ok()?;
        Some(rel.to_string_lossy().replace('\\', "/"))
    }

    /// Whether any of the service's inputs has uncommitted changes (modified, staged,
    /// untracked, deleted). Ignored files do not count.
    pub fn is_dirty(&self, inputs: &ServiceInputs) -> Result<bool, BuildError> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false)
            .exclude_submodules(true)
            .disable_pathspec_match(false);
        let mut any = false;
        for path in inputs.paths() {
            if let Some(rel) = self.relative(path) {
                options.pathspec(if rel.is_empty() { ".".to_string() } else { rel });
                any = true;
            }
        }
        if !any {
            return Ok(false);
        }
        let statuses = self.repo.statuses(Some(&mut options))?;
        Ok(statuses
            .iter()
            .any(|s| !s.status().is_empty() && s.status() != git2::Status::CURRENT))
    }

    /// Paths (relative to the working directory) that differ between `since` (any
    /// revision git understands) and the working tree, including staged and untracked
    /// files.
    pub fn changed_paths(&self, since: &str) -> Result<Vec<String>, BuildError> {
        let tree = self
            .repo
            .revparse_single(since)
            .and_then(|o| o.peel_to_tree())
            .map_err(|e| BuildError::BadRef {
                reference: since.to_string(),
                message: e.message().to_string(),
            })?;
        let mut options = git2::DiffOptions::new();
        options.include_untracked(true).recurse_untracked_dirs(true);
        let diff = self
            .repo
            .diff_tree_to_workdir_with_index(Some(&tree), Some(&mut options))?;
        let mut out = Vec::new();
        for delta in diff.deltas() {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(p) = file.path() {
                    out.push(p.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The text of a file (given relative to the working directory) at revision `rev`.
    pub fn file_at(&self, rev: &str, path: &Path) -> Option<String> {
        let rel = self.relative(path)?;
        let tree = self.repo.revparse_single(rev).ok()?.peel_to_tree().ok()?;
        let entry = tree.get_path(Path::new(&rel)).ok()?;
        let blob = entry.to_object(&self.repo).ok()?.peel_to_blob().ok()?;
        String::from_utf8(blob.content().to_vec()).ok()
    }

    /// Whether any of `changed` (from [`changed_paths`](Self::changed_paths)) is one of the
    /// service's inputs.
    pub fn touches(&self, inputs: &ServiceInputs, changed: &[String]) -> bool {
        let prefixes: Vec<(String, bool)> = inputs
            .dirs
            .iter()
            .map(|d| (d, true))
            .chain(inputs.files.iter().map(|f| (f, false)))
            .filter_map(|(p, is_dir)| self.relative(p).map(|r| (r, is_dir)))
            .collect();
        changed.iter().any(|path| {
            prefixes.iter().any(|(prefix, is_dir)| {
                if *is_dir {
                    prefix.is_empty()
                        || path == prefix
                        || path
                            .strip_prefix(prefix.as_str())
                            .is_some_and(|rest| rest.starts_with('/'))
                } else {
                    path == prefix
                }
            })
        })
    }

    /// The relative form of a path, for callers comparing against [`changed_paths`].
    pub fn relative_path(&self, path: &Path) -> Option<String> {
        self.relative(path)
    }
}

/// A git remote as it may be recorded in an image label: never with credentials.
///
/// * `http(s)://` URLs lose their userinfo, query and fragment
///   (`https://gitlab-ci-token:TOKEN@host/g/p.git?x#y` → `https://host/g/p.git`).
/// * SSH remotes — scp-like `git@host:g/p.git` and `ssh://git@host:22/g/p.git` — become
///   the web address `https://host/g/p.git` (the form registries such as GHCR link to a
///   repository by; the user name and the SSH port are dropped). `git://` likewise.
/// * Local remotes (an absolute path or `file://`) become `file://<path>`.
/// * Anything else (a relative path, an unknown scheme, an unparsable address) gives
///   `None`: the caller falls back to the app directory rather than record it.
pub fn public_remote_url(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if raw.is_empty() || raw.chars().any(char::is_control) {
        return None;
    }
    if raw.starts_with('/') {
        let mut url = url::Url::from_file_path(raw).ok()?;
        url.set_query(None);
        url.set_fragment(None);
        return Some(url.to_string());
    }
    match url::Url::parse(raw) {
        Ok(url) if !url.cannot_be_a_base() => web_url(url),
        // `host:path` parses as a URL with the scheme `host`; git reads it as scp-like.
        Ok(_) | Err(url::ParseError::RelativeUrlWithoutBase) => scp_like(raw),
        Err(_) => None,
    }
}

/// A parsed remote URL with nothing secret, as an `https://` (or `file://`) address.
fn web_url(mut url: url::Url) -> Option<String> {
    match url.scheme() {
        "http" | "https" => {}
        "ssh" | "git" | "git+ssh" | "ssh+git" => {
            let host = url.host_str()?.to_string();
            let mut web = url::Url::parse(&format!("https://{host}/")).ok()?;
            web.set_path(url.path());
            url = web;
        }
        "file" => {
            let mut file = url::Url::parse("file:///").ok()?;
            file.set_path(url.path());
            return Some(file.to_string());
        }
        _ => return None,
    }
    url.set_username("").ok()?;
    url.set_password(None).ok()?;
    url.set_query(None);
    url.set_fragment(None);
    Some(url.to_string())
}

/// scp-like `[user@]host:path` → `https://host/path` (git's rule: a `:` before any `/`).
fn scp_like(raw: &str) -> Option<String> {
    let (authority, path) = raw.split_once(':')?;
    // `transport::address` is a remote helper, not a host.
    if authority.contains('/') || path.starts_with("//") || path.starts_with(':') {
        return None;
    }
    let host = authority.rsplit('@').next()?;
    if host.is_empty() || path.is_empty() {
        return None;
    }
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut url = url::Url::parse(&format!("https://{host}/")).ok()?;
    url.set_path(path.trim_start_matches('/'));
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_urls_lose_their_secrets() {
        let cases = [
            (
                "https://gitlab-ci-token:glcbt-SECRET@gitlab.example.com/g/p.git?private_token=SECRET#SECRET",
                Some("https://gitlab.example.com/g/p.git"),
            ),
            (
                "https://x-access-token:ghs_SECRET@github.com/o/r",
                Some("https://github.com/o/r"),
            ),
            ("https://SECRET@host:8443/g/p.git", Some("https://host:8443/g/p.git")),
            ("http://user:p%40ss@10.0.0.1/p.git", Some("http://10.0.0.1/p.git")),
            ("git@github.com:o/r.git", Some("https://github.com/o/r.git")),
            ("github.com:o/r.git", Some("https://github.com/o/r.git")),
            ("deploy@host:/srv/git/r.git", Some("https://host/srv/git/r.git")),
            (
                "ssh://git:SECRET@host.example:2222/g/p.git",
                Some("https://host.example/g/p.git"),
            ),
            ("git://host/p.git", Some("https://host/p.git")),
            ("/srv/git/p.git", Some("file:///srv/git/p.git")),
            ("file:///srv/p.git?SECRET#SECRET", Some("file:///srv/p.git")),
            ("../relative/p.git", None),
            ("ext::sh -c touch% /tmp/x", None),
            ("https://host/p\n.git", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = public_remote_url(raw);
            assert_eq!(got.as_deref(), want, "{raw}");
            if let Some(got) = got {
                assert!(!got.contains("SECRET"), "{raw} → {got}");
            }
        }
    }

    fn commit_all(repo: &Repository) {
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &parents)
            .unwrap();
    }

    #[test]
    fn dirty_and_changed_since() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let repo = Repository::init(&root).unwrap();
        std::fs::create_dir_all(root.join("services/a/src")).unwrap();
        std::fs::create_dir_all(root.join("services/b/src")).unwrap();
        std::fs::write(root.join("services/a/src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(root.join("services/b/src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(root.join("Cargo.toml"), "[workspace]").unwrap();
        commit_all(&repo);
        let inputs = |name: &str| ServiceInputs {
            service: name.into(),
            dir: root.join("services").join(name),
            workspace: root.clone(),
            package: Some(name.into()),
            version: "0.1.0".into(),
            dockerfile: false,
            dirs: vec![root.join("services").join(name)],
            files: vec![root.join("Cargo.toml"), root.join("Cargo.lock")],
            settings: String::new(),
            needs_ca_certs: false,
        };
        repo.remote(
            "origin",
            "https://gitlab-ci-token:TOKEN@gitlab.example.com/g/p.git?x=TOKEN#TOKEN",
        )
        .unwrap();
        let git = GitInfo::discover(&root).unwrap().unwrap();
        assert_eq!(
            git.origin_url().as_deref(),
            Some("https://gitlab.example.com/g/p.git")
        );
        assert!(!git.is_dirty(&inputs("a")).unwrap());
        std::fs::write(root.join("Cargo.lock"), "# new").unwrap();
        assert!(git.is_dirty(&inputs("a")).unwrap(), "untracked lock file");
        std::fs::remove_file(root.join("Cargo.lock")).unwrap();
        std::fs::write(root.join("services/a/src/new.rs"), "").unwrap();
        assert!(git.is_dirty(&inputs("a")).unwrap());
        assert!(!git.is_dirty(&inputs("b")).unwrap());
        let changed = git.changed_paths("HEAD").unwrap();
        assert!(git.touches(&inputs("a"), &changed));
        assert!(!git.touches(&inputs("b"), &changed));
        assert!(git.changed_paths("no-such-ref").is_err());
    }
}

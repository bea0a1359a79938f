//! Watching the sources of the selected services: `notify` with `notify-debouncer-full`
//! (which also pairs the two halves of a rename, so an editor's atomic save — write a
//! temporary file, rename it over the original — is one change of the original), and the
//! `ignore` crate's gitignore matcher for `.gitignore` / `.dockerignore` rules.
//!
//! Only what can be an input is watched: each service's crate directory and local path
//! dependencies (recursively), the workspace root and the app directory (not recursively:
//! `Cargo.toml`, `Cargo.lock`, `dronectl.yaml`), and the parent of every service directory
//! (so that its deletion or renaming is seen). `target/` and the other directories the
//! inputs hash skips are never inputs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::build::inputs::ServiceInputs;

/// Directory names that are never inputs (as the inputs hash skips them).
const SKIPPED_DIRS: &[&str] = &["target", ".git", ".dronectl", "node_modules"];

/// File names editors write beside the file they save (swap, backup and lock files).
fn editor_scratch(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with('~')
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913"
}

/// Which files are inputs of which services, with the ignore rules applied.
pub struct Inputs {
    app_dir: PathBuf,
    services: Vec<ServiceInputs>,
    ignores: Vec<Gitignore>,
}

impl Inputs {
    /// The inputs of `services` (resolved against the manifest in `app_dir`), with the rules
    /// of `.gitignore` and `.dockerignore` in the app directory, the workspace root and every
    /// service directory.
    pub fn new(app_dir: &Path, services: Vec<ServiceInputs>) -> Inputs {
        let mut roots: BTreeSet<PathBuf> = BTreeSet::new();
        roots.insert(app_dir.to_path_buf());
        for s in &services {
            roots.insert(s.workspace.clone());
            roots.extend(s.dirs.iter().cloned());
        }
        let ignores = roots
            .iter()
            .filter_map(|root| {
                let mut builder = GitignoreBuilder::new(root);
                let mut any = false;
                for name in [".gitignore", ".dockerignore"] {
                    let file = root.join(name);
                    if file.is_file() && builder.add(&file).is_none() {
                        any = true;
                    }
                }
                any.then(|| builder.build().ok()).flatten()
            })
            .collect();
        Inputs {
            app_dir: app_dir.to_path_buf(),
            services,
            ignores,
        }
    }

    pub fn services(&self) -> &[ServiceInputs] {
        &self.services
    }

    /// Whether `path` is ignored: below a skipped directory, an editor's scratch file, or
    /// matched by an ignore file's rules (the rules of the directory nearest to it win).
    pub fn ignored(&self, path: &Path) -> bool {
        let rel = path.strip_prefix(&self.app_dir).unwrap_or(path);
        if rel.components().any(|c| match c {
            Component::Normal(name) => SKIPPED_DIRS.iter().any(|s| name == *s),
            _ => false,
        }) {
            return true;
        }
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(editor_scratch)
        {
            return true;
        }
        let is_dir = path.is_dir();
        // Deepest root first: a service's own rules override the app's.
        let mut matchers: Vec<&Gitignore> = self
            .ignores
            .iter()
            .filter(|g| path.starts_with(g.path()))
            .collect();
        matchers.sort_by_key(|g| std::cmp::Reverse(g.path().components().count()));
        for g in matchers {
            let m = g.matched_path_or_any_parents(path, is_dir);
            if m.is_ignore() {
                return true;
            }
            if m.is_whitelist() {
                return false;
            }
        }
        false
    }

    /// The services `path` is an input of (none when it is ignored).
    pub fn services_of(&self, path: &Path) -> Vec<String> {
        if self.ignored(path) {
            return Vec::new();
        }
        self.services
            .iter()
            .filter(|s| {
                s.dirs.iter().any(|d| path.starts_with(d)) || s.files.iter().any(|f| f == path)
            })
            .map(|s| s.service.clone())
            .collect()
    }

    /// The directories and files to watch, with how.
    fn roots(&self) -> BTreeMap<PathBuf, RecursiveMode> {
        let mut roots = BTreeMap::new();
        roots.insert(self.app_dir.clone(), RecursiveMode::NonRecursive);
        for s in &self.services {
            roots.insert(s.workspace.clone(), RecursiveMode::NonRecursive);
            for dir in &s.dirs {
                if let Some(parent) = dir.parent() {
                    roots
                        .entry(parent.to_path_buf())
                        .or_insert(RecursiveMode::NonRecursive);
                }
            }
        }
        for s in &self.services {
            for dir in &s.dirs {
                roots.insert(dir.clone(), RecursiveMode::Recursive);
            }
        }
        roots
    }

    /// `path` relative to the app directory.
    pub fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.app_dir)
            .unwrap_or(path)
            .to_path_buf()
    }
}

/// One debounced batch of changes.
#[derive(Debug, Default)]
pub struct Batch {
    /// Service → its changed input files.
    pub services: BTreeMap<String, BTreeSet<PathBuf>>,
    /// `dronectl.yaml` changed (the loop does not reload it; it says so).
    pub manifest: bool,
    /// Errors the watcher reported.
    pub errors: Vec<String>,
}

/// How long the file-system debouncer gathers the raw events of one save (an editor's
/// temporary file + rename, a formatter rewriting the file) before it hands them over, at
/// most. The loop's own settle window (`--debounce`) then makes a burst of saves one
/// build, so this one only needs to pair the events of one save and can be short: every
/// millisecond here is a millisecond of edit → served.
const GATHER: Duration = Duration::from_millis(25);

/// How often the debouncer looks at what it gathered.
const GATHER_TICK: Duration = Duration::from_millis(10);

/// The debouncer's timeout and tick for a settle window of `debounce`.
fn gather(debounce: Duration) -> (Duration, Duration) {
    let timeout = GATHER.min(debounce).max(Duration::from_millis(1));
    (timeout, GATHER_TICK.min(timeout))
}

/// The running watcher; dropping it stops watching.
pub struct Watcher {
    debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
    watched: BTreeMap<PathBuf, RecursiveMode>,
}

impl Watcher {
    /// Starts watching; every debounced batch of raw paths is sent to `tx`. `debounce` is
    /// the loop's settle window; the debouncer itself only gathers one save ([`GATHER`]).
    pub fn start(
        inputs: &Inputs,
        debounce: Duration,
        tx: tokio::sync::mpsc::UnboundedSender<Result<Vec<PathBuf>, String>>,
    ) -> notify::Result<Watcher> {
        let (timeout, tick) = gather(debounce);
        let debouncer = new_debouncer(timeout, Some(tick), move |result: DebounceEventResult| {
            let message = match result {
                Ok(events) => Ok(events
                    .into_iter()
                    .filter(|e| !e.kind.is_access())
                    .flat_map(|e| e.event.paths)
                    .collect()),
                Err(errors) => Err(errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")),
            };
            let _ = tx.send(message);
        })?;
        let mut watcher = Watcher {
            debouncer,
            watched: BTreeMap::new(),
        };
        watcher.refresh(inputs);
        Ok(watcher)
    }

    /// Watches every root that exists and is not watched yet (a service directory that came
    /// back); forgets the ones that disappeared.
    pub fn refresh(&mut self, inputs: &Inputs) {
        for (path, mode) in inputs.roots() {
            let exists = path.is_dir();
            match (self.watched.contains_key(&path), exists) {
                (false, true) if self.debouncer.watch(&path, mode).is_ok() => {
                    self.watched.insert(path, mode);
                }
                (true, false) => {
                    let _ = self.debouncer.unwatch(&path);
                    self.watched.remove(&path);
                }
                _ => {}
            }
        }
    }
}

/// Sorts raw changed paths into a [`Batch`].
pub fn sort(inputs: &Inputs, paths: Vec<PathBuf>, manifest_path: &Path) -> Batch {
    let mut batch = Batch::default();
    for path in paths {
        if path == manifest_path {
            batch.manifest = true;
        }
        for service in inputs.services_of(&path) {
            batch
                .services
                .entry(service)
                .or_default()
                .insert(inputs.relative(&path));
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debouncer_gathers_one_save_briefly_the_settle_window_does_the_rest() {
        let ms = Duration::from_millis;
        assert_eq!(gather(ms(100)), (ms(25), ms(10)));
        assert_eq!(gather(ms(2000)), (ms(25), ms(10)));
        // A settle window shorter than the gathering time bounds it.
        assert_eq!(gather(ms(5)), (ms(5), ms(5)));
        assert_eq!(gather(ms(0)), (ms(1), ms(1)));
    }

    fn inputs(app: &Path) -> Inputs {
        let svc = |name: &str| ServiceInputs {
            service: name.to_string(),
            dir: app.join("services").join(name),
            workspace: app.to_path_buf(),
            package: Some(name.to_string()),
            version: "0.1.0".into(),
            dockerfile: false,
            dirs: vec![app.join("services").join(name), app.join("crates/common")],
            files: vec![app.join("Cargo.toml"), app.join("Cargo.lock")],
            settings: String::new(),
            needs_ca_certs: false,
        };
        Inputs::new(app, vec![svc("orders"), svc("users")])
    }

    #[test]
    fn paths_map_to_services_and_rules_apply() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path();
        for dir in ["services/orders/src", "services/users/src", "crates/common"] {
            std::fs::create_dir_all(app.join(dir)).unwrap();
        }
        std::fs::write(app.join(".gitignore"), "*.log\n/scratch/\n").unwrap();
        std::fs::write(
            app.join("services/orders/.dockerignore"),
            "fixtures/\n!keep.log\n",
        )
        .unwrap();
        let inputs = inputs(app);
        let of = |p: &str| inputs.services_of(&app.join(p));
        assert_eq!(of("services/orders/src/main.rs"), ["orders"]);
        assert_eq!(of("crates/common/lib.rs"), ["orders", "users"]);
        assert_eq!(of("Cargo.lock"), ["orders", "users"]);
        assert!(of("services/orders/target/debug/x").is_empty());
        assert!(of("services/orders/src/.main.rs.swp").is_empty());
        assert!(of("services/orders/src/main.rs~").is_empty());
        assert!(of("services/orders/debug.log").is_empty());
        assert!(of("services/orders/fixtures/a.json").is_empty());
        // The service's own rule re-includes what the app's rules ignore.
        assert_eq!(of("services/orders/keep.log"), ["orders"]);
        assert!(of("README.md").is_empty());
        assert!(of("services/billing/src/main.rs").is_empty());
    }

    #[test]
    fn sorting_a_batch() {
        let tmp = tempfile::tempdir().unwrap();
        let app = tmp.path();
        let inputs = inputs(app);
        let manifest = app.join("dronectl.yaml");
        let batch = sort(
            &inputs,
            vec![
                app.join("services/users/src/main.rs"),
                app.join("services/users/src/main.rs"),
                manifest.clone(),
            ],
            &manifest,
        );
        assert!(batch.manifest);
        assert_eq!(batch.services.len(), 1);
        assert_eq!(
            batch.services["users"].iter().collect::<Vec<_>>(),
            [Path::new("services/users/src/main.rs")]
        );
    }
}

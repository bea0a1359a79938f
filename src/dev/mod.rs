//! `dronectl dev`: the inner loop. Bring the app up on the local target (as `up`), watch the
//! sources of the selected services, rebuild only the services whose inputs changed (the
//! build's inputs hash decides; dev-profile static builds for speed), swap each new
//! revision in with the rollout engine's rolling path (no failed request), and stream the
//! services' logs as one prefixed view — until stopped, leaving the app running.
//!
//! * [`watch`]: what is watched, the ignore rules, path → service.
//! * [`swap`]: one service's swap and how it ended.
//! * [`report`]: the reporters between the build thread / the engine and the printer.
//!
//! One build at a time: changes that arrive while a build runs are queued and make the next
//! build (never two builds of one service at once); a burst of saves within the settle
//! window is one build. A compile error leaves every running version serving.

mod report;
pub mod swap;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::build::{self, BuildError, BuildOptions, BuildOutcome, Profile};
use crate::events::{DevEvent, DevWhat, Event, Reporter};
use crate::local::{self, LocalTarget};
use swap::Swapped;
use watch::{Inputs, Watcher};

/// What `dronectl dev` does.
#[derive(Debug, Clone)]
pub struct DevOptions {
    pub app_dir: PathBuf,
    pub env: Option<String>,
    /// Services to watch and rebuild; empty: all.
    pub services: Vec<String>,
    /// Stream the selected services' logs.
    pub logs: bool,
    /// Run `down` when the loop stops.
    pub down_on_exit: bool,
    /// Quiet time after the last change before a build starts (a burst is one build).
    pub debounce: Duration,
    /// A new revision not ready after this long is rolled back.
    pub progress_deadline: Duration,
}

/// What a `dev` session did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DevOutcome {
    pub app: String,
    pub env: String,
    pub entry_url: String,
    pub services: Vec<String>,
    pub builds: u64,
    pub failed_builds: u64,
    pub swaps: u64,
    pub rolled_back: u64,
    /// The app was left running (no `--down-on-exit`).
    pub left_running: bool,
}

/// Runs the loop until `stop` resolves. Errors before the loop runs (not in an app, an
/// unknown service, no engine) leave nothing started.
pub async fn run(
    opts: &DevOptions,
    reporter: &dyn Reporter,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<DevOutcome> {
    let app_dir = opts
        .app_dir
        .canonicalize()
        .unwrap_or_else(|_| opts.app_dir.clone());
    let (loaded, environment) = local::read_environment(&app_dir, opts.env.as_deref())?;
    let names = build::select_services(&loaded.manifest, &opts.services)?;
    let resolved = build::inputs::resolve_all(&app_dir, &loaded.manifest, &names)?;
    // The engine must answer before anything is started.
    crate::docker::connect().await?;

    tokio::pin!(stop);
    let inputs = Inputs::new(&app_dir, resolved);
    let (tx, mut changes) = tokio::sync::mpsc::unbounded_channel();
    // Watch before the first build, so a save during it is not lost.
    let mut watcher = Watcher::start(&inputs, opts.debounce, tx)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", app_dir.display()))?;

    let mut outcome = DevOutcome {
        app: loaded.manifest.app.value.clone(),
        env: environment.name.clone(),
        services: names.clone(),
        ..Default::default()
    };
    let up_options = local::UpOptions {
        app_dir: app_dir.clone(),
        env: opts.env.clone(),
        build: true,
        artifacts: None,
        timing: swap::timing(opts.progress_deadline),
        timeout: None,
        profile: Profile::Dev,
    };
    // Up; a compile error waits for the next save and tries again.
    loop {
        let up = tokio::select! {
            up = local::up(&up_options, reporter) => up,
            _ = &mut stop => return Ok(outcome),
        };
        match up {
            Ok(_) => break,
            Err(e) if is_compile_error(&e) => {
                outcome.failed_builds += 1;
                reporter.event(dev(
                    DevWhat::BuildFailed,
                    names.clone(),
                    "the app cannot come up until it compiles; waiting for the next save",
                ));
                tokio::select! {
                    _ = changes.recv() => {}
                    _ = &mut stop => return Ok(outcome),
                }
                // Let the rest of the burst arrive, then try again.
                tokio::time::sleep(opts.debounce).await;
                while changes.try_recv().is_ok() {}
            }
            Err(e) => return Err(e),
        }
    }
    let target = LocalTarget::connect(loaded.clone(), &environment).await?;
    outcome.entry_url = target.entry_url();
    reporter.event(dev(
        DevWhat::Watching,
        names.clone(),
        format!(
            "{} — watching {} for changes",
            outcome.entry_url,
            names.join(", ")
        ),
    ));

    let (stop_logs, stop_logs_rx) = tokio::sync::watch::channel(false);
    let logs = async {
        if !opts.logs {
            return;
        }
        let logs = local::logs::Logs::open(local::logs::LogsOptions {
            app_dir: app_dir.clone(),
            env: opts.env.clone(),
            names: names.clone(),
            follow: true,
            tail: Some(0),
            since: None,
            grep: None,
        })
        .await;
        let mut rx = stop_logs_rx;
        let result = match logs {
            Ok(logs) => {
                logs.stream(reporter, async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            reporter.event(Event::Note {
                message: format!("the log stream ended: {e:#}"),
                verbose: false,
            });
        }
    };
    let session = Session {
        opts,
        app_dir: &app_dir,
        manifest_path: loaded.path.clone(),
        target: &target,
        inputs,
        reporter,
        locks: std::sync::Mutex::new(BTreeMap::new()),
    };
    session.remember_locks();
    let main = async {
        let result = session
            .run(&mut watcher, &mut changes, &mut stop, &mut outcome)
            .await;
        let _ = stop_logs.send(true);
        result
    };
    let (result, ()) = tokio::join!(main, logs);
    result?;
    drop(watcher);

    let message = if opts.down_on_exit {
        let down = local::down(&app_dir, opts.env.as_deref(), false).await?;
        format!(
            "stopped watching; removed app `{}` ({} containers, --down-on-exit)",
            outcome.app,
            down.containers.len()
        )
    } else {
        outcome.left_running = true;
        format!(
            "stopped watching; app `{}` keeps running at {} (`dronectl down` removes it)",
            outcome.app, outcome.entry_url
        )
    };
    reporter.event(dev(DevWhat::Stopped, Vec::new(), message));
    Ok(outcome)
}

fn dev(what: DevWhat, services: Vec<String>, message: impl Into<String>) -> Event {
    Event::Dev(DevEvent::new(what, services, message))
}

fn is_compile_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<BuildError>(),
            Some(BuildError::Compile { .. })
        )
    })
}

/// A build running on a blocking thread.
struct Running {
    handle: tokio::task::JoinHandle<Result<BuildOutcome, BuildError>>,
    services: Vec<String>,
    started: Instant,
    /// When the first change of this build was seen.
    seen: Instant,
}

struct Session<'a> {
    opts: &'a DevOptions,
    app_dir: &'a Path,
    manifest_path: PathBuf,
    target: &'a LocalTarget,
    inputs: Inputs,
    reporter: &'a dyn Reporter,
    /// The workspaces' `Cargo.lock` as the last build left them: cargo writing it is not
    /// a change to rebuild for.
    locks: std::sync::Mutex<BTreeMap<PathBuf, Option<Vec<u8>>>>,
}

impl Session<'_> {
    fn remember_locks(&self) {
        let mut locks = self.locks.lock().expect("locks");
        for s in self.inputs.services() {
            let lock = s.workspace.join("Cargo.lock");
            let text = std::fs::read(&lock).ok();
            locks.insert(lock, text);
        }
    }

    /// Whether `path` is a `Cargo.lock` exactly as the last build left it.
    fn own_write(&self, path: &Path) -> bool {
        let locks = self.locks.lock().expect("locks");
        locks
            .get(path)
            .is_some_and(|kept| *kept == std::fs::read(path).ok())
    }

    async fn run(
        &self,
        watcher: &mut Watcher,
        changes: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Vec<PathBuf>, String>>,
        stop: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        outcome: &mut DevOutcome,
    ) -> anyhow::Result<()> {
        let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let mut pending: BTreeMap<String, BTreeSet<PathBuf>> = BTreeMap::new();
        let mut first_seen: Option<Instant> = None;
        let mut settle_until: Option<tokio::time::Instant> = None;
        let mut missing: BTreeSet<String> = BTreeSet::new();
        let mut running: Option<Running> = None;
        loop {
            let settle = async {
                match settle_until {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                biased;
                _ = stop.as_mut() => break,
                Some(event) = events.recv() => self.reporter.event(event),
                Some(message) = changes.recv() => {
                    let mut paths = match message {
                        Ok(paths) => paths,
                        Err(e) => {
                            self.reporter.event(Event::Note { message: format!("watching: {e}"), verbose: false });
                            continue;
                        }
                    };
                    self.check_dirs(watcher, &mut missing, &mut pending);
                    paths.retain(|p| !self.own_write(p));
                    let batch = watch::sort(&self.inputs, paths, &self.manifest_path);
                    if batch.manifest {
                        self.reporter.event(Event::Note {
                            message: "dronectl.yaml changed: restart `dronectl dev` to apply it (the loop keeps the settings it started with)".into(),
                            verbose: false,
                        });
                    }
                    for (service, paths) in batch.services {
                        if missing.contains(&service) {
                            continue;
                        }
                        self.reporter.event(Event::Dev(DevEvent {
                            paths: paths.iter().cloned().collect(),
                            ..DevEvent::new(
                                DevWhat::Changed,
                                vec![service.clone()],
                                paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                            )
                        }));
                        pending.entry(service).or_default().extend(paths);
                    }
                    if !pending.is_empty() {
                        first_seen.get_or_insert_with(Instant::now);
                        settle_until = Some(tokio::time::Instant::now() + self.opts.debounce);
                    }
                }
                result = async { (&mut running.as_mut().expect("a build runs").handle).await }, if running.is_some() => {
                    let build = running.take().expect("a build runs");
                    while let Ok(event) = events.try_recv() {
                        self.reporter.event(event);
                    }
                    let result = result.map_err(|e| anyhow::anyhow!("the build thread failed: {e}"))?;
                    self.remember_locks();
                    self.finished(build, result, &pending, outcome).await?;
                }
                _ = settle, if running.is_none() && settle_until.is_some() => {
                    settle_until = None;
                    let services: Vec<String> = pending.keys().filter(|s| !missing.contains(*s)).cloned().collect();
                    pending.clear();
                    let seen = first_seen.take().unwrap_or_else(Instant::now);
                    if services.is_empty() {
                        continue;
                    }
                    running = Some(self.start_build(services, seen, events_tx.clone()));
                    outcome.builds += 1;
                }
            }
        }
        if let Some(build) = running {
            // The build thread finishes on its own; its image is not swapped in.
            build.handle.abort();
        }
        Ok(())
    }

    /// Notices service directories that disappeared or came back.
    fn check_dirs(
        &self,
        watcher: &mut Watcher,
        missing: &mut BTreeSet<String>,
        pending: &mut BTreeMap<String, BTreeSet<PathBuf>>,
    ) {
        for s in self.inputs.services() {
            let exists = s.dir.is_dir();
            let rel = self.inputs.relative(&s.dir);
            if !exists && missing.insert(s.service.clone()) {
                pending.remove(&s.service);
                self.reporter.event(dev(
                    DevWhat::Missing,
                    vec![s.service.clone()],
                    format!(
                        "{} is gone (deleted or renamed): `{}` keeps running its last version and is not rebuilt until the directory is back (rename it back, or fix `path` in dronectl.yaml and restart `dronectl dev`); watching the others",
                        rel.display(),
                        s.service
                    ),
                ));
            } else if exists && missing.remove(&s.service) {
                self.reporter.event(dev(
                    DevWhat::Restored,
                    vec![s.service.clone()],
                    format!("{} is back; watching it again", rel.display()),
                ));
                pending.entry(s.service.clone()).or_default().insert(rel);
            }
        }
        watcher.refresh(&self.inputs);
    }

    fn start_build(
        &self,
        services: Vec<String>,
        seen: Instant,
        events: tokio::sync::mpsc::UnboundedSender<Event>,
    ) -> Running {
        self.reporter.event(dev(
            DevWhat::BuildStarted,
            services.clone(),
            format!("building {}", services.join(", ")),
        ));
        let options = BuildOptions {
            app_dir: self.app_dir.to_path_buf(),
            services: services.clone(),
            env: self.opts.env.clone(),
            profile: Profile::Dev,
            ..Default::default()
        };
        let handle =
            tokio::spawn(async move { build::build(&options, &report::Channel(events)).await });
        Running {
            handle,
            services,
            started: Instant::now(),
            seen,
        }
    }

    /// A build ended: swap its images in, or say why not.
    async fn finished(
        &self,
        build: Running,
        result: Result<BuildOutcome, BuildError>,
        pending: &BTreeMap<String, BTreeSet<PathBuf>>,
        outcome: &mut DevOutcome,
    ) -> anyhow::Result<()> {
        let elapsed = build.started.elapsed().as_millis() as u64;
        let built = match result {
            Ok(built) => built,
            Err(e) => {
                outcome.failed_builds += 1;
                let why = match &e {
                    BuildError::Compile { .. } => "compile error (shown above)".to_string(),
                    other => other.to_string(),
                };
                self.reporter.event(Event::Dev(DevEvent {
                    elapsed_ms: Some(elapsed),
                    ..DevEvent::new(
                        DevWhat::BuildFailed,
                        build.services.clone(),
                        format!(
                            "{why}; the running version of {} keeps serving; waiting for the next save",
                            build.services.join(", ")
                        ),
                    )
                }));
                return Ok(());
            }
        };
        self.reporter.event(Event::Dev(DevEvent {
            elapsed_ms: Some(elapsed),
            ..DevEvent::new(
                DevWhat::BuildFinished,
                build.services.clone(),
                format!(
                    "{} ({} compiled) in {:.1}s",
                    build.services.join(", "),
                    built.rebuilt(),
                    elapsed as f64 / 1000.0
                ),
            )
        }));
        for image in &built.images {
            if pending.contains_key(&image.service) {
                // Changed again while it built: the next build's image goes in instead.
                self.reporter.event(Event::Note {
                    message: format!(
                        "`{}` changed again during its build; swapping in the next build instead",
                        image.service
                    ),
                    verbose: false,
                });
                continue;
            }
            let swapped = swap::swap(
                self.target,
                image,
                self.opts.progress_deadline,
                self.reporter,
            )
            .await;
            match swapped {
                Ok(Swapped::Live { version, revision }) => {
                    outcome.swaps += 1;
                    self.reporter.event(Event::Dev(DevEvent {
                        version: Some(version.clone()),
                        revision: Some(revision.clone()),
                        elapsed_ms: Some(build.seen.elapsed().as_millis() as u64),
                        ..DevEvent::new(
                            DevWhat::Live,
                            vec![image.service.clone()],
                            format!(
                                "{} is live: {version} ({revision}), {:.1}s after the change",
                                image.service,
                                build.seen.elapsed().as_secs_f64()
                            ),
                        )
                    }));
                }
                Ok(Swapped::Unchanged { version, revision }) => {
                    self.reporter.event(Event::Dev(DevEvent {
                        version: Some(version.clone()),
                        revision: Some(revision.clone()),
                        ..DevEvent::new(
                            DevWhat::Unchanged,
                            vec![image.service.clone()],
                            format!("{} already runs {version} ({revision})", image.service),
                        )
                    }));
                }
                Ok(Swapped::RolledBack { .. }) => outcome.rolled_back += 1,
                Err(e) => {
                    outcome.rolled_back += 1;
                    self.reporter.event(dev(
                        DevWhat::RolledBack,
                        vec![image.service.clone()],
                        format!("swapping in `{}` failed: {e:#}", image.service),
                    ));
                }
            }
        }
        Ok(())
    }
}

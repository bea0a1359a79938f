//! `dronectl logs`: the logs of the app's containers as one stream.
//!
//! Every container of the selection (every replica of every revision of a service, an
//! infrastructure entry's container, the router) is read with the engine's timestamps.
//! History is merged by timestamp; with `follow`, new lines are passed on as they arrive,
//! and containers that start while following (a rollout's new replicas, a restarted
//! container) are picked up within [`DISCOVERY_INTERVAL`]. JSON log records are parsed
//! (level, message, correlation id) into the [`LogEvent`](crate::events::LogEvent); [`render`] turns one into a
//! readable line. Nothing here prints: lines go to the reporter as events.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::bail;
use bollard::container::LogOutput;
use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, LogsOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use tokio::sync::mpsc;

mod record;

use record::*;
pub use record::{render, Rendered};

use super::app::{container_name, read_environment};
use super::{label_filter, labels, Names};
use crate::error::UsageError;
use crate::events::{Event, Reporter};

/// How often `follow` looks for containers that started since.
pub const DISCOVERY_INTERVAL: Duration = Duration::from_secs(1);

/// What `dronectl logs` reads.
#[derive(Debug, Clone)]
pub struct LogsOptions {
    pub app_dir: PathBuf,
    pub env: Option<String>,
    /// Services, infrastructure entries or `router`; empty: every container of the app.
    pub names: Vec<String>,
    /// Keep streaming new lines (and new containers) until stopped.
    pub follow: bool,
    /// Lines of history per container, before `grep`; `None`: all.
    pub tail: Option<usize>,
    /// Only lines at or after this time.
    pub since: Option<Since>,
    /// Only lines containing this text (case-sensitive, on the line as written).
    pub grep: Option<String>,
}

/// `--since`: a duration back from now (`10m`, `1h30m`) or an RFC 3339 time
/// (`2026-12-01T10:00:00Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    At(Timestamp),
}

impl FromStr for Since {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(d) = text.parse::<crate::manifest::Duration>() {
            return Ok(Since::Ago(d.0));
        }
        text.parse::<Timestamp>().map(Since::At).map_err(|_| {
            format!("invalid time `{text}`: write a duration back from now (`10m`, `1h30m`) or an RFC 3339 time (`2026-12-01T10:00:00Z`)")
        })
    }
}

impl Since {
    /// The moment this names, relative to `now`.
    pub fn resolve(self, now: Timestamp) -> Timestamp {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => jiff::SignedDuration::try_from(d)
                .ok()
                .and_then(|d| now.checked_sub(d).ok())
                .unwrap_or(Timestamp::MIN),
        }
    }
}

/// One container being read.
#[derive(Debug, Clone, Serialize)]
pub struct LogSource {
    pub container: String,
    #[serde(skip)]
    id: String,
    pub service: String,
    pub kind: String,
    pub label: String,
    pub revision: Option<String>,
    pub replica: Option<u32>,
}

/// What a `logs` run read.
#[derive(Debug, Clone, Serialize)]
pub struct LogsOutcome {
    pub app: String,
    /// The selected names (every service, infrastructure entry and the router when none
    /// was given).
    pub names: Vec<String>,
    pub containers: Vec<LogSource>,
    /// Lines passed on (after `since` and `grep`).
    pub lines: u64,
}

/// The selection, resolved against the manifest and the engine: open it, look at
/// [`Logs::sources`] (to lay out prefixes), then [`Logs::stream`] it.
pub struct Logs {
    docker: Docker,
    app: String,
    env: String,
    names: Vec<String>,
    /// Every name counts (nothing was given).
    all: bool,
    sources: Vec<LogSource>,
    opts: LogsOptions,
}

impl Logs {
    /// Checks the names against the manifest (unknown ones are a usage error naming the
    /// known ones), connects to the engine and lists the selection's containers.
    pub async fn open(opts: LogsOptions) -> anyhow::Result<Logs> {
        let (manifest, environment) = read_environment(&opts.app_dir, opts.env.as_deref())?;
        let env = environment.name;
        let m = &manifest.manifest;
        let mut known: Vec<String> = m.services.keys().cloned().collect();
        known.extend(m.infrastructure.keys().cloned());
        known.push("router".to_string());
        let unknown: Vec<&String> = opts.names.iter().filter(|n| !known.contains(n)).collect();
        if !unknown.is_empty() {
            bail!(UsageError(format!(
                "no service, infrastructure entry or router named {} in dronectl.yaml (known: {})",
                unknown
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                known.join(", ")
            )));
        }
        let all = opts.names.is_empty();
        let names: Vec<String> = known
            .into_iter()
            .filter(|n| all || opts.names.contains(n))
            .collect();
        let names_of = Names {
            app: m.app.value.clone(),
        };
        let docker = crate::docker::connect().await?;
        let mut logs = Logs {
            docker,
            app: names_of.app,
            env,
            names,
            all,
            sources: Vec::new(),
            opts,
        };
        let listed = logs.list(true).await?;
        if listed.is_empty() {
            bail!(UsageError(format!(
                "app `{}` is not up on the local Docker engine (environment `{}`); run `dronectl up` first",
                logs.app, logs.env
            )));
        }
        logs.sources = sources(&logs.selected(&listed));
        if logs.sources.is_empty() {
            bail!(UsageError(format!(
                "{} of app `{}` has no containers on the local Docker engine; run `dronectl up` (or deploy it)",
                logs.names
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                logs.app
            )));
        }
        Ok(logs)
    }

    /// The containers that will be read, in name order.
    pub fn sources(&self) -> &[LogSource] {
        &self.sources
    }

    /// The selected names, in manifest order (services, infrastructure, router).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The app's containers (all of them, or running and restarting ones only).
    async fn list(&self, all: bool) -> anyhow::Result<Vec<ContainerSummary>> {
        let filter = label_filter(&[(labels::APP, &self.app), (labels::ENV, &self.env)]);
        Ok(self
            .docker
            .list_containers(Some(
                ListContainersOptionsBuilder::default()
                    .all(all)
                    .filters(&filter)
                    .build(),
            ))
            .await?)
    }

    fn selected(&self, listed: &[ContainerSummary]) -> Vec<ContainerSummary> {
        listed
            .iter()
            .filter(|c| {
                let name = owner(c);
                !name.is_empty() && (self.all || self.names.contains(&name))
            })
            .cloned()
            .collect()
    }

    /// Reads the selection: history merged by timestamp, then (with `follow`) new lines as
    /// they arrive, until `stop` resolves or nothing of the selection runs any more.
    pub async fn stream(
        mut self,
        reporter: &dyn Reporter,
        stop: impl Future<Output = ()>,
    ) -> anyhow::Result<LogsOutcome> {
        let since = self.opts.since.map(|s| s.resolve(Timestamp::now()));
        let grep = self.opts.grep.clone();
        let tail = self.opts.tail;
        let mut lines = 0u64;
        let mut emit = |source: &LogSource, line: LogLine| {
            if since.is_some_and(|s| line.timestamp < s) {
                return;
            }
            if let Some(grep) = &grep {
                if !line.text.contains(grep.as_str()) {
                    return;
                }
            }
            lines += 1;
            reporter.event(Event::Log(log_event(source, &line)));
        };

        let histories = futures_util::future::join_all(
            self.sources
                .iter()
                .map(|s| read(&self.docker, &s.id, tail, since, None)),
        )
        .await;
        let mut last_seen: HashMap<String, Timestamp> = HashMap::new();
        let mut per_source = Vec::new();
        for (index, history) in histories.into_iter().enumerate() {
            let history = history?;
            if let Some(last) = history.last() {
                last_seen.insert(self.sources[index].id.clone(), last.timestamp);
            }
            per_source.push(history);
        }
        for (index, line) in merge(per_source) {
            emit(&self.sources[index], line);
        }
        if !self.opts.follow {
            return Ok(self.outcome(lines));
        }

        let (tx, mut rx) = mpsc::unbounded_channel::<Followed>();
        let mut active: HashSet<String> = HashSet::new();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        for (index, source) in self.sources.iter().enumerate() {
            index_of.insert(source.id.clone(), index);
        }
        // Containers that had history continue after their last line; the others from
        // the start of the selection (`since`), as they had nothing yet.
        for source in &self.sources {
            active.insert(source.id.clone());
            match last_seen.get(&source.id) {
                Some(&after) => follow(&self.docker, &source.id, None, Some(after), &tx),
                None => follow(&self.docker, &source.id, tail, since, &tx),
            }
        }
        let mut discovery = tokio::time::interval(DISCOVERY_INTERVAL);
        discovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                message = rx.recv() => match message {
                    Some(Followed::Line(id, line)) => {
                        if last_seen.get(&id).is_some_and(|t| line.timestamp <= *t) {
                            continue;
                        }
                        last_seen.insert(id.clone(), line.timestamp);
                        if let Some(&index) = index_of.get(&id) {
                            emit(&self.sources[index], line);
                        }
                    }
                    Some(Followed::Ended(id)) => {
                        active.remove(&id);
                    }
                    None => break,
                },
                _ = discovery.tick() => {
                    let running = self.selected(&self.list(false).await?);
                    if running.is_empty() && active.is_empty() {
                        break;
                    }
                    let everything = self.selected(&self.list(true).await?);
                    let labelled = sources(&everything);
                    for c in running {
                        let id = c.id.clone().unwrap_or_default();
                        if active.contains(&id) {
                            continue;
                        }
                        let index = match index_of.get(&id) {
                            Some(&index) => index,
                            None => {
                                let Some(source) = labelled.iter().find(|s| s.id == id) else {
                                    continue;
                                };
                                self.sources.push(source.clone());
                                index_of.insert(id.clone(), self.sources.len() - 1);
                                self.sources.len() - 1
                            }
                        };
                        active.insert(id.clone());
                        // A container seen before goes on after its last line; a new one
                        // from its first line.
                        let from = last_seen.get(&self.sources[index].id).copied().or(since);
                        follow(&self.docker, &id, None, from, &tx);
                    }
                }
            }
        }
        Ok(self.outcome(lines))
    }

    fn outcome(&self, lines: u64) -> LogsOutcome {
        LogsOutcome {
            app: self.app.clone(),
            names: self.names.clone(),
            containers: self.sources.clone(),
            lines,
        }
    }
}

/// Follows one container in a task of its own: its lines, then `Ended` (also after an
/// error: the container is attached again if it still runs).
fn follow(
    docker: &Docker,
    id: &str,
    tail: Option<usize>,
    from: Option<Timestamp>,
    tx: &mpsc::UnboundedSender<Followed>,
) {
    let (docker, id, tx) = (docker.clone(), id.to_string(), tx.clone());
    tokio::spawn(async move {
        let _ = read(&docker, &id, tail, from, Some(&tx)).await;
        let _ = tx.send(Followed::Ended(id));
    });
}

/// A message from a followed container.
enum Followed {
    Line(String, LogLine),
    Ended(String),
}

/// One line as read from the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub timestamp: Timestamp,
    pub stderr: bool,
    pub text: String,
}

/// Reads one container's logs with timestamps: returns them (history), or, following
/// (`follow` given), sends them on it as they come and returns when the stream ends. A
/// container removed meanwhile has no lines.
async fn read(
    docker: &Docker,
    id: &str,
    tail: Option<usize>,
    since: Option<Timestamp>,
    follow: Option<&mpsc::UnboundedSender<Followed>>,
) -> anyhow::Result<Vec<LogLine>> {
    let mut options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .follow(follow.is_some())
        .tail(&tail.map_or("all".to_string(), |n| n.to_string()));
    if let Some(since) = since {
        // The engine takes whole seconds: read from the second before, drop the rest here.
        let seconds = since.as_second().clamp(0, i64::from(i32::MAX));
        options = options.since(seconds as i32);
    }
    let mut stream = docker.logs(id, Some(options.build()));
    let mut lines = Vec::new();
    let mut last = since.unwrap_or(Timestamp::UNIX_EPOCH);
    while let Some(chunk) = stream.next().await {
        let (stderr, bytes) = match chunk {
            Ok(LogOutput::StdErr { message }) => (true, message),
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => (false, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => break,
            Err(e) => return Err(e.into()),
        };
        for raw in String::from_utf8_lossy(&bytes).lines() {
            let (timestamp, text) = split_timestamp(raw);
            let timestamp = timestamp.unwrap_or(last);
            last = timestamp;
            if since.is_some_and(|s| timestamp < s) {
                continue;
            }
            let line = LogLine {
                timestamp,
                stderr,
                text: text.to_string(),
            };
            match follow {
                Some(tx) => {
                    if tx.send(Followed::Line(id.to_string(), line)).is_err() {
                        return Ok(lines);
                    }
                }
                None => lines.push(line),
            }
        }
    }
    Ok(lines)
}

/// Splits the engine's `2026-12-01T10:00:00.123456789Z ` prefix off a line.
pub fn split_timestamp(line: &str) -> (Option<Timestamp>, &str) {
    match line.split_once(' ') {
        Some((head, rest)) => match head.parse::<Timestamp>() {
            Ok(t) => (Some(t), rest),
            Err(_) => (None, line),
        },
        None => match line.parse::<Timestamp>() {
            Ok(t) => (Some(t), ""),
            Err(_) => (None, line),
        },
    }
}

/// Interleaves the containers' histories by timestamp; lines of one container keep their
/// order, and equal timestamps keep the order of the containers. Yields (container index,
/// line).
pub fn merge(histories: Vec<Vec<LogLine>>) -> Vec<(usize, LogLine)> {
    let mut all: Vec<(usize, LogLine)> = histories
        .into_iter()
        .enumerate()
        .flat_map(|(index, lines)| lines.into_iter().map(move |l| (index, l)))
        .collect();
    all.sort_by_key(|(_, line)| line.timestamp);
    all
}

/// The name a container belongs to: its service or infrastructure entry, or `router`.
fn owner(c: &ContainerSummary) -> String {
    let l = c.labels.clone().unwrap_or_default();
    if l.get(labels::KIND).map(String::as_str) == Some("router") {
        return "router".to_string();
    }
    l.get(labels::SERVICE).cloned().unwrap_or_default()
}

/// The containers as sources, labelled: a name with one container is just the name; with
/// several replicas of one revision `name.N`; with several revisions `name@REV.N` (or
/// `name@REV` for a revision with one replica).
fn sources(containers: &[ContainerSummary]) -> Vec<LogSource> {
    let mut out: Vec<LogSource> = containers
        .iter()
        .map(|c| {
            let l = c.labels.clone().unwrap_or_default();
            LogSource {
                container: container_name(c.names.clone()),
                id: c.id.clone().unwrap_or_default(),
                service: owner(c),
                kind: l.get(labels::KIND).cloned().unwrap_or_default(),
                label: String::new(),
                revision: l.get(labels::REVISION).cloned(),
                replica: l.get(labels::REPLICA).and_then(|r| r.parse().ok()),
            }
        })
        .collect();
    let keys: Vec<(String, Option<String>)> = out
        .iter()
        .map(|s| (s.service.clone(), s.revision.clone()))
        .collect();
    for s in &mut out {
        s.label = label(&s.service, s.revision.as_deref(), s.replica, &keys);
    }
    out.sort_by(|a, b| (&a.label, &a.container).cmp(&(&b.label, &b.container)));
    out
}

/// The prefix of one container among `all` (service, revision) pairs.
fn label(
    service: &str,
    revision: Option<&str>,
    replica: Option<u32>,
    all: &[(String, Option<String>)],
) -> String {
    let mine: Vec<&Option<String>> = all
        .iter()
        .filter(|(s, _)| s == service)
        .map(|(_, r)| r)
        .collect();
    if mine.len() <= 1 {
        return service.to_string();
    }
    let revisions: HashSet<&Option<String>> = mine.iter().copied().collect();
    let replicas_of_mine = mine.iter().filter(|r| r.as_deref() == revision).count();
    let replica = replica.map(|n| format!(".{n}")).unwrap_or_default();
    match revision {
        Some(rev) if revisions.len() > 1 && replicas_of_mine <= 1 => format!("{service}@{rev}"),
        Some(rev) if revisions.len() > 1 => format!("{service}@{rev}{replica}"),
        _ => format!("{service}{replica}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::LogEvent;

    fn source(service: &str) -> LogSource {
        LogSource {
            container: format!("app-{service}-r1-1"),
            id: "id".into(),
            service: service.into(),
            kind: "service".into(),
            label: service.into(),
            revision: Some("r1".into()),
            replica: Some(1),
        }
    }

    fn event(text: &str) -> LogEvent {
        log_event(
            &source("orders"),
            &LogLine {
                timestamp: "2026-12-01T10:00:00.5Z".parse().unwrap(),
                stderr: false,
                text: text.into(),
            },
        )
    }

    fn line(ts: &str, text: &str) -> LogLine {
        LogLine {
            timestamp: ts.parse().unwrap(),
            stderr: false,
            text: text.into(),
        }
    }

    #[test]
    fn a_flattened_tracing_record_reads_as_level_message_fields_and_correlation_id() {
        let e = event(
            r#"{"timestamp":"2026-12-01T10:00:00.1Z","level":"INFO","message":"request completed","status":200,"latency_ms":1.25,"target":"orders::telemetry","span":{"correlation_id":"req-42","method":"GET","path":"/api/orders/7","name":"request"}}"#,
        );
        assert_eq!(e.level.as_deref(), Some("INFO"));
        assert_eq!(e.message.as_deref(), Some("request completed"));
        assert_eq!(e.correlation_id.as_deref(), Some("req-42"));
        assert_eq!(
            render(&e),
            Rendered {
                level: Some("INFO".into()),
                text: "request completed status=200 latency_ms=1.25 method=GET path=/api/orders/7 [req-42]".into()
            }
        );
        assert_eq!(e.timestamp, "2026-12-01T10:00:00.500000000Z");
    }

    #[test]
    fn a_nested_record_with_span_list_and_other_loggers_keys_read_the_same_way() {
        // The router's format: fields under `fields`, no current span.
        let e = event(
            r#"{"timestamp":"t","level":"WARN","fields":{"message":"accept failed","error":"too many open files"},"target":"dronectl_router"}"#,
        );
        assert_eq!(
            render(&e),
            Rendered {
                level: Some("WARN".into()),
                text: r#"accept failed error="too many open files""#.into()
            }
        );
        let e = event(
            r#"{"level":"debug","fields":{"message":"x"},"spans":[{"name":"request","correlation_id":"c-1"}]}"#,
        );
        assert_eq!(render(&e).text, "x [c-1]");
        let e = event(r#"{"lvl":"error","msg":"boom","correlationId":"c-2","n":[1,2]}"#);
        assert_eq!(
            render(&e),
            Rendered {
                level: Some("ERROR".into()),
                text: "boom n=[1,2] [c-2]".into()
            }
        );
    }

    #[test]
    fn other_lines_stay_as_written() {
        for text in [
            "1:C 01 Dec 2026 10:00:00.000 * Ready to accept connections",
            r#"{"not":"a log record"}"#,
            "{broken json",
            "",
        ] {
            let e = event(text);
            assert!(e.fields.is_none(), "{text}");
            assert_eq!(
                render(&e),
                Rendered {
                    level: None,
                    text: text.into()
                }
            );
        }
    }

    #[test]
    fn the_engine_timestamp_is_split_off() {
        let (t, rest) = split_timestamp("2026-12-01T10:00:00.123456789Z hello world");
        assert_eq!(t, Some("2026-12-01T10:00:00.123456789Z".parse().unwrap()));
        assert_eq!(rest, "hello world");
        assert_eq!(
            split_timestamp("no timestamp here"),
            (None, "no timestamp here")
        );
        let (t, rest) = split_timestamp("2026-12-01T10:00:01Z");
        assert!(t.is_some());
        assert_eq!(rest, "");
    }

    #[test]
    fn histories_interleave_by_timestamp_keeping_each_containers_order() {
        let merged = merge(vec![
            vec![
                line("2026-12-01T10:00:00Z", "a1"),
                line("2026-12-01T10:00:02Z", "a2"),
                line("2026-12-01T10:00:02Z", "a3"),
            ],
            vec![
                line("2026-12-01T10:00:01Z", "b1"),
                line("2026-12-01T10:00:02Z", "b2"),
                line("2026-12-01T10:00:03Z", "b3"),
            ],
            vec![],
        ]);
        let order: Vec<(usize, &str)> = merged.iter().map(|(i, l)| (*i, l.text.as_str())).collect();
        assert_eq!(
            order,
            vec![
                (0, "a1"),
                (1, "b1"),
                (0, "a2"),
                (0, "a3"),
                (1, "b2"),
                (1, "b3")
            ]
        );
    }

    #[test]
    fn since_takes_durations_and_rfc3339_times() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap();
        let ago: Since = "10m".parse().unwrap();
        assert_eq!(ago.resolve(now), "2026-12-01T09:50:00Z".parse().unwrap());
        let at: Since = "2026-12-01T11:00:00+01:00".parse().unwrap();
        assert_eq!(at.resolve(now), now);
        let err = "yesterday".parse::<Since>().unwrap_err();
        assert!(err.contains("RFC 3339"), "{err}");
    }

    #[test]
    fn labels_show_replicas_and_revisions_only_when_there_are_several() {
        let keys = |pairs: &[(&str, &str)]| -> Vec<(String, Option<String>)> {
            pairs
                .iter()
                .map(|(s, r)| (s.to_string(), Some(r.to_string())))
                .collect()
        };
        let one = keys(&[("orders", "r1"), ("users", "r1")]);
        assert_eq!(label("orders", Some("r1"), Some(1), &one), "orders");
        let replicas = keys(&[("orders", "r1"), ("orders", "r1")]);
        assert_eq!(label("orders", Some("r1"), Some(2), &replicas), "orders.2");
        let revisions = keys(&[("orders", "r1"), ("orders", "r1"), ("orders", "r2")]);
        assert_eq!(
            label("orders", Some("r1"), Some(2), &revisions),
            "orders@r1.2"
        );
        assert_eq!(
            label("orders", Some("r2"), Some(1), &revisions),
            "orders@r2"
        );
        assert_eq!(
            label("router", None, None, &[("router".into(), None)]),
            "router"
        );
    }
}

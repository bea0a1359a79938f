//! `dronectl dev` on the real Docker engine, with a generated app (`new app` + `new service
//! --template rust-http`): the app comes up, an atomic save of a handler change is served
//! through the router with no failed request from a client polling during the swap, a burst
//! of saves is one build, a compile error is printed while the old version keeps serving,
//! a crash-looping version is rolled back with its last log lines, a renamed service
//! directory is reported and the loop goes on, and Ctrl-C (SIGINT) leaves the app running.
//! Also the errors that start nothing (not in an app, unknown service, no engine).
//!
//! The app runs under a unique name; a Drop guard runs `down --volumes` and removes its
//! images.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A generated app with the service `greeter` (template rust-http).
fn new_app(prefix: &str) -> TestApp {
    TestApp::generated(prefix, &[&["greeter", "--template", "rust-http"]])
}

/// The greeter's handler source.
fn api(app: &TestApp) -> PathBuf {
    app.dir.join("services/greeter/src/api.rs")
}

/// A running `dronectl -o json dev`: its events as they arrive (all kept, for the schema
/// check), its stderr collected.
struct Dev {
    child: Child,
    events: mpsc::Receiver<serde_json::Value>,
    seen: Vec<serde_json::Value>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Dev {
    fn start(app: &TestApp, args: &[&str]) -> Dev {
        let mut all = vec!["-o", "json", "dev"];
        all.extend_from_slice(args);
        let mut child = app
            .cmd(&all)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start dronectl dev");
        let (tx, events) = mpsc::channel();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    let _ = tx.send(event);
                }
            }
        });
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("dev stderr: {line}");
            }
        });
        Dev {
            child,
            events,
            seen: Vec::new(),
            lines,
        }
    }

    /// The next event matching `pred` (every event on the way is kept).
    fn wait(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if pred(&event) {
                        return event;
                    }
                }
                Err(_) => panic!(
                    "timed out after {timeout:?} waiting for {what}; events so far:\n{}",
                    self.lines.lock().unwrap().join("\n")
                ),
            }
        }
    }

    fn wait_dev(&mut self, what: &str, timeout: Duration) -> serde_json::Value {
        self.wait(&format!("a `{what}` dev event"), timeout, |e| {
            e["event"] == "dev" && e["what"] == what
        })
    }

    /// Dev events of kind `what` seen so far.
    fn count(&self, what: &str) -> usize {
        self.seen
            .iter()
            .filter(|e| e["event"] == "dev" && e["what"] == what)
            .count()
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn entry_port(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn body(port: u16) -> Option<String> {
    let r = http(port, "GET", "/api/greeter", &[]).ok()?;
    (r.status == 200).then_some(r.body)
}

/// Replaces `from` with `to` in `file` the way editors save: write a temporary file beside
/// it, then rename it over the original.
fn atomic_edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", file.display());
    let tmp = file.with_extension("rs.tmp-save");
    std::fs::write(&tmp, text.replacen(from, to, 1)).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}

/// A client polling the entry URL until stopped: every response's status and body.
struct Poller {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Result<(u16, String), String>>>,
}

impl Poller {
    fn start(port: u16) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut results = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                results.push(
                    http(port, "GET", "/api/greeter", &[])
                        .map(|r| (r.status, r.body))
                        .map_err(|e| e.to_string()),
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            results
        });
        Poller { stop, handle }
    }

    fn finish(self) -> Vec<Result<(u16, String), String>> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

const BUILD: Duration = Duration::from_secs(900);
const SWAP: Duration = Duration::from_secs(120);

#[test]
fn dev_loop_swaps_changes_in_and_keeps_serving_through_errors() {
    let app = new_app("dv");
    let mut dev = Dev::start(&app, &[]);
    let watching = dev.wait_dev("watching", BUILD);
    assert_eq!(watching["services"], serde_json::json!(["greeter"]));
    let summary_url = watching["message"].as_str().unwrap().to_string();
    let url = summary_url.split_whitespace().next().unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{summary_url}");
    let port = entry_port(&url);
    let first = wait_for("the first version", Duration::from_secs(30), || body(port));
    assert!(first.contains("Hello from greeter!"), "{first}");

    // An atomic save of a one-line handler change, with a client polling throughout.
    let poller = Poller::start(port);
    atomic_edit(&api(&app), "Hello from greeter!", "Hello again, v2!");
    // Seen as a change of the file itself (not of the temporary one), and only that.
    let changed = dev.wait_dev("changed", Duration::from_secs(10));
    assert_eq!(
        changed["paths"],
        serde_json::json!(["services/greeter/src/api.rs"]),
        "{changed}"
    );
    let live = dev.wait_dev("live", BUILD);
    assert_eq!(live["services"], serde_json::json!(["greeter"]));
    assert!(
        live["version"].as_str().unwrap().ends_with("-dev"),
        "{live}"
    );
    let served = wait_for("the new text", Duration::from_secs(10), || {
        body(port).filter(|b| b.contains("Hello again, v2!"))
    });
    assert!(served.contains("v2"));
    std::thread::sleep(Duration::from_millis(300));
    let results = poller.finish();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the swap: {failed:?}",
        failed.len(),
        results.len()
    );
    assert!(
        results.len() > 10,
        "the client polled only {} times",
        results.len()
    );
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Ok((_, b)) if b.contains("Hello from greeter!"))),
        "the poller never saw the old version"
    );
    assert_eq!(dev.count("build_started"), 1);

    // A burst of saves is one build.
    let builds_before = dev.count("build_started");
    let text = std::fs::read_to_string(api(&app)).unwrap();
    for i in 0..10 {
        std::fs::write(
            api(&app),
            text.replacen("Hello again, v2!", &format!("Burst {i}!"), 1),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    dev.wait_dev("live", BUILD);
    wait_for("the burst's last text", Duration::from_secs(10), || {
        body(port).filter(|b| b.contains("Burst 9!"))
    });
    assert_eq!(
        dev.count("build_started") - builds_before,
        1,
        "a burst of saves made more than one build"
    );

    // Files the rules ignore change nothing.
    std::fs::create_dir_all(app.dir.join("services/greeter/target")).unwrap();
    std::fs::write(app.dir.join("services/greeter/target/x.rs"), "junk").unwrap();
    std::fs::write(app.dir.join("services/greeter/src/.api.rs.swp"), "junk").unwrap();

    // A compile error: printed (the compiler's rendered message), the old version serves.
    atomic_edit(&api(&app), "Burst 9!", "Broken\" !!");
    let message = dev.wait("the compiler's error", BUILD, |e| {
        e["event"] == "compiler_message" && e["level"] == "error"
    });
    assert!(
        message["rendered"].as_str().unwrap().contains("api.rs"),
        "{message}"
    );
    let failed = dev.wait_dev("build_failed", BUILD);
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("keeps serving"),
        "{failed}"
    );
    assert!(body(port).unwrap().contains("Burst 9!"));
    // Only one change was seen for the three writes (the ignored files made none).
    assert_eq!(
        dev.seen
            .iter()
            .filter(|e| e["event"] == "dev" && e["what"] == "changed")
            .filter(|e| e["paths"].as_array().unwrap().iter().any(|p| p
                .as_str()
                .unwrap()
                .contains("target")
                || p.as_str().unwrap().ends_with(".swp")))
            .count(),
        0
    );

    // A version that crashes at start is rolled back with its last log lines.
    atomic_edit(&api(&app), "Broken\" !!", "Crashing soon");
    let main = app.dir.join("services/greeter/src/main.rs");
    atomic_edit(
        &main,
        "    telemetry::init();\n",
        "    telemetry::init();\n    if std::env::var_os(\"PORT\").is_some() {\n        tracing::error!(\"dev-test: crashing on purpose\");\n        return ExitCode::from(3);\n    }\n",
    );
    let rolled = dev.wait_dev("rolled_back", BUILD);
    let logs = rolled["logs"].as_array().cloned().unwrap_or_default();
    assert!(
        logs.iter()
            .any(|l| l.as_str().unwrap().contains("crashing on purpose")),
        "{rolled}"
    );
    assert!(body(port).unwrap().contains("Burst 9!"));

    // A renamed service directory: said clearly, the loop goes on; renamed back, it is built.
    let moved = app.dir.join("services/greeter-moved");
    std::fs::rename(app.dir.join("services/greeter"), &moved).unwrap();
    let missing = dev.wait_dev("missing", Duration::from_secs(20));
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("services/greeter"),
        "{missing}"
    );
    std::fs::rename(&moved, app.dir.join("services/greeter")).unwrap();
    dev.wait_dev("restored", Duration::from_secs(20));
    // Repair main.rs; the fixed version goes live.
    let text = std::fs::read_to_string(&main).unwrap();
    std::fs::write(
        &main,
        text.replace("    if std::env::var_os(\"PORT\").is_some() {\n        tracing::error!(\"dev-test: crashing on purpose\");\n        return ExitCode::from(3);\n    }\n", ""),
    )
    .unwrap();
    dev.wait_dev("live", BUILD);
    wait_for("the repaired version", Duration::from_secs(10), || {
        body(port).filter(|b| b.contains("Crashing soon"))
    });

    // Ctrl-C: the loop stops, says the app keeps running, and it does.
    let pid = dev.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let stopped = dev.wait_dev("stopped", SWAP);
    assert!(
        stopped["message"]
            .as_str()
            .unwrap()
            .contains("keeps running"),
        "{stopped}"
    );
    let summary = dev.wait("the summary", SWAP, |e| e["event"] == "summary");
    assert_eq!(summary["exit_code"], 0, "{summary}");
    assert_eq!(summary["result"]["left_running"], true);
    let status = dev.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(body(port).unwrap().contains("Crashing soon"));
    assert!(!app.containers_of(None).is_empty());

    assert_events_match_schema(&dev.lines.lock().unwrap().join("\n"));
}

#[test]
fn dev_errors_start_nothing() {
    // Not in an app.
    let tmp = tempfile::tempdir().unwrap();
    let out = run(tmp.path(), &["dev"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("dronectl.yaml"), "{}", stderr(&out));

    let app = new_app("dve");
    // Unknown service: exit 2 naming the known ones, nothing started.
    let out = app.run(&["dev", "nope"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("`nope`") && stderr(&out).contains("greeter"),
        "{}",
        stderr(&out)
    );
    // No engine: exit 1, nothing started.
    let out = app
        .cmd(&["dev"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_code(&out, 1);
    assert!(
        stderr(&out).to_lowercase().contains("docker"),
        "{}",
        stderr(&out)
    );
    assert!(
        app.containers_of(None).is_empty(),
        "{:?}",
        app.containers_of(None)
    );
}

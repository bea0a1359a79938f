//! `dronectl router`, what the local router container runs: the same flags and environment
//! variables as the standalone `dronectl-router` (one shared `dronectl_router::cli::Args`),
//! JSON log lines on stderr (startup, config, shutdown; never the admin token), and exit 2
//! on bad input. The real binary, on 127.0.0.1 ports the OS picks.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// `--long` and `[env: NAME=]` of each option in the `Options:` section of a long help.
fn options_section(help: &str) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    let mut in_options = false;
    for line in help.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            in_options = line == "Options:";
            continue;
        }
        if !in_options {
            continue;
        }
        let trimmed = line.trim_start();
        if line.starts_with("  -") || line.starts_with("      --") {
            let long = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .expect("a long flag");
            out.push((long.trim_end_matches('.').to_string(), None));
        } else if let Some(env) = trimmed.strip_prefix("[env: ") {
            let name = env.split('=').next().unwrap_or_default().to_string();
            out.last_mut().expect("env line after an option").1 = Some(name);
        }
    }
    out
}

#[test]
fn router_command_has_exactly_the_standalone_flags() {
    let out = run(std::path::Path::new("."), &["router", "--help"]);
    assert_code(&out, 0);
    let listed = options_section(&stdout(&out));

    // What `dronectl-router` accepts: the shared Args, plus --help and --version.
    let standalone =
        <dronectl_router::cli::Args as clap::Args>::augment_args(clap::Command::new("x"));
    let mut expected: Vec<(String, Option<String>)> = standalone
        .get_arguments()
        .map(|a| {
            (
                format!("--{}", a.get_long().expect("long flag")),
                a.get_env().map(|e| e.to_string_lossy().into_owned()),
            )
        })
        .collect();
    expected.push(("--help".into(), None));
    expected.push(("--version".into(), None));
    assert_eq!(listed, expected);
    for flag in [
        "--upstream-timeout-ms",
        "--connect-timeout-ms",
        "--max-body-bytes",
        "--drain-timeout-secs",
        "--bind-network",
        "--admin-token-file",
        "--public-listen",
        "--log-level",
        "--log-format",
    ] {
        assert!(listed.iter().any(|(l, _)| l == flag), "{flag}: {listed:?}");
    }
}

/// A running `dronectl router` whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = dronectl()
            .args([
                "router",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("LOG_LEVEL")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn dronectl router");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first (new) JSON log line whose message is `message`.
    fn wait_message(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no log line {message:?} on stderr; got {:#?}", self.seen)
            });
            self.seen.push(line.clone());
            let value: serde_json::Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stderr line is not JSON ({e}): {line}"));
            if value["fields"]["message"] == message {
                return value;
            }
        }
    }

    /// SIGTERM, then every remaining line and the exit code.
    fn stop(mut self) -> (Vec<String>, Option<i32>) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = self.child.wait().expect("wait").code();
        self.seen.extend(self.lines.iter());
        (std::mem::take(&mut self.seen), code)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn router_command_logs_startup_config_and_shutdown_on_stderr() {
    let tmp = tempfile::tempdir().unwrap();
    let token = "t0ken-that-must-never-be-logged-0123456789abcdef";
    let token_file = tmp.path().join("admin-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let table = tmp.path().join("table.json");
    std::fs::write(
        &table,
        r#"{"services":{"orders":{"versions":{"v1":{"weight":100,"endpoints":["127.0.0.1:9"]}},"routes":["/api/orders"]}}}"#,
    )
    .unwrap();

    let mut router = Running::start(&[
        "--public-listen",
        "127.0.0.1:0",
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--config",
        table.to_str().unwrap(),
        "--log-level",
        "trace",
    ]);
    let applied = router.wait_message("routing table applied");
    assert_eq!(applied["level"], "INFO");
    assert_eq!(applied["fields"]["generation"], 1);
    let listening = router.wait_message("router listening");
    let port = |field: &str| -> u16 {
        let addr: std::net::SocketAddr = listening["fields"][field]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{field} address in {listening}"));
        addr.port()
    };
    let (admin, public) = (port("admin"), port("public"));

    // The logged addresses are the live ones; requests carrying the token do not log it.
    let bearer = format!("Bearer {token}");
    let health = http(admin, "GET", "/healthz", &[("authorization", &bearer)]).unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    let refused = http(public, "GET", "/nowhere", &[("x-dronectl-token", token)]).unwrap();
    assert_eq!(refused.status, 404, "{refused:?}");
    router.wait_message("no route");

    let (lines, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    let messages: Vec<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    for expected in ["shutdown signal received", "router stopped"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected}: {lines:#?}"
        );
    }
    assert!(
        lines.iter().all(|l| !l.contains(token)),
        "the admin token was logged: {lines:#?}"
    );
}

#[test]
fn router_command_warns_without_a_token_and_honours_log_level() {
    let mut router = Running::start(&["--log-level", "warn"]);
    let warning = router.wait_message("no admin token: the admin API refuses every request");
    assert_eq!(warning["level"], "WARN");
    let (lines, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(
        lines.iter().all(|l| !l.contains("\"INFO\"")),
        "info lines under --log-level warn: {lines:#?}"
    );
}

#[test]
fn router_command_refuses_bad_input_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_table = tmp.path().join("table.json");
    std::fs::write(&bad_table, r#"{"services": {"Orders": {}}}"#).unwrap();
    let missing = tmp.path().join("no-such-token");
    for (args, says) in [
        (
            vec!["--admin-token-file", missing.to_str().unwrap()],
            "no-such-token",
        ),
        (vec!["--config", bad_table.to_str().unwrap()], "table.json"),
        (vec!["--log-level", "info,=x=y"], "invalid log filter"),
    ] {
        let out = dronectl()
            .args([
                "router",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(&args)
            .output()
            .expect("run dronectl router");
        assert_code(&out, 2);
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

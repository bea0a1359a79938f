//! The standalone `dronectl-router` binary: JSON log lines on stderr (nothing on stdout),
//! the `RUST_LOG` / `LOG_LEVEL` / `--log-level` precedence, plain text lines with
//! `--log-format text`, a clean exit 0 on SIGTERM, and exit 2 on bad input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running router whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronectl-router"));
        cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("LOG_LEVEL")
            .env_remove("ROUTER_LOG_FORMAT")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn dronectl-router");
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

    /// Waits for a new stderr line containing `text`.
    fn wait_line(&mut self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|_| {
                panic!("no line with {text:?} on stderr; got {:#?}", self.seen)
            });
            self.seen.push(line.clone());
            if line.contains(text) {
                return line;
            }
        }
    }

    /// SIGTERM; then every stderr line, what was on stdout, and the exit code.
    fn stop(mut self) -> (Vec<String>, String, Option<i32>) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut stdout = String::new();
        std::io::Read::read_to_string(&mut self.child.stdout.take().unwrap(), &mut stdout).unwrap();
        let code = self.child.wait().expect("wait").code();
        self.seen.extend(self.lines.iter());
        (std::mem::take(&mut self.seen), stdout, code)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(line: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    v["fields"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn logs_json_lines_on_stderr_and_nothing_on_stdout() {
    let mut router = Running::start(&[], &[]);
    router.wait_line("router listening");
    let (lines, stdout, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert_eq!(stdout, "");
    let messages: Vec<String> = lines.iter().map(|l| message(l)).collect();
    for expected in [
        "no admin token: the admin API refuses every request",
        "router listening",
        "shutdown signal received",
        "router stopped",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "{expected}: {lines:#?}"
        );
    }
}

#[test]
fn rust_log_wins_over_log_level_and_the_flag_over_both() {
    // RUST_LOG=warn over LOG_LEVEL=info: the warning, no info line.
    let mut router = Running::start(&[], &[("RUST_LOG", "warn"), ("LOG_LEVEL", "info")]);
    router.wait_line("no admin token");
    let (lines, _, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("\"INFO\"")), "{lines:#?}");

    // --log-level info over RUST_LOG=error: the info lines are there.
    let mut router = Running::start(&["--log-level", "info"], &[("RUST_LOG", "error")]);
    router.wait_line("router listening");
    let (lines, _, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn text_format_writes_plain_lines() {
    let mut router = Running::start(&[], &[("ROUTER_LOG_FORMAT", "text")]);
    let line = router.wait_line("router listening");
    assert!(
        serde_json::from_str::<serde_json::Value>(&line).is_err(),
        "{line}"
    );
    assert!(
        line.contains("INFO") && line.contains("admin=127.0.0.1:"),
        "{line}"
    );
    let (lines, _, code) = router.stop();
    assert_eq!(code, Some(0), "{lines:#?}");
}

#[test]
fn bad_input_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-token");
    for (args, env) in [
        (
            vec!["--admin-token-file", missing.to_str().unwrap()],
            vec![],
        ),
        (vec![], vec![("LOG_LEVEL", "info,=x=y")]),
        (vec!["--upstream-timeout-ms", "soon"], vec![]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dronectl-router"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(&args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .expect("run dronectl-router");
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {out:?}");
        assert!(!out.stderr.is_empty(), "{args:?} {env:?}");
    }
}

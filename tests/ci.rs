//! dronectl as a CI step: generated pipelines are valid for their providers (checked with
//! the providers' published schemas), every command's JSON output follows the versioned
//! event schema, and no command ever waits on standard input when it is not a terminal.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Validates JSON Lines output against docs/events.schema.json (python's jsonschema), and
/// checks that the last line is a summary whose exit code is the process's.
pub fn check_events(out: &std::process::Output) {
    let text = stdout(out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(!lines.is_empty(), "no JSON output; stderr: {}", stderr(out));
    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/events.schema.json");
    let mut child = Command::new("python3")
        .args(["-c", "import json,sys,jsonschema\nschema=json.load(open(sys.argv[1]))\nv=jsonschema.Draft7Validator(schema)\nbad=0\nfor n,line in enumerate(sys.stdin,1):\n  for e in v.iter_errors(json.loads(line)):\n    bad+=1; print(f'line {n}: {e.message}')\nsys.exit(1 if bad else 0)", schema.to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with jsonschema (scripts/prereqs.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "events do not match the schema:\n{}\n{text}",
        String::from_utf8_lossy(&result.stdout)
    );
    let summary: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(summary["event"], "summary", "the last line is the summary");
    assert_eq!(
        summary["exit_code"].as_i64(),
        out.status.code().map(i64::from),
        "{summary}"
    );
}

#[test]
fn pipelines_are_valid_for_their_providers() {
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&run(tmp.path(), &["new", "app", "shop"]), 0);
    let app = tmp.path().join("shop");
    assert_code(&run(&app, &["new", "service", "orders"]), 0);
    for (provider, path, schema) in [
        (
            "github",
            ".github/workflows/dronectl.yml",
            "vendor.github-workflows",
        ),
        ("gitlab", ".gitlab-ci.yml", "vendor.gitlab-ci"),
        (
            "azure-pipelines",
            "azure-pipelines.yml",
            "vendor.azure-pipelines",
        ),
    ] {
        let out = run(&app, &["-o", "json", "ci", "init", "--provider", provider]);
        assert_code(&out, 0);
        check_events(&out);
        let file = app.join(path);
        let text = std::fs::read_to_string(&file).unwrap();
        for step in [
            "dronectl validate",
            "cargo test",
            "dronectl build",
            "--push",
            "--canary",
            "rollout status",
        ] {
            assert!(text.contains(step), "{provider} pipeline lacks {step}");
        }
        let check = Command::new("check-jsonschema")
            .args([
                "--regex-variant",
                "python",
                "--builtin-schema",
                schema,
                file.to_str().unwrap(),
            ])
            .output()
            .expect("check-jsonschema (scripts/prereqs.sh installs it)");
        assert!(
            check.status.success(),
            "{provider}: {}{}",
            stdout(&check),
            stderr(&check)
        );
        // Never overwritten silently.
        let out = run(&app, &["ci", "init", "--provider", provider]);
        assert_code(&out, 2);
        assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    }
}

#[test]
fn json_output_follows_the_schema() {
    let tmp = tempfile::tempdir().unwrap();
    let out = run(
        tmp.path(),
        &["-o", "json", "new", "app", "shop", "--no-git"],
    );
    assert_code(&out, 0);
    check_events(&out);
    let app = tmp.path().join("shop");
    for args in [
        vec!["-o", "json", "new", "service", "orders", "--dry-run"],
        vec!["-o", "json", "validate"],
        vec!["-o", "json", "templates"],
        vec!["-o", "json", "new", "service", "Bad_Name"],
        vec!["-o", "json", "rollout", "status", "nope"],
    ] {
        let out = run(&app, &args);
        check_events(&out);
    }
}

#[test]
fn no_command_waits_on_stdin() {
    // Standard input is a pipe that stays open and never delivers a byte: a command that
    // tried to prompt would hang; every one must finish by itself.
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&run(tmp.path(), &["new", "app", "shop", "--no-git"]), 0);
    let app = tmp.path().join("shop");
    let cases: Vec<Vec<&str>> = vec![
        vec!["new", "service", "orders"],
        vec!["new", "service", "orders"],
        vec!["validate"],
        vec!["templates"],
        vec!["ci", "init", "--provider", "github"],
        vec!["ci", "init", "--provider", "github"],
        vec!["ps"],
        vec!["down"],
        vec!["rollout", "status", "orders"],
        vec!["rollout", "abort", "orders"],
        vec!["deploy", "orders", "--image", "nothing:here"],
        vec!["--yes", "down", "--volumes"],
    ];
    for args in cases {
        let started = Instant::now();
        let mut child = dronectl()
            .current_dir(&app)
            .env("CI", "true")
            .env("DRONECTL_STATE_DIR", tmp.path().join("state"))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let _open_stdin = child.stdin.take();
        let status = wait_for(
            &format!("`dronectl {}` to finish without input", args.join(" ")),
            Duration::from_secs(60),
            || child.try_wait().unwrap(),
        );
        eprintln!("dronectl {:?}: {status} in {:?}", args, started.elapsed());
    }
}

/// A real registry (Debian's docker-registry) on a free loopback port; killed on drop.
struct Registry {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", dir.path().join("storage").display()),
        )
        .unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry");
        wait_for("the registry", Duration::from_secs(20), || {
            http(port, "GET", "/v2/", &[]).ok()
        });
        Registry {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes the app from the engine (and its images) whatever happens.
struct Teardown {
    app: std::path::PathBuf,
    state: std::path::PathBuf,
    name: String,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let _ = dronectl()
            .current_dir(&self.app)
            .env("DRONECTL_STATE_DIR", &self.state)
            .args(["--env", "staging", "down", "--volumes"])
            .output();
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .unwrap();
        for image in stdout(&out).lines().filter(|i| {
            i.contains(&format!("/{}/", self.name)) || i.starts_with(&format!("{}/", self.name))
        }) {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f", image])
                .output();
        }
    }
}

fn set_strategy(app: &Path, steps: &str, round: u32) {
    let manifest = app.join("dronectl.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let head = &text[..text.find("\nstrategies:").unwrap()];
    let head = match head.find("    env: { ROUND:") {
        Some(i) => {
            let end = i + head[i..].find('\n').unwrap();
            format!(
                "{}    env: {{ ROUND: \"{round}\" }}{}",
                &head[..i],
                &head[end..]
            )
        }
        None => head.replacen(
            "    replicas: 1\n",
            &format!("    replicas: 1\n    env: {{ ROUND: \"{round}\" }}\n"),
            1,
        ),
    };
    let text = format!(
        "{head}
strategies:
  rolling:
    type: rolling
  canary:
    type: canary
    steps:
{steps}
    scale_down_delay: 1s
analyses:
  broken-check: {{ metric: http, url: \"http://127.0.0.1:9/never\", interval: 1s, count: 1 }}
"
    );
    std::fs::write(&manifest, text).unwrap();
}

#[test]
fn pipeline_steps_run_against_the_local_target() {
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("ci{:x}", std::process::id() % 65536);
    assert_code(&run(tmp.path(), &["new", "app", &name]), 0);
    let app = tmp.path().join(&name);
    let state = tmp.path().join("state");
    let _teardown = Teardown {
        app: app.clone(),
        state: state.clone(),
        name: name.clone(),
    };
    assert_code(&run(&app, &["new", "service", "api"]), 0);
    let manifest = std::fs::read_to_string(app.join("dronectl.yaml")).unwrap();
    let manifest = manifest.replacen(
        "environments:\n",
        &format!(
            "environments:\n  staging: {{ target: docker, registry: \"127.0.0.1:{}/ci\" }}\n",
            registry.port
        ),
        1,
    );
    std::fs::write(app.join("dronectl.yaml"), manifest).unwrap();
    set_strategy(
        &app,
        "      - weight: 50\n      - pause: { duration: 1s }",
        0,
    );
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .current_dir(&app)
            .args(["-c", "user.name=t", "-c", "user.email=t@t.invalid"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "service"]);
    let env = |cmd: &mut Command| {
        cmd.current_dir(&app)
            .env("CI", "true")
            .env("DRONECTL_STATE_DIR", &state)
            .env("CARGO_TARGET_DIR", shared_target_dir())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    Path::new(env!("CARGO_BIN_EXE_dronectl"))
                        .parent()
                        .unwrap()
                        .display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .stdin(Stdio::null());
    };
    // The environment runs: bring it up once (the pipeline deploys into it).
    let mut up = dronectl();
    env(&mut up);
    assert_code(
        &up.args(["--env", "staging", "up", "--timeout", "5m"])
            .output()
            .unwrap(),
        0,
    );

    // The generated GitHub workflow's staging job, step by step, as a script.
    assert_code(&run(&app, &["ci", "init", "--provider", "github"]), 0);
    let workflow = std::fs::read_to_string(app.join(".github/workflows/dronectl.yml")).unwrap();
    let steps = dronectl::ci::github_job_steps(&workflow, "staging").unwrap();
    let step = |name: &str| -> String {
        let found = steps
            .iter()
            .find(|s| s.name.starts_with(name))
            .unwrap_or_else(|| panic!("no step {name}"));
        found.run.replace("${{ github.event.before }}", "")
    };
    let run_step = |script: &str| -> std::process::Output {
        let mut cmd = Command::new("bash");
        env(&mut cmd);
        cmd.args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .output()
            .unwrap()
    };
    let deploy_events = || -> std::process::Output {
        let text = std::fs::read_to_string(app.join("deploy-staging.jsonl")).unwrap();
        let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        let code = last["exit_code"].as_i64().unwrap() as i32;
        std::process::Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(code << 8),
            stdout: text.into_bytes(),
            stderr: vec![],
        }
    };

    let rounds: [(&str, i32, &str); 3] = [
        (
            "      - weight: 50\n      - pause: { duration: 1s }",
            0,
            "ok",
        ),
        (
            "      - weight: 50\n      - analysis: broken-check",
            3,
            "aborted",
        ),
        ("      - weight: 50\n      - pause: {}", 5, "paused"),
    ];
    for (round, (steps_yaml, code, status)) in rounds.iter().enumerate() {
        set_strategy(&app, steps_yaml, round as u32 + 1);
        let out = run_step(&step("Build what changed and push"));
        assert_code(&out, 0);
        let artifacts: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(app.join("build.json")).unwrap())
                .unwrap();
        assert_eq!(artifacts[0]["pushed"], true, "{artifacts}");
        assert!(artifacts[0]["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("127.0.0.1:{}/ci/", registry.port)));
        let out = run_step(&step("Deploy to staging with a canary and wait"));
        assert_eq!(
            out.status.code(),
            Some(*code),
            "round {round}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        let events = deploy_events();
        check_events(&events);
        let summary: serde_json::Value =
            serde_json::from_str(stdout(&events).lines().last().unwrap()).unwrap();
        assert_eq!(summary["status"], *status);
        let out = run_step(&step("Rollout status"));
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(*code),
            "status: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // Paused: abort, then a timed-out wait exits 4.
    let mut abort = dronectl();
    env(&mut abort);
    assert_code(
        &abort
            .args(["--env", "staging", "rollout", "abort", "api"])
            .output()
            .unwrap(),
        0,
    );
    set_strategy(
        &app,
        "      - weight: 50\n      - pause: { duration: 10m }",
        9,
    );
    assert_code(&run_step(&step("Build what changed and push")), 0);
    let mut deploy = dronectl();
    env(&mut deploy);
    let out = deploy
        .args([
            "--env",
            "staging",
            "-o",
            "json",
            "deploy",
            "--artifacts",
            "build.json",
            "--canary",
            "--timeout",
            "3s",
        ])
        .output()
        .unwrap();
    assert_code(&out, 4);
    check_events(&out);
}

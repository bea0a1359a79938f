//! dronectl as a CI step: generated pipelines are valid for their providers (checked with
//! the providers' published schemas), lint clean (actionlint with shellcheck, shellcheck on
//! the GitLab and Azure scripts), give the workflow token least privilege, pin what they run
//! and let no value reach a script inline; hostile branch names are refused; every command's
//! JSON output follows the versioned event schema, and no command ever waits on standard
//! input when it is not a terminal.

use crate::common;

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
    assert_events_match_schema(&text);
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

const PROVIDERS: [(&str, &str); 3] = [
    ("github", ".github/workflows/dronectl.yml"),
    ("gitlab", ".gitlab-ci.yml"),
    ("azure-pipelines", "azure-pipelines.yml"),
];

/// An app with a service, in a git repository on branch `main`.
fn ci_app() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    assert_code(&run(tmp.path(), &["new", "app", "shop"]), 0);
    let app = tmp.path().join("shop");
    assert_code(&run(&app, &["new", "service", "orders"]), 0);
    (tmp, app)
}

/// Writes the pipeline of `provider` with `args` and returns its text and parsed form.
fn pipeline(app: &Path, provider: &str, args: &[&str]) -> (String, serde_json::Value) {
    let mut all = vec!["ci", "init", "--force", "--provider", provider];
    all.extend_from_slice(args);
    assert_code(&run(app, &all), 0);
    let path = PROVIDERS.iter().find(|(p, _)| *p == provider).unwrap().1;
    let text = std::fs::read_to_string(app.join(path)).unwrap();
    let doc = serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    (text, doc)
}

/// Every shell script of a pipeline: GitHub `run:`, GitLab `script`/`before_script`/
/// `after_script` lines, Azure `script:`/`bash:`.
fn scripts(provider: &str, doc: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(value: &serde_json::Value, keys: &[&str], out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    if keys.contains(&key.as_str()) {
                        match v {
                            serde_json::Value::String(s) => out.push(s.clone()),
                            serde_json::Value::Array(lines) => out.extend(
                                lines.iter().filter_map(|l| l.as_str().map(str::to_string)),
                            ),
                            _ => {}
                        }
                    } else {
                        walk(v, keys, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, keys, out)),
            _ => {}
        }
    }
    let keys: &[&str] = match provider {
        "github" => &["run"],
        "gitlab" => &["script", "before_script", "after_script"],
        _ => &["script", "bash"],
    };
    walk(doc, keys, &mut out);
    assert!(!out.is_empty(), "{provider}: no scripts found");
    out
}

/// The first major of each of GitHub's own actions whose `action.yml` declares
/// `runs.using: node24` (read from the actions' action.yml at each major).
const NODE24_MAJORS: [(&str, u32); 4] = [
    ("actions/checkout", 5),
    ("actions/cache", 5),
    ("actions/upload-artifact", 6),
    ("actions/download-artifact", 7),
];

fn is_commit_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn github_workflow_lints_clean_with_actionlint() {
    let (_tmp, app) = ci_app();
    pipeline(&app, "github", &[]);
    let shellcheck = Command::new("shellcheck").arg("--version").output();
    assert!(
        shellcheck.is_ok_and(|o| o.status.success()),
        "shellcheck (scripts/prereqs.sh installs it) lets actionlint check the run: scripts"
    );
    let out = Command::new("actionlint")
        .current_dir(&app)
        .args(["-no-color", "-shellcheck", "shellcheck"])
        .arg(".github/workflows/dronectl.yml")
        .output()
        .expect("actionlint (scripts/prereqs.sh installs it)");
    assert!(
        out.status.success() && stdout(&out).trim().is_empty(),
        "actionlint findings:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn github_workflow_is_least_privilege_and_pinned() {
    let (_tmp, app) = ci_app();
    let (text, doc) = pipeline(&app, "github", &[]);
    assert_eq!(
        doc["permissions"],
        serde_json::json!({"contents": "read"}),
        "a least-privilege top-level permissions block"
    );
    let jobs = doc["jobs"].as_object().unwrap();
    for (name, job) in jobs {
        // No job needs more than reading the repository: registry and cluster credentials
        // come from secrets, not from the workflow token.
        assert!(
            job.get("permissions").is_none(),
            "job {name} widens permissions"
        );
        for step in job["steps"].as_array().unwrap() {
            if let Some(run) = step["run"].as_str() {
                assert!(
                    !run.contains("${{"),
                    "job {name}: an expression inside a script (pass it through env:):\n{run}"
                );
            }
            let Some(uses) = step["uses"].as_str() else {
                continue;
            };
            let (action, reference) = uses.split_once('@').expect("uses: pinned with @");
            if action.starts_with("actions/") {
                if is_commit_sha(reference) {
                    continue;
                }
                let floor = NODE24_MAJORS
                    .iter()
                    .find(|(a, _)| *a == action)
                    .unwrap_or_else(|| panic!("{action}: check its node24 major and add it"))
                    .1;
                let major: u32 = reference
                    .strip_prefix('v')
                    .and_then(|m| m.parse().ok())
                    .unwrap_or_else(|| panic!("{uses}: pin a major (vN) or a commit"));
                assert!(
                    major >= floor,
                    "{uses} runs on Node 20; use v{floor} or later"
                );
            } else {
                assert!(
                    is_commit_sha(reference),
                    "{uses}: third-party actions pin a commit"
                );
                let line = text.lines().find(|l| l.contains(uses)).unwrap();
                let comment = line.split_once('#').map(|(_, c)| c.trim()).unwrap_or("");
                assert!(
                    comment.starts_with('v') && comment[1..].split('.').count() == 3,
                    "{uses}: name the version in a `# vX.Y.Z` comment"
                );
            }
            if action == "actions/checkout" {
                assert_eq!(
                    step["with"]["persist-credentials"],
                    serde_json::json!(false),
                    "job {name}: checkout keeps no token in .git/config"
                );
            }
        }
    }
    // Untrusted event data reaches scripts only through env:.
    let before = &jobs["staging"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Build what changed and push")
        .unwrap()["env"]["BEFORE_SHA"];
    assert_eq!(before, "${{ github.event.before }}");
    // The toolchain is pinned, and not by a moving channel.
    let rust = doc["env"]["RUST_TOOLCHAIN"].as_str().unwrap();
    assert!(
        rust.split('.').all(|p| p.parse::<u32>().is_ok()),
        "RUST_TOOLCHAIN {rust}"
    );
}

#[test]
fn scripts_never_contain_interpolated_values() {
    // The scripts are the same text whatever the branch and environments: no value chosen
    // by a user (or by a branch's name) is ever part of a command line.
    let (_tmp, app) = ci_app();
    for (provider, _) in PROVIDERS {
        let (_, one) = pipeline(&app, provider, &[]);
        let (text, other) = pipeline(
            &app,
            provider,
            &[
                "--branch",
                "release/2.0",
                "--staging",
                "qa",
                "--production",
                "prod",
            ],
        );
        assert!(
            text.contains("release/2.0") && text.contains("\"qa\""),
            "{text}"
        );
        assert_eq!(
            scripts(provider, &one),
            scripts(provider, &other),
            "{provider}"
        );
    }
}

/// Whether every expansion of a variable named by `is_var` in `script` is inside double
/// quotes (`"$CI_COMMIT_BEFORE_SHA"`, `"${CI_COMMIT_REF_NAME}"`).
fn expansions_quoted(script: &str, is_var: impl Fn(&str) -> bool) -> Result<(), String> {
    let bytes = script.as_bytes();
    let (mut single, mut double) = (false, false);
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if !single => i += 1,
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'$' if !single => {
                let rest = &script[i + 1..];
                let rest = rest.strip_prefix('{').unwrap_or(rest);
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if is_var(&name) && !double {
                    return Err(format!("unquoted ${name} in: {script}"));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Runs shellcheck (bash) on `script`; any finding fails.
fn shellcheck(what: &str, script: &str) {
    let mut child = Command::new("shellcheck")
        .args(["--shell", "bash", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("shellcheck (scripts/prereqs.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: shellcheck findings:\n{}\n{script}",
        stdout(&out)
    );
}

#[test]
fn gitlab_pipeline_is_pinned_and_quotes_its_variables() {
    let (_tmp, app) = ci_app();
    let (_, doc) = pipeline(&app, "gitlab", &[]);
    let image = doc["image"].as_str().unwrap();
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("{image}"));
    let version = tag.split('-').next().unwrap();
    assert!(
        version.split('.').count() >= 2 && version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "the Rust image is pinned to a version, not {image}"
    );
    for script in scripts("gitlab", &doc) {
        expansions_quoted(&script, |name| {
            name.starts_with("CI_") || name.starts_with("GITLAB_") || name.ends_with("_ENV")
        })
        .unwrap();
    }
    // Each job's script as the runner runs it: default before_script, then script.
    let before: Vec<&str> = doc["default"]["before_script"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    for job in ["test", "staging", "production"] {
        let mut lines = before.clone();
        lines.extend(
            doc[job]["script"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|l| l.as_str()),
        );
        shellcheck(job, &lines.join("\n"));
    }
    for job in ["staging", "production"] {
        let rule = doc[job]["rules"][0]["if"].as_str().unwrap();
        assert_eq!(rule, "$CI_COMMIT_BRANCH == \"main\"", "{job}");
    }
}

#[test]
fn azure_pipeline_uses_no_macros_in_scripts_and_pins_rust() {
    let (_tmp, app) = ci_app();
    let (_, doc) = pipeline(&app, "azure-pipelines", &[]);
    for script in scripts("azure-pipelines", &doc) {
        // `$(Name)` macros are substituted into the script text before it runs; values
        // must arrive as environment variables instead.
        let mut rest = script.as_str();
        while let Some(at) = rest.find("$(") {
            let name: String = rest[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            let is_macro = !name.is_empty() && rest[at + 2 + name.len()..].starts_with(')');
            assert!(!is_macro, "macro $({name}) in: {script}");
            rest = &rest[at + 2..];
        }
        expansions_quoted(&script, |name| {
            name.starts_with("BUILD_") || name.starts_with("SYSTEM_") || name.ends_with("_ENV")
        })
        .unwrap();
        shellcheck("azure step", &script);
    }
    let rust = doc["variables"]["RUST_TOOLCHAIN"].as_str().unwrap();
    assert!(
        rust.split('.').all(|p| p.parse::<u32>().is_ok()),
        "RUST_TOOLCHAIN {rust}"
    );
    let scripts = scripts("azure-pipelines", &doc).join("\n");
    assert!(scripts.contains("rustup toolchain install \"$RUST_TOOLCHAIN\""));
    assert_eq!(
        doc["stages"][1]["condition"],
        "and(succeeded(), eq(variables['Build.SourceBranch'], 'refs/heads/main'))"
    );
}

#[test]
fn hostile_branches_are_refused_and_nothing_is_written() {
    let (_tmp, app) = ci_app();
    for branch in [
        "main\"; rm -rf /",
        "a||b",
        "x\ny",
        "${{ github.token }}",
        "-rf",
        "a..b",
        "refs/heads/../x",
        "main'",
        "a`id`",
        "$(id)",
        "a b",
    ] {
        for (provider, path) in PROVIDERS {
            for dry_run in [false, true] {
                let flag = format!("--branch={branch}");
                let mut args = vec!["ci", "init", "--provider", provider, &flag];
                if dry_run {
                    args.push("--dry-run");
                }
                let out = run(&app, &args);
                assert_code(&out, 2);
                assert!(stderr(&out).contains("--branch"), "{}", stderr(&out));
                assert!(
                    !stderr(&out).contains("x\ny"),
                    "control characters are escaped"
                );
                assert!(!stdout(&out).contains("CI/CD pipeline"), "{}", stdout(&out));
                assert!(
                    !app.join(path).exists(),
                    "{provider}: {branch:?} wrote {path}"
                );
            }
        }
        // The same through the environment.
        let out = dronectl()
            .current_dir(&app)
            .env("DRONECTL_BRANCH", branch)
            .args(["ci", "init", "--provider", "github"])
            .output()
            .unwrap();
        assert_code(&out, 2);
        assert!(!app.join(".github").exists());
    }
    // Hostile environment names are refused the same way, naming their flag.
    for (flag, value) in [("--staging", "qa\"x"), ("--production", "p||q")] {
        let arg = format!("{flag}={value}");
        let out = run(&app, &["ci", "init", "--provider", "gitlab", &arg]);
        assert_code(&out, 2);
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
        assert!(!app.join(".gitlab-ci.yml").exists());
    }
}

#[test]
fn a_hostile_current_branch_is_refused() {
    // Without --branch the pipeline deploys from the repository's current branch, whose
    // name git allows to hold `$(…)`, `||` or quotes: it is checked like --branch.
    let (_tmp, app) = ci_app();
    let status = Command::new("git")
        .current_dir(&app)
        .args(["checkout", "-q", "-b", "x$(id)||y"])
        .status()
        .unwrap();
    assert!(status.success());
    for (provider, path) in PROVIDERS {
        let out = run(&app, &["ci", "init", "--provider", provider]);
        assert_code(&out, 2);
        let err = stderr(&out);
        assert!(
            err.contains("current git branch") && err.contains("--branch"),
            "{err}"
        );
        assert!(!app.join(path).exists());
    }
    assert_code(
        &run(
            &app,
            &["ci", "init", "--provider", "github", "--branch", "main"],
        ),
        0,
    );
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
    let step = |name: &str| -> &dronectl::ci::PipelineStep {
        steps
            .iter()
            .find(|s| s.name.starts_with(name))
            .unwrap_or_else(|| panic!("no step {name}"))
    };
    // A step runs as the runner runs it: `bash -eo pipefail`, with the workflow's, job's and
    // step's `env:`. Expressions (secrets, event data) have no value here: left unset.
    let output_file = tmp.path().join("github-output");
    let run_step = |step: &dronectl::ci::PipelineStep| -> std::process::Output {
        let mut cmd = Command::new("bash");
        for (key, value) in &step.env {
            if !value.contains("${{") {
                cmd.env(key, value);
            }
        }
        env(&mut cmd);
        cmd.env("GITHUB_OUTPUT", &output_file)
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", &step.run])
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
        let out = run_step(step("Build what changed and push"));
        assert_code(&out, 0);
        let artifacts: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(app.join("build.json")).unwrap())
                .unwrap();
        assert_eq!(artifacts[0]["pushed"], true, "{artifacts}");
        assert!(artifacts[0]["image"]
            .as_str()
            .unwrap()
            .starts_with(&format!("127.0.0.1:{}/ci/", registry.port)));
        // The production job receives exactly these artifacts through the job's output.
        std::fs::write(&output_file, "").unwrap();
        assert_code(&run_step(step("Record the artifacts for production")), 0);
        let recorded = std::fs::read_to_string(&output_file).unwrap();
        let recorded = recorded
            .strip_prefix("artifacts=")
            .and_then(|r| r.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("{recorded:?}"));
        assert!(!recorded.contains('\n'), "one line: {recorded}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(recorded).unwrap(),
            artifacts
        );
        let out = run_step(step("Deploy to staging with a canary and wait"));
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
        let out = run_step(step("Rollout status"));
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
    assert_code(&run_step(step("Build what changed and push")), 0);
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

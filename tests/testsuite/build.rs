//! `dronectl build`, `images` and `image pack` against the real Docker engine: static
//! binaries in scratch images (user, labels, entrypoint, size), a container answering its
//! health probe, incremental builds, determinism, compile errors, a push to a real local
//! registry (Debian's docker-registry) and a pull back by digest.
//!
//! Every test works on its own app name and tags (random suffix) and removes the
//! containers, images and processes it created in a Drop guard, so tests can run in
//! parallel with each other and with other suites. The release build is done once per
//! test binary and shares the suite's target directory.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::*;

const SERVICE: &str = "gen-svc";
/// The shared app's `origin`, as GitLab CI clones it (a job token in the URL).
const CI_REMOTE: &str =
    "https://gitlab-ci-token:glcbt-64_CLONETOKEN@gitlab.example.com/g/p.git?private=CLONETOKEN#CLONETOKEN";

fn suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{:x}{:x}", std::process::id(), nanos)
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=dronectl tests",
            "-c",
            "user.email=tests@dronectl.invalid",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("git");
    assert!(status.success(), "git {args:?}");
}

/// Removes what a test created, even when it fails half way.
#[derive(Default)]
struct Cleanup {
    containers: Vec<String>,
    /// Apps whose every image (by the dev.dronectl.app label) is removed.
    apps: Vec<String>,
    /// Image references removed (untagged) one by one.
    images: Vec<String>,
    processes: Vec<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        for app in &self.apps {
            let out = docker(&[
                "images",
                "-q",
                "--no-trunc",
                "--filter",
                &format!("label=dev.dronectl.app={app}"),
            ]);
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let mut ids: Vec<&str> = ids.lines().collect();
            ids.sort();
            ids.dedup();
            for id in ids {
                let _ = docker(&["rmi", "-f", id]);
            }
        }
        for image in &self.images {
            let _ = docker(&["rmi", image]);
        }
        for p in &mut self.processes {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn summary(out: &Output) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .rfind(|e| e["event"] == "summary")
        .unwrap_or_else(|| panic!("no summary in\n{}\n{}", stdout(out), stderr(out)))
}

/// dronectl with the suite's shared target dir.
fn dronectl_in(dir: &Path, args: &[&str]) -> Output {
    dronectl()
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .env_remove("RUSTFLAGS")
        .args(args)
        .output()
        .expect("run dronectl")
}

fn inspect(reference: &str) -> serde_json::Value {
    let text = docker_ok(&["image", "inspect", reference]);
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    list[0].clone()
}

/// A generated app (unique name, in git), built once for the whole file.
struct App {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    name: String,
    /// The first build's JSON summary.
    first: serde_json::Value,
    first_elapsed: Duration,
    /// Serialises the tests that change the app's files.
    lock: Mutex<()>,
}

fn app() -> &'static App {
    static APP: OnceLock<App> = OnceLock::new();
    APP.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let name = format!("bt-{}", suffix());
        assert_code(&run(tmp.path(), &["new", "app", &name]), 0);
        let dir = tmp.path().join(&name);
        assert_code(&run(&dir, &["new", "service", SERVICE]), 0);
        // A CI clone's remote: the token must never reach an image's labels.
        git(&dir, &["remote", "add", "origin", CI_REMOTE]);
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "add service"]);
        // Each test removes the app's images when it ends (see `app_cleanup`); the binary
        // stays in the target dir, so rebuilding an image is cheap.
        let start = Instant::now();
        let out = dronectl_in(&dir, &["-o", "json", "build"]);
        let first_elapsed = start.elapsed();
        assert_code(&out, 0);
        let first = summary(&out);
        // cargo wrote Cargo.lock: commit it so the tree is clean again.
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", "lock"]);
        App {
            _tmp: tmp,
            dir,
            name,
            first,
            first_elapsed,
            lock: Mutex::new(()),
        }
    })
}

/// Removes the shared app's images when the test ends.
fn app_cleanup() -> Cleanup {
    let mut cleanup = Cleanup::default();
    cleanup.apps.push(app().name.clone());
    cleanup
}

fn head_sha(dir: &Path) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["rev-parse", "--short=7", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn build_run_rebuild_and_prune() {
    let app = app();
    let _guard = app.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut cleanup = app_cleanup();
    eprintln!(
        "first build (clean, release, static): {:?}",
        app.first_elapsed
    );
    let first = &app.first;
    assert_eq!(first["result"]["rebuilt"], 1, "{first}");
    assert_eq!(first["result"]["compiled"], true);

    // Make sure the image exists (another test may have removed the app's images), then
    // build again: a clean tree gives `<version>-<sha>` (Cargo.lock was committed).
    assert_code(&dronectl_in(&app.dir, &["build"]), 0);
    let out = dronectl_in(&app.dir, &["-o", "json", "build"]);
    assert_code(&out, 0);
    let again = summary(&out);
    assert_eq!(again["result"]["rebuilt"], 0, "nothing changed: {again}");
    assert_eq!(again["result"]["compiled"], false, "cargo must not run");
    let image = &again["result"]["images"][0];
    let tag = image["tag"].as_str().unwrap();
    assert_eq!(tag, format!("0.1.0-{}", head_sha(&app.dir)));
    let reference = format!("{}/{SERVICE}:{tag}", app.name);

    // The image: non-root numeric user, entrypoint, labels, small.
    let info = inspect(&reference);
    assert_eq!(info["Config"]["User"], "65532:65532");
    assert_eq!(
        info["Config"]["Entrypoint"],
        serde_json::json!([format!("/usr/local/bin/{SERVICE}")])
    );
    let labels = &info["Config"]["Labels"];
    assert_eq!(labels["dev.dronectl.app"], app.name.as_str());
    assert_eq!(labels["dev.dronectl.service"], SERVICE);
    assert_eq!(labels["org.opencontainers.image.version"], "0.1.0");
    assert_eq!(
        labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap()
            .len(),
        40,
        "a full commit id"
    );
    assert!(labels["org.opencontainers.image.created"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(
        labels["org.opencontainers.image.source"], "https://gitlab.example.com/g/p.git",
        "the remote without userinfo, query or fragment"
    );
    assert!(!info.to_string().contains("CLONETOKEN"));
    assert_eq!(
        labels["dev.dronectl.inputs-hash"].as_str().unwrap().len(),
        64
    );
    let size = info["Size"].as_u64().unwrap();
    assert!(size < 15_000_000, "image is {size} bytes");

    // No-change rebuild: fast, and says so in human output.
    let start = Instant::now();
    let out = dronectl_in(&app.dir, &["build"]);
    let no_change = start.elapsed();
    assert_code(&out, 0);
    assert!(stderr(&out).contains("nothing rebuilt"), "{}", stderr(&out));
    eprintln!("no-change rebuild: {no_change:?}");
    assert!(
        no_change < Duration::from_secs(3),
        "no-change rebuild took {no_change:?}"
    );

    // --changed-since: nothing changed since HEAD, so nothing is selected.
    let out = dronectl_in(
        &app.dir,
        &["-o", "json", "build", "--changed-since", "HEAD"],
    );
    assert_code(&out, 0);
    let since = summary(&out);
    assert_eq!(since["result"]["images"], serde_json::json!([]), "{since}");
    assert_eq!(
        since["result"]["unchanged_since"],
        serde_json::json!([SERVICE])
    );

    // It runs: a container answering its health probe on a published port.
    let container = format!("bt-run-{}", suffix());
    cleanup.containers.push(container.clone());
    let port = free_port();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "-p",
        &format!("127.0.0.1:{port}:8080"),
        &reference,
    ]);
    let health = wait_for("the container's /healthz", Duration::from_secs(30), || {
        http(port, "GET", "/healthz", &[])
            .ok()
            .filter(|r| r.status == 200)
    });
    assert!(health.body.contains("ok"), "{}", health.body);
    let _ = docker(&["rm", "-f", &container]);

    // Same inputs and commit → the same image id, even when forced to rebuild. (The
    // image above may come from the first build, at the commit before Cargo.lock was
    // committed, so compare two forced builds.)
    let forced_id = || {
        let out = dronectl_in(&app.dir, &["-o", "json", "build", "--force"]);
        assert_code(&out, 0);
        let forced = summary(&out);
        assert_eq!(forced["result"]["rebuilt"], 1);
        forced["result"]["images"][0]["id"].clone()
    };
    let id = forced_id();
    assert_eq!(forced_id(), id, "deterministic");

    // One input file changed (the service's README: an input, but cargo has nothing to
    // recompile, which keeps this test cheap; scripts/bench-build.sh times a source
    // change): rebuilt, tagged -dirty, a new image id; the old image is still there.
    let readme = app.dir.join("services").join(SERVICE).join("README.md");
    let original = std::fs::read_to_string(&readme).unwrap();
    std::fs::write(&readme, format!("{original}\nA change.\n")).unwrap();
    let out = dronectl_in(
        &app.dir,
        &["-o", "json", "build", "--changed-since", "HEAD"],
    );
    std::fs::write(&readme, &original).unwrap();
    assert_code(&out, 0);
    let changed = summary(&out);
    assert_eq!(changed["result"]["rebuilt"], 1, "{changed}");
    let dirty_tag = changed["result"]["images"][0]["tag"].as_str().unwrap();
    assert!(dirty_tag.ends_with("-dirty"), "{dirty_tag}");
    assert_ne!(changed["result"]["images"][0]["id"], id);

    // `images` lists both; `prune` keeps the newest (the dirty one, tagged last).
    let out = dronectl_in(&app.dir, &["-o", "json", "images"]);
    assert_code(&out, 0);
    let listed = summary(&out)["result"]["images"].as_array().unwrap().len();
    assert!(listed >= 2, "{}", stdout(&out));
    let out = dronectl_in(&app.dir, &["-o", "json", "images", "prune", "--dry-run"]);
    assert_code(&out, 0);
    assert_eq!(
        summary(&out)["result"]["removed"].as_array().unwrap().len(),
        listed - 1
    );
    let out = dronectl_in(&app.dir, &["-o", "json", "images", "prune"]);
    assert_code(&out, 0);
    assert!(docker(&["image", "inspect", &reference]).status.code() != Some(0));
    let newest = format!("{}/{SERVICE}:{dirty_tag}", app.name);
    inspect(&newest);

    // Back to the committed source: the clean image was pruned, so it is built again
    // (cargo has nothing to do) and gets the same id as the forced builds.
    let out = dronectl_in(&app.dir, &["-o", "json", "build"]);
    assert_code(&out, 0);
    assert_eq!(summary(&out)["result"]["images"][0]["id"], id);
}

#[test]
fn compile_error_fails_and_tags_nothing() {
    let app = app();
    let _guard = app.lock.lock().unwrap_or_else(|e| e.into_inner());
    let _cleanup = app_cleanup();
    let main_rs = app
        .dir
        .join("services")
        .join(SERVICE)
        .join("src")
        .join("api.rs");
    let original = std::fs::read_to_string(&main_rs).unwrap();
    std::fs::write(&main_rs, format!("{original}\nfn broken( {{\n")).unwrap();
    let tag = format!("broken-{}", suffix());
    let out = dronectl_in(&app.dir, &["-o", "json", "build", "--tag", &tag]);
    std::fs::write(&main_rs, &original).unwrap();
    assert_code(&out, 1);
    let events = json_lines(&out);
    let message = events
        .iter()
        .find(|e| e["event"] == "compiler_message" && e["level"] == "error")
        .unwrap_or_else(|| panic!("no compiler error event:\n{}", stdout(&out)));
    assert_eq!(message["service"], SERVICE);
    assert!(message["rendered"].as_str().unwrap().contains("api.rs"));
    let error = events.iter().find(|e| e["event"] == "error").unwrap();
    assert!(
        error["message"].as_str().unwrap().contains(SERVICE),
        "{error}"
    );
    let reference = format!("{}/{SERVICE}:{tag}", app.name);
    assert_ne!(
        docker(&["image", "inspect", &reference]).status.code(),
        Some(0)
    );
}

/// A real registry: Debian's docker-registry on a free 127.0.0.1 port with its own storage.
fn start_registry(cleanup: &mut Cleanup, dir: &Path) -> u16 {
    start_registry_with(cleanup, dir, "")
}

/// [`start_registry`] with more configuration (`auth:` for a registry that needs a login).
fn start_registry_with(cleanup: &mut Cleanup, dir: &Path, extra: &str) -> u16 {
    let port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .expect("start /usr/bin/docker-registry (apt-get install docker-registry)");
    cleanup.processes.push(child);
    wait_for("the registry", Duration::from_secs(20), || {
        http(port, "GET", "/v2/", &[])
            .ok()
            .filter(|r| r.status == 200 || r.status == 401)
    });
    port
}

/// The password of the registry that needs a login (user `pushbot`; the bcrypt hash below
/// is `htpasswd -nbB pushbot <it>`).
const REGISTRY_PASSWORD: &str = "reg-pw-Zq81SECRETVALUE";
const REGISTRY_HTPASSWD: &str =
    "pushbot:$2y$05$NEVZw6md3B7RXCqgbSDdmeITNh9gDg3l8FIAbCI.EyXLYjLrM6sUm\n";

/// A real credential helper, `docker-credential-test`, in `dir/bin`: answers `get` with
/// the registry's login for `host` (and "not found" for any other server), as
/// docker-credential-helpers do, and records every server it was asked about in
/// `dir/asked`. With `fail`, it fails like a locked keychain.
fn credential_helper(dir: &Path, host: &str, fail: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let asked = dir.join("asked");
    let answer = if fail {
        "echo 'error getting credentials: keychain is locked' >&2; exit 3".to_string()
    } else {
        format!(
            "if [ \"$server\" = '{host}' ]; then\n  printf '{{\"ServerURL\":\"%s\",\"Username\":\"pushbot\",\"Secret\":\"%s\"}}\\n' \"$server\" '{REGISTRY_PASSWORD}'\nelse\n  echo 'credentials not found in native keychain'; exit 1\nfi"
        )
    };
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || {{ echo \"unsupported: $1\" >&2; exit 1; }}\nserver=$(cat)\nprintf '%s\\n' \"$server\" >> '{}'\n{answer}\n",
        asked.display()
    );
    let path = bin.join("docker-credential-test");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// `PATH` with `bin` first.
fn path_with(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A push to a registry that needs a login, with the login from a credential helper named
/// in `credHelpers`: it works, the helper is asked for the registry's host over the real
/// protocol, and the password appears nowhere — not in human or JSON output (with `-v`),
/// not in the artifacts file. Without credentials the same push fails with a note that
/// says it was anonymous; a failing helper stops the build before anything is built.
#[test]
fn push_with_credentials_from_a_helper_leaks_no_secret() {
    let app = app();
    let _guard = app.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut cleanup = app_cleanup();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("htpasswd"), REGISTRY_HTPASSWD).unwrap();
    let port = start_registry_with(
        &mut cleanup,
        tmp.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: dronectl-tests\n    path: {}\n",
            tmp.path().join("htpasswd").display()
        ),
    );
    let host = format!("127.0.0.1:{port}");
    let registry = format!("{host}/bt");
    let manifest = app.dir.join("dronectl.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let edited = original.replacen(
        "  local: { target: docker, strategy: rolling }",
        &format!(
            "  local: {{ target: docker, strategy: rolling }}\n  secured: {{ target: docker, registry: {registry} }}"
        ),
        1,
    );
    assert_ne!(edited, original, "manifest layout changed");
    std::fs::write(&manifest, &edited).unwrap();
    let docker_config = tmp.path().join("docker-config");
    std::fs::create_dir_all(&docker_config).unwrap();
    let helper_dir = tmp.path().join("helper");
    let push = |args: &[&str], bin: &Path| {
        dronectl()
            .current_dir(&app.dir)
            .env("CARGO_TARGET_DIR", shared_target_dir())
            .env_remove("RUSTFLAGS")
            .env("DOCKER_CONFIG", &docker_config)
            .env("PATH", path_with(bin))
            .args(args)
            .output()
            .expect("run dronectl")
    };
    let artifacts = tmp.path().join("artifacts.json");
    let json_args = [
        "-o",
        "json",
        "-v",
        "--env",
        "secured",
        "build",
        "--push",
        "--artifacts",
        artifacts.to_str().unwrap(),
    ];

    // No credentials: the registry refuses the anonymous push, and the output says it was
    // anonymous.
    let anonymous = push(&json_args, &helper_dir);
    // Credentials from a helper.
    let bin = credential_helper(&helper_dir, &host, false);
    std::fs::write(
        docker_config.join("config.json"),
        format!(r#"{{"credHelpers": {{"{host}": "test"}}, "credsStore": "no-such-store"}}"#),
    )
    .unwrap();
    let with_helper = push(&json_args, &bin);
    let human = push(&["-v", "--env", "secured", "build", "--push"], &bin);
    // A helper that fails: an error naming it, before anything is built or pushed.
    let failing_dir = tmp.path().join("failing");
    let failing_bin = credential_helper(&failing_dir, &host, true);
    let failing = push(&json_args[..7], &failing_bin);
    std::fs::write(&manifest, &original).unwrap();

    let all = |out: &Output| format!("{}{}", stdout(out), stderr(out));
    assert_code(&anonymous, 1);
    assert!(
        all(&anonymous).contains("pushing anonymously"),
        "{}",
        all(&anonymous)
    );
    assert_code(&with_helper, 0);
    assert_code(&human, 0);
    let asked = std::fs::read_to_string(helper_dir.join("asked")).unwrap();
    assert!(
        asked.lines().all(|l| l == host) && asked.lines().count() == 2,
        "the helper is asked for the registry host on stdin: {asked:?}"
    );
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artifacts).unwrap()).unwrap();
    assert_eq!(list[0]["pushed"], true, "{list}");
    assert!(stderr(&human).contains("credHelpers"), "{}", stderr(&human));
    assert_code(&failing, 1);
    let text = all(&failing);
    assert!(
        text.contains("docker-credential-test")
            && text.contains("keychain is locked")
            && text.contains("credHelpers[")
            && text.contains(&host),
        "{text}"
    );
    assert!(
        !json_lines(&failing)
            .iter()
            .any(|e| e["event"] == "build_step"),
        "nothing is built when the credentials cannot be used: {}",
        stdout(&failing)
    );

    // The secret, in any form, appears nowhere.
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let forms = [
        REGISTRY_PASSWORD.to_string(),
        b64(REGISTRY_PASSWORD),
        b64(&format!("pushbot:{REGISTRY_PASSWORD}")),
        "CLONETOKEN".to_string(),
    ];
    let artifacts_text = std::fs::read_to_string(&artifacts).unwrap();
    for out in [&anonymous, &with_helper, &human, &failing] {
        for text in [stdout(out), stderr(out)] {
            for secret in &forms {
                assert!(!text.contains(secret.as_str()), "{secret} leaked:\n{text}");
            }
        }
    }
    for secret in &forms {
        assert!(
            !artifacts_text.contains(secret.as_str()),
            "{artifacts_text}"
        );
    }
    let remote = format!("{registry}/{}/{SERVICE}", app.name);
    cleanup
        .images
        .push(format!("{remote}:{}", list[0]["tag"].as_str().unwrap()));
}

#[test]
fn push_to_a_local_registry_and_pull_by_digest() {
    let app = app();
    let _guard = app.lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut cleanup = app_cleanup();
    let tmp = tempfile::tempdir().unwrap();
    let port = start_registry(&mut cleanup, tmp.path());
    let registry = format!("127.0.0.1:{port}/bt");
    // An environment pointing at the registry, in a copy of the manifest.
    let manifest = app.dir.join("dronectl.yaml");
    let original = std::fs::read_to_string(&manifest).unwrap();
    let edited = original.replacen(
        "  local: { target: docker, strategy: rolling }",
        &format!(
            "  local: {{ target: docker, strategy: rolling }}\n  ci: {{ target: docker, registry: {registry} }}"
        ),
        1,
    );
    assert_ne!(edited, original, "manifest layout changed");
    std::fs::write(&manifest, &edited).unwrap();
    let artifacts = tmp.path().join("artifacts.json");
    let out = dronectl_in(
        &app.dir,
        &[
            "-o",
            "json",
            "--env",
            "ci",
            "build",
            "--push",
            "--artifacts",
            artifacts.to_str().unwrap(),
        ],
    );
    std::fs::write(&manifest, &original).unwrap();
    assert_code(&out, 0);
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&artifacts).unwrap()).unwrap();
    let entry = &list[0];
    assert_eq!(entry["service"], SERVICE);
    let remote = format!("{registry}/{}/{SERVICE}", app.name);
    assert_eq!(entry["image"], remote.as_str());
    let digest = entry["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    // Secrets never appear; here there are none, but the output must not carry auth.
    assert!(!stdout(&out).contains("password"));

    // Pull it back by digest (after removing the pushed tag, so the pull is real).
    let pushed_ref = format!("{remote}:{}", entry["tag"].as_str().unwrap());
    docker_ok(&["rmi", &pushed_ref]);
    let by_digest = format!("{remote}@{digest}");
    cleanup.images.push(by_digest.clone());
    docker_ok(&["pull", "-q", &by_digest]);
    let pulled = inspect(&by_digest);
    assert_eq!(pulled["Config"]["User"], "65532:65532");
}

#[test]
fn pack_a_dynamic_executable_and_run_it() {
    let redis = Path::new("/usr/bin/redis-server");
    if !redis.exists() {
        skip(
            "pack_a_dynamic_executable_and_run_it",
            "/usr/bin/redis-server is not installed (scripts/prereqs.sh installs it)",
        );
        return;
    }
    let mut cleanup = Cleanup::default();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("bt-pack-{}/redis:7", suffix());
    cleanup.images.push(tag.clone());
    let out = dronectl_in(
        tmp.path(),
        &[
            "-o",
            "json",
            "image",
            "pack",
            "/usr/bin/redis-server",
            "--tag",
            &tag,
            // As scripts/infra-images.sh does: a shell wrapper that appends
            // `--protected-mode no` to whatever command runs.
            "--include",
            "/bin/sh",
            "--entrypoint",
            "/bin/sh",
            "--entrypoint",
            "-c",
            "--entrypoint",
            "exec \"$@\" --protected-mode no",
            "--entrypoint",
            "redis",
            "--expose",
            "6379",
            "--workdir",
            "/data",
        ],
    );
    assert_code(&out, 0);
    let result = summary(&out)["result"].clone();
    assert_eq!(result["static"], false);
    assert!(
        result["libraries"].to_string().contains("ld-linux"),
        "{result}"
    );
    let info = inspect(&tag);
    assert_eq!(info["Config"]["User"], "65532:65532");
    assert_eq!(info["Config"]["WorkingDir"], "/data");
    let container = format!("bt-redis-{}", suffix());
    cleanup.containers.push(container.clone());
    let port = free_port();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "-p",
        &format!("127.0.0.1:{port}:6379"),
        &tag,
        // The reference app's infrastructure command.
        "redis-server",
        "--appendonly",
        "yes",
    ]);
    let pong = wait_for("redis to answer PING", Duration::from_secs(20), || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).ok()?;
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        text.starts_with("+PONG").then_some(text)
    });
    assert!(pong.starts_with("+PONG"));

    // Root is refused unless asked for explicitly.
    let out = dronectl_in(
        tmp.path(),
        &[
            "image",
            "pack",
            "/usr/bin/redis-server",
            "--tag",
            &tag,
            "--user",
            "0",
        ],
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--allow-root"), "{}", stderr(&out));
}

#[test]
fn no_engine_is_a_clear_error() {
    let (_tmp, dir) = new_app("bt-noengine");
    assert_code(&run(&dir, &["new", "service", "svc"]), 0);
    let out = dronectl()
        .current_dir(&dir)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["build"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let text = stderr(&out);
    assert!(text.contains("cannot reach a Docker engine"), "{text}");
    assert!(text.contains("DOCKER_HOST"), "{text}");
}

#[test]
fn bad_input_is_a_usage_error() {
    let (_tmp, dir) = new_app("bt-usage");
    assert_code(&run(&dir, &["new", "service", "svc"]), 0);
    let out = run(&dir, &["build", "nope"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("unknown service `nope`"),
        "{}",
        stderr(&out)
    );
    let out = run(&dir, &["build", "--push"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("--env"), "{}", stderr(&out));
    let out = run(&dir, &["--env", "local", "build", "--push"]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("no `registry`"), "{}", stderr(&out));
    let out = run(&dir, &["build", "--tag", "-bad"]);
    assert_code(&out, 2);
    let out = run(&dir, &["build", "--changed-since", "HEAD"]);
    assert_code(&out, 2); // not a git repository (new_app uses --no-git)
}

/// The reference app: every service builds into a small scratch image.
#[test]
fn reference_app_services_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app");
    let mut cleanup = Cleanup::default();
    let tag = format!("bt-{}", suffix());
    let start = Instant::now();
    let out = dronectl_in(&root, &["-o", "json", "build", "--tag", &tag]);
    eprintln!("reference app build: {:?}", start.elapsed());
    assert_code(&out, 0);
    let result = summary(&out)["result"].clone();
    let images = result["images"].as_array().unwrap();
    assert!(!images.is_empty());
    for image in images {
        let reference = format!("{}:{tag}", image["image"].as_str().unwrap());
        cleanup.images.push(reference.clone());
        let info = inspect(&reference);
        assert_eq!(info["Config"]["User"], "65532:65532", "{reference}");
        let size = info["Size"].as_u64().unwrap();
        assert!(size < 15_000_000, "{reference} is {size} bytes");
        assert_eq!(
            info["Config"]["Labels"]["dev.dronectl.service"],
            image["service"]
        );
    }
    // Nothing changed: nothing rebuilt, cargo not run, well under a second of work.
    let start = Instant::now();
    let out = dronectl_in(&root, &["-o", "json", "build", "--tag", &tag]);
    let elapsed = start.elapsed();
    assert_code(&out, 0);
    let again = summary(&out);
    assert_eq!(again["result"]["rebuilt"], 0, "{again}");
    assert_eq!(again["result"]["compiled"], false);
    eprintln!("reference app no-change rebuild: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

/// A service with its own Dockerfile is built from it (context: its directory), untagged
/// first, then tagged, with dronectl's labels.
#[test]
fn service_with_its_own_dockerfile() {
    let name = format!("bt-df-{}", suffix());
    let (_tmp, dir) = new_app(&name);
    let mut cleanup = Cleanup::default();
    cleanup.apps.push(name.clone());
    let web = dir.join("services").join("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("hello.txt"), "hello\n").unwrap();
    std::fs::write(
        web.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /srv/hello.txt\nUSER 65532:65532\n",
    )
    .unwrap();
    let manifest = dir.join("dronectl.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let text = text.replacen(
        "services:\n",
        "services:\n  web:\n    path: services/web\n    port: 8080\n",
        1,
    );
    std::fs::write(&manifest, text).unwrap();
    let out = dronectl_in(&dir, &["-o", "json", "build"]);
    assert_code(&out, 0);
    let result = summary(&out)["result"].clone();
    assert_eq!(result["compiled"], false);
    let image = &result["images"][0];
    assert_eq!(image["service"], "web");
    let tag = image["tag"].as_str().unwrap();
    // Outside git: <version>-<inputs hash>; no Cargo.toml: version 0.0.0.
    assert!(tag.starts_with("0.0.0-") && tag.len() == 13, "{tag}");
    let info = inspect(&format!("{name}/web:{tag}"));
    assert_eq!(info["Config"]["Labels"]["dev.dronectl.service"], "web");
    assert_eq!(info["Config"]["User"], "65532:65532");
    // Unchanged: reused.
    let out = dronectl_in(&dir, &["-o", "json", "build"]);
    assert_code(&out, 0);
    assert_eq!(summary(&out)["result"]["rebuilt"], 0);
}

/// Rollout state needs a directory only the user can write: with none of
/// DRONECTL_STATE_DIR, XDG_STATE_HOME and HOME set `up` refuses (exit 2) instead of using
/// a shared temporary directory, and a state directory below a directory everyone can
/// write is refused, naming it — both before anything is built or started.
#[test]
fn up_refuses_a_missing_or_shared_state_directory() {
    let (_tmp, dir) = new_app(&format!("bt-state-{}", suffix()));
    let app = dir.file_name().unwrap().to_string_lossy().to_string();
    let out = dronectl()
        .current_dir(&dir)
        .env_remove("HOME")
        .env_remove("XDG_STATE_HOME")
        .args(["up"])
        .output()
        .unwrap();
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("set DRONECTL_STATE_DIR"),
        "{}",
        stderr(&out)
    );
    assert!(
        !std::env::temp_dir()
            .join("dronectl-state")
            .join(&app)
            .exists(),
        "no fallback to the shared temporary directory"
    );

    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = dronectl()
        .current_dir(&dir)
        .env("DRONECTL_STATE_DIR", shared.path())
        .args(["-o", "json", "up"])
        .output()
        .unwrap();
    assert_code(&out, 1);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("refusing to keep rollout state")
            && text.contains(&shared.path().display().to_string())
            && text.contains("written by everyone"),
        "{text}"
    );
    assert!(
        !json_lines(&out).iter().any(|e| e["event"] == "build_step"),
        "nothing is built: {text}"
    );
}

/// Rollout state in the cluster is read through the same validation: a ConfigMap edited
/// to give the candidate 150% of the traffic (which printed `4294967246%` for the stable
/// version before) makes `rollout status` fail with the ConfigMap, the problem and how to
/// recover.
#[test]
fn damaged_rollout_state_in_the_cluster_is_refused() {
    let cluster = kube_fake::FakeCluster::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("config");
    cluster
        .write_kubeconfig(&kubeconfig, "staging", "default")
        .unwrap();
    let run = |args: &[&str]| {
        dronectl()
            .env("KUBECONFIG", &kubeconfig)
            .env("CI", "1")
            .args(["-C", "tests/fixtures/kube-app"])
            .args(args)
            .output()
            .unwrap()
    };
    for tag in ["1.0.0", "1.1.0"] {
        let out = run(&[
            "deploy",
            "delivery",
            "--env",
            "staging",
            "--tag",
            tag,
            "-n",
            "default",
            "--canary",
            "--timeout",
            "1s",
        ]);
        assert!(
            matches!(out.status.code(), Some(0 | 4 | 5)),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        use k8s_openapi::api::core::v1::ConfigMap;
        let api: kube::Api<ConfigMap> = kube::Api::namespaced(cluster.kube_client(), "default");
        let mut cm = api.get("dronectl-rollout-delivery").await.unwrap();
        let data = cm.data.as_mut().unwrap();
        let mut state: serde_json::Value = serde_json::from_str(&data["state"]).unwrap();
        state["weight"] = 150.into();
        data.insert("state".into(), state.to_string());
        api.replace("dronectl-rollout-delivery", &Default::default(), &cm)
            .await
            .unwrap();
    });
    let out = run(&[
        "rollout", "status", "delivery", "--env", "staging", "-n", "default",
    ]);
    assert_code(&out, 1);
    let text = stderr(&out);
    assert!(
        text.contains("key `state` of ConfigMap default/dronectl-rollout-delivery is damaged")
            && text.contains("150% of the traffic")
            && text.contains("kubectl -n default patch configmap dronectl-rollout-delivery"),
        "{text}"
    );
    assert!(!text.contains("4294967246"), "{text}");
}

//! Helpers shared by the integration tests: running the binary, making apps, comparing
//! directory trees, and an HTTP client over real sockets (dronectl's own, hyper).
#![allow(dead_code)]

pub mod kube_setup;
pub mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The dronectl binary under test.
pub fn dronectl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dronectl"));
    // Tests must not see the developer's settings.
    for (key, _) in std::env::vars() {
        if key.starts_with("DRONECTL_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env_remove("CI")
        .stdin(Stdio::null());
    cmd
}

/// Runs dronectl in `dir` with `args`.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    dronectl()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run dronectl")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A fresh app (without git, to keep it fast) in a temporary directory.
pub fn new_app(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = run(tmp.path(), &["new", "app", name, "--no-git"]);
    assert_code(&out, 0);
    let dir = tmp.path().join(name);
    (tmp, dir)
}

/// Every file under `dir` with its contents (symlinks as their target), for
/// before/after comparisons.
pub fn snapshot_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("prefix").to_path_buf();
            let kind = entry.file_type().expect("file type");
            if kind.is_symlink() {
                out.insert(
                    rel,
                    std::fs::read_link(&path)
                        .expect("link")
                        .into_os_string()
                        .into_encoded_bytes(),
                );
            } else if kind.is_dir() {
                out.insert(rel.join(""), Vec::new());
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The target directory shared by every build in the test suite.
pub fn shared_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An HTTP response, its body as text.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends one request to 127.0.0.1:`port` with dronectl's HTTP client (hyper) and reads the
/// whole response, within 20 seconds. Blocking: the exchange runs on a runtime of its own
/// thread, so async tests can call it too.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    http_with_body(port, method, path, headers, None)
}

/// [`http`] with a JSON body.
pub fn http_with_body(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Response> {
    let (method, path) = (method.to_string(), path.to_string());
    let body = body.map(<[u8]>::to_vec);
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let r = runtime.block_on(dronectl::http::request_with_headers(
            &method,
            &format!("127.0.0.1:{port}"),
            &path,
            &headers,
            body.as_deref(),
            Duration::from_secs(20),
        ))?;
        Ok(Response {
            status: r.status,
            body: r.text(),
            headers: r.headers,
        })
    })
    .join()
    .expect("the HTTP client thread")
}

/// Polls `f` until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records that `test` could not run here and why. The test harness captures what a
/// passing test prints, so the record goes to a file that `scripts/test.sh` lists (and
/// counts) in its summary line; the test then returns without asserting anything.
pub fn skip(test: &str, reason: &str) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped");
    std::fs::create_dir_all(&dir).expect("create the skipped-tests dir");
    std::fs::write(dir.join(test), format!("{test}: {reason}\n")).expect("record a skipped test");
    eprintln!("skipped: {reason}");
}

/// Asserts that every line of `text` (JSON Lines output) matches docs/events.schema.json
/// (python's jsonschema).
pub fn assert_events_match_schema(text: &str) {
    use std::io::Write as _;
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
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write events");
    let result = child.wait_with_output().expect("jsonschema");
    assert!(
        result.status.success(),
        "events do not match the schema:\n{}\n{text}",
        String::from_utf8_lossy(&result.stdout)
    );
}

/// Compiles `tests/fixtures/<name>.rs` with rustc into a static binary in `dir` (for a
/// `FROM scratch` image, packed with `dronectl image pack`); returns its path.
pub fn static_fixture(name: &str, dir: &Path) -> PathBuf {
    let exe = dir.join(name);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args([
            "-O",
            "-C",
            "target-feature=+crt-static",
            "--target",
            "x86_64-unknown-linux-gnu",
            "-o",
        ])
        .arg(&exe)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.rs")))
        .output()
        .expect("run rustc");
    assert!(out.status.success(), "{}", stderr(&out));
    exe
}

/// `<prefix>` and a suffix unique to this process and moment, for names that must not
/// collide with a parallel run (app names, tags).
pub fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}{:x}{:x}", std::process::id() % 4096, nanos % 65536)
}

/// An app for the tests on the real Docker engine: a unique name, a temporary directory,
/// a private state directory, dronectl run with the suite's shared target dir, and a Drop
/// guard that runs `down --volumes` and removes the app's images (every `<name>/…` and
/// `<name>-…` repository, and those in `images`).
pub struct TestApp {
    pub tmp: tempfile::TempDir,
    /// The app directory: `tmp` itself ([`TestApp::empty`]) or `tmp/<name>`
    /// ([`TestApp::generated`]).
    pub dir: PathBuf,
    pub name: String,
    pub state: PathBuf,
    /// More image references to remove at the end.
    pub images: Vec<String>,
}

impl TestApp {
    /// An empty app directory for an app named `<prefix><unique>`; the test writes its
    /// manifest. State in `<dir>/state`.
    pub fn empty(prefix: &str) -> TestApp {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        TestApp {
            state: dir.join("state"),
            dir,
            name: unique_name(prefix),
            tmp,
            images: Vec::new(),
        }
    }

    /// `dronectl new app <prefix><unique> --no-git`, then `dronectl new service` with each
    /// of `services` (its arguments). State in `<tmp>/state`.
    pub fn generated(prefix: &str, services: &[&[&str]]) -> TestApp {
        let name = unique_name(prefix);
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_code(&run(tmp.path(), &["new", "app", &name, "--no-git"]), 0);
        let dir = tmp.path().join(&name);
        for args in services {
            let mut cmd = vec!["new", "service"];
            cmd.extend_from_slice(args);
            assert_code(&run(&dir, &cmd), 0);
        }
        TestApp {
            state: tmp.path().join("state"),
            dir,
            name,
            tmp,
            images: Vec::new(),
        }
    }

    /// dronectl in the app directory, with the app's state directory.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = dronectl();
        cmd.current_dir(&self.dir)
            .env("DRONECTL_STATE_DIR", &self.state)
            .env("CARGO_TARGET_DIR", shared_target_dir())
            .args(args);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run dronectl")
    }

    /// `dronectl up --no-build --artifacts <artifacts> --timeout <timeout>`: the app from
    /// images built beforehand.
    pub fn up_from(&self, artifacts: &str, timeout: &str) -> Output {
        self.run(&[
            "up",
            "--no-build",
            "--artifacts",
            artifacts,
            "--timeout",
            timeout,
        ])
    }

    /// The `result` of the summary line of `dronectl -o json <args>`.
    pub fn result(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let last = stdout(&out).lines().last().map(str::to_string);
        let last = last.unwrap_or_else(|| panic!("no summary: {}", stderr(&out)));
        let summary: serde_json::Value = serde_json::from_str(&last).unwrap();
        summary["result"].clone()
    }

    /// Packs `tests/fixtures/<fixture>.rs` (a static binary, `FROM scratch`, with
    /// `dronectl image pack`) as the image `<name>-<service>:1` and writes an artifacts file
    /// (`<dir>/build.json`) naming it for `up --no-build`: (image reference, artifacts file).
    pub fn pack_fixture(&self, fixture: &str, service: &str) -> (String, String) {
        let exe = static_fixture(fixture, &self.dir);
        let repo = format!("{}-{service}", self.name);
        let image = format!("{repo}:1");
        let out = self.run(&["image", "pack", exe.to_str().unwrap(), "--tag", &image]);
        assert_code(&out, 0);
        let artifacts = self.dir.join("build.json");
        let built =
            serde_json::json!([{"service": service, "image": repo, "tag": "1", "digest": ""}]);
        std::fs::write(&artifacts, built.to_string()).unwrap();
        (image, artifacts.to_str().unwrap().to_string())
    }

    /// The app's containers (any state), optionally only `service`'s, by name.
    pub fn containers_of(&self, service: Option<&str>) -> Vec<String> {
        let mut args = vec![
            "ps".to_string(),
            "-a".into(),
            "--format".into(),
            "{{.Names}}".into(),
            "--filter".into(),
            format!("label=dev.dronectl.app={}", self.name),
        ];
        if let Some(service) = service {
            args.extend([
                "--filter".into(),
                format!("label=dev.dronectl.service={service}"),
            ]);
        }
        let out = Command::new("docker")
            .args(&args)
            .output()
            .expect("docker ps");
        stdout(&out).lines().map(str::to_string).collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let out = self.run(&["down", "--volumes"]);
        if !out.status.success() {
            eprintln!("cleanup: dronectl down failed: {}", stderr(&out));
        }
        let out = Command::new("docker")
            .args(["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .output()
            .expect("docker images");
        let (by_path, by_dash) = (format!("{}/", self.name), format!("{}-", self.name));
        let mut images: Vec<String> = stdout(&out)
            .lines()
            .filter(|i| i.starts_with(&by_path) || i.starts_with(&by_dash))
            .map(str::to_string)
            .collect();
        images.extend(self.images.iter().cloned());
        for image in images {
            let _ = Command::new("docker")
                .args(["image", "rm", "-f", &image])
                .output();
        }
    }
}

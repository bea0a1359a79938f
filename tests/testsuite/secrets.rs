//! Secrets end to end.
//!
//! * Local target, real Docker engine: a declared secret without a value stops `validate
//!   --env local` and `up` before anything starts (naming the command that sets it); `secret
//!   set` refuses a value on the command line and reads it from a pipe; the container gets it
//!   as `/run/secrets/NAME` (mode 0400, the image's user) and becomes ready only once it can
//!   read it; a new value rolls the service to a new revision; and the value is found in no
//!   output channel — stdout, stderr, `-o json`, rollout state files, the artifacts file,
//!   image labels, `docker inspect` of every container (Config.Env, Labels), container
//!   logs — only inside the container's file (read through the engine's archive API).
//! * Kubernetes, kube-fake: `set` applies the Secret `<svc>-secrets` with server-side apply
//!   (manager dronectl, data base64, type Opaque) in the environment's namespace; `deploy`
//!   fails before applying anything while a secret (or an existing Secret a `from:` names)
//!   is missing; pods reference the Secrets (projected volume, `secretKeyRef`), never the
//!   value; a new value rolls a new revision; `render` redacts; ConfigMaps and rollout
//!   state hold no value.
//!
//! The local service is tests/fixtures/secretfile.rs (compiled with rustc, packed `FROM
//! scratch`). A unique app name and `down --volumes` keep runs apart.

use crate::common;

use std::cell::RefCell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;

/// The local app ([`TestApp`]) and everything dronectl wrote in the test.
struct App {
    app: TestApp,
    /// Every stdout and stderr dronectl wrote in this test.
    transcript: RefCell<Vec<u8>>,
}

impl std::ops::Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl App {
    fn record(&self, out: &Output) {
        let mut t = self.transcript.borrow_mut();
        t.extend_from_slice(&out.stdout);
        t.extend_from_slice(&out.stderr);
    }
    fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd(args).output().expect("run dronectl");
        self.record(&out);
        out
    }
    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dronectl");
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        self.record(&out);
        out
    }
    fn manifest(&self, value: &str) {
        let text = format!(
            "app: {}
services:
  echo:
    path: services/echo
    port: 8080
    health: {{ liveness: /healthz, readiness: /readyz }}
    replicas: 1
    env: {{ V: \"{value}\" }}
    secrets: [DB_PASSWORD]
environments:
  local: {{ target: docker }}
",
            self.name
        );
        std::fs::write(self.dir.join("dronectl.yaml"), text).unwrap();
    }
    /// The service's containers: (name, revision label, secrets label).
    fn containers(&self) -> Vec<(String, String, String)> {
        let out = Command::new("docker")
            .args([
                "ps",
                "-a",
                "--format",
                "{{.Names}} {{.Label \"dev.dronectl.revision\"}} {{.Label \"dev.dronectl.secrets\"}}",
                "--filter",
                &format!("label=dev.dronectl.app={}", self.name),
                "--filter",
                "label=dev.dronectl.service=echo",
            ])
            .output()
            .unwrap();
        stdout(&out)
            .lines()
            .map(|l| {
                let mut parts = l.split(' ').map(str::to_string);
                (
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                    parts.next().unwrap_or_default(),
                )
            })
            .collect()
    }
}

/// `/run/secrets/<name>` of a container, through the engine's archive API (`docker cp`):
/// (content, mode, uid).
fn read_secret_file(container: &str, name: &str) -> (Vec<u8>, u32, u64) {
    let out = Command::new("docker")
        .args(["cp", &format!("{container}:/run/secrets/{name}"), "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut archive = tar::Archive::new(&out.stdout[..]);
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mode = entry.header().mode().unwrap();
    let uid = entry.header().uid().unwrap();
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
    (content, mode, uid)
}

/// Every regular file below `dir`, except the secret store (`.secrets`).
fn state_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if e.file_name() == ".secrets" {
            continue;
        }
        if path.is_dir() {
            state_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn local_secret_reaches_only_the_container_file() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let app = App {
        app: TestApp::empty("sc"),
        transcript: RefCell::new(Vec::new()),
    };
    let first = format!("v1-{}-{nanos:x}-Zq9", app.name);
    let second = format!("v2-{}-{nanos:x}-Wx7", app.name);

    let (image, artifacts) = app.pack_fixture("secretfile", "echo");
    let artifacts = artifacts.as_str();
    app.manifest("1");

    // No value yet: validate and up stop, naming the command; nothing is started.
    let command = "dronectl secret set echo DB_PASSWORD --env local";
    let out = app.run(&["validate", "--env", "local"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains(command) && stderr(&out).contains("dronectl.yaml:9:"),
        "{}",
        stderr(&out)
    );
    let out = app.run(&["validate"]);
    assert_code(&out, 0);
    let out = app.run(&["up", "--no-build", "--artifacts", artifacts]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains(command), "{}", stderr(&out));
    assert!(app.containers_of(None).is_empty(), "nothing may start");

    // A value on the command line is refused without being repeated.
    let out = app.run(&["secret", "set", "echo", "DB_PASSWORD", &first]);
    assert_code(&out, 2);
    assert!(!contains(&out.stderr, &first) && !contains(&out.stdout, &first));
    let out = app.run(&["secret", "set", "echo", "DB_PASSWORD", "--value", &first]);
    assert_code(&out, 2);
    // An undeclared name is refused before anything is read.
    let out = app.run_with_stdin(&["secret", "set", "echo", "OTHER"], b"x\n");
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("does not declare"),
        "{}",
        stderr(&out)
    );

    // From a pipe: one trailing newline dropped.
    let out = app.run_with_stdin(
        &["secret", "set", "echo", "DB_PASSWORD"],
        format!("{first}\n").as_bytes(),
    );
    assert_code(&out, 0);
    let out = app.run(&["-o", "json", "secret", "list"]);
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let listed = &summary["result"]["secrets"][0];
    assert_eq!(listed["name"], "DB_PASSWORD");
    assert_eq!(listed["set"], true);
    let out = app.run(&["validate", "--env", "local"]);
    assert_code(&out, 0);

    let out = app.up_from(artifacts, "2m");
    assert_code(&out, 0);
    let running = app.containers();
    assert_eq!(running.len(), 1, "{running:?}");
    let (container, rev1, secrets1) = running[0].clone();
    assert_eq!(secrets1.len(), 16, "a digest of versions: {secrets1}");
    let (content, mode, uid) = read_secret_file(&container, "DB_PASSWORD");
    assert_eq!(content, first.as_bytes());
    assert_eq!(mode & 0o7777, 0o400);
    assert_ne!(uid, 0, "owned by the image's (non-root) user");

    // A new value is a new revision, rolled out like an environment change.
    let out = app.run_with_stdin(
        &["secret", "set", "echo", "DB_PASSWORD"],
        format!("{second}\n").as_bytes(),
    );
    assert_code(&out, 0);
    let out = app.run(&["-o", "json", "deploy", "echo", "--image", &image]);
    assert_code(&out, 0);
    assert_events_match_schema(&stdout(&out));
    let running = app.containers();
    assert_eq!(running.len(), 1, "{running:?}");
    let (container, rev2, secrets2) = running[0].clone();
    assert_ne!(rev1, rev2, "a new value makes a new revision");
    assert_ne!(secrets1, secrets2);
    assert_eq!(
        read_secret_file(&container, "DB_PASSWORD").0,
        second.as_bytes()
    );
    // Nothing changed since: up keeps the revision.
    let out = app.run(&["-o", "json", "up", "--no-build", "--artifacts", artifacts]);
    assert_code(&out, 0);
    assert_eq!(app.containers()[0].1, rev2);

    // Every other channel.
    for args in [
        &["ps"][..],
        &["-o", "json", "ps"],
        &["rollout", "status", "echo"],
        &["-o", "json", "rollout", "status", "echo"],
        &["-o", "json", "rollout", "history", "echo"],
        &["logs", "--tail", "all"],
        &["-o", "json", "logs", "--tail", "all"],
        &["config"],
        &["-o", "json", "config"],
        &["secret", "list"],
        &["-v", "-o", "json", "secret", "list"],
    ] {
        let out = app.run(args);
        assert_code(&out, 0);
    }
    let mut channels: Vec<(String, Vec<u8>)> =
        vec![("stdout and stderr".into(), app.transcript.borrow().clone())];
    let mut files = Vec::new();
    state_files(&app.state, &mut files);
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json")),
        "rollout state files exist: {files:?}"
    );
    files.push(PathBuf::from(artifacts));
    files.push(app.dir.join("dronectl.yaml"));
    for f in files {
        channels.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    let inspect = |args: &[&str]| Command::new("docker").args(args).output().unwrap().stdout;
    channels.push((
        "image labels".into(),
        inspect(&["image", "inspect", &image]),
    ));
    for c in app.containers_of(None) {
        channels.push((format!("docker inspect {c}"), inspect(&["inspect", &c])));
        let logs = Command::new("docker").args(["logs", &c]).output().unwrap();
        channels.push((
            format!("docker logs {c}"),
            [logs.stdout, logs.stderr].concat(),
        ));
    }
    use base64::Engine as _;
    for value in [&first, &second] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        for (channel, bytes) in &channels {
            assert!(
                !contains(bytes, value) && !contains(bytes, &b64),
                "the secret value leaked into {channel}"
            );
        }
    }

    // Removed: list says so, and a deploy stops before touching anything.
    let out = app.run(&["secret", "rm", "echo", "DB_PASSWORD"]);
    assert_code(&out, 0);
    let out = app.run(&["secret", "list"]);
    assert!(stdout(&out).contains("missing"), "{}", stdout(&out));
    app.manifest("2");
    let out = app.run(&["deploy", "echo", "--image", &image]);
    assert_code(&out, 2);
    assert!(stderr(&out).contains(command), "{}", stderr(&out));
    assert_eq!(
        app.containers()[0].1,
        rev2,
        "the running revision is untouched"
    );
}

/// The Kubernetes target against kube-fake, through the binary (`--kubeconfig`).
#[test]
fn kubernetes_secrets_are_referenced_never_copied() {
    use base64::Engine as _;
    let cluster = kube_fake::FakeCluster::start_blocking();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, "staging", "default")
        .unwrap();
    let kubeconfig = kubeconfig.to_str().unwrap().to_string();
    std::fs::write(
        dir.path().join("dronectl.yaml"),
        "app: shop
services:
  api:
    path: api
    replicas: 1
    env: { LOG_LEVEL: info }
    secrets: [DB_PASSWORD, { name: SHOP_DB, env: true, from: { secret: shop-db, key: password } }]
environments:
  staging: { target: kubernetes, namespace: shop }
",
    )
    .unwrap();
    let transcript = RefCell::new(Vec::new());
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = dronectl();
        cmd.current_dir(dir.path())
            .env("DRONECTL_STATE_DIR", dir.path().join("state"))
            .env("KUBECONFIG", &kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        transcript
            .borrow_mut()
            .extend([&out.stdout[..], &out.stderr[..]].concat());
        out
    };
    let get = |plural: &str, name: &str| {
        let (group, version) = if plural == "deployments" {
            ("apps", "v1")
        } else {
            ("", "v1")
        };
        cluster.get_json(group, version, plural, "shop", name)
    };
    let first = format!("k1-{}-Qv8", std::process::id());
    let second = format!("k2-{}-Rb3", std::process::id());
    let external = format!("ext-{}-Lm2", std::process::id());
    let deploy = [
        "deploy",
        "--env",
        "staging",
        "--tag",
        "1.0.0",
        "--rolling",
        "--timeout",
        "60s",
    ];

    // Nothing set: deploy stops before applying anything, naming both secrets.
    let out = run(&deploy, None);
    assert_code(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("dronectl secret set api DB_PASSWORD --env staging"),
        "{err}"
    );
    assert!(err.contains("`shop-db` has no key `password`"), "{err}");
    assert!(
        cluster
            .all_objects()
            .iter()
            .all(|o| o["kind"] != "Deployment" && o["kind"] != "ConfigMap"),
        "nothing applied"
    );

    // set: the Secret api-secrets, server-side applied by dronectl (namespace created).
    let out = run(
        &["secret", "set", "api", "SHOP_DB", "--env", "staging"],
        Some(b"x"),
    );
    assert_code(&out, 2);
    assert!(stderr(&out).contains("comes from the existing Secret `shop-db`"));
    let out = run(
        &["secret", "set", "api", "DB_PASSWORD", "--env", "staging"],
        Some(format!("{first}\n").as_bytes()),
    );
    assert_code(&out, 0);
    let secret = get("secrets", "api-secrets").expect("the managed Secret");
    assert_eq!(secret["type"], "Opaque");
    let data = secret["data"]["DB_PASSWORD"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        first.as_bytes()
    );
    let managers: Vec<(&str, &str)> = secret["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(managers, [("dronectl", "Apply")]);
    let versions: serde_json::Value = serde_json::from_str(
        secret["metadata"]["annotations"]["dronectl.io/secret-versions"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        versions["DB_PASSWORD"]["version"].as_str().unwrap().len(),
        32
    );

    // An existing Secret, created elsewhere with stringData (kept as data, type Opaque).
    cluster
        .create_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "shop-db", "namespace": "shop"},
            "stringData": {"password": external},
        }))
        .unwrap();
    let shop_db = get("secrets", "shop-db").unwrap();
    assert_eq!(shop_db["type"], "Opaque");
    assert!(shop_db.get("stringData").is_none());
    assert_eq!(
        shop_db["data"]["password"],
        base64::engine::general_purpose::STANDARD.encode(&external)
    );
    // Invalid base64 is refused like the real server does.
    assert!(cluster
        .create_json(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "bad", "namespace": "shop"},
            "data": {"k": "not base64!"},
        }))
        .is_err());

    let out = run(&["-o", "json", "secret", "list", "--env", "staging"], None);
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let listed = summary["result"]["secrets"].as_array().unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|s| s["set"] == true), "{listed:?}");
    assert_eq!(listed[1]["location"], "Secret shop/shop-db key password");

    // deploy: the pod template references both Secrets and carries a digest of versions.
    let out = run(&deploy, None);
    assert_code(&out, 0);
    let pod_spec = |d: &serde_json::Value| d["spec"]["template"]["spec"].clone();
    let deployment = get("deployments", "api").expect("Deployment api");
    let spec = pod_spec(&deployment);
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "secrets")
        .expect("the secrets volume")
        .clone();
    let sources: Vec<&str> = volume["projected"]["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["secret"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["api-secrets", "shop-db"]);
    let container = &spec["containers"][0];
    assert!(container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/run/secrets" && m["readOnly"] == true));
    let env_ref = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "SHOP_DB")
        .expect("SHOP_DB variable")
        .clone();
    assert_eq!(
        env_ref["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "shop-db", "key": "password", "optional": false})
    );
    let digest = |d: &serde_json::Value| {
        d["spec"]["template"]["metadata"]["annotations"]["dronectl.io/secrets"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let digest1 = digest(&deployment);
    let revision1 =
        deployment["spec"]["template"]["metadata"]["labels"]["dronectl.io/revision"].clone();

    // A new value: a new revision, rolled out.
    let out = run(
        &["secret", "set", "api", "DB_PASSWORD", "--env", "staging"],
        Some(second.as_bytes()),
    );
    assert_code(&out, 0);
    let out = run(&deploy, None);
    assert_code(&out, 0);
    let deployment = get("deployments", "api").unwrap();
    assert_ne!(digest(&deployment), digest1);
    assert_ne!(
        deployment["spec"]["template"]["metadata"]["labels"]["dronectl.io/revision"],
        revision1
    );

    // render: references and a redacted Secret, offline.
    let out = run(&["render", "--env", "staging", "--tag", "1.0.0"], None);
    assert_code(&out, 0);
    let yaml = stdout(&out);
    assert!(
        yaml.contains("kind: Secret") && yaml.contains("DB_PASSWORD: <redacted>"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("SHOP_DB: <redacted>"),
        "an existing Secret is not rendered"
    );
    let out = run(
        &[
            "render",
            "--env",
            "staging",
            "--tag",
            "1.0.0",
            "--show-secrets",
        ],
        None,
    );
    assert_code(&out, 0);
    assert!(stdout(&out).contains(&format!("DB_PASSWORD: {second}")));
    for args in [
        &["-o", "json", "render", "--env", "staging", "--tag", "1.0.0"][..],
        &["-o", "json", "rollout", "status", "api", "--env", "staging"],
        &[
            "-o", "json", "rollout", "history", "api", "--env", "staging",
        ],
        &["config", "--env", "staging"],
        &["secret", "list", "--env", "staging"],
    ] {
        let out = run(args, None);
        assert_code(&out, 0);
    }

    // No value anywhere but in the Secrets: ConfigMaps (environment, rollout state), the
    // Deployment, events, and everything dronectl printed (but the --show-secrets render).
    let shown = format!("DB_PASSWORD: {second}");
    let printed = String::from_utf8_lossy(&transcript.borrow()).replace(&shown, "");
    for value in [&first, &second, &external] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(value);
        for o in cluster.all_objects() {
            if o["kind"] == "Secret" {
                continue;
            }
            let text = o.to_string();
            assert!(
                !text.contains(value.as_str()) && !text.contains(&b64),
                "the value leaked into {} {}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
        assert!(
            !printed.contains(value.as_str()) && !printed.contains(&b64),
            "printed"
        );
    }

    // rm: the last key takes the Secret with it, and deploy stops again.
    let out = run(
        &["secret", "rm", "api", "DB_PASSWORD", "--env", "staging"],
        None,
    );
    assert_code(&out, 0);
    assert!(get("secrets", "api-secrets").is_none());
    let out = run(&deploy, None);
    assert_code(&out, 2);
    assert!(stderr(&out).contains("dronectl secret set api DB_PASSWORD --env staging"));
}

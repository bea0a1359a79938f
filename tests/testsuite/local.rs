//! The local target and the rollout engine on the real Docker engine, with the reference
//! app: `up` (idempotent), a real delivery through the router, the router closed to app
//! containers (admin API and public port unreachable from the app network, admin token
//! required) and its entry serving only public routes, zero-downtime rolling,
//! blue-green and canary rollouts of `delivery` under steady load, a bad candidate aborted
//! by analysis, a crash-looping candidate failing fast, a killed dronectl resumed and
//! aborted from persisted state, a second concurrent deploy refused, and `down`.
//!
//! Everything runs under a unique app name (so parallel runs do not collide) and `down
//! --volumes` plus image removal clean up in a Drop guard.

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

fn reference_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("reference-app")
}

/// The reference app under a unique name ([`TestApp`]: its images are in `images`), and
/// the artifacts file of its build.
struct App {
    app: TestApp,
    artifacts: PathBuf,
}

impl std::ops::Deref for App {
    type Target = TestApp;
    fn deref(&self) -> &TestApp {
        &self.app
    }
}

impl std::ops::DerefMut for App {
    fn deref_mut(&mut self) -> &mut TestApp {
        &mut self.app
    }
}

impl App {
    fn manifest_path(&self) -> PathBuf {
        self.dir.join("dronectl.yaml")
    }
    /// Sets an environment variable of a service in the manifest (a new revision).
    fn set_env(&self, service: &str, key: &str, value: &str) {
        let text = std::fs::read_to_string(self.manifest_path()).unwrap();
        let start = text
            .find(&format!("\n  {service}:\n"))
            .expect("service entry");
        let env_at = start + text[start..].find("    env: ").expect("env line");
        let line_end = env_at + text[env_at..].find('\n').unwrap();
        let line = &text[env_at..line_end];
        let inner = line
            .trim_start_matches("    env: ")
            .trim_start_matches('{')
            .trim_end_matches('}')
            .trim();
        let mut pairs: Vec<String> = inner
            .split(", ")
            .filter(|p| !p.is_empty() && !p.starts_with(&format!("{key}:")))
            .map(str::to_string)
            .collect();
        pairs.push(format!("{key}: \"{value}\""));
        let new_line = format!("    env: {{ {} }}", pairs.join(", "));
        let updated = format!("{}{}{}", &text[..env_at], new_line, &text[line_end..]);
        std::fs::write(self.manifest_path(), updated).unwrap();
    }
}

/// Builds the reference app's images (once per test binary: the compile is shared with
/// every suite through the target dir) and makes an app directory that runs them under a
/// unique name, with strategies short enough for tests.
fn app() -> App {
    assert!(
        Command::new("docker")
            .args(["image", "inspect", "redis:7"])
            .output()
            .unwrap()
            .status
            .success(),
        "the redis:7 image is missing: run scripts/infra-images.sh (scripts/test.sh does)"
    );
    let mut app = TestApp::empty("dl");
    let name = app.name.clone();
    let artifacts = app.dir.join("build.json");
    let tag = unique_name("lt-");
    let out = dronectl()
        .current_dir(reference_app())
        .env("CARGO_TARGET_DIR", shared_target_dir())
        .args([
            "-o",
            "json",
            "build",
            "--tag",
            &tag,
            "--artifacts",
            artifacts.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_code(&out, 0);
    let built: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&artifacts).unwrap()).unwrap();
    let images = built
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["image"].as_str().unwrap(),
                a["tag"].as_str().unwrap()
            )
        })
        .collect();
    let manifest = std::fs::read_to_string(reference_app().join("dronectl.yaml")).unwrap();
    let head = &manifest[..manifest
        .find("\nenvironments:")
        .expect("environments section")];
    let head = head.replacen("app: drone-delivery", &format!("app: {name}"), 1);
    let manifest = format!(
        "{head}
environments:
  local: {{ target: docker }}
strategies:
  canary:
    type: canary
    steps:
      - weight: 50
      - pause: {{ duration: 1s }}
  quick-canary:
    type: canary
    steps:
      - weight: 25
      - analysis: errors
      - weight: 60
      - pause: {{ duration: 1s }}
    scale_down_delay: 2s
  blue-green:
    type: blue-green
    steps:
      - weight: 100
    scale_down_delay: 3s
  preview:
    type: blue-green
    steps:
      - pause: {{}}
      - weight: 100
    scale_down_delay: 1s
  rolling:
    type: rolling
    max_surge: 1
    max_unavailable: 0
  slow-canary:
    type: canary
    steps:
      - weight: 30
      - pause: {{ duration: 12s }}
      - weight: 60
  beta-first:
    type: canary
    sticky: true
    steps:
      - match: {{ header: {{ x-beta: \"true\" }} }}
      - mirror: 50
      - analysis: errors
      - pause: {{}}
      - weight: 40
      - pause: {{ duration: 1s }}
    scale_down_delay: 2s
analyses:
  errors: {{ metric: error-rate, threshold: 0.05, interval: 2s, count: 2 }}
"
    );
    std::fs::write(app.dir.join("dronectl.yaml"), manifest).unwrap();
    app.images = images;
    App { app, artifacts }
}

/// Steady traffic through the router to `delivery`: every response is recorded with the
/// version that served it; a 5xx or a transport error is a failure.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    log: Arc<Mutex<Vec<(Instant, u16, String)>>>,
    failures: Arc<Mutex<Vec<String>>>,
}

/// `GET path` on 127.0.0.1:`port`: the status and the `x-dronectl-version` that served.
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let r = http(port, "GET", path, &[])?;
    let version = r.header("x-dronectl-version").unwrap_or_default().trim();
    Ok((r.status, version.to_string()))
}

impl Load {
    fn start(port: u16, workers: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..workers)
            .map(|_| {
                let (stop, log, failures) = (stop.clone(), log.clone(), failures.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + Duration::from_secs(600);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match get(
                            port,
                            "/api/deliveries/public/00000000-0000-4000-8000-000000000000",
                        ) {
                            Ok((status, version)) => {
                                if status >= 500 {
                                    failures
                                        .lock()
                                        .unwrap()
                                        .push(format!("{status} from {version}"));
                                }
                                log.lock().unwrap().push((Instant::now(), status, version));
                            }
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            log,
            failures,
        }
    }

    fn finish(self) -> (Vec<(Instant, u16, String)>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let log = self.log.lock().unwrap().clone();
        let failures = self.failures.lock().unwrap().clone();
        (log, failures)
    }
}

fn entry_port(app: &App) -> u16 {
    let out = app.run(&["-o", "json", "ps"]);
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let url = summary["result"]["entry_url"]
        .as_str()
        .expect("entry url")
        .to_string();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

fn delivery_image(app: &App) -> String {
    app.images
        .iter()
        .find(|i| i.contains("/delivery:"))
        .unwrap()
        .clone()
}

/// The revision that has all of `service`'s traffic, from `dronectl ps`.
fn routed_revisions(app: &App, service: &str) -> Vec<(String, u64)> {
    let out = app.run(&["-o", "json", "ps"]);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let mut revs: Vec<(String, u64)> = summary["result"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == service && c["weight"].as_u64().unwrap_or(0) > 0)
        .map(|c| {
            (
                c["revision"].as_str().unwrap().to_string(),
                c["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    revs.dedup();
    revs
}

/// Event lines of a running dronectl, with the time each arrived.
type EventLog = Arc<Mutex<Vec<(Instant, serde_json::Value)>>>;

/// Spawns dronectl with JSON output and collects its event lines with the time each
/// arrived.
fn spawn_json(app: &App, args: &[&str]) -> (Child, EventLog) {
    let mut full = vec!["-o", "json"];
    full.extend_from_slice(args);
    let mut child = app
        .cmd(&full)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let out = child.stdout.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                sink.lock().unwrap().push((Instant::now(), v));
            }
        }
    });
    (child, lines)
}

/// One request to the entry port with the given `Host` (and other headers): status, the
/// `x-dronectl-version` that served, body.
fn entry_request(
    port: u16,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let headers: Vec<(&str, &str)> = [("Host", host)]
        .into_iter()
        .chain(headers.iter().copied())
        .collect();
    let r = http(port, method, path, &headers).unwrap();
    let version = r
        .header("x-dronectl-version")
        .unwrap_or_default()
        .trim()
        .to_string();
    (r.status, version, r.body)
}

/// `docker inspect` of a container as JSON.
fn inspect(container: &str) -> serde_json::Value {
    let out = Command::new("docker")
        .args(["inspect", container])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

/// The probe image (tests/fixtures/netprobe.rs as a static binary, `FROM scratch`).
fn probe_image(app: &App) -> String {
    let exe = static_fixture("netprobe", &app.dir);
    let tag = format!("{}-netprobe:1", app.name);
    let out = app.run(&["image", "pack", exe.to_str().unwrap(), "--tag", &tag]);
    assert_code(&out, 0);
    tag
}

/// Runs the probe on the app network against `targets`; its answer per target.
fn probe(app: &App, image: &str, targets: &[String]) -> Vec<(String, String)> {
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", &app.name, image])
        .args(targets)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| {
            let (t, r) = l.split_once(' ').unwrap();
            (t.to_string(), r.to_string())
        })
        .collect()
}

/// Only dronectl can change traffic: from a container on the app network, the router's
/// admin API and public port answer on no address; from the host, the admin API answers
/// only to the token, which is in the app's state (0600) and in no container setting. The
/// entry port serves only public routes: `Host` and dot-segments reach nothing else.
fn router_is_closed_to_the_app(app: &mut App, port: u16) {
    let router = format!("{}-router", app.name);
    let info = inspect(&router);
    let published = |p: &str| -> Option<u16> {
        info["NetworkSettings"]["Ports"][p][0]["HostPort"]
            .as_str()?
            .parse()
            .ok()
    };
    let admin_port = published("9901/tcp").expect("the admin port is published");
    let networks = info["NetworkSettings"]["Networks"].as_object().unwrap();

    // From a container on the app network: nothing answers on the admin or public port,
    // by service name or on any of the router's addresses (or the host's, through the app
    // network's gateway); the internal data port does answer (the probe is really there).
    let image = probe_image(app);
    app.images.push(image.clone());
    let mut closed = vec![
        "delivery:9901/config".to_string(),
        "ingestion:9901/config".to_string(),
        "delivery-preview:9901/config".to_string(),
        "delivery:8081/config".to_string(),
    ];
    for (name, net) in networks {
        let ip = net["IPAddress"].as_str().unwrap();
        closed.push(format!("{ip}:9901/config"));
        closed.push(format!("{ip}:8081/config"));
        if name == &app.name {
            let gateway = net["Gateway"].as_str().unwrap();
            closed.push(format!("{gateway}:{admin_port}/config"));
            closed.push(format!("{gateway}:{port}/config"));
            closed.push(format!("{gateway}:9901/config"));
        }
    }
    let mut targets = closed.clone();
    targets.push("delivery:8080/api/deliveries/stats".into());
    let results = probe(app, &image, &targets);
    eprintln!("probe from the app network: {results:?}");
    assert_eq!(results.len(), targets.len());
    for (target, result) in &results[..closed.len()] {
        assert!(
            matches!(result.as_str(), "refused" | "timeout" | "unreachable"),
            "{target} answered from the app network: {result}"
        );
    }
    assert_eq!(
        results.last().unwrap().1,
        "http 405",
        "the probe reaches the router's internal port"
    );

    // Two networks: the app's and the router's own, where only its public port (the entry)
    // and admin API are published; the internal data port is not.
    let mut names: Vec<String> = networks.keys().cloned().collect();
    names.sort();
    assert_eq!(
        names,
        vec![format!("0dronectl-admin-{}", app.name), app.name.clone()]
    );
    assert_eq!(published("8081/tcp"), Some(port));
    assert_eq!(
        published("8080/tcp"),
        None,
        "the internal port is not published"
    );

    // The admin token: in the app's state (0600), in no container setting.
    let token_file = app.state.join(&app.name).join("local").join("router.token");
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(token.len(), 64);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        !info.to_string().contains(&token),
        "the admin token shows in docker inspect"
    );

    // From the host: 401 without the token or with a wrong one; nothing changes.
    let generation = |token: &str| -> u64 {
        let auth = format!("Bearer {token}");
        let r = http(admin_port, "GET", "/config", &[("Authorization", &auth)]).unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["generation"]
            .as_u64()
            .unwrap()
    };
    let before = generation(&token);
    let wrong = format!("Bearer {}", "0".repeat(64));
    for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
        for (method, path) in [("PUT", "/config"), ("GET", "/config"), ("GET", "/readyz")] {
            let r = http(admin_port, method, path, &headers).unwrap();
            assert_eq!(r.status, 401, "{method} {path} {headers:?}: {}", r.body);
        }
    }
    assert_eq!(generation(&token), before);

    // The entry serves public routes only: Host routing, the preview host and paths that
    // leave a public route reach nothing; delivery's internal endpoints are not public.
    let id = "00000000-0000-4000-8000-000000000000";
    for (method, path, host) in [
        ("GET", "/api/deliveries/stats", "delivery"),
        ("GET", "/api/deliveries/stats", "delivery-preview"),
        ("GET", "/api/accounts/x", "account"),
        ("GET", "/api/fleet", "dronescheduler:8080"),
        ("GET", "/api/deliveries/stats", "127.0.0.1"),
        ("PUT", &format!("/api/deliveries/{id}"), "127.0.0.1"),
        ("DELETE", &format!("/api/deliveries/{id}"), "delivery"),
        ("PUT", &format!("/api/deliveries/{id}/failure"), "127.0.0.1"),
        ("GET", "/api/deliveries/public/../stats", "127.0.0.1"),
        ("GET", "/api/deliveries/public/%2e%2e/stats", "delivery"),
    ] {
        // The router's own 404 (no service answered: no version header).
        let (status, version, body) = entry_request(port, method, path, host, &[]);
        assert_eq!(
            (status, version.as_str()),
            (404, ""),
            "{method} {path} (Host: {host}) from the host: {body}"
        );
    }
    let (status, version, _) = entry_request(
        port,
        "GET",
        "/api/deliveries/public/..%2fstats",
        "delivery",
        &[],
    );
    assert_eq!((status, version.as_str()), (400, ""));
    // The public read view is served by delivery (an unknown id: its own 404).
    let (status, version, _) = entry_request(
        port,
        "GET",
        &format!("/api/deliveries/public/{id}"),
        "delivery",
        &[],
    );
    assert_eq!(status, 404);
    assert!(!version.is_empty(), "served by delivery");
}

/// A weight-0 candidate (blue-green paused before the switch) is not served from outside
/// with `x-dronectl-version` alone; with the app's admin token it is (the preview flow from
/// the host).
fn weight_zero_version_is_not_public(app: &App, port: u16) {
    app.set_env("delivery", "ROLLOUT_ROUND", "preview");
    let image = delivery_image(app);
    let out = app.run(&[
        "deploy",
        "delivery",
        "--image",
        &image,
        "--strategy",
        "preview",
        "--timeout",
        "3m",
    ]);
    assert_code(&out, 5);
    let out = app.run(&["-o", "json", "rollout", "status", "delivery"]);
    let view: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let candidate = view["result"]["candidate"]["revision"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{view}"))
        .to_string();
    let stable = view["result"]["stable"]["revision"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(view["result"]["candidate"]["weight"], 0, "{view}");
    let path = "/api/deliveries/public/00000000-0000-4000-8000-000000000000";
    let token_file = app.state.join(&app.name).join("local").join("router.token");
    let token = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_string();
    let wrong = "f".repeat(64);
    for headers in [
        vec![("x-dronectl-version", candidate.as_str())],
        vec![
            ("x-dronectl-version", candidate.as_str()),
            ("x-dronectl-token", wrong.as_str()),
        ],
    ] {
        for host in ["127.0.0.1", "delivery-preview", "delivery"] {
            let (status, version, _) = entry_request(port, "GET", path, host, &headers);
            assert_eq!(
                (status, version.as_str()),
                (404, stable.as_str()),
                "{headers:?} Host: {host}"
            );
        }
    }
    let (status, version, _) = entry_request(
        port,
        "GET",
        path,
        "127.0.0.1",
        &[
            ("x-dronectl-version", candidate.as_str()),
            ("x-dronectl-token", token.as_str()),
        ],
    );
    assert_eq!((status, version), (404, candidate));
    assert_code(&app.run(&["rollout", "abort", "delivery"]), 0);
}

fn wait_event(lines: &EventLog, what: &str, timeout: Duration) -> Instant {
    wait_for(&format!("a `{what}` rollout event"), timeout, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v["event"] == "rollout" && v["what"] == what)
            .map(|(t, _)| *t)
    })
}

#[test]
fn reference_app_on_the_local_engine() {
    let mut app = app();
    let artifacts = app.artifacts.to_str().unwrap().to_string();

    // Up: the whole app, ready, behind the router.
    let started = Instant::now();
    let out = app.up_from(&artifacts, "5m");
    assert_code(&out, 0);
    eprintln!("up: {:?}", started.elapsed());
    let port = entry_port(&app);

    // Up again with nothing changed changes nothing: same containers.
    let ids = |app: &App| {
        let out = Command::new("docker")
            .args([
                "ps",
                "-q",
                "--filter",
                &format!("label=dev.dronectl.app={}", app.name),
            ])
            .output()
            .unwrap();
        let mut ids: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
        ids.sort();
        ids
    };
    let before = ids(&app);
    let out = app.run(&["-o", "json", "up", "--no-build", "--artifacts", &artifacts]);
    assert_code(&out, 0);
    let summary: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(summary["result"]["changed"], false, "{summary}");
    assert_eq!(ids(&app), before, "a second `up` replaced containers");

    // The app works: the original's validation request becomes a completed delivery.
    let body = r#"{"confirmationRequired":"None","deadline":"","dropOffLocation":"drop off","expedited":true,"ownerId":"myowner","packageInfo":{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10},"pickupLocation":"my pickup","pickupTime":"2019-05-08T20:00:00.000Z"}"#;
    let r = http_with_body(
        port,
        "POST",
        "/api/deliveryrequests",
        &[("Host", "x")],
        Some(body.as_bytes()),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").expect("Location").to_string();
    let id = location.rsplit('/').next().unwrap().to_string();
    let stage = wait_for("the delivery to complete", Duration::from_secs(90), || {
        let r = http(port, "GET", &format!("/api/deliveries/public/{id}"), &[]).ok()?;
        (r.status == 200 && r.body.contains("Completed")).then_some(r.body)
    });
    assert!(stage.contains(&id));

    // Only dronectl can change traffic; the entry serves only public routes.
    router_is_closed_to_the_app(&mut app, port);
    weight_zero_version_is_not_public(&app, port);

    // Zero downtime: rolling, blue-green and a full canary of `delivery` under load.
    let image = delivery_image(&app);
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_secs(1));
    for (round, strategy) in [(1, "--rolling"), (2, "--blue-green"), (3, "--canary")] {
        app.set_env("delivery", "ROLLOUT_ROUND", &round.to_string());
        let mut args = vec!["deploy", "delivery", "--image", &image, "--timeout", "4m"];
        if strategy == "--canary" {
            args.extend(["--strategy", "quick-canary"]);
        } else {
            args.push(strategy);
        }
        let out = app.run(&args);
        assert_code(&out, 0);
        let routed = routed_revisions(&app, "delivery");
        assert_eq!(
            routed.len(),
            1,
            "after {strategy} all traffic is on one revision: {routed:?}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    let (log, failures) = load.finish();
    let versions: std::collections::BTreeSet<&String> = log.iter().map(|(_, _, v)| v).collect();
    eprintln!(
        "zero-downtime load: {} requests, {} versions seen, {} failures",
        log.len(),
        versions.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests during rollouts: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(log.len() > 200, "the load generator ran");
    assert!(
        versions.len() >= 4,
        "traffic moved through the versions: {versions:?}"
    );

    // A bad candidate (half its answers are 5xx) is aborted at its first analysis, and
    // traffic is back on stable within a second of the decision.
    let stable = routed_revisions(&app, "delivery")[0].0.clone();
    app.set_env("delivery", "CHAOS_ERROR_RATE", "0.5");
    let load = Load::start(port, 4);
    let (mut child, lines) = spawn_json(
        &app,
        &[
            "deploy",
            "delivery",
            "--image",
            &image,
            "--strategy",
            "quick-canary",
            "--timeout",
            "3m",
        ],
    );
    let status = child.wait().unwrap();
    let (log, _) = load.finish();
    assert_eq!(status.code(), Some(3), "a failed analysis exits 3");
    let aborted_at = wait_event(&lines, "aborted", Duration::from_secs(1));
    let late: Vec<_> = log
        .iter()
        .filter(|(t, _, v)| *t > aborted_at + Duration::from_secs(1) && *v != stable)
        .collect();
    assert!(
        late.is_empty(),
        "{} requests served by the candidate more than 1s after the abort",
        late.len()
    );
    let analyses = lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v)| v["what"] == "analysis")
        .count();
    assert!(
        analyses <= 2,
        "aborted at the first analysis ({analyses} analysis events)"
    );
    assert_eq!(routed_revisions(&app, "delivery")[0].0, stable);
    app.set_env("delivery", "CHAOS_ERROR_RATE", "0");

    // A crash-looping candidate fails the rollout in under 15 s, with its last log lines.
    let crash_tag = format!("{}-crash:1", app.name);
    let out = app.run(&[
        "image",
        "pack",
        "/bin/sh",
        "--tag",
        &crash_tag,
        "--entrypoint-arg=-c",
        "--entrypoint-arg=echo starting up; echo 'fatal: cannot open /data/store' >&2; exit 3",
    ]);
    assert_code(&out, 0);
    let started = Instant::now();
    let out = app.run(&[
        "deploy",
        "delivery",
        "--image",
        &crash_tag,
        "--strategy",
        "quick-canary",
    ]);
    let elapsed = started.elapsed();
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &crash_tag])
        .output();
    assert_code(&out, 1);
    assert!(
        elapsed < Duration::from_secs(15),
        "crash loop detected after {elapsed:?}"
    );
    let err = stderr(&out);
    assert!(
        err.contains("CrashLoopBackOff") || err.contains("Exited"),
        "{err}"
    );
    assert!(
        err.contains("fatal: cannot open /data/store"),
        "the last log lines are shown: {err}"
    );
    assert_eq!(routed_revisions(&app, "delivery")[0].0, stable);

    // kill -9 during a canary pause: status explains, resume finishes; a second deploy
    // meanwhile is refused; after another kill, abort returns to stable.
    app.set_env("delivery", "ROLLOUT_ROUND", "4");
    let (mut child, lines) = spawn_json(
        &app,
        &[
            "deploy",
            "delivery",
            "--image",
            &image,
            "--strategy",
            "slow-canary",
        ],
    );
    wait_event(&lines, "paused", Duration::from_secs(120));
    let second = app.run(&[
        "deploy",
        "delivery",
        "--image",
        &image,
        "--strategy",
        "slow-canary",
    ]);
    assert_code(&second, 1);
    assert!(
        stderr(&second).contains("already being driven"),
        "{}",
        stderr(&second)
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let out = app.run(&["-o", "json", "rollout", "status", "delivery"]);
    let view: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    assert_eq!(view["result"]["step"], "2/3 pause 12s", "{view}");
    assert_eq!(view["result"]["candidate"]["weight"], 30, "{view}");
    assert_eq!(view["result"]["stable"]["weight"], 70, "{view}");
    assert_code(
        &app.run(&["rollout", "resume", "delivery", "--timeout", "2m"]),
        0,
    );
    let new_stable = routed_revisions(&app, "delivery")[0].0.clone();
    assert_ne!(new_stable, stable);

    app.set_env("delivery", "ROLLOUT_ROUND", "5");
    let (mut child, lines) = spawn_json(
        &app,
        &[
            "deploy",
            "delivery",
            "--image",
            &image,
            "--strategy",
            "slow-canary",
        ],
    );
    wait_event(&lines, "paused", Duration::from_secs(120));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_code(&app.run(&["rollout", "abort", "delivery"]), 0);
    assert_eq!(
        routed_revisions(&app, "delivery"),
        vec![(new_stable.clone(), 100)]
    );

    // Undo goes back to the previous revision.
    assert_code(
        &app.run(&["rollout", "undo", "delivery", "--timeout", "2m"]),
        0,
    );
    assert_eq!(routed_revisions(&app, "delivery")[0].0, stable);
    let out = app.run(&["-o", "json", "rollout", "history", "delivery"]);
    assert_code(&out, 0);

    // Down removes exactly what was created (both networks, the admin token); volumes only
    // with --volumes.
    let out = app.run(&["-o", "json", "down"]);
    assert_code(&out, 0);
    assert!(ids(&app).is_empty());
    let networks = Command::new("docker")
        .args([
            "network",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.dronectl.app={}", app.name),
        ])
        .output()
        .unwrap();
    assert!(stdout(&networks).trim().is_empty(), "networks are removed");
    assert!(!app
        .state
        .join(&app.name)
        .join("local")
        .join("router.token")
        .exists());
    let volumes = Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=dev.dronectl.app={}", app.name),
        ])
        .output()
        .unwrap();
    assert!(
        !stdout(&volumes).trim().is_empty(),
        "volumes are kept without --volumes"
    );
}

/// Issue 18: a rollout of `delivery` under load with a header-match step, then mirroring
/// (whose shadow traffic alone lets the analysis pass while the candidate has no weight),
/// then weights, with 0 failed requests. During the pause, every request with the header
/// reaches the candidate and none without it does.
#[test]
fn header_match_then_mirror_then_weights_under_load() {
    let app = app();
    let artifacts = app.artifacts.to_str().unwrap().to_string();
    let out = app.up_from(&artifacts, "5m");
    assert_code(&out, 0);
    let port = entry_port(&app);
    let stable = routed_revisions(&app, "delivery")[0].0.clone();
    let image = delivery_image(&app);
    app.set_env("delivery", "ROLLOUT_ROUND", "beta");
    let load = Load::start(port, 4);
    std::thread::sleep(Duration::from_millis(500));
    // Match, mirror, analysis (measured on mirrored requests only), then a manual pause.
    let out = app.run(&[
        "deploy",
        "delivery",
        "--image",
        &image,
        "--strategy",
        "beta-first",
        "--timeout",
        "4m",
    ]);
    assert_code(&out, 5);
    let out = app.run(&["-o", "json", "rollout", "status", "delivery"]);
    let view: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().last().unwrap()).unwrap();
    let candidate = view["result"]["candidate"]["revision"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{view}"))
        .to_string();
    assert_eq!(view["result"]["candidate"]["weight"], 0, "{view}");
    assert_ne!(candidate, stable);
    let path = "/api/deliveries/public/00000000-0000-4000-8000-000000000000";
    for _ in 0..25 {
        let (status, version, _) = entry_request(port, "GET", path, "x", &[("x-beta", "true")]);
        assert_eq!((status, version.as_str()), (404, candidate.as_str()));
        let (status, version, _) = entry_request(port, "GET", path, "x", &[("x-beta", "yes")]);
        assert_eq!((status, version.as_str()), (404, stable.as_str()));
    }
    // The analysis passed on shadow traffic: the load never saw the candidate.
    let (log, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(log.len() > 50, "the load generator ran");
    let seen: Vec<_> = log.iter().filter(|(_, _, v)| *v != stable).collect();
    assert!(
        seen.is_empty(),
        "{} load requests reached the candidate",
        seen.len()
    );

    // Then weights, sticky: a session keeps its version; the rollout completes.
    let load = Load::start(port, 4);
    let out = app.run(&["rollout", "promote", "delivery", "--timeout", "4m"]);
    assert_code(&out, 0);
    std::thread::sleep(Duration::from_millis(500));
    let (log, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "failed requests during the rollout: {:?}",
        &failures[..failures.len().min(10)]
    );
    let versions: std::collections::BTreeSet<&String> = log.iter().map(|(_, _, v)| v).collect();
    assert!(versions.contains(&candidate), "{versions:?}");
    assert_eq!(routed_revisions(&app, "delivery"), vec![(candidate, 100)]);
}

//! `dronectl scale` on the local Docker engine, under a client polling through the router:
//! 1 → 3 → 1 replicas with no failed request (new replicas answer 503 for their first
//! 1.5 s, so a replica given traffic before it is ready shows up as a failure), the count
//! shown by `ps` and `rollout status`, kept by the next deploy, and refused while a canary
//! is paused.
//!
//! The service is tests/fixtures/readyz.rs (compiled with rustc, packed `FROM scratch`), so
//! no crate has to be built. A unique app name and `down --volumes` keep runs apart.

use crate::common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

/// Writes the app's manifest: the service `echo` with `V=<value>`, `replicas`, `extra` lines
/// (indented as `echo`'s keys), and a canary strategy that pauses until promoted.
fn write_manifest(app: &TestApp, value: &str, replicas: u32, extra: &str) {
    let text = format!(
        "app: {}
services:
  echo:
    path: services/echo
    template: rust-http
    port: 8080
    health: {{ liveness: /healthz, readiness: /readyz }}
    replicas: {replicas}
    env: {{ V: \"{value}\", READY_AFTER_MS: \"1500\" }}
    routes: [/api/echo]
    depends_on: []
{extra}environments:
  local: {{ target: docker }}
strategies:
  hold:
    type: canary
    steps:
      - weight: 50
      - pause: {{}}
",
        app.name
    );
    std::fs::write(app.dir.join("dronectl.yaml"), text).unwrap();
}

fn running(app: &TestApp) -> usize {
    app.containers_of(Some("echo")).len()
}

/// Clients polling `GET /api/echo` through the router until stopped; anything but a 200 is
/// a failure.
struct Poller {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Poller {
    fn start(port: u16, clients: usize) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let deadline = std::time::Instant::now() + Duration::from_secs(300);
                    while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                        match http(port, "GET", "/api/echo", &[]) {
                            Ok(r) if r.status == 200 => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(r) => failures
                                .lock()
                                .unwrap()
                                .push(format!("{} {}", r.status, r.body)),
                            Err(e) => failures.lock().unwrap().push(e.to_string()),
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Poller {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// (requests answered 200, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn scale_locally_adds_replicas_only_once_ready_and_keeps_the_count() {
    let app = TestApp::empty("sc");
    let (image, artifacts) = app.pack_fixture("readyz", "echo");
    write_manifest(&app, "1", 1, "");
    let out = app.up_from(&artifacts, "2m");
    assert_code(&out, 0);
    let entry = app.result(&["ps"])["entry_url"]
        .as_str()
        .expect("entry url")
        .to_string();
    let port: u16 = entry.rsplit(':').next().unwrap().parse().unwrap();
    let poller = Poller::start(port, 2);
    std::thread::sleep(Duration::from_millis(300));

    // 1 → 3: the new replicas answer 503 for 1.5 s; they must get no traffic until ready.
    let out = app.run(&["scale", "echo", "3"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("from 1 to 3 replicas; deploys keep 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(running(&app), 3);
    let status = app.result(&["rollout", "status", "echo"]);
    assert_eq!(status["stable"]["status"]["ready"], 3, "{status}");
    assert_eq!(
        status["scaled"],
        serde_json::json!({"replicas": 3, "manifest": 1})
    );
    let out = app.run(&["rollout", "status", "echo"]);
    assert!(
        stdout(&out).contains("scaled     to 3 replicas by `dronectl scale`"),
        "{}",
        stdout(&out)
    );
    let out = app.run(&["ps"]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("echo: 3 replicas by `dronectl scale` (dronectl.yaml says 1"),
        "{}",
        stderr(&out)
    );
    // Traffic reaches every replica: a while of polling spreads over three endpoints.
    std::thread::sleep(Duration::from_secs(1));

    // `up` again (nothing changed) keeps the scaled count.
    let out = app.run(&["up", "--no-build", "--artifacts", &artifacts]);
    assert_code(&out, 0);
    assert_eq!(running(&app), 3, "up keeps the `dronectl scale` count");

    // 3 → 1: the removed replicas leave the router and drain first.
    let out = app.run(&["scale", "echo", "1"]);
    assert_code(&out, 0);
    assert_eq!(running(&app), 1);
    assert!(
        app.result(&["ps"])["scaling"]
            .as_array()
            .unwrap()
            .is_empty(),
        "back at the manifest's count, nothing is overridden"
    );

    // The next deploy of a new version keeps a scaled count.
    let out = app.run(&["scale", "echo", "2"]);
    assert_code(&out, 0);
    write_manifest(&app, "2", 1, "");
    let out = app.run(&["deploy", "echo", "--image", &image, "--rolling"]);
    assert_code(&out, 0);
    let status = app.result(&["rollout", "status", "echo"]);
    assert_eq!(status["stable"]["revision"]["replicas"], 2, "{status}");
    assert_eq!(status["stable"]["status"]["ready"], 2, "{status}");
    assert_eq!(running(&app), 2);

    // Refused while a canary waits for promotion; nothing changes.
    write_manifest(&app, "3", 1, "");
    let out = app.run(&["deploy", "echo", "--image", &image, "--strategy", "hold"]);
    assert_code(&out, 5);
    let before = running(&app);
    let out = app.run(&["scale", "echo", "4"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("is in progress")
            && stderr(&out).contains("rollout promote|abort echo"),
        "{}",
        stderr(&out)
    );
    assert_eq!(running(&app), before, "a refused scale changes nothing");
    let out = app.run(&["rollout", "abort", "echo"]);
    assert_code(&out, 0);
    let status = app.result(&["rollout", "status", "echo"]);
    assert_eq!(status["stable"]["status"]["ready"], 2, "{status}");

    // dronectl.yaml's `replicas` changes (the same version): the count follows, no rollout.
    write_manifest(&app, "2", 3, "");
    let out = app.run(&["deploy", "echo", "--image", &image]);
    assert_code(&out, 0);
    assert_eq!(running(&app), 3);
    write_manifest(&app, "2", 1, "");
    let out = app.run(&["deploy", "echo", "--image", &image]);
    assert_code(&out, 0);
    assert!(
        stderr(&out).contains("scaled it from 3 to 1 replicas, no new version"),
        "{}",
        stderr(&out)
    );
    assert_eq!(running(&app), 1);

    // Autoscaled: the local target runs `min`, and says so; `scale` is refused.
    write_manifest(&app, "4", 1, "    autoscale: { min: 3, max: 5 }\n");
    let out = app.run(&["deploy", "echo", "--image", &image, "--rolling"]);
    assert_code(&out, 0);
    assert_eq!(running(&app), 3);
    let out = app.run(&["ps"]);
    assert!(
        stderr(&out).contains(
            "echo: 3..5 replicas in dronectl.yaml; the local target has no autoscaler and runs 3"
        ),
        "{}",
        stderr(&out)
    );
    let out = app.run(&["rollout", "status", "echo"]);
    assert!(
        stdout(&out)
            .contains("autoscale  3..5 replicas: no autoscaler runs on this target, so it runs 3"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        app.result(&["rollout", "status", "echo"])["autoscale"],
        serde_json::json!({"min": 3, "max": 5})
    );
    let out = app.run(&["scale", "echo", "4"]);
    assert_code(&out, 2);
    assert!(
        stderr(&out).contains("is autoscaled (3..5 replicas)"),
        "{}",
        stderr(&out)
    );

    let (ok, failures) = poller.finish();
    assert!(ok > 50, "the client got answers ({ok})");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok as usize + failures.len(),
        &failures[..failures.len().min(10)]
    );
}

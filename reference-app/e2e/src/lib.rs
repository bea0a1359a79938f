//! Test / benchmark harness: starts a private `redis-server` and every
//! service of the app as child processes on free 127.0.0.1 ports, wires the
//! `X_URL` variables, waits for readiness, and kills everything on drop.
//!
//! Service binaries are taken from the target directory this test binary was
//! built into (so `CARGO_TARGET_DIR`, the profile and `--target` are honoured)
//! and are built once per process with `cargo build --workspace --bins`
//! (skip with `DRONE_E2E_SKIP_BUILD=1`; override the directory with
//! `DRONE_BIN_DIR`).
use std::collections::{HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Every service, in start order (leaves first).
pub const SERVICES: [&str; 9] = [
    "account",
    "thirdparty",
    "package",
    "dronescheduler",
    "delivery",
    "deliveryhistory",
    "supervisor",
    "workflow",
    "ingestion",
];

/// The reference request from REFERENCE_APP.md.
pub fn reference_request() -> serde_json::Value {
    serde_json::json!({"confirmationRequired":"None","deadline":"","dropOffLocation":"drop off","expedited":true,
     "ownerId":"myowner","packageInfo":{"packageId":"mypackage","size":"Small","tag":"mytag","weight":10},
     "pickupLocation":"my pickup","pickupTime":"2019-05-08T20:00:00.000Z"})
}

static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// A free loopback port, never handed out twice by this process. Ports are
/// drawn at random below the kernel's ephemeral range (32768+), so that an
/// outgoing connection cannot take the port of a service while it restarts,
/// and parallel test processes rarely draw the same one (a collision is
/// detected by `Stack::start`, which then retries with new ports).
pub fn free_port() -> u16 {
    let used = PORTS.get_or_init(Default::default);
    loop {
        let p = 10_000 + (uuid::Uuid::new_v4().as_u128() % 22_000) as u16;
        if used.lock().unwrap().contains(&p) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p)).is_ok() && used.lock().unwrap().insert(p) {
            return p;
        }
    }
}

fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Directory holding the service binaries, building them first if needed.
pub fn bin_dir() -> Result<PathBuf, String> {
    BUILT
        .get_or_init(|| {
            if let Ok(d) = std::env::var("DRONE_BIN_DIR") {
                return Ok(PathBuf::from(d));
            }
            // <target>/<profile>/deps/<test-exe>  or  <target>/<profile>/<exe>
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let mut dir = exe.parent().unwrap().to_path_buf();
            if dir.ends_with("deps") {
                dir = dir.parent().unwrap().to_path_buf();
            }
            if std::env::var("DRONE_E2E_SKIP_BUILD").ok().as_deref() != Some("1") {
                let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
                let mut cmd = Command::new(cargo);
                cmd.current_dir(workspace_dir())
                    .args(["build", "--workspace", "--bins", "--quiet"]);
                if dir.file_name().and_then(|n| n.to_str()) == Some("release") {
                    cmd.arg("--release");
                }
                // <target>/<triple>/<profile>: keep the same --target.
                if let Some(triple) = dir.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
                    if triple.contains("-linux-") || triple.contains("-apple-") || triple.contains("-windows-") {
                        cmd.args(["--target", triple]);
                        cmd.env("CARGO_TARGET_DIR", dir.parent().unwrap().parent().unwrap());
                    } else {
                        cmd.env("CARGO_TARGET_DIR", dir.parent().unwrap());
                    }
                }
                let st = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
                if !st.success() {
                    return Err("cargo build of the service binaries failed".into());
                }
            }
            for s in SERVICES {
                if !dir.join(s).exists() {
                    return Err(format!("service binary {} missing", dir.join(s).display()));
                }
            }
            Ok(dir)
        })
        .clone()
}

fn redis_server() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| {
        for p in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
            if Path::new(p).exists() {
                return p.to_string();
            }
        }
        "redis-server".to_string()
    })
}

/// The `redis-server` arguments of the app manifest (`dronectl.yaml`,
/// `infrastructure.redis.command`, a JSON-style list).
pub fn manifest_redis_command() -> Vec<String> {
    let yaml = std::fs::read_to_string(workspace_dir().join("dronectl.yaml")).expect("read dronectl.yaml");
    let mut in_redis = false;
    for line in yaml.lines() {
        let t = line.trim_start();
        if !line.starts_with(' ') {
            in_redis = false;
        }
        if line.starts_with("  ") && !line.starts_with("   ") {
            in_redis = t.starts_with("redis:");
        }
        if let Some(rest) = t.strip_prefix("command:").filter(|_| in_redis) {
            let list = serde_json::Deserializer::from_str(rest.trim_start())
                .into_iter::<Vec<String>>()
                .next();
            if let Some(Ok(args)) = list {
                return args;
            }
        }
    }
    panic!("dronectl.yaml: no infrastructure.redis.command list");
}

/// The memory bound and eviction policy of the manifest's Redis
/// (`--maxmemory N --maxmemory-policy P`): every stack (tests, benchmark)
/// runs Redis under the same rules as `dronectl up`.
pub fn manifest_redis_memory_args() -> Vec<String> {
    let cmd = manifest_redis_command();
    let mut out = Vec::new();
    for flag in ["--maxmemory", "--maxmemory-policy"] {
        if let Some(i) = cmd.iter().position(|a| a == flag) {
            out.push(flag.to_string());
            out.push(cmd.get(i + 1).cloned().unwrap_or_default());
        }
    }
    out
}

/// Options for a stack.
#[derive(Default, Clone)]
pub struct StackOptions {
    /// Environment for every service.
    pub env: Vec<(String, String)>,
    /// Environment for one service (applied after `env`).
    pub service_env: Vec<(String, String, String)>,
    /// Log level of the services (default `warn`).
    pub log_level: Option<String>,
    /// Extra redis-server arguments (e.g. `--appendonly yes`), after the
    /// manifest's memory bound and policy (so a later `--maxmemory` wins).
    pub redis_args: Vec<String>,
    /// Scheduling priority (nice value, negative = higher) for redis-server:
    /// on a small machine shared with every service the broker is the one
    /// serial resource, so the load benchmark favours it. Needs root /
    /// CAP_SYS_NICE; without it a warning is printed and the run goes on.
    pub redis_nice: Option<i32>,
}

impl StackOptions {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
    pub fn service_env(mut self, svc: &str, k: &str, v: &str) -> Self {
        self.service_env.push((svc.into(), k.into(), v.into()));
        self
    }
}

/// A running app: redis + all services. Everything is killed on drop.
pub struct Stack {
    pub dir: PathBuf,
    pub redis_url: String,
    ports: HashMap<&'static str, u16>,
    children: Mutex<HashMap<String, Child>>,
    started: Mutex<HashMap<String, Instant>>,
    opts: StackOptions,
    bins: PathBuf,
    generation: Mutex<u32>,
}

fn wait_tcp(port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `GET path` on the service at `port`: the status, or `None` if it does not answer within
/// 2 s. Callable from any thread, inside an async runtime or not (the harness is
/// synchronous and the tests call it from their runtime's threads): the request runs on
/// the harness's own one-thread runtime and this thread waits for its answer. One
/// connection per call (no pool), so no idle keep-alive connection outlives a probe.
fn http_get_status(port: u16, path: &str) -> Option<u16> {
    static CLIENT: OnceLock<(tokio::runtime::Runtime, reqwest::Client)> = OnceLock::new();
    let (runtime, client) = CLIENT.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("e2e-probe")
            .enable_all()
            .build()
            .expect("harness runtime");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()
            .expect("harness HTTP client");
        (runtime, client)
    });
    let request = client.get(format!("http://127.0.0.1:{port}{path}")).send();
    let (tx, rx) = std::sync::mpsc::channel();
    runtime.spawn(async move {
        let _ = tx.send(request.await.ok().map(|r| r.status().as_u16()));
    });
    rx.recv().ok().flatten()
}

impl Stack {
    /// Start redis and every service; panics (after cleaning up) on failure.
    /// If a port turns out to be taken (a process exits at start), the whole
    /// stack is started again on new ports (up to 3 times).
    pub fn start(opts: StackOptions) -> Stack {
        let mut last = String::new();
        for _ in 0..3 {
            let s = Stack::launch(opts.clone());
            match SERVICES
                .iter()
                .try_for_each(|svc| s.try_wait_ready(svc, Duration::from_secs(30)))
            {
                Ok(()) => return s,
                Err(e) => {
                    eprintln!("stack start failed, retrying on new ports: {e}");
                    last = e;
                }
            }
        }
        panic!("could not start the stack: {last}");
    }

    fn launch(opts: StackOptions) -> Stack {
        let bins = bin_dir().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!(
            "drone-e2e-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let redis_port = free_port();
        let mut ports = HashMap::new();
        for s in SERVICES {
            ports.insert(s, free_port());
        }
        let stack = Stack {
            redis_url: format!("redis://127.0.0.1:{redis_port}"),
            dir,
            ports,
            children: Mutex::default(),
            started: Mutex::default(),
            opts,
            bins,
            generation: Mutex::new(0),
        };
        let log = std::fs::File::create(stack.dir.join("redis.log")).unwrap();
        let child = Command::new(redis_server())
            .args([
                "--port",
                &redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&stack.dir)
            .args(manifest_redis_memory_args())
            .args(&stack.opts.redis_args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install -y redis-server)");
        if let Some(n) = stack.opts.redis_nice {
            let ok = Command::new("renice")
                .args(["-n", &n.to_string(), "-p", &child.id().to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                eprintln!("warning: could not give redis-server priority {n} (needs root); running without it");
            }
        }
        stack.children.lock().unwrap().insert("redis".into(), child);
        assert!(wait_tcp(redis_port, Duration::from_secs(10)), "redis did not start");
        for s in SERVICES {
            stack.spawn(s, &[]);
        }
        stack
    }

    pub fn port(&self, svc: &str) -> u16 {
        self.ports[svc]
    }

    /// Base URL of a service.
    pub fn url(&self, svc: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[svc])
    }

    /// (Re)start one service with extra environment.
    pub fn spawn(&self, svc: &str, extra: &[(&str, &str)]) {
        let svc_static = SERVICES.iter().find(|s| **s == svc).expect("known service");
        self.spawn_as(svc, svc, self.ports[svc_static], extra);
    }

    /// Start one more instance of `svc` on a free port, next to the running one
    /// (as during a canary rollout); `name` identifies it for `kill` / `pid`.
    pub fn spawn_instance(&self, svc: &str, name: &str) {
        assert!(SERVICES.contains(&svc), "known service");
        self.spawn_as(svc, name, free_port(), &[]);
    }

    fn spawn_as(&self, svc: &str, name: &str, port: u16, extra: &[(&str, &str)]) {
        let gen = {
            let mut g = self.generation.lock().unwrap();
            *g += 1;
            *g
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{svc}.log")))
            .unwrap();
        let mut cmd = Command::new(self.bins.join(svc));
        cmd.env("PORT", port.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("REDIS_URL", &self.redis_url)
            .env("CONSUMER_NAME", format!("{svc}-{gen}"))
            .env(
                "LOG_LEVEL",
                self.opts.log_level.clone().unwrap_or_else(|| "warn".into()),
            )
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for s in SERVICES {
            cmd.env(format!("{}_URL", s.to_ascii_uppercase()), self.url(s));
        }
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        for (s, k, v) in &self.opts.service_env {
            if s == svc {
                cmd.env(k, v);
            }
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("start {svc}: {e}"));
        self.started.lock().unwrap().insert(name.to_string(), Instant::now());
        if let Some(mut old) = self.children.lock().unwrap().insert(name.to_string(), child) {
            let _ = old.kill();
            let _ = old.wait();
        }
    }

    /// Wait until `GET /readyz` answers 200 (panics otherwise).
    pub fn wait_ready(&self, svc: &str, timeout: Duration) {
        if let Err(e) = self.try_wait_ready(svc, timeout) {
            panic!("{e}");
        }
    }

    /// Wait until `GET /readyz` answers 200 *and* our process is the one
    /// listening (it has not exited, e.g. on "address in use").
    pub fn try_wait_ready(&self, svc: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(c) = self.children.lock().unwrap().get_mut(svc) {
                if let Ok(Some(st)) = c.try_wait() {
                    return Err(format!("{svc} exited at start ({st}); log:\n{}", self.log_tail(svc)));
                }
            }
            if http_get_status(self.ports[svc], "/readyz") == Some(200) {
                // Is it ours? A process that lost the port race exits right
                // after connecting to Redis: give it time to do so.
                let since = self
                    .started
                    .lock()
                    .unwrap()
                    .get(svc)
                    .copied()
                    .unwrap_or_else(Instant::now);
                std::thread::sleep(Duration::from_millis(600).saturating_sub(since.elapsed()));
                if let Some(c) = self.children.lock().unwrap().get_mut(svc) {
                    if let Ok(Some(st)) = c.try_wait() {
                        return Err(format!("{svc} exited at start ({st}); log:\n{}", self.log_tail(svc)));
                    }
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Err(format!(
            "{svc} not ready after {timeout:?}; log:\n{}",
            self.log_tail(svc)
        ))
    }

    /// Process id of a running service.
    pub fn pid(&self, svc: &str) -> Option<u32> {
        self.children.lock().unwrap().get(svc).map(|c| c.id())
    }

    /// SIGKILL one service (a crash).
    pub fn kill(&self, svc: &str) {
        if let Some(mut c) = self.children.lock().unwrap().remove(svc) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM one service and wait for it to exit; returns its exit code.
    pub fn terminate(&self, svc: &str) -> Option<i32> {
        let mut c = self.children.lock().unwrap().remove(svc)?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let end = Instant::now() + Duration::from_secs(40);
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Kill every process of the stack now (also done on drop).
    pub fn shutdown(&self) {
        let mut ch = self.children.lock().unwrap();
        for (_, c) in ch.iter_mut() {
            let _ = c.kill();
        }
        for (_, c) in ch.iter_mut() {
            let _ = c.wait();
        }
        ch.clear();
    }

    /// Last lines of a service's log.
    pub fn log_tail(&self, svc: &str) -> String {
        let t = std::fs::read_to_string(self.dir.join(format!("{svc}.log"))).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown();
        if std::env::var("KEEP_E2E_LOGS").is_err() && !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("e2e logs kept in {}", self.dir.display());
        }
    }
}

/// Poll `f` every 100 ms until it returns `Some`, or panic with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > end {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::*;

    const SERVICE_KEYS: [&str; 11] = [
        "path",
        "template",
        "port",
        "health",
        "replicas",
        "resources",
        "env",
        "routes",
        "depends_on",
        "volume",
        "strategy",
    ];

    /// dronectl.yaml lists every service crate, with only the keys of the schema.
    #[test]
    fn manifest_matches_the_workspace() {
        let root = workspace_dir();
        let yaml = std::fs::read_to_string(root.join("dronectl.yaml")).unwrap();
        let mut in_services = false;
        let mut current = String::new();
        let mut seen = Vec::new();
        for line in yaml.lines() {
            let code = line.split(" #").next().unwrap().trim_end();
            if code.is_empty() || code.trim_start().starts_with('#') {
                continue;
            }
            if !code.starts_with(' ') {
                in_services = code == "services:";
                continue;
            }
            if !in_services {
                continue;
            }
            if let Some(name) = code.strip_prefix("  ").and_then(|c| c.strip_suffix(':')) {
                if !name.starts_with(' ') {
                    current = name.to_string();
                    seen.push(current.clone());
                    continue;
                }
            }
            let key = code.trim_start().split(':').next().unwrap();
            assert!(SERVICE_KEYS.contains(&key), "unknown key {key} in service {current}");
            if key == "path" {
                let path = code.split(':').nth(1).unwrap().trim();
                assert_eq!(path, format!("services/{current}"));
                let cargo = std::fs::read_to_string(root.join(path).join("Cargo.toml")).unwrap();
                assert!(
                    cargo.contains(&format!("name = \"{current}\"")),
                    "package name of {current}"
                );
            }
        }
        let mut want: Vec<String> = SERVICES.iter().map(|s| s.to_string()).collect();
        want.sort();
        seen.sort();
        assert_eq!(seen, want);
    }

    /// Redis in the manifest has a memory bound and the policy that never
    /// evicts (streams, pending entries and in-flight state have no TTL: any
    /// eviction could drop accepted work; at the bound writes fail instead).
    #[test]
    fn manifest_redis_is_bounded_and_never_evicts() {
        let cmd = manifest_redis_command();
        assert_eq!(cmd[0], "redis-server");
        let args = manifest_redis_memory_args();
        assert_eq!(args.len(), 4, "{cmd:?}");
        assert_eq!(args[0], "--maxmemory");
        let bytes = args[1].to_ascii_lowercase();
        let n: u64 = bytes
            .trim_end_matches(|c: char| c.is_ascii_alphabetic())
            .parse()
            .unwrap();
        assert!(n > 0 && bytes != "0", "maxmemory {bytes}");
        assert_eq!(&args[2..], ["--maxmemory-policy", "noeviction"]);
    }
}

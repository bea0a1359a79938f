//! `kube-fake`: an in-process Kubernetes API server for testing kube-rs clients.
//!
//! It speaks real HTTP on `127.0.0.1:<random port>` with the REST paths, verbs and content
//! types kube-rs uses (get/list/watch/create/replace/patch/delete, server-side apply with
//! field managers and conflicts, merge/strategic/JSON patch, optimistic concurrency on
//! `resourceVersion`, status and scale subresources, pod logs, discovery), and it runs a
//! simulated Deployment → ReplicaSet → Pod controller whose pods become ready, never become
//! ready, crash-loop, fail to pull their image or stay unschedulable depending on their image.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use kube_fake::{Behavior, FakeCluster};
//! let cluster = FakeCluster::start().await;
//! cluster.set_image_behavior("bad:", Behavior::CrashLoop { exit_code: 1, logs: vec!["boom".into()] });
//! let client = cluster.kube_client();
//! let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> = kube::Api::default_namespaced(client);
//! # let _ = deployments; Ok(()) }
//! ```
//!
//! See `docs/kube-fake.md` in the repository for what is faithful and what is simplified.

mod controller;
mod gateway;
mod patch;
mod server;
mod store;
mod typed;
mod types;
mod util;

pub use types::ResourceType;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use store::{Injection, State};
use tokio::task::JoinHandle;

/// How the simulated kubelet runs a container, chosen by image (see
/// [`FakeCluster::set_image_behavior`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// Container starts one tick after scheduling and becomes ready `ready_after` ticks later.
    Ready { ready_after: u32 },
    /// Container runs but its readiness probe never succeeds (`Unhealthy` events).
    NeverReady,
    /// Container exits with `exit_code` right after starting, every time:
    /// `state.waiting.reason = CrashLoopBackOff`, `lastState.terminated`, growing
    /// `restartCount`, `BackOff` events; its log is `logs`.
    CrashLoop { exit_code: i32, logs: Vec<String> },
    /// The image cannot be pulled: `ErrImagePull`, then `ImagePullBackOff`, with `Failed`/`BackOff` events.
    ImagePullBackOff,
    /// The pod is never scheduled: `PodScheduled=False` reason `Unschedulable`, `FailedScheduling` events.
    Unschedulable,
}

impl Default for Behavior {
    /// Ready 6 ticks after starting (about 350 ms at the default 50 ms tick), so that a
    /// client which does not wait for readiness sees pods that are not ready yet, as on a
    /// real cluster. Change it with [`FakeCluster::set_default_behavior`].
    fn default() -> Self {
        Behavior::Ready { ready_after: 6 }
    }
}

/// One HTTP request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// The URL path, e.g. `/apis/apps/v1/namespaces/default/deployments/web`.
    pub path: String,
    /// The raw (still percent-encoded) query string, `""` when absent.
    pub query: String,
    /// The request `Content-Type`, if any (e.g. `application/apply-patch+yaml`).
    pub content_type: Option<String>,
    /// The Kubernetes verb: `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, or `unknown`/`injected`.
    pub verb: String,
    /// The HTTP status code of the response (200 for a watch that started streaming).
    pub status: u16,
    /// The request's `User-Agent` header (`""` when absent).
    pub user_agent: String,
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum Runtime {
    /// Tasks spawned on the caller's runtime.
    Tasks(Vec<JoinHandle<()>>),
    /// A dedicated runtime thread ([`FakeCluster::start_blocking`]).
    Thread {
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    },
}

/// A running fake API server. Dropping it stops the server, its watches and the controller.
pub struct FakeCluster {
    shared: Arc<Shared>,
    addr: SocketAddr,
    runtime: Runtime,
}

impl std::fmt::Debug for FakeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeCluster")
            .field("addr", &self.addr)
            .finish()
    }
}

async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let app = axum::Router::new()
        .fallback(server::handle)
        .with_state(shared);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let svc = hyper_util::service::TowerToHyperService::new(app.clone());
                conns.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, svc)
                        .await;
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

impl FakeCluster {
    /// Start a server on `127.0.0.1:0` with its tasks on the current tokio runtime.
    /// Works with both the current-thread and multi-thread runtimes.
    pub async fn start() -> FakeCluster {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new()),
        });
        let server = tokio::spawn(serve(listener, shared.clone()));
        let ctrl = tokio::spawn(controller::run(shared.clone()));
        FakeCluster {
            shared,
            addr,
            runtime: Runtime::Tasks(vec![server, ctrl]),
        }
    }

    /// Start a server on its own thread with its own tokio runtime, for synchronous tests
    /// (e.g. ones that run the `dronectl` binary against [`FakeCluster::write_kubeconfig`]).
    /// Note that [`FakeCluster::kube_client`] still needs to be called inside a tokio runtime.
    pub fn start_blocking() -> FakeCluster {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("kube-fake".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let c = FakeCluster::start().await;
                    let shared = c.shared.clone();
                    let addr = c.addr;
                    let _ = tx.send((shared, addr));
                    let _ = stop_rx.await;
                    drop(c);
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .expect("spawn kube-fake thread");
        let (shared, addr) = rx.recv().expect("kube-fake server thread started");
        FakeCluster {
            shared,
            addr,
            runtime: Runtime::Thread {
                stop: Some(stop_tx),
                thread: Some(thread),
            },
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `kube::Config` for this server (default namespace `default`, kube's default timeouts).
    pub fn kube_config(&self) -> kube::Config {
        let uri: http::Uri = self.url().parse().expect("valid url");
        let mut c = kube::Config::new(uri);
        c.default_namespace = "default".into();
        c
    }

    /// A `kube::Client` talking to this server. Must be called inside a tokio runtime.
    pub fn kube_client(&self) -> kube::Client {
        kube::Client::try_from(self.kube_config()).expect("kube client")
    }

    /// Write a kubeconfig file (cluster, user with a dummy token, context, current-context)
    /// pointing at this server.
    pub fn write_kubeconfig(
        &self,
        path: impl AsRef<Path>,
        context_name: &str,
        namespace: &str,
    ) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig_yaml(context_name, namespace))
    }

    /// The kubeconfig YAML that [`FakeCluster::write_kubeconfig`] writes.
    pub fn kubeconfig_yaml(&self, context_name: &str, namespace: &str) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("string");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: {c}\n  cluster:\n    server: {url}\ncontexts:\n- name: {c}\n  context:\n    cluster: {c}\n    user: {u}\n    namespace: {ns}\ncurrent-context: {c}\npreferences: {{}}\nusers:\n- name: {u}\n  user:\n    token: kube-fake-token\n",
            c = q(context_name),
            u = q(&format!("{context_name}-user")),
            ns = q(namespace),
            url = q(&self.url()),
        )
    }

    // -- request log ---------------------------------------------------------------

    /// Number of HTTP requests received so far.
    pub fn request_count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Forget the request log (e.g. after test setup, before the measured part).
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    // -- controller and kubelet simulation ---------------------------------------

    /// Controller tick (default 50 ms). Pod behaviours count in ticks.
    pub fn set_tick(&self, tick: Duration) {
        self.shared.lock().knobs.tick = tick.max(Duration::from_millis(1));
    }

    /// Stop the simulated controllers (deployment, replicaset, kubelet, statefulset).
    pub fn pause_controller(&self) {
        self.shared.lock().knobs.controller_paused = true;
    }

    pub fn resume_controller(&self) {
        self.shared.lock().knobs.controller_paused = false;
    }

    /// Run `ticks` controller ticks synchronously (also while paused), for deterministic tests:
    /// `pause_controller()`, make changes, `step(n)`, assert.
    pub fn step(&self, ticks: usize) {
        let mut st = self.shared.lock();
        for _ in 0..ticks {
            controller::tick_once(&mut st);
        }
    }

    /// Containers whose image contains `image_substring` behave as `behavior`. Later calls
    /// for the same substring replace earlier ones; the longest matching substring wins.
    pub fn set_image_behavior(&self, image_substring: &str, behavior: Behavior) {
        let mut st = self.shared.lock();
        st.knobs.behaviors.retain(|(s, _)| s != image_substring);
        st.knobs
            .behaviors
            .push((image_substring.to_string(), behavior));
    }

    /// Behaviour of containers whose image matches no [`FakeCluster::set_image_behavior`] rule.
    pub fn set_default_behavior(&self, behavior: Behavior) {
        self.shared.lock().knobs.default_behavior = behavior;
    }

    pub fn clear_image_behaviors(&self) {
        self.shared.lock().knobs.behaviors.clear();
    }

    /// Log lines served by `pods/{name}/log` for containers whose image contains `image_substring`
    /// (for `CrashLoop` the behaviour's own `logs` take precedence).
    pub fn set_image_logs(&self, image_substring: &str, lines: Vec<String>) {
        let mut st = self.shared.lock();
        st.knobs.logs.retain(|(s, _)| s != image_substring);
        st.knobs.logs.push((image_substring.to_string(), lines));
    }

    /// What the metrics would make the HorizontalPodAutoscaler `namespace/name` recommend:
    /// the simulated HPA controller scales its target there (clamped to min/max, through the
    /// `scale` subresource as `kube-controller-manager`) on its next tick. Without a
    /// recommendation it only enforces the bounds, as the real one does without metrics.
    pub fn set_autoscaler_recommendation(&self, namespace: &str, name: &str, replicas: i64) {
        self.shared
            .lock()
            .sim
            .hpa_recommendations
            .insert(format!("{namespace}/{name}"), replicas);
    }

    /// Multiply every Deployment's `progressDeadlineSeconds` by `scale` (e.g. `0.01` turns the
    /// default 600 s into 6 s) so `ProgressDeadlineExceeded` can be reached in a test.
    pub fn set_progress_deadline_scale(&self, scale: f64) {
        self.shared.lock().knobs.progress_deadline_scale = scale.max(0.0);
    }

    /// Whether creating an object in a namespace that does not exist fails with 404 (default true,
    /// as in a real cluster; `default`, `kube-system`, `kube-public`, `kube-node-lease` exist).
    pub fn set_require_namespaces(&self, require: bool) {
        self.shared.lock().knobs.require_namespaces = require;
    }

    /// How many change events the watch history keeps (default 10 000). A watch from an older
    /// resourceVersion gets a `410 Expired` ERROR event, like a real server after compaction.
    pub fn set_watch_history_limit(&self, limit: usize) {
        self.shared.lock().knobs.history_limit = limit.max(1);
    }

    /// How many ticks a gracefully deleted pod stays `Terminating` (with
    /// `metadata.deletionTimestamp`, not ready, not counted in ReplicaSet or StatefulSet
    /// replicas) before it disappears (default 5). Pods are deleted gracefully when a
    /// ReplicaSet or StatefulSet scales down or replaces them.
    pub fn set_termination_ticks(&self, ticks: u64) {
        self.shared.lock().sim.termination_ticks = ticks;
    }

    /// Delete a pod as if its node died (the ReplicaSet controller will replace it).
    pub fn kill_pod(&self, namespace: &str, name: &str) -> bool {
        let mut st = self.shared.lock();
        let Some(rt) = st.find_type("", "v1", "pods") else {
            return false;
        };
        st.delete(&rt, namespace, name, None, None, false, false)
            .is_ok()
    }

    // -- failure injection -------------------------------------------------------

    /// The next PUT (to any path) fails with a `409 Conflict` Status.
    pub fn inject_conflict_on_next_put(&self) {
        self.inject_error(Some("PUT"), None, 409, 1);
    }

    /// The next `times` requests whose method matches `method` (any if `None`) and whose path
    /// contains `path_contains` (any if `None`) fail with a Status of HTTP `code`
    /// (409 → Conflict, 404 → NotFound, 422 → Invalid, 429 → TooManyRequests, 5xx → InternalError).
    pub fn inject_error(
        &self,
        method: Option<&str>,
        path_contains: Option<&str>,
        code: u16,
        times: u32,
    ) {
        let reason = match code {
            400 => "BadRequest",
            403 => "Forbidden",
            404 => "NotFound",
            409 => "Conflict",
            410 => "Expired",
            422 => "Invalid",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ => "InternalError",
        };
        self.shared.lock().injections.push(Injection {
            method: method.map(String::from),
            path_contains: path_contains.map(String::from),
            code,
            reason,
            message: format!("injected failure ({reason}) by kube-fake"),
            remaining: times,
        });
    }

    // -- direct store access -----------------------------------------------------

    /// The stored object, or `None`. `group` is `""` for the core group.
    pub fn get_json(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let st = self.shared.lock();
        let rt = st.find_type(group, version, plural)?;
        st.get(&rt, namespace, name).cloned()
    }

    /// All objects of a type (`namespace: None` = all namespaces), sorted by namespace/name.
    pub fn list_json(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<Value> {
        let st = self.shared.lock();
        match st.find_type(group, version, plural) {
            Some(rt) => st.list(&rt, namespace),
            None => vec![],
        }
    }

    /// Every stored object of every type.
    pub fn all_objects(&self) -> Vec<Value> {
        self.shared.lock().objects.values().cloned().collect()
    }

    /// Create an object directly (as if POSTed by `kube-fake`), e.g. to seed state.
    /// `obj` must carry `apiVersion` and `kind` of a served type.
    pub fn create_json(&self, obj: Value) -> Result<Value, String> {
        let mut st = self.shared.lock();
        let (group, version) =
            split_api_version(obj.get("apiVersion").and_then(Value::as_str).unwrap_or(""));
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let rt = st
            .types
            .iter()
            .find(|t| t.group == group && t.version == version && t.kind == kind)
            .cloned()
            .ok_or_else(|| format!("no served type for {group}/{version} {kind}"))?;
        let ns = util::ns_of(&obj).to_string();
        let opts = store::WriteOpts {
            manager: Some("kube-fake".into()),
            ..Default::default()
        };
        st.create(&rt, &ns, obj, &opts).map_err(|e| e.message)
    }

    /// Serve an additional resource type (generic storage, all verbs, watch, SSA).
    /// Creating a CustomResourceDefinition registers its type automatically too.
    pub fn register_resource(&self, rt: ResourceType) {
        self.shared.lock().register(rt);
    }

    /// Stop serving every resource of an API group, and forget its objects, as on a cluster
    /// where that API is not installed (e.g. `"gateway.networking.k8s.io"`: a cluster without
    /// the Gateway API CRDs). Its paths then answer `404 page not found` (plain text) and
    /// discovery no longer lists it. [`FakeCluster::register_resource`] serves a type again.
    pub fn remove_api_group(&self, group: &str) {
        let mut st = self.shared.lock();
        st.types.retain(|t| t.group != group);
        st.objects.retain(|k, _| k.0 != group);
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }
}

fn split_api_version(av: &str) -> (String, String) {
    match av.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), av.to_string()),
    }
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        match &mut self.runtime {
            Runtime::Tasks(tasks) => {
                for t in tasks.drain(..) {
                    t.abort();
                }
            }
            Runtime::Thread { stop, thread } => {
                if let Some(s) = stop.take() {
                    let _ = s.send(());
                }
                if let Some(t) = thread.take() {
                    let _ = t.join();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn handle_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<super::FakeCluster>();
        assert_send_sync::<super::RequestRecord>();
        assert_send_sync::<super::Behavior>();
    }
}

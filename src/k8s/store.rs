//! Rollout state in the cluster, so that any machine can `status`, `resume`, `promote` or
//! `abort` a rollout and two CI jobs cannot drive the same one.
//!
//! * ConfigMap `dronectl-rollout-<svc>`: data keys `state` (the current rollout) and
//!   `record` (stable revision, history, retired revisions), written by the lock holder.
//! * ConfigMap `dronectl-requests-<svc>`: one data key per posted request
//!   (`r-<ms>-<nonce>`), added with a merge patch (atomic on the server) and taken with
//!   resourceVersion-checked updates, so a promote posted while the driver takes earlier
//!   requests is never lost.
//! * Lease `dronectl-<svc>` (coordination.k8s.io/v1): holder identity, renewed every few
//!   seconds while held; a held, unexpired lease refuses a second driver with
//!   [`LockHeld`]; an expired one (its holder died) is taken over.
//!
//! The lock holder releases the Lease with an explicit, awaited [`StateStore::unlock`];
//! dropping a [`KubeLock`] does no I/O itself (see there).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use super::cache::Cached;

use crate::rollout::state::{Checked, LockHeld, Request, RolloutState, ServiceRecord, StateStore};

/// How long a lease lasts without renewal.
pub const LEASE_SECONDS: i32 = 15;
/// How often a held lease is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{:x}{:x}{n:x}", std::process::id(), t)
}

/// Rollout state of one app's environment in one namespace.
#[derive(Clone)]
pub struct KubeStore {
    client: Client,
    namespace: String,
    app: String,
    /// Each service's requests ConfigMap by watch: a driver looks for requests every
    /// poll, and only reads and takes them (two requests) when the watch shows some.
    requests: std::sync::Arc<std::sync::Mutex<BTreeMap<String, std::sync::Arc<Cached<ConfigMap>>>>>,
}

/// A held lease. [`StateStore::unlock`] releases it. One dropped without that (a cancelled
/// or panicking driver) stops renewing at once and is released in the background on the
/// current runtime, best effort, as client-go's `ReleaseOnCancel` does; if the process
/// ends first, the lease expires [`LEASE_SECONDS`] after its last renewal.
pub struct KubeLock {
    renew: tokio::task::JoinHandle<()>,
    /// `None` once released.
    lease: Option<HeldLease>,
}

struct HeldLease {
    leases: Api<Lease>,
    name: String,
    holder: String,
}

impl HeldLease {
    /// Clears the holder, if the lease is still ours.
    async fn release(self) {
        let Ok(mut lease) = self.leases.get(&self.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() == Some(self.holder.as_str()) {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self
                .leases
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

impl Drop for KubeLock {
    fn drop(&mut self) {
        self.renew.abort();
        if let (Some(lease), Ok(runtime)) =
            (self.lease.take(), tokio::runtime::Handle::try_current())
        {
            // No I/O here: the release runs as its own task.
            runtime.spawn(lease.release());
        }
    }
}

impl KubeLock {
    async fn release(mut self) {
        self.renew.abort();
        if let Some(lease) = self.lease.take() {
            lease.release().await;
        }
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(holder) = &spec.holder_identity else {
        return true;
    };
    if holder.is_empty() {
        return true;
    }
    let Some(renewed) = &spec.renew_time else {
        return true;
    };
    let duration = spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS) as i64;
    Timestamp::now().as_second() > renewed.0.as_second() + duration
}

impl KubeStore {
    pub fn new(client: Client, namespace: &str, app: &str) -> KubeStore {
        KubeStore {
            client,
            namespace: namespace.into(),
            app: app.into(),
            requests: Default::default(),
        }
    }

    fn config_maps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn labels(&self, service: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (super::render::NAME.to_string(), service.to_string()),
            (super::render::PART_OF.to_string(), self.app.clone()),
            (
                super::render::MANAGED_BY.to_string(),
                "dronectl".to_string(),
            ),
            (
                super::render::COMPONENT.to_string(),
                "rollout-state".to_string(),
            ),
        ])
    }

    fn state_name(service: &str) -> String {
        format!("dronectl-rollout-{service}")
    }

    fn requests_name(service: &str) -> String {
        format!("dronectl-requests-{service}")
    }

    async fn read_key(&self, name: &str, key: &str) -> anyhow::Result<Option<String>> {
        match self.config_maps().get_opt(name).await? {
            Some(cm) => Ok(cm.data.and_then(|mut d| d.remove(key))),
            None => Ok(None),
        }
    }

    /// Sets one data key, creating the ConfigMap when it does not exist yet.
    async fn write_key(
        &self,
        service: &str,
        name: &str,
        key: &str,
        value: String,
    ) -> anyhow::Result<()> {
        let api = self.config_maps();
        let patch = serde_json::json!({ "data": { key: value.clone() } });
        loop {
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 404) => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(name.into()),
                            labels: Some(self.labels(service)),
                            ..Default::default()
                        },
                        data: Some(BTreeMap::from([(key.to_string(), value.clone())])),
                        ..Default::default()
                    };
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(_) => return Ok(()),
                        Err(e) if is_status(&e, 409) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Parses and validates data key `key` of ConfigMap `name`, exactly as the file store
    /// does; a damaged one says how to remove it.
    fn checked<T: Checked>(
        &self,
        service: &str,
        name: &str,
        key: &str,
        text: &str,
    ) -> Result<T, crate::rollout::state::DamagedState> {
        let forget = if key == "state" {
            format!("dronectl then forgets the rollout in progress (what runs stays as it is) and the next `dronectl deploy {service}` starts afresh")
        } else {
            format!("dronectl then forgets `{service}`'s stable revision and history, and the next deploy is treated as its first")
        };
        T::parse(
            text.as_bytes(),
            service,
            &format!("key `{key}` of ConfigMap {}/{name}", self.namespace),
            format!(
                "remove the key (`kubectl -n {} patch configmap {name} --type json -p '[{{\"op\":\"remove\",\"path\":\"/data/{key}\"}}]'`): {forget}",
                self.namespace
            ),
        )
    }

    async fn lock_async(&self, service: &str, holder: &str) -> anyhow::Result<KubeLock> {
        let leases = self.leases();
        let name = format!("dronectl-{service}");
        // Unique per lock: two drivers in one process are two holders.
        let holder = format!("{holder} [{}]", nonce());
        let held = |h: Option<String>| -> anyhow::Error {
            LockHeld {
                service: service.to_string(),
                holder: h.unwrap_or_else(|| "another process".into()),
            }
            .into()
        };
        let spec = LeaseSpec {
            holder_identity: Some(holder.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now_micro()),
            renew_time: Some(now_micro()),
            ..Default::default()
        };
        // Create the Lease, or take it over once it expired; a conflict on either write
        // means another driver got there first.
        let written = match leases.get_opt(&name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(self.labels(service)),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                leases.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                let current = lease.spec.clone().unwrap_or_default();
                if !expired(&current) {
                    return Err(held(current.holder_identity));
                }
                let transitions = current.lease_transitions.unwrap_or(0) + 1;
                lease.spec = Some(LeaseSpec {
                    lease_transitions: Some(transitions),
                    ..spec
                });
                leases.replace(&name, &PostParams::default(), &lease).await
            }
        };
        match written {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {
                let current = leases.get_opt(&name).await?;
                return Err(held(
                    current.and_then(|l| l.spec).and_then(|s| s.holder_identity),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        let renew = {
            let (leases, name, holder) = (leases.clone(), name.clone(), holder.clone());
            tokio::spawn(async move {
                // Renew from the lease last written (one request per renewal); re-read
                // only when that fails (a conflict: someone else wrote it).
                let mut last: Option<Lease> = None;
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let mut lease = match last.take() {
                        Some(l) => l,
                        None => match leases.get(&name).await {
                            Ok(l) => l,
                            Err(_) => continue,
                        },
                    };
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    if spec.holder_identity.as_deref() != Some(holder.as_str()) {
                        return;
                    }
                    spec.renew_time = Some(now_micro());
                    last = leases
                        .replace(&name, &PostParams::default(), &lease)
                        .await
                        .ok();
                }
            })
        };
        Ok(KubeLock {
            renew,
            lease: Some(HeldLease {
                leases,
                name,
                holder,
            }),
        })
    }

    async fn take_async(&self, service: &str) -> anyhow::Result<Vec<Request>> {
        let api = self.config_maps();
        let name = Self::requests_name(service);
        let watched = {
            let mut all = self.requests.lock().expect("lock");
            all.entry(service.to_string())
                .or_insert_with(|| {
                    std::sync::Arc::new(Cached::start(
                        api.clone(),
                        watcher::Config::default().fields(&format!("metadata.name={name}")),
                    ))
                })
                .clone()
        };
        if let Some(seen) = watched.objects().await {
            if seen
                .iter()
                .all(|cm| cm.data.as_ref().is_none_or(|d| d.is_empty()))
            {
                return Ok(vec![]);
            }
        }
        loop {
            let Some(mut cm) = api.get_opt(&name).await? else {
                return Ok(vec![]);
            };
            let data = cm.data.take().unwrap_or_default();
            if data.is_empty() {
                return Ok(vec![]);
            }
            // Replace with the resourceVersion we read: a request posted meanwhile makes
            // this a conflict, and we read again.
            cm.data = Some(BTreeMap::new());
            match api.replace(&name, &PostParams::default(), &cm).await {
                Ok(_) => {
                    let mut entries: Vec<(String, String)> = data.into_iter().collect();
                    entries.sort();
                    return Ok(entries
                        .into_iter()
                        .filter_map(|(_, v)| serde_json::from_str(&v).ok())
                        .collect());
                }
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

// Each call's future is boxed: API calls are large futures, and inline in the engine's
// future they would make every rollout future (and its stack frames in debug builds) huge.
impl StateStore for KubeStore {
    type Lock = KubeLock;

    async fn lock(&self, service: &str, holder: &str) -> anyhow::Result<KubeLock> {
        Box::pin(self.lock_async(service, holder)).await
    }

    async fn unlock(&self, lock: KubeLock) {
        Box::pin(lock.release()).await;
    }

    async fn load(&self, service: &str) -> anyhow::Result<Option<RolloutState>> {
        let name = Self::state_name(service);
        match Box::pin(self.read_key(&name, "state")).await? {
            Some(text) => Ok(Some(self.checked(service, &name, "state", &text)?)),
            None => Ok(None),
        }
    }

    async fn save(&self, state: &RolloutState) -> anyhow::Result<()> {
        let text = serde_json::to_string(state)?;
        Box::pin(self.write_key(
            &state.service,
            &Self::state_name(&state.service),
            "state",
            text,
        ))
        .await
    }

    async fn load_record(&self, service: &str) -> anyhow::Result<ServiceRecord> {
        let name = Self::state_name(service);
        match Box::pin(self.read_key(&name, "record")).await? {
            Some(text) => Ok(self.checked(service, &name, "record", &text)?),
            None => Ok(ServiceRecord::default()),
        }
    }

    async fn save_record(&self, service: &str, record: &ServiceRecord) -> anyhow::Result<()> {
        let text = serde_json::to_string(record)?;
        Box::pin(self.write_key(service, &Self::state_name(service), "record", text)).await
    }

    async fn post(&self, service: &str, request: Request) -> anyhow::Result<()> {
        let key = format!("r-{:016}-{}", crate::rollout::now_ms(), nonce());
        Box::pin(self.write_key(
            service,
            &Self::requests_name(service),
            &key,
            serde_json::to_string(&request)?,
        ))
        .await
    }

    async fn take_requests(&self, service: &str) -> anyhow::Result<Vec<Request>> {
        Box::pin(self.take_async(service)).await
    }
}

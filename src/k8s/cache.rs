//! Watch-fed caches of the objects a waiting rollout looks at, so that waiting costs no
//! requests: a kube-runtime `watcher` (one LIST, then a WATCH that the watcher renews every
//! 290 s and re-lists after an error or a `410 Expired`) feeds a `reflector` store that is
//! read instead of the API. Writes never go through a cache.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::runtime::{reflector, watcher, WatchStreamExt as _};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// How long the first LIST may take before the cache is given up (callers then ask the
/// API directly).
const READY_WITHIN: Duration = Duration::from_secs(10);

/// A reflector store kept up to date by a background watch; dropping it stops the watch.
pub struct Cached<K: Resource + 'static>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    store: reflector::Store<K>,
    task: tokio::task::JoinHandle<()>,
}

impl<K: Resource + 'static> Drop for Cached<K>
where
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Cached<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + std::hash::Hash + Eq + Clone + Send + Sync,
{
    /// Starts watching `api` with `config` (label and field selectors).
    pub fn start(api: Api<K>, config: watcher::Config) -> Cached<K> {
        let (store, writer) = reflector::store();
        let stream = reflector(writer, watcher(api, config)).default_backoff();
        let task = tokio::spawn(stream.for_each(|_| async {}));
        Cached { store, task }
    }

    /// Every cached object, once the first LIST arrived; `None` if it did not in time.
    pub async fn objects(&self) -> Option<Vec<Arc<K>>> {
        tokio::time::timeout(READY_WITHIN, self.store.wait_until_ready())
            .await
            .ok()?
            .ok()?;
        Some(self.store.state())
    }
}

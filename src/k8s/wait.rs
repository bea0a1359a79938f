//! Waiting for workloads the way `kubectl rollout status` does: the controller has
//! observed the latest spec (`observedGeneration`), every replica runs the new template
//! (`updatedReplicas`; for a StatefulSet `updateRevision == currentRevision`), and every
//! replica is ready. A StatefulSet whose pods are being replaced one by one is not done
//! while its old `readyReplicas` still match.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::Api;
use kube::runtime::wait::await_condition;

/// `Ok` when the StatefulSet's rollout is complete; else what it waits for.
pub fn statefulset_progress(sts: &StatefulSet) -> Result<(), String> {
    let generation = sts.metadata.generation.unwrap_or(0);
    let Some(status) = sts.status.as_ref() else {
        return Err("waiting for the spec to be observed".into());
    };
    let observed = status.observed_generation.unwrap_or(0);
    if observed == 0 || observed < generation {
        return Err("waiting for the spec update to be observed".into());
    }
    let replicas = sts.spec.replicas.unwrap_or(1);
    let ready = status.ready_replicas.unwrap_or(0);
    if ready < replicas {
        return Err(format!("{ready} of {replicas} pods ready"));
    }
    let strategy = sts.spec.update_strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete") {
        return Ok(());
    }
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if partition > 0 {
        let want = (replicas - partition).max(0);
        return if updated < want {
            Err(format!(
                "partitioned roll out: {updated} of {want} new pods updated"
            ))
        } else {
            Ok(())
        };
    }
    if status.update_revision != status.current_revision {
        return Err(format!(
            "rolling update: {updated} of {replicas} pods at revision {}",
            status.update_revision.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}

/// Waits (by watch) until StatefulSet `name`'s rollout is complete, or fails after
/// `deadline` saying what it still waits for.
pub async fn statefulset(
    api: &Api<StatefulSet>,
    what: &str,
    name: &str,
    deadline: Duration,
) -> anyhow::Result<()> {
    let done = |s: Option<&StatefulSet>| s.is_some_and(|s| statefulset_progress(s).is_ok());
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, done)).await {
        Ok(result) => {
            result?;
            Ok(())
        }
        Err(_) => {
            let waiting = match api.get_opt(name).await? {
                Some(s) => statefulset_progress(&s).err().unwrap_or_default(),
                None => "it does not exist".into(),
            };
            anyhow::bail!(
                "{what} `{name}` is not rolled out after {}s: {waiting}",
                deadline.as_secs()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(generation: i64, status: serde_json::Value) -> StatefulSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "redis", "generation": generation},
            "spec": {"replicas": 1, "serviceName": "redis", "selector": {}, "template": {}},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_statefulset_is_done_only_when_observed_updated_and_ready() {
        let settled = serde_json::json!({"observedGeneration": 2, "replicas": 1, "readyReplicas": 1,
            "updatedReplicas": 1, "currentRevision": "redis-b", "updateRevision": "redis-b"});
        assert_eq!(statefulset_progress(&sts(2, settled.clone())), Ok(()));
        // The old status right after an image change: ready, but not observed yet.
        let mut stale = settled.clone();
        stale["observedGeneration"] = 1.into();
        assert!(statefulset_progress(&sts(2, stale)).is_err());
        // Observed, the old pod still ready, the replacement not started.
        let mut rolling = settled.clone();
        rolling["updateRevision"] = "redis-c".into();
        rolling["updatedReplicas"] = 0.into();
        let err = statefulset_progress(&sts(2, rolling)).unwrap_err();
        assert!(err.contains("0 of 1 pods at revision redis-c"), "{err}");
        let mut unready = settled;
        unready["readyReplicas"] = 0.into();
        assert_eq!(
            statefulset_progress(&sts(2, unready)).unwrap_err(),
            "0 of 1 pods ready"
        );
    }
}

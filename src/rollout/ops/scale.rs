//! `dronectl scale`: the live revision's replica count changed without a rollout, kept as
//! the record's `scaled` override.

use serde::Serialize;

use crate::rollout::engine::{describe_phase, Engine};
use crate::rollout::platform::Platform;
use crate::rollout::state::{with_lock, Scaled, StateStore};

use super::holder;

/// What `dronectl scale` did.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    pub service: String,
    /// The live revision that was scaled.
    pub revision: String,
    pub version: String,
    pub from: u32,
    pub to: u32,
    /// The manifest's `replicas`; a deploy keeps `to` while the manifest keeps this count.
    pub manifest_replicas: u32,
    /// Replicas ready when the command returned.
    pub ready: u32,
}

/// The refusal of `dronectl scale` for an autoscaled service (exit 2). The caller checks the
/// manifest's bounds too: a local revision has none (the local target runs `min`).
pub fn autoscaled(service: &str, bounds: crate::rollout::replicas::Bounds) -> anyhow::Error {
    crate::exit::UsageError(format!(
        "`{service}` is autoscaled ({}..{} replicas): change `autoscale.min` / `autoscale.max` in dronectl.yaml instead",
        bounds.min, bounds.max
    ))
    .into()
}

/// Changes the replica count of the live revision of `service`, without a rollout:
/// refused while a rollout is in progress, for an autoscaled service and for a service
/// that is not running. Holds the service's lock, so it cannot race a deploy. Returns
/// once the new count is ready (scaling down: once the removed replicas are gone).
pub async fn scale<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    replicas: u32,
) -> anyhow::Result<ScaleReport> {
    with_lock(
        engine.store,
        service,
        &holder(),
        scale_held(engine, service, replicas),
    )
    .await
}

async fn scale_held<P: Platform, S: StateStore>(
    engine: &Engine<'_, P, S>,
    service: &str,
    replicas: u32,
) -> anyhow::Result<ScaleReport> {
    if let Some(state) = engine.store.load(service).await? {
        if !state.phase.is_terminal() {
            anyhow::bail!(crate::exit::UsageError(format!(
                "a rollout of `{service}` is in progress (#{}, {}): finish it with `dronectl rollout promote|abort {service}`",
                state.number,
                describe_phase(&state.phase)
            )));
        }
    }
    let mut record = engine.store.load_record(service).await?;
    let Some(stable) = record.stable.clone() else {
        anyhow::bail!(crate::exit::UsageError(format!(
            "`{service}` is not running: deploy it first (`dronectl deploy {service}` or `dronectl up`)"
        )));
    };
    if let Some(bounds) = stable.autoscale {
        return Err(autoscaled(service, bounds));
    }
    let from = stable.replicas;
    let manifest = record.scaled.map_or(from, |s| s.manifest);
    engine.platform.scale(service, &stable, replicas).await?;
    let deadline = std::time::Instant::now() + engine.timing.progress_deadline;
    let ready = loop {
        let status = engine.platform.status(service, &stable).await?;
        if let Some(failure) = status.failure {
            anyhow::bail!(
                "scaling `{service}` to {replicas}: {}: {}",
                failure.reason,
                failure.message
            );
        }
        if status.ready >= replicas && status.current <= replicas {
            break status.ready;
        }
        if std::time::Instant::now() >= deadline {
            anyhow::bail!(
                "scaling `{service}` to {replicas}: {} of {replicas} replicas ready after {:?}",
                status.ready,
                engine.timing.progress_deadline
            );
        }
        tokio::time::sleep(engine.timing.poll).await;
    };
    let mut scaled = stable.clone();
    scaled.replicas = replicas;
    record.stable = Some(scaled);
    record.scaled = (replicas != manifest).then_some(Scaled { replicas, manifest });
    engine.store.save_record(service, &record).await?;
    Ok(ScaleReport {
        service: service.into(),
        revision: stable.id.clone(),
        version: stable.version.clone(),
        from,
        to: replicas,
        manifest_replicas: manifest,
        ready,
    })
}

#[cfg(test)]
mod tests {
    use crate::rollout::test_support::*;

    #[tokio::test]
    async fn scale_changes_the_live_count_and_later_deploys_keep_it() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        let report = ops::scale(&engine, "api", 3).await.unwrap();
        assert_eq!((report.from, report.to, report.ready), (1, 3, 3));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
        let record = s.store.load_record("api").await.unwrap();
        assert_eq!(record.stable.as_ref().unwrap().replicas, 3);
        assert_eq!(
            record.scaled,
            Some(state::Scaled {
                replicas: 3,
                manifest: 1
            })
        );
        // The same manifest (replicas: 1) again: unchanged, still 3.
        assert!(matches!(
            engine
                .start("api", rev("api:1", 1), Plan::builtin(StrategyKind::Rolling))
                .await
                .unwrap(),
            Started::Unchanged { .. }
        ));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
        // A new version with the same manifest count starts at the scaled count.
        let v2 = rev("api:2", 1);
        match engine
            .start("api", v2.clone(), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap()
        {
            Started::New(state) => assert_eq!(state.candidate.replicas, 3),
            Started::Unchanged { .. } => panic!("a new version is a rollout"),
        }
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v2.id], 3);
        // Scaling back to the manifest's count drops the override.
        ops::scale(&engine, "api", 1).await.unwrap();
        assert_eq!(s.store.load_record("api").await.unwrap().scaled, None);
        ops::scale(&engine, "api", 2).await.unwrap();
        // The manifest's count changes (1 → 4): it wins over the override.
        match engine
            .start("api", rev("api:3", 4), Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap()
        {
            Started::New(state) => assert_eq!(state.candidate.replicas, 4),
            Started::Unchanged { .. } => panic!("a new version is a rollout"),
        }
        assert_eq!(s.store.load_record("api").await.unwrap().scaled, None);
    }

    #[tokio::test]
    async fn scale_with_a_changed_manifest_count_of_the_same_revision_applies_the_manifest() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        ops::scale(&engine, "api", 3).await.unwrap();
        assert!(matches!(
            engine
                .start("api", rev("api:1", 2), Plan::builtin(StrategyKind::Rolling))
                .await
                .unwrap(),
            Started::Unchanged { .. }
        ));
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 2);
        let record = s.store.load_record("api").await.unwrap();
        assert_eq!(record.scaled, None);
        assert_eq!(record.stable.unwrap().replicas, 2);
    }

    #[tokio::test]
    async fn a_deploy_that_changes_only_replicas_scales_the_live_version() {
        let s = Setup::new();
        let v1 = s.deploy_stable("api:1").await;
        let engine = s.engine();
        // No `dronectl scale` in play: dronectl.yaml's `replicas` goes 1 → 3.
        let report = ops::deploy(
            &engine,
            "api",
            rev("api:1", 3),
            Plan::builtin(StrategyKind::Rolling),
            None,
        )
        .await
        .unwrap();
        assert_eq!(report.outcome, "unchanged");
        assert!(
            report.message.contains("scaled it from 1 to 3 replicas"),
            "{}",
            report.message
        );
        assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
        assert_eq!(
            s.store
                .load_record("api")
                .await
                .unwrap()
                .stable
                .unwrap()
                .replicas,
            3
        );
        // The same again: nothing to do.
        let report = ops::deploy(
            &engine,
            "api",
            rev("api:1", 3),
            Plan::builtin(StrategyKind::Rolling),
            None,
        )
        .await
        .unwrap();
        assert!(
            report.message.contains("nothing to do"),
            "{}",
            report.message
        );
    }

    #[tokio::test]
    async fn scale_is_refused_during_a_rollout_for_an_autoscaled_and_an_undeployed_service() {
        let s = Setup::new();
        let engine = s.engine();
        let err = ops::scale(&engine, "api", 2).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(err.to_string().contains("is not running"), "{err}");

        s.deploy_stable("api:1").await;
        engine
            .start(
                "api",
                rev("api:2", 1),
                canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]),
            )
            .await
            .unwrap();
        let err = ops::scale(&engine, "api", 2).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(
            err.to_string().contains(
                "a rollout of `api` is in progress (#2, progressing): finish it with `dronectl rollout promote|abort api`"
            ) || err.to_string().contains("finish it with `dronectl rollout promote|abort api`"),
            "{err}"
        );
        assert_eq!(s.store.load_record("api").await.unwrap().scaled, None);

        let s = Setup::new();
        let engine = s.engine();
        let mut auto = rev("api:1", 2);
        auto.autoscale = Some(replicas::Bounds { min: 2, max: 6 });
        engine
            .start("api", auto, Plan::builtin(StrategyKind::Rolling))
            .await
            .unwrap();
        engine.drive("api", None).await.unwrap();
        let err = ops::scale(&engine, "api", 4).await.unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err}");
        assert!(err.to_string().contains("autoscale.min"), "{err}");
    }
}

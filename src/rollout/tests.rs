//! Engine tests over an in-memory platform that checks the ordering invariants on every
//! call: no traffic to a revision without ready replicas, stable keeps serving until the
//! candidate is ready.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use super::*;
use crate::events::{Collect, Event, RolloutWhat};
use crate::manifest::{Metric, StrategyKind};

#[derive(Default)]
struct Fake {
    inner: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// Replicas asked for, per revision id.
    replicas: BTreeMap<String, u32>,
    /// Replicas ready, per revision id (ready replicas stay ready).
    ready: BTreeMap<String, u32>,
    /// Status calls left before newly started replicas are ready.
    pending: BTreeMap<String, u32>,
    /// Status calls new replicas take to become ready.
    ready_after: u32,
    /// Revisions (by image) that crash.
    crashing: Vec<String>,
    weights: Vec<Weights>,
    removed: Vec<String>,
    /// Measurements handed out in order; `NoData` when empty.
    measurements: Vec<Measurement>,
    /// Split traffic by replica ratio (like Kubernetes without a gateway): `set_traffic`
    /// scales each side to its share, and a share needs that many ready replicas.
    ratio: bool,
    /// A simulated HorizontalPodAutoscaler: the revision it scales (it follows the revision
    /// with all the traffic, as on Kubernetes) and the count it chose. The engine must never
    /// change that revision's count while it is the autoscaler's.
    hpa: Option<(String, u32)>,
    /// Every `scale` call: (revision id, replicas).
    scaled: Vec<(String, u32)>,
    /// Every traffic description set, in order (weights-only calls included).
    routing: Vec<Traffic>,
}

/// Replica counts for a split by replica ratio: the platforms' own function.
fn ratio_counts(weights: &Weights, revisions: &[&Revision], max_surge: u32) -> Weights {
    super::replicas::ratio_counts(weights, revisions, max_surge)
}

impl Fake {
    fn ready(&self, id: &str) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .ready
            .get(id)
            .copied()
            .unwrap_or(0)
    }
    /// The autoscaler scales its revision to `count` (ready at once).
    fn autoscaler_scales(&self, count: u32) {
        let mut s = self.inner.lock().unwrap();
        let (target, _) = s.hpa.clone().expect("an autoscaler");
        s.replicas.insert(target.clone(), count);
        s.ready.insert(target.clone(), count);
        s.hpa = Some((target, count));
    }
    fn traffic_log(&self) -> Vec<Weights> {
        self.inner.lock().unwrap().weights.clone()
    }
}

impl Platform for Fake {
    async fn scale(
        &self,
        _service: &str,
        revision: &Revision,
        replicas: u32,
    ) -> anyhow::Result<()> {
        let mut s = self.inner.lock().unwrap();
        if let Some((target, count)) = &s.hpa {
            let current = s.replicas.get(&revision.id).copied().unwrap_or(0);
            assert!(
                target != &revision.id || replicas == *count || replicas == current,
                "scaled {} to {replicas}, fighting the autoscaler's {count}",
                revision.id
            );
        }
        s.scaled.push((revision.id.clone(), replicas));
        let last = s.weights.last().cloned().unwrap_or_default();
        // Scaling a revision to zero while it still has traffic breaks the invariant.
        if replicas == 0 {
            assert_eq!(
                last.get(&revision.id).copied().unwrap_or(0),
                0,
                "scaled {} to 0 while it had traffic",
                revision.id
            );
        }
        let ready = s
            .ready
            .get(&revision.id)
            .copied()
            .unwrap_or(0)
            .min(replicas);
        s.ready.insert(revision.id.clone(), ready);
        if s.replicas.get(&revision.id).copied().unwrap_or(0) != replicas {
            let after = s.ready_after;
            s.pending.insert(revision.id.clone(), after);
        }
        s.replicas.insert(revision.id.clone(), replicas);
        Ok(())
    }

    async fn status(&self, _service: &str, revision: &Revision) -> anyhow::Result<RevisionStatus> {
        let crashing = self
            .inner
            .lock()
            .unwrap()
            .crashing
            .contains(&revision.image);
        if crashing {
            return Ok(RevisionStatus {
                desired: 1,
                current: 1,
                ready: 0,
                failure: Some(Failure {
                    reason: "CrashLoopBackOff".into(),
                    message: "exited with 1".into(),
                    logs: vec!["panic: boom".into()],
                }),
            });
        }
        let mut s = self.inner.lock().unwrap();
        let desired = s.replicas.get(&revision.id).copied().unwrap_or(0);
        let pending = s.pending.entry(revision.id.clone()).or_default();
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            s.ready.insert(revision.id.clone(), desired);
        }
        let ready = s.ready.get(&revision.id).copied().unwrap_or(0);
        Ok(RevisionStatus {
            desired,
            current: desired,
            ready,
            failure: None,
        })
    }

    fn replicas_for(
        &self,
        _service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> Weights {
        if !self.inner.lock().unwrap().ratio {
            return revisions
                .iter()
                .filter(|r| weights.get(&r.id).copied().unwrap_or(0) > 0)
                .map(|r| (r.id.clone(), r.replicas))
                .collect();
        }
        ratio_counts(weights, revisions, max_surge)
    }

    async fn set_traffic(
        &self,
        _service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        let ratio = self.inner.lock().unwrap().ratio;
        let counts = ratio.then(|| ratio_counts(weights, revisions, max_surge));
        for (id, w) in weights {
            if *w > 0 {
                assert!(
                    self.ready(id) > 0,
                    "traffic {w}% to {id}, which has no ready replica"
                );
                if let Some(need) = counts.as_ref().and_then(|c| c.get(id)) {
                    assert!(
                        self.ready(id) >= *need,
                        "traffic {w}% to {id} with {} of the {need} replicas it needs ready",
                        self.ready(id)
                    );
                }
            }
        }
        assert_eq!(weights.values().sum::<u32>(), 100, "{weights:?}");
        {
            let mut s = self.inner.lock().unwrap();
            s.weights.push(weights.clone());
            // The autoscaler follows the revision with all the traffic.
            if let Some(full) = weights.iter().find(|(_, w)| **w == 100).map(|(id, _)| id) {
                let count = s.replicas.get(full).copied().unwrap_or(0);
                if let Some(hpa) = s.hpa.as_mut() {
                    *hpa = (full.clone(), count);
                }
            }
            // A plain call (abort, `up`) ends every control; `set_routing` replaces this.
            s.routing.push(Traffic::weights(weights.clone()));
        }
        // Replica ratio: each side is scaled to its share (the rest of a full switch stays).
        if let Some(counts) = counts {
            for r in revisions {
                if let Some(n) = counts.get(&r.id) {
                    if *n
                        < self
                            .inner
                            .lock()
                            .unwrap()
                            .replicas
                            .get(&r.id)
                            .copied()
                            .unwrap_or(0)
                    {
                        self.scale("api", r, *n).await?;
                    }
                }
            }
        }
        Ok(())
    }

    async fn set_routing(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> anyhow::Result<()> {
        if traffic.has_controls() {
            // Matches and mirrors go to the candidate, which must be ready for them.
            assert!(
                self.ready(&traffic.candidate) > 0,
                "controls to {}, which has no ready replica",
                traffic.candidate
            );
        }
        self.set_traffic(service, &traffic.weights, revisions, max_surge)
            .await?;
        *self.inner.lock().unwrap().routing.last_mut().unwrap() = traffic.clone();
        Ok(())
    }

    async fn snapshot(
        &self,
        _service: &str,
        _revision: &Revision,
    ) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::json!({}))
    }

    async fn measure(
        &self,
        _s: &str,
        _r: &Revision,
        _a: &AnalysisPlan,
        _b: &serde_json::Value,
    ) -> anyhow::Result<(Measurement, serde_json::Value)> {
        let mut s = self.inner.lock().unwrap();
        let m = if s.measurements.is_empty() {
            Measurement::NoData
        } else {
            s.measurements.remove(0)
        };
        Ok((m, serde_json::json!({})))
    }

    async fn remove(&self, _service: &str, revision: &Revision) -> anyhow::Result<()> {
        self.inner.lock().unwrap().removed.push(revision.id.clone());
        Ok(())
    }
}

fn rev(image: &str, replicas: u32) -> Revision {
    Revision::new(
        image,
        image.rsplit(':').next().unwrap(),
        replicas,
        BTreeMap::new(),
    )
}

fn fast() -> Timing {
    Timing {
        poll: Duration::from_millis(5),
        progress_deadline: Duration::from_secs(5),
        abort_delay: Duration::from_millis(20),
    }
}

fn canary(steps: Vec<PlanStep>) -> Plan {
    let mut plan = Plan::builtin(StrategyKind::Canary);
    plan.steps = steps;
    plan.scale_down_delay = Duration::from_millis(200);
    plan.analyses.insert(
        "errors".into(),
        AnalysisPlan {
            name: "errors".into(),
            metric: Metric::ErrorRate,
            threshold: Some(0.05),
            interval: Duration::from_millis(10),
            count: 2,
            failure_limit: 1,
            url: None,
            expect_status: None,
            query: None,
            address: None,
        },
    );
    plan
}

struct Setup {
    _dir: tempfile::TempDir,
    store: FileStore,
    fake: Fake,
    events: Collect,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        Setup {
            _dir: dir,
            store,
            fake: Fake::default(),
            events: Collect::default(),
        }
    }
    fn engine(&self) -> Engine<'_, Fake, FileStore> {
        let mut e = Engine::new(&self.fake, &self.store, &self.events);
        e.timing = fast();
        e
    }
    /// Deploys `image` as the first, stable revision.
    async fn deploy_stable(&self, image: &str) -> Revision {
        let r = rev(image, 1);
        let engine = self.engine();
        assert!(matches!(
            engine
                .start("api", r.clone(), Plan::builtin(StrategyKind::Rolling))
                .await
                .unwrap(),
            Started::New(_)
        ));
        let (outcome, _) = engine.drive("api", None).await.unwrap();
        assert_eq!(outcome, DriveOutcome::Completed);
        r
    }
    fn kinds(&self) -> Vec<RolloutWhat> {
        self.events
            .take()
            .into_iter()
            .filter_map(|e| {
                if let Event::Rollout(r) = e {
                    Some(r.what)
                } else {
                    None
                }
            })
            .collect()
    }
}

fn candidate_weights(log: &[Weights], id: &str) -> Vec<u32> {
    log.iter()
        .map(|w| w.get(id).copied().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn first_deploy_completes_and_redeploy_is_a_no_op() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    assert_eq!(candidate_weights(&s.fake.traffic_log(), &v1.id), vec![100]);
    let engine = s.engine();
    assert!(matches!(
        engine
            .start("api", v1.clone(), Plan::builtin(StrategyKind::Canary))
            .await
            .unwrap(),
        Started::Unchanged(_)
    ));
    assert_eq!(s.store.load_record("api").unwrap().stable, Some(v1));
}

#[tokio::test]
async fn canary_walks_its_steps_and_keeps_the_old_version_warm() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    s.fake.inner.lock().unwrap().ready_after = 3;
    s.fake.inner.lock().unwrap().measurements =
        vec![Measurement::Value(0.0), Measurement::Value(0.01)];
    let v2 = rev("api:2", 1);
    let engine = s.engine();
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![
                PlanStep::Weight(20),
                PlanStep::Pause(Some(Duration::from_millis(30))),
                PlanStep::Analysis("errors".into()),
                PlanStep::Weight(50),
            ]),
        )
        .await
        .unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    let log = s.fake.traffic_log();
    assert_eq!(candidate_weights(&log, &v2.id), vec![0, 0, 20, 50, 100]);
    let record = s.store.load_record("api").unwrap();
    assert_eq!(record.stable.as_ref().unwrap().id, v2.id);
    assert!(
        record
            .retired
            .iter()
            .any(|r| r.revision.id == v1.id && r.warm),
        "v1 kept warm"
    );
    assert_eq!(
        state.analyses_done,
        vec![("errors".to_string(), state::MeasurementOutcome::Pass)]
    );
    // After the scale-down delay, the next engine run removes v1.
    tokio::time::sleep(Duration::from_millis(250)).await;
    engine.collect_garbage("api").await.unwrap();
    assert_eq!(s.fake.inner.lock().unwrap().removed, vec![v1.id.clone()]);
}

#[tokio::test]
async fn failed_analysis_aborts_and_rolls_back() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    s.fake.inner.lock().unwrap().measurements = vec![Measurement::Value(0.30)];
    let v2 = rev("api:2", 1);
    let engine = s.engine();
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![
                PlanStep::Weight(20),
                PlanStep::Analysis("errors".into()),
                PlanStep::Weight(100),
            ]),
        )
        .await
        .unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Aborted);
    assert_eq!(outcome.exit_code().code(), 3);
    assert!(
        state.message.contains("error rate 30.00%"),
        "{}",
        state.message
    );
    let log = s.fake.traffic_log();
    assert_eq!(log.last().unwrap()[&v1.id], 100, "traffic back on stable");
    assert_eq!(
        s.fake.inner.lock().unwrap().replicas[&v2.id],
        0,
        "candidate scaled down after the delay"
    );
    assert_eq!(
        s.store.load_record("api").unwrap().stable.unwrap().id,
        v1.id
    );
    assert!(s.kinds().contains(&RolloutWhat::Aborted));
}

#[tokio::test]
async fn crash_looping_candidate_fails_without_getting_traffic() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    s.fake.inner.lock().unwrap().crashing.push("api:bad".into());
    let bad = rev("api:bad", 1);
    let engine = s.engine();
    engine
        .start("api", bad.clone(), canary(vec![PlanStep::Weight(50)]))
        .await
        .unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Failed);
    let Phase::Failed { failure } = &state.phase else {
        panic!("{:?}", state.phase)
    };
    assert_eq!(failure.reason, "CrashLoopBackOff");
    assert_eq!(failure.logs, vec!["panic: boom".to_string()]);
    assert!(candidate_weights(&s.fake.traffic_log(), &bad.id)
        .iter()
        .all(|w| *w == 0));
    assert_eq!(s.fake.traffic_log().last().unwrap()[&v1.id], 100);
}

#[tokio::test]
async fn manual_pause_and_inconclusive_analysis_wait_for_promotion() {
    let s = Setup::new();
    s.deploy_stable("api:1").await;
    let v2 = rev("api:2", 1);
    let engine = s.engine();
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![
                PlanStep::Weight(10),
                PlanStep::Pause(None),
                PlanStep::Analysis("errors".into()),
                PlanStep::Weight(60),
            ]),
        )
        .await
        .unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert_eq!(outcome.exit_code().code(), 5);
    assert_eq!(
        state.phase,
        Phase::Paused {
            reason: PauseReason::UntilPromoted
        }
    );
    assert_eq!(state.step, 1);
    // Another process promotes; no traffic → the analysis is inconclusive → paused again.
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert!(
        matches!(
            state.phase,
            Phase::Paused {
                reason: PauseReason::Inconclusive { .. }
            }
        ),
        "{:?}",
        state.phase
    );
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, _) = engine
        .drive("api", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Completed);
    assert_eq!(
        candidate_weights(&s.fake.traffic_log(), &v2.id),
        vec![0, 0, 10, 60, 100]
    );
}

#[tokio::test]
async fn a_killed_driver_is_resumed_from_the_persisted_state() {
    let s = Setup::new();
    s.deploy_stable("api:1").await;
    let v2 = rev("api:2", 1);
    {
        let engine = s.engine();
        engine
            .start(
                "api",
                v2.clone(),
                canary(vec![
                    PlanStep::Weight(30),
                    PlanStep::Pause(Some(Duration::from_millis(2000))),
                    PlanStep::Weight(70),
                ]),
            )
            .await
            .unwrap();
        // "Killed" during the pause: the drive stops at its timeout.
        let (outcome, _) = engine
            .drive("api", Some(Duration::from_millis(500)))
            .await
            .unwrap();
        assert_eq!(outcome, DriveOutcome::TimedOut);
    }
    let stored = s.store.load("api").unwrap().unwrap();
    assert!(matches!(
        stored.phase,
        Phase::Paused {
            reason: PauseReason::Timed { .. }
        }
    ));
    assert_eq!((stored.step, stored.weight), (1, 30));
    // A new engine (a new process) continues; the pause counts from when it began.
    let engine = s.engine();
    let started = std::time::Instant::now();
    let (outcome, _) = engine
        .drive("api", Some(Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Completed);
    assert!(
        // A restarted pause would take the whole 2 s again; the rest of it is 1.5 s. The
        // margin is for a loaded machine (the completion steps take a few ms each).
        started.elapsed() < Duration::from_millis(1950),
        "the pause was not restarted"
    );
    assert_eq!(
        candidate_weights(&s.fake.traffic_log(), &v2.id),
        vec![0, 0, 30, 70, 100]
    );
    // A second start while one is in progress is refused.
}

#[tokio::test]
async fn abort_request_rolls_back_and_a_second_start_is_refused_while_running() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    let engine = s.engine();
    engine
        .start(
            "api",
            rev("api:2", 1),
            canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
        )
        .await
        .unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    let err = engine
        .start("api", rev("api:3", 1), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("still in progress"), "{err}");
    s.store.post("api", Request::Abort).unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Aborted);
    assert_eq!(s.fake.traffic_log().last().unwrap()[&v1.id], 100);
}

#[tokio::test]
async fn rolling_update_replaces_replicas_without_losing_capacity() {
    let s = Setup::new();
    let engine = s.engine();
    let v1 = rev("api:1", 3);
    engine
        .start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Completed
    );
    s.fake.inner.lock().unwrap().ready_after = 2;
    let v2 = rev("api:2", 3);
    engine
        .start("api", v2.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    let (outcome, state) = engine
        .drive("api", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    let shares = candidate_weights(&s.fake.traffic_log(), &v2.id);
    assert_eq!(shares.last(), Some(&100));
    assert!(
        shares.windows(2).all(|w| w[0] <= w[1]),
        "traffic only moves forward: {shares:?}"
    );
    let replicas = s.fake.inner.lock().unwrap().replicas.clone();
    assert_eq!((replicas[&v1.id], replicas[&v2.id]), (0, 3));
}

#[tokio::test]
async fn undo_switches_back_to_the_warm_revision() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    let engine = s.engine();
    let mut plan = Plan::builtin(StrategyKind::BlueGreen);
    plan.scale_down_delay = Duration::from_secs(60);
    engine.start("api", rev("api:2", 1), plan).await.unwrap();
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Completed
    );
    let Started::New(state) = engine.undo("api", None).await.unwrap() else {
        panic!("expected a new rollout")
    };
    assert_eq!(state.candidate.id, v1.id);
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Completed
    );
    assert_eq!(
        s.store.load_record("api").unwrap().stable.unwrap().id,
        v1.id
    );
    let history = s.store.load_record("api").unwrap().history;
    assert_eq!(
        history.iter().map(|h| h.number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
}

#[tokio::test]
async fn promote_full_after_a_replica_ratio_split_waits_until_the_candidate_is_ready() {
    let s = Setup::new();
    s.fake.inner.lock().unwrap().ratio = true;
    let v1 = rev("api:1", 2);
    let engine = s.engine();
    engine
        .start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Completed
    );
    let v2 = rev("api:2", 2);
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
        )
        .await
        .unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
    assert_eq!(
        (replicas(&v1.id), replicas(&v2.id)),
        (1, 1),
        "50/50 by ratio"
    );
    // New replicas now take a while: the candidate must be ready at full size first.
    s.fake.inner.lock().unwrap().ready_after = 4;
    s.events.take();
    s.store.post("api", Request::PromoteFull).unwrap();
    let (outcome, state) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    assert_eq!(s.fake.traffic_log().last().unwrap()[&v2.id], 100);
    assert_eq!(s.fake.ready(&v2.id), 2);
    assert_eq!(
        replicas(&v1.id),
        2,
        "the old stable is kept warm at full size"
    );
    let waited = s.events.take().into_iter().any(|e| {
        matches!(e, Event::Rollout(r) if r.what == RolloutWhat::Scaling
            && r.message.contains("before 100% of traffic"))
    });
    assert!(waited, "the candidate was waited for before the switch");
}

fn autoscaled(image: &str, min: u32, max: u32) -> Revision {
    rev(image, min).autoscaled(Some(super::replicas::Bounds { min, max }))
}

/// Deploys `v1` (autoscaled, by ratio) and lets the autoscaler take it to `live` replicas.
async fn autoscaled_stable(s: &Setup, v1: &Revision, live: u32) {
    {
        let mut f = s.fake.inner.lock().unwrap();
        f.ratio = true;
        f.hpa = Some((String::new(), 0));
    }
    let engine = s.engine();
    engine
        .start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Completed
    );
    assert_eq!(s.fake.inner.lock().unwrap().hpa, Some((v1.id.clone(), 2)));
    s.fake.autoscaler_scales(live);
    s.fake.inner.lock().unwrap().scaled.clear();
}

#[tokio::test]
async fn with_an_autoscaler_the_canary_is_sized_from_the_stables_live_count() {
    let s = Setup::new();
    let v1 = autoscaled("api:1", 2, 10);
    autoscaled_stable(&s, &v1, 4).await;
    let v2 = autoscaled("api:2", 2, 10);
    let engine = s.engine();
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![
                PlanStep::Weight(20),
                PlanStep::Pause(None),
                PlanStep::Weight(50),
                PlanStep::Pause(None),
            ]),
        )
        .await
        .unwrap();
    let (outcome, state) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
    // The stable keeps the autoscaler's 4 pods; one canary pod is 20 %.
    assert_eq!((replicas(&v2.id), replicas(&v1.id)), (1, 4));
    assert_eq!(state.stable.as_ref().unwrap().replicas, 4);
    // The autoscaler adds stable pods meanwhile: the next weight is sized from 6.
    s.fake.autoscaler_scales(6);
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert_eq!((replicas(&v2.id), replicas(&v1.id)), (6, 6));
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, state) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    // The new stable runs at the live count and the autoscaler moved to it.
    assert_eq!(replicas(&v2.id), 6);
    assert_eq!(state.candidate.replicas, 6);
    assert_eq!(s.fake.inner.lock().unwrap().hpa, Some((v2.id.clone(), 6)));
    // The old stable was only scaled once, after the switch: kept warm at its live size.
    let scaled = s.fake.inner.lock().unwrap().scaled.clone();
    let old: Vec<u32> = scaled
        .iter()
        .filter(|(id, _)| id == &v1.id)
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(old, [6], "{scaled:?}");
}

#[tokio::test]
async fn with_an_autoscaler_blue_green_brings_the_candidate_up_at_the_current_count() {
    let s = Setup::new();
    let v1 = autoscaled("api:1", 2, 10);
    autoscaled_stable(&s, &v1, 5).await;
    s.fake.inner.lock().unwrap().ready_after = 3;
    let v2 = autoscaled("api:2", 2, 10);
    let engine = s.engine();
    let mut plan = Plan::builtin(StrategyKind::BlueGreen);
    plan.scale_down_delay = Duration::from_millis(100);
    engine.start("api", v2.clone(), plan).await.unwrap();
    let (outcome, state) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    let f = s.fake.inner.lock().unwrap();
    // Scaled once, to the live count, before any traffic; then the switch.
    assert_eq!(
        f.scaled
            .iter()
            .filter(|(id, _)| id == &v2.id)
            .map(|(_, n)| *n)
            .collect::<Vec<_>>()[0],
        5
    );
    assert_eq!(f.replicas[&v2.id], 5);
    assert_eq!(f.hpa, Some((v2.id.clone(), 5)));
    // The previous stable stays warm at the size the autoscaler had given it.
    assert_eq!(f.replicas[&v1.id], 5);
}

#[tokio::test]
async fn with_an_autoscaler_an_abort_leaves_the_stable_as_the_autoscaler_set_it() {
    let s = Setup::new();
    let v1 = autoscaled("api:1", 2, 10);
    autoscaled_stable(&s, &v1, 3).await;
    let v2 = autoscaled("api:2", 2, 10);
    let engine = s.engine();
    engine
        .start(
            "api",
            v2.clone(),
            canary(vec![PlanStep::Weight(50), PlanStep::Pause(None)]),
        )
        .await
        .unwrap();
    assert_eq!(
        engine.drive("api", None).await.unwrap().0,
        DriveOutcome::Paused
    );
    s.store.post("api", Request::Abort).unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Aborted);
    let f = s.fake.inner.lock().unwrap();
    assert_eq!(f.replicas[&v1.id], 3);
    assert_eq!(f.hpa, Some((v1.id.clone(), 3)));
    // Traffic went back before the candidate was scaled down.
    assert_eq!(f.weights.last().unwrap()[&v1.id], 100);
    assert_eq!(f.replicas[&v2.id], 0);
}

#[tokio::test]
async fn max_surge_scales_the_total_up_so_the_ratio_matches_the_weight() {
    let s = Setup::new();
    s.fake.inner.lock().unwrap().ratio = true;
    let v1 = rev("api:1", 2);
    let engine = s.engine();
    engine
        .start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    engine.drive("api", None).await.unwrap();
    s.fake.inner.lock().unwrap().ready_after = 2;
    let v2 = rev("api:2", 2);
    let mut plan = canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]);
    plan.max_surge = 3;
    s.events.take();
    engine.start("api", v2.clone(), plan).await.unwrap();
    let (outcome, state) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    let replicas = |id: &str| s.fake.inner.lock().unwrap().replicas[id];
    // 4 stable + 1 canary: 20 % by ratio, both ready before the traffic moved (the fake
    // asserts that on every set_traffic).
    assert_eq!((replicas(&v2.id), replicas(&v1.id)), (1, 4));
    assert_eq!(state.weight, 20);
    let hints: Vec<String> = s
        .events
        .take()
        .into_iter()
        .filter_map(|e| match e {
            Event::Hint { message } => Some(message),
            _ => None,
        })
        .collect();
    assert!(hints.is_empty(), "20 % can be approximated: {hints:?}");
    // Without the surge the same split is 1 + 1 and the engine says so.
    let s2 = Setup::new();
    s2.fake.inner.lock().unwrap().ratio = true;
    let e2 = s2.engine();
    e2.start("api", v1.clone(), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap();
    e2.drive("api", None).await.unwrap();
    e2.start(
        "api",
        v2.clone(),
        canary(vec![PlanStep::Weight(20), PlanStep::Pause(None)]),
    )
    .await
    .unwrap();
    e2.drive("api", None).await.unwrap();
    let r2 = |id: &str| s2.fake.inner.lock().unwrap().replicas[id];
    assert_eq!((r2(&v2.id), r2(&v1.id)), (1, 1));
}

fn beta() -> TrafficMatch {
    TrafficMatch {
        headers: vec![("x-beta".into(), MatchValue::Exact("true".into()))],
        cookies: vec![],
    }
}

fn testers() -> TrafficMatch {
    TrafficMatch {
        headers: vec![],
        cookies: vec![("group".into(), MatchValue::Regex("qa-[0-9]+".into()))],
    }
}

impl Fake {
    fn routing(&self) -> Vec<Traffic> {
        self.inner.lock().unwrap().routing.clone()
    }
}

#[tokio::test]
async fn match_then_mirror_then_weights_set_controls_step_by_step_and_promotion_ends_them() {
    let s = Setup::new();
    let _v1 = s.deploy_stable("api:1").await;
    let engine = s.engine();
    let v2 = rev("api:2", 1);
    let mut plan = canary(vec![
        PlanStep::Match(beta()),
        PlanStep::Mirror(20),
        PlanStep::Analysis("errors".into()),
        PlanStep::Weight(20),
        PlanStep::Mirror(0),
        PlanStep::Weight(50),
    ]);
    plan.sticky = true;
    s.fake.inner.lock().unwrap().measurements =
        vec![Measurement::Value(0.0), Measurement::Value(0.01)];
    engine.start("api", v2.clone(), plan).await.unwrap();
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed);
    let log: Vec<(u32, usize, u32, bool)> = s.fake.routing()[1..]
        .iter()
        .map(|t| {
            (
                t.weights.get(&v2.id).copied().unwrap_or(0),
                t.matches.len(),
                t.mirror,
                t.sticky,
            )
        })
        .collect();
    assert_eq!(
        log,
        vec![
            (0, 0, 0, true),    // ready, preview only
            (0, 1, 0, true),    // match x-beta
            (0, 1, 20, true),   // mirror 20 % (analysed before it serves anyone by weight)
            (20, 1, 20, true),  // weight 20
            (20, 1, 0, true),   // mirror stops
            (50, 1, 0, true),   // weight 50
            (100, 0, 0, false), // full promotion: no controls
        ]
    );
    let with_match = &s.fake.routing()[2];
    assert_eq!(with_match.candidate, v2.id);
    assert_eq!(with_match.matches, vec![beta()]);
}

#[tokio::test]
async fn controls_survive_a_resume_and_an_abort_clears_them() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    let v2 = rev("api:2", 1);
    s.engine()
        .start(
            "api",
            v2.clone(),
            canary(vec![
                PlanStep::Match(beta()),
                PlanStep::Match(testers()),
                PlanStep::Mirror(30),
                PlanStep::Pause(None),
                PlanStep::Weight(40),
                PlanStep::Pause(None),
            ]),
        )
        .await
        .unwrap();
    let (outcome, state) = s.engine().drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert_eq!(state.step, 3);
    // A new process (a new engine reading the stored state) routes as the old one did.
    let stored = s.store.load("api").unwrap().unwrap();
    let t = Engine::<Fake, FileStore>::traffic(&stored, stored.weight, stored.step);
    assert_eq!((t.matches.clone(), t.mirror), (vec![beta(), testers()], 30));
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, state) = s.engine().drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert_eq!(state.weight, 40);
    let last = s.fake.routing().last().unwrap().clone();
    assert_eq!(
        (last.matches.len(), last.mirror, last.weights[&v2.id]),
        (2, 30, 40)
    );
    s.store.post("api", Request::Abort).unwrap();
    let (outcome, _) = s.engine().drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Aborted);
    let last = s.fake.routing().last().unwrap().clone();
    assert!(!last.has_controls(), "{last:?}");
    assert_eq!(last.weights[&v1.id], 100);
}

#[tokio::test]
async fn ab_test_gives_the_candidate_only_matched_traffic_until_promoted() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    let v2 = rev("api:2", 1);
    let mut plan = Plan::builtin(StrategyKind::Ab);
    plan.steps = vec![PlanStep::Match(beta()), PlanStep::Pause(None)];
    plan.sticky = true;
    s.engine().start("api", v2.clone(), plan).await.unwrap();
    let (outcome, state) = s.engine().drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Paused);
    assert_eq!(state.weight, 0);
    let last = s.fake.routing().last().unwrap().clone();
    assert_eq!(last.matches, vec![beta()]);
    assert_eq!((last.weights[&v1.id], last.weights[&v2.id]), (100, 0));
    assert!(last.sticky);
    assert!(s
        .fake
        .routing()
        .iter()
        .all(|t| t.weights.get(&v2.id).copied().unwrap_or(0) == 0));
    s.store.post("api", Request::Promote).unwrap();
    let (outcome, _) = s.engine().drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed);
    let last = s.fake.routing().last().unwrap().clone();
    assert_eq!(last.weights[&v2.id], 100);
    assert!(!last.has_controls());
}

#[tokio::test]
async fn platforms_without_controls_refuse_them() {
    struct Plain(Fake);
    impl Platform for Plain {
        async fn scale(&self, s: &str, r: &Revision, n: u32) -> anyhow::Result<()> {
            self.0.scale(s, r, n).await
        }
        async fn status(&self, s: &str, r: &Revision) -> anyhow::Result<RevisionStatus> {
            self.0.status(s, r).await
        }
        async fn set_traffic(
            &self,
            s: &str,
            w: &Weights,
            r: &[&Revision],
            m: u32,
        ) -> anyhow::Result<()> {
            self.0.set_traffic(s, w, r, m).await
        }
        async fn snapshot(&self, s: &str, r: &Revision) -> anyhow::Result<serde_json::Value> {
            self.0.snapshot(s, r).await
        }
        async fn measure(
            &self,
            s: &str,
            r: &Revision,
            a: &AnalysisPlan,
            b: &serde_json::Value,
        ) -> anyhow::Result<(Measurement, serde_json::Value)> {
            self.0.measure(s, r, a, b).await
        }
        async fn remove(&self, s: &str, r: &Revision) -> anyhow::Result<()> {
            self.0.remove(s, r).await
        }
    }
    let p = Plain(Fake::default());
    let (a, b) = (rev("api:1", 1), rev("api:2", 1));
    p.scale("api", &a, 1).await.unwrap();
    p.status("api", &a).await.unwrap();
    let mut t = Traffic::weights(Weights::from([(a.id.clone(), 100)]));
    p.set_routing("api", &t, &[&a, &b], 0).await.unwrap();
    t.mirror = 10;
    let err = p.set_routing("api", &t, &[&a, &b], 0).await.unwrap_err();
    assert!(err.to_string().contains("cannot route by header"), "{err}");
}

#[tokio::test]
async fn scale_changes_the_live_count_and_later_deploys_keep_it() {
    let s = Setup::new();
    let v1 = s.deploy_stable("api:1").await;
    let engine = s.engine();
    let report = ops::scale(&engine, "api", 3).await.unwrap();
    assert_eq!((report.from, report.to, report.ready), (1, 3, 3));
    assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 3);
    let record = s.store.load_record("api").unwrap();
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
        Started::Unchanged(_)
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
        Started::Unchanged(_) => panic!("a new version is a rollout"),
    }
    let (outcome, _) = engine.drive("api", None).await.unwrap();
    assert_eq!(outcome, DriveOutcome::Completed);
    assert_eq!(s.fake.inner.lock().unwrap().replicas[&v2.id], 3);
    // Scaling back to the manifest's count drops the override.
    ops::scale(&engine, "api", 1).await.unwrap();
    assert_eq!(s.store.load_record("api").unwrap().scaled, None);
    ops::scale(&engine, "api", 2).await.unwrap();
    // The manifest's count changes (1 → 4): it wins over the override.
    match engine
        .start("api", rev("api:3", 4), Plan::builtin(StrategyKind::Rolling))
        .await
        .unwrap()
    {
        Started::New(state) => assert_eq!(state.candidate.replicas, 4),
        Started::Unchanged(_) => panic!("a new version is a rollout"),
    }
    assert_eq!(s.store.load_record("api").unwrap().scaled, None);
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
        Started::Unchanged(_)
    ));
    assert_eq!(s.fake.inner.lock().unwrap().replicas[&v1.id], 2);
    let record = s.store.load_record("api").unwrap();
    assert_eq!(record.scaled, None);
    assert_eq!(record.stable.unwrap().replicas, 2);
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
    assert_eq!(s.store.load_record("api").unwrap().scaled, None);

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

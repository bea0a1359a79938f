//! What the rollout tests share: an in-memory platform that checks the ordering
//! invariants on every call (no traffic to a revision without ready replicas, stable keeps
//! serving until the candidate is ready), a file store in a temporary directory, and
//! revisions and plans to deploy. Each test lives beside the code it tests and starts with
//! `use crate::rollout::test_support::*;`.

pub(crate) use std::collections::BTreeMap;
pub(crate) use std::sync::Mutex;
pub(crate) use std::time::Duration;

pub(crate) use super::*;
pub(crate) use crate::events::{Collect, Event, RolloutWhat};
pub(crate) use crate::manifest::{Metric, StrategyKind};

#[derive(Default)]
pub(crate) struct Fake {
    pub(crate) inner: Mutex<FakeState>,
}

#[derive(Default)]
pub(crate) struct FakeState {
    /// Replicas asked for, per revision id.
    pub(crate) replicas: BTreeMap<String, u32>,
    /// Replicas ready, per revision id (ready replicas stay ready).
    pub(crate) ready: BTreeMap<String, u32>,
    /// Status calls left before newly started replicas are ready.
    pub(crate) pending: BTreeMap<String, u32>,
    /// Status calls new replicas take to become ready.
    pub(crate) ready_after: u32,
    /// Revisions (by image) that crash.
    pub(crate) crashing: Vec<String>,
    pub(crate) weights: Vec<Weights>,
    pub(crate) removed: Vec<String>,
    /// Measurements handed out in order; `NoData` when empty.
    pub(crate) measurements: Vec<Measurement>,
    /// Split traffic by replica ratio (like Kubernetes without a gateway): `set_traffic`
    /// scales each side to its share, and a share needs that many ready replicas.
    pub(crate) ratio: bool,
    /// A simulated HorizontalPodAutoscaler: the revision it scales (it follows the revision
    /// with all the traffic, as on Kubernetes) and the count it chose. The engine must never
    /// change that revision's count while it is the autoscaler's.
    pub(crate) hpa: Option<(String, u32)>,
    /// Every `scale` call: (revision id, replicas).
    pub(crate) scaled: Vec<(String, u32)>,
    /// Every traffic description set, in order (weights-only calls included).
    pub(crate) routing: Vec<Traffic>,
}

/// Replica counts for a split by replica ratio: the platforms' own function.
pub(crate) fn ratio_counts(weights: &Weights, revisions: &[&Revision], max_surge: u32) -> Weights {
    crate::rollout::replicas::ratio_counts(weights, revisions, max_surge)
}

impl Fake {
    pub(crate) fn ready(&self, id: &str) -> u32 {
        self.inner
            .lock()
            .unwrap()
            .ready
            .get(id)
            .copied()
            .unwrap_or(0)
    }
    /// The autoscaler scales its revision to `count` (ready at once).
    pub(crate) fn autoscaler_scales(&self, count: u32) {
        let mut s = self.inner.lock().unwrap();
        let (target, _) = s.hpa.clone().expect("an autoscaler");
        s.replicas.insert(target.clone(), count);
        s.ready.insert(target.clone(), count);
        s.hpa = Some((target, count));
    }
    pub(crate) fn traffic_log(&self) -> Vec<Weights> {
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

pub(crate) fn rev(image: &str, replicas: u32) -> Revision {
    Revision::new(
        image,
        image.rsplit(':').next().unwrap(),
        replicas,
        BTreeMap::new(),
    )
}

pub(crate) fn fast() -> Timing {
    Timing {
        poll: Duration::from_millis(5),
        progress_deadline: Duration::from_secs(5),
        abort_delay: Duration::from_millis(20),
    }
}

pub(crate) fn canary(steps: Vec<PlanStep>) -> Plan {
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

pub(crate) struct Setup {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) store: FileStore,
    pub(crate) fake: Fake,
    pub(crate) events: Collect,
}

impl Setup {
    pub(crate) fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        Setup {
            _dir: dir,
            store,
            fake: Fake::default(),
            events: Collect::default(),
        }
    }
    pub(crate) fn engine(&self) -> Engine<'_, Fake, FileStore> {
        let mut e = Engine::new(&self.fake, &self.store, &self.events);
        e.timing = fast();
        e
    }
    /// Starts `candidate` of `api` with `plan` and drives the rollout until it completes,
    /// pauses, aborts or `timeout` passes.
    pub(crate) async fn roll(
        &self,
        candidate: &Revision,
        plan: Plan,
        timeout: Option<Duration>,
    ) -> (DriveOutcome, RolloutState) {
        let engine = self.engine();
        engine.start("api", candidate.clone(), plan).await.unwrap();
        engine.drive("api", timeout).await.unwrap()
    }
    /// Rolls `revision` out with the built-in rolling strategy; it must complete.
    pub(crate) async fn deploy(&self, revision: &Revision) {
        let plan = Plan::builtin(StrategyKind::Rolling);
        let (outcome, state) = self.roll(revision, plan, None).await;
        assert_eq!(outcome, DriveOutcome::Completed, "{}", state.message);
    }
    /// Deploys `image` as the first, stable revision.
    pub(crate) async fn deploy_stable(&self, image: &str) -> Revision {
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
    pub(crate) fn kinds(&self) -> Vec<RolloutWhat> {
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

pub(crate) fn candidate_weights(log: &[Weights], id: &str) -> Vec<u32> {
    log.iter()
        .map(|w| w.get(id).copied().unwrap_or(0))
        .collect()
}

pub(crate) fn autoscaled(image: &str, min: u32, max: u32) -> Revision {
    rev(image, min).autoscaled(Some(crate::rollout::replicas::Bounds { min, max }))
}

/// Deploys `v1` (autoscaled, by ratio) and lets the autoscaler take it to `live` replicas.
pub(crate) async fn autoscaled_stable(s: &Setup, v1: &Revision, live: u32) {
    {
        let mut f = s.fake.inner.lock().unwrap();
        f.ratio = true;
        f.hpa = Some((String::new(), 0));
    }
    s.deploy(v1).await;
    assert_eq!(s.fake.inner.lock().unwrap().hpa, Some((v1.id.clone(), 2)));
    s.fake.autoscaler_scales(live);
    s.fake.inner.lock().unwrap().scaled.clear();
}

pub(crate) fn beta() -> TrafficMatch {
    TrafficMatch {
        headers: vec![("x-beta".into(), MatchValue::Exact("true".into()))],
        cookies: vec![],
    }
}

pub(crate) fn testers() -> TrafficMatch {
    TrafficMatch {
        headers: vec![],
        cookies: vec![("group".into(), MatchValue::Regex("qa-[0-9]+".into()))],
    }
}

impl Fake {
    pub(crate) fn routing(&self) -> Vec<Traffic> {
        self.inner.lock().unwrap().routing.clone()
    }
}

//! Strategies resolved into plans: the data the engine interprets.
//!
//! A plan comes from the manifest (`strategies:` and `analyses:`), or from a command-line
//! flag (`--canary`, `--blue-green`, `--rolling`) that picks the manifest's strategy of
//! that type when there is one, and a built-in default otherwise.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::platform::{MatchValue, TrafficMatch};
use crate::manifest::{self, Manifest, Metric, StrategyKind};

/// One step of a canary or blue-green plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanStep {
    /// Send this percentage of traffic to the candidate.
    Weight(u32),
    /// Wait this long, or until promoted when `None`.
    Pause(#[serde(with = "opt_duration_ms")] Option<Duration>),
    /// Run the named analysis.
    Analysis(String),
    /// From now on, requests matching this go to the candidate (added to earlier matches).
    Match(TrafficMatch),
    /// From now on, copy this percentage of the other revisions' requests to the candidate.
    Mirror(u32),
}

impl std::fmt::Display for PlanStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanStep::Weight(w) => write!(f, "set weight {w}%"),
            PlanStep::Pause(Some(d)) => write!(f, "pause {}", manifest::Duration(*d)),
            PlanStep::Pause(None) => write!(f, "pause until promoted"),
            PlanStep::Analysis(a) => write!(f, "analysis {a}"),
            PlanStep::Match(m) => write!(f, "match {m}"),
            PlanStep::Mirror(0) => write!(f, "stop mirroring"),
            PlanStep::Mirror(p) => write!(f, "mirror {p}%"),
        }
    }
}

/// A resolved analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisPlan {
    pub name: String,
    pub metric: Metric,
    pub threshold: Option<f64>,
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    pub count: u32,
    pub failure_limit: u32,
    pub url: Option<String>,
    pub expect_status: Option<u16>,
    pub query: Option<String>,
    pub address: Option<String>,
}

/// Everything the engine needs to know about how to roll out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The strategy's name (from the manifest, or the built-in default's).
    pub name: String,
    pub kind: StrategyKind,
    pub steps: Vec<PlanStep>,
    /// Extra replicas allowed during the update: rolling, while replicas are replaced;
    /// canary without a gateway, to approximate a weight by replica ratio (0 by default).
    pub max_surge: u32,
    /// Rolling: replicas that may be unavailable during the update.
    pub max_unavailable: u32,
    /// How long the previous version stays up after the switch (instant undo).
    #[serde(with = "duration_ms")]
    pub scale_down_delay: Duration,
    /// The analyses the steps name.
    pub analyses: BTreeMap<String, AnalysisPlan>,
    /// Sticky sessions while the rollout runs (canary and A/B).
    #[serde(default)]
    pub sticky: bool,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("strategy `{0}` is not defined under `strategies` in dronectl.yaml")]
    UnknownStrategy(String),
    #[error("analysis `{0}` is not defined under `analyses` in dronectl.yaml")]
    UnknownAnalysis(String),
}

impl crate::exit::ExitStatus for PlanError {
    /// A strategy or analysis the manifest does not define is a usage error (2).
    fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Usage
    }
}

/// The default time the previous version stays warm after a switch.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(30);

impl Plan {
    /// The built-in default for a strategy type, used when the manifest defines none.
    pub fn builtin(kind: StrategyKind) -> Plan {
        let steps = match kind {
            StrategyKind::Rolling => vec![],
            StrategyKind::Canary => vec![
                PlanStep::Weight(20),
                PlanStep::Pause(Some(Duration::from_secs(30))),
                PlanStep::Weight(50),
                PlanStep::Pause(Some(Duration::from_secs(30))),
            ],
            StrategyKind::BlueGreen => vec![PlanStep::Weight(100)],
            // Without match steps an A/B test has nobody to show the candidate to: it waits
            // for `rollout promote`.
            StrategyKind::Ab => vec![PlanStep::Pause(None)],
        };
        Plan {
            name: kind.to_string(),
            kind,
            steps,
            max_surge: if kind == StrategyKind::Canary { 0 } else { 1 },
            max_unavailable: 0,
            scale_down_delay: DEFAULT_SCALE_DOWN_DELAY,
            analyses: BTreeMap::new(),
            sticky: false,
        }
    }

    /// The named strategy from the manifest.
    pub fn from_manifest(
        manifest: &Manifest,
        name: &str,
        replicas: u32,
    ) -> Result<Plan, PlanError> {
        let strategy = &manifest
            .strategies
            .get(name)
            .ok_or_else(|| PlanError::UnknownStrategy(name.to_string()))?
            .value;
        let steps: Vec<PlanStep> = strategy
            .steps
            .iter()
            .map(|s| match &s.value {
                manifest::Step::Weight(w) => PlanStep::Weight(*w),
                manifest::Step::Pause(p) => PlanStep::Pause(p.duration.map(|d| d.0)),
                manifest::Step::Analysis(a) => PlanStep::Analysis(a.clone()),
                manifest::Step::Match(m) => PlanStep::Match(traffic_match(m)),
                manifest::Step::Mirror(p) => PlanStep::Mirror(*p),
            })
            .collect();
        let mut analyses = BTreeMap::new();
        for step in &steps {
            if let PlanStep::Analysis(a) = step {
                let def = &manifest
                    .analyses
                    .get(a)
                    .ok_or_else(|| PlanError::UnknownAnalysis(a.clone()))?
                    .value;
                analyses.insert(
                    a.clone(),
                    AnalysisPlan {
                        name: a.clone(),
                        metric: def.metric,
                        threshold: def.threshold,
                        interval: def.interval.0,
                        count: def.count,
                        failure_limit: def.failure_limit,
                        url: def.url.clone(),
                        expect_status: def.expect_status,
                        query: def.query.clone(),
                        address: def.address.clone(),
                    },
                );
            }
        }
        Ok(Plan {
            name: name.to_string(),
            kind: strategy.kind,
            steps,
            max_surge: strategy.max_surge.as_ref().map_or(
                if strategy.kind == StrategyKind::Canary {
                    0
                } else {
                    1
                },
                |v| count_or_percent(&v.0, replicas, true),
            ),
            max_unavailable: strategy
                .max_unavailable
                .as_ref()
                .map_or(0, |v| count_or_percent(&v.0, replicas, false)),
            scale_down_delay: strategy
                .scale_down_delay
                .as_ref()
                .map_or(DEFAULT_SCALE_DOWN_DELAY, |d| d.value.0),
            analyses,
            sticky: strategy.sticky,
        })
    }

    /// The plan for a deploy: `--strategy NAME` picks that strategy of the manifest, else
    /// [`Plan::choose`] decides from the type flag, the service and the environment.
    pub fn select(
        manifest: &Manifest,
        service: &str,
        environment_strategy: Option<&str>,
        name: Option<&str>,
        flag: Option<StrategyKind>,
        replicas: u32,
    ) -> Result<Plan, PlanError> {
        match name {
            Some(name) => Plan::from_manifest(manifest, name, replicas),
            None => Plan::choose(manifest, service, environment_strategy, flag, replicas),
        }
    }

    /// The plan for a deploy: an explicit type flag picks the manifest's strategy of that
    /// type (the one named like the type first), else the built-in; without a flag the
    /// service's, then the environment's strategy, then rolling.
    pub fn choose(
        manifest: &Manifest,
        service: &str,
        environment_strategy: Option<&str>,
        flag: Option<StrategyKind>,
        replicas: u32,
    ) -> Result<Plan, PlanError> {
        if let Some(kind) = flag {
            let by_name = kind.to_string();
            let name = if manifest
                .strategies
                .get(&by_name)
                .is_some_and(|s| s.value.kind == kind)
            {
                Some(by_name)
            } else {
                manifest
                    .strategies
                    .iter()
                    .find(|(_, s)| s.value.kind == kind)
                    .map(|(n, _)| n.clone())
            };
            return match name {
                Some(name) => Plan::from_manifest(manifest, &name, replicas),
                None => Ok(Plan::builtin(kind)),
            };
        }
        let from_service = manifest
            .services
            .get(service)
            .and_then(|s| s.value.strategy.as_ref())
            .map(|s| s.value.clone());
        let from_env = environment_strategy.map(str::to_string);
        match from_service.or(from_env) {
            Some(name) => Plan::from_manifest(manifest, &name, replicas),
            None => Ok(Plan::builtin(StrategyKind::Rolling)),
        }
    }

    /// The step list as the user sees it (`1/5 set weight 20%`).
    pub fn describe_step(&self, index: usize) -> String {
        match self.steps.get(index) {
            Some(step) => format!("{}/{} {step}", index + 1, self.steps.len()),
            None => "final: full promotion".to_string(),
        }
    }
}

/// A manifest `match` step as the platforms take it (header names lowercase).
pub fn traffic_match(m: &manifest::MatchStep) -> TrafficMatch {
    let mut t = traffic_match_as_written(m);
    for (name, _) in &mut t.headers {
        name.make_ascii_lowercase();
    }
    t
}

/// A manifest `match` step with its names as written (for messages that quote them).
pub fn traffic_match_as_written(m: &manifest::MatchStep) -> TrafficMatch {
    let value = |v: &manifest::MatchValue| match v {
        manifest::MatchValue::Exact(e) => MatchValue::Exact(e.0.clone()),
        manifest::MatchValue::Regex(r) => MatchValue::Regex(r.regex.clone()),
    };
    let conditions = |list: &std::collections::BTreeMap<String, manifest::MatchValue>| {
        list.iter().map(|(k, v)| (k.clone(), value(v))).collect()
    };
    TrafficMatch {
        headers: conditions(&m.header),
        cookies: conditions(&m.cookie),
    }
}

/// `2` or `25%` of `replicas` (rounded up for surge, down for unavailability).
fn count_or_percent(value: &str, replicas: u32, round_up: bool) -> u32 {
    match value.strip_suffix('%') {
        Some(p) => {
            let p: u32 = p.parse().unwrap_or(0);
            let scaled = replicas * p;
            if round_up {
                scaled.div_ceil(100)
            } else {
                scaled / 100
            }
        }
        None => value.parse().unwrap_or(0),
    }
}

/// Optional durations persisted as milliseconds.
pub(crate) mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Durations persisted as milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Manifest {
        crate::manifest::parse(std::path::Path::new("dronectl.yaml"), text).unwrap()
    }

    #[test]
    fn choose_follows_flag_service_environment() {
        let m = manifest(
            "app: a
services:
  api: { path: api, strategy: slow }
  web: { path: web }
environments:
  local: { target: docker, strategy: canary }
strategies:
  slow: { type: rolling, max_surge: 25%, max_unavailable: 1 }
  canary:
    type: canary
    steps: [ { weight: 10 }, { analysis: errors }, { pause: {} } ]
analyses:
  errors: { metric: error-rate, threshold: 0.05 }
",
        );
        let p = Plan::choose(&m, "api", Some("canary"), None, 8).unwrap();
        assert_eq!(
            (p.name.as_str(), p.kind, p.max_surge, p.max_unavailable),
            ("slow", StrategyKind::Rolling, 2, 1)
        );
        let p = Plan::choose(&m, "web", Some("canary"), None, 1).unwrap();
        assert_eq!(p.name, "canary");
        assert_eq!(
            p.steps,
            vec![
                PlanStep::Weight(10),
                PlanStep::Analysis("errors".into()),
                PlanStep::Pause(None)
            ]
        );
        assert_eq!(p.analyses["errors"].threshold, Some(0.05));
        let p = Plan::choose(&m, "web", None, None, 1).unwrap();
        assert_eq!(p.kind, StrategyKind::Rolling);
        let p = Plan::choose(&m, "api", None, Some(StrategyKind::Canary), 1).unwrap();
        assert_eq!(p.name, "canary");
        let p = Plan::choose(&m, "api", None, Some(StrategyKind::BlueGreen), 1).unwrap();
        assert_eq!(p, Plan::builtin(StrategyKind::BlueGreen));
    }

    #[test]
    fn plans_round_trip_through_json() {
        let plan = Plan::builtin(StrategyKind::Canary);
        let text = serde_json::to_string(&plan).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&text).unwrap(), plan);
        assert_eq!(plan.describe_step(1), "2/4 pause 30s");
    }
}

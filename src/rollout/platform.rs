//! The interface between the rollout engine and a place services run.
//!
//! The engine decides; a platform acts. Platforms are thin adapters: the local Docker
//! engine (containers + dronectl's router) and Kubernetes (Deployments + Services or
//! HTTPRoutes). Every method is idempotent, because after a crash the engine repeats the
//! step it was in.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::plan::AnalysisPlan;

/// One deployable version of a service: an image plus the settings it runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Short content hash of everything below; names containers and objects.
    pub id: String,
    /// The image reference to run.
    pub image: String,
    /// Human version (the image tag), shown in status and carried by the router.
    pub version: String,
    /// Replicas the revision runs when it has all the traffic.
    pub replicas: u32,
    /// Environment variables (including the dependency URLs).
    pub env: BTreeMap<String, String>,
    /// The versions of the service's secrets (`NAME` → random version id; never a value):
    /// a value set again is a new revision.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    /// Set when an autoscaler owns the replica count (`autoscale:`): `replicas` is then
    /// the count the revision was last seen with, within these bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<super::replicas::Bounds>,
}

impl Revision {
    /// Builds a revision, deriving its id from its content.
    pub fn new(
        image: &str,
        version: &str,
        replicas: u32,
        env: BTreeMap<String, String>,
    ) -> Revision {
        Revision {
            id: content_id(image, &env, &BTreeMap::new()),
            image: image.to_string(),
            version: version.to_string(),
            replicas,
            env,
            secrets: BTreeMap::new(),
            autoscale: None,
        }
    }

    /// The revision with these secret versions (its id changes with them).
    pub fn with_secrets(mut self, secrets: BTreeMap<String, String>) -> Revision {
        self.id = content_id(&self.image, &self.env, &secrets);
        self.secrets = secrets;
        self
    }

    /// The same revision, autoscaled within `bounds` (not part of the id: the bounds live
    /// in the autoscaler, not in the pods). `replicas` starts at `min`.
    pub fn autoscaled(mut self, bounds: Option<super::replicas::Bounds>) -> Revision {
        if let Some(b) = bounds {
            self.replicas = b.clamp(self.replicas.max(b.min));
        }
        self.autoscale = bounds;
        self
    }

    /// `version (id)`, for messages.
    pub fn label(&self) -> String {
        format!("{} ({})", self.version, self.id)
    }
}

/// A revision's id: a short hash of its image, environment and secret versions (without
/// secrets it is what it was before secrets existed, so recorded ids stay valid).
fn content_id(
    image: &str,
    env: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, String>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(image.as_bytes());
    for (k, v) in env {
        hash.update([0]);
        hash.update(k.as_bytes());
        hash.update([0]);
        hash.update(v.as_bytes());
    }
    if !secrets.is_empty() {
        hash.update([1]);
        for (k, v) in secrets {
            hash.update([0]);
            hash.update(k.as_bytes());
            hash.update([0]);
            hash.update(v.as_bytes());
        }
    }
    let digest = hash.finalize();
    digest.iter().take(5).map(|b| format!("{b:02x}")).collect()
}

/// Why a revision cannot become ready: reported at once, not after a deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Short reason: `CrashLoopBackOff`, `ImagePullBackOff`, `NeverReady`, `Exited(1)`, ...
    pub reason: String,
    /// Details for people.
    pub message: String,
    /// The last lines the failing container logged.
    pub logs: Vec<String>,
}

/// A service's autoscaler as the platform reports it (Kubernetes: its
/// HorizontalPodAutoscaler), for `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Autoscaler {
    /// The autoscaler object (`HorizontalPodAutoscaler/delivery`).
    pub name: String,
    /// The workload it scales (`Deployment/delivery-3f2a9c1b7e`).
    pub target: String,
    pub min: u32,
    pub max: u32,
    /// Replicas it last saw running and the count it wants, from its status.
    pub current: u32,
    pub desired: u32,
    /// Its targets, e.g. `cpu 70%`.
    pub metrics: Vec<String>,
}

/// How far a revision has come.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevisionStatus {
    /// Replicas asked for.
    pub desired: u32,
    /// Replicas that exist (running or starting).
    pub current: u32,
    /// Replicas ready to take traffic.
    pub ready: u32,
    /// Set when the revision will not become ready.
    pub failure: Option<Failure>,
}

/// Traffic split for a service: revision id → percentage. Revisions not listed get none.
pub type Weights = BTreeMap<String, u32>;

/// A header or cookie condition of a [`TrafficMatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchValue {
    /// The value is exactly this.
    Exact(String),
    /// The whole value matches this regular expression (`regex` crate syntax).
    Regex(String),
}

/// Requests with all these headers and cookies go to the candidate whatever the weights.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficMatch {
    /// (header name, condition), header names lowercase.
    #[serde(default)]
    pub headers: Vec<(String, MatchValue)>,
    /// (cookie name, condition).
    #[serde(default)]
    pub cookies: Vec<(String, MatchValue)>,
}

/// What the router would refuse in one condition of a [`TrafficMatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadCondition {
    /// Not a valid header (or cookie) name.
    Name,
    /// The exact value cannot be sent as a header (or cookie) value.
    Value,
    /// The regex does not compile: the compiler's message.
    Regex(String),
}

/// A condition of a [`TrafficMatch`] the router would refuse, and why.
#[derive(Debug)]
pub struct RefusedCondition<'a> {
    /// `header` or `cookie`.
    pub kind: &'static str,
    pub name: &'a str,
    pub value: &'a MatchValue,
    pub problem: BadCondition,
}

impl TrafficMatch {
    /// Every condition the router would refuse, in order (a condition can be refused for
    /// its name and for its value).
    pub fn refused_conditions(&self) -> Vec<RefusedCondition<'_>> {
        let mut out = vec![];
        for (kind, list) in [("header", &self.headers), ("cookie", &self.cookies)] {
            for (name, value) in list {
                let name_ok = if kind == "header" {
                    http::HeaderName::from_bytes(name.as_bytes()).is_ok()
                } else {
                    dronectl_router::config::is_cookie_name(name)
                };
                let mut refuse = |problem| {
                    out.push(RefusedCondition {
                        kind,
                        name,
                        value,
                        problem,
                    })
                };
                if !name_ok {
                    refuse(BadCondition::Name);
                }
                match value {
                    MatchValue::Exact(v) => {
                        if http::HeaderValue::from_str(v).is_err()
                            || kind == "cookie" && v.contains(';')
                        {
                            refuse(BadCondition::Value);
                        }
                    }
                    MatchValue::Regex(r) => {
                        if let Err(e) = dronectl_router::config::compile_regex(r) {
                            refuse(BadCondition::Regex(e));
                        }
                    }
                }
            }
        }
        out
    }
}

impl std::fmt::Display for TrafficMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [("header", &self.headers), ("cookie", &self.cookies)]
            .into_iter()
            .flat_map(|(kind, list)| {
                list.iter().map(move |(name, v)| match v {
                    MatchValue::Exact(e) => format!("{kind} {name}={e:?}"),
                    MatchValue::Regex(r) => format!("{kind} {name}~/{r}/"),
                })
            })
            .collect();
        f.write_str(&parts.join(" and "))
    }
}

/// Everything a service's traffic is: the weights, and the controls that send traffic to
/// the candidate beside them (matches, mirroring, sticky sessions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    pub weights: Weights,
    /// The revision id `matches` and `mirror` send to.
    pub candidate: String,
    /// Requests matching any of these go to the candidate.
    pub matches: Vec<TrafficMatch>,
    /// Percentage of the other revisions' requests copied to the candidate (0: none).
    pub mirror: u32,
    /// Sessions stay on the revision that served their first request while it has weight.
    pub sticky: bool,
}

impl Traffic {
    /// Only weights.
    pub fn weights(weights: Weights) -> Traffic {
        Traffic {
            weights,
            ..Traffic::default()
        }
    }

    /// Whether anything beside the weights is asked for.
    pub fn has_controls(&self) -> bool {
        !self.matches.is_empty() || self.mirror > 0 || self.sticky
    }
}

/// A measurement for an analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Measurement {
    /// A value to compare with the threshold.
    Value(f64),
    /// A pass/fail check (HTTP).
    Check { ok: bool, detail: String },
    /// Nothing to measure (no traffic in the interval).
    NoData,
    /// The platform cannot measure this analysis (e.g. router metrics where there is no
    /// router); the rollout pauses like for missing data, with this explanation.
    Inconclusive { detail: String },
}

/// Where a service runs. Implemented by the Docker and Kubernetes back ends.
pub trait Platform: Sync {
    /// Runs `revision` of `service` with `replicas` replicas (0 stops it). Replicas are
    /// removed from traffic and drained before they stop.
    fn scale(
        &self,
        service: &str,
        revision: &Revision,
        replicas: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// The state of a revision's replicas, with a failure as soon as one is certain.
    fn status(
        &self,
        service: &str,
        revision: &Revision,
    ) -> impl Future<Output = anyhow::Result<RevisionStatus>> + Send;

    /// Splits the service's traffic between revisions. Only ready replicas receive any.
    /// `max_surge` is the plan's: how many pods beyond the service's count a split by
    /// replica ratio may add ([`super::replicas`]); platforms that split by weight ignore it.
    fn set_traffic(
        &self,
        service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Sets the service's traffic with its controls (match rules, mirroring, sticky
    /// sessions). A platform that has no such controls keeps the default, which refuses
    /// them (`validate` says so first) and sets the weights otherwise.
    fn set_routing(
        &self,
        service: &str,
        traffic: &Traffic,
        revisions: &[&Revision],
        max_surge: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async move {
            if traffic.has_controls() {
                anyhow::bail!(
                    "`{service}`: this platform cannot route by header or cookie, mirror, or keep sessions sticky"
                );
            }
            self.set_traffic(service, &traffic.weights, revisions, max_surge)
                .await
        }
    }

    /// A snapshot of the counters analyses are computed from (opaque to the engine, which
    /// persists it so a resumed rollout measures from the same point).
    fn snapshot(
        &self,
        service: &str,
        revision: &Revision,
    ) -> impl Future<Output = anyhow::Result<serde_json::Value>> + Send;

    /// Measures `analysis` for `revision` since `baseline`; returns the measurement and the
    /// snapshot to use as the next baseline.
    fn measure(
        &self,
        service: &str,
        revision: &Revision,
        analysis: &AnalysisPlan,
        baseline: &serde_json::Value,
    ) -> impl Future<Output = anyhow::Result<(Measurement, serde_json::Value)>> + Send;

    /// Replicas each revision must have ready before it may take its share of `weights`
    /// (revision id → replicas; revisions not listed need none). The engine scales a
    /// revision up to this and waits until that many replicas are ready before it calls
    /// [`Platform::set_traffic`], for every weight change including 100 %. The default: a
    /// revision with traffic runs all its replicas (the traffic split is done by weight,
    /// not by replica count).
    fn replicas_for(
        &self,
        _service: &str,
        weights: &Weights,
        revisions: &[&Revision],
        _max_surge: u32,
    ) -> Weights {
        revisions
            .iter()
            .filter(|r| weights.get(&r.id).copied().unwrap_or(0) > 0)
            .map(|r| (r.id.clone(), r.replicas))
            .collect()
    }

    /// The split traffic really gets for `weights` (revision id → percentage): the same
    /// weights where the platform splits by weight, the replica ratio where it splits by
    /// pod count (Kubernetes without a gateway), with what that split runs, for messages.
    fn effective_weights(
        &self,
        _service: &str,
        weights: &Weights,
        _revisions: &[&Revision],
        _max_surge: u32,
    ) -> (Weights, Option<String>) {
        (weights.clone(), None)
    }

    /// Whether the platform replaces replicas itself during a rolling update (a Kubernetes
    /// Deployment's own strategy). The engine then calls [`Platform::roll`] instead of
    /// scaling each side, and waits until the candidate's `status` has every replica ready
    /// and no old one left (`ready >= replicas`, `current <= replicas`).
    fn native_rolling(&self) -> bool {
        false
    }

    /// Starts a native rolling update of `service` from `from` to `to` with the plan's
    /// surge and unavailability budget. Idempotent: a roll already under way is left alone.
    fn roll(
        &self,
        _service: &str,
        _from: &Revision,
        _to: &Revision,
        _max_surge: u32,
        _max_unavailable: u32,
    ) -> impl Future<Output = anyhow::Result<()>> + Send {
        async { anyhow::bail!("this platform has no native rolling updates") }
    }

    /// The service's autoscaler, if the platform runs one for it (the default: none; the
    /// local target has no autoscaler and runs an autoscaled service at its `min`).
    fn autoscaler(
        &self,
        _service: &str,
    ) -> impl Future<Output = anyhow::Result<Option<Autoscaler>>> + Send {
        async { Ok(None) }
    }

    /// Removes every trace of a revision (containers, objects), after it was scaled to 0.
    fn remove(
        &self,
        service: &str,
        revision: &Revision,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

//! The `dronectl.yaml` data model.
//!
//! Every struct denies unknown fields, so a typo is an error with its line and column
//! rather than a silently ignored setting. Values that later checks need to point at
//! (names that refer to other entries, routes) are kept `Spanned`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration as StdDuration;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

/// A map from names to spanned entries, in manifest order.
pub type Entries<T> = IndexMap<String, Spanned<T>>;

/// The whole manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The app's name: a DNS-1123 label, used as the prefix of everything dronectl creates.
    pub app: Spanned<String>,
    /// The app's services, by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub services: Entries<Service>,
    /// Infrastructure the services depend on (brokers, databases), by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub infrastructure: Entries<Infrastructure>,
    /// Deployment environments, by name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub environments: Entries<EnvironmentSpec>,
    /// Named rollout strategies.
    #[serde(default, deserialize_with = "null_as_default")]
    pub strategies: Entries<Strategy>,
    /// Named analyses that strategies run.
    #[serde(default, deserialize_with = "null_as_default")]
    pub analyses: Entries<Analysis>,
}

/// One service of the app.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Directory of the service, relative to the manifest.
    pub path: Spanned<String>,
    /// The template the service was generated from (`rust-http`, `rust-worker`).
    #[serde(default)]
    pub template: Option<String>,
    /// The port the service listens on inside its container.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Liveness and readiness probe paths.
    #[serde(default)]
    pub health: Health,
    /// How many replicas run.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Requests and limits.
    #[serde(default)]
    pub resources: Resources,
    /// Environment variables for the service.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: IndexMap<String, ScalarString>,
    /// Public path prefixes the router sends to this service.
    #[serde(default, deserialize_with = "null_as_default")]
    pub routes: Vec<Spanned<String>>,
    /// Host names the public routes answer on (`api.example.com`, `*.example.com`); empty:
    /// any host. The Ingress rule's `host`, the HTTPRoute's `hostnames`, and on the local
    /// target the `Host` headers the router's public port matches.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub hosts: Vec<Spanned<String>>,
    /// Services and infrastructure this service calls; each gets an `<NAME>_URL` variable.
    #[serde(default, deserialize_with = "null_as_default")]
    pub depends_on: Vec<Spanned<String>>,
    /// Mount path of a persistent volume for the service's own data.
    #[serde(default)]
    pub volume: Option<String>,
    /// The default rollout strategy for this service.
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
    /// Secrets the service reads, by name; values are set with `dronectl secret set`, never
    /// written here (see `docs/manifest.md#secrets`).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub secrets: Vec<Spanned<SecretDecl>>,
    /// Scale with load between `min` and `max` replicas (a HorizontalPodAutoscaler on
    /// Kubernetes; fixed at `min` on the local target). `replicas` is then ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
}

/// `autoscale: { min, max, cpu: 70 [, memory: 80] }`: replica bounds and target
/// utilisations in percent of the requests. Neither target given means `cpu: 80`, the
/// HorizontalPodAutoscaler's own default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// The fewest replicas (at least 1).
    pub min: Spanned<u32>,
    /// The most replicas (at least `min`).
    pub max: Spanned<u32>,
    /// Target average CPU utilisation, percent of the CPU request (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Spanned<u32>>,
    /// Target average memory utilisation, percent of the memory request (1–100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Spanned<u32>>,
}

impl Autoscale {
    /// The default CPU target when neither `cpu` nor `memory` is written.
    pub const DEFAULT_CPU: u32 = 80;

    /// `(cpu, memory)` targets in percent, with the default applied.
    pub fn targets(&self) -> (Option<u32>, Option<u32>) {
        let cpu = self.cpu.as_ref().map(|c| c.value);
        let memory = self.memory.as_ref().map(|m| m.value);
        match (cpu, memory) {
            (None, None) => (Some(Self::DEFAULT_CPU), None),
            other => other,
        }
    }
}

/// A secret a service reads: `DB_PASSWORD`, or
/// `{ name: DB_PASSWORD, env: true, from: { secret: shop-db, key: password } }`.
///
/// The value reaches the container as the file `/run/secrets/<name>`; `env: true` also sets
/// the variable `<name>` (visible to anyone who can inspect the container). `from` names an
/// existing Kubernetes Secret and key instead of the one dronectl manages (Kubernetes
/// environments only; locally the value is always the one set with `dronectl secret set`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SecretDecl {
    Name(String),
    Full(SecretSpec),
}

/// The long form of a [`SecretDecl`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    /// Also give the value as the environment variable `name`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env: bool,
    /// An existing Kubernetes Secret holding the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<SecretSource>,
}

/// An existing Kubernetes Secret and the key in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSource {
    pub secret: String,
    pub key: String,
}

impl SecretDecl {
    /// The secret's name: the file under `/run/secrets/` and the key dronectl stores it as.
    pub fn name(&self) -> &str {
        match self {
            SecretDecl::Name(n) => n,
            SecretDecl::Full(s) => &s.name,
        }
    }
    /// Whether the value is also an environment variable.
    pub fn env(&self) -> bool {
        matches!(self, SecretDecl::Full(s) if s.env)
    }
    /// The existing Kubernetes Secret it comes from, if any.
    pub fn from(&self) -> Option<&SecretSource> {
        match self {
            SecretDecl::Full(s) => s.from.as_ref(),
            SecretDecl::Name(_) => None,
        }
    }
}

impl<'de> Deserialize<'de> for SecretDecl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DeclVisitor;
        impl<'de> Visitor<'de> for DeclVisitor {
            type Value = SecretDecl;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a secret name, or a map with `name` and optional `env`, `from`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SecretDecl, E> {
                Ok(SecretDecl::Name(v.to_string()))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<SecretDecl, A::Error> {
                SecretSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(SecretDecl::Full)
            }
        }
        deserializer.deserialize_any(DeclVisitor)
    }
}

/// Probe paths and timings. The timings are named as in a compose `healthcheck`; on
/// Kubernetes they are the probes' `periodSeconds`, `timeoutSeconds`, `failureThreshold` and
/// `initialDelaySeconds`. Unset timings keep the defaults (see [`Health::timings`]).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_liveness")]
    pub liveness: String,
    #[serde(default = "default_readiness")]
    pub readiness: String,
    /// Time between two probes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Spanned<Duration>>,
    /// How long one probe may take before it counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Spanned<Duration>>,
    /// Consecutive failed probes before a replica counts as unready (readiness) or is
    /// restarted (liveness).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Spanned<u32>>,
    /// How long after start the probes wait (a slow-starting service's grace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<Spanned<Duration>>,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            liveness: default_liveness(),
            readiness: default_readiness(),
            interval: None,
            timeout: None,
            retries: None,
            start_period: None,
        }
    }
}

/// A service's probe timings with the defaults filled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTimings {
    /// Readiness probe period (default 5 s).
    pub readiness_interval: StdDuration,
    /// Liveness probe period (default 10 s).
    pub liveness_interval: StdDuration,
    /// Default 2 s.
    pub timeout: StdDuration,
    /// Default 3.
    pub retries: u32,
    /// Default 0.
    pub start_period: StdDuration,
}

impl Health {
    /// The timings in effect: `interval` sets both probes' period (readiness every 5 s and
    /// liveness every 10 s when unset).
    pub fn timings(&self) -> HealthTimings {
        let interval = self.interval.as_ref().map(|d| d.value.0);
        HealthTimings {
            readiness_interval: interval.unwrap_or(StdDuration::from_secs(5)),
            liveness_interval: interval.unwrap_or(StdDuration::from_secs(10)),
            timeout: self
                .timeout
                .as_ref()
                .map_or(StdDuration::from_secs(2), |d| d.value.0),
            retries: self.retries.as_ref().map_or(3, |r| r.value),
            start_period: self
                .start_period
                .as_ref()
                .map_or(StdDuration::ZERO, |d| d.value.0),
        }
    }
}

/// Resource requests and limits, in Kubernetes quantity notation.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    #[serde(default)]
    pub requests: ResourceSpec,
    #[serde(default)]
    pub limits: ResourceSpec,
}

/// CPU (`100m`, `0.5`, `2`) and memory (`64Mi`, `1Gi`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    #[serde(default)]
    pub cpu: Option<ScalarString>,
    #[serde(default)]
    pub memory: Option<ScalarString>,
}

/// An infrastructure component (a broker, a database).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Infrastructure {
    /// The image to run.
    pub image: String,
    /// The port it listens on.
    pub port: u16,
    /// Mount path of its persistent volume.
    #[serde(default)]
    pub volume: Option<String>,
    /// Command line (overrides the image's).
    #[serde(default, deserialize_with = "null_as_default")]
    pub command: Vec<String>,
    /// Environment variables.
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: IndexMap<String, ScalarString>,
    /// URL scheme other services use to reach it (`redis`, `postgres`, `http`); defaults
    /// to the entry's name when that is a well-known scheme, else `tcp`.
    #[serde(default)]
    pub scheme: Option<String>,
}

/// Where an environment deploys to.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The local Docker engine (the default).
    Docker,
    /// A Kubernetes cluster.
    Kubernetes,
}

/// A deployment environment, as written (resolved into [`super::Environment`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentSpec {
    pub target: Target,
    /// Registry images are pushed to, e.g. `127.0.0.1:5000/drone`.
    #[serde(default)]
    pub registry: Option<String>,
    /// Kubernetes: the kubeconfig context this environment pins.
    #[serde(default)]
    pub context: Option<String>,
    /// Kubernetes: the namespace.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Kubernetes: a Gateway API gateway for public routes and weighted canaries.
    #[serde(default)]
    pub gateway: Option<GatewayRef>,
    /// Kubernetes: the Ingress class and TLS of the public routes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<Spanned<IngressSettings>>,
    /// The default rollout strategy in this environment.
    #[serde(default)]
    pub strategy: Option<Spanned<String>>,
    /// Per-service overrides, merged over the base entries (see `overrides.rs`).
    #[serde(default, deserialize_with = "null_as_default", skip_serializing)]
    pub services: Entries<super::ServiceOverride>,
    /// Per-infrastructure overrides, merged over the base entries.
    #[serde(default, deserialize_with = "null_as_default", skip_serializing)]
    pub infrastructure: Entries<super::InfrastructureOverride>,
}

/// A Gateway API gateway.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GatewayRef {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// An environment's public entry on Kubernetes (`environments.<E>.ingress`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IngressSettings {
    /// `spec.ingressClassName` of every Ingress (the cluster's default class when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// HTTPS for every public service's hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

/// Where the certificate comes from: an existing Secret (`secret`), or cert-manager, which
/// fills the Secret when the Ingress carries its issuer annotation (`issuer` for a
/// namespaced Issuer, `cluster_issuer` for a ClusterIssuer).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The `kubernetes.io/tls` Secret (default with an issuer: `<service>-tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `cert-manager.io/issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// `cert-manager.io/cluster-issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_issuer: Option<String>,
}

/// The kinds of rollout.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Replace replicas a few at a time.
    Rolling,
    /// Shift traffic to the new version in weighted steps.
    Canary,
    /// Bring the new version up beside the old one, then switch all traffic at once.
    BlueGreen,
    /// A/B test: `match` steps decide who reaches the new version, weights do not (it has
    /// none until full promotion).
    Ab,
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StrategyKind::Rolling => "rolling",
            StrategyKind::Canary => "canary",
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Ab => "ab",
        })
    }
}

/// A named rollout strategy: data that the rollout engine interprets.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    #[serde(rename = "type")]
    pub kind: StrategyKind,
    /// Canary and blue-green: the steps, in order. A blue-green's weights are 0 or 100 (the
    /// switch); a pause before the switch keeps the new version on preview until promoted.
    #[serde(default, deserialize_with = "null_as_default")]
    pub steps: Vec<Spanned<Step>>,
    /// How many extra replicas may exist during the update (`1` or `25%`). Rolling:
    /// during the replacement (default 1). Canary without a gateway: how many replicas
    /// beyond the service's count the replica-ratio split may add to approximate a weight
    /// (default 0), see `rollout::replicas`.
    #[serde(default)]
    pub max_surge: Option<ScalarString>,
    /// Rolling: how many replicas may be unavailable during the update.
    #[serde(default)]
    pub max_unavailable: Option<ScalarString>,
    /// Blue-green and canary: how long the old version stays warm after the switch.
    #[serde(default)]
    pub scale_down_delay: Option<Spanned<Duration>>,
    /// Canary and A/B: sticky sessions while the rollout runs (the router sets a cookie, so
    /// a user stays on one version; weight changes move only new sessions).
    #[serde(default)]
    pub sticky: bool,
}

/// One step of a canary or blue-green rollout.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Send this percentage of traffic to the new version.
    Weight(u32),
    /// Wait for a duration, or until promoted when no duration is given.
    Pause(Pause),
    /// Run the named analysis; failure aborts and rolls back.
    Analysis(String),
    /// From now on, requests matching these headers and cookies (all of them) go to the
    /// new version whatever the weights. Several `match` steps add alternatives.
    Match(MatchStep),
    /// Copy this percentage of the requests the old version serves to the new one (shadow
    /// traffic: its responses are discarded, its errors and latency measured). `0` stops.
    Mirror(u32),
}

/// A `match` step: header and cookie conditions, each an exact value or `{ regex: ... }`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MatchStep {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub header: BTreeMap<String, MatchValue>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookie: BTreeMap<String, MatchValue>,
}

/// A header or cookie condition: `"true"` (exact) or `{ regex: "beta-.*" }` (the whole value).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum MatchValue {
    Exact(ScalarString),
    Regex(RegexValue),
}

/// `{ regex: ... }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegexValue {
    pub regex: String,
}

/// A pause step.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    #[serde(default)]
    pub duration: Option<Duration>,
}

/// What an analysis measures.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Fraction of requests answered 5xx (or not at all) by the router, per version.
    ErrorRate,
    /// Latency percentiles from the router's per-version histogram, in seconds.
    LatencyP50,
    LatencyP95,
    LatencyP99,
    /// An HTTP GET that must answer the expected status.
    Http,
    /// A Prometheus query whose result must stay under the threshold.
    Prometheus,
}

/// A named analysis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    pub metric: Metric,
    /// Upper bound on the measured value (a fraction for error-rate, seconds for latency).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Time between measurements.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// How many measurements to take.
    #[serde(default = "default_count")]
    pub count: u32,
    /// How many failed measurements fail the analysis.
    #[serde(default = "default_failure_limit")]
    pub failure_limit: u32,
    /// `http`: the URL to check.
    #[serde(default)]
    pub url: Option<String>,
    /// `http`: the status that counts as success (default 200).
    #[serde(default)]
    pub expect_status: Option<u16>,
    /// `prometheus`: the query (PromQL). `{{service}}` and `{{version}}` are substituted.
    #[serde(default)]
    pub query: Option<String>,
    /// `prometheus`: the server's address.
    #[serde(default)]
    pub address: Option<String>,
}

/// A duration written as `500ms`, `30s`, `5m`, `1h` or a combination such as `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(into = "String")]
pub struct Duration(pub StdDuration);

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        d.to_string()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, rest) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rest) = (rest / 60_000, rest % 60_000);
        let (s, ms) = (rest / 1000, rest % 1000);
        for (value, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if value > 0 {
                write!(f, "{value}{unit}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("invalid duration `{text}`: write e.g. `500ms`, `30s`, `5m`, `1h30m`");
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total = StdDuration::ZERO;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad());
            }
            let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ms" => StdDuration::from_millis(value),
                "s" => StdDuration::from_secs(value),
                "m" => StdDuration::from_secs(value * 60),
                "h" => StdDuration::from_secs(value * 3600),
                _ => return Err(bad()),
            };
            total += unit;
            rest = &rest[unit_len..];
        }
        Ok(Duration(total))
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = ScalarString::deserialize(deserializer)?;
        // A bare number is taken as seconds, as in `interval: 10`.
        if let Ok(secs) = text.0.parse::<u64>() {
            return Ok(Duration(StdDuration::from_secs(secs)));
        }
        text.0.parse().map_err(de::Error::custom)
    }
}

/// A scalar (string, number or boolean) kept as its text, as environment variables and
/// Kubernetes quantities are: `PORT: 8080` and `PORT: "8080"` mean the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ScalarString(pub String);

impl fmt::Display for ScalarString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ScalarString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl Visitor<'_> for ScalarVisitor {
            type Value = ScalarString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarString, E> {
                Ok(ScalarString(v.to_string()))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// Lets a key be present with no value (`services:` followed only by comments).
pub(super) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn default_port() -> u16 {
    8080
}
fn default_replicas() -> u32 {
    1
}
fn default_liveness() -> String {
    "/healthz".to_string()
}
fn default_readiness() -> String {
    "/readyz".to_string()
}
fn default_interval() -> Duration {
    Duration(StdDuration::from_secs(10))
}
fn default_count() -> u32 {
    3
}
fn default_failure_limit() -> u32 {
    1
}

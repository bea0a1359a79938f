//! The compiled routing table: everything a request needs, precomputed when a config is
//! applied, so the request path only does hash/prefix lookups and atomic increments.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use http::uri::Authority;
use http::HeaderValue;

use crate::config::{normalize_route, RouterConfig};
use crate::metrics::{EndpointState, Metrics, VersionMetrics};

/// FNV-1a, for the maps the request path looks names up in. They are built from the
/// config only and never grow from a request, so a request cannot fill a bucket (the
/// reason for std's SipHash), and a short name hashes in a few instructions.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv;

pub(crate) struct FnvHasher(u64);

impl std::hash::BuildHasher for Fnv {
    type Hasher = FnvHasher;
    fn build_hasher(&self) -> FnvHasher {
        FnvHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) struct Table {
    pub(crate) config: Arc<RouterConfig>,
    services: HashMap<String, Arc<ServiceEntry>, Fnv>,
    /// Routes of services that name hosts: (prefix, hosts, service), longest prefix first.
    host_routes: Vec<(String, Hosts, Arc<ServiceEntry>)>,
    /// Routes for any host: (prefix, service), longest prefix first.
    routes: Vec<(String, Arc<ServiceEntry>)>,
    endpoints: HashSet<String>,
}

pub(crate) struct ServiceEntry {
    pub(crate) name: String,
    pub(crate) versions: Vec<VersionEntry>,
    /// Smooth-weighted-round-robin order of version indices over one cycle of the effective
    /// weights (weight > 0 and at least one endpoint). Empty: nothing routable.
    schedule: Vec<u8>,
    cursor: AtomicU64,
    pub(crate) preview: Option<usize>,
    pub(crate) unroutable: Arc<AtomicU64>,
    /// Match rules, mirroring, sticky sessions (`None` without any: see `select.rs`).
    pub(crate) controls: Option<Box<crate::select::Controls>>,
}

pub(crate) struct VersionEntry {
    pub(crate) name: String,
    pub(crate) header: HeaderValue,
    /// Effective weight: the configured one, or 0 without endpoints.
    pub(crate) weight: u8,
    pub(crate) endpoints: Vec<Endpoint>,
    cursor: AtomicUsize,
    pub(crate) metrics: Arc<VersionMetrics>,
}

pub(crate) struct Endpoint {
    pub(crate) addr: String,
    pub(crate) authority: Authority,
    pub(crate) state: Arc<EndpointState>,
}

/// A route's host names, lowercase: exact names and `*.suffix` wildcards (kept as `.suffix`).
#[derive(Default)]
pub(crate) struct Hosts {
    exact: HashSet<String, Fnv>,
    suffixes: Vec<String>,
}

impl Hosts {
    fn new(names: &[String]) -> Hosts {
        let mut hosts = Hosts::default();
        for n in names {
            let n = n.to_ascii_lowercase();
            match n.strip_prefix('*') {
                Some(suffix) => hosts.suffixes.push(suffix.to_string()),
                None => {
                    hosts.exact.insert(n);
                }
            }
        }
        hosts
    }

    /// `host` is lowercase without a port. A wildcard needs at least one label before its
    /// suffix (`*.example.com` matches `a.example.com`, not `example.com`).
    fn matches(&self, host: &str) -> bool {
        self.exact.contains(host)
            || self
                .suffixes
                .iter()
                .any(|s| host.len() > s.len() && host.ends_with(s.as_str()))
    }
}

/// Where a request may be sent: a version index and an endpoint index within it.
pub(crate) type Target = (usize, usize);

impl Table {
    /// Compiles a validated config.
    pub(crate) fn compile(cfg: RouterConfig, metrics: &Metrics) -> Table {
        let mut services = HashMap::with_hasher(Fnv);
        let mut routes = Vec::new();
        let mut host_routes = Vec::new();
        let mut endpoints = HashSet::new();
        for (name, svc) in &cfg.services {
            let mut versions = Vec::with_capacity(svc.versions.len());
            for (vname, v) in &svc.versions {
                let eps: Vec<Endpoint> = v
                    .endpoints
                    .iter()
                    .filter_map(|addr| {
                        let authority = addr.parse::<Authority>().ok()?;
                        endpoints.insert(addr.clone());
                        Some(Endpoint {
                            addr: addr.clone(),
                            authority,
                            state: metrics.endpoint(addr),
                        })
                    })
                    .collect();
                versions.push(VersionEntry {
                    name: vname.clone(),
                    header: HeaderValue::from_str(vname)
                        .unwrap_or_else(|_| HeaderValue::from_static("invalid")),
                    weight: if eps.is_empty() { 0 } else { v.weight },
                    endpoints: eps,
                    cursor: AtomicUsize::new(fastrand::usize(..1024)),
                    metrics: metrics.version(name, vname),
                });
            }
            let weights: Vec<u32> = versions.iter().map(|v| u32::from(v.weight)).collect();
            let controls = crate::select::compile(name, svc, &versions);
            let entry = Arc::new(ServiceEntry {
                controls,
                name: name.clone(),
                schedule: smooth_wrr_schedule(&weights),
                cursor: AtomicU64::new(0),
                preview: svc
                    .preview
                    .as_ref()
                    .and_then(|p| versions.iter().position(|v| &v.name == p)),
                versions,
                unroutable: metrics.unroutable(name),
            });
            for r in &svc.routes {
                let prefix = normalize_route(r).to_string();
                if svc.hosts.is_empty() {
                    routes.push((prefix, entry.clone()));
                } else {
                    host_routes.push((prefix, Hosts::new(&svc.hosts), entry.clone()));
                }
            }
            services.insert(name.clone(), entry);
        }
        routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        host_routes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Table {
            config: Arc::new(cfg),
            services,
            host_routes,
            routes,
            endpoints,
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.config.generation
    }

    pub(crate) fn has_endpoint(&self, addr: &str) -> bool {
        self.endpoints.contains(addr)
    }

    /// A service by exact host name (port already stripped, lowercase).
    pub(crate) fn by_host(&self, host: &str) -> Option<&Arc<ServiceEntry>> {
        self.services.get(host)
    }

    /// Longest configured prefix that matches `path` on a segment boundary: first among
    /// the routes whose hosts include `host` (lowercase, port stripped; `None` without a
    /// `Host`), then among the routes for any host.
    pub(crate) fn by_path(&self, host: Option<&str>, path: &str) -> Option<&Arc<ServiceEntry>> {
        if let Some(host) = host.filter(|_| !self.host_routes.is_empty()) {
            let hit = self
                .host_routes
                .iter()
                .find(|(prefix, hosts, _)| hosts.matches(host) && prefix_matches(prefix, path));
            if let Some((_, _, s)) = hit {
                return Some(s);
            }
        }
        self.routes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, s)| s)
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// nginx's smooth weighted round robin, unrolled over one cycle (sum of weights, <= 100 here).
fn smooth_wrr_schedule(weights: &[u32]) -> Vec<u8> {
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best as u8);
    }
    out
}

impl ServiceEntry {
    /// The version for a new request by weight, `None` if nothing is routable.
    pub(crate) fn pick_weighted(&self) -> Option<usize> {
        if self.schedule.is_empty() {
            return None;
        }
        let n = self.cursor.fetch_add(1, Relaxed);
        Some(self.schedule[(n % self.schedule.len() as u64) as usize] as usize)
    }

    pub(crate) fn version_by_name(&self, name: &[u8]) -> Option<usize> {
        self.versions.iter().position(|v| v.name.as_bytes() == name)
    }

    /// The first endpoint to try for a version (round robin), `None` without endpoints.
    pub(crate) fn first_target(&self, version: usize) -> Option<Target> {
        let v = &self.versions[version];
        if v.endpoints.is_empty() {
            return None;
        }
        // One endpoint: no round robin, and no write to a cursor the workers share.
        let i = match v.endpoints.len() {
            1 => 0,
            n => v.cursor.fetch_add(1, Relaxed) % n,
        };
        Some((version, i))
    }

    /// Where to retry after the attempts in `tried` failed to connect: another endpoint of
    /// the same version first, then (if `other_versions`) endpoints of versions that have
    /// effective weight, heaviest first.
    pub(crate) fn next_target(
        &self,
        first: Target,
        tried: &[Target],
        other_versions: bool,
    ) -> Option<Target> {
        let (v, start) = first;
        let n = self.versions[v].endpoints.len();
        for k in 1..n {
            let t = (v, (start + k) % n);
            if !tried.contains(&t) {
                return Some(t);
            }
        }
        if !other_versions {
            return None;
        }
        let mut others: Vec<usize> = (0..self.versions.len())
            .filter(|&i| i != v && self.versions[i].weight > 0)
            .collect();
        others.sort_by(|a, b| self.versions[*b].weight.cmp(&self.versions[*a].weight));
        for o in others {
            let ov = &self.versions[o];
            let base = ov.cursor.fetch_add(1, Relaxed);
            for k in 0..ov.endpoints.len() {
                let t = (o, (base + k) % ov.endpoints.len());
                if !tried.contains(&t) {
                    return Some(t);
                }
            }
        }
        None
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.versions.iter().map(|v| v.endpoints.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(json: &str) -> Table {
        Table::compile(
            RouterConfig::from_json(json.as_bytes()).unwrap(),
            &Metrics::default(),
        )
    }

    #[test]
    fn schedule_is_exact_and_interleaved() {
        let s = smooth_wrr_schedule(&[90, 10]);
        assert_eq!(s.len(), 100);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 10);
        // Never two picks of the light version in a row.
        assert!(s.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)));
        let s = smooth_wrr_schedule(&[50, 0, 50]);
        assert_eq!(s.iter().filter(|&&i| i == 1).count(), 0);
        assert!(smooth_wrr_schedule(&[0, 0]).is_empty());
    }

    #[test]
    fn zero_endpoint_version_is_never_picked() {
        let t = table(
            r#"{"services":{"a":{"versions":{"v1":{"weight":30,"endpoints":["127.0.0.1:1"]},"v2":{"weight":70}}}}}"#,
        );
        let s = t.by_host("a").unwrap();
        for _ in 0..200 {
            assert_eq!(s.versions[s.pick_weighted().unwrap()].name, "v1");
        }
        let t = table(r#"{"services":{"a":{"versions":{"v2":{"weight":100}}}}}"#);
        assert_eq!(t.by_host("a").unwrap().pick_weighted(), None);
    }

    #[test]
    fn longest_prefix_on_segment_boundary() {
        let t = table(
            r#"{"services":{
            "root":{"routes":["/"]},
            "orders":{"routes":["/api/orders"]},
            "items":{"routes":["/api/orders/items/"]}}}"#,
        );
        let name = |p: &str| t.by_path(None, p).map(|s| s.name.clone());
        assert_eq!(name("/api/orders").as_deref(), Some("orders"));
        assert_eq!(name("/api/orders/1").as_deref(), Some("orders"));
        assert_eq!(name("/api/orders/items").as_deref(), Some("items"));
        assert_eq!(name("/api/orders/items/9").as_deref(), Some("items"));
        assert_eq!(name("/api/ordersx").as_deref(), Some("root"));
        let t = table(r#"{"services":{"orders":{"routes":["/api/orders"]}}}"#);
        assert!(t.by_path(None, "/api/ordersx").is_none());
        assert!(t.by_path(None, "/").is_none());
    }

    #[test]
    fn routes_with_hosts_match_only_their_hosts_and_win_over_any_host() {
        let t = table(
            r#"{"services":{
            "shop":{"routes":["/api"],"hosts":["Shop.Example.com"]},
            "admin":{"routes":["/api/admin"],"hosts":["*.admin.example.com"]},
            "any":{"routes":["/api"]},
            "only":{"routes":["/only"],"hosts":["only.example"]}}}"#,
        );
        let name = |h: Option<&str>, p: &str| t.by_path(h, p).map(|s| s.name.clone());
        assert_eq!(
            name(Some("shop.example.com"), "/api/x").as_deref(),
            Some("shop")
        );
        assert_eq!(
            name(Some("other.example"), "/api/x").as_deref(),
            Some("any")
        );
        assert_eq!(name(None, "/api").as_deref(), Some("any"));
        assert_eq!(
            name(Some("eu.admin.example.com"), "/api/admin").as_deref(),
            Some("admin")
        );
        // A wildcard needs a label before its suffix; then the any-host route answers.
        assert_eq!(
            name(Some("admin.example.com"), "/api/admin").as_deref(),
            Some("any")
        );
        assert_eq!(name(Some("only.example"), "/only").as_deref(), Some("only"));
        assert_eq!(name(Some("only.example.evil"), "/only"), None);
        assert_eq!(name(None, "/only"), None);
    }

    #[test]
    fn retry_targets_same_version_then_others() {
        let t = table(
            r#"{"services":{"a":{"versions":{
            "v1":{"weight":80,"endpoints":["127.0.0.1:1","127.0.0.1:2"]},
            "v2":{"weight":20,"endpoints":["127.0.0.1:3"]},
            "v3":{"weight":0,"endpoints":["127.0.0.1:4"]}}}}}"#,
        );
        let s = t.by_host("a").unwrap();
        let first = (0, 0);
        let mut tried = vec![first];
        let t2 = s.next_target(first, &tried, true).unwrap();
        assert_eq!(t2, (0, 1));
        tried.push(t2);
        let t3 = s.next_target(first, &tried, true).unwrap();
        assert_eq!(t3, (1, 0));
        tried.push(t3);
        assert_eq!(s.next_target(first, &tried, true), None);
        assert_eq!(s.next_target(first, &tried[..2], false), None);
        assert_eq!(s.endpoint_count(), 4);
    }
}

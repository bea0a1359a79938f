//! Simulated controllers: Deployment (rolling update / recreate, revisions, conditions),
//! ReplicaSet (pods), StatefulSet (ordinal pods, OrderedReady, rolling replacement from the
//! highest ordinal, revisions) and a kubelet (pod status by image behaviour, events, logs,
//! graceful termination). Tick-based, all under the store lock.

use crate::store::{owned_by, State, WriteOpts};
use crate::types::ResourceType;
use crate::util::{
    self, dotted, i64_at, int_or_percent, name_of, ns_of, stable_hash, str_at, uid_of,
};
use crate::{Behavior, Shared};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug)]
pub(crate) struct Sim {
    pub tick_no: u64,
    /// Ticks a pod stays `Terminating` (deletionTimestamp set) before it disappears.
    pub termination_ticks: u64,
    pods: HashMap<String, PodSim>,
    deploys: HashMap<String, DeploySim>,
    /// (namespace, involved uid, reason, message) → (event name, tick of last emission)
    events: HashMap<(String, String, String, String), (String, u64)>,
    /// What the metrics would make each HorizontalPodAutoscaler ("ns/name") want, set by a
    /// test ([`crate::FakeCluster::set_autoscaler_recommendation`]); no metrics are invented.
    pub hpa_recommendations: HashMap<String, i64>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim {
            tick_no: 0,
            termination_ticks: 5,
            pods: HashMap::new(),
            deploys: HashMap::new(),
            events: HashMap::new(),
            hpa_recommendations: HashMap::new(),
        }
    }
}

#[derive(Debug)]
struct PodSim {
    created_tick: u64,
    /// The tick a graceful deletion began.
    terminating_since: Option<u64>,
    ip: String,
    start_time: String,
    /// container name → (restart count it started with, startedAt, finishedAt of last run)
    runs: HashMap<String, (i64, String, String)>,
}

#[derive(Debug)]
struct DeploySim {
    last_progress: Instant,
    new_rs_created: bool,
}

impl Sim {
    pub(crate) fn forget(&mut self, uid: &str) {
        self.pods.remove(uid);
        self.deploys.remove(uid);
    }

    pub(crate) fn container_logs(
        &self,
        knobs: &crate::store::Knobs,
        _uid: &str,
        pod: &Value,
        container: &str,
        image: &str,
    ) -> Vec<String> {
        if let Behavior::CrashLoop { logs, .. } = behavior_for(knobs, image) {
            return logs;
        }
        if let Some((_, lines)) = knobs
            .logs
            .iter()
            .filter(|(s, _)| image.contains(s.as_str()))
            .max_by_key(|(s, _)| s.len())
        {
            return lines.clone();
        }
        vec![
            format!(
                "kube-fake: container {container} (image {image}) of pod {} started",
                name_of(pod)
            ),
            "kube-fake: listening".to_string(),
        ]
    }
}

pub(crate) fn behavior_for(knobs: &crate::store::Knobs, image: &str) -> Behavior {
    knobs
        .behaviors
        .iter()
        .filter(|(s, _)| image.contains(s.as_str()))
        .max_by_key(|(s, _)| s.len())
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| knobs.default_behavior.clone())
}

pub(crate) async fn run(shared: Arc<Shared>) {
    loop {
        let tick = shared.lock().knobs.tick;
        tokio::time::sleep(tick).await;
        let mut st = shared.lock();
        if st.knobs.controller_paused {
            continue;
        }
        tick_once(&mut st);
    }
}

fn ty(st: &State, group: &str, plural: &str) -> ResourceType {
    st.type_by_plural(group, plural).expect("built-in type")
}

pub(crate) fn tick_once(st: &mut State) {
    st.sim.tick_no += 1;
    garbage_collector(st);
    deployments(st);
    replicasets(st);
    kubelet(st);
    replicaset_status(st);
    deployment_status(st);
    statefulsets(st);
    autoscalers(st);
}

// ---------------------------------------------------------------------------
// HorizontalPodAutoscalers

/// The HPA controller's decisions that need no metrics, as in `reconcileAutoscaler`: a
/// target scaled to 0 disables autoscaling; above `maxReplicas` → max, below `minReplicas`
/// → min; otherwise the recommendation a test set (what metrics would say), clamped to the
/// bounds, or no change. The target's `spec.replicas` is written through the `scale`
/// subresource as `kube-controller-manager` (an Update, so managedFields give it
/// `.spec.replicas`), and the HPA's status says what it did.
fn autoscalers(st: &mut State) {
    let ht = ty(st, "autoscaling", "horizontalpodautoscalers");
    let dt = ty(st, "apps", "deployments");
    for hpa in st.list(&ht, None) {
        let ns = ns_of(&hpa).to_string();
        let name = name_of(&hpa).to_string();
        if str_at(&hpa, "spec.scaleTargetRef.kind") != Some("Deployment") {
            continue;
        }
        let target = str_at(&hpa, "spec.scaleTargetRef.name")
            .unwrap_or("")
            .to_string();
        let min = i64_at(&hpa, "spec.minReplicas").unwrap_or(1);
        let max = i64_at(&hpa, "spec.maxReplicas").unwrap_or(min);
        let Some(d) = st.get(&dt, &ns, &target).cloned() else {
            continue;
        };
        let current = spec_replicas(&d);
        if current == 0 {
            continue;
        }
        let wanted = st
            .sim
            .hpa_recommendations
            .get(&format!("{ns}/{name}"))
            .copied()
            .unwrap_or(current);
        let desired = wanted.clamp(min, max.max(min));
        if desired != current {
            let mut new = d.clone();
            util::obj_mut(&mut new, "spec").insert("replicas".into(), json!(desired));
            let opts = WriteOpts {
                manager: Some("kube-controller-manager".into()),
                dry_run: false,
                preset_managed: false,
            };
            let _ = st.update(&dt, &d, new, "scale", &opts, false);
        }
        let mut cur = hpa.clone();
        let status = util::obj_mut(&mut cur, "status");
        status.insert("currentReplicas".into(), json!(current));
        status.insert("desiredReplicas".into(), json!(desired));
        if desired != current {
            status.insert("lastScaleTime".into(), json!(util::now_rfc3339()));
        }
        st.write_internal(&ht, cur);
    }
}

// ---------------------------------------------------------------------------
// Events

#[allow(clippy::too_many_arguments)]
fn event(
    st: &mut State,
    involved: &Value,
    field_path: Option<&str>,
    etype: &str,
    reason: &str,
    message: &str,
    component: &str,
    repeat_every: u64,
) {
    let ns = ns_of(involved).to_string();
    let uid = uid_of(involved).to_string();
    let key = (
        ns.clone(),
        uid.clone(),
        reason.to_string(),
        message.to_string(),
    );
    let now = util::now_rfc3339();
    let et = ty(st, "", "events");
    if let Some((name, last)) = st.sim.events.get(&key).cloned() {
        if st.sim.tick_no.saturating_sub(last) < repeat_every {
            return;
        }
        if let Some(mut ev) = st.get(&et, &ns, &name).cloned() {
            let count = i64_at(&ev, "count").unwrap_or(1) + 1;
            ev["count"] = json!(count);
            ev["lastTimestamp"] = json!(now);
            st.write_internal(&et, ev);
            let tick = st.sim.tick_no;
            st.sim.events.insert(key, (name, tick));
            return;
        }
    }
    let name = format!("{}.{}", name_of(involved), st.rng.hex(16));
    let mut involved_ref = json!({
        "apiVersion": involved.get("apiVersion"),
        "kind": involved.get("kind"),
        "name": name_of(involved),
        "namespace": ns,
        "uid": uid,
        "resourceVersion": str_at(involved, "metadata.resourceVersion"),
    });
    if let Some(fp) = field_path {
        involved_ref["fieldPath"] = json!(fp);
    }
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved_ref,
        "reason": reason,
        "message": message,
        "type": etype,
        "source": {"component": component, "host": if component == "kubelet" { Some("kube-fake-node") } else { None }},
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "reportingComponent": component,
        "reportingInstance": if component == "kubelet" { "kube-fake-node" } else { "" },
    });
    let opts = WriteOpts::default();
    if st.create(&et, &ns, ev, &opts).is_ok() {
        let tick = st.sim.tick_no;
        st.sim.events.insert(key, (name, tick));
    }
}

// ---------------------------------------------------------------------------
// Deployments

fn revision(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(v: &Value) -> i64 {
    i64_at(v, "spec.replicas").unwrap_or(1)
}

fn status_i(v: &Value, f: &str) -> i64 {
    v.get("status")
        .and_then(|s| s.get(f))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

fn owned_list(st: &State, rt: &ResourceType, ns: &str, uid: &str) -> Vec<Value> {
    let mut v: Vec<Value> = st
        .list(rt, Some(ns))
        .into_iter()
        .filter(|o| owned_by(o, uid))
        .collect();
    v.sort_by_key(|o| {
        str_at(o, "metadata.resourceVersion")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    });
    v
}

fn surge_unavailable(d: &Value, replicas: i64) -> (i64, i64) {
    let ru = d.pointer("/spec/strategy/rollingUpdate");
    let surge = int_or_percent(ru.and_then(|r| r.get("maxSurge")), replicas, 25, true);
    let mut unavail = int_or_percent(
        ru.and_then(|r| r.get("maxUnavailable")),
        replicas,
        25,
        false,
    );
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail)
}

fn template_hash(d: &Value) -> String {
    stable_hash(&dotted(d, "spec.template").cloned().unwrap_or(json!({})))
}

fn rs_hash(rs: &Value) -> &str {
    rs.pointer("/metadata/labels")
        .and_then(|l| l.get(HASH_LABEL))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn scale_rs(st: &mut State, d: &Value, rs: &Value, to: i64) {
    let from = spec_replicas(rs);
    if from == to {
        return;
    }
    let rst = ty(st, "apps", "replicasets");
    let Some(mut cur) = st.get(&rst, ns_of(rs), name_of(rs)).cloned() else {
        return;
    };
    util::obj_mut(&mut cur, "spec").insert("replicas".into(), json!(to));
    util::obj_mut(&mut cur, "metadata.annotations").insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(spec_replicas(d).to_string()),
    );
    st.write_internal(&rst, cur);
    let dir = if to > from { "up" } else { "down" };
    let msg = format!(
        "Scaled {dir} replica set {} to {to} from {from}",
        name_of(rs)
    );
    event(
        st,
        d,
        None,
        "Normal",
        "ScalingReplicaSet",
        &msg,
        "deployment-controller",
        0,
    );
}

fn deployments(st: &mut State) {
    let dt = ty(st, "apps", "deployments");
    let rst = ty(st, "apps", "replicasets");
    for d in st.list(&dt, None) {
        // Like the real controllers: nothing is created for an object being deleted.
        if d.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let uid = uid_of(&d).to_string();
        let ns = ns_of(&d).to_string();
        let name = name_of(&d).to_string();
        let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let replicas = spec_replicas(&d);
        let hash = template_hash(&d);
        st.sim
            .deploys
            .entry(uid.clone())
            .or_insert_with(|| DeploySim {
                last_progress: Instant::now(),
                new_rs_created: false,
            });
        let rss = owned_list(st, &rst, &ns, &uid);
        let max_rev = rss.iter().map(revision).max().unwrap_or(0);
        let new_rs = rss.iter().find(|r| rs_hash(r) == hash).cloned();
        let new_rs = match new_rs {
            None if paused => continue,
            None => {
                let (surge, _) = surge_unavailable(&d, replicas);
                let mut template = dotted(&d, "spec.template").cloned().unwrap_or(json!({}));
                util::obj_mut(&mut template, "metadata.labels")
                    .insert(HASH_LABEL.into(), json!(hash));
                let mut selector = dotted(&d, "spec.selector").cloned().unwrap_or(json!({}));
                util::obj_mut(&mut selector, "matchLabels").insert(HASH_LABEL.into(), json!(hash));
                let labels = dotted(&template, "metadata.labels")
                    .cloned()
                    .unwrap_or(json!({}));
                let rs = json!({
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "metadata": {
                        "name": format!("{name}-{hash}"),
                        "namespace": ns,
                        "labels": labels,
                        "annotations": {
                            REVISION: (max_rev + 1).to_string(),
                            "deployment.kubernetes.io/desired-replicas": replicas.to_string(),
                            "deployment.kubernetes.io/max-replicas": (replicas + surge).to_string(),
                        },
                        "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
                            "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "spec": {
                        "replicas": 0,
                        "minReadySeconds": i64_at(&d, "spec.minReadySeconds").unwrap_or(0),
                        "selector": selector,
                        "template": template,
                    },
                });
                let Some(created) = st.create_internal(&rst, rs) else {
                    continue;
                };
                if let Some(ds) = st.sim.deploys.get_mut(&uid) {
                    ds.last_progress = Instant::now();
                    ds.new_rs_created = true;
                }
                created
            }
            Some(rs) if revision(&rs) < max_rev => {
                // Rolled back to an older template: it becomes the newest revision again.
                let mut cur = rs.clone();
                util::obj_mut(&mut cur, "metadata.annotations")
                    .insert(REVISION.into(), json!((max_rev + 1).to_string()));
                if let Some(ds) = st.sim.deploys.get_mut(&uid) {
                    ds.last_progress = Instant::now();
                }
                st.write_internal(&rst, cur.clone()).unwrap_or(cur)
            }
            Some(rs) => rs,
        };
        // Deployment revision annotation follows the new ReplicaSet.
        let rev = revision(&new_rs).to_string();
        if d.pointer("/metadata/annotations")
            .and_then(|a| a.get(REVISION))
            .and_then(Value::as_str)
            != Some(rev.as_str())
        {
            if let Some(mut cur) = st.get(&dt, &ns, &name).cloned() {
                util::obj_mut(&mut cur, "metadata.annotations").insert(REVISION.into(), json!(rev));
                st.write_internal(&dt, cur);
            }
        }
        if paused {
            continue;
        }
        let rss = owned_list(st, &rst, &ns, &uid);
        let Some(new_rs) = rss.iter().find(|r| uid_of(r) == uid_of(&new_rs)).cloned() else {
            continue;
        };
        let mut olds: Vec<Value> = rss
            .iter()
            .filter(|r| uid_of(r) != uid_of(&new_rs))
            .cloned()
            .collect();
        olds.sort_by_key(revision);
        let recreate = str_at(&d, "spec.strategy.type") == Some("Recreate");
        if recreate {
            let active: Vec<&Value> = olds.iter().filter(|o| spec_replicas(o) > 0).collect();
            if !active.is_empty() {
                for o in active {
                    scale_rs(st, &d, o, 0);
                }
            } else if olds.iter().all(|o| status_i(o, "replicas") == 0) {
                scale_rs(st, &d, &new_rs, replicas);
            }
        } else {
            let (surge, unavail) = surge_unavailable(&d, replicas);
            let total: i64 = rss.iter().map(spec_replicas).sum();
            let new_spec = spec_replicas(&new_rs);
            if new_spec < replicas {
                let max_total = replicas + surge;
                if total < max_total {
                    let up = (max_total - total).min(replicas - new_spec);
                    scale_rs(st, &d, &new_rs, new_spec + up);
                }
            } else if new_spec > replicas {
                scale_rs(st, &d, &new_rs, replicas);
            }
            // Scale down old replica sets within the availability budget.
            let rss = owned_list(st, &rst, &ns, &uid);
            let new_rs = rss
                .iter()
                .find(|r| uid_of(r) == uid_of(&new_rs))
                .cloned()
                .unwrap_or(new_rs);
            let mut olds: Vec<Value> = rss
                .iter()
                .filter(|r| uid_of(r) != uid_of(&new_rs))
                .cloned()
                .collect();
            olds.sort_by_key(revision);
            let all_pods: i64 = rss.iter().map(spec_replicas).sum();
            let min_available = replicas - unavail;
            let new_unavailable =
                (spec_replicas(&new_rs) - status_i(&new_rs, "availableReplicas")).max(0);
            let max_scaled_down = all_pods - min_available - new_unavailable;
            if max_scaled_down > 0 {
                let mut budget = max_scaled_down;
                // First remove old pods that are not available anyway.
                for o in olds.iter_mut() {
                    let unhealthy = (spec_replicas(o) - status_i(o, "availableReplicas")).max(0);
                    let down = unhealthy.min(budget);
                    if down > 0 {
                        let to = spec_replicas(o) - down;
                        scale_rs(st, &d, o, to);
                        util::obj_mut(o, "spec").insert("replicas".into(), json!(to));
                        budget -= down;
                    }
                }
                let available: i64 = rss.iter().map(|r| status_i(r, "availableReplicas")).sum();
                let mut can = (available - min_available).min(budget);
                for o in olds.iter() {
                    if can <= 0 {
                        break;
                    }
                    let cur = spec_replicas(o);
                    let down = cur.min(can);
                    if down > 0 {
                        scale_rs(st, &d, o, cur - down);
                        can -= down;
                    }
                }
            }
        }
        // Revision history limit.
        let limit = i64_at(&d, "spec.revisionHistoryLimit").unwrap_or(10).max(0) as usize;
        let rss = owned_list(st, &rst, &ns, &uid);
        let mut dead: Vec<Value> = rss
            .into_iter()
            .filter(|r| rs_hash(r) != hash && spec_replicas(r) == 0 && status_i(r, "replicas") == 0)
            .collect();
        dead.sort_by_key(revision);
        while dead.len() > limit {
            let r = dead.remove(0);
            let _ = st.delete(&rst, &ns, name_of(&r), None, None, false, false);
        }
    }
}

fn condition(
    old: Option<&Value>,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &str,
    with_update: bool,
) -> Value {
    let prev = old
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some(ctype))
        });
    let same_status = prev.is_some_and(|p| p.get("status").and_then(Value::as_str) == Some(status));
    let same_all = same_status
        && prev.is_some_and(|p| {
            p.get("reason").and_then(Value::as_str) == Some(reason)
                && p.get("message").and_then(Value::as_str) == Some(message)
        });
    let transition = match prev {
        Some(p) if same_status => p.get("lastTransitionTime").cloned().unwrap_or(json!(now)),
        _ => json!(now),
    };
    let mut c = json!({"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": transition});
    if with_update {
        let upd = match prev {
            Some(p) if same_all => p.get("lastUpdateTime").cloned().unwrap_or(json!(now)),
            _ => json!(now),
        };
        c["lastUpdateTime"] = upd;
    }
    if !with_update {
        // Pod conditions carry no reason/message when true.
        if status == "True" {
            let m = c.as_object_mut().expect("object");
            m.remove("reason");
            m.remove("message");
        }
    }
    c
}

fn prev_progress_reason(d: &Value) -> Option<String> {
    d.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
        })
        .and_then(|c| c.get("reason").and_then(Value::as_str))
        .map(String::from)
}

fn deployment_status(st: &mut State) {
    let dt = ty(st, "apps", "deployments");
    let rst = ty(st, "apps", "replicasets");
    let scale = st.knobs.progress_deadline_scale;
    for d in st.list(&dt, None) {
        let uid = uid_of(&d).to_string();
        let ns = ns_of(&d).to_string();
        let replicas = spec_replicas(&d);
        let paused = d.pointer("/spec/paused").and_then(Value::as_bool) == Some(true);
        let hash = template_hash(&d);
        let rss = owned_list(st, &rst, &ns, &uid);
        let new_rs = rss.iter().find(|r| rs_hash(r) == hash);
        let sum = |f: &str| rss.iter().map(|r| status_i(r, f)).sum::<i64>();
        let total_pods = sum("replicas");
        let updated = new_rs.map(|r| status_i(r, "replicas")).unwrap_or(0);
        let ready = sum("readyReplicas");
        let available = sum("availableReplicas");
        let total_spec: i64 = rss.iter().map(spec_replicas).sum();
        let unavailable = (total_spec.max(replicas) - available).max(0);
        let (_, max_unavail) = surge_unavailable(&d, replicas);
        let old_status = d.get("status").cloned();
        let now = util::now_rfc3339();
        let avail_cond = if available >= replicas - max_unavail {
            condition(
                old_status.as_ref(),
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
                &now,
                true,
            )
        } else {
            condition(
                old_status.as_ref(),
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
                &now,
                true,
            )
        };
        let rs_name = new_rs.map(|r| name_of(r).to_string()).unwrap_or_default();
        let complete = new_rs.is_some()
            && updated == replicas
            && total_pods == replicas
            && available >= replicas
            && new_rs.is_some_and(|r| {
                spec_replicas(r) == replicas && status_i(r, "availableReplicas") == replicas
            });
        let prev_reason = prev_progress_reason(&d);
        let old_updated = old_status
            .as_ref()
            .map(|s| status_i(&json!({"status": s}), "updatedReplicas"))
            .unwrap_or(0);
        let old_ready = old_status
            .as_ref()
            .map(|s| status_i(&json!({"status": s}), "readyReplicas"))
            .unwrap_or(0);
        let old_avail = old_status
            .as_ref()
            .map(|s| status_i(&json!({"status": s}), "availableReplicas"))
            .unwrap_or(0);
        let old_total = old_status
            .as_ref()
            .map(|s| status_i(&json!({"status": s}), "replicas"))
            .unwrap_or(0);
        let progressed = updated > old_updated
            || ready > old_ready
            || available > old_avail
            || (total_pods - updated) < (old_total - old_updated);
        let ds = st
            .sim
            .deploys
            .entry(uid.clone())
            .or_insert_with(|| DeploySim {
                last_progress: Instant::now(),
                new_rs_created: false,
            });
        let deadline_secs = i64_at(&d, "spec.progressDeadlineSeconds")
            .unwrap_or(600)
            .max(0) as f64
            * scale;
        let new_created = std::mem::take(&mut ds.new_rs_created);
        if progressed {
            ds.last_progress = Instant::now();
        }
        let timed_out = ds.last_progress.elapsed().as_secs_f64() > deadline_secs;
        let prog = |status: &str, reason: &str, msg: String| {
            condition(
                old_status.as_ref(),
                "Progressing",
                status,
                reason,
                &msg,
                &now,
                true,
            )
        };
        let progress_cond = if paused {
            Some(prog(
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused".into(),
            ))
        } else if prev_reason.as_deref() == Some("DeploymentPaused") {
            if let Some(ds) = st.sim.deploys.get_mut(&uid) {
                ds.last_progress = Instant::now();
            }
            Some(prog(
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed".into(),
            ))
        } else if complete {
            Some(prog(
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            ))
        } else if new_created {
            Some(prog(
                "True",
                "NewReplicaSetCreated",
                format!("Created new replica set \"{rs_name}\""),
            ))
        } else if progressed || prev_reason.is_none() {
            Some(prog(
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            ))
        } else if timed_out && prev_reason.as_deref() != Some("NewReplicaSetAvailable") {
            Some(prog(
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            ))
        } else {
            None
        };
        let mut conditions = vec![avail_cond];
        match progress_cond {
            Some(c) => conditions.push(c),
            None => {
                if let Some(c) = old_status
                    .as_ref()
                    .and_then(|s| s.get("conditions"))
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
                    })
                {
                    conditions.push(c.clone());
                }
            }
        }
        let mut status = json!({
            "observedGeneration": i64_at(&d, "metadata.generation").unwrap_or(1),
            "replicas": total_pods,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": available,
            "conditions": conditions,
        });
        if unavailable > 0 {
            status["unavailableReplicas"] = json!(unavailable);
        }
        let terminating = sum("terminatingReplicas");
        if terminating > 0 {
            status["terminatingReplicas"] = json!(terminating);
        }
        if Some(&status) != old_status.as_ref() {
            let mut cur = d.clone();
            cur["status"] = status;
            st.write_internal(&dt, cur);
        }
    }
}

// ---------------------------------------------------------------------------
// ReplicaSets

fn pod_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Whether a graceful deletion of the pod has begun (`metadata.deletionTimestamp`).
pub(crate) fn terminating(p: &Value) -> bool {
    p.pointer("/metadata/deletionTimestamp").is_some()
}

/// Deletes a pod the way the API server does for a DELETE with the default grace period:
/// `deletionTimestamp` = now + `terminationGracePeriodSeconds` (default 30) and
/// `deletionGracePeriodSeconds`; the pod stays (`Terminating`) until the kubelet has
/// stopped it ([`Sim::termination_ticks`] later), then it is removed.
fn begin_termination(st: &mut State, pt: &ResourceType, pod: &Value) -> bool {
    if terminating(pod) {
        return false;
    }
    let grace = i64_at(pod, "spec.terminationGracePeriodSeconds").unwrap_or(30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let mut cur = pod.clone();
    let meta = util::obj_mut(&mut cur, "metadata");
    meta.insert(
        "deletionTimestamp".into(),
        json!(util::format_unix(now + grace)),
    );
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    st.write_internal(pt, cur).is_some()
}

/// The garbage collector, one pass: an object all of whose owners are gone (or are being
/// deleted in the foreground) is deleted like a `Background` DELETE would (pods gracefully,
/// so they are `Terminating` first); an owner deleted in the foreground loses its
/// `foregroundDeletion` finalizer, and goes, once nothing it owns is left. Deleting a
/// Deployment thus takes a pass for its ReplicaSets, one for their pods, and the pods' grace.
fn garbage_collector(st: &mut State) {
    let foreground = |v: &Value| {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion"))
            && v.pointer("/metadata/deletionTimestamp").is_some()
    };
    let owners: HashMap<String, bool> = st
        .objects
        .values()
        .map(|v| (uid_of(v).to_string(), foreground(v)))
        .collect();
    // (object, whether an owner waits for it in the foreground)
    let collectable: Vec<(crate::store::ObjKey, bool)> = st
        .objects
        .iter()
        .filter(|(_, v)| v.pointer("/metadata/deletionTimestamp").is_none())
        .filter_map(|(k, v)| {
            let refs = v
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)?;
            let uids = refs
                .iter()
                .map(|r| r.get("uid").and_then(Value::as_str).unwrap_or(""));
            let all_gone =
                !refs.is_empty() && uids.clone().all(|u| owners.get(u).copied().unwrap_or(true));
            let waited_for = uids
                .clone()
                .any(|u| owners.get(u).copied().unwrap_or(false));
            all_gone.then(|| (k.clone(), waited_for))
        })
        .collect();
    for (k, waited_for) in collectable {
        let Some(t) = st.type_by_plural(&k.0, &k.1) else {
            continue;
        };
        // Like the real collector: a dependent that an owner waits for and that has
        // dependents of its own is deleted in the foreground too, so the chain holds.
        let policy = if waited_for {
            "Foreground"
        } else {
            "Background"
        };
        let _ = st.delete_api(&t, &k.2, &k.3, None, None, policy, None, false);
    }
    let waiting: Vec<(crate::store::ObjKey, Value)> = st
        .objects
        .iter()
        .filter(|(_, v)| foreground(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, owner) in waiting {
        let uid = uid_of(&owner).to_string();
        if st.objects.values().any(|v| owned_by(v, &uid)) {
            continue;
        }
        let Some(t) = st.type_by_plural(&k.0, &k.1) else {
            continue;
        };
        let mut cur = owner.clone();
        if let Some(f) = cur
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != "foregroundDeletion");
        }
        let left = cur
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty());
        if left {
            st.write_internal(&t, cur);
        } else {
            let _ = st.delete(&t, &k.2, &k.3, None, None, false, false);
        }
    }
}

fn replicasets(st: &mut State) {
    let rst = ty(st, "apps", "replicasets");
    let pt = ty(st, "", "pods");
    for rs in st.list(&rst, None) {
        // Like the real controllers: nothing is created for an object being deleted.
        if rs.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns = ns_of(&rs).to_string();
        let want = spec_replicas(&rs).max(0) as usize;
        // Like the real controller, only active pods count: a terminating pod is replaced.
        let mut pods: Vec<Value> = owned_list(st, &pt, &ns, uid_of(&rs))
            .into_iter()
            .filter(|p| !terminating(p))
            .collect();
        if pods.len() < want {
            let template = dotted(&rs, "spec.template").cloned().unwrap_or(json!({}));
            for _ in pods.len()..want {
                let pod = json!({
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "generateName": format!("{}-", name_of(&rs)),
                        "namespace": ns,
                        "labels": template.pointer("/metadata/labels").cloned().unwrap_or(json!({})),
                        "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
                        "ownerReferences": [{
                            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name_of(&rs), "uid": uid_of(&rs),
                            "controller": true, "blockOwnerDeletion": true,
                        }],
                    },
                    "spec": template.get("spec").cloned().unwrap_or(json!({})),
                });
                if let Some(p) = st.create_internal(&pt, pod) {
                    let msg = format!("Created pod: {}", name_of(&p));
                    event(
                        st,
                        &rs,
                        None,
                        "Normal",
                        "SuccessfulCreate",
                        &msg,
                        "replicaset-controller",
                        0,
                    );
                }
            }
        } else if pods.len() > want {
            // Delete not-ready pods first, then the youngest.
            pods.sort_by_key(|p| {
                (
                    pod_ready(p),
                    std::cmp::Reverse(
                        str_at(p, "metadata.resourceVersion")
                            .and_then(|s| s.parse::<u64>().ok())
                            .unwrap_or(0),
                    ),
                )
            });
            let n = pods.len() - want;
            for p in pods.iter().take(n) {
                if begin_termination(st, &pt, p) {
                    let msg = format!("Deleted pod: {}", name_of(p));
                    event(
                        st,
                        &rs,
                        None,
                        "Normal",
                        "SuccessfulDelete",
                        &msg,
                        "replicaset-controller",
                        0,
                    );
                }
            }
        }
    }
}

fn replicaset_status(st: &mut State) {
    let rst = ty(st, "apps", "replicasets");
    let pt = ty(st, "", "pods");
    for rs in st.list(&rst, None) {
        let (pods, gone): (Vec<Value>, Vec<Value>) = owned_list(st, &pt, ns_of(&rs), uid_of(&rs))
            .into_iter()
            .partition(|p| !terminating(p));
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        let mut status = json!({
            "replicas": pods.len(),
            "fullyLabeledReplicas": pods.len(),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": i64_at(&rs, "metadata.generation").unwrap_or(1),
        });
        if !gone.is_empty() {
            status["terminatingReplicas"] = json!(gone.len());
        }
        if rs.get("status") != Some(&status) {
            let mut cur = rs.clone();
            cur["status"] = status;
            st.write_internal(&rst, cur);
        }
    }
}

// ---------------------------------------------------------------------------
// Kubelet

fn hex_of(s: &str, n: usize) -> String {
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < n {
        out.push_str(&format!(
            "{:016x}",
            util::fnv1a(format!("{s}/{i}").as_bytes())
        ));
        i += 1;
    }
    out.truncate(n);
    out
}

fn kubelet(st: &mut State) {
    let pt = ty(st, "", "pods");
    let tick = st.sim.tick_no;
    for pod in st.list(&pt, None) {
        let uid = uid_of(&pod).to_string();
        if !st.sim.pods.contains_key(&uid) {
            let ip = st.pod_ip();
            st.sim.pods.insert(
                uid.clone(),
                PodSim {
                    created_tick: tick,
                    terminating_since: None,
                    ip,
                    start_time: util::now_rfc3339(),
                    runs: HashMap::new(),
                },
            );
        }
        let age = tick - st.sim.pods[&uid].created_tick;
        let dying = terminating(&pod);
        if dying {
            let limit = st.sim.termination_ticks;
            let sim = st.sim.pods.get_mut(&uid).expect("pod sim");
            let since = *sim.terminating_since.get_or_insert(tick);
            if tick - since >= limit {
                let (ns, name) = (ns_of(&pod).to_string(), name_of(&pod).to_string());
                let _ = st.delete(&pt, &ns, &name, None, None, false, false);
                continue;
            }
        }
        simulate_pod(st, &pt, pod, age, dying);
    }
}

struct CState {
    state: Value,
    last: Value,
    ready: bool,
    started: bool,
    ever_started: bool,
    restarts: i64,
}

fn simulate_pod(st: &mut State, pt: &ResourceType, pod: Value, age: u64, dying: bool) {
    let uid = uid_of(&pod).to_string();
    let ns = ns_of(&pod).to_string();
    let pname = name_of(&pod).to_string();
    let containers: Vec<(String, String)> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| {
                    (
                        c.get("name")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                        c.get("image")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let behaviors: Vec<Behavior> = containers
        .iter()
        .map(|(_, i)| behavior_for(&st.knobs, i))
        .collect();
    let old_status = pod.get("status").cloned();
    let now = util::now_rfc3339();
    let tick = st.sim.tick_no;
    if behaviors.contains(&Behavior::Unschedulable) {
        let msg = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        let status = json!({
            "phase": "Pending",
            "qosClass": "BestEffort",
            "conditions": [condition(old_status.as_ref(), "PodScheduled", "False", "Unschedulable", msg, &now, false)],
        });
        event(
            st,
            &pod,
            None,
            "Warning",
            "FailedScheduling",
            msg,
            "default-scheduler",
            40,
        );
        if old_status.as_ref() != Some(&status) {
            let mut cur = pod.clone();
            cur["status"] = status;
            st.write_internal(pt, cur);
        }
        return;
    }
    let mut pod = pod;
    if pod.pointer("/spec/nodeName").is_none() {
        util::obj_mut(&mut pod, "spec").insert("nodeName".into(), json!("kube-fake-node"));
        let msg = format!("Successfully assigned {ns}/{pname} to kube-fake-node");
        event(
            st,
            &pod,
            None,
            "Normal",
            "Scheduled",
            &msg,
            "default-scheduler",
            u64::MAX,
        );
    }
    let sim_ip = st
        .sim
        .pods
        .get(&uid)
        .map(|p| p.ip.clone())
        .unwrap_or_default();
    let start_time = st
        .sim
        .pods
        .get(&uid)
        .map(|p| p.start_time.clone())
        .unwrap_or_default();
    let mut statuses = vec![];
    let mut cstates = vec![];
    for ((cname, image), b) in containers.iter().zip(behaviors.iter()) {
        let fp = format!("spec.containers{{{cname}}}");
        let cid = |restarts: i64| {
            format!(
                "containerd://{}",
                hex_of(&format!("{uid}/{cname}/{restarts}"), 64)
            )
        };
        let image_id = format!("{image}@sha256:{}", hex_of(image, 64));
        let creating = json!({"waiting": {"reason": "ContainerCreating"}});
        let cs = match b {
            _ if age == 0 => CState {
                state: creating,
                last: json!({}),
                ready: false,
                started: false,
                ever_started: false,
                restarts: 0,
            },
            Behavior::Ready { .. } | Behavior::NeverReady => {
                if age == 1 {
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Pulling",
                        &format!("Pulling image \"{image}\""),
                        "kubelet",
                        u64::MAX,
                    );
                    event(st, &pod, Some(&fp), "Normal", "Pulled", &format!("Successfully pulled image \"{image}\" in 1.021s (1.021s including waiting). Image size: 1048576 bytes."), "kubelet", u64::MAX);
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Created",
                        &format!("Created container: {cname}"),
                        "kubelet",
                        u64::MAX,
                    );
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Started",
                        &format!("Started container {cname}"),
                        "kubelet",
                        u64::MAX,
                    );
                }
                let ready = match b {
                    Behavior::Ready { ready_after } => age > *ready_after as u64,
                    _ => {
                        if age >= 3 {
                            event(
                                st,
                                &pod,
                                Some(&fp),
                                "Warning",
                                "Unhealthy",
                                "Readiness probe failed: HTTP probe failed with statuscode: 503",
                                "kubelet",
                                20,
                            );
                        }
                        false
                    }
                };
                CState {
                    state: json!({"running": {"startedAt": start_time}}),
                    last: json!({}),
                    ready,
                    started: true,
                    ever_started: true,
                    restarts: 0,
                }
            }
            Behavior::CrashLoop { exit_code, .. } => {
                let a = age - 1;
                let restarts = (a / 5) as i64;
                let phase = a % 5;
                let runs = st.sim.pods.get_mut(&uid).map(|p| &mut p.runs);
                let (started_at, finished_at) = match runs {
                    Some(runs) => {
                        let e = runs
                            .entry(cname.clone())
                            .or_insert((-1, now.clone(), now.clone()));
                        if e.0 != restarts {
                            *e = (restarts, now.clone(), e.2.clone());
                        }
                        if phase == 1 && e.2 < e.1 {
                            e.2 = now.clone();
                        }
                        (e.1.clone(), e.2.clone())
                    }
                    None => (now.clone(), now.clone()),
                };
                let reason = if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                let terminated = |restarts: i64| json!({"terminated": {"exitCode": exit_code, "reason": reason, "startedAt": started_at, "finishedAt": finished_at, "containerID": cid(restarts)}});
                if phase == 0 {
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Created",
                        &format!("Created container: {cname}"),
                        "kubelet",
                        0,
                    );
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Started",
                        &format!("Started container {cname}"),
                        "kubelet",
                        0,
                    );
                }
                let backoff_msg = format!(
                    "Back-off restarting failed container {cname} in pod {pname}_{ns}({uid})"
                );
                if phase >= 2 {
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Warning",
                        "BackOff",
                        &backoff_msg,
                        "kubelet",
                        3,
                    );
                }
                let last = if restarts > 0 {
                    terminated(restarts - 1)
                } else {
                    json!({})
                };
                match phase {
                    0 => CState {
                        state: json!({"running": {"startedAt": started_at}}),
                        last,
                        ready: false,
                        started: true,
                        ever_started: true,
                        restarts,
                    },
                    1 => CState {
                        state: terminated(restarts),
                        last,
                        ready: false,
                        started: false,
                        ever_started: true,
                        restarts,
                    },
                    _ => CState {
                        state: json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!("back-off 10s restarting failed container={cname} pod={pname}_{ns}({uid})")}}),
                        last: terminated(restarts),
                        ready: false,
                        started: false,
                        ever_started: true,
                        restarts,
                    },
                }
            }
            Behavior::ImagePullBackOff => {
                let a = age - 1;
                let pull_err = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found");
                if a.is_multiple_of(6) {
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "Pulling",
                        &format!("Pulling image \"{image}\""),
                        "kubelet",
                        0,
                    );
                    event(st, &pod, Some(&fp), "Warning", "Failed", &format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = {pull_err}"), "kubelet", 0);
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Warning",
                        "Failed",
                        "Error: ErrImagePull",
                        "kubelet",
                        0,
                    );
                    CState {
                        state: json!({"waiting": {"reason": "ErrImagePull", "message": format!("rpc error: code = NotFound desc = {pull_err}")}}),
                        last: json!({}),
                        ready: false,
                        started: false,
                        ever_started: false,
                        restarts: 0,
                    }
                } else {
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Normal",
                        "BackOff",
                        &format!("Back-off pulling image \"{image}\""),
                        "kubelet",
                        6,
                    );
                    event(
                        st,
                        &pod,
                        Some(&fp),
                        "Warning",
                        "Failed",
                        "Error: ImagePullBackOff",
                        "kubelet",
                        6,
                    );
                    CState {
                        state: json!({"waiting": {"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\": ErrImagePull: {pull_err}")}}),
                        last: json!({}),
                        ready: false,
                        started: false,
                        ever_started: false,
                        restarts: 0,
                    }
                }
            }
            Behavior::Unschedulable => unreachable!("handled above"),
        };
        // A terminating container got SIGTERM: its readiness probe fails from now on.
        let cs = CState {
            ready: cs.ready && !dying,
            ..cs
        };
        let mut s = json!({
            "name": cname,
            "image": image,
            "imageID": if cs.ever_started { image_id } else { String::new() },
            "ready": cs.ready,
            "restartCount": cs.restarts,
            "started": cs.started,
            "state": cs.state,
            "lastState": cs.last,
        });
        if cs.ever_started {
            s["containerID"] = json!(cid(cs.restarts));
        }
        statuses.push(s);
        cstates.push(cs);
    }
    let all_ready = !cstates.is_empty() && cstates.iter().all(|c| c.ready);
    let all_started = !cstates.is_empty() && cstates.iter().all(|c| c.ever_started);
    let unready: Vec<&str> = containers
        .iter()
        .zip(cstates.iter())
        .filter(|(_, c)| !c.ready)
        .map(|(n, _)| n.0.as_str())
        .collect();
    let not_ready_msg = format!("containers with unready status: [{}]", unready.join(" "));
    let os = old_status.as_ref();
    let ready_cond = if all_ready {
        condition(os, "Ready", "True", "", "", &now, false)
    } else {
        condition(
            os,
            "Ready",
            "False",
            "ContainersNotReady",
            &not_ready_msg,
            &now,
            false,
        )
    };
    let cready_cond = if all_ready {
        condition(os, "ContainersReady", "True", "", "", &now, false)
    } else {
        condition(
            os,
            "ContainersReady",
            "False",
            "ContainersNotReady",
            &not_ready_msg,
            &now,
            false,
        )
    };
    let sandbox = if age >= 1 { "True" } else { "False" };
    let status = json!({
        "phase": if all_started { "Running" } else { "Pending" },
        "conditions": [
            condition(os, "PodReadyToStartContainers", sandbox, "", "", &now, false),
            condition(os, "Initialized", "True", "", "", &now, false),
            ready_cond,
            cready_cond,
            condition(os, "PodScheduled", "True", "", "", &now, false),
        ],
        "hostIP": "172.18.0.2",
        "hostIPs": [{"ip": "172.18.0.2"}],
        "podIP": sim_ip,
        "podIPs": [{"ip": sim_ip}],
        "startTime": start_time,
        "containerStatuses": statuses,
        "qosClass": "BestEffort",
    });
    let _ = tick;
    if old_status.as_ref() != Some(&status)
        || pod.pointer("/spec/nodeName")
            != st
                .get(pt, &ns, &pname)
                .and_then(|p| p.pointer("/spec/nodeName"))
    {
        pod["status"] = status;
        st.write_internal(pt, pod);
    }
}

// ---------------------------------------------------------------------------
// StatefulSets

const STS_REVISION: &str = "controller-revision-hash";

fn ordinal(sts: &str, pod: &Value) -> Option<i64> {
    name_of(pod)
        .strip_prefix(sts)
        .and_then(|r| r.strip_prefix('-'))
        .and_then(|n| n.parse().ok())
}

fn pod_revision(pod: &Value) -> &str {
    pod.pointer("/metadata/labels")
        .and_then(|l| l.get(STS_REVISION))
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn sts_pod(s: &Value, ord: i64, revision: &str) -> Value {
    let name = format!("{}-{ord}", name_of(s));
    let template = dotted(s, "spec.template").cloned().unwrap_or(json!({}));
    let mut labels = template
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(json!({}));
    if let Some(l) = labels.as_object_mut() {
        l.insert(STS_REVISION.into(), json!(revision));
        l.insert("statefulset.kubernetes.io/pod-name".into(), json!(name));
        l.insert(
            "apps.kubernetes.io/pod-index".into(),
            json!(ord.to_string()),
        );
    }
    let mut spec = template.get("spec").cloned().unwrap_or(json!({}));
    if let Some(sp) = spec.as_object_mut() {
        sp.insert("hostname".into(), json!(name));
        if let Some(svc) = str_at(s, "spec.serviceName") {
            sp.insert("subdomain".into(), json!(svc));
        }
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns_of(s),
            "labels": labels,
            "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or(json!({})),
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "StatefulSet", "name": name_of(s), "uid": uid_of(s),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
    })
}

/// The StatefulSet controller with `podManagementPolicy: OrderedReady` (parallel is treated
/// the same) and the `RollingUpdate` strategy: pods `<name>-<ordinal>` are created one at a
/// time in order, each only once the ones before it are Running and Ready; surplus pods are
/// removed from the highest ordinal down; after a template change the pods whose revision
/// differs are replaced one at a time, highest ordinal first, each after the others are
/// ready again. `currentRevision` becomes `updateRevision` only once every pod runs the
/// update revision and is ready. `OnDelete` replaces nothing; `partition` is honoured.
/// Starts the graceful deletion of a StatefulSet's pod, with the controller's event (nothing
/// when it is terminating already).
fn delete_stateful_pod(st: &mut State, pt: &ResourceType, set: &Value, sname: &str, pod: &Value) {
    if begin_termination(st, pt, pod) {
        let msg = format!(
            "delete Pod {} in StatefulSet {sname} successful",
            name_of(pod)
        );
        event(
            st,
            set,
            None,
            "Normal",
            "SuccessfulDelete",
            &msg,
            "statefulset-controller",
            0,
        );
    }
}

fn statefulsets(st: &mut State) {
    let sst = ty(st, "apps", "statefulsets");
    let pt = ty(st, "", "pods");
    for s in st.list(&sst, None) {
        // Like the real controllers: nothing is created for an object being deleted.
        if s.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let ns = ns_of(&s).to_string();
        let sname = name_of(&s).to_string();
        let replicas = spec_replicas(&s).max(0);
        let update_rev = format!(
            "{sname}-{}",
            &stable_hash(&s.pointer("/spec/template").cloned().unwrap_or(json!({})))[..10]
        );
        let current_rev = str_at(&s, "status.currentRevision")
            .map(String::from)
            .unwrap_or_else(|| update_rev.clone());
        let on_delete = str_at(&s, "spec.updateStrategy.type") == Some("OnDelete");
        let partition = i64_at(&s, "spec.updateStrategy.rollingUpdate.partition").unwrap_or(0);
        let mut pods: Vec<(i64, Value)> = owned_list(st, &pt, &ns, uid_of(&s))
            .into_iter()
            .filter_map(|p| ordinal(&sname, &p).map(|o| (o, p)))
            .collect();
        pods.sort_by_key(|(o, _)| *o);
        let healthy = |p: &Value| !terminating(p) && pod_ready(p);
        // Scale up: the first missing ordinal, once every lower one is ready.
        let mut acted = false;
        for ord in 0..replicas {
            match pods.iter().find(|(o, _)| *o == ord) {
                Some((_, p)) if healthy(p) => continue,
                Some(_) => {
                    acted = true;
                    break;
                }
                None => {
                    let rev = if ord < partition {
                        current_rev.as_str()
                    } else {
                        update_rev.as_str()
                    };
                    if let Some(p) = st.create_internal(&pt, sts_pod(&s, ord, rev)) {
                        let msg = format!(
                            "create Pod {} in StatefulSet {sname} successful",
                            name_of(&p)
                        );
                        event(
                            st,
                            &s,
                            None,
                            "Normal",
                            "SuccessfulCreate",
                            &msg,
                            "statefulset-controller",
                            0,
                        );
                    }
                    acted = true;
                    break;
                }
            }
        }
        // Scale down: the highest surplus ordinal, once everything else is ready.
        if !acted {
            if let Some((_, p)) = pods.iter().rev().find(|(o, _)| *o >= replicas) {
                delete_stateful_pod(st, &pt, &s, &sname, p);
                acted = true;
            }
        }
        // Rolling update: the highest ordinal not on the update revision.
        if !acted && !on_delete && !pods.iter().any(|(_, p)| terminating(p)) {
            if let Some((_, p)) = pods
                .iter()
                .rev()
                .find(|(o, p)| *o < replicas && *o >= partition && pod_revision(p) != update_rev)
            {
                delete_stateful_pod(st, &pt, &s, &sname, p);
            }
        }
        // Status, counted like the real controller.
        let pods = owned_list(st, &pt, &ns, uid_of(&s));
        let created = pods.len() as i64;
        let ready = pods.iter().filter(|p| healthy(p)).count() as i64;
        let live: Vec<&Value> = pods.iter().filter(|p| !terminating(p)).collect();
        let current = live
            .iter()
            .filter(|p| pod_revision(p) == current_rev)
            .count() as i64;
        let updated = live
            .iter()
            .filter(|p| pod_revision(p) == update_rev)
            .count() as i64;
        let (current_rev, current) =
            if updated == replicas && ready == replicas && created == replicas {
                (update_rev.clone(), updated)
            } else {
                (current_rev, current)
            };
        let status = json!({
            "observedGeneration": i64_at(&s, "metadata.generation").unwrap_or(1),
            "replicas": created,
            "readyReplicas": ready,
            "currentReplicas": current,
            "updatedReplicas": updated,
            "availableReplicas": ready,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "collisionCount": 0,
        });
        if s.get("status") != Some(&status) {
            let mut cur = s.clone();
            cur["status"] = status;
            st.write_internal(&sst, cur);
        }
    }
}

//! The Deployment controller: ReplicaSet per pod-template hash, rolling update and recreate,
//! revisions and rollback, revision history limit, status and the Available/Progressing
//! conditions.

use super::events::normal_event;
use super::pod::controller_ref;
use super::{decoded, now_time, owned_list, ty, typed, write_status};
use crate::store::State;
use crate::types::ResourceType;
use crate::util::{self, dotted, int_or_percent, stable_hash};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{json, Value};
use std::time::Instant;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug)]
pub(super) struct DeploySim {
    last_progress: Instant,
    new_rs_created: bool,
}

/// The `deployment.kubernetes.io/revision` of a ReplicaSet (0 if none).
fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn rs_spec(rs: &ReplicaSet) -> i64 {
    i64::from(rs.spec.replicas.unwrap_or(1))
}

fn rs_status(rs: &ReplicaSet, f: fn(&ReplicaSetStatus) -> Option<i32>) -> i64 {
    i64::from(rs.status.as_ref().and_then(f).unwrap_or(0))
}

fn rs_available(rs: &ReplicaSet) -> i64 {
    rs_status(rs, |s| s.available_replicas)
}

fn rs_pods(rs: &ReplicaSet) -> i64 {
    rs_status(rs, |s| Some(s.replicas))
}

fn rs_hash(rs: &ReplicaSet) -> &str {
    rs.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL))
        .map_or("", String::as_str)
}

fn uid(rs: &ReplicaSet) -> &str {
    rs.metadata.uid.as_deref().unwrap_or_default()
}

/// The ReplicaSets `uid` owns, oldest first, as typed objects.
fn owned_replicasets(st: &State, rst: &ResourceType, ns: &str, uid: &str) -> Vec<ReplicaSet> {
    owned_list(st, rst, ns, uid)
        .iter()
        .filter_map(typed::<ReplicaSet>)
        .collect()
}

/// `maxSurge` and `maxUnavailable` of a rolling update resolved against `replicas` (25 %
/// each by default; both 0 means one unavailable).
fn surge_unavailable(d: &Deployment, replicas: i64) -> (i64, i64) {
    let ru = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let value = |v: Option<&IntOrString>| v.map(|v| serde_json::to_value(v).expect("serializes"));
    let surge_v = value(ru.and_then(|r| r.max_surge.as_ref()));
    let unavail_v = value(ru.and_then(|r| r.max_unavailable.as_ref()));
    let surge = int_or_percent(surge_v.as_ref(), replicas, 25, true);
    let mut unavail = int_or_percent(unavail_v.as_ref(), replicas, 25, false);
    if surge == 0 && unavail == 0 {
        unavail = 1;
    }
    (surge, unavail)
}

/// The `pod-template-hash`: a hash of the stored template JSON.
fn template_hash(raw: &Value) -> String {
    stable_hash(&dotted(raw, "spec.template").cloned().unwrap_or(json!({})))
}

/// Scales a ReplicaSet of the Deployment `raw` (which wants `replicas`) to `to`, with the
/// controller's `ScalingReplicaSet` event.
fn scale_rs(st: &mut State, raw: &Value, replicas: i64, rs: &ReplicaSet, to: i64) {
    let from = rs_spec(rs);
    if from == to {
        return;
    }
    let rst = ty(st, "apps", "replicasets");
    let name = rs.metadata.name.clone().unwrap_or_default();
    let ns = rs.metadata.namespace.as_deref().unwrap_or_default();
    let Some(mut cur) = st.get(&rst, ns, &name).cloned() else {
        return;
    };
    util::obj_mut(&mut cur, "spec").insert("replicas".into(), json!(to));
    util::obj_mut(&mut cur, "metadata.annotations").insert(
        "deployment.kubernetes.io/desired-replicas".into(),
        json!(replicas.to_string()),
    );
    st.write_internal(&rst, cur);
    let dir = if to > from { "up" } else { "down" };
    let msg = format!("Scaled {dir} replica set {name} to {to} from {from}");
    normal_event(st, raw, "ScalingReplicaSet", &msg, "deployment-controller");
}

/// The new ReplicaSet of a Deployment whose template has none yet: the template with the
/// `pod-template-hash` label (also in the selector), revision `revision`, no replicas.
fn new_replicaset(d: &Deployment, hash: &str, revision: i64, replicas: i64) -> ReplicaSet {
    let name = d.metadata.name.clone().unwrap_or_default();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let (surge, _) = surge_unavailable(d, replicas);
    let mut template = d.spec.template.clone();
    template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector = d.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let labels = template.metadata.as_ref().and_then(|m| m.labels.clone());
    let annotations = [
        (REVISION, revision.to_string()),
        (
            "deployment.kubernetes.io/desired-replicas",
            replicas.to_string(),
        ),
        (
            "deployment.kubernetes.io/max-replicas",
            (replicas + surge).to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels,
            annotations: Some(annotations),
            owner_references: Some(vec![controller_ref("Deployment", &name, &uid)]),
            ..ObjectMeta::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(0),
            min_ready_seconds: Some(d.spec.min_ready_seconds.unwrap_or(0)),
            selector,
            template: Some(template),
        },
        status: None,
    }
}

pub(super) fn deployments(st: &mut State) {
    let dt = ty(st, "apps", "deployments");
    let rst = ty(st, "apps", "replicasets");
    for (raw, d) in decoded::<Deployment>(st, &dt) {
        // Like the real controllers: nothing is created for an object being deleted.
        if d.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let uid_d = d.metadata.uid.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        let paused = d.spec.paused == Some(true);
        let replicas = i64::from(d.spec.replicas.unwrap_or(1));
        let hash = template_hash(&raw);
        st.sim
            .deploys
            .entry(uid_d.clone())
            .or_insert_with(|| DeploySim {
                last_progress: Instant::now(),
                new_rs_created: false,
            });
        let rss = owned_replicasets(st, &rst, &ns, &uid_d);
        let max_rev = rss.iter().map(revision).max().unwrap_or(0);
        let new_rs = rss.iter().find(|r| rs_hash(r) == hash).cloned();
        let new_rs = match new_rs {
            None if paused => continue,
            None => {
                let rs = new_replicaset(&d, &hash, max_rev + 1, replicas);
                let rs = serde_json::to_value(rs).expect("replicaset serializes");
                let Some(created) = st
                    .create_internal(&rst, rs)
                    .and_then(|c| typed::<ReplicaSet>(&c))
                else {
                    continue;
                };
                if let Some(ds) = st.sim.deploys.get_mut(&uid_d) {
                    ds.last_progress = Instant::now();
                    ds.new_rs_created = true;
                }
                created
            }
            Some(rs) if revision(&rs) < max_rev => {
                // Rolled back to an older template: it becomes the newest revision again.
                let rs_name = rs.metadata.name.clone().unwrap_or_default();
                let Some(mut cur) = st.get(&rst, &ns, &rs_name).cloned() else {
                    continue;
                };
                util::obj_mut(&mut cur, "metadata.annotations")
                    .insert(REVISION.into(), json!((max_rev + 1).to_string()));
                if let Some(ds) = st.sim.deploys.get_mut(&uid_d) {
                    ds.last_progress = Instant::now();
                }
                let stored = st.write_internal(&rst, cur.clone()).unwrap_or(cur);
                match typed::<ReplicaSet>(&stored) {
                    Some(rs) => rs,
                    None => continue,
                }
            }
            Some(rs) => rs,
        };
        // Deployment revision annotation follows the new ReplicaSet.
        let rev = revision(&new_rs).to_string();
        if d.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            != Some(&rev)
        {
            if let Some(mut cur) = st.get(&dt, &ns, &name).cloned() {
                util::obj_mut(&mut cur, "metadata.annotations").insert(REVISION.into(), json!(rev));
                st.write_internal(&dt, cur);
            }
        }
        if paused {
            continue;
        }
        let new_uid = uid(&new_rs).to_string();
        let split = |rss: Vec<ReplicaSet>| {
            let (new, mut olds): (Vec<ReplicaSet>, Vec<ReplicaSet>) =
                rss.into_iter().partition(|r| uid(r) == new_uid);
            olds.sort_by_key(revision);
            (new.into_iter().next(), olds)
        };
        let rss = owned_replicasets(st, &rst, &ns, &uid_d);
        let total: i64 = rss.iter().map(rs_spec).sum();
        let (Some(new_rs), olds) = split(rss) else {
            continue;
        };
        let recreate =
            d.spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
        if recreate {
            let active: Vec<&ReplicaSet> = olds.iter().filter(|o| rs_spec(o) > 0).collect();
            if !active.is_empty() {
                for o in active {
                    scale_rs(st, &raw, replicas, o, 0);
                }
            } else if olds.iter().all(|o| rs_pods(o) == 0) {
                scale_rs(st, &raw, replicas, &new_rs, replicas);
            }
        } else {
            let (surge, unavail) = surge_unavailable(&d, replicas);
            let new_spec = rs_spec(&new_rs);
            if new_spec < replicas {
                let max_total = replicas + surge;
                if total < max_total {
                    let up = (max_total - total).min(replicas - new_spec);
                    scale_rs(st, &raw, replicas, &new_rs, new_spec + up);
                }
            } else if new_spec > replicas {
                scale_rs(st, &raw, replicas, &new_rs, replicas);
            }
            // Scale down old replica sets within the availability budget.
            let rss = owned_replicasets(st, &rst, &ns, &uid_d);
            let all_pods: i64 = rss.iter().map(rs_spec).sum();
            let available: i64 = rss.iter().map(rs_available).sum();
            let (new_now, mut olds) = split(rss);
            let new_rs = new_now.unwrap_or(new_rs);
            let min_available = replicas - unavail;
            let new_unavailable = (rs_spec(&new_rs) - rs_available(&new_rs)).max(0);
            let max_scaled_down = all_pods - min_available - new_unavailable;
            if max_scaled_down > 0 {
                let mut budget = max_scaled_down;
                // First remove old pods that are not available anyway.
                for o in olds.iter_mut() {
                    let unhealthy = (rs_spec(o) - rs_available(o)).max(0);
                    let down = unhealthy.min(budget);
                    if down > 0 {
                        let to = rs_spec(o) - down;
                        scale_rs(st, &raw, replicas, o, to);
                        o.spec.replicas = Some(to as i32);
                        budget -= down;
                    }
                }
                let mut can = (available - min_available).min(budget);
                for o in olds.iter() {
                    if can <= 0 {
                        break;
                    }
                    let cur = rs_spec(o);
                    let down = cur.min(can);
                    if down > 0 {
                        scale_rs(st, &raw, replicas, o, cur - down);
                        can -= down;
                    }
                }
            }
        }
        // Revision history limit.
        let limit = d.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut dead: Vec<ReplicaSet> = owned_replicasets(st, &rst, &ns, &uid_d)
            .into_iter()
            .filter(|r| rs_hash(r) != hash && rs_spec(r) == 0 && rs_pods(r) == 0)
            .collect();
        dead.sort_by_key(revision);
        while dead.len() > limit {
            let r = dead.remove(0);
            let rs_name = r.metadata.name.unwrap_or_default();
            let _ = st.delete(&rst, &ns, &rs_name, None, None, false, false);
        }
    }
}

/// A Deployment condition of `ctype`, keeping `lastTransitionTime` while the status stays
/// and `lastUpdateTime` while nothing changes, like `util.NewDeploymentCondition` +
/// `SetDeploymentCondition`.
fn deployment_condition(
    old: Option<&DeploymentStatus>,
    ctype: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) -> DeploymentCondition {
    let prev = progressing_or(old, ctype);
    let same_status = prev.is_some_and(|p| p.status.as_deref() == Some(status));
    let same_all = same_status
        && prev.is_some_and(|p| {
            p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(message.as_str())
        });
    let transition = match prev {
        Some(p) if same_status => p.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    let update = match prev {
        Some(p) if same_all => p.last_update_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    DeploymentCondition {
        type_: Some(ctype.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(transition),
        last_update_time: Some(update),
    }
}

/// The old status's condition of `ctype`.
fn progressing_or<'a>(
    old: Option<&'a DeploymentStatus>,
    ctype: &str,
) -> Option<&'a DeploymentCondition> {
    old.and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_.as_deref() == Some(ctype)))
}

pub(super) fn deployment_status(st: &mut State) {
    let dt = ty(st, "apps", "deployments");
    let rst = ty(st, "apps", "replicasets");
    let scale = st.knobs.progress_deadline_scale;
    for (raw, d) in decoded::<Deployment>(st, &dt) {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let replicas = i64::from(d.spec.replicas.unwrap_or(1));
        let paused = d.spec.paused == Some(true);
        let hash = template_hash(&raw);
        let rss = owned_replicasets(st, &rst, &ns, &uid);
        let new_rs = rss.iter().find(|r| rs_hash(r) == hash);
        let sum = |f: fn(&ReplicaSetStatus) -> Option<i32>| {
            rss.iter().map(|r| rs_status(r, f)).sum::<i64>()
        };
        let total_pods = sum(|s| Some(s.replicas));
        let updated = new_rs.map(rs_pods).unwrap_or(0);
        let ready = sum(|s| s.ready_replicas);
        let available = sum(|s| s.available_replicas);
        let total_spec: i64 = rss.iter().map(rs_spec).sum();
        let unavailable = (total_spec.max(replicas) - available).max(0);
        let (_, max_unavail) = surge_unavailable(&d, replicas);
        let old_status = d.status.clone();
        let os = old_status.as_ref();
        let now = now_time();
        let avail_cond = if available >= replicas - max_unavail {
            deployment_condition(
                os,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
                &now,
            )
        } else {
            deployment_condition(
                os,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.".into(),
                &now,
            )
        };
        let rs_name = new_rs
            .and_then(|r| r.metadata.name.clone())
            .unwrap_or_default();
        let complete = new_rs.is_some()
            && updated == replicas
            && total_pods == replicas
            && available >= replicas
            && new_rs.is_some_and(|r| rs_spec(r) == replicas && rs_available(r) == replicas);
        let prev_reason = progressing_or(os, "Progressing").and_then(|c| c.reason.clone());
        let old_i =
            |f: fn(&DeploymentStatus) -> Option<i32>| i64::from(os.and_then(f).unwrap_or(0));
        let old_updated = old_i(|s| s.updated_replicas);
        let old_ready = old_i(|s| s.ready_replicas);
        let old_avail = old_i(|s| s.available_replicas);
        let old_total = old_i(|s| s.replicas);
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
        let deadline_secs =
            f64::from(d.spec.progress_deadline_seconds.unwrap_or(600).max(0)) * scale;
        let new_created = std::mem::take(&mut ds.new_rs_created);
        if progressed {
            ds.last_progress = Instant::now();
        }
        let timed_out = ds.last_progress.elapsed().as_secs_f64() > deadline_secs;
        let prog = |status: &str, reason: &str, msg: String| {
            deployment_condition(os, "Progressing", status, reason, msg, &now)
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
            None => conditions.extend(progressing_or(os, "Progressing").cloned()),
        }
        let terminating = sum(|s| s.terminating_replicas);
        let status = DeploymentStatus {
            observed_generation: Some(d.metadata.generation.unwrap_or(1)),
            replicas: Some(total_pods as i32),
            updated_replicas: Some(updated as i32),
            ready_replicas: Some(ready as i32),
            available_replicas: Some(available as i32),
            conditions: Some(conditions),
            unavailable_replicas: (unavailable > 0).then_some(unavailable as i32),
            terminating_replicas: (terminating > 0).then_some(terminating as i32),
            collision_count: None,
        };
        write_status(st, &dt, &raw, os, &status);
    }
}

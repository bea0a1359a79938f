//! The Deployment controller: ReplicaSet per pod-template hash, rolling update and recreate,
//! revisions and rollback, revision history limit, status and the Available/Progressing
//! conditions.

use super::events::event;
use super::{now_time, owned_list, spec_replicas, ty, typed, with_status};
use crate::store::State;
use crate::util::{
    self, dotted, i64_at, int_or_percent, name_of, ns_of, stable_hash, str_at, uid_of,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::time::Instant;

const REVISION: &str = "deployment.kubernetes.io/revision";
const HASH_LABEL: &str = "pod-template-hash";

#[derive(Debug)]
pub(super) struct DeploySim {
    last_progress: Instant,
    new_rs_created: bool,
}

fn revision(v: &Value) -> i64 {
    v.pointer("/metadata/annotations")
        .and_then(|a| a.get(REVISION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
fn status_i(v: &Value, f: &str) -> i64 {
    v.get("status")
        .and_then(|s| s.get(f))
        .and_then(Value::as_i64)
        .unwrap_or(0)
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

pub(super) fn deployments(st: &mut State) {
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
    for raw in st.list(&dt, None) {
        let Some(d) = typed::<Deployment>(&raw) else {
            continue;
        };
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let replicas = i64::from(d.spec.replicas.unwrap_or(1));
        let paused = d.spec.paused == Some(true);
        let hash = template_hash(&raw);
        let rss: Vec<ReplicaSet> = owned_list(st, &rst, &ns, &uid)
            .iter()
            .filter_map(typed::<ReplicaSet>)
            .collect();
        let new_rs = rss
            .iter()
            .find(|r| r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash));
        let rs_status = |r: &ReplicaSet, f: fn(&ReplicaSetStatus) -> Option<i32>| {
            i64::from(r.status.as_ref().and_then(f).unwrap_or(0))
        };
        let sum = |f: fn(&ReplicaSetStatus) -> Option<i32>| {
            rss.iter().map(|r| rs_status(r, f)).sum::<i64>()
        };
        let rs_spec = |r: &ReplicaSet| i64::from(r.spec.replicas.unwrap_or(1));
        let total_pods = sum(|s| Some(s.replicas));
        let updated = new_rs
            .map(|r| rs_status(r, |s| Some(s.replicas)))
            .unwrap_or(0);
        let ready = sum(|s| s.ready_replicas);
        let available = sum(|s| s.available_replicas);
        let total_spec: i64 = rss.iter().map(rs_spec).sum();
        let unavailable = (total_spec.max(replicas) - available).max(0);
        let (_, max_unavail) = surge_unavailable(&raw, replicas);
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
            && new_rs.is_some_and(|r| {
                rs_spec(r) == replicas && rs_status(r, |s| s.available_replicas) == replicas
            });
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
        if Some(&status) != os {
            st.write_internal(&dt, with_status(&raw, &status));
        }
    }
}

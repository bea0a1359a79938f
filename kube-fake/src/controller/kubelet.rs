//! The simulated kubelet (and the scheduler's binding): pod status, container states and
//! events by image [`Behavior`], pod IPs, graceful termination.

use super::events::event;
use super::pod::terminating;
use super::{behavior_for, now_time, ty, typed, with_status, write_status};
use crate::store::State;
use crate::types::ResourceType;
use crate::util::{self, name_of, ns_of, uid_of};
use crate::Behavior;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Debug)]
pub(super) struct PodSim {
    created_tick: u64,
    /// The tick a graceful deletion began.
    terminating_since: Option<u64>,
    ip: String,
    start_time: String,
    /// container name → (restart count it started with, startedAt, finishedAt of last run)
    runs: HashMap<String, (i64, String, String)>,
}

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

pub(super) fn kubelet(st: &mut State) {
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
        if let Some(typed_pod) = typed::<Pod>(&pod) {
            simulate_pod(st, &pt, pod, &typed_pod, age, dying);
        }
    }
}

/// What one container is doing this tick.
struct CState {
    state: ContainerState,
    last: ContainerState,
    ready: bool,
    started: bool,
    ever_started: bool,
    restarts: i64,
}

impl CState {
    /// A container that has not run yet, in `state`.
    fn waiting(reason: &str, message: Option<String>) -> CState {
        CState {
            state: ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message,
                }),
                ..ContainerState::default()
            },
            last: ContainerState::default(),
            ready: false,
            started: false,
            ever_started: false,
            restarts: 0,
        }
    }
}

fn running(started_at: &str) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: Some(time(started_at)),
        }),
        ..ContainerState::default()
    }
}

/// An RFC 3339 timestamp kube-fake wrote itself, as a `metav1.Time`.
fn time(s: &str) -> Time {
    Time(s.parse().expect("kube-fake writes RFC 3339 timestamps"))
}

/// A pod condition of `ctype`, keeping `lastTransitionTime` while the status stays (pod
/// conditions carry no reason/message when true).
fn pod_condition(
    old: Option<&PodStatus>,
    ctype: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) -> PodCondition {
    let prev = old
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == ctype));
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone().unwrap_or(now.clone()),
        _ => now.clone(),
    };
    let (reason, message) = if status == "True" {
        (None, None)
    } else {
        (Some(reason.to_string()), Some(message.to_string()))
    };
    PodCondition {
        type_: ctype.into(),
        status: status.into(),
        reason,
        message,
        last_transition_time: Some(transition),
        ..PodCondition::default()
    }
}

/// One pod this tick: scheduled (bound to `kube-fake-node`), each container's state by the
/// behaviour of its image, the pod's conditions and phase. `pod` is the stored JSON (written
/// back with the new status), `typed_pod` the same read as a `Pod`.
fn simulate_pod(
    st: &mut State,
    pt: &ResourceType,
    mut pod: Value,
    typed_pod: &Pod,
    age: u64,
    dying: bool,
) {
    let uid = uid_of(&pod).to_string();
    let ns = ns_of(&pod).to_string();
    let pname = name_of(&pod).to_string();
    let containers: Vec<(String, String)> = typed_pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect();
    let behaviors: Vec<Behavior> = containers
        .iter()
        .map(|(_, i)| behavior_for(&st.knobs, i))
        .collect();
    let old_status = typed_pod.status.as_ref();
    let now = now_time();
    if behaviors.contains(&Behavior::Unschedulable) {
        let msg = "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.";
        let status = PodStatus {
            phase: Some("Pending".into()),
            qos_class: Some("BestEffort".into()),
            conditions: Some(vec![pod_condition(
                old_status,
                "PodScheduled",
                "False",
                "Unschedulable",
                msg,
                &now,
            )]),
            ..PodStatus::default()
        };
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
        write_status(st, pt, &pod, old_status, &status);
        return;
    }
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
    let (sim_ip, start_time) = st
        .sim
        .pods
        .get(&uid)
        .map(|p| (p.ip.clone(), p.start_time.clone()))
        .unwrap_or_default();
    let mut statuses = vec![];
    let mut cstates = vec![];
    for ((cname, image), b) in containers.iter().zip(behaviors.iter()) {
        let c = Container {
            pod: &pod,
            uid: &uid,
            ns: &ns,
            pname: &pname,
            name: cname,
            image,
            field_path: format!("spec.containers{{{cname}}}"),
        };
        let cs = match b {
            _ if age == 0 => CState::waiting("ContainerCreating", None),
            Behavior::Ready { .. } | Behavior::NeverReady => {
                c.ready_or_never(st, b, age, &start_time)
            }
            Behavior::CrashLoop { exit_code, .. } => c.crash_loop(st, *exit_code, age),
            Behavior::ImagePullBackOff => c.image_pull_back_off(st, age),
            Behavior::Unschedulable => unreachable!("handled above"),
        };
        // A terminating container got SIGTERM: its readiness probe fails from now on.
        let cs = CState {
            ready: cs.ready && !dying,
            ..cs
        };
        statuses.push(ContainerStatus {
            name: cname.clone(),
            image: image.clone(),
            image_id: if cs.ever_started {
                format!("{image}@sha256:{}", hex_of(image, 64))
            } else {
                String::new()
            },
            ready: cs.ready,
            restart_count: cs.restarts as i32,
            started: Some(cs.started),
            state: Some(cs.state.clone()),
            last_state: Some(cs.last.clone()),
            container_id: cs.ever_started.then(|| c.id(cs.restarts)),
            ..ContainerStatus::default()
        });
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
    let os = old_status;
    let readiness = |ctype: &str| {
        if all_ready {
            pod_condition(os, ctype, "True", "", "", &now)
        } else {
            pod_condition(
                os,
                ctype,
                "False",
                "ContainersNotReady",
                &not_ready_msg,
                &now,
            )
        }
    };
    let sandbox = if age >= 1 { "True" } else { "False" };
    let status = PodStatus {
        phase: Some(if all_started { "Running" } else { "Pending" }.into()),
        conditions: Some(vec![
            pod_condition(os, "PodReadyToStartContainers", sandbox, "", "", &now),
            pod_condition(os, "Initialized", "True", "", "", &now),
            readiness("Ready"),
            readiness("ContainersReady"),
            pod_condition(os, "PodScheduled", "True", "", "", &now),
        ]),
        host_ip: Some("172.18.0.2".into()),
        host_ips: Some(vec![HostIP {
            ip: "172.18.0.2".into(),
        }]),
        pod_ip: Some(sim_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: sim_ip }]),
        start_time: Some(time(&start_time)),
        container_statuses: Some(statuses),
        qos_class: Some("BestEffort".into()),
        ..PodStatus::default()
    };
    if old_status != Some(&status)
        || pod.pointer("/spec/nodeName")
            != st
                .get(pt, &ns, &pname)
                .and_then(|p| p.pointer("/spec/nodeName"))
    {
        st.write_internal(pt, with_status(&pod, &status));
    }
}

/// One container of a pod being simulated, with what its events need.
struct Container<'a> {
    pod: &'a Value,
    uid: &'a str,
    ns: &'a str,
    pname: &'a str,
    name: &'a str,
    image: &'a str,
    field_path: String,
}

impl Container<'_> {
    /// The container runtime's id of the `restarts`-th run.
    fn id(&self, restarts: i64) -> String {
        format!(
            "containerd://{}",
            hex_of(&format!("{}/{}/{restarts}", self.uid, self.name), 64)
        )
    }

    /// A kubelet event about this container.
    fn event(&self, st: &mut State, etype: &str, reason: &str, message: &str, every: u64) {
        event(
            st,
            self.pod,
            Some(&self.field_path),
            etype,
            reason,
            message,
            "kubelet",
            every,
        );
    }

    /// `Ready` / `NeverReady`: pulled, created and started at age 1; ready `ready_after`
    /// ticks later, or never (readiness probe failures).
    fn ready_or_never(&self, st: &mut State, b: &Behavior, age: u64, start_time: &str) -> CState {
        let (cname, image) = (self.name, self.image);
        if age == 1 {
            self.event(
                st,
                "Normal",
                "Pulling",
                &format!("Pulling image \"{image}\""),
                u64::MAX,
            );
            self.event(st, "Normal", "Pulled", &format!("Successfully pulled image \"{image}\" in 1.021s (1.021s including waiting). Image size: 1048576 bytes."), u64::MAX);
            self.event(
                st,
                "Normal",
                "Created",
                &format!("Created container: {cname}"),
                u64::MAX,
            );
            self.event(
                st,
                "Normal",
                "Started",
                &format!("Started container {cname}"),
                u64::MAX,
            );
        }
        let ready = match b {
            Behavior::Ready { ready_after } => age > u64::from(*ready_after),
            _ => {
                if age >= 3 {
                    self.event(
                        st,
                        "Warning",
                        "Unhealthy",
                        "Readiness probe failed: HTTP probe failed with statuscode: 503",
                        20,
                    );
                }
                false
            }
        };
        CState {
            state: running(start_time),
            last: ContainerState::default(),
            ready,
            started: true,
            ever_started: true,
            restarts: 0,
        }
    }

    /// `CrashLoop`: cycles of 5 ticks — running, terminated with `exit_code`, then three
    /// ticks of `CrashLoopBackOff`; one restart per cycle.
    fn crash_loop(&self, st: &mut State, exit_code: i32, age: u64) -> CState {
        let (cname, pname, ns, uid) = (self.name, self.pname, self.ns, self.uid);
        let now = util::now_rfc3339();
        let a = age - 1;
        let restarts = (a / 5) as i64;
        let phase = a % 5;
        let runs = st.sim.pods.get_mut(uid).map(|p| &mut p.runs);
        let (started_at, finished_at) = match runs {
            Some(runs) => {
                let e = runs
                    .entry(cname.to_string())
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
        let reason = if exit_code == 0 { "Completed" } else { "Error" };
        let terminated = |restarts: i64| ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                reason: Some(reason.into()),
                started_at: Some(time(&started_at)),
                finished_at: Some(time(&finished_at)),
                container_id: Some(self.id(restarts)),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        };
        if phase == 0 {
            self.event(
                st,
                "Normal",
                "Created",
                &format!("Created container: {cname}"),
                0,
            );
            self.event(
                st,
                "Normal",
                "Started",
                &format!("Started container {cname}"),
                0,
            );
        }
        if phase >= 2 {
            let backoff_msg =
                format!("Back-off restarting failed container {cname} in pod {pname}_{ns}({uid})");
            self.event(st, "Warning", "BackOff", &backoff_msg, 3);
        }
        let last = if restarts > 0 {
            terminated(restarts - 1)
        } else {
            ContainerState::default()
        };
        match phase {
            0 => CState {
                state: running(&started_at),
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
                state: ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("CrashLoopBackOff".into()),
                        message: Some(format!("back-off 10s restarting failed container={cname} pod={pname}_{ns}({uid})")),
                    }),
                    ..ContainerState::default()
                },
                last: terminated(restarts),
                ready: false,
                started: false,
                ever_started: true,
                restarts,
            },
        }
    }

    /// `ImagePullBackOff`: a pull attempt (`ErrImagePull`) every 6 ticks, `ImagePullBackOff`
    /// in between.
    fn image_pull_back_off(&self, st: &mut State, age: u64) -> CState {
        let image = self.image;
        let a = age - 1;
        let pull_err = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found");
        if a.is_multiple_of(6) {
            self.event(
                st,
                "Normal",
                "Pulling",
                &format!("Pulling image \"{image}\""),
                0,
            );
            self.event(st, "Warning", "Failed", &format!("Failed to pull image \"{image}\": rpc error: code = NotFound desc = {pull_err}"), 0);
            self.event(st, "Warning", "Failed", "Error: ErrImagePull", 0);
            CState::waiting(
                "ErrImagePull",
                Some(format!("rpc error: code = NotFound desc = {pull_err}")),
            )
        } else {
            self.event(
                st,
                "Normal",
                "BackOff",
                &format!("Back-off pulling image \"{image}\""),
                6,
            );
            self.event(st, "Warning", "Failed", "Error: ImagePullBackOff", 6);
            CState::waiting(
                "ImagePullBackOff",
                Some(format!(
                    "Back-off pulling image \"{image}\": ErrImagePull: {pull_err}"
                )),
            )
        }
    }
}

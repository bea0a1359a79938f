//! Events the controllers and the kubelet emit (core/v1 `Event`), deduplicated and counted
//! like the real event recorder.

use super::ty;
use crate::store::{State, WriteOpts};
use crate::util::{self, i64_at, name_of, ns_of, str_at, uid_of};
use serde_json::{json, Value};

/// A controller's `Normal` event about `involved` (no field path, emitted every time).
pub(super) fn normal_event(
    st: &mut State,
    involved: &Value,
    reason: &str,
    message: &str,
    component: &str,
) {
    event(st, involved, None, "Normal", reason, message, component, 0);
}

#[allow(clippy::too_many_arguments)]
pub(super) fn event(
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

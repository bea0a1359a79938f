//! What the API server fills in: type defaults (pod spec, Service cluster IPs, Secrets),
//! pod IPs, CRD registration.

use super::*;

impl State {
    pub(super) fn register_crd(&mut self, crd: &Value) {
        let group = util::str_at(crd, "spec.group").unwrap_or("").to_string();
        let plural = util::str_at(crd, "spec.names.plural")
            .unwrap_or("")
            .to_string();
        let kind = util::str_at(crd, "spec.names.kind")
            .unwrap_or("")
            .to_string();
        let namespaced = util::str_at(crd, "spec.scope") != Some("Cluster");
        let versions = util::dotted(crd, "spec.versions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let ver = versions
            .iter()
            .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
            .or(versions.first());
        let Some(ver) = ver else {
            return;
        };
        let version = ver.get("name").and_then(Value::as_str).unwrap_or("v1");
        let mut rt = ResourceType::new(&group, version, &plural, &kind, namespaced).custom();
        rt.status = ver.pointer("/subresources/status").is_some();
        rt.scale = ver.pointer("/subresources/scale").is_some();
        if !group.is_empty() && !plural.is_empty() && !kind.is_empty() {
            self.register(rt);
        }
    }

    pub(super) fn alloc_ip(&mut self, prefix: &str) -> String {
        self.next_ip += 1;
        format!(
            "{prefix}.{}.{}",
            (self.next_ip / 250) % 250,
            self.next_ip % 250 + 2
        )
    }

    /// Type-specific defaulting, roughly what the real API server's defaulters do.
    pub(super) fn apply_defaults(
        &mut self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
    ) {
        match (rt.group.as_str(), rt.plural.as_str()) {
            ("apps", "deployments") => {
                let spec = util::obj_mut(obj, "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                spec.entry("progressDeadlineSeconds").or_insert(json!(600));
                let strategy = spec.entry("strategy").or_insert_with(|| json!({}));
                if let Some(s) = strategy.as_object_mut() {
                    let ty = s
                        .entry("type")
                        .or_insert(json!("RollingUpdate"))
                        .as_str()
                        .unwrap_or("")
                        .to_string();
                    if ty == "RollingUpdate" {
                        let ru = util::obj_mut(strategy, "rollingUpdate");
                        ru.entry("maxSurge").or_insert(json!("25%"));
                        ru.entry("maxUnavailable").or_insert(json!("25%"));
                    }
                }
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("apps", "replicasets") | ("apps", "daemonsets") | ("batch", "jobs") => {
                if rt.plural == "replicasets" {
                    util::obj_mut(obj, "spec")
                        .entry("replicas")
                        .or_insert(json!(1));
                }
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("apps", "statefulsets") => {
                let spec = util::obj_mut(obj, "spec");
                spec.entry("replicas").or_insert(json!(1));
                spec.entry("podManagementPolicy")
                    .or_insert(json!("OrderedReady"));
                spec.entry("revisionHistoryLimit").or_insert(json!(10));
                default_pod_spec(util::obj_mut(obj, "spec.template.spec"));
            }
            ("", "pods") => {
                default_pod_spec(util::obj_mut(obj, "spec"));
                if old.is_none() && obj.get("status").is_none() {
                    obj["status"] = json!({"phase": "Pending", "qosClass": "BestEffort"});
                }
            }
            ("", "namespaces") => {
                if obj.get("status").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
                let name = util::name_of(obj).to_string();
                util::obj_mut(obj, "metadata.labels")
                    .insert("kubernetes.io/metadata.name".into(), Value::String(name));
            }
            ("", "services") => {
                let old_ip = old.and_then(|o| util::dotted(o, "spec.clusterIP")).cloned();
                let ty = util::str_at(obj, "spec.type")
                    .unwrap_or("ClusterIP")
                    .to_string();
                let needs_ip = util::str_at(obj, "spec.clusterIP").is_none_or(str::is_empty);
                let ip = if needs_ip && ty != "ExternalName" {
                    Some(old_ip.unwrap_or_else(|| Value::String(self.alloc_ip("10.96"))))
                } else {
                    None
                };
                let spec = util::obj_mut(obj, "spec");
                spec.entry("type").or_insert(json!(ty));
                spec.entry("sessionAffinity").or_insert(json!("None"));
                if let Some(ip) = ip {
                    spec.insert("clusterIP".into(), ip.clone());
                    spec.insert("clusterIPs".into(), json!([ip]));
                }
                if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                        if let Some(port) = p.get("port").cloned() {
                            p.entry("targetPort").or_insert(port);
                        }
                    }
                }
                if obj.get("status").is_none() {
                    obj["status"] = json!({"loadBalancer": {}});
                }
            }
            ("", "secrets") => secret_defaults(obj),
            _ => {}
        }
    }

    pub fn pod_ip(&mut self) -> String {
        self.alloc_ip("10.244")
    }
}

/// What the real API server does to a Secret on the way in: `stringData` (write-only) is
/// merged into `data` (base64) and dropped, winning over a key of the same name; `type`
/// defaults to `Opaque`.
pub(super) fn secret_defaults(obj: &mut Value) {
    use base64::Engine as _;
    let Some(m) = obj.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(string_data)) = m.remove("stringData") {
        if let Some(data) = m.entry("data").or_insert_with(|| json!({})).as_object_mut() {
            for (k, v) in string_data {
                let text = v.as_str().unwrap_or_default().to_string();
                data.insert(
                    k,
                    Value::String(base64::engine::general_purpose::STANDARD.encode(text)),
                );
            }
        }
    }
    m.entry("type").or_insert(json!("Opaque"));
}

pub(super) fn default_pod_spec(spec: &mut Map<String, Value>) {
    spec.entry("restartPolicy").or_insert(json!("Always"));
    spec.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    spec.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    spec.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    spec.entry("securityContext").or_insert(json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            for c in cs.iter_mut().filter_map(Value::as_object_mut) {
                let image = c
                    .get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let tag = image.rsplit('/').next().unwrap_or("");
                let latest = !tag.contains(':') || tag.ends_with(":latest");
                let policy = if latest && !image.contains('@') {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                c.entry("imagePullPolicy").or_insert(json!(policy));
                c.entry("terminationMessagePath")
                    .or_insert(json!("/dev/termination-log"));
                c.entry("terminationMessagePolicy").or_insert(json!("File"));
                c.entry("resources").or_insert(json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        p.entry("protocol").or_insert(json!("TCP"));
                    }
                }
            }
        }
    }
}

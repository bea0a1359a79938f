//! Label keys, the labels every object carries, the selectors Services and policies use,
//! and the metadata of a rendered object.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::KubeEnv;

/// Label keys.
pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const VERSION: &str = "app.kubernetes.io/version";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const REVISION: &str = "dronectl.io/revision";
pub const DEPLOYMENT: &str = "dronectl.io/deployment";
pub const ROLE: &str = "dronectl.io/role";

/// The common labels of an object of `name`.
pub fn labels(
    kenv: &KubeEnv,
    name: &str,
    component: &str,
    version: &str,
) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (NAME.to_string(), name.to_string()),
        (INSTANCE.to_string(), format!("{}-{}", kenv.app, kenv.env)),
        (COMPONENT.to_string(), component.to_string()),
        (PART_OF.to_string(), kenv.app.clone()),
        (MANAGED_BY.to_string(), "dronectl".to_string()),
    ]);
    let version = label_value(version);
    if !version.is_empty() {
        labels.insert(VERSION.to_string(), version);
    }
    labels
}

/// The labels every pod of `service` has (what Services and policies select).
pub fn service_selector(kenv: &KubeEnv, service: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), service.to_string()),
        (PART_OF.to_string(), kenv.app.clone()),
    ])
}

fn label_value(v: &str) -> String {
    let v: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

pub(super) fn meta(kenv: &KubeEnv, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(kenv.namespace.clone()),
        labels: Some(labels),
        ..Default::default()
    }
}

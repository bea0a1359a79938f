//! The checks the API server makes on the way in: names, Secrets, the HPA strategy
//! rules, custom resource schemas.

use super::*;

/// The Secret validation of the real API server: `data` values are base64 (else the body
/// does not decode: 400), keys are `[-._a-zA-Z0-9]+`, at most 1 MiB in all, and `type` is
/// immutable.
pub(super) fn secret_rules(
    rt: &ResourceType,
    name: &str,
    obj: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    use base64::Engine as _;
    if !(rt.group.is_empty() && rt.plural == "secrets") {
        return Ok(());
    }
    let mut total = 0usize;
    if let Some(data) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in data {
            let bytes = v
                .as_str()
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data in data[{k:?}]"
                    ))
                })?;
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && k != "."
                && k != "..";
            if !key_ok {
                return Err(ApiError::invalid(
                    rt,
                    name,
                    format!("data[{k}]: Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'"),
                ));
            }
            total += bytes.len();
        }
    }
    if total > 1 << 20 {
        return Err(ApiError::invalid(
            rt,
            name,
            "data: Too long: must have at most 1048576 bytes",
        ));
    }
    if let Some(old) = old {
        let ty = |o: &Value| {
            o.get("type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque")
                .to_string()
        };
        if ty(old) != ty(obj) {
            return Err(ApiError::invalid(
                rt,
                name,
                "type: Invalid value: field is immutable",
            ));
        }
    }
    Ok(())
}

/// The registry strategies' semantic checks dronectl can run into (the real server's
/// `ValidateHorizontalPodAutoscaler`): `minReplicas` at least 1 (scale-to-zero is behind
/// a feature gate), `maxReplicas` at least 1 and at least `minReplicas`, a target name.
pub(super) fn validate_object(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if (rt.group.as_str(), rt.plural.as_str()) != ("autoscaling", "horizontalpodautoscalers") {
        return Ok(());
    }
    let mut errors = vec![];
    let min = util::i64_at(obj, "spec.minReplicas");
    let max = util::i64_at(obj, "spec.maxReplicas").unwrap_or(0);
    if let Some(min) = min.filter(|m| *m < 1) {
        errors.push(format!(
            "spec.minReplicas: Invalid value: {min}: must be greater than or equal to 1"
        ));
    }
    if max < 1 {
        errors.push(format!(
            "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to 1"
        ));
    } else if max < min.unwrap_or(1) {
        errors.push(format!(
            "spec.maxReplicas: Invalid value: {max}: must be greater than or equal to `minReplicas`"
        ));
    }
    for f in ["kind", "name"] {
        if util::str_at(obj, &format!("spec.scaleTargetRef.{f}")).is_none_or(str::is_empty) {
            errors.push(format!("spec.scaleTargetRef.{f}: Required value"));
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let msg = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(ApiError::invalid(rt, name, msg))
}

/// The CRD schema checks kube-fake knows (HTTPRoute: see `gateway.rs`): 422 with every
/// violation, as the API server words a custom resource's validation failure.
pub(super) fn check_schema(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), ApiError> {
    if rt.group != "gateway.networking.k8s.io" || rt.kind != "HTTPRoute" {
        return Ok(());
    }
    let errors = crate::gateway::http_route_errors(obj);
    let msg = match errors.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let kind = format!("{}.{}", rt.kind, rt.group);
    let mut err = ApiError::invalid(rt, name, msg.clone());
    err.message = format!("{kind} \"{name}\" is invalid: {msg}");
    Err(err)
}

pub(super) fn validate_name(rt: &ResourceType, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    // Events are named `<object>.<hex>`; other objects follow RFC 1123 subdomain rules.
    if ok || (rt.kind == "Event" && !name.is_empty()) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            rt,
            name,
            format!("metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
        ))
    }
}

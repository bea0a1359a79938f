//! The Gateway API CRD's validation of an HTTPRoute (gateway.networking.k8s.io/v1, standard
//! channel v1.3): the OpenAPI schema's enums, bounds, required fields and list limits and
//! its CEL rules for the parts dronectl writes (path and header matches, `RequestMirror`
//! with `percent`/`fraction`, backend references). The real server refuses the object with
//! 422 and every violation, worded like the API server's field errors.

use serde_json::Value;

const HEADER_NAME_CHARS: &str = "!#$%&'*+-.^_`|~";

/// Every violation in `route` (empty: valid).
pub(crate) fn http_route_errors(route: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = route.get("spec") else {
        return out;
    };
    let rules = list(spec, "rules");
    max_items(&mut out, "spec.rules", rules.len(), 16);
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        let matches = list(rule, "matches");
        max_items(&mut out, &format!("{at}.matches"), matches.len(), 64);
        for (j, m) in matches.iter().enumerate() {
            check_match(&mut out, &format!("{at}.matches[{j}]"), m);
        }
        let filters = list(rule, "filters");
        max_items(&mut out, &format!("{at}.filters"), filters.len(), 16);
        for (j, f) in filters.iter().enumerate() {
            check_filter(&mut out, &format!("{at}.filters[{j}]"), f);
        }
        let backends = list(rule, "backendRefs");
        max_items(&mut out, &format!("{at}.backendRefs"), backends.len(), 16);
        for (j, b) in backends.iter().enumerate() {
            let at = format!("{at}.backendRefs[{j}]");
            check_backend(&mut out, &at, b);
            if let Some(w) = b.get("weight") {
                int_range(&mut out, &format!("{at}.weight"), w, 0, 1_000_000);
            }
        }
    }
    out
}

fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn max_items(out: &mut Vec<String>, at: &str, n: usize, max: usize) {
    if n > max {
        out.push(format!(
            "{at}: Too many: {n}: must have at most {max} items"
        ));
    }
}

fn required(out: &mut Vec<String>, at: &str) {
    out.push(format!("{at}: Required value"));
}

fn one_of(out: &mut Vec<String>, at: &str, v: &Value, allowed: &[&str]) {
    let ok = v.as_str().is_some_and(|s| allowed.contains(&s));
    if !ok {
        let supported: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
        out.push(format!(
            "{at}: Unsupported value: {v}: supported values: {}",
            supported.join(", ")
        ));
    }
}

fn int_range(out: &mut Vec<String>, at: &str, v: &Value, min: i64, max: i64) {
    match v.as_i64() {
        Some(n) if n < min => out.push(format!(
            "{at}: Invalid value: {n}: {at} in body should be greater than or equal to {min}"
        )),
        Some(n) if n > max => out.push(format!(
            "{at}: Invalid value: {n}: {at} in body should be less than or equal to {max}"
        )),
        Some(_) => {}
        None => out.push(format!(
            "{at}: Invalid value: \"{}\": {at} in body must be of type integer: \"{}\"",
            type_name(v),
            type_name(v)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn string_len(out: &mut Vec<String>, at: &str, v: Option<&Value>, min: usize, max: usize) {
    match v.and_then(Value::as_str) {
        None => required(out, at),
        Some(s) if s.len() < min => out.push(format!(
            "{at}: Invalid value: \"\": {at} in body should be at least {min} chars long"
        )),
        Some(s) if s.len() > max => {
            out.push(format!("{at}: Too long: may not be more than {max} bytes"))
        }
        Some(_) => {}
    }
}

fn check_match(out: &mut Vec<String>, at: &str, m: &Value) {
    if let Some(path) = m.get("path") {
        let kind = path.get("type").cloned().unwrap_or("PathPrefix".into());
        one_of(
            out,
            &format!("{at}.path.type"),
            &kind,
            &["Exact", "PathPrefix", "RegularExpression"],
        );
        string_len(out, &format!("{at}.path.value"), path.get("value"), 0, 1024);
        let value = path.get("value").and_then(Value::as_str).unwrap_or("/");
        if kind != "RegularExpression" && !value.starts_with('/') {
            out.push(format!(
                "{at}.path: Invalid value: \"object\": value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"
            ));
        }
    }
    let headers = list(m, "headers");
    max_items(out, &format!("{at}.headers"), headers.len(), 16);
    let mut seen: Vec<String> = Vec::new();
    for (k, h) in headers.iter().enumerate() {
        let at = format!("{at}.headers[{k}]");
        let kind = h.get("type").cloned().unwrap_or("Exact".into());
        one_of(
            out,
            &format!("{at}.type"),
            &kind,
            &["Exact", "RegularExpression"],
        );
        string_len(out, &format!("{at}.name"), h.get("name"), 1, 256);
        if let Some(name) = h.get("name").and_then(Value::as_str) {
            let valid = name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || HEADER_NAME_CHARS.contains(c));
            if !valid {
                out.push(format!(
                    "{at}.name: Invalid value: {name:?}: {at}.name in body should match '^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$'"
                ));
            }
            let lower = name.to_ascii_lowercase();
            if seen.contains(&lower) {
                out.push(format!(
                    "{at}: Duplicate value: map[string]interface {{}}{{\"name\":{name:?}}}"
                ));
            }
            seen.push(lower);
        }
        string_len(out, &format!("{at}.value"), h.get("value"), 1, 4096);
    }
}

fn check_backend(out: &mut Vec<String>, at: &str, b: &Value) {
    string_len(out, &format!("{at}.name"), b.get("name"), 1, 253);
    let kind = b.get("kind").and_then(Value::as_str).unwrap_or("Service");
    let group = b.get("group").and_then(Value::as_str).unwrap_or("");
    match b.get("port") {
        Some(p) => int_range(out, &format!("{at}.port"), p, 1, 65535),
        None if kind == "Service" && group.is_empty() => out.push(format!(
            "{at}: Invalid value: \"object\": Must have port for Service reference"
        )),
        None => {}
    }
}

fn check_filter(out: &mut Vec<String>, at: &str, f: &Value) {
    let Some(kind) = f.get("type") else {
        return required(out, &format!("{at}.type"));
    };
    one_of(
        out,
        &format!("{at}.type"),
        kind,
        &[
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestMirror",
            "RequestRedirect",
            "URLRewrite",
            "ExtensionRef",
        ],
    );
    let mirror = f.get("requestMirror");
    match (kind.as_str(), mirror) {
        (Some("RequestMirror"), None) => out.push(format!(
            "{at}: Invalid value: \"object\": filter.requestMirror must be specified for RequestMirror filter.type"
        )),
        (Some(k), Some(_)) if k != "RequestMirror" => out.push(format!(
            "{at}: Invalid value: \"object\": filter.requestMirror must be nil if the filter.type is not RequestMirror"
        )),
        _ => {}
    }
    let Some(m) = mirror else { return };
    let at = format!("{at}.requestMirror");
    match m.get("backendRef") {
        Some(b) => check_backend(out, &format!("{at}.backendRef"), b),
        None => required(out, &format!("{at}.backendRef")),
    }
    if let Some(p) = m.get("percent") {
        int_range(out, &format!("{at}.percent"), p, 0, 100);
    }
    if let Some(fr) = m.get("fraction") {
        let numerator = fr.get("numerator");
        match numerator {
            Some(n) => int_range(
                out,
                &format!("{at}.fraction.numerator"),
                n,
                0,
                i64::from(i32::MAX),
            ),
            None => required(out, &format!("{at}.fraction.numerator")),
        }
        let denominator = fr.get("denominator").cloned().unwrap_or(100.into());
        int_range(
            out,
            &format!("{at}.fraction.denominator"),
            &denominator,
            1,
            i64::from(i32::MAX),
        );
        if let (Some(n), Some(d)) = (numerator.and_then(Value::as_i64), denominator.as_i64()) {
            if n > d {
                out.push(format!(
                    "{at}.fraction: Invalid value: \"object\": numerator must be less than or equal to denominator"
                ));
            }
        }
    }
    if m.get("percent").is_some() && m.get("fraction").is_some() {
        out.push(format!(
            "{at}: Invalid value: \"object\": Only one of percent or fraction may be specified in HTTPRequestMirrorFilter"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(rules: Value) -> Value {
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": rules}})
    }

    #[test]
    fn accepts_matches_and_a_mirror_with_percent() {
        let r = route(json!([
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"},
                "headers": [{"type": "Exact", "name": "x-beta", "value": "true"},
                            {"type": "RegularExpression", "name": "Cookie", "value": "^(.*;\\s*)?g=1(;.*)?$"}]}],
             "backendRefs": [{"name": "api-b", "port": 8080, "weight": 1}]},
            {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
             "filters": [{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "api-b", "port": 8080}, "percent": 20}}],
             "backendRefs": [{"name": "api-a", "port": 8080, "weight": 100}]},
        ]));
        assert_eq!(http_route_errors(&r), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_the_crd_refuses() {
        let r = route(json!([
            {"matches": [{"path": {"type": "Prefix", "value": "api"},
                "headers": [{"type": "Regex", "name": "x beta", "value": ""},
                            {"name": "X-Beta", "value": "1"}, {"name": "x-beta", "value": "2"}]}],
             "filters": [{"type": "RequestMirror"},
                         {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "b"}, "percent": 101,
                            "fraction": {"numerator": 3, "denominator": 2}}}],
             "backendRefs": [{"name": "a", "port": 0, "weight": -1}]},
        ]));
        let errors = http_route_errors(&r);
        for needle in [
            "spec.rules[0].matches[0].path.type: Unsupported value: \"Prefix\"",
            "must be an absolute path",
            "spec.rules[0].matches[0].headers[0].type: Unsupported value: \"Regex\": supported values: \"Exact\", \"RegularExpression\"",
            "spec.rules[0].matches[0].headers[0].name: Invalid value: \"x beta\"",
            "spec.rules[0].matches[0].headers[0].value: Invalid value: \"\"",
            "spec.rules[0].matches[0].headers[2]: Duplicate value",
            "spec.rules[0].filters[0]: Invalid value: \"object\": filter.requestMirror must be specified",
            "spec.rules[0].filters[1].requestMirror.backendRef: Invalid value: \"object\": Must have port for Service reference",
            "spec.rules[0].filters[1].requestMirror.percent: Invalid value: 101",
            "numerator must be less than or equal to denominator",
            "Only one of percent or fraction",
            "spec.rules[0].backendRefs[0].port: Invalid value: 0",
            "spec.rules[0].backendRefs[0].weight: Invalid value: -1",
        ] {
            assert!(errors.iter().any(|e| e.contains(needle)), "missing {needle:?} in {errors:#?}");
        }
        let many: Vec<Value> = (0..17).map(|_| json!({"backendRefs": []})).collect();
        assert!(
            http_route_errors(&route(Value::Array(many)))[0].contains("must have at most 16 items")
        );
    }
}

//! Validation of names, labels and the objects of each kind, with field-level causes.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::FieldCause;
use crate::registry::ResourceInfo;

pub use crate::crd_schema::validate_schema;

mod probes;

/// Why `name` is not a DNS-1123 subdomain (`a.b-c`), if it is not.
pub fn dns_subdomain_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > 253 {
        return Some("must be no more than 253 characters".into());
    }
    if name
        .split('.')
        .any(|part| dns_label_problem(part).is_some())
    {
        return Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
                .into(),
        );
    }
    None
}

/// Why `name` is not a DNS-1123 label (`abc-1`), if it is not.
pub fn dns_label_problem(name: &str) -> Option<String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if name.is_empty() || name.len() > 63 {
        return Some("must be 1 to 63 characters".into());
    }
    if !name.chars().all(ok_char) || !name.starts_with(alnum) || !name.ends_with(alnum) {
        return Some(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name', or '123-abc')"
                .into(),
        );
    }
    None
}

/// Why a label key (`[prefix/]name`) is invalid, if it is.
pub fn label_key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && let Some(problem) = dns_subdomain_problem(p)
    {
        return Some(format!("prefix part {problem}"));
    }
    qualified_name_problem(name)
}

fn qualified_name_problem(name: &str) -> Option<String> {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    if name.is_empty() || name.len() > 63 {
        return Some("name part must be 1 to 63 characters".into());
    }
    if !name
        .chars()
        .all(|c| alnum(c) || c == '-' || c == '_' || c == '.')
        || !name.starts_with(alnum)
        || !name.ends_with(alnum)
    {
        return Some("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".into());
    }
    None
}

/// Why a label value is invalid, if it is (the empty value is valid).
pub fn label_value_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    qualified_name_problem(value).map(|p| p.replace("name part", "a label value"))
}

/// Checks the name of a new object of `info`.
pub fn name_problem(info: &ResourceInfo, name: &str) -> Option<String> {
    info.strategy.name_problem(name)
}

/// Checks the metadata every object has.
pub fn validate_metadata(object: &Value, causes: &mut Vec<FieldCause>) {
    let meta = &object["metadata"];
    if let Some(labels) = meta.get("labels").filter(|v| !v.is_null()) {
        match labels.as_object() {
            Some(labels) => {
                for (k, v) in labels {
                    if let Some(p) = label_key_problem(k) {
                        causes.push(FieldCause::invalid("metadata.labels", k, p));
                    }
                    match v.as_str() {
                        Some(s) => {
                            if let Some(p) = label_value_problem(s) {
                                causes.push(FieldCause::invalid(
                                    format!("metadata.labels.{k}"),
                                    s,
                                    p,
                                ));
                            }
                        }
                        None => causes.push(FieldCause::invalid(
                            format!("metadata.labels.{k}"),
                            v,
                            "label values must be strings",
                        )),
                    }
                }
            }
            None => causes.push(FieldCause::invalid(
                "metadata.labels",
                labels,
                "must be a map",
            )),
        }
    }
    if let Some(annotations) = meta.get("annotations").and_then(Value::as_object) {
        let mut size = 0;
        for (k, v) in annotations {
            size += k.len() + v.as_str().map_or(0, str::len);
            if let Some(p) = label_key_problem(k) {
                causes.push(FieldCause::invalid("metadata.annotations", k, p));
            }
        }
        if size > 256 * 1024 {
            causes.push(FieldCause {
                field: "metadata.annotations".into(),
                reason: "FieldValueTooLong",
                message: format!("Too long: may not be more than 262144 bytes (it is {size})"),
            });
        }
    }
}

/// Checks a Pod beyond its types: names, resources, restart policy, volume references.
pub fn validate_pod(pod: &Value, causes: &mut Vec<FieldCause>) {
    let spec = &pod["spec"];
    let containers = spec["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        causes.push(FieldCause::required("spec.containers"));
    }
    let mut volumes: HashSet<&str> = HashSet::new();
    for (i, v) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        let field = format!("spec.volumes[{i}].name");
        match v["name"].as_str() {
            None | Some("") => causes.push(FieldCause::required(field)),
            Some(name) => {
                if let Some(p) = dns_label_problem(name) {
                    causes.push(FieldCause::invalid(field, name, p));
                } else if !volumes.insert(name) {
                    causes.push(FieldCause {
                        field,
                        reason: "FieldValueDuplicate",
                        message: format!("Duplicate value: {name:?}"),
                    });
                }
            }
        }
    }
    validate_security_context(&spec["securityContext"], "spec.securityContext", causes);
    check_id(
        &spec["securityContext"]["fsGroup"],
        "spec.securityContext.fsGroup",
        causes,
    );
    for (i, g) in spec["securityContext"]["supplementalGroups"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        check_id(
            g,
            &format!("spec.securityContext.supplementalGroups[{i}]"),
            causes,
        );
    }
    let mut names = HashSet::new();
    for (list, field) in [
        ("initContainers", "spec.initContainers"),
        ("containers", "spec.containers"),
    ] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{field}[{i}]");
            match c["name"].as_str() {
                None | Some("") => causes.push(FieldCause::required(format!("{at}.name"))),
                Some(name) => {
                    if let Some(p) = dns_label_problem(name) {
                        causes.push(FieldCause::invalid(format!("{at}.name"), name, p));
                    } else if !names.insert(name.to_string()) {
                        causes.push(FieldCause {
                            field: format!("{at}.name"),
                            reason: "FieldValueDuplicate",
                            message: format!("Duplicate value: {name:?}"),
                        });
                    }
                }
            }
            validate_resources(&c["resources"], &format!("{at}.resources"), causes);
            probes::validate_container_probes(c, &at, list == "initContainers", causes);
            validate_security_context(
                &c["securityContext"],
                &format!("{at}.securityContext"),
                causes,
            );
            for (j, m) in c["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let vname = m["name"].as_str().unwrap_or_default();
                if !volumes.contains(vname) {
                    causes.push(FieldCause {
                        field: format!("{at}.volumeMounts[{j}].name"),
                        reason: "FieldValueNotFound",
                        message: format!("Not found: {vname:?}"),
                    });
                }
                if m["mountPath"].as_str().is_none_or(str::is_empty) {
                    causes.push(FieldCause::required(format!(
                        "{at}.volumeMounts[{j}].mountPath"
                    )));
                }
            }
        }
    }
    if let Some(policy) = spec["restartPolicy"].as_str()
        && !["Always", "OnFailure", "Never"].contains(&policy)
    {
        causes.push(FieldCause::not_supported(
            "spec.restartPolicy",
            policy,
            &["Always", "OnFailure", "Never"],
        ));
    }
    if let Some(grace) = spec["terminationGracePeriodSeconds"].as_i64()
        && grace < 0
    {
        causes.push(FieldCause::invalid(
            "spec.terminationGracePeriodSeconds",
            grace,
            "must be greater than or equal to 0",
        ));
    }
}

/// Largest user or group id Kubernetes accepts (`IsValidUserID`, `IsValidGroupID`).
pub const MAX_ID: i64 = i32::MAX as i64;

/// Checks the user and group ids of a (pod or container) security context.
fn validate_security_context(context: &Value, at: &str, causes: &mut Vec<FieldCause>) {
    for id in ["runAsUser", "runAsGroup"] {
        check_id(&context[id], &format!("{at}.{id}"), causes);
    }
}

/// A user or group id, if set, must be between 0 and [`MAX_ID`].
fn check_id(value: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    if value.is_null() {
        return;
    }
    if !value.as_i64().is_some_and(|id| (0..=MAX_ID).contains(&id)) {
        causes.push(FieldCause::invalid(
            field,
            value,
            format!("must be between 0 and {MAX_ID}, inclusive"),
        ));
    }
}

/// Checks requests and limits: valid non-negative quantities, requests within limits, and
/// whole, non-overcommitted extended resources such as `nvidia.com/gpu`.
fn validate_resources(resources: &Value, at: &str, causes: &mut Vec<FieldCause>) {
    use ferry_api::quantity;
    let read = |kind: &str, causes: &mut Vec<FieldCause>| -> Vec<(String, i64)> {
        let mut out = Vec::new();
        for (name, q) in resources[kind].as_object().into_iter().flatten() {
            let field = format!("{at}.{kind}[{name}]");
            let text = match q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => {
                    causes.push(FieldCause::invalid(field, other, "must be a quantity"));
                    continue;
                }
            };
            match quantity::parse_milli(&text) {
                Ok(v) if v < 0 => causes.push(FieldCause::invalid(
                    field,
                    &text,
                    "must be greater than or equal to 0",
                )),
                Ok(v) => {
                    let extended = name.contains('/') && !name.starts_with("kubernetes.io/");
                    if extended && v % 1000 != 0 {
                        causes.push(FieldCause::invalid(field, &text, "must be an integer"));
                    } else {
                        out.push((name.clone(), v));
                    }
                }
                Err(e) => causes.push(FieldCause::invalid(field, &text, e.reason)),
            }
        }
        out
    };
    let requests = read("requests", causes);
    let limits = read("limits", causes);
    for (name, req) in &requests {
        let limit = limits.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let extended = name.contains('/') && !name.starts_with("kubernetes.io/");
        match limit {
            Some(l) if extended && l != *req => causes.push(FieldCause::invalid(
                format!("{at}.requests[{name}]"),
                req / 1000,
                format!("must be equal to {name} limit of {}", l / 1000),
            )),
            Some(l) if *req > l => causes.push(FieldCause::invalid(
                format!("{at}.requests[{name}]"),
                format_milli(*req),
                format!(
                    "must be less than or equal to {name} limit of {}",
                    format_milli(l)
                ),
            )),
            None if extended => causes.push(FieldCause::forbidden(
                format!("{at}.limits"),
                format!("Limit must be set for non overcommitable resources ({name})"),
            )),
            _ => {}
        }
    }
}

fn format_milli(v: i64) -> String {
    if v % 1000 == 0 {
        (v / 1000).to_string()
    } else {
        format!("{v}m")
    }
}

/// The pod fields Kubernetes lets an update change; any other spec change is forbidden.
pub fn validate_pod_update(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    let strip = |spec: &Value| -> Value {
        let mut s = spec.clone();
        if let Some(obj) = s.as_object_mut() {
            for mutable in [
                "activeDeadlineSeconds",
                "tolerations",
                "terminationGracePeriodSeconds",
            ] {
                obj.remove(mutable);
            }
            for list in ["containers", "initContainers"] {
                if let Some(cs) = obj.get_mut(list).and_then(Value::as_array_mut) {
                    for c in cs {
                        if let Some(c) = c.as_object_mut() {
                            c.remove("image");
                        }
                    }
                }
            }
        }
        s
    };
    if strip(&old["spec"]) != strip(&new["spec"]) {
        causes.push(FieldCause::forbidden(
            "spec",
            "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`",
        ));
    }
}

/// Paths of fields in `input` that the typed form `typed` dropped: unknown fields.
pub fn unknown_fields(input: &Value, typed: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk_unknown(input, typed, String::new(), &mut out);
    out
}

fn walk_unknown(input: &Value, typed: &Value, path: String, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(tv) => walk_unknown(v, tv, p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, tv)) in a.iter().zip(b).enumerate() {
                walk_unknown(v, tv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `must be greater than or equal to 0` for a negative integer field.
pub fn non_negative(value: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    if let Some(n) = value.as_i64().filter(|n| *n < 0) {
        causes.push(FieldCause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {n}: must be greater than or equal to 0"),
        });
    }
}

/// The causes of an invalid `metav1.LabelSelector` at `field`, as kube's
/// `ValidateLabelSelector` words them (nothing for a missing selector).
pub fn label_selector_causes(selector: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    for (k, v) in selector["matchLabels"].as_object().into_iter().flatten() {
        if let Some(p) = label_key_problem(k) {
            causes.push(FieldCause::invalid(format!("{field}.matchLabels"), k, p));
        }
        let v = v.as_str().unwrap_or_default();
        if let Some(p) = label_value_problem(v) {
            causes.push(FieldCause::invalid(format!("{field}.matchLabels"), v, p));
        }
    }
    for (i, expr) in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("{field}.matchExpressions[{i}]");
        let operator = expr["operator"].as_str().unwrap_or_default();
        let values = expr["values"].as_array().map_or(0, Vec::len);
        match operator {
            "In" | "NotIn" if values == 0 => causes.push(FieldCause {
                field: format!("{at}.values"),
                reason: "FieldValueRequired",
                message: "Required value: must be specified when `operator` is 'In' or 'NotIn'"
                    .into(),
            }),
            "Exists" | "DoesNotExist" if values > 0 => causes.push(FieldCause::forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => causes.push(FieldCause::invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = expr["key"].as_str().unwrap_or_default();
        if let Some(p) = label_key_problem(key) {
            causes.push(FieldCause::invalid(format!("{at}.key"), key, p));
        }
        for v in expr["values"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            if let Some(p) = label_value_problem(v) {
                causes.push(FieldCause::invalid(format!("{at}.values"), v, p));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        assert!(dns_subdomain_problem("my-pod.v1").is_none());
        assert!(dns_subdomain_problem("My_Pod").is_some());
        assert!(dns_subdomain_problem("-a").is_some());
        assert!(dns_label_problem("a.b").is_some());
        assert!(dns_subdomain_problem(&"a".repeat(254)).is_some());
    }

    #[test]
    fn labels() {
        assert!(label_key_problem("app.kubernetes.io/name").is_none());
        assert!(label_key_problem("a/b/c").is_some());
        assert!(label_value_problem("").is_none());
        assert!(label_value_problem("-x").is_some());
    }

    #[test]
    fn pod_resources() {
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"nvidia.com/gpu": "0.5", "cpu": "1"}, "requests": {"cpu": "2"}}},
            {"name": "a", "resources": {"requests": {"nvidia.com/gpu": 1, "memory": "-1Gi"}}}
        ], "restartPolicy": "Sometimes"}});
        let mut causes = Vec::new();
        validate_pod(&pod, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert!(
            fields.contains(&"spec.containers[0].resources.limits[nvidia.com/gpu]"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.containers[0].resources.requests[cpu]"),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.containers[1].name"), "{fields:?}");
        assert!(
            fields.contains(&"spec.containers[1].resources.limits"),
            "{fields:?}"
        );
        assert!(
            fields.contains(&"spec.containers[1].resources.requests[memory]"),
            "{fields:?}"
        );
        assert!(fields.contains(&"spec.restartPolicy"), "{fields:?}");
    }

    #[test]
    fn unknown_fields_are_found() {
        let input = json!({"spec": {"containers": [{"name": "a", "imagee": "x"}], "x": null}});
        let typed = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(
            unknown_fields(&input, &typed),
            ["spec.containers[0].imagee"]
        );
    }

    #[test]
    fn pod_volume_names_and_ids() {
        let pod = json!({"spec": {
            "securityContext": {"runAsUser": 2147483648i64, "fsGroup": 5, "supplementalGroups": [-1]},
            "volumes": [{"name": "../../x"}, {"name": "ok"}, {"name": "ok"}, {}],
            "containers": [{"name": "a", "securityContext": {"runAsGroup": -1, "runAsUser": 2147483647i64}}],
        }});
        let mut causes = Vec::new();
        validate_pod(&pod, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.volumes[0].name",
                "spec.volumes[2].name",
                "spec.volumes[3].name",
                "spec.securityContext.runAsUser",
                "spec.securityContext.supplementalGroups[0]",
                "spec.containers[0].securityContext.runAsGroup",
            ]
        );
    }
}

//! ResourceQuotas (core `v1`): a namespace's ceiling on what its objects may request, with a
//! `/status` subresource (`status.hard` and `status.used`, kept by the quota controller).
//! Enforcement is the [`crate::admission::quota`] plugin's.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use ferry_api::quota;

/// The strategy of ResourceQuotas.
pub struct ResourceQuotas;

impl Strategy for ResourceQuotas {
    fn resource(&self) -> Option<ResourceInfo> {
        let mut info = ResourceInfo::builtin(
            "",
            "v1",
            "resourcequotas",
            "ResourceQuota",
            true,
            &["quota"],
        );
        info.status = true;
        Some(info)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::ResourceQuota>(info, object)
    }

    /// A new quota starts without status (the controller fills it in).
    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        Ok(())
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        validate_resource_list(&object["spec"]["hard"], "spec.hard", causes);
        validate_resource_list(&object["status"]["hard"], "status.hard", causes);
        validate_resource_list(&object["status"]["used"], "status.used", causes);
        validate_scopes(&object["spec"], causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            age_column(),
            Column::new("Request", "string", 0, "Used and hard requests and counts."),
            Column::new("Limit", "string", 0, "Used and hard limits."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let (request, limit) = used_and_hard(o);
        vec![json!(meta::name(o)), age(o), json!(request), json!(limit)]
    }
}

/// `kubectl get quota`'s `REQUEST` and `LIMIT` cells: `name: used/hard` for every hard
/// resource, limits apart (as kubectl's printer writes them).
fn used_and_hard(o: &Value) -> (String, String) {
    let hard = if o["status"]["hard"].is_object() {
        &o["status"]["hard"]
    } else {
        &o["spec"]["hard"]
    };
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (name, h) in hard.as_object().into_iter().flatten() {
        let used = o["status"]["used"]
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("0");
        let cell = format!("{name}: {used}/{}", h.as_str().unwrap_or_default());
        if name.starts_with("limits") {
            limits.push(cell);
        } else {
            requests.push(cell);
        }
    }
    (requests.join(", "), limits.join(", "))
}

/// Whether a quota may name `resource` (Kubernetes' `ValidateResourceQuotaResourceName`).
fn resource_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must be a standard resource for quota");
    }
    if !name.contains('/') {
        return (!quota::STANDARD_RESOURCES.contains(&name)
            && !name.starts_with("hugepages-")
            && !name.starts_with("requests.hugepages-"))
        .then_some("must be a standard resource for quota");
    }
    let (prefix, rest) = name.rsplit_once('/').unwrap_or(("", name));
    if rest.is_empty() || prefix.is_empty() {
        return Some("must be a standard resource for quota");
    }
    None
}

/// Whether a resource must be counted in whole units (counts and extended resources).
fn is_integer_resource(name: &str) -> bool {
    if name.starts_with("count/") || quota::object_count_names("", name).len() == 2 {
        return true;
    }
    if matches!(name, "services.nodeports" | "services.loadbalancers") {
        return true;
    }
    let base = name.strip_prefix("requests.").unwrap_or(name);
    // nvidia.com/gpu in a quota may be a fraction (shares of cards count).
    base != ferry_api::RESOURCE_NVIDIA_GPU
        && base.contains('/')
        && !base.starts_with("kubernetes.io/")
        && !name.starts_with("limits.")
}

/// Validates a `ResourceList` of a quota: names and non-negative quantities.
pub(crate) fn validate_resource_list(list: &Value, at: &str, causes: &mut Vec<FieldCause>) {
    for (name, q) in list.as_object().into_iter().flatten() {
        let field = format!("{at}[{name}]");
        if let Some(problem) = resource_name_problem(name) {
            causes.push(FieldCause::invalid(&field, name, problem));
            continue;
        }
        let text = q.as_str().map_or_else(|| q.to_string(), String::from);
        match quota::milli_of(q) {
            Err(_) => causes.push(FieldCause::invalid(
                &field,
                &text,
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            )),
            Ok(v) if v < 0 => causes.push(FieldCause::invalid(
                &field,
                &text,
                "must be greater than or equal to 0",
            )),
            Ok(v) if v % 1000 != 0 && is_integer_resource(name) => {
                causes.push(FieldCause::invalid(&field, &text, "must be an integer"))
            }
            Ok(_) => {}
        }
    }
}

/// Validates `spec.scopes` and `spec.scopeSelector`, and that scoped quotas name only
/// resources their scopes can track.
fn validate_scopes(spec: &Value, causes: &mut Vec<FieldCause>) {
    let mut scopes = Vec::new();
    for (i, s) in spec["scopes"].as_array().into_iter().flatten().enumerate() {
        let s = s.as_str().unwrap_or_default();
        if !quota::SCOPES.contains(&s) {
            causes.push(FieldCause::not_supported(
                format!("spec.scopes[{i}]"),
                s,
                quota::SCOPES,
            ));
        }
        scopes.push(s.to_string());
    }
    for (i, e) in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("spec.scopeSelector.matchExpressions[{i}]");
        let scope = e["scopeName"].as_str().unwrap_or_default();
        if !quota::SCOPES.contains(&scope) {
            causes.push(FieldCause::not_supported(
                format!("{at}.scopeName"),
                scope,
                quota::SCOPES,
            ));
        }
        let op = e["operator"].as_str().unwrap_or_default();
        let values = e["values"].as_array().map_or(0, Vec::len);
        match op {
            "In" | "NotIn" if scope == "PriorityClass" && values == 0 => causes.push(
                FieldCause::required(format!("{at}.values")),
            ),
            "In" | "NotIn" if scope != "PriorityClass" => causes.push(FieldCause::invalid(
                format!("{at}.operator"),
                op,
                "must be 'Exist' when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort, ResourceQuotaScopeNotBestEffort or ResourceQuotaScopeCrossNamespacePodAffinity",
            )),
            "In" | "NotIn" => {}
            "Exists" | "DoesNotExist" if values > 0 => causes.push(FieldCause::invalid(
                format!("{at}.values"),
                values,
                "must be no value when `Exists` or `DoesNotExist` operator is specified",
            )),
            "Exists" | "DoesNotExist" => {}
            other => causes.push(FieldCause::not_supported(
                format!("{at}.operator"),
                other,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            )),
        }
        scopes.push(scope.to_string());
    }
    if scopes.iter().any(|s| s == "Terminating") && scopes.iter().any(|s| s == "NotTerminating") {
        causes.push(FieldCause::invalid(
            "spec.scopes",
            scopes.join(", "),
            "conflicting scopes",
        ));
    }
    if scopes.iter().any(|s| s == "BestEffort") && scopes.iter().any(|s| s == "NotBestEffort") {
        causes.push(FieldCause::invalid(
            "spec.scopes",
            scopes.join(", "),
            "conflicting scopes",
        ));
    }
    if scopes.is_empty() {
        return;
    }
    let best_effort = scopes.iter().any(|s| s == "BestEffort");
    for name in spec["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        let allowed = if best_effort {
            name == "pods" || name == "count/pods"
        } else {
            name == "pods" || name == "count/pods" || quota::is_compute_resource(name)
        };
        if !allowed {
            causes.push(FieldCause::invalid(
                "spec.hard",
                name,
                "unsupported scope applied to resource",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(object: Value) -> Vec<FieldCause> {
        let mut causes = Vec::new();
        ResourceQuotas.validate(&object, &mut causes);
        causes
    }

    #[test]
    fn accepts_what_kubernetes_accepts() {
        let ok = json!({"spec": {"hard": {
            "pods": "10", "requests.cpu": "4", "limits.memory": "8Gi",
            "requests.nvidia.com/gpu": "8", "count/deployments.apps": "3", "secrets": "5",
            "nvidia.com/gpu": "0.5"
        }}});
        assert!(causes_of(ok).is_empty());
    }

    #[test]
    fn refuses_bad_names_quantities_and_scopes() {
        let c = causes_of(json!({"spec": {"hard": {"bogus": "1"}}}));
        assert_eq!(c[0].field, "spec.hard[bogus]");
        assert!(
            c[0].message
                .contains("must be a standard resource for quota")
        );
        let c = causes_of(json!({"spec": {"hard": {"pods": "-1"}}}));
        assert!(c[0].message.contains("must be greater than or equal to 0"));
        let c = causes_of(json!({"spec": {"hard": {"pods": "1.5"}}}));
        assert!(c[0].message.contains("must be an integer"));
        let c = causes_of(json!({"spec": {"hard": {"cpu": "lots"}}}));
        assert_eq!(c.len(), 1);
        let c = causes_of(json!({"spec": {"hard": {"pods": "1"}, "scopes": ["Sometimes"]}}));
        assert_eq!(c[0].reason, "FieldValueNotSupported");
        let c = causes_of(json!({"spec": {"hard": {"cpu": "1"}, "scopes": ["BestEffort"]}}));
        assert!(
            c[0].message
                .contains("unsupported scope applied to resource")
        );
        let c = causes_of(json!({"spec": {"hard": {"secrets": "1"}, "scopes": ["Terminating"]}}));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn columns_show_used_over_hard() {
        let q = json!({"metadata": {"name": "q"},
            "spec": {"hard": {"pods": "2", "limits.cpu": "4"}},
            "status": {"hard": {"pods": "2", "limits.cpu": "4"}, "used": {"pods": "1", "limits.cpu": "500m"}}});
        let cells = ResourceQuotas.cells(&q);
        assert_eq!(cells[2], json!("pods: 1/2"));
        assert_eq!(cells[3], json!("limits.cpu: 500m/4"));
    }
}

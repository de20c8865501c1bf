//! PodDisruptionBudgets (`policy/v1`): how many pods voluntary disruptions may take.
//!
//! Validation follows kube-apiserver's `ValidatePodDisruptionBudgetSpec`: `minAvailable` and
//! `maxUnavailable` are exclusive, each a non-negative integer or a percentage of at most
//! 100 %, the selector is a valid label selector and `unhealthyPodEvictionPolicy` is
//! `IfHealthyBudget` or `AlwaysAllow`. The status belongs to the disruption controller and
//! the eviction subresource (the `status` subresource); the spec may change (the generation
//! moves, and evictions wait until the controller has observed it).

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// The values `spec.unhealthyPodEvictionPolicy` accepts.
pub const UNHEALTHY_POD_EVICTION_POLICIES: &[&str] = &["AlwaysAllow", "IfHealthyBudget"];

/// The strategy of PodDisruptionBudgets.
pub struct PodDisruptionBudgets;

impl Strategy for PodDisruptionBudgets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "policy",
                "v1",
                "poddisruptionbudgets",
                "PodDisruptionBudget",
                true,
                &["pdb"],
            )
            .with_status(),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(info, object)
    }

    /// A new budget has no status: the disruption controller writes it.
    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if let Some(o) = object.as_object_mut() {
            o.insert("status".into(), json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0}));
        }
        Ok(())
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        validate_spec(&object["spec"], causes);
        validate_status(&object["status"], causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Min Available",
                "string",
                0,
                "The minimum number of pods that must be available.",
            ),
            Column::new(
                "Max Unavailable",
                "string",
                0,
                "The maximum number of pods that may be unavailable.",
            ),
            Column::new(
                "Allowed Disruptions",
                "integer",
                0,
                "Calculated number of pods that may be disrupted at this time.",
            ),
            age_column(),
        ])
    }

    fn cells(&self, object: &Value) -> Vec<Value> {
        let bound = |field: &str| match &object["spec"][field] {
            Value::Number(n) => json!(n.to_string()),
            Value::String(s) => json!(s),
            _ => json!("N/A"),
        };
        vec![
            json!(meta::name(object)),
            bound("minAvailable"),
            bound("maxUnavailable"),
            json!(object["status"]["disruptionsAllowed"].as_i64().unwrap_or(0)),
            age(object),
        ]
    }
}

/// Checks a budget's spec as kube-apiserver's `ValidatePodDisruptionBudgetSpec`.
pub fn validate_spec(spec: &Value, causes: &mut Vec<FieldCause>) {
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        causes.push(FieldCause::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (field, value) in [("minAvailable", min), ("maxUnavailable", max)] {
        if let Some(v) = value {
            validate_int_or_percent(v, &format!("spec.{field}"), causes);
        }
    }
    if let Some(selector) = spec.get("selector").filter(|v| !v.is_null()) {
        validation::label_selector_causes(selector, "spec.selector", causes);
    }
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .and_then(Value::as_str)
        && !UNHEALTHY_POD_EVICTION_POLICIES.contains(&policy)
    {
        causes.push(FieldCause::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            UNHEALTHY_POD_EVICTION_POLICIES,
        ));
    }
}

/// Checks the counters of a status (kube's `ValidatePodDisruptionBudgetStatusUpdate`:
/// none may be negative).
fn validate_status(status: &Value, causes: &mut Vec<FieldCause>) {
    for field in [
        "disruptionsAllowed",
        "currentHealthy",
        "desiredHealthy",
        "expectedPods",
    ] {
        if let Some(n) = status[field].as_i64()
            && n < 0
        {
            causes.push(negative(&format!("status.{field}"), n));
        }
    }
}

fn negative(field: &str, n: i64) -> FieldCause {
    FieldCause {
        field: field.to_string(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: {n}: must be greater than or equal to 0"),
    }
}

/// A non-negative integer, or a percentage (`[0-9]+%`) of at most 100 %, as kube's
/// `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
pub fn validate_int_or_percent(value: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    match value {
        Value::Number(n) => {
            if let Some(n) = n.as_i64()
                && n < 0
            {
                causes.push(negative(field, n));
            }
        }
        Value::String(s) => match parse_percent(s) {
            None => causes.push(FieldCause::invalid(
                field,
                s,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
            Some(p) if p > 100 => {
                causes.push(FieldCause::invalid(field, s, "must not be greater than 100%"))
            }
            Some(_) => {}
        },
        other => causes.push(FieldCause::invalid(
            field,
            other,
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

/// The number of a percentage such as `50%`.
pub fn parse_percent(s: &str) -> Option<u64> {
    let digits = s.strip_suffix('%')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.parse().unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(spec: Value) -> Vec<FieldCause> {
        let mut causes = Vec::new();
        validate_spec(&spec, &mut causes);
        causes
    }

    #[test]
    fn min_available_and_max_unavailable_are_exclusive() {
        let causes = causes_of(json!({"minAvailable": 1, "maxUnavailable": 1}));
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec");
        assert!(
            causes[0]
                .message
                .ends_with("minAvailable and maxUnavailable cannot be both set"),
            "{}",
            causes[0].message
        );
    }

    #[test]
    fn bounds_are_non_negative_integers_or_percentages_up_to_100() {
        assert!(causes_of(json!({"minAvailable": 0})).is_empty());
        assert!(causes_of(json!({"maxUnavailable": "100%"})).is_empty());
        assert!(causes_of(json!({"minAvailable": "0%"})).is_empty());
        let negative = causes_of(json!({"minAvailable": -1}));
        assert_eq!(negative[0].field, "spec.minAvailable");
        assert_eq!(
            negative[0].message,
            "Invalid value: -1: must be greater than or equal to 0"
        );
        let over = causes_of(json!({"maxUnavailable": "101%"}));
        assert!(over[0].message.ends_with("must not be greater than 100%"));
        let not_percent = causes_of(json!({"minAvailable": "half"}));
        assert!(
            not_percent[0]
                .message
                .contains("a valid percent string must be a numeric string")
        );
    }

    #[test]
    fn selectors_and_policies_are_checked() {
        let bad = causes_of(json!({
            "selector": {"matchExpressions": [
                {"key": "app", "operator": "In"},
                {"key": "app", "operator": "Exists", "values": ["x"]},
                {"key": "app", "operator": "Near", "values": ["x"]},
            ]},
            "unhealthyPodEvictionPolicy": "Sometimes",
        }));
        let fields: Vec<&str> = bad.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.selector.matchExpressions[0].values",
                "spec.selector.matchExpressions[1].values",
                "spec.selector.matchExpressions[2].operator",
                "spec.unhealthyPodEvictionPolicy",
            ]
        );
        assert_eq!(bad[3].reason, "FieldValueNotSupported");
        assert!(
            causes_of(json!({"selector": {"matchLabels": {"app": "web"}}, "unhealthyPodEvictionPolicy": "AlwaysAllow"}))
                .is_empty()
        );
    }

    #[test]
    fn columns_print_bounds_and_allowed_disruptions() {
        let pdb = json!({
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 2},
            "status": {"disruptionsAllowed": 1},
        });
        let cells = PodDisruptionBudgets.cells(&pdb);
        assert_eq!(
            cells[..4],
            [json!("web"), json!("2"), json!("N/A"), json!(1)]
        );
    }
}

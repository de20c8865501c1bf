//! Node selector requirements (`v1.NodeSelectorRequirement`), as kube-scheduler's
//! `NodeSelectorRequirementsAsSelector` reads them: shared by the DaemonSet and volume
//! controllers and the scheduler's volume binding.

use k8s_openapi::api::core::v1::NodeSelectorRequirement;

/// Whether the node's `value` for the requirement's key (`None`: the node lacks it) satisfies
/// the requirement: `In`, `NotIn`, `Exists`, `DoesNotExist`, and the integer `Gt`/`Lt`.
pub fn requirement_holds(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => match (
            value.and_then(|v| v.parse::<i64>().ok()),
            values.first().and_then(|l| l.parse::<i64>().ok()),
        ) {
            (Some(v), Some(l)) => (r.operator == "Gt" && v > l) || (r.operator == "Lt" && v < l),
            _ => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: "k".into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn operators_hold_as_kube_reads_them() {
        assert!(requirement_holds(&req("In", &["a", "b"]), Some("b")));
        assert!(!requirement_holds(&req("In", &["a"]), None));
        assert!(requirement_holds(&req("NotIn", &["a"]), None));
        assert!(!requirement_holds(&req("NotIn", &["a"]), Some("a")));
        assert!(requirement_holds(&req("Exists", &[]), Some("x")));
        assert!(requirement_holds(&req("DoesNotExist", &[]), None));
        assert!(requirement_holds(&req("Gt", &["3"]), Some("4")));
        assert!(!requirement_holds(&req("Lt", &["3"]), Some("4")));
        assert!(!requirement_holds(&req("Gt", &["x"]), Some("4")));
        assert!(!requirement_holds(&req("Bogus", &[]), Some("4")));
    }
}

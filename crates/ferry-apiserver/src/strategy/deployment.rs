//! Deployments (`apps/v1`): declarative updates of ReplicaSets.
//!
//! Defaults as kube-apiserver's `SetDefaults_Deployment` (one replica, RollingUpdate with
//! 25% maxSurge and maxUnavailable, revisionHistoryLimit 10, progressDeadlineSeconds 600) and
//! the pod template's; validation as `ValidateDeployment` (selector and template as
//! ReplicaSets, strategy, maxSurge and maxUnavailable not both 0, progress deadline beyond
//! minReadySeconds) and an immutable selector on update.

use serde_json::{Value, json};

use super::replicaset::{
    containers_and_images, containers_column, default_pod_template, format_selector, images_column,
    immutable_selector, selector_column, validate_selector_and_template,
};
use super::{Strategy, age, age_column, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation::non_negative;

/// The strategy of Deployments.
pub struct Deployments;

impl Strategy for Deployments {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "deployments", "Deployment", true, &["deploy"])
                .with_status()
                .with_scale(".spec.replicas", ".status.replicas", None)
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::Deployment>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        set_defaults(object);
        object.as_object_mut().map(|o| o.remove("status"));
        Ok(())
    }

    fn prepare_for_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        set_defaults(new);
        if info.status {
            super::keep_field(old, new, "status");
        }
    }

    fn validate(&self, object: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &object["spec"];
        non_negative(&spec["replicas"], "spec.replicas", causes);
        validate_selector_and_template(spec, causes);
        validate_strategy(&spec["strategy"], causes);
        non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
        non_negative(
            &spec["revisionHistoryLimit"],
            "spec.revisionHistoryLimit",
            causes,
        );
        if let Some(deadline) = spec["progressDeadlineSeconds"].as_i64() {
            non_negative(
                &spec["progressDeadlineSeconds"],
                "spec.progressDeadlineSeconds",
                causes,
            );
            let min_ready = spec["minReadySeconds"].as_i64().unwrap_or(0);
            if deadline >= 0 && deadline <= min_ready {
                causes.push(FieldCause {
                    field: "spec.progressDeadlineSeconds".into(),
                    reason: "FieldValueInvalid",
                    message: format!(
                        "Invalid value: {deadline}: must be greater than minReadySeconds"
                    ),
                });
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        immutable_selector(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Ready", "string", 0, "Number of the pod with ready state"),
            Column::new(
                "Up-to-date",
                "string",
                0,
                "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
            ),
            Column::new(
                "Available",
                "string",
                0,
                "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
            ),
            age_column(),
            containers_column(),
            images_column(),
            selector_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let (containers, images) = containers_and_images(o);
        let status = &o["status"];
        let n = |v: &Value| v.as_i64().unwrap_or(0);
        vec![
            json!(meta::name(o)),
            json!(format!(
                "{}/{}",
                n(&status["readyReplicas"]),
                n(&o["spec"]["replicas"])
            )),
            json!(n(&status["updatedReplicas"])),
            json!(n(&status["availableReplicas"])),
            age(o),
            json!(containers),
            json!(images),
            json!(format_selector(&o["spec"]["selector"])),
        ]
    }
}

fn set_defaults(object: &mut Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.entry("replicas").or_insert(json!(1));
    let strategy = spec.entry("strategy").or_insert(json!({}));
    if !strategy.is_object() {
        *strategy = json!({});
    }
    if strategy["type"].as_str().unwrap_or_default().is_empty() {
        strategy["type"] = json!("RollingUpdate");
    }
    if strategy["type"] == "RollingUpdate" {
        if !strategy["rollingUpdate"].is_object() {
            strategy["rollingUpdate"] = json!({});
        }
        let r = &mut strategy["rollingUpdate"];
        if r["maxUnavailable"].is_null() {
            r["maxUnavailable"] = json!("25%");
        }
        if r["maxSurge"].is_null() {
            r["maxSurge"] = json!("25%");
        }
    }
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    spec.entry("progressDeadlineSeconds").or_insert(json!(600));
    if let Some(template) = spec.get_mut("template") {
        default_pod_template(template);
    }
}

/// An int-or-percent as Go's `%#v` prints an `intstr.IntOrString` in kube-apiserver's
/// messages.
fn go_int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => format!("intstr.IntOrString{{Type:1, IntVal:0, StrVal:{s:?}}}"),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or(0)
        ),
    }
}

/// The value an int-or-percent stands for, for the both-zero check (kube's
/// `getIntOrPercentValue`).
fn int_or_percent_value(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse().ok()),
        other => other.as_i64(),
    }
}

fn validate_int_or_percent(v: &Value, field: &str, causes: &mut Vec<FieldCause>) {
    match v {
        Value::String(s) => {
            let digits = s.strip_suffix('%').unwrap_or_default();
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                causes.push(FieldCause::invalid(
                    field,
                    s,
                    "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
                ));
            }
        }
        other => non_negative(other, field, causes),
    }
}

fn validate_strategy(strategy: &Value, causes: &mut Vec<FieldCause>) {
    let type_ = strategy["type"].as_str().unwrap_or_default();
    match type_ {
        "Recreate" => {
            if !strategy["rollingUpdate"].is_null() {
                causes.push(FieldCause::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let r = &strategy["rollingUpdate"];
            if r.is_null() {
                causes.push(FieldCause::required("spec.strategy.rollingUpdate"));
                return;
            }
            let unavailable = &r["maxUnavailable"];
            let surge = &r["maxSurge"];
            let at = "spec.strategy.rollingUpdate";
            validate_int_or_percent(unavailable, &format!("{at}.maxUnavailable"), causes);
            validate_int_or_percent(surge, &format!("{at}.maxSurge"), causes);
            if int_or_percent_value(unavailable) == Some(0)
                && int_or_percent_value(surge) == Some(0)
            {
                causes.push(FieldCause {
                    field: format!("{at}.maxUnavailable"),
                    reason: "FieldValueInvalid",
                    message: format!(
                        "Invalid value: {}: may not be 0 when `maxSurge` is 0",
                        go_int_or_string(unavailable)
                    ),
                });
            }
            if let Some(p) = unavailable
                .as_str()
                .and_then(|s| s.strip_suffix('%'))
                .and_then(|p| p.parse::<i64>().ok())
                .filter(|p| *p > 100)
            {
                causes.push(FieldCause::invalid(
                    format!("{at}.maxUnavailable"),
                    format!("{p}%"),
                    "must not be greater than 100%",
                ));
            }
        }
        other => causes.push(FieldCause::not_supported(
            "spec.strategy.type",
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "nginx:1.14.2"}]}
                }
            }
        })
    }

    fn causes_of(mut o: Value) -> Vec<FieldCause> {
        set_defaults(&mut o);
        let mut causes = Vec::new();
        Deployments.validate(&o, &mut causes);
        causes
    }

    #[test]
    fn defaults_are_kubes() {
        let mut o = deployment();
        set_defaults(&mut o);
        let spec = &o["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}})
        );
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        assert_eq!(
            spec["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert!(causes_of(deployment()).is_empty());
    }

    #[test]
    fn max_surge_and_max_unavailable_may_not_both_be_zero() {
        let mut o = deployment();
        o["spec"]["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
        let causes = causes_of(o);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].field,
            "spec.strategy.rollingUpdate.maxUnavailable"
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"0%\"}: may not be 0 when `maxSurge` is 0"
        );
    }

    #[test]
    fn bad_strategies_and_numbers_are_rejected() {
        let mut o = deployment();
        o["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
        assert_eq!(causes_of(o)[0].field, "spec.strategy.rollingUpdate");
        let mut o = deployment();
        o["spec"]["strategy"] = json!({"type": "Blue"});
        assert_eq!(causes_of(o)[0].reason, "FieldValueNotSupported");
        let mut o = deployment();
        o["spec"]["replicas"] = json!(-2);
        o["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": "x%"}});
        let causes = causes_of(o);
        assert_eq!(causes[0].field, "spec.replicas");
        assert_eq!(causes[1].field, "spec.strategy.rollingUpdate.maxSurge");
        let mut o = deployment();
        o["spec"]["minReadySeconds"] = json!(30);
        o["spec"]["progressDeadlineSeconds"] = json!(10);
        assert_eq!(causes_of(o)[0].field, "spec.progressDeadlineSeconds");
    }

    #[test]
    fn rows_show_ready_up_to_date_and_available() {
        let mut o = deployment();
        set_defaults(&mut o);
        o["status"] = json!({"readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1});
        let cells = Deployments.cells(&o);
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], 1);
        assert_eq!(cells[7], "app=web");
    }
}

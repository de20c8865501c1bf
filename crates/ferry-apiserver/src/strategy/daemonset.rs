//! DaemonSets (`apps/v1`): one pod on every matching node.
//!
//! Defaults as `SetDefaults_DaemonSet` (`RollingUpdate` with maxUnavailable 1 and maxSurge 0,
//! revisionHistoryLimit 10, the template's restart and DNS policies); validation as
//! `ValidateDaemonSet` (a non-empty selector matching the template's labels, `restartPolicy:
//! Always`, a rolling update that can make progress); the selector may not change. Columns:
//! NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE (`-o wide`: CONTAINERS
//! IMAGES SELECTOR).

use serde_json::{Value, json};

use super::statefulset::{
    containers_and_images, default_template, invalid_raw, non_negative,
    validate_selector_and_template,
};
use super::{Strategy, age_column, name_column, object_field};
use crate::error::{ApiResult, FieldCause};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The strategy of DaemonSets.
pub struct DaemonSets;

/// kube's defaults (`SetDefaults_DaemonSet`), applied on every write as decoding does.
fn set_defaults(object: &mut Value) {
    let spec = object_field(object, "spec");
    spec.entry("revisionHistoryLimit").or_insert(json!(10));
    let strategy = spec.entry("updateStrategy").or_insert_with(|| json!({}));
    if let Some(s) = strategy.as_object_mut() {
        s.entry("type").or_insert(json!("RollingUpdate"));
        if s.get("type") == Some(&json!("RollingUpdate")) {
            let rolling = s.entry("rollingUpdate").or_insert_with(|| json!({}));
            if !rolling.is_object() {
                *rolling = json!({});
            }
            if let Some(r) = rolling.as_object_mut() {
                r.entry("maxUnavailable").or_insert(json!(1));
                r.entry("maxSurge").or_insert(json!(0));
            }
        }
    }
    default_template(spec);
}

/// An int-or-percent value: its number and whether it is a percentage (`None`: malformed).
fn int_or_percent(v: &Value) -> Option<(i64, bool)> {
    match v {
        Value::Number(n) => n.as_i64().map(|n| (n, false)),
        Value::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map(|p| (p, true)),
        _ => None,
    }
}

/// Checks maxUnavailable or maxSurge (`ValidatePositiveIntOrPercent`, `IsNotMoreThan100Percent`).
fn check_int_or_percent(v: &Value, field: &str, causes: &mut Vec<FieldCause>) -> i64 {
    if v.is_null() {
        return 0;
    }
    match int_or_percent(v) {
        None => {
            causes.push(FieldCause::invalid(
                field,
                v.as_str().unwrap_or_default(),
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            ));
            0
        }
        Some((n, _)) if n < 0 => {
            let raw = if v.is_string() {
                json!(v).to_string()
            } else {
                n.to_string()
            };
            causes.push(invalid_raw(
                field,
                &raw,
                "must be greater than or equal to 0",
            ));
            0
        }
        Some((n, true)) if n > 100 => {
            causes.push(invalid_raw(
                field,
                &json!(v).to_string(),
                "must not be greater than 100%",
            ));
            n
        }
        Some((n, _)) => n,
    }
}

impl Strategy for DaemonSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::DaemonSet>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if let Some(o) = object.as_object_mut() {
            o.remove("status");
        }
        set_defaults(object);
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        set_defaults(new);
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &o["spec"];
        validate_selector_and_template(spec, "DaemonSet", &[], causes);
        non_negative(&spec["minReadySeconds"], "spec.minReadySeconds", causes);
        non_negative(
            &spec["revisionHistoryLimit"],
            "spec.revisionHistoryLimit",
            causes,
        );
        let strategy = &spec["updateStrategy"];
        match strategy["type"].as_str().unwrap_or("RollingUpdate") {
            "RollingUpdate" => {
                let rolling = &strategy["rollingUpdate"];
                let at = "spec.updateStrategy.rollingUpdate";
                let unavailable = check_int_or_percent(
                    &rolling["maxUnavailable"],
                    &format!("{at}.maxUnavailable"),
                    causes,
                );
                let surge =
                    check_int_or_percent(&rolling["maxSurge"], &format!("{at}.maxSurge"), causes);
                if unavailable == 0 && surge == 0 {
                    causes.push(invalid_raw(
                        format!("{at}.maxUnavailable"),
                        &rolling["maxUnavailable"].to_string(),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
            "OnDelete" => {}
            other => causes.push(FieldCause::not_supported(
                "spec.updateStrategy.type",
                other,
                &["OnDelete", "RollingUpdate"],
            )),
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old["spec"]["selector"] != new["spec"]["selector"] {
            causes.push(FieldCause::invalid(
                "spec.selector",
                new["spec"]["selector"].to_string(),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Desired",
                "integer",
                0,
                "The total number of nodes that should be running the daemon pod.",
            ),
            Column::new(
                "Current",
                "integer",
                0,
                "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
            ),
            Column::new(
                "Ready",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
            ),
            Column::new(
                "Up-to-date",
                "integer",
                0,
                "The total number of nodes that are running updated daemon pod",
            ),
            Column::new(
                "Available",
                "integer",
                0,
                "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)",
            ),
            Column::new(
                "Node Selector",
                "string",
                0,
                "NodeSelector is a selector which must be true for the pod to fit on a node.",
            ),
            age_column(),
            Column::new(
                "Containers",
                "string",
                1,
                "Names of each container in the template.",
            ),
            Column::new(
                "Images",
                "string",
                1,
                "Images referenced by each container in the template.",
            ),
            Column::new(
                "Selector",
                "string",
                1,
                "A label query over pods that are managed by the daemon set.",
            ),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let status = &o["status"];
        let n = |f: &str| json!(status[f].as_i64().unwrap_or(0));
        let node_selector: Vec<String> = o["spec"]["template"]["spec"]["nodeSelector"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect();
        let (containers, images) = containers_and_images(o);
        vec![
            json!(crate::meta::name(o)),
            n("desiredNumberScheduled"),
            n("currentNumberScheduled"),
            n("numberReady"),
            n("updatedNumberScheduled"),
            n("numberAvailable"),
            json!(super::or_none(&node_selector.join(","))),
            super::age(o),
            containers,
            images,
            json!(selector_text(&o["spec"]["selector"])),
        ]
    }
}

/// A label selector as kubectl prints it (`app=x,tier in (a,b)`).
pub(crate) fn selector_text(selector: &Value) -> String {
    let mut parts: Vec<String> = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds() -> Value {
        json!({
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "a", "image": "busybox"}],
                             "nodeSelector": {"disk": "ssd"}}
                }
            }
        })
    }

    #[test]
    fn defaults_and_validation() {
        let mut o = ds();
        set_defaults(&mut o);
        assert_eq!(
            o["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
        );
        let mut c = Vec::new();
        DaemonSets.validate(&o, &mut c);
        assert_eq!(c, vec![]);
        o["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = json!(0);
        DaemonSets.validate(&o, &mut c);
        assert_eq!(
            c[0].field,
            "spec.updateStrategy.rollingUpdate.maxUnavailable"
        );
        assert!(c[0].message.contains("may not be 0 when `maxSurge` is 0"));
    }

    #[test]
    fn the_selector_is_immutable() {
        let old = ds();
        let mut new = ds();
        new["spec"]["selector"]["matchLabels"]["app"] = json!("x");
        let mut c = Vec::new();
        DaemonSets.validate_update(&old, &new, &mut c);
        assert_eq!(c[0].field, "spec.selector");
        assert!(c[0].message.ends_with("field is immutable"));
    }

    #[test]
    fn columns_show_the_counts_and_node_selector() {
        let mut o = ds();
        o["status"] = json!({"desiredNumberScheduled": 2, "currentNumberScheduled": 2,
            "numberReady": 1, "updatedNumberScheduled": 2, "numberAvailable": 1});
        let cells = DaemonSets.cells(&o);
        assert_eq!(
            &cells[1..6],
            &[json!(2), json!(2), json!(1), json!(2), json!(1)]
        );
        assert_eq!(cells[6], json!("disk=ssd"));
        assert_eq!(cells[10], json!("app=agent"));
    }
}

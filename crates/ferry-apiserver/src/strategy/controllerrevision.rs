//! ControllerRevisions (`apps/v1`): immutable snapshots of a StatefulSet's or DaemonSet's template.
//!
//! Validation as `ValidateControllerRevision`: `data` is required and may never change
//! (`revision` may: controllers renumber a revision that becomes current again), `revision`
//! is not negative. Columns: NAME CONTROLLER REVISION AGE, the controller printed as
//! `<kind>.<group>/<name>` (`statefulset.apps/web`).

use serde_json::{Value, json};

use super::statefulset::non_negative;
use super::{Strategy, age_column, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of ControllerRevisions.
pub struct ControllerRevisions;

impl Strategy for ControllerRevisions {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "apps",
            "v1",
            "controllerrevisions",
            "ControllerRevision",
            true,
            &[],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::ControllerRevision>(info, object)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        if o["data"].is_null() {
            causes.push(FieldCause {
                field: "data".into(),
                reason: "FieldValueRequired",
                message: "Required value: data is mandatory".into(),
            });
        }
        non_negative(&o["revision"], "revision", causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old["data"] != new["data"] {
            causes.push(FieldCause::invalid(
                "data",
                new["data"].to_string(),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Controller", "string", 0, "Controller of the object."),
            Column::new(
                "Revision",
                "integer",
                0,
                "Revision indicates the revision of the state represented by Data.",
            ),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let controller = o["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["controller"].as_bool() == Some(true))
            .map_or_else(
                || "<none>".to_string(),
                |r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .unwrap_or_default()
                        .rsplit_once('/')
                        .map_or("", |(g, _)| g);
                    let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                    let name = r["name"].as_str().unwrap_or_default();
                    if group.is_empty() {
                        format!("{kind}/{name}")
                    } else {
                        format!("{kind}.{group}/{name}")
                    }
                },
            );
        vec![
            json!(crate::meta::name(o)),
            json!(controller),
            json!(o["revision"].as_i64().unwrap_or(0)),
            super::age(o),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_required_and_immutable() {
        let mut c = Vec::new();
        ControllerRevisions.validate(&json!({"metadata": {"name": "r"}, "revision": -1}), &mut c);
        let fields: Vec<&str> = c.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["data", "revision"]);
        let old = json!({"data": {"a": 1}, "revision": 1});
        let mut c = Vec::new();
        ControllerRevisions.validate_update(
            &old,
            &json!({"data": {"a": 1}, "revision": 3}),
            &mut c,
        );
        assert!(c.is_empty());
        ControllerRevisions.validate_update(
            &old,
            &json!({"data": {"a": 2}, "revision": 1}),
            &mut c,
        );
        assert_eq!(c[0].field, "data");
    }

    #[test]
    fn the_controller_column_names_the_owner() {
        let o = json!({"metadata": {"name": "web-abc", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true, "uid": "u"}
        ]}, "revision": 2});
        let cells = ControllerRevisions.cells(&o);
        assert_eq!(cells[1], json!("statefulset.apps/web"));
        assert_eq!(cells[2], json!(2));
    }
}

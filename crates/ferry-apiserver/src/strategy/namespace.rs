//! Namespaces: the `kubernetes` finalizer, the Terminating phase, and deletion finished by the
//! namespace controller.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, keep_field, name_column, str_at};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// The strategy of namespaces.
pub struct Namespaces;

impl Strategy for Namespaces {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("", "v1", "namespaces", "Namespace", false, &["ns"])
                .with_status()
                .with_subresources(&["finalize"]),
        )
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        validation::dns_label_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Namespace>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        body["spec"] = json!({"finalizers": ["kubernetes"]});
        body["status"] = json!({"phase": "Active"});
        Ok(())
    }

    fn prepare_for_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        if info.status {
            keep_field(old, new, "status");
        }
        // A namespace's spec.finalizers change only through its controller.
        if old.get("spec").is_some() {
            keep_field(old, new, "spec");
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Status", "string", 0, "The status of the namespace."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/status/phase")),
            age(o),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.phase"]
    }

    /// The namespace controller empties a namespace, then clears `spec.finalizers` through
    /// `finalize`; the server removes it once they are gone.
    fn awaits_termination(&self, object: &Value, _grace: i64) -> bool {
        object["spec"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    }

    fn mark_deleting(&self, object: &mut Value) {
        object["status"]["phase"] = json!("Terminating");
    }
}

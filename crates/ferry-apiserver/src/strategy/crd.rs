//! CustomResourceDefinitions: accepted names and conditions on create, and serving (or no
//! longer serving) their resources after each write.

use serde_json::{Value, json};

use super::{Strategy, name_column};
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta;
use crate::registry::{Registry, ResourceInfo};
use crate::service::Service;
use crate::table::Column;

/// The strategy of CustomResourceDefinitions.
pub struct CustomResourceDefinitions;

impl Strategy for CustomResourceDefinitions {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "apiextensions.k8s.io",
                "v1",
                "customresourcedefinitions",
                "CustomResourceDefinition",
                false,
                &["crd", "crds"],
            )
            .with_status(),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        let resources = Registry::resources_of_crd(body).map_err(|p| {
            ApiError::invalid(
                &info.group,
                &info.kind,
                meta::name(body),
                vec![FieldCause {
                    field: p.field,
                    reason: "FieldValueInvalid",
                    message: p.message,
                }],
            )
        })?;
        let names = body["spec"]["names"].clone();
        let mut accepted = names;
        if let Some(first) = resources.first() {
            accepted["singular"] = json!(first.singular);
            accepted["listKind"] = json!(format!("{}List", first.kind));
        }
        let now = meta::now_time();
        body["status"] = json!({
            "acceptedNames": accepted,
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "message": "no conflicts found", "lastTransitionTime": now},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "message": "the initial names have been accepted", "lastTransitionTime": now},
            ],
            "storedVersions": body["spec"]["versions"].as_array().into_iter().flatten()
                .filter(|v| v["storage"] == json!(true)).map(|v| v["name"].clone()).collect::<Vec<_>>(),
        });
        Ok(())
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Created At", "date", 0, "When the definition was created."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            json!(meta::meta_str(o, "creationTimestamp")),
        ]
    }

    fn after_write(&self, service: &Service, object: &Value) {
        match Registry::resources_of_crd(object) {
            Ok(resources) => service.registry.register_crd(meta::name(object), resources),
            Err(p) => tracing::warn!(problem = %p.message, "CRD stored but not served"),
        }
    }

    fn after_delete(&self, service: &Service, object: &Value) {
        service.registry.unregister_crd(meta::name(object));
    }
}

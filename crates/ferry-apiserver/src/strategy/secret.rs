//! Secrets: the `Opaque` type by default.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, count, name_column, str_at};
use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The strategy of Secrets.
pub struct Secrets;

impl Strategy for Secrets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "",
            "v1",
            "secrets",
            "Secret",
            true,
            &[],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Secret>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        let obj = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("a Secret must be an object"))?;
        if obj
            .get("type")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj.insert("type".into(), json!("Opaque"));
        }
        Ok(())
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Type", "string", 0, "The type of the secret."),
            Column::new("Data", "string", 0, "Number of data entries."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/type")),
            json!(count(&o["data"])),
            age(o),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["type"]
    }
}

//! ConfigMaps.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, count, name_column};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of ConfigMaps.
pub struct ConfigMaps;

impl Strategy for ConfigMaps {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "",
            "v1",
            "configmaps",
            "ConfigMap",
            true,
            &["cm"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::ConfigMap>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Data", "string", 0, "Number of data entries."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let n = count(&o["data"]) + count(&o["binaryData"]);
        vec![json!(meta::name(o)), json!(n), age(o)]
    }
}

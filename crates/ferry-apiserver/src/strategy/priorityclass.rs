//! PriorityClasses (`scheduling.k8s.io`).

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of PriorityClasses.
pub struct PriorityClasses;

impl Strategy for PriorityClasses {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "scheduling.k8s.io",
            "v1",
            "priorityclasses",
            "PriorityClass",
            false,
            &["pc"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::scheduling::v1::PriorityClass>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Value", "string", 0, "The priority value."),
            Column::new(
                "Global-Default",
                "string",
                0,
                "Whether this is the default class.",
            ),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            o["value"].clone(),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            age(o),
        ]
    }
}

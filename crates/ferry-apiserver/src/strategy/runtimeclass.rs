//! RuntimeClasses (`node.k8s.io`): which container runtime a pod's `runtimeClassName` picks.
//! Ferry's agent knows the handlers `host` (its host-process runtime) and any handler of the
//! containerd it is configured with (`runc`); see `docs/runtimes.md`.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of RuntimeClasses.
pub struct RuntimeClasses;

impl Strategy for RuntimeClasses {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "node.k8s.io",
            "v1",
            "runtimeclasses",
            "RuntimeClass",
            false,
            &[],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::node::v1::RuntimeClass>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new(
                "Handler",
                "string",
                0,
                "The container runtime handler the class selects.",
            ),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![json!(meta::name(o)), o["handler"].clone(), age(o)]
    }
}

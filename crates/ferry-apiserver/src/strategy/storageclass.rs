//! StorageClasses (`storage.k8s.io/v1`): how volumes are provisioned.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of StorageClasss.
pub struct StorageClasses;

impl Strategy for StorageClasses {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
            &["sc"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::storage::v1::StorageClass>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

//! PersistentVolumes: storage of the cluster.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of PersistentVolumes.
pub struct PersistentVolumes;

impl Strategy for PersistentVolumes {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "",
                "v1",
                "persistentvolumes",
                "PersistentVolume",
                false,
                &["pv"],
            )
            .with_status(),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::PersistentVolume>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

//! Jobs (`batch/v1`): pods run to completion.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of Jobs.
pub struct Jobs;

impl Strategy for Jobs {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("batch", "v1", "jobs", "Job", true, &[])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::batch::v1::Job>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

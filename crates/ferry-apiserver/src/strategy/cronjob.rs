//! CronJobs (`batch/v1`): Jobs created on a schedule.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of CronJobs.
pub struct CronJobs;

impl Strategy for CronJobs {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("batch", "v1", "cronjobs", "CronJob", true, &["cj"])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::batch::v1::CronJob>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

//! DaemonSets (`apps/v1`): one pod on every matching node.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of DaemonSets.
pub struct DaemonSets;

impl Strategy for DaemonSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"])
                .with_status()
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::DaemonSet>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

//! StatefulSets (`apps/v1`): pods with stable names, DNS and claims.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of StatefulSets.
pub struct StatefulSets;

impl Strategy for StatefulSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "statefulsets", "StatefulSet", true, &["sts"])
                .with_status()
                .with_scale(".spec.replicas", ".status.replicas", None)
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::StatefulSet>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

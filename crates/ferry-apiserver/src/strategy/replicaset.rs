//! ReplicaSets (`apps/v1`): a number of identical pods.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of ReplicaSets.
pub struct ReplicaSets;

impl Strategy for ReplicaSets {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("apps", "v1", "replicasets", "ReplicaSet", true, &["rs"])
                .with_status()
                .with_scale(".spec.replicas", ".status.replicas", None)
                .in_category("all"),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::apps::v1::ReplicaSet>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

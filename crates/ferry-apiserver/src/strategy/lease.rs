//! Leases (`coordination.k8s.io`), used for leader election and node heartbeats.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of Leases.
pub struct Leases;

impl Strategy for Leases {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "coordination.k8s.io",
            "v1",
            "leases",
            "Lease",
            true,
            &[],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::coordination::v1::Lease>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Holder", "string", 0, "The holder of the lease."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/spec/holderIdentity")),
            age(o),
        ]
    }
}

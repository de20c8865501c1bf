//! Custom resources: validated and pruned by their CRD's schema; the status is written only
//! through the status subresource when the CRD has one; the CRD's printer columns.

use serde_json::Value;

use super::Strategy;
use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::validation;

/// The strategy of every custom resource.
pub struct CustomResources;

impl Strategy for CustomResources {
    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        let Some(schema) = &info.schema else {
            return Ok(Vec::new());
        };
        let mut causes = Vec::new();
        let pruned = validation::validate_schema(object, schema, "", &mut causes);
        if !causes.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                crate::meta::name(object),
                causes,
            ));
        }
        Ok(pruned)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        if info.status {
            body.as_object_mut().map(|o| o.remove("status"));
        }
        Ok(())
    }
}

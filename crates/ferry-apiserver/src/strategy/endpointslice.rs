//! EndpointSlices (`discovery.k8s.io/v1`): the endpoints of a Service in slices, kept by the
//! endpointslice controller; what the Service proxy and the cluster DNS read.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of EndpointSlices.
pub struct EndpointSlices;

const ADDRESS_TYPES: &[&str] = &["IPv4", "IPv6", "FQDN"];

impl Strategy for EndpointSlices {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "discovery.k8s.io",
            "v1",
            "endpointslices",
            "EndpointSlice",
            true,
            &[],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::discovery::v1::EndpointSlice>(info, object)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let ty = str_at(o, "/addressType");
        if ty.is_empty() {
            causes.push(FieldCause::required("addressType"));
        } else if !ADDRESS_TYPES.contains(&ty) {
            causes.push(FieldCause::not_supported("addressType", ty, ADDRESS_TYPES));
        }
        for (i, e) in o["endpoints"].as_array().into_iter().flatten().enumerate() {
            if e["addresses"].as_array().is_none_or(Vec::is_empty) {
                causes.push(FieldCause::required(format!("endpoints[{i}].addresses")));
            }
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        if old["addressType"] != new["addressType"] {
            causes.push(FieldCause::invalid(
                "addressType",
                str_at(new, "/addressType"),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("AddressType", "string", 0, "Type of the addresses."),
            Column::new("Ports", "string", 0, "Ports of the endpoints."),
            Column::new("Endpoints", "string", 0, "Addresses of the endpoints."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let ports: Vec<String> = o["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64().map(|n| n.to_string()))
            .collect();
        let ports = if ports.is_empty() {
            "<unset>".to_string()
        } else {
            ports.join(",")
        };
        let addresses: Vec<String> = o["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect();
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/addressType")),
            json!(ports),
            json!(super::endpoints::summarize(&addresses)),
            age(o),
        ]
    }
}

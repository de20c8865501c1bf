//! Endpoints (core/v1): the addresses behind a Service, kept by the endpoints controller
//! (or by the user, for a Service without a selector).

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;
use crate::validation;

/// The strategy of Endpoints.
pub struct Endpoints;

/// `ip:port` pairs as kubectl prints them: the first three, then "+ N more...".
pub fn summarize(pairs: &[String]) -> String {
    if pairs.is_empty() {
        return "<none>".into();
    }
    let shown = pairs.iter().take(3).cloned().collect::<Vec<_>>().join(",");
    if pairs.len() > 3 {
        format!("{shown} + {} more...", pairs.len() - 3)
    } else {
        shown
    }
}

impl Strategy for Endpoints {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "",
            "v1",
            "endpoints",
            "Endpoints",
            true,
            &["ep"],
        ))
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        validation::dns_subdomain_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Endpoints>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Endpoints", "string", 0, "Endpoints of the service."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let mut pairs = Vec::new();
        for subset in o["subsets"].as_array().into_iter().flatten() {
            let ports: Vec<&Value> = subset["ports"].as_array().into_iter().flatten().collect();
            for a in subset["addresses"].as_array().into_iter().flatten() {
                let ip = a["ip"].as_str().unwrap_or_default();
                if ports.is_empty() {
                    pairs.push(ip.to_string());
                }
                for p in &ports {
                    pairs.push(format!("{ip}:{}", p["port"]));
                }
            }
        }
        vec![json!(meta::name(o)), json!(summarize(&pairs)), age(o)]
    }
}

//! Services: a cluster IP from the service range, port defaults.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, object_field, or_none, str_at};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

/// The strategy of Services.
pub struct Services;

impl Strategy for Services {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("", "v1", "services", "Service", true, &["svc"])
                .with_status()
                .in_category("all"),
        )
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        validation::dns_label_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Service>(info, object)
    }

    fn prepare_for_create(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        body: &mut Value,
    ) -> ApiResult<()> {
        let spec = object_field(body, "spec");
        spec.entry("type").or_insert(json!("ClusterIP"));
        spec.entry("sessionAffinity").or_insert(json!("None"));
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        if !headless
            && spec
                .get("clusterIP")
                .and_then(Value::as_str)
                .is_none_or(str::is_empty)
        {
            let ip = service.allocate_service_ip();
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
        for port in spec
            .get_mut("ports")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(p) = port.as_object_mut() {
                p.entry("protocol").or_insert(json!("TCP"));
                if let Some(n) = p.get("port").cloned() {
                    p.entry("targetPort").or_insert(n);
                }
            }
        }
        body["status"] = json!({"loadBalancer": {}});
        Ok(())
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Type", "string", 0, "The type of the service."),
            Column::new("Cluster-IP", "string", 0, "The cluster IP of the service."),
            Column::new(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            Column::new("Port(s)", "string", 0, "The ports of the service."),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let ports: Vec<String> = o["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP")))
            .collect();
        let ports = if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports.join(",")
        };
        vec![
            json!(meta::name(o)),
            json!(str_at(o, "/spec/type")),
            json!(or_none(str_at(o, "/spec/clusterIP"))),
            json!("<none>"),
            json!(ports),
            age(o),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.clusterIP", "spec.type"]
    }
}

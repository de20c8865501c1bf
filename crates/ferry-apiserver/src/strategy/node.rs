//! Nodes: status written by their agents, and the `kubectl get nodes` columns (GPUs included).

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::error::ApiResult;
use crate::meta;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of nodes.
pub struct Nodes;

impl Strategy for Nodes {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin("", "v1", "nodes", "Node", false, &["no"]).with_status())
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::Node>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Status", "string", 0, "The status of the node."),
            Column::new("Roles", "string", 0, "The roles of the node."),
            age_column(),
            Column::new("Version", "string", 0, "Version of the node agent."),
            Column::new(
                "GPUs",
                "string",
                0,
                "Allocatable GPUs (nvidia.com/gpu) and their model.",
            ),
            Column::new("Internal-IP", "string", 1, "Internal IP of the node."),
            Column::new("External-IP", "string", 1, "External IP of the node."),
            Column::new("OS-Image", "string", 1, "OS image reported by the node."),
            Column::new(
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            Column::new(
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let ready = o["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["status"] == "True");
        let mut status = match ready {
            Some(true) => "Ready".to_string(),
            Some(false) => "NotReady".to_string(),
            None => "Unknown".to_string(),
        };
        if o["spec"]["unschedulable"].as_bool() == Some(true) {
            status.push_str(",SchedulingDisabled");
        }
        let roles: Vec<&str> = meta::metadata(o)
            .get("labels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
            .collect();
        let roles = if roles.is_empty() {
            "<none>".to_string()
        } else {
            roles.join(",")
        };
        let gpus = str_at(o, "/status/allocatable/nvidia.com~1gpu");
        let model = o
            .pointer("/metadata/labels")
            .and_then(|l| l.get(ferry_api::gpu::NODE_MODEL_LABEL))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let gpus = match (gpus, model) {
            ("", _) | ("0", _) => "0".to_string(),
            (n, "") => n.to_string(),
            (n, m) => format!("{n}x{m}"),
        };
        let address = |t: &str| {
            o["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == t)
                .and_then(|a| a["address"].as_str())
                .unwrap_or("<none>")
                .to_string()
        };
        vec![
            json!(meta::name(o)),
            json!(status),
            json!(roles),
            age(o),
            json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
            json!(gpus),
            json!(address("InternalIP")),
            json!(address("ExternalIP")),
            json!(str_at(o, "/status/nodeInfo/osImage")),
            json!(str_at(o, "/status/nodeInfo/kernelVersion")),
            json!(str_at(o, "/status/nodeInfo/containerRuntimeVersion")),
        ]
    }

    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
}

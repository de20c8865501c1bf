//! Server-side printing: `meta.k8s.io/v1` Tables, the columns `kubectl get` shows.

use serde_json::{Value, json};

use crate::meta::{self, human_age, json_path};
use crate::registry::ResourceInfo;

/// What a Table row carries besides its cells (`includeObject`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// Nothing.
    None,
    /// The object's metadata (`PartialObjectMetadata`), the default.
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Parses the query parameter.
    pub fn parse(s: &str) -> Self {
        match s {
            "None" => Self::None,
            "Object" => Self::Object,
            _ => Self::Metadata,
        }
    }
}

struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i32,
    description: &'static str,
}

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: i32,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        priority,
        description,
    }
}

fn builtin_columns(info: &ResourceInfo) -> Option<Vec<Column>> {
    let name = col(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    );
    let age = col("Age", "string", 0, "Time since the object was created.");
    Some(match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => vec![
            name,
            col(
                "Ready",
                "string",
                0,
                "The aggregate readiness state of this pod for accepting traffic.",
            ),
            col(
                "Status",
                "string",
                0,
                "The aggregate status of the containers in this pod.",
            ),
            col(
                "Restarts",
                "string",
                0,
                "The number of times the containers in this pod have been restarted.",
            ),
            age,
            col("IP", "string", 1, "IP address allocated to the pod."),
            col(
                "Node",
                "string",
                1,
                "Name of the node the pod is assigned to.",
            ),
            col(
                "Nominated Node",
                "string",
                1,
                "Node the scheduler nominated for this pod.",
            ),
            col(
                "Readiness Gates",
                "string",
                1,
                "Readiness gates of the pod.",
            ),
        ],
        ("", "nodes") => vec![
            name,
            col("Status", "string", 0, "The status of the node."),
            col("Roles", "string", 0, "The roles of the node."),
            age,
            col("Version", "string", 0, "Version of the node agent."),
            col(
                "GPUs",
                "string",
                0,
                "Allocatable GPUs (nvidia.com/gpu) and their model.",
            ),
            col("Internal-IP", "string", 1, "Internal IP of the node."),
            col("External-IP", "string", 1, "External IP of the node."),
            col("OS-Image", "string", 1, "OS image reported by the node."),
            col(
                "Kernel-Version",
                "string",
                1,
                "Kernel version reported by the node.",
            ),
            col(
                "Container-Runtime",
                "string",
                1,
                "Container runtime reported by the node.",
            ),
        ],
        ("", "namespaces") => vec![
            name,
            col("Status", "string", 0, "The status of the namespace."),
            age,
        ],
        ("", "events") => vec![
            col(
                "Last Seen",
                "string",
                0,
                "Time since the event was last seen.",
            ),
            col("Type", "string", 0, "Type of the event."),
            col("Reason", "string", 0, "Why the event happened."),
            col("Object", "string", 0, "The object the event is about."),
            col("Message", "string", 0, "What happened."),
        ],
        ("", "configmaps") => vec![
            name,
            col("Data", "string", 0, "Number of data entries."),
            age,
        ],
        ("", "secrets") => vec![
            name,
            col("Type", "string", 0, "The type of the secret."),
            col("Data", "string", 0, "Number of data entries."),
            age,
        ],
        ("", "services") => vec![
            name,
            col("Type", "string", 0, "The type of the service."),
            col("Cluster-IP", "string", 0, "The cluster IP of the service."),
            col(
                "External-IP",
                "string",
                0,
                "The external IPs of the service.",
            ),
            col("Port(s)", "string", 0, "The ports of the service."),
            age,
        ],
        ("", "serviceaccounts") => vec![name, age],
        ("coordination.k8s.io", "leases") => vec![
            name,
            col("Holder", "string", 0, "The holder of the lease."),
            age,
        ],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name,
            col("Value", "string", 0, "The priority value."),
            col(
                "Global-Default",
                "string",
                0,
                "Whether this is the default class.",
            ),
            age,
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![
                name,
                col("Created At", "date", 0, "When the definition was created."),
            ]
        }
        _ => return None,
    })
}

fn builtin_cells(info: &ResourceInfo, o: &Value) -> Vec<Value> {
    let name = json!(meta::name(o));
    let age = json!(human_age(meta::meta_str(o, "creationTimestamp")));
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => pod_cells(o, name, age),
        ("", "nodes") => node_cells(o, name, age),
        ("", "namespaces") => vec![name, json!(str_at(o, "/status/phase")), age],
        ("", "events") => {
            let last = [
                "/series/lastObservedTime",
                "/lastTimestamp",
                "/eventTime",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .map(|p| str_at(o, p))
            .find(|s| !s.is_empty())
            .unwrap_or_default();
            let obj = format!(
                "{}/{}",
                str_at(o, "/involvedObject/kind").to_ascii_lowercase(),
                str_at(o, "/involvedObject/name")
            );
            vec![
                json!(human_age(last)),
                json!(str_at(o, "/type")),
                json!(str_at(o, "/reason")),
                json!(obj),
                json!(str_at(o, "/message")),
            ]
        }
        ("", "configmaps") => {
            let n = count(&o["data"]) + count(&o["binaryData"]);
            vec![name, json!(n), age]
        }
        ("", "secrets") => vec![
            name,
            json!(str_at(o, "/type")),
            json!(count(&o["data"])),
            age,
        ],
        ("", "services") => {
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
                name,
                json!(str_at(o, "/spec/type")),
                json!(or_none(str_at(o, "/spec/clusterIP"))),
                json!("<none>"),
                json!(ports),
                age,
            ]
        }
        ("coordination.k8s.io", "leases") => {
            vec![name, json!(str_at(o, "/spec/holderIdentity")), age]
        }
        ("scheduling.k8s.io", "priorityclasses") => vec![
            name,
            o["value"].clone(),
            json!(o["globalDefault"].as_bool().unwrap_or(false)),
            age,
        ],
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            vec![name, json!(meta::meta_str(o, "creationTimestamp"))]
        }
        _ => vec![name, age],
    }
}

fn pod_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
    let statuses = o["status"]["containerStatuses"].as_array();
    let total = o["spec"]["containers"].as_array().map_or(0, Vec::len);
    let ready = statuses
        .into_iter()
        .flatten()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses
        .into_iter()
        .flatten()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut status = str_at(o, "/status/phase").to_string();
    if let Some(reason) = o["status"]["reason"].as_str() {
        status = reason.to_string();
    }
    // A waiting or terminated container's reason says more than the phase.
    for s in statuses.into_iter().flatten() {
        if let Some(r) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = r.to_string();
        } else if let Some(r) = s
            .pointer("/state/terminated/reason")
            .and_then(Value::as_str)
        {
            status = r.to_string();
        }
    }
    if meta::is_deleting(o) {
        status = "Terminating".into();
    }
    vec![
        name,
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        age,
        json!(or_none(str_at(o, "/status/podIP"))),
        json!(or_none(str_at(o, "/spec/nodeName"))),
        json!(or_none(str_at(o, "/status/nominatedNodeName"))),
        json!("<none>"),
    ]
}

fn node_cells(o: &Value, name: Value, age: Value) -> Vec<Value> {
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
        name,
        json!(status),
        json!(roles),
        age,
        json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
        json!(gpus),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(str_at(o, "/status/nodeInfo/osImage")),
        json!(str_at(o, "/status/nodeInfo/kernelVersion")),
        json!(str_at(o, "/status/nodeInfo/containerRuntimeVersion")),
    ]
}

fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// The column definitions of a resource's table.
pub fn column_definitions(info: &ResourceInfo) -> Vec<Value> {
    let describe = |name: &str, type_: &str, priority: i32, description: &str| {
        json!({
            "name": name,
            "type": type_,
            "format": if name == "Name" { "name" } else { "" },
            "description": description,
            "priority": priority,
        })
    };
    if let Some(cols) = builtin_columns(info) {
        return cols
            .iter()
            .map(|c| describe(c.name, c.type_, c.priority, c.description))
            .collect();
    }
    let mut defs = vec![describe(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    )];
    for c in &info.columns {
        defs.push(describe(&c.name, &c.type_, c.priority, &c.description));
    }
    if !info
        .columns
        .iter()
        .any(|c| c.json_path == ".metadata.creationTimestamp")
    {
        defs.push(describe(
            "Age",
            "date",
            0,
            "Time since the object was created.",
        ));
    }
    defs
}

/// The cells of one object's row.
pub fn cells(info: &ResourceInfo, o: &Value) -> Vec<Value> {
    if builtin_columns(info).is_some() {
        return builtin_cells(info, o);
    }
    let mut cells = vec![json!(meta::name(o))];
    for c in &info.columns {
        let v = json_path(o, &c.json_path).cloned().unwrap_or(Value::Null);
        cells.push(match (c.type_.as_str(), &v) {
            ("date", Value::String(s)) => json!(human_age(s)),
            _ => v,
        });
    }
    if !info
        .columns
        .iter()
        .any(|c| c.json_path == ".metadata.creationTimestamp")
    {
        cells.push(json!(human_age(meta::meta_str(o, "creationTimestamp"))));
    }
    cells
}

/// A row for one object.
pub fn row(info: &ResourceInfo, o: &Value, include: IncludeObject) -> Value {
    let object = match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => o.clone(),
        IncludeObject::Metadata => partial_metadata(o),
    };
    json!({"cells": cells(info, o), "object": object})
}

/// `PartialObjectMetadata` of an object.
pub fn partial_metadata(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A whole Table.
pub fn table(
    info: &ResourceInfo,
    objects: &[&Value],
    version: &str,
    resource_version: u64,
    continue_token: Option<&str>,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": format!("meta.k8s.io/{version}"),
        "metadata": {"resourceVersion": resource_version.to_string()},
        "rows": objects.iter().map(|o| row(info, o, include)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = json!(column_definitions(info));
    }
    if let Some(c) = continue_token {
        t["metadata"]["continue"] = json!(c);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn pod_row_shows_waiting_reason_and_terminating() {
        let registry = Registry::new();
        let pods = registry.get("", "v1", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": meta::now_time()},
            "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Pending", "containerStatuses": [{"ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        let c = cells(&pods, &pod);
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], "CrashLoopBackOff");
        assert_eq!(c[3], "2");
        assert_eq!(c[6], "n1");
        assert_eq!(c.len(), column_definitions(&pods).len());
        let mut deleting = pod.clone();
        deleting["metadata"]["deletionTimestamp"] = json!(meta::now_time());
        assert_eq!(cells(&pods, &deleting)[2], "Terminating");
    }

    #[test]
    fn node_row_shows_gpus() {
        let registry = Registry::new();
        let nodes = registry.get("", "v1", "nodes").unwrap();
        let node = json!({"metadata": {"name": "n", "labels": {"ferry.dev/gpu-model": "A100-80GB"}},
            "status": {"allocatable": {"nvidia.com/gpu": "8"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        let c = cells(&nodes, &node);
        assert_eq!(c[1], "Ready");
        assert_eq!(c[5], "8xA100-80GB");
        assert_eq!(c.len(), column_definitions(&nodes).len());
    }
}

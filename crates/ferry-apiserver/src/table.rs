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

/// A column of a built-in kind's Table.
pub struct Column {
    name: &'static str,
    type_: &'static str,
    priority: i32,
    description: &'static str,
}

impl Column {
    /// A column: header, OpenAPI type, priority (0 = always shown, more = `-o wide`) and
    /// description.
    pub const fn new(
        name: &'static str,
        type_: &'static str,
        priority: i32,
        description: &'static str,
    ) -> Self {
        Self {
            name,
            type_,
            priority,
            description,
        }
    }
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
    if let Some(cols) = info.strategy.columns() {
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
    if info.strategy.columns().is_some() {
        return info.strategy.cells(o);
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

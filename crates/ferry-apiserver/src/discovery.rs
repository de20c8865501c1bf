//! Discovery documents: `/version`, `/api`, `/apis`, `/api/v1`, `/apis/{group}/{version}`.

use serde_json::{Value, json};

use crate::registry::{Registry, version_priority};

/// The Kubernetes version Ferry's API server speaks (the API subset follows this release).
pub const KUBERNETES_VERSION: &str = "v1.32.0";

/// `/version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": format!("{KUBERNETES_VERSION}+ferry.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "",
        "goVersion": "",
        "compiler": "rustc",
        "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

/// `/api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    })
}

/// `/apis`.
pub fn groups(registry: &Registry) -> Value {
    let mut groups: Vec<Value> = registry
        .groups()
        .into_iter()
        .map(|(name, versions)| group(&name, &versions))
        .collect();
    groups.push(crate::metrics::group_doc());
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}` for one group.
pub fn group(name: &str, versions: &[String]) -> Value {
    let mut sorted = versions.to_vec();
    sorted.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
    let entries: Vec<Value> = sorted
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": name,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/api/v1` or `/apis/{group}/{version}`.
pub fn resources(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    if !registry.serves_group_version(group, version) {
        return None;
    }
    let list: Vec<Value> = registry
        .all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(|r| r.discovery_entries())
        .collect();
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": list,
    }))
}

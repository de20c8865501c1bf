//! Pod and container cgroups (v1 and v2): limits, QoS classes, usage, OOM kills.

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::{SandboxContext, SandboxError};

/// A pod's cgroup, as recorded in the sandbox record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodCgroup {
    /// The pod's cgroup path relative to each hierarchy's root (`ferry/burstable/pod<uid>`).
    pub path: String,
}

/// Creates the pod's cgroup (not yet built: no cgroup).
pub fn create_pod(
    _ctx: &SandboxContext,
    _pod: &Pod,
    _uid: &str,
) -> Result<Option<PodCgroup>, SandboxError> {
    Ok(None)
}

/// Removes the pod's cgroup.
pub fn remove_pod(_cgroup: &PodCgroup) -> Result<(), SandboxError> {
    Ok(())
}

/// The cgroup directories (one per hierarchy) container `name` of the pod joins.
pub fn container_dirs(_cgroup: &PodCgroup, _name: &str) -> Vec<std::path::PathBuf> {
    Vec::new()
}

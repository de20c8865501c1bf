//! The pod network: a network namespace per pod on the node bridge, through the CNI plugins.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::{SandboxContext, SandboxError, SandboxRecord};

/// Creates the pod's network namespace and attaches it (not yet built: host network).
pub async fn setup(
    _ctx: &SandboxContext,
    _pod: &Pod,
    _uid: &str,
    _pod_dir: &Path,
) -> Result<(Option<PathBuf>, Vec<String>), SandboxError> {
    Ok((None, Vec::new()))
}

/// Detaches and removes the pod's network namespace.
pub async fn teardown(
    _ctx: &SandboxContext,
    _uid: &str,
    _record: &SandboxRecord,
    _pod_dir: &Path,
) -> Result<(), SandboxError> {
    Ok(())
}

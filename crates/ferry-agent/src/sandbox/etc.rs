//! The pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::{SandboxContext, SandboxError, SandboxRecord};

/// The generated files, bind-mounted over the container's `/etc/...`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcFiles {
    /// The pod's `hosts`.
    pub hosts: PathBuf,
    /// The pod's `hostname`.
    pub hostname: PathBuf,
    /// The pod's `resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// Writes the pod's files (not yet built: none).
pub fn write(
    _ctx: &SandboxContext,
    _pod: &Pod,
    _record: &SandboxRecord,
    _pod_dir: &Path,
) -> Result<Option<EtcFiles>, SandboxError> {
    Ok(None)
}

/// Adds the bind mounts of the pod's files over `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf` (a container's own mounts of those paths win).
pub fn add_mounts(files: &EtcFiles, mounts: &mut Vec<crate::runtime::MountSpec>) {
    for (source, target) in [
        (&files.hosts, "/etc/hosts"),
        (&files.hostname, "/etc/hostname"),
        (&files.resolv_conf, "/etc/resolv.conf"),
    ] {
        let target = PathBuf::from(target);
        if mounts.iter().any(|m| m.target == target) {
            continue;
        }
        mounts.push(crate::runtime::MountSpec {
            source: source.clone(),
            target,
            read_only: false,
        });
    }
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 bytes as the kubelet does.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut cut = name.len().min(63);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_string()
}

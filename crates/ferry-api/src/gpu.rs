//! How a node publishes its GPUs, and how a pod learns which GPUs it was given.
//!
//! A node agent describes its devices on the Node object:
//! - capacity and allocatable `nvidia.com/gpu` = the number of healthy devices;
//! - annotation [`NODE_DEVICES_ANNOTATION`] = a JSON array of [`GpuDevice`];
//! - labels [`NODE_MODEL_LABEL`], [`NODE_COUNT_LABEL`], [`NODE_MEMORY_LABEL`] (MiB per device),
//!   and [`NODE_FAKE_LABEL`] = `"true"` when the devices were declared with `--fake-gpus`.
//!
//! The scheduler records its choice of devices on the Binding it posts (Kubernetes copies a
//! Binding's annotations onto the pod): [`POD_ASSIGNED_ANNOTATION`] = comma-separated device
//! indices such as `"0,3"`. The agent exports them to the containers as
//! `CUDA_VISIBLE_DEVICES` and `NVIDIA_VISIBLE_DEVICES`.

use serde::{Deserialize, Serialize};

/// Node annotation: JSON array of [`GpuDevice`], ordered by index.
pub const NODE_DEVICES_ANNOTATION: &str = "ferry.dev/gpu-devices";
/// Node label: the GPU model of the node's devices (the first device's, if mixed).
pub const NODE_MODEL_LABEL: &str = "ferry.dev/gpu-model";
/// Node label: how many GPUs the node has.
pub const NODE_COUNT_LABEL: &str = "ferry.dev/gpu-count";
/// Node label: memory per GPU in MiB (the smallest device's, if mixed).
pub const NODE_MEMORY_LABEL: &str = "ferry.dev/gpu-memory-mib";
/// Node label: `"true"` when the devices are declared, not discovered.
pub const NODE_FAKE_LABEL: &str = "ferry.dev/gpu-fake";
/// Pod annotation: the device indices the scheduler assigned, comma-separated.
pub const POD_ASSIGNED_ANNOTATION: &str = "ferry.dev/gpu-assigned";

/// One accelerator as the node agent found (or was told about) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuDevice {
    /// Index on the node (the NVML / CUDA index).
    pub index: u32,
    /// Stable identifier (`GPU-…` for NVIDIA devices).
    pub uuid: String,
    /// Model name with spaces replaced by dashes, such as `NVIDIA-H100-80GB-HBM3` or `A100-80GB`.
    pub model: String,
    /// Total device memory in MiB.
    pub memory_mib: u64,
    /// False once a health check failed; unhealthy devices are not allocatable.
    #[serde(default = "yes")]
    pub healthy: bool,
    /// True for devices declared with `--fake-gpus`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fake: bool,
    /// Indices of devices linked to this one by NVLink (or an equivalent fabric).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nvlink_peers: Vec<u32>,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Parses a list of device indices written as [`POD_ASSIGNED_ANNOTATION`].
pub fn parse_assigned(value: &str) -> Result<Vec<u32>, std::num::ParseIntError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::parse)
        .collect()
}

/// Formats device indices as [`POD_ASSIGNED_ANNOTATION`] expects them.
pub fn format_assigned(indices: &[u32]) -> String {
    indices
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assigned_round_trip() {
        assert_eq!(parse_assigned("0, 3,7").unwrap(), vec![0, 3, 7]);
        assert_eq!(format_assigned(&[0, 3, 7]), "0,3,7");
        assert!(parse_assigned("a").is_err());
        assert!(parse_assigned("").unwrap().is_empty());
    }

    #[test]
    fn device_json_shape() {
        let d = GpuDevice {
            index: 1,
            uuid: "GPU-1".into(),
            model: "A100-80GB".into(),
            memory_mib: 81920,
            healthy: true,
            fake: true,
            nvlink_peers: vec![],
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["memoryMib"], 81920);
        assert_eq!(v["fake"], true);
        let back: GpuDevice = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}

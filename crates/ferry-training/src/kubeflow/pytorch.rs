//! The PyTorchJob framework (stub: environment and success rules still to write).

use k8s_openapi::api::core::v1::EnvVar;

use super::Framework;
use super::types::{JobView, ReplicaPhases, RestartPolicy};

/// PyTorchJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct PyTorch;

impl Framework for PyTorch {
    fn kind(&self) -> &'static str {
        "PyTorchJob"
    }
    fn plural(&self) -> &'static str {
        "pytorchjobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "pytorchReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        "pytorch"
    }
    fn default_port_name(&self) -> &'static str {
        "pytorchjob-port"
    }
    fn default_port(&self) -> i32 {
        23456
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::OnFailure
    }
    fn master_type(&self) -> Option<&'static str> {
        Some("Master")
    }
    fn env(&self, job: &JobView, rtype: &str, index: i32) -> Vec<EnvVar> {
        let _ = (job, rtype, index);
        Vec::new()
    }
    fn succeeded(&self, job: &JobView, phases: &ReplicaPhases) -> bool {
        let _ = (job, phases);
        false
    }
}

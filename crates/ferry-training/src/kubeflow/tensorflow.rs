//! The TFJob framework (stub: environment and success rules still to write).

use k8s_openapi::api::core::v1::EnvVar;

use super::Framework;
use super::types::{JobView, ReplicaPhases, RestartPolicy};

/// TFJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorFlow;

impl Framework for TensorFlow {
    fn kind(&self) -> &'static str {
        "TFJob"
    }
    fn plural(&self) -> &'static str {
        "tfjobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "tfReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        "tensorflow"
    }
    fn default_port_name(&self) -> &'static str {
        "tfjob-port"
    }
    fn default_port(&self) -> i32 {
        2222
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::Never
    }
    fn master_type(&self) -> Option<&'static str> {
        Some("Chief")
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

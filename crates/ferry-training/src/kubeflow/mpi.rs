//! The MPIJob framework (stub: environment and success rules still to write).

use k8s_openapi::api::core::v1::EnvVar;

use super::Framework;
use super::types::{JobView, ReplicaPhases, RestartPolicy};

/// MPIJob.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mpi;

impl Framework for Mpi {
    fn kind(&self) -> &'static str {
        "MPIJob"
    }
    fn plural(&self) -> &'static str {
        "mpijobs"
    }
    fn replica_specs_field(&self) -> &'static str {
        "mpiReplicaSpecs"
    }
    fn default_container(&self) -> &'static str {
        "mpi"
    }
    fn default_port_name(&self) -> &'static str {
        "mpijob-port"
    }
    fn default_port(&self) -> i32 {
        9999
    }
    fn default_restart_policy(&self) -> RestartPolicy {
        RestartPolicy::Never
    }
    fn master_type(&self) -> Option<&'static str> {
        Some("Launcher")
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

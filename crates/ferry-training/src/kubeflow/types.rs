//! The training operator's common types (`common_types.go` of kubeflow/training-operator
//! v1.9), as serde structs with its field names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde::{Deserialize, Serialize};

/// A replica type's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart the container whatever its exit.
    Always,
    /// Restart the container when it fails.
    OnFailure,
    /// Never restart: a failure fails the replica.
    Never,
    /// Exit codes 1-127 are permanent (the job fails), 128-255 retryable (the pod is
    /// recreated).
    ExitCode,
}

/// One replica type of a job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaSpec {
    /// How many replicas (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The pod template.
    #[serde(default)]
    pub template: PodTemplateSpec,
    /// The restart policy (the kind's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
}

/// `runPolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunPolicy {
    /// `All`, `Running` or `None`: which pods are deleted when the job ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clean_pod_policy: Option<String>,
    /// Seconds after the job ends before it is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds_after_finished: Option<i32>,
    /// Seconds the job may run before it is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Restarts before the job is failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_limit: Option<i32>,
    /// Gang-scheduling settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_policy: Option<SchedulingPolicy>,
    /// Suspend: delete the job's pods and keep it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// The controller that manages the job (`kubeflow.org/training-operator` or absent: Ferry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed_by: Option<String>,
}

/// `runPolicy.schedulingPolicy`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingPolicy {
    /// The least number of pods that must run at once (default: every replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<i32>,
    /// The queue (Ferry's Queue of that name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// The least resources the gang needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources:
        Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
    /// The PriorityClass of the gang's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class: Option<String>,
    /// How long a partial gang may wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_timeout_seconds: Option<i32>,
}

/// The phase of each replica's pod: `phases[rtype][index]`, `None` where no pod exists.
pub type ReplicaPhases = BTreeMap<String, Vec<Option<String>>>;

/// A v1 job as the engine reads it, whatever its kind.
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its UID (owner of its pods and Services).
    pub uid: String,
    /// The replica specs by type, keyed as written (`Master`, `Worker`, `PS`...).
    pub replica_specs: BTreeMap<String, ReplicaSpec>,
    /// `spec.runPolicy`.
    pub run_policy: RunPolicy,
    /// The whole spec, for the kind's own fields (`elasticPolicy`, `nprocPerNode`,
    /// `successPolicy`, `slotsPerWorker`...).
    pub spec: serde_json::Value,
}

impl JobView {
    /// The number of replicas of `rtype` (1 when unset, 0 when the type is absent).
    pub fn replicas(&self, rtype: &str) -> i32 {
        self.replica_specs
            .get(rtype)
            .map(|s| s.replicas.unwrap_or(1))
            .unwrap_or(0)
    }
}

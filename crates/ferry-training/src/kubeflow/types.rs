//! The training operator's common types (`common_types.go` of kubeflow/training-operator
//! v1.9), as serde structs with its field names.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
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

/// `status` of a v1 job (`JobStatus` of `common_types.go`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// The job's conditions, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<JobCondition>,
    /// Pod counts per replica type.
    #[serde(default)]
    pub replica_statuses: BTreeMap<String, ReplicaStatus>,
    /// When the controller first acted on the job (reset by a suspension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the job finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// When the controller last wrote the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<Time>,
}

/// A job condition (`Created`, `Running`, `Restarting`, `Succeeded`, `Suspended`, `Failed`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobCondition {
    /// The condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// Machine-readable reason, e.g. `PyTorchJobRunning`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What happened, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was last written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<Time>,
    /// When its status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Pod counts of one replica type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Pods pending or running.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub active: i32,
    /// Pods that succeeded.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub succeeded: i32,
    /// Pods that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: i32,
    /// The selector of the type's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// The same selector as a string (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &i32) -> bool {
    *n == 0
}

impl JobStatus {
    /// The condition of `type_` when its status is `True`.
    pub fn condition(&self, type_: &str) -> Option<&JobCondition> {
        self.conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    }

    /// Whether condition `type_` is `True`.
    pub fn is(&self, type_: &str) -> bool {
        self.condition(type_).is_some()
    }

    /// Whether the job has finished (Succeeded or Failed).
    pub fn finished(&self) -> bool {
        self.is(conditions::SUCCEEDED) || self.is(conditions::FAILED)
    }

    /// Sets condition `type_` to `status` as the training operator does: `Running` and
    /// `Restarting` replace each other, and a finished or suspended job is no longer
    /// `Running`.
    pub fn set_condition(&mut self, type_: &str, status: bool, reason: &str, message: &str) {
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let value = if status { "True" } else { "False" };
        if status {
            match type_ {
                conditions::RUNNING => self
                    .conditions
                    .retain(|c| c.type_ != conditions::RESTARTING),
                conditions::RESTARTING => {
                    self.conditions.retain(|c| c.type_ != conditions::RUNNING)
                }
                conditions::SUCCEEDED | conditions::FAILED | conditions::SUSPENDED => {
                    self.conditions
                        .retain(|c| c.type_ != conditions::RESTARTING);
                    if type_ != conditions::SUSPENDED || self.is(conditions::RUNNING) {
                        self.set_condition(conditions::RUNNING, false, reason, message);
                    }
                }
                _ => {}
            }
        }
        if let Some(c) = self.conditions.iter_mut().find(|c| c.type_ == type_) {
            if c.status == value && c.reason.as_deref() == Some(reason) {
                return;
            }
            if c.status != value {
                c.last_transition_time = Some(now.clone());
            }
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_update_time = Some(now);
            return;
        }
        if !status && type_ != conditions::SUSPENDED {
            // A condition that never held is not written as False (Suspended is: Resumed).
            return;
        }
        self.conditions.push(JobCondition {
            type_: type_.into(),
            status: value.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        });
    }
}

/// The condition types.
pub mod conditions {
    /// The job was accepted.
    pub const CREATED: &str = "Created";
    /// Its pods run.
    pub const RUNNING: &str = "Running";
    /// Its pods are being replaced.
    pub const RESTARTING: &str = "Restarting";
    /// It succeeded.
    pub const SUCCEEDED: &str = "Succeeded";
    /// It is suspended (no pods).
    pub const SUSPENDED: &str = "Suspended";
    /// It failed.
    pub const FAILED: &str = "Failed";
}

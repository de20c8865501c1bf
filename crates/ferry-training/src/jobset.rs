//! The JobSet controller (`jobset.x-k8s.io/v1alpha2`), as kubernetes-sigs/jobset documents
//! it: each replicatedJob as `replicas` batch Jobs named `<jobset>-<replicatedJob>-<index>`
//! (Indexed by default, so their pods are `<job>-<podIndex>`), the headless Service (named
//! after the JobSet or `network.subdomain`) that gives those pods DNS names, successPolicy
//! (All/Any over target replicatedJobs), failurePolicy (maxRestarts, rules with FailJobSet,
//! RestartJobSet and RestartJobSetAndIgnoreMaxRestarts), startupPolicy InOrder, suspend,
//! coordinator, ttlSecondsAfterFinished, and status (replicatedJobsStatus, conditions,
//! restarts, terminalState). A PodGroup named after the JobSet places all its pods at once.
//!
//! A restart deletes every Job of the previous attempt (label
//! [`labels::RESTART_ATTEMPT`]) and creates the Jobs anew once they are gone. Fields Ferry does
//! not implement (`volumeClaimPolicies`, `dependsOn`, the per-Job restart actions) fail the
//! JobSet with a message naming them instead of being ignored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::scheduling::{POD_GROUP_LABEL, PodGroup, PodGroupSpec, QUEUE_LABEL};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Error;

/// The API group.
pub const GROUP: &str = "jobset.x-k8s.io";
/// The served version.
pub const VERSION: &str = "v1alpha2";
/// The kind.
pub const KIND: &str = "JobSet";
/// The value of `spec.managedBy` this controller acts on (also when unset).
pub const CONTROLLER_NAME: &str = "jobset.sigs.k8s.io/jobset-controller";

/// The labels (and annotations) JobSet puts on its Jobs and their pods (upstream's keys).
pub mod labels {
    /// The JobSet's name.
    pub const JOBSET_NAME: &str = "jobset.sigs.k8s.io/jobset-name";
    /// The replicatedJob's name.
    pub const REPLICATED_JOB_NAME: &str = "jobset.sigs.k8s.io/replicatedjob-name";
    /// The replicatedJob's `replicas`.
    pub const REPLICATED_JOB_REPLICAS: &str = "jobset.sigs.k8s.io/replicatedjob-replicas";
    /// The Job's index within its replicatedJob.
    pub const JOB_INDEX: &str = "jobset.sigs.k8s.io/job-index";
    /// The Job's index over all replicatedJobs.
    pub const JOB_GLOBAL_INDEX: &str = "jobset.sigs.k8s.io/job-global-index";
    /// The number of Jobs over all replicatedJobs.
    pub const GLOBAL_REPLICAS: &str = "jobset.sigs.k8s.io/global-replicas";
    /// A key unique to the Job within the namespace (`<namespace>/<job>`).
    pub const JOB_KEY: &str = "jobset.sigs.k8s.io/job-key";
    /// The restart attempt the Job belongs to (`status.restarts` when it was created).
    pub const RESTART_ATTEMPT: &str = "jobset.sigs.k8s.io/restart-attempt";
    /// The replicatedJob's `groupName`.
    pub const GROUP_NAME: &str = "jobset.sigs.k8s.io/group-name";
    /// The coordinator pod's stable address (`spec.coordinator`).
    pub const COORDINATOR: &str = "jobset.sigs.k8s.io/coordinator";
}

/// Condition types and reasons (upstream's).
pub mod reasons {
    /// All target Jobs succeeded.
    pub const ALL_JOBS_COMPLETED: &str = "AllJobsCompleted";
    /// A Job failed and no restart was allowed by the failure policy.
    pub const FAILED_JOBS: &str = "FailedJobs";
    /// `maxRestarts` was reached.
    pub const REACHED_MAX_RESTARTS: &str = "ReachedMaxRestarts";
    /// A rule with `FailJobSet` matched.
    pub const FAIL_JOBSET_ACTION: &str = "FailJobSetFailurePolicyAction";
    /// The spec uses something Ferry rejects.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// Suspended.
    pub const SUSPENDED: &str = "SuspendedJobs";
    /// Resumed.
    pub const RESUMED: &str = "ResumeJobs";
    /// InOrder startup is creating the replicatedJobs one after another.
    pub const IN_ORDER_IN_PROGRESS: &str = "InOrderStartupPolicyInProgress";
    /// InOrder startup has created every replicatedJob.
    pub const IN_ORDER_COMPLETED: &str = "InOrderStartupPolicyCompleted";
}

/// The JobSet kind's API resource.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), "jobsets")
}

/// The part of a JobSet's spec the controller reads.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSetSpec {
    /// The groups of identical Jobs.
    #[serde(default)]
    pub replicated_jobs: Vec<ReplicatedJob>,
    /// Pod DNS.
    #[serde(default)]
    pub network: Option<Network>,
    /// When the JobSet has succeeded.
    #[serde(default)]
    pub success_policy: Option<SuccessPolicy>,
    /// What a failed Job does to the JobSet.
    #[serde(default)]
    pub failure_policy: Option<FailurePolicy>,
    /// The order replicatedJobs start in.
    #[serde(default)]
    pub startup_policy: Option<StartupPolicy>,
    /// Suspends every Job.
    #[serde(default)]
    pub suspend: Option<bool>,
    /// The pod other pods find as the coordinator.
    #[serde(default)]
    pub coordinator: Option<Coordinator>,
    /// The controller that acts on this JobSet.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// Deletes the JobSet this long after it finished.
    #[serde(default)]
    pub ttl_seconds_after_finished: Option<i64>,
}

/// One replicatedJob.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatedJob {
    /// Its name (part of every Job's name).
    pub name: String,
    /// The number of Jobs (default 1).
    #[serde(default)]
    pub replicas: Option<i32>,
    /// The Job template.
    #[serde(default)]
    pub template: JobTemplateSpec,
    /// A group label for the Jobs.
    #[serde(default)]
    pub group_name: Option<String>,
}

/// `spec.network`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// Gives pods hostnames and a subdomain (default true).
    #[serde(default)]
    pub enable_dns_hostnames: Option<bool>,
    /// The headless Service's name (default: the JobSet's name).
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Publishes pods before they are ready (default true).
    #[serde(default)]
    pub publish_not_ready_addresses: Option<bool>,
}

/// `spec.successPolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SuccessPolicy {
    /// `All` (default) or `Any`.
    #[serde(default)]
    pub operator: Option<String>,
    /// The replicatedJobs that count (all when empty).
    #[serde(default)]
    pub target_replicated_jobs: Vec<String>,
}

/// `spec.failurePolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicy {
    /// Restarts allowed (counting ones).
    #[serde(default)]
    pub max_restarts: Option<i32>,
    /// `Recreate` or `BlockingRecreate`.
    #[serde(default)]
    pub restart_strategy: Option<String>,
    /// Rules, the first match applies.
    #[serde(default)]
    pub rules: Vec<FailurePolicyRule>,
}

/// One failure policy rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailurePolicyRule {
    /// The rule's name.
    #[serde(default)]
    pub name: String,
    /// `FailJobSet`, `RestartJobSet` or `RestartJobSetAndIgnoreMaxRestarts`.
    pub action: String,
    /// The Job failure reasons it matches (all when empty).
    #[serde(default)]
    pub on_job_failure_reasons: Vec<String>,
    /// The replicatedJobs it matches (all when empty).
    #[serde(default)]
    pub target_replicated_jobs: Vec<String>,
}

/// `spec.startupPolicy`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartupPolicy {
    /// `AnyOrder` (default) or `InOrder`.
    #[serde(default)]
    pub startup_policy_order: Option<String>,
}

/// `spec.coordinator`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Coordinator {
    /// The replicatedJob.
    pub replicated_job: String,
    /// The Job index.
    #[serde(default)]
    pub job_index: i32,
    /// The pod index.
    #[serde(default)]
    pub pod_index: i32,
}

/// Rejects what Ferry does not implement, with a message naming it (`Err`).
pub fn validate(raw_spec: &Value, spec: &JobSetSpec) -> Result<(), String> {
    let mut problems = Vec::new();
    if raw_spec
        .get("volumeClaimPolicies")
        .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
    {
        problems.push("spec.volumeClaimPolicies is not supported by Ferry".to_string());
    }
    for (i, rj) in raw_spec
        .get("replicatedJobs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if rj
            .get("dependsOn")
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            problems.push(format!(
                "spec.replicatedJobs[{i}].dependsOn is not supported by Ferry"
            ));
        }
    }
    if spec.replicated_jobs.is_empty() {
        problems.push("spec.replicatedJobs: Required value".into());
    }
    let names: Vec<&str> = spec
        .replicated_jobs
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    for (i, rj) in spec.replicated_jobs.iter().enumerate() {
        if names[..i].contains(&rj.name.as_str()) {
            problems.push(format!(
                "spec.replicatedJobs[{i}].name: Duplicate value: {:?}",
                rj.name
            ));
        }
        if rj.replicas.is_some_and(|r| r < 0) {
            problems.push(format!(
                "spec.replicatedJobs[{i}].replicas: must be greater than or equal to 0"
            ));
        }
    }
    if let Some(sp) = &spec.success_policy {
        if let Some(op) = sp
            .operator
            .as_deref()
            .filter(|o| *o != "All" && *o != "Any")
        {
            problems.push(format!(
                "spec.successPolicy.operator: Unsupported value: {op:?}: supported values: \"All\", \"Any\""
            ));
        }
        for t in &sp.target_replicated_jobs {
            if !names.contains(&t.as_str()) {
                problems.push(format!(
                    "spec.successPolicy.targetReplicatedJobs: {t:?} is not a replicatedJob"
                ));
            }
        }
    }
    if let Some(fp) = &spec.failure_policy {
        for (i, rule) in fp.rules.iter().enumerate() {
            match rule.action.as_str() {
                "FailJobSet" | "RestartJobSet" | "RestartJobSetAndIgnoreMaxRestarts" => {}
                a @ ("RestartJob" | "RestartJobAndIgnoreMaxRestarts") => problems.push(format!(
                    "spec.failurePolicy.rules[{i}].action: {a:?} (restarting a single Job) is not supported by Ferry; use RestartJobSet"
                )),
                a => problems.push(format!(
                    "spec.failurePolicy.rules[{i}].action: Unsupported value: {a:?}"
                )),
            }
            for t in &rule.target_replicated_jobs {
                if !names.contains(&t.as_str()) {
                    problems.push(format!(
                        "spec.failurePolicy.rules[{i}].targetReplicatedJobs: {t:?} is not a replicatedJob"
                    ));
                }
            }
        }
    }
    if let Some(c) = &spec.coordinator
        && !names.contains(&c.replicated_job.as_str())
    {
        problems.push(format!(
            "spec.coordinator.replicatedJob: {:?} is not a replicatedJob",
            c.replicated_job
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// The headless Service's name (and the pods' subdomain).
pub fn subdomain(name: &str, spec: &JobSetSpec) -> String {
    spec.network
        .as_ref()
        .and_then(|n| n.subdomain.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| name.to_string())
}

fn dns_hostnames(spec: &JobSetSpec) -> bool {
    spec.network
        .as_ref()
        .and_then(|n| n.enable_dns_hostnames)
        .unwrap_or(true)
}

fn in_order(spec: &JobSetSpec) -> bool {
    spec.startup_policy
        .as_ref()
        .and_then(|s| s.startup_policy_order.as_deref())
        == Some("InOrder")
}

/// The pods one Job of `rj` runs at once (its parallelism, default 1).
fn pods_per_job(rj: &ReplicatedJob) -> i32 {
    rj.template
        .spec
        .as_ref()
        .and_then(|s| s.parallelism)
        .unwrap_or(1)
}

/// The Job `index` of `rj` for restart attempt `attempt`, as the controller creates it.
pub fn build_job(
    jobset: &DynamicObject,
    spec: &JobSetSpec,
    rj: &ReplicatedJob,
    index: i32,
    global_index: i32,
    attempt: i32,
) -> Job {
    let name = jobset.name_any();
    let ns = jobset.namespace().unwrap_or_default();
    let job_name = format!("{name}-{}-{index}", rj.name);
    let global_replicas: i32 = spec
        .replicated_jobs
        .iter()
        .map(|r| r.replicas.unwrap_or(1))
        .sum();
    let mut ours = BTreeMap::from([
        (labels::JOBSET_NAME.to_string(), name.clone()),
        (labels::REPLICATED_JOB_NAME.to_string(), rj.name.clone()),
        (
            labels::REPLICATED_JOB_REPLICAS.to_string(),
            rj.replicas.unwrap_or(1).to_string(),
        ),
        (labels::JOB_INDEX.to_string(), index.to_string()),
        (
            labels::JOB_GLOBAL_INDEX.to_string(),
            global_index.to_string(),
        ),
        (
            labels::GLOBAL_REPLICAS.to_string(),
            global_replicas.to_string(),
        ),
        (labels::JOB_KEY.to_string(), job_key(&ns, &job_name)),
        (labels::RESTART_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    if let Some(g) = &rj.group_name {
        ours.insert(labels::GROUP_NAME.to_string(), g.clone());
    }
    let mut annotations = ours.clone();
    if let Some(c) = &spec.coordinator {
        annotations.insert(
            labels::COORDINATOR.to_string(),
            format!(
                "{name}-{}-{}-{}.{}",
                c.replicated_job,
                c.job_index,
                c.pod_index,
                subdomain(&name, spec)
            ),
        );
    }
    let template = rj.template.clone();
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(job_name);
    meta.namespace = Some(ns);
    meta.labels.get_or_insert_default().extend(ours.clone());
    meta.annotations
        .get_or_insert_default()
        .extend(annotations.clone());
    meta.owner_references = Some(vec![owner_reference(jobset)]);
    let mut job_spec = template.spec.unwrap_or_default();
    job_spec
        .completion_mode
        .get_or_insert_with(|| "Indexed".into());
    // An Indexed Job needs completions: one per pod it runs at once unless the template says.
    if job_spec.completion_mode.as_deref() == Some("Indexed") && job_spec.completions.is_none() {
        job_spec.completions = Some(job_spec.parallelism.unwrap_or(1));
    }
    job_spec.suspend = Some(spec.suspend.unwrap_or(false));
    let pod_meta = job_spec.template.metadata.get_or_insert_default();
    let pod_labels = pod_meta.labels.get_or_insert_default();
    pod_labels.extend(ours);
    if !in_order(spec) {
        pod_labels.insert(POD_GROUP_LABEL.to_string(), name.clone());
    }
    pod_meta
        .annotations
        .get_or_insert_default()
        .extend(annotations);
    let pod_spec = job_spec.template.spec.get_or_insert_default();
    if pod_spec
        .restart_policy
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        pod_spec.restart_policy = Some("OnFailure".into());
    }
    if dns_hostnames(spec) {
        pod_spec.subdomain = Some(subdomain(&name, spec));
    }
    Job {
        metadata: meta,
        spec: Some(job_spec),
        status: None,
    }
}

fn job_key(ns: &str, job: &str) -> String {
    // Upstream hashes `<ns>/<job>`; any value unique to the Job serves, within label limits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("{ns}/{job}").bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn owner_reference(obj: &DynamicObject) -> OwnerReference {
    OwnerReference {
        api_version: format!("{GROUP}/{VERSION}"),
        kind: KIND.into(),
        name: obj.name_any(),
        uid: obj.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A Job's finished condition (`Complete` or `Failed`) and its reason.
fn finished(job: &Job) -> Option<(&str, &str)> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| (c.type_.as_str(), c.reason.as_deref().unwrap_or_default()))
}

/// Whether a Job has all its pods ready or done.
fn job_ready(job: &Job) -> bool {
    let want = job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1);
    let st = job.status.as_ref();
    let ready = st.and_then(|s| s.ready).unwrap_or(0);
    let succeeded = st.and_then(|s| s.succeeded).unwrap_or(0);
    ready + succeeded >= want || finished(job).is_some_and(|(t, _)| t == "Complete")
}

fn label<'a>(job: &'a Job, key: &str) -> Option<&'a str> {
    job.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// What the failure policy does about the failed Job of replicatedJob `rjob` that failed
/// with `reason`, given the restarts so far that count towards `maxRestarts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Fail the JobSet with this reason and message.
    Fail(&'static str, String),
    /// Restart every Job; `counts` when the restart counts towards `maxRestarts`.
    Restart {
        /// Whether it counts.
        counts: bool,
        /// The reason on the condition.
        reason: String,
    },
}

/// The failure policy's decision about a failed Job (upstream's rule order and defaults).
pub fn on_failure(
    policy: Option<&FailurePolicy>,
    rjob: &str,
    reason: &str,
    counted_restarts: i32,
) -> FailureAction {
    let Some(policy) = policy else {
        return FailureAction::Fail(
            reasons::FAILED_JOBS,
            "jobset failed due to one or more job failures".into(),
        );
    };
    let max = policy.max_restarts.unwrap_or(0);
    let restart_or_fail = |counts: bool, why: String| {
        if counts && counted_restarts >= max {
            FailureAction::Fail(
                reasons::REACHED_MAX_RESTARTS,
                "jobset failed due to reaching max number of restarts".into(),
            )
        } else {
            FailureAction::Restart {
                counts,
                reason: why,
            }
        }
    };
    let rule = policy.rules.iter().find(|r| {
        (r.target_replicated_jobs.is_empty() || r.target_replicated_jobs.iter().any(|t| t == rjob))
            && (r.on_job_failure_reasons.is_empty()
                || r.on_job_failure_reasons.iter().any(|x| x == reason))
    });
    match rule {
        None => restart_or_fail(true, "DefaultFailurePolicy".into()),
        Some(r) => match r.action.as_str() {
            "FailJobSet" => FailureAction::Fail(
                reasons::FAIL_JOBSET_ACTION,
                format!(
                    "applying FailJobSet failure policy action (rule {:?}, job failed with {reason})",
                    r.name
                ),
            ),
            "RestartJobSetAndIgnoreMaxRestarts" => {
                restart_or_fail(false, format!("FailurePolicy_{}", r.name))
            }
            _ => restart_or_fail(true, format!("FailurePolicy_{}", r.name)),
        },
    }
}

/// Whether the success policy holds for `jobs` (the current attempt's Jobs).
pub fn succeeded(spec: &JobSetSpec, jobs: &[Job]) -> bool {
    let policy = spec.success_policy.clone().unwrap_or_default();
    let targets: Vec<&ReplicatedJob> = spec
        .replicated_jobs
        .iter()
        .filter(|r| {
            policy.target_replicated_jobs.is_empty()
                || policy.target_replicated_jobs.contains(&r.name)
        })
        .collect();
    let done = |rj: &ReplicatedJob| {
        jobs.iter()
            .filter(|j| {
                label(j, labels::REPLICATED_JOB_NAME) == Some(rj.name.as_str())
                    && finished(j).is_some_and(|(t, _)| t == "Complete")
            })
            .count()
    };
    if policy.operator.as_deref() == Some("Any") {
        targets.iter().any(|rj| done(rj) > 0)
    } else {
        !targets.is_empty()
            && targets
                .iter()
                .all(|rj| done(rj) >= usize::try_from(rj.replicas.unwrap_or(1)).unwrap_or(0))
    }
}

/// Runs the JobSet controller until its watch ends.
pub async fn run(client: kube::Client) {
    let ar = api_resource();
    let jobsets: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    let jobs: Api<Job> = Api::all(client.clone());
    Controller::new_with(jobsets, watcher::Config::default(), ar)
        .owns(jobs, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "jobset controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(jobset: Arc<DynamicObject>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::debug!(jobset = %jobset.name_any(), %error, "cannot sync the JobSet; retrying");
    Action::requeue(Duration::from_secs(2))
}

fn now() -> String {
    Timestamp::now()
        .round(k8s_openapi::jiff::Unit::Second)
        .unwrap_or(Timestamp::now())
        .to_string()
}

/// Sets condition `type_` in `conditions` (keeping its transition time when its status holds).
fn set_condition(
    conditions: &mut Vec<Value>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status = if status { "True" } else { "False" };
    if let Some(c) = conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(type_))
    {
        if c.get("status").and_then(Value::as_str) != Some(status) {
            c["lastTransitionTime"] = json!(now());
        }
        c["status"] = json!(status);
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        return;
    }
    conditions.push(json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": now(),
    }));
}

fn condition_true<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a Value> {
    conditions.iter().find(|c| {
        c.get("type").and_then(Value::as_str) == Some(type_)
            && c.get("status").and_then(Value::as_str) == Some("True")
    })
}

fn status_i32(status: &Value, key: &str) -> i32 {
    status
        .get(key)
        .and_then(Value::as_i64)
        .and_then(|v| i32::try_from(v).ok())
        .unwrap_or(0)
}

async fn reconcile(cached: Arc<DynamicObject>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let ar = api_resource();
    let jobsets: Api<DynamicObject> = Api::namespaced_with((*client).clone(), &ns, &ar);
    let jobs_api: Api<Job> = Api::namespaced((*client).clone(), &ns);
    let Some(jobset) = jobsets.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if jobset.uid() != cached.uid() || jobset.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let raw_spec = jobset.data.get("spec").cloned().unwrap_or(Value::Null);
    let spec: JobSetSpec =
        serde_json::from_value(raw_spec.clone()).map_err(|source| Error::Decode {
            kind: KIND,
            name: format!("{ns}/{name}"),
            source,
        })?;
    if spec
        .managed_by
        .as_deref()
        .is_some_and(|m| m != CONTROLLER_NAME)
    {
        return Ok(Action::await_change());
    }
    let old_status = jobset.data.get("status").cloned().unwrap_or(json!({}));
    let mut status = old_status.clone();
    if !status.is_object() {
        status = json!({});
    }
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let uid = jobset.uid().unwrap_or_default();
    let owned: Vec<Job> = jobs_api
        .list(&ListParams::default().labels(&format!("{}={name}", labels::JOBSET_NAME)))
        .await?
        .items
        .into_iter()
        .filter(|j| {
            j.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect();
    let restarts = status_i32(&status, "restarts");
    let counted = status_i32(&status, "restartsCountTowardsMax");
    let (current, old): (Vec<Job>, Vec<Job>) = owned.into_iter().partition(|j| {
        label(j, labels::RESTART_ATTEMPT).and_then(|a| a.parse::<i32>().ok()) == Some(restarts)
    });

    let finished_at = condition_true(&conditions, "Completed")
        .or_else(|| condition_true(&conditions, "Failed"))
        .cloned();
    let mut requeue = None;
    if let Some(done) = finished_at {
        // A finished JobSet keeps no running Job; after its TTL it goes itself.
        for j in current.iter().chain(&old).filter(|j| finished(j).is_none()) {
            delete_job(&jobs_api, j).await?;
        }
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let at = done
                .get("lastTransitionTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map_or(0, |t| t.as_second());
            let left = at + ttl - Timestamp::now().as_second();
            if left <= 0 {
                jobsets
                    .delete(
                        &name,
                        &DeleteParams {
                            propagation_policy: Some(PropagationPolicy::Foreground),
                            ..Default::default()
                        },
                    )
                    .await?;
                return Ok(Action::await_change());
            }
            requeue = Some(Duration::from_secs(u64::try_from(left).unwrap_or(1)));
        }
        write_status(
            &jobsets,
            &name,
            &old_status,
            status,
            conditions,
            &spec,
            &current,
        )
        .await?;
        return Ok(requeue.map_or_else(Action::await_change, Action::requeue));
    }

    if let Err(message) = validate(&raw_spec, &spec) {
        set_condition(
            &mut conditions,
            "Failed",
            true,
            reasons::VALIDATION_FAILED,
            &message,
        );
        status["terminalState"] = json!("Failed");
        write_status(
            &jobsets,
            &name,
            &old_status,
            status,
            conditions,
            &spec,
            &current,
        )
        .await?;
        return Ok(Action::await_change());
    }

    // The previous attempts' Jobs go before anything else happens.
    for j in &old {
        if j.metadata.deletion_timestamp.is_none() {
            delete_job(&jobs_api, j).await?;
        }
    }

    // Failure policy: the first failed Job of this attempt decides.
    if let Some((job, reason)) = current.iter().find_map(|j| {
        finished(j)
            .filter(|(t, _)| *t == "Failed")
            .map(|(_, r)| (j, r))
    }) {
        let rjob = label(job, labels::REPLICATED_JOB_NAME).unwrap_or_default();
        match on_failure(spec.failure_policy.as_ref(), rjob, reason, counted) {
            FailureAction::Fail(why, message) => {
                set_condition(&mut conditions, "Failed", true, why, &message);
                status["terminalState"] = json!("Failed");
                for j in current.iter().filter(|j| finished(j).is_none()) {
                    delete_job(&jobs_api, j).await?;
                }
            }
            FailureAction::Restart { counts, reason } => {
                tracing::info!(jobset = %name, job = %job.name_any(), %reason, "restarting the JobSet");
                status["restarts"] = json!(restarts + 1);
                status["restartsCountTowardsMax"] = json!(counted + i32::from(counts));
                for j in &current {
                    delete_job(&jobs_api, j).await?;
                }
            }
        }
        write_status(
            &jobsets,
            &name,
            &old_status,
            status,
            conditions,
            &spec,
            &current,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    if succeeded(&spec, &current) {
        set_condition(
            &mut conditions,
            "Completed",
            true,
            reasons::ALL_JOBS_COMPLETED,
            "jobset completed successfully",
        );
        status["terminalState"] = json!("Completed");
        for j in current.iter().filter(|j| finished(j).is_none()) {
            delete_job(&jobs_api, j).await?;
        }
        write_status(
            &jobsets,
            &name,
            &old_status,
            status,
            conditions,
            &spec,
            &current,
        )
        .await?;
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    ensure_service(&client, &jobset, &spec).await?;
    if !in_order(&spec) {
        ensure_pod_group(&client, &jobset, &spec).await?;
    }

    // Suspend and resume.
    let suspend = spec.suspend.unwrap_or(false);
    for j in &current {
        if j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false) != suspend
            && finished(j).is_none()
        {
            jobs_api
                .patch(
                    &j.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"suspend": suspend}})),
                )
                .await?;
        }
    }
    if suspend {
        set_condition(
            &mut conditions,
            "Suspended",
            true,
            reasons::SUSPENDED,
            "jobset is suspended",
        );
    } else if condition_true(&conditions, "Suspended").is_some() {
        set_condition(
            &mut conditions,
            "Suspended",
            false,
            reasons::RESUMED,
            "jobset is resumed",
        );
    }

    // Create the missing Jobs of this attempt (once the previous attempt's are gone, their
    // names being the same), in order under InOrder.
    if old.is_empty() {
        let mut global = 0;
        let mut blocked = false;
        for rj in &spec.replicated_jobs {
            let replicas = rj.replicas.unwrap_or(1);
            if blocked {
                break;
            }
            for index in 0..replicas {
                let job_name = format!("{name}-{}-{index}", rj.name);
                if !current.iter().any(|j| j.name_any() == job_name) {
                    let job = build_job(&jobset, &spec, rj, index, global + index, restarts);
                    match jobs_api.create(&PostParams::default(), &job).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            global += replicas;
            if in_order(&spec) && !suspend {
                let ready = current
                    .iter()
                    .filter(|j| label(j, labels::REPLICATED_JOB_NAME) == Some(rj.name.as_str()))
                    .filter(|j| job_ready(j))
                    .count();
                if ready < usize::try_from(replicas).unwrap_or(0) {
                    blocked = true;
                }
            }
        }
        if in_order(&spec) && !suspend {
            if blocked {
                set_condition(
                    &mut conditions,
                    "StartupPolicyInProgress",
                    true,
                    reasons::IN_ORDER_IN_PROGRESS,
                    "in order startup policy is in progress",
                );
            } else {
                set_condition(
                    &mut conditions,
                    "StartupPolicyInProgress",
                    false,
                    reasons::IN_ORDER_COMPLETED,
                    "in order startup policy has completed",
                );
                set_condition(
                    &mut conditions,
                    "StartupPolicyCompleted",
                    true,
                    reasons::IN_ORDER_COMPLETED,
                    "in order startup policy has completed",
                );
            }
        }
    }
    write_status(
        &jobsets,
        &name,
        &old_status,
        status,
        conditions,
        &spec,
        &current,
    )
    .await?;
    Ok(if old.is_empty() {
        Action::requeue(Duration::from_secs(30))
    } else {
        Action::requeue(Duration::from_secs(1))
    })
}

/// Deletes a Job and (foreground) its pods first, so the next attempt's Jobs, created once
/// the old ones are gone, never run beside the old pods.
async fn delete_job(api: &Api<Job>, job: &Job) -> Result<(), Error> {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: job
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..Default::default()
    };
    match api.delete(&job.name_any(), &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `replicatedJobsStatus` from the attempt's Jobs.
fn replicated_jobs_status(spec: &JobSetSpec, jobs: &[Job]) -> Value {
    Value::Array(
        spec.replicated_jobs
            .iter()
            .map(|rj| {
                let mine: Vec<&Job> = jobs
                    .iter()
                    .filter(|j| label(j, labels::REPLICATED_JOB_NAME) == Some(rj.name.as_str()))
                    .collect();
                let count = |f: &dyn Fn(&Job) -> bool| mine.iter().filter(|j| f(j)).count();
                json!({
                    "name": rj.name,
                    "ready": count(&|j| finished(j).is_none() && job_ready(j)),
                    "succeeded": count(&|j| finished(j).is_some_and(|(t, _)| t == "Complete")),
                    "failed": count(&|j| finished(j).is_some_and(|(t, _)| t == "Failed")),
                    "active": count(&|j| finished(j).is_none()
                        && j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0),
                    "suspended": count(&|j| finished(j).is_none()
                        && j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)),
                })
            })
            .collect(),
    )
}

async fn write_status(
    api: &Api<DynamicObject>,
    name: &str,
    old: &Value,
    mut status: Value,
    conditions: Vec<Value>,
    spec: &JobSetSpec,
    jobs: &[Job],
) -> Result<(), Error> {
    status["conditions"] = Value::Array(conditions);
    status["replicatedJobsStatus"] = replicated_jobs_status(spec, jobs);
    if status.get("restarts").is_none() {
        status["restarts"] = json!(0);
    }
    if &status == old {
        return Ok(());
    }
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn ensure_service(
    client: &kube::Client,
    jobset: &DynamicObject,
    spec: &JobSetSpec,
) -> Result<(), Error> {
    if !dns_hostnames(spec) {
        return Ok(());
    }
    let ns = jobset.namespace().unwrap_or_default();
    let name = jobset.name_any();
    let svc_name = subdomain(&name, spec);
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    if api.get_opt(&svc_name).await?.is_some() {
        return Ok(());
    }
    let publish = spec
        .network
        .as_ref()
        .and_then(|n| n.publish_not_ready_addresses)
        .unwrap_or(true);
    let svc: Service = serde_json::from_value(json!({
        "metadata": {
            "name": svc_name, "namespace": ns,
            "labels": {labels::JOBSET_NAME: name},
            "ownerReferences": [owner_reference(jobset)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {labels::JOBSET_NAME: name},
            "publishNotReadyAddresses": publish,
        },
    }))
    .map_err(|source| Error::Decode {
        kind: "Service",
        name: svc_name.clone(),
        source,
    })?;
    match api.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The PodGroup that places every pod of the JobSet at once (named after it, owned by it).
async fn ensure_pod_group(
    client: &kube::Client,
    jobset: &DynamicObject,
    spec: &JobSetSpec,
) -> Result<(), Error> {
    let ns = jobset.namespace().unwrap_or_default();
    let name = jobset.name_any();
    let api: Api<PodGroup> = Api::namespaced(client.clone(), &ns);
    let min_member: i32 = spec
        .replicated_jobs
        .iter()
        .map(|rj| rj.replicas.unwrap_or(1).saturating_mul(pods_per_job(rj)))
        .sum();
    if let Some(pg) = api.get_opt(&name).await? {
        if pg.spec.min_member != min_member {
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"minMember": min_member}})),
            )
            .await?;
        }
        return Ok(());
    }
    let mut pg = PodGroup::new(
        &name,
        PodGroupSpec {
            min_member,
            ..Default::default()
        },
    );
    pg.metadata.namespace = Some(ns);
    pg.metadata.owner_references = Some(vec![owner_reference(jobset)]);
    if let Some(queue) = jobset.labels().get(QUEUE_LABEL) {
        pg.metadata
            .labels
            .get_or_insert_default()
            .insert(QUEUE_LABEL.into(), queue.clone());
    }
    match api.create(&PostParams::default(), &pg).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: Value) -> JobSetSpec {
        serde_json::from_value(v).unwrap()
    }

    fn job(rjob: &str, cond: Option<(&str, &str)>) -> Job {
        let mut j: Job = serde_json::from_value(json!({
            "metadata": {"name": "x", "labels": {labels::REPLICATED_JOB_NAME: rjob}},
        }))
        .unwrap();
        if let Some((t, r)) = cond {
            j.status = Some(
                serde_json::from_value(json!({"conditions": [
                    {"type": t, "status": "True", "reason": r}
                ]}))
                .unwrap(),
            );
        }
        j
    }

    #[test]
    fn failure_policy_follows_upstream_rules() {
        let none = on_failure(None, "w", "BackoffLimitExceeded", 0);
        assert!(matches!(none, FailureAction::Fail(r, _) if r == reasons::FAILED_JOBS));
        let p: FailurePolicy = serde_json::from_value(json!({
            "maxRestarts": 1,
            "rules": [
                {"name": "fatal", "action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]},
                {"name": "free", "action": "RestartJobSetAndIgnoreMaxRestarts", "targetReplicatedJobs": ["driver"]},
            ]
        }))
        .unwrap();
        assert!(matches!(
            on_failure(Some(&p), "w", "PodFailurePolicy", 0),
            FailureAction::Fail(r, _) if r == reasons::FAIL_JOBSET_ACTION
        ));
        assert_eq!(
            on_failure(Some(&p), "driver", "BackoffLimitExceeded", 5),
            FailureAction::Restart {
                counts: false,
                reason: "FailurePolicy_free".into()
            }
        );
        assert!(matches!(
            on_failure(Some(&p), "w", "BackoffLimitExceeded", 0),
            FailureAction::Restart { counts: true, .. }
        ));
        assert!(matches!(
            on_failure(Some(&p), "w", "BackoffLimitExceeded", 1),
            FailureAction::Fail(r, _) if r == reasons::REACHED_MAX_RESTARTS
        ));
    }

    #[test]
    fn success_policy_all_and_any() {
        let all = spec(json!({"replicatedJobs": [
            {"name": "a", "replicas": 2, "template": {}}, {"name": "b", "template": {}}]}));
        let done = |r| job(r, Some(("Complete", "")));
        assert!(!succeeded(&all, &[done("a"), done("b")]));
        assert!(succeeded(&all, &[done("a"), done("a"), done("b")]));
        let any = spec(json!({"replicatedJobs": [
            {"name": "a", "template": {}}, {"name": "b", "template": {}}],
            "successPolicy": {"operator": "Any", "targetReplicatedJobs": ["b"]}}));
        assert!(!succeeded(&any, &[done("a"), job("b", None)]));
        assert!(succeeded(&any, &[job("a", None), done("b")]));
    }

    #[test]
    fn unsupported_fields_are_named() {
        let raw = json!({"replicatedJobs": [{"name": "a", "template": {}, "dependsOn": [{"name": "b", "status": "Ready"}]}],
            "failurePolicy": {"rules": [{"name": "r", "action": "RestartJob"}]}});
        let err = validate(&raw, &spec(raw.clone())).unwrap_err();
        assert!(err.contains("dependsOn is not supported"), "{err}");
        assert!(err.contains("\"RestartJob\""), "{err}");
    }

    #[test]
    fn jobs_get_names_labels_dns_and_the_gang() {
        let obj: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js", "namespace": "ns", "uid": "u1"},
        }))
        .unwrap();
        let s = spec(json!({"replicatedJobs": [
            {"name": "workers", "replicas": 2, "template": {"spec": {"parallelism": 3, "completions": 3,
                "template": {"spec": {"containers": [{"name": "c"}]}}}}}],
            "coordinator": {"replicatedJob": "workers"}}));
        let j = build_job(&obj, &s, &s.replicated_jobs[0], 1, 1, 2);
        assert_eq!(j.metadata.name.as_deref(), Some("js-workers-1"));
        let l = j.metadata.labels.as_ref().unwrap();
        assert_eq!(l[labels::RESTART_ATTEMPT], "2");
        assert_eq!(l[labels::JOB_INDEX], "1");
        let js = j.spec.unwrap();
        assert_eq!(js.completion_mode.as_deref(), Some("Indexed"));
        let pod = js.template.spec.unwrap();
        assert_eq!(pod.subdomain.as_deref(), Some("js"));
        assert_eq!(pod.restart_policy.as_deref(), Some("OnFailure"));
        let pm = js.template.metadata.unwrap();
        assert_eq!(pm.labels.unwrap()[POD_GROUP_LABEL], "js");
        assert_eq!(
            pm.annotations.unwrap()[labels::COORDINATOR],
            "js-workers-0-0.js"
        );
    }
}

//! The Job controller, as kube-controller-manager's: pods run to completion (NonIndexed and
//! Indexed), back-off limits (global and per index), pod failure and success policies,
//! suspend, deadlines, and clean-up after `ttlSecondsAfterFinished`.
//!
//! Every reconcile reads the Job and its pods afresh from the API (never from a cache), so
//! a stale view never creates a second pod for an index. Pods carry the
//! `batch.kubernetes.io/job-tracking` finalizer until their outcome is recorded in the Job's
//! status, in kube's two steps: the pod's uid goes to `status.uncountedTerminatedPods` (or
//! its index to `completedIndexes`), then the finalizer is removed, then the uid moves to the
//! counters. A `kill -9` between any two steps loses and double-counts nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// The finalizer on a Job's pods until their outcome is in the Job's status.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The annotation (and label) with an Indexed Job pod's completion index.
pub const COMPLETION_INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";
/// How many times the pod's index failed before it (backoffLimitPerIndex).
pub const INDEX_FAILURE_COUNT_ANNOTATION: &str = "batch.kubernetes.io/job-index-failure-count";
/// How many failures of the pod's index the pod failure policy ignored before it.
pub const INDEX_IGNORED_FAILURE_COUNT_ANNOTATION: &str =
    "batch.kubernetes.io/job-index-ignored-failure-count";
/// The environment variable with the completion index in every container.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The label with the Job's uid on its pods.
pub const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// The label with the Job's name on its pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The first delay before a failed pod is replaced; it doubles per failure.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest delay before a failed pod is replaced.
const BACKOFF_MAX: Duration = Duration::from_secs(360);
/// Reconcile at least this often (deadlines and back-offs requeue sooner).
const RESYNC: Duration = Duration::from_secs(60);

/// Runs the controller until the process stops.
pub async fn run(client: kube::Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let orphans = release_orphans(client.clone());
    let controller = Controller::new(jobs, watcher::Config::default())
        .owns(
            pods,
            watcher::Config::default().labels(CONTROLLER_UID_LABEL),
        )
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "job controller");
            }
            futures::future::ready(())
        });
    futures::join!(controller, orphans);
}

fn error_policy(job: Arc<Job>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::debug!(job = %job.name_any(), %error, "cannot sync the Job; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// What became of a pod, as far as the Job is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Pending or running (and not being deleted).
    Active,
    /// Being deleted, outcome not yet known.
    Terminating,
    Succeeded,
    Failed,
    /// Gone without counting (deleted while the Job was suspended or finished).
    Discarded,
}

/// One pod of the Job.
struct Member<'a> {
    pod: &'a Pod,
    uid: String,
    index: Option<i32>,
    outcome: Outcome,
    tracked: bool,
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn index_of(pod: &Pod) -> Option<i32> {
    pod.annotations()
        .get(COMPLETION_INDEX_ANNOTATION)
        .or_else(|| pod.labels().get(COMPLETION_INDEX_ANNOTATION))
        .and_then(|v| v.parse().ok())
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.annotations()
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// When the pod finished (its last container's finish), for back-off.
fn finished_at(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let terminated = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    terminated
        .or_else(|| pod.metadata.deletion_timestamp.as_ref().map(|t| t.0))
        .or_else(|| pod.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or_else(Timestamp::now)
}

fn spec_of(job: &Job) -> k8s_openapi::api::batch::v1::JobSpec {
    job.spec.clone().unwrap_or_default()
}

fn condition<'a>(status: &'a JobStatus, type_: &str) -> Option<&'a JobCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_ && c.status == "True")
}

fn now_time() -> Time {
    Time(Timestamp::now())
}

/// Sets condition `type_` (adding it, or updating the one there on a status change).
fn set_condition(status: &mut JobStatus, type_: &str, value: &str, reason: &str, message: &str) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != value {
            c.status = value.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(now_time());
            c.last_transition_time = Some(now_time());
        }
        return;
    }
    conditions.push(JobCondition {
        type_: type_.into(),
        status: value.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now_time()),
        last_transition_time: Some(now_time()),
    });
}

/// Whether the Job has finished (Complete or Failed).
pub fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| condition(s, "Complete").is_some() || condition(s, "Failed").is_some())
}

/// An ordered set of indexes, written as kube writes them (`0-3,5`).
fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

fn parse_indexes(text: Option<&str>) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
    {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.parse::<i32>(), hi.parse::<i32>()) {
            set.extend(lo..=hi);
        }
    }
    set
}

/// The first pod failure policy rule matching a failed pod: its action and the message
/// kube gives it.
fn match_pod_failure_policy(job: &Job, pod: &Pod) -> Option<(String, String)> {
    let policy = spec_of(job).pod_failure_policy?;
    let pod_name = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let statuses: Vec<_> = pod
        .status
        .as_ref()
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .collect();
    for (i, rule) in policy.rules.iter().enumerate() {
        if let Some(codes) = &rule.on_exit_codes {
            for s in &statuses {
                if codes.container_name.as_ref().is_some_and(|n| *n != s.name) {
                    continue;
                }
                let Some(code) = s
                    .state
                    .as_ref()
                    .and_then(|st| st.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                if code == 0 {
                    continue;
                }
                let inside = codes.values.contains(&code);
                let hit = match codes.operator.as_str() {
                    "In" => inside,
                    "NotIn" => !inside,
                    _ => false,
                };
                if hit {
                    return Some((
                        rule.action.clone(),
                        format!(
                            "Container {} for pod {pod_name} failed with exit code {code} matching {} rule at index {i}",
                            s.name, rule.action
                        ),
                    ));
                }
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            let want = pattern.status.as_deref().unwrap_or("True");
            let hit = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .any(|c| c.type_ == pattern.type_ && c.status == want);
            if hit {
                return Some((
                    rule.action.clone(),
                    format!(
                        "Pod {pod_name} has condition {} matching {} rule at index {i}",
                        pattern.type_, rule.action
                    ),
                ));
            }
        }
    }
    None
}

/// Lists the Job's pods afresh (its selector, then only those it controls).
async fn job_pods(client: &kube::Client, job: &Job) -> Result<Vec<Pod>, Error> {
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let selector = selector_string(job);
    let pods = api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    Ok(pods
        .into_iter()
        .filter(|p| {
            p.owner_references()
                .iter()
                .any(|o| o.controller == Some(true) && o.uid == uid)
        })
        .collect())
}

fn selector_string(job: &Job) -> String {
    let selector = job
        .spec
        .as_ref()
        .map(|s| s.selector.clone().unwrap_or_default());
    let selector = selector.unwrap_or_default();
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    if parts.is_empty() {
        // A Job always has a selector; never choose every pod of the namespace.
        return format!("{CONTROLLER_UID_LABEL}={}", job.uid().unwrap_or_default());
    }
    parts.join(",")
}

async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let rest: Vec<String> = pod
        .finalizers()
        .iter()
        .filter(|f| *f != TRACKING_FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": pod.resource_version(),
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Writes the Job's status (conditional on the version read); returns the stored Job.
async fn write_status(api: &Api<Job>, job: &Job, status: JobStatus) -> Result<Job, Error> {
    let mut next = job.clone();
    next.status = Some(status);
    Ok(api
        .replace_status(&job.name_any(), &PostParams::default(), &next)
        .await?)
}

async fn reconcile(cached: Arc<Job>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let jobs: Api<Job> = Api::namespaced((*client).clone(), &ns);
    let pods_api: Api<Pod> = Api::namespaced((*client).clone(), &ns);
    let Some(job) = jobs.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if job.uid() != cached.uid() {
        return Ok(Action::await_change());
    }
    let pods = job_pods(&client, &job).await?;
    if job.meta().deletion_timestamp.is_some() {
        for p in pods
            .iter()
            .filter(|p| p.finalizers().iter().any(|f| f == TRACKING_FINALIZER))
        {
            remove_finalizer(&pods_api, p).await?;
        }
        return Ok(Action::await_change());
    }
    if finished(&job) {
        for p in pods
            .iter()
            .filter(|p| p.finalizers().iter().any(|f| f == TRACKING_FINALIZER))
        {
            remove_finalizer(&pods_api, p).await?;
        }
        return after_finished(&jobs, &job).await;
    }
    sync(&jobs, &pods_api, job, &pods).await
}

/// A finished Job: deleted `ttlSecondsAfterFinished` after it finished.
async fn after_finished(jobs: &Api<Job>, job: &Job) -> Result<Action, Error> {
    let Some(ttl) = spec_of(job).ttl_seconds_after_finished else {
        return Ok(Action::await_change());
    };
    let status = job.status.clone().unwrap_or_default();
    let finished_at = condition(&status, "Complete")
        .or_else(|| condition(&status, "Failed"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
        .unwrap_or_else(Timestamp::now);
    let expires = finished_at.as_second().saturating_add(i64::from(ttl));
    let now = Timestamp::now().as_second();
    if now < expires {
        return Ok(Action::requeue(Duration::from_secs(
            u64::try_from(expires - now).unwrap_or(1).max(1),
        )));
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match jobs.delete(&job.name_any(), &params).await {
        Ok(_) => {
            tracing::info!(job = %job.name_any(), "deleted the finished Job (ttlSecondsAfterFinished)");
            Ok(Action::await_change())
        }
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

/// The back-off before the next pod of `failures` recent failures, the last at `last`.
fn backoff_until(failures: u32, last: Timestamp) -> Option<Timestamp> {
    if failures == 0 {
        return None;
    }
    let delay = BACKOFF_BASE
        .saturating_mul(1u32 << (failures - 1).min(10))
        .min(BACKOFF_MAX);
    Timestamp::from_second(last.as_second() + delay.as_secs() as i64).ok()
}

#[allow(clippy::too_many_lines)]
async fn sync(
    jobs: &Api<Job>,
    pods_api: &Api<Pod>,
    mut job: Job,
    pods: &[Pod],
) -> Result<Action, Error> {
    let spec = spec_of(&job);
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let suspended = spec.suspend == Some(true);
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let only_failed_replaced = spec.pod_replacement_policy.as_deref() == Some("Failed")
        || spec.pod_failure_policy.is_some();
    let mut status = job.status.clone().unwrap_or_default();
    let target_already = condition(&status, "FailureTarget").is_some()
        || condition(&status, "SuccessCriteriaMet").is_some();

    // Classify the pods.
    let members: Vec<Member> = pods
        .iter()
        .map(|pod| {
            let deleting = pod.metadata.deletion_timestamp.is_some();
            let outcome = match phase(pod) {
                "Succeeded" => Outcome::Succeeded,
                "Failed" if deleting && suspended => Outcome::Discarded,
                "Failed" => Outcome::Failed,
                _ if deleting && (suspended || target_already) => Outcome::Discarded,
                _ if deleting && !only_failed_replaced => Outcome::Failed,
                _ if deleting => Outcome::Terminating,
                _ => Outcome::Active,
            };
            Member {
                pod,
                uid: pod.uid().unwrap_or_default(),
                index: index_of(pod),
                outcome,
                tracked: pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER),
            }
        })
        .collect();
    let in_range =
        |ix: Option<i32>| !indexed || ix.is_some_and(|i| i >= 0 && Some(i) < completions);

    // Step 1: record the outcome of every finished pod that still holds the finalizer.
    let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut un_succeeded: BTreeSet<String> = uncounted
        .succeeded
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut un_failed: BTreeSet<String> = uncounted
        .failed
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let mut completed = parse_indexes(status.completed_indexes.as_deref());
    let mut failed_indexes = parse_indexes(status.failed_indexes.as_deref());
    let mut failure_target: Option<(String, String)> = None;
    let mut release: Vec<&Pod> = Vec::new();
    // Failures per index, from the pods' annotations and their own outcome.
    let mut index_failures: BTreeMap<i32, i32> = BTreeMap::new();
    let mut index_ignored: BTreeMap<i32, i32> = BTreeMap::new();
    for m in &members {
        let Some(ix) = m.index else { continue };
        let mut failures = annotation_count(m.pod, INDEX_FAILURE_COUNT_ANNOTATION);
        let mut ignored = annotation_count(m.pod, INDEX_IGNORED_FAILURE_COUNT_ANNOTATION);
        if m.outcome == Outcome::Failed {
            match match_pod_failure_policy(&job, m.pod) {
                Some((action, _)) if action == "Ignore" => ignored += 1,
                _ => failures += 1,
            }
        }
        let f = index_failures.entry(ix).or_default();
        *f = (*f).max(failures);
        let g = index_ignored.entry(ix).or_default();
        *g = (*g).max(ignored);
    }
    for m in members.iter().filter(|m| m.tracked) {
        match m.outcome {
            Outcome::Active | Outcome::Terminating => {}
            Outcome::Discarded => release.push(m.pod),
            Outcome::Succeeded => {
                if indexed {
                    if let Some(ix) = m.index.filter(|_| in_range(m.index)) {
                        completed.insert(ix);
                    }
                } else if !un_failed.contains(&m.uid) {
                    un_succeeded.insert(m.uid.clone());
                }
                release.push(m.pod);
            }
            Outcome::Failed => {
                if un_failed.contains(&m.uid) || un_succeeded.contains(&m.uid) {
                    release.push(m.pod);
                    continue;
                }
                let rule = match_pod_failure_policy(&job, m.pod);
                match rule.as_ref().map(|(a, _)| a.as_str()) {
                    Some("Ignore") => {}
                    Some("FailJob") => {
                        un_failed.insert(m.uid.clone());
                        if failure_target.is_none() && !target_already {
                            failure_target = Some((
                                "PodFailurePolicy".into(),
                                rule.map(|(_, msg)| msg).unwrap_or_default(),
                            ));
                        }
                    }
                    Some("FailIndex") => {
                        un_failed.insert(m.uid.clone());
                        if let Some(ix) = m.index {
                            failed_indexes.insert(ix);
                        }
                    }
                    _ => {
                        un_failed.insert(m.uid.clone());
                        if let (Some(limit), Some(ix)) = (spec.backoff_limit_per_index, m.index)
                            && index_failures.get(&ix).copied().unwrap_or(0) > limit
                        {
                            failed_indexes.insert(ix);
                        }
                    }
                }
                release.push(m.pod);
            }
        }
    }
    if indexed {
        // A completed index is never failed, nor the other way round.
        for ix in &completed {
            failed_indexes.remove(ix);
        }
    }
    uncounted.succeeded = non_empty(un_succeeded.iter().cloned().collect());
    uncounted.failed = non_empty(un_failed.iter().cloned().collect());
    let mut recorded = status.clone();
    recorded.uncounted_terminated_pods = Some(uncounted.clone());
    if indexed {
        recorded.completed_indexes = non_empty_str(format_indexes(&completed));
        if spec.backoff_limit_per_index.is_some() {
            recorded.failed_indexes = non_empty_str(format_indexes(&failed_indexes));
        }
    }
    if let Some((reason, message)) = &failure_target {
        set_condition(&mut recorded, "FailureTarget", "True", reason, message);
    }
    if recorded != status {
        job = write_status(jobs, &job, recorded).await?;
        status = job.status.clone().unwrap_or_default();
    }
    // Step 2: the outcomes are recorded; let the pods go.
    for pod in &release {
        remove_finalizer(pods_api, pod).await?;
    }
    let released: BTreeSet<String> = release.iter().filter_map(|p| p.uid()).collect();
    let still_tracked: BTreeSet<String> = members
        .iter()
        .filter(|m| m.tracked && !released.contains(&m.uid))
        .map(|m| m.uid.clone())
        .collect();
    // Step 3: uids whose pods no longer hold the finalizer move to the counters.
    let mut next = status.clone();
    let mut uncounted = next.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut succeeded = next.succeeded.unwrap_or(0);
    let mut failed = next.failed.unwrap_or(0);
    let keep = |list: &mut Option<Vec<String>>, counter: &mut i32| {
        let all = list.take().unwrap_or_default();
        let (stay, done): (Vec<String>, Vec<String>) =
            all.into_iter().partition(|uid| still_tracked.contains(uid));
        *counter += done.len() as i32;
        *list = non_empty(stay);
    };
    keep(&mut uncounted.succeeded, &mut succeeded);
    keep(&mut uncounted.failed, &mut failed);
    if indexed {
        succeeded = completed.len() as i32;
    }
    next.uncounted_terminated_pods = Some(uncounted.clone());
    next.succeeded = Some(succeeded);
    next.failed = Some(failed);
    let pending_failed = uncounted.failed.as_ref().map_or(0, Vec::len) as i32;
    let total_failed = failed + pending_failed;

    // The pods that still run.
    let active: Vec<&Member> = members
        .iter()
        .filter(|m| m.outcome == Outcome::Active)
        .collect();
    let terminating = members
        .iter()
        .filter(|m| m.outcome == Outcome::Terminating)
        .count() as i32;
    let now = Timestamp::now();
    let mut requeue = RESYNC;
    let mut to_delete: Vec<&Pod> = Vec::new();
    let mut to_create: Vec<Option<i32>> = Vec::new();

    // Failure and success criteria.
    if condition(&next, "FailureTarget").is_none()
        && condition(&next, "SuccessCriteriaMet").is_none()
    {
        let backoff_limit = spec.backoff_limit.unwrap_or(6);
        let deadline = spec
            .active_deadline_seconds
            .zip(next.start_time.as_ref())
            .map(|(d, start)| start.0.as_second().saturating_add(d));
        let failure = if total_failed > backoff_limit {
            Some((
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ))
        } else if spec
            .max_failed_indexes
            .is_some_and(|max| failed_indexes.len() as i32 > max)
        {
            Some((
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            ))
        } else if !suspended && deadline.is_some_and(|d| now.as_second() >= d) {
            Some((
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ))
        } else if indexed
            && !failed_indexes.is_empty()
            && completions.is_some_and(|c| (completed.len() + failed_indexes.len()) as i32 >= c)
        {
            Some(("FailedIndexes", "Job has failed indexes"))
        } else {
            None
        };
        if let Some(d) = deadline.filter(|_| !suspended)
            && d > now.as_second()
        {
            requeue = requeue.min(Duration::from_secs((d - now.as_second()) as u64));
        }
        if let Some((reason, message)) = failure {
            set_condition(&mut next, "FailureTarget", "True", reason, message);
        } else if let Some(rule) = success_policy_match(&spec, &completed) {
            set_condition(
                &mut next,
                "SuccessCriteriaMet",
                "True",
                "SuccessPolicy",
                &format!("Matched rules at index {rule}"),
            );
        } else {
            let done = match completions {
                Some(c) => succeeded >= c,
                None => succeeded > 0 && active.is_empty(),
            };
            if done {
                set_condition(
                    &mut next,
                    "SuccessCriteriaMet",
                    "True",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                );
            }
        }
    }

    let target = condition(&next, "FailureTarget")
        .or_else(|| condition(&next, "SuccessCriteriaMet"))
        .cloned();
    if let Some(target) = &target {
        // Stop everything; finish once no pod runs and every outcome is counted.
        to_delete.extend(active.iter().map(|m| m.pod));
        let outstanding = uncounted.succeeded.as_ref().map_or(0, Vec::len)
            + uncounted.failed.as_ref().map_or(0, Vec::len);
        if active.is_empty() && terminating == 0 && outstanding == 0 {
            let final_type = if target.type_ == "FailureTarget" {
                "Failed"
            } else {
                next.completion_time = Some(now_time());
                "Complete"
            };
            set_condition(
                &mut next,
                final_type,
                "True",
                target.reason.as_deref().unwrap_or_default(),
                target.message.as_deref().unwrap_or_default(),
            );
        } else {
            requeue = Duration::from_secs(1);
        }
    } else if suspended {
        to_delete.extend(active.iter().map(|m| m.pod));
        let already = next
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        if !already {
            set_condition(
                &mut next,
                "Suspended",
                "True",
                "JobSuspended",
                "Job suspended",
            );
        }
    } else {
        let resumed = next
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Suspended" && c.status == "True");
        if resumed {
            set_condition(&mut next, "Suspended", "False", "JobResumed", "Job resumed");
            next.start_time = Some(now_time());
        }
        if next.start_time.is_none() {
            next.start_time = Some(now_time());
            if let Some(d) = spec.active_deadline_seconds {
                requeue = requeue.min(Duration::from_secs(d.max(1) as u64));
            }
        }
        // Back-off since the last success: recent failures delay replacements.
        let last_success = members
            .iter()
            .filter(|m| m.outcome == Outcome::Succeeded)
            .map(|m| finished_at(m.pod))
            .max();
        let counts_as_failure = |m: &Member| {
            m.outcome == Outcome::Failed
                && !matches!(
                    match_pod_failure_policy(&job, m.pod)
                        .as_ref()
                        .map(|(a, _)| a.as_str()),
                    Some("Ignore")
                )
        };
        if indexed {
            let mut running: BTreeMap<i32, Vec<&Member>> = BTreeMap::new();
            for m in &active {
                match m.index.filter(|_| in_range(m.index)) {
                    Some(ix) if !completed.contains(&ix) && !failed_indexes.contains(&ix) => {
                        running.entry(ix).or_default().push(m)
                    }
                    _ => to_delete.push(m.pod),
                }
            }
            // One pod per index: the oldest stays.
            for list in running.values_mut() {
                list.sort_by_key(|m| m.pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
                to_delete.extend(list.iter().skip(1).map(|m| m.pod));
            }
            let terminating_indexes: BTreeSet<i32> = members
                .iter()
                .filter(|m| m.outcome == Outcome::Terminating)
                .filter_map(|m| m.index)
                .collect();
            let mut slots = (parallelism as usize).saturating_sub(running.len());
            for ix in 0..completions.unwrap_or(0) {
                if slots == 0 {
                    break;
                }
                if completed.contains(&ix)
                    || failed_indexes.contains(&ix)
                    || running.contains_key(&ix)
                    || terminating_indexes.contains(&ix)
                {
                    continue;
                }
                // Per-index back-off (or the Job's when the limit is global).
                let failures: Vec<Timestamp> = members
                    .iter()
                    .filter(|m| counts_as_failure(m))
                    .filter(|m| spec.backoff_limit_per_index.is_none() || m.index == Some(ix))
                    .map(|m| finished_at(m.pod))
                    .filter(|t| {
                        last_success.is_none_or(|s| *t > s)
                            || spec.backoff_limit_per_index.is_some()
                    })
                    .collect();
                let wait = failures
                    .iter()
                    .max()
                    .and_then(|last| backoff_until(failures.len() as u32, *last));
                if let Some(until) = wait
                    && until > now
                {
                    requeue = requeue.min(Duration::from_secs(
                        (until.as_second() - now.as_second()).max(1) as u64,
                    ));
                    continue;
                }
                to_create.push(Some(ix));
                slots -= 1;
            }
        } else {
            let want = match completions {
                Some(c) => (c - succeeded).clamp(0, parallelism),
                None if succeeded > 0 => 0,
                None => parallelism,
            } as usize;
            let replacements_blocked = only_failed_replaced && terminating > 0;
            if active.len() > want {
                let mut extra: Vec<&Member> = active.clone();
                // Not-ready and newest pods go first.
                extra.sort_by_key(|m| {
                    (
                        pod_ready(m.pod),
                        std::cmp::Reverse(m.pod.metadata.creation_timestamp.as_ref().map(|t| t.0)),
                    )
                });
                to_delete.extend(extra.iter().take(active.len() - want).map(|m| m.pod));
            } else if active.len() < want && !replacements_blocked {
                let failures: Vec<Timestamp> = members
                    .iter()
                    .filter(|m| counts_as_failure(m))
                    .map(|m| finished_at(m.pod))
                    .filter(|t| last_success.is_none_or(|s| *t > s))
                    .collect();
                let wait = failures
                    .iter()
                    .max()
                    .and_then(|last| backoff_until(failures.len() as u32, *last));
                match wait {
                    Some(until) if until > now => {
                        requeue = requeue.min(Duration::from_secs(
                            (until.as_second() - now.as_second()).max(1) as u64,
                        ));
                    }
                    _ => to_create.extend(std::iter::repeat_n(None, want - active.len())),
                }
            }
        }
    }

    // Act: deletions, then creations.
    let deleted: BTreeSet<String> = to_delete.iter().filter_map(|p| p.uid()).collect();
    for pod in &to_delete {
        delete_pod(pods_api, pod).await?;
    }
    let mut created = 0;
    for index in &to_create {
        let failures = index.map_or(0, |ix| index_failures.get(&ix).copied().unwrap_or(0));
        let ignored = index.map_or(0, |ix| index_ignored.get(&ix).copied().unwrap_or(0));
        let pod = new_pod(&job, *index, failures, ignored);
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => created += 1,
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 409 => {
                tracing::warn!(job = %job.name_any(), message = %s.message, "cannot create a pod of the Job");
                requeue = requeue.min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    }

    // Status from what was observed (and what was just created or deleted).
    let still_active: Vec<&&Member> = active
        .iter()
        .filter(|m| !deleted.contains(&m.uid))
        .collect();
    next.active = Some(still_active.len() as i32 + created);
    next.ready = Some(still_active.iter().filter(|m| pod_ready(m.pod)).count() as i32);
    next.terminating = Some(terminating + deleted.len() as i32);
    if finished_status(&next) {
        next.active = Some(0);
        next.ready = Some(0);
        next.terminating = Some(0);
    }
    if indexed {
        next.completed_indexes = non_empty_str(format_indexes(&completed));
        if spec.backoff_limit_per_index.is_some() {
            next.failed_indexes = non_empty_str(format_indexes(&failed_indexes));
        }
    }
    if next != status {
        job = write_status(jobs, &job, next).await?;
    }
    if finished(&job) {
        return after_finished(jobs, &job).await;
    }
    Ok(Action::requeue(requeue))
}

/// `None` for an empty list, as the API round-trips it.
fn non_empty(list: Vec<String>) -> Option<Vec<String>> {
    (!list.is_empty()).then_some(list)
}

fn non_empty_str(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

fn finished_status(status: &JobStatus) -> bool {
    condition(status, "Complete").is_some() || condition(status, "Failed").is_some()
}

/// The index of the first success policy rule the completed indexes satisfy.
fn success_policy_match(
    spec: &k8s_openapi::api::batch::v1::JobSpec,
    completed: &BTreeSet<i32>,
) -> Option<usize> {
    let policy = spec.success_policy.as_ref()?;
    policy.rules.iter().position(|rule| {
        let chosen: BTreeSet<i32> = match &rule.succeeded_indexes {
            Some(text) => parse_indexes(Some(text)),
            None => (0..spec.completions.unwrap_or(0)).collect(),
        };
        let done = chosen.intersection(completed).count() as i32;
        match rule.succeeded_count {
            Some(n) => done >= n,
            None => done == chosen.len() as i32,
        }
    })
}

/// A new pod of the Job (for `index` when Indexed), from its template.
fn new_pod(job: &Job, index: Option<i32>, failures: i32, ignored: i32) -> Pod {
    let spec = spec_of(job);
    let template = spec.template;
    let name = job.name_any();
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut pod_spec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(ix) => {
            labels.insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
            annotations.insert(COMPLETION_INDEX_ANNOTATION.into(), ix.to_string());
            if spec.backoff_limit_per_index.is_some() {
                annotations.insert(INDEX_FAILURE_COUNT_ANNOTATION.into(), failures.to_string());
                if ignored > 0 {
                    annotations.insert(
                        INDEX_IGNORED_FAILURE_COUNT_ANNOTATION.into(),
                        ignored.to_string(),
                    );
                }
            }
            pod_spec.hostname = Some(format!("{name}-{ix}"));
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: Some("v1".into()),
                        field_path: format!(
                            "metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
                        ),
                    }),
                    ..Default::default()
                }),
            };
            for c in pod_spec
                .containers
                .iter_mut()
                .chain(pod_spec.init_containers.iter_mut().flatten())
            {
                let list = c.env.get_or_insert_with(Vec::new);
                if !list.iter().any(|e| e.name == COMPLETION_INDEX_ENV) {
                    list.push(env.clone());
                }
            }
            format!("{name}-{ix}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: job.controller_owner_ref(&()).map(|mut o| {
                o.block_owner_deletion = Some(true);
                vec![o]
            }),
            finalizers: Some(vec![TRACKING_FINALIZER.into()]),
            ..Default::default()
        },
        spec: Some(pod_spec),
        status: None,
    }
}

/// Removes the tracking finalizer from pods whose Job is gone (deleted, or replaced by
/// another of the same name), so they can go.
async fn release_orphans(client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut backoff = crate::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        let stream = watcher::watcher(
            pods.clone(),
            watcher::Config::default().labels(CONTROLLER_UID_LABEL),
        );
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "job controller: pod watch");
                    break;
                }
            };
            backoff.reset();
            // Pods of a Job that is gone are deleted by the garbage collector.
            if pod.metadata.deletion_timestamp.is_none()
                || !pod.finalizers().iter().any(|f| f == TRACKING_FINALIZER)
            {
                continue;
            }
            let Some(owner) = pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true) && o.kind == "Job")
                .cloned()
            else {
                continue;
            };
            let ns = pod.namespace().unwrap_or_default();
            let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
            let orphaned = match jobs.get_opt(&owner.name).await {
                Ok(Some(job)) => job.uid().as_deref() != Some(owner.uid.as_str()),
                Ok(None) => true,
                Err(_) => false,
            };
            if orphaned {
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                release_orphan(&api, pod).await;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Removes the tracking finalizer of an orphaned pod, re-reading it after a conflict (the
/// agent stopping it writes its status meanwhile; the last such write may be the last event
/// the watch ever sees of it).
async fn release_orphan(api: &Api<Pod>, mut pod: Pod) {
    let mut backoff = crate::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    for _ in 0..10 {
        match remove_finalizer(api, &pod).await {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(pod = %pod.name_any(), error = %e, "cannot release an orphaned Job pod yet");
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
        match api.get_opt(&pod.name_any()).await {
            Ok(Some(fresh)) if fresh.finalizers().iter().any(|f| f == TRACKING_FINALIZER) => {
                pod = fresh;
            }
            Ok(_) => return,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_format_as_kube_intervals() {
        let set: BTreeSet<i32> = [0, 1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(format_indexes(&set), "0-3,5,7-8");
        assert_eq!(parse_indexes(Some("0-3,5,7-8")), set);
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn backoff_doubles_from_ten_seconds_to_six_minutes() {
        let t = Timestamp::from_second(1_000).unwrap();
        let delay = |n| backoff_until(n, t).map(|u| u.as_second() - 1_000);
        assert_eq!(delay(0), None);
        assert_eq!(delay(1), Some(10));
        assert_eq!(delay(2), Some(20));
        assert_eq!(delay(3), Some(40));
        assert_eq!(delay(10), Some(360));
    }

    #[test]
    fn indexed_pods_carry_their_index() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "work", "namespace": "default", "uid": "u1"},
            "spec": {
                "completionMode": "Indexed", "completions": 4, "backoffLimitPerIndex": 1,
                "selector": {"matchLabels": {CONTROLLER_UID_LABEL: "u1"}},
                "template": {"metadata": {"labels": {CONTROLLER_UID_LABEL: "u1"}},
                    "spec": {"restartPolicy": "Never", "subdomain": "svc",
                        "containers": [{"name": "c", "image": "busybox"}]}}
            }
        }))
        .unwrap();
        let pod = new_pod(&job, Some(2), 1, 0);
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("work-2-"));
        assert_eq!(pod.labels()[COMPLETION_INDEX_ANNOTATION], "2");
        assert_eq!(pod.annotations()[COMPLETION_INDEX_ANNOTATION], "2");
        assert_eq!(pod.annotations()[INDEX_FAILURE_COUNT_ANNOTATION], "1");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("work-2"));
        assert_eq!(spec.subdomain.as_deref(), Some("svc"));
        let env = spec.containers[0].env.as_ref().unwrap();
        assert_eq!(env[0].name, COMPLETION_INDEX_ENV);
        assert_eq!(pod.metadata.finalizers.unwrap(), [TRACKING_FINALIZER]);
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
    }
    #[test]
    fn pod_failure_policy_and_success_policy_match_as_kube() {
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {
                "completionMode": "Indexed", "completions": 5,
                "successPolicy": {"rules": [{"succeededIndexes": "0-2", "succeededCount": 2}]},
                "podFailurePolicy": {"rules": [
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                    {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}
                ]},
                "template": {"spec": {"containers": [{"name": "main"}]}}
            }
        }))
        .unwrap();
        let failed = |code: i32, disrupted: bool| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "status": {
                    "phase": "Failed",
                    "conditions": if disrupted {
                        json!([{"type": "DisruptionTarget", "status": "True"}])
                    } else {
                        json!([])
                    },
                    "containerStatuses": [{"name": "main", "image": "", "imageID": "",
                        "ready": false, "restartCount": 0,
                        "state": {"terminated": {"exitCode": code}}}]
                }
            }))
            .unwrap()
        };
        assert_eq!(
            match_pod_failure_policy(&job, &failed(42, false)),
            Some((
                "FailJob".into(),
                "Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 1"
                    .into()
            ))
        );
        assert_eq!(
            match_pod_failure_policy(&job, &failed(42, true)).map(|(a, _)| a),
            Some("Ignore".into())
        );
        assert_eq!(match_pod_failure_policy(&job, &failed(1, false)), None);

        let spec = spec_of(&job);
        assert_eq!(
            success_policy_match(&spec, &[0, 3].into_iter().collect()),
            None
        );
        assert_eq!(
            success_policy_match(&spec, &[0, 2].into_iter().collect()),
            Some(0)
        );
    }
}

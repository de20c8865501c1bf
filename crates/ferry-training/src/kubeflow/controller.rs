//! The replica engine shared by the v1 kinds (see the [module docs](super)).
//!
//! Each reconcile reads the job, its pods and its Services afresh from the API and acts on
//! what it observes:
//! - a decode or validation error fails the job (`Failed`, reason `<Kind>FailedValidation`,
//!   the message saying which field is wrong);
//! - a finished job: its pods and Services are deleted as `runPolicy.cleanPodPolicy` says
//!   (`None` by default; pods never placed go whatever it says), its PodGroup removed, and
//!   the job itself deleted once `ttlSecondsAfterFinished` has passed;
//! - `runPolicy.suspend`: every pod and Service goes, `Suspended` is set, the start time
//!   reset; resuming sets `Suspended=False` (reason `<Kind>Resumed`);
//! - `activeDeadlineSeconds` past the start time fails the job;
//! - a PodGroup named after the job (the scheduler's gang), then one pod and one headless
//!   Service per replica type and index;
//! - a failed pod: `Never` fails the job; `ExitCode` recreates the pod when the exit code is
//!   retryable (128 and above, a signal) and fails the job when it is permanent (1-127);
//!   `OnFailure`/`Always` pods restart in place (the node agent restarts the container),
//!   so one that fails anyway, or one the node lifecycle controller failed
//!   (`DisruptionTarget`), or one deleted by someone else while the job runs, restarts the
//!   whole gang (pods deleted and recreated, `Restarting`), except in the framework's
//!   elastic replica type, whose lost pods are simply recreated;
//! - `backoffLimit` bounds the restarts: gang restarts, single-pod recreations and in-place
//!   container restarts together; one more than it allows fails the job;
//! - status: `replicaStatuses` from the pods, `Running` once the gang's `minMember` pods
//!   run, `Succeeded` when the framework says so.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_api::scheduling::{POD_GROUP_LABEL, PodGroup, PodGroupSpec, QUEUE_LABEL};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerPort, Pod, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions, PropagationPolicy,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::types::{JobStatus, ReplicaPhases, ReplicaStatus, conditions};
use super::{
    API_VERSION, Framework, GROUP, JobView, OPERATOR_NAME, ReplicaSpec, RestartPolicy, RunPolicy,
    labels, replica_name, replica_port,
};
use crate::Error;

/// Annotation on a job: how many times the engine restarted its gang or recreated one of
/// its pods (counted against `backoffLimit` with the in-place container restarts).
pub const RESTARTS_ANNOTATION: &str = "training.ferry.dev/restarts";
/// The `runPolicy.managedBy` value of jobs this engine manages (absent means the same).
pub const MANAGED_BY: &str = "kubeflow.org/training-operator";
/// Reconcile at least this often.
const RESYNC: Duration = Duration::from_secs(60);
/// How many of a job's pods and Services are created at once.
const CREATE_CONCURRENCY: usize = 32;
/// The field manager of the engine's writes.
const MANAGER: &str = "ferry-training";

struct Ctx<F> {
    client: kube::Client,
    framework: F,
    resource: ApiResource,
}

/// Runs the controller of one kind until its watch ends.
pub async fn run<F: Framework>(client: kube::Client, framework: F) {
    let resource = ApiResource {
        group: GROUP.into(),
        version: "v1".into(),
        api_version: API_VERSION.into(),
        kind: framework.kind().into(),
        plural: framework.plural().into(),
    };
    let jobs: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let owned = watcher::Config::default().labels(labels::OPERATOR_NAME);
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        framework,
        resource: resource.clone(),
    });
    Controller::new_with(jobs, watcher::Config::default(), resource)
        .owns(Api::<Pod>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client), owned)
        .run(reconcile::<F>, error_policy::<F>, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "kubeflow job controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy<F: Framework>(job: Arc<DynamicObject>, error: &Error, _: Arc<Ctx<F>>) -> Action {
    tracing::debug!(job = %job.name_any(), %error, "cannot sync the job; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Decodes the kind-independent parts of a job.
pub fn decode<F: Framework + ?Sized>(
    framework: &F,
    job: &DynamicObject,
) -> Result<JobView, String> {
    let spec = job.data.get("spec").cloned().unwrap_or(Value::Null);
    let field = framework.replica_specs_field();
    let replica_specs: BTreeMap<String, ReplicaSpec> = match spec.get(field) {
        None | Some(Value::Null) => return Err(format!("spec.{field}: Required value")),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("spec.{field}: {e}"))?,
    };
    let run_policy: RunPolicy = match spec.get("runPolicy") {
        None | Some(Value::Null) => RunPolicy::default(),
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| format!("spec.runPolicy: {e}"))?,
    };
    Ok(JobView {
        name: job.name_any(),
        namespace: job.namespace().unwrap_or_default(),
        uid: job.uid().unwrap_or_default(),
        replica_specs,
        run_policy,
        spec,
    })
}

/// The checks every kind shares, then the framework's.
pub fn validate<F: Framework + ?Sized>(framework: &F, job: &JobView) -> Result<(), String> {
    let field = framework.replica_specs_field();
    if job.replica_specs.is_empty() {
        return Err(format!("spec.{field}: must have at least one replica type"));
    }
    for (rtype, spec) in &job.replica_specs {
        let at = format!("spec.{field}[{rtype}]");
        if spec.replicas.is_some_and(|r| r < 0) {
            return Err(format!("{at}.replicas: must be greater than or equal to 0"));
        }
        let containers = spec.template.spec.as_ref().map(|s| s.containers.len());
        if containers.unwrap_or(0) == 0 {
            return Err(format!("{at}.template.spec.containers: Required value"));
        }
    }
    let rp = &job.run_policy;
    if let Some(p) = rp.clean_pod_policy.as_deref()
        && !matches!(p, "All" | "Running" | "None")
    {
        return Err(format!(
            "spec.runPolicy.cleanPodPolicy: Unsupported value: {p:?}: supported values: \"All\", \"Running\", \"None\""
        ));
    }
    for (name, value) in [
        (
            "ttlSecondsAfterFinished",
            rp.ttl_seconds_after_finished.map(i64::from),
        ),
        ("activeDeadlineSeconds", rp.active_deadline_seconds),
        ("backoffLimit", rp.backoff_limit.map(i64::from)),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(format!(
                "spec.runPolicy.{name}: must be greater than or equal to 0"
            ));
        }
    }
    if let Some(sp) = &rp.scheduling_policy
        && sp.min_available.is_some_and(|m| m < 0)
    {
        return Err(
            "spec.runPolicy.schedulingPolicy.minAvailable: must be greater than or equal to 0"
                .into(),
        );
    }
    framework.validate(job)
}

async fn reconcile<F: Framework>(
    obj: Arc<DynamicObject>,
    ctx: Arc<Ctx<F>>,
) -> Result<Action, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let jobs: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.resource);
    let Some(job) = jobs.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let managed_by = job
        .data
        .pointer("/spec/runPolicy/managedBy")
        .and_then(Value::as_str);
    if managed_by.is_some_and(|m| m != MANAGED_BY) {
        return Ok(Action::await_change());
    }
    Sync {
        ctx: &ctx,
        jobs,
        job,
        ns,
    }
    .run()
    .await
}

/// One pod of the job.
struct Member {
    pod: Pod,
    /// The replica type as written in the spec.
    rtype: String,
    index: i32,
}

impl Member {
    fn name(&self) -> String {
        self.pod.name_any()
    }
    fn phase(&self) -> &str {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("Pending")
    }
    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }
    fn active(&self) -> bool {
        !self.deleting() && matches!(self.phase(), "Pending" | "Running")
    }
    /// The node lifecycle controller (or an eviction) failed it.
    fn disrupted(&self) -> bool {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True")
    }
    /// The exit code of `container` (or of the first terminated container).
    fn exit_code(&self, container: &str) -> Option<i32> {
        let statuses = self.pod.status.as_ref()?.container_statuses.as_ref()?;
        let code = |c: &k8s_openapi::api::core::v1::ContainerStatus| {
            c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code)
        };
        statuses
            .iter()
            .find(|c| c.name == container)
            .and_then(code)
            .or_else(|| statuses.iter().find_map(code))
    }
    fn container_restarts(&self) -> i32 {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    }
}

struct Sync<'a, F> {
    ctx: &'a Ctx<F>,
    jobs: Api<DynamicObject>,
    job: DynamicObject,
    ns: String,
}

impl<F: Framework> Sync<'_, F> {
    fn fw(&self) -> &F {
        &self.ctx.framework
    }
    fn kind(&self) -> &'static str {
        self.ctx.framework.kind()
    }
    fn name(&self) -> String {
        self.job.name_any()
    }
    fn reason(&self, what: &str) -> String {
        format!("{}{what}", self.kind())
    }
    fn who(&self) -> String {
        format!("{} {}/{}", self.kind(), self.ns, self.name())
    }

    async fn run(self) -> Result<Action, Error> {
        let mut status: JobStatus = self
            .job
            .data
            .get("status")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let before = status.clone();
        if !status
            .conditions
            .iter()
            .any(|c| c.type_ == conditions::CREATED)
        {
            let msg = format!("{} is created.", self.who());
            status.set_condition(conditions::CREATED, true, &self.reason("Created"), &msg);
        }
        let view = match decode(self.fw(), &self.job).and_then(|v| {
            validate(self.fw(), &v)?;
            Ok(v)
        }) {
            Ok(v) => v,
            Err(msg) => {
                if !status.finished() {
                    let msg = format!("{} is invalid: {msg}", self.who());
                    tracing::info!(job = %self.name(), %msg, "invalid job");
                    status.set_condition(
                        conditions::FAILED,
                        true,
                        &self.reason("FailedValidation"),
                        &msg,
                    );
                    status.completion_time = Some(now());
                }
                self.write_status(&before, status).await?;
                return Ok(Action::await_change());
            }
        };
        // One round trip for the pods, the Services and the PodGroup.
        let (members, services, pod_group) =
            futures::try_join!(self.members(&view), self.services(), self.pod_group())?;

        if status.finished() {
            return self
                .finished(&view, before, status, &members, &services)
                .await;
        }
        let rp = view.run_policy.clone();
        if rp.suspend == Some(true) {
            for m in members.iter().filter(|m| !m.deleting()) {
                self.delete_pod(&m.pod).await?;
            }
            for s in &services {
                self.delete_service(s).await?;
            }
            self.delete_pod_group().await?;
            if !status.is(conditions::SUSPENDED) {
                let msg = format!("{} is suspended.", self.who());
                status.set_condition(conditions::SUSPENDED, true, &self.reason("Suspended"), &msg);
            }
            status.start_time = None;
            status.replica_statuses = self.counts(&view, &[]);
            self.write_status(&before, status).await?;
            return Ok(Action::await_change());
        }
        if status.is(conditions::SUSPENDED) {
            let msg = format!("{} is resumed.", self.who());
            status.set_condition(conditions::SUSPENDED, false, &self.reason("Resumed"), &msg);
        }
        let start = status.start_time.get_or_insert_with(now).0;
        let mut requeue = RESYNC;
        if let Some(deadline) = rp.active_deadline_seconds {
            let end = start + Duration::from_secs(deadline.unsigned_abs());
            let left = end.duration_since(Timestamp::now());
            if left.is_negative() || left.is_zero() {
                let msg = format!(
                    "{} has failed because it was active longer than specified deadline",
                    self.who()
                );
                return self
                    .fail(&members, before, status, "DeadlineExceeded", &msg)
                    .await;
            }
            requeue = requeue.min(Duration::try_from(left).unwrap_or(RESYNC));
        }

        let min_member = self.ensure_pod_group(&view, pod_group).await?;

        // Failed, lost and surplus pods.
        let elastic = self.fw().elastic_type(&view);
        let default_policy = self.fw().default_restart_policy();
        let policy_of = |rtype: &str| {
            view.replica_specs
                .get(rtype)
                .and_then(|s| s.restart_policy)
                .unwrap_or(default_policy)
        };
        let mut gang_restart: Option<String> = None;
        let mut failure: Option<String> = None;
        let mut recreate: Vec<&Member> = Vec::new();
        let mut recreated = 0;
        for m in members.iter().filter(|m| !m.deleting()) {
            if m.index >= self.fw().pod_count(&view, &m.rtype) {
                self.delete_pod(&m.pod).await?;
                continue;
            }
            if m.phase() != "Failed" {
                continue;
            }
            let policy = policy_of(&m.rtype);
            let in_place = matches!(policy, RestartPolicy::OnFailure | RestartPolicy::Always);
            if elastic == Some(m.rtype.as_str()) && (m.disrupted() || in_place) {
                // The scheduler took it back or its node went: it waits to fit again.
                recreate.push(m);
                continue;
            }
            if m.disrupted() || in_place {
                gang_restart.get_or_insert_with(|| format!("pod {} failed", m.name()));
                continue;
            }
            match policy {
                RestartPolicy::ExitCode => match m.exit_code(self.fw().default_container()) {
                    Some(code) if code >= 128 => {
                        recreate.push(m);
                        recreated += 1;
                    }
                    code => {
                        let code = code.map_or_else(|| "unknown".to_string(), |c| c.to_string());
                        failure.get_or_insert_with(|| {
                            format!(
                                "{} has failed because pod {} exited with code {code} (a permanent error)",
                                self.who(),
                                m.name()
                            )
                        });
                    }
                },
                _ => {
                    failure.get_or_insert_with(|| {
                        format!(
                            "{} has failed because 1 {} replica(s) failed: pod {} failed",
                            self.who(),
                            m.rtype,
                            m.name()
                        )
                    });
                }
            }
        }
        let mut missing: Vec<(String, i32)> = Vec::new();
        for rtype in view.replica_specs.keys() {
            for index in 0..self.fw().pod_count(&view, rtype) {
                if !members
                    .iter()
                    .any(|m| &m.rtype == rtype && m.index == index)
                {
                    missing.push((rtype.clone(), index));
                }
            }
        }
        if status.is(conditions::RUNNING)
            && let Some((rtype, index)) = missing
                .iter()
                .find(|(rtype, _)| elastic != Some(rtype.as_str()))
        {
            gang_restart.get_or_insert_with(|| {
                format!(
                    "pod {} was deleted",
                    replica_name(&view.name, rtype, *index)
                )
            });
        }

        // backoffLimit: the engine's restarts and the in-place container restarts.
        let recorded = self.recorded_restarts();
        let in_place: i32 = members
            .iter()
            .filter(|m| {
                matches!(
                    policy_of(&m.rtype),
                    RestartPolicy::OnFailure | RestartPolicy::Always
                )
            })
            .map(Member::container_restarts)
            .sum();
        let new_restarts =
            i32::from(gang_restart.is_some()) + if gang_restart.is_some() { 0 } else { recreated };
        if let Some(limit) = rp.backoff_limit
            && failure.is_none()
            && recorded + in_place + new_restarts > limit
        {
            failure = Some(format!(
                "{} has failed because it has reached the specified backoff limit",
                self.who()
            ));
        }
        if let Some(msg) = failure {
            return self.fail(&members, before, status, "Failed", &msg).await;
        }
        if let Some(why) = gang_restart {
            self.record_restarts(recorded + 1).await?;
            for m in members.iter().filter(|m| !m.deleting()) {
                self.delete_pod(&m.pod).await?;
            }
            let msg = format!("{} is restarting because {why}.", self.who());
            tracing::info!(job = %self.name(), %msg, "restarting the gang");
            status.set_condition(
                conditions::RESTARTING,
                true,
                &self.reason("Restarting"),
                &msg,
            );
            status.replica_statuses = self.counts(&view, &[]);
            self.write_status(&before, status).await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        if recreated > 0 {
            self.record_restarts(recorded + recreated).await?;
            let names: Vec<String> = recreate.iter().map(|m| m.name()).collect();
            let msg = format!(
                "{} is restarting because pod(s) {} exited with a retryable code.",
                self.who(),
                names.join(", ")
            );
            status.set_condition(
                conditions::RESTARTING,
                true,
                &self.reason("Restarting"),
                &msg,
            );
        }
        for m in &recreate {
            self.delete_pod(&m.pod).await?;
        }

        // Create what is missing: the framework's objects first (MPI's ConfigMap and the
        // launcher's RBAC), which its pods mount or use.
        if !missing.is_empty() {
            self.apply_extra_objects(&view).await?;
        }
        // The pods are created side by side (a 16-rank job is one round trip of writes, not
        // 16 in a row), then the Services: the scheduler waits for the whole gang, and the
        // names resolve before the containers, which start after the binding, look them up.
        // An elastic job's minimum is created before its surplus: the scheduler starts it
        // with the first pods it sees, and they must be the minimum.
        let (surplus, minimum): (Vec<_>, Vec<_>) = missing
            .iter()
            .partition(|(rtype, index)| self.fw().is_surplus(&view, rtype, *index));
        for wave in [minimum, surplus] {
            let mut pod_creates = Vec::new();
            for (rtype, index) in wave {
                pod_creates.push(self.create_pod(&view, rtype, *index));
            }
            futures::stream::iter(pod_creates)
                .buffer_unordered(CREATE_CONCURRENCY)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, Error>>()?;
        }
        let mut service_creates = Vec::new();
        for rtype in view.replica_specs.keys() {
            for index in 0..self.fw().pod_count(&view, rtype) {
                let name = replica_name(&view.name, rtype, index);
                if !services.iter().any(|s| s.name_any() == name) {
                    service_creates.push(self.create_service(&view, rtype, index));
                }
            }
        }
        futures::stream::iter(service_creates)
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<()>, Error>>()?;
        for s in &services {
            let keep = view.replica_specs.keys().any(|rtype| {
                (0..self.fw().pod_count(&view, rtype))
                    .any(|i| replica_name(&view.name, rtype, i) == s.name_any())
            });
            if !keep {
                self.delete_service(s).await?;
            }
        }

        // Status from the pods.
        let live: Vec<&Member> = members
            .iter()
            .filter(|m| !m.deleting() && !recreate.iter().any(|r| r.name() == m.name()))
            .collect();
        status.replica_statuses = self.counts(&view, &live);
        let mut phases: ReplicaPhases = BTreeMap::new();
        for rtype in view.replica_specs.keys() {
            let n = self.fw().pod_count(&view, rtype).max(0) as usize;
            let mut v = vec![None; n];
            for m in live.iter().filter(|m| &m.rtype == rtype) {
                if let Some(slot) = v.get_mut(m.index as usize) {
                    *slot = Some(m.phase().to_string());
                }
            }
            phases.insert(rtype.clone(), v);
        }
        if self.fw().succeeded(&view, &phases) {
            let msg = format!("{} successfully completed.", self.who());
            status.set_condition(conditions::SUCCEEDED, true, &self.reason("Succeeded"), &msg);
            status.completion_time = Some(now());
            self.write_status(&before, status).await?;
            return Ok(Action::requeue(Duration::from_millis(100)));
        }
        let running = live.iter().filter(|m| m.phase() == "Running").count();
        if running >= usize::try_from(min_member).unwrap_or(0) && running > 0 {
            let msg = format!("{} is running.", self.who());
            status.set_condition(conditions::RUNNING, true, &self.reason("Running"), &msg);
        }
        self.write_status(&before, status).await?;
        Ok(Action::requeue(requeue))
    }

    /// Fails the job: its pending and running pods are deleted (whatever cleanPodPolicy
    /// says of finished ones).
    async fn fail(
        &self,
        members: &[Member],
        before: JobStatus,
        mut status: JobStatus,
        reason: &str,
        msg: &str,
    ) -> Result<Action, Error> {
        tracing::info!(job = %self.name(), %msg, "job failed");
        for m in members.iter().filter(|m| m.active()) {
            self.delete_pod(&m.pod).await?;
        }
        let reason = if reason == "Failed" {
            self.reason("Failed")
        } else {
            reason.to_string()
        };
        status.set_condition(conditions::FAILED, true, &reason, msg);
        status.completion_time = Some(now());
        self.write_status(&before, status).await?;
        Ok(Action::requeue(Duration::from_millis(100)))
    }

    /// A finished job: cleanPodPolicy, the PodGroup, ttlSecondsAfterFinished.
    async fn finished(
        &self,
        view: &JobView,
        before: JobStatus,
        mut status: JobStatus,
        members: &[Member],
        services: &[Service],
    ) -> Result<Action, Error> {
        let policy = view
            .run_policy
            .clean_pod_policy
            .as_deref()
            .unwrap_or("None");
        let mut deleted = Vec::new();
        for m in members.iter().filter(|m| !m.deleting()) {
            // A pod never placed (an elastic job's surplus waiting for a GPU) goes whatever
            // the policy: it has nothing to keep, and would start after the job ended.
            let unplaced = m.pod.spec.as_ref().is_none_or(|s| s.node_name.is_none());
            let delete = unplaced
                || match policy {
                    "All" => true,
                    "Running" => m.active(),
                    _ => false,
                };
            if delete {
                self.delete_pod(&m.pod).await?;
                deleted.push(m.name());
            }
        }
        for s in services {
            if policy == "All" || deleted.contains(&s.name_any()) {
                self.delete_service(s).await?;
            }
        }
        self.delete_pod_group().await?;
        let kept: Vec<&Member> = members
            .iter()
            .filter(|m| !m.deleting() && !deleted.contains(&m.name()))
            .collect();
        let mut counts = self.counts(view, &kept);
        // Keep what finished pods that are now gone had reported.
        for (rtype, old) in &status.replica_statuses {
            if let Some(new) = counts.get_mut(rtype) {
                new.succeeded = new.succeeded.max(old.succeeded);
                new.failed = new.failed.max(old.failed);
            }
        }
        status.replica_statuses = counts;
        let completion = status.completion_time.clone();
        self.write_status(&before, status).await?;
        let (Some(ttl), Some(done)) = (view.run_policy.ttl_seconds_after_finished, completion)
        else {
            return Ok(Action::await_change());
        };
        let expiry = done.0 + Duration::from_secs(u64::from(ttl.unsigned_abs()));
        let left = expiry.duration_since(Timestamp::now());
        if left.is_positive() {
            return Ok(Action::requeue(Duration::try_from(left).unwrap_or(RESYNC)));
        }
        tracing::info!(job = %self.name(), "ttlSecondsAfterFinished passed; deleting the job");
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            preconditions: Some(Preconditions {
                uid: self.job.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match self.jobs.delete(&self.name(), &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        Ok(Action::await_change())
    }

    fn counts(&self, view: &JobView, live: &[&Member]) -> BTreeMap<String, ReplicaStatus> {
        view.replica_specs
            .keys()
            .map(|rtype| {
                let mut rs = ReplicaStatus::default();
                for m in live.iter().filter(|m| &m.rtype == rtype) {
                    match m.phase() {
                        "Succeeded" => rs.succeeded += 1,
                        "Failed" => rs.failed += 1,
                        _ => rs.active += 1,
                    }
                }
                let selector = BTreeMap::from([
                    (labels::JOB_NAME.to_string(), view.name.clone()),
                    (labels::OPERATOR_NAME.to_string(), OPERATOR_NAME.to_string()),
                    (labels::REPLICA_TYPE.to_string(), rtype.to_lowercase()),
                ]);
                rs.selector = Some(
                    selector
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
                rs.label_selector = Some(LabelSelector {
                    match_labels: Some(selector),
                    match_expressions: None,
                });
                (rtype.clone(), rs)
            })
            .collect()
    }

    async fn write_status(&self, before: &JobStatus, mut status: JobStatus) -> Result<(), Error> {
        let mut a = before.clone();
        a.last_reconcile_time = None;
        status.last_reconcile_time = None;
        if a == status {
            return Ok(());
        }
        status.last_reconcile_time = Some(now());
        let mut value = serde_json::to_value(&status).map_err(|source| Error::Decode {
            kind: self.kind(),
            name: format!("{}/{}", self.ns, self.name()),
            source,
        })?;
        if let Some(map) = value.as_object_mut() {
            for key in ["startTime", "completionTime", "conditions"] {
                map.entry(key).or_insert(Value::Null);
            }
        }
        let patch = json!({ "status": value });
        self.jobs
            .patch_status(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn recorded_restarts(&self) -> i32 {
        self.job
            .annotations()
            .get(RESTARTS_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    async fn record_restarts(&self, n: i32) -> Result<(), Error> {
        let patch = json!({
            "metadata": {
                "resourceVersion": self.job.resource_version(),
                "annotations": { RESTARTS_ANNOTATION: n.to_string() }
            }
        });
        self.jobs
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn owner(&self) -> OwnerReference {
        OwnerReference {
            api_version: API_VERSION.into(),
            kind: self.kind().into(),
            name: self.name(),
            uid: self.job.uid().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn owned(&self, meta: &ObjectMeta) -> bool {
        let uid = self.job.uid();
        meta.owner_references
            .iter()
            .flatten()
            .any(|r| r.controller == Some(true) && Some(&r.uid) == uid.as_ref())
    }

    fn list_params(&self) -> ListParams {
        ListParams::default().labels(&format!(
            "{}={},{}",
            labels::JOB_NAME,
            self.name(),
            labels::OPERATOR_NAME
        ))
    }

    async fn members(&self, view: &JobView) -> Result<Vec<Member>, Error> {
        let pods: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let list = pods.list(&self.list_params()).await?;
        let mut out = Vec::new();
        for pod in list.items {
            if !self.owned(&pod.metadata) {
                continue;
            }
            let labels = pod.labels();
            let rtype = labels.get(labels::REPLICA_TYPE).and_then(|t| {
                view.replica_specs
                    .keys()
                    .find(|k| k.to_lowercase() == *t)
                    .cloned()
            });
            let index = labels
                .get(labels::REPLICA_INDEX)
                .and_then(|i| i.parse::<i32>().ok());
            match (rtype, index) {
                (Some(rtype), Some(index)) => out.push(Member { pod, rtype, index }),
                // A type removed from the spec (or a pod with broken labels): remove it.
                _ => {
                    if pod.metadata.deletion_timestamp.is_none() {
                        self.delete_pod(&pod).await?;
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.rtype, a.index).cmp(&(&b.rtype, b.index)));
        Ok(out)
    }

    async fn services(&self) -> Result<Vec<Service>, Error> {
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let list = api.list(&self.list_params()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|s| self.owned(&s.metadata) && s.metadata.deletion_timestamp.is_none())
            .collect())
    }

    fn replica_labels(&self, view: &JobView, rtype: &str, index: i32) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (labels::JOB_NAME.to_string(), view.name.clone()),
            (labels::OPERATOR_NAME.to_string(), OPERATOR_NAME.to_string()),
            (labels::REPLICA_TYPE.to_string(), rtype.to_lowercase()),
            (labels::REPLICA_INDEX.to_string(), index.to_string()),
        ]);
        if self.fw().master_type() == Some(rtype) {
            l.insert(labels::JOB_ROLE.to_string(), "master".to_string());
        }
        l
    }

    /// The pod of replica `rtype` and `index`.
    fn build_pod(&self, view: &JobView, rtype: &str, index: i32) -> Pod {
        let spec = &view.replica_specs[rtype];
        let name = replica_name(&view.name, rtype, index);
        let mut meta = spec.template.metadata.clone().unwrap_or_default();
        meta.name = Some(name.clone());
        meta.generate_name = None;
        meta.namespace = Some(self.ns.clone());
        let labels = meta.labels.get_or_insert_with(BTreeMap::new);
        labels.extend(self.replica_labels(view, rtype, index));
        labels.insert(POD_GROUP_LABEL.to_string(), view.name.clone());
        meta.owner_references = Some(vec![self.owner()]);
        let mut pod_spec = spec.template.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .unwrap_or_else(|| self.fw().default_restart_policy());
        pod_spec.restart_policy = Some(
            match policy {
                RestartPolicy::Always => "Always",
                RestartPolicy::OnFailure => "OnFailure",
                RestartPolicy::Never | RestartPolicy::ExitCode => "Never",
            }
            .into(),
        );
        if name.len() <= 63 {
            pod_spec.hostname.get_or_insert_with(|| name.clone());
            pod_spec.subdomain.get_or_insert_with(|| name.clone());
        }
        if pod_spec.priority_class_name.is_none()
            && let Some(pc) = view
                .run_policy
                .scheduling_policy
                .as_ref()
                .and_then(|s| s.priority_class.clone())
        {
            pod_spec.priority_class_name = Some(pc);
        }
        let env = self.fw().env(view, rtype, index);
        for c in &mut pod_spec.containers {
            let vars = c.env.get_or_insert_with(Vec::new);
            for e in &env {
                if !vars.iter().any(|v| v.name == e.name) {
                    vars.push(e.clone());
                }
            }
        }
        let port = replica_port(self.fw(), view, rtype);
        let default = self.fw().default_container();
        let at = pod_spec
            .containers
            .iter()
            .position(|c| c.name == default)
            .unwrap_or(0);
        if let Some(c) = pod_spec.containers.get_mut(at) {
            let ports = c.ports.get_or_insert_with(Vec::new);
            if !ports
                .iter()
                .any(|p| p.name.as_deref() == Some(self.fw().default_port_name()))
            {
                ports.push(ContainerPort {
                    name: Some(self.fw().default_port_name().into()),
                    container_port: port,
                    ..ContainerPort::default()
                });
            }
        }
        let mut pod = Pod {
            metadata: meta,
            spec: Some(pod_spec),
            status: None,
        };
        self.fw().decorate_pod(view, rtype, index, &mut pod);
        pod
    }

    async fn create_pod(&self, view: &JobView, rtype: &str, index: i32) -> Result<(), Error> {
        let pod = self.build_pod(view, rtype, index);
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api.create(&post_params(), &pod).await {
            Ok(_) => {
                tracing::debug!(job = %view.name, pod = %pod.name_any(), "created pod");
                Ok(())
            }
            // The previous pod of that name is still terminating: the next pass creates it.
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_service(&self, view: &JobView, rtype: &str, index: i32) -> Result<(), Error> {
        let name = replica_name(&view.name, rtype, index);
        let labels = self.replica_labels(view, rtype, index);
        let mut selector = labels.clone();
        selector.remove(labels::JOB_ROLE);
        let port = replica_port(self.fw(), view, rtype);
        let svc = Service {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.ns.clone()),
                labels: Some(labels),
                owner_references: Some(vec![self.owner()]),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                selector: Some(selector),
                // The name resolves as soon as the pod has an address, so ranks that start
                // first find their peers without waiting for readiness.
                publish_not_ready_addresses: Some(true),
                ports: Some(vec![ServicePort {
                    name: Some(self.fw().default_port_name().into()),
                    port,
                    target_port: Some(IntOrString::Int(port)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api.create(&post_params(), &svc).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Server-side applies the framework's [`Framework::extra_objects`].
    async fn apply_extra_objects(&self, view: &JobView) -> Result<(), Error> {
        for mut obj in self.fw().extra_objects(view) {
            obj["metadata"]["ownerReferences"] = json!([self.owner()]);
            let (Some(api_version), Some(kind), Some(name)) = (
                obj["apiVersion"].as_str(),
                obj["kind"].as_str(),
                obj.pointer("/metadata/name").and_then(Value::as_str),
            ) else {
                continue;
            };
            let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
            let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
            let plural = format!("{}s", kind.to_lowercase());
            let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.ctx.client.clone(), &self.ns, &resource);
            api.patch(
                name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await?;
        }
        Ok(())
    }

    async fn delete_pod(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &dp).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_service(&self, svc: &Service) -> Result<(), Error> {
        let api: Api<Service> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match api.delete(&svc.name_any(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates or updates the job's PodGroup; returns its `minMember`.
    /// The job's PodGroup, if there is one.
    async fn pod_group(&self) -> Result<Option<PodGroup>, Error> {
        let api: Api<PodGroup> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        Ok(api.get_opt(&self.name()).await?)
    }

    /// Creates or updates the job's PodGroup (`existing`: as read this reconcile).
    async fn ensure_pod_group(
        &self,
        view: &JobView,
        existing: Option<PodGroup>,
    ) -> Result<i32, Error> {
        let sp = view
            .run_policy
            .scheduling_policy
            .clone()
            .unwrap_or_default();
        let spec = PodGroupSpec {
            min_member: sp
                .min_available
                .unwrap_or_else(|| self.fw().min_member(view)),
            min_resources: sp.min_resources.map(|m| {
                m.into_iter()
                    .map(|(k, q)| (k, IntOrString::String(q.0)))
                    .collect()
            }),
            schedule_timeout_seconds: sp.schedule_timeout_seconds,
        };
        let mut labels = BTreeMap::new();
        if let Some(q) = &sp.queue {
            labels.insert(QUEUE_LABEL.to_string(), q.clone());
        }
        let api: Api<PodGroup> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        match existing {
            None => {
                let mut pg = PodGroup::new(&view.name, spec.clone());
                pg.metadata.namespace = Some(self.ns.clone());
                pg.metadata.labels = (!labels.is_empty()).then_some(labels);
                pg.metadata.owner_references = Some(vec![self.owner()]);
                match api.create(&post_params(), &pg).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Some(pg) => {
                let queue = pg.labels().get(QUEUE_LABEL);
                if pg.spec != spec || queue != sp.queue.as_ref() {
                    let patch = json!({
                        "metadata": { "labels": { QUEUE_LABEL: sp.queue } },
                        "spec": spec,
                    });
                    api.patch(&view.name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
        }
        Ok(spec.min_member)
    }

    async fn delete_pod_group(&self) -> Result<(), Error> {
        let api: Api<PodGroup> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        let Some(pg) = api.get_opt(&self.name()).await? else {
            return Ok(());
        };
        if !self.owned(&pg.metadata) || pg.metadata.deletion_timestamp.is_some() {
            return Ok(());
        }
        match api.delete(&self.name(), &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..PostParams::default()
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

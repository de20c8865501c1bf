//! One consistent picture of the cluster for a cycle: the informers' objects turned into the
//! core's [`Snapshot`], plus the indexes needed to act on its outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ferry_api::scheduling::{self, PodGroup, Queue, Reservation, ResourcePolicy};
use ferry_sched_jobs::{Job, JobId, PendingPod, PodId, RunningPod, Snapshot, Time};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;

use crate::convert::{self, Intern, NAMESPACE_LABEL};
use crate::objects::{Node, Owner, Pod, ReplicaSet, ScheduledCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The informers' current objects.
pub struct Objects {
    /// Every pod.
    pub pods: Vec<Arc<Pod>>,
    /// Every node.
    pub nodes: Vec<Arc<Node>>,
    /// Every namespace.
    pub namespaces: Vec<Arc<Namespace>>,
    /// Every PodGroup.
    pub groups: Vec<Arc<PodGroup>>,
    /// Every Queue.
    pub queues: Vec<Arc<Queue>>,
    /// Every Reservation.
    pub reservations: Vec<Arc<Reservation>>,
    /// Every ResourcePolicy.
    pub policies: Vec<Arc<ResourcePolicy>>,
    /// Every ReplicaSet (to account their pods to the Deployment that owns them).
    pub replicasets: Vec<Arc<ReplicaSet>>,
}

/// A pod the scheduler bound but its informer has not shown bound yet.
#[derive(Debug, Clone)]
pub struct Assumed {
    /// The node.
    pub node: String,
    /// The cards.
    pub cards: ferry_sched_core::CardSet,
    /// When it was bound.
    pub at: Time,
}

/// Counts of a job's pods by state (for PodGroup status), pods being deleted left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodCounts {
    /// Pods bound to a node (running or not yet).
    pub scheduled: i32,
    /// Pods running.
    pub running: i32,
    /// Pods that succeeded.
    pub succeeded: i32,
    /// Pods that failed.
    pub failed: i32,
    /// Pods waiting for a node.
    pub pending: i32,
}

/// A job the core will not see, with why (unknown queue, missing PodGroup, bad request).
#[derive(Debug, Clone)]
pub struct Rejected {
    /// The job.
    pub job: JobId,
    /// Its pending pods.
    pub pods: Vec<PodId>,
    /// Why it cannot be scheduled.
    pub message: String,
    /// Machine-readable reason.
    pub reason: &'static str,
    /// The whole job is left out (a gang, or a queue that does not exist); otherwise only
    /// these pods are, and the job's other pods are scheduled.
    pub whole_job: bool,
}

/// What acting on a pod needs once the snapshot is built (its namespace and name are in its
/// id). The informer's object is not kept: the Bindings of a cycle replace every pod it
/// binds, and the old versions are freed as they are replaced.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// Its uid.
    pub uid: Option<String>,
    /// When it was created.
    pub created: Time,
    /// Its resourceVersion as the informer shows it.
    pub resource_version: Option<String>,
    /// Its `PodScheduled` condition as the informer shows it (pending pods only).
    pub scheduled: Option<ScheduledCondition>,
}

impl PodRef {
    fn of(pod: &Pod, pending: bool) -> Self {
        Self {
            uid: pod.metadata.uid.clone(),
            created: millis(pod.metadata.creation_timestamp.as_ref()),
            resource_version: pod.metadata.resource_version.clone(),
            scheduled: pending.then(|| pod.status.scheduled.clone()).flatten(),
        }
    }
}

/// Arrival order that cannot tie: the resourceVersion at which this scheduler first saw each
/// job's object (a PodGroup, or a pod on its own), by uid. For an object created while the
/// scheduler watches, that is its creation revision; for one already there when it started,
/// its revision then. Jobs are ordered by creationTimestamp first, so this only orders jobs
/// created within the same second (before, the name did, and `aa-second` overtook
/// `zz-first`). A resourceVersion that is not a number counts as 0 (the name decides).
#[derive(Debug, Default)]
pub struct Arrivals {
    seen: HashMap<String, (u64, u64)>,
    cycle: u64,
}

impl Arrivals {
    /// Starts a snapshot: objects not looked up until [`Arrivals::end`] are forgotten.
    pub fn begin(&mut self) {
        self.cycle += 1;
    }

    /// The arrival of the object with `meta`.
    pub fn of(&mut self, meta: &ObjectMeta) -> u64 {
        let key = match &meta.uid {
            Some(uid) => uid.clone(),
            None => format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
        };
        let rv = meta
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0);
        let entry = self.seen.entry(key).or_insert((rv, 0));
        entry.1 = self.cycle;
        entry.0
    }

    /// Ends a snapshot, forgetting the objects it did not look up.
    pub fn end(&mut self) {
        let cycle = self.cycle;
        self.seen.retain(|_, (_, at)| *at == cycle);
    }

    /// How many objects are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The namespace and name in a pod id.
pub fn split_id(id: &str) -> (&str, &str) {
    id.split_once('/').unwrap_or(("default", id))
}

/// The snapshot and its indexes.
pub struct Built {
    /// What the core reads.
    pub snapshot: Snapshot,
    /// Pods by id.
    pub pods: HashMap<PodId, PodRef>,
    /// Pending pods per job.
    pub pending: HashMap<JobId, Vec<PodId>>,
    /// The PodGroup of each gang job.
    pub groups: HashMap<JobId, Arc<PodGroup>>,
    /// The Queues, by name.
    pub queues: HashMap<String, Arc<Queue>>,
    /// The Reservations, by `namespace/name`.
    pub reservations: HashMap<String, Arc<Reservation>>,
    /// What could not be represented (nodes beyond the card or model limits).
    pub warnings: Vec<String>,
    /// Pod counts of each PodGroup job.
    pub counts: HashMap<JobId, PodCounts>,
    /// The queue of every job.
    pub queue_of_job: HashMap<JobId, String>,
    /// Jobs left out of the cycle, with why.
    pub rejected: Vec<Rejected>,
    /// The largest number of GPUs any node has (for messages).
    pub largest_node_gpus: usize,
    /// The controller each job is accounted to, as `Kind namespace/name`, where its pods
    /// have one (owner jobs, and gangs whose pods share a controller).
    pub owners: HashMap<JobId, String>,
}

/// Milliseconds since the Unix epoch of a Kubernetes time.
pub fn millis(t: Option<&KubeTime>) -> Time {
    t.map_or(0, |t| t.0.as_millisecond().max(0) as Time)
}

/// A pod's id: `namespace/name`.
pub fn pod_id(pod: &Pod) -> PodId {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The job id of a PodGroup.
pub fn group_job(namespace: &str, name: &str) -> JobId {
    format!("podgroup {namespace}/{name}")
}

/// The job id of a pod scheduled on its own.
pub fn pod_job(id: &str) -> JobId {
    format!("pod {id}")
}

/// The job id of a controller's pods: `Kind namespace/name` (e.g. `Job default/train`).
pub fn owner_job(kind: &str, namespace: &str, name: &str) -> JobId {
    format!("{kind} {namespace}/{name}")
}

/// The API group of an `apiVersion` (`""` for the core group).
fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The controllers of ReplicaSets by namespace and name, with the ReplicaSet's uid (a pod
/// names its ReplicaSet by uid too: one of the same name created anew is another owner).
type ReplicaSetOwners<'a> = HashMap<(&'a str, &'a str), (&'a str, Option<&'a Owner>)>;

/// The controller a pod is accounted to, as a job id: a ReplicaSet's pods belong to the
/// Deployment that owns the ReplicaSet (or to the ReplicaSet when none does); pods of a
/// StatefulSet, DaemonSet or batch Job to it. `None`: no controller, or one of another
/// kind (the pod is then a job of its own).
pub fn controller_of(pod: &Pod, replicasets: &ReplicaSetOwners<'_>) -> Option<JobId> {
    let owner = pod.owner.as_ref()?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if owner.name.is_empty() {
        return None;
    }
    match (api_group(&owner.api_version), owner.kind.as_str()) {
        ("apps", "ReplicaSet") => {
            let deployment = replicasets
                .get(&(ns, owner.name.as_str()))
                .filter(|(uid, _)| owner.uid.is_empty() || *uid == owner.uid)
                .and_then(|(_, o)| *o)
                .filter(|o| api_group(&o.api_version) == "apps" && o.kind == "Deployment")
                .filter(|o| !o.name.is_empty());
            Some(match deployment {
                Some(d) => owner_job("Deployment", ns, &d.name),
                None => owner_job("ReplicaSet", ns, &owner.name),
            })
        }
        ("apps", kind @ ("StatefulSet" | "DaemonSet")) | ("batch", kind @ "Job") => {
            Some(owner_job(kind, ns, &owner.name))
        }
        _ => None,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status.phase.as_deref().unwrap_or("Pending")
}

/// Builds the snapshot. `serves` says which pods this scheduler places; `intern` interns GPU
/// model names (nodes' first, so a pod naming models no node has cannot crowd them out);
/// `arrivals` orders jobs created in the same second.
pub fn build(
    objects: &Objects,
    now: Time,
    serves: impl Fn(&Pod) -> bool,
    assumed: &HashMap<PodId, Assumed>,
    evicting: &HashSet<PodId>,
    intern: &mut Intern<'_>,
    arrivals: &mut Arrivals,
) -> Built {
    arrivals.begin();
    let namespace_labels: HashMap<&str, &BTreeMap<String, String>> = objects
        .namespaces
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n.metadata.labels.as_ref()?)))
        .collect();
    let groups: HashMap<JobId, Arc<PodGroup>> = objects
        .groups
        .iter()
        .map(|g| {
            let ns = g.metadata.namespace.as_deref().unwrap_or_default();
            (
                group_job(ns, g.metadata.name.as_deref().unwrap_or_default()),
                g.clone(),
            )
        })
        .collect();
    let replicasets: ReplicaSetOwners<'_> = objects
        .replicasets
        .iter()
        .filter_map(|rs| {
            let m = &rs.metadata;
            Some((
                (m.namespace.as_deref()?, m.name.as_deref()?),
                (m.uid.as_deref().unwrap_or_default(), rs.owner.as_ref()),
            ))
        })
        .collect();
    let mut snapshot = Snapshot {
        now,
        ..Snapshot::default()
    };
    let mut rejected_messages: Vec<String> = Vec::new();
    // Queues: the declared ones, plus the default queue when none declares it.
    let mut queue_names = HashSet::new();
    for q in &objects.queues {
        match convert::queue_spec(q) {
            Ok(spec) => {
                queue_names.insert(spec.name.clone());
                snapshot.queues.push(spec);
            }
            Err(e) => rejected_messages.push(format!(
                "queue {}: {e}",
                q.metadata.name.as_deref().unwrap_or_default()
            )),
        }
    }
    if !queue_names.contains(scheduling::DEFAULT_QUEUE) {
        queue_names.insert(scheduling::DEFAULT_QUEUE.to_string());
        snapshot
            .queues
            .push(ferry_sched_jobs::QueueSpec::new(scheduling::DEFAULT_QUEUE));
    }
    for warning in rejected_messages {
        tracing::warn!("{warning}");
    }
    let mut largest_node_gpus = 0;
    let mut warnings = Vec::new();
    for n in &objects.nodes {
        let (spec, w) = convert::node_spec(n, intern);
        warnings.extend(w);
        largest_node_gpus = largest_node_gpus.max(spec.cards.len());
        snapshot.nodes.push(spec);
    }
    let node_names: HashSet<String> = snapshot.nodes.iter().map(|n| n.name.clone()).collect();

    let mut built = Built {
        snapshot,
        pods: HashMap::new(),
        pending: HashMap::new(),
        groups: HashMap::new(),
        queues: objects
            .queues
            .iter()
            .map(|q| (q.metadata.name.clone().unwrap_or_default(), q.clone()))
            .collect(),
        reservations: objects
            .reservations
            .iter()
            .map(|r| {
                let ns = r.metadata.namespace.as_deref().unwrap_or_default();
                let name = r.metadata.name.as_deref().unwrap_or_default();
                (format!("{ns}/{name}"), r.clone())
            })
            .collect(),
        warnings,
        counts: HashMap::new(),
        queue_of_job: HashMap::new(),
        rejected: Vec::new(),
        largest_node_gpus,
        owners: HashMap::new(),
    };
    let mut jobs: BTreeMap<JobId, Job> = BTreeMap::new();
    let mut bad_requests: BTreeMap<JobId, (Vec<PodId>, String, &'static str)> = BTreeMap::new();
    // Pods of owner jobs that cannot be scheduled, each on its own (the job's other pods
    // are still placed): pod, job, message, reason.
    let mut bad_pods: Vec<(PodId, JobId, String, &'static str)> = Vec::new();
    for pod in &objects.pods {
        let id = pod_id(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let group_name = pod
            .labels
            .get(scheduling::POD_GROUP_LABEL)
            .filter(|g| !g.is_empty());
        let controller = controller_of(pod, &replicasets);
        // A PodGroup makes a gang; a controller alone only groups its pods into one job
        // whose pods are placed one by one (`min_member` 1).
        let job_id = match (group_name, &controller) {
            (Some(g), _) => group_job(ns, g),
            (None, Some(c)) => c.clone(),
            (None, None) => pod_job(&id),
        };
        if let Some(c) = &controller
            && !built.owners.contains_key(&job_id)
        {
            built.owners.insert(job_id.clone(), c.clone());
        }
        let group = groups.get(&job_id);
        let terminal = matches!(phase(pod), "Succeeded" | "Failed");
        let bound_node = pod.spec.node_name.clone().filter(|n| !n.is_empty());
        let assumed_node = assumed.get(&id);
        // Pods being deleted are no longer the group's (killed, they may end as Failed on
        // their way out, which is no failure of the group).
        if group.is_some() && pod.metadata.deletion_timestamp.is_none() {
            let c = built.counts.entry(job_id.clone()).or_default();
            match (phase(pod), &bound_node, assumed_node) {
                ("Succeeded", _, _) => c.succeeded += 1,
                ("Failed", _, _) => c.failed += 1,
                ("Running", _, _) => {
                    c.running += 1;
                    c.scheduled += 1;
                }
                (_, Some(_), _) | (_, None, Some(_)) => c.scheduled += 1,
                _ => c.pending += 1,
            }
        }
        if terminal {
            continue;
        }
        let ours = serves(pod);
        let queue = convert::queue_of(
            &pod.labels,
            group.and_then(|g| g.metadata.labels.as_ref()),
            namespace_labels.get(ns).copied(),
        );
        // Bound (or assumed bound): capacity taken on its node.
        if let Some(node) = bound_node
            .clone()
            .or_else(|| assumed_node.map(|a| a.node.clone()))
        {
            if !node_names.contains(&node) {
                continue; // its node is gone; nothing to charge
            }
            // Its model no longer matters (it is placed): one that cannot be interned is
            // left out rather than leaving its capacity uncharged.
            let Ok(request) = convert::pod_request(pod, intern, false) else {
                continue;
            };
            let cards = match assumed_node {
                Some(a) if bound_node.is_none() => a.cards,
                _ => convert::assigned_cards(pod),
            };
            let started = assumed_node.map_or_else(
                || millis(pod.metadata.creation_timestamp.as_ref()),
                |a| a.at,
            );
            let job = ours.then(|| job_id.clone());
            if let Some(j) = &job {
                let job = ensure_job(&mut jobs, j, &queue, pod, group, ns, arrivals);
                note_surplus_order(job, &id, pod, group.is_some());
                built.queue_of_job.insert(j.clone(), queue.clone());
            }
            built.snapshot.running.push(RunningPod {
                id: id.clone(),
                job,
                node,
                cards,
                request,
                started: started.max(millis(pod.status.start_time.as_ref())),
                terminating: pod.metadata.deletion_timestamp.is_some() || evicting.contains(&id),
            });
            built.pods.insert(id, PodRef::of(pod, false));
            continue;
        }
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        built.pods.insert(id.clone(), PodRef::of(pod, true));
        built.queue_of_job.insert(job_id.clone(), queue.clone());
        if let Some(g) = group_name
            && group.is_none()
        {
            let entry = bad_requests.entry(job_id.clone()).or_insert_with(|| {
                (
                    Vec::new(),
                    format!(
                        "its PodGroup {ns}/{g} does not exist: create it, or remove the {} label",
                        scheduling::POD_GROUP_LABEL
                    ),
                    "PodGroupNotFound",
                )
            });
            entry.0.push(id);
            continue;
        }
        // Pods of an owner job that is no gang are rejected one by one; a gang (or a pod
        // on its own) is rejected whole.
        let per_pod = group_name.is_none() && controller.is_some();
        let mut reject = |message: String, reason: &'static str| {
            if per_pod {
                bad_pods.push((id.clone(), job_id.clone(), message, reason));
            } else {
                bad_requests
                    .entry(job_id.clone())
                    .or_insert_with(|| (Vec::new(), message, reason))
                    .0
                    .push(id.clone());
            }
        };
        if !queue_names.contains(&queue) {
            reject(
                format!(
                    "queue {queue:?} does not exist: create the Queue, or change the {} label",
                    scheduling::QUEUE_LABEL
                ),
                "QueueNotFound",
            );
            continue;
        }
        let gpus = convert::requested_gpus(pod);
        if gpus > ferry_sched_core::model::MAX_CARDS as i64
            || (gpus as usize > built.largest_node_gpus && gpus > 0)
        {
            reject(
                format!(
                    "0/{} nodes are available: the pod asks for {gpus} GPUs; the largest node has {}.",
                    built.snapshot.nodes.len(),
                    built.largest_node_gpus
                ),
                "Unschedulable",
            );
            continue;
        }
        // A model no node has cannot be interned once the ids are spent: such a pod cannot
        // be placed, and says so.
        let mut unknown_model = false;
        let mut strict = |m: &str| {
            let r = intern(m);
            unknown_model |= r.is_err();
            r
        };
        match convert::pod_request(pod, &mut strict, true) {
            Ok(request) => {
                let job = ensure_job(&mut jobs, &job_id, &queue, pod, group, ns, arrivals);
                note_surplus_order(job, &id, pod, group.is_some());
                job.pods.push(PendingPod {
                    id: id.clone(),
                    request,
                });
                built.pending.entry(job_id).or_default().push(id);
            }
            Err(e) if unknown_model => reject(
                format!("0/{} nodes are available: {e}", built.snapshot.nodes.len()),
                "Unschedulable",
            ),
            Err(e) => reject(
                format!("the pod's requests cannot be used: {e}"),
                "InvalidRequest",
            ),
        }
    }
    for (job, (pods, message, reason)) in bad_requests {
        built.rejected.push(Rejected {
            job: job.clone(),
            pods,
            message,
            reason,
            whole_job: true,
        });
        jobs.remove(&job);
    }
    for (pod, job, message, reason) in bad_pods {
        built.rejected.push(Rejected {
            job,
            pods: vec![pod],
            message,
            reason,
            whole_job: false,
        });
    }
    for job in jobs.values_mut() {
        // Pods of a gang are placed in a stable order; a controller's pods (no gang) oldest
        // first, as kube-scheduler's queue takes them.
        if job.min_member == 1 && built.owners.get(&job.id) == Some(&job.id) {
            let created = |id: &PodId| built.pods.get(id).map_or(0, |p| p.created);
            job.pods
                .sort_by(|a, b| created(&a.id).cmp(&created(&b.id)).then(a.id.cmp(&b.id)));
        } else {
            job.pods.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }
    built.groups = groups;
    built.snapshot.jobs = jobs.into_values().collect();
    for r in &objects.reservations {
        let created = millis(r.metadata.creation_timestamp.as_ref());
        match convert::reservation(r, created) {
            Ok(res) => built.snapshot.reservations.push(res),
            Err(e) => tracing::warn!(reservation = ?r.metadata.name, "ignored: {e}"),
        }
    }
    built.snapshot.policies = objects
        .policies
        .iter()
        .map(|p| convert::resource_policy(p))
        .collect();
    arrivals.end();
    built
}

/// Records the surplus order of a pod of a PodGroup ([`scheduling::SURPLUS_ORDER_ANNOTATION`]):
/// a group one of whose pods carries it is elastic. An unparsable value counts as 0.
fn note_surplus_order(job: &mut Job, id: &PodId, pod: &Pod, grouped: bool) {
    if !grouped {
        return;
    }
    if let Some(v) = pod.annotations.get(scheduling::SURPLUS_ORDER_ANNOTATION) {
        let order = v.trim().parse::<u32>().unwrap_or(0);
        job.surplus_order.insert(id.clone(), order);
    } else if job.is_elastic() {
        job.surplus_order.insert(id.clone(), 0);
    }
}

/// The job of `id`, created from its first pod (and PodGroup) when new. A controller's job
/// (no PodGroup, `id` not a pod's own) is as old as its oldest pod, arrives when its
/// controller was first seen, and keeps only the labels all its pods share.
fn ensure_job<'a>(
    jobs: &'a mut BTreeMap<JobId, Job>,
    id: &JobId,
    queue: &str,
    pod: &Pod,
    group: Option<&Arc<PodGroup>>,
    ns: &str,
    arrivals: &mut Arrivals,
) -> &'a mut Job {
    let priority = pod.spec.priority.unwrap_or(0);
    let owned = group.is_none() && !id.starts_with("pod ");
    let pod_created = millis(pod.metadata.creation_timestamp.as_ref());
    let mut fresh = false;
    let job = jobs.entry(id.clone()).or_insert_with(|| {
        fresh = true;
        let owner_meta;
        let (meta, min_member) = match (group, owned) {
            (Some(g), _) => (&g.metadata, g.spec.min_member.max(1) as u32),
            (None, true) => {
                // The controller's uid (its job id where the reference has none), at the
                // revision of the first of its pods seen.
                owner_meta = ObjectMeta {
                    uid: Some(
                        pod.owner
                            .as_ref()
                            .map(|o| o.uid.clone())
                            .filter(|u| !u.is_empty())
                            .unwrap_or_else(|| id.clone()),
                    ),
                    resource_version: pod.metadata.resource_version.clone(),
                    creation_timestamp: pod.metadata.creation_timestamp.clone(),
                    ..ObjectMeta::default()
                };
                (&owner_meta, 1)
            }
            (None, false) => (&pod.metadata, 1),
        };
        let created = millis(meta.creation_timestamp.as_ref());
        let mut labels: BTreeMap<String, String> = group
            .and_then(|g| g.metadata.labels.clone())
            .unwrap_or_default();
        labels.extend(pod.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(NAMESPACE_LABEL.into(), ns.to_string());
        let mut job = Job::new(id.clone(), queue, priority, created, min_member, Vec::new());
        job.arrival = arrivals.of(meta);
        job.labels = labels;
        job
    });
    if owned && !fresh {
        job.created = job.created.min(pod_created);
        job.labels
            .retain(|k, v| k == NAMESPACE_LABEL || pod.labels.get(k) == Some(&*v));
    }
    job.priority = job.priority.max(priority);
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, owner: Option<(&str, &str, &str)>, labels: serde_json::Value) -> Arc<Pod> {
        let owners = owner.map(|(api, kind, owner)| {
            json!([{"apiVersion": "v1", "kind": "Node", "name": "n", "uid": "x"},
                   {"apiVersion": api, "kind": kind, "name": owner, "uid": format!("uid-{owner}"),
                    "controller": true, "blockOwnerDeletion": true}])
        });
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                    "resourceVersion": "5", "creationTimestamp": "2024-01-01T00:00:00Z",
                    "labels": labels, "ownerReferences": owners},
                "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
            }))
            .unwrap(),
        )
    }

    fn replicaset(name: &str, deployment: Option<&str>) -> Arc<ReplicaSet> {
        let owners = deployment.map(|d| {
            json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": d, "uid": "d", "controller": true}])
        });
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "ns",
                "uid": format!("uid-{name}"), "ownerReferences": owners}}))
            .unwrap(),
        )
    }

    fn node() -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": "n1"},
                "status": {"allocatable": {"cpu": "8", "memory": "16Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}))
            .unwrap(),
        )
    }

    fn objects(pods: Vec<Arc<Pod>>, replicasets: Vec<Arc<ReplicaSet>>) -> Objects {
        Objects {
            pods,
            nodes: vec![node()],
            namespaces: Vec::new(),
            groups: Vec::new(),
            queues: Vec::new(),
            reservations: Vec::new(),
            policies: Vec::new(),
            replicasets,
        }
    }

    fn build_of(objects: &Objects) -> Built {
        let mut models: Vec<String> = Vec::new();
        let mut intern =
            |m: &str| -> Result<ferry_sched_core::ModelId, ferry_sched_core::model::ModelError> {
                let i = models.iter().position(|x| x == m).unwrap_or_else(|| {
                    models.push(m.to_string());
                    models.len() - 1
                });
                Ok(ferry_sched_core::ModelId(i as u8))
            };
        build(
            objects,
            0,
            |_| true,
            &HashMap::new(),
            &HashSet::new(),
            &mut intern,
            &mut Arrivals::default(),
        )
    }

    fn rs_owners(rs: &[Arc<ReplicaSet>]) -> ReplicaSetOwners<'_> {
        rs.iter()
            .map(|r| {
                let m = &r.metadata;
                (
                    (m.namespace.as_deref().unwrap(), m.name.as_deref().unwrap()),
                    (m.uid.as_deref().unwrap(), r.owner.as_ref()),
                )
            })
            .collect()
    }

    #[test]
    fn pods_are_accounted_to_their_controller() {
        let rs = vec![replicaset("web-abc", Some("web")), replicaset("bare", None)];
        let owners = rs_owners(&rs);
        let of = |p: Arc<Pod>| controller_of(&p, &owners);
        let none = json!({});
        assert_eq!(
            of(pod(
                "a",
                Some(("apps/v1", "ReplicaSet", "web-abc")),
                none.clone()
            ))
            .as_deref(),
            Some("Deployment ns/web")
        );
        assert_eq!(
            of(pod(
                "b",
                Some(("apps/v1", "ReplicaSet", "bare")),
                none.clone()
            ))
            .as_deref(),
            Some("ReplicaSet ns/bare")
        );
        // Not (yet) known to the informer: the ReplicaSet itself.
        assert_eq!(
            of(pod(
                "c",
                Some(("apps/v1", "ReplicaSet", "gone")),
                none.clone()
            ))
            .as_deref(),
            Some("ReplicaSet ns/gone")
        );
        for (api, kind) in [
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("batch/v1", "Job"),
        ] {
            assert_eq!(
                of(pod("d", Some((api, kind, "x")), none.clone())),
                Some(format!("{kind} ns/x"))
            );
        }
        // Other controllers (a mirror pod's node, a custom kind), or none: the pod alone.
        assert_eq!(of(pod("e", Some(("v1", "Node", "n")), none.clone())), None);
        assert_eq!(
            of(pod("f", Some(("example.com/v1", "Job", "x")), none.clone())),
            None
        );
        assert_eq!(of(pod("g", None, none.clone())), None);
        // A ReplicaSet of the same name but another uid is another owner.
        let mut stale = pod("h", Some(("apps/v1", "ReplicaSet", "web-abc")), none);
        Arc::get_mut(&mut stale)
            .unwrap()
            .owner
            .as_mut()
            .unwrap()
            .uid = "other".into();
        assert_eq!(of(stale).as_deref(), Some("ReplicaSet ns/web-abc"));
    }

    #[test]
    fn a_controller_is_one_job_of_independent_pods() {
        let rs = vec![replicaset("web-abc", Some("web"))];
        let owned = |n: &str| {
            pod(
                n,
                Some(("apps/v1", "ReplicaSet", "web-abc")),
                json!({"app": "web", "pod-template-hash": "abc", "only": n}),
            )
        };
        let objects = objects(
            vec![
                owned("web-abc-1"),
                owned("web-abc-2"),
                owned("web-abc-3"),
                pod("solo", None, json!({})),
            ],
            rs,
        );
        let built = build_of(&objects);
        let ids: Vec<&str> = built.snapshot.jobs.iter().map(|j| j.id.as_str()).collect();
        assert_eq!(ids, ["Deployment ns/web", "pod ns/solo"]);
        let web = &built.snapshot.jobs[0];
        // No PodGroup: no gang, the pods are placed one by one.
        assert_eq!(web.min_member, 1);
        assert_eq!(web.pods.len(), 3);
        assert_eq!(built.pending["Deployment ns/web"].len(), 3);
        assert_eq!(
            built.owners.get("Deployment ns/web").map(String::as_str),
            Some("Deployment ns/web")
        );
        assert!(!built.owners.contains_key("pod ns/solo"));
        // Only the labels every pod shares.
        assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
        assert!(!web.labels.contains_key("only"));
        assert_eq!(
            built
                .queue_of_job
                .get("Deployment ns/web")
                .map(String::as_str),
            Some("default")
        );
    }

    #[test]
    fn a_podgroup_whose_pods_carry_a_surplus_order_is_elastic() {
        let group: Arc<PodGroup> = Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": "el", "namespace": "ns", "uid": "g", "resourceVersion": "3"},
                "spec": {"minMember": 2}
            }))
            .unwrap(),
        );
        let member = |n: &str, order: Option<&str>| -> Arc<Pod> {
            let annotations = order.map(|o| json!({(scheduling::SURPLUS_ORDER_ANNOTATION): o}));
            Arc::new(
                serde_json::from_value(json!({
                    "metadata": {"name": n, "namespace": "ns", "uid": format!("uid-{n}"),
                        "resourceVersion": "5", "creationTimestamp": "2024-01-01T00:00:00Z",
                        "labels": {(scheduling::POD_GROUP_LABEL): "el"},
                        "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]},
                }))
                .unwrap(),
            )
        };
        let mut objects = objects(
            vec![
                member("el-worker-3", Some("4")),
                member("el-master-0", None),
                member("el-worker-0", Some("1")),
            ],
            vec![],
        );
        objects.groups.push(group);
        let built = build_of(&objects);
        let job = &built.snapshot.jobs[0];
        assert!(job.is_elastic());
        assert_eq!(job.min_member, 2);
        assert_eq!(job.order_of("ns/el-worker-3"), 4);
        assert_eq!(job.order_of("ns/el-worker-0"), 1);
        assert_eq!(job.order_of("ns/el-master-0"), 0);
        // A group none of whose pods carries the annotation is not elastic.
        let mut plain = self::objects(vec![member("el-0", None), member("el-1", None)], vec![]);
        plain.groups = objects.groups.clone();
        assert!(!build_of(&plain).snapshot.jobs[0].is_elastic());
    }

    #[test]
    fn a_batch_job_with_a_podgroup_is_a_gang_named_after_its_job() {
        let group: Arc<PodGroup> = Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup",
                "metadata": {"name": "train", "namespace": "ns", "uid": "g", "resourceVersion": "3"},
                "spec": {"minMember": 3}
            }))
            .unwrap(),
        );
        let member = |n: &str| {
            pod(
                n,
                Some(("batch/v1", "Job", "train")),
                json!({(scheduling::POD_GROUP_LABEL): "train"}),
            )
        };
        let mut objects = objects(
            vec![member("train-0"), member("train-1"), member("train-2")],
            vec![],
        );
        objects.groups.push(group);
        let built = build_of(&objects);
        assert_eq!(built.snapshot.jobs.len(), 1);
        let job = &built.snapshot.jobs[0];
        assert_eq!(job.id, "podgroup ns/train");
        assert_eq!(job.min_member, 3);
        assert_eq!(
            built.owners.get("podgroup ns/train").map(String::as_str),
            Some("Job ns/train")
        );
    }

    #[test]
    fn a_bad_pod_of_a_controller_leaves_its_siblings_scheduled() {
        let bad = pod(
            "web-2",
            Some(("apps/v1", "ReplicaSet", "web")),
            json!({(scheduling::QUEUE_LABEL): "missing"}),
        );
        let objects = objects(
            vec![
                pod("web-1", Some(("apps/v1", "ReplicaSet", "web")), json!({})),
                bad,
            ],
            vec![],
        );
        let built = build_of(&objects);
        assert_eq!(built.snapshot.jobs.len(), 1);
        assert_eq!(built.snapshot.jobs[0].pods.len(), 1);
        assert_eq!(built.rejected.len(), 1);
        let r = &built.rejected[0];
        assert_eq!(
            (r.job.as_str(), r.pods.as_slice(), r.reason, r.whole_job),
            (
                "ReplicaSet ns/web",
                &["ns/web-2".to_string()][..],
                "QueueNotFound",
                false
            )
        );
    }
}

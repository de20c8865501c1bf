//! One consistent picture of the cluster for a cycle: the informers' objects turned into the
//! core's [`Snapshot`], plus the indexes needed to act on its outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ferry_api::scheduling::{self, PodGroup, Queue, Reservation, ResourcePolicy};
use ferry_sched_jobs::{Job, JobId, PendingPod, PodId, RunningPod, Snapshot, Time};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;

use crate::convert::{self, NAMESPACE_LABEL};
use crate::objects::{Node, Pod};

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

/// Counts of a job's pods by state (for PodGroup status).
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
}

impl PodRef {
    fn of(pod: &Pod) -> Self {
        Self {
            uid: pod.metadata.uid.clone(),
            created: millis(pod.metadata.creation_timestamp.as_ref()),
        }
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
    /// Pod counts of each PodGroup job.
    pub counts: HashMap<JobId, PodCounts>,
    /// The queue of every job.
    pub queue_of_job: HashMap<JobId, String>,
    /// Jobs left out of the cycle, with why.
    pub rejected: Vec<Rejected>,
    /// The largest number of GPUs any node has (for messages).
    pub largest_node_gpus: usize,
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

fn phase(pod: &Pod) -> &str {
    pod.status.phase.as_deref().unwrap_or("Pending")
}

/// Builds the snapshot. `serves` says which pods this scheduler places; `intern` interns GPU
/// model names.
pub fn build(
    objects: &Objects,
    now: Time,
    serves: impl Fn(&Pod) -> bool,
    assumed: &HashMap<PodId, Assumed>,
    evicting: &HashSet<PodId>,
    mut intern: impl FnMut(&str) -> ferry_sched_core::ModelId,
) -> Built {
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
    for n in &objects.nodes {
        let spec = convert::node_spec(n, &mut intern);
        largest_node_gpus = largest_node_gpus.max(spec.cards.len());
        snapshot.nodes.push(spec);
    }
    let node_names: HashSet<String> = snapshot.nodes.iter().map(|n| n.name.clone()).collect();

    let mut built = Built {
        snapshot,
        pods: HashMap::new(),
        pending: HashMap::new(),
        groups: HashMap::new(),
        counts: HashMap::new(),
        queue_of_job: HashMap::new(),
        rejected: Vec::new(),
        largest_node_gpus,
    };
    let mut jobs: BTreeMap<JobId, Job> = BTreeMap::new();
    let mut bad_requests: BTreeMap<JobId, (Vec<PodId>, String, &'static str)> = BTreeMap::new();
    for pod in &objects.pods {
        let id = pod_id(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let group_name = pod
            .labels
            .get(scheduling::POD_GROUP_LABEL)
            .filter(|g| !g.is_empty());
        let job_id = match group_name {
            Some(g) => group_job(ns, g),
            None => pod_job(&id),
        };
        let group = groups.get(&job_id);
        let terminal = matches!(phase(pod), "Succeeded" | "Failed");
        let bound_node = pod.spec.node_name.clone().filter(|n| !n.is_empty());
        let assumed_node = assumed.get(&id);
        if group.is_some() {
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
        let mut request = || convert::pod_request(pod, &mut intern);
        // Bound (or assumed bound): capacity taken on its node.
        if let Some(node) = bound_node
            .clone()
            .or_else(|| assumed_node.map(|a| a.node.clone()))
        {
            if !node_names.contains(&node) {
                continue; // its node is gone; nothing to charge
            }
            let Ok(request) = request() else { continue };
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
                ensure_job(&mut jobs, j, &queue, pod, group, ns);
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
            built.pods.insert(id, PodRef::of(pod));
            continue;
        }
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        built.pods.insert(id.clone(), PodRef::of(pod));
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
        if !queue_names.contains(&queue) {
            let entry = bad_requests.entry(job_id.clone()).or_insert_with(|| {
                (
                    Vec::new(),
                    format!(
                        "queue {queue:?} does not exist: create the Queue, or change the {} label",
                        scheduling::QUEUE_LABEL
                    ),
                    "QueueNotFound",
                )
            });
            entry.0.push(id);
            continue;
        }
        let gpus = convert::requested_gpus(pod);
        if gpus > ferry_sched_core::model::MAX_CARDS as i64
            || (gpus as usize > built.largest_node_gpus && gpus > 0)
        {
            let message = format!(
                "0/{} nodes are available: the pod asks for {gpus} GPUs; the largest node has {}.",
                built.snapshot.nodes.len(),
                built.largest_node_gpus
            );
            bad_requests
                .entry(job_id.clone())
                .or_insert_with(|| (Vec::new(), message, "Unschedulable"))
                .0
                .push(id);
            continue;
        }
        match request() {
            Ok(request) => {
                let job = ensure_job(&mut jobs, &job_id, &queue, pod, group, ns);
                job.pods.push(PendingPod {
                    id: id.clone(),
                    request,
                });
                built.pending.entry(job_id).or_default().push(id);
            }
            Err(e) => {
                let entry = bad_requests.entry(job_id.clone()).or_insert_with(|| {
                    (
                        Vec::new(),
                        format!("the pod's requests cannot be used: {e}"),
                        "InvalidRequest",
                    )
                });
                entry.0.push(id);
            }
        }
    }
    for (job, (pods, message, reason)) in bad_requests {
        built.rejected.push(Rejected {
            job: job.clone(),
            pods,
            message,
            reason,
        });
        jobs.remove(&job);
    }
    for job in jobs.values_mut() {
        // Pods of a gang are placed in a stable order.
        job.pods.sort_by(|a, b| a.id.cmp(&b.id));
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
    built
}

/// The job of `id`, created from its first pod (and PodGroup) when new.
fn ensure_job<'a>(
    jobs: &'a mut BTreeMap<JobId, Job>,
    id: &JobId,
    queue: &str,
    pod: &Pod,
    group: Option<&Arc<PodGroup>>,
    ns: &str,
) -> &'a mut Job {
    let priority = pod.spec.priority.unwrap_or(0);
    let job = jobs.entry(id.clone()).or_insert_with(|| {
        let (created, min_member) = match group {
            Some(g) => (
                millis(g.metadata.creation_timestamp.as_ref()),
                g.spec.min_member.max(1) as u32,
            ),
            None => (millis(pod.metadata.creation_timestamp.as_ref()), 1),
        };
        let mut labels: BTreeMap<String, String> = group
            .and_then(|g| g.metadata.labels.clone())
            .unwrap_or_default();
        labels.extend(pod.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels.insert(NAMESPACE_LABEL.into(), ns.to_string());
        let mut job = Job::new(id.clone(), queue, priority, created, min_member, Vec::new());
        job.labels = labels;
        job
    });
    job.priority = job.priority.max(priority);
    job
}

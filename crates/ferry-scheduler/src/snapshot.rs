//! One consistent picture of the cluster for a cycle: the informers' objects turned into the
//! core's [`Snapshot`], plus the indexes needed to act on its outcome.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use ferry_api::scheduling::{self, PodGroup, Queue, Reservation, ResourcePolicy};
use ferry_sched_jobs::{Job, JobId, PendingPod, PodId, RunningPod, Snapshot, Time};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time as KubeTime;

use crate::convert::{self, Intern, NAMESPACE_LABEL};
use crate::objects::{Node, Pod, ScheduledCondition};
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
                ensure_job(&mut jobs, j, &queue, pod, group, ns, arrivals);
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
                job.pods.push(PendingPod {
                    id: id.clone(),
                    request,
                });
                built.pending.entry(job_id).or_default().push(id);
            }
            Err(e) => {
                let entry = bad_requests.entry(job_id.clone()).or_insert_with(|| {
                    if unknown_model {
                        (
                            Vec::new(),
                            format!("0/{} nodes are available: {e}", built.snapshot.nodes.len()),
                            "Unschedulable",
                        )
                    } else {
                        (
                            Vec::new(),
                            format!("the pod's requests cannot be used: {e}"),
                            "InvalidRequest",
                        )
                    }
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
    arrivals.end();
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
    arrivals: &mut Arrivals,
) -> &'a mut Job {
    let priority = pod.spec.priority.unwrap_or(0);
    let job = jobs.entry(id.clone()).or_insert_with(|| {
        let (meta, min_member) = match group {
            Some(g) => (&g.metadata, g.spec.min_member.max(1) as u32),
            None => (&pod.metadata, 1),
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
    job.priority = job.priority.max(priority);
    job
}

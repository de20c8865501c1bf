//! What a cycle reads: nodes, running pods, queues, jobs, reservations, resource policies,
//! the clock, and the knobs of the cycle. Plain data, filled by the live scheduler from its
//! informers (or by tests).

use std::collections::BTreeMap;

use ferry_sched_core::{CardSet, NodeSpec, PodRequest};

use crate::policy::ResourcePolicy;
use crate::queues::QueueSpec;
use crate::reservation::Reservation;

/// A point in time, milliseconds since any fixed epoch (the cycle only compares and
/// subtracts them).
pub type Time = u64;

/// A job's identity (e.g. `namespace/podgroup`).
pub type JobId = String;

/// A pod's identity (e.g. `namespace/name`).
pub type PodId = String;

/// Labels of a job (matched by reservation and resource-policy selectors).
pub type Labels = BTreeMap<String, String>;

/// An equality selector: every pair must be present (the empty selector matches all).
pub type Selector = BTreeMap<String, String>;

/// True when `labels` carries every pair of `selector`.
pub fn matches(selector: &Selector, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod of a job that waits for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingPod {
    /// Pod identity.
    pub id: PodId,
    /// What it asks for (resources, GPU, node selector, tolerations).
    pub request: PodRequest,
}

/// A job: a gang of pods scheduled together (a singleton pod is a job of `min_member` 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Identity.
    pub id: JobId,
    /// Name of the (leaf) queue it is submitted to.
    pub queue: String,
    /// Priority (higher first; PriorityClass value).
    pub priority: i32,
    /// Arrival time: FIFO order among jobs of equal priority.
    pub created: Time,
    /// Arrival order among jobs of the same `created` time (a creation sequence that
    /// cannot tie, such as the revision at which the job was first seen; 0 where unknown,
    /// and then the id decides).
    pub arrival: u64,
    /// Pods that must run together (running pods count): the first `min_member −
    /// running` pending pods (in `pods` order) are placed all at once or not at all; the
    /// others are placed one by one after them, while quota and nodes allow.
    pub min_member: u32,
    /// Pending pods; the gang's are first (e.g. a driver before its executors).
    pub pods: Vec<PendingPod>,
    /// Labels (matched by reservations and resource policies).
    pub labels: Labels,
    /// Elastic jobs only (empty: not elastic): the surplus order of its pods, running and
    /// pending (a pod absent from it has order 0). Ordered by it (then by input order, or
    /// the youngest for running pods), the first `min_member` pods are the job's minimum
    /// and the others its surplus: grown one by one, lowest order first, into capacity
    /// left idle once every other job had its turn ([`crate::actions`]'s grow), and taken
    /// back first, single pods, highest order first, under reclaim or priority preemption
    /// (before any job's minimum).
    pub surplus_order: BTreeMap<PodId, u32>,
}

impl Job {
    /// A job with no labels.
    pub fn new(
        id: impl Into<JobId>,
        queue: impl Into<String>,
        priority: i32,
        created: Time,
        min_member: u32,
        pods: Vec<PendingPod>,
    ) -> Self {
        Job {
            id: id.into(),
            queue: queue.into(),
            priority,
            created,
            arrival: 0,
            min_member,
            pods,
            labels: Labels::new(),
            surplus_order: BTreeMap::new(),
        }
    }

    /// An elastic job of `count` identical pods named `<id>-<i>` with surplus order `i +
    /// 1`: the first `min_member` its minimum, the others its surplus.
    pub fn elastic(
        id: impl Into<JobId>,
        queue: impl Into<String>,
        priority: i32,
        created: Time,
        min_member: u32,
        count: u32,
        request: PodRequest,
    ) -> Self {
        let mut job = Job::gang(id, queue, priority, created, count, request);
        job.min_member = min_member;
        job.surplus_order = job
            .pods
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i as u32 + 1))
            .collect();
        job
    }

    /// Whether it is elastic (has a surplus order).
    pub fn is_elastic(&self) -> bool {
        !self.surplus_order.is_empty()
    }

    /// The surplus order of pod `id` (0 when it has none).
    pub fn order_of(&self, id: &str) -> u32 {
        self.surplus_order.get(id).copied().unwrap_or(0)
    }

    /// A gang of `count` identical pods named `<id>-<i>`, all required (`min_member =
    /// count`).
    pub fn gang(
        id: impl Into<JobId>,
        queue: impl Into<String>,
        priority: i32,
        created: Time,
        count: u32,
        request: PodRequest,
    ) -> Self {
        let id = id.into();
        let pods = (0..count)
            .map(|i| PendingPod {
                id: format!("{id}-{i}"),
                request: request.clone(),
            })
            .collect();
        Job::new(id, queue, priority, created, count, pods)
    }

    /// The same job with these labels.
    pub fn with_labels(mut self, labels: &[(&str, &str)]) -> Self {
        self.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self
    }
}

/// A pod already bound to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// Pod identity.
    pub id: PodId,
    /// Its job, when it belongs to one the cycle knows (`None`: a foreign pod, e.g. a
    /// DaemonSet's, which takes capacity, belongs to no queue and is never preempted).
    pub job: Option<JobId>,
    /// Node name.
    pub node: String,
    /// Card indices it holds on the node.
    pub cards: CardSet,
    /// What it asked for.
    pub request: PodRequest,
    /// When it was bound (the youngest are preempted first).
    pub started: Time,
    /// Being deleted: it still takes its node's capacity but no longer counts for its
    /// queue or its gang, and is never chosen again as a victim.
    pub terminating: bool,
}

/// Knobs of the cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Whether later jobs of a queue may start while its head-of-line job is blocked.
    pub backfill: bool,
    /// How long a blocked head-of-line job waits before its resources are held for it
    /// (milliseconds).
    pub backfill_wait: Time,
    /// How long room made by preemption stays held for the preemptor (milliseconds): long
    /// enough for the victims to terminate.
    pub nomination_ttl: Time,
    /// Most victim jobs one preemption may consider.
    pub max_victims: usize,
    /// Most preemption attempts (reclaim or priority) in one cycle.
    pub max_preemption_attempts: usize,
    /// Place identical CPU-only or whole-card pods of a gang on the node the engine chose
    /// for the previous one while it has room (one engine decision per node instead of per
    /// pod; keeps gangs together).
    pub sticky_gangs: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            backfill: true,
            backfill_wait: 5 * 60 * 1000,
            nomination_ttl: 5 * 60 * 1000,
            max_victims: 256,
            max_preemption_attempts: 64,
            sticky_gangs: true,
        }
    }
}

/// Everything a cycle reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The clock.
    pub now: Time,
    /// Schedulable nodes.
    pub nodes: Vec<NodeSpec>,
    /// Pods bound to nodes (including foreign and terminating ones).
    pub running: Vec<RunningPod>,
    /// The queue tree.
    pub queues: Vec<QueueSpec>,
    /// Every job with pending or running pods.
    pub jobs: Vec<Job>,
    /// Reservations.
    pub reservations: Vec<Reservation>,
    /// Resource policies (the first whose selector matches a job applies to it).
    pub policies: Vec<ResourcePolicy>,
}

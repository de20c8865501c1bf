//! What a cycle decides: binds, evictions, a report per job (state, reason, message, hold)
//! and per queue (usage against guarantee and limit, pending work), reservations, and the
//! state carried to the next cycle (holds, waits, pods being evicted).

use std::collections::BTreeMap;
use std::fmt;

use ferry_sched_core::{CardSet, PodRequest};

use crate::explain::PendingReason;
use crate::input::{JobId, PodId, Time};
use crate::reservation::ReservationReport;
use crate::resources::{Limits, Resources};

/// Bind this pod to this node with these cards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// The pod.
    pub pod: PodId,
    /// Its job.
    pub job: JobId,
    /// Node name.
    pub node: String,
    /// Card indices on the node.
    pub cards: CardSet,
}

/// Which rule justified a preemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreemptionRule {
    /// Taking back borrowed capacity for a queue within its guarantee.
    Reclaim {
        /// The victim's queue (borrowing).
        victim_queue: String,
        /// The preemptor's queue (within guarantee).
        preemptor_queue: String,
    },
    /// A higher-priority job of the same queue.
    Priority {
        /// The victim's priority.
        victim_priority: i32,
        /// The preemptor's priority (strictly higher).
        preemptor_priority: i32,
    },
}

/// Evict (delete) this pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The pod.
    pub pod: PodId,
    /// Its job (every running pod of a gang is evicted, except surplus pods of an elastic
    /// job, taken back one by one).
    pub job: JobId,
    /// Node it runs on.
    pub node: String,
    /// The job it makes room for.
    pub preemptor: JobId,
    /// The rule.
    pub rule: PreemptionRule,
    /// A surplus pod of an elastic job taken back alone (its minimum keeps running).
    pub surplus: bool,
    /// Human reason, naming the preemptor and the rule.
    pub message: String,
}

/// Where a job stands after the cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Nothing to place (every pod runs).
    Running,
    /// Pods were bound this cycle (the gang is complete).
    Bound,
    /// Room was made (or is held) for it; it is bound once preempted pods are gone.
    Nominated,
    /// Still waiting (see the reason).
    Pending,
    /// Its pods are evicted this cycle.
    Preempted,
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobState::Running => "Running",
            JobState::Bound => "Bound",
            JobState::Nominated => "Nominated",
            JobState::Pending => "Pending",
            JobState::Preempted => "Preempted",
        })
    }
}

/// Why capacity is held for a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldKind {
    /// Room made by preemption, on exactly these nodes and cards, until the victims are
    /// gone (or the nomination TTL).
    Preemption,
    /// The head of its queue waited past the bounded wait: its quota is set aside and,
    /// when nodes were what blocked it, the capacity of these nodes accrues to it as it
    /// frees, until it starts.
    HeadOfLine,
}

/// One pod's share of a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPod {
    /// The pod it is for.
    pub pod: PodId,
    /// Node name.
    pub node: String,
    /// What is held.
    pub request: PodRequest,
    /// Exact cards (preemption holds), or `None` (any cards of the node).
    pub cards: Option<CardSet>,
}

/// Capacity and quota set aside for a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The job.
    pub job: JobId,
    /// Why.
    pub kind: HoldKind,
    /// When it was granted.
    pub since: Time,
    /// When it lapses (`None`: while the job stays head of its queue).
    pub expires_at: Option<Time>,
    /// Quota set aside in the job's queue and its ancestors.
    pub resources: Resources,
    /// Node capacity set aside (empty: quota only).
    pub pods: Vec<HeldPod>,
}

/// The report of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobReport {
    /// The job.
    pub job: JobId,
    /// Its queue.
    pub queue: String,
    /// Where it stands.
    pub state: JobState,
    /// Why pods of it are still pending (also for a started job whose extra pods wait).
    pub reason: Option<PendingReason>,
    /// One-line human message (for events and conditions).
    pub message: String,
    /// What preemption tried, when it did not help.
    pub preemption: Option<String>,
    /// Pods bound this cycle.
    pub bound: u32,
    /// Pods still pending.
    pub pending: u32,
    /// Surplus pods of an elastic job evicted this cycle (taken back; its minimum runs on).
    pub shrunk: u32,
    /// What is held for it after the cycle.
    pub hold: Option<Hold>,
}

/// Figures of one queue after the cycle (subtree totals), for metrics and status.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReport {
    /// Name.
    pub name: String,
    /// Parent.
    pub parent: Option<String>,
    /// Used by running and just-bound (or nominated) pods.
    pub usage: Resources,
    /// Set aside by holds.
    pub held: Resources,
    /// Guarantee.
    pub guaranteed: Resources,
    /// Guarantee + borrowing limit (`None`: unbounded).
    pub limit: Limits,
    /// Jobs still pending (or nominated).
    pub pending_jobs: u32,
    /// Their pending pods.
    pub pending_pods: u32,
    /// What those pods ask for.
    pub pending: Resources,
    /// Dominant borrowed share (the borrowing pass's key).
    pub borrowed_share: f64,
    /// Dominant share of usage, weighted.
    pub dominant_share: f64,
}

/// Work counters of a cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CycleStats {
    /// Pending pods of the jobs the cycle considered (each gets a decision: bound,
    /// nominated, or pending with a reason).
    pub pods_decided: u64,
    /// Pods bound.
    pub pods_bound: u64,
    /// Pods nominated (placed by preemption, bound later).
    pub pods_nominated: u64,
    /// Job attempts.
    pub jobs_attempted: u64,
    /// Placement-engine decisions.
    pub engine_decisions: u64,
    /// Pods placed next to an identical gang member without an engine decision.
    pub sticky_placements: u64,
    /// Gangs rejected from the cycle's memo of shapes that no longer fit.
    pub memo_rejections: u64,
    /// Preemption simulations.
    pub preemption_attempts: u64,
    /// Pods evicted.
    pub evictions: u64,
}

/// State carried from one cycle to the next (kept by [`crate::Planner`]; plain data so the
/// live scheduler can persist it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Carry {
    /// Holds in force.
    pub holds: Vec<Hold>,
    /// Since when each blocked head-of-line job has waited.
    pub waiting: BTreeMap<JobId, Time>,
    /// Pods evicted and not yet gone, with when (treated as terminating for up to the
    /// nomination TTL; after that the eviction is retried if still needed).
    pub evicted: BTreeMap<PodId, Time>,
}

/// Everything a cycle decided.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Pods to bind.
    pub binds: Vec<Bind>,
    /// Pods to evict.
    pub evictions: Vec<Eviction>,
    /// One report per input job, in input order.
    pub jobs: Vec<JobReport>,
    /// One report per queue, in input order.
    pub queues: Vec<QueueReport>,
    /// Reservations.
    pub reservations: Vec<ReservationReport>,
    /// The carried state after the cycle.
    pub carry: Carry,
    /// Inputs the cycle had to ignore (unknown nodes, pods that do not fit, duplicates).
    pub warnings: Vec<String>,
    /// Work counters.
    pub stats: CycleStats,
}

impl Outcome {
    /// The report of a job.
    pub fn job(&self, id: &str) -> Option<&JobReport> {
        self.jobs.iter().find(|j| j.job == id)
    }

    /// The report of a queue.
    pub fn queue(&self, name: &str) -> Option<&QueueReport> {
        self.queues.iter().find(|q| q.name == name)
    }
}

//! Why a job is pending: a structured reason per job and a human message that says exactly
//! what blocks it (which quota of which queue and resource, with numbers; which filters
//! failed on how many nodes; which job it waits behind; how much of its gang fits).
//!
//! Node counts are what [`ferry_sched_core::Scheduler::explain`] reports (each node
//! counted under its first failing filter), taken at the end of the cycle. With the
//! engine's default filter chain they are computed in one batch over a packed copy of the
//! node states (the same rules, checked against the engine's own `explain` by a property
//! test), so explaining thousands of distinct pending pods costs milliseconds; an engine
//! with other filters is asked directly.

use std::collections::HashMap;
use std::fmt;

use ferry_sched_core::framework::FilterReason;
use ferry_sched_core::model::TaintEffect;
use ferry_sched_core::plugins::Filter;
use ferry_sched_core::{Cluster, PodRequest, Scheduler, Unschedulable};

use crate::input::{JobId, PodId};
use crate::queues::QuotaBlock;
use crate::resources::Resources;

/// Why a job (or the rest of its pods) is still pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingReason {
    /// The job names a queue that does not exist.
    UnknownQueue {
        /// The queue named.
        queue: String,
    },
    /// The job names a queue that has children (jobs go to leaf queues).
    NotALeafQueue {
        /// The queue named.
        queue: String,
    },
    /// A pod's request is malformed.
    InvalidPod {
        /// The pod.
        pod: PodId,
        /// What is wrong.
        error: String,
    },
    /// The gang needs more pods than exist yet.
    WaitingForPods {
        /// `min_member`.
        min_member: u32,
        /// Pods that exist (running + pending).
        pods: u32,
    },
    /// Admitting the job would take a queue over its guarantee + borrowing limit.
    Quota(QuotaBlock),
    /// The pods do not fit the nodes (all at once, for a gang).
    Unschedulable {
        /// Pods that must be placed together.
        needed: u32,
        /// How many of them fit before one did not.
        fit: u32,
        /// The first pod that did not fit.
        pod: PodId,
        /// How many nodes fail which filter for that pod (at the end of the cycle).
        why: Option<Unschedulable>,
        /// Capacity that reservations and holds keep for other jobs.
        held_for_others: Resources,
    },
    /// Backfill is off and an earlier job of the queue is blocked.
    BehindHead {
        /// The blocked head-of-line job.
        head: JobId,
    },
    /// Room was made by preemption (or the job's head-of-line hold is filling up); the job
    /// is bound as soon as the preempted pods have terminated.
    Nominated {
        /// Preempted pods still terminating on the held nodes.
        terminating: u32,
    },
    /// The job was not reached this cycle (preemption budget spent, or its queue was
    /// skipped); it is tried again next cycle.
    NotTried,
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::UnknownQueue { queue } => write!(f, "queue {queue} does not exist"),
            PendingReason::NotALeafQueue { queue } => write!(
                f,
                "queue {queue} has child queues; jobs must be submitted to a leaf queue"
            ),
            PendingReason::InvalidPod { pod, error } => write!(f, "pod {pod}: {error}"),
            PendingReason::WaitingForPods { min_member, pods } => write!(
                f,
                "gang needs {min_member} pods, only {pods} exist; waiting for the rest to be created"
            ),
            PendingReason::Quota(block) => write!(f, "over quota: {block}"),
            PendingReason::Unschedulable {
                needed,
                fit,
                pod,
                why,
                held_for_others,
            } => {
                if *needed > 1 {
                    write!(f, "gang needs {needed} pods, only {fit} fit; ")?;
                }
                write!(f, "pod {pod}: ")?;
                match why {
                    Some(w) if w.reasons.iter().map(|(_, n)| n).sum::<u32>() == w.nodes => {
                        write!(f, "{w}")?
                    }
                    Some(w) => {
                        let rejected: u32 = w.reasons.iter().map(|(_, n)| n).sum();
                        write!(
                            f,
                            "{} of {} nodes have room for it alone but not for the whole gang",
                            w.nodes - rejected,
                            w.nodes
                        )?;
                        for (i, (reason, count)) in w.reasons.iter().enumerate() {
                            write!(
                                f,
                                "{} {count} {reason}",
                                if i == 0 { "; others:" } else { "," }
                            )?;
                        }
                    }
                    None => write!(f, "no node has room")?,
                }
                if !held_for_others.is_zero() {
                    write!(
                        f,
                        " ({held_for_others} held by reservations and holds for other jobs)"
                    )?;
                }
                Ok(())
            }
            PendingReason::BehindHead { head } => {
                write!(
                    f,
                    "waiting behind head-of-line job {head} (backfill is off)"
                )
            }
            PendingReason::Nominated { terminating } => write!(
                f,
                "room is held for this job; waiting for {terminating} preempted pods to terminate"
            ),
            PendingReason::NotTried => write!(f, "not tried this cycle; retried next cycle"),
        }
    }
}

/// True when `engine` runs exactly the default filter chain (then [`explain_batch`] gives
/// the same counts as its `explain`).
pub fn default_chain(engine: &Scheduler) -> bool {
    let names: Vec<&str> = Filter::default_chain().iter().map(Filter::name).collect();
    format!("{engine:?}").contains(&format!("filters: {names:?}"))
}

/// The order in which the default chain's built-in filters report (after resources).
const CATEGORICAL: [FilterReason; 5] = [
    FilterReason::NoGpu,
    FilterReason::GpuModelMismatch,
    FilterReason::InsufficientGpu,
    FilterReason::NodeSelectorMismatch,
    FilterReason::UntoleratedTaint,
];

/// What the non-resource filters of the default chain read from a request.
type GroupKey<'a> = (
    ferry_sched_core::GpuRequest,
    ferry_sched_core::ModelSet,
    &'a [(String, String)],
    &'a [ferry_sched_core::model::Toleration],
);

/// [`Scheduler::explain`] for many requests at once, for an engine with the default chain
/// (resources, GPU model, GPU fit, node selector, taints; the first failing one counts).
pub fn explain_batch(cluster: &Cluster, requests: &[&PodRequest]) -> Vec<Unschedulable> {
    struct Packed {
        cpu: u64,
        memory: u64,
        full: bool,
    }
    let nodes: Vec<(&ferry_sched_core::state::Node, Packed)> = cluster
        .nodes()
        .map(|(_, n)| {
            let p = Packed {
                cpu: n.state.cpu_left,
                memory: n.state.memory_left,
                full: n.state.pods >= n.spec.max_pods,
            };
            (n, p)
        })
        .collect();
    // Requests that differ only in CPU and memory share the per-node categorical verdicts.
    let mut groups: HashMap<GroupKey, Vec<u8>> = HashMap::new();
    let mut out = Vec::with_capacity(requests.len());
    for pod in requests {
        let key = (
            pod.gpu,
            pod.gpu_models,
            pod.node_selector.as_slice(),
            pod.tolerations.as_slice(),
        );
        let verdicts = groups.entry(key).or_insert_with(|| {
            nodes
                .iter()
                .map(|(n, _)| categorical(n, pod).map_or(u8::MAX, |i| i as u8))
                .collect()
        });
        let mut counts = [0u32; 3 + CATEGORICAL.len()];
        for ((_, p), &v) in nodes.iter().zip(verdicts.iter()) {
            let slot = if p.cpu < pod.cpu_milli {
                0
            } else if p.memory < pod.memory_mib {
                1
            } else if p.full {
                2
            } else if v != u8::MAX {
                3 + v as usize
            } else {
                continue;
            };
            counts[slot] += 1;
        }
        let kinds = [
            FilterReason::InsufficientCpu,
            FilterReason::InsufficientMemory,
            FilterReason::TooManyPods,
        ]
        .into_iter()
        .chain(CATEGORICAL);
        let mut reasons: Vec<(FilterReason, u32)> =
            kinds.zip(counts).filter(|&(_, c)| c > 0).collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        out.push(Unschedulable {
            nodes: nodes.len() as u32,
            reasons,
        });
    }
    out
}

/// The first failing non-resource filter of the default chain, as an index into
/// [`CATEGORICAL`].
fn categorical(node: &ferry_sched_core::state::Node, pod: &PodRequest) -> Option<usize> {
    let (spec, st) = (&node.spec, &node.state);
    let g = pod.gpu;
    if g.is_gpu() {
        if spec.cards.is_empty() {
            return Some(0);
        }
        if !pod.gpu_models.allows(spec.gpu_model) {
            return Some(1);
        }
        let fits = if g.is_shared() && g.memory_mib == 0 {
            st.free().iter().any(|&f| f >= g.milli)
        } else {
            st.cards_fitting(spec, g) >= g.count as usize
        };
        if !fits {
            return Some(2);
        }
    }
    let has = |(k, v): &(String, String)| spec.labels.iter().any(|(nk, nv)| nk == k && nv == v);
    if !pod.node_selector.iter().all(has) {
        return Some(3);
    }
    let blocked = spec.taints.iter().any(|t| {
        t.effect != TaintEffect::PreferNoSchedule
            && !pod.tolerations.iter().any(|tol| tol.tolerates(t))
    });
    blocked.then_some(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_numbers() {
        let r = PendingReason::Unschedulable {
            needed: 8,
            fit: 5,
            pod: "ns/p-5".into(),
            why: Some(Unschedulable {
                nodes: 10,
                reasons: vec![
                    (FilterReason::InsufficientGpu, 9),
                    (FilterReason::GpuModelMismatch, 1),
                ],
            }),
            held_for_others: Resources::ZERO,
        };
        assert_eq!(
            r.to_string(),
            "gang needs 8 pods, only 5 fit; pod ns/p-5: 0/10 nodes are available: 9 insufficient GPU, 1 GPU model mismatch"
        );
        let w = PendingReason::WaitingForPods {
            min_member: 8,
            pods: 5,
        };
        assert_eq!(
            w.to_string(),
            "gang needs 8 pods, only 5 exist; waiting for the rest to be created"
        );
    }
}

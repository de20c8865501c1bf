//! Why a job is pending: a structured reason per job and a human message that says exactly
//! what blocks it (which quota of which queue and resource, with numbers; which filters
//! failed on how many nodes; which job it waits behind; how much of its gang fits).

use std::fmt;

use ferry_sched_core::Unschedulable;

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

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sched_core::framework::FilterReason;

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

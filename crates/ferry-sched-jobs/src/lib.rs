//! Ferry's job-level scheduling core: gangs, hierarchical queues with guaranteed quota,
//! borrowing and reclaim, fair share, priorities and preemption, backfill with bounded
//! waits, reservations and resource policies. Pure (no I/O, no async, no Kubernetes
//! types) and deterministic; pods are placed on nodes by [`ferry_sched_core`]'s engine.
//!
//! One cycle reads a [`Snapshot`] (nodes, running pods, queues, jobs, reservations,
//! resource policies, the clock) and returns an [`Outcome`]: binds, evictions, a report per
//! job saying exactly why it still waits, per-queue figures, and the state carried to the
//! next cycle (holds, head-of-line waits, pods being evicted), which the [`Planner`] keeps.
//!
//! ```
//! use ferry_sched_core::{GpuRequest, ModelSet, NodeSpec, PodRequest, PolicyKind, Scheduler};
//! use ferry_sched_jobs::{Config, Job, Planner, QueueSpec, Resources, Snapshot};
//!
//! let mut planner = Planner::new(Scheduler::new(PolicyKind::BestFit.build(0)), Config::default());
//! let h100 = planner.intern_model("H100").unwrap();
//! let snap = Snapshot {
//!     now: 0,
//!     nodes: vec![NodeSpec::simple("n1", 64_000, 262_144, Some(h100), 8)],
//!     queues: vec![QueueSpec::new("team").guarantee(Resources::gpus(8))],
//!     jobs: vec![Job::gang(
//!         "ns/train",
//!         "team",
//!         0,
//!         0,
//!         4,
//!         PodRequest::new(8_000, 32_768, GpuRequest::whole(2), ModelSet::ANY),
//!     )],
//!     ..Snapshot::default()
//! };
//! let out = planner.run(&snap).unwrap();
//! assert_eq!(out.binds.len(), 4);
//! for b in &out.binds {
//!     let cards: Vec<usize> = b.cards.indices().collect();
//!     println!("bind {} to {} cards {:?}", b.pod, b.node, cards);
//! }
//! ```
//!
//! Modules, one per concept: [`queues`] (tree, quota, admission), [`fairshare`] (order of
//! queues), [`gang`] (transactional gang placement), [`backfill`] (head-of-line holds),
//! [`preempt`] (reclaim and priority preemption, anti-loop rules), [`reservation`],
//! [`policy`] (resource policies), [`explain`] (pending reasons), [`session`] (the cycle's
//! state), and the actions of a cycle (admit, allocate, backfill; reclaim and preempt as
//! victim rules) behind narrow traits, as Volcano's session runs them.

#![warn(missing_docs)]

pub(crate) mod actions;
pub mod backfill;
pub mod explain;
pub mod fairshare;
pub mod gang;
pub mod input;
pub mod outcome;
pub mod policy;
pub mod preempt;
pub mod queues;
pub mod reservation;
pub mod resources;
pub mod session;

pub use explain::PendingReason;
pub use input::{
    Config, Job, JobId, Labels, PendingPod, PodId, RunningPod, Selector, Snapshot, Time,
};
pub use outcome::{
    Bind, Carry, CycleStats, Eviction, HeldPod, Hold, HoldKind, JobReport, JobState, Outcome,
    PreemptionRule, QueueReport,
};
pub use policy::{ResourcePolicy, Unit};
pub use queues::{QueueError, QueueSpec, QueueTree, QuotaBlock};
pub use reservation::{Reservation, ReservationReport, ReservedNode};
pub use resources::{Limits, Resource, Resources, Weights};
pub use session::{Planner, RESERVATION_LABEL, SessionError};

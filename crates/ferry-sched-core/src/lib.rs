//! Ferry's pure scheduling core: cluster model, placement plugins and policies (no I/O, no
//! async, deterministic).
//!
//! - [`model`]: GPU models, node specs, pod requests.
//! - [`state`]: the mutable cluster (bind, release, node add/update/remove, undo journal).
//! - [`frag`]: GPU fragmentation against a target workload (FGD's measure).
//! - [`framework`]: plugin traits (filter, score + normalise, card selection, tie-break).
//! - [`plugins`]: the filters; [`policies`]: the scoring policies and card selectors.
//! - [`engine`]: the [`Scheduler`] that runs the pipeline with a per-node score cache.

pub mod engine;
pub mod frag;
pub mod framework;
pub mod model;
pub mod plugins;
pub mod policies;
pub mod state;

pub use engine::{Decision, Knowledge, OnlineWorkload, ScheduleError, Scheduler, Unschedulable};
pub use frag::{TargetWorkload, TypicalPod, WorkloadKey};
pub use framework::{CardSelector, FilterPlugin, NodeRanks, Policy, ScoreContext, ScorePlugin};
pub use model::{GpuRequest, ModelId, ModelSet, NodeSpec, PodRequest};
pub use policies::PolicyKind;
pub use state::{CardSet, Cluster, NodeId, PodHandle};

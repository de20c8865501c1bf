//! The plugin traits of the placement pipeline, in the spirit of kube-scheduler's
//! framework: Filter (with a PreFilter relevance check), Score + NormalizeScore, card
//! assignment on the chosen node ("Reserve"), and the node-rank tie-break.

use std::fmt;

use crate::frag::TargetWorkload;
use crate::model::PodRequest;
use crate::state::{CardSet, Cluster, Node, NodeId};

/// Why a node was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FilterReason {
    /// Not enough CPU left.
    InsufficientCpu,
    /// Not enough memory left.
    InsufficientMemory,
    /// The node holds its maximum number of pods.
    TooManyPods,
    /// The pod wants GPUs and the node has none.
    NoGpu,
    /// The node's GPU model is not one the pod allows.
    GpuModelMismatch,
    /// Not enough GPU compute or card memory on enough cards.
    InsufficientGpu,
    /// The node lacks a label the pod selects.
    NodeSelectorMismatch,
    /// The node has a taint the pod does not tolerate.
    UntoleratedTaint,
    /// A custom filter said no.
    Custom(&'static str),
}

impl fmt::Display for FilterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            FilterReason::InsufficientCpu => "insufficient cpu",
            FilterReason::InsufficientMemory => "insufficient memory",
            FilterReason::TooManyPods => "too many pods",
            FilterReason::NoGpu => "no GPU",
            FilterReason::GpuModelMismatch => "GPU model mismatch",
            FilterReason::InsufficientGpu => "insufficient GPU",
            FilterReason::NodeSelectorMismatch => "node selector mismatch",
            FilterReason::UntoleratedTaint => "untolerated taint",
            FilterReason::Custom(name) => name,
        };
        f.write_str(text)
    }
}

/// A filter: decides whether a node can take a pod at all.
pub trait FilterPlugin: Send {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// PreFilter: false when the filter cannot reject any node for this pod (it is then
    /// skipped for the whole decision).
    fn relevant(&self, _pod: &PodRequest, _cluster: &Cluster) -> bool {
        true
    }
    /// `Ok` when `node` can take `pod`.
    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason>;
}

/// What a policy knows when it scores: the cluster and the workload it expects.
#[derive(Clone, Copy)]
pub struct ScoreContext<'a> {
    /// The cluster being placed into.
    pub cluster: &'a Cluster,
    /// The policy's target workload (empty when the policy has none).
    pub workload: &'a TargetWorkload,
    /// Changes whenever `workload` changes (scores cached under another epoch are stale).
    pub workload_epoch: u64,
}

/// How long a plugin's scores may be cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caching {
    /// The score depends only on the node's state, the pod's class and the workload: valid
    /// while the node's stamp and the workload epoch are unchanged.
    PerNodeState,
    /// Never cache (the score depends on something else, e.g. a random draw).
    Never,
}

/// A score plugin: rates every feasible node (higher is better).
pub trait ScorePlugin: Send {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// How long scores stay valid.
    fn caching(&self) -> Caching {
        Caching::PerNodeState
    }
    /// PreScore: sees the whole feasible list before any node is scored.
    fn pre_score(&mut self, _ctx: &ScoreContext, _pod: &PodRequest, _feasible: &[NodeId]) {}
    /// Score of one node.
    fn score(&self, ctx: &ScoreContext, id: NodeId, node: &Node, pod: &PodRequest) -> i64;
    /// NormalizeScore: rewrites the scores of the feasible nodes in place.
    fn normalize(&self, _scores: &mut [i64]) {}
}

/// Card assignment ("Reserve"): which cards of the chosen node the pod gets.
pub trait CardSelector: Send {
    /// Plugin name.
    fn name(&self) -> &'static str;
    /// The cards for `pod` on `node`, or `None` when it does not fit.
    fn select(&mut self, ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet>;
}

/// Tie-break between nodes of equal score: the lowest rank wins.
#[derive(Debug, Clone, Default)]
pub struct NodeRanks {
    ranks: Vec<u32>,
}

impl NodeRanks {
    /// Ranks by node id (rank = id).
    pub fn by_id() -> Self {
        NodeRanks { ranks: Vec::new() }
    }

    /// Explicit ranks, indexed by node id (ids past the end rank by id, after these).
    pub fn from_ranks(ranks: Vec<u32>) -> Self {
        NodeRanks { ranks }
    }

    /// Rank of a node.
    #[inline]
    pub fn rank(&self, id: NodeId) -> u64 {
        match self.ranks.get(id as usize) {
            Some(&r) => r as u64,
            None => self.ranks.len() as u64 + id as u64,
        }
    }
}

/// A scoring policy: a score plugin plus a card selector.
pub struct Policy {
    /// Display name.
    pub name: String,
    /// Scores nodes.
    pub scorer: Box<dyn ScorePlugin>,
    /// Picks cards on the chosen node.
    pub cards: Box<dyn CardSelector>,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("name", &self.name)
            .field("scorer", &self.scorer.name())
            .field("cards", &self.cards.name())
            .finish()
    }
}

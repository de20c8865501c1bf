//! Ferry's policy: FGD's fragmentation descent with lexicographic tie-breaks.
//!
//! Candidates (node, cards) are ranked lexicographically:
//! 1. FGD's binned score `trunc(100·sigmoid(ΔF/1000))` against the workload the scheduler
//!    knows (trace-wide or learned online);
//! 2. the exact fragmentation change `ΔF`, quantised to `quantum` milli-GPU (coarse on
//!    purpose: measured, a fine exact ordering packs greedily and strands more GPU than
//!    FGD's random spreading within a bin);
//! 3. for CPU-only pods, the GPU the placement could strand: CPU goes first to nodes whose
//!    GPUs are all taken, then best-fit on CPU (FGD sends them to the lowest-ranked node);
//! 4. optionally packing (least idle GPU after) or spreading (most idle GPU after);
//! 5. the node rank (the engine's tie-break).

use crate::framework::{CardSelector, ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::policies::fgd::candidate_deltas;
use crate::state::{CardSet, Node, NodeId};

/// Tunables of Ferry's policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FerryConfig {
    /// Fragmentation changes closer than this (milli-GPU) count as equal.
    pub quantum: f64,
    /// Use the CPU-stranding criterion for CPU-only pods.
    pub cpu_only_stranding: bool,
    /// Use the packing criterion.
    pub packing: bool,
    /// Prefer nodes with more idle GPU after placement (ignored with `packing`).
    pub spread: bool,
    /// Rank first by FGD's truncated sigmoid score (then by the exact change).
    pub fgd_bins: bool,
}

impl Default for FerryConfig {
    fn default() -> Self {
        FerryConfig {
            quantum: 100.0,
            cpu_only_stranding: true,
            packing: false,
            spread: false,
            fgd_bins: true,
        }
    }
}

/// Ferry's score plugin.
#[derive(Debug, Clone, Default)]
pub struct FerryScore {
    /// Tunables.
    pub config: FerryConfig,
}

const SECONDARY_BITS: u32 = 40;

/// The lexicographic score of one candidate (higher is better).
fn candidate_score(
    cfg: &FerryConfig,
    node: &Node,
    pod: &PodRequest,
    cards: CardSet,
    delta: f64,
) -> i64 {
    let exact = (delta / cfg.quantum).round() as i64;
    let primary = if cfg.fgd_bins {
        crate::frag::fgd_score(delta) * (1 << 14) + exact.clamp(-(1 << 13), (1 << 13) - 1)
    } else {
        exact
    };
    let st = &node.state;
    let idle_after = st.idle_milli() as i64 - cards.len() as i64 * pod.gpu.milli as i64;
    let cpu_after = (st.cpu_left - pod.cpu_milli) as i64;
    let mut secondary: i64 = 0;
    if cfg.cpu_only_stranding && !pod.gpu.is_gpu() {
        // Idle GPU on the node (fewer first), then CPU left (less first).
        secondary = -(idle_after.min(0xFFFF) << 22) - cpu_after.min((1 << 22) - 1);
    } else if cfg.packing {
        secondary = -(idle_after.min(0xFFFF) << 22) - cpu_after.min((1 << 22) - 1);
    } else if cfg.spread {
        secondary = -((0xFFFF - idle_after.min(0xFFFF)) << 22);
    }
    let span = 1i64 << SECONDARY_BITS;
    primary * span + secondary.clamp(-(span - 1), 0) + (span - 1)
}

/// The best candidate of a node: (score, cards).
pub fn ferry_best(
    cfg: &FerryConfig,
    ctx: &ScoreContext,
    node: &Node,
    pod: &PodRequest,
) -> Option<(i64, CardSet)> {
    let mut best: Option<(i64, CardSet)> = None;
    candidate_deltas(ctx.workload, node, pod, |cards, delta| {
        let s = candidate_score(cfg, node, pod, cards, delta);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, cards));
        }
    });
    best
}

impl ScorePlugin for FerryScore {
    fn name(&self) -> &'static str {
        "Ferry"
    }

    fn score(&self, ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        ferry_best(&self.config, ctx, node, pod).map_or(i64::MIN, |(s, _)| s)
    }
}

/// Ferry's card selector: the card of the best candidate (ties: the lowest index).
#[derive(Debug, Clone, Default)]
pub struct FerryCards {
    /// Tunables (must match the score plugin's).
    pub config: FerryConfig,
}

impl CardSelector for FerryCards {
    fn name(&self) -> &'static str {
        "ferry"
    }

    fn select(&mut self, ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        ferry_best(&self.config, ctx, node, pod).map(|(_, c)| c)
    }
}

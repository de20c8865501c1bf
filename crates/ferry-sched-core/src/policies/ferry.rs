//! Ferry's policy (work in progress): exact fragmentation descent.

use crate::framework::{CardSelector, ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::policies::fgd::candidate_deltas;
use crate::state::{CardSet, Node, NodeId};

/// Ferry's score plugin.
#[derive(Debug, Clone, Default)]
pub struct FerryScore;

/// The best candidate of a node: (score, cards).
pub fn ferry_best(ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<(i64, CardSet)> {
    let mut best: Option<(i64, CardSet)> = None;
    candidate_deltas(ctx.workload, node, pod, |cards, delta| {
        let s = (delta * 1000.0).round() as i64;
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
        ferry_best(ctx, node, pod).map_or(i64::MIN, |(s, _)| s)
    }
}

/// Ferry's card selector.
#[derive(Debug, Clone, Default)]
pub struct FerryCards;

impl CardSelector for FerryCards {
    fn name(&self) -> &'static str {
        "ferry"
    }

    fn select(&mut self, ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        ferry_best(ctx, node, pod).map(|(_, c)| c)
    }
}

//! Fragmentation Gradient Descent (FGD, ATC'23; spec §6.1): the placement that grows the
//! expected fragmentation the least, scored `trunc(100·sigmoid(ΔF/1000))`.

use crate::frag::{TargetWorkload, fgd_score};
use crate::framework::{CardSelector, ScoreContext, ScorePlugin};
use crate::model::{MAX_CARDS, PodRequest};
use crate::policies::cards::lowest_untouched;
use crate::state::{CardSet, Node, NodeId};

/// Fragmentation decrease `F_n − F_n'` of every candidate placement of `pod` on `node`, in
/// card-index order: one entry per fitting card for sharing pods, one entry otherwise.
/// Candidates on cards with equal compute left are evaluated once.
pub fn candidate_deltas(
    workload: &TargetWorkload,
    node: &Node,
    pod: &PodRequest,
    mut visit: impl FnMut(CardSet, f64),
) {
    let st = &node.state;
    let model = node.spec.gpu_model;
    let free = st.free();
    let before = workload.node_frag(st.cpu_left, free, model);
    let cpu_after = st.cpu_left - pod.cpu_milli;
    let mut scratch = [0u16; MAX_CARDS];
    let scratch = &mut scratch[..free.len()];
    scratch.copy_from_slice(free);
    if pod.gpu.is_shared() {
        let mut seen: [(u16, f64); MAX_CARDS] = [(0, 0.0); MAX_CARDS];
        let mut seen_len = 0;
        for i in 0..free.len() {
            if !st.card_fits(&node.spec, i, pod.gpu.milli, pod.gpu.memory_mib) {
                continue;
            }
            let delta = match seen[..seen_len].iter().find(|(f, _)| *f == free[i]) {
                Some(&(_, d)) => d,
                None => {
                    scratch[i] -= pod.gpu.milli;
                    let d = before - workload.node_frag(cpu_after, scratch, model);
                    scratch[i] = free[i];
                    seen[seen_len] = (free[i], d);
                    seen_len += 1;
                    d
                }
            };
            let mut set = CardSet::EMPTY;
            set.insert(i);
            visit(set, delta);
        }
    } else {
        let cards = if pod.gpu.is_gpu() {
            match lowest_untouched(node, pod.gpu.count as usize) {
                Some(c) => c,
                None => return,
            }
        } else {
            CardSet::EMPTY
        };
        for i in cards.indices() {
            scratch[i] = 0;
        }
        visit(
            cards,
            before - workload.node_frag(cpu_after, scratch, model),
        );
    }
}

/// The FGD score of a node and the card it would use (first card reaching the best score).
pub fn fgd_best(
    workload: &TargetWorkload,
    node: &Node,
    pod: &PodRequest,
) -> Option<(i64, CardSet)> {
    let mut best: Option<(i64, CardSet)> = None;
    candidate_deltas(workload, node, pod, |cards, delta| {
        let s = fgd_score(delta);
        if best.is_none_or(|(b, _)| s > b) {
            best = Some((s, cards));
        }
    });
    best
}

/// The FGD score plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct FgdScore;

impl ScorePlugin for FgdScore {
    fn name(&self) -> &'static str {
        "FGD"
    }

    fn score(&self, ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        fgd_best(ctx.workload, node, pod).map_or(0, |(s, _)| s)
    }
}

/// FGD card selection: the card with the best FGD score (ties: the lowest index).
#[derive(Debug, Clone, Copy, Default)]
pub struct FgdCards;

impl CardSelector for FgdCards {
    fn name(&self) -> &'static str {
        "fgd"
    }

    fn select(&mut self, ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        fgd_best(ctx.workload, node, pod).map(|(_, c)| c)
    }
}

//! Best-fit: the least weighted CPU + GPU left after placement, min-max normalised (§6.2).

use crate::framework::{ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::policies::{MAX_SPEC_CPU, MAX_SPEC_GPU};
use crate::state::{Node, NodeId};

/// The BestFit score plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct BestFitScore;

/// The raw (pre-normalisation) best-fit score.
pub fn raw_score(node: &Node, pod: &PodRequest) -> i64 {
    let cpu_left = node.state.cpu_left as f64 - pod.cpu_milli as f64;
    let gpu_left = node.state.idle_milli() as f64 - pod.gpu.total_milli() as f64;
    let mut weighted = 0.0;
    weighted += cpu_left / MAX_SPEC_CPU * 0.5;
    weighted += gpu_left / MAX_SPEC_GPU * 0.5;
    ((1.0 - weighted) * 100.0) as i64
}

/// Integer min-max normalisation to 0..=100 (all 0 when every score is equal).
pub fn min_max_normalize(scores: &mut [i64]) {
    let (Some(&lo), Some(&hi)) = (scores.iter().min(), scores.iter().max()) else {
        return;
    };
    for s in scores.iter_mut() {
        *s = if hi == lo {
            0
        } else {
            (*s - lo) * 100 / (hi - lo)
        };
    }
}

impl ScorePlugin for BestFitScore {
    fn name(&self) -> &'static str {
        "BestFit"
    }

    fn score(&self, _ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        raw_score(node, pod)
    }

    fn normalize(&self, scores: &mut [i64]) {
        min_max_normalize(scores);
    }
}

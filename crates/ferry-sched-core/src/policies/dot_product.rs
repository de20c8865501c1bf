//! Dot-product: the smallest dot product of (free, request), normalised by the largest node
//! spec (§6.3; the reference's "merge"/"max" configuration).

use crate::framework::{ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::policies::{MAX_SPEC_CPU, MAX_SPEC_GPU};
use crate::state::{Node, NodeId};

/// The DotProduct score plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct DotProductScore;

impl ScorePlugin for DotProductScore {
    fn name(&self) -> &'static str {
        "DotProduct"
    }

    fn score(&self, _ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        let node_vec = [
            node.state.cpu_left as f64 / MAX_SPEC_CPU,
            node.state.idle_milli() as f64 / MAX_SPEC_GPU,
        ];
        let pod_vec = [
            pod.cpu_milli as f64 / MAX_SPEC_CPU,
            pod.gpu.total_milli() as f64 / MAX_SPEC_GPU,
        ];
        let mut dot = 0.0;
        for (a, b) in node_vec.iter().zip(pod_vec) {
            dot += a * b;
        }
        let score = 1.0 - dot / 2.0;
        (100.0 * score) as i64
    }
}

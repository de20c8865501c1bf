//! GPU clustering: put pods of the same kind (sharing, k whole cards) together (§6.5).

use crate::framework::{ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::policies::MAX_SPEC_GPU;
use crate::state::{Node, NodeId, pod_kind};

/// The GpuClustering score plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuClusteringScore;

impl ScorePlugin for GpuClusteringScore {
    fn name(&self) -> &'static str {
        "GpuClustering"
    }

    fn score(&self, _ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        if !pod.gpu.is_gpu() {
            return 0;
        }
        let max_gpu = MAX_SPEC_GPU as i64;
        let base = 25 * (max_gpu - node.state.idle_milli() as i64) / max_gpu;
        let kinds = &node.state.gpu_pod_kinds;
        let own = kinds[pod_kind(pod.gpu)] > 0;
        let distinct = kinds.iter().filter(|&&c| c > 0).count();
        base + match (own, distinct) {
            (true, 1) => 75,
            (true, _) => 50,
            (false, 0) => 25,
            (false, _) => 0,
        }
    }
}

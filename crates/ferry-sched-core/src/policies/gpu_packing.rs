//! GPU packing: share a used card first, then free cards of a used node, then an empty node
//! (smaller first) (§6.4).

use crate::framework::{ScoreContext, ScorePlugin};
use crate::model::{GPU_MILLI, PodRequest};
use crate::state::{Node, NodeId};

/// The GpuPacking score plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuPackingScore;

impl ScorePlugin for GpuPackingScore {
    fn name(&self) -> &'static str {
        "GpuPacking"
    }

    fn score(&self, _ctx: &ScoreContext, _id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        if !pod.gpu.is_gpu() {
            return 0;
        }
        let free = node.state.free();
        let fully_free = free.iter().filter(|&&f| f == GPU_MILLI).count() as i64;
        if fully_free == free.len() as i64 {
            return (33 - fully_free).max(fully_free);
        }
        let mut order: Vec<usize> = (0..free.len()).collect();
        order.sort_by_key(|&i| free[i]);
        let mut wanted = pod.gpu.count as usize;
        let mut whole_used = 0i64;
        let mut share_sum = 0i64;
        for i in order {
            if wanted == 0 {
                break;
            }
            if free[i] >= pod.gpu.milli {
                wanted -= 1;
                if free[i] == GPU_MILLI {
                    whole_used += 1;
                }
                share_sum += free[i] as i64 * 100 / GPU_MILLI as i64;
            }
        }
        if wanted != 0 {
            0
        } else if whole_used > 0 {
            (50 - whole_used).max(33)
        } else {
            (100 - share_sum / 10).max(50)
        }
    }
}

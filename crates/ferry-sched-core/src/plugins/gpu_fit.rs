//! GpuFit: enough cards with enough compute (and card memory) left.

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::PodRequest;
use crate::state::{Cluster, Node};

/// Rejects nodes where fewer than `count` cards can each take the pod's per-card share:
/// untouched cards for whole-card pods, `milli` compute and card memory for sharing pods.
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuFit;

impl FilterPlugin for GpuFit {
    fn name(&self) -> &'static str {
        "GpuFit"
    }

    fn relevant(&self, pod: &PodRequest, _cluster: &Cluster) -> bool {
        pod.gpu.is_gpu()
    }

    #[inline]
    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        let gpu = pod.gpu;
        if !gpu.is_gpu() {
            return Ok(());
        }
        let st = &node.state;
        let ok = if gpu.is_shared() && gpu.memory_mib == 0 {
            st.free().iter().any(|&f| f >= gpu.milli)
        } else {
            st.cards_fitting(&node.spec, gpu) >= gpu.count as usize
        };
        if ok {
            Ok(())
        } else {
            Err(FilterReason::InsufficientGpu)
        }
    }
}

//! GpuModel: the node must have GPUs of a model the pod allows.

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::PodRequest;
use crate::state::{Cluster, Node};

/// Rejects GPU-less nodes and nodes of a model the pod does not allow (GPU pods only).
#[derive(Debug, Clone, Copy, Default)]
pub struct GpuModel;

impl FilterPlugin for GpuModel {
    fn name(&self) -> &'static str {
        "GpuModel"
    }

    fn relevant(&self, pod: &PodRequest, _cluster: &Cluster) -> bool {
        pod.gpu.is_gpu()
    }

    #[inline]
    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        if !pod.gpu.is_gpu() {
            Ok(())
        } else if node.spec.cards.is_empty() {
            Err(FilterReason::NoGpu)
        } else if !pod.gpu_models.allows(node.spec.gpu_model) {
            Err(FilterReason::GpuModelMismatch)
        } else {
            Ok(())
        }
    }
}

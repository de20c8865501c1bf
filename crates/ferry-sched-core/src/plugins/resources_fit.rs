//! NodeResourcesFit: CPU, memory and pod count.

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::PodRequest;
use crate::state::Node;

/// Rejects nodes without enough CPU or memory left, or at their pod limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct ResourcesFit;

impl FilterPlugin for ResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    #[inline]
    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        let st = &node.state;
        if st.cpu_left < pod.cpu_milli {
            Err(FilterReason::InsufficientCpu)
        } else if st.memory_left < pod.memory_mib {
            Err(FilterReason::InsufficientMemory)
        } else if st.pods >= node.spec.max_pods {
            Err(FilterReason::TooManyPods)
        } else {
            Ok(())
        }
    }
}

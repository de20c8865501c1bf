//! NodeSelector: the node must carry every label the pod selects.

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::PodRequest;
use crate::state::{Cluster, Node};

/// Rejects nodes missing a `key=value` label of the pod's node selector.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeSelector;

impl FilterPlugin for NodeSelector {
    fn name(&self) -> &'static str {
        "NodeSelector"
    }

    fn relevant(&self, pod: &PodRequest, _cluster: &Cluster) -> bool {
        !pod.node_selector.is_empty()
    }

    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        let has =
            |(k, v): &(String, String)| node.spec.labels.iter().any(|(nk, nv)| nk == k && nv == v);
        if pod.node_selector.iter().all(has) {
            Ok(())
        } else {
            Err(FilterReason::NodeSelectorMismatch)
        }
    }
}

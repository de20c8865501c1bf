//! TaintToleration: the pod must tolerate every `NoSchedule`/`NoExecute` taint.

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::{PodRequest, TaintEffect};
use crate::state::{Cluster, Node};

/// Rejects nodes with a hard taint the pod does not tolerate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Taints;

impl FilterPlugin for Taints {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn relevant(&self, _pod: &PodRequest, cluster: &Cluster) -> bool {
        cluster.has_taints()
    }

    fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        let blocked = node.spec.taints.iter().any(|t| {
            t.effect != TaintEffect::PreferNoSchedule
                && !pod.tolerations.iter().any(|tol| tol.tolerates(t))
        });
        if blocked {
            Err(FilterReason::UntoleratedTaint)
        } else {
            Ok(())
        }
    }
}

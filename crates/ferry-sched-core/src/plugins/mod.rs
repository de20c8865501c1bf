//! Filter plugins, one module each, plus the built-in filter chain.

pub mod gpu_fit;
pub mod gpu_model;
pub mod node_selector;
pub mod resources_fit;
pub mod taints;

use crate::framework::{FilterPlugin, FilterReason};
use crate::model::PodRequest;
use crate::state::{Cluster, Node};

/// A filter of the chain: the built-in ones are dispatched statically (they run for every
/// node of every decision), custom ones through a trait object.
pub enum Filter {
    /// CPU, memory and pod count.
    ResourcesFit(resources_fit::ResourcesFit),
    /// GPU model constraint.
    GpuModel(gpu_model::GpuModel),
    /// Enough compute and card memory on enough cards.
    GpuFit(gpu_fit::GpuFit),
    /// Node selector.
    NodeSelector(node_selector::NodeSelector),
    /// Taints and tolerations.
    Taints(taints::Taints),
    /// Any other filter.
    Custom(Box<dyn FilterPlugin>),
}

impl Filter {
    /// The default chain, in evaluation order.
    pub fn default_chain() -> Vec<Filter> {
        vec![
            Filter::ResourcesFit(resources_fit::ResourcesFit),
            Filter::GpuModel(gpu_model::GpuModel),
            Filter::GpuFit(gpu_fit::GpuFit),
            Filter::NodeSelector(node_selector::NodeSelector),
            Filter::Taints(taints::Taints),
        ]
    }

    fn plugin(&self) -> &dyn FilterPlugin {
        match self {
            Filter::ResourcesFit(f) => f,
            Filter::GpuModel(f) => f,
            Filter::GpuFit(f) => f,
            Filter::NodeSelector(f) => f,
            Filter::Taints(f) => f,
            Filter::Custom(f) => f.as_ref(),
        }
    }

    /// Plugin name.
    pub fn name(&self) -> &'static str {
        self.plugin().name()
    }

    /// PreFilter relevance (see [`FilterPlugin::relevant`]).
    pub fn relevant(&self, pod: &PodRequest, cluster: &Cluster) -> bool {
        self.plugin().relevant(pod, cluster)
    }

    /// Runs the filter.
    #[inline]
    pub fn filter(&self, node: &Node, pod: &PodRequest) -> Result<(), FilterReason> {
        match self {
            Filter::ResourcesFit(f) => f.filter(node, pod),
            Filter::GpuModel(f) => f.filter(node, pod),
            Filter::GpuFit(f) => f.filter(node, pod),
            Filter::NodeSelector(f) => f.filter(node, pod),
            Filter::Taints(f) => f.filter(node, pod),
            Filter::Custom(f) => f.filter(node, pod),
        }
    }
}

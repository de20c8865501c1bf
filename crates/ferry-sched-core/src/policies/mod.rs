//! Scoring policies, one module each, and a by-name builder.

pub mod best_fit;
pub mod cards;
pub mod cpu_stranding;
pub mod dead_capacity;
pub mod dot_product;
pub mod ferry;
pub mod fgd;
pub mod gpu_clustering;
pub mod gpu_packing;
pub mod model_pressure;
pub mod random;

use std::fmt;
use std::str::FromStr;

use crate::framework::Policy;

/// CPU of the largest node spec, the normaliser of BestFit and DotProduct (milli-cores).
pub const MAX_SPEC_CPU: f64 = 128_000.0;
/// GPU of the largest node spec, the normaliser of BestFit, DotProduct and GpuClustering.
pub const MAX_SPEC_GPU: f64 = 8_000.0;

/// The policies this crate provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// Random-fit (§6.6).
    Random,
    /// Dot-product (§6.3).
    DotProduct,
    /// GPU clustering (§6.5).
    GpuClustering,
    /// GPU packing (§6.4).
    GpuPacking,
    /// Best-fit (§6.2).
    BestFit,
    /// Fragmentation gradient descent (§6.1).
    Fgd,
    /// Ferry's own policy (see [`ferry`]).
    Ferry,
}

impl PolicyKind {
    /// Every policy, in the paper's order, then Ferry's.
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::Random,
        PolicyKind::DotProduct,
        PolicyKind::GpuClustering,
        PolicyKind::GpuPacking,
        PolicyKind::BestFit,
        PolicyKind::Fgd,
        PolicyKind::Ferry,
    ];

    /// The six baselines of the FGD paper.
    pub const BASELINES: [PolicyKind; 6] = [
        PolicyKind::Random,
        PolicyKind::DotProduct,
        PolicyKind::GpuClustering,
        PolicyKind::GpuPacking,
        PolicyKind::BestFit,
        PolicyKind::Fgd,
    ];

    /// Short name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Random => "random",
            PolicyKind::DotProduct => "dotprod",
            PolicyKind::GpuClustering => "clustering",
            PolicyKind::GpuPacking => "packing",
            PolicyKind::BestFit => "bestfit",
            PolicyKind::Fgd => "fgd",
            PolicyKind::Ferry => "ferry",
        }
    }

    /// True when the policy scores against a target workload.
    pub fn uses_workload(self) -> bool {
        matches!(self, PolicyKind::Fgd | PolicyKind::Ferry)
    }

    /// Builds the policy; `seed` feeds its random draws (Random only).
    pub fn build(self, seed: u64) -> Policy {
        use cards::{BinpackCards, RandomCards};
        let (scorer, cards): (
            Box<dyn crate::framework::ScorePlugin>,
            Box<dyn crate::framework::CardSelector>,
        ) = match self {
            PolicyKind::Random => (
                Box::new(random::RandomScore::new(seed)),
                Box::new(RandomCards::new(seed ^ 0x9e37_79b9_7f4a_7c15)),
            ),
            PolicyKind::DotProduct => (
                Box::new(dot_product::DotProductScore),
                Box::new(BinpackCards),
            ),
            PolicyKind::GpuClustering => (
                Box::new(gpu_clustering::GpuClusteringScore),
                Box::new(BinpackCards),
            ),
            PolicyKind::GpuPacking => (
                Box::new(gpu_packing::GpuPackingScore),
                Box::new(BinpackCards),
            ),
            PolicyKind::BestFit => (Box::new(best_fit::BestFitScore), Box::new(BinpackCards)),
            PolicyKind::Fgd => (Box::new(fgd::FgdScore), Box::new(fgd::FgdCards)),
            PolicyKind::Ferry => (
                Box::new(ferry::FerryScore::default()),
                Box::new(ferry::FerryCards::default()),
            ),
        };
        Policy {
            name: self.name().to_string(),
            scorer,
            cards,
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy {0:?} (known: random, dotprod, clustering, packing, bestfit, fgd, ferry)")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(match norm.as_str() {
            "random" | "randomfit" => PolicyKind::Random,
            "dotprod" | "dotproduct" => PolicyKind::DotProduct,
            "clustering" | "gpuclustering" => PolicyKind::GpuClustering,
            "packing" | "gpupacking" => PolicyKind::GpuPacking,
            "bestfit" => PolicyKind::BestFit,
            "fgd" => PolicyKind::Fgd,
            "ferry" => PolicyKind::Ferry,
            _ => return Err(UnknownPolicy(s.to_string())),
        })
    }
}

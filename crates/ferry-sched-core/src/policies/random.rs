//! Random-fit: one feasible node drawn uniformly at random scores 100, the others 0.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::framework::{Caching, ScoreContext, ScorePlugin};
use crate::model::PodRequest;
use crate::state::{Node, NodeId};

/// The Random score plugin (spec §6.6).
#[derive(Debug, Clone)]
pub struct RandomScore {
    rng: ChaCha8Rng,
    chosen: Option<NodeId>,
}

impl RandomScore {
    /// A plugin drawing from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        RandomScore {
            rng: ChaCha8Rng::seed_from_u64(seed),
            chosen: None,
        }
    }
}

impl ScorePlugin for RandomScore {
    fn name(&self) -> &'static str {
        "Random"
    }

    fn caching(&self) -> Caching {
        Caching::Never
    }

    fn pre_score(&mut self, _ctx: &ScoreContext, _pod: &PodRequest, feasible: &[NodeId]) {
        self.chosen =
            (!feasible.is_empty()).then(|| feasible[self.rng.random_range(0..feasible.len())]);
    }

    fn score(&self, _ctx: &ScoreContext, id: NodeId, _node: &Node, _pod: &PodRequest) -> i64 {
        if self.chosen == Some(id) { 100 } else { 0 }
    }
}

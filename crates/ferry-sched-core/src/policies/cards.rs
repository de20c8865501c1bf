//! Card-level assignment on the chosen node: binpack (best fit), spread (worst fit) and
//! random. Whole-card pods always get the lowest-indexed untouched cards.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::framework::{CardSelector, ScoreContext};
use crate::model::PodRequest;
use crate::state::{CardSet, Node};

/// The lowest-indexed untouched cards, `count` of them, or `None`.
pub fn lowest_untouched(node: &Node, count: usize) -> Option<CardSet> {
    let mut set = CardSet::EMPTY;
    for i in 0..node.state.cards as usize {
        if set.len() == count {
            break;
        }
        if node.state.card_untouched(&node.spec, i) {
            set.insert(i);
        }
    }
    (set.len() == count).then_some(set)
}

/// Cards that can take one share of a sharing pod, by index.
pub fn fitting_cards<'a>(node: &'a Node, pod: &PodRequest) -> impl Iterator<Item = usize> + 'a {
    let (milli, mem) = (pod.gpu.milli, pod.gpu.memory_mib);
    (0..node.state.cards as usize).filter(move |&i| node.state.card_fits(&node.spec, i, milli, mem))
}

/// Assignment for pods that are not sharing pods (CPU-only: no card; whole: lowest).
fn non_shared(node: &Node, pod: &PodRequest) -> Option<CardSet> {
    if !pod.gpu.is_gpu() {
        Some(CardSet::EMPTY)
    } else {
        lowest_untouched(node, pod.gpu.count as usize)
    }
}

/// Binpack: a sharing pod goes to the fitting card with the least compute left (ties: the
/// lowest index).
#[derive(Debug, Clone, Copy, Default)]
pub struct BinpackCards;

impl CardSelector for BinpackCards {
    fn name(&self) -> &'static str {
        "binpack"
    }

    fn select(&mut self, _ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        if !pod.gpu.is_shared() {
            return non_shared(node, pod);
        }
        let free = &node.state.free_milli;
        let best = fitting_cards(node, pod).min_by_key(|&i| (free[i], i))?;
        let mut set = CardSet::EMPTY;
        set.insert(best);
        Some(set)
    }
}

/// Spread: a sharing pod goes to the fitting card with the most compute left (ties: the
/// lowest index).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpreadCards;

impl CardSelector for SpreadCards {
    fn name(&self) -> &'static str {
        "spread"
    }

    fn select(&mut self, _ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        if !pod.gpu.is_shared() {
            return non_shared(node, pod);
        }
        let free = &node.state.free_milli;
        let best = fitting_cards(node, pod).min_by_key(|&i| (std::cmp::Reverse(free[i]), i))?;
        let mut set = CardSet::EMPTY;
        set.insert(best);
        Some(set)
    }
}

/// Random: a sharing pod goes to a uniformly random fitting card.
#[derive(Debug, Clone)]
pub struct RandomCards {
    rng: ChaCha8Rng,
}

impl RandomCards {
    /// A selector drawing from a generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        RandomCards {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl CardSelector for RandomCards {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select(&mut self, _ctx: &ScoreContext, node: &Node, pod: &PodRequest) -> Option<CardSet> {
        if !pod.gpu.is_shared() {
            return non_shared(node, pod);
        }
        let mut chosen = None;
        for (seen, i) in fitting_cards(node, pod).enumerate() {
            if self.rng.random_range(0..=seen) == 0 {
                chosen = Some(i);
            }
        }
        let mut set = CardSet::EMPTY;
        set.insert(chosen?);
        Some(set)
    }
}

//! Reservations: capacity held on chosen nodes for the jobs a selector picks, until a TTL.
//!
//! A reservation is a placeholder pod per node. Semantics: on each of its nodes, pods of
//! matching jobs can always use `per_node`; the placeholder holds `per_node` minus what
//! matching pods already use there, and nobody else can use what it holds. A matching job
//! being placed sees the held capacity as free and prefers the reservation's nodes. After
//! `expires_at` the reservation holds nothing. When a node lacks room for the whole
//! placeholder (e.g. pods bound before the reservation), it holds what is free and grows as
//! pods leave.

use ferry_sched_core::model::GPU_MILLI;
use ferry_sched_core::policies::cards::lowest_untouched;
use ferry_sched_core::{CardSet, Cluster, GpuRequest, NodeId, PodHandle, PodRequest};

use crate::input::{Labels, Selector, Time, matches};
use crate::resources::Resources;

/// A reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Name.
    pub name: String,
    /// Job labels that may use it.
    pub selector: Selector,
    /// Nodes it holds capacity on.
    pub nodes: Vec<String>,
    /// What it holds on each node (CPU, memory, whole cards or a fraction of one card).
    pub per_node: PodRequest,
    /// When it stops holding anything (`None`: never).
    pub expires_at: Option<Time>,
}

impl Reservation {
    /// True when a job with `labels` may use it.
    pub fn admits(&self, labels: &Labels) -> bool {
        matches(&self.selector, labels)
    }

    /// True when it still holds at `now`.
    pub fn active(&self, now: Time) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// What a reservation holds on one node after this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedNode {
    /// Node name.
    pub node: String,
    /// Held for matching jobs (not yet used by them).
    pub held: Resources,
    /// Used by matching pods.
    pub used: Resources,
    /// Known node.
    pub known: bool,
}

/// The state of a reservation after a cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationReport {
    /// Name.
    pub name: String,
    /// False once expired.
    pub active: bool,
    /// Per node.
    pub nodes: Vec<ReservedNode>,
}

/// The request left of `amount` once `used` of it is taken (whole cards are counted down
/// by thousandths, rounded up to cards in use).
pub(crate) fn remaining(amount: &PodRequest, used: &Resources) -> PodRequest {
    let mut r = PodRequest::new(
        amount.cpu_milli.saturating_sub(used.cpu_milli),
        amount.memory_mib.saturating_sub(used.memory_mib),
        GpuRequest::NONE,
        amount.gpu_models,
    );
    let g = amount.gpu;
    if g.is_whole() {
        let used_cards = used.gpu_milli.div_ceil(GPU_MILLI as u64);
        let left = (g.count as u64).saturating_sub(used_cards) as u8;
        if left > 0 {
            r.gpu = GpuRequest::whole(left);
        }
    } else if g.is_gpu() {
        let milli = (g.milli as u64).saturating_sub(used.gpu_milli) as u16;
        if milli > 0 {
            r.gpu = GpuRequest {
                count: 1,
                milli,
                memory_mib: g.memory_mib.saturating_sub(used.gpu_memory_mib as u32),
            };
        }
    }
    r
}

/// Binds a placeholder holding as much of `want` as node `id` has free (on exactly
/// `cards` when given: only those of them that are free). Returns the handle and what it
/// holds, or `None` when nothing could be held.
pub(crate) fn bind_partial(
    cluster: &mut Cluster,
    id: NodeId,
    want: &PodRequest,
    cards: Option<CardSet>,
) -> Option<(PodHandle, Resources)> {
    let node = cluster.node(id)?;
    let (spec, st) = (&node.spec, &node.state);
    if st.pods >= spec.max_pods {
        return None;
    }
    let mut req = PodRequest::new(
        want.cpu_milli.min(st.cpu_left),
        want.memory_mib.min(st.memory_left),
        GpuRequest::NONE,
        want.gpu_models,
    );
    let mut set = CardSet::EMPTY;
    let g = want.gpu;
    if g.is_whole() {
        match cards {
            Some(c) => {
                for i in c.indices() {
                    if i < st.cards as usize && st.card_untouched(spec, i) {
                        set.insert(i);
                    }
                }
            }
            None => {
                let free = st.fully_free_cards().min(g.count as usize);
                if free > 0
                    && let Some(c) = lowest_untouched(node, free)
                {
                    set = c;
                }
            }
        }
        if !set.is_empty() {
            req.gpu = GpuRequest::whole(set.len() as u8);
        }
    } else if g.is_gpu() {
        let fits = |i: usize| st.card_fits(spec, i, g.milli, g.memory_mib);
        let card = match cards {
            Some(c) => c.indices().find(|&i| i < st.cards as usize && fits(i)),
            // Best fit: the fitting card with the least compute left.
            None => (0..st.cards as usize)
                .filter(|&i| fits(i))
                .min_by_key(|&i| (st.free_milli[i], i)),
        };
        if let Some(i) = card {
            set.insert(i);
            req.gpu = g;
        }
    }
    let held = Resources::of_pod(&req);
    if held.is_zero() {
        return None;
    }
    let handle = cluster.bind(id, &req, set).ok()?;
    Some((handle, held))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sched_core::{ModelSet, NodeSpec};

    #[test]
    fn remaining_counts_down_cards_and_fractions() {
        let amount = PodRequest::new(8000, 1000, GpuRequest::whole(4), ModelSet::ANY);
        let left = remaining(&amount, &Resources::new(2000, 0, 1500, 0));
        assert_eq!(left.cpu_milli, 6000);
        assert_eq!(left.gpu, GpuRequest::whole(2));
        let shared = PodRequest::new(0, 0, GpuRequest::shared(600, 0), ModelSet::ANY);
        assert_eq!(
            remaining(&shared, &Resources::new(0, 0, 250, 0)).gpu.milli,
            350
        );
        assert!(!remaining(&shared, &Resources::gpus(1)).gpu.is_gpu());
    }

    #[test]
    fn partial_placeholders_hold_what_is_free() {
        let mut c = Cluster::new();
        let id = c
            .add_node(NodeSpec::simple("n", 8000, 8192, None, 4))
            .unwrap();
        let busy = PodRequest::new(6000, 0, GpuRequest::whole(3), ModelSet::ANY);
        c.bind(id, &busy, lowest_untouched(c.node(id).unwrap(), 3).unwrap())
            .unwrap();
        let want = PodRequest::new(4000, 100, GpuRequest::whole(2), ModelSet::ANY);
        let (_, held) = bind_partial(&mut c, id, &want, None).unwrap();
        assert_eq!(held, Resources::new(2000, 100, 1000, 0));
        assert!(bind_partial(&mut c, id, &want, None).is_some_and(|(_, h)| h.gpu_milli == 0));
    }
}

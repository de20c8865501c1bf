//! Dead GPU capacity: idle compute on a node that the expected workload can (almost) never use.
//!
//! A partly used card with `free` thousandths left is *live* when the typical sharing pods that
//! fit into `free` (by compute, by the node's CPU left and by GPU model) carry at least
//! `min_live_weight` of the workload's probability mass; otherwise its compute is dead. A gap
//! left by an 810-thousandths pod (190 left, fillable only by rare ≤ 190 pods) is dead, a
//! 530 gap (a 470 pod's partner) is live. An untouched card is dead when the node's CPU left
//! is below every typical GPU pod's CPU. Dead capacity is waste the moment it is created,
//! which FGD's expected-fragment measure under-prices: there a fresh card with a 680 gap (a
//! 320 pod waiting for a 650 partner) looks as bad as a dead 210 gap.

use crate::frag::TargetWorkload;
use crate::model::{GPU_MILLI, ModelId};
use crate::state::NodeState;

/// Gap levels: free compute in steps of 10 thousandths (0..=1000).
const LEVELS: usize = 101;
/// Model slots: one per model id (ModelSet holds 64) plus one for nodes without a model.
pub(crate) const MODEL_SLOTS: usize = 65;

/// Slot of a node's GPU model in per-model tables (`0` = no model).
#[inline]
pub(crate) fn model_slot(model: Option<ModelId>) -> usize {
    model.map_or(0, |m| m.0 as usize + 1)
}

/// Which card gaps are live, per GPU model and gap level, from a target workload.
#[derive(Debug, Clone)]
pub struct GapLiveness {
    /// Per model slot and level: the least CPU left that makes a gap of that level live
    /// (`u64::MAX`: never live).
    live_from_cpu: Vec<[u64; LEVELS]>,
    /// Per model slot: the least CPU of a typical single-card GPU pod (`u64::MAX`: none).
    card_from_cpu: Vec<u64>,
}

impl GapLiveness {
    /// Tables for `workload`: a gap is live when the typical sharing pods fitting it weigh at
    /// least `min_live_weight` (probability mass; 0 = any one pod).
    pub fn new(workload: &TargetWorkload, min_live_weight: f64) -> Self {
        let mut live_from_cpu = vec![[u64::MAX; LEVELS]; MODEL_SLOTS];
        let mut card_from_cpu = vec![u64::MAX; MODEL_SLOTS];
        let mut sharing: Vec<_> = workload
            .pods
            .iter()
            .filter(|m| m.gpu_count == 1 && m.gpu_milli > 0 && m.gpu_milli < GPU_MILLI)
            .collect();
        sharing.sort_by_key(|m| m.cpu_milli);
        for slot in 1..MODEL_SLOTS {
            let model = Some(ModelId((slot - 1) as u8));
            for m in &workload.pods {
                if m.gpu_count == 1 && m.gpu_milli > 0 && m.models.allows(model) {
                    card_from_cpu[slot] = card_from_cpu[slot].min(m.cpu_milli);
                }
            }
            for (level, least) in live_from_cpu[slot].iter_mut().enumerate() {
                // The least CPU c such that the pods fitting (milli ≤ gap, cpu ≤ c) weigh enough.
                let mut mass = 0.0;
                for m in &sharing {
                    if m.models.allows(model) && m.gpu_milli as usize <= level * 10 {
                        mass += m.weight;
                        if mass >= min_live_weight.max(f64::MIN_POSITIVE) {
                            *least = m.cpu_milli;
                            break;
                        }
                    }
                }
            }
        }
        GapLiveness {
            live_from_cpu,
            card_from_cpu,
        }
    }

    /// Dead compute of one card with `free` left on a node with `cpu_left` (thousandths).
    #[inline]
    pub fn dead_card(&self, slot: usize, free: u16, cpu_left: u64) -> u32 {
        match free {
            0 => 0,
            GPU_MILLI => {
                if cpu_left < self.card_from_cpu[slot] {
                    GPU_MILLI as u32
                } else {
                    0
                }
            }
            f => {
                if cpu_left < self.live_from_cpu[slot][f as usize / 10] {
                    f as u32
                } else {
                    0
                }
            }
        }
    }

    /// Dead compute of a node whose cards have `free` left and whose CPU left is `cpu_left`.
    pub fn dead_node(&self, model: Option<ModelId>, free: &[u16], cpu_left: u64) -> u32 {
        let slot = model_slot(model);
        free.iter()
            .map(|&f| self.dead_card(slot, f, cpu_left))
            .sum()
    }

    /// Dead compute of a node state.
    pub fn dead_state(&self, model: Option<ModelId>, state: &NodeState) -> u32 {
        self.dead_node(model, state.free(), state.cpu_left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frag::TypicalPod;
    use crate::model::ModelSet;

    fn pod(cpu: u64, milli: u16, weight: f64) -> TypicalPod {
        TypicalPod {
            cpu_milli: cpu,
            gpu_milli: milli,
            gpu_count: 1,
            models: ModelSet::ANY,
            weight,
        }
    }

    #[test]
    fn rare_small_pods_do_not_keep_a_gap_alive() {
        let w = TargetWorkload::new(vec![
            pod(3000, 810, 0.5),
            pod(4000, 160, 0.01),
            pod(10000, 470, 0.3),
            pod(8000, 1000, 0.19),
        ]);
        let any = GapLiveness::new(&w, 0.0);
        let some = GapLiveness::new(&w, 0.02);
        let m = Some(ModelId(0));
        // 190 left: only the rare 160 pod fits.
        assert_eq!(any.dead_node(m, &[190], 50_000), 0);
        assert_eq!(some.dead_node(m, &[190], 50_000), 190);
        // 530 left: the 470 pod fits, unless CPU is short.
        assert_eq!(some.dead_node(m, &[530], 50_000), 0);
        assert_eq!(some.dead_node(m, &[530], 9_000), 530);
        // Untouched cards die when no typical GPU pod's CPU fits; full cards are never dead.
        assert_eq!(some.dead_node(m, &[1000, 0], 2_000), 1000);
        assert_eq!(some.dead_node(m, &[1000, 0], 3_000), 0);
    }
}

//! GPU-model pressure: how contested each model is by pods that can run nowhere else.
//!
//! For each model, the share of the workload's GPU demand that is constrained to a set of
//! models containing it (split evenly over the models of the set present in the cluster),
//! divided by the model's share of the cluster's cards. A pressure of 1.2 means pods that
//! need this model ask 1.2× its share of the cluster. An unconstrained pod placed on a
//! pressured model takes capacity that constrained pods cannot find elsewhere; charging
//! `pressure × GPU taken` steers it to the uncontested models.

use crate::frag::TargetWorkload;
use crate::model::ModelId;
use crate::policies::dead_capacity::{MODEL_SLOTS, model_slot};
use crate::state::Cluster;

/// Pressure per GPU model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPressure {
    pressure: Vec<f64>,
}

impl ModelPressure {
    /// Pressures of the models of `cluster` under `workload`.
    pub fn new(workload: &TargetWorkload, cluster: &Cluster) -> Self {
        let mut cards = vec![0.0f64; MODEL_SLOTS];
        for (_, node) in cluster.nodes() {
            cards[model_slot(node.spec.gpu_model)] += node.spec.gpu_count() as f64;
        }
        cards[0] = 0.0;
        let total_cards: f64 = cards.iter().sum();
        let mut need = vec![0.0f64; MODEL_SLOTS];
        let mut total_gpu = 0.0;
        for m in workload.pods.iter().filter(|m| m.gpu_milli > 0) {
            let demand = m.weight * m.gpu_milli as f64 * m.gpu_count as f64;
            total_gpu += demand;
            if m.models.is_any() {
                continue;
            }
            let allowed: Vec<usize> = (1..MODEL_SLOTS)
                .filter(|&s| cards[s] > 0.0 && m.models.allows(Some(ModelId((s - 1) as u8))))
                .collect();
            for &s in &allowed {
                need[s] += demand / allowed.len() as f64;
            }
        }
        let pressure = (0..MODEL_SLOTS)
            .map(|s| {
                if cards[s] > 0.0 && total_gpu > 0.0 {
                    (need[s] / total_gpu) / (cards[s] / total_cards)
                } else {
                    0.0
                }
            })
            .collect();
        ModelPressure { pressure }
    }

    /// Pressure on `model`.
    #[inline]
    pub fn of(&self, model: Option<ModelId>) -> f64 {
        self.pressure[model_slot(model)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frag::TypicalPod;
    use crate::model::{ModelSet, NodeSpec};

    #[test]
    fn constrained_demand_presses_on_its_models_only() {
        let mut cluster = Cluster::new();
        let a = cluster.intern_model("A").unwrap();
        let b = cluster.intern_model("B").unwrap();
        cluster
            .add_node(NodeSpec::simple("a", 64_000, 1 << 20, Some(a), 2))
            .unwrap();
        cluster
            .add_node(NodeSpec::simple("b", 64_000, 1 << 20, Some(b), 6))
            .unwrap();
        let pod = |models, weight| TypicalPod {
            cpu_milli: 4000,
            gpu_milli: 1000,
            gpu_count: 1,
            models,
            weight,
        };
        let w = TargetWorkload::new(vec![pod(ModelSet::only(a), 0.5), pod(ModelSet::ANY, 0.5)]);
        let p = ModelPressure::new(&w, &cluster);
        // Half the demand needs A, which holds a quarter of the cards.
        assert!((p.of(Some(a)) - 2.0).abs() < 1e-9);
        assert_eq!(p.of(Some(b)), 0.0);
        assert_eq!(p.of(None), 0.0);
    }
}

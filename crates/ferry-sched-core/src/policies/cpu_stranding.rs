//! CPU stranding: GPU compute a node cannot sell because its CPU runs out first.
//!
//! The typical GPU pod of the workload asks `ρ` milli-cores per whole GPU (the
//! probability-weighted CPU over the weighted GPU demand, per GPU model). A node with
//! `cpu_left` and `idle` GPU compute can serve about `cpu_left / ρ` GPUs of such pods, so
//! `max(0, idle − 1000·cpu_left/ρ)` of its idle compute is expected to be stranded. Charging
//! the change of this amount steers CPU-heavy pods (CPU-only ones, or a high CPU-per-GPU
//! ratio) to CPU-rich nodes (T4: 52 cores per GPU) and keeps the CPU of CPU-poor nodes (G2:
//! 12 cores per GPU, P100: 8) for the GPU pods that need little of it.

use crate::frag::TargetWorkload;
use crate::model::{GPU_MILLI, ModelId};
use crate::policies::dead_capacity::{MODEL_SLOTS, model_slot};

/// Expected CPU per GPU of the workload, per GPU model.
#[derive(Debug, Clone)]
pub struct CpuPerGpu {
    /// Per model slot: milli-cores per whole GPU (`INFINITY`: no GPU pod may run there).
    ratio: Vec<f64>,
}

impl CpuPerGpu {
    /// Ratios of the typical GPU pods of `workload` allowed on each model.
    pub fn new(workload: &TargetWorkload) -> Self {
        let ratio = (0..MODEL_SLOTS)
            .map(|slot| {
                let model = (slot > 0).then(|| ModelId((slot - 1) as u8));
                let (mut cpu, mut gpu) = (0.0, 0.0);
                for m in &workload.pods {
                    if m.gpu_milli > 0 && model.is_some() && m.models.allows(model) {
                        cpu += m.weight * m.cpu_milli as f64;
                        gpu += m.weight * m.gpu_milli as f64 * m.gpu_count as f64;
                    }
                }
                if gpu > 0.0 {
                    cpu / (gpu / GPU_MILLI as f64)
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        CpuPerGpu { ratio }
    }

    /// Expected stranded GPU compute (thousandths) of a node of `model` with `cpu_left` and
    /// `idle` compute.
    #[inline]
    pub fn stranded(&self, model: Option<ModelId>, cpu_left: u64, idle: u32) -> f64 {
        let ratio = self.ratio[model_slot(model)];
        (idle as f64 - cpu_left as f64 * GPU_MILLI as f64 / ratio).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frag::TypicalPod;
    use crate::model::ModelSet;

    #[test]
    fn a_cpu_poor_node_strands_what_its_cpu_cannot_serve() {
        let w = TargetWorkload::new(vec![
            TypicalPod {
                cpu_milli: 12_000,
                gpu_milli: 1000,
                gpu_count: 1,
                models: ModelSet::ANY,
                weight: 0.5,
            },
            TypicalPod {
                cpu_milli: 8_000,
                gpu_milli: 0,
                gpu_count: 0,
                models: ModelSet::ANY,
                weight: 0.5,
            },
        ]);
        let r = CpuPerGpu::new(&w);
        let m = Some(ModelId(0));
        // 12 cores per GPU: 24 cores serve 2 of 3 idle GPUs.
        assert!((r.stranded(m, 24_000, 3000) - 1000.0).abs() < 1e-9);
        assert_eq!(r.stranded(m, 48_000, 3000), 0.0);
        assert_eq!(r.stranded(None, 0, 0), 0.0);
    }
}

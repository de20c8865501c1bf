//! GPU fragmentation of a node against a target workload (FGD, ATC'23, §3 of the spec).
//!
//! For a typical task `m` and a node, the fragment `F_n(m)` is the node's idle GPU compute
//! that `m` cannot use: all of it when `m` cannot run there (no GPU, wrong model, too few
//! cards, too little CPU, or `m` is CPU-only), else the cards individually too small for
//! `m`. `F_n(M) = Σ_m p_m F_n(m)`. Sums are taken per category and then added up in the
//! reference's order, so a score of exactly "no change" stays exact.

use std::cmp::Ordering;

use crate::model::{GPU_MILLI, ModelId, ModelSet};

/// One typical task of a target workload.
#[derive(Debug, Clone, PartialEq)]
pub struct TypicalPod {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// Compute per card, thousandths (0 = CPU-only).
    pub gpu_milli: u16,
    /// Number of cards.
    pub gpu_count: u8,
    /// Allowed models (`ANY` = no constraint).
    pub models: ModelSet,
    /// Probability `p_m`.
    pub weight: f64,
}

/// A key of the workload histogram, with the model constraint's text (for ordering).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkloadKey {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// Compute per card, thousandths.
    pub gpu_milli: u16,
    /// Number of cards.
    pub gpu_count: u8,
    /// Allowed models.
    pub models: ModelSet,
    /// The constraint as written (`|`-joined names; empty for none).
    pub models_text: String,
}

/// The target workload `M`: typical tasks and their probabilities.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TargetWorkload {
    /// Typical tasks in the reference's order.
    pub pods: Vec<TypicalPod>,
}

/// Fragment category of a node for one typical task (the reference's seven buckets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragCategory {
    /// GPU task, short of both GPU and CPU.
    LackBoth = 0,
    /// GPU task, short of GPU.
    LackGpu = 1,
    /// GPU task that fits (its too-small cards are booked under `LackGpu`).
    Satisfied = 2,
    /// GPU task, short of CPU.
    LackCpu = 3,
    /// CPU-only task that fits.
    CpuOnlyFits = 4,
    /// CPU-only task short of CPU.
    CpuOnlyLacksCpu = 5,
    /// GPU task whose model constraint excludes the node.
    NoAccess = 6,
}

impl TargetWorkload {
    /// A workload from explicit typical tasks (weights used as given).
    pub fn new(pods: Vec<TypicalPod>) -> Self {
        TargetWorkload { pods }
    }

    /// The spec's §3.2 procedure: sort keys by count (descending; ties by key descending:
    /// CPU, GPU milli, GPU count, model text), keep keys until their cumulative count
    /// reaches `threshold_pct` percent (e.g. 95) of all pods, and renormalise.
    pub fn from_counts(mut counts: Vec<(WorkloadKey, u64)>, threshold_pct: f64) -> Self {
        counts.sort_by(|(a, ca), (b, cb)| {
            cb.cmp(ca)
                .then(b.cpu_milli.cmp(&a.cpu_milli))
                .then(b.gpu_milli.cmp(&a.gpu_milli))
                .then(b.gpu_count.cmp(&a.gpu_count))
                .then(b.models_text.as_bytes().cmp(a.models_text.as_bytes()))
        });
        let total: f64 = counts.iter().map(|(_, c)| *c as f64).sum();
        if total == 0.0 {
            return TargetWorkload::default();
        }
        let expected = threshold_pct * total / 100.0;
        let mut cum = 0.0;
        let mut kept = 0;
        while cum < expected && kept < counts.len() {
            cum += counts[kept].1 as f64;
            kept += 1;
        }
        let share = cum / total;
        let pods = counts[..kept]
            .iter()
            .map(|(k, c)| TypicalPod {
                cpu_milli: k.cpu_milli,
                gpu_milli: k.gpu_milli,
                gpu_count: k.gpu_count,
                models: k.models,
                weight: if kept == counts.len() {
                    *c as f64 / total
                } else {
                    (*c as f64 / total) / share
                },
            })
            .collect();
        TargetWorkload { pods }
    }

    /// True when the workload has no typical task.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// `F_n(M)` in thousandths of a card, for a node with `cpu_left`, cards with `free`
    /// compute and `model`.
    pub fn node_frag(&self, cpu_left: u64, free: &[u16], model: Option<ModelId>) -> f64 {
        let idle: u32 = free.iter().map(|&f| f as u32).sum();
        if idle == 0 {
            return 0.0;
        }
        let mut buckets = [0.0f64; 7];
        for m in &self.pods {
            let (cat, amount) = category(cpu_left, free, idle, model, m);
            let bucket = match cat {
                FragCategory::Satisfied => FragCategory::LackGpu as usize,
                other => other as usize,
            };
            buckets[bucket] += m.weight * amount as f64;
        }
        buckets[0] + buckets[1] + buckets[3] + buckets[4] + buckets[5] + buckets[6]
    }

    /// `F_n(m)` of every typical task with its category (for reports and tests).
    pub fn node_frag_detail(
        &self,
        cpu_left: u64,
        free: &[u16],
        model: Option<ModelId>,
    ) -> Vec<(FragCategory, u32)> {
        let idle: u32 = free.iter().map(|&f| f as u32).sum();
        self.pods
            .iter()
            .map(|m| category(cpu_left, free, idle, model, m))
            .collect()
    }

    /// Sum of the weights.
    pub fn total_weight(&self) -> f64 {
        self.pods.iter().map(|p| p.weight).sum()
    }
}

/// Category and fragment amount (thousandths) of a node for typical task `m`. For the
/// `Satisfied` category the amount is the part booked as fragment (too-small cards).
#[inline]
fn category(
    cpu_left: u64,
    free: &[u16],
    idle: u32,
    model: Option<ModelId>,
    m: &TypicalPod,
) -> (FragCategory, u32) {
    let cpu_ok = cpu_left >= m.cpu_milli;
    if m.gpu_milli == 0 {
        let cat = if cpu_ok {
            FragCategory::CpuOnlyFits
        } else {
            FragCategory::CpuOnlyLacksCpu
        };
        return (cat, idle);
    }
    if !m.models.allows(model) {
        return (FragCategory::NoAccess, idle);
    }
    let mut fitting = 0u32;
    let mut small = 0u32;
    for &f in free {
        if f >= m.gpu_milli {
            fitting += 1;
        } else {
            small += f as u32;
        }
    }
    let gpu_ok = fitting >= m.gpu_count as u32;
    match (gpu_ok, cpu_ok) {
        (true, true) => (FragCategory::Satisfied, small),
        (true, false) => (FragCategory::LackCpu, idle),
        (false, true) => (FragCategory::LackGpu, idle),
        (false, false) => (FragCategory::LackBoth, idle),
    }
}

/// `trunc(100 · sigmoid(delta / 1000))`: the FGD score of a fragmentation decrease `delta`.
pub fn fgd_score(delta: f64) -> i64 {
    let s = 1.0 / (1.0 + (-(delta / 1000.0)).exp());
    (s * 100.0) as i64
}

/// Total order on `f64` fragment values for comparisons (NaN never occurs).
pub fn cmp_f64(a: f64, b: f64) -> Ordering {
    a.partial_cmp(&b).unwrap_or(Ordering::Equal)
}

/// Whole-card compute, as `f64` (helper for ratios).
pub const CARD: f64 = GPU_MILLI as f64;

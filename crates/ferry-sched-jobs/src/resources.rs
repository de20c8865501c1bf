//! Resource vectors for quota: CPU (milli-cores), memory (MiB), GPU compute (milli: 1000 =
//! one whole card, so fractions count) and GPU memory (MiB).

use std::fmt;
use std::ops::{Add, AddAssign};

use ferry_sched_core::PodRequest;

/// One resource a queue is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// CPU, milli-cores.
    Cpu,
    /// Memory, MiB.
    Memory,
    /// GPU compute, thousandths of a card.
    Gpu,
    /// GPU memory, MiB.
    GpuMemory,
}

impl Resource {
    /// Every resource, in a fixed order.
    pub const ALL: [Resource; 4] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::Gpu,
        Resource::GpuMemory,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Gpu => "gpu",
            Resource::GpuMemory => "gpu memory",
        }
    }

    /// An amount of this resource in human units ("2.5 GPU", "4 CPU", "1024 MiB memory").
    pub fn format(self, amount: u64) -> String {
        match self {
            Resource::Cpu => format!("{} CPU", thousandths(amount)),
            Resource::Gpu => format!("{} GPU", thousandths(amount)),
            Resource::Memory => format!("{amount} MiB memory"),
            Resource::GpuMemory => format!("{amount} MiB GPU memory"),
        }
    }

    /// The resources that a job needing `request` competes for first: GPU compute and GPU
    /// memory for GPU jobs, CPU and memory for the others (reclaim takes back only these).
    pub fn primary(request: &Resources) -> &'static [Resource] {
        if request.gpu_milli > 0 || request.gpu_memory_mib > 0 {
            &[Resource::Gpu, Resource::GpuMemory]
        } else {
            &[Resource::Cpu, Resource::Memory]
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn thousandths(v: u64) -> String {
    if v.is_multiple_of(1000) {
        format!("{}", v / 1000)
    } else {
        let s = format!("{}.{:03}", v / 1000, v % 1000);
        s.trim_end_matches('0').to_string()
    }
}

/// An amount of every resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Resources {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// GPU compute, thousandths of a card.
    pub gpu_milli: u64,
    /// GPU memory, MiB.
    pub gpu_memory_mib: u64,
}

impl Resources {
    /// Nothing.
    pub const ZERO: Resources = Resources {
        cpu_milli: 0,
        memory_mib: 0,
        gpu_milli: 0,
        gpu_memory_mib: 0,
    };

    /// An amount from its four parts.
    pub fn new(cpu_milli: u64, memory_mib: u64, gpu_milli: u64, gpu_memory_mib: u64) -> Self {
        Resources {
            cpu_milli,
            memory_mib,
            gpu_milli,
            gpu_memory_mib,
        }
    }

    /// Only GPU compute (`gpus` whole cards).
    pub fn gpus(gpus: u64) -> Self {
        Resources {
            gpu_milli: gpus * 1000,
            ..Resources::ZERO
        }
    }

    /// What a pod request counts against quota: its CPU and memory, `count × milli` GPU
    /// compute and `count × memory` GPU memory (the request, not the card it lands on).
    pub fn of_pod(pod: &PodRequest) -> Self {
        Resources {
            cpu_milli: pod.cpu_milli,
            memory_mib: pod.memory_mib,
            gpu_milli: pod.gpu.total_milli() as u64,
            gpu_memory_mib: pod.gpu.count as u64 * pod.gpu.memory_mib as u64,
        }
    }

    /// The amount of one resource.
    pub fn get(&self, r: Resource) -> u64 {
        match r {
            Resource::Cpu => self.cpu_milli,
            Resource::Memory => self.memory_mib,
            Resource::Gpu => self.gpu_milli,
            Resource::GpuMemory => self.gpu_memory_mib,
        }
    }

    /// The amount of one resource, mutably.
    pub fn get_mut(&mut self, r: Resource) -> &mut u64 {
        match r {
            Resource::Cpu => &mut self.cpu_milli,
            Resource::Memory => &mut self.memory_mib,
            Resource::Gpu => &mut self.gpu_milli,
            Resource::GpuMemory => &mut self.gpu_memory_mib,
        }
    }

    /// Per-resource subtraction, stopping at zero.
    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.saturating_sub(other.cpu_milli),
            memory_mib: self.memory_mib.saturating_sub(other.memory_mib),
            gpu_milli: self.gpu_milli.saturating_sub(other.gpu_milli),
            gpu_memory_mib: self.gpu_memory_mib.saturating_sub(other.gpu_memory_mib),
        }
    }

    /// Per-resource minimum.
    pub fn min(&self, other: &Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli.min(other.cpu_milli),
            memory_mib: self.memory_mib.min(other.memory_mib),
            gpu_milli: self.gpu_milli.min(other.gpu_milli),
            gpu_memory_mib: self.gpu_memory_mib.min(other.gpu_memory_mib),
        }
    }

    /// True when every resource is at most the other's.
    pub fn fits_within(&self, other: &Resources) -> bool {
        Resource::ALL.iter().all(|&r| self.get(r) <= other.get(r))
    }

    /// True when every resource is zero.
    pub fn is_zero(&self) -> bool {
        *self == Resources::ZERO
    }
}

impl Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            cpu_milli: self.cpu_milli + o.cpu_milli,
            memory_mib: self.memory_mib + o.memory_mib,
            gpu_milli: self.gpu_milli + o.gpu_milli,
            gpu_memory_mib: self.gpu_memory_mib + o.gpu_memory_mib,
        }
    }
}

impl AddAssign for Resources {
    fn add_assign(&mut self, o: Resources) {
        *self = *self + o;
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = Resource::ALL
            .iter()
            .filter(|&&r| self.get(r) > 0)
            .map(|&r| r.format(self.get(r)))
            .collect();
        if parts.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Per resource, how far above its guarantee a queue may go (`None`: no limit of its own;
/// its parent's limit still applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Limits {
    /// CPU, milli-cores.
    pub cpu_milli: Option<u64>,
    /// Memory, MiB.
    pub memory_mib: Option<u64>,
    /// GPU compute, thousandths.
    pub gpu_milli: Option<u64>,
    /// GPU memory, MiB.
    pub gpu_memory_mib: Option<u64>,
}

impl Limits {
    /// No limit on any resource.
    pub const NONE: Limits = Limits {
        cpu_milli: None,
        memory_mib: None,
        gpu_milli: None,
        gpu_memory_mib: None,
    };

    /// The same limit on every resource, from an amount.
    pub fn all(amount: Resources) -> Self {
        Limits {
            cpu_milli: Some(amount.cpu_milli),
            memory_mib: Some(amount.memory_mib),
            gpu_milli: Some(amount.gpu_milli),
            gpu_memory_mib: Some(amount.gpu_memory_mib),
        }
    }

    /// The limit on one resource.
    pub fn get(&self, r: Resource) -> Option<u64> {
        match r {
            Resource::Cpu => self.cpu_milli,
            Resource::Memory => self.memory_mib,
            Resource::Gpu => self.gpu_milli,
            Resource::GpuMemory => self.gpu_memory_mib,
        }
    }
}

/// Per-resource fair-share weights (a queue with twice the weight converges to twice the
/// share of that resource).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// CPU weight.
    pub cpu: f64,
    /// Memory weight.
    pub memory: f64,
    /// GPU weight.
    pub gpu: f64,
    /// GPU memory weight.
    pub gpu_memory: f64,
}

impl Weights {
    /// The same weight for every resource.
    pub fn uniform(w: f64) -> Self {
        Weights {
            cpu: w,
            memory: w,
            gpu: w,
            gpu_memory: w,
        }
    }

    /// The weight of one resource.
    pub fn get(&self, r: Resource) -> f64 {
        match r {
            Resource::Cpu => self.cpu,
            Resource::Memory => self.memory,
            Resource::Gpu => self.gpu,
            Resource::GpuMemory => self.gpu_memory,
        }
    }
}

impl Default for Weights {
    fn default() -> Self {
        Weights::uniform(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sched_core::{GpuRequest, ModelSet};

    #[test]
    fn pod_resources_count_fractions_and_card_memory() {
        let pod = PodRequest::new(500, 1024, GpuRequest::shared(250, 4096), ModelSet::ANY);
        assert_eq!(
            Resources::of_pod(&pod),
            Resources::new(500, 1024, 250, 4096)
        );
        let pod = PodRequest::new(0, 0, GpuRequest::whole(4), ModelSet::ANY);
        assert_eq!(Resources::of_pod(&pod), Resources::gpus(4));
    }

    #[test]
    fn display_is_human() {
        assert_eq!(
            Resources::new(2500, 1024, 1500, 0).to_string(),
            "2.5 CPU, 1024 MiB memory, 1.5 GPU"
        );
        assert_eq!(Resources::ZERO.to_string(), "nothing");
        assert_eq!(Resource::Gpu.format(8000), "8 GPU");
    }
}

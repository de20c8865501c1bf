//! The cluster model: GPU models, node specifications and pod requests.
//!
//! Units everywhere: CPU in milli-cores, memory in MiB, GPU compute in thousandths of one
//! card (`milli`, every card has capacity [`GPU_MILLI`]).

use std::collections::HashMap;

/// Compute capacity of one GPU card, in thousandths of a card.
pub const GPU_MILLI: u16 = 1000;

/// The most GPU cards one node may carry, and one pod may ask for: the one limit of the
/// whole scheduler (per-card arrays are this long).
pub const MAX_CARDS: usize = 16;

/// Errors raised when building the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// More distinct GPU model names than a [`ModelSet`] can hold.
    #[error("too many distinct GPU models (at most {max})")]
    TooManyModels {
        /// The limit.
        max: usize,
    },
    /// A node declares more cards than [`MAX_CARDS`].
    #[error("node {node} has {cards} GPU cards, more than the supported {max}")]
    TooManyCards {
        /// Node name.
        node: String,
        /// Cards declared.
        cards: usize,
        /// The limit.
        max: usize,
    },
    /// A pod request is not well formed.
    #[error("invalid pod request: {0}")]
    InvalidRequest(&'static str),
    /// A node with this name already exists.
    #[error("node {0} already exists")]
    DuplicateNode(String),
}

/// Interned GPU model name (index into a [`ModelRegistry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModelId(pub u8);

/// A set of GPU models, as a bit mask. The empty set means "any model".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct ModelSet(pub u64);

impl ModelSet {
    /// The unconstrained set: every model is allowed.
    pub const ANY: ModelSet = ModelSet(0);

    /// A set holding one model.
    pub fn only(model: ModelId) -> Self {
        ModelSet(1u64 << model.0)
    }

    /// Adds a model to the set.
    pub fn insert(&mut self, model: ModelId) {
        self.0 |= 1u64 << model.0;
    }

    /// True when the set does not constrain the model.
    pub fn is_any(self) -> bool {
        self.0 == 0
    }

    /// True when a card of `model` (or a node without a model, `None`) is allowed.
    pub fn allows(self, model: Option<ModelId>) -> bool {
        match model {
            _ if self.0 == 0 => true,
            Some(m) => self.0 & (1u64 << m.0) != 0,
            None => false,
        }
    }
}

/// The most distinct GPU models known at once (the bits of a [`ModelSet`]).
pub const MAX_MODELS: usize = 64;

/// Interns GPU model names into small ids. Names no longer used can be forgotten
/// ([`ModelRegistry::retain`]); their ids are then given to new names.
#[derive(Debug, Clone, Default)]
pub struct ModelRegistry {
    /// By id; `None` for a forgotten name whose id is free.
    names: Vec<Option<String>>,
    ids: HashMap<String, ModelId>,
}

impl ModelRegistry {
    /// The id of `name`, registering it when new; fails when [`MAX_MODELS`] names are known.
    pub fn intern(&mut self, name: &str) -> Result<ModelId, ModelError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        let slot = match self.names.iter().position(Option::is_none) {
            Some(free) => free,
            None if self.names.len() < MAX_MODELS => {
                self.names.push(None);
                self.names.len() - 1
            }
            None => return Err(ModelError::TooManyModels { max: MAX_MODELS }),
        };
        let id = ModelId(slot as u8);
        self.names[slot] = Some(name.to_string());
        self.ids.insert(name.to_string(), id);
        Ok(id)
    }

    /// The id of `name`, if registered.
    pub fn get(&self, name: &str) -> Option<ModelId> {
        self.ids.get(name).copied()
    }

    /// The name of a registered model (empty for a forgotten one).
    pub fn name(&self, id: ModelId) -> &str {
        self.names
            .get(id.0 as usize)
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }

    /// How many names are registered.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when no name is registered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Forgets every model whose id `keep` refuses; their ids become free for new names.
    /// Callers keep every id still held by a node or request (a freed id may come back
    /// with another name).
    pub fn retain(&mut self, mut keep: impl FnMut(ModelId) -> bool) {
        for (i, slot) in self.names.iter_mut().enumerate() {
            if slot.is_some()
                && !keep(ModelId(i as u8))
                && let Some(name) = slot.take()
            {
                self.ids.remove(&name);
            }
        }
        while self.names.last().is_some_and(Option::is_none) {
            self.names.pop();
        }
    }

    /// Parses a `|`-separated list of model names ("" = any model), interning each.
    pub fn parse_set(&mut self, spec: &str) -> Result<ModelSet, ModelError> {
        let mut set = ModelSet::ANY;
        for name in spec.split('|').map(str::trim).filter(|s| !s.is_empty()) {
            set.insert(self.intern(name)?);
        }
        Ok(set)
    }

    /// The names in a set, `|`-joined (empty for "any").
    pub fn format_set(&self, set: ModelSet) -> String {
        self.names
            .iter()
            .enumerate()
            .filter(|(i, _)| set.0 & (1u64 << i) != 0)
            .filter_map(|(_, n)| n.as_deref())
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// Taint effect, as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaintEffect {
    /// Pods without a matching toleration are not placed.
    NoSchedule,
    /// Soft preference; the core treats it as no constraint.
    PreferNoSchedule,
    /// Like `NoSchedule` for placement.
    NoExecute,
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: TaintEffect,
}

/// A pod toleration. `value: None` tolerates any value of the key (operator `Exists`);
/// `key: None` with `value: None` tolerates every taint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Toleration {
    /// Taint key to match, or every key.
    pub key: Option<String>,
    /// Value to match exactly, or any value.
    pub value: Option<String>,
    /// Effect to match, or every effect.
    pub effect: Option<TaintEffect>,
}

impl Toleration {
    /// True when this toleration tolerates `taint`.
    pub fn tolerates(&self, taint: &Taint) -> bool {
        self.key.as_ref().is_none_or(|k| *k == taint.key)
            && self.value.as_ref().is_none_or(|v| *v == taint.value)
            && self.effect.is_none_or(|e| e == taint.effect)
    }
}

/// One GPU card of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardSpec {
    /// Card memory in MiB (0 when unknown: memory is then never constraining).
    pub memory_mib: u32,
    /// Bit mask of the card indices this card has a direct link (NVLink) to.
    pub nvlink_peers: u32,
}

/// A node as declared: capacities and attributes, never changed by placements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Unique node name.
    pub name: String,
    /// CPU capacity, milli-cores.
    pub cpu_milli: u64,
    /// Memory capacity, MiB.
    pub memory_mib: u64,
    /// Most pods the node accepts.
    pub max_pods: u32,
    /// Node labels, matched by pod node selectors.
    pub labels: Vec<(String, String)>,
    /// Node taints.
    pub taints: Vec<Taint>,
    /// Model of the node's GPU cards (`None` for CPU-only nodes).
    pub gpu_model: Option<ModelId>,
    /// The cards, by index.
    pub cards: Vec<CardSpec>,
}

impl NodeSpec {
    /// A node with `gpus` identical cards of `model` (memory unknown) and no labels.
    pub fn simple(
        name: impl Into<String>,
        cpu_milli: u64,
        memory_mib: u64,
        model: Option<ModelId>,
        gpus: usize,
    ) -> Self {
        NodeSpec {
            name: name.into(),
            cpu_milli,
            memory_mib,
            max_pods: 1001,
            labels: Vec::new(),
            taints: Vec::new(),
            gpu_model: model,
            cards: vec![
                CardSpec {
                    memory_mib: 0,
                    nvlink_peers: 0
                };
                gpus
            ],
        }
    }

    /// Number of GPU cards.
    pub fn gpu_count(&self) -> usize {
        self.cards.len()
    }
}

/// The GPU part of a pod request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct GpuRequest {
    /// Number of cards (0 = CPU-only pod).
    pub count: u8,
    /// Compute per card, thousandths (1000 = a whole card).
    pub milli: u16,
    /// Card memory per card in MiB (0 = no memory request).
    pub memory_mib: u32,
}

impl GpuRequest {
    /// No GPU.
    pub const NONE: GpuRequest = GpuRequest {
        count: 0,
        milli: 0,
        memory_mib: 0,
    };

    /// `count` whole cards.
    pub fn whole(count: u8) -> Self {
        GpuRequest {
            count,
            milli: GPU_MILLI,
            memory_mib: 0,
        }
    }

    /// A fraction of one card.
    pub fn shared(milli: u16, memory_mib: u32) -> Self {
        GpuRequest {
            count: 1,
            milli,
            memory_mib,
        }
    }

    /// True when the pod asks for any GPU.
    pub fn is_gpu(self) -> bool {
        self.count > 0
    }

    /// True when the pod asks for whole cards.
    pub fn is_whole(self) -> bool {
        self.count > 0 && self.milli == GPU_MILLI
    }

    /// True when the pod asks for part of one card.
    pub fn is_shared(self) -> bool {
        self.count == 1 && self.milli < GPU_MILLI
    }

    /// Total compute asked for, in thousandths of a card.
    pub fn total_milli(self) -> u32 {
        self.count as u32 * self.milli as u32
    }
}

/// What a pod asks for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodRequest {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// GPU cards.
    pub gpu: GpuRequest,
    /// Allowed GPU models (`ANY` = no constraint). Only meaningful for GPU pods.
    pub gpu_models: ModelSet,
    /// Labels the node must carry.
    pub node_selector: Vec<(String, String)>,
    /// Taints the pod tolerates.
    pub tolerations: Vec<Toleration>,
}

impl PodRequest {
    /// A pod without selector or tolerations.
    pub fn new(cpu_milli: u64, memory_mib: u64, gpu: GpuRequest, gpu_models: ModelSet) -> Self {
        PodRequest {
            cpu_milli,
            memory_mib,
            gpu,
            gpu_models,
            node_selector: Vec::new(),
            tolerations: Vec::new(),
        }
    }

    /// Checks that the request is well formed.
    pub fn validate(&self) -> Result<(), ModelError> {
        let g = self.gpu;
        if g.count == 0 && (g.milli != 0 || g.memory_mib != 0) {
            return Err(ModelError::InvalidRequest(
                "GPU milli or memory without a GPU count",
            ));
        }
        if g.count > 0 && g.milli == 0 && g.memory_mib == 0 {
            return Err(ModelError::InvalidRequest(
                "a GPU pod must ask for compute (milli) or card memory",
            ));
        }
        if g.milli > GPU_MILLI {
            return Err(ModelError::InvalidRequest("GPU milli above 1000 per card"));
        }
        if g.count > 1 && g.milli != GPU_MILLI {
            return Err(ModelError::InvalidRequest(
                "a multi-GPU pod must ask for whole cards (1000 milli each)",
            ));
        }
        if g.count as usize > MAX_CARDS {
            return Err(ModelError::InvalidRequest(
                "more GPU cards than any node has",
            ));
        }
        Ok(())
    }

    /// The scheduling class of the pod: every field a cached score may depend on.
    pub fn class_key(&self) -> ClassKey {
        ClassKey {
            cpu_milli: self.cpu_milli,
            gpu: self.gpu,
            gpu_models: self.gpu_models,
        }
    }
}

/// What node scores may depend on: CPU, GPU and model constraint (not memory, selectors or
/// tolerations, which only filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClassKey {
    /// CPU, milli-cores.
    pub cpu_milli: u64,
    /// GPU request.
    pub gpu: GpuRequest,
    /// Allowed models.
    pub gpu_models: ModelSet,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgotten_models_free_their_ids() {
        let mut reg = ModelRegistry::default();
        let ids: Vec<ModelId> = (0..MAX_MODELS)
            .map(|i| reg.intern(&format!("m{i}")).unwrap())
            .collect();
        assert_eq!(
            reg.intern("one-too-many"),
            Err(ModelError::TooManyModels { max: MAX_MODELS })
        );
        // Keep m3 only: every other id is free again, m3 keeps its id and name.
        reg.retain(|id| id == ids[3]);
        assert_eq!(reg.len(), 1);
        assert_eq!(reg.get("m3"), Some(ids[3]));
        assert_eq!(reg.get("m4"), None);
        let fresh: Vec<ModelId> = (0..MAX_MODELS - 1)
            .map(|i| reg.intern(&format!("new{i}")).unwrap())
            .collect();
        assert!(!fresh.contains(&ids[3]));
        assert_eq!(reg.name(ids[3]), "m3");
        assert!(reg.intern("again-too-many").is_err());
        let set = ModelSet::only(ids[3]);
        assert_eq!(reg.format_set(set), "m3");
    }
}

//! Cluster state: what is left on every node, the placed pods, and an undo journal.
//!
//! Every mutation stamps the touched node with a fresh value of a cluster-wide clock, so
//! anything cached per node (scores, fragmentation) is valid exactly while the stamp is
//! unchanged — including after a rollback, which also stamps.

use std::collections::HashMap;

use crate::model::{
    GPU_MILLI, GpuRequest, MAX_CARDS, ModelError, ModelId, ModelRegistry, NodeSpec, PodRequest,
};

/// Index of a node in a [`Cluster`]; stable for the node's life.
pub type NodeId = u32;

/// Handle of a placed pod, returned by [`Cluster::bind`] and given to [`Cluster::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodHandle(pub u32);

/// A set of card indices of one node (bit mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CardSet(pub u32);

impl CardSet {
    /// The empty set.
    pub const EMPTY: CardSet = CardSet(0);

    /// Adds card `index`.
    pub fn insert(&mut self, index: usize) {
        self.0 |= 1 << index;
    }

    /// True when card `index` is in the set.
    pub fn contains(self, index: usize) -> bool {
        self.0 & (1 << index) != 0
    }

    /// Number of cards.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// True when no card is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Card indices in increasing order.
    pub fn indices(self) -> impl Iterator<Item = usize> {
        (0..32).filter(move |i| self.0 & (1 << i) != 0)
    }
}

/// What is left on one node. Small and `Copy`, so a snapshot or an undo entry is cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// CPU left, milli-cores.
    pub cpu_left: u64,
    /// Memory left, MiB.
    pub memory_left: u64,
    /// Pods on the node.
    pub pods: u32,
    /// Number of cards (copied from the spec).
    pub cards: u8,
    /// Compute left per card, thousandths.
    pub free_milli: [u16; MAX_CARDS],
    /// Card memory left per card, MiB (0 for cards of unknown memory).
    pub free_memory: [u32; MAX_CARDS],
    /// GPU pods on the node by kind: index 0 = sharing pods, k = pods with k whole cards.
    pub gpu_pod_kinds: [u16; MAX_CARDS + 1],
}

impl NodeState {
    /// The state of an empty node.
    pub fn empty(spec: &NodeSpec) -> Self {
        let mut free_milli = [0; MAX_CARDS];
        let mut free_memory = [0; MAX_CARDS];
        for (i, card) in spec.cards.iter().enumerate() {
            free_milli[i] = GPU_MILLI;
            free_memory[i] = card.memory_mib;
        }
        NodeState {
            cpu_left: spec.cpu_milli,
            memory_left: spec.memory_mib,
            pods: 0,
            cards: spec.cards.len() as u8,
            free_milli,
            free_memory,
            gpu_pod_kinds: [0; MAX_CARDS + 1],
        }
    }

    /// Compute left per card, for the node's cards only.
    pub fn free(&self) -> &[u16] {
        &self.free_milli[..self.cards as usize]
    }

    /// Total GPU compute left, thousandths.
    pub fn idle_milli(&self) -> u32 {
        self.free().iter().map(|&f| f as u32).sum()
    }

    /// Number of cards with all their compute left.
    pub fn fully_free_cards(&self) -> usize {
        self.free().iter().filter(|&&f| f == GPU_MILLI).count()
    }

    /// True when card `i` can take `milli` compute and `memory_mib` card memory.
    pub fn card_fits(&self, spec: &NodeSpec, i: usize, milli: u16, memory_mib: u32) -> bool {
        self.free_milli[i] >= milli
            && (memory_mib == 0
                || spec.cards[i].memory_mib == 0
                || self.free_memory[i] >= memory_mib)
    }

    /// True when card `i` is untouched (all compute and memory left).
    pub fn card_untouched(&self, spec: &NodeSpec, i: usize) -> bool {
        self.free_milli[i] == GPU_MILLI && self.free_memory[i] == spec.cards[i].memory_mib
    }

    /// Number of cards that could each take one card of `gpu`.
    pub fn cards_fitting(&self, spec: &NodeSpec, gpu: GpuRequest) -> usize {
        if gpu.is_whole() {
            (0..self.cards as usize)
                .filter(|&i| self.card_untouched(spec, i))
                .count()
        } else {
            (0..self.cards as usize)
                .filter(|&i| self.card_fits(spec, i, gpu.milli, gpu.memory_mib))
                .count()
        }
    }

    /// The state after taking `pod` with `cards` (no check).
    pub fn after(&self, spec: &NodeSpec, pod: &PodRequest, cards: CardSet) -> NodeState {
        let mut s = *self;
        s.cpu_left -= pod.cpu_milli;
        s.memory_left -= pod.memory_mib;
        s.pods += 1;
        for i in cards.indices() {
            if pod.gpu.is_whole() {
                s.free_milli[i] = 0;
                s.free_memory[i] = 0;
            } else {
                s.free_milli[i] -= pod.gpu.milli;
                if spec.cards[i].memory_mib != 0 {
                    s.free_memory[i] -= pod.gpu.memory_mib;
                }
            }
        }
        if pod.gpu.is_gpu() {
            s.gpu_pod_kinds[pod_kind(pod.gpu)] += 1;
        }
        s
    }
}

/// Index into [`NodeState::gpu_pod_kinds`] for a GPU request.
pub fn pod_kind(gpu: GpuRequest) -> usize {
    if gpu.is_whole() {
        gpu.count as usize
    } else {
        0
    }
}

/// What the built-in filters read, packed per node so a scan over all nodes stays in cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeSummary {
    /// CPU left.
    pub cpu_left: u64,
    /// Memory left.
    pub memory_left: u64,
    /// Pods the node can still take.
    pub pod_room: u32,
    /// Largest compute left on one card.
    pub max_free_milli: u16,
    /// Untouched cards.
    pub untouched_cards: u8,
    /// GPU model id + 1 (0 = no GPU).
    pub model: u8,
}

impl NodeSummary {
    /// The summary of a node.
    pub fn of(spec: &NodeSpec, st: &NodeState) -> Self {
        NodeSummary {
            cpu_left: st.cpu_left,
            memory_left: st.memory_left,
            pod_room: spec.max_pods.saturating_sub(st.pods),
            max_free_milli: st.free().iter().copied().max().unwrap_or(0),
            untouched_cards: (0..st.cards as usize)
                .filter(|&i| st.card_untouched(spec, i))
                .count() as u8,
            model: if spec.cards.is_empty() {
                0
            } else {
                spec.gpu_model.map_or(0, |m| m.0 + 1)
            },
        }
    }
}

/// A node: its spec and its state.
#[derive(Debug, Clone)]
pub struct Node {
    /// Declared capacities and attributes.
    pub spec: NodeSpec,
    /// What is left.
    pub state: NodeState,
}

/// A placed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// Node it is on.
    pub node: NodeId,
    /// CPU taken.
    pub cpu_milli: u64,
    /// Memory taken.
    pub memory_mib: u64,
    /// GPU request.
    pub gpu: GpuRequest,
    /// Cards it uses.
    pub cards: CardSet,
}

/// Errors of cluster mutations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The model rejected the input.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No live node has this id.
    #[error("no node with id {0}")]
    NoSuchNode(NodeId),
    /// No placed pod has this handle.
    #[error("no placed pod with handle {0:?}")]
    NoSuchPod(PodHandle),
    /// The pod does not fit the node with these cards.
    #[error("pod does not fit node {node}: {reason}")]
    DoesNotFit {
        /// Node name.
        node: String,
        /// Why.
        reason: &'static str,
    },
    /// A node still holding pods cannot be removed.
    #[error("node {0} still holds {1} pods")]
    NodeNotEmpty(String, u32),
    /// A spec update would shrink a node below what it holds.
    #[error("the new spec of node {0} does not cover the pods it holds")]
    SpecTooSmall(String),
}

#[derive(Debug, Clone)]
enum Undo {
    State(NodeId, NodeState),
    Alloc(u32, Option<Allocation>),
    Alive(NodeId, bool),
    Spec(NodeId, Box<NodeSpec>),
}

/// Savepoint of the undo journal (see [`Cluster::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint(usize);

/// The whole cluster: nodes, placed pods, and an optional undo journal.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    models: ModelRegistry,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    stamps: Vec<u64>,
    summaries: Vec<NodeSummary>,
    clock: u64,
    by_name: HashMap<String, NodeId>,
    allocations: Vec<Option<Allocation>>,
    free_handles: Vec<u32>,
    journal: Option<Vec<Undo>>,
    tainted: usize,
}

impl Cluster {
    /// An empty cluster.
    pub fn new() -> Self {
        Cluster::default()
    }

    /// The GPU model names.
    pub fn models(&self) -> &ModelRegistry {
        &self.models
    }

    /// The GPU model names, for interning new ones.
    pub fn models_mut(&mut self) -> &mut ModelRegistry {
        &mut self.models
    }

    /// Interns a GPU model name.
    pub fn intern_model(&mut self, name: &str) -> Result<ModelId, ModelError> {
        self.models.intern(name)
    }

    fn recount_taints(&mut self) {
        self.tainted = self
            .nodes()
            .filter(|(_, n)| !n.spec.taints.is_empty())
            .count();
    }

    /// True when some live node has a taint.
    pub fn has_taints(&self) -> bool {
        self.tainted > 0
    }

    fn tick(&mut self, id: NodeId) {
        self.clock += 1;
        self.stamps[id as usize] = self.clock;
        let node = &self.nodes[id as usize];
        self.summaries[id as usize] = NodeSummary::of(&node.spec, &node.state);
    }

    fn log(&mut self, entry: impl FnOnce() -> Undo) {
        if let Some(j) = self.journal.as_mut() {
            j.push(entry());
        }
    }

    /// Adds a node; returns its id.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, StateError> {
        if spec.cards.len() > MAX_CARDS {
            return Err(ModelError::TooManyCards {
                node: spec.name.clone(),
                cards: spec.cards.len(),
                max: MAX_CARDS,
            }
            .into());
        }
        if self.by_name.contains_key(&spec.name) {
            return Err(ModelError::DuplicateNode(spec.name).into());
        }
        let id = self.nodes.len() as NodeId;
        self.by_name.insert(spec.name.clone(), id);
        let state = NodeState::empty(&spec);
        self.nodes.push(Node { spec, state });
        self.alive.push(true);
        self.stamps.push(0);
        self.summaries.push(NodeSummary::default());
        self.tick(id);
        self.log(|| Undo::Alive(id, false));
        self.recount_taints();
        Ok(id)
    }

    /// Removes an empty node (its id is never reused).
    pub fn remove_node(&mut self, id: NodeId) -> Result<(), StateError> {
        let node = self.node(id).ok_or(StateError::NoSuchNode(id))?;
        if node.state.pods > 0 {
            return Err(StateError::NodeNotEmpty(
                node.spec.name.clone(),
                node.state.pods,
            ));
        }
        let name = node.spec.name.clone();
        self.alive[id as usize] = false;
        self.by_name.remove(&name);
        self.tick(id);
        self.log(|| Undo::Alive(id, true));
        self.recount_taints();
        Ok(())
    }

    /// Replaces a node's labels, taints, capacities or cards, keeping its pods. The new spec
    /// must keep the name, the card count, and cover what the node holds.
    pub fn update_node(&mut self, id: NodeId, spec: NodeSpec) -> Result<(), StateError> {
        let node = self.node(id).ok_or(StateError::NoSuchNode(id))?;
        let old = &node.spec;
        let used_cpu = old.cpu_milli - node.state.cpu_left;
        let used_mem = old.memory_mib - node.state.memory_left;
        if spec.name != old.name
            || spec.cards.len() != old.cards.len()
            || spec.cpu_milli < used_cpu
            || spec.memory_mib < used_mem
            || spec.max_pods < node.state.pods
            || spec
                .cards
                .iter()
                .zip(&old.cards)
                .enumerate()
                .any(|(i, (new, old))| {
                    let used = old.memory_mib - node.state.free_memory[i];
                    new.memory_mib < used
                })
        {
            return Err(StateError::SpecTooSmall(spec.name));
        }
        let mut state = node.state;
        state.cpu_left = spec.cpu_milli - used_cpu;
        state.memory_left = spec.memory_mib - used_mem;
        for (i, (new, old)) in spec.cards.iter().zip(&old.cards).enumerate() {
            let used = old.memory_mib - state.free_memory[i];
            state.free_memory[i] = new.memory_mib - used;
        }
        let prev_state = node.state;
        let prev_spec = std::mem::replace(&mut self.nodes[id as usize].spec, spec);
        self.nodes[id as usize].state = state;
        self.tick(id);
        self.log(|| Undo::State(id, prev_state));
        self.log(|| Undo::Spec(id, Box::new(prev_spec)));
        self.recount_taints();
        Ok(())
    }

    /// Node by id, if alive.
    pub fn node(&self, id: NodeId) -> Option<&Node> {
        if *self.alive.get(id as usize)? {
            Some(&self.nodes[id as usize])
        } else {
            None
        }
    }

    /// Node id by name.
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// Number of node ids ever given (live or removed).
    pub fn node_slots(&self) -> usize {
        self.nodes.len()
    }

    /// True when the node id is alive.
    pub fn is_alive(&self, id: NodeId) -> bool {
        self.alive.get(id as usize).copied().unwrap_or(false)
    }

    /// Every slot, live or not, by id (removed ones have `alive = false`).
    pub(crate) fn raw_nodes(&self) -> (&[Node], &[bool], &[u64], &[NodeSummary]) {
        (&self.nodes, &self.alive, &self.stamps, &self.summaries)
    }

    /// Live nodes with their ids.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| self.alive[*i])
            .map(|(i, n)| (i as NodeId, n))
    }

    /// Change stamp of a node: equal stamps mean an unchanged node.
    pub fn stamp(&self, id: NodeId) -> u64 {
        self.stamps[id as usize]
    }

    /// Checks that `pod` fits `node` on exactly `cards`.
    pub fn check_fit(
        &self,
        id: NodeId,
        pod: &PodRequest,
        cards: CardSet,
    ) -> Result<(), StateError> {
        let node = self.node(id).ok_or(StateError::NoSuchNode(id))?;
        let (spec, st) = (&node.spec, &node.state);
        let fail = |reason| {
            Err(StateError::DoesNotFit {
                node: spec.name.clone(),
                reason,
            })
        };
        if st.cpu_left < pod.cpu_milli {
            return fail("insufficient cpu");
        }
        if st.memory_left < pod.memory_mib {
            return fail("insufficient memory");
        }
        if st.pods >= spec.max_pods {
            return fail("too many pods");
        }
        if cards.len() != pod.gpu.count as usize {
            return fail("card count differs from the request");
        }
        if pod.gpu.is_gpu() && !pod.gpu_models.allows(spec.gpu_model) {
            return fail("GPU model not allowed");
        }
        for i in cards.indices() {
            if i >= st.cards as usize {
                return fail("no such card");
            }
            let ok = if pod.gpu.is_whole() {
                st.card_untouched(spec, i)
            } else {
                st.card_fits(spec, i, pod.gpu.milli, pod.gpu.memory_mib)
            };
            if !ok {
                return fail("card too full");
            }
        }
        Ok(())
    }

    /// Places `pod` on node `id` using `cards`; returns the pod's handle.
    pub fn bind(
        &mut self,
        id: NodeId,
        pod: &PodRequest,
        cards: CardSet,
    ) -> Result<PodHandle, StateError> {
        self.check_fit(id, pod, cards)?;
        let node = &mut self.nodes[id as usize];
        let prev = node.state;
        node.state = prev.after(&node.spec, pod, cards);
        let alloc = Allocation {
            node: id,
            cpu_milli: pod.cpu_milli,
            memory_mib: pod.memory_mib,
            gpu: pod.gpu,
            cards,
        };
        let handle = match self.free_handles.pop() {
            Some(h) => {
                self.allocations[h as usize] = Some(alloc);
                h
            }
            None => {
                self.allocations.push(Some(alloc));
                (self.allocations.len() - 1) as u32
            }
        };
        self.tick(id);
        self.log(|| Undo::State(id, prev));
        self.log(|| Undo::Alloc(handle, None));
        Ok(PodHandle(handle))
    }

    /// Removes a placed pod and gives its resources back (a departure).
    pub fn release(&mut self, handle: PodHandle) -> Result<Allocation, StateError> {
        let alloc = self
            .allocations
            .get_mut(handle.0 as usize)
            .and_then(Option::take)
            .ok_or(StateError::NoSuchPod(handle))?;
        self.free_handles.push(handle.0);
        let id = alloc.node;
        let node = &mut self.nodes[id as usize];
        let prev = node.state;
        let st = &mut node.state;
        st.cpu_left += alloc.cpu_milli;
        st.memory_left += alloc.memory_mib;
        st.pods -= 1;
        for i in alloc.cards.indices() {
            if alloc.gpu.is_whole() {
                st.free_milli[i] = GPU_MILLI;
                st.free_memory[i] = node.spec.cards[i].memory_mib;
            } else {
                st.free_milli[i] += alloc.gpu.milli;
                if node.spec.cards[i].memory_mib != 0 {
                    st.free_memory[i] += alloc.gpu.memory_mib;
                }
            }
        }
        if alloc.gpu.is_gpu() {
            st.gpu_pod_kinds[pod_kind(alloc.gpu)] -= 1;
        }
        self.tick(id);
        self.log(|| Undo::State(id, prev));
        let copy = alloc.clone();
        self.log(|| Undo::Alloc(handle.0, Some(copy)));
        Ok(alloc)
    }

    /// The allocation of a placed pod.
    pub fn allocation(&self, handle: PodHandle) -> Option<&Allocation> {
        self.allocations.get(handle.0 as usize)?.as_ref()
    }

    /// Number of placed pods.
    pub fn placed_pods(&self) -> usize {
        self.allocations.len() - self.free_handles.len()
    }

    /// Starts (or nests into) journaling: every mutation from now on can be undone back to
    /// the returned checkpoint with [`Cluster::rollback`].
    pub fn begin(&mut self) -> Checkpoint {
        let j = self.journal.get_or_insert_with(Vec::new);
        Checkpoint(j.len())
    }

    /// Undoes every mutation made since `checkpoint` (assume/forget).
    pub fn rollback(&mut self, checkpoint: Checkpoint) {
        let Some(mut journal) = self.journal.take() else {
            return;
        };
        while journal.len() > checkpoint.0 {
            match journal.pop().expect("journal entry") {
                Undo::State(id, st) => {
                    self.nodes[id as usize].state = st;
                    self.tick(id);
                }
                Undo::Alloc(h, prev) => {
                    let was_free = self.allocations[h as usize].is_none();
                    let now_free = prev.is_none();
                    self.allocations[h as usize] = prev;
                    if now_free && !was_free {
                        self.free_handles.push(h);
                    } else if !now_free && was_free {
                        self.free_handles.retain(|&x| x != h);
                    }
                }
                Undo::Alive(id, alive) => {
                    self.alive[id as usize] = alive;
                    let name = self.nodes[id as usize].spec.name.clone();
                    if alive {
                        self.by_name.insert(name, id);
                    } else {
                        self.by_name.remove(&name);
                    }
                    self.tick(id);
                }
                Undo::Spec(id, spec) => {
                    self.nodes[id as usize].spec = *spec;
                    self.tick(id);
                }
            }
        }
        self.journal = Some(journal);
        self.recount_taints();
    }

    /// Ends journaling and keeps every mutation.
    pub fn commit(&mut self) {
        self.journal = None;
    }

    /// Total GPU cards of live nodes.
    pub fn total_cards(&self) -> usize {
        self.nodes().map(|(_, n)| n.spec.cards.len()).sum()
    }

    /// GPU compute in use over live nodes, thousandths.
    pub fn used_gpu_milli(&self) -> u64 {
        self.nodes()
            .map(|(_, n)| (n.state.cards as u64) * GPU_MILLI as u64 - n.state.idle_milli() as u64)
            .sum()
    }
}

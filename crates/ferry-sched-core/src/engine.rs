//! The placement pipeline: PreFilter → Filter → PreScore → Score (cached per node state)
//! → NormalizeScore → select (rank tie-break) → card assignment.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fmt;

use crate::frag::{TargetWorkload, WorkloadKey};
use crate::framework::{Caching, FilterReason, NodeRanks, Policy, ScoreContext};
use crate::model::{ClassKey, GpuRequest, ModelError, ModelId, ModelSet, PodRequest};
use crate::plugins::Filter;
use crate::state::{CardSet, Cluster, NodeId, NodeSummary, PodHandle, StateError};

/// Most distinct pod classes whose scores are cached (others are scored every time).
pub const MAX_CACHED_CLASSES: usize = 512;

/// Where the placed pod goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Chosen node.
    pub node: NodeId,
    /// Cards of the node the pod gets (empty for CPU-only pods).
    pub cards: CardSet,
    /// The winning score (`None` when only one node was feasible and none was scored).
    pub score: Option<i64>,
    /// Number of feasible nodes.
    pub feasible: u32,
}

/// Why no node can take a pod: how many nodes failed which filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unschedulable {
    /// Live nodes considered.
    pub nodes: u32,
    /// Nodes rejected, per reason (each node counted under its first failing filter),
    /// most frequent first.
    pub reasons: Vec<(FilterReason, u32)>,
}

impl fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available", self.nodes)?;
        for (i, (reason, count)) in self.reasons.iter().enumerate() {
            write!(f, "{} {count} {reason}", if i == 0 { ":" } else { "," })?;
        }
        Ok(())
    }
}

/// Errors of a placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No node passes the filters.
    #[error("{0}")]
    Unschedulable(Unschedulable),
    /// The request is malformed.
    #[error(transparent)]
    InvalidPod(#[from] ModelError),
    /// The card selector found no cards on a node that passed the filters.
    #[error("no card assignment for the pod on node {0}")]
    NoCards(NodeId),
    /// Binding failed.
    #[error(transparent)]
    State(#[from] StateError),
}

/// What the policy knows about the workload to come.
#[derive(Debug, Clone)]
pub enum Knowledge {
    /// Nothing.
    None,
    /// A fixed target workload (e.g. computed from a whole trace, as FGD's paper does).
    Fixed(TargetWorkload),
    /// Learned online from the pods observed so far (see [`Scheduler::observe`]).
    Online(OnlineWorkload),
}

/// A target workload estimated from the pods seen so far, refreshed from time to time.
#[derive(Debug, Clone)]
pub struct OnlineWorkload {
    counts: HashMap<WorkloadKey, u64>,
    seen: u64,
    next_refresh: u64,
    threshold_pct: f64,
    current: TargetWorkload,
}

impl OnlineWorkload {
    /// An empty estimate keeping the most frequent keys up to `threshold_pct` percent of
    /// the pods (100 keeps every key).
    pub fn new(threshold_pct: f64) -> Self {
        OnlineWorkload {
            counts: HashMap::new(),
            seen: 0,
            next_refresh: 1,
            threshold_pct,
            current: TargetWorkload::default(),
        }
    }

    /// Counts one pod; returns true when the estimate was refreshed.
    fn observe(&mut self, key: WorkloadKey) -> bool {
        *self.counts.entry(key).or_insert(0) += 1;
        self.seen += 1;
        if self.seen < self.next_refresh {
            return false;
        }
        // Refresh at 1, 2, 4, ... 256 pods, then every 256 pods.
        self.next_refresh = if self.seen < 256 {
            self.seen * 2
        } else {
            self.seen + 256
        };
        let counts = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        self.current = TargetWorkload::from_counts(counts, self.threshold_pct);
        true
    }

    /// The current estimate.
    pub fn workload(&self) -> &TargetWorkload {
        &self.current
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct CacheEntry {
    stamp: u64,
    score: i64,
}

#[derive(Debug, Default)]
struct CacheLine {
    epoch: u64,
    entries: Vec<CacheEntry>,
}

/// A node's cached score in a [`ClassIndex`]: ordered like the selection (score, then the
/// lowest rank, then the lowest id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ranked {
    score: i64,
    rank: Reverse<u32>,
    node: Reverse<NodeId>,
    stamp: u64,
}

/// Per pod class: the feasible nodes ordered by cached score, kept up to date by rescoring
/// only the nodes whose stamp moved since the class was last placed. Entries of nodes that
/// changed since are dropped when they reach the top.
#[derive(Debug, Default)]
struct ClassIndex {
    epoch: u64,
    built: bool,
    seen_clock: u64,
    heap: BinaryHeap<Ranked>,
    feasible: Vec<bool>,
    feasible_count: u32,
}

/// Counters of the scheduler's work (for benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Decisions made.
    pub decisions: u64,
    /// Node scores computed.
    pub scores_computed: u64,
    /// Node scores served from the cache.
    pub scores_cached: u64,
}

/// The scheduler: a filter chain, a policy, a tie-break and a score cache.
pub struct Scheduler {
    filters: Vec<Filter>,
    policy: Policy,
    ranks: NodeRanks,
    knowledge: Knowledge,
    empty_workload: TargetWorkload,
    epoch: u64,
    classes: HashMap<ClassKey, usize>,
    cache: Vec<CacheLine>,
    active: Vec<usize>,
    feasible: Vec<NodeId>,
    scores: Vec<i64>,
    stats: EngineStats,
    explain_failures: bool,
    score_index: bool,
    indexes: Vec<ClassIndex>,
    set_aside: Vec<Ranked>,
}

/// The built-in filters evaluated on a [`NodeSummary`].
struct SummaryCheck {
    cpu: u64,
    memory: u64,
    resources: bool,
    model: Option<ModelSet>,
    gpu: Option<GpuRequest>,
}

impl SummaryCheck {
    fn new(_pod: &PodRequest) -> Self {
        SummaryCheck {
            cpu: 0,
            memory: 0,
            resources: false,
            model: None,
            gpu: None,
        }
    }

    /// Takes over `filter` when it is a built-in one the summary can answer.
    fn absorbs(&mut self, filter: &Filter, pod: &PodRequest) -> bool {
        match filter {
            Filter::ResourcesFit(_) => {
                self.resources = true;
                self.cpu = pod.cpu_milli;
                self.memory = pod.memory_mib;
                true
            }
            Filter::GpuModel(_) if pod.gpu.is_gpu() => {
                self.model = Some(pod.gpu_models);
                true
            }
            Filter::GpuFit(_) if pod.gpu.is_gpu() && pod.gpu.memory_mib == 0 => {
                self.gpu = Some(pod.gpu);
                true
            }
            _ => false,
        }
    }

    #[inline]
    fn passes(&self, s: &NodeSummary) -> bool {
        if self.resources
            && (s.cpu_left < self.cpu || s.memory_left < self.memory || s.pod_room == 0)
        {
            return false;
        }
        if let Some(models) = self.model
            && (s.model == 0 || !models.allows(Some(ModelId(s.model - 1))))
        {
            return false;
        }
        if let Some(gpu) = self.gpu {
            let ok = if gpu.is_whole() {
                s.untouched_cards >= gpu.count
            } else {
                s.max_free_milli >= gpu.milli
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("policy", &self.policy)
            .field(
                "filters",
                &self.filters.iter().map(Filter::name).collect::<Vec<_>>(),
            )
            .field("stats", &self.stats)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler with the default filter chain, ranks by node id and no workload
    /// knowledge.
    pub fn new(policy: Policy) -> Self {
        Scheduler {
            filters: Filter::default_chain(),
            policy,
            ranks: NodeRanks::by_id(),
            knowledge: Knowledge::None,
            empty_workload: TargetWorkload::default(),
            epoch: 0,
            classes: HashMap::new(),
            cache: Vec::new(),
            active: Vec::new(),
            feasible: Vec::new(),
            scores: Vec::new(),
            stats: EngineStats::default(),
            explain_failures: true,
            score_index: false,
            indexes: Vec::new(),
            set_aside: Vec::new(),
        }
    }

    /// Whether a failed decision counts the failing filters per node (the "why not"; on by
    /// default). Off, failures carry no reasons and cost no second scan.
    pub fn set_explain_failures(&mut self, explain: bool) {
        self.explain_failures = explain;
    }

    /// Whether decisions use a per-class index of nodes ordered by cached score instead of a
    /// scan of every node (off by default). Same decisions, far less work per decision on
    /// large clusters; valid only for policies whose scores are cached per node state
    /// ([`Caching::PerNodeState`]), whose NormalizeScore is a no-op and whose PreScore does
    /// not read the feasible list (FGD and Ferry; it gets an empty list). Clusters with
    /// taints use the scan. With the index, [`Decision::feasible`] counts the nodes that fit
    /// the pod's class (CPU, GPU, model), before its memory and node selector.
    pub fn set_score_index(&mut self, on: bool) {
        self.score_index = on;
    }

    /// Appends a filter to the chain.
    pub fn add_filter(&mut self, filter: Filter) {
        self.filters.push(filter);
    }

    /// Sets the tie-break ranks.
    pub fn set_ranks(&mut self, ranks: NodeRanks) {
        self.ranks = ranks;
    }

    /// Sets what the policy knows about the workload (invalidates cached scores).
    pub fn set_knowledge(&mut self, knowledge: Knowledge) {
        self.knowledge = knowledge;
        self.epoch += 1;
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The workload the policy currently assumes.
    pub fn workload(&self) -> &TargetWorkload {
        match &self.knowledge {
            Knowledge::None => &self.empty_workload,
            Knowledge::Fixed(w) => w,
            Knowledge::Online(o) => o.workload(),
        }
    }

    /// Work counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Tells the scheduler a pod arrived (feeds an online workload estimate).
    pub fn observe(&mut self, cluster: &Cluster, pod: &PodRequest) {
        if let Knowledge::Online(online) = &mut self.knowledge {
            let key = WorkloadKey {
                cpu_milli: pod.cpu_milli,
                gpu_milli: pod.gpu.milli,
                gpu_count: pod.gpu.count,
                models: pod.gpu_models,
                models_text: cluster.models().format_set(pod.gpu_models),
            };
            if online.observe(key) {
                self.epoch += 1;
            }
        }
    }

    fn class_slot(&mut self, pod: &PodRequest) -> Option<usize> {
        let key = pod.class_key();
        if let Some(&slot) = self.classes.get(&key) {
            return Some(slot);
        }
        if self.classes.len() >= MAX_CACHED_CLASSES {
            return None;
        }
        let slot = self.classes.len();
        self.classes.insert(key, slot);
        self.cache.push(CacheLine::default());
        Some(slot)
    }

    /// Counts, per filter reason, the nodes that cannot take `pod` ("why not").
    pub fn explain(&self, cluster: &Cluster, pod: &PodRequest) -> Unschedulable {
        let mut counts: HashMap<FilterReason, u32> = HashMap::new();
        let mut nodes = 0;
        for (_, node) in cluster.nodes() {
            nodes += 1;
            for f in &self.filters {
                if let Err(reason) = f.filter(node, pod) {
                    *counts.entry(reason).or_insert(0) += 1;
                    break;
                }
            }
        }
        let mut reasons: Vec<_> = counts.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        Unschedulable { nodes, reasons }
    }

    /// Chooses a node and cards for `pod` without changing the cluster.
    pub fn decide(
        &mut self,
        cluster: &Cluster,
        pod: &PodRequest,
    ) -> Result<Decision, ScheduleError> {
        pod.validate()?;
        self.stats.decisions += 1;
        let slot = self.class_slot(pod);
        if self.score_index
            && let Some(slot) = slot
            && !cluster.has_taints()
            && self.policy.scorer.caching() == Caching::PerNodeState
        {
            return self.decide_indexed(cluster, pod, slot);
        }
        self.active.clear();
        for (i, f) in self.filters.iter().enumerate() {
            if f.relevant(pod, cluster) {
                self.active.push(i);
            }
        }
        let (nodes, alive, stamps, summaries) = cluster.raw_nodes();
        // The built-in resource, model and GPU filters run on the packed summaries; the
        // others (selectors, taints, custom, card memory) on the full node.
        let mut summary_check = SummaryCheck::new(pod);
        self.active
            .retain(|&fi| !summary_check.absorbs(&self.filters[fi], pod));
        self.feasible.clear();
        'nodes: for (id, node) in nodes.iter().enumerate() {
            if !alive[id] || !summary_check.passes(&summaries[id]) {
                continue;
            }
            for &fi in &self.active {
                if self.filters[fi].filter(node, pod).is_err() {
                    continue 'nodes;
                }
            }
            self.feasible.push(id as NodeId);
        }
        let ctx = ScoreContext {
            cluster,
            workload: match &self.knowledge {
                Knowledge::None => &self.empty_workload,
                Knowledge::Fixed(w) => w,
                Knowledge::Online(o) => o.workload(),
            },
            workload_epoch: self.epoch,
        };
        let (node, score) = match self.feasible.len() {
            0 => {
                let why = if self.explain_failures {
                    self.explain(cluster, pod)
                } else {
                    Unschedulable {
                        nodes: cluster.nodes().count() as u32,
                        reasons: Vec::new(),
                    }
                };
                return Err(ScheduleError::Unschedulable(why));
            }
            1 => (self.feasible[0], None),
            _ => {
                let scorer = &mut self.policy.scorer;
                scorer.pre_score(&ctx, pod, &self.feasible);
                self.scores.clear();
                let line = match (scorer.caching(), slot) {
                    (Caching::PerNodeState, Some(slot)) => {
                        let line = &mut self.cache[slot];
                        if line.epoch != self.epoch {
                            line.epoch = self.epoch;
                            line.entries
                                .iter_mut()
                                .for_each(|e| *e = CacheEntry::default());
                        }
                        if line.entries.len() < nodes.len() {
                            line.entries.resize(nodes.len(), CacheEntry::default());
                        }
                        Some(line)
                    }
                    _ => None,
                };
                match line {
                    Some(line) => {
                        for &id in &self.feasible {
                            let entry = &mut line.entries[id as usize];
                            if entry.stamp == stamps[id as usize] {
                                self.stats.scores_cached += 1;
                            } else {
                                self.stats.scores_computed += 1;
                                entry.score = scorer.score(&ctx, id, &nodes[id as usize], pod);
                                entry.stamp = stamps[id as usize];
                            }
                            self.scores.push(entry.score);
                        }
                    }
                    None => {
                        for &id in &self.feasible {
                            self.stats.scores_computed += 1;
                            self.scores
                                .push(scorer.score(&ctx, id, &nodes[id as usize], pod));
                        }
                    }
                }
                scorer.normalize(&mut self.scores);
                let mut best = 0;
                let mut best_key = (
                    self.scores[0],
                    std::cmp::Reverse(self.ranks.rank(self.feasible[0])),
                );
                for i in 1..self.feasible.len() {
                    let key = (
                        self.scores[i],
                        std::cmp::Reverse(self.ranks.rank(self.feasible[i])),
                    );
                    if key > best_key {
                        best = i;
                        best_key = key;
                    }
                }
                (self.feasible[best], Some(best_key.0))
            }
        };
        let cards = self
            .policy
            .cards
            .select(&ctx, &nodes[node as usize], pod)
            .ok_or(ScheduleError::NoCards(node))?;
        Ok(Decision {
            node,
            cards,
            score,
            feasible: self.feasible.len() as u32,
        })
    }

    /// [`Scheduler::decide`] through the class's score index.
    fn decide_indexed(
        &mut self,
        cluster: &Cluster,
        pod: &PodRequest,
        slot: usize,
    ) -> Result<Decision, ScheduleError> {
        if self.indexes.len() <= slot {
            self.indexes.resize_with(slot + 1, ClassIndex::default);
        }
        let (nodes, alive, stamps, _) = cluster.raw_nodes();
        let ctx = ScoreContext {
            cluster,
            workload: match &self.knowledge {
                Knowledge::None => &self.empty_workload,
                Knowledge::Fixed(w) => w,
                Knowledge::Online(o) => o.workload(),
            },
            workload_epoch: self.epoch,
        };
        let index = &mut self.indexes[slot];
        if !index.built || index.epoch != self.epoch {
            *index = ClassIndex {
                epoch: self.epoch,
                built: true,
                ..ClassIndex::default()
            };
        }
        if index.feasible.len() < nodes.len() {
            index.feasible.resize(nodes.len(), false);
        }
        self.policy.scorer.pre_score(&ctx, pod, &[]);
        // The index holds the nodes that can take the pod's class (CPU, GPU, model); memory
        // and node selectors vary within a class and are checked on the winner.
        let class_pod = PodRequest {
            memory_mib: 0,
            node_selector: Vec::new(),
            ..pod.clone()
        };
        let filters: Vec<&Filter> = self
            .filters
            .iter()
            .filter(|f| f.relevant(&class_pod, cluster))
            .collect();
        // Rescore the nodes changed since this class was last placed.
        let since = index.seen_clock;
        let mut clock = since;
        for (id, &stamp) in stamps.iter().enumerate() {
            if stamp <= since {
                continue;
            }
            clock = clock.max(stamp);
            let feasible = alive[id]
                && filters
                    .iter()
                    .all(|f| f.filter(&nodes[id], &class_pod).is_ok());
            if feasible != index.feasible[id] {
                index.feasible[id] = feasible;
                if feasible {
                    index.feasible_count += 1;
                } else {
                    index.feasible_count -= 1;
                }
            }
            if feasible {
                self.stats.scores_computed += 1;
                let node = id as NodeId;
                index.heap.push(Ranked {
                    score: self.policy.scorer.score(&ctx, node, &nodes[id], pod),
                    rank: Reverse(self.ranks.rank(node).min(u32::MAX as u64) as u32),
                    node: Reverse(node),
                    stamp,
                });
            }
        }
        index.seen_clock = clock;
        // The best entry still current whose node takes this very pod: entries of nodes that
        // changed since they were scored are dropped, those failing the pod's own memory or
        // selector are set aside and put back.
        let mut set_aside = std::mem::take(&mut self.set_aside);
        let mut winner = None;
        while let Some(top) = index.heap.peek().copied() {
            let id = top.node.0 as usize;
            if stamps[id] != top.stamp || !index.feasible[id] {
                index.heap.pop();
            } else if self
                .filters
                .iter()
                .all(|f| f.filter(&nodes[id], pod).is_ok())
            {
                winner = Some(top);
                break;
            } else {
                set_aside.push(index.heap.pop().expect("peeked"));
            }
        }
        index.heap.extend(set_aside.drain(..));
        self.set_aside = set_aside;
        if index.heap.len() > 2 * nodes.len() + 64 {
            index.heap.retain(|e| {
                stamps[e.node.0 as usize] == e.stamp && index.feasible[e.node.0 as usize]
            });
        }
        let count = index.feasible_count;
        self.stats.scores_cached += (count as u64).saturating_sub(1);
        let Some(top) = winner else {
            let why = if self.explain_failures {
                self.explain(cluster, pod)
            } else {
                Unschedulable {
                    nodes: cluster.nodes().count() as u32,
                    reasons: Vec::new(),
                }
            };
            return Err(ScheduleError::Unschedulable(why));
        };
        let node = top.node.0;
        let cards = self
            .policy
            .cards
            .select(&ctx, &nodes[node as usize], pod)
            .ok_or(ScheduleError::NoCards(node))?;
        Ok(Decision {
            node,
            cards,
            score: (count > 1).then_some(top.score),
            feasible: count,
        })
    }

    /// Chooses a node and cards for `pod` and binds it.
    pub fn place(
        &mut self,
        cluster: &mut Cluster,
        pod: &PodRequest,
    ) -> Result<(Decision, PodHandle), ScheduleError> {
        let decision = self.decide(cluster, pod)?;
        let handle = cluster.bind(decision.node, pod, decision.cards)?;
        Ok((decision, handle))
    }
}

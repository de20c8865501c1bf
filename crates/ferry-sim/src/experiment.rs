//! One run of the FGD experiment (spec §2): one trace × one policy × one seed.

use std::time::{Duration, Instant};

use ferry_sched_core::engine::{EngineStats, Knowledge, OnlineWorkload, Scheduler};
use ferry_sched_core::frag::TargetWorkload;
use ferry_sched_core::framework::{NodeRanks, Policy};
use ferry_sched_core::model::{GPU_MILLI, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::state::{Cluster, NodeId};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::trace::{self, Trace, TraceError};

/// What a workload-aware policy (FGD, Ferry) knows about the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Info {
    /// The histogram of the whole original trace, given up front (FGD's setting).
    TraceWide,
    /// Only the pods seen so far, learned online.
    Online,
}

impl Info {
    /// Short label.
    pub fn label(self) -> &'static str {
        match self {
            Info::TraceWide => "trace",
            Info::Online => "online",
        }
    }
}

/// A policy together with what it knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicySetting {
    /// The policy.
    pub policy: PolicyKind,
    /// Its knowledge (ignored by policies that use no workload).
    pub info: Info,
}

impl PolicySetting {
    /// Display label: `fgd`, `ferry`, `ferry(online)`.
    pub fn label(self) -> String {
        if self.policy.uses_workload() && self.info == Info::Online {
            format!("{}(online)", self.policy.name())
        } else {
            self.policy.name().to_string()
        }
    }
}

/// The largest `--tune` ratio: the curves end at 130 % of capacity, and every unit of
/// tune adds a capacity's worth of cloned pods to every run.
pub const MAX_TUNE: f64 = 10.0;

/// Errors of the tune ratio.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TuneError {
    /// Not a positive finite number at most [`MAX_TUNE`].
    #[error(
        "--tune {0} is out of range: give a positive multiple of the cluster's GPU capacity, at most {MAX_TUNE} (the paper uses 1.3)"
    )]
    OutOfRange(f64),
}

/// Checks a tune ratio: positive, finite, at most [`MAX_TUNE`].
pub fn check_tune(ratio: f64) -> Result<f64, TuneError> {
    if ratio.is_finite() && ratio > 0.0 && ratio <= MAX_TUNE {
        Ok(ratio)
    } else {
        Err(TuneError::OutOfRange(ratio))
    }
}

/// Why a pod can never be placed, even on the empty cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unplaceable {
    /// It asks for more GPUs than the largest node has.
    TooManyGpus {
        /// GPUs asked.
        asked: u8,
        /// GPUs of the largest node.
        largest: usize,
    },
    /// None of the GPU models it allows is in the cluster.
    ModelAbsent {
        /// The models it allows, `|`-joined.
        models: String,
    },
    /// No single node has the CPU, memory and GPUs (of an allowed model) it asks for.
    NoNodeFits,
}

impl std::fmt::Display for Unplaceable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unplaceable::TooManyGpus { asked, largest } => {
                write!(f, "asks for {asked} GPUs, the largest node has {largest}")
            }
            Unplaceable::ModelAbsent { models } => {
                write!(f, "asks for GPU model {models}, absent from the cluster")
            }
            Unplaceable::NoNodeFits => write!(
                f,
                "no node has the CPU, memory and GPUs of an allowed model it asks for"
            ),
        }
    }
}

/// Why `pod` fits no node of the empty `cluster`, or `None` when some node can take it.
pub fn unplaceable(cluster: &Cluster, pod: &PodRequest) -> Option<Unplaceable> {
    let fits = |spec: &ferry_sched_core::model::NodeSpec| {
        spec.cpu_milli >= pod.cpu_milli
            && spec.memory_mib >= pod.memory_mib
            && spec.max_pods > 0
            && (!pod.gpu.is_gpu()
                || (spec.gpu_count() >= pod.gpu.count as usize
                    && pod.gpu_models.allows(spec.gpu_model)))
    };
    if cluster.nodes().any(|(_, n)| fits(&n.spec)) {
        return None;
    }
    if pod.gpu.is_gpu() {
        let largest = cluster
            .nodes()
            .map(|(_, n)| n.spec.gpu_count())
            .max()
            .unwrap_or(0);
        if pod.gpu.count as usize > largest {
            return Some(Unplaceable::TooManyGpus {
                asked: pod.gpu.count,
                largest,
            });
        }
        if !cluster
            .nodes()
            .any(|(_, n)| n.spec.gpu_count() > 0 && pod.gpu_models.allows(n.spec.gpu_model))
        {
            return Some(Unplaceable::ModelAbsent {
                models: cluster.models().format_set(pod.gpu_models),
            });
        }
    }
    Some(Unplaceable::NoNodeFits)
}

/// A trace made ready for runs: cluster template, requests in name order, workloads.
#[derive(Debug, Clone)]
pub struct PreparedTrace {
    /// Trace name.
    pub name: String,
    /// Empty cluster, node ids in name order.
    pub cluster: Cluster,
    /// Node names by id.
    pub node_names: Vec<String>,
    /// Pod names in name order.
    pub pod_names: Vec<String>,
    /// Pod requests in name order.
    pub requests: Vec<PodRequest>,
    /// The metric's target workload (§3.2, 95% cut) — also FGD's knowledge.
    pub metric_workload: TargetWorkload,
    /// Every key of the trace's histogram (Ferry's trace-wide knowledge).
    pub full_workload: TargetWorkload,
    /// Pods (index in name order) that fit no node even of the empty cluster, and why.
    /// Every run counts them among its failures.
    pub unplaceable: Vec<(u32, Unplaceable)>,
}

impl PreparedTrace {
    /// Prepares a loaded trace. Fails when the cluster has no GPU or no pod asks for one
    /// (the experiment measures GPU allocation: there would be nothing to tune or measure).
    pub fn new(trace: &Trace) -> Result<Self, TraceError> {
        let mut cluster = trace::build_cluster(&trace.nodes)?;
        let mut pods = trace.pods.clone();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        let model_err = |source| TraceError::Model {
            path: trace.name.clone().into(),
            source,
        };
        let requests = pods
            .iter()
            .map(|p| trace::pod_request(&mut cluster, p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(model_err)?;
        let metric_workload =
            trace::target_workload(&mut cluster, &pods, 95.0).map_err(model_err)?;
        let full_workload =
            trace::target_workload(&mut cluster, &pods, 100.0).map_err(model_err)?;
        let nothing = |reason| TraceError::NothingToMeasure {
            name: trace.name.clone(),
            reason,
        };
        if cluster.total_cards() == 0 {
            return Err(nothing("the cluster has no GPU"));
        }
        if requests.iter().all(|r| r.gpu.total_milli() == 0) {
            return Err(nothing(
                "no pod asks for a GPU (the experiment tunes and measures GPU demand)",
            ));
        }
        let unplaceable = requests
            .iter()
            .enumerate()
            .filter_map(|(i, r)| unplaceable(&cluster, r).map(|why| (i as u32, why)))
            .collect();
        let node_names = cluster.nodes().map(|(_, n)| n.spec.name.clone()).collect();
        Ok(PreparedTrace {
            name: trace.name.clone(),
            cluster,
            node_names,
            pod_names: pods.into_iter().map(|p| p.name).collect(),
            requests,
            metric_workload,
            full_workload,
            unplaceable,
        })
    }

    /// GPU capacity of the cluster, thousandths.
    pub fn capacity_milli(&self) -> u64 {
        self.cluster.total_cards() as u64 * GPU_MILLI as u64
    }

    /// One line per kind of reason: how many pods can never be placed, with an example.
    pub fn unplaceable_report(&self) -> Vec<String> {
        let mut by_kind: std::collections::BTreeMap<String, (usize, u32, &Unplaceable)> =
            Default::default();
        for (pod, why) in &self.unplaceable {
            let kind = match why {
                Unplaceable::TooManyGpus { largest, .. } => {
                    format!("asks for more GPUs than the largest node has ({largest})")
                }
                other => other.to_string(),
            };
            by_kind.entry(kind).or_insert((0, *pod, why)).0 += 1;
        }
        by_kind
            .into_iter()
            .map(|(kind, (count, pod, why))| {
                format!(
                    "{count} pod(s) can never be placed: {kind} (e.g. {}: {why})",
                    self.pod_names[pod as usize]
                )
            })
            .collect()
    }
}

/// Cluster state after one attempted pod (spec §5.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Index of the pod in name order (clones repeat their original's index).
    pub pod: u32,
    /// Node the pod went to, or `None` when it failed.
    pub node: Option<NodeId>,
    /// Cumulative GPU demand attempted so far, thousandths.
    pub arrived_milli: u64,
    /// GPU compute allocated, thousandths.
    pub used_milli: u64,
    /// Cluster fragmentation `F(M)`, thousandths.
    pub frag_milli: f64,
    /// Nodes with anything allocated.
    pub used_nodes: u32,
    /// GPUs of those nodes.
    pub used_gpus: u32,
}

impl Snapshot {
    /// Fragmentation rate: fragment as a percentage of the idle GPU.
    pub fn frag_ratio_pct(&self, capacity_milli: u64) -> f64 {
        let idle = capacity_milli - self.used_milli;
        if idle == 0 {
            0.0
        } else {
            100.0 * self.frag_milli / idle as f64
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Trace name.
    pub trace: String,
    /// Policy and knowledge.
    pub setting: PolicySetting,
    /// Seed.
    pub seed: u64,
    /// One snapshot per attempted pod, in arrival order.
    pub snapshots: Vec<Snapshot>,
    /// GPU capacity, thousandths.
    pub capacity_milli: u64,
    /// Wall time of the scheduling loop.
    pub elapsed: Duration,
    /// Scheduler work counters.
    pub stats: EngineStats,
    /// Pods that failed.
    pub failed: u32,
}

/// The arrival order of a run (spec §2.1 steps 4–6) and the node ranks (step 7).
///
/// Panics when `tune_ratio` fails [`check_tune`] (callers check user input first).
pub fn arrival_order(prepared: &PreparedTrace, seed: u64, tune_ratio: f64) -> (Vec<u32>, Vec<u32>) {
    if let Err(e) = check_tune(tune_ratio) {
        panic!("{e}");
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let _ = rng.next_u64();
    let n = prepared.requests.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    let demand = |i: u32| prepared.requests[i as usize].gpu.total_milli() as u64;
    let target = tune_ratio * prepared.capacity_milli() as f64;
    let mut total: u64 = order.iter().map(|&i| demand(i)).sum();
    // Cloning only adds demand when some pod asks for a GPU; without one it would never end.
    let gpu_pods = prepared.requests.iter().any(|r| r.gpu.milli > 0);
    if n > 0 && gpu_pods && (total as f64) < target {
        loop {
            let idx = rng.random_range(0..n) as u32;
            let per_gpu = prepared.requests[idx as usize].gpu.milli as u64;
            if (total + per_gpu) as f64 > target {
                break;
            }
            order.push(idx);
            total += demand(idx);
        }
    } else {
        while (total as f64) > target && !order.is_empty() {
            let at = rng.random_range(0..order.len());
            total -= demand(order.remove(at));
        }
    }
    let nodes = prepared.cluster.node_slots();
    let mut perm: Vec<u32> = (0..nodes as u32).collect();
    for i in (1..nodes).rev() {
        let j = rng.random_range(0..=i);
        perm.swap(i, j);
    }
    (order, perm)
}

/// The workload knowledge a policy setting gets.
pub fn knowledge_for(prepared: &PreparedTrace, setting: PolicySetting) -> Knowledge {
    if !setting.policy.uses_workload() {
        return Knowledge::None;
    }
    // FGD and Ferry know the same: the spec's target workload (top keys covering 95 % of
    // the trace's pods), computed from the whole trace up front or from the pods seen so far.
    match setting.info {
        Info::TraceWide => Knowledge::Fixed(prepared.metric_workload.clone()),
        Info::Online => Knowledge::Online(OnlineWorkload::new(95.0)),
    }
}

/// Runs one experiment.
pub fn run(
    prepared: &PreparedTrace,
    setting: PolicySetting,
    seed: u64,
    tune_ratio: f64,
) -> RunResult {
    let policy = setting.policy.build(seed);
    run_with(
        prepared,
        setting,
        policy,
        knowledge_for(prepared, setting),
        seed,
        tune_ratio,
    )
}

/// Runs one experiment with an explicit policy object and knowledge (`setting` only labels
/// the result).
pub fn run_with(
    prepared: &PreparedTrace,
    setting: PolicySetting,
    policy: Policy,
    knowledge: Knowledge,
    seed: u64,
    tune_ratio: f64,
) -> RunResult {
    let (order, ranks) = arrival_order(prepared, seed, tune_ratio);
    let mut cluster = prepared.cluster.clone();
    let mut scheduler = Scheduler::new(policy);
    // FGD and Ferry score per node state with no normalisation: same decisions, indexed.
    scheduler.set_score_index(setting.policy.uses_workload());
    scheduler.set_ranks(NodeRanks::from_ranks(ranks));
    scheduler.set_knowledge(knowledge);
    scheduler.set_explain_failures(false);
    let metric = &prepared.metric_workload;
    let node_frag = |c: &Cluster, id: NodeId| {
        let n = c.node(id).expect("live node");
        metric.node_frag(n.state.cpu_left, n.state.free(), n.spec.gpu_model)
    };
    let mut frags: Vec<f64> = (0..cluster.node_slots() as NodeId)
        .map(|id| node_frag(&cluster, id))
        .collect();
    let mut frag_total: f64 = frags.iter().sum();
    let mut used_node = vec![false; cluster.node_slots()];
    let (mut used_nodes, mut used_gpus) = (0u32, 0u32);
    let (mut arrived, mut used) = (0u64, 0u64);
    let mut failed = 0;
    let mut snapshots = Vec::with_capacity(order.len());
    let start = Instant::now();
    for &idx in &order {
        let pod = &prepared.requests[idx as usize];
        arrived += pod.gpu.total_milli() as u64;
        scheduler.observe(&cluster, pod);
        let node = match scheduler.place(&mut cluster, pod) {
            Ok((decision, _)) => {
                let id = decision.node;
                used += pod.gpu.total_milli() as u64;
                let f = node_frag(&cluster, id);
                frag_total += f - frags[id as usize];
                frags[id as usize] = f;
                if !used_node[id as usize] {
                    used_node[id as usize] = true;
                    used_nodes += 1;
                    used_gpus += cluster.node(id).map_or(0, |n| n.spec.gpu_count() as u32);
                }
                Some(id)
            }
            Err(_) => {
                failed += 1;
                None
            }
        };
        snapshots.push(Snapshot {
            pod: idx,
            node,
            arrived_milli: arrived,
            used_milli: used,
            frag_milli: frag_total,
            used_nodes,
            used_gpus,
        });
    }
    RunResult {
        trace: prepared.name.clone(),
        setting,
        seed,
        snapshots,
        capacity_milli: prepared.capacity_milli(),
        elapsed: start.elapsed(),
        stats: scheduler.stats(),
        failed,
    }
}

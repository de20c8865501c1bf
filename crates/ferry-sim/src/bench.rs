//! Benchmark figures: single-run speed against a naive full-rescan FGD, the 6 × 10 grid, and
//! a synthetic 10,000-node cluster (placement decisions per second, memory per node and pod).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_sched_core::engine::{Knowledge, Scheduler};
use ferry_sched_core::framework::{Caching, NodeRanks, Policy, ScoreContext, ScorePlugin};
use ferry_sched_core::model::{NodeSpec, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::policies::fgd::{FgdCards, FgdScore};
use ferry_sched_core::state::{Cluster, Node, NodeId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::experiment::{Info, PolicySetting, PreparedTrace, knowledge_for, run, run_with};
use crate::{runner, trace};

/// FGD without the score cache: every feasible node is rescored for every pod.
struct NaiveFgd;

impl ScorePlugin for NaiveFgd {
    fn name(&self) -> &'static str {
        "FGD (naive, no cache)"
    }
    fn caching(&self) -> Caching {
        Caching::Never
    }
    fn score(&self, ctx: &ScoreContext, id: NodeId, node: &Node, pod: &PodRequest) -> i64 {
        FgdScore.score(ctx, id, node, pod)
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs every benchmark and prints the figures. `heap_bytes`, when given, reads the bytes
/// currently allocated (a counting global allocator) for the memory figures.
pub fn run_benchmarks(
    dir: &Path,
    scale_nodes: usize,
    scale_fill: f64,
    repeat: usize,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    run_benchmarks_with(dir, scale_nodes, scale_fill, repeat, None, out)
}

/// [`run_benchmarks`] with an optional heap counter.
pub fn run_benchmarks_with(
    dir: &Path,
    scale_nodes: usize,
    scale_fill: f64,
    repeat: usize,
    heap_bytes: Option<fn() -> usize>,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let loaded = trace::load_trace(dir, "default", None)?;
    let prepared = PreparedTrace::new(&loaded)?;
    let fgd = PolicySetting {
        policy: PolicyKind::Fgd,
        info: Info::TraceWide,
    };
    let ferry = PolicySetting {
        policy: PolicyKind::Ferry,
        info: Info::TraceWide,
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    writeln!(
        out,
        "== speed: default trace, {} nodes, {} cores ==",
        prepared.node_names.len(),
        threads
    )?;

    let mut times = Vec::new();
    let mut pods = 0;
    for _ in 0..repeat.max(1) {
        let r = run(&prepared, fgd, 42, 1.3);
        pods = r.snapshots.len();
        times.push(r.elapsed);
    }
    let fast = median(times);
    let naive_policy = Policy {
        name: "fgd-naive".into(),
        scorer: Box::new(NaiveFgd),
        cards: Box::new(FgdCards),
    };
    let naive = run_with(
        &prepared,
        fgd,
        naive_policy,
        knowledge_for(&prepared, fgd),
        42,
        1.3,
    );
    writeln!(
        out,
        "one FGD run (seed 42, {pods} pods): {:.3} s  | naive full-rescan FGD: {:.3} s  | speed-up x{:.1}",
        fast.as_secs_f64(),
        naive.elapsed.as_secs_f64(),
        naive.elapsed.as_secs_f64() / fast.as_secs_f64()
    )?;
    let r = run(&prepared, ferry, 42, 1.3);
    writeln!(
        out,
        "one Ferry run (seed 42): {:.3} s (x{:.2} of FGD)",
        r.elapsed.as_secs_f64(),
        r.elapsed.as_secs_f64() / fast.as_secs_f64()
    )?;
    let random = run(
        &prepared,
        PolicySetting {
            policy: PolicyKind::Random,
            info: Info::TraceWide,
        },
        42,
        1.3,
    );
    writeln!(
        out,
        "one Random run (seed 42): {:.3} s (FGD costs x{:.2} of Random)",
        random.elapsed.as_secs_f64(),
        fast.as_secs_f64() / random.elapsed.as_secs_f64()
    )?;

    let settings: Vec<_> = PolicyKind::BASELINES
        .iter()
        .map(|&policy| PolicySetting {
            policy,
            info: Info::TraceWide,
        })
        .collect();
    let seeds: Vec<u64> = (42..=51).collect();
    let jobs = runner::jobs(&settings, &seeds);
    let start = Instant::now();
    let results = runner::run_all(&prepared, &jobs, 1.3, 0, None);
    let grid = start.elapsed();
    let serial: f64 = results.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    writeln!(
        out,
        "6 policies x 10 seeds, {threads} threads: {:.2} s wall (sum of run times {serial:.2} s; = x{:.1} one FGD run)",
        grid.as_secs_f64(),
        grid.as_secs_f64() / fast.as_secs_f64()
    )?;

    writeln!(
        out,
        "\n== scale: synthetic {scale_nodes}-node cluster, 8 GPUs per node, default trace pod mix =="
    )?;
    for setting in [fgd, ferry] {
        let heap_before = heap_bytes.map(|f| f());
        let run = scale_benchmark(&prepared, setting, scale_nodes, scale_fill, heap_bytes)?;
        writeln!(
            out,
            "{:>6}: {} pods ({:.0}% of {} GPUs) in {:.2} s single-threaded = {:.0} pods/s ({} failed; {:.1}% of node scores from cache)",
            setting.label(),
            run.pods,
            scale_fill,
            run.gpus,
            run.seconds,
            run.pods as f64 / run.seconds,
            run.failed,
            run.cached_pct
        )?;
        if let (Some(b), Some(c), Some(a)) = (heap_before, run.heap_cluster, run.heap_after) {
            writeln!(
                out,
                "        memory (measured heap): {:.0} B per node (cluster model); {:.0} B per placed pod (allocation record, pod list, score cache and index, amortised)",
                (c - b) as f64 / scale_nodes as f64,
                (a.saturating_sub(c)) as f64 / run.pods as f64
            )?;
        }
    }
    writeln!(
        out,
        "        memory (struct sizes): node state {} B + spec {} B + cards {} B per node; allocation record {} B per pod; score cache 16 B per node and pod class",
        std::mem::size_of::<ferry_sched_core::state::NodeState>(),
        std::mem::size_of::<NodeSpec>(),
        8 * std::mem::size_of::<ferry_sched_core::model::CardSpec>(),
        std::mem::size_of::<Option<ferry_sched_core::state::Allocation>>()
    )?;
    Ok(())
}

/// One run of the scale benchmark.
#[derive(Debug, Clone, Copy)]
pub struct ScaleRun {
    /// Pods attempted.
    pub pods: usize,
    /// Pods that found no node.
    pub failed: usize,
    /// GPUs of the cluster.
    pub gpus: usize,
    /// Wall time of the placement loop.
    pub seconds: f64,
    /// Share of node scores served from the cache, %.
    pub cached_pct: f64,
    /// Heap after building the cluster (when a counter is given).
    pub heap_cluster: Option<usize>,
    /// Heap after placing, scheduler and pods still alive (when a counter is given).
    pub heap_after: Option<usize>,
}

/// Places pods drawn from the trace's mix into a synthetic cluster of `nodes` 8-GPU nodes
/// until `fill` % of its GPU capacity is asked, single-threaded, and times it.
pub fn scale_benchmark(
    prepared: &PreparedTrace,
    setting: PolicySetting,
    nodes: usize,
    fill: f64,
    heap_bytes: Option<fn() -> usize>,
) -> anyhow::Result<ScaleRun> {
    let mut cluster = synthetic_cluster(prepared, nodes)?;
    let heap_cluster = heap_bytes.map(|f| f());
    let capacity = cluster.total_cards() as f64 * 1000.0;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut pods = Vec::new();
    let mut demand = 0.0;
    while demand < capacity * fill / 100.0 {
        let p = &prepared.requests[rng.random_range(0..prepared.requests.len())];
        demand += p.gpu.total_milli() as f64;
        pods.push(p.clone());
    }
    let mut scheduler = Scheduler::new(setting.policy.build(7));
    scheduler.set_score_index(setting.policy.uses_workload());
    let mut ranks: Vec<u32> = (0..nodes as u32).collect();
    for i in (1..ranks.len()).rev() {
        ranks.swap(i, rng.random_range(0..=i));
    }
    scheduler.set_ranks(NodeRanks::from_ranks(ranks));
    scheduler.set_knowledge(Knowledge::Fixed(prepared.metric_workload.clone()));
    scheduler.set_explain_failures(false);
    let start = Instant::now();
    let mut failed = 0;
    for p in &pods {
        if scheduler.place(&mut cluster, p).is_err() {
            failed += 1;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let heap_after = heap_bytes.map(|f| f());
    let stats = scheduler.stats();
    Ok(ScaleRun {
        pods: pods.len(),
        failed,
        gpus: cluster.total_cards(),
        seconds,
        cached_pct: 100.0 * stats.scores_cached as f64
            / (stats.scores_cached + stats.scores_computed).max(1) as f64,
        heap_cluster,
        heap_after,
    })
}

/// A cluster of `nodes` 8-GPU nodes with the 8-GPU shapes of the trace, in their proportions.
pub fn synthetic_cluster(prepared: &PreparedTrace, nodes: usize) -> anyhow::Result<Cluster> {
    let shapes: Vec<&Node> = prepared
        .cluster
        .nodes()
        .map(|(_, n)| n)
        .filter(|n| n.spec.gpu_count() == 8)
        .collect();
    anyhow::ensure!(!shapes.is_empty(), "the trace has no 8-GPU node");
    let mut cluster = Cluster::new();
    for (name, _) in (0..prepared.cluster.models().get("G2").map_or(0, |_| 1)).map(|_| ("G2", 0)) {
        let _ = cluster.intern_model(name);
    }
    for i in 0..nodes {
        let shape = shapes[i % shapes.len()];
        let model = match shape.spec.gpu_model {
            Some(m) => Some(cluster.intern_model(prepared.cluster.models().name(m))?),
            None => None,
        };
        cluster.add_node(NodeSpec::simple(
            format!("node-{i:05}"),
            shape.spec.cpu_milli,
            shape.spec.memory_mib,
            model,
            8,
        ))?;
    }
    Ok(cluster)
}

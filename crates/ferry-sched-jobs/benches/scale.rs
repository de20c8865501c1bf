//! `cargo bench -p ferry-sched-jobs`: the job-level core at the scale — 5,000
//! nodes / 40,000 GPUs, 50,000 pending pods in 5,000 gangs over 20 queues — against a
//! baseline measured in the same run: the same pods placed one by one through
//! `ferry-sched-core`'s `Scheduler` alone (no queues, no gangs). Heap is measured with a
//! counting allocator. `FERRY_BENCH_NODES` / `FERRY_BENCH_GANGS` scale it down.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ferry_sched_core::model::CardSpec;
use ferry_sched_core::{
    Cluster, GpuRequest, ModelId, ModelSet, NodeSpec, PodRequest, PolicyKind, Scheduler,
};
use ferry_sched_jobs::{
    Config, Job, JobState, PendingPod, Planner, QueueSpec, Resources, Snapshot,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn heap() -> usize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn reset_peak() -> usize {
    let now = heap();
    PEAK.store(now, Ordering::Relaxed);
    now
}

fn mib(b: usize) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const H100: ModelId = ModelId(0);
const A100: ModelId = ModelId(1);

fn cluster_nodes(n: usize) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| {
            let model = if i % 2 == 0 { H100 } else { A100 };
            let mut spec =
                NodeSpec::simple(format!("node-{i:05}"), 128_000, 1_048_576, Some(model), 8);
            spec.cards = vec![
                CardSpec {
                    memory_mib: 81_920,
                    nvlink_peers: 0xff,
                };
                8
            ];
            spec.labels = vec![("zone".into(), format!("z{}", i % 4))];
            spec
        })
        .collect()
}

/// 4 departments × 5 teams; guarantees split the cluster's GPUs evenly; weights 1–3.
fn queue_tree(gpus: u64) -> Vec<QueueSpec> {
    let mut q = Vec::new();
    for d in 0..4 {
        let dept = format!("dept-{d}");
        q.push(QueueSpec::new(&dept).guarantee(Resources::gpus(gpus / 4)));
        for t in 0..5 {
            q.push(
                QueueSpec::new(format!("{dept}-team-{t}"))
                    .parent(&dept)
                    .guarantee(Resources::gpus(gpus / 20))
                    .weight(1.0 + (t % 3) as f64),
            );
        }
    }
    q
}

fn workload(gangs: usize, pods_per_gang: usize, seed: u64) -> Vec<Job> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..gangs)
        .map(|g| {
            let shape = rng.random_range(0..100);
            let gpu = match shape {
                0..45 => GpuRequest::whole(1),
                45..65 => GpuRequest::whole(2),
                65..80 => GpuRequest::whole(4),
                80..90 => GpuRequest::whole(8),
                90..95 => GpuRequest::shared(500, 20_480),
                _ => GpuRequest::NONE,
            };
            let models = match rng.random_range(0..10) {
                0 | 1 => ModelSet::only(H100),
                2 | 3 => ModelSet::only(A100),
                _ => ModelSet::ANY,
            };
            let cpu = 1000 * rng.random_range(2..=14);
            let mem = 1024 * rng.random_range(8..=96);
            let mut req = PodRequest::new(
                cpu,
                mem,
                gpu,
                if gpu.is_gpu() { models } else { ModelSet::ANY },
            );
            if rng.random_range(0..10) == 0 {
                req.node_selector = vec![("zone".into(), format!("z{}", rng.random_range(0..4)))];
            }
            let id = format!("ns-{}/job-{g:05}", g % 20);
            let pods = (0..pods_per_gang)
                .map(|i| PendingPod {
                    id: format!("{id}-{i}"),
                    request: req.clone(),
                })
                .collect();
            let team = g % 20;
            Job::new(
                id,
                format!("dept-{}-team-{}", team / 5, team % 5),
                rng.random_range(0..4),
                g as u64,
                pods_per_gang as u32,
                pods,
            )
        })
        .collect()
}

fn baseline(policy: PolicyKind, nodes: &[NodeSpec], jobs: &[Job]) -> (f64, usize, usize) {
    let mut cluster = Cluster::new();
    cluster.intern_model("H100").unwrap();
    cluster.intern_model("A100").unwrap();
    for n in nodes {
        cluster.add_node(n.clone()).unwrap();
    }
    let mut engine = Scheduler::new(policy.build(0));
    engine.set_explain_failures(false);
    let mut order: Vec<&Job> = jobs.iter().collect();
    order.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.created.cmp(&b.created)));
    let start = Instant::now();
    let (mut placed, mut decided) = (0, 0);
    for job in order {
        for pod in &job.pods {
            decided += 1;
            if engine.place(&mut cluster, &pod.request).is_ok() {
                placed += 1;
            }
        }
    }
    (start.elapsed().as_secs_f64(), decided, placed)
}

fn main() {
    let n_nodes = env("FERRY_BENCH_NODES", 5_000);
    let n_gangs = env("FERRY_BENCH_GANGS", 5_000);
    let pods_per_gang = 10;
    let nodes = cluster_nodes(n_nodes);
    let gpus = n_nodes as u64 * 8;
    let queues = queue_tree(gpus);
    let jobs = workload(n_gangs, pods_per_gang, 42);
    let pods = n_gangs * pods_per_gang;
    println!(
        "ferry-sched-jobs scale benchmark: {n_nodes} nodes / {gpus} GPUs, {pods} pending pods in {n_gangs} gangs over 20 leaf queues (4 departments × 5 teams, guarantees = 1/20 of the GPUs each), single thread"
    );
    println!(
        "pods decided/s = pending pods given a decision (bound, nominated, or pending with an explained reason) per second of cycle"
    );
    println!();
    println!(
        "| policy | run | time | pods decided/s | pods bound | bound/s | engine decisions | heap peak |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for policy in [PolicyKind::BestFit, PolicyKind::Ferry] {
        // Baseline: the same pods one by one through the placement engine alone.
        let base_heap = reset_peak();
        let (secs, decided, placed) = baseline(policy, &nodes, &jobs);
        let base_peak = PEAK.load(Ordering::Relaxed) - base_heap;
        println!(
            "| {policy} | baseline: engine alone, pod by pod | {:.3} s | {:.0} | {placed} | {:.0} | {decided} | {:.1} MiB |",
            secs,
            decided as f64 / secs,
            placed as f64 / secs,
            mib(base_peak)
        );

        let before = reset_peak();
        let mut engine = Scheduler::new(policy.build(0));
        engine.set_explain_failures(false);
        let mut planner = Planner::new(engine, Config::default());
        planner.intern_model("H100").unwrap();
        planner.intern_model("A100").unwrap();
        let mut snap = Snapshot {
            now: 1_000,
            nodes: nodes.clone(),
            queues: queues.clone(),
            jobs: jobs.clone(),
            ..Snapshot::default()
        };
        let input_heap = heap() - before;
        let start = Instant::now();
        let out = planner.run(&snap).expect("cycle");
        let secs = start.elapsed().as_secs_f64();
        let peak = PEAK.load(Ordering::Relaxed) - before - input_heap;
        let s = out.stats;
        let pending = out
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Pending)
            .count();
        println!(
            "| {policy} | job layer: cold cycle (all pending) | {:.3} s | {:.0} | {} | {:.0} | {} | {:.1} MiB |",
            secs,
            s.pods_decided as f64 / secs,
            s.pods_bound,
            s.pods_bound as f64 / secs,
            s.engine_decisions,
            mib(peak)
        );
        let detail = format!(
            "  ({} gangs bound, {pending} pending with a reason; {} sticky placements, {} memo rejections)",
            out.jobs
                .iter()
                .filter(|j| j.state == JobState::Bound)
                .count(),
            s.sticky_placements,
            s.memo_rejections
        );
        // The same cold cycle without sticky gang placement (one engine decision per pod).
        {
            let mut engine = Scheduler::new(policy.build(0));
            engine.set_explain_failures(false);
            let config = Config {
                sticky_gangs: false,
                ..Config::default()
            };
            let mut p = Planner::new(engine, config);
            p.intern_model("H100").unwrap();
            p.intern_model("A100").unwrap();
            let start = Instant::now();
            let o = p.run(&snap).expect("cycle");
            let secs = start.elapsed().as_secs_f64();
            println!(
                "| {policy} | job layer: cold cycle, sticky gangs off | {:.3} s | {:.0} | {} | {:.0} | {} | |",
                secs,
                o.stats.pods_decided as f64 / secs,
                o.stats.pods_bound,
                o.stats.pods_bound as f64 / secs,
                o.stats.engine_decisions,
            );
        }
        // Warm cycle: what was bound runs, 10 % of the running gangs finish, the rest waits.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let bound: std::collections::HashMap<&str, &ferry_sched_jobs::Bind> =
            out.binds.iter().map(|b| (b.pod.as_str(), b)).collect();
        let finished: std::collections::HashSet<&str> = out
            .jobs
            .iter()
            .filter(|j| j.state == JobState::Bound && rng.random_range(0..10) == 0)
            .map(|j| j.job.as_str())
            .collect();
        let mut running = Vec::new();
        for job in &mut snap.jobs {
            let mut left = Vec::new();
            for pod in job.pods.drain(..) {
                match bound.get(pod.id.as_str()) {
                    Some(b) => {
                        if !finished.contains(job.id.as_str()) {
                            running.push(ferry_sched_jobs::RunningPod {
                                id: pod.id,
                                job: Some(job.id.clone()),
                                node: b.node.clone(),
                                cards: b.cards,
                                request: pod.request,
                                started: 1_000,
                                terminating: false,
                            });
                        }
                    }
                    None => left.push(pod),
                }
            }
            job.pods = left;
        }
        snap.jobs.retain(|j| !finished.contains(j.id.as_str()));
        snap.running = running;
        snap.now = 2_000;
        let pending_pods: usize = snap.jobs.iter().map(|j| j.pods.len()).sum();
        let before = reset_peak();
        let start = Instant::now();
        let out2 = planner.run(&snap).expect("cycle");
        let secs2 = start.elapsed().as_secs_f64();
        let peak2 = PEAK.load(Ordering::Relaxed) - before;
        let s2 = out2.stats;
        println!(
            "| {policy} | job layer: warm cycle ({} running, {pending_pods} pending, 10 % of gangs done) | {:.3} s | {:.0} | {} | {:.0} | {} | {:.1} MiB |",
            snap.running.len(),
            secs2,
            s2.pods_decided as f64 / secs2,
            s2.pods_bound,
            s2.pods_bound as f64 / secs2,
            s2.engine_decisions,
            mib(peak2)
        );
        println!(
            "{detail}; warm: {} preemption attempts, {} evictions",
            s2.preemption_attempts, s2.evictions
        );
        println!(
            "  planner retained between cycles: {:.1} MiB (input snapshot {:.1} MiB)",
            mib(heap() - before),
            mib(input_heap)
        );
        drop(planner);
    }
}

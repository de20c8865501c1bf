//! The engine's score index (`Scheduler::set_score_index`) must choose exactly what the
//! node scan chooses: on random clusters whose pods of one class differ in memory and node
//! selector (the index checks those on the winner only), and on the default trace.

mod common;

use ferry_sched_core::engine::{Knowledge, Scheduler};
use ferry_sched_core::framework::NodeRanks;
use ferry_sched_core::model::{GpuRequest, ModelSet, NodeSpec, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::state::Cluster;
use ferry_sched_core::{TargetWorkload, TypicalPod};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn scheduler(kind: PolicyKind, index: bool, ranks: &[u32], w: &TargetWorkload) -> Scheduler {
    let mut s = Scheduler::new(kind.build(1));
    s.set_score_index(index);
    s.set_ranks(NodeRanks::from_ranks(ranks.to_vec()));
    s.set_knowledge(Knowledge::Fixed(w.clone()));
    s.set_explain_failures(false);
    s
}

/// Places `pods` with the scan and the index side by side; panics at the first difference.
fn same_decisions(kind: PolicyKind, cluster: &Cluster, pods: &[PodRequest], w: &TargetWorkload) {
    let ranks: Vec<u32> = (0..cluster.node_slots() as u32).rev().collect();
    let mut scan = scheduler(kind, false, &ranks, w);
    let mut index = scheduler(kind, true, &ranks, w);
    let mut cluster = cluster.clone();
    for (i, pod) in pods.iter().enumerate() {
        let a = scan.decide(&cluster, pod).ok().map(|d| (d.node, d.cards));
        let b = index.decide(&cluster, pod).ok().map(|d| (d.node, d.cards));
        assert_eq!(a, b, "{kind}: pod {i} {pod:?}");
        if let Some((node, cards)) = a {
            cluster.bind(node, pod, cards).expect("binds");
        }
    }
}

#[test]
fn index_matches_scan_on_random_clusters() {
    for seed in 0..6u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut cluster = Cluster::new();
        let models = [
            cluster.intern_model("A").unwrap(),
            cluster.intern_model("B").unwrap(),
        ];
        for n in 0..40 {
            let mut spec = NodeSpec::simple(
                format!("n{n}"),
                rng.random_range(8..64) * 1000,
                rng.random_range(16..256) * 1024,
                Some(models[rng.random_range(0..2)]),
                [1, 2, 4, 8][rng.random_range(0..4)],
            );
            if n % 3 == 0 {
                spec.labels.push(("zone".into(), "a".into()));
            }
            cluster.add_node(spec).unwrap();
        }
        let pods: Vec<PodRequest> = (0..400)
            .map(|_| {
                let gpu = match rng.random_range(0..4) {
                    0 => GpuRequest::NONE,
                    1 => GpuRequest::whole(rng.random_range(1..3)),
                    _ => GpuRequest::shared([250, 470, 810][rng.random_range(0..3)], 0),
                };
                let models = if rng.random_range(0..4) == 0 {
                    ModelSet::only(models[1])
                } else {
                    ModelSet::ANY
                };
                // One CPU size per GPU shape, so classes repeat; memory varies within a class.
                let mut pod = PodRequest::new(4000, rng.random_range(1..64) * 1024, gpu, models);
                if rng.random_range(0..5) == 0 {
                    pod.node_selector.push(("zone".into(), "a".into()));
                }
                pod
            })
            .collect();
        let typical = |milli, count, weight| TypicalPod {
            cpu_milli: 4000,
            gpu_milli: milli,
            gpu_count: count,
            models: ModelSet::ANY,
            weight,
        };
        let w = TargetWorkload::new(vec![
            typical(0, 0, 0.2),
            typical(1000, 1, 0.3),
            typical(470, 1, 0.25),
            typical(250, 1, 0.25),
        ]);
        for kind in [PolicyKind::Fgd, PolicyKind::Ferry] {
            same_decisions(kind, &cluster, &pods, &w);
        }
    }
}

#[test]
fn index_matches_scan_on_the_default_trace() {
    let Some(dir) = common::trace_dir() else {
        return;
    };
    let t = ferry_sim::trace::load_trace(&dir, "default", None).expect("trace loads");
    let prepared = ferry_sim::experiment::PreparedTrace::new(&t).expect("prepares");
    let (order, _) = ferry_sim::experiment::arrival_order(&prepared, 42, 1.3);
    let pods: Vec<PodRequest> = order
        .iter()
        .map(|&i| prepared.requests[i as usize].clone())
        .collect();
    for kind in [PolicyKind::Fgd, PolicyKind::Ferry] {
        same_decisions(kind, &prepared.cluster, &pods, &prepared.metric_workload);
    }
}

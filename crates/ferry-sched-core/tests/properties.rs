//! Property tests over random clusters and workloads, for every policy.

use ferry_sched_core::engine::{Knowledge, Scheduler};
use ferry_sched_core::frag::{TargetWorkload, TypicalPod};
use ferry_sched_core::framework::NodeRanks;
use ferry_sched_core::model::{CardSpec, GpuRequest, ModelSet, NodeSpec, PodRequest};
use ferry_sched_core::policies::PolicyKind;
use ferry_sched_core::state::{Cluster, PodHandle};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct NodeShape {
    cpu: u64,
    mem: u64,
    model: u8,
    cards: usize,
    card_mem: u32,
}

fn node_shape() -> impl Strategy<Value = NodeShape> {
    (
        1u64..64,
        1u64..256,
        0u8..3,
        prop::sample::select(vec![0usize, 1, 2, 4, 8]),
        prop::sample::select(vec![0u32, 16384, 32768]),
    )
        .prop_map(|(cpu, mem, model, cards, card_mem)| NodeShape {
            cpu: cpu * 2000,
            mem: mem * 1024,
            model,
            cards,
            card_mem,
        })
}

fn pod() -> impl Strategy<Value = PodRequest> {
    let gpu = prop_oneof![
        Just(GpuRequest::NONE),
        (1u16..1000, prop::sample::select(vec![0u32, 0, 4096, 12000]))
            .prop_map(|(m, mem)| GpuRequest::shared(m, mem)),
        prop::sample::select(vec![1u8, 1, 2, 4, 8]).prop_map(GpuRequest::whole),
    ];
    (0u64..40_000, 0u64..64_000, gpu, 0u64..4).prop_map(|(cpu, mem, gpu, models)| {
        // models: 0 = any, else a one- or two-model constraint
        let set = match models {
            0 => ModelSet::ANY,
            1 => ModelSet(0b001),
            2 => ModelSet(0b010),
            _ => ModelSet(0b110),
        };
        PodRequest::new(
            cpu,
            mem,
            gpu,
            if gpu.is_gpu() { set } else { ModelSet::ANY },
        )
    })
}

fn build(shapes: &[NodeShape]) -> Cluster {
    let mut c = Cluster::new();
    let models: Vec<_> = ["A", "B", "C"]
        .iter()
        .map(|m| c.intern_model(m).unwrap())
        .collect();
    for (i, s) in shapes.iter().enumerate() {
        let mut spec = NodeSpec::simple(
            format!("n{i}"),
            s.cpu,
            s.mem,
            (s.cards > 0).then(|| models[s.model as usize]),
            s.cards,
        );
        for card in &mut spec.cards {
            *card = CardSpec {
                memory_mib: s.card_mem,
                nvlink_peers: 0,
            };
        }
        c.add_node(spec).unwrap();
    }
    c
}

fn workload() -> TargetWorkload {
    TargetWorkload::new(vec![
        TypicalPod {
            cpu_milli: 4000,
            gpu_milli: 500,
            gpu_count: 1,
            models: ModelSet::ANY,
            weight: 0.4,
        },
        TypicalPod {
            cpu_milli: 8000,
            gpu_milli: 1000,
            gpu_count: 1,
            models: ModelSet::ANY,
            weight: 0.4,
        },
        TypicalPod {
            cpu_milli: 2000,
            gpu_milli: 0,
            gpu_count: 0,
            models: ModelSet::ANY,
            weight: 0.2,
        },
    ])
}

/// Places every pod (releasing some on the way) and returns the decisions.
fn simulate(
    shapes: &[NodeShape],
    pods: &[PodRequest],
    policy: PolicyKind,
    seed: u64,
    check: bool,
) -> Vec<Option<(u32, u32)>> {
    let mut c = build(shapes);
    let mut s = Scheduler::new(policy.build(seed));
    s.set_ranks(NodeRanks::from_ranks(
        (0..shapes.len() as u32).rev().collect(),
    ));
    s.set_knowledge(Knowledge::Fixed(workload()));
    let mut placed: Vec<(PodHandle, PodRequest)> = Vec::new();
    let mut out = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        s.observe(&c, pod);
        match s.place(&mut c, pod) {
            Ok((d, h)) => {
                if check {
                    let node = c.node(d.node).unwrap();
                    assert!(
                        pod.gpu_models.allows(node.spec.gpu_model) || !pod.gpu.is_gpu(),
                        "model constraint"
                    );
                    assert_eq!(d.cards.len(), pod.gpu.count as usize);
                }
                placed.push((h, pod.clone()));
                out.push(Some((d.node, d.cards.0)));
            }
            Err(_) => out.push(None),
        }
        if i % 7 == 6 && !placed.is_empty() {
            let (h, _) = placed.remove(placed.len() / 2);
            c.release(h).unwrap();
        }
        if check {
            check_invariants(&c, &placed);
        }
    }
    out
}

fn check_invariants(c: &Cluster, placed: &[(PodHandle, PodRequest)]) {
    for (id, node) in c.nodes() {
        let (spec, st) = (&node.spec, &node.state);
        let mut cpu = 0;
        let mut mem = 0;
        let mut milli = vec![0u32; spec.cards.len()];
        let mut card_mem = vec![0u32; spec.cards.len()];
        for (h, pod) in placed {
            let a = c.allocation(*h).unwrap();
            if a.node != id {
                continue;
            }
            cpu += pod.cpu_milli;
            mem += pod.memory_mib;
            for i in a.cards.indices() {
                milli[i] += pod.gpu.milli as u32;
                card_mem[i] += if pod.gpu.is_whole() {
                    spec.cards[i].memory_mib
                } else {
                    pod.gpu.memory_mib
                };
            }
        }
        assert!(
            cpu <= spec.cpu_milli && mem <= spec.memory_mib,
            "cpu/memory over capacity"
        );
        assert_eq!(spec.cpu_milli - cpu, st.cpu_left);
        assert_eq!(spec.memory_mib - mem, st.memory_left);
        for i in 0..spec.cards.len() {
            assert!(milli[i] <= 1000, "card above 1000 milli");
            assert_eq!(1000 - milli[i], st.free_milli[i] as u32);
            if spec.cards[i].memory_mib > 0 {
                assert!(
                    card_mem[i] <= spec.cards[i].memory_mib,
                    "card memory over capacity"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn placements_respect_every_capacity_and_constraint(
        shapes in prop::collection::vec(node_shape(), 1..12),
        pods in prop::collection::vec(pod(), 1..80),
        policy in prop::sample::select(PolicyKind::ALL.to_vec()),
        seed in 0u64..1000,
    ) {
        simulate(&shapes, &pods, policy, seed, true);
    }

    #[test]
    fn identical_seeds_give_identical_results(
        shapes in prop::collection::vec(node_shape(), 1..10),
        pods in prop::collection::vec(pod(), 1..60),
        policy in prop::sample::select(PolicyKind::ALL.to_vec()),
        seed in 0u64..1000,
    ) {
        let a = simulate(&shapes, &pods, policy, seed, false);
        let b = simulate(&shapes, &pods, policy, seed, false);
        prop_assert_eq!(a, b);
    }
}

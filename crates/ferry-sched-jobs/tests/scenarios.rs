//! Scenario tests of the job-level core, one per rule of issue 4.

mod common;

use std::collections::BTreeSet;

use common::{World, gpu_pod, labelled, nodes};
use ferry_sched_core::{GpuRequest, ModelSet, PodRequest};
use ferry_sched_jobs::{
    Config, HoldKind, Job, JobState, Limits, PendingReason, PreemptionRule, QueueSpec, Reservation,
    ResourcePolicy, Resources, Unit,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn single_queue() -> Vec<QueueSpec> {
    vec![QueueSpec::new("q")]
}

#[test]
fn two_100_pod_gangs_on_100_slots_never_both_end_up_partial() {
    // 25 nodes × 4 GPUs = 100 one-GPU slots; two gangs of 100 one-GPU pods.
    let mut w = World::new(nodes("n", 25, 4), single_queue(), Config::default());
    w.submit(Job::gang("a", "q", 0, 1, 100, gpu_pod(1)));
    w.submit(Job::gang("b", "q", 0, 2, 100, gpu_pod(1)));
    for cycle in 0..5 {
        let out = w.step();
        let bound_a = w
            .running
            .iter()
            .filter(|r| r.job.as_deref() == Some("a"))
            .count();
        let bound_b = w
            .running
            .iter()
            .filter(|r| r.job.as_deref() == Some("b"))
            .count();
        assert_eq!((bound_a, bound_b), (100, 0), "cycle {cycle}");
        let b = out.job("b").unwrap();
        assert_eq!(b.state, JobState::Pending);
        assert!(
            matches!(
                b.reason,
                Some(PendingReason::Unschedulable {
                    needed: 100,
                    fit: 0,
                    ..
                })
            ),
            "{:?}",
            b.reason
        );
        assert!(
            b.message
                .starts_with("gang needs 100 pods, only 0 fit; pod b-"),
            "{}",
            b.message
        );
        assert!(
            b.message
                .contains("0/25 nodes are available: 25 insufficient GPU")
        );
    }
    // When a finishes, b runs whole.
    w.complete("a");
    w.step();
    let bound_b = w
        .running
        .iter()
        .filter(|r| r.job.as_deref() == Some("b"))
        .count();
    assert_eq!(bound_b, 100);
}

#[test]
fn a_gang_that_does_not_fit_leaves_no_pod_behind_for_others() {
    // 3 slots free, a gang of 4 first in line, a singleton behind it: the gang places
    // nothing, the singleton backfills.
    let mut w = World::new(nodes("n", 1, 3), single_queue(), Config::default());
    w.submit(Job::gang("gang", "q", 0, 1, 4, gpu_pod(1)));
    w.submit(Job::gang("single", "q", 0, 2, 1, gpu_pod(1)));
    let out = w.step();
    assert_eq!(out.job("gang").unwrap().state, JobState::Pending);
    assert!(
        out.job("gang")
            .unwrap()
            .message
            .starts_with("gang needs 4 pods, only 3 fit")
    );
    assert_eq!(out.job("single").unwrap().state, JobState::Bound);
    assert_eq!(out.binds.len(), 1);
}

fn two_teams() -> Vec<QueueSpec> {
    vec![
        QueueSpec::new("a").guarantee(Resources::gpus(8)),
        QueueSpec::new("b").guarantee(Resources::gpus(8)),
    ]
}

#[test]
fn a_queue_that_lent_its_guarantee_gets_it_back_within_one_cycle_whole_gangs_only() {
    // 4 nodes × 4 GPUs. Queue b borrows all 16 GPUs with four 2-pod gangs of 2 GPUs each,
    // one gang per node, started at t = 1..4.
    let mut w = World::new(nodes("n", 4, 4), two_teams(), Config::default());
    for i in 0..4 {
        let node = format!("n{i}");
        w.run_on(
            Job::gang(format!("b{i}"), "b", 0, i, 2, gpu_pod(2)),
            &[&node, &node],
            1 + i,
        );
    }
    w.now = 10_000;
    w.submit(Job::gang("a-train", "a", 0, 10, 2, gpu_pod(4)));
    let out = w.step();
    // The two youngest gangs of b go, every pod of each, and nothing else.
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["b2", "b3"]));
    assert_eq!(out.evictions.len(), 4);
    for e in &out.evictions {
        assert_eq!(e.preemptor, "a-train");
        assert!(matches!(e.rule, PreemptionRule::Reclaim { .. }));
        assert!(
            e.message
                .contains("to reclaim its guarantee: queue b uses 16 GPU of gpu"),
            "{}",
            e.message
        );
    }
    // Within this cycle a has its guarantee back (nominated on the freed nodes).
    let a = out.job("a-train").unwrap();
    assert_eq!(a.state, JobState::Nominated);
    let hold = a.hold.as_ref().unwrap();
    assert_eq!(hold.kind, HoldKind::Preemption);
    let held_nodes: BTreeSet<&str> = hold.pods.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(held_nodes, BTreeSet::from(["n2", "n3"]));
    assert_eq!(out.queue("a").unwrap().usage.gpu_milli, 8000);
    assert_eq!(out.queue("b").unwrap().usage.gpu_milli, 8000);
    // Next cycle the victims are gone and a binds on the held room, while b's evicted
    // gangs (back as pending) cannot take it.
    let out = w.step();
    let a_nodes: BTreeSet<&str> = out
        .binds
        .iter()
        .filter(|b| b.job == "a-train")
        .map(|b| b.node.as_str())
        .collect();
    assert_eq!(a_nodes, BTreeSet::from(["n2", "n3"]));
    assert!(out.evictions.is_empty());
    assert_eq!(w.gpu_usage("a"), 8000);
    assert_eq!(w.gpu_usage("b"), 8000);
    // And it is stable: no more preemption either way.
    for _ in 0..5 {
        let out = w.step();
        assert!(out.evictions.is_empty());
        assert!(out.binds.is_empty());
    }
}

#[test]
fn a_gang_straddling_its_queues_guarantee_is_reclaimed_whole() {
    // 2 nodes × 4 GPUs, a and b guaranteed 4 GPUs each. b runs one 4-pod gang of 2 GPUs:
    // 8 GPUs, 4 of them borrowed. a submits 4 GPUs: the gang goes back whole, although that
    // leaves b below its guarantee, and b's gang cannot take it back.
    let halves = vec![
        QueueSpec::new("a").guarantee(Resources::gpus(4)),
        QueueSpec::new("b").guarantee(Resources::gpus(4)),
    ];
    let mut w = World::new(nodes("n", 2, 4), halves, Config::default());
    w.run_on(
        Job::gang("b-big", "b", 0, 1, 4, gpu_pod(2)),
        &["n0", "n0", "n1", "n1"],
        1,
    );
    w.now = 10_000;
    w.submit(Job::gang("a-small", "a", 0, 10, 2, gpu_pod(2)));
    let out = w.step();
    assert_eq!(out.evictions.len(), 4, "the whole gang goes");
    assert!(
        out.evictions
            .iter()
            .all(|e| e.job == "b-big" && e.preemptor == "a-small")
    );
    assert_eq!(out.job("a-small").unwrap().state, JobState::Nominated);
    let out = w.step();
    assert_eq!(out.binds.iter().filter(|b| b.job == "a-small").count(), 2);
    // b's gang (back as pending) needs 8 GPUs with 4 free and its guarantee of 4: it waits
    // and preempts nothing.
    for _ in 0..5 {
        let out = w.step();
        assert!(out.evictions.is_empty());
        assert_eq!(w.gpu_usage("a"), 4000);
    }
}

#[test]
fn a_queue_within_its_guarantee_is_never_reclaimed_from() {
    let mut w = World::new(nodes("n", 4, 4), two_teams(), Config::default());
    // b uses exactly its guarantee; a foreign pod fills n3.
    w.run_on(Job::gang("b0", "b", 0, 0, 2, gpu_pod(4)), &["n0", "n1"], 0);
    w.running.push(ferry_sched_jobs::RunningPod {
        id: "kube-system/daemon".into(),
        job: None,
        node: "n3".into(),
        cards: ferry_sched_core::CardSet(0b1111),
        request: gpu_pod(4),
        started: 0,
        terminating: false,
    });
    // a asks for more than its guarantee: no reclaim.
    w.submit(Job::gang("a-big", "a", 0, 1, 3, gpu_pod(4)));
    let out = w.step();
    assert!(out.evictions.is_empty());
    assert_eq!(out.job("a-big").unwrap().state, JobState::Pending);
    // a within its guarantee but nothing free: b is not borrowing, so nothing is taken.
    w.complete("a-big");
    w.run_on(Job::gang("a0", "a", 0, 2, 1, gpu_pod(4)), &["n2"], 2);
    w.submit(Job::gang("a-more", "a", 0, 3, 1, gpu_pod(4)));
    let out = w.step();
    assert!(out.evictions.is_empty(), "{:?}", out.evictions);
    let a = out.job("a-more").unwrap();
    assert_eq!(a.state, JobState::Pending);
    assert_eq!(
        a.message,
        "pod a-more-0: 0/4 nodes are available: 4 insufficient GPU"
    );
}

#[test]
fn reclaim_works_across_and_inside_subtrees() {
    // org-x (8) ⊃ {x1 (8), x2 (0)}; org-y (8) ⊃ {y1 (8)}. 16 GPUs in 4 nodes.
    let queues = vec![
        QueueSpec::new("org-x").guarantee(Resources::gpus(8)),
        QueueSpec::new("x1")
            .parent("org-x")
            .guarantee(Resources::gpus(8)),
        QueueSpec::new("x2").parent("org-x"),
        QueueSpec::new("org-y").guarantee(Resources::gpus(8)),
        QueueSpec::new("y1")
            .parent("org-y")
            .guarantee(Resources::gpus(8)),
    ];
    // Across subtrees: y1 borrows org-x's 8 GPUs; x1 takes them back.
    let mut w = World::new(nodes("n", 4, 4), queues.clone(), Config::default());
    for i in 0..4 {
        let node = format!("n{i}");
        w.run_on(
            Job::gang(format!("y{i}"), "y1", 0, i, 1, gpu_pod(4)),
            &[&node],
            i,
        );
    }
    w.submit(Job::gang("x1-job", "x1", 0, 9, 2, gpu_pod(4)));
    let out = w.step();
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["y2", "y3"]));
    assert_eq!(out.job("x1-job").unwrap().state, JobState::Nominated);

    // Inside a subtree: x2 (guarantee 0) borrows org-x's guarantee while org-x as a whole
    // is within its own; x1 still takes it back from its sibling (and not from y1, which is
    // within its guarantee).
    let mut w = World::new(nodes("n", 4, 4), queues, Config::default());
    w.run_on(Job::gang("x2-a", "x2", 0, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.run_on(Job::gang("x2-b", "x2", 0, 1, 1, gpu_pod(4)), &["n1"], 1);
    w.run_on(
        Job::gang("y-a", "y1", 0, 2, 2, gpu_pod(4)),
        &["n2", "n3"],
        2,
    );
    w.submit(Job::gang("x1-job", "x1", 0, 9, 1, gpu_pod(4)));
    let out = w.step();
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["x2-b"]));
    assert_eq!(out.job("x1-job").unwrap().state, JobState::Nominated);
}

#[test]
fn borrowing_is_limited_and_explained() {
    let queues = vec![
        QueueSpec::new("a")
            .guarantee(Resources::gpus(4))
            .borrowing(Limits {
                gpu_milli: Some(2000),
                ..Limits::NONE
            }),
        QueueSpec::new("b"),
    ];
    let mut w = World::new(nodes("n", 4, 4), queues, Config::default());
    for i in 0..4 {
        w.submit(Job::gang(format!("a{i}"), "a", 0, i, 1, gpu_pod(2)));
    }
    let out = w.step();
    assert_eq!(w.gpu_usage("a"), 6000);
    let a3 = out.job("a3").unwrap();
    assert!(matches!(a3.reason, Some(PendingReason::Quota(_))));
    assert_eq!(
        a3.message,
        "over quota: queue a would use 8 GPU of its limit 6 GPU (guaranteed 4 GPU, in use 6 GPU, this job needs 2 GPU)"
    );
    let q = out.queue("a").unwrap();
    assert_eq!(q.limit.gpu_milli, Some(6000));
    assert_eq!((q.pending_jobs, q.pending_pods), (1, 1));
}

#[test]
fn drf_shares_converge_to_the_weights_on_a_contended_cluster() {
    // Flat: weights 1, 2, 3, no guarantees; hierarchical: p (1) ⊃ {p1 (1), p2 (3)}, s (1).
    type Case = (Vec<QueueSpec>, Vec<(&'static str, f64)>);
    let cases: Vec<Case> = vec![
        (
            vec![
                QueueSpec::new("w1").weight(1.0),
                QueueSpec::new("w2").weight(2.0),
                QueueSpec::new("w3").weight(3.0),
            ],
            vec![("w1", 1.0 / 6.0), ("w2", 2.0 / 6.0), ("w3", 3.0 / 6.0)],
        ),
        (
            vec![
                QueueSpec::new("p"),
                QueueSpec::new("p1").parent("p").weight(1.0),
                QueueSpec::new("p2").parent("p").weight(3.0),
                QueueSpec::new("s"),
            ],
            vec![("p1", 0.125), ("p2", 0.375), ("s", 0.5)],
        ),
    ];
    for (queues, expect) in cases {
        let leaves: Vec<&str> = expect.iter().map(|e| e.0).collect();
        let mut w = World::new(nodes("n", 12, 8), queues, Config::default());
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut next = 0u64;
        let mut sums = vec![0u64; leaves.len()];
        let mut samples = 0;
        for cycle in 0..300 {
            // Every queue always has more work than the cluster.
            for q in &leaves {
                let pending = w
                    .jobs
                    .values()
                    .filter(|j| j.queue == *q && !j.pods.is_empty())
                    .count();
                for _ in pending..40 {
                    next += 1;
                    w.submit(Job::gang(format!("{q}-{next}"), *q, 0, next, 1, gpu_pod(1)));
                }
            }
            w.step();
            if cycle >= 100 {
                for (i, q) in leaves.iter().enumerate() {
                    sums[i] += w.gpu_usage(q);
                }
                samples += 1;
            }
            for id in w.running_jobs() {
                if rng.random_bool(0.2) {
                    w.complete(&id);
                }
            }
        }
        let total: u64 = sums.iter().sum();
        assert!(
            total as f64 / samples as f64 > 80_000.0,
            "cluster contended"
        );
        for (i, (q, share)) in expect.iter().enumerate() {
            let got = sums[i] as f64 / total as f64;
            assert!(
                (got - share).abs() < 0.03,
                "queue {q}: share {got:.3}, expected {share:.3}"
            );
        }
    }
}

fn one_queue_eight_gpus() -> World {
    World::new(nodes("n", 1, 8), single_queue(), Config::default())
}

#[test]
fn priority_preempts_the_lowest_priority_youngest_pods_of_its_queue_only_when_it_fits() {
    // Fits after evicting the two priority-1 jobs: both go, the priority-5 job stays.
    let mut w = one_queue_eight_gpus();
    w.run_on(Job::gang("mid", "q", 5, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.run_on(Job::gang("lo-old", "q", 1, 1, 1, gpu_pod(2)), &["n0"], 1);
    w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(0b0011_0000);
    w.run_on(Job::gang("lo-young", "q", 1, 2, 1, gpu_pod(2)), &["n0"], 2);
    w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(0b1100_0000);
    w.submit(Job::gang("high", "q", 10, 3, 1, gpu_pod(4)));
    let out = w.step();
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["lo-old", "lo-young"]));
    assert!(out.evictions.iter().all(|e| matches!(
        e.rule,
        PreemptionRule::Priority {
            victim_priority: 1,
            preemptor_priority: 10
        }
    )));
    assert_eq!(out.job("high").unwrap().state, JobState::Nominated);
    w.step();
    assert!(w.running.iter().any(|r| r.job.as_deref() == Some("high")));

    // Needs only 2 GPUs: only the youngest lowest-priority job goes.
    let mut w = one_queue_eight_gpus();
    w.run_on(Job::gang("mid", "q", 5, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.run_on(Job::gang("lo-old", "q", 1, 1, 1, gpu_pod(2)), &["n0"], 1);
    w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(0b0011_0000);
    w.run_on(Job::gang("lo-young", "q", 1, 2, 1, gpu_pod(2)), &["n0"], 2);
    w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(0b1100_0000);
    w.submit(Job::gang("high", "q", 10, 3, 1, gpu_pod(2)));
    let out = w.step();
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["lo-young"]));

    // Would not fit even with every lower-priority pod gone: nothing is evicted.
    let mut w = one_queue_eight_gpus();
    w.run_on(Job::gang("mid", "q", 5, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.run_on(Job::gang("lo", "q", 1, 1, 1, gpu_pod(4)), &["n0"], 1);
    w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(0b1111_0000);
    w.submit(Job::gang("huge", "q", 10, 3, 2, gpu_pod(6)));
    w.submit(Job::gang("wide", "q", 3, 3, 2, gpu_pod(4)));
    let out = w.step();
    assert!(out.evictions.is_empty(), "{:?}", out.evictions);
    let huge = out.job("huge").unwrap();
    assert_eq!(huge.state, JobState::Pending);
    assert!(
        huge.preemption
            .as_deref()
            .is_some_and(|p| p.contains("lower-priority jobs of its queue would not make it fit")),
        "{:?}",
        huge.preemption
    );
    // ("wide", priority 3, needs 8 GPUs: only "lo" is below it — not enough.)
    assert_eq!(out.job("wide").unwrap().state, JobState::Pending);
}

#[test]
fn a_job_that_is_no_gang_gives_up_only_the_pods_a_preemptor_needs() {
    // A controller's four replicas (one job, minMember 1) fill the node; a higher-priority
    // pod needing 2 GPUs evicts only the youngest replica, not the whole job.
    let mut w = one_queue_eight_gpus();
    let mut web = Job::gang("Deployment ns/web", "q", 1, 0, 4, gpu_pod(2));
    web.min_member = 1;
    w.run_on(web, &["n0", "n0", "n0", "n0"], 0);
    for (i, r) in w.running.iter_mut().enumerate() {
        r.started = 10 + i as u64;
    }
    w.submit(Job::gang("urgent", "q", 10, 5, 1, gpu_pod(2)));
    let out = w.step();
    let victims: Vec<&str> = out.evictions.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(victims, ["Deployment ns/web-3"], "{:?}", out.evictions);
    assert_eq!(out.evictions[0].job, "Deployment ns/web");
    assert_ne!(
        out.job("Deployment ns/web").unwrap().state,
        JobState::Preempted
    );
    w.step();
    assert!(w.running.iter().any(|r| r.job.as_deref() == Some("urgent")));
    let replicas = w
        .running
        .iter()
        .filter(|r| r.job.as_deref() == Some("Deployment ns/web"))
        .count();
    assert_eq!(replicas, 3);

    // A gang of the same shape is still evicted whole.
    let mut w = one_queue_eight_gpus();
    w.run_on(
        Job::gang("gang", "q", 1, 0, 4, gpu_pod(2)),
        &["n0", "n0", "n0", "n0"],
        0,
    );
    w.submit(Job::gang("urgent", "q", 10, 5, 1, gpu_pod(2)));
    let out = w.step();
    assert_eq!(out.evictions.len(), 4, "{:?}", out.evictions);
}

#[test]
fn priority_never_evicts_equal_priority_or_other_queues_or_useless_victims() {
    // Equal priority: no eviction.
    let mut w = one_queue_eight_gpus();
    w.run_on(Job::gang("old", "q", 5, 0, 1, gpu_pod(8)), &["n0"], 0);
    w.submit(Job::gang("new", "q", 5, 1, 1, gpu_pod(8)));
    assert!(w.step().evictions.is_empty());

    // Another queue's lower-priority job (no guarantees, so no reclaim): no eviction.
    let mut w = World::new(
        nodes("n", 1, 8),
        vec![QueueSpec::new("q"), QueueSpec::new("r")],
        Config::default(),
    );
    w.run_on(Job::gang("other", "r", 0, 0, 1, gpu_pod(8)), &["n0"], 0);
    w.submit(Job::gang("high", "q", 100, 1, 1, gpu_pod(8)));
    let out = w.step();
    assert!(out.evictions.is_empty());

    // Lower-priority pods on nodes the job cannot use are not evicted.
    let mut ns = labelled(nodes("a", 1, 8), "pool", "a");
    ns.extend(labelled(nodes("b", 1, 8), "pool", "b"));
    let mut w = World::new(ns, single_queue(), Config::default());
    w.run_on(Job::gang("lo", "q", 0, 0, 1, gpu_pod(8)), &["a0"], 0);
    w.run_on(Job::gang("peer", "q", 9, 0, 1, gpu_pod(8)), &["b0"], 0);
    let mut pod = gpu_pod(8);
    pod.node_selector = vec![("pool".into(), "b".into())];
    w.submit(Job::gang("picky", "q", 9, 1, 1, pod));
    let out = w.step();
    assert!(out.evictions.is_empty(), "{:?}", out.evictions);
}

#[test]
fn fifo_holds_within_a_queue() {
    let mut w = one_queue_eight_gpus();
    // Submitted out of order; each needs the whole node.
    for (id, created) in [("j3", 3), ("j1", 1), ("j5", 5), ("j2", 2), ("j4", 4)] {
        w.submit(Job::gang(id, "q", 0, created, 1, gpu_pod(8)));
    }
    let mut order = Vec::new();
    for _ in 0..6 {
        let out = w.step();
        for b in &out.binds {
            order.push(b.job.clone());
        }
        for id in w.running_jobs() {
            w.complete(&id);
        }
    }
    assert_eq!(order, vec!["j1", "j2", "j3", "j4", "j5"]);
    // Priority goes before arrival.
    let mut w = one_queue_eight_gpus();
    w.submit(Job::gang("early", "q", 0, 1, 1, gpu_pod(8)));
    w.submit(Job::gang("urgent", "q", 7, 2, 1, gpu_pod(8)));
    let out = w.step();
    assert_eq!(out.binds[0].job, "urgent");
}

/// A head needing a whole 8-GPU node, and a stream of one-GPU jobs that keeps the node
/// partly busy. Returns (cycle the head started, backfilled jobs before it).
fn head_vs_stream(wait: u64, cycles: usize) -> (Option<usize>, usize) {
    let config = Config {
        backfill_wait: wait,
        ..Config::default()
    };
    let mut w = World::new(nodes("n", 1, 8), single_queue(), config);
    let mut ages: std::collections::BTreeMap<String, usize> = Default::default();
    // The node starts busy with small jobs of staggered ages.
    for i in 0..8 {
        let id = format!("warm{i}");
        w.run_on(Job::gang(&id, "q", 0, 0, 1, gpu_pod(1)), &["n0"], 0);
        w.running.last_mut().unwrap().cards = ferry_sched_core::CardSet(1 << i);
        ages.insert(id, i % 3);
    }
    w.submit(Job::gang("head", "q", 0, 1, 1, gpu_pod(8)));
    let mut next = 0;
    let mut backfilled = 0;
    for cycle in 0..cycles {
        // Small jobs keep arriving (always some pending), each runs 3 cycles.
        for _ in 0..3 {
            next += 1;
            w.submit(Job::gang(
                format!("s{next}"),
                "q",
                0,
                1 + next,
                1,
                gpu_pod(1),
            ));
        }
        let out = w.step();
        if w.started.contains_key("head") {
            return (Some(cycle), backfilled);
        }
        backfilled += out.binds.len();
        for id in w.running_jobs() {
            let age = ages.entry(id.clone()).or_insert(0);
            *age += 1;
            if *age >= 3 {
                w.complete(&id);
            }
        }
        // Only the newest 20 small jobs stay queued (the stream is endless, not unbounded).
        let pending: Vec<String> = w
            .jobs
            .values()
            .filter(|j| j.id != "head" && !j.pods.is_empty())
            .map(|j| j.id.clone())
            .collect();
        for id in pending.iter().take(pending.len().saturating_sub(20)) {
            w.jobs.remove(id);
        }
    }
    (None, backfilled)
}

#[test]
fn backfill_never_starves_the_head_of_line_job() {
    // Without a bounded wait the small jobs would starve the head forever.
    let (started, backfilled) = head_vs_stream(u64::MAX, 60);
    assert_eq!(started, None);
    assert!(backfilled > 50);
    // With a 5-cycle wait: small jobs backfill first, then the head's node is held for it,
    // drains within the small jobs' 3-cycle run, and the head starts.
    let (started, backfilled) = head_vs_stream(5_000, 60);
    let started = started.expect("head starts");
    assert!(backfilled > 0, "backfill happened before the hold");
    assert!(started <= 5 + 3 + 2, "head started at cycle {started}");
}

#[test]
fn head_of_line_hold_sets_quota_aside() {
    // Queue limit 8 GPUs; head needs 8 while small jobs keep using part of the quota.
    let queues = vec![QueueSpec::new("q").borrowing(Limits {
        gpu_milli: Some(8000),
        ..Limits::NONE
    })];
    let config = Config {
        backfill_wait: 3_000,
        ..Config::default()
    };
    let mut w = World::new(nodes("n", 4, 8), queues, config);
    w.run_on(Job::gang("small0", "q", 0, 0, 1, gpu_pod(1)), &["n0"], 0);
    w.submit(Job::gang("head", "q", 0, 1, 1, gpu_pod(8)));
    let mut next = 0;
    let mut started = None;
    for cycle in 0..20 {
        next += 1;
        w.submit(Job::gang(
            format!("s{next}"),
            "q",
            0,
            10 + next,
            1,
            gpu_pod(1),
        ));
        let out = w.step();
        if w.started.contains_key("head") {
            started = Some(cycle);
            break;
        }
        let head = out.job("head").unwrap();
        assert!(
            matches!(head.reason, Some(PendingReason::Quota(_))),
            "{:?}",
            head.reason
        );
        // Each small job runs 2 cycles.
        let done: Vec<String> = w
            .running_jobs()
            .into_iter()
            .filter(|j| w.started.get(j).is_some_and(|&t| w.now - t >= 2_000))
            .collect();
        for id in done {
            w.complete(&id);
        }
    }
    let started = started.expect("head starts");
    assert!(started <= 3 + 2 + 2, "head started at cycle {started}");
}

#[test]
fn reservations_hold_capacity_for_matching_jobs_until_their_ttl() {
    let mut w = World::new(nodes("n", 1, 8), single_queue(), Config::default());
    w.reservations.push(Reservation {
        name: "team-a".into(),
        selector: [("team".to_string(), "a".to_string())].into(),
        nodes: vec!["n0".into()],
        per_node: PodRequest::new(0, 0, GpuRequest::whole(4), ModelSet::ANY),
        expires_at: Some(5_000),
    });
    // Others get only the unreserved half.
    w.submit(Job::gang("other", "q", 0, 0, 1, gpu_pod(6)));
    w.submit(Job::gang("other-small", "q", 0, 1, 1, gpu_pod(4)));
    let out = w.step();
    assert_eq!(out.job("other-small").unwrap().state, JobState::Bound);
    let other = out.job("other").unwrap();
    assert_eq!(other.state, JobState::Pending);
    assert!(
        other
            .message
            .contains("4 GPU held by reservations and holds for other jobs"),
        "{}",
        other.message
    );
    let r = &out.reservations[0];
    assert_eq!(r.nodes[0].held, Resources::gpus(4));
    // A matching job uses the held capacity.
    w.submit(Job::gang("mine", "q", 0, 2, 1, gpu_pod(4)).with_labels(&[("team", "a")]));
    let out = w.step();
    assert_eq!(out.job("mine").unwrap().state, JobState::Bound);
    assert_eq!(out.reservations[0].nodes[0].used.gpu_milli, 4000);
    assert_eq!(out.reservations[0].nodes[0].held, Resources::ZERO);
    // After it ends, the room is held again until the TTL; then anyone can use it.
    w.complete("mine");
    w.complete("other-small");
    let out = w.step();
    assert_eq!(out.job("other").unwrap().state, JobState::Pending, "t = 3s");
    while w.now < 5_000 {
        w.step();
    }
    let out = w.step();
    assert_eq!(out.job("other").unwrap().state, JobState::Bound);
    assert!(!out.reservations[0].active);
}

#[test]
fn reservations_steer_matching_jobs_to_their_nodes() {
    let mut w = World::new(nodes("n", 3, 8), single_queue(), Config::default());
    w.reservations.push(Reservation {
        name: "r".into(),
        selector: [("team".to_string(), "a".to_string())].into(),
        nodes: vec!["n2".into()],
        per_node: PodRequest::new(0, 0, GpuRequest::whole(8), ModelSet::ANY),
        expires_at: None,
    });
    w.submit(Job::gang("mine", "q", 0, 0, 2, gpu_pod(2)).with_labels(&[("team", "a")]));
    let out = w.step();
    assert!(out.binds.iter().all(|b| b.node == "n2"), "{:?}", out.binds);
}

#[test]
fn resource_policies_fill_the_first_unit_first_and_remove_from_the_last_first() {
    let mut ns = labelled(nodes("a", 2, 4), "pool", "on-demand");
    ns.extend(labelled(nodes("b", 2, 4), "pool", "spot"));
    ns.extend(nodes("x", 2, 4));
    let policy = ResourcePolicy {
        name: "spill".into(),
        selector: [("app".to_string(), "train".to_string())].into(),
        units: vec![
            Unit::labelled("on-demand", "pool", "on-demand").max_pods(3),
            Unit::labelled("spot", "pool", "spot"),
        ],
    };
    let mut w = World::new(ns, single_queue(), Config::default());
    w.policies.push(policy.clone());
    w.submit(Job::gang("t", "q", 0, 0, 6, gpu_pod(1)).with_labels(&[("app", "train")]));
    let out = w.step();
    let pool = |node: &str| node.chars().next().unwrap();
    let mut per_pool = std::collections::BTreeMap::new();
    for b in &out.binds {
        *per_pool.entry(pool(&b.node)).or_insert(0) += 1;
    }
    assert_eq!(per_pool, [('a', 3), ('b', 3)].into());
    // The cap counts running pods: a second job goes to spot only.
    w.submit(Job::gang("t2", "q", 0, 1, 2, gpu_pod(1)).with_labels(&[("app", "train")]));
    let out = w.step();
    assert!(out.binds.iter().all(|b| pool(&b.node) == 'b'));
    // Removal order: spot pods first.
    let pods: Vec<(String, Vec<(String, String)>)> = w
        .running
        .iter()
        .map(|r| {
            let labels = w
                .nodes
                .iter()
                .find(|n| n.name == r.node)
                .unwrap()
                .labels
                .clone();
            (r.node.clone(), labels)
        })
        .collect();
    let order = policy.removal_order(&pods);
    let first_on_demand = order.iter().position(|n| pool(n) == 'a').unwrap();
    assert!(order[..first_on_demand].iter().all(|n| pool(n) == 'b'));
    assert_eq!(first_on_demand, 5);
}

#[test]
fn victims_on_the_last_unit_go_first() {
    let mut ns = labelled(nodes("a", 1, 4), "pool", "on-demand");
    ns.extend(labelled(nodes("b", 1, 4), "pool", "spot"));
    let mut w = World::new(ns, single_queue(), Config::default());
    w.policies.push(ResourcePolicy {
        name: "spill".into(),
        selector: [("app".to_string(), "svc".to_string())].into(),
        units: vec![
            Unit::labelled("on-demand", "pool", "on-demand"),
            Unit::labelled("spot", "pool", "spot"),
        ],
    });
    // The on-demand job is younger, yet the spot one goes first.
    w.run_on(
        Job::gang("on-spot", "q", 0, 0, 1, gpu_pod(4)).with_labels(&[("app", "svc")]),
        &["b0"],
        0,
    );
    w.run_on(
        Job::gang("on-demand", "q", 0, 1, 1, gpu_pod(4)).with_labels(&[("app", "svc")]),
        &["a0"],
        5,
    );
    w.submit(Job::gang("high", "q", 5, 2, 1, gpu_pod(4)));
    let out = w.step();
    let victims: Vec<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, vec!["on-spot"]);
}

#[test]
fn pending_reasons_cover_every_case() {
    let mut w = World::new(
        nodes("n", 1, 4),
        vec![
            QueueSpec::new("parent"),
            QueueSpec::new("leaf").parent("parent"),
        ],
        Config::default(),
    );
    w.submit(Job::gang("lost", "nowhere", 0, 0, 1, gpu_pod(1)));
    w.submit(Job::gang("inner", "parent", 0, 0, 1, gpu_pod(1)));
    let mut short = Job::gang("short", "leaf", 0, 0, 3, gpu_pod(1));
    short.min_member = 5;
    w.submit(short);
    let mut bad = gpu_pod(1);
    bad.gpu.milli = 1200;
    w.submit(Job::gang("bad", "leaf", 0, 0, 1, bad));
    let out = w.step();
    assert_eq!(
        out.job("lost").unwrap().message,
        "queue nowhere does not exist"
    );
    assert!(out.job("inner").unwrap().message.contains("leaf queue"));
    assert_eq!(
        out.job("short").unwrap().message,
        "gang needs 5 pods, only 3 exist; waiting for the rest to be created"
    );
    assert!(
        out.job("bad")
            .unwrap()
            .message
            .starts_with("pod bad-0: invalid pod request")
    );
}

#[test]
fn backfill_off_makes_later_jobs_wait_behind_the_head() {
    let config = Config {
        backfill: false,
        ..Config::default()
    };
    let mut w = World::new(nodes("n", 1, 4), single_queue(), config);
    w.submit(Job::gang("big", "q", 0, 0, 1, gpu_pod(8)));
    w.submit(Job::gang("small", "q", 0, 1, 1, gpu_pod(1)));
    let out = w.step();
    assert!(out.binds.is_empty());
    assert_eq!(
        out.job("small").unwrap().message,
        "waiting behind head-of-line job big (backfill is off)"
    );
}

#[test]
fn elastic_jobs_start_with_min_member_and_grow() {
    let mut w = World::new(nodes("n", 1, 4), single_queue(), Config::default());
    let mut job = Job::gang("elastic", "q", 0, 0, 6, gpu_pod(1));
    job.min_member = 2;
    w.submit(job);
    let out = w.step();
    let r = out.job("elastic").unwrap();
    assert_eq!((r.state, r.bound, r.pending), (JobState::Bound, 4, 2));
    assert!(
        r.message
            .starts_with("4 pods bound; 2 more wait: pod elastic-"),
        "{}",
        r.message
    );
    // One more node later: the rest come without waiting for a whole gang.
    w.nodes.extend(nodes("m", 1, 4));
    let out = w.step();
    assert_eq!(out.job("elastic").unwrap().bound, 2);
}

#[test]
fn room_made_by_preemption_is_held_until_the_victims_are_gone() {
    // b borrows: 4 GPUs on n0 and n1 each, 2 on n2 and n3 (2 free GPUs left there).
    let mut w = World::new(nodes("n", 4, 4), two_teams(), Config::default());
    w.run_on(Job::gang("b0", "b", 0, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.run_on(Job::gang("b1", "b", 0, 1, 1, gpu_pod(4)), &["n1"], 1);
    w.run_on(Job::gang("b2", "b", 0, 2, 1, gpu_pod(2)), &["n2"], 2);
    w.run_on(Job::gang("b3", "b", 0, 3, 1, gpu_pod(2)), &["n3"], 3);
    w.now = 10_000;
    w.submit(Job::gang("a-train", "a", 0, 10, 2, gpu_pod(4)));
    let out = w.planner.run(&w.snapshot()).unwrap();
    let victims: BTreeSet<&str> = out.evictions.iter().map(|e| e.job.as_str()).collect();
    assert_eq!(victims, BTreeSet::from(["b2", "b3"]));
    assert_eq!(out.job("a-train").unwrap().state, JobState::Nominated);
    // The victims take a while to terminate: they are still listed (not even marked
    // terminating yet). A new job of b would fit in the 2 free GPUs of n2 — but they are
    // held for a-train, and nothing is evicted twice.
    w.now += 1_000;
    w.submit(Job::gang("b-new", "b", 0, 20, 1, gpu_pod(2)));
    let out = w.planner.run(&w.snapshot()).unwrap();
    assert!(out.evictions.is_empty(), "{:?}", out.evictions);
    assert!(out.binds.is_empty(), "{:?}", out.binds);
    let a = out.job("a-train").unwrap();
    assert_eq!(a.state, JobState::Nominated);
    assert_eq!(
        a.message,
        "room is held for this job; waiting for 2 preempted pods to terminate"
    );
    let b_new = out.job("b-new").unwrap();
    assert!(
        b_new
            .message
            .contains("held by reservations and holds for other jobs"),
        "{}",
        b_new.message
    );
    // Gone: a-train binds on the held nodes, b-new still finds no room.
    w.complete("b2");
    w.complete("b3");
    w.now += 1_000;
    let out = w.step();
    let a_nodes: BTreeSet<&str> = out
        .binds
        .iter()
        .filter(|b| b.job == "a-train")
        .map(|b| b.node.as_str())
        .collect();
    assert_eq!(a_nodes, BTreeSet::from(["n2", "n3"]));
    assert!(out.binds.iter().all(|b| b.job == "a-train"));
}

#[test]
fn a_nomination_lapses_after_its_ttl() {
    let config = Config {
        nomination_ttl: 2_000,
        ..Config::default()
    };
    let mut w = World::new(nodes("n", 1, 4), single_queue(), config);
    w.run_on(Job::gang("lo", "q", 0, 0, 1, gpu_pod(4)), &["n0"], 0);
    w.submit(Job::gang("hi", "q", 9, 1, 1, gpu_pod(4)));
    let out = w.planner.run(&w.snapshot()).unwrap();
    assert_eq!(out.evictions.len(), 1);
    assert_eq!(out.carry.holds.len(), 1);
    // Within the TTL the victim counts as terminating: not chosen again, room still held.
    w.now = 1_000;
    let out = w.planner.run(&w.snapshot()).unwrap();
    assert!(out.evictions.is_empty());
    assert_eq!(out.job("hi").unwrap().state, JobState::Nominated);
    // The victim never goes away (say its eviction was refused): after the TTL the hold
    // lapses and the eviction is retried, once per TTL.
    w.now = 5_000;
    let out = w.planner.run(&w.snapshot()).unwrap();
    assert_eq!(out.evictions.len(), 1);
    assert_eq!(out.carry.holds[0].since, 5_000);
}

#[test]
fn the_gang_is_the_first_pods_of_the_job() {
    // A driver (CPU only) and three GPU executors, min_member 1, on a node without free
    // GPUs: the driver starts, the executors wait for room one by one.
    let mut w = World::new(nodes("n", 1, 2), single_queue(), Config::default());
    w.run_on(Job::gang("busy", "q", 9, 0, 1, gpu_pod(2)), &["n0"], 0);
    let mut job = Job::gang("spark", "q", 0, 1, 4, gpu_pod(1));
    job.pods[0].request = PodRequest::new(2000, 4096, GpuRequest::NONE, ModelSet::ANY);
    job.min_member = 1;
    w.submit(job);
    let out = w.step();
    assert_eq!(out.binds.len(), 1);
    assert_eq!(out.binds[0].pod, "spark-0");
    let r = out.job("spark").unwrap();
    assert_eq!((r.state, r.pending), (JobState::Bound, 3));
}

#[test]
fn fifo_within_one_creation_time_follows_arrival_not_the_name() {
    // One GPU, two one-GPU jobs created in the same second: the first to arrive runs,
    // whatever the names say.
    let mut w = World::new(nodes("n", 1, 1), single_queue(), Config::default());
    let mut first = Job::gang("zz-first", "q", 0, 1000, 1, gpu_pod(1));
    first.arrival = 7;
    let mut second = Job::gang("aa-second", "q", 0, 1000, 1, gpu_pod(1));
    second.arrival = 8;
    w.submit(second);
    w.submit(first);
    w.step();
    let bound: Vec<_> = w.running.iter().filter_map(|r| r.job.clone()).collect();
    assert_eq!(bound, ["zz-first"]);
}

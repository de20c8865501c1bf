//! Property tests over random clusters, queue trees and workloads, run for many cycles with
//! random completions, arrivals, and evicted pods coming back as pending:
//! - never over-commit (CPU, memory, pods, cards): every running pod and bind fits;
//! - a gang is fully bound or not at all;
//! - a queue within its guarantee is never preempted by another queue, and reclaim never
//!   takes a queue below a guarantee it met, except the contested resources it borrowed
//!   when the victim gang straddles the guarantee;
//! - priority preemption only evicts strictly lower priority of the same queue;
//! - usage never exceeds a queue's guarantee + borrowing limit;
//! - no preemption cycle: once arrivals and completions stop, evictions stop (within a
//!   bounded number of cycles, and never start again), and no two jobs evict each other;
//! - every pending job says why.
//!
//! Plus: the batch explanation equals the engine's own `explain`.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{H100, World};
use ferry_sched_core::model::{CardSpec, Taint, TaintEffect, Toleration};
use ferry_sched_core::{
    CardSet, Cluster, GpuRequest, ModelId, ModelSet, NodeSpec, PodRequest, PolicyKind, Scheduler,
};
use ferry_sched_jobs::{
    Config, Job, JobState, Limits, Outcome, PreemptionRule, QueueSpec, Resource, Resources,
};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Debug, Clone)]
struct Setup {
    nodes: Vec<NodeSpec>,
    queues: Vec<QueueSpec>,
    jobs: Vec<Job>,
    seed: u64,
    config: Config,
}

fn pod_shape() -> impl Strategy<Value = PodRequest> {
    (0u8..6, 1u64..8).prop_map(|(g, cpu)| {
        let gpu = match g {
            0 => GpuRequest::NONE,
            1 | 2 => GpuRequest::whole(1),
            3 => GpuRequest::whole(2),
            4 => GpuRequest::whole(4),
            _ => GpuRequest::shared(500, 0),
        };
        PodRequest::new(cpu * 1000, cpu * 2048, gpu, ModelSet::ANY)
    })
}

fn setup() -> impl Strategy<Value = Setup> {
    let nodes = prop::collection::vec((0usize..4, 2u64..9), 2..6);
    // Per top-level queue: its number of children (0 = a leaf itself).
    let tree = prop::collection::vec(0usize..4, 1..4);
    let jobs = prop::collection::vec((0usize..16, 0i32..4, 1u32..5, 0u32..3, pod_shape()), 6..30);
    (
        nodes,
        tree,
        jobs,
        any::<u64>(),
        prop::collection::vec(0u64..100, 24),
        any::<bool>(),
    )
        .prop_map(|(nodes, tree, jobs, seed, fractions, backfill)| {
            let nodes: Vec<NodeSpec> = nodes
                .into_iter()
                .enumerate()
                .map(|(i, (g, cpu))| {
                    let gpus = [0, 2, 4, 8][g];
                    NodeSpec::simple(
                        format!("n{i}"),
                        cpu * 8000,
                        cpu * 16_384,
                        (gpus > 0).then_some(H100),
                        gpus,
                    )
                })
                .collect();
            let cap_gpu: u64 = nodes.iter().map(|n| n.cards.len() as u64 * 1000).sum();
            let cap_cpu: u64 = nodes.iter().map(|n| n.cpu_milli).sum();
            let mut f = fractions.into_iter().cycle();
            let mut frac = |total: u64, of: u64| total * f.next().unwrap() / 100 / of.max(1);
            let mut queues = Vec::new();
            let mut leaves = Vec::new();
            let tops = tree.len() as u64;
            for (t, children) in tree.iter().enumerate() {
                let name = format!("t{t}");
                let g = Resources::new(frac(cap_cpu, tops), 0, frac(cap_gpu, tops), 0);
                let limited = frac(100, 1) < 40;
                let mut spec = QueueSpec::new(&name)
                    .guarantee(g)
                    .weight(1.0 + (t % 3) as f64);
                if limited {
                    spec = spec.borrowing(Limits {
                        gpu_milli: Some(frac(cap_gpu, 2)),
                        cpu_milli: Some(frac(cap_cpu, 2)),
                        ..Limits::NONE
                    });
                }
                queues.push(spec);
                if *children == 0 {
                    leaves.push(name.clone());
                }
                for c in 0..*children {
                    let child = format!("{name}c{c}");
                    let pct = frac(100, 1);
                    let share = |x: u64| x * pct / 100 / *children as u64;
                    let mut spec = QueueSpec::new(&child)
                        .parent(&name)
                        .guarantee(Resources::new(share(g.cpu_milli), 0, share(g.gpu_milli), 0))
                        .weight(1.0 + c as f64);
                    if frac(100, 1) < 30 {
                        spec = spec.borrowing(Limits {
                            gpu_milli: Some(frac(cap_gpu, 3)),
                            ..Limits::NONE
                        });
                    }
                    queues.push(spec);
                    leaves.push(child);
                }
            }
            let jobs = jobs
                .into_iter()
                .enumerate()
                .map(|(i, (q, prio, size, slack, pod))| {
                    let mut job = Job::gang(
                        format!("j{i}"),
                        leaves[q % leaves.len()].clone(),
                        prio,
                        i as u64,
                        size,
                        pod,
                    );
                    job.min_member = size.saturating_sub(slack).max(1);
                    job
                })
                .collect();
            let config = Config {
                backfill,
                backfill_wait: 4_000,
                ..Config::default()
            };
            Setup {
                nodes,
                queues,
                jobs,
                seed,
                config,
            }
        })
}

/// Per queue (subtree), the resources of running pods.
fn usage(w: &World) -> BTreeMap<String, Resources> {
    let parent: BTreeMap<&str, Option<&str>> = w
        .queues
        .iter()
        .map(|q| (q.name.as_str(), q.parent.as_deref()))
        .collect();
    let mut u: BTreeMap<String, Resources> = BTreeMap::new();
    for r in &w.running {
        let Some(job) = r.job.as_ref().and_then(|j| w.jobs.get(j)) else {
            continue;
        };
        let mut q = Some(job.queue.as_str());
        while let Some(name) = q {
            *u.entry(name.to_string()).or_default() += Resources::of_pod(&r.request);
            q = parent.get(name).copied().flatten();
        }
    }
    u
}

fn check_cycle(w: &World, before: &World, out: &Outcome) -> Result<(), TestCaseError> {
    // Never over-commit: every running pod and every bind fits on a fresh copy.
    let mut c = Cluster::new();
    c.intern_model("H100").unwrap();
    for n in &w.nodes {
        c.add_node(n.clone()).unwrap();
    }
    for r in &w.running {
        let id = c.node_id(&r.node).unwrap();
        prop_assert!(
            c.bind(id, &r.request, r.cards).is_ok(),
            "pod {} over-commits {}",
            r.id,
            r.node
        );
    }
    // Gangs: all of min_member or nothing.
    let mut bound: BTreeMap<&str, u32> = BTreeMap::new();
    for b in &out.binds {
        *bound.entry(b.job.as_str()).or_default() += 1;
    }
    for (job, n) in &bound {
        let j = &before.jobs[*job];
        let running_before = before
            .running
            .iter()
            .filter(|r| r.job.as_deref() == Some(*job))
            .count() as u32;
        prop_assert!(
            running_before + n >= j.min_member,
            "job {job}: {running_before} running + {n} bound < min_member {}",
            j.min_member
        );
    }
    // Limits.
    let u = usage(w);
    for q in &w.queues {
        let used = u.get(&q.name).copied().unwrap_or_default();
        for r in Resource::ALL {
            if let Some(b) = q.borrowing_limit.get(r) {
                prop_assert!(
                    used.get(r) <= q.guaranteed.get(r) + b,
                    "queue {} uses {} of {r}, limit {}",
                    q.name,
                    used.get(r),
                    q.guaranteed.get(r) + b
                );
            }
        }
    }
    // Preemption rules.
    let u_before = usage(before);
    for e in &out.evictions {
        let victim = &before.jobs[&e.job];
        let preemptor = &before.jobs[&e.preemptor];
        match &e.rule {
            PreemptionRule::Priority {
                victim_priority,
                preemptor_priority,
            } => {
                prop_assert_eq!(&victim.queue, &preemptor.queue);
                prop_assert!(victim_priority < preemptor_priority);
                prop_assert_eq!(*victim_priority, victim.priority);
            }
            PreemptionRule::Reclaim { .. } => {
                prop_assert_ne!(&victim.queue, &preemptor.queue);
                let spec = w.queues.iter().find(|q| q.name == victim.queue).unwrap();
                let used = u_before.get(&victim.queue).copied().unwrap_or_default();
                prop_assert!(
                    !used.fits_within(&spec.guaranteed),
                    "queue {} within its guarantee was reclaimed from",
                    victim.queue
                );
                // Reclaim never pushes a queue below a guarantee it met (pods its own
                // higher-priority jobs evicted this cycle are added back).
                let mut after = u.get(&victim.queue).copied().unwrap_or_default();
                for o in &out.evictions {
                    if matches!(o.rule, PreemptionRule::Priority { .. })
                        && before.jobs[&o.job].queue == victim.queue
                    {
                        let pod = before.running.iter().find(|r| r.id == o.pod).unwrap();
                        after += Resources::of_pod(&pod.request);
                    }
                }
                // Whole gangs go back, so the contested (primary) resources of the
                // preemptor may end below the guarantee of a queue that borrowed them.
                let mut wants = Resources::ZERO;
                for pod in &preemptor.pods {
                    wants += Resources::of_pod(&pod.request);
                }
                let primary = Resource::primary(&wants);
                for r in Resource::ALL {
                    let g = spec.guaranteed.get(r);
                    prop_assert!(
                        used.get(r) < g
                            || after.get(r) >= g
                            || (primary.contains(&r) && used.get(r) > g),
                        "reclaim took queue {} below its guarantee of {r}: before {:?} after {:?} guaranteed {:?}; evictions {:?}",
                        victim.queue,
                        used,
                        after,
                        spec.guaranteed,
                        out.evictions
                            .iter()
                            .map(|e| (&e.pod, &e.preemptor))
                            .collect::<Vec<_>>()
                    );
                }
            }
        }
    }
    // Every pending job says why.
    for j in &out.jobs {
        if matches!(j.state, JobState::Pending | JobState::Nominated) {
            prop_assert!(j.reason.is_some() && !j.message.is_empty(), "{:?}", j);
        }
    }
    Ok(())
}

fn snapshot_world(w: &World) -> World {
    World {
        planner: common::planner(Config::default()),
        now: w.now,
        tick: w.tick,
        nodes: w.nodes.clone(),
        queues: w.queues.clone(),
        jobs: w.jobs.clone(),
        running: w.running.clone(),
        reservations: w.reservations.clone(),
        policies: w.policies.clone(),
        started: w.started.clone(),
        evicted: w.evicted.clone(),
        cycles: w.cycles,
    }
}

fn simulate(s: Setup) -> Result<(), TestCaseError> {
    let mut w = World::new(s.nodes.clone(), s.queues.clone(), s.config.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut arrivals = s.jobs.clone().into_iter();
    let mut next = s.jobs.len();
    // Open phase: arrivals and completions.
    for cycle in 0..30 {
        for _ in 0..rng.random_range(0..5) {
            if let Some(j) = arrivals.next() {
                w.submit(j);
            }
        }
        // Evicted jobs come back by themselves (the pods return as pending in `apply`);
        // now and then a fresh copy of an old job arrives too.
        if cycle % 3 == 2 && next < 80 {
            let mut j = s.jobs[rng.random_range(0..s.jobs.len())].clone();
            j.id = format!("j{next}");
            j.created = next as u64;
            for (i, p) in j.pods.iter_mut().enumerate() {
                p.id = format!("j{next}-{i}");
            }
            next += 1;
            w.submit(j);
        }
        let before = snapshot_world(&w);
        let out = w.step();
        check_cycle(&w, &before, &out)?;
        for id in w.running_jobs() {
            if rng.random_bool(0.08) {
                w.complete(&id);
            }
        }
    }
    for j in arrivals {
        w.submit(j);
    }
    // Closed phase: nothing arrives, nothing completes. Preemption must settle.
    let jobs = w.jobs.len();
    let closed_start = w.cycles;
    let horizon = 2 * jobs + 4;
    let mut last_eviction = None;
    for _ in 0..horizon {
        let before = snapshot_world(&w);
        let out = w.step();
        check_cycle(&w, &before, &out)?;
        if !out.evictions.is_empty() {
            last_eviction = Some(w.cycles);
        }
    }
    if std::env::var("PROP_STATS").is_ok() {
        let reclaims = w
            .evicted
            .iter()
            .filter(|(_, p, v)| w.jobs.get(p).map(|j| &j.queue) != w.jobs.get(v).map(|j| &j.queue))
            .count();
        eprintln!(
            "jobs {} evictions {} reclaim {} running {}",
            jobs,
            w.evicted.len(),
            reclaims,
            w.running.len()
        );
    }
    if let Some(c) = last_eviction {
        prop_assert!(
            c - closed_start <= jobs + 2,
            "evictions still at closed-phase cycle {} of {horizon} with {jobs} jobs: {:?}",
            c - closed_start,
            &w.evicted[w.evicted.len().saturating_sub(6)..]
        );
    }
    // No job evicts a job that evicted it, while nothing else changes.
    let closed: BTreeSet<(&str, &str)> = w
        .evicted
        .iter()
        .filter(|(c, _, _)| *c >= closed_start)
        .map(|(_, p, v)| (p.as_str(), v.as_str()))
        .collect();
    for (p, v) in &closed {
        prop_assert!(
            !closed.contains(&(*v, *p)),
            "{p} and {v} evicted each other in the closed phase"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn cycles_keep_every_invariant(s in setup()) {
        simulate(s)?;
    }
}

/// A cluster with random labels, taints, card memory and partly used nodes.
fn explain_cluster(seed: u64) -> (Cluster, Vec<PodRequest>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut c = Cluster::new();
    let a = c.intern_model("A").unwrap();
    let b = c.intern_model("B").unwrap();
    for i in 0..40 {
        let gpus = [0, 1, 4, 8][rng.random_range(0..4)];
        let model = if rng.random_bool(0.5) { a } else { b };
        let mut spec = NodeSpec::simple(
            format!("n{i}"),
            rng.random_range(4..64) * 1000,
            rng.random_range(4..64) * 1024,
            (gpus > 0).then_some(model),
            gpus,
        );
        spec.max_pods = rng.random_range(1..6);
        for card in &mut spec.cards {
            *card = CardSpec {
                memory_mib: [0, 16_384, 40_960][rng.random_range(0..3)],
                nvlink_peers: 0,
            };
        }
        if rng.random_bool(0.3) {
            spec.labels
                .push(("zone".into(), format!("z{}", rng.random_range(0..2))));
        }
        if rng.random_bool(0.2) {
            spec.taints.push(Taint {
                key: "dedicated".into(),
                value: "x".into(),
                effect: if rng.random_bool(0.8) {
                    TaintEffect::NoSchedule
                } else {
                    TaintEffect::PreferNoSchedule
                },
            });
        }
        c.add_node(spec).unwrap();
    }
    let mut requests = Vec::new();
    for _ in 0..60 {
        let gpu = match rng.random_range(0..5) {
            0 => GpuRequest::NONE,
            1 => GpuRequest::whole(rng.random_range(1..5)),
            2 => GpuRequest::shared(rng.random_range(1..10) * 100, 0),
            3 => GpuRequest::shared(
                rng.random_range(1..10) * 100,
                rng.random_range(1..30) * 1024,
            ),
            _ => GpuRequest::whole(8),
        };
        let models = match rng.random_range(0..3) {
            0 => ModelSet::ANY,
            1 => ModelSet::only(ModelId(0)),
            _ => ModelSet::only(ModelId(1)),
        };
        let mut r = PodRequest::new(
            rng.random_range(0..16) * 1000,
            rng.random_range(0..16) * 1024,
            gpu,
            if gpu.is_gpu() { models } else { ModelSet::ANY },
        );
        if rng.random_bool(0.3) {
            r.node_selector.push(("zone".into(), "z1".into()));
        }
        if rng.random_bool(0.3) {
            r.tolerations.push(Toleration {
                key: Some("dedicated".into()),
                value: None,
                effect: None,
            });
        }
        requests.push(r);
    }
    // Use part of the cluster.
    let mut engine = Scheduler::new(PolicyKind::BestFit.build(seed));
    for r in requests.iter().take(30) {
        let _ = engine.place(&mut c, r);
    }
    let _ = CardSet::EMPTY;
    (c, requests)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn batch_explanations_equal_the_engines(seed in any::<u64>()) {
        let (cluster, requests) = explain_cluster(seed);
        let engine = Scheduler::new(PolicyKind::BestFit.build(0));
        prop_assert!(ferry_sched_jobs::explain::default_chain(&engine));
        let refs: Vec<&PodRequest> = requests.iter().collect();
        let batch = ferry_sched_jobs::explain::explain_batch(&cluster, &refs);
        for (r, got) in requests.iter().zip(batch) {
            let want = engine.explain(&cluster, r);
            prop_assert_eq!(got, want, "request {:?}", r);
        }
    }
}

#[test]
fn a_custom_filter_switches_to_the_engines_explain() {
    struct No;
    impl ferry_sched_core::FilterPlugin for No {
        fn name(&self) -> &'static str {
            "No"
        }
        fn filter(
            &self,
            _: &ferry_sched_core::state::Node,
            _: &PodRequest,
        ) -> Result<(), ferry_sched_core::framework::FilterReason> {
            Err(ferry_sched_core::framework::FilterReason::Custom("no"))
        }
    }
    let mut engine = Scheduler::new(PolicyKind::BestFit.build(0));
    engine.add_filter(ferry_sched_core::plugins::Filter::Custom(Box::new(No)));
    assert!(!ferry_sched_jobs::explain::default_chain(&engine));
    let mut planner = ferry_sched_jobs::Planner::new(engine, Config::default());
    planner.intern_model("H100").unwrap();
    let snap = ferry_sched_jobs::Snapshot {
        nodes: common::nodes("n", 2, 4),
        queues: vec![QueueSpec::new("q")],
        jobs: vec![Job::gang("j", "q", 0, 0, 1, common::gpu_pod(1))],
        ..Default::default()
    };
    let out = planner.run(&snap).unwrap();
    assert_eq!(
        out.job("j").unwrap().message,
        "pod j-0: 0/2 nodes are available: 2 no"
    );
}

//! Elastic surplus: scenarios (grow into idle capacity, shrink under reclaim and priority
//! preemption, surplus before any minimum, grow after every gang) and properties over random
//! workloads mixing elastic jobs and gangs:
//! - never below min: an elastic job keeps at least `min_member` running pods, or loses all;
//! - a job that keeps running loses surplus pods only (flagged so), single pods; on one
//!   node that is highest order first (the scenarios; across nodes, highest first among
//!   the pods whose node can help the preemptor);
//! - no ping-pong: every eviction makes room for a job's minimum (its preemptor had fewer
//!   than `min_member` running), never for surplus; once arrivals stop, evictions stop;
//! - determinism: the same inputs give the same decisions.

mod common;

use std::collections::BTreeMap;

use common::{World, gpu_pod, nodes};
use ferry_sched_jobs::{Config, Job, JobState, Outcome, PreemptionRule, QueueSpec, Resources};
use proptest::prelude::*;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn running_of(w: &World, job: &str) -> Vec<String> {
    let mut v: Vec<String> = w
        .running
        .iter()
        .filter(|r| r.job.as_deref() == Some(job))
        .map(|r| r.id.clone())
        .collect();
    v.sort();
    v
}

fn two_queues(a: u64, b: u64) -> Vec<QueueSpec> {
    vec![
        QueueSpec::new("a").guarantee(Resources::gpus(a)),
        QueueSpec::new("b").guarantee(Resources::gpus(b)),
    ]
}

#[test]
fn grows_into_idle_gpus_and_shrinks_to_min_when_another_queue_reclaims() {
    let mut w = World::new(nodes("n", 1, 4), two_queues(2, 2), Config::default());
    w.submit(Job::elastic("e", "a", 0, 0, 2, 4, gpu_pod(1)));
    let out = w.step();
    assert_eq!(out.binds.len(), 4, "{:?}", out.jobs);
    assert_eq!(running_of(&w, "e").len(), 4);

    // Queue b, within its guarantee, takes back 2 GPUs: the two highest-order surplus pods.
    w.submit(Job::gang("g", "b", 0, 1, 2, gpu_pod(1)));
    let out = w.step();
    let mut evicted: Vec<&str> = out.evictions.iter().map(|e| e.pod.as_str()).collect();
    evicted.sort();
    assert_eq!(evicted, ["e-2", "e-3"]);
    assert!(out.evictions.iter().all(|e| e.surplus && e.job == "e"));
    assert!(matches!(
        out.evictions[0].rule,
        PreemptionRule::Reclaim { .. }
    ));
    let e = out.job("e").unwrap();
    assert_eq!(e.shrunk, 2);
    assert_ne!(e.state, JobState::Preempted);
    assert!(
        e.message.contains("2 surplus pods taken back"),
        "{}",
        e.message
    );
    assert_eq!(running_of(&w, "e"), ["e-0", "e-1"]);

    // g binds on the room; e's surplus waits; nothing is evicted again.
    for _ in 0..5 {
        let out = w.step();
        assert!(out.evictions.is_empty(), "{:?}", out.evictions);
    }
    assert_eq!(running_of(&w, "g").len(), 2);
    assert_eq!(running_of(&w, "e").len(), 2);
    let out = w.step();
    let e = out.job("e").unwrap();
    assert_eq!(e.pending, 2);
    assert!(e.reason.is_some(), "{e:?}");

    // g finishes: e grows back to 4, lowest order first.
    w.complete("g");
    let out = w.step();
    assert_eq!(out.binds.len(), 2);
    assert_eq!(running_of(&w, "e").len(), 4);
}

#[test]
fn surplus_pods_go_before_any_jobs_minimum_even_of_lower_priority() {
    // Queue a borrows: a low-priority gang x (2 GPUs) and a high-priority elastic job e
    // (min 1, 3 running). Queue b reclaims 2 GPUs: e's two surplus pods go, x keeps running.
    let mut w = World::new(nodes("n", 1, 5), two_queues(0, 4), Config::default());
    w.run_on(Job::gang("x", "a", 0, 0, 2, gpu_pod(1)), &["n0", "n0"], 0);
    w.submit(Job::elastic("e", "a", 10, 1, 1, 3, gpu_pod(1)));
    w.step();
    assert_eq!(running_of(&w, "e").len(), 3);
    w.submit(Job::gang("g", "b", 0, 2, 2, gpu_pod(1)));
    let out = w.step();
    let mut evicted: Vec<&str> = out.evictions.iter().map(|e| e.pod.as_str()).collect();
    evicted.sort();
    assert_eq!(evicted, ["e-1", "e-2"], "{:?}", out.evictions);
    assert_eq!(running_of(&w, "x").len(), 2);
    assert_eq!(running_of(&w, "e"), ["e-0"]);
}

#[test]
fn priority_preemption_takes_one_surplus_pod_not_the_job() {
    let mut w = World::new(
        nodes("n", 1, 4),
        vec![QueueSpec::new("a").guarantee(Resources::gpus(4))],
        Config::default(),
    );
    w.submit(Job::elastic("e", "a", 0, 0, 2, 4, gpu_pod(1)));
    w.step();
    assert_eq!(running_of(&w, "e").len(), 4);
    w.submit(Job::gang("hi", "a", 5, 1, 1, gpu_pod(1)));
    let out = w.step();
    assert_eq!(out.evictions.len(), 1);
    assert_eq!(out.evictions[0].pod, "e-3");
    assert!(matches!(
        out.evictions[0].rule,
        PreemptionRule::Priority { .. }
    ));
    assert_eq!(running_of(&w, "e").len(), 3);
}

#[test]
fn a_minimum_is_taken_only_as_a_whole_once_no_surplus_helps() {
    // b needs 4 GPUs: e's 2 surplus are not enough, so its minimum goes too (whole).
    let mut w = World::new(nodes("n", 1, 4), two_queues(0, 4), Config::default());
    w.submit(Job::elastic("e", "a", 0, 0, 2, 4, gpu_pod(1)));
    w.step();
    w.submit(Job::gang("g", "b", 0, 1, 4, gpu_pod(1)));
    let out = w.step();
    assert_eq!(out.evictions.len(), 4, "{:?}", out.evictions);
    assert_eq!(out.job("e").unwrap().state, JobState::Preempted);
    assert!(running_of(&w, "e").is_empty());
}

#[test]
fn surplus_grows_only_after_every_gang_had_its_turn() {
    // e (queue a, min 1, max 4) and gang g (queue b, borrowing, 3 GPUs) arrive together on 4
    // GPUs: g starts, e gets its minimum and the one GPU left.
    let mut w = World::new(nodes("n", 1, 4), two_queues(1, 0), Config::default());
    w.submit(Job::elastic("e", "a", 0, 0, 1, 4, gpu_pod(1)));
    w.submit(Job::gang("g", "b", 0, 1, 3, gpu_pod(1)));
    let out = w.step();
    assert!(out.evictions.is_empty());
    assert_eq!(running_of(&w, "g").len(), 3);
    assert_eq!(running_of(&w, "e"), ["e-0"]);
}

#[test]
fn surplus_never_preempts_to_grow() {
    // e's surplus waits behind x (lower priority, same queue): growing evicts nobody.
    let mut w = World::new(
        nodes("n", 1, 4),
        vec![QueueSpec::new("a").guarantee(Resources::gpus(4))],
        Config::default(),
    );
    w.run_on(Job::gang("x", "a", 0, 0, 2, gpu_pod(1)), &["n0", "n0"], 0);
    w.submit(Job::elastic("e", "a", 9, 1, 2, 4, gpu_pod(1)));
    for _ in 0..3 {
        let out = w.step();
        assert!(out.evictions.is_empty(), "{:?}", out.evictions);
    }
    assert_eq!(running_of(&w, "e").len(), 2);
    assert_eq!(running_of(&w, "x").len(), 2);
}

// ---- properties ----

#[derive(Debug, Clone)]
struct Setup {
    gpus: Vec<usize>,
    guarantees: Vec<u64>,
    jobs: Vec<Job>,
    seed: u64,
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        prop::collection::vec(prop_oneof![Just(2usize), Just(4), Just(8)], 1..4),
        prop::collection::vec(0u64..6, 2..4),
        prop::collection::vec(
            (any::<bool>(), 0usize..4, 0i32..3, 1u32..4, 0u32..4, 1u8..3),
            4..16,
        ),
        any::<u64>(),
    )
        .prop_map(|(gpus, guarantees, jobs, seed)| {
            let nq = guarantees.len();
            let jobs = jobs
                .into_iter()
                .enumerate()
                .map(|(i, (elastic, q, prio, min, extra, g))| {
                    let queue = format!("q{}", q % nq);
                    if elastic {
                        Job::elastic(
                            format!("e{i}"),
                            queue,
                            prio,
                            i as u64,
                            min,
                            min + extra,
                            gpu_pod(1),
                        )
                    } else {
                        Job::gang(format!("g{i}"), queue, prio, i as u64, min, gpu_pod(g))
                    }
                })
                .collect();
            Setup {
                gpus,
                guarantees,
                jobs,
                seed,
            }
        })
}

fn world(s: &Setup) -> World {
    let ns = s
        .gpus
        .iter()
        .enumerate()
        .flat_map(|(i, &g)| nodes(&format!("n{i}-"), 1, g))
        .collect();
    let queues = s
        .guarantees
        .iter()
        .enumerate()
        .map(|(i, &g)| QueueSpec::new(format!("q{i}")).guarantee(Resources::gpus(g)))
        .collect();
    World::new(ns, queues, Config::default())
}

fn check(before: &World, out: &Outcome) -> Result<(), TestCaseError> {
    let mut evicted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in &out.evictions {
        evicted
            .entry(e.job.as_str())
            .or_default()
            .push(e.pod.as_str());
        // No ping-pong: room is only ever made for a job's minimum.
        let p = &before.jobs[&e.preemptor];
        let running = running_of(before, &e.preemptor).len() as u32;
        prop_assert!(
            running < p.min_member,
            "{} evicted for {} which already had its minimum ({running} of {})",
            e.pod,
            e.preemptor,
            p.min_member
        );
        let state = out.job(&e.preemptor).unwrap().state;
        prop_assert!(matches!(state, JobState::Bound | JobState::Nominated));
    }
    for (job, pods) in &evicted {
        let j = &before.jobs[*job];
        let running = running_of(before, job);
        let left = running.len() - pods.len();
        // Never below min: all or at least the minimum stays.
        prop_assert!(
            left == 0 || left as u32 >= j.min_member,
            "job {job} left with {left} of min {}",
            j.min_member
        );
        if j.is_elastic() && left > 0 {
            prop_assert!(
                out.evictions
                    .iter()
                    .filter(|e| e.job == *job)
                    .all(|e| e.surplus)
            );
        }
    }
    Ok(())
}

fn simulate(s: &Setup) -> Result<Vec<String>, TestCaseError> {
    let mut w = world(s);
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed);
    let mut arrivals = s.jobs.clone().into_iter();
    let mut log = Vec::new();
    for cycle in 0..40 {
        if cycle < 20 {
            for _ in 0..rng.random_range(0..3) {
                if let Some(j) = arrivals.next() {
                    w.submit(j);
                }
            }
            if rng.random_range(0..4) == 0 {
                let running = w.running_jobs();
                if !running.is_empty() {
                    let j = running[rng.random_range(0..running.len())].clone();
                    w.complete(&j);
                }
            }
        }
        let before = World {
            planner: common::planner(Config::default()),
            now: w.now,
            tick: w.tick,
            nodes: w.nodes.clone(),
            queues: w.queues.clone(),
            jobs: w.jobs.clone(),
            running: w.running.clone(),
            reservations: Vec::new(),
            policies: Vec::new(),
            started: BTreeMap::new(),
            evicted: Vec::new(),
            cycles: 0,
        };
        let out = w.step();
        check(&before, &out)?;
        if cycle >= 28 {
            prop_assert!(
                out.evictions.is_empty(),
                "evictions after arrivals stopped: {:?}",
                out.evictions
            );
        }
        for b in &out.binds {
            log.push(format!("{cycle} bind {} {}", b.pod, b.node));
        }
        for e in &out.evictions {
            log.push(format!("{cycle} evict {} for {}", e.pod, e.preemptor));
        }
    }
    Ok(log)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn elastic_invariants_and_determinism(s in setup()) {
        let a = simulate(&s)?;
        let b = simulate(&s)?;
        prop_assert_eq!(a, b);
    }
}

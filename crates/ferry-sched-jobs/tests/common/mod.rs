//! A small world for multi-cycle tests: jobs, running pods and the clock; each step runs a
//! cycle and applies its binds and evictions (evicted pods terminate at once and come back
//! as pending pods of their job).

#![allow(dead_code)]

use std::collections::BTreeMap;

use ferry_sched_core::{
    GpuRequest, ModelId, ModelSet, NodeSpec, PodRequest, PolicyKind, Scheduler,
};
use ferry_sched_jobs::{
    Config, Job, JobId, Outcome, PendingPod, Planner, QueueSpec, Reservation, ResourcePolicy,
    RunningPod, Snapshot, Time,
};

/// A pod asking for `gpus` whole cards (1 CPU, 1 GiB each).
pub fn gpu_pod(gpus: u8) -> PodRequest {
    PodRequest::new(1000, 1024, GpuRequest::whole(gpus), ModelSet::ANY)
}

/// The GPU model of the test nodes (the first one the planner interns).
pub const H100: ModelId = ModelId(0);

/// `n` nodes named `<prefix><i>` with `gpus` H100 cards, 64 CPUs, 256 GiB.
pub fn nodes(prefix: &str, n: usize, gpus: usize) -> Vec<NodeSpec> {
    (0..n)
        .map(|i| NodeSpec::simple(format!("{prefix}{i}"), 64_000, 262_144, Some(H100), gpus))
        .collect()
}

/// The same nodes with a label.
pub fn labelled(mut nodes: Vec<NodeSpec>, key: &str, value: &str) -> Vec<NodeSpec> {
    for n in &mut nodes {
        n.labels.push((key.to_string(), value.to_string()));
    }
    nodes
}

pub fn planner(config: Config) -> Planner {
    let mut p = Planner::new(Scheduler::new(PolicyKind::BestFit.build(0)), config);
    assert_eq!(p.intern_model("H100"), Ok(H100));
    p
}

/// The world.
pub struct World {
    pub planner: Planner,
    pub now: Time,
    pub tick: Time,
    pub nodes: Vec<NodeSpec>,
    pub queues: Vec<QueueSpec>,
    pub jobs: BTreeMap<JobId, Job>,
    pub running: Vec<RunningPod>,
    pub reservations: Vec<Reservation>,
    pub policies: Vec<ResourcePolicy>,
    /// When each job's gang first got bound.
    pub started: BTreeMap<JobId, Time>,
    /// Evictions so far: (cycle, preemptor, victim job).
    pub evicted: Vec<(usize, JobId, JobId)>,
    pub cycles: usize,
}

impl World {
    pub fn new(nodes: Vec<NodeSpec>, queues: Vec<QueueSpec>, config: Config) -> Self {
        World {
            planner: planner(config),
            now: 0,
            tick: 1000,
            nodes,
            queues,
            jobs: BTreeMap::new(),
            running: Vec::new(),
            reservations: Vec::new(),
            policies: Vec::new(),
            started: BTreeMap::new(),
            evicted: Vec::new(),
            cycles: 0,
        }
    }

    pub fn submit(&mut self, job: Job) {
        self.jobs.insert(job.id.clone(), job);
    }

    /// Puts a job straight onto nodes: pod i of the gang on `nodes[i]`, cards from 0 on
    /// per node.
    pub fn run_on(&mut self, job: Job, nodes: &[&str], started: Time) {
        let mut next: BTreeMap<&str, usize> = BTreeMap::new();
        for (pod, node) in job.pods.iter().zip(nodes) {
            let first = next.entry(node).or_insert(0);
            let mut cards = ferry_sched_core::CardSet::EMPTY;
            for c in 0..pod.request.gpu.count as usize {
                cards.insert(*first + c);
            }
            *first += pod.request.gpu.count as usize;
            self.running.push(RunningPod {
                id: pod.id.clone(),
                job: Some(job.id.clone()),
                node: node.to_string(),
                cards,
                request: pod.request.clone(),
                started,
                terminating: false,
            });
        }
        self.started.insert(job.id.clone(), started);
        let mut j = job;
        j.pods.clear();
        self.jobs.insert(j.id.clone(), j);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            now: self.now,
            nodes: self.nodes.clone(),
            running: self.running.clone(),
            queues: self.queues.clone(),
            jobs: self.jobs.values().cloned().collect(),
            reservations: self.reservations.clone(),
            policies: self.policies.clone(),
        }
    }

    /// One cycle; applies its decisions; advances the clock.
    pub fn step(&mut self) -> Outcome {
        let snap = self.snapshot();
        let out = self.planner.run(&snap).expect("cycle");
        self.apply(&out);
        self.cycles += 1;
        self.now += self.tick;
        out
    }

    pub fn apply(&mut self, out: &Outcome) {
        for e in &out.evictions {
            if let Some(i) = self.running.iter().position(|r| r.id == e.pod) {
                let r = self.running.remove(i);
                let job = self.jobs.get_mut(&e.job).expect("victim job");
                job.pods.push(PendingPod {
                    id: r.id,
                    request: r.request,
                });
                self.started.remove(&e.job);
            }
        }
        let mut victims: Vec<(JobId, JobId)> = out
            .evictions
            .iter()
            .map(|e| (e.preemptor.clone(), e.job.clone()))
            .collect();
        victims.dedup();
        for (p, v) in victims {
            self.evicted.push((self.cycles, p, v));
        }
        for b in &out.binds {
            let job = self.jobs.get_mut(&b.job).expect("bound job");
            let i = job.pods.iter().position(|p| p.id == b.pod).expect("pod");
            let pod = job.pods.remove(i);
            self.running.push(RunningPod {
                id: pod.id,
                job: Some(b.job.clone()),
                node: b.node.clone(),
                cards: b.cards,
                request: pod.request,
                started: self.now,
                terminating: false,
            });
            self.started.entry(b.job.clone()).or_insert(self.now);
        }
    }

    /// The job finishes: its pods leave, the job is gone.
    pub fn complete(&mut self, job: &str) {
        self.running.retain(|r| r.job.as_deref() != Some(job));
        self.jobs.remove(job);
    }

    /// Jobs with running pods.
    pub fn running_jobs(&self) -> Vec<JobId> {
        let mut v: Vec<JobId> = self.running.iter().filter_map(|r| r.job.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// GPU thousandths used by running pods of jobs in `queue`.
    pub fn gpu_usage(&self, queue: &str) -> u64 {
        self.running
            .iter()
            .filter(|r| {
                r.job
                    .as_ref()
                    .and_then(|j| self.jobs.get(j))
                    .is_some_and(|j| j.queue == queue)
            })
            .map(|r| r.request.gpu.total_milli() as u64)
            .sum()
    }
}

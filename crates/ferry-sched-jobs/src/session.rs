//! The cycle: a session over a snapshot, with transactions on the cluster's undo journal.
//! The session holds the state; the steps of the cycle are the actions of
//! [`crate::actions`], run in order by [`Planner::run`]:
//! 1. build the state: bind running pods, charge queue usage, set holds aside (quota and
//!    node claims), bind reservation placeholders;
//! 2. jobs with a preemption hold go first, on the room made for them;
//! 3. the **guarantee pass**: jobs that fit within the guarantee of their queue and every
//!    ancestor, queues in hierarchical guarantee-fill order; a job that does not fit may
//!    reclaim borrowed capacity ([`crate::preempt`]);
//! 4. the **borrowing pass**: every other job, queues in hierarchical dominant borrowed
//!    share order ([`crate::fairshare`]), admitted against guarantee + borrowing limit;
//! 5. head-of-line waits and holds ([`crate::backfill`]);
//! 6. reports and explanations; the cluster is emptied again for the next cycle.
//!
//! Within a queue, jobs go by priority, then arrival (`created`, then `arrival`, then the
//! id). A job that cannot start is passed over for later ones (backfill) unless backfill is
//! off.

use std::collections::{BTreeMap, HashMap};

use ferry_sched_core::{CardSet, Cluster, NodeId, NodeSpec, PodHandle, PodRequest, Scheduler};

use crate::explain::PendingReason;
use crate::fairshare::{self, Pass};
use crate::input::{Config, JobId, Snapshot, Time};
use crate::outcome::{
    Bind, Carry, CycleStats, Eviction, Hold, HoldKind, JobReport, JobState, Outcome, QueueReport,
};
use crate::queues::{Book, QueueError, QueueIx, QueueTree, QuotaBlock};
use crate::reservation::{self, ReservationReport, ReservedNode};
use crate::resources::{Limits, Resource, Resources};

/// Label the cycle adds to the nodes of each active reservation (value: its name), so a
/// matching job's pods can be steered to them.
pub const RESERVATION_LABEL: &str = "ferry.sched/reservation";

/// Errors that stop a cycle.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SessionError {
    /// The queue tree is invalid.
    #[error(transparent)]
    Queues(#[from] QueueError),
    /// A node could not be added.
    #[error(transparent)]
    Node(#[from] ferry_sched_core::state::StateError),
}

/// The job-level scheduler: keeps the nodes in a placement-engine cluster between cycles
/// (pods are bound for a cycle and released after, so the engine's per-node score cache
/// stays valid), the engine itself, the knobs, and the state carried between cycles.
pub struct Planner {
    cluster: Cluster,
    engine: Scheduler,
    config: Config,
    nodes: HashMap<String, (NodeId, NodeSpec)>,
    carry: Carry,
}

impl std::fmt::Debug for Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planner")
            .field("nodes", &self.nodes.len())
            .field("config", &self.config)
            .field("carry", &self.carry)
            .finish()
    }
}

impl Planner {
    /// A planner placing pods with `engine`. The engine's failure explanations are turned
    /// off during cycles (the cycle explains pending jobs once, at the end).
    pub fn new(mut engine: Scheduler, config: Config) -> Self {
        engine.set_explain_failures(false);
        Planner {
            cluster: Cluster::new(),
            engine,
            config,
            nodes: HashMap::new(),
            carry: Carry::default(),
        }
    }

    /// Interns a GPU model name (node specs and pod requests must use these ids); fails when
    /// [`ferry_sched_core::model::MAX_MODELS`] names are known at once.
    pub fn intern_model(
        &mut self,
        name: &str,
    ) -> Result<ferry_sched_core::ModelId, ferry_sched_core::model::ModelError> {
        self.cluster.intern_model(name)
    }

    /// Forgets the GPU models `keep` refuses and no node of the planner carries, so their
    /// ids serve new names. Call it between cycles with the ids the next snapshot uses.
    pub fn retain_models(&mut self, mut keep: impl FnMut(ferry_sched_core::ModelId) -> bool) {
        let on_nodes: std::collections::HashSet<ferry_sched_core::ModelId> = self
            .nodes
            .values()
            .filter_map(|(_, spec)| spec.gpu_model)
            .collect();
        self.cluster
            .models_mut()
            .retain(|id| on_nodes.contains(&id) || keep(id));
    }

    /// The cluster's GPU model names.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The placement engine.
    pub fn engine_mut(&mut self) -> &mut Scheduler {
        &mut self.engine
    }

    /// The knobs.
    pub fn config_mut(&mut self) -> &mut Config {
        &mut self.config
    }

    /// The state carried to the next cycle.
    pub fn carry(&self) -> &Carry {
        &self.carry
    }

    /// Replaces the carried state (e.g. restored after a restart).
    pub fn set_carry(&mut self, carry: Carry) {
        self.carry = carry;
    }

    fn sync_nodes(&mut self, snap: &Snapshot) -> Result<(), SessionError> {
        let mut extra: HashMap<&str, Vec<(String, String)>> = HashMap::new();
        for r in snap.reservations.iter().filter(|r| r.active(snap.now)) {
            for n in &r.nodes {
                extra
                    .entry(n.as_str())
                    .or_default()
                    .push((RESERVATION_LABEL.to_string(), r.name.clone()));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for spec in &snap.nodes {
            if !seen.insert(spec.name.as_str()) {
                continue;
            }
            let mut want = spec.clone();
            if let Some(labels) = extra.get(spec.name.as_str()) {
                want.labels.extend(labels.iter().cloned());
            }
            match self.nodes.get(&spec.name) {
                Some((_, have)) if *have == want => {}
                Some(&(id, ref have)) => {
                    if have.cards.len() == want.cards.len() {
                        self.cluster.update_node(id, want.clone())?;
                        self.nodes.insert(spec.name.clone(), (id, want));
                    } else {
                        self.cluster.remove_node(id)?;
                        let id = self.cluster.add_node(want.clone())?;
                        self.nodes.insert(spec.name.clone(), (id, want));
                    }
                }
                None => {
                    let id = self.cluster.add_node(want.clone())?;
                    self.nodes.insert(spec.name.clone(), (id, want));
                }
            }
        }
        let gone: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| !seen.contains(n.as_str()))
            .cloned()
            .collect();
        for name in gone {
            if let Some((id, _)) = self.nodes.remove(&name) {
                self.cluster.remove_node(id)?;
            }
        }
        Ok(())
    }

    /// Runs one cycle over `snap`.
    pub fn run(&mut self, snap: &Snapshot) -> Result<Outcome, SessionError> {
        let tree = QueueTree::new(&snap.queues)?;
        self.sync_nodes(snap)?;
        let before = self.engine.stats().decisions;
        let mut session = Session::new(
            &self.config,
            snap,
            tree,
            &mut self.cluster,
            &mut self.engine,
            &self.carry,
        );
        session.run();
        let mut outcome = session.finish();
        outcome.stats.engine_decisions = self.engine.stats().decisions - before;
        self.carry = outcome.carry.clone();
        Ok(outcome)
    }
}

/// A pod placed in this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    /// Index into the job's `pods`.
    pub pod: usize,
    pub node: NodeId,
    pub cards: CardSet,
    pub handle: PodHandle,
    /// Resource-policy unit, when one applies.
    pub unit: Option<usize>,
}

/// Why a gang could not be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GangFail {
    pub fit: u32,
    pub needed: u32,
    /// Index into the job's `pods` of the first pod that did not fit.
    pub pod: usize,
    /// The request as tried (with the unit's selector, when any).
    pub request: PodRequest,
}

#[derive(Debug, Clone)]
pub(crate) enum Blocked {
    Quota(QuotaBlock),
    Capacity(GangFail),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct JobRt {
    pub queue: Option<QueueIx>,
    pub invalid: Option<PendingReason>,
    /// Running (non-terminating) pods, indices into `snap.running`.
    pub running: Vec<usize>,
    pub usage: Resources,
    pub started: Time,
    pub policy: Option<usize>,
    /// Active reservations it may use.
    pub reservations: Vec<usize>,
    /// Its hold, index into `Session::holds`.
    pub hold: Option<usize>,
    /// Pending pods in placement order (largest first, identical ones together).
    pub order: Vec<usize>,
    /// The first `gang` of `order` go all or nothing.
    pub gang: usize,
    /// What the gang asks for.
    pub req: Resources,
    pub placed: Vec<Placed>,
    pub nominated: bool,
    pub victims_terminating: u32,
    pub blocked: Option<Blocked>,
    /// Reason for extra pods left pending after the gang started.
    pub extra_blocked: Option<Blocked>,
    pub preemption_note: Option<String>,
    pub evicted: bool,
    pub done: bool,
    pub behind: Option<usize>,
    /// Highest resource-policy unit its running pods are in (victims: last unit first).
    pub unit_rank: usize,
    /// Elastic: its running surplus pods (indices into `snap.running`), highest order first.
    pub surplus: Vec<usize>,
    /// Surplus pods taken back this cycle.
    pub shrunk: u32,
}

#[derive(Debug, Clone)]
pub(crate) struct RunRt {
    pub job: Option<usize>,
    pub node: Option<NodeId>,
    pub handle: Option<PodHandle>,
    pub terminating: bool,
    pub res: Resources,
    /// Evicted this cycle (alone, as a pod of a job that is no gang).
    pub evicted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimOwner {
    /// Reservation slot.
    Slot(usize),
    /// Hold.
    Hold(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Claim {
    pub owner: ClaimOwner,
    pub handle: Option<PodHandle>,
    pub held: Resources,
}

/// A reservation on one node.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub reservation: usize,
    pub node: NodeId,
    pub used: Resources,
}

#[derive(Debug, Clone)]
pub(crate) struct HoldRt {
    pub hold: Hold,
    pub job: usize,
    /// Per held pod: node, request, exact cards, index into the job's pods.
    pub pods: Vec<(NodeId, PodRequest, Option<CardSet>, Option<usize>)>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UnitUse {
    pub pods: u32,
    pub res: Resources,
}

/// A transaction: the cluster's checkpoint plus, unless it only touches the cluster,
/// copies of the session's small books.
pub(crate) struct Txn {
    cp: ferry_sched_core::state::Checkpoint,
    saved: Option<Saved>,
}

struct Saved {
    book: Book,
    claims: Vec<Claim>,
    units: Vec<Vec<UnitUse>>,
    slots: Vec<Resources>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Memo {
    pub epoch: u64,
    pub max_fit: u32,
}

pub(crate) struct Session<'a> {
    pub cfg: &'a Config,
    pub snap: &'a Snapshot,
    pub now: Time,
    pub tree: QueueTree,
    pub cluster: &'a mut Cluster,
    pub engine: &'a mut Scheduler,
    pub carry: &'a Carry,
    pub capacity: Resources,
    pub book: Book,
    pub jobs: Vec<JobRt>,
    pub job_ix: HashMap<&'a str, usize>,
    pub running: Vec<RunRt>,
    pub claims: Vec<Claim>,
    pub slots: Vec<Slot>,
    pub holds: Vec<HoldRt>,
    pub units: Vec<Vec<UnitUse>>,
    /// Leaf → its jobs in queue order.
    pub lists: Vec<Vec<usize>>,
    /// Leaf → index of its first job not yet handled in this pass.
    pub cursor: Vec<usize>,
    pub memo: HashMap<PodRequest, Memo>,
    pub epoch: u64,
    pub depth: usize,
    pub evictions: Vec<Eviction>,
    pub new_holds: Vec<Hold>,
    pub waiting: BTreeMap<JobId, Time>,
    pub stats: CycleStats,
    pub warnings: Vec<String>,
}

/// The first `gang` pods (in the job's order) come first, then the others; each part
/// largest first with identical requests together.
fn placement_order(job: &crate::input::Job, gang: usize) -> Vec<usize> {
    let pods = &job.pods;
    let mut order: Vec<usize> = (0..pods.len()).collect();
    if job.is_elastic() {
        // Elastic: by surplus order (the gang is the lowest), input order among equals.
        order.sort_by_key(|&p| (job.order_of(&pods[p].id), p));
        return order;
    }
    let key = |&a: &usize, &b: &usize| {
        let (x, y) = (&pods[a].request, &pods[b].request);
        (
            y.gpu.count,
            y.gpu.milli,
            y.gpu.memory_mib,
            y.cpu_milli,
            y.memory_mib,
        )
            .cmp(&(
                x.gpu.count,
                x.gpu.milli,
                x.gpu.memory_mib,
                x.cpu_milli,
                x.memory_mib,
            ))
            .then(y.gpu_models.cmp(&x.gpu_models))
            .then(x.node_selector.cmp(&y.node_selector))
            .then(a.cmp(&b))
    };
    let (head, tail) = order.split_at_mut(gang.min(pods.len()));
    head.sort_by(key);
    tail.sort_by(key);
    order
}

impl<'a> Session<'a> {
    fn new(
        cfg: &'a Config,
        snap: &'a Snapshot,
        tree: QueueTree,
        cluster: &'a mut Cluster,
        engine: &'a mut Scheduler,
        carry: &'a Carry,
    ) -> Self {
        let mut capacity = Resources::ZERO;
        for (_, n) in cluster.nodes() {
            capacity += Resources::new(
                n.spec.cpu_milli,
                n.spec.memory_mib,
                n.spec.cards.len() as u64 * 1000,
                n.spec.cards.iter().map(|c| c.memory_mib as u64).sum(),
            );
        }
        let book = Book::new(&tree);
        let lists = vec![Vec::new(); tree.len()];
        let units = snap
            .policies
            .iter()
            .map(|p| vec![UnitUse::default(); p.units.len()])
            .collect();
        let mut s = Session {
            cfg,
            snap,
            now: snap.now,
            tree,
            cluster,
            engine,
            carry,
            capacity,
            book,
            jobs: Vec::new(),
            job_ix: HashMap::new(),
            running: Vec::new(),
            claims: Vec::new(),
            slots: Vec::new(),
            holds: Vec::new(),
            units,
            lists,
            cursor: Vec::new(),
            memo: HashMap::new(),
            epoch: 0,
            depth: 0,
            evictions: Vec::new(),
            new_holds: Vec::new(),
            waiting: BTreeMap::new(),
            stats: CycleStats::default(),
            warnings: Vec::new(),
        };
        s.load_jobs();
        s.load_running();
        s.load_gangs();
        s.load_holds();
        s.load_reservations();
        s
    }

    fn load_jobs(&mut self) {
        let snap = self.snap;
        self.jobs = vec![JobRt::default(); snap.jobs.len()];
        for (j, job) in snap.jobs.iter().enumerate() {
            if self.job_ix.contains_key(job.id.as_str()) {
                self.warnings
                    .push(format!("job {} is listed twice; the first is used", job.id));
                self.jobs[j].invalid = Some(PendingReason::NotTried);
                self.jobs[j].done = true;
                continue;
            }
            self.job_ix.insert(job.id.as_str(), j);
            let rt = &mut self.jobs[j];
            match self.tree.index(&job.queue) {
                None => {
                    rt.invalid = Some(PendingReason::UnknownQueue {
                        queue: job.queue.clone(),
                    })
                }
                Some(q) if !self.tree.is_leaf(q) => {
                    rt.invalid = Some(PendingReason::NotALeafQueue {
                        queue: job.queue.clone(),
                    })
                }
                Some(q) => rt.queue = Some(q),
            }
            if rt.invalid.is_none()
                && let Some((pod, err)) = job
                    .pods
                    .iter()
                    .find_map(|p| p.request.validate().err().map(|e| (p, e)))
            {
                rt.invalid = Some(PendingReason::InvalidPod {
                    pod: pod.id.clone(),
                    error: err.to_string(),
                });
            }
            rt.policy = snap.policies.iter().position(|p| p.applies(&job.labels));
            rt.reservations = snap
                .reservations
                .iter()
                .enumerate()
                .filter(|(_, r)| r.active(snap.now) && r.admits(&job.labels))
                .map(|(i, _)| i)
                .collect();
        }
    }

    fn load_running(&mut self) {
        let snap = self.snap;
        for rp in &snap.running {
            // A pod this scheduler evicted counts as terminating until it is gone, or until
            // the nomination TTL has passed (then the eviction is taken to have failed and
            // the pod is an ordinary running pod again).
            let evicting = self
                .carry
                .evicted
                .get(&rp.id)
                .is_some_and(|&t| self.now < t.saturating_add(self.cfg.nomination_ttl));
            let terminating = rp.terminating || evicting;
            let mut rt = RunRt {
                job: None,
                node: None,
                handle: None,
                terminating,
                res: Resources::of_pod(&rp.request),
                evicted: false,
            };
            match self.cluster.node_id(&rp.node) {
                None => self.warnings.push(format!(
                    "pod {} runs on unknown node {}; ignored",
                    rp.id, rp.node
                )),
                Some(id) => match self.cluster.bind(id, &rp.request, rp.cards) {
                    Ok(h) => {
                        rt.node = Some(id);
                        rt.handle = Some(h);
                    }
                    Err(e) => self.warnings.push(format!(
                        "pod {} does not fit where it runs ({e}); ignored",
                        rp.id
                    )),
                },
            }
            let job = rp
                .job
                .as_deref()
                .and_then(|id| self.job_ix.get(id).copied());
            if rp.job.is_some() && job.is_none() {
                self.warnings.push(format!(
                    "pod {} belongs to unknown job {}; counted as foreign",
                    rp.id,
                    rp.job.as_deref().unwrap_or("")
                ));
            }
            rt.job = job;
            let i = self.running.len();
            if let (Some(j), Some(node), false) = (job, rt.node, terminating) {
                let jr = &mut self.jobs[j];
                jr.running.push(i);
                jr.usage += rt.res;
                jr.started = jr.started.max(rp.started);
                if let Some(q) = jr.queue {
                    self.book.charge(&self.tree, q, &rt.res);
                }
                if let Some(p) = jr.policy {
                    let labels = &self.cluster.node(node).expect("live").spec.labels;
                    if let Some(u) = snap.policies[p].unit_of(labels) {
                        self.units[p][u].pods += 1;
                        self.units[p][u].res += rt.res;
                        jr.unit_rank = jr.unit_rank.max(u + 1);
                    }
                }
            }
            self.running.push(rt);
        }
    }

    fn load_gangs(&mut self) {
        let snap = self.snap;
        for (j, job) in snap.jobs.iter().enumerate() {
            let rt = &mut self.jobs[j];
            if rt.done {
                continue;
            }
            let running = rt.running.len() as u32;
            let need = job.min_member.saturating_sub(running) as usize;
            if rt.invalid.is_none() && need > job.pods.len() {
                rt.invalid = Some(PendingReason::WaitingForPods {
                    min_member: job.min_member,
                    pods: running + job.pods.len() as u32,
                });
            }
            rt.gang = need.min(job.pods.len());
            rt.order = placement_order(job, rt.gang);
            if job.is_elastic() && rt.running.len() > job.min_member as usize {
                let mut surplus = rt.running.clone();
                surplus.sort_by(|&a, &b| {
                    let (x, y) = (&snap.running[a], &snap.running[b]);
                    job.order_of(&y.id)
                        .cmp(&job.order_of(&x.id))
                        .then(y.started.cmp(&x.started))
                        .then(y.id.cmp(&x.id))
                });
                surplus.truncate(rt.running.len() - job.min_member as usize);
                rt.surplus = surplus;
            }
            rt.req = rt.order[..rt.gang]
                .iter()
                .map(|&p| Resources::of_pod(&job.pods[p].request))
                .fold(Resources::ZERO, |a, b| a + b);
            if rt.invalid.is_none()
                && !job.pods.is_empty()
                && let Some(q) = rt.queue
            {
                self.lists[q].push(j);
            }
        }
        for list in &mut self.lists {
            list.sort_by(|&a, &b| {
                let (x, y) = (&snap.jobs[a], &snap.jobs[b]);
                y.priority
                    .cmp(&x.priority)
                    .then(x.created.cmp(&y.created))
                    .then(x.arrival.cmp(&y.arrival))
                    .then(x.id.cmp(&y.id))
            });
        }
    }

    fn load_holds(&mut self) {
        for hold in &self.carry.holds {
            let Some(&j) = self.job_ix.get(hold.job.as_str()) else {
                continue;
            };
            let rt = &self.jobs[j];
            let (Some(q), None) = (rt.queue, &rt.invalid) else {
                continue;
            };
            if self.snap.jobs[j].pods.is_empty()
                || rt.hold.is_some()
                || hold.expires_at.is_some_and(|t| t <= self.now)
            {
                continue;
            }
            let job = &self.snap.jobs[j];
            let mut pods = Vec::new();
            for hp in &hold.pods {
                let Some(node) = self.cluster.node_id(&hp.node) else {
                    continue;
                };
                let pod = job.pods.iter().position(|p| p.id == hp.pod);
                pods.push((node, hp.request.clone(), hp.cards, pod));
            }
            let h = self.holds.len();
            self.book.hold(&self.tree, q, &hold.resources);
            for (node, req, cards, _) in &pods {
                let claim = reservation::bind_partial(self.cluster, *node, req, *cards);
                self.claims.push(Claim {
                    owner: ClaimOwner::Hold(h),
                    handle: claim.map(|c| c.0),
                    held: claim.map_or(Resources::ZERO, |c| c.1),
                });
            }
            self.jobs[j].hold = Some(h);
            self.holds.push(HoldRt {
                hold: hold.clone(),
                job: j,
                pods,
            });
        }
    }

    fn load_reservations(&mut self) {
        let snap = self.snap;
        if snap.reservations.is_empty() {
            return;
        }
        let mut on_node: HashMap<NodeId, Vec<usize>> = HashMap::new();
        for (i, rt) in self.running.iter().enumerate() {
            if let (Some(node), false, Some(_)) = (rt.node, rt.terminating, rt.job) {
                on_node.entry(node).or_default().push(i);
            }
        }
        for (ri, r) in snap.reservations.iter().enumerate() {
            if !r.active(self.now) {
                continue;
            }
            if let Err(e) = r.per_node.validate() {
                self.warnings
                    .push(format!("reservation {} is ignored: {e}", r.name));
                continue;
            }
            for name in &r.nodes {
                let Some(node) = self.cluster.node_id(name) else {
                    continue;
                };
                let mut used = Resources::ZERO;
                for &i in on_node.get(&node).map_or(&[][..], |v| v.as_slice()) {
                    let rt = &self.running[i];
                    if rt.job.is_some_and(|j| r.admits(&snap.jobs[j].labels)) {
                        used += rt.res;
                    }
                }
                let slot = self.slots.len();
                self.slots.push(Slot {
                    reservation: ri,
                    node,
                    used,
                });
                let want = reservation::remaining(&r.per_node, &used);
                let claim = reservation::bind_partial(self.cluster, node, &want, None);
                self.claims.push(Claim {
                    owner: ClaimOwner::Slot(slot),
                    handle: claim.map(|c| c.0),
                    held: claim.map_or(Resources::ZERO, |c| c.1),
                });
            }
        }
    }

    // ---- transactions ----

    pub(crate) fn begin(&mut self) -> Txn {
        self.depth += 1;
        Txn {
            cp: self.cluster.begin(),
            saved: Some(Saved {
                book: self.book.clone(),
                claims: self.claims.clone(),
                units: self.units.clone(),
                slots: self.slots.iter().map(|s| s.used).collect(),
            }),
        }
    }

    /// A transaction over the cluster only (binds and releases, nothing else).
    pub(crate) fn begin_cluster(&mut self) -> Txn {
        self.depth += 1;
        Txn {
            cp: self.cluster.begin(),
            saved: None,
        }
    }

    /// Undoes everything since `t` and keeps the transaction open.
    pub(crate) fn undo_to(&mut self, t: &Txn) {
        self.cluster.rollback(t.cp);
        if let Some(saved) = &t.saved {
            self.book.clone_from(&saved.book);
            self.claims.clone_from(&saved.claims);
            self.units.clone_from(&saved.units);
            for (s, used) in self.slots.iter_mut().zip(&saved.slots) {
                s.used = *used;
            }
        }
    }

    /// Undoes everything since `t` and closes it.
    pub(crate) fn abort(&mut self, t: Txn) {
        self.undo_to(&t);
        self.close();
    }

    /// Keeps everything since `t`.
    pub(crate) fn commit(&mut self, _t: Txn) {
        self.close();
    }

    fn close(&mut self) {
        self.depth -= 1;
        if self.depth == 0 {
            self.cluster.commit();
        }
    }

    // ---- claims ----

    /// Releases the placeholders a job may use (its reservations' and its own hold's) and
    /// takes its own hold out of the quota book. Returns how many were released.
    pub(crate) fn release_claims_for(&mut self, j: usize) -> usize {
        let rt = &self.jobs[j];
        if rt.reservations.is_empty() && rt.hold.is_none() {
            return 0;
        }
        if let (Some(h), Some(q)) = (rt.hold, rt.queue) {
            let r = self.holds[h].hold.resources;
            self.book.unhold(&self.tree, q, &r);
        }
        let mut released = 0;
        for c in 0..self.claims.len() {
            let mine = match self.claims[c].owner {
                ClaimOwner::Slot(s) => rt.reservations.contains(&self.slots[s].reservation),
                ClaimOwner::Hold(h) => Some(h) == rt.hold,
            };
            if mine && let Some(handle) = self.claims[c].handle.take() {
                self.cluster.release(handle).expect("claim is bound");
                self.claims[c].held = Resources::ZERO;
                released += 1;
            }
        }
        released
    }

    /// After a job matching reservations was placed: binds again what its reservations
    /// still hold (their amount minus what matching pods now use).
    pub(crate) fn rebind_reservations(&mut self, j: usize) {
        for c in 0..self.claims.len() {
            let ClaimOwner::Slot(s) = self.claims[c].owner else {
                continue;
            };
            if self.claims[c].handle.is_some()
                || !self.jobs[j]
                    .reservations
                    .contains(&self.slots[s].reservation)
            {
                continue;
            }
            let slot = &self.slots[s];
            let want = reservation::remaining(
                &self.snap.reservations[slot.reservation].per_node,
                &slot.used,
            );
            if let Some((h, held)) = reservation::bind_partial(self.cluster, slot.node, &want, None)
            {
                self.claims[c].handle = Some(h);
                self.claims[c].held = held;
            }
        }
    }

    /// Capacity held by placeholders that job `j` may not use.
    fn held_for_others(&self, j: usize) -> Resources {
        let rt = &self.jobs[j];
        let mut total = Resources::ZERO;
        if self.claims.is_empty() {
            return total;
        }
        for c in &self.claims {
            let mine = match c.owner {
                ClaimOwner::Slot(s) => rt.reservations.contains(&self.slots[s].reservation),
                ClaimOwner::Hold(h) => Some(h) == rt.hold,
            };
            if !mine {
                total += c.held;
            }
        }
        total
    }

    // ---- attempts ----

    pub(crate) fn request_of(&self, j: usize, pods: &[usize]) -> Resources {
        let job = &self.snap.jobs[j];
        let mut r = Resources::ZERO;
        for &p in pods {
            r += Resources::of_pod(&job.pods[p].request);
        }
        r
    }

    /// Records placed pods: queue usage, unit use, reservation use.
    pub(crate) fn apply_placed(&mut self, j: usize, placed: Vec<Placed>) {
        let job = &self.snap.jobs[j];
        let q = self.jobs[j].queue.expect("placed jobs have a queue");
        for p in &placed {
            let res = Resources::of_pod(&job.pods[p.pod].request);
            self.book.charge(&self.tree, q, &res);
            if let (Some(pol), Some(u)) = (self.jobs[j].policy, p.unit) {
                self.units[pol][u].pods += 1;
                self.units[pol][u].res += res;
            }
            for s in &mut self.slots {
                if s.node == p.node && self.jobs[j].reservations.contains(&s.reservation) {
                    s.used += res;
                }
            }
        }
        self.stats.pods_bound += placed.len() as u64;
        self.jobs[j].placed.extend(placed);
    }

    /// One try of job `j`: admission, gang placement, then extras; preemption when the
    /// gang is blocked.
    fn attempt(&mut self, j: usize) {
        self.stats.jobs_attempted += 1;
        self.stats.pods_decided += self.snap.jobs[j].pods.len() as u64;
        let q = self.jobs[j].queue.expect("attempted jobs have a queue");
        let gang: Vec<usize> = self.jobs[j].order[..self.jobs[j].gang].to_vec();
        let extras: Vec<usize> = self.jobs[j].order[self.jobs[j].gang..].to_vec();
        let req = self.request_of(j, &gang);
        let txn = self.begin();
        let released = self.release_claims_for(j);
        let result = if gang.is_empty() {
            Ok(Vec::new())
        } else {
            match self.book.admit(&self.tree, q, &req) {
                Err(b) => Err(Blocked::Quota(b)),
                Ok(()) => self
                    .place_pods(j, &gang, released == 0)
                    .map_err(Blocked::Capacity),
            }
        };
        match result {
            Ok(placed) => {
                self.apply_placed(j, placed);
                if !self.snap.jobs[j].is_elastic() {
                    self.place_extras(j, &extras);
                }
                if released > 0 {
                    self.rebind_reservations(j);
                    self.epoch += 1;
                }
                self.commit(txn);
            }
            Err(blocked) => {
                self.abort(txn);
                if !self.try_preemption(j, &gang, &req, &blocked) {
                    self.jobs[j].blocked = Some(blocked);
                }
            }
        }
    }

    /// Places pods beyond the gang one by one while quota and nodes allow.
    fn place_extras(&mut self, j: usize, extras: &[usize]) {
        let q = self.jobs[j].queue.expect("queue");
        for &p in extras {
            let res = self.request_of(j, &[p]);
            if let Err(b) = self.book.admit(&self.tree, q, &res) {
                self.jobs[j].extra_blocked = Some(Blocked::Quota(b));
                return;
            }
            match self.place_pods(j, &[p], false) {
                Ok(placed) => self.apply_placed(j, placed),
                Err(f) => {
                    self.jobs[j].extra_blocked = Some(Blocked::Capacity(f));
                    return;
                }
            }
        }
    }

    /// Jobs holding room made by preemption: bound on exactly that room when it is free,
    /// else anywhere they fit, else they keep waiting.
    pub(crate) fn run_nominated(&mut self) {
        for h in 0..self.holds.len() {
            if self.holds[h].hold.kind != HoldKind::Preemption {
                continue;
            }
            let j = self.holds[h].job;
            if self.jobs[j].done || self.jobs[j].gang == 0 {
                continue;
            }
            self.jobs[j].done = true;
            self.stats.jobs_attempted += 1;
            self.stats.pods_decided += self.snap.jobs[j].pods.len() as u64;
            let q = self.jobs[j].queue.expect("queue");
            let gang: Vec<usize> = self.jobs[j].order[..self.jobs[j].gang].to_vec();
            let req = self.request_of(j, &gang);
            let txn = self.begin();
            self.release_claims_for(j);
            if let Err(b) = self.book.admit(&self.tree, q, &req) {
                self.abort(txn);
                self.jobs[j].blocked = Some(Blocked::Quota(b));
                continue;
            }
            let exact = self.place_exact(j, h, &gang);
            let placed = match exact {
                Some(p) => Some(p),
                None => self.place_pods(j, &gang, false).ok(),
            };
            match placed {
                Some(placed) => {
                    self.apply_placed(j, placed);
                    if !self.snap.jobs[j].is_elastic() {
                        let extras: Vec<usize> = self.jobs[j].order[self.jobs[j].gang..].to_vec();
                        self.place_extras(j, &extras);
                    }
                    self.rebind_reservations(j);
                    self.epoch += 1;
                    self.commit(txn);
                }
                None => {
                    self.abort(txn);
                    let nodes: Vec<NodeId> = self.holds[h].pods.iter().map(|p| p.0).collect();
                    let terminating = self
                        .running
                        .iter()
                        .filter(|r| r.terminating && r.node.is_some_and(|n| nodes.contains(&n)))
                        .count() as u32;
                    self.jobs[j].nominated = true;
                    self.jobs[j].victims_terminating = terminating;
                    let mut hold = self.holds[h].hold.clone();
                    hold.pods
                        .retain(|hp| self.cluster.node_id(&hp.node).is_some());
                    self.new_holds.push(hold);
                }
            }
        }
    }

    /// The grow action: surplus pods of elastic jobs whose minimum runs (or was bound this
    /// cycle), one pod per job per round (jobs by priority, then arrival), each within its
    /// queue's quota and on idle capacity (never by evicting anything), until none fits.
    pub(crate) fn grow(&mut self) {
        let snap = self.snap;
        let mut jobs: Vec<usize> = (0..snap.jobs.len())
            .filter(|&j| {
                let rt = &self.jobs[j];
                snap.jobs[j].is_elastic()
                    && rt.queue.is_some()
                    && rt.invalid.is_none()
                    && !rt.evicted
                    && !rt.nominated
                    && rt.behind.is_none()
                    && (rt.gang == 0 || !rt.placed.is_empty())
                    && rt.order.len() > rt.gang
            })
            .collect();
        jobs.sort_by(|&a, &b| {
            let (x, y) = (&snap.jobs[a], &snap.jobs[b]);
            y.priority
                .cmp(&x.priority)
                .then(x.created.cmp(&y.created))
                .then(x.arrival.cmp(&y.arrival))
                .then(x.id.cmp(&y.id))
        });
        let mut next: Vec<usize> = jobs.iter().map(|&j| self.jobs[j].gang).collect();
        let mut live: Vec<bool> = vec![true; jobs.len()];
        while live.iter().any(|&l| l) {
            for (k, &j) in jobs.iter().enumerate() {
                if !live[k] {
                    continue;
                }
                let p = self.jobs[j].order[next[k]];
                let q = self.jobs[j].queue.expect("queue");
                let res = self.request_of(j, &[p]);
                let result = match self.book.admit(&self.tree, q, &res) {
                    Err(b) => Err(Blocked::Quota(b)),
                    Ok(()) => self.place_pods(j, &[p], false).map_err(Blocked::Capacity),
                };
                match result {
                    Ok(placed) => {
                        self.apply_placed(j, placed);
                        next[k] += 1;
                        if next[k] == self.jobs[j].order.len() {
                            live[k] = false;
                        }
                    }
                    Err(b) => {
                        self.jobs[j].extra_blocked = Some(b);
                        live[k] = false;
                    }
                }
            }
        }
    }

    /// Binds the pods of a preemption hold on exactly their held nodes and cards.
    fn place_exact(&mut self, j: usize, h: usize, gang: &[usize]) -> Option<Vec<Placed>> {
        let t = self.begin_cluster();
        let mut placed = Vec::new();
        for &p in gang {
            let req = &self.snap.jobs[j].pods[p].request;
            let spot = self.holds[h]
                .pods
                .iter()
                .find(|hp| hp.3 == Some(p))
                .map(|hp| (hp.0, hp.2));
            let bound = spot.and_then(|(node, cards)| {
                let cards = cards?;
                self.cluster
                    .bind(node, req, cards)
                    .ok()
                    .map(|handle| Placed {
                        pod: p,
                        node,
                        cards,
                        handle,
                        unit: None,
                    })
            });
            match bound {
                Some(pl) => placed.push(pl),
                None => {
                    self.abort(t);
                    return None;
                }
            }
        }
        if let Some(pol) = self.jobs[j].policy {
            for pl in &mut placed {
                let labels = &self.cluster.node(pl.node).expect("live").spec.labels;
                pl.unit = self.snap.policies[pol].unit_of(labels);
            }
        }
        self.commit(t);
        Some(placed)
    }

    /// The next job of leaf `q` for `pass`, if any.
    fn candidate(&mut self, q: QueueIx, pass: Pass) -> Option<usize> {
        // Skip the prefix of jobs already handled.
        let list = &self.lists[q];
        let mut c = self.cursor[q];
        while c < list.len() && self.jobs[list[c]].done {
            c += 1;
        }
        self.cursor[q] = c;
        for &j in &self.lists[q][c..] {
            let rt = &self.jobs[j];
            if rt.done {
                continue;
            }
            if rt.gang == 0 && self.snap.jobs[j].is_elastic() {
                // Its minimum runs: only surplus waits, for the grow action.
                continue;
            }
            match pass {
                Pass::Borrow => return Some(j),
                Pass::Guarantee => {
                    if rt.gang == 0 {
                        continue;
                    }
                    let primary = Resource::primary(&rt.req);
                    let mut req = rt.req;
                    if let Some(h) = rt.hold {
                        // Its own hold is part of `held`; do not count it twice.
                        req = req.saturating_sub(&self.holds[h].hold.resources);
                    }
                    if self
                        .book
                        .within_guarantee(&self.tree, self.tree.path(q), &req, primary)
                    {
                        return Some(j);
                    }
                }
            }
        }
        None
    }

    pub(crate) fn run_pass(&mut self, pass: Pass) {
        self.cursor = vec![0; self.tree.len()];
        let leaves: Vec<QueueIx> = (0..self.tree.len())
            .filter(|&q| !self.lists[q].is_empty())
            .collect();
        let mut cand: Vec<Option<usize>> = Vec::with_capacity(leaves.len());
        for &q in &leaves {
            let c = self.candidate(q, pass);
            cand.push(c);
        }
        loop {
            let best = fairshare::pick(
                &self.tree,
                &self.book,
                &self.capacity,
                pass,
                (0..leaves.len())
                    .filter(|&i| cand[i].is_some())
                    .map(|i| leaves[i]),
            );
            let Some(q) = best else { break };
            let li = leaves.iter().position(|&x| x == q).expect("leaf");
            let j = cand[li].expect("candidate");
            self.jobs[j].done = true;
            let usage_before = self.book.usage[self.tree.path(q)[0]];
            let evictions_before = self.evictions.len();
            self.attempt(j);
            let started = !self.jobs[j].placed.is_empty() || self.jobs[j].nominated;
            if !started && !self.cfg.backfill {
                for &k in &self.lists[q] {
                    if !self.jobs[k].done {
                        self.jobs[k].done = true;
                        self.jobs[k].behind = Some(j);
                    }
                }
            }
            // In the guarantee pass a change of usage moves the within-guarantee candidates
            // of the leaves under the same top-level queue (or of every leaf, after
            // evictions); otherwise only this leaf's candidate moved on.
            let top = self.tree.path(q)[0];
            if pass == Pass::Guarantee && self.evictions.len() != evictions_before {
                for i in 0..leaves.len() {
                    cand[i] = self.candidate(leaves[i], pass);
                }
            } else if pass == Pass::Guarantee && self.book.usage[top] != usage_before {
                for i in 0..leaves.len() {
                    if self.tree.path(leaves[i])[0] == top {
                        cand[i] = self.candidate(leaves[i], pass);
                    }
                }
            } else {
                cand[li] = self.candidate(q, pass);
            }
        }
    }

    /// Runs the cycle's actions in order.
    fn run(&mut self) {
        for action in crate::actions::CYCLE {
            action.execute(self);
        }
    }

    // ---- reports ----

    fn reason_of(
        &self,
        j: usize,
        blocked: &Blocked,
        why: &HashMap<PodRequest, ferry_sched_core::Unschedulable>,
    ) -> PendingReason {
        match blocked {
            Blocked::Quota(b) => PendingReason::Quota(b.clone()),
            Blocked::Capacity(f) => PendingReason::Unschedulable {
                needed: f.needed,
                fit: f.fit,
                pod: self.snap.jobs[j].pods[f.pod].id.clone(),
                why: why.get(&f.request).cloned(),
                held_for_others: self.held_for_others(j),
            },
        }
    }

    /// Node counts for every pod that did not fit, computed once per distinct request.
    fn explanations(&mut self) -> HashMap<PodRequest, ferry_sched_core::Unschedulable> {
        let mut requests: Vec<&PodRequest> = Vec::new();
        let mut seen: std::collections::HashSet<&PodRequest> = std::collections::HashSet::new();
        for rt in &self.jobs {
            for b in [&rt.blocked, &rt.extra_blocked].into_iter().flatten() {
                if let Blocked::Capacity(f) = b
                    && seen.insert(&f.request)
                {
                    requests.push(&f.request);
                }
            }
        }
        let whys = if crate::explain::default_chain(self.engine) {
            crate::explain::explain_batch(self.cluster, &requests)
        } else {
            requests
                .iter()
                .map(|r| self.engine.explain(self.cluster, r))
                .collect()
        };
        requests.into_iter().cloned().zip(whys).collect()
    }

    fn finish(mut self) -> Outcome {
        let snap = self.snap;
        let mut binds = Vec::new();
        let mut reports = Vec::with_capacity(snap.jobs.len());
        let explain_cache = self.explanations();
        let hold_of: HashMap<&str, &Hold> =
            self.new_holds.iter().map(|h| (h.job.as_str(), h)).collect();
        let mut hold_copies: Vec<Option<Hold>> = Vec::with_capacity(snap.jobs.len());
        for job in &snap.jobs {
            hold_copies.push(hold_of.get(job.id.as_str()).map(|h| (*h).clone()));
        }
        let mut pending_by_queue: Vec<(u32, u32, Resources)> =
            vec![(0, 0, Resources::ZERO); self.tree.len()];
        for (j, job) in snap.jobs.iter().enumerate() {
            let rt = self.jobs[j].clone();
            let bound = if rt.nominated {
                0
            } else {
                rt.placed.len() as u32
            };
            if !rt.nominated {
                for p in &rt.placed {
                    binds.push(Bind {
                        pod: job.pods[p.pod].id.clone(),
                        job: job.id.clone(),
                        node: self.cluster.node(p.node).expect("live").spec.name.clone(),
                        cards: p.cards,
                    });
                }
            } else {
                self.stats.pods_nominated += rt.placed.len() as u64;
            }
            let pending = job.pods.len() as u32 - bound;
            let (state, reason) = if rt.evicted {
                (JobState::Preempted, None)
            } else if let Some(r) = rt.invalid.clone() {
                (JobState::Pending, Some(r))
            } else if rt.nominated {
                (
                    JobState::Nominated,
                    Some(PendingReason::Nominated {
                        terminating: rt.victims_terminating,
                    }),
                )
            } else if bound > 0 {
                let r = rt
                    .extra_blocked
                    .as_ref()
                    .map(|b| self.reason_of(j, b, &explain_cache));
                (JobState::Bound, r)
            } else if job.pods.is_empty() {
                (JobState::Running, None)
            } else if let Some(b) = rt.blocked.as_ref() {
                (
                    JobState::Pending,
                    Some(self.reason_of(j, b, &explain_cache)),
                )
            } else if let Some(h) = rt.behind {
                (
                    JobState::Pending,
                    Some(PendingReason::BehindHead {
                        head: snap.jobs[h].id.clone(),
                    }),
                )
            } else if rt.gang == 0 && rt.extra_blocked.is_some() {
                let r = rt
                    .extra_blocked
                    .as_ref()
                    .map(|b| self.reason_of(j, b, &explain_cache));
                (JobState::Running, r)
            } else {
                (JobState::Pending, Some(PendingReason::NotTried))
            };
            if let Some(q) = rt.queue
                && matches!(state, JobState::Pending | JobState::Nominated)
            {
                let req = self.request_of(j, &rt.order);
                for &a in self.tree.path(q) {
                    pending_by_queue[a].0 += 1;
                    pending_by_queue[a].1 += pending;
                    pending_by_queue[a].2 += req;
                }
            }
            let mut message = match (&state, &reason) {
                (JobState::Preempted, _) => self
                    .evictions
                    .iter()
                    .find(|e| e.job == job.id)
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
                (JobState::Bound, None) => format!("{bound} pods bound"),
                (JobState::Bound, Some(r)) => {
                    format!("{bound} pods bound; {pending} more wait: {r}")
                }
                (JobState::Running, None) => "all pods running".to_string(),
                (_, Some(r)) => r.to_string(),
                (_, None) => String::new(),
            };
            if rt.shrunk > 0
                && let Some(e) = self.evictions.iter().find(|e| e.job == job.id)
            {
                message.push_str(&format!(
                    "; {} surplus pods taken back: {}",
                    rt.shrunk, e.message
                ));
            }
            if let Some(note) = &rt.preemption_note
                && state == JobState::Pending
            {
                message.push_str(&format!("; preemption: {note}"));
            }
            if let Some(h) = &hold_copies[j]
                && h.kind == HoldKind::HeadOfLine
            {
                message.push_str(&format!(
                    "; head of its queue since the bounded wait ran out: {} and {} nodes held for it",
                    h.resources,
                    {
                        let mut n: Vec<&str> = h.pods.iter().map(|p| p.node.as_str()).collect();
                        n.sort();
                        n.dedup();
                        n.len()
                    }
                ));
            }
            reports.push(JobReport {
                job: job.id.clone(),
                queue: job.queue.clone(),
                state,
                reason,
                message,
                preemption: rt.preemption_note.clone(),
                bound,
                pending,
                shrunk: rt.shrunk,
                hold: hold_copies[j].clone(),
            });
        }
        let mut queues = Vec::with_capacity(self.tree.len());
        for (q, pending) in pending_by_queue.iter().enumerate() {
            let spec = self.tree.spec(q);
            let mut limit = Limits::NONE;
            for r in Resource::ALL {
                let m = self.tree.max(q, r);
                let v = (m != u64::MAX).then_some(m);
                match r {
                    Resource::Cpu => limit.cpu_milli = v,
                    Resource::Memory => limit.memory_mib = v,
                    Resource::Gpu => limit.gpu_milli = v,
                    Resource::GpuMemory => limit.gpu_memory_mib = v,
                }
            }
            let usage = self.book.usage[q];
            let with_held = usage + self.book.held[q];
            queues.push(QueueReport {
                name: spec.name.clone(),
                parent: spec.parent.clone(),
                usage,
                held: self.book.held[q],
                guaranteed: spec.guaranteed,
                limit,
                pending_jobs: pending.0,
                pending_pods: pending.1,
                pending: pending.2,
                borrowed_share: fairshare::borrowed_share(
                    &self.tree,
                    &self.capacity,
                    &with_held,
                    q,
                ),
                dominant_share: fairshare::dominant_share(
                    &self.tree,
                    &self.capacity,
                    &with_held,
                    q,
                ),
            });
        }
        let mut reservations = Vec::new();
        for (ri, r) in snap.reservations.iter().enumerate() {
            let active = r.active(self.now);
            let mut nodes = Vec::new();
            for name in &r.nodes {
                let slot = self.slots.iter().position(|s| {
                    s.reservation == ri && self.cluster.node_id(name) == Some(s.node)
                });
                let held = slot
                    .and_then(|s| {
                        self.claims
                            .iter()
                            .find(|c| c.owner == ClaimOwner::Slot(s))
                            .map(|c| c.held)
                    })
                    .unwrap_or_default();
                nodes.push(ReservedNode {
                    node: name.clone(),
                    held,
                    used: slot.map(|s| self.slots[s].used).unwrap_or_default(),
                    known: self.cluster.node_id(name).is_some(),
                });
            }
            reservations.push(ReservationReport {
                name: r.name.clone(),
                active,
                nodes,
            });
        }
        let mut evicted: BTreeMap<String, Time> = BTreeMap::new();
        for rp in &snap.running {
            if let Some(&t) = self.carry.evicted.get(&rp.id)
                && self.now < t.saturating_add(self.cfg.nomination_ttl)
            {
                evicted.insert(rp.id.clone(), t);
            }
        }
        for e in &self.evictions {
            evicted.insert(e.pod.clone(), self.now);
        }
        self.stats.evictions = self.evictions.len() as u64;
        let carry = Carry {
            holds: self.new_holds.clone(),
            waiting: std::mem::take(&mut self.waiting),
            evicted,
        };
        self.release_all();
        Outcome {
            binds,
            evictions: std::mem::take(&mut self.evictions),
            jobs: reports,
            queues,
            reservations,
            carry,
            warnings: std::mem::take(&mut self.warnings),
            stats: self.stats,
        }
    }

    /// Empties the cluster again (the next cycle binds from its own snapshot).
    fn release_all(&mut self) {
        debug_assert_eq!(self.depth, 0);
        for r in &mut self.running {
            if let Some(h) = r.handle.take() {
                let _ = self.cluster.release(h);
            }
        }
        for c in &mut self.claims {
            if let Some(h) = c.handle.take() {
                let _ = self.cluster.release(h);
            }
        }
        for j in &mut self.jobs {
            for p in j.placed.drain(..) {
                let _ = self.cluster.release(p.handle);
            }
        }
        debug_assert_eq!(self.cluster.placed_pods(), 0);
    }
}

//! Preemption: reclaim of borrowed capacity, and priority preemption inside a queue.
//!
//! Both are tried only when a job's gang does not fit (nodes or quota), reclaim first.
//! Surplus pods of elastic jobs (beyond `min_member`, see [`crate::Job::surplus_order`])
//! are the first candidates, single pods, highest order first (among those on nodes that can
//! help), before any job's minimum
//! ("shrink"); a job's minimum is a victim only as a whole (its remaining surplus goes with
//! it). Growing surplus never preempts, so a surplus pod is never evicted to grow another
//! job's surplus.
//! Victims are whole jobs (every running pod of the gang), ordered lowest priority first,
//! then last resource-policy unit first, then youngest (latest started) first. A job that is
//! no gang (`min_member` 1, such as a Deployment's pods) is a victim pod by pod: each of its
//! running pods is a candidate of its own, exactly as if each were a job of one pod. The cycle
//! **simulates** before it decides: it evicts candidates one by one in that order in a
//! transaction and, as soon as the freed room could cover the job, tries to place the whole
//! gang; if no prefix of the candidates makes it fit, nothing is evicted. Then it drops
//! every victim the gang turns out not to need (newest added first), and only then evicts.
//!
//! **Reclaim** (job J of leaf P, victim X of leaf V ≠ P, L their lowest common ancestor):
//! - every queue on P's side below L stays within its guarantee of J's primary resources
//!   (GPU compute and GPU memory for GPU jobs, else CPU and memory) with J admitted — J
//!   takes back what is guaranteed to it;
//! - for every queue b on V's side below L: b borrows (uses more than its guarantee of)
//!   some primary resource of J that X uses — the eviction gives back borrowed capacity
//!   J needs. A queue within its guarantee is never a victim. Victims are whole gangs, so
//!   giving one back may leave b below its guarantee of such a contested resource (b was
//!   above it: the gang straddled the guarantee); refusing would let a gang larger than
//!   the borrowed part keep it forever. For every other resource r that X uses and b is at
//!   or above its guarantee of, `usage_r(b) − X_r ≥ guaranteed_r(b)` (CPU reclaim cannot
//!   take a queue below its GPU guarantee, and the other way round).
//!
//! **Priority**: victims are jobs of the same leaf queue with strictly lower priority.
//! Priority never crosses queues; between queues only guarantees justify eviction.
//!
//! Why there are no preemption loops:
//! - the preemptor's side stays within its guarantee, so it is never a reclaim victim and
//!   the victim cannot reclaim back from it; the victim gang cannot return within its
//!   queue's guarantee either (its queue was above the guarantee with it), and a queue
//!   left at or above a guarantee has no job that could reclaim with it;
//! - priority victims have strictly lower priority, so they never preempt their preemptor;
//! - the room a preemptor gets is held for it (a nomination on the exact nodes and cards,
//!   plus its quota) until it is bound or the nomination lapses, so victims coming back
//!   cannot take it in between, and nobody else preempts for it;
//! - jobs bound in the same cycle are never victims, and pods already evicted are never
//!   chosen again.

use std::collections::{HashMap, HashSet};

use ferry_sched_core::NodeId;

use crate::actions::{VICTIM_RULES, VictimRule};
use crate::outcome::{Eviction, HeldPod, Hold, HoldKind, PreemptionRule};
use crate::queues::QueueIx;
use crate::resources::{Resource, Resources};
use crate::session::{Blocked, Session};

/// A victim candidate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cand {
    /// The victim job.
    pub job: usize,
    /// Its leaf queue.
    pub leaf: QueueIx,
    /// What evicting it frees.
    pub res: Resources,
    /// One running pod (index into `Session::running`) of a job that is no gang, or a
    /// surplus pod of an elastic job; `None`: every running pod of the job (of an elastic
    /// job: its minimum, the surplus being candidates of their own, ahead of it).
    pub pod: Option<usize>,
    /// A surplus pod: its rank in its job's surplus (0: the highest order).
    pub surplus: Option<u32>,
}

impl Session<'_> {
    /// Tries reclaim, then priority preemption, for job `j` whose gang is `blocked`.
    /// True when the job got room (bound, or nominated on room its victims free).
    pub(crate) fn try_preemption(
        &mut self,
        j: usize,
        gang: &[usize],
        req: &Resources,
        blocked: &Blocked,
    ) -> bool {
        if gang.is_empty() {
            return false;
        }
        let mut notes = Vec::new();
        for rule in VICTIM_RULES {
            let cands = self.candidates(j, rule, gang, req, blocked);
            if cands.is_empty() {
                continue;
            }
            if self.stats.preemption_attempts >= self.cfg.max_preemption_attempts as u64 {
                notes.push("not simulated: this cycle's preemption budget is spent".to_string());
                break;
            }
            self.stats.preemption_attempts += 1;
            if self.simulate(j, rule, gang, req, &cands) {
                return true;
            }
            notes.push(rule.failed(cands.len()));
        }
        if !notes.is_empty() {
            self.jobs[j].preemption_note = Some(notes.join("; "));
        }
        false
    }

    fn candidates(
        &self,
        j: usize,
        rule: &dyn VictimRule,
        gang: &[usize],
        req: &Resources,
        blocked: &Blocked,
    ) -> Vec<Cand> {
        let snap = self.snap;
        if !rule.applies(self, j, req) {
            return Vec::new();
        }
        // Nodes some pod of the gang could use at all.
        let mut requests: Vec<&ferry_sched_core::PodRequest> = Vec::new();
        for &p in gang {
            let r = &snap.jobs[j].pods[p].request;
            if !requests.contains(&r) {
                requests.push(r);
            }
        }
        let mut useful: HashMap<NodeId, bool> = HashMap::new();
        let quota_queue = match blocked {
            Blocked::Quota(b) => self.tree.index(&b.queue),
            Blocked::Capacity(_) => None,
        };
        let mut out = Vec::new();
        for (x, rt) in self.jobs.iter().enumerate() {
            // Jobs that got pods this cycle are not victims (whole gangs only, and what
            // was just decided is not undone).
            if x == j || rt.evicted || rt.running.is_empty() || !rt.placed.is_empty() {
                continue;
            }
            let Some(v) = rt.queue else { continue };
            if !rule.eligible(self, j, x, req) {
                continue;
            }
            let helps_quota = quota_queue.is_some_and(|b| self.tree.path(v).contains(&b));
            let mut helps_node = |i: usize| {
                let Some(node) = self.running[i].node else {
                    return false;
                };
                *useful.entry(node).or_insert_with(|| {
                    let spec = &self.cluster.node(node).expect("live").spec;
                    requests
                        .iter()
                        .any(|r| crate::gang::statically_fits(spec, r))
                })
            };
            if !rt.surplus.is_empty() {
                // Elastic: each surplus pod alone, highest order first, then the minimum.
                for (rank, &i) in rt.surplus.iter().enumerate() {
                    if self.running[i].handle.is_none() || self.running[i].evicted {
                        continue;
                    }
                    if helps_quota || helps_node(i) {
                        out.push(Cand {
                            job: x,
                            leaf: v,
                            res: self.running[i].res,
                            pod: Some(i),
                            surplus: Some(rank as u32),
                        });
                    }
                }
                let min: Vec<usize> = rt
                    .running
                    .iter()
                    .copied()
                    .filter(|i| !rt.surplus.contains(i))
                    .collect();
                let res = min
                    .iter()
                    .fold(Resources::ZERO, |a, &i| a + self.running[i].res);
                if helps_quota || min.iter().any(|&i| helps_node(i)) {
                    out.push(Cand {
                        job: x,
                        leaf: v,
                        res,
                        pod: None,
                        surplus: None,
                    });
                }
                continue;
            }
            if snap.jobs[x].min_member <= 1 && rt.running.len() > 1 {
                // No gang: its pods are victims one by one.
                for &i in &rt.running {
                    if self.running[i].handle.is_none() || self.running[i].evicted {
                        continue;
                    }
                    if helps_quota || helps_node(i) {
                        out.push(Cand {
                            job: x,
                            leaf: v,
                            res: self.running[i].res,
                            pod: Some(i),
                            surplus: None,
                        });
                    }
                }
                continue;
            }
            let helps_nodes = rt.running.iter().any(|&i| helps_node(i));
            if helps_quota || helps_nodes {
                out.push(Cand {
                    job: x,
                    leaf: v,
                    res: rt.usage,
                    pod: None,
                    surplus: None,
                });
            }
        }
        let started = |c: &Cand| match (c.pod, c.surplus) {
            (Some(i), None) => snap.running[i].started,
            _ => self.jobs[c.job].started,
        };
        out.sort_by(|a, b| {
            let (ja, jb) = (&snap.jobs[a.job], &snap.jobs[b.job]);
            // Surplus pods before any job's minimum; within a job, highest order first.
            b.surplus
                .is_some()
                .cmp(&a.surplus.is_some())
                .then(ja.priority.cmp(&jb.priority))
                .then(self.jobs[b.job].unit_rank.cmp(&self.jobs[a.job].unit_rank))
                .then(started(b).cmp(&started(a)))
                .then(ja.id.cmp(&jb.id))
                .then(a.surplus.cmp(&b.surplus))
                .then(a.pod.cmp(&b.pod))
        });
        out.truncate(self.cfg.max_victims);
        out
    }

    /// The reclaim conditions for victim `c` of job `j` (see the module docs), against the
    /// current book.
    pub(crate) fn reclaim_ok(&self, j: usize, req: &Resources, c: &Cand) -> bool {
        let p = self.jobs[j].queue.expect("queue");
        let p_side = self.tree.below_common(p, c.leaf);
        let primary = Resource::primary(req);
        if !self.book.within_guarantee(&self.tree, p_side, req, primary) {
            return false;
        }
        self.tree.below_common(c.leaf, p).iter().all(|&b| {
            let usage = &self.book.usage[b];
            let frees_borrowed = primary
                .iter()
                .any(|&r| c.res.get(r) > 0 && usage.get(r) > self.tree.guaranteed(b, r));
            // A borrowing queue gives back whole gangs, even when that leaves it below its
            // guarantee of a contested resource (it was not within it); no other guarantee
            // it meets is broken.
            let keeps_guarantees = Resource::ALL.iter().all(|&r| {
                let (x, g, u) = (c.res.get(r), self.tree.guaranteed(b, r), usage.get(r));
                x == 0 || u < g || u - x >= g || (primary.contains(&r) && u > g)
            });
            frees_borrowed && keeps_guarantees
        })
    }

    /// Releases a victim's pods in the model (undone by rolling back).
    fn evict_model(&mut self, c: &Cand) {
        let snap = self.snap;
        let running = match c.pod {
            Some(i) => vec![i],
            None => {
                let rt = &self.jobs[c.job];
                rt.running
                    .iter()
                    .copied()
                    .filter(|i| !rt.surplus.contains(i))
                    .collect()
            }
        };
        for i in running {
            let rt = &self.running[i];
            let (Some(h), Some(node)) = (rt.handle, rt.node) else {
                continue;
            };
            let res = rt.res;
            self.cluster.release(h).expect("victim pod is bound");
            self.book.uncharge(&self.tree, c.leaf, &res);
            if let Some(p) = self.jobs[c.job].policy {
                let labels = &self.cluster.node(node).expect("live").spec.labels;
                if let Some(u) = snap.policies[p].unit_of(labels) {
                    let use_ = &mut self.units[p][u];
                    use_.pods = use_.pods.saturating_sub(1);
                    use_.res = use_.res.saturating_sub(&res);
                }
            }
            for s in &mut self.slots {
                if s.node == node && self.jobs[c.job].reservations.contains(&s.reservation) {
                    s.used = s.used.saturating_sub(&res);
                }
            }
        }
    }

    fn trial(&mut self, j: usize, gang: &[usize]) -> bool {
        let t = self.begin_cluster();
        let ok = self.place_pods(j, gang, false).is_ok();
        self.abort(t);
        ok
    }

    fn free_total(&self) -> Resources {
        let mut f = Resources::ZERO;
        for (_, n) in self.cluster.nodes() {
            let st = &n.state;
            f += Resources::new(st.cpu_left, st.memory_left, st.idle_milli() as u64, 0);
        }
        f
    }

    /// Evicts `set` in order in the model; false when a reclaim condition fails on the way.
    fn evict_set(
        &mut self,
        j: usize,
        rule: &dyn VictimRule,
        req: &Resources,
        set: &[Cand],
    ) -> bool {
        for c in set {
            if !rule.keeps(self, j, req, c) {
                return false;
            }
            self.evict_model(c);
        }
        true
    }

    fn simulate(
        &mut self,
        j: usize,
        rule: &dyn VictimRule,
        gang: &[usize],
        req: &Resources,
        cands: &[Cand],
    ) -> bool {
        let q = self.jobs[j].queue.expect("queue");
        let base = self.begin();
        self.release_claims_for(j);
        let free = self.free_total();
        let primary = Resource::primary(req);
        let t0 = self.begin();
        let mut chosen: Vec<Cand> = Vec::new();
        let mut freed = Resources::ZERO;
        let mut found = false;
        for c in cands {
            if !rule.keeps(self, j, req, c) {
                continue;
            }
            self.evict_model(c);
            chosen.push(*c);
            freed += c.res;
            let covered = primary
                .iter()
                .all(|&r| r == Resource::GpuMemory || free.get(r) + freed.get(r) >= req.get(r));
            if !covered || self.book.admit(&self.tree, q, req).is_err() {
                continue;
            }
            if self.trial(j, gang) {
                found = true;
                break;
            }
        }
        if !found {
            self.abort(t0);
            self.abort(base);
            return false;
        }
        // Drop the victims the gang does not need, newest added first (the last one added
        // is needed: without it the gang did not fit).
        let mut idx = chosen.len().saturating_sub(1);
        while idx > 0 {
            idx -= 1;
            let subset: Vec<Cand> = chosen
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != idx)
                .map(|(_, c)| *c)
                .collect();
            self.undo_to(&t0);
            if self.evict_set(j, rule, req, &subset)
                && self.book.admit(&self.tree, q, req).is_ok()
                && self.trial(j, gang)
            {
                chosen = subset;
            }
        }
        self.undo_to(&t0);
        let messages: Vec<(PreemptionRule, String)> = chosen
            .iter()
            .map(|c| rule.message(self, j, c, req))
            .collect();
        if !self.evict_set(j, rule, req, &chosen) {
            self.abort(t0);
            self.abort(base);
            return false;
        }
        let placed = match self.place_pods(j, gang, false) {
            Ok(p) => p,
            Err(_) => {
                self.abort(t0);
                self.abort(base);
                return false;
            }
        };
        self.commit(t0);
        // Apply: victims are evicted for real.
        let snap = self.snap;
        let mut victim_nodes: HashSet<NodeId> = HashSet::new();
        for (c, (rule, message)) in chosen.iter().zip(messages) {
            let running = match c.pod {
                Some(i) => vec![i],
                None => {
                    self.jobs[c.job].evicted = true;
                    self.jobs[c.job].running.clone()
                }
            };
            for i in running {
                // Released in the model (and so no longer bound): all but the surplus pods
                // of an elastic job evicted whole that were no candidates of their own
                // (they stay bound, terminating, until the cycle ends).
                let released = c.pod.is_some()
                    || !self.jobs[c.job].surplus.contains(&i)
                    || chosen.iter().any(|o| o.pod == Some(i));
                let rt = &mut self.running[i];
                if rt.evicted || rt.handle.is_none() {
                    continue;
                }
                let Some(node) = rt.node else { continue };
                if released {
                    rt.handle = None;
                }
                rt.evicted = true;
                let surplus = c.surplus.is_some();
                if surplus {
                    self.jobs[c.job].shrunk += 1;
                }
                victim_nodes.insert(node);
                self.evictions.push(Eviction {
                    pod: snap.running[i].id.clone(),
                    job: snap.jobs[c.job].id.clone(),
                    node: snap.running[i].node.clone(),
                    preemptor: snap.jobs[j].id.clone(),
                    rule: rule.clone(),
                    message: message.clone(),
                    surplus,
                });
            }
        }
        let nominated = placed.iter().any(|p| victim_nodes.contains(&p.node));
        let terminating = snap
            .running
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                self.running[*i]
                    .node
                    .is_some_and(|n| placed.iter().any(|p| p.node == n))
                    && (self.running[*i].terminating
                        || self.running[*i].evicted
                        || self.running[*i].job.is_some_and(|x| self.jobs[x].evicted))
            })
            .count() as u32;
        if nominated {
            let job = &snap.jobs[j];
            self.new_holds.push(Hold {
                job: job.id.clone(),
                kind: HoldKind::Preemption,
                since: self.now,
                expires_at: Some(self.now + self.cfg.nomination_ttl),
                resources: *req,
                pods: placed
                    .iter()
                    .map(|p| HeldPod {
                        pod: job.pods[p.pod].id.clone(),
                        node: self.cluster.node(p.node).expect("live").spec.name.clone(),
                        request: job.pods[p.pod].request.clone(),
                        cards: Some(p.cards),
                    })
                    .collect(),
            });
            self.jobs[j].nominated = true;
            self.jobs[j].victims_terminating = terminating;
        }
        self.apply_placed(j, placed);
        if nominated {
            self.stats.pods_bound -= gang.len() as u64;
        }
        if !self.jobs[j].reservations.is_empty() {
            self.rebind_reservations(j);
        }
        self.commit(base);
        self.epoch += 1;
        true
    }
}

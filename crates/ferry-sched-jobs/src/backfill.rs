//! Backfill without starving the head of line.
//!
//! While the first pending job of a queue (its head: highest priority, then oldest) cannot
//! start, later and smaller jobs of any queue may use what it cannot (backfill). The cycle
//! records since when each head has been blocked. Once a head has waited
//! [`crate::Config::backfill_wait`], it gets a **head-of-line hold**:
//!
//! - its gang's resources are set aside in the quota of its queue and every ancestor, so
//!   no other job can take quota it needs (others are admitted only if they leave it room);
//! - when nodes (not quota) blocked it, target nodes are chosen — those with the most room
//!   now, enough for the gang on empty nodes — and from the next cycle on, everything free
//!   on them (up to the gang's needs) is claimed for it: as pods there finish, the room
//!   accrues to the head and no other job may take it.
//!
//! The head is tried at its normal turn with its claims released to it; when it fits
//! (on the targets or anywhere) it starts and the hold ends. A hold also ends when the job
//! is no longer its queue's head (e.g. a higher-priority job arrived).
//!
//! Holds cannot deadlock one another: target nodes of holds are disjoint, and a hold is
//! granted only if all holds on the way up the tree fit together in every queue's limit.
//! A head that can never fit (larger than its limits or than any set of empty nodes) gets
//! no hold and does not block anybody.

use std::collections::{HashMap, HashSet};

use ferry_sched_core::model::{GPU_MILLI, MAX_CARDS};
use ferry_sched_core::{NodeId, PodRequest};

use crate::gang::statically_fits;
use crate::outcome::{HeldPod, Hold, HoldKind};
use crate::resources::{Resource, Resources};
use crate::session::{Blocked, Session};

/// Room left on an empty node while a head's gang is laid out on targets.
#[derive(Debug, Clone, Copy)]
struct Room {
    cpu: u64,
    memory: u64,
    pods: u32,
    free: [u16; MAX_CARDS],
    cards: usize,
}

impl Room {
    fn take(&mut self, pod: &PodRequest) -> bool {
        if self.cpu < pod.cpu_milli || self.memory < pod.memory_mib || self.pods == 0 {
            return false;
        }
        let g = pod.gpu;
        if g.is_whole() {
            let idle: Vec<usize> = (0..self.cards)
                .filter(|&i| self.free[i] == GPU_MILLI)
                .take(g.count as usize)
                .collect();
            if idle.len() < g.count as usize {
                return false;
            }
            for i in idle {
                self.free[i] = 0;
            }
        } else if g.is_gpu() {
            let Some(i) = (0..self.cards)
                .filter(|&i| self.free[i] >= g.milli)
                .min_by_key(|&i| (self.free[i], i))
            else {
                return false;
            };
            self.free[i] -= g.milli;
        }
        self.cpu -= pod.cpu_milli;
        self.memory -= pod.memory_mib;
        self.pods -= 1;
        true
    }
}

impl Session<'_> {
    /// Lays job `j`'s gang out on target nodes not in `taken`, preferring the nodes with
    /// the most room now. `None` when it cannot fit even on empty nodes.
    fn choose_targets(&self, j: usize, taken: &HashSet<NodeId>) -> Option<Vec<HeldPod>> {
        let snap = self.snap;
        let job = &snap.jobs[j];
        let gang = &self.jobs[j].order[..self.jobs[j].gang];
        let mut nodes: Vec<(NodeId, usize, u64)> = self
            .cluster
            .nodes()
            .filter(|(id, _)| !taken.contains(id))
            .map(|(id, n)| (id, n.state.fully_free_cards(), n.state.cpu_left))
            .collect();
        nodes.sort_by(|a, b| b.1.cmp(&a.1).then(b.2.cmp(&a.2)).then(a.0.cmp(&b.0)));
        let mut rooms: HashMap<NodeId, Room> = HashMap::new();
        let mut used: Vec<NodeId> = Vec::new();
        let mut out = Vec::with_capacity(gang.len());
        for &p in gang {
            let req = &job.pods[p].request;
            let order = used
                .iter()
                .copied()
                .chain(nodes.iter().map(|n| n.0).filter(|id| !used.contains(id)));
            let mut chosen = None;
            for id in order {
                let spec = &self.cluster.node(id).expect("live").spec;
                if !statically_fits(spec, req) {
                    continue;
                }
                let room = rooms.entry(id).or_insert_with(|| {
                    let mut free = [0; MAX_CARDS];
                    for f in free.iter_mut().take(spec.cards.len()) {
                        *f = GPU_MILLI;
                    }
                    Room {
                        cpu: spec.cpu_milli,
                        memory: spec.memory_mib,
                        pods: spec.max_pods,
                        free,
                        cards: spec.cards.len(),
                    }
                });
                if room.take(req) {
                    chosen = Some(id);
                    break;
                }
            }
            let id = chosen?;
            if !used.contains(&id) {
                used.push(id);
            }
            out.push(HeldPod {
                pod: job.pods[p].id.clone(),
                node: self.cluster.node(id).expect("live").spec.name.clone(),
                request: req.clone(),
                cards: None,
            });
        }
        Some(out)
    }

    /// Records head-of-line waits and grants, keeps or ends head-of-line holds.
    pub(crate) fn update_backfill(&mut self) {
        let snap = self.snap;
        let mut taken: HashSet<NodeId> = HashSet::new();
        let mut held = vec![Resources::ZERO; self.tree.len()];
        let add = |held: &mut Vec<Resources>, tree: &crate::queues::QueueTree, q, r: &Resources| {
            for &a in tree.path(q) {
                held[a] += *r;
            }
        };
        for h in &self.new_holds {
            if let Some(&j) = self.job_ix.get(h.job.as_str())
                && let Some(q) = self.jobs[j].queue
            {
                add(&mut held, &self.tree, q, &h.resources);
            }
            for p in &h.pods {
                if let Some(id) = self.cluster.node_id(&p.node) {
                    taken.insert(id);
                }
            }
        }
        // Heads: the first job of each leaf that is still waiting after its attempt.
        let mut heads = Vec::new();
        for q in 0..self.tree.len() {
            let head = self.lists[q].iter().copied().find(|&j| {
                let rt = &self.jobs[j];
                rt.placed.is_empty() && !rt.nominated && !rt.evicted
            });
            let Some(j) = head else { continue };
            if self.jobs[j].blocked.is_none() {
                continue;
            }
            let id = &snap.jobs[j].id;
            let since = self.carry.waiting.get(id).copied().unwrap_or(self.now);
            self.waiting.insert(id.clone(), since);
            heads.push((since, j, q));
        }
        heads.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        // Holds in force first (they keep their targets), then new grants, oldest first.
        let mut grants = Vec::new();
        for &(since, j, q) in &heads {
            match self.jobs[j].hold.map(|h| &self.holds[h].hold) {
                Some(h) if h.kind == HoldKind::HeadOfLine => {
                    let h = h.clone();
                    add(&mut held, &self.tree, q, &h.resources);
                    for p in &h.pods {
                        if let Some(id) = self.cluster.node_id(&p.node) {
                            taken.insert(id);
                        }
                    }
                    self.new_holds.push(h);
                }
                _ => {
                    if self.now.saturating_sub(since) >= self.cfg.backfill_wait {
                        grants.push((j, q));
                    }
                }
            }
        }
        for (j, q) in grants {
            let req = self.request_of(j, &self.jobs[j].order[..self.jobs[j].gang]);
            if req.is_zero() {
                continue;
            }
            let fits_limits = self.tree.path(q).iter().all(|&a| {
                Resource::ALL
                    .iter()
                    .all(|&r| held[a].get(r).saturating_add(req.get(r)) <= self.tree.max(a, r))
            });
            if !fits_limits {
                continue;
            }
            let pods = match &self.jobs[j].blocked {
                Some(Blocked::Capacity(_)) => match self.choose_targets(j, &taken) {
                    Some(p) => p,
                    None => continue,
                },
                _ => Vec::new(),
            };
            for p in &pods {
                if let Some(id) = self.cluster.node_id(&p.node) {
                    taken.insert(id);
                }
            }
            add(&mut held, &self.tree, q, &req);
            self.new_holds.push(Hold {
                job: snap.jobs[j].id.clone(),
                kind: HoldKind::HeadOfLine,
                since: self.now,
                expires_at: None,
                resources: req,
                pods,
            });
        }
    }
}

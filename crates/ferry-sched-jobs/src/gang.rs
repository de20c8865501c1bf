//! Gang placement: all of a job's required pods or none, in one transaction on the
//! cluster's undo journal.
//!
//! Pods go largest first, identical ones together. Each pod asks the placement engine
//! ([`ferry_sched_core::Scheduler::decide`]) for a node, within the job's node units
//! when a resource policy or a reservation applies (first unit with room first). With
//! `sticky_gangs`, an identical CPU-only or whole-card pod goes straight to the node the
//! previous one got while it has room (cards: the lowest untouched ones, the engine's own
//! rule for whole cards), which costs no node scan and keeps a gang together. If any pod
//! finds no node, every pod of the attempt is rolled back.
//!
//! Within a cycle, free capacity only shrinks until something is released, so the cycle
//! remembers, per pod shape, how many identical pods fit when a gang of that shape failed;
//! a later gang needing more of them is rejected without a scan until capacity is released
//! (preemption, or holds and reservations handing back room).

use ferry_sched_core::model::TaintEffect;
use ferry_sched_core::policies::cards::lowest_untouched;
use ferry_sched_core::{CardSet, NodeId, NodeSpec, PodHandle, PodRequest};

use crate::resources::Resources;
use crate::session::{GangFail, Memo, Placed, RESERVATION_LABEL, Session, UnitUse};

/// A node unit a job's pods may go to, in order.
#[derive(Debug, Clone)]
pub(crate) struct UnitRt {
    pub selector: Vec<(String, String)>,
    /// Index of the resource-policy unit (for caps and use), if any.
    pub policy_unit: Option<usize>,
}

/// True when an empty `spec` node could take `pod` at all: capacity, GPU count and
/// model, node selector and hard taints.
pub(crate) fn statically_fits(spec: &NodeSpec, pod: &PodRequest) -> bool {
    if spec.cpu_milli < pod.cpu_milli || spec.memory_mib < pod.memory_mib || spec.max_pods == 0 {
        return false;
    }
    if pod.gpu.is_gpu()
        && (spec.cards.len() < pod.gpu.count as usize
            || !pod.gpu_models.allows(spec.gpu_model)
            || (pod.gpu.memory_mib > 0
                && !spec
                    .cards
                    .iter()
                    .any(|c| c.memory_mib == 0 || c.memory_mib >= pod.gpu.memory_mib)))
    {
        return false;
    }
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| spec.labels.iter().any(|(nk, nv)| nk == k && nv == v))
    {
        return false;
    }
    spec.taints.iter().all(|t| {
        t.effect == TaintEffect::PreferNoSchedule
            || pod.tolerations.iter().any(|tol| tol.tolerates(t))
    })
}

fn with_selector(req: &PodRequest, selector: &[(String, String)]) -> PodRequest {
    let mut r = req.clone();
    r.node_selector.extend(selector.iter().cloned());
    r
}

impl Session<'_> {
    /// The node units job `j`'s pods may use, in fill order (empty: anywhere).
    pub(crate) fn units_for(&self, j: usize) -> Vec<UnitRt> {
        let rt = &self.jobs[j];
        if let Some(p) = rt.policy {
            return self.snap.policies[p]
                .units
                .iter()
                .enumerate()
                .map(|(i, u)| UnitRt {
                    selector: u.node_selector.clone(),
                    policy_unit: Some(i),
                })
                .collect();
        }
        if rt.reservations.is_empty() {
            return Vec::new();
        }
        let mut units: Vec<UnitRt> = rt
            .reservations
            .iter()
            .map(|&r| UnitRt {
                selector: vec![(
                    RESERVATION_LABEL.to_string(),
                    self.snap.reservations[r].name.clone(),
                )],
                policy_unit: None,
            })
            .collect();
        units.push(UnitRt {
            selector: Vec::new(),
            policy_unit: None,
        });
        units
    }

    fn unit_has_room(
        &self,
        j: usize,
        unit: Option<usize>,
        local: &[UnitUse],
        res: &Resources,
    ) -> bool {
        let (Some(p), Some(u)) = (self.jobs[j].policy, unit) else {
            return true;
        };
        let spec = &self.snap.policies[p].units[u];
        let used = local[u];
        spec.max_pods.is_none_or(|m| used.pods < m)
            && spec.max.is_none_or(|m| (used.res + *res).fits_within(&m))
    }

    fn decide_bind(&mut self, req: &PodRequest) -> Option<(NodeId, CardSet, PodHandle)> {
        let d = self.engine.decide(self.cluster, req).ok()?;
        let h = self.cluster.bind(d.node, req, d.cards).ok()?;
        Some((d.node, d.cards, h))
    }

    /// Places pods `pods` (indices into job `j`'s pods) all or nothing. `memo_ok`: the
    /// cluster is in the cycle's monotone state (no room handed to this job alone), so the
    /// shape memo may be read and written.
    pub(crate) fn place_pods(
        &mut self,
        j: usize,
        pods: &[usize],
        memo_ok: bool,
    ) -> Result<Vec<Placed>, GangFail> {
        let snap = self.snap;
        let job = &snap.jobs[j];
        let units = self.units_for(j);
        let memo_ok = memo_ok && units.is_empty();
        let needed = pods.len() as u32;
        let first = &job.pods[pods[0]].request;
        let n_first = pods
            .iter()
            .take_while(|&&p| job.pods[p].request == *first)
            .count() as u32;
        if memo_ok
            && let Some(m) = self.memo.get(first)
            && m.epoch == self.epoch
            && m.max_fit < n_first
        {
            self.stats.memo_rejections += 1;
            return Err(GangFail {
                fit: m.max_fit,
                needed,
                pod: pods[m.max_fit as usize],
                request: first.clone(),
            });
        }
        let mut local: Vec<UnitUse> = match self.jobs[j].policy {
            Some(p) => self.units[p].clone(),
            None => Vec::new(),
        };
        let t = self.begin_cluster();
        let mut placed: Vec<Placed> = Vec::with_capacity(pods.len());
        for (k, &p) in pods.iter().enumerate() {
            let req = &job.pods[p].request;
            let res = Resources::of_pod(req);
            let mut got: Option<(NodeId, CardSet, PodHandle, Option<usize>)> = None;
            if self.cfg.sticky_gangs
                && (!req.gpu.is_gpu() || req.gpu.is_whole())
                && let Some(prev) = placed.last()
                && job.pods[prev.pod].request == *req
                && self.unit_has_room(j, prev.unit, &local, &res)
            {
                let node = self.cluster.node(prev.node).expect("live");
                let cards = if req.gpu.is_gpu() {
                    lowest_untouched(node, req.gpu.count as usize)
                } else {
                    Some(CardSet::EMPTY)
                };
                if let Some(cards) = cards
                    && let Ok(h) = self.cluster.bind(prev.node, req, cards)
                {
                    self.stats.sticky_placements += 1;
                    got = Some((prev.node, cards, h, prev.unit));
                }
            }
            if got.is_none() {
                if units.is_empty() {
                    got = self.decide_bind(req).map(|(n, c, h)| (n, c, h, None));
                } else {
                    for u in &units {
                        if !self.unit_has_room(j, u.policy_unit, &local, &res) {
                            continue;
                        }
                        let eff = with_selector(req, &u.selector);
                        if let Some((n, c, h)) = self.decide_bind(&eff) {
                            got = Some((n, c, h, u.policy_unit));
                            break;
                        }
                    }
                }
            }
            match got {
                Some((node, cards, handle, unit)) => {
                    if let Some(u) = unit {
                        local[u].pods += 1;
                        local[u].res += res;
                    }
                    placed.push(Placed {
                        pod: p,
                        node,
                        cards,
                        handle,
                        unit,
                    });
                }
                None => {
                    self.abort(t);
                    if memo_ok && (k as u32) < n_first {
                        self.memo.insert(
                            first.clone(),
                            Memo {
                                epoch: self.epoch,
                                max_fit: k as u32,
                            },
                        );
                    }
                    let request = match units.first() {
                        Some(u) if u.policy_unit.is_some() => with_selector(req, &u.selector),
                        _ => req.clone(),
                    };
                    return Err(GangFail {
                        fit: k as u32,
                        needed,
                        pod: p,
                        request,
                    });
                }
            }
        }
        self.commit(t);
        Ok(placed)
    }
}

//! The cycle as Volcano's session runs it: a fixed list of actions over one session.
//!
//! Each action is a small type behind the [`Action`] trait and runs once per cycle, in
//! [`CYCLE`] order:
//!
//! 1. [`Admit`]: jobs admitted by an earlier preemption (a nomination) are bound on the
//!    room made for them;
//! 2. [`Allocate`] (guarantee pass): jobs that fit within the guarantee of their queue and
//!    every ancestor; a blocked gang may call on the victim rules below;
//! 3. [`Allocate`] (borrowing pass): every other job, queues by dominant borrowed share;
//! 4. [`Backfill`]: head-of-line waits and holds;
//! 5. [`Grow`]: elastic jobs (surplus pods beyond `min_member`) grow into what is left.
//!
//! Preemption is not an action of its own in the list: a gang that does not fit asks the
//! victim rules, [`Reclaim`] then [`Preempt`], each behind the narrow, read-only
//! [`VictimRule`] trait (which running jobs it may take from, whether a victim still keeps
//! the rule's invariants, and what the eviction says). Taking surplus back ("shrink") is
//! how both rules pick their first victims: single surplus pods, highest order first,
//! before any job's minimum (see [`crate::preempt`]).

use crate::fairshare::Pass;
use crate::outcome::PreemptionRule;
use crate::preempt::Cand;
use crate::resources::{Resource, Resources};
use crate::session::Session;

/// One step of the cycle.
pub(crate) trait Action: Sync {
    /// Name (for traces and docs).
    #[allow(dead_code)]
    fn name(&self) -> &'static str;
    /// Runs the step over the session.
    fn execute(&self, ssn: &mut Session<'_>);
}

/// Binds jobs holding room made by preemption (exactly there when free, else anywhere).
pub(crate) struct Admit;

/// One allocation pass (guarantee or borrowing) over the queues in fair-share order.
pub(crate) struct Allocate(pub Pass);

/// Head-of-line waits and holds.
pub(crate) struct Backfill;

/// Surplus pods of elastic jobs, one by one, into idle capacity left by every other action.
pub(crate) struct Grow;

/// The actions of a cycle, in order.
pub(crate) const CYCLE: [&dyn Action; 5] = [
    &Admit,
    &Allocate(Pass::Guarantee),
    &Allocate(Pass::Borrow),
    &Backfill,
    &Grow,
];

impl Action for Admit {
    fn name(&self) -> &'static str {
        "admit"
    }
    fn execute(&self, ssn: &mut Session<'_>) {
        ssn.run_nominated();
    }
}

impl Action for Allocate {
    fn name(&self) -> &'static str {
        match self.0 {
            Pass::Guarantee => "allocate-guarantee",
            Pass::Borrow => "allocate-borrow",
        }
    }
    fn execute(&self, ssn: &mut Session<'_>) {
        ssn.run_pass(self.0);
    }
}

impl Action for Backfill {
    fn name(&self) -> &'static str {
        "backfill"
    }
    fn execute(&self, ssn: &mut Session<'_>) {
        ssn.update_backfill();
    }
}

impl Action for Grow {
    fn name(&self) -> &'static str {
        "grow"
    }
    fn execute(&self, ssn: &mut Session<'_>) {
        ssn.grow();
    }
}

/// What a preemption rule decides, reading the session only.
pub(crate) trait VictimRule: Sync {
    /// Whether running job `x` may lose pods to job `j` (needing `req`) under this rule.
    fn eligible(&self, ssn: &Session<'_>, j: usize, x: usize, req: &Resources) -> bool;
    /// Whether the rule holds for `j` at all (e.g. reclaim: `j` within its guarantee).
    fn applies(&self, _ssn: &Session<'_>, _j: usize, _req: &Resources) -> bool {
        true
    }
    /// Whether evicting `c` now (against the current book) keeps the rule's invariants.
    fn keeps(&self, _ssn: &Session<'_>, _j: usize, _req: &Resources, _c: &Cand) -> bool {
        true
    }
    /// The rule and message of evicting `c` for `j`.
    fn message(
        &self,
        ssn: &Session<'_>,
        j: usize,
        c: &Cand,
        req: &Resources,
    ) -> (PreemptionRule, String);
    /// The note when no victim set of `n` candidates made room.
    fn failed(&self, n: usize) -> String;
}

/// Reclaim: a queue within its guarantee takes back capacity other queues borrow.
pub(crate) struct Reclaim;

/// Priority preemption inside a leaf queue.
pub(crate) struct Preempt;

/// The victim rules a blocked gang tries, in order.
pub(crate) const VICTIM_RULES: [&dyn VictimRule; 2] = [&Reclaim, &Preempt];

impl VictimRule for Reclaim {
    fn applies(&self, ssn: &Session<'_>, j: usize, req: &Resources) -> bool {
        let q = ssn.jobs[j].queue.expect("queue");
        ssn.book
            .within_guarantee(&ssn.tree, &[q], req, Resource::primary(req))
    }
    fn eligible(&self, ssn: &Session<'_>, j: usize, x: usize, req: &Resources) -> bool {
        let q = ssn.jobs[j].queue.expect("queue");
        let rt = &ssn.jobs[x];
        let Some(v) = rt.queue else { return false };
        v != q
            && Resource::primary(req)
                .iter()
                .any(|&r| rt.usage.get(r) > 0 && ssn.book.borrows(&ssn.tree, v, r))
    }
    fn keeps(&self, ssn: &Session<'_>, j: usize, req: &Resources, c: &Cand) -> bool {
        ssn.reclaim_ok(j, req, c)
    }
    fn message(
        &self,
        ssn: &Session<'_>,
        j: usize,
        c: &Cand,
        req: &Resources,
    ) -> (PreemptionRule, String) {
        let snap = ssn.snap;
        let (pj, px) = (&snap.jobs[j], &snap.jobs[c.job]);
        let r = Resource::primary(req)
            .iter()
            .copied()
            .find(|&r| c.res.get(r) > 0)
            .unwrap_or(Resource::Gpu);
        let v = c.leaf;
        (
            PreemptionRule::Reclaim {
                victim_queue: px.queue.clone(),
                preemptor_queue: pj.queue.clone(),
            },
            format!(
                "preempted by job {} of queue {} to reclaim its guarantee: queue {} uses {} of {}, above its guarantee of {}",
                pj.id,
                pj.queue,
                px.queue,
                r.format(ssn.book.usage[v].get(r)),
                r.name(),
                r.format(ssn.tree.guaranteed(v, r)),
            ),
        )
    }
    fn failed(&self, n: usize) -> String {
        format!("reclaiming borrowed capacity from {n} jobs of other queues would not make it fit")
    }
}

impl VictimRule for Preempt {
    fn eligible(&self, ssn: &Session<'_>, j: usize, x: usize, _req: &Resources) -> bool {
        let snap = ssn.snap;
        ssn.jobs[x].queue == ssn.jobs[j].queue && snap.jobs[x].priority < snap.jobs[j].priority
    }
    fn message(
        &self,
        ssn: &Session<'_>,
        j: usize,
        c: &Cand,
        _req: &Resources,
    ) -> (PreemptionRule, String) {
        let snap = ssn.snap;
        let (pj, px) = (&snap.jobs[j], &snap.jobs[c.job]);
        (
            PreemptionRule::Priority {
                victim_priority: px.priority,
                preemptor_priority: pj.priority,
            },
            format!(
                "preempted by job {} (priority {}) of the same queue {}: it has higher priority than this job ({}) and fits only with this job's room",
                pj.id, pj.priority, pj.queue, px.priority
            ),
        )
    }
    fn failed(&self, n: usize) -> String {
        format!("evicting {n} lower-priority jobs of its queue would not make it fit")
    }
}

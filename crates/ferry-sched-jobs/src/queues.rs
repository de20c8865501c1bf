//! The queue tree and quota: guarantees, borrowing limits, and the usage book that admits a
//! job only when its queue and every ancestor stay within guarantee + borrowing limit.
//!
//! Definitions (per resource r):
//! - `usage(q)`: what running pods of jobs in q's subtree ask for (terminating pods
//!   excluded), plus pods bound in this cycle;
//! - `held(q)`: what holds (nominations of preemptors, head-of-line holds) set aside in
//!   q's subtree;
//! - `max(q) = guaranteed(q) + borrowing_limit(q)` (unbounded when the limit is `None`);
//! - a job J of leaf q is **admitted** when `usage(a) + held(a) + R(J) ≤ max(a)` for q and
//!   every ancestor a (J's own hold, if any, is taken out of `held` first);
//! - J is **within guarantee** up to an ancestor when the same holds with `guaranteed(a)`
//!   in place of `max(a)` for every queue on the way, in J's *primary* resources (GPU
//!   compute and GPU memory for a job that asks for GPUs, CPU and memory otherwise): a
//!   queue guaranteed only GPUs runs GPU jobs within its guarantee;
//! - q **borrows** r when `usage_r(q) > guaranteed_r(q)`.

use std::collections::HashMap;
use std::fmt;

use crate::resources::{Limits, Resource, Resources, Weights};

/// A queue as declared.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSpec {
    /// Unique name.
    pub name: String,
    /// Parent queue (`None`: a top-level queue).
    pub parent: Option<String>,
    /// Guaranteed amount (taken back by reclaim when lent). A child's guarantee is part
    /// of its parent's: the children's guarantees must add up to at most the parent's.
    pub guaranteed: Resources,
    /// How far above its guarantee the queue may go (`None` per resource: up to what its
    /// parent allows).
    pub borrowing_limit: Limits,
    /// Fair-share weights among its siblings.
    pub weight: Weights,
}

impl QueueSpec {
    /// A top-level queue with no guarantee, no limit and weight 1.
    pub fn new(name: impl Into<String>) -> Self {
        QueueSpec {
            name: name.into(),
            parent: None,
            guaranteed: Resources::ZERO,
            borrowing_limit: Limits::NONE,
            weight: Weights::default(),
        }
    }

    /// With a parent.
    pub fn parent(mut self, parent: impl Into<String>) -> Self {
        self.parent = Some(parent.into());
        self
    }

    /// With a guarantee.
    pub fn guarantee(mut self, guaranteed: Resources) -> Self {
        self.guaranteed = guaranteed;
        self
    }

    /// With a borrowing limit.
    pub fn borrowing(mut self, limit: Limits) -> Self {
        self.borrowing_limit = limit;
        self
    }

    /// With the same weight on every resource.
    pub fn weight(mut self, w: f64) -> Self {
        self.weight = Weights::uniform(w);
        self
    }
}

/// Errors of a queue tree.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    /// Two queues share a name.
    #[error("queue {0} is declared twice")]
    Duplicate(String),
    /// A parent does not exist.
    #[error("queue {queue} names an unknown parent {parent}")]
    UnknownParent {
        /// The child.
        queue: String,
        /// The missing parent.
        parent: String,
    },
    /// The parent links form a cycle.
    #[error("queue {0} is its own ancestor")]
    Cycle(String),
    /// A weight is not a positive finite number.
    #[error("queue {0} has a weight that is not a positive number")]
    BadWeight(String),
    /// The children's guarantees exceed the parent's.
    #[error(
        "the children of queue {parent} are guaranteed {children} of {resource}, more than its own {guaranteed}"
    )]
    GuaranteeExceedsParent {
        /// The parent.
        parent: String,
        /// The resource.
        resource: Resource,
        /// Sum of the children's guarantees.
        children: u64,
        /// The parent's guarantee.
        guaranteed: u64,
    },
}

/// Index of a queue in a [`QueueTree`].
pub type QueueIx = usize;

#[derive(Debug, Clone)]
struct Node {
    spec: QueueSpec,
    parent: Option<QueueIx>,
    children: Vec<QueueIx>,
    /// Root → self.
    path: Vec<QueueIx>,
    max: [u64; 4],
    guaranteed: [u64; 4],
}

/// A validated queue tree.
#[derive(Debug, Clone)]
pub struct QueueTree {
    nodes: Vec<Node>,
    by_name: HashMap<String, QueueIx>,
    roots: Vec<QueueIx>,
}

impl QueueTree {
    /// Builds and checks a tree.
    pub fn new(specs: &[QueueSpec]) -> Result<QueueTree, QueueError> {
        let mut by_name = HashMap::new();
        for (i, s) in specs.iter().enumerate() {
            if by_name.insert(s.name.clone(), i).is_some() {
                return Err(QueueError::Duplicate(s.name.clone()));
            }
            let w = s.weight;
            if Resource::ALL
                .iter()
                .any(|&r| !(w.get(r).is_finite() && w.get(r) > 0.0))
            {
                return Err(QueueError::BadWeight(s.name.clone()));
            }
        }
        let mut parents = Vec::with_capacity(specs.len());
        for s in specs {
            parents.push(match &s.parent {
                None => None,
                Some(p) => Some(*by_name.get(p).ok_or_else(|| QueueError::UnknownParent {
                    queue: s.name.clone(),
                    parent: p.clone(),
                })?),
            });
        }
        let mut nodes = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            let mut path = vec![i];
            let mut cur = parents[i];
            while let Some(p) = cur {
                if path.len() > specs.len() {
                    return Err(QueueError::Cycle(s.name.clone()));
                }
                path.push(p);
                cur = parents[p];
            }
            path.reverse();
            let mut max = [u64::MAX; 4];
            let mut guaranteed = [0; 4];
            for (k, &r) in Resource::ALL.iter().enumerate() {
                guaranteed[k] = s.guaranteed.get(r);
                if let Some(b) = s.borrowing_limit.get(r) {
                    max[k] = guaranteed[k].saturating_add(b);
                }
            }
            nodes.push(Node {
                spec: s.clone(),
                parent: parents[i],
                children: Vec::new(),
                path,
                max,
                guaranteed,
            });
        }
        let mut roots = Vec::new();
        for i in 0..nodes.len() {
            match nodes[i].parent {
                Some(p) => nodes[p].children.push(i),
                None => roots.push(i),
            }
        }
        for n in &nodes {
            for (k, &r) in Resource::ALL.iter().enumerate() {
                let children: u64 = n.children.iter().map(|&c| nodes[c].guaranteed[k]).sum();
                if !n.children.is_empty() && children > n.guaranteed[k] {
                    return Err(QueueError::GuaranteeExceedsParent {
                        parent: n.spec.name.clone(),
                        resource: r,
                        children,
                        guaranteed: n.guaranteed[k],
                    });
                }
            }
        }
        Ok(QueueTree {
            nodes,
            by_name,
            roots,
        })
    }

    /// Number of queues.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there is no queue.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Index of a queue by name.
    pub fn index(&self, name: &str) -> Option<QueueIx> {
        self.by_name.get(name).copied()
    }

    /// The spec of a queue.
    pub fn spec(&self, q: QueueIx) -> &QueueSpec {
        &self.nodes[q].spec
    }

    /// Name of a queue.
    pub fn name(&self, q: QueueIx) -> &str {
        &self.nodes[q].spec.name
    }

    /// Parent of a queue.
    pub fn parent(&self, q: QueueIx) -> Option<QueueIx> {
        self.nodes[q].parent
    }

    /// Children of a queue.
    pub fn children(&self, q: QueueIx) -> &[QueueIx] {
        &self.nodes[q].children
    }

    /// Top-level queues.
    pub fn roots(&self) -> &[QueueIx] {
        &self.roots
    }

    /// True when the queue has no children (jobs go to leaves only).
    pub fn is_leaf(&self, q: QueueIx) -> bool {
        self.nodes[q].children.is_empty()
    }

    /// The queues from the top-level one down to `q`.
    pub fn path(&self, q: QueueIx) -> &[QueueIx] {
        &self.nodes[q].path
    }

    /// Guarantee + borrowing limit of one resource (`u64::MAX` when unbounded).
    pub fn max(&self, q: QueueIx, r: Resource) -> u64 {
        self.nodes[q].max[r as usize]
    }

    /// Guarantee of one resource.
    pub fn guaranteed(&self, q: QueueIx, r: Resource) -> u64 {
        self.nodes[q].guaranteed[r as usize]
    }

    /// The queues of `a`'s path strictly below the lowest common ancestor of `a` and `b`
    /// (all of `a`'s path when they share none).
    pub fn below_common(&self, a: QueueIx, b: QueueIx) -> &[QueueIx] {
        let (pa, pb) = (self.path(a), self.path(b));
        let common = pa.iter().zip(pb).take_while(|(x, y)| x == y).count();
        &pa[common..]
    }
}

/// Why a job is not admitted: the first queue and resource over its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaBlock {
    /// The queue.
    pub queue: String,
    /// The resource.
    pub resource: Resource,
    /// Its usage.
    pub usage: u64,
    /// Held in it for others.
    pub held: u64,
    /// What the job asks for.
    pub request: u64,
    /// Its guarantee + borrowing limit.
    pub limit: u64,
    /// Its guarantee.
    pub guaranteed: u64,
}

impl fmt::Display for QuotaBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.resource;
        write!(
            f,
            "queue {} would use {} of its limit {} (guaranteed {}, in use {}",
            self.queue,
            r.format(self.usage + self.held + self.request),
            r.format(self.limit),
            r.format(self.guaranteed),
            r.format(self.usage),
        )?;
        if self.held > 0 {
            write!(f, ", held for others {}", r.format(self.held))?;
        }
        write!(f, ", this job needs {})", r.format(self.request))
    }
}

/// Usage and holds per queue (each queue's figure covers its whole subtree).
#[derive(Debug, Clone)]
pub(crate) struct Book {
    pub usage: Vec<Resources>,
    pub held: Vec<Resources>,
}

impl Book {
    pub fn new(tree: &QueueTree) -> Self {
        Book {
            usage: vec![Resources::ZERO; tree.len()],
            held: vec![Resources::ZERO; tree.len()],
        }
    }

    pub fn charge(&mut self, tree: &QueueTree, leaf: QueueIx, r: &Resources) {
        for &q in tree.path(leaf) {
            self.usage[q] += *r;
        }
    }

    pub fn uncharge(&mut self, tree: &QueueTree, leaf: QueueIx, r: &Resources) {
        for &q in tree.path(leaf) {
            self.usage[q] = self.usage[q].saturating_sub(r);
        }
    }

    pub fn hold(&mut self, tree: &QueueTree, leaf: QueueIx, r: &Resources) {
        for &q in tree.path(leaf) {
            self.held[q] += *r;
        }
    }

    pub fn unhold(&mut self, tree: &QueueTree, leaf: QueueIx, r: &Resources) {
        for &q in tree.path(leaf) {
            self.held[q] = self.held[q].saturating_sub(r);
        }
    }

    /// Admission of `request` into `leaf` against guarantee + borrowing limit.
    pub fn admit(
        &self,
        tree: &QueueTree,
        leaf: QueueIx,
        request: &Resources,
    ) -> Result<(), QuotaBlock> {
        for &q in tree.path(leaf) {
            for r in Resource::ALL {
                let need = request.get(r);
                if need == 0 {
                    continue;
                }
                let (usage, held) = (self.usage[q].get(r), self.held[q].get(r));
                let limit = tree.max(q, r);
                if usage.saturating_add(held).saturating_add(need) > limit {
                    return Err(QuotaBlock {
                        queue: tree.name(q).to_string(),
                        resource: r,
                        usage,
                        held,
                        request: need,
                        limit,
                        guaranteed: tree.guaranteed(q, r),
                    });
                }
            }
        }
        Ok(())
    }

    /// True when `request` fits within the guarantee of every queue in `queues`, in
    /// `resources`.
    pub fn within_guarantee(
        &self,
        tree: &QueueTree,
        queues: &[QueueIx],
        request: &Resources,
        resources: &[Resource],
    ) -> bool {
        queues.iter().all(|&q| {
            resources.iter().all(|&r| {
                self.usage[q].get(r) + self.held[q].get(r) + request.get(r) <= tree.guaranteed(q, r)
            })
        })
    }

    /// True when `q` uses more than its guarantee of `r`.
    pub fn borrows(&self, tree: &QueueTree, q: QueueIx, r: Resource) -> bool {
        self.usage[q].get(r) > tree.guaranteed(q, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> QueueTree {
        QueueTree::new(&[
            QueueSpec::new("org").guarantee(Resources::gpus(8)),
            QueueSpec::new("a")
                .parent("org")
                .guarantee(Resources::gpus(4))
                .borrowing(Limits {
                    gpu_milli: Some(2000),
                    ..Limits::NONE
                }),
            QueueSpec::new("b")
                .parent("org")
                .guarantee(Resources::gpus(4)),
            QueueSpec::new("other"),
        ])
        .unwrap()
    }

    #[test]
    fn validation_catches_bad_trees() {
        let dup = QueueTree::new(&[QueueSpec::new("a"), QueueSpec::new("a")]);
        assert_eq!(dup.unwrap_err(), QueueError::Duplicate("a".into()));
        let orphan = QueueTree::new(&[QueueSpec::new("a").parent("x")]);
        assert!(matches!(orphan, Err(QueueError::UnknownParent { .. })));
        let cycle = QueueTree::new(&[
            QueueSpec::new("a").parent("b"),
            QueueSpec::new("b").parent("a"),
        ]);
        assert!(matches!(cycle, Err(QueueError::Cycle(_))));
        let over = QueueTree::new(&[
            QueueSpec::new("p").guarantee(Resources::gpus(1)),
            QueueSpec::new("c")
                .parent("p")
                .guarantee(Resources::gpus(2)),
        ]);
        assert!(matches!(
            over,
            Err(QueueError::GuaranteeExceedsParent { .. })
        ));
        let w = QueueTree::new(&[QueueSpec::new("a").weight(0.0)]);
        assert!(matches!(w, Err(QueueError::BadWeight(_))));
    }

    #[test]
    fn admission_checks_every_ancestor() {
        let t = tree();
        let (a, b) = (t.index("a").unwrap(), t.index("b").unwrap());
        let mut book = Book::new(&t);
        assert!(book.admit(&t, a, &Resources::gpus(6)).is_ok());
        let err = book.admit(&t, a, &Resources::gpus(7)).unwrap_err();
        assert_eq!((err.queue.as_str(), err.limit), ("a", 6000));
        book.charge(&t, b, &Resources::gpus(4));
        let gpu = [Resource::Gpu];
        assert!(book.within_guarantee(&t, t.path(a), &Resources::gpus(4), &gpu));
        assert!(!book.within_guarantee(&t, t.path(a), &Resources::gpus(5), &gpu));
        assert_eq!(t.below_common(a, b), &[a]);
        assert_eq!(t.below_common(a, t.index("other").unwrap()), t.path(a));
        assert!(
            err.to_string()
                .starts_with("queue a would use 7 GPU of its limit 6 GPU (guaranteed 4 GPU")
        );
    }
}

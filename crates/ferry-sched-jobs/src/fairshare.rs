//! Hierarchical fair share: which queue goes next.
//!
//! A cycle serves queues in two passes (see [`crate::session`]): first the work that fits
//! within guarantees, then the work that borrows. At each level of the tree the children
//! are ordered by a key, the lowest first, and the next job comes from the leaf reached by
//! always descending into the lowest child that has work:
//!
//! - **guarantee pass**: `max_r (usage_r + held_r) / guaranteed_r` over the resources the
//!   queue is guaranteed: the queue furthest from its guarantee goes first;
//! - **borrowing pass**: the *dominant borrowed share*
//!   `max_r (usage_r + held_r − guaranteed_r)⁺ / (capacity_r × weight_r)`, ties broken by
//!   the dominant share of usage `max_r (usage_r + held_r) / (capacity_r × weight_r)`,
//!   then by name. `capacity_r` is the cluster's total of r.
//!
//! Why this converges to the weights: on a contended cluster every freed unit goes to the
//! queue with the lowest key, so the keys of queues with pending work stay within one
//! job's worth of each other; equal keys mean each queue's use above its guarantee of its
//! dominant resource is proportional to its weight. With zero guarantees that is plain
//! weighted DRF (usage proportional to weight); guarantees are served first and only the
//! surplus above them is shared by weight.

use std::cmp::Ordering;

use crate::queues::{Book, QueueIx, QueueTree};
use crate::resources::{Resource, Resources};

/// Which pass a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pass {
    /// Work within guarantees.
    Guarantee,
    /// Borrowing work.
    Borrow,
}

/// The guarantee-pass key of a queue.
pub fn guarantee_fill(tree: &QueueTree, usage: &Resources, q: QueueIx) -> f64 {
    Resource::ALL
        .iter()
        .filter(|&&r| tree.guaranteed(q, r) > 0)
        .map(|&r| usage.get(r) as f64 / tree.guaranteed(q, r) as f64)
        .fold(0.0, f64::max)
}

/// The dominant borrowed share of a queue (see the module docs).
pub fn borrowed_share(
    tree: &QueueTree,
    capacity: &Resources,
    usage: &Resources,
    q: QueueIx,
) -> f64 {
    let w = tree.spec(q).weight;
    Resource::ALL
        .iter()
        .filter(|&&r| capacity.get(r) > 0)
        .map(|&r| {
            let over = usage.get(r).saturating_sub(tree.guaranteed(q, r));
            over as f64 / (capacity.get(r) as f64 * w.get(r))
        })
        .fold(0.0, f64::max)
}

/// The dominant share of a queue's usage, weighted.
pub fn dominant_share(
    tree: &QueueTree,
    capacity: &Resources,
    usage: &Resources,
    q: QueueIx,
) -> f64 {
    let w = tree.spec(q).weight;
    Resource::ALL
        .iter()
        .filter(|&&r| capacity.get(r) > 0)
        .map(|&r| usage.get(r) as f64 / (capacity.get(r) as f64 * w.get(r)))
        .fold(0.0, f64::max)
}

fn key(tree: &QueueTree, book: &Book, capacity: &Resources, pass: Pass, q: QueueIx) -> (f64, f64) {
    let usage = book.usage[q] + book.held[q];
    match pass {
        Pass::Guarantee => (
            guarantee_fill(tree, &usage, q),
            dominant_share(tree, capacity, &usage, q),
        ),
        Pass::Borrow => (
            borrowed_share(tree, capacity, &usage, q),
            dominant_share(tree, capacity, &usage, q),
        ),
    }
}

/// Orders two leaves: compares the keys of their ancestors at the level where their paths
/// part (lower first; ties by name).
pub(crate) fn compare_leaves(
    tree: &QueueTree,
    book: &Book,
    capacity: &Resources,
    pass: Pass,
    a: QueueIx,
    b: QueueIx,
) -> Ordering {
    let (pa, pb) = (tree.path(a), tree.path(b));
    let i = pa.iter().zip(pb).take_while(|(x, y)| x == y).count();
    let (Some(&x), Some(&y)) = (pa.get(i), pb.get(i)) else {
        return pa.len().cmp(&pb.len());
    };
    let (kx, ky) = (
        key(tree, book, capacity, pass, x),
        key(tree, book, capacity, pass, y),
    );
    kx.0.total_cmp(&ky.0)
        .then(kx.1.total_cmp(&ky.1))
        .then_with(|| tree.name(x).cmp(tree.name(y)))
}

/// The leaf to serve next among `candidates`.
pub(crate) fn pick(
    tree: &QueueTree,
    book: &Book,
    capacity: &Resources,
    pass: Pass,
    candidates: impl Iterator<Item = QueueIx>,
) -> Option<QueueIx> {
    candidates.min_by(|&a, &b| compare_leaves(tree, book, capacity, pass, a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queues::QueueSpec;

    #[test]
    fn hierarchy_decides_at_the_level_where_paths_part() {
        let t = QueueTree::new(&[
            QueueSpec::new("x").weight(1.0),
            QueueSpec::new("x1").parent("x"),
            QueueSpec::new("x2").parent("x"),
            QueueSpec::new("y").weight(1.0),
        ])
        .unwrap();
        let cap = Resources::gpus(100);
        let mut book = Book::new(&t);
        let ix = |n| t.index(n).unwrap();
        book.charge(&t, ix("x1"), &Resources::gpus(10));
        book.charge(&t, ix("y"), &Resources::gpus(5));
        // x (10) is above y (5): y first, although x2 uses nothing.
        let leaves = [ix("x1"), ix("x2"), ix("y")];
        assert_eq!(
            pick(&t, &book, &cap, Pass::Borrow, leaves.iter().copied()),
            Some(ix("y"))
        );
        book.charge(&t, ix("y"), &Resources::gpus(10));
        // Now x (10) < y (15): inside x, x2 (0) before x1 (10).
        assert_eq!(
            pick(&t, &book, &cap, Pass::Borrow, leaves.iter().copied()),
            Some(ix("x2"))
        );
    }

    #[test]
    fn weights_scale_the_share() {
        let t = QueueTree::new(&[QueueSpec::new("a").weight(2.0), QueueSpec::new("b")]).unwrap();
        let cap = Resources::gpus(30);
        let (a, b) = (t.index("a").unwrap(), t.index("b").unwrap());
        let share = |u| borrowed_share(&t, &cap, &Resources::gpus(u), a);
        assert!((share(20) - borrowed_share(&t, &cap, &Resources::gpus(10), b)).abs() < 1e-12);
    }
}

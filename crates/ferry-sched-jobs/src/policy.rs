//! Resource policies: ordered node units for matching jobs. Pods fill the first unit with
//! room first, then the next; removal (victim choice, scale-down) goes from the last unit
//! first.

use crate::input::{Labels, Selector, matches};
use crate::resources::Resources;

/// A group of nodes, by labels, with an optional cap for the policy's pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Name (for messages).
    pub name: String,
    /// Labels a node must carry to belong to the unit.
    pub node_selector: Vec<(String, String)>,
    /// Most pods of the policy's jobs in the unit.
    pub max_pods: Option<u32>,
    /// Most resources of the policy's jobs in the unit.
    pub max: Option<Resources>,
}

impl Unit {
    /// A unit of the nodes carrying `key=value`, without cap.
    pub fn labelled(name: impl Into<String>, key: &str, value: &str) -> Self {
        Unit {
            name: name.into(),
            node_selector: vec![(key.to_string(), value.to_string())],
            max_pods: None,
            max: None,
        }
    }

    /// The same unit capped at `n` pods.
    pub fn max_pods(mut self, n: u32) -> Self {
        self.max_pods = Some(n);
        self
    }

    /// True when a node with `labels` belongs to the unit.
    pub fn contains(&self, labels: &[(String, String)]) -> bool {
        self.node_selector
            .iter()
            .all(|(k, v)| labels.iter().any(|(nk, nv)| nk == k && nv == v))
    }
}

/// Ordered units for the jobs a selector picks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePolicy {
    /// Name.
    pub name: String,
    /// Job labels it applies to.
    pub selector: Selector,
    /// Units, in fill order. A matching job's pods go only to nodes of some unit.
    pub units: Vec<Unit>,
}

impl ResourcePolicy {
    /// True when the policy applies to a job with `labels`.
    pub fn applies(&self, labels: &Labels) -> bool {
        matches(&self.selector, labels)
    }

    /// The first unit a node with `labels` belongs to.
    pub fn unit_of(&self, labels: &[(String, String)]) -> Option<usize> {
        self.units.iter().position(|u| u.contains(labels))
    }

    /// The order in which to remove `pods` (each given with its node's labels): last unit
    /// first, pods outside every unit before all; ties keep the input order reversed (the
    /// latest first).
    pub fn removal_order<'a, P>(&self, pods: &'a [(P, Vec<(String, String)>)]) -> Vec<&'a P> {
        let mut ranked: Vec<(usize, usize, &P)> = pods
            .iter()
            .enumerate()
            .map(|(i, (p, labels))| (self.unit_of(labels).unwrap_or(usize::MAX), i, p))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        ranked.into_iter().map(|(_, _, p)| p).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_goes_from_the_last_unit() {
        let p = ResourcePolicy {
            name: "p".into(),
            selector: Selector::new(),
            units: vec![
                Unit::labelled("on-demand", "pool", "a"),
                Unit::labelled("spot", "pool", "b"),
            ],
        };
        let l = |v: &str| vec![("pool".to_string(), v.to_string())];
        let pods = vec![("x", l("a")), ("y", l("b")), ("z", l("a")), ("w", l("b"))];
        let order: Vec<&str> = p.removal_order(&pods).into_iter().copied().collect();
        assert_eq!(order, vec!["w", "y", "z", "x"]);
    }
}

//! Node-level placement: which nodes can take a pod, which one it gets, and why none could.

use std::collections::BTreeMap;

use ferry_api::gpu::{self, GpuDevice};
use ferry_api::quantity;
use ferry_api::requests::PodRequests;
use k8s_openapi::api::core::v1::{Node, Pod};

/// What a pod needs from a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNeeds {
    /// CPU in milli-cores.
    pub cpu_milli: i64,
    /// Memory in bytes.
    pub memory_bytes: i64,
    /// Whole GPUs.
    pub gpus: i64,
}

impl PodNeeds {
    /// Reads a pod's effective requests.
    pub fn of(pod: &Pod) -> Result<Self, quantity::QuantityError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let r = PodRequests::of(&spec)?;
        Ok(Self {
            cpu_milli: r.cpu_milli,
            memory_bytes: r.memory_bytes,
            gpus: r.gpus,
        })
    }
}

/// A node's capacity and what is already taken on it.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    ready: bool,
    unschedulable: bool,
    labels: BTreeMap<String, String>,
    taints: Vec<(String, String, String)>,
    cpu_free: i64,
    memory_free: i64,
    pods_free: i64,
    /// Indices of healthy GPUs not yet assigned.
    gpus_free: Vec<u32>,
    gpus_total: usize,
}

fn allocatable(
    node: &Node,
    name: &str,
    parse: fn(&str) -> Result<i64, quantity::QuantityError>,
) -> i64 {
    node.status
        .as_ref()
        .and_then(|s| s.allocatable.as_ref())
        .and_then(|a| a.get(name))
        .and_then(|q| parse(&q.0).ok())
        .unwrap_or(0)
}

impl NodeView {
    /// The view of a node with nothing charged yet.
    pub fn of(node: &Node) -> Self {
        let status = node.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        let spec = node.spec.clone().unwrap_or_default();
        let annotations = node.metadata.annotations.clone().unwrap_or_default();
        let gpu_count = allocatable(
            node,
            ferry_api::RESOURCE_NVIDIA_GPU,
            quantity::parse_integer,
        )
        .max(0);
        // Healthy devices from the agent's description, else indices 0..count.
        let gpus_free: Vec<u32> = match annotations
            .get(gpu::NODE_DEVICES_ANNOTATION)
            .and_then(|a| serde_json::from_str::<Vec<GpuDevice>>(a).ok())
        {
            Some(devices) => devices
                .iter()
                .filter(|d| d.healthy)
                .map(|d| d.index)
                .take(gpu_count as usize)
                .collect(),
            None => (0..gpu_count as u32).collect(),
        };
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready,
            unschedulable: spec.unschedulable.unwrap_or(false),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            taints: spec
                .taints
                .unwrap_or_default()
                .into_iter()
                .map(|t| (t.key, t.value.unwrap_or_default(), t.effect))
                .collect(),
            cpu_free: allocatable(node, "cpu", quantity::parse_milli),
            memory_free: allocatable(node, "memory", quantity::parse_units),
            pods_free: allocatable(node, "pods", quantity::parse_integer),
            gpus_total: gpus_free.len(),
            gpus_free,
        }
    }

    /// Takes a pod's needs (and its GPUs) off the free capacity.
    pub fn charge(&mut self, needs: &PodNeeds, gpus: &[u32]) {
        self.cpu_free -= needs.cpu_milli;
        self.memory_free -= needs.memory_bytes;
        self.pods_free -= 1;
        if gpus.is_empty() {
            // Bound without a recorded assignment: take the lowest free ones.
            let n = (needs.gpus.max(0) as usize).min(self.gpus_free.len());
            self.gpus_free.drain(..n);
        } else {
            self.gpus_free.retain(|g| !gpus.contains(g));
        }
    }
}

/// Whether a pod has finished.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The GPUs recorded on a bound pod.
pub fn assigned_gpus(pod: &Pod) -> Vec<u32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(gpu::POD_ASSIGNED_ANNOTATION))
        .and_then(|v| gpu::parse_assigned(v).ok())
        .unwrap_or_default()
}

fn tolerated(pod: &Pod, key: &str, value: &str, effect: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .any(|t| {
            let effect_ok = t
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == effect);
            let key_ok = t.key.as_deref().is_none_or(|k| k.is_empty() || k == key);
            let value_ok = match t.operator.as_deref() {
                Some("Exists") => true,
                _ => t.value.as_deref().unwrap_or_default() == value,
            };
            effect_ok && key_ok && value_ok
        })
}

/// Chooses a node (index into `nodes`) and GPUs for `pod`, or says why none fits.
///
/// GPU pods go to the feasible node with the fewest free GPUs (whole-card bin-packing keeps
/// large nodes free for large jobs); other pods go to the node with the least free CPU that
/// fits. Ties go to the first node by name.
pub fn place(pod: &Pod, needs: &PodNeeds, nodes: &[NodeView]) -> Result<(usize, Vec<u32>), String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut best: Option<(i64, usize)> = None;
    let selector = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    let largest_gpus = nodes.iter().map(|n| n.gpus_total).max().unwrap_or(0);
    for (i, n) in nodes.iter().enumerate() {
        let why =
            if !n.ready {
                Some("node(s) were not ready".to_string())
            } else if n.unschedulable {
                Some("node(s) were unschedulable".to_string())
            } else if let Some((k, v, e)) = n.taints.iter().find(|(k, v, e)| {
                (e == "NoSchedule" || e == "NoExecute") && !tolerated(pod, k, v, e)
            }) {
                Some(format!("node(s) had untolerated taint {{{k}: {v}}} ({e})"))
            } else if selector.iter().any(|(k, v)| n.labels.get(k) != Some(v)) {
                Some("node(s) didn't match Pod's node affinity/selector".to_string())
            } else if n.pods_free < 1 {
                Some("Too many pods".to_string())
            } else if n.cpu_free < needs.cpu_milli {
                Some("Insufficient cpu".to_string())
            } else if n.memory_free < needs.memory_bytes {
                Some("Insufficient memory".to_string())
            } else if (n.gpus_free.len() as i64) < needs.gpus {
                Some(format!("Insufficient {}", ferry_api::RESOURCE_NVIDIA_GPU))
            } else {
                None
            };
        match why {
            Some(reason) => *reasons.entry(reason).or_default() += 1,
            None => {
                let score = if needs.gpus > 0 {
                    n.gpus_free.len() as i64
                } else {
                    n.cpu_free
                };
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, i));
                }
            }
        }
    }
    if let Some((_, i)) = best {
        let gpus = nodes[i]
            .gpus_free
            .iter()
            .copied()
            .take(needs.gpus.max(0) as usize)
            .collect();
        return Ok((i, gpus));
    }
    let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    parts.sort();
    let mut message = format!(
        "0/{} nodes are available: {}.",
        nodes.len(),
        parts.join(", ")
    );
    if nodes.is_empty() {
        message = "0/0 nodes are available: no node is registered yet.".into();
    }
    if needs.gpus as usize > largest_gpus && !nodes.is_empty() {
        message.push_str(&format!(
            " The pod asks for {} GPUs; the largest node has {largest_gpus}.",
            needs.gpus
        ));
    }
    Err(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, gpus: u32, ready: bool) -> NodeView {
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {
                "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": gpus.to_string()},
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .unwrap();
        NodeView::of(&n)
    }

    fn pod(gpus: u32, cpu: &str) -> (Pod, PodNeeds) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "resources": {
                "requests": {"cpu": cpu}, "limits": {"nvidia.com/gpu": gpus.to_string()}}}]}
        }))
        .unwrap();
        let needs = PodNeeds::of(&p).unwrap();
        (p, needs)
    }

    #[test]
    fn gpu_pods_pack_onto_the_fullest_feasible_node() {
        let mut nodes = vec![node("a", 8, true), node("b", 8, true)];
        nodes[1].charge(
            &PodNeeds {
                cpu_milli: 0,
                memory_bytes: 0,
                gpus: 6,
            },
            &[0, 1, 2, 3, 4, 5],
        );
        let (p, needs) = pod(2, "1");
        let (i, gpus) = place(&p, &needs, &nodes).unwrap();
        assert_eq!(nodes[i].name, "b");
        assert_eq!(gpus, vec![6, 7]);
        let (p, needs) = pod(3, "1");
        assert_eq!(nodes[place(&p, &needs, &nodes).unwrap().0].name, "a");
    }

    #[test]
    fn explains_why_nothing_fits() {
        let nodes = vec![node("a", 8, true), node("b", 8, false)];
        let (p, needs) = pod(1000, "1");
        let why = place(&p, &needs, &nodes).unwrap_err();
        assert!(why.starts_with("0/2 nodes are available"), "{why}");
        assert!(why.contains("1 Insufficient nvidia.com/gpu"), "{why}");
        assert!(why.contains("1 node(s) were not ready"), "{why}");
        assert!(
            why.contains("asks for 1000 GPUs; the largest node has 8"),
            "{why}"
        );
        let (p, needs) = pod(0, "64");
        assert!(
            place(&p, &needs, &nodes)
                .unwrap_err()
                .contains("Insufficient cpu")
        );
    }
}

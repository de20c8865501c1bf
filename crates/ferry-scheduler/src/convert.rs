//! From Kubernetes objects to the plain data of the scheduling core.

use std::collections::BTreeMap;

use ferry_api::gpu::{self, GpuDevice};
use ferry_api::quantity;
use ferry_api::scheduling::{self, LabelMatch, Queue, QueueResource, Reservation, ResourcePolicy};
use ferry_sched_core::model::{CardSpec, MAX_CARDS, ModelError, Taint, TaintEffect, Toleration};
use ferry_sched_core::{CardSet, GpuRequest, ModelSet, NodeSpec, PodRequest};
use ferry_sched_jobs::{Limits, QueueSpec, Resources, Weights};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::objects::{Node, Pairs, Pod};

/// Extended resource: thousandths of one GPU card (a fractional, shared GPU).
pub const GPU_MILLI_RESOURCE: &str = "ferry.dev/gpu-milli";
/// Extended resource: GPU memory in MiB on a shared card.
pub const GPU_MEMORY_RESOURCE: &str = "ferry.dev/gpu-memory";
/// Why an object could not be turned into core data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// Interns a GPU model name, or says why it cannot be represented.
pub type Intern<'a> = dyn FnMut(&str) -> Result<ferry_sched_core::ModelId, ModelError> + 'a;

fn limit_or_request(pod: &Pod, name: &str) -> Result<i64, ConvertError> {
    let mut total: i64 = 0;
    for c in &pod.spec.containers {
        let res = &c.resources;
        let q = res.limits.get(name).or_else(|| res.requests.get(name));
        if let Some(q) = q {
            let v = quantity::parse_integer(&q.0).map_err(|e| ConvertError(e.to_string()))?;
            total = total
                .checked_add(v)
                .ok_or_else(|| ConvertError(format!("the pod's total {name} is too large")))?;
        }
    }
    Ok(total)
}

/// The whole GPUs a pod asks for (before the core's card limit).
pub fn requested_gpus(pod: &Pod) -> i64 {
    pod.requests().map_or(0, |r| r.gpus)
}

/// What a pod asks of a node, in the core's terms. With `strict`, a GPU model that cannot
/// be interned is an error (the pod cannot be represented); without (a pod already bound,
/// whose model no longer matters), it is left out of the constraint.
pub fn pod_request(
    pod: &Pod,
    models: &mut Intern<'_>,
    strict: bool,
) -> Result<PodRequest, ConvertError> {
    let spec = &pod.spec;
    let r = pod.requests().map_err(|e| ConvertError(e.to_string()))?;
    let memory_mib = (r.memory_bytes.max(0) as u64).div_ceil(1 << 20);
    let milli = limit_or_request(pod, GPU_MILLI_RESOURCE)?;
    let gpu_memory = limit_or_request(pod, GPU_MEMORY_RESOURCE)?;
    let gpu = if r.gpus > 0 {
        if milli > 0 || gpu_memory > 0 {
            return Err(ConvertError(format!(
                "the pod asks for whole GPUs ({}) and for a share of one ({GPU_MILLI_RESOURCE}/{GPU_MEMORY_RESOURCE}); ask for one or the other",
                ferry_api::RESOURCE_NVIDIA_GPU
            )));
        }
        if r.gpus > MAX_CARDS as i64 {
            return Err(ConvertError(format!(
                "the pod asks for {} GPUs; a node has at most {MAX_CARDS}",
                r.gpus
            )));
        }
        GpuRequest::whole(r.gpus as u8)
    } else if milli > 0 || gpu_memory > 0 {
        if !(0..=1000).contains(&milli) {
            return Err(ConvertError(format!(
                "{GPU_MILLI_RESOURCE} must be between 1 and 1000, not {milli}"
            )));
        }
        let milli = if milli == 0 { 1000 } else { milli };
        GpuRequest::shared(milli as u16, gpu_memory.clamp(0, u32::MAX as i64) as u32)
    } else {
        GpuRequest::default()
    };
    let mut node_selector: Vec<(String, String)> = spec
        .node_selector
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A GPU-model selector becomes the model constraint, so the core can explain mismatches.
    let mut gpu_models = ModelSet::ANY;
    if let Some(pos) = node_selector
        .iter()
        .position(|(k, _)| k == gpu::NODE_MODEL_LABEL)
    {
        let (_, wanted) = node_selector.remove(pos);
        for model in wanted.split('|').filter(|m| !m.is_empty()) {
            match models(model) {
                Ok(id) => gpu_models.insert(id),
                Err(e) if strict => {
                    return Err(ConvertError(format!(
                        "no node has GPU model {model:?}, and no more models can be told apart ({e})"
                    )));
                }
                Err(_) => {}
            }
        }
    }
    let tolerations = spec
        .tolerations
        .iter()
        .map(|t| Toleration {
            key: t.key.clone().filter(|k| !k.is_empty()),
            value: match t.operator.as_deref() {
                Some("Exists") => None,
                _ => Some(t.value.clone().unwrap_or_default()),
            },
            effect: t.effect.as_deref().and_then(taint_effect),
        })
        .collect();
    Ok(PodRequest {
        cpu_milli: r.cpu_milli.max(0) as u64,
        memory_mib,
        gpu,
        gpu_models,
        node_selector,
        tolerations,
    })
}

fn taint_effect(e: &str) -> Option<TaintEffect> {
    match e {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

fn allocatable(
    node: &Node,
    name: &str,
    parse: fn(&str) -> Result<i64, quantity::QuantityError>,
) -> i64 {
    node.status
        .allocatable
        .get(name)
        .and_then(|q| parse(&q.0).ok())
        .unwrap_or(0)
        .max(0)
}

/// A node in the core's terms, and what could not be represented. Nodes that are not Ready
/// or are cordoned get the taints Kubernetes gives them, so only tolerating pods go there.
/// A node with more than [`MAX_CARDS`] GPUs offers its first [`MAX_CARDS`]; one whose
/// model cannot be interned offers its cards only to pods that name no model.
pub fn node_spec(node: &Node, models: &mut Intern<'_>) -> (NodeSpec, Vec<String>) {
    let mut warnings = Vec::new();
    let name = node.metadata.name.clone().unwrap_or_default();
    let labels = &node.labels;
    let spec = &node.spec;
    let mut taints: Vec<Taint> = spec
        .taints
        .iter()
        .filter_map(|t| {
            Some(Taint {
                key: t.key.clone(),
                value: t.value.clone().unwrap_or_default(),
                effect: taint_effect(&t.effect)?,
            })
        })
        .collect();
    let ready = node
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        taints.push(Taint {
            key: "node.kubernetes.io/not-ready".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        });
    }
    if spec.unschedulable == Some(true) {
        taints.push(Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            value: String::new(),
            effect: TaintEffect::NoSchedule,
        });
    }
    let count = allocatable(
        node,
        ferry_api::RESOURCE_NVIDIA_GPU,
        quantity::parse_integer,
    ) as usize;
    let devices: Option<Vec<GpuDevice>> = node
        .annotations
        .get(gpu::NODE_DEVICES_ANNOTATION)
        .and_then(|a| serde_json::from_str(a).ok());
    // Cards by index; an unhealthy card is kept (indices must stay stable) but made full.
    let mut cards: Vec<CardSpec> = Vec::new();
    let mut unhealthy = Vec::new();
    let declared = devices.as_ref().map_or(count, Vec::len);
    if declared > MAX_CARDS {
        warnings.push(format!(
            "node {name} has {declared} GPUs; the scheduler uses its first {MAX_CARDS} (the most one node may have)"
        ));
    }
    match devices {
        Some(devices) => {
            for d in devices.iter().take(MAX_CARDS) {
                let peers = d
                    .nvlink_peers
                    .iter()
                    .filter(|p| (**p as usize) < MAX_CARDS)
                    .fold(0u32, |m, p| m | (1 << p));
                cards.push(CardSpec {
                    memory_mib: d.memory_mib.min(u32::MAX as u64) as u32,
                    nvlink_peers: peers,
                });
                if !d.healthy {
                    unhealthy.push(d.index);
                }
            }
        }
        None => {
            cards = vec![
                CardSpec {
                    memory_mib: 0,
                    nvlink_peers: 0
                };
                count.min(MAX_CARDS)
            ]
        }
    }
    if !unhealthy.is_empty() {
        taints.push(Taint {
            key: "ferry.dev/unhealthy-gpu".into(),
            value: String::new(),
            effect: TaintEffect::PreferNoSchedule,
        });
    }
    // Cards without a declared model still need one (the core matches models on GPU nodes).
    let model = if cards.is_empty() {
        None
    } else {
        let wanted = labels
            .get(gpu::NODE_MODEL_LABEL)
            .map_or("unknown", String::as_str);
        match models(wanted) {
            Ok(id) => Some(id),
            Err(e) => {
                warnings.push(format!(
                    "node {name}: GPU model {wanted:?} cannot be represented ({e}); its GPUs serve only pods that name no model"
                ));
                None
            }
        }
    };
    let spec = NodeSpec {
        name,
        cpu_milli: allocatable(node, "cpu", quantity::parse_milli) as u64,
        memory_mib: (allocatable(node, "memory", quantity::parse_units) as u64) >> 20,
        max_pods: allocatable(node, "pods", quantity::parse_integer).clamp(0, u32::MAX as i64)
            as u32,
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        taints,
        gpu_model: model,
        cards,
    };
    (spec, warnings)
}

/// The cards recorded on a bound pod.
pub fn assigned_cards(pod: &Pod) -> CardSet {
    let mut set = CardSet::default();
    if let Some(indices) = pod
        .annotations
        .get(gpu::POD_ASSIGNED_ANNOTATION)
        .and_then(|v| gpu::parse_assigned(v).ok())
    {
        for i in indices.into_iter().filter(|i| (*i as usize) < MAX_CARDS) {
            set.insert(i as usize);
        }
    }
    set
}

fn amount(q: &IntOrString, resource: &str) -> Result<u64, ConvertError> {
    let text = match q {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    };
    let bad = |e: quantity::QuantityError| ConvertError(format!("{resource}: {e}"));
    let v = match resource {
        "cpu" => quantity::parse_milli(&text).map_err(bad)?,
        "memory" => quantity::parse_units(&text).map_err(bad)? >> 20,
        r if r == ferry_api::RESOURCE_NVIDIA_GPU => quantity::parse_milli(&text).map_err(bad)?,
        r if r == GPU_MILLI_RESOURCE || r == GPU_MEMORY_RESOURCE => {
            quantity::parse_units(&text).map_err(bad)?
        }
        other => {
            return Err(ConvertError(format!(
                "unknown resource {other:?}: use cpu, memory, nvidia.com/gpu, {GPU_MILLI_RESOURCE} or {GPU_MEMORY_RESOURCE}"
            )));
        }
    };
    Ok(v.max(0) as u64)
}

fn set(resources: &mut Resources, name: &str, v: u64) {
    match name {
        "cpu" => resources.cpu_milli = v,
        "memory" => resources.memory_mib = v,
        n if n == ferry_api::RESOURCE_NVIDIA_GPU || n == GPU_MILLI_RESOURCE => {
            resources.gpu_milli = v
        }
        _ => resources.gpu_memory_mib = v,
    }
}

/// A Queue in the core's terms.
pub fn queue_spec(queue: &Queue) -> Result<QueueSpec, ConvertError> {
    let name = queue.metadata.name.clone().unwrap_or_default();
    let mut spec = QueueSpec::new(name);
    if let Some(p) = queue.spec.parent.as_ref().filter(|p| !p.is_empty()) {
        spec = spec.parent(p.clone());
    }
    let default_weight = queue.spec.weight.unwrap_or(1).max(1) as f64;
    spec.weight = Weights::uniform(default_weight);
    let mut guaranteed = Resources::ZERO;
    let mut limits = Limits::NONE;
    for QueueResource {
        name,
        guaranteed: g,
        borrowing_limit,
        weight,
    } in &queue.spec.resources
    {
        if let Some(g) = g {
            set(&mut guaranteed, name, amount(g, name)?);
        }
        if let Some(b) = borrowing_limit {
            let v = Some(amount(b, name)?);
            match name.as_str() {
                "cpu" => limits.cpu_milli = v,
                "memory" => limits.memory_mib = v,
                n if n == ferry_api::RESOURCE_NVIDIA_GPU || n == GPU_MILLI_RESOURCE => {
                    limits.gpu_milli = v
                }
                _ => limits.gpu_memory_mib = v,
            }
        } else {
            amount(&IntOrString::Int(0), name)?; // rejects unknown resource names
        }
        if let Some(w) = weight {
            let w = (*w).max(1) as f64;
            match name.as_str() {
                "cpu" => spec.weight.cpu = w,
                "memory" => spec.weight.memory = w,
                n if n == ferry_api::RESOURCE_NVIDIA_GPU || n == GPU_MILLI_RESOURCE => {
                    spec.weight.gpu = w
                }
                _ => spec.weight.gpu_memory = w,
            }
        }
    }
    spec.guaranteed = guaranteed;
    spec.borrowing_limit = limits;
    Ok(spec)
}

fn selector(s: &Option<LabelMatch>) -> BTreeMap<String, String> {
    s.as_ref()
        .map(|m| m.match_labels.clone())
        .unwrap_or_default()
}

/// A Reservation in the core's terms (`created` and the TTL give the expiry).
pub fn reservation(
    r: &Reservation,
    created_ms: u64,
) -> Result<ferry_sched_jobs::Reservation, ConvertError> {
    let ns = r.metadata.namespace.clone().unwrap_or_default();
    let name = format!("{ns}/{}", r.metadata.name.clone().unwrap_or_default());
    let mut per_node = PodRequest::default();
    for (resource, q) in &r.spec.resources {
        let v = amount(q, resource)?;
        match resource.as_str() {
            "cpu" => per_node.cpu_milli = v,
            "memory" => per_node.memory_mib = v,
            n if n == ferry_api::RESOURCE_NVIDIA_GPU => {
                if v % 1000 != 0 {
                    return Err(ConvertError(format!(
                        "{n} must be a whole number in a Reservation"
                    )));
                }
                if v / 1000 > MAX_CARDS as u64 {
                    return Err(ConvertError(format!(
                        "{n}: a node has at most {MAX_CARDS} GPUs"
                    )));
                }
                per_node.gpu = GpuRequest::whole((v / 1000) as u8);
            }
            other => return Err(ConvertError(format!("a Reservation cannot hold {other}"))),
        }
    }
    let mut sel = selector(&r.spec.selector);
    // Reservations are namespaced: only that namespace's jobs may use them.
    sel.insert(NAMESPACE_LABEL.into(), ns);
    Ok(ferry_sched_jobs::Reservation {
        name,
        selector: sel,
        nodes: r.spec.node_names.clone(),
        per_node,
        expires_at: r
            .spec
            .ttl_seconds
            .map(|t| created_ms.saturating_add((t.max(0) as u64).saturating_mul(1000))),
    })
}

/// The pseudo-label carrying a job's namespace (so namespaced selectors stay in their
/// namespace).
pub const NAMESPACE_LABEL: &str = "ferry.dev/namespace";

/// A ResourcePolicy in the core's terms.
pub fn resource_policy(p: &ResourcePolicy) -> ferry_sched_jobs::ResourcePolicy {
    let ns = p.metadata.namespace.clone().unwrap_or_default();
    let mut sel = selector(&p.spec.selector);
    sel.insert(NAMESPACE_LABEL.into(), ns.clone());
    ferry_sched_jobs::ResourcePolicy {
        name: format!("{ns}/{}", p.metadata.name.clone().unwrap_or_default()),
        selector: sel,
        units: p
            .spec
            .units
            .iter()
            .map(|u| ferry_sched_jobs::Unit {
                name: u.name.clone(),
                node_selector: u.node_selector.clone().into_iter().collect(),
                max_pods: u.max,
                max: None,
            })
            .collect(),
    }
}

/// The queue a pod is submitted to: its own label, its PodGroup's, its namespace's, or the
/// default queue.
pub fn queue_of(
    pod_labels: &Pairs<String>,
    group_labels: Option<&BTreeMap<String, String>>,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> String {
    let named = |q: Option<&String>| q.filter(|q| !q.is_empty()).cloned();
    named(pod_labels.get(scheduling::QUEUE_LABEL))
        .or_else(|| {
            [group_labels, namespace_labels]
                .into_iter()
                .flatten()
                .find_map(|l| named(l.get(scheduling::QUEUE_LABEL)))
        })
        .unwrap_or_else(|| scheduling::DEFAULT_QUEUE.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn models() -> impl FnMut(&str) -> Result<ferry_sched_core::ModelId, ModelError> {
        let mut reg = ferry_sched_core::model::ModelRegistry::default();
        move |name| reg.intern(name)
    }

    #[test]
    fn pods_become_requests() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {
                "nodeSelector": {"ferry.dev/gpu-model": "A100-80GB", "zone": "a"},
                "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "containers": [{"name": "c", "resources": {
                    "requests": {"cpu": "4", "memory": "16Gi"},
                    "limits": {"nvidia.com/gpu": "2"}}}]
            }
        }))
        .unwrap();
        let r = pod_request(&pod, &mut models(), true).unwrap();
        assert_eq!((r.cpu_milli, r.memory_mib, r.gpu.count), (4000, 16384, 2));
        assert!(!r.gpu_models.is_any());
        assert_eq!(r.node_selector, vec![("zone".to_string(), "a".to_string())]);
        assert_eq!(r.tolerations[0].value, None);

        let shared: Pod = serde_json::from_value(json!({"metadata": {"name": "s"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"ferry.dev/gpu-milli": "250", "ferry.dev/gpu-memory": "8192"}}}]}}))
        .unwrap();
        let r = pod_request(&shared, &mut models(), true).unwrap();
        assert_eq!((r.gpu.count, r.gpu.milli, r.gpu.memory_mib), (1, 250, 8192));
    }

    #[test]
    fn queues_become_specs() {
        let q: Queue = serde_json::from_value(json!({
            "metadata": {"name": "research"},
            "spec": {"parent": "org", "weight": 2, "resources": [
                {"name": "nvidia.com/gpu", "guaranteed": 8, "borrowingLimit": "4", "weight": 3},
                {"name": "cpu", "guaranteed": "64"}
            ]}
        }))
        .unwrap();
        let spec = queue_spec(&q).unwrap();
        assert_eq!(spec.parent.as_deref(), Some("org"));
        assert_eq!(spec.guaranteed.gpu_milli, 8000);
        assert_eq!(spec.guaranteed.cpu_milli, 64_000);
        assert_eq!(spec.borrowing_limit.gpu_milli, Some(4000));
        assert_eq!(spec.weight.gpu, 3.0);
        assert_eq!(spec.weight.cpu, 2.0);
        let bad: Queue = serde_json::from_value(json!({"metadata": {"name": "x"}, "spec": {"resources": [{"name": "tpu", "guaranteed": 1}]}})).unwrap();
        assert!(queue_spec(&bad).unwrap_err().0.contains("unknown resource"));
    }

    #[test]
    fn unready_and_cordoned_nodes_are_tainted() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"ferry.dev/gpu-model": "T4"}},
            "spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2"},
                "conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        let (spec, warnings) = node_spec(&node, &mut models());
        assert!(warnings.is_empty());
        assert_eq!(spec.cards.len(), 2);
        assert_eq!(spec.memory_mib, 32 * 1024);
        let keys: Vec<&str> = spec.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "node.kubernetes.io/not-ready",
                "node.kubernetes.io/unschedulable"
            ]
        );
    }

    #[test]
    fn nodes_above_the_card_limit_offer_the_limit_and_say_so() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "big", "labels": {"ferry.dev/gpu-model": "T4"}},
            "status": {"allocatable": {"nvidia.com/gpu": "20"},
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let (spec, warnings) = node_spec(&node, &mut models());
        assert_eq!(spec.cards.len(), MAX_CARDS);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("has 20 GPUs"), "{}", warnings[0]);
    }

    #[test]
    fn pods_beyond_limits_are_refused_with_a_reason() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let many = pod(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"nvidia.com/gpu": "17"}}}]}}),
        );
        let e = pod_request(&many, &mut models(), true).unwrap_err();
        assert!(e.0.contains("at most 16"), "{e}");
        let huge = pod(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"ferry.dev/gpu-memory": "9223372036854775807"}}},
            {"name": "b", "resources": {"limits": {"ferry.dev/gpu-memory": "1"}}}]}}));
        let e = pod_request(&huge, &mut models(), true).unwrap_err();
        assert!(e.0.contains("too large"), "{e}");
        // A model that cannot be interned: refused when pending, ignored once bound.
        let picky = pod(json!({"metadata": {"name": "p"}, "spec": {
            "nodeSelector": {"ferry.dev/gpu-model": "X"},
            "containers": [{"name": "c", "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}}));
        let mut full = |_: &str| Err(ModelError::TooManyModels { max: 64 });
        let e = pod_request(&picky, &mut full, true).unwrap_err();
        assert!(e.0.contains("\"X\""), "{e}");
        assert!(
            pod_request(&picky, &mut full, false)
                .unwrap()
                .gpu_models
                .is_any()
        );
    }

    #[test]
    fn queue_resolution_order() {
        let l = |q: &str| BTreeMap::from([(scheduling::QUEUE_LABEL.to_string(), q.to_string())]);
        let p = |q: &str| Pairs::new(vec![(scheduling::QUEUE_LABEL.to_string(), q.to_string())]);
        let none = Pairs::default();
        assert_eq!(queue_of(&p("a"), Some(&l("b")), Some(&l("c"))), "a");
        assert_eq!(queue_of(&p(""), Some(&l("b")), Some(&l("c"))), "b");
        assert_eq!(queue_of(&none, Some(&l("b")), Some(&l("c"))), "b");
        assert_eq!(queue_of(&none, None, Some(&l("c"))), "c");
        assert_eq!(queue_of(&none, None, None), "default");
    }
}

//! ResourceQuota arithmetic shared by the API server's admission plugin and the quota status
//! controller: what one object counts against a quota (Kubernetes' quota evaluators), which
//! quotas a pod falls under (scopes), and quantities in the text Kubernetes prints.
//!
//! Amounts are thousandths of their unit (`i128`, so that memory in bytes cannot overflow).
//! GPUs: `requests.nvidia.com/gpu` counts whole cards plus the shares pods take with
//! `ferry.dev/gpu-milli` (500 = half a card), so a fraction of a card counts as that fraction.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::RESOURCE_NVIDIA_GPU;
use crate::quantity;

/// Extended resource of a share of one GPU card, in thousandths of the card.
pub const RESOURCE_GPU_MILLI: &str = "ferry.dev/gpu-milli";
/// Extended resource of GPU memory on a shared card, in MiB.
pub const RESOURCE_GPU_MEMORY: &str = "ferry.dev/gpu-memory";

/// What objects count, by quota resource name (`requests.cpu`, `pods`), in thousandths.
pub type Usage = BTreeMap<String, i128>;

/// The quota scopes Kubernetes defines (`spec.scopes`, `spec.scopeSelector`).
pub const SCOPES: &[&str] = &[
    "Terminating",
    "NotTerminating",
    "BestEffort",
    "NotBestEffort",
    "PriorityClass",
    "CrossNamespacePodAffinity",
];

/// The quota resource names without a `/` that Kubernetes accepts
/// (`IsStandardQuotaResourceName`).
pub const STANDARD_RESOURCES: &[&str] = &[
    "pods",
    "services",
    "replicationcontrollers",
    "resourcequotas",
    "secrets",
    "configmaps",
    "persistentvolumeclaims",
    "services.nodeports",
    "services.loadbalancers",
    "cpu",
    "memory",
    "ephemeral-storage",
    "storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
];

/// The resources a quota on compute resources may name (the pod evaluator's).
fn is_pod_resource(name: &str) -> bool {
    matches!(
        name,
        "pods"
            | "count/pods"
            | "cpu"
            | "memory"
            | "ephemeral-storage"
            | "requests.cpu"
            | "requests.memory"
            | "requests.ephemeral-storage"
            | "limits.cpu"
            | "limits.memory"
            | "limits.ephemeral-storage"
    ) || name.starts_with("requests.")
        || name.starts_with("hugepages-")
        || (name.contains('/') && !name.starts_with("count/"))
}

/// Whether `name` is a compute resource a quota on pods counts (the resources Kubernetes
/// accepts under the `BestEffort`/`Terminating` scopes).
pub fn is_compute_resource(name: &str) -> bool {
    name != "pods" && name != "count/pods" && is_pod_resource(name)
}

/// A quantity's value in thousandths, as JSON holds it (`"500m"`, `"2"`, `2`).
pub fn milli_of(value: &Value) -> Result<i128, quantity::QuantityError> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    };
    quantity::parse_milli(&text).map(i128::from)
}

/// Whether a pod has finished (`Succeeded` or `Failed`), or its deletion grace has passed:
/// such a pod no longer counts against quota.
pub fn pod_is_terminal(pod: &Value, now: &str) -> bool {
    if matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    ) {
        return true;
    }
    // RFC 3339 timestamps in UTC compare as text.
    pod["metadata"]["deletionTimestamp"]
        .as_str()
        .is_some_and(|t| !t.is_empty() && t <= now)
}

/// The containers of a pod spec: regular ones, then init containers.
fn containers(spec: &Value) -> (Vec<&Value>, Vec<&Value>) {
    let list = |k: &str| -> Vec<&Value> { spec[k].as_array().into_iter().flatten().collect() };
    (list("containers"), list("initContainers"))
}

/// A container's request for `resource` (its limit when only that is set, as Kubernetes
/// defaults requests to limits).
fn request_of(c: &Value, resource: &str) -> Option<i128> {
    let r = &c["resources"];
    r["requests"]
        .get(resource)
        .or_else(|| r["limits"].get(resource))
        .and_then(|q| milli_of(q).ok())
}

fn limit_of(c: &Value, resource: &str) -> Option<i128> {
    c["resources"]["limits"]
        .get(resource)
        .and_then(|q| milli_of(q).ok())
}

/// The names of the resources a container requests or limits.
fn resource_names(c: &Value) -> Vec<String> {
    let mut names: Vec<String> = ["requests", "limits"]
        .iter()
        .flat_map(|k| c["resources"][*k].as_object().into_iter().flatten())
        .map(|(k, _)| k.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The pod-level amount of `resource`, read per container with `read`: the sum over
/// containers, raised to the largest init container, plus the overhead.
fn pod_amount(spec: &Value, resource: &str, read: impl Fn(&Value, &str) -> Option<i128>) -> i128 {
    let (regular, init) = containers(spec);
    let sum: i128 = regular.iter().filter_map(|c| read(c, resource)).sum();
    let init_max = init
        .iter()
        .filter_map(|c| read(c, resource))
        .max()
        .unwrap_or(0);
    let overhead = spec["overhead"]
        .get(resource)
        .and_then(|q| milli_of(q).ok())
        .unwrap_or(0);
    sum.max(init_max) + overhead
}

/// The share of GPU cards a pod takes, in thousandths: whole cards, or its
/// `ferry.dev/gpu-milli` share (a share of GPU memory alone takes a whole card, as the
/// scheduler reads it).
pub fn pod_gpu_milli(spec: &Value) -> i128 {
    let whole = pod_amount(spec, RESOURCE_NVIDIA_GPU, request_of);
    if whole > 0 {
        return whole;
    }
    // ferry.dev/gpu-milli is a count of thousandths: "500" is half a card.
    let share = pod_amount(spec, RESOURCE_GPU_MILLI, request_of) / 1000;
    let memory = pod_amount(spec, RESOURCE_GPU_MEMORY, request_of);
    if share > 0 {
        share.min(1000)
    } else if memory > 0 {
        1000
    } else {
        0
    }
}

/// Whether no container of the pod requests or limits cpu or memory (QoS `BestEffort`).
pub fn pod_is_best_effort(spec: &Value) -> bool {
    let (regular, init) = containers(spec);
    regular.iter().chain(init.iter()).all(|c| {
        ["cpu", "memory"]
            .iter()
            .all(|r| request_of(c, r).is_none() && limit_of(c, r).is_none())
    })
}

/// What a pod counts against quota (Kubernetes' pod evaluator): `pods`, `count/pods`,
/// requests and limits of cpu and memory (`cpu` and `memory` are the requests), and
/// `requests.<name>` of every other resource; GPUs as [`pod_gpu_milli`].
pub fn pod_usage(pod: &Value) -> Usage {
    let spec = &pod["spec"];
    let mut usage = Usage::new();
    usage.insert("pods".into(), 1000);
    usage.insert("count/pods".into(), 1000);
    let (regular, init) = containers(spec);
    let mut names: Vec<String> = regular
        .iter()
        .chain(init.iter())
        .flat_map(|c| resource_names(c))
        .collect();
    names.sort();
    names.dedup();
    for name in &names {
        let requested = pod_amount(spec, name, request_of);
        let limited = pod_amount(spec, name, limit_of);
        match name.as_str() {
            "cpu" | "memory" | "ephemeral-storage" => {
                usage.insert(name.clone(), requested);
                usage.insert(format!("requests.{name}"), requested);
                usage.insert(format!("limits.{name}"), limited);
            }
            RESOURCE_NVIDIA_GPU | RESOURCE_GPU_MILLI | RESOURCE_GPU_MEMORY => {}
            other => {
                usage.insert(format!("requests.{other}"), requested);
                if other.contains('/') {
                    usage.insert(other.to_string(), requested);
                }
            }
        }
    }
    let gpus = pod_gpu_milli(spec);
    if gpus > 0 {
        usage.insert(format!("requests.{RESOURCE_NVIDIA_GPU}"), gpus);
        usage.insert(RESOURCE_NVIDIA_GPU.into(), gpus);
    }
    for extended in [RESOURCE_GPU_MILLI, RESOURCE_GPU_MEMORY] {
        let v = pod_amount(spec, extended, request_of);
        if v > 0 {
            usage.insert(format!("requests.{extended}"), v);
            usage.insert(extended.into(), v);
        }
    }
    usage
}

/// The quota names an object of `plural` in `group` counts under, besides compute resources:
/// `count/<plural>[.<group>]` and the legacy core names.
pub fn object_count_names(group: &str, plural: &str) -> Vec<String> {
    let mut names = vec![if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }];
    if group.is_empty()
        && matches!(
            plural,
            "pods"
                | "services"
                | "secrets"
                | "configmaps"
                | "persistentvolumeclaims"
                | "replicationcontrollers"
                | "resourcequotas"
        )
    {
        names.push(plural.to_string());
    }
    names
}

/// What one object of `plural` in `group` counts: one of each of its count names, and for
/// Services their node ports and load balancers.
pub fn object_usage(group: &str, plural: &str, object: &Value) -> Usage {
    if group.is_empty() && plural == "pods" {
        return pod_usage(object);
    }
    let mut usage: Usage = object_count_names(group, plural)
        .into_iter()
        .map(|n| (n, 1000))
        .collect();
    if group.is_empty() && plural == "services" {
        let kind = object["spec"]["type"].as_str().unwrap_or("ClusterIP");
        let ports = object["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
        match kind {
            "NodePort" => {
                usage.insert("services.nodeports".into(), ports * 1000);
            }
            "LoadBalancer" => {
                usage.insert("services.loadbalancers".into(), 1000);
                usage.insert("services.nodeports".into(), ports * 1000);
            }
            _ => {}
        }
    }
    usage
}

/// One requirement of a scope selector (`spec.scopeSelector.matchExpressions[]`, or a
/// plain `spec.scopes` entry as `Exists`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRequirement {
    /// The scope.
    pub scope: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// The values (PriorityClass names for the `PriorityClass` scope).
    pub values: Vec<String>,
}

/// The scope requirements of a quota's spec.
pub fn scope_requirements(spec: &Value) -> Vec<ScopeRequirement> {
    let mut out: Vec<ScopeRequirement> = spec["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|s| ScopeRequirement {
            scope: s.to_string(),
            operator: "Exists".into(),
            values: Vec::new(),
        })
        .collect();
    for e in spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(ScopeRequirement {
            scope: e["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: e["operator"].as_str().unwrap_or_default().to_string(),
            values: e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect(),
        });
    }
    out
}

/// Whether a quota with `requirements` tracks `pod` (every requirement must hold).
pub fn pod_matches_scopes(requirements: &[ScopeRequirement], pod: &Value) -> bool {
    let spec = &pod["spec"];
    requirements.iter().all(|r| {
        let matched = match r.scope.as_str() {
            "Terminating" => spec["activeDeadlineSeconds"].as_i64().is_some(),
            "NotTerminating" => spec["activeDeadlineSeconds"].as_i64().is_none(),
            "BestEffort" => pod_is_best_effort(spec),
            "NotBestEffort" => !pod_is_best_effort(spec),
            "CrossNamespacePodAffinity" => false,
            "PriorityClass" => {
                let class = spec["priorityClassName"].as_str().unwrap_or_default();
                return match r.operator.as_str() {
                    "In" => r.values.iter().any(|v| v == class),
                    "NotIn" => !r.values.iter().any(|v| v == class),
                    "Exists" => !class.is_empty(),
                    "DoesNotExist" => class.is_empty(),
                    _ => false,
                };
            }
            _ => false,
        };
        match r.operator.as_str() {
            "DoesNotExist" | "NotIn" => !matched,
            _ => matched,
        }
    })
}

/// Whether the quota `spec` tracks objects of `plural` in `group` at all (a quota with
/// scopes tracks only pods).
pub fn quota_tracks(spec: &Value, group: &str, plural: &str) -> bool {
    let scoped = !scope_requirements(spec).is_empty();
    if scoped && !(group.is_empty() && plural == "pods") {
        return false;
    }
    let Some(hard) = spec["hard"].as_object() else {
        return false;
    };
    if group.is_empty() && plural == "pods" {
        return hard.keys().any(|k| is_pod_resource(k));
    }
    let names = object_count_names(group, plural);
    hard.keys().any(|k| {
        names.contains(k)
            || (group.is_empty()
                && plural == "services"
                && k.starts_with("services.")
                && k != "services")
    })
}

/// A quota's hard limits, in thousandths (entries that do not parse are left out).
pub fn hard_of(spec: &Value) -> Usage {
    spec["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| milli_of(v).ok().map(|m| (k.clone(), m)))
        .collect()
}

/// Adds `b` into `a`.
pub fn add_into(a: &mut Usage, b: &Usage) {
    for (k, v) in b {
        *a.entry(k.clone()).or_insert(0) += v;
    }
}

/// Whether a resource is measured in bytes (printed with binary suffixes where exact).
fn is_bytes(name: &str) -> bool {
    let base = name
        .strip_prefix("requests.")
        .or_else(|| name.strip_prefix("limits."))
        .unwrap_or(name);
    matches!(base, "memory" | "storage" | "ephemeral-storage") || base.starts_with("hugepages-")
}

/// A quantity of `resource` in thousandths, as Kubernetes prints it (`500m`, `2`, `1Gi`, `1k`).
pub fn format_quantity(resource: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let units = milli / 1000;
    if units == 0 {
        return "0".into();
    }
    if is_bytes(resource) {
        for (shift, suffix) in [
            (60, "Ei"),
            (50, "Pi"),
            (40, "Ti"),
            (30, "Gi"),
            (20, "Mi"),
            (10, "Ki"),
        ] {
            if units % (1i128 << shift) == 0 {
                return format!("{}{suffix}", units >> shift);
            }
        }
    }
    for (exp, suffix) in [
        (18, "E"),
        (15, "P"),
        (12, "T"),
        (9, "G"),
        (6, "M"),
        (3, "k"),
    ] {
        let d = 10i128.pow(exp);
        if units % d == 0 {
            return format!("{}{suffix}", units / d);
        }
    }
    units.to_string()
}

/// `name=value` pairs, sorted by name and joined with `,` (Kubernetes' `prettyPrint`).
pub fn pretty(usage: &Usage) -> String {
    usage
        .iter()
        .map(|(k, v)| format!("{k}={}", format_quantity(k, *v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The resources a quota on cpu or memory makes every container state (Kubernetes' pod
/// evaluator constraints): for each required name, the containers that do not state it.
pub fn missing_constraints(hard: &Usage, spec: &Value) -> BTreeMap<String, Vec<String>> {
    let required: Vec<&str> = [
        "cpu",
        "memory",
        "requests.cpu",
        "requests.memory",
        "limits.cpu",
        "limits.memory",
    ]
    .into_iter()
    .filter(|r| hard.contains_key(*r))
    .collect();
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let (regular, init) = containers(spec);
    for c in regular.iter().chain(init.iter()) {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        for r in &required {
            let stated = match *r {
                "cpu" | "requests.cpu" => request_of(c, "cpu").is_some(),
                "memory" | "requests.memory" => request_of(c, "memory").is_some(),
                "limits.cpu" => limit_of(c, "cpu").is_some(),
                _ => limit_of(c, "memory").is_some(),
            };
            if !stated {
                let names = missing.entry(r.to_string()).or_default();
                if !names.contains(&name) {
                    names.push(name.clone());
                }
            }
        }
    }
    for names in missing.values_mut() {
        names.sort();
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(resources: Value) -> Value {
        json!({"spec": {"containers": [{"name": "c", "resources": resources}]}})
    }

    #[test]
    fn counts_cpu_memory_and_whole_gpus() {
        let u = pod_usage(&pod(json!({
            "requests": {"cpu": "500m", "memory": "1Gi"},
            "limits": {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "2"}
        })));
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        assert_eq!(u["limits.cpu"], 1000);
        assert_eq!(u["requests.memory"], 1000 << 30);
        assert_eq!(u["limits.memory"], 2000 << 30);
        assert_eq!(u["requests.nvidia.com/gpu"], 2000);
        assert_eq!(u["nvidia.com/gpu"], 2000);
    }

    #[test]
    fn gpu_shares_count_as_fractions_of_a_card() {
        let half = pod(json!({"limits": {"ferry.dev/gpu-milli": "500"}}));
        assert_eq!(pod_usage(&half)["requests.nvidia.com/gpu"], 500);
        let memory_only = pod(json!({"limits": {"ferry.dev/gpu-memory": "4096"}}));
        assert_eq!(pod_usage(&memory_only)["requests.nvidia.com/gpu"], 1000);
        assert!(!pod_usage(&pod(json!({}))).contains_key("requests.nvidia.com/gpu"));
    }

    #[test]
    fn init_containers_raise_and_overhead_adds() {
        let p = json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "200m"}}}
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}],
            "overhead": {"cpu": "50m"}
        }});
        assert_eq!(pod_usage(&p)["requests.cpu"], 1050);
    }

    #[test]
    fn terminal_and_expired_pods_do_not_count() {
        assert!(pod_is_terminal(
            &json!({"status": {"phase": "Succeeded"}}),
            "2026-01-01T00:00:00Z"
        ));
        assert!(!pod_is_terminal(
            &json!({"status": {"phase": "Running"}}),
            "2026-01-01T00:00:00Z"
        ));
        let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:30Z"}});
        assert!(!pod_is_terminal(&deleting, "2026-01-01T00:00:00Z"));
        assert!(pod_is_terminal(&deleting, "2026-01-01T00:01:00Z"));
    }

    #[test]
    fn scopes_select_pods() {
        let best_effort = pod(json!({}));
        let burstable = pod(json!({"requests": {"cpu": "1"}}));
        let be = scope_requirements(&json!({"scopes": ["BestEffort"]}));
        assert!(pod_matches_scopes(&be, &best_effort));
        assert!(!pod_matches_scopes(&be, &burstable));
        let term = scope_requirements(&json!({"scopes": ["Terminating"]}));
        assert!(!pod_matches_scopes(&term, &burstable));
        let mut deadline = burstable.clone();
        deadline["spec"]["activeDeadlineSeconds"] = json!(60);
        assert!(pod_matches_scopes(&term, &deadline));
        let pc = scope_requirements(&json!({"scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}
        ]}}));
        let mut high = burstable.clone();
        high["spec"]["priorityClassName"] = json!("high");
        assert!(pod_matches_scopes(&pc, &high));
        assert!(!pod_matches_scopes(&pc, &burstable));
    }

    #[test]
    fn object_counts_use_count_and_legacy_names() {
        assert_eq!(
            object_count_names("", "secrets"),
            ["count/secrets", "secrets"]
        );
        assert_eq!(
            object_count_names("apps", "deployments"),
            ["count/deployments.apps"]
        );
        let svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}});
        assert_eq!(
            object_usage("", "services", &svc)["services.nodeports"],
            2000
        );
        assert!(quota_tracks(
            &json!({"hard": {"count/secrets": "1"}}),
            "",
            "secrets"
        ));
        assert!(!quota_tracks(
            &json!({"hard": {"count/secrets": "1"}}),
            "",
            "pods"
        ));
        assert!(!quota_tracks(
            &json!({"hard": {"secrets": "1"}, "scopes": ["BestEffort"]}),
            "",
            "secrets"
        ));
    }

    #[test]
    fn quantities_print_as_kubernetes_does() {
        assert_eq!(format_quantity("requests.nvidia.com/gpu", 500), "500m");
        assert_eq!(format_quantity("requests.nvidia.com/gpu", 2000), "2");
        assert_eq!(format_quantity("requests.memory", 1000 << 30), "1Gi");
        assert_eq!(format_quantity("requests.memory", 1_000_000_000_000), "1G");
        assert_eq!(format_quantity("pods", 0), "0");
        assert_eq!(format_quantity("requests.cpu", 1500), "1500m");
        let u: Usage = [("b".to_string(), 1000), ("a".to_string(), 500)].into();
        assert_eq!(pretty(&u), "a=500m,b=1");
    }

    #[test]
    fn missing_constraints_name_the_containers() {
        let hard = hard_of(&json!({"hard": {"limits.cpu": "2", "requests.memory": "1Gi"}}));
        let p = json!({"spec": {"containers": [
            {"name": "b", "resources": {"limits": {"cpu": "1"}}},
            {"name": "a"}
        ]}});
        let m = missing_constraints(&hard, &p["spec"]);
        assert_eq!(m["limits.cpu"], ["a"]);
        assert_eq!(m["requests.memory"], ["a", "b"]);
    }
}

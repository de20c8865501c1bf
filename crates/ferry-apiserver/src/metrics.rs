//! `metrics.k8s.io/v1beta1`: NodeMetrics and PodMetrics, as metrics-server serves them, built
//! on request from each node agent's Summary API (`/stats/summary`, reached like `pods/log`:
//! the Node's `InternalIP` and `daemonEndpoints.kubeletEndpoint.Port`). `kubectl top node` and
//! `kubectl top pod` read these. Pods without figures (not running, or on a node whose agent
//! does not answer) are left out, as metrics-server leaves them out.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use ferry_api::stats::{PodStats, Summary};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::http::Params;
use crate::kubelet::{AgentEndpoint, KubeletClient};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::service::{ListOptions, Service};

/// The API group.
pub const GROUP: &str = "metrics.k8s.io";
/// Its only version.
pub const VERSION: &str = "v1beta1";
/// How long an agent may take to answer.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The window reported with each figure (the agent's rates span at least half a second).
const WINDOW: &str = "1s";

/// `/apis/metrics.k8s.io`.
pub fn group_doc() -> Value {
    crate::discovery::group(GROUP, &[VERSION.to_string()])
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resources_doc() -> Value {
    let entry = |name: &str, kind: &str, namespaced: bool| {
        json!({"name": name, "singularName": "", "namespaced": namespaced, "kind": kind,
               "verbs": ["get", "list"]})
    };
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": [entry("nodes", "NodeMetrics", false), entry("pods", "PodMetrics", true)],
    })
}

/// Serves a request under `/apis/metrics.k8s.io`; `None` for any other path.
pub async fn serve(
    service: &Service,
    kubelet: &KubeletClient,
    method: &Method,
    path: &str,
    params: &Params,
) -> Option<ApiResult<Response>> {
    let rest = path.strip_prefix("/apis/")?.strip_prefix(GROUP)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    if method != Method::GET {
        return Some(Err(ApiError::method_not_allowed(format!(
            "{method} is not supported on {path}: metrics are read-only"
        ))));
    }
    Some(match segs.as_slice() {
        [] => Ok(Json(group_doc()).into_response()),
        [VERSION] => Ok(Json(resources_doc()).into_response()),
        [VERSION, "nodes"] => nodes(service, kubelet, None, params).await,
        [VERSION, "nodes", name] => nodes(service, kubelet, Some(name), params).await,
        [VERSION, "pods"] => pods(service, kubelet, None, None, params).await,
        [VERSION, "namespaces", ns, "pods"] => pods(service, kubelet, Some(ns), None, params).await,
        [VERSION, "namespaces", ns, "pods", name] => {
            pods(service, kubelet, Some(ns), Some(name), params).await
        }
        _ => Err(ApiError::no_route(path)),
    })
}

fn selectors(params: &Params) -> ApiResult<ListOptions> {
    let labels = LabelSelector::parse(params.get("labelSelector"))
        .map_err(|e| ApiError::bad_request(format!("invalid labelSelector: {e}")))?;
    let fields = FieldSelector::parse(params.get("fieldSelector"))
        .map_err(|e| ApiError::bad_request(format!("invalid fieldSelector: {e}")))?;
    Ok(ListOptions {
        labels,
        fields,
        limit: 0,
        continue_token: None,
    })
}

fn list_of(
    service: &Service,
    resource: &str,
    ns: Option<&str>,
    o: &ListOptions,
) -> ApiResult<Vec<Value>> {
    let info = service
        .registry
        .get("", "v1", resource)
        .ok_or_else(|| ApiError::internal(format!("{resource} not served")))?;
    Ok(service
        .list(&info, ns, o)?
        .items
        .into_iter()
        .map(|v| (*v).clone())
        .collect())
}

/// The Summary of one node's agent.
pub async fn summary(kubelet: &KubeletClient, node: &Value) -> Result<Summary, String> {
    let name = node["metadata"]["name"].as_str().unwrap_or_default();
    let endpoint = AgentEndpoint::of_node(node).map_err(|e| e.to_string())?;
    let answer = tokio::time::timeout(AGENT_TIMEOUT, async {
        let response = kubelet
            .get(&endpoint, "/stats/summary")
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("the agent of node {name:?} broke off: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("the agent of node {name:?} answered {status}"));
        }
        serde_json::from_slice::<Summary>(&body)
            .map_err(|e| format!("the agent of node {name:?} sent an unreadable summary: {e}"))
    })
    .await;
    answer.unwrap_or_else(|_| Err(format!("the agent of node {name:?} did not answer in time")))
}

/// The summaries of `nodes`, fetched together; nodes that fail are logged and left out.
async fn summaries(kubelet: &KubeletClient, nodes: &[Value]) -> BTreeMap<String, Summary> {
    let fetches = nodes.iter().map(|n| async move {
        let name = n["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (name, summary(kubelet, n).await)
    });
    let mut out = BTreeMap::new();
    for (name, result) in futures::future::join_all(fetches).await {
        match result {
            Ok(s) => {
                out.insert(name, s);
            }
            Err(e) => tracing::debug!(node = %name, error = %e, "no metrics from node"),
        }
    }
    out
}

/// CPU as a quantity of nanocores.
fn cpu_quantity(nanocores: u64) -> String {
    format!("{nanocores}n")
}

/// Memory as a quantity of KiB (as metrics-server writes it).
fn memory_quantity(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn now() -> String {
    crate::meta::now_time()
}

async fn nodes(
    service: &Service,
    kubelet: &KubeletClient,
    name: Option<&str>,
    params: &Params,
) -> ApiResult<Response> {
    let options = selectors(params)?;
    let mut nodes = list_of(service, "nodes", None, &options)?;
    if let Some(name) = name {
        nodes.retain(|n| n["metadata"]["name"] == name);
        if nodes.is_empty() {
            return Err(ApiError::not_found(GROUP, "nodemetrics", name));
        }
    }
    let sums = summaries(kubelet, &nodes).await;
    let mut items = Vec::new();
    for node in &nodes {
        let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
        let Some(s) = sums.get(node_name) else {
            continue;
        };
        let (Some(cpu), Some(mem)) = (&s.node.cpu, &s.node.memory) else {
            continue;
        };
        items.push(json!({
            "kind": "NodeMetrics",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"name": node_name, "creationTimestamp": now(),
                         "labels": node["metadata"]["labels"].clone()},
            "timestamp": cpu.time,
            "window": WINDOW,
            "usage": {
                "cpu": cpu_quantity(cpu.usage_nano_cores.unwrap_or(0)),
                "memory": memory_quantity(mem.working_set_bytes.unwrap_or(0)),
            },
        }));
    }
    if let Some(name) = name {
        return items
            .pop()
            .map(|i| Json(i).into_response())
            .ok_or_else(|| ApiError::not_found(GROUP, "nodemetrics", name));
    }
    Ok(Json(json!({
        "kind": "NodeMetricsList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    }))
    .into_response())
}

/// The PodMetrics of one pod from its stats.
pub fn pod_metrics(pod: &Value, stats: &PodStats) -> Value {
    let containers: Vec<Value> = stats
        .containers
        .iter()
        .map(|c| {
            let cpu = c.cpu.as_ref().and_then(|c| c.usage_nano_cores).unwrap_or(0);
            let mem = c.memory.as_ref().and_then(|m| m.working_set_bytes).unwrap_or(0);
            json!({"name": c.name, "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(mem)}})
        })
        .collect();
    let time = stats
        .cpu
        .as_ref()
        .map(|c| c.time.clone())
        .unwrap_or_else(now);
    json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {
            "name": pod["metadata"]["name"],
            "namespace": pod["metadata"]["namespace"],
            "creationTimestamp": now(),
            "labels": pod["metadata"]["labels"].clone(),
        },
        "timestamp": time,
        "window": WINDOW,
        "containers": containers,
    })
}

async fn pods(
    service: &Service,
    kubelet: &KubeletClient,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
) -> ApiResult<Response> {
    let options = selectors(params)?;
    let mut pods = list_of(service, "pods", namespace, &options)?;
    if let Some(name) = name {
        pods.retain(|p| p["metadata"]["name"] == name);
        if pods.is_empty() {
            return Err(ApiError::not_found(GROUP, "podmetrics", name));
        }
    }
    let wanted: BTreeSet<&str> = pods
        .iter()
        .filter_map(|p| p["spec"]["nodeName"].as_str())
        .filter(|n| !n.is_empty())
        .collect();
    let nodes: Vec<Value> = list_of(service, "nodes", None, &ListOptions::default())?
        .into_iter()
        .filter(|n| {
            n["metadata"]["name"]
                .as_str()
                .is_some_and(|n| wanted.contains(n))
        })
        .collect();
    let sums = summaries(kubelet, &nodes).await;
    let by_uid: BTreeMap<&str, &PodStats> = sums
        .values()
        .flat_map(|s| s.pods.iter())
        .map(|p| (p.pod_ref.uid.as_str(), p))
        .collect();
    let mut items: Vec<Value> = pods
        .iter()
        .filter_map(|p| {
            let uid = p["metadata"]["uid"].as_str()?;
            let stats = by_uid.get(uid)?;
            (!stats.containers.is_empty()).then(|| pod_metrics(p, stats))
        })
        .collect();
    if let Some(name) = name {
        return items
            .pop()
            .map(|i| Json(i).into_response())
            .ok_or_else(|| ApiError::not_found(GROUP, "podmetrics", name));
    }
    Ok(Json(json!({
        "kind": "PodMetricsList",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": {},
        "items": items,
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::stats::{ContainerStats, CpuStats, MemoryStats, PodReference};

    #[test]
    fn pod_metrics_have_the_metrics_server_shape() {
        let pod =
            json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"a": "b"}}});
        let stats = PodStats {
            pod_ref: PodReference {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
            },
            containers: vec![ContainerStats {
                name: "main".into(),
                cpu: Some(CpuStats {
                    time: "t".into(),
                    usage_nano_cores: Some(250_000_000),
                    usage_core_nano_seconds: None,
                }),
                memory: Some(MemoryStats {
                    time: "t".into(),
                    working_set_bytes: Some(64 << 20),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let m = pod_metrics(&pod, &stats);
        assert_eq!(m["kind"], "PodMetrics");
        assert_eq!(m["metadata"]["labels"]["a"], "b");
        assert_eq!(m["containers"][0]["usage"]["cpu"], "250000000n");
        assert_eq!(m["containers"][0]["usage"]["memory"], "65536Ki");
    }
}

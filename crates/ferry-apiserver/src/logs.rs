//! `pods/log`: proxied to the node agent's log server, as the real API server proxies to the
//! kubelet (`https://{InternalIP}:{daemonEndpoints.kubeletEndpoint.Port}/containerLogs/...`,
//! through [`crate::kubelet::KubeletClient`]: mutual TLS, validated path).

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::http::Params;
use crate::kubelet::{AgentEndpoint, KubeletClient, encode};
use crate::service::Service;

/// Query parameters passed through to the agent.
const PASSED: [&str; 6] = [
    "follow",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "limitBytes",
    "previous",
];

/// Serves the log of a pod's container.
pub async fn serve(
    service: &Service,
    kubelet: &KubeletClient,
    namespace: &str,
    name: &str,
    params: &Params,
) -> ApiResult<Response> {
    let pods = service
        .registry
        .get("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods not served"))?;
    let pod = service.get(&pods, Some(namespace), name)?.value;
    let containers: Vec<&str> = ["initContainers", "containers"]
        .iter()
        .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
        .filter_map(|c| c["name"].as_str())
        .collect();
    let main: Vec<&str> = pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let container = match params.get("container") {
        "" if main.len() == 1 => main[0].to_string(),
        "" => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                main.join(" ")
            )));
        }
        c if containers.contains(&c) => c.to_string(),
        c => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}; choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: the pod is not scheduled to a node yet"
        )));
    }
    let started = ["containerStatuses", "initContainerStatuses"]
        .iter()
        .any(|l| {
            pod["status"][l].as_array().into_iter().flatten().any(|s| {
                s["name"] == container.as_str()
                    && (s["state"].get("running").is_some()
                        || s["state"].get("terminated").is_some()
                        || s.get("lastState")
                            .and_then(|l| l.get("terminated"))
                            .is_some())
            })
        });
    if !started {
        let reason = pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == container.as_str())
            .and_then(|s| s.pointer("/state/waiting/reason"))
            .and_then(Value::as_str)
            .unwrap_or("ContainerCreating");
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: {reason}"
        )));
    }
    let nodes = service
        .registry
        .get("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes not served"))?;
    let node = service.get(&nodes, None, node_name).map_err(|_| {
        ApiError::unavailable(format!(
            "node {node_name:?} of pod {name:?} is not registered; its logs cannot be read"
        ))
    })?;
    let endpoint = AgentEndpoint::of_node(&node.value)?;
    let path = crate::kubelet::container_path("containerLogs", namespace, name, &container)?;
    let mut query: Vec<String> = Vec::new();
    for k in PASSED {
        let v = params.get(k);
        if !v.is_empty() {
            query.push(format!("{k}={}", encode(v)));
        }
    }
    let uri = format!("{path}?{}", query.join("&"));
    let upstream = kubelet.get(&endpoint, &uri).await?;
    let status = upstream.status();
    if !status.is_success() {
        let body = upstream
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        // The agent's "no such container" (404) and "bad request" (400) are the client's
        // problem, as the kubelet's are: both reach kubectl as 400 with the agent's words.
        return Err(match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::bad_request(text),
            _ => ApiError::internal(format!("the node agent answered {status}: {text}")),
        });
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::new(upstream.into_body()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

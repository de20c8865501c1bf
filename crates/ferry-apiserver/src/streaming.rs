//! `pods/exec`, `pods/attach` and `pods/portforward`: checked here, then proxied to the node
//! agent's streaming endpoints (`/exec/{ns}/{pod}/{container}`, `/attach/...`,
//! `/portForward/{ns}/{pod}` on the port of `daemonEndpoints.kubeletEndpoint`), as
//! kube-apiserver proxies them to the kubelet: through [`crate::kubelet::KubeletClient`]
//! (mutual TLS, the Node's own InternalIP only, validated path segments).
//!
//! The client's request (a WebSocket upgrade with `GET`, or a SPDY upgrade with `POST`) goes to
//! the agent with its query and upgrade headers unchanged; when the agent answers
//! `101 Switching Protocols`, its answer goes back to the client and the bytes of both upgraded
//! connections are spliced until either side closes. Any other answer of the agent becomes an
//! error Status (400 for the agent's 400 and 404, as kube-apiserver reports the kubelet's).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::kubelet::AgentEndpoint;

use crate::error::{ApiError, ApiResult};
use crate::http::AppState;

/// Which streaming subresource a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `pods/exec`.
    Exec,
    /// `pods/attach`.
    Attach,
    /// `pods/portforward`.
    PortForward,
}

impl Kind {
    fn verb(self) -> &'static str {
        match self {
            Kind::Exec => "exec into",
            Kind::Attach => "attach to",
            Kind::PortForward => "port-forward to",
        }
    }
}

/// Headers that belong to one hop only, or that the agent must not see.
const HOP: [&str; 5] = [
    "host",
    "authorization",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

/// `pods/exec`.
pub async fn exec(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(serve(&state, Kind::Exec, &namespace, &name, request).await)
}

/// `pods/attach`.
pub async fn attach(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(serve(&state, Kind::Attach, &namespace, &name, request).await)
}

/// `pods/portforward`.
pub async fn portforward(
    State(state): State<Arc<AppState>>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    respond(serve(&state, Kind::PortForward, &namespace, &name, request).await)
}

fn respond(r: ApiResult<Response>) -> Response {
    r.unwrap_or_else(IntoResponse::into_response)
}

/// The values of `key` in a raw query string (repeated keys kept in order).
fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

/// Percent-decoding of a query component (`+` is a space).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The container a request names, checked against the pod as kube-apiserver checks it.
fn container_of(pod: &Value, name: &str, asked: &str) -> ApiResult<String> {
    let names = |lists: &[&str]| -> Vec<String> {
        lists
            .iter()
            .flat_map(|l| pod["spec"][l].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let main = names(&["containers"]);
    let all = names(&["initContainers", "containers", "ephemeralContainers"]);
    match asked {
        "" if main.len() == 1 => Ok(main[0].clone()),
        "" => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            main.join(" ")
        ))),
        c if all.iter().any(|n| n == c) => Ok(c.to_string()),
        c => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
    }
}

/// The node agent's endpoint of the node `node_name`.
fn agent_endpoint(state: &AppState, node_name: &str, pod: &str) -> ApiResult<AgentEndpoint> {
    let service = &state.service;
    let nodes = service
        .registry
        .get("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("nodes not served"))?;
    let node = service.get(&nodes, None, node_name).map_err(|_| {
        ApiError::unavailable(format!(
            "node {node_name:?} of pod {pod:?} is not registered"
        ))
    })?;
    Ok(AgentEndpoint::of_node(&node.value)?)
}

async fn serve(
    state: &AppState,
    kind: Kind,
    namespace: &str,
    name: &str,
    mut request: Request,
) -> ApiResult<Response> {
    let service = &state.service;
    let pods = service
        .registry
        .get("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods not served"))?;
    let pod = service.get(&pods, Some(namespace), name)?.value;
    let query = request.uri().query().unwrap_or_default().to_string();
    let node_name = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    if node_name.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let path = match kind {
        Kind::PortForward => crate::kubelet::pod_path("portForward", namespace, name)?,
        Kind::Exec | Kind::Attach => {
            let asked = query_values(&query, "container")
                .into_iter()
                .next()
                .unwrap_or_default();
            let container = container_of(&pod, name, &asked)?;
            if kind == Kind::Exec && query_values(&query, "command").is_empty() {
                return Err(ApiError::bad_request("you must specify at least 1 command"));
            }
            let segment = if kind == Kind::Exec { "exec" } else { "attach" };
            crate::kubelet::container_path(segment, namespace, name, &container)?
        }
    };
    let phase = pod["status"]["phase"].as_str().unwrap_or_default();
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::bad_request(format!(
            "cannot {} a container in a completed pod; current phase is {phase}",
            kind.verb()
        )));
    }
    let endpoint = agent_endpoint(state, node_name, name)?;
    let uri = if query.is_empty() {
        path
    } else {
        format!("{path}?{query}")
    };
    tracing::debug!(?kind, %namespace, %name, %uri, headers = ?request.headers(), "streaming request");
    let client_upgrade = hyper::upgrade::on(&mut request);
    let mut upstream = hyper::Request::builder()
        .method(request.method().clone())
        .uri(&uri);
    for (k, v) in request.headers() {
        if !HOP.contains(&k.as_str()) {
            upstream = upstream.header(k, v);
        }
    }
    let upstream = upstream
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| ApiError::internal(format!("bad upstream request {uri}: {e}")))?;
    let mut answer = state.kubelet.send(&endpoint, upstream).await?;
    let status = answer.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let body = answer
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        return Err(match status {
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => ApiError::bad_request(text),
            _ if status.is_success() => ApiError::bad_request(format!(
                "the node agent did not upgrade the connection: {text}"
            )),
            _ => ApiError::internal(format!("the node agent answered {status}: {text}")),
        });
    }
    let headers: HeaderMap<HeaderValue> = answer.headers().clone();
    let agent_upgrade = hyper::upgrade::on(&mut answer);
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut agent = TokioIo::new(agent);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
            tracing::debug!(error = %e, "streaming connection ended");
        }
    });
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in &headers {
        response = response.header(k, v);
    }
    response
        .body(Body::empty())
        .map_err(|e| ApiError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_query_keys_are_kept_in_order() {
        let q = "command=sh&command=-c&command=echo+%24HOSTNAME&container=c&stdin=true";
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo $HOSTNAME"]);
        assert_eq!(query_values(q, "container"), ["c"]);
        assert!(query_values(q, "tty").is_empty());
    }

    #[test]
    fn containers_are_checked_with_kube_apiservers_words() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(container_of(&pod, "p", "b").unwrap(), "b");
        assert_eq!(container_of(&pod, "p", "i").unwrap(), "i");
        let e = container_of(&pod, "p", "x").unwrap_err();
        assert!(
            e.status()["message"] == "container x is not valid for pod p",
            "{:?}",
            e.status()
        );
        assert!(container_of(&pod, "p", "").is_err());
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container_of(&one, "p", "").unwrap(), "a");
    }
}

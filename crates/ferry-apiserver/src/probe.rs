//! Arbitrary requests through the whole request path (routing, every query parameter, body
//! decoding, the handlers), shared by the fuzz target `fuzz/fuzz_targets/request.rs` and the
//! property test `tests/request_path.rs`: whatever comes in, the server answers, never with a
//! panic (a `500`), and every error is a well-formed `metav1.Status`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, header};
use tower::ServiceExt;

use crate::Service;
use crate::edge::Limits;
use crate::http::{AppState, router};

/// Paths the generated paths start from (then an arbitrary tail is appended).
pub const BASES: &[&str] = &[
    "",
    "/api/v1/namespaces/default/pods",
    "/api/v1/namespaces/default/pods/p",
    "/api/v1/namespaces/default/pods/p/log",
    "/api/v1/namespaces/default/pods/p/status",
    "/api/v1/pods",
    "/api/v1/namespaces/default/configmaps",
    "/api/v1/namespaces/default/configmaps/c",
    "/api/v1/namespaces",
    "/api/v1/namespaces/default",
    "/api/v1/nodes",
    "/api/v1/nodes/n",
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "/apis/scheduling.ferry.ai/v1alpha1/namespaces/default/podgroups",
    "/apis",
    "/api",
    "/openapi/v3/api/v1",
    "/openapi/v2",
    "/version",
    "/healthz",
];

/// Query parameters the generated requests set.
pub const PARAMS: &[&str] = &[
    "labelSelector",
    "fieldSelector",
    "timeoutSeconds",
    "gracePeriodSeconds",
    "limit",
    "continue",
    "resourceVersion",
    "resourceVersionMatch",
    "watch",
    "allowWatchBookmarks",
    "sendInitialEvents",
    "dryRun",
    "fieldValidation",
    "fieldManager",
    "force",
    "propagationPolicy",
    "orphanDependents",
    "includeObject",
    "follow",
    "tailLines",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
    "timestamps",
    "previous",
    "container",
];

const METHODS: &[Method] = &[
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
    Method::OPTIONS,
];

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/vnd.kubernetes.protobuf",
    "application/merge-patch+json",
    "application/json-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
    "text/plain",
];

/// One generated request.
#[derive(Debug, Clone, Default)]
pub struct ProbeRequest {
    /// Picks the method.
    pub method: u8,
    /// Picks one of [`BASES`].
    pub base: u8,
    /// Appended to the base path (percent-encoded, `/` kept).
    pub tail: String,
    /// Query parameters: a pick of [`PARAMS`] and any value.
    pub params: Vec<(u8, String)>,
    /// Picks the Content-Type.
    pub content_type: u8,
    /// The body.
    pub body: Vec<u8>,
}

fn pick<T>(list: &[T], i: u8) -> &T {
    &list[usize::from(i) % list.len()]
}

/// Percent-encodes everything but unreserved characters (and `/` if `keep_slash`).
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl ProbeRequest {
    /// The path and query.
    pub fn uri(&self) -> String {
        let mut uri = format!("{}{}", *pick(BASES, self.base), encode(&self.tail, true));
        if !uri.starts_with('/') {
            uri.insert(0, '/');
        }
        for (i, (name, value)) in self.params.iter().enumerate() {
            uri.push(if i == 0 { '?' } else { '&' });
            uri.push_str(pick::<&str>(PARAMS, *name));
            uri.push('=');
            uri.push_str(&encode(value, false));
        }
        uri
    }

    /// The HTTP request.
    pub fn request(&self) -> Request<Body> {
        Request::builder()
            .method(pick(METHODS, self.method).clone())
            .uri(self.uri())
            .header(
                header::CONTENT_TYPE,
                *pick(CONTENT_TYPES, self.content_type),
            )
            .body(Body::from(self.body.clone()))
            .expect("an encoded URI is valid")
    }
}

/// A router over a fresh store in `dir`, as the server runs it (edge layers included).
pub fn app(dir: &std::path::Path) -> Result<Router, ferry_store::StoreError> {
    let mut config = ferry_store::StoreConfig::new(dir.join("state.db"));
    config.durability = ferry_store::Durability::Normal;
    let store = ferry_store::Store::open(config)?;
    let state = Arc::new(AppState {
        tokens: None,
        service: Arc::new(Service::new(store)),
        advertise: "127.0.0.1:6443".into(),
        ready: true.into(),
        limits: Limits::default(),
        authn: crate::auth::Authenticator::default(),
        authz: Arc::new(crate::authz::AlwaysAllow),
        insecure_everyone_is_admin: true,
        kubelet: crate::kubelet::KubeletClient::new(None).expect("no credentials"),
    });
    Ok(router(state))
}

/// Sends `request` through `app`; an error names what is wrong with the answer: a `500` (a
/// panic or an internal error), no answer within 10 s, or an error that is not a Status.
pub async fn check(app: &Router, request: &ProbeRequest) -> Result<u16, String> {
    let uri = request.uri();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        app.clone().oneshot(request.request()),
    );
    let response = match answer.await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => return Err(format!("no answer within 10 s to {uri}")),
    };
    let code = response.status().as_u16();
    if code < 400 || *pick(METHODS, request.method) == Method::HEAD {
        // Success bodies may be streams (watches); dropping them ends the stream. Answers to
        // HEAD have no body.
        return Ok(code);
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 20)
        .await
        .map_err(|e| format!("{uri}: cannot read the error body: {e}"))?;
    let status: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "{uri}: the {code} body is not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    let well_formed = status["kind"] == "Status"
        && status["apiVersion"] == "v1"
        && status["status"] == "Failure"
        && status["code"] == code
        && status["reason"].as_str().is_some_and(|r| !r.is_empty())
        && status["message"].is_string();
    if !well_formed {
        return Err(format!("{uri}: the {code} body is not a Status: {status}"));
    }
    if code == 500 {
        return Err(format!("{uri}: 500 {}", status["message"]));
    }
    Ok(code)
}

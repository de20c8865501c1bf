//! The kubelet's streaming endpoints, served on the log server: `exec`, `attach` and
//! `portForward`, which the API server proxies `pods/exec`, `pods/attach` and
//! `pods/portforward` to.
//!
//! | path                                   | protocol (WebSocket subprotocol)                  |
//! |----------------------------------------|---------------------------------------------------|
//! | `/exec/{ns}/{pod}/{container}`         | `v5.channel.k8s.io`, `v4.channel.k8s.io`          |
//! | `/attach/{ns}/{pod}/{container}`       | the same                                          |
//! | `/portForward/{ns}/{pod}`              | `SPDY/3.1+portforward.k8s.io` (SPDY in WebSocket) |
//!
//! - [`channel`]: the channel framing of `v4`/`v5.channel.k8s.io` and the Status on channel 3.
//! - [`exec`]: a command inside a running container, with pipes or a pseudo-terminal.
//! - [`attach`]: the container's own stdin (through the shim's `attach.sock`) and its output.
//! - [`portforward`] over [`spdy`]: TCP connections to the pod's loopback, made inside the
//!   pod's network namespace.
//!
//! A pod or container that is not here, not started, or already finished is refused before the
//! upgrade with a sentence saying so (404 or 400), which the API server passes on.

pub mod attach;
pub mod channel;
pub mod exec;
pub mod portforward;
pub mod spdy;

use std::path::PathBuf;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::logserver::LogServerState;
use crate::runtime::{AttemptState, ShimSpec, StateRecord, files, inspect, read_json};

/// The streaming routes, merged into the log server's router.
pub fn routes() -> Router<LogServerState> {
    Router::new()
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(exec::serve).post(exec::serve),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach::serve).post(attach::serve),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(portforward::serve).post(portforward::serve),
        )
}

/// An answer before the upgrade: a status and a sentence.
pub(crate) fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into() + "\n",
    )
        .into_response()
}

/// The answer to a request that is no WebSocket upgrade (a SPDY client, say).
pub(crate) fn websocket_only(protocols: &str) -> Response {
    refuse(
        StatusCode::BAD_REQUEST,
        format!(
            "this node agent serves streaming over WebSocket only (subprotocols {protocols}); SPDY is not supported"
        ),
    )
}

/// A running container, as its attempt directory describes it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The pod's uid.
    pub uid: String,
    /// The attempt directory.
    pub dir: PathBuf,
    /// Its state record (main process).
    pub state: StateRecord,
    /// What it was started with (environment, working directory, user), when the host runtime
    /// started it.
    pub spec: Option<ShimSpec>,
}

/// Finds the running container `container` of `namespace/pod`, or the status and sentence
/// saying why not.
pub(crate) fn running_container(
    state: &LogServerState,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<Target, (StatusCode, String)> {
    let Some(uid) = state.index.get(namespace, pod) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "pod \"{namespace}/{pod}\" is not running on node \"{}\"",
                state.node_name
            ),
        ));
    };
    if !crate::layout::safe_component(container) {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("invalid container name {container:?}"),
        ));
    }
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!(
                "container not found ({container:?}): it has not started yet in pod \"{namespace}/{pod}\""
            ),
        )
    };
    let Some(&attempt) = state.layout.attempts(&uid, container).last() else {
        return Err(not_found());
    };
    let dir = state.layout.attempt(&uid, container, attempt);
    match inspect(&dir) {
        Ok(AttemptState::Running(record)) if record.container.is_alive() => {
            let spec = read_json::<ShimSpec>(&dir.join(files::SPEC)).ok().flatten();
            Ok(Target {
                uid,
                dir,
                state: record,
                spec,
            })
        }
        Ok(AttemptState::Running(_)) | Ok(AttemptState::Exited(_)) => Err((
            StatusCode::BAD_REQUEST,
            format!(
                "container not found ({container:?}): container {container:?} in pod \"{namespace}/{pod}\" is not running (it has finished)"
            ),
        )),
        Ok(_) => Err(not_found()),
        Err(e) => Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot read the state of container {container:?}: {e}"),
        )),
    }
}

/// The values of `key` in a raw query string, repeated keys in order.
pub fn query_values(query: &str, key: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k) == key).then(|| decode(v))
        })
        .collect()
}

/// Whether the boolean `key` is set (`true` or `1`) in a raw query string.
pub fn query_flag(query: &str, key: &str) -> bool {
    query_values(query, key)
        .last()
        .is_some_and(|v| matches!(v.as_str(), "true" | "1" | "True"))
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
                if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parsing_keeps_repeated_commands() {
        let q = "command=sh&command=-c&command=echo%20%24((6*7))&stdin=true&tty=1&stdout=false";
        assert_eq!(query_values(q, "command"), ["sh", "-c", "echo $((6*7))"]);
        assert!(query_flag(q, "stdin") && query_flag(q, "tty"));
        assert!(!query_flag(q, "stdout") && !query_flag(q, "stderr"));
        assert_eq!(query_values("a=%zz", "a"), ["%zz"]);
    }
}

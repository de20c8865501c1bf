//! The agent's log server: the kubelet's `containerLogs` endpoint, which the API server proxies
//! `pods/{name}/log` to (`https://{InternalIP}:{daemonEndpoints.kubeletEndpoint.Port}`, mutual
//! TLS: see [`crate::tls`]).
//!
//! `GET /containerLogs/{namespace}/{pod}/{container}` with the query parameters `follow`,
//! `tailLines`, `timestamps`, `sinceSeconds`, `sinceTime`, `limitBytes` and `previous` answers
//! `text/plain`: the current (or previous) attempt's output, streamed while `follow=true` until
//! the container ends or the client goes away. Unknown pods and containers get a 404 with a
//! sentence saying what was not found; bad parameters a 400. `GET /healthz` answers `ok`.
//! The streaming endpoints (`exec`, `attach`, `portForward`) are [`crate::streaming`]'s.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use crate::layout::Layout;
use crate::logs::{LogQuery, stream_log};
use crate::runtime::files;

/// Which pod uid serves the logs of `namespace/name` on this node.
#[derive(Debug, Default)]
pub struct LogIndex {
    pods: RwLock<HashMap<(String, String), String>>,
}

impl LogIndex {
    /// Records that `namespace/name` is the pod with `uid`.
    pub fn insert(&self, namespace: &str, name: &str, uid: &str) {
        if let Ok(mut m) = self.pods.write() {
            m.insert((namespace.into(), name.into()), uid.into());
        }
    }

    /// Forgets `namespace/name` if it still refers to `uid`.
    pub fn remove(&self, namespace: &str, name: &str, uid: &str) {
        if let Ok(mut m) = self.pods.write() {
            let key = (namespace.to_string(), name.to_string());
            if m.get(&key).is_some_and(|u| u == uid) {
                m.remove(&key);
            }
        }
    }

    /// The uid of `namespace/name`, if it runs here.
    pub fn get(&self, namespace: &str, name: &str) -> Option<String> {
        self.pods
            .read()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// What the log server's handlers share.
#[derive(Debug, Clone)]
pub struct LogServerState {
    /// Where attempts live.
    pub layout: Layout,
    /// Pod names to uids.
    pub index: Arc<LogIndex>,
    /// For messages.
    pub node_name: String,
    /// Turns true when the agent stops: followed streams end then.
    pub shutdown: watch::Receiver<bool>,
}

/// The log server's routes.
pub fn router(state: LogServerState) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/stats/summary", get(crate::stats::summary))
        .route("/healthz", get(|| async { "ok" }))
        .merge(crate::streaming::routes())
        .with_state(state)
}

fn text(status: StatusCode, message: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message + "\n",
    )
        .into_response()
}

/// A log query parameter that cannot be used (answered with `400`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {name}={value:?}: {expected}")]
pub struct QueryError {
    /// The parameter.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What it must be.
    pub expected: String,
}

impl QueryError {
    fn new(name: &'static str, value: impl Into<String>, expected: impl Into<String>) -> Self {
        QueryError {
            name,
            value: value.into(),
            expected: expected.into(),
        }
    }
}

fn parse_bool(name: &'static str, v: Option<&String>) -> Result<bool, QueryError> {
    match v.map(|s| s.as_str()) {
        None | Some("") | Some("false") | Some("0") | Some("False") => Ok(false),
        Some("true") | Some("1") | Some("True") => Ok(true),
        Some(other) => Err(QueryError::new(name, other, "expected true or false")),
    }
}

fn parse_int(name: &'static str, v: Option<&String>) -> Result<Option<i64>, QueryError> {
    match v.map(|s| s.trim()) {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| QueryError::new(name, s, "expected an integer")),
    }
}

/// Turns the query parameters into a [`LogQuery`] and the `previous` flag.
pub fn parse_query(
    params: &HashMap<String, String>,
    now: Timestamp,
) -> Result<(LogQuery, bool), QueryError> {
    let follow = parse_bool("follow", params.get("follow"))?;
    let timestamps = parse_bool("timestamps", params.get("timestamps"))?;
    let previous = parse_bool("previous", params.get("previous"))?;
    // kubectl sends tailLines=-1 for "everything".
    let tail_lines =
        parse_int("tailLines", params.get("tailLines"))?.and_then(|n| u64::try_from(n).ok());
    let limit_bytes = match parse_int("limitBytes", params.get("limitBytes"))? {
        Some(n) if n <= 0 => {
            return Err(QueryError::new(
                "limitBytes",
                n.to_string(),
                "must be positive",
            ));
        }
        other => other.map(|n| n as u64),
    };
    let mut since = match parse_int("sinceSeconds", params.get("sinceSeconds"))? {
        Some(n) if n <= 0 => {
            return Err(QueryError::new(
                "sinceSeconds",
                n.to_string(),
                "must be positive",
            ));
        }
        Some(n) => Some(
            now.checked_sub(jiff::SignedDuration::from_secs(n))
                .unwrap_or(Timestamp::MIN),
        ),
        None => None,
    };
    if let Some(t) = params.get("sinceTime").filter(|s| !s.is_empty()) {
        since = Some(
            t.parse()
                .map_err(|e: jiff::Error| QueryError::new("sinceTime", t, e.to_string()))?,
        );
    }
    Ok((
        LogQuery {
            follow,
            tail_lines,
            timestamps,
            since,
            limit_bytes,
        },
        previous,
    ))
}

async fn container_logs(
    State(state): State<LogServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let (query, previous) = match parse_query(&params, Timestamp::now()) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Some(uid) = state.index.get(&namespace, &pod) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "pod \"{namespace}/{pod}\" is not running on node \"{}\"",
                state.node_name
            ),
        );
    };
    if !crate::layout::safe_component(&container) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("invalid container name {container:?}"),
        );
    }
    let attempts = state.layout.attempts(&uid, &container);
    let attempt = if previous {
        match attempts.len().checked_sub(2).map(|i| attempts[i]) {
            Some(a) => a,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "previous terminated container \"{container}\" in pod \"{pod}\" not found"
                    ),
                );
            }
        }
    } else {
        match attempts.last() {
            Some(&a) => a,
            None => {
                return text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "container \"{container}\" in pod \"{namespace}/{pod}\" not found or not started yet"
                    ),
                );
            }
        }
    };
    let dir = state.layout.attempt(&uid, &container, attempt);
    let path = dir.join(files::LOG);
    if !path.exists() {
        // Started but no output yet, or failed before writing any: an empty log.
        if let Err(e) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
        {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot open the log: {e}"),
            );
        }
    }
    let exit_file = dir.join(files::EXIT);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(16);
    let mut shutdown = state.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            r = stream_log(path, query, move || exit_file.exists(), tx) => {
                if let Err(e) = r {
                    tracing::warn!(error = %e, "log stream failed");
                }
            }
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(Bytes::from(chunk)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_bad_query_parameter_is_a_typed_error_naming_it() {
        let now: Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let e: QueryError = parse_query(&params(&[("tailLines", "ten")]), now).unwrap_err();
        assert_eq!((e.name, e.value.as_str()), ("tailLines", "ten"));
        assert_eq!(
            e.to_string(),
            "invalid tailLines=\"ten\": expected an integer"
        );
        let e = parse_query(&params(&[("sinceSeconds", "0")]), now).unwrap_err();
        assert_eq!(e.name, "sinceSeconds");
    }

    #[test]
    fn parses_kubelet_query_parameters() {
        let now: Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let (q, prev) = parse_query(
            &params(&[
                ("follow", "true"),
                ("tailLines", "10"),
                ("timestamps", "1"),
                ("sinceSeconds", "60"),
                ("limitBytes", "5"),
                ("previous", "false"),
            ]),
            now,
        )
        .unwrap();
        assert!(q.follow && q.timestamps && !prev);
        assert_eq!(q.tail_lines, Some(10));
        assert_eq!(q.limit_bytes, Some(5));
        assert_eq!(q.since, Some("2025-01-01T00:00:00Z".parse().unwrap()));
        let (q, _) = parse_query(&params(&[("tailLines", "-1")]), now).unwrap();
        assert_eq!(q.tail_lines, None, "-1 means all lines");
        for bad in [
            params(&[("follow", "maybe")]),
            params(&[("tailLines", "ten")]),
            params(&[("limitBytes", "0")]),
            params(&[("sinceSeconds", "-3")]),
            params(&[("sinceTime", "yesterday")]),
        ] {
            assert!(parse_query(&bad, now).is_err(), "{bad:?}");
        }
    }
}

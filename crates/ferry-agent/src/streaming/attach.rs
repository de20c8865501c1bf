//! `attach`: the container's own stdin and output.

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;

use super::channel::PROTOCOLS;
use super::{running_container, websocket_only};
use crate::logserver::LogServerState;

/// `GET /attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`.
pub async fn serve(
    State(state): State<LogServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(_query): RawQuery,
    _ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if let Err(r) = running_container(&state, &namespace, &pod, &container) {
        return r;
    }
    websocket_only(&PROTOCOLS.join(", "))
}

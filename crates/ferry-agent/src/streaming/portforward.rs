//! `portForward`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::refuse;
use crate::logserver::LogServerState;

/// `GET /portForward/{namespace}/{pod}`.
pub async fn serve(
    State(_state): State<LogServerState>,
    Path((_namespace, _pod)): Path<(String, String)>,
) -> Response {
    refuse(StatusCode::NOT_IMPLEMENTED, "not yet")
}

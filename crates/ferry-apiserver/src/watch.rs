//! Watch streams: newline-delimited JSON watch events, with selector transitions, bookmarks,
//! timeouts and in-stream `410 Expired` errors.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use ferry_store::{EventType, StoreError, WatchEnd, WatchFrom};

use crate::error::{ApiError, ApiResult};
use crate::http::{Params, Render, Target, with_version};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::service::Service;
use crate::table::{self, IncludeObject};

/// How often a caught-up watcher gets a bookmark with the newest revision.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);
/// Longest watch when the client sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// Longest watch a client can ask for with `timeoutSeconds` (larger values are clamped).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The watch's duration from `timeoutSeconds`: none or not positive is the default, more
/// than [`MAX_TIMEOUT`] is clamped to it.
pub fn timeout(params: &Params) -> ApiResult<Duration> {
    Ok(match params.int("timeoutSeconds")? {
        Some(t) if t > 0 => {
            Duration::from_secs(u64::try_from(t).unwrap_or(u64::MAX)).min(MAX_TIMEOUT)
        }
        _ => DEFAULT_TIMEOUT,
    })
}

/// Starts a watch and streams it to the client.
pub async fn serve(
    service: Arc<Service>,
    target: Target,
    params: &Params,
    render: Render,
) -> ApiResult<Response> {
    let info = target.info.clone();
    let labels = LabelSelector::parse(params.get("labelSelector"))?;
    let fields = FieldSelector::parse(params.get("fieldSelector"))?;
    let fields = Service::selectable(&info, fields)?;
    let namespace = match target.namespace.clone() {
        Some(ns) => Some(ns),
        None if info.namespaced => fields.required("metadata.namespace").map(str::to_string),
        None => None,
    };
    if target.name.is_some() {
        return Err(ApiError::method_not_allowed(
            "watch a single object with fieldSelector=metadata.name=NAME",
        ));
    }
    let bookmarks = params.flag("allowWatchBookmarks");
    let initial_events = params.flag("sendInitialEvents");
    let timeout = timeout(params)?;
    let from = match params.get("resourceVersion") {
        "" | "0" => WatchFrom::Snapshot,
        rv => {
            let rev: u64 = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("resourceVersion must be an integer, not {rv:?}"))
            })?;
            if initial_events {
                WatchFrom::Snapshot
            } else {
                WatchFrom::Revision(rev)
            }
        }
    };
    if let WatchFrom::Revision(_) = from {
        service
            .await_resource_version(params.get("resourceVersion"))
            .await?;
    }
    let include = IncludeObject::parse(params.get("includeObject"));
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);
    let response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let mut watch = match service
        .store
        .watch(&info.storage_resource(), namespace.as_deref(), from)
    {
        Ok(w) => w,
        Err(StoreError::Expired { requested, oldest }) => {
            // Clients expect the expiry inside a 200 stream.
            let status =
                ApiError::expired(format!("too old resource version: {requested} ({oldest})"))
                    .status();
            let line = json!({"type": "ERROR", "object": status});
            let _ = tx.send(Ok(line_bytes(&line))).await;
            return Ok(response);
        }
        Err(e) => return Err(ApiError::from_store(e, &info.group, &info.plural)),
    };
    let snapshot_rev = service.store.revision();
    let first_table = std::sync::atomic::AtomicBool::new(true);
    let encode = move |kind: &str, object: &Value| -> Bytes {
        let object = with_version(&info, object.clone());
        let object = match render {
            Render::Json => object,
            Render::Metadata => table::partial_metadata(&object),
            Render::Table(version) => {
                let with_columns = first_table.swap(false, std::sync::atomic::Ordering::Relaxed);
                table::table(&info, &[&object], version, 0, None, include, with_columns)
            }
        };
        line_bytes(&json!({"type": kind, "object": object}))
    };
    let bookmark_kind = target.info.kind.clone();
    let bookmark_api = target.info.api_version();
    let bookmark = move |rev: u64, initial_end: bool| -> Bytes {
        let mut m = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        line_bytes(
            &json!({"type": "BOOKMARK", "object": {"kind": bookmark_kind, "apiVersion": bookmark_api, "metadata": m}}),
        )
    };
    let matches = move |o: &Value| labels.matches(o) && fields.matches(o);
    tokio::spawn(async move {
        let now = tokio::time::Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + DEFAULT_TIMEOUT);
        let mut backlog_done = !initial_events;
        let mut last_bookmark = 0u64;
        let mut ticker = tokio::time::interval(BOOKMARK_EVERY);
        ticker.tick().await;
        loop {
            if !backlog_done && watch.caught_up_revision().is_some() {
                backlog_done = true;
                let rev = watch
                    .caught_up_revision()
                    .unwrap_or(snapshot_rev)
                    .max(snapshot_rev);
                if tx.send(Ok(bookmark(rev, true))).await.is_err() {
                    return;
                }
                last_bookmark = rev;
            }
            let event = tokio::select! {
                e = watch.next() => e,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = ticker.tick() => {
                    if bookmarks
                        && let Some(rev) = watch.caught_up_revision()
                        && rev > last_bookmark
                    {
                        if tx.send(Ok(bookmark(rev, false))).await.is_err() {
                            return;
                        }
                        last_bookmark = rev;
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            let event = match event {
                Ok(e) => e,
                Err(WatchEnd::Closed) => return,
                Err(WatchEnd::Lagged) => {
                    tracing::debug!("watcher lagged behind; closing its stream so it resumes");
                    return;
                }
            };
            let now = matches(&event.object);
            let before = event.previous.as_deref().is_some_and(&matches);
            let kind = match (event.kind, before, now) {
                (EventType::Deleted, true, _) | (EventType::Deleted, _, true) => "DELETED",
                (EventType::Deleted, false, false) => continue,
                (EventType::Added, _, true) => "ADDED",
                (EventType::Modified, true, true) => "MODIFIED",
                // The object entered the selection.
                (EventType::Modified, false, true) => {
                    if event.previous.is_some() {
                        "ADDED"
                    } else {
                        "MODIFIED"
                    }
                }
                // The object left the selection.
                (EventType::Modified, true, false) => "DELETED",
                _ => continue,
            };
            if tx.send(Ok(encode(kind, &event.object))).await.is_err() {
                return;
            }
        }
    });
    Ok(response.into_response())
}

fn line_bytes(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(timeout: &str) -> Params {
        Params([("timeoutSeconds".to_string(), timeout.to_string())].into())
    }

    #[test]
    fn timeouts_are_clamped() {
        assert_eq!(timeout(&params("")).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(&params("-5")).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(&params("7")).unwrap(), Duration::from_secs(7));
        // Once a panic: an Instant plus this overflows.
        let huge = timeout(&params(&i64::MAX.to_string())).unwrap();
        assert_eq!(huge, MAX_TIMEOUT);
        assert!(tokio::time::Instant::now().checked_add(huge).is_some());
        assert_eq!(timeout(&params("x")).unwrap_err().code, 400);
    }
}

//! The server's edge: connection handling and the limits that protect the server (header read
//! timeout, bounded requests in flight, body size), and panics turned into `500` statuses.
//!
//! Order of the layers, outermost first: a panic anywhere inside becomes a logged `500`
//! InternalError Status; then the in-flight bound (`429` TooManyRequests with `Retry-After`);
//! then the routes, whose handlers read bodies through [`read_body`] (`413`
//! RequestEntityTooLarge after draining what the client sends, so that it reads the answer).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Largest request body accepted by default (as Kubernetes: 3 MiB).
pub const DEFAULT_MAX_BODY: usize = 3 * 1024 * 1024;

/// Seconds a client is told to wait after a `429`.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The limits that protect the server, as kube-apiserver's flags of the same meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request body in bytes (kube-apiserver: 3 MiB); larger ones get `413`.
    pub max_body_bytes: usize,
    /// Time a connection has to send a request's headers before it is closed.
    pub header_read_timeout: Duration,
    /// Non-mutating requests (GET, HEAD, OPTIONS) served at once; more get `429`
    /// (`--max-requests-inflight`, default 400; 0: no bound). Long-running requests (watches,
    /// logs) are not counted.
    pub max_requests_inflight: usize,
    /// Mutating requests (POST, PUT, PATCH, DELETE) served at once; more get `429`
    /// (`--max-mutating-requests-inflight`, default 200; 0: no bound).
    pub max_mutating_requests_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: DEFAULT_MAX_BODY,
            header_read_timeout: Duration::from_secs(30),
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
        }
    }
}

/// The semaphores that bound requests in flight.
#[derive(Debug, Clone)]
pub struct Inflight {
    reads: Option<Arc<Semaphore>>,
    writes: Option<Arc<Semaphore>>,
}

impl Inflight {
    /// Bounds from `limits` (0: unbounded).
    pub fn new(limits: &Limits) -> Self {
        let bound = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            reads: bound(limits.max_requests_inflight),
            writes: bound(limits.max_mutating_requests_inflight),
        }
    }
}

/// Wraps `router` in the edge layers: the in-flight bound, and panics answered as `500`.
pub fn layer(router: Router, limits: &Limits) -> Router {
    router
        .layer(axum::middleware::from_fn_with_state(
            Inflight::new(limits),
            bound_inflight,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            panic_response,
        ))
}

/// A panic inside a handler: logged, and answered as a `500` InternalError Status.
fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(panic = %what, "a request handler panicked");
    ApiError::internal(format!(
        "an internal error occurred: the request handler failed ({what})"
    ))
    .into_response()
}

/// Whether a request is long-running (not counted in flight): a watch, or a log stream.
fn long_running(request: &Request) -> bool {
    let uri = request.uri();
    let path = uri.path();
    let watch = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
    });
    watch
        || path.contains("/watch/")
        || path.ends_with("/log")
        || matches!(path, "/healthz" | "/livez" | "/readyz")
}

/// Refuses requests beyond the in-flight bound with `429` and `Retry-After`.
async fn bound_inflight(
    State(inflight): State<Inflight>,
    request: Request,
    next: Next,
) -> Response {
    if long_running(&request) {
        return next.run(request).await;
    }
    let mutating = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let pool = if mutating {
        &inflight.writes
    } else {
        &inflight.reads
    };
    let _permit = match pool {
        None => None,
        Some(pool) => match pool.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => return too_many_requests(),
        },
    };
    next.run(request).await
}

/// `429` TooManyRequests, as kube-apiserver's max-in-flight filter answers.
pub fn too_many_requests() -> Response {
    let mut e = ApiError::too_many_requests("Too many requests, please try again later.");
    e.details = Some(serde_json::json!({"retryAfterSeconds": RETRY_AFTER_SECONDS}));
    let mut response = e.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    response
}

/// Reads a request body of at most `limit` bytes. A larger body is read on (and dropped) up
/// to four times the limit, so the client has sent it and reads the `413`, then refused.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let drain_up_to = limit.saturating_mul(4).max(1 << 20);
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut total = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        total = total.saturating_add(chunk.len());
        if total <= limit {
            buf.extend_from_slice(&chunk);
        } else if total > drain_up_to {
            break;
        }
    }
    if total > limit {
        return Err(too_large(limit));
    }
    Ok(Bytes::from(buf))
}

/// `413` as kube-apiserver words it.
pub fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!("Request entity too large: limit is {limit}"))
}

/// Largest request head (request line and headers) accepted, as Go's default
/// `MaxHeaderBytes` that kube-apiserver keeps: 1 MiB. Larger heads get `431`.
pub const MAX_HEADER_BYTES: usize = 1 << 20;

/// Serves `app` on `listener` until `stop` resolves: over TLS when `tls` is given (ALPN h2 or
/// http/1.1; the client's verified-by-handshake certificate chain goes into each request's
/// extensions as [`crate::auth::PeerCertificates`]), else plain HTTP/1.1 (with the header
/// read timeout) and HTTP/2 with prior knowledge; open connections finish gracefully.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: &Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let header_timeout = limits.header_read_timeout;
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving the open
                    // connections.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            // The protocol is known from the first bytes; a client that sends none is closed
            // after the header timeout (hyper's own timeout starts once it reads HTTP/1).
            if !first_bytes(&tcp, header_timeout).await {
                tracing::debug!(%peer, "closing a connection that sent no request");
                return;
            }
            let Some(acceptor) = tls else {
                let service = hyper_util::service::TowerToHyperService::new(app);
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
                if let Err(e) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            };
            let stream = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let peer_certs = stream.get_ref().1.peer_certificates().map(|chain| {
                crate::auth::PeerCertificates::new(
                    chain.iter().map(|c| c.as_ref().to_vec()).collect(),
                )
            });
            let service = tower::ServiceExt::map_request(
                app,
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    if let Some(certs) = &peer_certs {
                        request.extensions_mut().insert(certs.clone());
                    }
                    request
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(connection.into_owned()).await {
                tracing::debug!(%peer, error = %e, "TLS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Waits until the client has sent enough to tell HTTP/1 from HTTP/2; false when it closes
/// or sends too little within `timeout`.
async fn first_bytes(tcp: &tokio::net::TcpStream, timeout: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let wait = async {
        let mut buf = [0u8; PREFACE.len()];
        loop {
            let n = tcp.peek(&mut buf).await.unwrap_or(0);
            let seen = buf.get(..n).unwrap_or_default();
            if n == 0 {
                return false;
            }
            if n == PREFACE.len() || !PREFACE.starts_with(seen) {
                return true;
            }
            // A strict prefix of the HTTP/2 preface: peek again once more may have come.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, wait).await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tower::ServiceExt;

    async fn status_of(response: Response) -> (u16, serde_json::Value) {
        let code = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (code, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_status() {
        let router = Router::new().route(
            "/boom",
            get(|| async {
                panic!("deliberate test panic");
                #[allow(unreachable_code)]
                ""
            }),
        );
        let app = layer(router, &Limits::default());
        let request = Request::get("/boom").body(Body::empty()).unwrap();
        let (code, status) = status_of(app.clone().oneshot(request).await.unwrap()).await;
        assert_eq!(code, 500);
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["reason"], "InternalError");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("deliberate test panic")
        );
        // The server goes on serving.
        let request = Request::get("/boom").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(request).await.unwrap().status(), 500);
    }

    #[tokio::test]
    async fn requests_beyond_the_bound_get_429() {
        let (release, released) = tokio::sync::watch::channel(false);
        let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
        let router = Router::new()
            .route(
                "/hold",
                axum::routing::post(move || {
                    let mut released = released.clone();
                    let entered_tx = entered_tx.clone();
                    async move {
                        let _ = entered_tx.send(()).await;
                        let _ = released.wait_for(|r| *r).await;
                        "done"
                    }
                }),
            )
            .route("/read", get(|| async { "ok" }));
        let limits = Limits {
            max_mutating_requests_inflight: 1,
            max_requests_inflight: 1,
            ..Limits::default()
        };
        let app = layer(router, &limits);
        let held = tokio::spawn(
            app.clone()
                .oneshot(Request::post("/hold").body(Body::empty()).unwrap()),
        );
        entered.recv().await.unwrap();
        let second = app
            .clone()
            .oneshot(Request::post("/hold").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(second.headers()[header::RETRY_AFTER], "1");
        let (code, status) = status_of(second).await;
        assert_eq!(code, 429);
        assert_eq!(status["reason"], "TooManyRequests");
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
        // Reads have their own bound; watches are not counted.
        let read = Request::get("/read").body(Body::empty()).unwrap();
        assert_eq!(app.clone().oneshot(read).await.unwrap().status(), 200);
        release.send(true).unwrap();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        let again = Request::post("/hold").body(Body::empty()).unwrap();
        assert_eq!(app.oneshot(again).await.unwrap().status(), 200);
    }

    #[test]
    fn long_running_requests() {
        let is = |uri: &str| long_running(&Request::get(uri).body(Body::empty()).unwrap());
        assert!(is("/api/v1/pods?watch=true"));
        assert!(is("/api/v1/namespaces/a/pods?labelSelector=x&watch=1"));
        assert!(is("/api/v1/namespaces/a/pods/p/log?follow=true"));
        assert!(!is("/api/v1/pods"));
        assert!(!is("/api/v1/pods?watch=false"));
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_413_after_draining() {
        let body = Body::from(vec![b'x'; 5000]);
        let e = read_body(body, 1000).await.unwrap_err();
        assert_eq!(e.code, 413);
        assert_eq!(e.status()["reason"], "RequestEntityTooLarge");
        assert_eq!(e.message, "Request entity too large: limit is 1000");
        let ok = read_body(Body::from(vec![b'x'; 1000]), 1000).await.unwrap();
        assert_eq!(ok.len(), 1000);
    }
}

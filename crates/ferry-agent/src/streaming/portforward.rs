//! `portForward`: TCP connections to ports of a pod, as kubectl 1.30+ asks for them: a
//! WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io`, whose binary messages carry a
//! SPDY/3.1 session ([`super::spdy`]).
//!
//! Each forwarded connection is a pair of SPDY streams named by the headers `streamType`
//! (`error` or `data`), `port` and `requestID`. Once both are open, the agent connects to
//! `127.0.0.1:<port>` inside the pod's network namespace (the sandbox record's `netns`; the
//! host's when the pod has none) from a thread of its own that enters the namespace, since a
//! socket keeps the namespace it was made in. Bytes are then copied both ways; a connection
//! that cannot be made is reported on the error stream, which kubectl prints.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::exec::offers;
use super::spdy::{self, FLAG_FIN, Frame, HeaderReader, HeaderWriter, kind};
use super::{refuse, websocket_only};
use crate::logserver::LogServerState;

/// The WebSocket subprotocol: SPDY tunnelled in WebSocket.
pub const PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

/// `GET /portForward/{namespace}/{pod}`.
pub async fn serve(
    State(state): State<LogServerState>,
    Path((namespace, pod)): Path<(String, String)>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(uid) = state.index.get(&namespace, &pod) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "pod \"{namespace}/{pod}\" is not running on node \"{}\"",
                state.node_name
            ),
        );
    };
    let netns = match crate::sandbox::load(&state.layout.pod(&uid)) {
        Ok(Some(record)) if !record.host_network => record.netns,
        Ok(_) => None,
        Err(e) => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot read the sandbox of pod \"{namespace}/{pod}\": {e}"),
            );
        }
    };
    let Ok(ws) = ws else {
        return websocket_only(PROTOCOL);
    };
    if !offers(&ws, &[PROTOCOL]) {
        return websocket_only(PROTOCOL);
    }
    let label = format!("{namespace}/{pod}");
    ws.protocols([PROTOCOL])
        .on_upgrade(move |socket| session(socket, netns, label))
}

/// Connects to `127.0.0.1:port` inside `netns` (or here), from a thread that enters it.
pub async fn connect_in(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ferry-portforward".into())
        .spawn(move || {
            let result = (|| -> io::Result<std::net::TcpStream> {
                if let Some(path) = &netns {
                    let f = std::fs::File::open(path)?;
                    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
                        .map_err(io::Error::from)?;
                }
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                let s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
                s.set_nonblocking(true)?;
                Ok(s)
            })();
            let _ = tx.send(result);
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread ended"))??;
    tokio::net::TcpStream::from_std(stream)
}

/// The streams of one forwarded connection, by `requestID`.
#[derive(Debug, Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: String,
}

async fn session(socket: WebSocket, netns: Option<PathBuf>, label: String) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(bytes) = out_rx.recv().await {
            if sink.send(Message::Binary(bytes.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.close().await;
    });
    let mut reader = spdy::Reader::default();
    let mut headers_in = HeaderReader::new();
    let mut headers_out = HeaderWriter::new();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    // Client-to-pod bytes of each data stream (`None`: the client finished sending).
    let mut inbound: HashMap<u32, mpsc::UnboundedSender<Option<Vec<u8>>>> = HashMap::new();
    let mut tasks: HashMap<u32, JoinHandle<()>> = HashMap::new();
    'session: while let Some(Ok(msg)) = stream.next().await {
        match msg {
            Message::Binary(b) => reader.push(&b),
            Message::Close(_) => break,
            _ => continue,
        }
        while let Some(frame) = reader.next_frame() {
            match frame {
                Frame::Data {
                    stream: id,
                    flags,
                    data,
                } => {
                    if let Some(tx) = inbound.get(&id) {
                        if !data.is_empty() {
                            let _ = tx.send(Some(data));
                        }
                        if flags & FLAG_FIN != 0 {
                            let _ = tx.send(None);
                        }
                    }
                }
                Frame::Control {
                    kind: kind::SYN_STREAM,
                    data,
                    ..
                } => {
                    let Some(id) = spdy::stream_id(&data) else {
                        continue;
                    };
                    let headers = match headers_in.read(data.get(10..).unwrap_or_default()) {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::warn!(pod = %label, error = %e, "port-forward: bad SPDY stream");
                            break 'session;
                        }
                    };
                    let mut reply = id.to_be_bytes().to_vec();
                    reply.extend_from_slice(&headers_out.write(&[]));
                    let _ = out
                        .send(spdy::control_frame(kind::SYN_REPLY, 0, &reply))
                        .await;
                    let request = headers.get("requestid").cloned().unwrap_or_default();
                    let pair = pairs.entry(request.clone()).or_default();
                    pair.port = headers.get("port").cloned().unwrap_or_default();
                    match headers.get("streamtype").map(String::as_str) {
                        Some("error") => pair.error = Some(id),
                        Some("data") => pair.data = Some(id),
                        _ => {}
                    }
                    if let (Some(error), Some(data)) = (pair.error, pair.data) {
                        let port = pair.port.clone();
                        pairs.remove(&request);
                        let (tx, rx) = mpsc::unbounded_channel();
                        inbound.insert(data, tx);
                        let task = tokio::spawn(forward(
                            netns.clone(),
                            port,
                            error,
                            data,
                            rx,
                            out.clone(),
                            label.clone(),
                        ));
                        tasks.insert(data, task);
                    }
                }
                Frame::Control {
                    kind: kind::RST_STREAM,
                    data,
                    ..
                } => {
                    if let Some(id) = spdy::stream_id(&data) {
                        inbound.remove(&id);
                        if let Some(t) = tasks.remove(&id) {
                            t.abort();
                        }
                    }
                }
                Frame::Control {
                    kind: kind::PING,
                    data,
                    ..
                } => {
                    let _ = out.send(spdy::control_frame(kind::PING, 0, &data)).await;
                }
                Frame::Control {
                    kind: kind::GOAWAY, ..
                } => break 'session,
                // SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: nothing to do.
                Frame::Control { .. } => {}
            }
        }
        tasks.retain(|_, t| !t.is_finished());
    }
    for (_, t) in tasks {
        t.abort();
    }
    drop(out);
    let _ = writer.await;
}

/// One forwarded connection.
async fn forward(
    netns: Option<PathBuf>,
    port: String,
    error: u32,
    data: u32,
    mut inbound: mpsc::UnboundedReceiver<Option<Vec<u8>>>,
    out: mpsc::Sender<Vec<u8>>,
    label: String,
) {
    let fail = |message: String| {
        let out = out.clone();
        async move {
            let _ = out
                .send(spdy::data_frame(error, 0, message.as_bytes()))
                .await;
            let _ = out.send(spdy::data_frame(error, FLAG_FIN, &[])).await;
            let _ = out.send(spdy::data_frame(data, FLAG_FIN, &[])).await;
        }
    };
    let port_number = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return fail(format!("invalid port {port:?}")).await,
    };
    let tcp = match connect_in(netns, port_number).await {
        Ok(s) => s,
        Err(e) => {
            return fail(format!(
                "failed to connect to localhost:{port_number} inside the network namespace of pod {label}: {e}"
            ))
            .await;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut rd, mut wr) = tcp.into_split();
    let to_pod = tokio::spawn(async move {
        while let Some(chunk) = inbound.recv().await {
            match chunk {
                Some(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                None => break,
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(spdy::data_frame(data, 0, &buf[..n]))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = out.send(spdy::data_frame(data, FLAG_FIN, &[])).await;
    let _ = out.send(spdy::data_frame(error, FLAG_FIN, &[])).await;
    to_pod.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A thread in a network namespace of its own (loopback up) listening on `127.0.0.1`;
    /// returns the namespace's path, the port, and the thread (which answers one connection).
    fn listener_in_new_netns() -> (PathBuf, u16, std::thread::JoinHandle<Vec<u8>>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(NEWNET)");
            // A child forked from this thread starts in its namespace.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .expect("ip runs");
            assert!(up.success());
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let path = PathBuf::from(format!("/proc/{}/task/{tid}/ns/net", std::process::id()));
            tx.send((path, l.local_addr().unwrap().port())).unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut got = [0u8; 5];
            c.read_exact(&mut got).unwrap();
            c.write_all(b"pong!").unwrap();
            got.to_vec()
        });
        let (path, port) = rx.recv().unwrap();
        (path, port, thread)
    }

    #[tokio::test]
    async fn connects_inside_the_pods_network_namespace() {
        if !nix::unistd::geteuid().is_root() {
            assert!(
                std::env::var_os("CI").is_none_or(|v| v.is_empty()),
                "needs root (network namespaces), and CI is set: refusing to skip"
            );
            eprintln!("SKIPPED connects_inside_the_pods_network_namespace: needs root");
            return;
        }
        let (netns, port, server) = listener_in_new_netns();
        let mut s = connect_in(Some(netns), port)
            .await
            .expect("connects in the netns");
        s.write_all(b"ping!").await.unwrap();
        let mut answer = [0u8; 5];
        s.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"pong!");
        assert_eq!(server.join().unwrap(), b"ping!");
        // The agent's own threads stay in the host's namespace.
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let init = std::fs::read_link(format!("/proc/{}/ns/net", std::process::id())).unwrap();
        assert_eq!(own, init);
    }

    #[tokio::test]
    async fn a_missing_namespace_is_an_error() {
        let e = connect_in(Some("/nonexistent/ns/net".into()), 80)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}

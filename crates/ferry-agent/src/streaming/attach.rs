//! `attach`: the container's own stdin and output.
//!
//! The shim serves `attach.sock` in the attempt directory ([`ShimAttach`]): every connection
//! receives the container's output as it is written (besides the log), and what it sends goes
//! to the container's stdin (a pipe the shim keeps open when the container has `stdin: true`,
//! or the master of the container's pseudo-terminal with `tty: true`). With `stdinOnce`, stdin
//! closes when the first attached client leaves, as in Kubernetes.
//!
//! Messages on the socket, both ways: `type(1) | length(4, big-endian) | payload`.
//! Client → shim: 0 stdin bytes, 1 terminal size (`width(2) height(2)`), 2 end of stdin
//! (closes the container's stdin with `stdinOnce`).
//! Shim → client: 1 stdout bytes, 2 stderr bytes.
//!
//! The agent side ([`serve`]) bridges the socket to the `v5`/`v4.channel.k8s.io` channels and
//! ends with a Success Status when the container ends.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::channel::{self, Channels, Input, PROTOCOLS, ch, frame};
use super::exec::{Streams, offers};
use super::{Target, refuse, running_container, websocket_only};
use crate::logserver::LogServerState;

/// The socket's file name in the attempt directory.
pub const SOCKET: &str = "attach.sock";

const MSG_STDIN: u8 = 0;
const MSG_RESIZE: u8 = 1;
const MSG_STDIN_END: u8 = 2;
const MSG_STDOUT: u8 = 1;
const MSG_STDERR: u8 = 2;

fn message(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(5 + payload.len());
    m.push(kind);
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A path to `name` in `dir` short enough for a unix socket address (`/proc/self/fd/N/...`
/// through an open descriptor of the directory), and that descriptor.
fn short_path(dir: &FsPath, name: &str) -> io::Result<(File, PathBuf)> {
    let d = File::open(dir)?;
    let p = PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()));
    Ok((d, p))
}

/// Marks `fd` close-on-exec (the descriptors of `openpty` are inherited otherwise).
pub(crate) fn cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: F_SETFD on a descriptor we own.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The shim's side: the container's stdin and the attached clients.
pub struct ShimAttach {
    /// Where stdin bytes go (`None` once closed).
    stdin: Arc<Mutex<Option<File>>>,
    /// The terminal's master, for resizes.
    master: Option<Arc<OwnedFd>>,
    /// Attached clients, each receiving the output.
    clients: Arc<Mutex<Vec<UnixStream>>>,
    stdin_once: bool,
}

/// The container's stdio as the shim must set it up for attach.
pub enum ShimStdio {
    /// stdin is the read end of this pipe.
    Pipe(OwnedFd),
    /// stdin, stdout and stderr are this terminal (slave side).
    Tty(OwnedFd),
}

impl ShimAttach {
    /// Prepares the container's stdio for attach: a stdin pipe for a container with
    /// `stdin: true`, a terminal with `tty: true`, neither otherwise (output only). Returns the
    /// shim's side, what the container's stdio must be, and the terminal's output to read.
    pub fn new(
        stdin: bool,
        tty: bool,
        stdin_once: bool,
    ) -> io::Result<(Self, Option<ShimStdio>, Option<File>)> {
        let mut this = ShimAttach {
            stdin: Arc::new(Mutex::new(None)),
            master: None,
            clients: Arc::default(),
            stdin_once,
        };
        if tty {
            let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
            cloexec(&pty.master)?;
            cloexec(&pty.slave)?;
            let master = Arc::new(pty.master);
            let reader = File::from(master.try_clone()?);
            if stdin {
                this.stdin = Arc::new(Mutex::new(Some(File::from(master.try_clone()?))));
            }
            this.master = Some(master);
            Ok((this, Some(ShimStdio::Tty(pty.slave)), Some(reader)))
        } else if stdin {
            // Close-on-exec: the container must not hold its own stdin's write end.
            let (read, write) =
                nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
            this.stdin = Arc::new(Mutex::new(Some(File::from(write))));
            Ok((this, Some(ShimStdio::Pipe(read)), None))
        } else {
            Ok((this, None, None))
        }
    }

    /// A copy of the container's output for the attached clients (`stream` 1 or 2).
    pub fn broadcaster(&self) -> impl Fn(u8, &[u8]) + Send + Sync + 'static {
        let clients = self.clients.clone();
        move |stream, data| {
            let Ok(mut list) = clients.lock() else {
                return;
            };
            let m = message(if stream == 2 { MSG_STDERR } else { MSG_STDOUT }, data);
            // A client that cannot keep up (write timeout) or went away is dropped.
            list.retain_mut(|c| c.write_all(&m).is_ok());
        }
    }

    /// Serves `dir/attach.sock` from a thread of its own, for as long as the shim lives.
    pub fn serve(self, dir: &FsPath) -> io::Result<()> {
        let _ = std::fs::remove_file(dir.join(SOCKET));
        let (_dir_fd, path) = short_path(dir, SOCKET)?;
        let listener = UnixListener::bind(&path)?;
        let this = Arc::new(self);
        std::thread::spawn(move || {
            let mut first = true;
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
                if let Ok(copy) = conn.try_clone()
                    && let Ok(mut list) = this.clients.lock()
                {
                    list.push(copy);
                }
                let this = this.clone();
                let once = first && this.stdin_once;
                first = false;
                std::thread::spawn(move || {
                    this.client(conn);
                    if once && let Ok(mut stdin) = this.stdin.lock() {
                        *stdin = None;
                    }
                });
            }
        });
        Ok(())
    }

    /// Reads one client's messages until it leaves.
    fn client(&self, mut conn: UnixStream) {
        let mut head = [0u8; 5];
        loop {
            if conn.read_exact(&mut head).is_err() {
                return;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut payload = vec![0u8; len.min(1 << 20)];
            if conn.read_exact(&mut payload).is_err() {
                return;
            }
            match head[0] {
                MSG_STDIN => {
                    if let Ok(mut stdin) = self.stdin.lock()
                        && let Some(f) = stdin.as_mut()
                        && f.write_all(&payload).is_err()
                    {
                        *stdin = None;
                    }
                }
                MSG_RESIZE if payload.len() == 4 => {
                    if let Some(master) = &self.master {
                        super::exec::resize(
                            master.as_ref(),
                            channel::Size {
                                width: u16::from_be_bytes([payload[0], payload[1]]),
                                height: u16::from_be_bytes([payload[2], payload[3]]),
                            },
                        );
                    }
                }
                MSG_STDIN_END if self.master.is_none() && self.stdin_once => {
                    if let Ok(mut stdin) = self.stdin.lock() {
                        *stdin = None;
                    }
                }
                _ => {}
            }
        }
    }
}

/// `GET /attach/{namespace}/{pod}/{container}?stdin=&stdout=&stderr=&tty=`.
pub async fn serve(
    State(state): State<LogServerState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let query = query.unwrap_or_default();
    let target = match running_container(&state, &namespace, &pod, &container) {
        Ok(t) => t,
        Err((status, message)) => return refuse(status, message),
    };
    let streams = Streams::from_query(&query);
    let Ok(ws) = ws else {
        return websocket_only(&PROTOCOLS.join(", "));
    };
    if !offers(&ws, &PROTOCOLS) {
        return websocket_only(&PROTOCOLS.join(", "));
    }
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| run(socket, target, streams))
}

async fn run(socket: WebSocket, target: Target, streams: Streams) {
    let mut channels = Channels::start(socket);
    let status = match attach(&target, streams, &mut channels).await {
        Ok(()) => channel::success(),
        Err(e) => channel::failure(&format!("cannot attach to the container: {e}")),
    };
    let _ = channels
        .output
        .send(frame(ch::ERROR, status.to_string().as_bytes()))
        .await;
    let Channels { output, writer, .. } = channels;
    drop(output);
    let _ = writer.await;
}

async fn attach(target: &Target, streams: Streams, channels: &mut Channels) -> io::Result<()> {
    let (dir_fd, path) = short_path(&target.dir, SOCKET)?;
    let conn = tokio::net::UnixStream::connect(&path).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("the container's supervisor serves no attach socket ({e})"),
        )
    })?;
    drop(dir_fd);
    let (mut rd, mut wr) = conn.into_split();
    let out = channels.output.clone();
    let (want_out, want_err, tty) = (streams.stdout, streams.stderr, streams.tty);
    let mut reader = tokio::spawn(async move {
        let mut head = [0u8; 5];
        loop {
            if rd.read_exact(&mut head).await.is_err() {
                return;
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            let mut payload = vec![0u8; len.min(1 << 20)];
            if rd.read_exact(&mut payload).await.is_err() {
                return;
            }
            let chan = match head[0] {
                MSG_STDERR if want_err => ch::STDERR,
                MSG_STDERR if tty && want_out => ch::STDOUT,
                MSG_STDOUT if want_out => ch::STDOUT,
                _ => continue,
            };
            if out.send(frame(chan, &payload)).await.is_err() {
                return;
            }
        }
    });
    let container = target.state.container;
    loop {
        tokio::select! {
            _ = &mut reader => break,
            _ = crate::runtime::wait_exit(container) => {
                // Output still in flight reaches the client before the end.
                let _ = tokio::time::timeout(Duration::from_secs(2), &mut reader).await;
                break;
            }
            input = channels.input.recv() => match input {
                Some(Input::Stdin(bytes)) if streams.stdin => {
                    if wr.write_all(&message(MSG_STDIN, &bytes)).await.is_err() {
                        break;
                    }
                }
                Some(Input::StdinClosed) if streams.stdin => {
                    let _ = wr.write_all(&message(MSG_STDIN_END, &[])).await;
                }
                Some(Input::Resize(size)) => {
                    let mut p = size.width.to_be_bytes().to_vec();
                    p.extend_from_slice(&size.height.to_be_bytes());
                    let _ = wr.write_all(&message(MSG_RESIZE, &p)).await;
                }
                Some(_) => {}
                // The client detached; the container goes on.
                None => break,
            },
        }
    }
    reader.abort();
    Ok(())
}

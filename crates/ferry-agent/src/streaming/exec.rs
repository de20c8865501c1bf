//! `exec`: a command run inside a running container (its namespaces and cgroups, through
//! [`crate::sandbox::enter::command_in`]), with the container's environment and user, and its
//! stdio on the channels: pipes, or with `tty=true` a pseudo-terminal whose size follows
//! channel 4.
//!
//! The command runs in a process group (a session with a tty) of its own, which is killed when
//! the command ends or the client goes away, so an exec leaves no process behind.

use std::io::{self, Read as _};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use axum::extract::ws::{WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::channel::{self, Channels, Input, PROTOCOLS, Size, ch, frame};
use super::{Target, query_flag, query_values, refuse, running_container, websocket_only};
use crate::logserver::LogServerState;

/// PATH for commands of containers whose environment names none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Which streams a client asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streams {
    /// Channel 0 is read.
    pub stdin: bool,
    /// Channel 1 is written.
    pub stdout: bool,
    /// Channel 2 is written (never with a tty).
    pub stderr: bool,
    /// A pseudo-terminal.
    pub tty: bool,
}

impl Streams {
    /// From the query parameters `stdin`, `stdout`, `stderr` and `tty`.
    pub fn from_query(query: &str) -> Self {
        let tty = query_flag(query, "tty");
        Streams {
            stdin: query_flag(query, "stdin"),
            stdout: query_flag(query, "stdout"),
            stderr: query_flag(query, "stderr") && !tty,
            tty,
        }
    }
}

/// Whether the client offers one of the served subprotocols.
pub(crate) fn offers(ws: &WebSocketUpgrade, served: &[&str]) -> bool {
    ws.requested_protocols()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| served.contains(&p.trim()))
}

/// `GET /exec/{namespace}/{pod}/{container}?command=...&stdin=&stdout=&stderr=&tty=`.
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
    let argv = query_values(&query, "command");
    if argv.is_empty() {
        return refuse(
            StatusCode::BAD_REQUEST,
            "you must specify at least 1 command",
        );
    }
    let streams = Streams::from_query(&query);
    let Ok(ws) = ws else {
        return websocket_only(&PROTOCOLS.join(", "));
    };
    if !offers(&ws, &PROTOCOLS) {
        return websocket_only(&PROTOCOLS.join(", "));
    }
    ws.protocols(PROTOCOLS)
        .on_upgrade(move |socket| run(socket, target, argv, streams))
}

/// The `std` command that runs `argv` inside `target` as its container's user, with its
/// environment (exec and exec probes).
pub fn command(target: &Target, argv: &[String]) -> io::Result<std::process::Command> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the command is empty",
        ));
    };
    let mut cmd = crate::sandbox::enter::command_in(
        target.state.container.pid,
        program,
        target.state.chroot,
    )?;
    cmd.args(&argv[1..]);
    let mut env: Vec<(String, String)> = target
        .spec
        .as_ref()
        .map(|s| s.env.clone())
        .unwrap_or_default();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    cmd.env_clear().envs(env);
    Ok(cmd)
}

/// Switches to the container's user, groups, capabilities and `no_new_privs` (its resolved
/// `securityContext`), after the namespaces were entered (std's own `uid`/`gid` would switch
/// before `pre_exec`, and setns needs root). The read-only root is the container's mount
/// namespace's already.
fn as_user(cmd: &mut std::process::Command, target: &Target) {
    let Some(spec) = target.spec.as_ref() else {
        return;
    };
    let mut security = spec.security.clone();
    security.run_as_user = security.run_as_user.or(spec.run_as_user);
    security.run_as_group = security.run_as_group.or(spec.run_as_group);
    security.read_only_root = false;
    let prepared = match crate::sandbox::security::Prepared::new(&security, &[]) {
        Ok(p) => p,
        Err(e) => {
            // SAFETY: the closure only returns an error.
            let message = e.to_string();
            unsafe {
                cmd.pre_exec(move || Err(io::Error::other(message.clone())));
            }
            return;
        }
    };
    // SAFETY: `apply` only makes system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || prepared.apply());
    }
}

async fn run(socket: WebSocket, target: Target, argv: Vec<String>, streams: Streams) {
    let mut channels = Channels::start(socket);
    let status = match exec(&target, &argv, streams, &mut channels).await {
        Ok(s) => s,
        Err(e) => channel::failure(&format!(
            "failed to exec in container: cannot start {:?}: {e}",
            argv[0]
        )),
    };
    let _ = channels
        .output
        .send(frame(ch::ERROR, status.to_string().as_bytes()))
        .await;
    let Channels { output, writer, .. } = channels;
    drop(output);
    let _ = writer.await;
}

/// The exit code of a wait status (128 + N for signal N).
fn code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn outcome(status: std::process::ExitStatus) -> Value {
    match code(status) {
        0 => channel::success(),
        n => channel::exit_code(n),
    }
}

/// Kills what is left of the command's process group.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

/// Kills every process of the session `sid` (a terminal's, whose shell may have put jobs in
/// process groups of their own).
fn kill_session(sid: Option<u32>) {
    let Some(sid) = sid else { return };
    kill_group(Some(sid));
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name: state, ppid, pgrp, session.
        let session = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(3))
            .and_then(|s| s.parse::<u32>().ok());
        if session == Some(sid) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Runs the command; `Ok` with the Status to send, `Err` when it could not start.
async fn exec(
    target: &Target,
    argv: &[String],
    streams: Streams,
    channels: &mut Channels,
) -> io::Result<Value> {
    let mut cmd = command(target, argv)?;
    if streams.tty {
        return exec_tty(cmd, target, streams, channels).await;
    }
    cmd.process_group(0)
        .stdin(if streams.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if streams.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if streams.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    as_user(&mut cmd, target);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    drop(cmd);
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(2);
    let mut readers = 0;
    for (pipe, chan) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Unpin + Send + AsyncRead>),
            ch::STDOUT,
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Unpin + Send + AsyncRead>),
            ch::STDERR,
        ),
    ] {
        if let Some(pipe) = pipe {
            readers += 1;
            tokio::spawn(copy_out(
                pipe,
                chan,
                channels.output.clone(),
                done_tx.clone(),
            ));
        }
    }
    drop(done_tx);
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            input = channels.input.recv() => match input {
                Some(Input::Stdin(bytes)) => {
                    if let Some(w) = stdin.as_mut()
                        && w.write_all(&bytes).await.is_err()
                    {
                        stdin = None;
                    }
                }
                Some(Input::StdinClosed) => stdin = None,
                Some(Input::Resize(_)) => {}
                None => {
                    // The client went away: nothing of the command stays.
                    kill_group(pid);
                    let _ = child.wait().await;
                    return Ok(channel::failure("the client went away"));
                }
            },
        }
    };
    drop(stdin);
    kill_group(pid);
    drain(&mut done_rx, readers).await;
    Ok(outcome(status))
}

use tokio::io::AsyncRead;

/// Waits (a little) for the output readers to reach the end of their pipes.
async fn drain(done: &mut mpsc::Receiver<()>, readers: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        if tokio::time::timeout_at(deadline, done.recv())
            .await
            .is_err()
        {
            break;
        }
    }
}

async fn copy_out(
    mut pipe: Box<dyn Unpin + Send + AsyncRead>,
    chan: u8,
    out: mpsc::Sender<axum::extract::ws::Message>,
    done: mpsc::Sender<()>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out.send(frame(chan, &buf[..n])).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = done.send(()).await;
}

/// Sets the size of the terminal whose master is `fd`.
pub fn resize(fd: &impl AsRawFd, size: Size) {
    let ws = libc::winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
    unsafe {
        libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws);
    }
}

/// The command with a pseudo-terminal as its controlling terminal and stdio.
async fn exec_tty(
    mut cmd: std::process::Command,
    target: &Target,
    streams: Streams,
    channels: &mut Channels,
) -> io::Result<Value> {
    let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    super::attach::cloexec(&pty.master)?;
    super::attach::cloexec(&pty.slave)?;
    let master: OwnedFd = pty.master;
    let slave: OwnedFd = pty.slave;
    cmd.stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; fd 0 is the terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    as_user(&mut cmd, target);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn()?;
    // The parent's copies of the terminal's slave side go now, so the master sees the end.
    drop(cmd);
    let pid = child.id();
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut reader = std::fs::File::from(master.try_clone()?);
    let out = channels.output.clone();
    let want_out = streams.stdout;
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if want_out && out.blocking_send(frame(ch::STDOUT, &buf[..n])).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EIO: every slave descriptor is closed.
                Err(_) => break,
            }
        }
        let _ = done_tx.blocking_send(());
    });
    let mut writer = Some(tokio::fs::File::from_std(std::fs::File::from(
        master.try_clone()?,
    )));
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
            input = channels.input.recv() => match input {
                Some(Input::Stdin(bytes)) => {
                    if let Some(w) = writer.as_mut()
                        && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                    {
                        writer = None;
                    }
                }
                // A terminal has no end of input; EOF is the user's ^D.
                Some(Input::StdinClosed) => {}
                Some(Input::Resize(size)) => resize(&master, size),
                None => {
                    kill_session(pid);
                    let _ = child.wait().await;
                    return Ok(channel::failure("the client went away"));
                }
            },
        }
    };
    kill_session(pid);
    drain(&mut done_rx, 1).await;
    Ok(outcome(status))
}

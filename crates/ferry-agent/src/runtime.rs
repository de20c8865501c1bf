//! The host-process runtime, agent side: starting a container under a shim, reading its state
//! back from disk, waiting for it to end, and signalling it.
//!
//! Each container attempt has a directory holding everything about it:
//!
//! | file         | written by | content                                                     |
//! |--------------|------------|-------------------------------------------------------------|
//! | `spec.json`  | agent      | [`ShimSpec`]: what to run                                   |
//! | `shim.json`  | shim       | the shim's own [`ProcId`], first thing it does              |
//! | `state.json` | shim       | [`StateRecord`]: container pid + start time, once started   |
//! | `exit.json`  | shim       | [`ExitRecord`]: exit code and times, once the process ended |
//! | `log`        | shim       | the output, see [`crate::logs`]                             |
//! | `shim.log`   | shim       | the shim's own diagnostics                                  |
//!
//! State is derived from these files alone ([`inspect`]), so an agent that restarts finds every
//! container exactly as it left it: live shims are re-adopted, and the exit records of shims that
//! finished meanwhile are read. A process is identified by pid *and* start time ([`ProcId`]), so a
//! reused pid is never mistaken for the container.

use std::io::{self, Write as _};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::procfs::ProcId;

/// File names inside an attempt directory.
pub mod files {
    /// What to run ([`super::ShimSpec`]).
    pub const SPEC: &str = "spec.json";
    /// The shim's identity.
    pub const SHIM: &str = "shim.json";
    /// The running container ([`super::StateRecord`]).
    pub const STATE: &str = "state.json";
    /// How it ended ([`super::ExitRecord`]).
    pub const EXIT: &str = "exit.json";
    /// Its output.
    pub const LOG: &str = "log";
    /// The shim's diagnostics.
    pub const SHIM_LOG: &str = "shim.log";
}

/// Exit code recorded when a container could not be started at all (as containerd reports).
pub const START_ERROR_EXIT_CODE: i32 = 128;

/// How a container sees its volumes at their `mountPath`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MountMode {
    /// A private mount namespace with bind mounts when the agent may create one (root or
    /// CAP_SYS_ADMIN), else symlinks.
    #[default]
    Auto,
    /// Always a private mount namespace; a container fails to start when that is impossible.
    Namespace,
    /// Never a namespace: a `mountPath` that does not exist on the host becomes a symlink to
    /// the volume; one that exists is left alone (with a warning event).
    Symlink,
}

/// One volume mount of a container, resolved to host paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountSpec {
    /// The host path holding the volume's content.
    pub source: PathBuf,
    /// The container's `mountPath`.
    pub target: PathBuf,
    /// Mount read-only (namespace mode only).
    #[serde(default)]
    pub read_only: bool,
}

/// Everything the shim needs to start one container process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimSpec {
    /// Program and arguments, already expanded.
    pub argv: Vec<String>,
    /// The complete environment, in order.
    pub env: Vec<(String, String)>,
    /// Working directory (created when missing).
    pub working_dir: PathBuf,
    /// Volume mounts.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// How mounts are made visible.
    #[serde(default)]
    pub mount_mode: MountMode,
    /// Run as this user id (`securityContext.runAsUser`).
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// Run as this group id (`securityContext.runAsGroup`).
    #[serde(default)]
    pub run_as_group: Option<u32>,
    /// Join this network namespace (the pod's) before the process starts.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// Join these cgroup directories (the container's, one per hierarchy) before the process
    /// starts.
    #[serde(default)]
    pub cgroups: Vec<PathBuf>,
    /// Run in a UTS namespace of its own with this hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Keep stdin open for `kubectl attach` (`stdin: true`).
    #[serde(default)]
    pub stdin: bool,
    /// Close stdin when the first attached client leaves (`stdinOnce`).
    #[serde(default)]
    pub stdin_once: bool,
    /// A pseudo-terminal as stdio (`tty: true`).
    #[serde(default)]
    pub tty: bool,
    /// The resolved `securityContext` (user, groups, capabilities, no_new_privs, read-only
    /// root), applied by the shim just before exec.
    #[serde(default)]
    pub security: crate::sandbox::security::ContainerSecurity,
}

/// How the shim made volumes visible.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MountOutcome {
    /// `namespace`, `symlink` or `none`.
    pub mode: String,
    /// Mounts that could not be made visible at their `mountPath`, and why.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Symlinks created on the host (removed when the pod is removed).
    #[serde(default)]
    pub symlinks: Vec<(PathBuf, PathBuf)>,
}

/// A started container (`state.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateRecord {
    /// The shim supervising it.
    pub shim: ProcId,
    /// The container's main process (also its process group id).
    pub container: ProcId,
    /// When it was started.
    pub started_at: Timestamp,
    /// How its volumes were mounted.
    #[serde(default)]
    pub mounts: MountOutcome,
    /// Commands run inside it (exec, cp) take its root directory as theirs (containers with
    /// an image root filesystem); the host runtime's share the host's.
    #[serde(default)]
    pub chroot: bool,
    /// The CRI container id, for a containerd container (whose `shim` and `container` are
    /// both its init process as the host sees it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_container_id: Option<String>,
}

/// A finished container (`exit.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExitRecord {
    /// Exit code; 128 + N for a process killed by signal N.
    pub exit_code: i32,
    /// The signal that killed it, if one did.
    #[serde(default)]
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `StartError` or `Unknown`.
    pub reason: String,
    /// Details (the start error, for instance).
    #[serde(default)]
    pub message: Option<String>,
    /// When it started, if it did.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// When it ended (or failed to start).
    pub finished_at: Timestamp,
}

impl ExitRecord {
    /// A record for a process that never started.
    pub fn start_error(message: impl Into<String>) -> Self {
        ExitRecord {
            exit_code: START_ERROR_EXIT_CODE,
            signal: None,
            reason: "StartError".into(),
            message: Some(message.into()),
            started_at: None,
            finished_at: Timestamp::now(),
        }
    }

    /// A record from a wait status.
    pub fn from_status(status: std::process::ExitStatus, started_at: Timestamp) -> Self {
        use std::os::unix::process::ExitStatusExt;
        let (exit_code, signal) = match (status.code(), status.signal()) {
            (Some(code), _) => (code, None),
            (None, Some(sig)) => (128 + sig, Some(sig)),
            (None, None) => (-1, None),
        };
        ExitRecord {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: Some(started_at),
            finished_at: Timestamp::now(),
        }
    }
}

/// Writes JSON to `path` atomically (temporary file, fsync, rename); the file is private to
/// the agent's user (mode 0600: specs hold the containers' environment, secrets included).
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        serde_json::to_writer(&mut f, value).map_err(io::Error::other)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Reads JSON from `path`; `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How to start a shim: a program and the arguments before `--spec FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimCommand {
    /// The executable.
    pub program: PathBuf,
    /// Arguments placed before `--spec FILE`.
    pub args: Vec<String>,
}

impl ShimCommand {
    /// The running executable's hidden shim subcommand (`<current exe> agent-shim`), which is
    /// right when the agent runs inside the `ferry` binary.
    pub fn current_exe() -> io::Result<Self> {
        Ok(ShimCommand {
            program: std::env::current_exe()?,
            args: vec![crate::shim::SHIM_SUBCOMMAND.to_string()],
        })
    }
}

/// What the files of one attempt say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptState {
    /// Nothing was started in this directory.
    NotStarted,
    /// A shim is alive but has not started the process yet.
    Starting {
        /// The shim.
        shim: ProcId,
    },
    /// The process runs.
    Running(StateRecord),
    /// The process ended (or never started).
    Exited(ExitRecord),
}

/// Reads the state of the attempt in `dir`.
///
/// When a shim vanished without writing its exit record (it was killed), the container's
/// process group is killed so nothing is left unsupervised, and an `Unknown` exit record is
/// written so the answer stays the same from then on.
pub fn inspect(dir: &Path) -> io::Result<AttemptState> {
    if dir.join(crate::cri::ATTEMPT_FILE).exists() {
        return crate::cri::inspect(dir);
    }
    if let Some(exit) = read_json::<ExitRecord>(&dir.join(files::EXIT))? {
        return Ok(AttemptState::Exited(exit));
    }
    if let Some(state) = read_json::<StateRecord>(&dir.join(files::STATE))? {
        if state.shim.is_alive() {
            return Ok(AttemptState::Running(state));
        }
        // The shim may have written its exit record just after we looked.
        if let Some(exit) = read_json::<ExitRecord>(&dir.join(files::EXIT))? {
            return Ok(AttemptState::Exited(exit));
        }
        if state.container.exists() {
            let _ = killpg(Pid::from_raw(state.container.pid), Signal::SIGKILL);
        }
        let record = ExitRecord {
            exit_code: 128 + Signal::SIGKILL as i32,
            signal: None,
            reason: "Unknown".into(),
            message: Some(
                "the container's supervisor (shim) ended unexpectedly; the process was killed"
                    .into(),
            ),
            started_at: Some(state.started_at),
            finished_at: Timestamp::now(),
        };
        write_json_atomic(&dir.join(files::EXIT), &record)?;
        return Ok(AttemptState::Exited(record));
    }
    if !dir.join(files::SPEC).exists() {
        return Ok(AttemptState::NotStarted);
    }
    if let Some(shim) = read_json::<ProcId>(&dir.join(files::SHIM))?
        && shim.is_alive()
    {
        // Re-check: it may have finished starting meanwhile.
        if let Some(state) = read_json::<StateRecord>(&dir.join(files::STATE))? {
            return Ok(AttemptState::Running(state));
        }
        if dir.join(files::EXIT).exists() {
            return inspect(dir);
        }
        return Ok(AttemptState::Starting { shim });
    }
    if dir.join(files::EXIT).exists() || dir.join(files::STATE).exists() {
        return inspect(dir);
    }
    let record = ExitRecord::start_error(format!(
        "the container's supervisor (shim) ended before starting the process; see {}",
        dir.join(files::SHIM_LOG).display()
    ));
    write_json_atomic(&dir.join(files::EXIT), &record)?;
    Ok(AttemptState::Exited(record))
}

/// Starts the container described by `spec` under a detached shim, in attempt directory `dir`
/// (created; it must not have been used before). Returns once the process runs or failed to
/// start.
pub async fn start(shim: &ShimCommand, dir: &Path, spec: &ShimSpec) -> io::Result<AttemptState> {
    std::fs::create_dir_all(dir)?;
    if dir.join(files::SPEC).exists() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("attempt directory {} was already used", dir.display()),
        ));
    }
    write_json_atomic(&dir.join(files::SPEC), spec)?;
    let shim_log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(files::SHIM_LOG))?;
    let spawned = tokio::process::Command::new(&shim.program)
        .args(&shim.args)
        .arg("--spec")
        .arg(dir.join(files::SPEC))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(shim_log)
        .kill_on_drop(false)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            // Recorded like any start failure, so the pod status says what went wrong.
            let record = ExitRecord::start_error(format!(
                "cannot run the container supervisor {}: {e}",
                shim.program.display()
            ));
            write_json_atomic(&dir.join(files::EXIT), &record)?;
            return Ok(AttemptState::Exited(record));
        }
    };
    // The detached shim writes one line once the process runs (or failed), then closes the pipe.
    let Some(mut out) = child.stdout.take() else {
        return Err(io::Error::other("the shim's stdout is not piped"));
    };
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(60), out.read_to_string(&mut line)).await;
    let _ = child.wait().await;
    if read.is_err() {
        tracing::warn!(dir = %dir.display(), "the shim did not report within 60s");
    }
    match inspect(dir)? {
        AttemptState::NotStarted => Err(io::Error::other(format!(
            "the shim did not start; see {}",
            dir.join(files::SHIM_LOG).display()
        ))),
        state => Ok(state),
    }
}

/// Opens a pidfd for `pid` (Linux 5.3+).
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until the process `id` has exited (it need not be our child).
pub async fn wait_exit(id: ProcId) {
    match pidfd_open(id.pid) {
        Ok(fd) => {
            // The pid may have been reused before the pidfd was opened.
            if !id.is_alive() {
                return;
            }
            // SAFETY: we own `fd`, and it stays open for as long as the registration lives.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            match registered {
                Ok(afd) => {
                    let _ = afd.readable().await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e.into_parts().1, "pidfd not pollable; polling /proc")
                }
            }
        }
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return,
        Err(e) => tracing::debug!(error = %e, "pidfd_open unavailable; polling /proc"),
    }
    while id.is_alive() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sends `signal` to the container's process group, unless it is known to be gone.
pub fn signal(state: &StateRecord, signal: Signal) -> io::Result<()> {
    if !state.container.exists() && !state.shim.is_alive() {
        return Ok(());
    }
    if state.cri_container_id.is_some() {
        // A container's init process (pid 1 of its pid namespace): as containerd signals it.
        return match nix::sys::signal::kill(Pid::from_raw(state.container.pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
        };
    }
    match killpg(Pid::from_raw(state.container.pid), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_from_statuses() {
        let ok = std::process::Command::new("true").status().unwrap();
        let r = ExitRecord::from_status(ok, Timestamp::now());
        assert_eq!((r.exit_code, r.reason.as_str()), (0, "Completed"));
        let three = std::process::Command::new("sh")
            .args(["-c", "exit 3"])
            .status()
            .unwrap();
        assert_eq!(
            ExitRecord::from_status(three, Timestamp::now()).exit_code,
            3
        );
        let killed = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        let r = ExitRecord::from_status(killed, Timestamp::now());
        assert_eq!(
            (r.exit_code, r.signal, r.reason.as_str()),
            (137, Some(9), "Error")
        );
    }

    #[test]
    fn inspect_reads_and_repairs_attempts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(dir.path()).unwrap(), AttemptState::NotStarted);
        // A spec without a live shim: the start is recorded as failed, once and for all.
        write_json_atomic(
            &dir.path().join(files::SPEC),
            &ShimSpec {
                argv: vec!["true".into()],
                env: vec![],
                working_dir: "/".into(),
                mounts: vec![],
                mount_mode: MountMode::Auto,
                run_as_user: None,
                run_as_group: None,
                ..Default::default()
            },
        )
        .unwrap();
        let AttemptState::Exited(first) = inspect(dir.path()).unwrap() else {
            panic!("expected an exit record");
        };
        assert_eq!(first.reason, "StartError");
        assert_eq!(inspect(dir.path()).unwrap(), AttemptState::Exited(first));
    }

    #[test]
    fn a_dead_shim_with_a_live_container_gets_the_container_killed() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::process::CommandExt;
        let mut sleeper = std::process::Command::new("sleep")
            .arg("60")
            .process_group(0)
            .spawn()
            .unwrap();
        let container = ProcId::of(sleeper.id() as i32).unwrap();
        let dead_shim = ProcId {
            pid: container.pid,
            start_time: container.start_time + 12345,
        };
        write_json_atomic(
            &dir.path().join(files::STATE),
            &StateRecord {
                shim: dead_shim,
                container,
                started_at: Timestamp::now(),
                mounts: MountOutcome::default(),
                chroot: false,
                cri_container_id: None,
            },
        )
        .unwrap();
        let AttemptState::Exited(rec) = inspect(dir.path()).unwrap() else {
            panic!("expected an exit record");
        };
        assert_eq!(rec.reason, "Unknown");
        let status = sleeper.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "the orphaned container must be killed"
        );
    }

    #[tokio::test]
    async fn wait_exit_sees_a_process_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        let id = ProcId::of(child.id() as i32).unwrap();
        let waiter = tokio::spawn(wait_exit(id));
        // Reap it so it does not stay a zombie of this test process.
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(!id.is_alive());
    }
}

//! The container supervisor ("shim"): a small detached process per container attempt that
//! starts the container process, writes its output to the log, waits for it and records how it
//! ended. Modelled on containerd's shims: the agent can stop, crash or restart while containers
//! keep running, and re-adopt them from the files the shim writes (see [`crate::runtime`]).
//!
//! The agent runs `SHIM --spec DIR/spec.json`. That first process re-executes itself in a new
//! session (`setsid`) and exits at once, so the real shim is nobody's child but init's and the
//! agent leaves no zombies. The shim then:
//!
//! 1. writes `shim.json` (its pid and start time);
//! 2. becomes a child subreaper, so processes the container leaves behind are re-parented to it;
//! 3. makes the volumes visible ([`crate::mounts`]);
//! 4. starts the process in its own process group (the group the agent signals), with stdin
//!    from `/dev/null` and stdout/stderr through pipes into the log file (or, for `kubectl
//!    attach`, a stdin pipe with `stdin: true` and a terminal with `tty: true`; the output is
//!    also copied to the clients of `attach.sock`, see [`crate::streaming::attach`]);
//! 5. writes `state.json`, then one line to its stdout, which the agent reads to know the start
//!    is over, and closes that pipe;
//! 6. waits for the process; kills what is left of its process group and of its re-parented
//!    descendants (as a container's end would); drains the output; writes `exit.json`; exits.
//!
//! This module must run before any async runtime or other thread exists in the process (the
//! `ferry` binary dispatches the hidden subcommand straight from `main`). It never panics on bad
//! input: failures are recorded as a `StartError` exit record.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::logs::{LineSplitter, Stream, format_record};
use crate::procfs::ProcId;
use crate::runtime::{ExitRecord, ShimSpec, StateRecord, files, read_json, write_json_atomic};

/// Name of the hidden `ferry` subcommand that runs the shim.
pub const SHIM_SUBCOMMAND: &str = "agent-shim";

/// Set in the detached re-execution of the shim.
const STAGE_ENV: &str = "FERRY_AGENT_SHIM_STAGE";

/// Arguments of the hidden shim subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ShimArgs {
    /// The container attempt's spec.json, written by the agent.
    #[arg(long)]
    pub spec: PathBuf,
}

/// Runs the shim; returns the process exit code. Call it before starting any async runtime.
pub fn run(args: ShimArgs) -> i32 {
    if std::env::var_os(STAGE_ENV).is_some() {
        supervise(&args.spec)
    } else {
        detach()
    }
}

/// Parses `--spec FILE` from the process arguments and runs the shim (for a standalone binary).
pub fn main_from_env() -> i32 {
    let mut args = std::env::args_os().skip(1);
    let mut spec = None;
    while let Some(a) = args.next() {
        if a == "--spec" {
            spec = args.next().map(PathBuf::from);
        } else if let Some(v) = a.to_str().and_then(|s| s.strip_prefix("--spec=")) {
            spec = Some(PathBuf::from(v));
        }
    }
    match spec {
        Some(spec) => run(ShimArgs { spec }),
        None => {
            eprintln!(
                "usage: ferry {SHIM_SUBCOMMAND} --spec DIR/spec.json (started by the node agent)"
            );
            2
        }
    }
}

/// First stage: re-execute ourselves in a new session and exit, so the shim is re-parented to
/// init. stdout (the agent's pipe) and stderr are inherited by the second stage.
fn detach() -> i32 {
    let mut cmd = Command::new("/proc/self/exe");
    if let Some(arg0) = std::env::args_os().next() {
        cmd.arg0(arg0);
    }
    cmd.args(std::env::args_os().skip(1))
        .env(STAGE_ENV, "1")
        .stdin(Stdio::null());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(io::Error::from)?;
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("ferry shim: cannot detach: {e}");
            1
        }
    }
}

/// Second stage: supervise the container described by `spec_path`.
fn supervise(spec_path: &Path) -> i32 {
    let spec_path = std::path::absolute(spec_path).unwrap_or_else(|_| spec_path.to_path_buf());
    let spec_path = spec_path.as_path();
    let dir = spec_path.parent().unwrap_or(Path::new("/")).to_path_buf();
    // Keep no directory of the agent busy for the container's lifetime.
    let _ = std::env::set_current_dir("/");
    let me = ProcId::of(std::process::id() as i32);
    match me {
        Ok(me) => {
            if let Err(e) = write_json_atomic(&dir.join(files::SHIM), &me) {
                eprintln!("ferry shim: cannot write {}: {e}", files::SHIM);
            }
        }
        Err(e) => eprintln!("ferry shim: cannot read own process identity: {e}"),
    }
    let outcome = start_and_wait(&dir, spec_path);
    let record = match outcome {
        Ok(record) => record,
        Err(e) => {
            let message = e.to_string();
            eprintln!("ferry shim: {message}");
            report(&format!("failed {message}"));
            ExitRecord::start_error(message)
        }
    };
    if let Err(e) = write_json_atomic(&dir.join(files::EXIT), &record) {
        eprintln!("ferry shim: cannot write {}: {e}", files::EXIT);
        return 1;
    }
    0
}

/// Writes the one status line for the agent and closes our stdout.
fn report(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
    drop(out);
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // Replace fd 1 so the agent's pipe sees end-of-file.
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Why a container's process could not be started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot read the spec: {0}")]
    ReadSpec(#[source] io::Error),
    #[error("no spec at {}", .0.display())]
    NoSpec(std::path::PathBuf),
    #[error("the command is empty")]
    EmptyCommand,
    #[error(transparent)]
    Mounts(#[from] crate::mounts::MountError),
    #[error("cannot create the working directory {}: {error}", .dir.display())]
    WorkingDir {
        dir: std::path::PathBuf,
        #[source]
        error: io::Error,
    },
    #[error("cannot open the log file: {0}")]
    Log(#[source] io::Error),
    #[error("cannot join the pod sandbox ({what}): {error}")]
    Sandbox {
        what: String,
        #[source]
        error: io::Error,
    },
    #[error("cannot prepare the security context: {0}")]
    Security(#[source] io::Error),
    #[error("cannot set up stdin for attach: {0}")]
    Attach(#[source] io::Error),
    #[error("cannot start {program:?}: {error}")]
    Spawn {
        program: String,
        #[source]
        error: io::Error,
    },
}

/// Starts the process and waits for it; `Err` when it could not be started.
fn start_and_wait(dir: &Path, spec_path: &Path) -> Result<ExitRecord, StartError> {
    let spec: ShimSpec = read_json(spec_path)
        .map_err(StartError::ReadSpec)?
        .ok_or_else(|| StartError::NoSpec(spec_path.to_path_buf()))?;
    let Some(program) = spec.argv.first() else {
        return Err(StartError::EmptyCommand);
    };
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let cgroup_procs = join_sandbox(&spec)?;
    let mounts = crate::mounts::setup(&spec.mounts, spec.mount_mode)?;
    if !spec.working_dir.exists() {
        std::fs::create_dir_all(&spec.working_dir).map_err(|error| StartError::WorkingDir {
            dir: spec.working_dir.clone(),
            error,
        })?;
    }
    // Everything the security context asks for, computed before the fork.
    let mut security = spec.security.clone();
    security.run_as_user = security.run_as_user.or(spec.run_as_user);
    security.run_as_group = security.run_as_group.or(spec.run_as_group);
    let volume_targets: Vec<PathBuf> = spec.mounts.iter().map(|m| m.target.clone()).collect();
    let security = crate::sandbox::security::Prepared::new(&security, &volume_targets)
        .map_err(StartError::Security)?;
    // The container's output may hold secrets: readable by the agent (its owner) only.
    let log = File::options()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(dir.join(files::LOG))
        .map_err(StartError::Log)?;
    let log = Arc::new(Mutex::new(log));

    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // `kubectl attach`: a stdin pipe or a terminal, and the output copied to attached clients.
    let (attach, stdio, tty_out) =
        crate::streaming::attach::ShimAttach::new(spec.stdin, spec.tty, spec.stdin_once)
            .map_err(StartError::Attach)?;
    match stdio {
        Some(crate::streaming::attach::ShimStdio::Tty(slave)) => {
            let copy = || slave.try_clone().map_err(StartError::Attach);
            cmd.stdin(copy()?).stdout(copy()?).stderr(slave);
            // SAFETY: setsid and ioctl(TIOCSCTTY) are async-signal-safe; fd 0 is the terminal.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        Some(crate::streaming::attach::ShimStdio::Pipe(read)) => {
            cmd.stdin(read).process_group(0);
        }
        None => {
            cmd.process_group(0);
        }
    }
    if !cgroup_procs.is_empty() {
        // SAFETY: the closure only writes to descriptors opened before the fork.
        unsafe {
            cmd.pre_exec(move || {
                for mut f in cgroup_procs.iter() {
                    // "0": the writing process, the container itself, before it runs anything.
                    f.write_all(b"0")?;
                }
                Ok(())
            });
        }
    }
    // Last (after joining the cgroups, as root): the read-only root, groups, user,
    // capabilities and no_new_privs.
    // SAFETY: `apply` only makes system calls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || security.apply());
    }
    // The container's cgroup is fresh, but count from what it holds now all the same.
    let oom_before = crate::sandbox::cgroup::oom_kills_in(&spec.cgroups);
    let mut child = cmd.spawn().map_err(|error| StartError::Spawn {
        program: program.clone(),
        error,
    })?;
    // Our copies of a terminal's slave side go, so its master sees the end.
    drop(cmd);
    let started_at = Timestamp::now();
    let pid = child.id() as i32;
    let container = ProcId::of(pid).unwrap_or(ProcId { pid, start_time: 0 });
    let shim = ProcId::of(std::process::id() as i32).unwrap_or(ProcId {
        pid: 0,
        start_time: 0,
    });
    let state = StateRecord {
        shim,
        container,
        started_at,
        mounts,
        chroot: false,
        cri_container_id: None,
    };
    if let Err(e) = write_json_atomic(&dir.join(files::STATE), &state) {
        eprintln!("ferry shim: cannot write {}: {e}", files::STATE);
    }
    let tee: Tee = Arc::new(attach.broadcaster());
    if let Err(e) = attach.serve(dir) {
        eprintln!("ferry shim: cannot serve attach: {e}");
    }
    report(&format!("started {pid}"));

    // Copy output into the log, one thread per stream.
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let mut readers = 0;
    if let Some(out) = tty_out {
        spawn_reader(
            out,
            Stream::Stdout,
            log.clone(),
            tee.clone(),
            done_tx.clone(),
        );
        readers += 1;
    }
    if let Some(out) = child.stdout.take() {
        spawn_reader(
            out,
            Stream::Stdout,
            log.clone(),
            tee.clone(),
            done_tx.clone(),
        );
        readers += 1;
    }
    if let Some(err) = child.stderr.take() {
        spawn_reader(err, Stream::Stderr, log.clone(), tee, done_tx.clone());
        readers += 1;
    }
    drop(done_tx);
    // `child` must not be waited through std (we reap everything with waitpid below).
    std::mem::forget(child);

    let status = reap_until(pid);
    // As when a container ends: nothing it started outlives it.
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    kill_descendants();
    // Output still buffered in the pipes is drained; a writer that escaped the kill cannot
    // hold the record back for long.
    let deadline = Instant::now() + Duration::from_secs(2);
    for _ in 0..readers {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    if let Ok(f) = log.lock() {
        let _ = f.sync_data();
    }
    let mut record = ExitRecord::from_status(status, started_at);
    crate::sandbox::cgroup::mark_oom_kill(&mut record, oom_before, &spec.cgroups);
    Ok(record)
}

/// Enters the pod's network namespace and a UTS namespace with the pod's hostname (the shim
/// itself, so the container inherits both), and opens the container's cgroups for the child
/// to join before it runs.
fn join_sandbox(spec: &ShimSpec) -> Result<Vec<File>, StartError> {
    let fail = |what: String| move |error: io::Error| StartError::Sandbox { what, error };
    if let Some(netns) = &spec.netns {
        let f = File::open(netns).map_err(fail(format!("open {}", netns.display())))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)
            .map_err(fail(format!(
                "enter the network namespace {}",
                netns.display()
            )))?;
    }
    if let Some(hostname) = &spec.hostname {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUTS)
            .map_err(io::Error::from)
            .map_err(fail("create a UTS namespace".into()))?;
        nix::unistd::sethostname(hostname)
            .map_err(io::Error::from)
            .map_err(fail(format!("set the hostname {hostname:?}")))?;
    }
    spec.cgroups
        .iter()
        .map(|dir| {
            let path = dir.join("cgroup.procs");
            File::options()
                .append(true)
                .open(&path)
                .map_err(fail(format!("open {}", path.display())))
        })
        .collect()
}

/// Reaps children until `pid` ends; returns its status.
fn reap_until(pid: i32) -> std::process::ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => {
                return std::process::ExitStatus::from_raw((code & 0xff) << 8);
            }
            Ok(WaitStatus::Signaled(p, sig, core)) if p.as_raw() == pid => {
                return std::process::ExitStatus::from_raw(
                    sig as i32 | if core { 0x80 } else { 0 },
                );
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // ECHILD: somebody else reaped it; report an unknown failure.
                eprintln!("ferry shim: waitpid: {e}");
                return std::process::ExitStatus::from_raw(255 << 8);
            }
        }
    }
}

/// Kills and reaps the processes re-parented to us (descendants that left the process group).
fn kill_descendants() {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        for pid in children_of_self() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(nix::errno::Errno::ECHILD) => return,
            Ok(WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {}
        }
    }
}

/// Our children according to `/proc/self/task/*/children`.
fn children_of_self() -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return pids;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    pids
}

/// Where output is copied besides the log (attached clients): stream 1 or 2, bytes.
type Tee = Arc<dyn Fn(u8, &[u8]) + Send + Sync>;

/// Copies one output stream into the log, timestamping each record.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    stream: Stream,
    log: Arc<Mutex<File>>,
    tee: Tee,
    done: mpsc::Sender<()>,
) {
    std::thread::spawn(move || {
        let mut splitter = LineSplitter::default();
        let mut buf = vec![0u8; 64 * 1024];
        let write = |records: Vec<u8>| {
            if !records.is_empty()
                && let Ok(mut f) = log.lock()
                && let Err(e) = f.write_all(&records)
            {
                eprintln!("ferry shim: cannot write the log: {e}");
            }
        };
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    tee(if stream == Stream::Stderr { 2 } else { 1 }, &buf[..n]);
                    let now = Timestamp::now();
                    let mut records = Vec::new();
                    splitter.push(&buf[..n], |content, partial| {
                        format_record(&mut records, now, stream, partial, content)
                    });
                    write(records);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        splitter.finish(|content, partial| {
            format_record(&mut records, Timestamp::now(), stream, partial, content)
        });
        write(records);
        let _ = done.send(());
    });
}

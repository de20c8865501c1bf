//! Running a command inside a running container: its mount, network, UTS and IPC namespaces
//! and its cgroups, as `nsenter` (and `runc exec`) do. Used by `kubectl exec` and `cp`, and by
//! exec probes.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// The namespaces entered, in the order they are joined (the mount namespace last but one
/// would break `/proc` lookups of the others, so all are opened first).
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("mnt", libc::CLONE_NEWNS),
];

/// What [`command_in`] joins, opened beforehand (opening is not allowed after `fork`).
struct Target {
    namespaces: Vec<(OwnedFd, libc::c_int)>,
    cgroup_procs: Vec<File>,
    root: Option<OwnedFd>,
    cwd: Option<OwnedFd>,
}

/// A [`Command`] that runs `program` inside the namespaces and cgroups of process `pid`
/// (usually a container's main process). Namespaces the target shares with this process are
/// skipped. With `chroot`, the target's root directory becomes the command's (for containers
/// with an image root filesystem). Fails when the process is gone.
pub fn command_in(pid: i32, program: &str, chroot: bool) -> io::Result<Command> {
    let own = |ns: &str| std::fs::metadata(format!("/proc/self/ns/{ns}"));
    let mut namespaces = Vec::new();
    for (ns, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{ns}");
        let theirs = std::fs::metadata(&path)?;
        use std::os::unix::fs::MetadataExt;
        if own(ns).is_ok_and(|m| m.ino() == theirs.ino() && m.dev() == theirs.dev()) {
            continue;
        }
        namespaces.push((OwnedFd::from(File::open(&path)?), *flag));
    }
    let mut cgroup_procs = Vec::new();
    for line in std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?.lines() {
        // `hierarchy-id:controllers:path`; v2 has an empty controller list.
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if path == "/" {
            continue;
        }
        let dir = if controllers.is_empty() {
            cgroup_v2_root().map(|r| format!("{r}{path}"))
        } else {
            let first = controllers.split(',').next().unwrap_or(controllers);
            let name = first.strip_prefix("name=").unwrap_or(first);
            Some(format!("/sys/fs/cgroup/{name}{path}"))
        };
        if let Some(dir) = dir
            && let Ok(f) = File::options()
                .append(true)
                .open(format!("{dir}/cgroup.procs"))
        {
            cgroup_procs.push(f);
        }
    }
    let root = if chroot {
        Some(OwnedFd::from(File::open(format!("/proc/{pid}/root"))?))
    } else {
        None
    };
    let cwd = File::open(format!("/proc/{pid}/cwd"))
        .ok()
        .map(OwnedFd::from);
    let target = Target {
        namespaces,
        cgroup_procs,
        root,
        cwd,
    };
    let mut cmd = Command::new(program);
    // SAFETY: between fork and exec the closure only makes async-signal-safe system calls
    // (write, setns, fchdir, chroot) on descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use std::io::Write as _;
            for mut f in target.cgroup_procs.iter() {
                // "0" is the writing process itself.
                let _ = f.write_all(b"0");
            }
            for (fd, flag) in &target.namespaces {
                if libc::setns(fd.as_raw_fd(), *flag) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(root) = &target.root {
                if libc::fchdir(root.as_raw_fd()) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::chroot(c".".as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            match &target.cwd {
                Some(cwd) if target.root.is_none() => {
                    let _ = libc::fchdir(cwd.as_raw_fd());
                }
                _ => {
                    let _ = libc::chdir(c"/".as_ptr());
                }
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// The mount point of the cgroup v2 hierarchy (`/sys/fs/cgroup` on a v2 host, or
/// `/sys/fs/cgroup/unified` on a hybrid one).
pub fn cgroup_v2_root() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_, dir, kind) = (f.next()?, f.next()?, f.next()?);
        (kind == "cgroup2").then(|| dir.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_in_own_namespaces_when_the_target_is_this_process() {
        let me = std::process::id() as i32;
        let out = command_in(me, "sh", false)
            .unwrap()
            .args(["-c", "echo inside"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "inside");
    }

    #[test]
    fn a_gone_process_is_an_error() {
        assert!(command_in(i32::MAX - 1, "true", false).is_err());
    }
}

//! How a host process sees its volumes at their `mountPath`s (run by the shim).
//!
//! - **Namespace mode** (the default when the agent runs as root or with CAP_SYS_ADMIN): the
//!   shim enters a private mount namespace (`unshare(CLONE_NEWNS)`, with `/` made a recursive
//!   slave so host mounts still propagate in and nothing propagates out) and bind-mounts each
//!   volume onto its `mountPath`, read-only when asked. Only the container's processes see those
//!   mounts; they disappear with the container. A `mountPath` that does not exist on the host is
//!   created there first (an empty directory, or an empty file for a file volume) and is left in
//!   place afterwards, as removing it could disturb another pod's mount.
//! - **Symlink mode** (the fallback without privilege): a `mountPath` that does not exist
//!   becomes a symlink to the volume's directory, removed with the pod. A `mountPath` that exists
//!   (and is not already the volume) cannot be changed: the container starts anyway, the agent
//!   emits a `VolumeNotMounted` warning event, and the content stays reachable at its host path.
//!   `readOnly` cannot be enforced in this mode.
//!
//! A mount whose `mountPath` is the volume's own host path (a `hostPath` volume mounted where it
//! is) needs nothing in either mode.

use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, unshare};

use crate::runtime::{MountMode, MountOutcome, MountSpec};

/// Why a container's volumes cannot be made visible (the container must not start).
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// A `mountPath` that is relative or climbs with `..`.
    #[error("mountPath {} must be an absolute path without '..'", .0.display())]
    BadTarget(PathBuf),
    /// The volume's directory or file is missing on the host.
    #[error("volume source {} does not exist", .0.display())]
    MissingSource(PathBuf),
    /// A bind mount failed.
    #[error("cannot bind-mount {} at {}: {error}", .from.display(), .to.display())]
    Bind {
        /// The volume on the host.
        from: PathBuf,
        /// The `mountPath`.
        to: PathBuf,
        /// The cause.
        #[source]
        error: io::Error,
    },
    /// Namespace mode was required and no private mount namespace could be made.
    #[error("cannot create a private mount namespace: {0}")]
    Namespace(#[source] io::Error),
}

/// Makes `mounts` visible in this process (and its future children); `Err` when the container
/// must not start.
pub fn setup(mounts: &[MountSpec], mode: MountMode) -> Result<MountOutcome, MountError> {
    let needed: Vec<&MountSpec> = mounts
        .iter()
        .filter(|m| !same_path(&m.source, &m.target))
        .collect();
    for m in mounts {
        if !m.target.is_absolute() || m.target.components().any(|c| c == Component::ParentDir) {
            return Err(MountError::BadTarget(m.target.clone()));
        }
        if !m.source.exists() {
            return Err(MountError::MissingSource(m.source.clone()));
        }
    }
    if needed.is_empty() {
        return Ok(MountOutcome {
            mode: "none".into(),
            ..Default::default()
        });
    }
    if mode != MountMode::Symlink {
        match enter_namespace() {
            Ok(()) => {
                let mut ordered = needed.clone();
                ordered.sort_by_key(|m| m.target.components().count());
                for m in ordered {
                    bind(m).map_err(|error| MountError::Bind {
                        from: m.source.clone(),
                        to: m.target.clone(),
                        error,
                    })?;
                }
                return Ok(MountOutcome {
                    mode: "namespace".into(),
                    ..Default::default()
                });
            }
            Err(e) if mode == MountMode::Namespace => {
                return Err(MountError::Namespace(e));
            }
            Err(e) => {
                eprintln!("ferry shim: no private mount namespace ({e}); using symlinks");
            }
        }
    }
    Ok(symlinks(&needed))
}

/// True when both paths name the same file.
fn same_path(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn enter_namespace() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNS)?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    Ok(())
}

fn bind(m: &MountSpec) -> io::Result<()> {
    if !m.target.exists() {
        if m.source.is_dir() {
            std::fs::create_dir_all(&m.target)?;
        } else {
            if let Some(parent) = m.target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::File::create(&m.target)?;
        }
    }
    mount(
        Some(&m.source),
        &m.target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    if m.read_only {
        mount(
            None::<&str>,
            &m.target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )?;
    }
    Ok(())
}

fn symlinks(mounts: &[&MountSpec]) -> MountOutcome {
    let mut out = MountOutcome {
        mode: "symlink".into(),
        ..Default::default()
    };
    for m in mounts {
        match std::fs::read_link(&m.target) {
            Ok(dest) if dest == m.source => continue,
            _ => {}
        }
        match std::fs::symlink_metadata(&m.target) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let made = m
                    .target
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::os::unix::fs::symlink(&m.source, &m.target));
                match made {
                    Ok(()) => out.symlinks.push((m.target.clone(), m.source.clone())),
                    Err(e) => out.warnings.push(format!(
                        "volume {} is not visible at {}: cannot create a symlink there: {e}",
                        m.source.display(),
                        m.target.display()
                    )),
                }
            }
            _ => out.warnings.push(format!(
                "volume {} is not visible at {}: that path exists on the host and bind mounts need \
                 root or CAP_SYS_ADMIN; the content is at {}",
                m.source.display(),
                m.target.display(),
                m.source.display()
            )),
        }
    }
    out
}

/// Removes the symlinks a container created, if they still point where they did.
pub fn remove_symlinks(links: &[(PathBuf, PathBuf)]) {
    for (link, dest) in links {
        if std::fs::read_link(link).is_ok_and(|d| &d == dest) {
            let _ = std::fs::remove_file(link);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_mode_links_missing_paths_and_warns_on_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();
        let mounts = vec![
            MountSpec {
                source: vol.clone(),
                target: dir.path().join("a/b/data"),
                read_only: false,
            },
            MountSpec {
                source: vol.clone(),
                target: taken.clone(),
                read_only: false,
            },
            MountSpec {
                source: vol.clone(),
                target: vol.clone(),
                read_only: false,
            },
        ];
        let out = setup(&mounts, MountMode::Symlink).unwrap();
        assert_eq!(out.mode, "symlink");
        assert_eq!(
            out.symlinks,
            vec![(dir.path().join("a/b/data"), vol.clone())]
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("a/b/data")).unwrap(),
            vol
        );
        assert_eq!(out.warnings.len(), 1, "{:?}", out.warnings);
        assert!(out.warnings[0].contains("exists on the host"));
        remove_symlinks(&out.symlinks);
        assert!(!dir.path().join("a/b/data").exists());
    }

    #[test]
    fn mount_errors_are_typed() {
        let m = MountSpec {
            source: "/".into(),
            target: "a/../b".into(),
            read_only: false,
        };
        assert!(matches!(
            setup(&[m], MountMode::Symlink),
            Err(MountError::BadTarget(t)) if t == Path::new("a/../b")
        ));
    }

    #[test]
    fn rejects_relative_mount_paths_and_missing_sources() {
        let m = MountSpec {
            source: "/".into(),
            target: "relative/path".into(),
            read_only: false,
        };
        assert!(
            setup(&[m], MountMode::Symlink)
                .unwrap_err()
                .to_string()
                .contains("absolute")
        );
        let m = MountSpec {
            source: "/definitely/not/here".into(),
            target: "/x".into(),
            read_only: false,
        };
        assert!(
            setup(&[m], MountMode::Symlink)
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }
}

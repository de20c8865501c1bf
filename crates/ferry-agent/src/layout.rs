//! Where the agent keeps its state under the data directory.
//!
//! ```text
//! DATA_DIR/
//!   pods/<pod uid>/
//!     pod.json                          identity of the pod (namespace, name, uid, grace period)
//!     work/                             default working directory of its containers
//!     volumes/<kind>/<volume name>/     emptyDir, configMap, secret and downwardAPI volumes
//!     containers/<container name>/<attempt>/
//!       spec.json shim.json state.json exit.json log shim.log    (see crate::runtime)
//! ```
//!
//! Attempt `N` is the container's `N`th restart (`restartCount`). The current attempt and the
//! one before it are kept (the latter for `previous=true` logs); older ones are deleted.
//! Everything of a pod is deleted when the pod is removed.

use std::path::{Path, PathBuf};

/// Paths under a data directory.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout rooted at `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Layout {
            root: data_dir.into(),
        }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of all pods.
    pub fn pods(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// Directory of one pod.
    pub fn pod(&self, uid: &str) -> PathBuf {
        self.pods().join(uid)
    }

    /// The pod's identity file.
    pub fn pod_meta(&self, uid: &str) -> PathBuf {
        self.pod(uid).join("pod.json")
    }

    /// The pod's default working directory.
    pub fn workdir(&self, uid: &str) -> PathBuf {
        self.pod(uid).join("work")
    }

    /// Directory of a pod-managed volume.
    pub fn volume(&self, uid: &str, kind: &str, name: &str) -> PathBuf {
        self.pod(uid).join("volumes").join(kind).join(name)
    }

    /// Directory of a container's attempts.
    pub fn container(&self, uid: &str, name: &str) -> PathBuf {
        self.pod(uid).join("containers").join(name)
    }

    /// Directory of one attempt of a container.
    pub fn attempt(&self, uid: &str, name: &str, attempt: u32) -> PathBuf {
        self.container(uid, name).join(attempt.to_string())
    }

    /// Attempt numbers present for a container, ascending.
    pub fn attempts(&self, uid: &str, name: &str) -> Vec<u32> {
        let mut found: Vec<u32> = std::fs::read_dir(self.container(uid, name))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        found.sort_unstable();
        found
    }

    /// Pod uids with a directory.
    pub fn pod_uids(&self) -> Vec<String> {
        std::fs::read_dir(self.pods())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|s| safe_component(s))
            .collect()
    }
}

/// True when `s` can be used as one path component (a uid, a container or volume name).
pub fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_and_attempts() {
        assert!(safe_component("3f1c-uid_a.b"));
        assert!(!safe_component(".."));
        assert!(!safe_component("a/b"));
        assert!(!safe_component(""));
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::new(dir.path());
        for n in [0, 2, 10] {
            std::fs::create_dir_all(l.attempt("u", "c", n)).unwrap();
        }
        std::fs::create_dir_all(l.container("u", "c").join("junk")).unwrap();
        assert_eq!(l.attempts("u", "c"), vec![0, 2, 10]);
        assert_eq!(l.pod_uids(), vec!["u".to_string()]);
    }
}

//! A pod's volumes as host paths.
//!
//! | volume        | host path                                                          |
//! |---------------|--------------------------------------------------------------------|
//! | `hostPath`    | the path itself (its `type` is checked, `*OrCreate` types created) |
//! | `emptyDir`    | `DATA_DIR/pods/UID/volumes/empty-dir/NAME`, mode 0777, removed with the pod (`medium: Memory`: a tmpfs, `sizeLimit` its size, when the agent is root) |
//! | `configMap`   | `…/volumes/configmap/NAME`, one file per key (or per `items` entry) |
//! | `secret`      | `…/volumes/secret/NAME`, likewise, on a tmpfs of its own (see below) |
//! | `downwardAPI` | `…/volumes/downward-api/NAME`, one file per item                    |
//! | `projected`   | `…/volumes/projected/NAME`: its configMap, secret, downwardAPI and serviceAccountToken sources together, on a tmpfs |
//! | `persistentVolumeClaim` | the `hostPath` or `local` path of the PersistentVolume the claim is bound to (created if missing, as `DirectoryOrCreate`); a missing or unbound claim keeps the container waiting |
//!
//! Secret and projected volumes never touch the node's disk when the agent is root: each is a
//! tmpfs (unmounted with the pod), its directory owned by the pod's user and group (`fsGroup`,
//! else `runAsGroup`) with mode 0750 (0755 only when a container of the pod would otherwise be
//! locked out), its files per `defaultMode`/`mode` owned likewise. An agent that is not root
//! keeps them on disk in a 0700 directory and logs a warning saying so. With `fsGroup`, the
//! files of emptyDir, configMap, secret, downwardAPI and projected volumes belong to that group
//! (group-readable, directories setgid), as the kubelet's `SetVolumeOwnership` makes them.
//!
//! Other volume types are refused with a clear reason. How the process then sees each volume at
//! its `mountPath` is [`crate::mounts`]' business.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use std::collections::HashSet;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, KeyToPath, PersistentVolume, PersistentVolumeClaim, Pod,
    Volume,
};

use crate::layout::Layout;
use crate::pod::env::{EnvSources, NodeFacts, field_ref, resource_field_ref};
use crate::runtime::MountSpec;

/// Why a pod's volumes cannot be prepared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VolumeError {
    /// What is wrong.
    pub message: String,
    /// True when waiting may help (a missing ConfigMap, a hostPath not there yet).
    pub retryable: bool,
}

fn permanent(message: String) -> VolumeError {
    VolumeError {
        message,
        retryable: false,
    }
}

fn retryable(message: String) -> VolumeError {
    VolumeError {
        message,
        retryable: true,
    }
}

/// A claim a pod's volume names, as the agent read it: `None` where the API has no such
/// claim; the PersistentVolume it is bound to, where it is bound and the volume exists.
#[derive(Debug, Clone, Default)]
pub struct ClaimSource {
    /// The claim.
    pub claim: Option<PersistentVolumeClaim>,
    /// The volume named by the claim's `spec.volumeName`.
    pub volume: Option<PersistentVolume>,
}

/// Names of the PersistentVolumeClaims the pod's volumes refer to.
pub fn referenced_claims(pod: &Pod) -> Vec<String> {
    let mut names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Names of the pod's volumes that every mount sees read-only (`persistentVolumeClaim`
/// volumes with `readOnly: true`).
pub fn read_only_volumes(pod: &Pod) -> HashSet<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true))
        })
        .map(|v| v.name.clone())
        .collect()
}

/// The directory of a claim's bound volume on this node, created when missing.
fn claim_dir(sources: &EnvSources, claim_name: &str) -> Result<PathBuf, VolumeError> {
    let source = sources.claims.get(claim_name).cloned().unwrap_or_default();
    let Some(claim) = source.claim else {
        return Err(retryable(format!(
            "persistentvolumeclaim {claim_name:?} not found"
        )));
    };
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    if volume_name.is_empty() || phase != "Bound" {
        return Err(retryable(format!(
            "persistentvolumeclaim {claim_name:?} is not bound yet (phase {phase})"
        )));
    }
    let Some(volume) = source.volume else {
        return Err(retryable(format!(
            "persistentvolume {volume_name:?} of claim {claim_name:?} not found"
        )));
    };
    let spec = volume.spec.unwrap_or_default();
    let (path, kind) = if let Some(hp) = &spec.host_path {
        (
            hp.path.clone(),
            hp.type_
                .clone()
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| "DirectoryOrCreate".into()),
        )
    } else if let Some(local) = &spec.local {
        (local.path.clone(), "DirectoryOrCreate".to_string())
    } else {
        return Err(permanent(format!(
            "persistentvolume {volume_name:?} has no hostPath or local source (Ferry's node agent mounts only those)"
        )));
    };
    let path = PathBuf::from(path);
    if !path.is_absolute() {
        return Err(permanent(format!(
            "persistentvolume {volume_name:?}: path {} must be absolute",
            path.display()
        )));
    }
    let fresh = !path.exists();
    check_host_path(&path, &kind)?;
    if fresh && path.is_dir() {
        // As the local-path provisioner makes them: any user of any pod may write.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| retryable(format!("cannot set permissions of {}: {e}", path.display())))?;
    }
    Ok(path)
}

/// Names of the ConfigMaps and Secrets the pod's volumes refer to.
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut cms = Vec::new();
    let mut secrets = Vec::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &v.config_map {
            cms.push(cm.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(s);
        }
        for source in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(cm) = &source.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = &source.secret {
                secrets.push(s.name.clone());
            }
        }
    }
    (cms, secrets)
}

/// Creates (or refreshes) the pod's volumes; returns the host path of each by volume name.
pub fn prepare(
    layout: &Layout,
    pod: &Pod,
    uid: &str,
    sources: &EnvSources,
    node: &NodeFacts,
) -> Result<HashMap<String, PathBuf>, VolumeError> {
    let mut out = HashMap::new();
    let owner = VolumeOwner::of(pod);
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if !crate::layout::safe_component(&v.name) {
            return Err(permanent(format!("invalid volume name {:?}", v.name)));
        }
        let path =
            prepare_one(layout, pod, uid, v, sources, node, &owner).map_err(|e| VolumeError {
                message: format!("volume {:?}: {}", v.name, e.message),
                ..e
            })?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

/// Who owns a pod's volumes: the user its containers run as (when they agree; root
/// otherwise), the group (`fsGroup`, else their common `runAsGroup`, else root), and the mode
/// of a private volume's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeOwner {
    /// The owning user.
    pub uid: u32,
    /// The owning group.
    pub gid: u32,
    /// The pod's `fsGroup`.
    pub fs_group: Option<u32>,
    /// Mode of secret and projected volume directories (0750, or 0755 when some container
    /// runs as neither the owner, root nor a member of the group).
    pub private_mode: u32,
    /// The agent runs as root (it can chown and mount).
    pub root: bool,
}

impl VolumeOwner {
    /// The owner of `pod`'s volumes, from its containers' resolved security contexts.
    pub fn of(pod: &Pod) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        let resolved: Vec<crate::sandbox::security::ContainerSecurity> =
            crate::pod::env::all_containers(pod)
                .filter_map(|c| crate::sandbox::security::resolve(pod, c).ok())
                .collect();
        let fs_group = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref())
            .and_then(|s| s.fs_group)
            .and_then(|g| u32::try_from(g).ok());
        let unique = |v: Vec<u32>| -> Option<u32> {
            let first = *v.first()?;
            v.iter().all(|x| *x == first).then_some(first)
        };
        let uid = unique(
            resolved
                .iter()
                .map(|s| s.run_as_user.unwrap_or(euid))
                .collect(),
        )
        .unwrap_or(0);
        let gid = fs_group
            .or_else(|| {
                unique(
                    resolved
                        .iter()
                        .map(|s| s.run_as_group.unwrap_or(0))
                        .collect(),
                )
            })
            .unwrap_or(0);
        let readable = resolved.iter().all(|s| {
            let u = s.run_as_user.unwrap_or(euid);
            u == uid
                || u == 0
                || s.run_as_group.unwrap_or(0) == gid
                || s.supplemental_groups.contains(&gid)
        });
        VolumeOwner {
            uid,
            gid,
            fs_group,
            private_mode: if readable { 0o750 } else { 0o755 },
            root: euid == 0,
        }
    }

    /// Makes `dir` a private volume directory: a tmpfs of its own owned by the pod (root), or a
    /// 0700 directory on disk with a warning (not root). A stale on-disk copy under a directory
    /// not yet mounted is removed first, so no secret stays on the disk.
    pub fn private_dir(&self, dir: &Path) -> Result<(), VolumeError> {
        use std::os::unix::fs::MetadataExt;
        let io =
            |what: &str, e: std::io::Error| retryable(format!("{what} {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(|e| io("cannot create", e))?;
        if !self.root {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| io("cannot set permissions of", e))?;
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "the node agent is not root: secret and projected volumes are kept on disk (0700 directories under the data directory), not on a tmpfs"
                )
            });
            return Ok(());
        }
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
        let mounted = dir.parent().and_then(dev) != dev(dir);
        if !mounted {
            for entry in std::fs::read_dir(dir).map_err(|e| io("cannot read", e))? {
                let path = entry.map_err(|e| io("cannot read", e))?.path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                removed.map_err(|e| io("cannot clean", e))?;
            }
            let options = format!(
                "mode={:o},uid={},gid={}",
                self.private_mode, self.uid, self.gid
            );
            nix::mount::mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some(options.as_str()),
            )
            .map_err(|e| retryable(format!("cannot mount a tmpfs on {}: {e}", dir.display())))?;
        }
        nix::unistd::chown(
            dir,
            Some(nix::unistd::Uid::from_raw(self.uid)),
            Some(nix::unistd::Gid::from_raw(self.gid)),
        )
        .map_err(|e| io("cannot chown", e.into()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.private_mode))
            .map_err(|e| io("cannot set permissions of", e))
    }

    /// Gives what is below `dir` to the pod: owned by `owner_uid` (the owner, for private
    /// volumes; unchanged otherwise) and the group; with `fsGroup`, files group-readable
    /// (`group_write`: and writable) and directories setgid. A no-op when the agent is not
    /// root or there is nothing to change.
    pub fn own_tree(
        &self,
        dir: &Path,
        private: bool,
        group_write: bool,
    ) -> Result<(), VolumeError> {
        if !self.root || (!private && self.fs_group.is_none()) {
            return Ok(());
        }
        let uid = private.then_some(nix::unistd::Uid::from_raw(self.uid));
        let gid = if private {
            Some(self.gid)
        } else {
            self.fs_group
        }
        .map(nix::unistd::Gid::from_raw);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let meta = std::fs::symlink_metadata(&d)
                .map_err(|e| retryable(format!("cannot read {}: {e}", d.display())))?;
            let err = |e: std::io::Error| retryable(format!("cannot chown {}: {e}", d.display()));
            if meta.is_symlink() {
                continue;
            }
            // The top of a private volume keeps the mode `private_dir` gave it.
            let top = d == dir;
            if !(private && top) {
                nix::unistd::chown(&d, uid, gid).map_err(|e| err(e.into()))?;
                let mut mode = meta.permissions().mode() & 0o7777;
                if self.fs_group.is_some() {
                    mode |= if group_write { 0o060 } else { 0o040 };
                    if meta.is_dir() {
                        mode |= 0o2010;
                    }
                }
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).map_err(err)?;
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&d).map_err(err)? {
                    stack.push(entry.map_err(err)?.path());
                }
            }
        }
        Ok(())
    }
}

fn prepare_one(
    layout: &Layout,
    pod: &Pod,
    uid: &str,
    v: &Volume,
    sources: &EnvSources,
    node: &NodeFacts,
    owner: &VolumeOwner,
) -> Result<PathBuf, VolumeError> {
    let io =
        |what: &str, p: &Path, e: std::io::Error| retryable(format!("{what} {}: {e}", p.display()));
    if let Some(hp) = &v.host_path {
        let path = PathBuf::from(&hp.path);
        if !path.is_absolute() {
            return Err(permanent(format!(
                "hostPath {:?} must be absolute",
                hp.path
            )));
        }
        check_host_path(&path, hp.type_.as_deref().unwrap_or(""))?;
        return Ok(path);
    }
    if let Some(pvc) = &v.persistent_volume_claim {
        return claim_dir(sources, &pvc.claim_name);
    }
    if let Some(ed) = &v.empty_dir {
        let dir = layout.volume(uid, "empty-dir", &v.name);
        let fresh = !dir.exists();
        if fresh {
            std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(|e| io("cannot set permissions of", &dir, e))?;
        }
        if ed.medium.as_deref() == Some("Memory") && nix::unistd::geteuid().is_root() {
            mount_tmpfs(&dir, ed.size_limit.as_ref())?;
        }
        if fresh {
            // What the containers write later is theirs (the kubelet sets ownership once).
            owner.own_tree(&dir, false, true)?;
        }
        return Ok(dir);
    }
    if let Some(cm) = &v.config_map {
        let dir = layout.volume(uid, "configmap", &v.name);
        let optional = cm.optional == Some(true);
        let data = config_map_data(sources, &cm.name, optional)?;
        write_keys(&dir, &data, cm.items.as_deref(), cm.default_mode, optional)?;
        owner.own_tree(&dir, false, false)?;
        return Ok(dir);
    }
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let dir = layout.volume(uid, "secret", &v.name);
        let optional = s.optional == Some(true);
        let data = secret_data(sources, &name, optional)?;
        owner.private_dir(&dir)?;
        write_keys(&dir, &data, s.items.as_deref(), s.default_mode, optional)?;
        owner.own_tree(&dir, true, false)?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        let dir = layout.volume(uid, "downward-api", &v.name);
        std::fs::create_dir_all(&dir).map_err(|e| io("cannot create", &dir, e))?;
        write_downward(
            &dir,
            pod,
            d.items.as_deref().unwrap_or_default(),
            d.default_mode,
            node,
        )?;
        owner.own_tree(&dir, false, false)?;
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        let dir = layout.volume(uid, "projected", &v.name);
        owner.private_dir(&dir)?;
        for source in p.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                let optional = cm.optional == Some(true);
                let data = config_map_data(sources, &cm.name, optional)?;
                write_keys(&dir, &data, cm.items.as_deref(), p.default_mode, optional)?;
            } else if let Some(sec) = &source.secret {
                let optional = sec.optional == Some(true);
                let data = secret_data(sources, &sec.name, optional)?;
                write_keys(&dir, &data, sec.items.as_deref(), p.default_mode, optional)?;
            } else if let Some(d) = &source.downward_api {
                write_downward(
                    &dir,
                    pod,
                    d.items.as_deref().unwrap_or_default(),
                    p.default_mode,
                    node,
                )?;
            } else if source.service_account_token.is_some() {
                // Written by the pod worker (`satoken`), which needs the API.
                continue;
            } else {
                return Err(permanent(
                    "a projected source names no configMap, secret, downwardAPI or serviceAccountToken".into(),
                ));
            }
        }
        owner.own_tree(&dir, true, false)?;
        return Ok(dir);
    }
    let kind = serde_json::to_value(v)
        .ok()
        .and_then(|j| {
            j.as_object()
                .and_then(|o| o.keys().find(|k| *k != "name").cloned())
        })
        .unwrap_or_else(|| "unknown".into());
    Err(permanent(format!(
        "type {kind:?} is not supported by Ferry's host runtime (supported: hostPath, emptyDir, configMap, secret, downwardAPI, projected, persistentVolumeClaim)"
    )))
}

/// Mounts a tmpfs on `dir` (an emptyDir with `medium: Memory`, `sizeLimit` as its size) unless
/// one is there already.
fn mount_tmpfs(
    dir: &Path,
    size: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
) -> Result<(), VolumeError> {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dir.parent().and_then(dev) != dev(dir) {
        return Ok(());
    }
    let mut options = "mode=0777".to_string();
    if let Some(q) = size {
        let bytes = ferry_api::quantity::parse_units(&q.0)
            .map_err(|e| permanent(format!("emptyDir sizeLimit {:?}: {e}", q.0)))?;
        options.push_str(&format!(",size={}", bytes.max(4096)));
    }
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|e| retryable(format!("cannot mount a tmpfs on {}: {e}", dir.display())))
}

/// Unmounts what the agent mounted under a pod's directory (memory-backed emptyDirs).
pub fn unmount_all(pod_dir: &Path) {
    let mut points: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(PathBuf::from))
        .filter(|m| m.starts_with(pod_dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn config_map_data(
    sources: &EnvSources,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    match sources.config_maps.get(name).cloned().flatten() {
        Some(c) => {
            let mut d: BTreeMap<String, Vec<u8>> = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            d.extend(
                c.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            Ok(d)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(retryable(format!("configmap {name:?} not found"))),
    }
}

fn secret_data(
    sources: &EnvSources,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, VolumeError> {
    match sources.secrets.get(name).cloned().flatten() {
        Some(sec) => {
            let mut d: BTreeMap<String, Vec<u8>> = sec
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            d.extend(
                sec.string_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes())),
            );
            Ok(d)
        }
        None if optional => Ok(BTreeMap::new()),
        None => Err(retryable(format!("secret {name:?} not found"))),
    }
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node: &NodeFacts,
) -> Result<(), VolumeError> {
    for item in items {
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                path => field_ref(pod, path, node).map_err(|e| permanent(e.0))?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            let name = r.container_name.clone().unwrap_or_default();
            let c = crate::pod::env::all_containers(pod)
                .find(|c| c.name == name)
                .ok_or_else(|| {
                    permanent(format!("resourceFieldRef names unknown container {name:?}"))
                })?;
            resource_field_ref(c, &r.resource, r.divisor.as_ref(), node)
                .map_err(|e| permanent(e.0))?
        } else {
            return Err(permanent(format!(
                "downwardAPI item {:?} has no source",
                item.path
            )));
        };
        let target = relative_file(dir, &item.path)?;
        write_file(
            &target,
            value.as_bytes(),
            item.mode.or(default_mode).unwrap_or(0o644),
        )?;
    }
    Ok(())
}

/// `k="v"` lines, sorted, as the downward API writes whole label and annotation maps.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}\n"))
        .collect()
}

fn check_host_path(path: &Path, kind: &str) -> Result<(), VolumeError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path);
    let missing = |what: &str| retryable(format!("hostPath {} is not {what}", path.display()));
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if !path.exists() {
                std::fs::create_dir_all(path).map_err(|e| {
                    retryable(format!("cannot create hostPath {}: {e}", path.display()))
                })?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(
                    |e| retryable(format!("cannot set permissions of {}: {e}", path.display())),
                )?;
            }
            if path.is_dir() {
                Ok(())
            } else {
                Err(missing("a directory"))
            }
        }
        "Directory" => {
            if path.is_dir() {
                Ok(())
            } else {
                Err(missing("an existing directory"))
            }
        }
        "FileOrCreate" => {
            if !path.exists() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        retryable(format!("cannot create hostPath {}: {e}", path.display()))
                    })?;
            }
            if path.is_file() {
                Ok(())
            } else {
                Err(missing("a file"))
            }
        }
        "File" => {
            if path.is_file() {
                Ok(())
            } else {
                Err(missing("an existing file"))
            }
        }
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(missing("a socket")),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(missing("a character device")),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(missing("a block device")),
        },
        other => Err(permanent(format!("unknown hostPath type {other:?}"))),
    }
}

/// `dir/rel`, refusing absolute paths and `..`.
fn relative_file(dir: &Path, rel: &str) -> Result<PathBuf, VolumeError> {
    let p = Path::new(rel);
    if rel.is_empty()
        || p.is_absolute()
        || p.components().any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(permanent(format!(
            "item path {rel:?} must be relative, without '..'"
        )));
    }
    Ok(dir.join(p))
}

fn write_file(path: &Path, data: &[u8], mode: i32) -> Result<(), VolumeError> {
    let err = |e: std::io::Error| retryable(format!("cannot write {}: {e}", path.display()));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    std::fs::write(&tmp, data).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode((mode & 0o777) as u32))
        .map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| retryable(format!("cannot create {}: {e}", dir.display())))?;
    let mode = default_mode.unwrap_or(0o644);
    match items {
        Some(items) if !items.is_empty() => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => write_file(
                        &relative_file(dir, &item.path)?,
                        value,
                        item.mode.unwrap_or(mode),
                    )?,
                    None if optional => {}
                    None => return Err(retryable(format!("key {:?} not found", item.key))),
                }
            }
        }
        _ => {
            for (key, value) in data {
                write_file(&relative_file(dir, key)?, value, mode)?;
            }
        }
    }
    Ok(())
}

/// The mounts of one container: each `volumeMount` resolved to its host path (with `subPath`,
/// or `subPathExpr` expanded with the container's `env`, created inside the volume when
/// missing). Without `env` (a validation pass) `subPathExpr` mounts are checked, not made.
/// Mounts of the volumes in `read_only` are read-only whatever the `volumeMount` says.
pub fn mounts_for(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
    read_only: &HashSet<String>,
    env: Option<&[(String, String)]>,
) -> Result<Vec<MountSpec>, VolumeError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let source = volumes.get(&m.name).ok_or_else(|| {
            permanent(format!(
                "container {:?} mounts volume {:?}, which the pod does not define",
                container.name, m.name
            ))
        })?;
        let expr = m.sub_path_expr.as_deref().filter(|e| !e.is_empty());
        if expr.is_some() && m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(permanent(format!(
                "volumeMount {:?} of container {:?} sets both subPath and subPathExpr",
                m.name, container.name
            )));
        }
        let sub = match (expr, env) {
            (Some(e), Some(env)) => Some(crate::pod::env::expand(e, |k| {
                env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
            })),
            (Some(e), None) => {
                relative_file(source, &e.replace(['$', '(', ')'], "_"))?;
                continue;
            }
            (None, _) => m.sub_path.clone(),
        };
        let source = match sub.as_deref() {
            None | Some("") => source.clone(),
            Some(sub) => {
                let path = relative_file(source, sub)?;
                if !path.exists() {
                    std::fs::create_dir_all(&path).map_err(|e| {
                        retryable(format!("cannot create subPath {}: {e}", path.display()))
                    })?;
                }
                path
            }
        };
        let target = PathBuf::from(&m.mount_path);
        if !target.is_absolute() || target.components().any(|c| c == Component::ParentDir) {
            return Err(permanent(format!(
                "mountPath {:?} of container {:?} must be absolute, without '..'",
                m.mount_path, container.name
            )));
        }
        out.push(MountSpec {
            source,
            target,
            read_only: m.read_only == Some(true) || read_only.contains(&m.name),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
        EmptyDirVolumeSource, HostPathVolumeSource, ObjectFieldSelector, PodSpec, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// Unmounts the tmpfs volumes a test made (as root) before its directory goes.
    pub(super) struct Unmount(pub(super) PathBuf);

    impl Drop for Unmount {
        fn drop(&mut self) {
            unmount_all(&self.0);
        }
    }

    #[test]
    fn volumes_belong_to_the_pods_user_and_fs_group() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "securityContext": {"runAsUser": 65534, "fsGroup": 2000},
                "containers": [{"name": "a"}, {"name": "b"}]
            }
        }))
        .unwrap();
        let o = VolumeOwner::of(&pod);
        assert_eq!(
            (o.uid, o.gid, o.fs_group, o.private_mode),
            (65534, 2000, Some(2000), 0o750)
        );
        // Two users and no common group: root owns it, and others may traverse.
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "securityContext": {"runAsUser": 1000, "runAsGroup": 1000}},
                {"name": "b", "securityContext": {"runAsUser": 1001, "runAsGroup": 1001}}
            ]}
        }))
        .unwrap();
        let o = VolumeOwner::of(&pod);
        assert_eq!((o.uid, o.gid, o.private_mode), (0, 0, 0o755));
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            node_ip: "127.0.0.1".into(),
            cpu_milli: 1000,
            memory_bytes: 1 << 30,
            pod_ip: None,
        }
    }

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some(
                    [
                        ("b".to_string(), "2".to_string()),
                        ("a".to_string(), "1".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                volumes: Some(volumes),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn maps_volumes_to_host_paths() {
        let tmp = tempfile::tempdir().unwrap();
        let _unmount = Unmount(tmp.path().to_path_buf());
        let layout = Layout::new(tmp.path().join("data"));
        let host = tmp.path().join("host/dir");
        let pod = pod_with(vec![
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: host.display().to_string(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "conf".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "settings".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "info".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![
                        DownwardAPIVolumeFile {
                            path: "labels".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: "metadata.labels".into(),
                            }),
                            ..Default::default()
                        },
                        DownwardAPIVolumeFile {
                            path: "sub/name".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: None,
                                field_path: "metadata.name".into(),
                            }),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "settings".into(),
            Some(ConfigMap {
                data: Some([("app.conf".to_string(), "x=1\n".to_string())].into()),
                ..Default::default()
            }),
        );
        let vols = prepare(&layout, &pod, "uid1", &sources, &facts()).unwrap();
        let scratch = &vols["scratch"];
        assert_eq!(scratch, &layout.volume("uid1", "empty-dir", "scratch"));
        assert_eq!(
            std::fs::metadata(scratch).unwrap().permissions().mode() & 0o777,
            0o777
        );
        assert_eq!(vols["host"], host);
        assert!(host.is_dir(), "DirectoryOrCreate creates the directory");
        assert_eq!(
            std::fs::read_to_string(vols["conf"].join("app.conf")).unwrap(),
            "x=1\n"
        );
        assert_eq!(
            std::fs::read_to_string(vols["info"].join("labels")).unwrap(),
            "a=\"1\"\nb=\"2\"\n"
        );
        assert_eq!(
            std::fs::read_to_string(vols["info"].join("sub/name")).unwrap(),
            "p"
        );

        let c = Container {
            name: "c".into(),
            volume_mounts: Some(vec![
                VolumeMount {
                    name: "scratch".into(),
                    mount_path: "/scratch".into(),
                    ..Default::default()
                },
                VolumeMount {
                    name: "host".into(),
                    mount_path: "/data/part".into(),
                    sub_path: Some("part".into()),
                    read_only: Some(true),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        };
        let mounts = mounts_for(&c, &vols, &HashSet::new(), None).unwrap();
        assert_eq!(mounts[0].source, *scratch);
        assert_eq!(mounts[1].source, host.join("part"));
        assert!(mounts[1].read_only && host.join("part").is_dir());

        let bad = Container {
            name: "c".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "nope".into(),
                mount_path: "/x".into(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(
            mounts_for(&bad, &vols, &HashSet::new(), None)
                .unwrap_err()
                .message
                .contains("does not define")
        );
        let escape = Container {
            name: "c".into(),
            volume_mounts: Some(vec![VolumeMount {
                name: "scratch".into(),
                mount_path: "/x".into(),
                sub_path: Some("../../etc".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert!(mounts_for(&escape, &vols, &HashSet::new(), None).is_err());
    }

    #[test]
    fn refuses_what_it_cannot_do() {
        let tmp = tempfile::tempdir().unwrap();
        let _unmount = Unmount(tmp.path().to_path_buf());
        let layout = Layout::new(tmp.path());
        let missing_dir = pod_with(vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: tmp.path().join("nope").display().to_string(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        }]);
        let err =
            prepare(&layout, &missing_dir, "u", &EnvSources::default(), &facts()).unwrap_err();
        assert!(
            err.retryable && err.message.contains("not an existing directory"),
            "{err}"
        );
        let cm_missing = pod_with(vec![Volume {
            name: "c".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: "absent".into(),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let err = prepare(&layout, &cm_missing, "u", &EnvSources::default(), &facts()).unwrap_err();
        assert!(
            err.retryable && err.message.contains("configmap \"absent\" not found"),
            "{err}"
        );
        let iscsi = pod_with(vec![Volume {
            name: "disk".into(),
            iscsi: Some(Default::default()),
            ..Default::default()
        }]);
        let err = prepare(&layout, &iscsi, "u", &EnvSources::default(), &facts()).unwrap_err();
        assert!(!err.retryable && err.message.contains("iscsi"), "{err}");
    }

    #[test]
    fn claims_mount_their_bound_volume_and_wait_until_bound() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(tmp.path());
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "c", "readOnly": true}},
            ]},
        }))
        .unwrap();
        assert_eq!(referenced_claims(&pod), vec!["c".to_string()]);
        assert!(read_only_volumes(&pod).contains("data"));
        let err = prepare(&layout, &pod, "u", &EnvSources::default(), &facts()).unwrap_err();
        assert!(
            err.retryable
                && err
                    .message
                    .contains("persistentvolumeclaim \"c\" not found"),
            "{err}"
        );
        let mut sources = EnvSources::default();
        let pending: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "spec": {}, "status": {"phase": "Pending"}
        }))
        .unwrap();
        sources.claims.insert(
            "c".into(),
            ClaimSource {
                claim: Some(pending),
                volume: None,
            },
        );
        let err = prepare(&layout, &pod, "u", &sources, &facts()).unwrap_err();
        assert!(err.retryable && err.message.contains("not bound"), "{err}");
        let dir = tmp.path().join("pvs/pvc-1");
        let bound: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "c"}, "spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}
        }))
        .unwrap();
        let volume: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv1"},
            "spec": {"hostPath": {"path": dir.display().to_string()}},
        }))
        .unwrap();
        sources.claims.insert(
            "c".into(),
            ClaimSource {
                claim: Some(bound),
                volume: Some(volume),
            },
        );
        let vols = prepare(&layout, &pod, "u", &sources, &facts()).unwrap();
        assert_eq!(vols["data"], dir);
        assert!(dir.is_dir());
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]
        }))
        .unwrap();
        let mounts = mounts_for(&c, &vols, &read_only_volumes(&pod), None).unwrap();
        assert!(mounts[0].read_only);
    }
}

#[cfg(test)]
mod projected_tests {
    use super::tests::Unmount;
    use super::*;

    #[test]
    fn projected_sources_share_one_directory_and_sub_path_expr_expands() {
        let tmp = tempfile::tempdir().unwrap();
        let _unmount = Unmount(tmp.path().to_path_buf());
        let layout = Layout::new(tmp.path());
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [], "volumes": [
                {"name": "all", "projected": {"defaultMode": 0o600, "sources": [
                    {"configMap": {"name": "cm", "items": [{"key": "k", "path": "conf/k"}]}},
                    {"secret": {"name": "s"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
            ]},
        }))
        .unwrap();
        assert_eq!(referenced(&pod), (vec!["cm".into()], vec!["s".into()]));
        let mut sources = EnvSources::default();
        sources.config_maps.insert(
            "cm".into(),
            Some(serde_json::from_value(serde_json::json!({"data": {"k": "v"}})).unwrap()),
        );
        sources.secrets.insert(
            "s".into(),
            Some(serde_json::from_value(serde_json::json!({"data": {"token": "dG9r"}})).unwrap()),
        );
        let node = NodeFacts {
            node_ip: "127.0.0.1".into(),
            cpu_milli: 1000,
            memory_bytes: 1 << 30,
            pod_ip: None,
        };
        let vols = prepare(&layout, &pod, "u", &sources, &node).unwrap();
        let dir = &vols["all"];
        assert_eq!(std::fs::read_to_string(dir.join("conf/k")).unwrap(), "v");
        assert_eq!(std::fs::read_to_string(dir.join("token")).unwrap(), "tok");
        assert_eq!(std::fs::read_to_string(dir.join("ns")).unwrap(), "ns");
        let mode = std::fs::metadata(dir.join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "volumeMounts": [{"name": "scratch", "mountPath": "/w", "subPathExpr": "$(POD)/data", "readOnly": true}],
        }))
        .unwrap();
        assert!(
            mounts_for(&c, &vols, &HashSet::new(), None)
                .unwrap()
                .is_empty()
        );
        let env = vec![("POD".to_string(), "p".to_string())];
        let m = mounts_for(&c, &vols, &HashSet::new(), Some(&env)).unwrap();
        assert_eq!(m[0].source, vols["scratch"].join("p/data"));
        assert!(m[0].read_only && m[0].source.is_dir());
    }
}

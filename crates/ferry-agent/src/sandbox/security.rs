//! A pod's `securityContext`, enforced: the pod-level and container-level fields resolved as
//! Kubernetes does (the container's overrides the pod's), checked against what the node can
//! enforce, and applied by the shim to the container process just before it is executed.
//!
//! Nothing is silently ignored: a field the host runtime cannot enforce refuses the container
//! with a sentence (the kubelet's `CreateContainerConfigError`), and the worker reports it in the
//! container's waiting state and in an Event.
//!
//! | field                                   | host runtime                                    |
//! |-----------------------------------------|-------------------------------------------------|
//! | `runAsUser`, `runAsGroup`               | `setgid`/`setuid` before exec                   |
//! | `supplementalGroups`, `fsGroup`         | `setgroups` (fsGroup also owns the volumes)     |
//! | `runAsNonRoot`                          | refused when the process would run as uid 0     |
//! | `capabilities`, `privileged`            | bounding, permitted, effective, inheritable and ambient sets (containerd's defaults) |
//! | `allowPrivilegeEscalation: false`       | `PR_SET_NO_NEW_PRIVS`                           |
//! | `readOnlyRootFilesystem`                | the node's mounts read-only in the container's mount namespace, volumes as mounted |
//! | `procMount: Default`                    | accepted (the host's `/proc`); `Unmasked` refused |
//! | `seccompProfile`                        | `Unconfined` accepted; `RuntimeDefault`/`Localhost` refused (containerd applies them) |
//! | `seLinuxOptions`, `appArmorProfile`, `windowsOptions`, `sysctls` | refused (containerd maps SELinux, AppArmor and sysctls) |
//!
//! Capabilities follow containerd: the default set is [`DEFAULT_CAPABILITIES`]; `add: [ALL]`
//! gives every capability, `drop: [ALL]` none, then the named ones are added and dropped. A
//! process running as root gets the set as its bounding, permitted and effective sets; one
//! running as another user gets it as its bounding set only (its permitted and effective sets
//! are empty after exec, as under runc without ambient capabilities). Inheritable and ambient
//! sets are always empty.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;

use caps::{CapSet, Capability, CapsHashSet};
use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext};
use serde::{Deserialize, Serialize};

/// The capabilities a container gets unless it adds or drops some (containerd's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why a container's security context cannot be honoured (its `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SecurityError(pub String);

/// A container's security settings, resolved from the pod's and the container's
/// `securityContext` (written into the shim's spec).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSecurity {
    /// `runAsUser` (container over pod).
    #[serde(default)]
    pub run_as_user: Option<u32>,
    /// `runAsGroup` (container over pod).
    #[serde(default)]
    pub run_as_group: Option<u32>,
    /// `runAsNonRoot` (container over pod).
    #[serde(default)]
    pub run_as_non_root: bool,
    /// The pod's `supplementalGroups`, then its `fsGroup`, without repeats.
    #[serde(default)]
    pub supplemental_groups: Vec<u32>,
    /// The pod's `fsGroup`.
    #[serde(default)]
    pub fs_group: Option<u32>,
    /// `privileged: true`: every capability, nothing dropped.
    #[serde(default)]
    pub privileged: bool,
    /// The capability set (`CAP_*` names, sorted); ignored when privileged; `None` (a spec
    /// written before capabilities were resolved): [`DEFAULT_CAPABILITIES`].
    #[serde(default)]
    pub capabilities: Option<Vec<String>>,
    /// `capabilities.add` as written (upper case, without `CAP_`), for the CRI.
    #[serde(default)]
    pub add_capabilities: Vec<String>,
    /// `capabilities.drop` as written (upper case, without `CAP_`), for the CRI.
    #[serde(default)]
    pub drop_capabilities: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    #[serde(default)]
    pub no_new_privs: bool,
    /// `readOnlyRootFilesystem: true`.
    #[serde(default)]
    pub read_only_root: bool,
    /// `seccompProfile` as `RuntimeDefault`, `Unconfined` or `Localhost/<path>` (container over
    /// pod); `None` when unset.
    #[serde(default)]
    pub seccomp: Option<String>,
    /// `appArmorProfile` as `RuntimeDefault`, `Unconfined` or `Localhost/<name>`.
    #[serde(default)]
    pub apparmor: Option<String>,
    /// `seLinuxOptions` (user, role, type, level), when set.
    #[serde(default)]
    pub selinux: Option<[String; 4]>,
    /// `windowsOptions` is set.
    #[serde(default)]
    pub windows_options: bool,
    /// `procMount` (`Default` or `Unmasked`), when set.
    #[serde(default)]
    pub proc_mount: Option<String>,
    /// The pod's `sysctls` (`name`, `value`).
    #[serde(default)]
    pub sysctls: Vec<(String, String)>,
}

/// `namespace/name(uid)`-style identification of a pod in messages, as the kubelet's
/// `format.Pod` (`name_namespace(uid)`).
pub fn format_pod(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

fn id(value: Option<i64>, field: &str) -> Result<Option<u32>, SecurityError> {
    value
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                SecurityError(format!("{field} {v} is out of range (0 to 4294967295)"))
            })
        })
        .transpose()
}

fn profile(kind: &str, localhost: Option<&str>) -> String {
    match (kind, localhost) {
        ("Localhost", Some(p)) => format!("Localhost/{p}"),
        (k, _) => k.to_string(),
    }
}

/// Resolves the security settings of container `c` of `pod` (the container's fields over the
/// pod's, as Kubernetes), computing its capability set. Fails on values no runtime can use
/// (an unknown capability, an id out of range, contradictory fields).
pub fn resolve(pod: &Pod, c: &Container) -> Result<ContainerSecurity, SecurityError> {
    let default_psc = PodSecurityContext::default();
    let default_sc = SecurityContext::default();
    let psc = pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .unwrap_or(&default_psc);
    let sc = c.security_context.as_ref().unwrap_or(&default_sc);
    let run_as_user = id(sc.run_as_user.or(psc.run_as_user), "runAsUser")?;
    let run_as_group = id(sc.run_as_group.or(psc.run_as_group), "runAsGroup")?;
    let fs_group = id(psc.fs_group, "fsGroup")?;
    let mut supplemental_groups = Vec::new();
    for g in psc.supplemental_groups.iter().flatten() {
        if let Some(g) = id(Some(*g), "supplementalGroups")?
            && !supplemental_groups.contains(&g)
        {
            supplemental_groups.push(g);
        }
    }
    if let Some(g) = fs_group
        && !supplemental_groups.contains(&g)
    {
        supplemental_groups.push(g);
    }
    let privileged = sc.privileged.unwrap_or(false);
    let no_new_privs = sc.allow_privilege_escalation == Some(false);
    let (add, drop) = match &sc.capabilities {
        Some(caps) => (
            caps.add.clone().unwrap_or_default(),
            caps.drop.clone().unwrap_or_default(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let capabilities = capability_set(&add, &drop)?;
    if no_new_privs && privileged {
        return Err(SecurityError(
            "cannot set `allowPrivilegeEscalation` to false and `privileged` to true".into(),
        ));
    }
    if no_new_privs && capabilities.contains(&Capability::CAP_SYS_ADMIN) {
        return Err(SecurityError(
            "cannot set `allowPrivilegeEscalation` to false and `capabilities.Add` CAP_SYS_ADMIN"
                .into(),
        ));
    }
    let seccomp = sc
        .seccomp_profile
        .as_ref()
        .or(psc.seccomp_profile.as_ref())
        .map(|p| profile(&p.type_, p.localhost_profile.as_deref()));
    let apparmor = sc
        .app_armor_profile
        .as_ref()
        .or(psc.app_armor_profile.as_ref())
        .map(|p| profile(&p.type_, p.localhost_profile.as_deref()));
    let selinux = sc
        .se_linux_options
        .as_ref()
        .or(psc.se_linux_options.as_ref())
        .map(|o| {
            [
                o.user.clone().unwrap_or_default(),
                o.role.clone().unwrap_or_default(),
                o.type_.clone().unwrap_or_default(),
                o.level.clone().unwrap_or_default(),
            ]
        })
        .filter(|o| o.iter().any(|s| !s.is_empty()));
    let mut names: Vec<String> = capabilities.iter().map(|c| c.to_string()).collect();
    names.sort();
    let bare = |v: &[String]| {
        v.iter()
            .map(|s| {
                let up = s.to_ascii_uppercase();
                up.strip_prefix("CAP_").map(str::to_string).unwrap_or(up)
            })
            .collect()
    };
    Ok(ContainerSecurity {
        run_as_user,
        run_as_group,
        run_as_non_root: sc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false),
        supplemental_groups,
        fs_group,
        privileged,
        capabilities: Some(names),
        add_capabilities: bare(&add),
        drop_capabilities: bare(&drop),
        no_new_privs,
        read_only_root: sc.read_only_root_filesystem.unwrap_or(false),
        seccomp,
        apparmor,
        selinux,
        windows_options: sc.windows_options.is_some() || psc.windows_options.is_some(),
        proc_mount: sc.proc_mount.clone(),
        sysctls: psc
            .sysctls
            .iter()
            .flatten()
            .map(|s| (s.name.clone(), s.value.clone()))
            .collect(),
    })
}

/// Parses a capability name as Kubernetes writes it (`NET_ADMIN`, or `CAP_NET_ADMIN`, any case).
pub fn parse_capability(name: &str) -> Result<Capability, SecurityError> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    full.parse()
        .map_err(|_| SecurityError(format!("unknown capability {name:?}")))
}

/// The capability set of a container with `capabilities.add` = `add` and `drop` = `drop`, as
/// containerd computes it: the default set; `add: [ALL]` → every capability; `drop: [ALL]` →
/// none; then the named capabilities added, then the named ones dropped.
pub fn capability_set(add: &[String], drop: &[String]) -> Result<CapsHashSet, SecurityError> {
    let is_all = |s: &String| s.trim().eq_ignore_ascii_case("ALL");
    let mut set: CapsHashSet = DEFAULT_CAPABILITIES
        .iter()
        .map(|n| n.parse().expect("the default capabilities are known"))
        .collect();
    if add.iter().any(is_all) {
        set = caps::all();
    }
    if drop.iter().any(is_all) {
        set.clear();
    }
    for name in add.iter().filter(|s| !is_all(s)) {
        set.insert(parse_capability(name)?);
    }
    for name in drop.iter().filter(|s| !is_all(s)) {
        set.remove(&parse_capability(name)?);
    }
    Ok(set)
}

/// What the node can enforce for host-runtime containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAbilities {
    /// The agent's effective user id (the shim's, and a container's without `runAsUser`).
    pub euid: u32,
    /// The agent's effective group id.
    pub egid: u32,
    /// The shim can make a private mount namespace (root, namespace mount mode).
    pub mount_namespace: bool,
}

impl HostAbilities {
    /// The abilities of this process with mount mode `mode`.
    pub fn current(mode: crate::runtime::MountMode) -> Self {
        let euid = nix::unistd::geteuid().as_raw();
        HostAbilities {
            euid,
            egid: nix::unistd::getegid().as_raw(),
            mount_namespace: euid == 0 && mode != crate::runtime::MountMode::Symlink,
        }
    }

    fn root(&self) -> bool {
        self.euid == 0
    }
}

/// The kubelet's runAsNonRoot check: `uid` is the user the process will run as (`None` when
/// unknown, e.g. an image's non-numeric user `username`).
pub fn verify_run_as_non_root(
    sec: &ContainerSecurity,
    uid: Option<u32>,
    username: Option<&str>,
    pod: &Pod,
    container: &str,
) -> Result<(), SecurityError> {
    if !sec.run_as_non_root {
        return Ok(());
    }
    let who = format!("(pod: {:?}, container: {container})", format_pod(pod));
    if sec.run_as_user == Some(0) {
        return Err(SecurityError(format!(
            "container's runAsUser breaks non-root policy {who}"
        )));
    }
    if sec.run_as_user.is_some() {
        return Ok(());
    }
    match (uid, username) {
        (Some(0), _) => Err(SecurityError(format!(
            "container has runAsNonRoot and image will run as root {who}"
        ))),
        (Some(_), _) => Ok(()),
        (None, Some(name)) => Err(SecurityError(format!(
            "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {who}"
        ))),
        (None, None) => Ok(()),
    }
}

/// Checks that the host runtime can enforce every field of `sec`; a sentence for the first one
/// it cannot.
pub fn check_host(
    sec: &ContainerSecurity,
    host: HostAbilities,
    pod: &Pod,
    container: &str,
) -> Result<(), SecurityError> {
    let refuse = |what: &str| {
        Err(SecurityError(format!(
            "{what} cannot be enforced by Ferry's host runtime; remove it or run the pod with containerd (a RuntimeClass with a containerd handler)"
        )))
    };
    verify_run_as_non_root(
        sec,
        Some(sec.run_as_user.unwrap_or(host.euid)),
        None,
        pod,
        container,
    )?;
    if let Some(s) = &sec.seccomp
        && s != "Unconfined"
    {
        return refuse(&format!(
            "seccompProfile {s} (the host runtime applies no seccomp filter)"
        ));
    }
    if let Some(a) = &sec.apparmor
        && a != "Unconfined"
    {
        return refuse(&format!("appArmorProfile {a}"));
    }
    if sec.selinux.is_some() {
        return refuse("seLinuxOptions");
    }
    if sec.windows_options {
        return Err(SecurityError(
            "windowsOptions cannot be used on a Linux node".into(),
        ));
    }
    if let Some(p) = sec.proc_mount.as_deref().filter(|p| *p != "Default") {
        return refuse(&format!("procMount {p}"));
    }
    if !sec.sysctls.is_empty() {
        return refuse("sysctls");
    }
    if !host.root() {
        let not_root = |what: String| {
            Err(SecurityError(format!(
                "{what} needs a node agent running as root (this one runs as uid {})",
                host.euid
            )))
        };
        if let Some(u) = sec.run_as_user.filter(|u| *u != host.euid) {
            return not_root(format!("runAsUser {u}"));
        }
        if let Some(g) = sec.run_as_group.filter(|g| *g != host.egid) {
            return not_root(format!("runAsGroup {g}"));
        }
        if !sec.supplemental_groups.is_empty() {
            return not_root("supplementalGroups and fsGroup".into());
        }
        if sec.privileged {
            return not_root("privileged".into());
        }
    }
    if sec.read_only_root && !host.mount_namespace {
        return Err(SecurityError(
            "readOnlyRootFilesystem needs a private mount namespace (a node agent running as root, mount mode other than symlink)".into(),
        ));
    }
    if sec.privileged && sec.read_only_root {
        // Allowed by Kubernetes; nothing conflicting to enforce.
    }
    Ok(())
}

/// Mount flags kept when a mount is remounted read-only.
fn mount_flags(options: &str) -> nix::mount::MsFlags {
    use nix::mount::MsFlags;
    let mut f = MsFlags::empty();
    for o in options.split(',') {
        f |= match o {
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    f
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of `mountinfo` to remount read-only for `readOnlyRootFilesystem`: every
/// read-write mount but the volumes (`keep`, and what is below them) and the kernel's
/// `/proc`, `/sys` and `/dev` trees, `/` first. Each with the flags to keep.
pub fn read_only_targets(
    mountinfo: &str,
    keep: &[std::path::PathBuf],
) -> Vec<(String, nix::mount::MsFlags)> {
    use std::path::Path;
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 {
            continue;
        }
        let point = unescape(f[4]);
        let options = f[5];
        let p = Path::new(&point);
        let kernel = ["/proc", "/sys", "/dev"].iter().any(|k| p.starts_with(k));
        let volume = keep.iter().any(|k| p.starts_with(k));
        if kernel || volume || options.split(',').any(|o| o == "ro") || !seen.insert(point.clone())
        {
            continue;
        }
        out.push((point, mount_flags(options)));
    }
    out.sort_by_key(|(p, _)| (p != "/", p.clone()));
    out
}

/// What the shim applies to the container process between fork and exec, computed before the
/// fork (nothing in [`Prepared::apply`] allocates).
#[derive(Debug, Default)]
pub struct Prepared {
    root: bool,
    groups: Vec<libc::gid_t>,
    gid: Option<libc::gid_t>,
    uid: Option<libc::uid_t>,
    bounding_drop: Vec<Capability>,
    keep: Option<CapsHashSet>,
    empty: CapsHashSet,
    no_new_privs: bool,
    read_only: Vec<(CString, nix::mount::MsFlags)>,
}

impl Prepared {
    /// Computes what to apply for `sec` in a shim whose volumes are `volume_targets` (read from
    /// this process's capability sets and mount table).
    pub fn new(sec: &ContainerSecurity, volume_targets: &[std::path::PathBuf]) -> io::Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let mut p = Prepared {
            root,
            groups: sec.supplemental_groups.clone(),
            gid: sec.run_as_group,
            uid: sec.run_as_user,
            no_new_privs: sec.no_new_privs,
            ..Default::default()
        };
        if root && p.uid.is_some() && p.gid.is_none() {
            // As runc without a group in the image: the root group.
            p.gid = Some(0);
        }
        if root && !sec.privileged {
            let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
            let wanted: CapsHashSet = sec
                .capabilities
                .as_ref()
                .unwrap_or(&default)
                .iter()
                .filter_map(|n| n.parse().ok())
                .collect();
            let bounding =
                caps::read(None, CapSet::Bounding).map_err(|e| io::Error::other(e.to_string()))?;
            p.bounding_drop = bounding.difference(&wanted).copied().collect();
            let permitted =
                caps::read(None, CapSet::Permitted).map_err(|e| io::Error::other(e.to_string()))?;
            p.keep = Some(wanted.intersection(&permitted).copied().collect());
        }
        if sec.read_only_root {
            let info = std::fs::read_to_string("/proc/self/mountinfo")?;
            for (point, flags) in read_only_targets(&info, volume_targets) {
                p.read_only
                    .push((CString::new(point).map_err(io::Error::other)?, flags));
            }
        }
        Ok(p)
    }

    /// Applies the settings to the calling process (the forked child, just before exec): the
    /// read-only root in a mount namespace of its own, `setgroups`, `setgid`, the bounding set,
    /// `setuid`, the permitted/effective/inheritable sets, the ambient set, `no_new_privs`.
    pub fn apply(&self) -> io::Result<()> {
        let last = || io::Error::last_os_error();
        let cap_err = |_e: caps::errors::CapsError| last();
        // SAFETY: plain system calls on memory owned by `self`.
        unsafe {
            if !self.read_only.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(last());
                }
                // Nothing done here propagates back to the shim's or the host's mounts.
                let slave = (nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE).bits();
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    slave,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(last());
                }
                for (i, (point, flags)) in self.read_only.iter().enumerate() {
                    let flags = (nix::mount::MsFlags::MS_BIND
                        | nix::mount::MsFlags::MS_REMOUNT
                        | nix::mount::MsFlags::MS_RDONLY
                        | *flags)
                        .bits();
                    let rc = libc::mount(
                        std::ptr::null(),
                        point.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    );
                    // `/` (first) must become read-only; other host mounts are best effort.
                    if rc != 0 && i == 0 {
                        return Err(last());
                    }
                }
            }
            if self.root && libc::setgroups(self.groups.len(), self.groups.as_ptr()) != 0 {
                return Err(last());
            }
            if let Some(gid) = self.gid
                && libc::setgid(gid) != 0
            {
                return Err(last());
            }
            if self.keep.is_some() {
                for cap in &self.bounding_drop {
                    caps::drop(None, CapSet::Bounding, *cap).map_err(cap_err)?;
                }
            }
            if let Some(uid) = self.uid
                && libc::setuid(uid) != 0
            {
                return Err(last());
            }
            if let Some(keep) = &self.keep {
                if self.uid.unwrap_or(0) == 0 {
                    caps::set(None, CapSet::Effective, keep).map_err(cap_err)?;
                    caps::set(None, CapSet::Permitted, keep).map_err(cap_err)?;
                }
                caps::set(None, CapSet::Inheritable, &self.empty).map_err(cap_err)?;
                caps::clear(None, CapSet::Ambient).map_err(cap_err)?;
            }
            if self.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(last());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Capabilities, PodSpec, SeccompProfile};

    fn names(set: &CapsHashSet) -> Vec<String> {
        let mut v: Vec<String> = set.iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn default_capabilities_are_containerds() {
        let set = capability_set(&[], &[]).unwrap();
        assert_eq!(set.len(), 14);
        assert!(set.contains(&Capability::CAP_NET_BIND_SERVICE));
        assert!(!set.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!set.contains(&Capability::CAP_NET_ADMIN));
    }

    #[test]
    fn add_and_drop_follow_containerd() {
        assert!(capability_set(&[], &s(&["ALL"])).unwrap().is_empty());
        assert_eq!(
            names(&capability_set(&s(&["NET_BIND_SERVICE"]), &s(&["ALL"])).unwrap()),
            vec!["CAP_NET_BIND_SERVICE"]
        );
        let set =
            capability_set(&s(&["net_admin", "CAP_SYS_TIME"]), &s(&["KILL", "chown"])).unwrap();
        assert!(set.contains(&Capability::CAP_NET_ADMIN));
        assert!(set.contains(&Capability::CAP_SYS_TIME));
        assert!(!set.contains(&Capability::CAP_KILL));
        assert!(!set.contains(&Capability::CAP_CHOWN));
        assert_eq!(set.len(), 14);
        assert_eq!(capability_set(&s(&["ALL"]), &[]).unwrap(), caps::all());
        // Drop wins over add for a named capability, as in containerd.
        assert!(
            !capability_set(&s(&["SYS_ADMIN"]), &s(&["SYS_ADMIN"]))
                .unwrap()
                .contains(&Capability::CAP_SYS_ADMIN)
        );
        let err = capability_set(&s(&["NOT_A_CAP"]), &[]).unwrap_err();
        assert_eq!(err.0, "unknown capability \"NOT_A_CAP\"");
    }

    fn pod(psc: PodSecurityContext, sc: Option<SecurityContext>) -> (Pod, Container) {
        let c = Container {
            name: "c".into(),
            security_context: sc,
            ..Default::default()
        };
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                security_context: Some(psc),
                containers: vec![c.clone()],
                ..Default::default()
            }),
            ..Default::default()
        };
        (pod, c)
    }

    #[test]
    fn container_fields_override_the_pods() {
        let (p, c) = pod(
            PodSecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                run_as_non_root: Some(true),
                fs_group: Some(2000),
                supplemental_groups: Some(vec![3000, 2000]),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            },
            Some(SecurityContext {
                run_as_user: Some(65534),
                run_as_non_root: Some(false),
                seccomp_profile: Some(SeccompProfile {
                    type_: "Unconfined".into(),
                    localhost_profile: None,
                }),
                allow_privilege_escalation: Some(false),
                read_only_root_filesystem: Some(true),
                capabilities: Some(Capabilities {
                    drop: Some(s(&["ALL"])),
                    add: None,
                }),
                ..Default::default()
            }),
        );
        let sec = resolve(&p, &c).unwrap();
        assert_eq!(sec.run_as_user, Some(65534));
        assert_eq!(sec.run_as_group, Some(1000));
        assert!(!sec.run_as_non_root);
        assert_eq!(sec.supplemental_groups, vec![3000, 2000]);
        assert_eq!(sec.fs_group, Some(2000));
        assert_eq!(sec.seccomp.as_deref(), Some("Unconfined"));
        assert!(sec.no_new_privs && sec.read_only_root);
        assert_eq!(sec.capabilities, Some(vec![]));
        assert_eq!(sec.drop_capabilities, vec!["ALL"]);
        let host = HostAbilities {
            euid: 0,
            egid: 0,
            mount_namespace: true,
        };
        assert_eq!(check_host(&sec, host, &p, "c"), Ok(()));
    }

    #[test]
    fn run_as_non_root_is_the_kubelets_check() {
        let host = HostAbilities {
            euid: 0,
            egid: 0,
            mount_namespace: true,
        };
        let (p, c) = pod(
            PodSecurityContext {
                run_as_non_root: Some(true),
                ..Default::default()
            },
            None,
        );
        let sec = resolve(&p, &c).unwrap();
        assert_eq!(
            check_host(&sec, host, &p, "c").unwrap_err().0,
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u-1)\", container: c)"
        );
        // An agent that is not root runs the process as itself: not root, allowed.
        let user = HostAbilities {
            euid: 1000,
            egid: 1000,
            mount_namespace: false,
        };
        assert_eq!(check_host(&sec, user, &p, "c"), Ok(()));
        let (p, c) = pod(
            PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(0),
                ..Default::default()
            },
            None,
        );
        let sec = resolve(&p, &c).unwrap();
        assert!(
            check_host(&sec, host, &p, "c")
                .unwrap_err()
                .0
                .starts_with("container's runAsUser breaks non-root policy")
        );
        let (p, c) = pod(
            PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(7),
                ..Default::default()
            },
            None,
        );
        assert_eq!(check_host(&resolve(&p, &c).unwrap(), host, &p, "c"), Ok(()));
    }

    #[test]
    fn what_the_host_cannot_enforce_is_refused() {
        let host = HostAbilities {
            euid: 0,
            egid: 0,
            mount_namespace: true,
        };
        let (p, c) = pod(
            PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    localhost_profile: None,
                }),
                ..Default::default()
            },
            None,
        );
        let err = check_host(&resolve(&p, &c).unwrap(), host, &p, "c").unwrap_err();
        assert!(err.0.contains("seccompProfile RuntimeDefault"), "{err}");
        let (p, c) = pod(
            PodSecurityContext::default(),
            Some(SecurityContext {
                proc_mount: Some("Unmasked".into()),
                ..Default::default()
            }),
        );
        assert!(check_host(&resolve(&p, &c).unwrap(), host, &p, "c").is_err());
        let (p, c) = pod(
            PodSecurityContext::default(),
            Some(SecurityContext {
                read_only_root_filesystem: Some(true),
                ..Default::default()
            }),
        );
        let no_ns = HostAbilities {
            mount_namespace: false,
            ..host
        };
        assert!(check_host(&resolve(&p, &c).unwrap(), no_ns, &p, "c").is_err());
        let (p, c) = pod(
            PodSecurityContext::default(),
            Some(SecurityContext {
                privileged: Some(true),
                allow_privilege_escalation: Some(false),
                ..Default::default()
            }),
        );
        assert!(resolve(&p, &c).is_err());
        let (p, c) = pod(
            PodSecurityContext {
                run_as_user: Some(5),
                ..Default::default()
            },
            None,
        );
        let user = HostAbilities {
            euid: 1000,
            egid: 1000,
            mount_namespace: false,
        };
        let err = check_host(&resolve(&p, &c).unwrap(), user, &p, "c").unwrap_err();
        assert!(
            err.0.contains("needs a node agent running as root"),
            "{err}"
        );
    }

    #[test]
    fn read_only_targets_skip_volumes_and_kernel_trees() {
        let info = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:5 / /proc rw,nosuid,nodev,noexec shared:2 - proc proc rw
24 22 0:6 / /tmp rw,nosuid,nodev shared:3 - tmpfs tmpfs rw
25 22 0:7 / /boot ro,relatime shared:4 - ext4 /dev/sda2 ro
26 22 8:1 /var/lib/ferry/v /data rw,relatime shared:1 - ext4 /dev/sda1 rw
27 26 0:8 / /data/sub rw shared:5 - tmpfs tmpfs rw
28 22 0:9 / /mnt/with\\040space rw,noexec - tmpfs tmpfs rw
";
        let out = read_only_targets(info, &["/data".into()]);
        let points: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(points, vec!["/", "/mnt/with space", "/tmp"]);
        assert!(
            out[2]
                .1
                .contains(nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV)
        );
        assert!(out[1].1.contains(nix::mount::MsFlags::MS_NOEXEC));
    }
}

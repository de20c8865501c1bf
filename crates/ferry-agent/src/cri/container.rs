//! Containers of containerd pods: image pulls (`imagePullPolicy`, `imagePullSecrets`),
//! creation and start in the pod's sandbox, and the exit records of containers containerd
//! reports finished.

use std::path::Path;

use base64::Engine as _;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Secret};

use super::{ATTEMPT_FILE, Cri, CriAttempt, CriError, load, proto, save};
use crate::procfs::ProcId;
use crate::runtime::{AttemptState, ExitRecord, MountOutcome, ShimSpec, StateRecord, files};

/// Why an image is not there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullError {
    /// `ErrImagePull` or `ErrImageNeverPull`.
    pub reason: &'static str,
    /// What went wrong.
    pub message: String,
}

/// The effective `imagePullPolicy`: as given, else `Always` for `:latest` or untagged images
/// and `IfNotPresent` otherwise (Kubernetes' defaulting).
pub fn pull_policy(c: &Container) -> String {
    if let Some(p) = c.image_pull_policy.as_deref().filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let image = c.image.as_deref().unwrap_or("");
    let name = image.split('@').next().unwrap_or(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    let tagged = last.contains(':');
    if image.contains('@') || (tagged && !last.ends_with(":latest")) {
        "IfNotPresent".into()
    } else {
        "Always".into()
    }
}

/// The registry host of an image reference (`docker.io` when it names none).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// The credentials for `image` among the pod's `kubernetes.io/dockerconfigjson` (and
/// `dockercfg`) pull secrets, best match first.
pub fn auths_for(image: &str, secrets: &[Secret]) -> Vec<proto::AuthConfig> {
    let registry = registry_of(image);
    let mut found = Vec::new();
    for secret in secrets {
        let data = secret.data.clone().unwrap_or_default();
        let (doc, nested) = match (data.get(".dockerconfigjson"), data.get(".dockercfg")) {
            (Some(v), _) => (v, true),
            (None, Some(v)) => (v, false),
            _ => continue,
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&doc.0) else {
            continue;
        };
        let auths = if nested { &json["auths"] } else { &json };
        let Some(map) = auths.as_object() else {
            continue;
        };
        for (server, entry) in map {
            let host = server
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or("");
            let host = if host == "index.docker.io" {
                "docker.io"
            } else {
                host
            };
            if host != registry {
                continue;
            }
            let field = |k: &str| entry[k].as_str().unwrap_or("").to_string();
            let (mut username, mut password) = (field("username"), field("password"));
            let auth = field("auth");
            if username.is_empty()
                && let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&auth)
                && let Ok(text) = String::from_utf8(raw)
                && let Some((u, p)) = text.split_once(':')
            {
                username = u.to_string();
                password = p.to_string();
            }
            // No server address: the host already matched, and containerd 1.6 rejects one
            // that does not parse as a URL (`host:port`).
            found.push(proto::AuthConfig {
                username,
                password,
                ..Default::default()
            });
        }
    }
    found
}

/// The user an image runs as (`uid`, or a non-numeric `username`), for the kubelet's
/// runAsNonRoot check; `(None, None)` when the image names none (it runs as root).
pub async fn image_user(cri: &Cri, image: &str) -> Result<(Option<u32>, Option<String>), String> {
    let status = cri
        .images()
        .image_status(proto::ImageStatusRequest {
            image: Some(proto::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .map_err(|s| format!("cannot ask containerd for image {image:?}: {}", s.message()))?
        .into_inner();
    let Some(img) = status.image else {
        return Err(format!("image {image:?} is not present"));
    };
    if let Some(uid) = img.uid {
        return Ok((u32::try_from(uid.value).ok(), None));
    }
    if !img.username.is_empty() {
        return Ok((None, Some(img.username)));
    }
    Ok((Some(0), None))
}

/// Makes sure `image` is present as `policy` says, pulling it with the first of `auths` that
/// works (or none). Returns whether a pull happened.
pub async fn ensure_image(
    cri: &Cri,
    image: &str,
    policy: &str,
    auths: &[proto::AuthConfig],
    sandbox: &proto::PodSandboxConfig,
) -> Result<bool, PullError> {
    let spec = proto::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    };
    let pull_error = |message: String| PullError {
        reason: "ErrImagePull",
        message,
    };
    let present = cri
        .images()
        .image_status(proto::ImageStatusRequest {
            image: Some(spec.clone()),
            verbose: false,
        })
        .await
        .map_err(|s| {
            pull_error(format!(
                "cannot ask containerd for image {image:?}: {}",
                s.message()
            ))
        })?
        .into_inner()
        .image
        .is_some();
    match policy {
        "Never" if present => return Ok(false),
        "Never" => {
            return Err(PullError {
                reason: "ErrImageNeverPull",
                message: format!(
                    "Container image {image:?} is not present with pull policy of Never"
                ),
            });
        }
        "IfNotPresent" if present => return Ok(false),
        _ => {}
    }
    let mut last = String::new();
    let tries: Vec<Option<proto::AuthConfig>> = if auths.is_empty() {
        vec![None]
    } else {
        auths.iter().cloned().map(Some).collect()
    };
    for auth in tries {
        match cri
            .images()
            .pull_image(proto::PullImageRequest {
                image: Some(spec.clone()),
                auth,
                sandbox_config: Some(sandbox.clone()),
            })
            .await
        {
            Ok(_) => return Ok(true),
            Err(s) => last = s.message().to_string(),
        }
    }
    Err(pull_error(format!(
        "failed to pull and unpack image {image:?}: {last}"
    )))
}

/// The CPU and memory settings of a container from its resources (cgroupfs: CFS quota from
/// the CPU limit, shares from the request, the memory limit).
pub fn resources(c: &Container) -> proto::LinuxContainerResources {
    let res = c.resources.as_ref();
    let get = |m: Option<
        &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        >,
    >,
               k: &str| m.and_then(|m| m.get(k)).map(|q| q.0.clone());
    let limits = res.and_then(|r| r.limits.as_ref());
    let requests = res.and_then(|r| r.requests.as_ref());
    let mut out = proto::LinuxContainerResources::default();
    let cpu_limit = get(limits, "cpu").and_then(|q| ferry_api::quantity::parse_milli(&q).ok());
    let cpu_request = get(requests, "cpu")
        .and_then(|q| ferry_api::quantity::parse_milli(&q).ok())
        .or(cpu_limit);
    if let Some(milli) = cpu_limit.filter(|m| *m > 0) {
        out.cpu_period = 100_000;
        out.cpu_quota = (milli.saturating_mul(100)).max(1_000);
    }
    out.cpu_shares = match cpu_request {
        Some(milli) => (milli.saturating_mul(1024) / 1000).max(2),
        None => 2,
    };
    if let Some(bytes) = get(limits, "memory")
        .and_then(|q| ferry_api::quantity::parse_units(&q).ok())
        .filter(|b| *b > 0)
    {
        out.memory_limit_in_bytes = bytes;
    }
    out
}

/// The CRI configuration of attempt `attempt` of container `c`, from the spec the worker
/// resolved for it (environment, volume mounts). `log_path` is relative to the sandbox's log
/// directory (the pod's directory).
pub fn config(
    c: &Container,
    attempt: u32,
    spec: &ShimSpec,
    log_path: &str,
    labels: std::collections::HashMap<String, String>,
    namespaces: proto::NamespaceOption,
) -> proto::ContainerConfig {
    let lookup = |name: &str| {
        spec.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let expand = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|s| crate::pod::env::expand(s, lookup))
            .collect()
    };
    let own: std::collections::HashSet<&str> =
        c.env.iter().flatten().map(|e| e.name.as_str()).collect();
    // The host runtime's PATH and HOME defaults would hide the image's.
    let envs = spec
        .env
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "PATH" | "HOME") || own.contains(k.as_str()))
        .map(|(k, v)| proto::KeyValue {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    let mounts = spec
        .mounts
        .iter()
        .map(|m| proto::Mount {
            container_path: m.target.display().to_string(),
            host_path: m.source.display().to_string(),
            readonly: m.read_only,
            ..Default::default()
        })
        .collect();
    let security_context = security_context(&spec.security, namespaces);
    proto::ContainerConfig {
        metadata: Some(proto::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(proto::ImageSpec {
            image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: expand(&c.command),
        args: expand(&c.args),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs,
        mounts,
        labels,
        log_path: log_path.to_string(),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(proto::LinuxContainerConfig {
            resources: Some(resources(c)),
            security_context: Some(security_context),
        }),
        ..Default::default()
    }
}

/// A CRI security profile (`RuntimeDefault`, `Unconfined`, `Localhost/<ref>`).
fn security_profile(p: &str) -> proto::SecurityProfile {
    use proto::security_profile::ProfileType;
    let (kind, localhost) = match p.split_once('/') {
        Some(("Localhost", r)) => (ProfileType::Localhost, r.to_string()),
        _ if p == "Unconfined" => (ProfileType::Unconfined, String::new()),
        _ => (ProfileType::RuntimeDefault, String::new()),
    };
    proto::SecurityProfile {
        profile_type: kind as i32,
        localhost_ref: localhost,
    }
}

/// The container's resolved `securityContext` as the CRI's `LinuxContainerSecurityContext`,
/// field by field as the kubelet fills it (capabilities as written, containerd resolves
/// `ALL` and the default set).
pub fn security_context(
    sec: &crate::sandbox::security::ContainerSecurity,
    namespaces: proto::NamespaceOption,
) -> proto::LinuxContainerSecurityContext {
    proto::LinuxContainerSecurityContext {
        namespace_options: Some(namespaces),
        run_as_user: sec
            .run_as_user
            .map(|v| proto::Int64Value { value: v.into() }),
        run_as_group: sec
            .run_as_group
            .map(|v| proto::Int64Value { value: v.into() }),
        supplemental_groups: sec
            .supplemental_groups
            .iter()
            .map(|g| i64::from(*g))
            .collect(),
        privileged: sec.privileged,
        capabilities: Some(proto::Capability {
            add_capabilities: sec.add_capabilities.clone(),
            drop_capabilities: sec.drop_capabilities.clone(),
            add_ambient_capabilities: Vec::new(),
        }),
        no_new_privs: sec.no_new_privs,
        readonly_rootfs: sec.read_only_root,
        seccomp: sec.seccomp.as_deref().map(security_profile),
        apparmor: sec.apparmor.as_deref().map(security_profile),
        selinux_options: sec.selinux.as_ref().map(|[user, role, type_, level]| {
            proto::SeLinuxOption {
                user: user.clone(),
                role: role.clone(),
                r#type: type_.clone(),
                level: level.clone(),
            }
        }),
        // The kubelet's default masked and read-only /proc paths, unless privileged or
        // `procMount: Unmasked`.
        masked_paths: if sec.privileged || sec.proc_mount.as_deref() == Some("Unmasked") {
            Vec::new()
        } else {
            DEFAULT_MASKED_PATHS.iter().map(|p| p.to_string()).collect()
        },
        readonly_paths: if sec.privileged || sec.proc_mount.as_deref() == Some("Unmasked") {
            Vec::new()
        } else {
            DEFAULT_READONLY_PATHS
                .iter()
                .map(|p| p.to_string())
                .collect()
        },
        ..Default::default()
    }
}

/// The kubelet's `defaultMaskedPaths`.
const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// The kubelet's `defaultReadonlyPaths`.
const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Creates and starts a container in sandbox `sandbox_id`, recording it in the attempt
/// directory `dir` (`cri.json`, then `state.json`, or `exit.json` when it cannot start).
pub async fn create_and_start(
    cri: &Cri,
    sandbox_id: &str,
    sandbox: &proto::PodSandboxConfig,
    config: proto::ContainerConfig,
    dir: &Path,
) -> Result<AttemptState, CriError> {
    let image = config
        .image
        .as_ref()
        .map(|i| i.image.clone())
        .unwrap_or_default();
    let created = cri
        .runtime()
        .create_container(proto::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        })
        .await;
    let id = match created {
        Ok(r) => r.into_inner().container_id,
        Err(s) => {
            let record = ExitRecord::start_error(format!(
                "failed to create containerd container: {}",
                s.message()
            ));
            save(&dir.join(files::EXIT), &record)?;
            return Ok(AttemptState::Exited(record));
        }
    };
    save(
        &dir.join(ATTEMPT_FILE),
        &CriAttempt {
            container_id: id.clone(),
            image,
            image_ref: String::new(),
        },
    )?;
    if let Err(s) = cri
        .runtime()
        .start_container(proto::StartContainerRequest {
            container_id: id.clone(),
        })
        .await
    {
        let record = ExitRecord::start_error(format!(
            "failed to start containerd container: {}",
            s.message()
        ));
        save(&dir.join(files::EXIT), &record)?;
        return Ok(AttemptState::Exited(record));
    }
    refresh(cri, dir).await?;
    super::inspect(dir).map_err(|error| CriError::Io {
        action: "read",
        path: dir.to_path_buf(),
        error,
    })
}

/// Brings the attempt in `dir` up to date with containerd when its files may be stale: a
/// container whose process is gone (or not yet recorded) is asked about, and its start or
/// exit recorded. Cheap when nothing changed (no call to containerd). `true`: containerd has
/// not caught up yet (the process is gone but its exit is not reported): look again soon,
/// for no other event will come.
pub async fn refresh(cri: &Cri, dir: &Path) -> Result<bool, CriError> {
    let Some(attempt) = load::<CriAttempt>(&dir.join(ATTEMPT_FILE))? else {
        return Ok(false);
    };
    if dir.join(files::EXIT).exists() {
        return Ok(false);
    }
    let state: Option<StateRecord> = load(&dir.join(files::STATE))?;
    if state.as_ref().is_some_and(|s| s.container.is_alive()) {
        return Ok(false);
    }
    let resp = cri
        .runtime()
        .container_status(proto::ContainerStatusRequest {
            container_id: attempt.container_id.clone(),
            verbose: true,
        })
        .await;
    let resp = match resp {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::NotFound => {
            let record = ExitRecord {
                exit_code: 128 + libc::SIGKILL,
                signal: None,
                reason: "Unknown".into(),
                message: Some("the container is gone from containerd".into()),
                started_at: state.map(|s| s.started_at),
                finished_at: Timestamp::now(),
            };
            return save(&dir.join(files::EXIT), &record).map(|()| false);
        }
        Err(s) => {
            return Err(CriError::Call {
                call: "ContainerStatus",
                status: Box::new(s),
            });
        }
    };
    let Some(status) = resp.status else {
        return Err(CriError::Invalid(format!(
            "no status for container {}",
            attempt.container_id
        )));
    };
    let ts = |ns: i64| {
        (ns > 0)
            .then(|| Timestamp::from_nanosecond(ns.into()).ok())
            .flatten()
    };
    match proto::ContainerState::try_from(status.state) {
        Ok(proto::ContainerState::ContainerRunning) if state.is_none() => {
            let pid = resp
                .info
                .get("info")
                .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
                .and_then(|v| v["pid"].as_i64())
                .and_then(|p| i32::try_from(p).ok())
                .ok_or_else(|| {
                    CriError::Invalid(format!(
                        "containerd did not say the pid of container {}",
                        attempt.container_id
                    ))
                })?;
            let Ok(proc_id) = ProcId::of(pid) else {
                // Exited meanwhile: the next refresh records it.
                return Ok(true);
            };
            let record = StateRecord {
                shim: proc_id,
                container: proc_id,
                started_at: ts(status.started_at).unwrap_or_else(Timestamp::now),
                mounts: MountOutcome {
                    mode: "containerd".into(),
                    ..Default::default()
                },
                cri_container_id: Some(attempt.container_id.clone()),
                // exec and cp run in the image's root filesystem.
                chroot: true,
            };
            save(&dir.join(files::STATE), &record)?;
            if !status.image_ref.is_empty() {
                save(
                    &dir.join(ATTEMPT_FILE),
                    &CriAttempt {
                        image_ref: status.image_ref,
                        ..attempt
                    },
                )?;
            }
            Ok(false)
        }
        Ok(proto::ContainerState::ContainerExited) => {
            let reason = match status.reason.as_str() {
                "" if status.exit_code == 0 => "Completed".to_string(),
                "" => "Error".to_string(),
                r => r.to_string(),
            };
            let record = ExitRecord {
                exit_code: status.exit_code,
                signal: None,
                reason,
                message: Some(status.message).filter(|m| !m.is_empty()),
                started_at: ts(status.started_at).or(state.map(|s| s.started_at)),
                finished_at: ts(status.finished_at).unwrap_or_else(Timestamp::now),
            };
            save(&dir.join(files::EXIT), &record).map(|()| false)
        }
        Ok(proto::ContainerState::ContainerCreated) => {
            // Created by an agent that stopped before starting it.
            cri.runtime()
                .start_container(proto::StartContainerRequest {
                    container_id: attempt.container_id.clone(),
                })
                .await
                .map_err(CriError::call("StartContainer"))?;
            Ok(true)
        }
        // Running and recorded (its process is just gone: containerd reports the exit
        // shortly), or unknown: look again soon.
        _ => Ok(true),
    }
}

/// The CRI container id of the attempt in `dir`, if it is a containerd container.
pub fn container_id(dir: &Path) -> Option<String> {
    load::<CriAttempt>(&dir.join(ATTEMPT_FILE))
        .ok()
        .flatten()
        .map(|a| a.container_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn pull_policy_defaults_like_kubernetes() {
        let c = |image: &str| Container {
            image: Some(image.into()),
            ..Default::default()
        };
        assert_eq!(pull_policy(&c("busybox")), "Always");
        assert_eq!(pull_policy(&c("busybox:latest")), "Always");
        assert_eq!(pull_policy(&c("127.0.0.1:5000/x/busybox")), "Always");
        assert_eq!(
            pull_policy(&c("127.0.0.1:5000/x/busybox:1")),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&c("busybox@sha256:abc")), "IfNotPresent");
        let mut never = c("busybox");
        never.image_pull_policy = Some("Never".into());
        assert_eq!(pull_policy(&never), "Never");
    }

    #[test]
    fn pull_secrets_give_the_registry_credentials() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        let doc = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p")},
            "other.example": {"username": "x", "password": "y"}
        }});
        let secret = Secret {
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    ByteString(serde_json::to_vec(&doc).unwrap()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let auths = auths_for("127.0.0.1:5000/ferry-test/busybox:1", &[secret]);
        assert_eq!(auths.len(), 1);
        assert_eq!(
            (auths[0].username.as_str(), auths[0].password.as_str()),
            ("u", "p")
        );
    }

    #[test]
    fn limits_become_cfs_quota_shares_and_memory() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("500m".into())),
                        ("memory".to_string(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resources(&c);
        assert_eq!(
            (r.cpu_period, r.cpu_quota, r.cpu_shares),
            (100_000, 50_000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
    }
}

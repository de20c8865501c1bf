//! The pod sandbox of a containerd pod: `RunPodSandbox` (containerd sets up its network
//! namespace through the same CNI configuration as host pods, its `/etc` files and its pause
//! container), recorded in the pod's `sandbox.json` with runtime `containerd`, the CRI sandbox
//! id, the network namespace and the pod IP. An agent that restarts adopts the recorded
//! sandbox, or finds it by the pod uid label; it never makes a second one for a ready pod.

use std::collections::HashMap;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;

use super::{
    CONTAINER_NAME_LABEL, Cri, CriError, POD_NAME_LABEL, POD_NAMESPACE_LABEL, POD_UID_LABEL, proto,
};
use crate::sandbox::{self, SandboxContext, SandboxMode, SandboxRecord};

/// The runtime name recorded for containerd pods.
pub const RUNTIME: &str = "containerd";

/// Does the pod use the host's network?
pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// The namespaces a containerd pod's sandbox and containers use.
pub fn namespace_options(pod: &Pod) -> proto::NamespaceOption {
    let spec = pod.spec.as_ref();
    let mode = |shared: bool, pod_wide: proto::NamespaceMode| {
        if shared {
            proto::NamespaceMode::Node as i32
        } else {
            pod_wide as i32
        }
    };
    let share_pid = spec
        .and_then(|s| s.share_process_namespace)
        .unwrap_or(false);
    proto::NamespaceOption {
        network: mode(host_network(pod), proto::NamespaceMode::Pod),
        pid: if spec.and_then(|s| s.host_pid).unwrap_or(false) {
            proto::NamespaceMode::Node as i32
        } else if share_pid {
            proto::NamespaceMode::Pod as i32
        } else {
            proto::NamespaceMode::Container as i32
        },
        ipc: mode(
            spec.and_then(|s| s.host_ipc).unwrap_or(false),
            proto::NamespaceMode::Pod,
        ),
        ..Default::default()
    }
}

/// The labels of the pod's sandbox (and, with the container's name, of its containers).
pub fn labels(pod: &Pod, uid: &str, container: Option<&str>) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|_| container.is_none())
        .collect();
    labels.insert(POD_UID_LABEL.into(), uid.into());
    labels.insert(
        POD_NAME_LABEL.into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    labels.insert(
        POD_NAMESPACE_LABEL.into(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    if let Some(c) = container {
        labels.insert(CONTAINER_NAME_LABEL.into(), c.into());
    }
    labels
}

/// The sandbox configuration of `pod` (also sent with image pulls and container creation).
pub fn config(
    ctx: &SandboxContext,
    pod: &Pod,
    uid: &str,
    pod_dir: &Path,
    record: &SandboxRecord,
) -> proto::PodSandboxConfig {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let net = &ctx.network;
    let host_net = host_network(pod);
    let dns_config = (!host_net).then(|| proto::DnsConfig {
        servers: vec![net.dns_service_ip().to_string()],
        searches: vec![
            format!("{namespace}.svc.{}", net.cluster_domain),
            format!("svc.{}", net.cluster_domain),
            net.cluster_domain.clone(),
        ],
        options: vec!["ndots:5".into()],
    });
    let mut port_mappings = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let Some(host_port) = p.host_port.filter(|h| *h > 0) else {
                continue;
            };
            let protocol = match p.protocol.as_deref() {
                Some("UDP") => proto::Protocol::Udp,
                Some("SCTP") => proto::Protocol::Sctp,
                _ => proto::Protocol::Tcp,
            };
            port_mappings.push(proto::PortMapping {
                protocol: protocol as i32,
                container_port: p.container_port,
                host_port,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let cgroup_parent = record
        .cgroup
        .as_ref()
        .map(|cg| format!("/{}", cg.path.trim_start_matches('/')))
        .unwrap_or_default();
    proto::PodSandboxConfig {
        metadata: Some(proto::PodSandboxMetadata {
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: uid.to_string(),
            namespace,
            attempt: 0,
        }),
        hostname: if host_net {
            String::new()
        } else {
            sandbox::etc::pod_hostname(pod)
        },
        log_directory: pod_dir.display().to_string(),
        dns_config,
        port_mappings,
        labels: labels(pod, uid, None),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(proto::LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(sandbox_security_context(pod)),
            sysctls: pod
                .spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.sysctls.as_ref())
                .into_iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
        windows: None,
    }
}

/// Makes (or adopts) the containerd sandbox of `pod` with runtime handler `handler` ("" =
/// containerd's default runtime), and records it in `<pod dir>/sandbox.json`.
pub async fn ensure(
    cri: &Cri,
    ctx: &SandboxContext,
    pod: &Pod,
    uid: &str,
    pod_dir: &Path,
    handler: &str,
) -> Result<SandboxRecord, CriError> {
    let mut record = sandbox::load(pod_dir)?.unwrap_or_default();
    record.runtime = RUNTIME.into();
    record.host_network = host_network(pod);
    if ctx.mode != SandboxMode::Host && record.cgroup.is_none() {
        record.cgroup = sandbox::cgroup::create_pod(ctx, pod, uid)?;
        sandbox::save(pod_dir, &record)?;
    }
    // The recorded sandbox, else one labelled with the pod's uid (made by an agent that died
    // before recording it). Dead ones are removed: their containers died with them.
    let mut adopt = None;
    if let Some(id) = record.cri_sandbox_id.clone() {
        match status(cri, &id).await {
            Ok(s) if s.state == proto::PodSandboxState::SandboxReady as i32 => adopt = Some(id),
            Ok(_) => cri.remove_sandbox(&id).await?,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    if adopt.is_none() {
        for s in cri.sandboxes_of(uid).await? {
            if adopt.is_none() && s.state == proto::PodSandboxState::SandboxReady as i32 {
                adopt = Some(s.id);
            } else {
                cri.remove_sandbox(&s.id).await?;
            }
        }
    }
    let id = match adopt {
        Some(id) => id,
        None => {
            let config = config(ctx, pod, uid, pod_dir, &record);
            cri.runtime()
                .run_pod_sandbox(proto::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: handler.to_string(),
                })
                .await
                .map_err(CriError::call("RunPodSandbox"))?
                .into_inner()
                .pod_sandbox_id
        }
    };
    record.cri_sandbox_id = Some(id.clone());
    sandbox::save(pod_dir, &record)?;
    let (ips, netns) = network_of(cri, &id).await?;
    record.pod_ips = ips;
    record.netns = netns;
    sandbox::save(pod_dir, &record)?;
    if !record.host_network && ctx.mode != SandboxMode::Host {
        sandbox::network::list_pod_ips(&ctx.network, &record.pod_ips, true).await?;
    }
    Ok(record)
}

/// The status of sandbox `id`.
pub async fn status(cri: &Cri, id: &str) -> Result<proto::PodSandboxStatus, CriError> {
    cri.runtime()
        .pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(CriError::call("PodSandboxStatus"))?
        .into_inner()
        .status
        .ok_or_else(|| CriError::Invalid(format!("no status for pod sandbox {id}")))
}

/// The sandbox's IPs and network namespace path (from containerd's verbose info: the OCI
/// spec of the pause container names it).
async fn network_of(
    cri: &Cri,
    id: &str,
) -> Result<(Vec<String>, Option<std::path::PathBuf>), CriError> {
    let resp = cri
        .runtime()
        .pod_sandbox_status(proto::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        })
        .await
        .map_err(CriError::call("PodSandboxStatus"))?
        .into_inner();
    let mut ips = Vec::new();
    if let Some(net) = resp.status.and_then(|s| s.network) {
        if !net.ip.is_empty() {
            ips.push(net.ip);
        }
        ips.extend(net.additional_ips.into_iter().map(|p| p.ip));
    }
    let netns = resp
        .info
        .get("info")
        .and_then(|raw| serde_json::from_str::<serde_json::Value>(raw).ok())
        .and_then(|info| {
            info.pointer("/runtimeSpec/linux/namespaces")
                .and_then(|n| n.as_array())
                .and_then(|list| {
                    list.iter()
                        .find(|n| n["type"] == "network")
                        .and_then(|n| n["path"].as_str())
                        .filter(|p| !p.is_empty())
                        .map(std::path::PathBuf::from)
                })
        });
    Ok((ips, netns))
}

/// Removes the pod's containerd sandbox and containers (the recorded one, and any labelled
/// with its uid), then forgets them in the record: the network namespace was containerd's,
/// so what remains for [`sandbox::teardown`] is the pod's cgroup.
pub async fn teardown(
    cri: &Cri,
    ctx: &SandboxContext,
    uid: &str,
    pod_dir: &Path,
) -> Result<(), CriError> {
    let Some(mut record) = sandbox::load(pod_dir)? else {
        return Ok(());
    };
    if record.runtime != RUNTIME {
        return Ok(());
    }
    // The table may be gone (a test plane's cleanup): the address is then listed nowhere.
    if !record.host_network && ctx.mode != SandboxMode::Host {
        let _ = sandbox::network::list_pod_ips(&ctx.network, &record.pod_ips, false).await;
    }
    if let Some(id) = record.cri_sandbox_id.clone() {
        cri.remove_sandbox(&id).await?;
    }
    for s in cri.sandboxes_of(uid).await? {
        cri.remove_sandbox(&s.id).await?;
    }
    // Containers of the pod outside any sandbox we know (none expected).
    let filter = proto::ContainerFilter {
        label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
        ..Default::default()
    };
    for c in cri.list_containers(Some(filter)).await? {
        cri.remove_container(&c.id).await?;
    }
    record.cri_sandbox_id = None;
    record.netns = None;
    record.pod_ips.clear();
    sandbox::save(pod_dir, &record)?;
    Ok(())
}

/// The pod-level `securityContext` as the CRI's `LinuxSandboxSecurityContext` (the kubelet's
/// `determinePodSandboxConfig`): user, group, supplemental groups (with `fsGroup`), seccomp,
/// SELinux, and whether any container is privileged.
pub fn sandbox_security_context(pod: &Pod) -> proto::LinuxSandboxSecurityContext {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let mut groups: Vec<i64> = psc
        .and_then(|s| s.supplemental_groups.clone())
        .unwrap_or_default();
    if let Some(g) = psc.and_then(|s| s.fs_group)
        && !groups.contains(&g)
    {
        groups.push(g);
    }
    let privileged = crate::pod::env::all_containers(pod).any(|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    use proto::security_profile::ProfileType;
    let seccomp = psc.and_then(|s| s.seccomp_profile.as_ref()).map(|p| {
        let kind = match p.type_.as_str() {
            "Unconfined" => ProfileType::Unconfined,
            "Localhost" => ProfileType::Localhost,
            _ => ProfileType::RuntimeDefault,
        };
        proto::SecurityProfile {
            profile_type: kind as i32,
            localhost_ref: p.localhost_profile.clone().unwrap_or_default(),
        }
    });
    proto::LinuxSandboxSecurityContext {
        namespace_options: Some(namespace_options(pod)),
        run_as_user: psc
            .and_then(|s| s.run_as_user)
            .map(|value| proto::Int64Value { value }),
        run_as_group: psc
            .and_then(|s| s.run_as_group)
            .map(|value| proto::Int64Value { value }),
        supplemental_groups: groups,
        privileged,
        seccomp,
        selinux_options: psc.and_then(|s| s.se_linux_options.as_ref()).map(|o| {
            proto::SeLinuxOption {
                user: o.user.clone().unwrap_or_default(),
                role: o.role.clone().unwrap_or_default(),
                r#type: o.type_.clone().unwrap_or_default(),
                level: o.level.clone().unwrap_or_default(),
            }
        }),
        ..Default::default()
    }
}

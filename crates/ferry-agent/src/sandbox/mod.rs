//! The pod sandbox: what every container of a pod shares, made once per pod before its first
//! container starts and torn down when the pod ends.
//!
//! | part       | module      | what it is                                                  |
//! |------------|-------------|-------------------------------------------------------------|
//! | cgroup     | [`cgroup`]  | the pod's cgroup (under its QoS class), one per container    |
//! | network    | [`network`] | a network namespace on the node bridge, through CNI plugins |
//! | `/etc`     | [`etc`]     | the pod's `hosts`, `hostname` and `resolv.conf`             |
//! | security   | [`security`] | each container's `securityContext`, enforced by the shim or refused |
//!
//! [`enter`] runs a command inside a running container's namespaces and cgroup (exec, exec
//! probes, `kubectl cp`).
//!
//! The sandbox is recorded in `<pod dir>/sandbox.json` ([`SandboxRecord`]) as soon as each part
//! exists, so an agent that restarts adopts it, and one that finds a pod gone tears down what
//! the record names. Nothing here is kept only in memory.

pub mod cgroup;
pub mod enter;
pub mod etc;
pub mod network;
pub mod security;

use std::path::{Path, PathBuf};

use ferry_api::network::ClusterNetwork;
use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use crate::runtime::{read_json, write_json_atomic};

/// File name of the record inside the pod's directory.
pub const RECORD: &str = "sandbox.json";

/// How the agent isolates pods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Isolated when the agent runs as root and the tools exist; otherwise host mode, with a
    /// warning at start and on every pod.
    #[default]
    Auto,
    /// Always isolated: a pod whose sandbox cannot be made fails with a reason.
    Isolated,
    /// No sandbox: pods share the host's network, cgroup and `/etc` (the host runtime of
    /// earlier versions; for unprivileged agents).
    Host,
}

/// What the agent needs to make sandboxes.
#[derive(Debug, Clone)]
pub struct SandboxContext {
    /// The cluster network plan.
    pub network: ClusterNetwork,
    /// Where the agent keeps its state (CNI configuration and IPAM store live under it).
    pub data_dir: PathBuf,
    /// The mode the agent settled on at start (never `Auto`).
    pub mode: SandboxMode,
    /// Where the CNI plugins are.
    pub cni_bin_dir: PathBuf,
    /// Pids limit of each pod's cgroup (-1: none).
    pub pod_pids_limit: i64,
}

/// A pod's sandbox as made (`sandbox.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxRecord {
    /// The pod uses the host's network (`hostNetwork: true`, or host mode).
    #[serde(default)]
    pub host_network: bool,
    /// The pod's network namespace (a bind mount under `/run/netns`), when it has one.
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The pod's addresses (`status.podIPs`), first one primary.
    #[serde(default)]
    pub pod_ips: Vec<String>,
    /// The pod's cgroup, when it has one.
    #[serde(default)]
    pub cgroup: Option<cgroup::PodCgroup>,
    /// The pod's generated `/etc` files, when it has them.
    #[serde(default)]
    pub etc: Option<etc::EtcFiles>,
    /// The runtime the pod's containers run under (`host` or `containerd`).
    #[serde(default)]
    pub runtime: String,
    /// The CRI pod sandbox id, for containerd pods.
    #[serde(default)]
    pub cri_sandbox_id: Option<String>,
}

/// Why a sandbox could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The cgroup part.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The network part.
    #[error("network: {0}")]
    Network(String),
    /// The `/etc` files.
    #[error("pod files: {0}")]
    Etc(String),
    /// The record itself.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
}

impl SandboxContext {
    /// The context for `config`, with `Auto` resolved: isolated when the agent runs as root
    /// and the CNI plugins, `ip` and `nft` exist, else host mode (the second value says why,
    /// for a warning).
    pub fn for_config(config: &crate::AgentConfig) -> (Self, Option<String>) {
        let root = nix::unistd::geteuid().is_root();
        let missing = network::missing_tools(&config.cni_bin_dir);
        let (mode, note) = match (config.sandbox, missing) {
            (SandboxMode::Auto, _) if !root => (
                SandboxMode::Host,
                Some("the agent does not run as root: pods share the host's network, cgroups and /etc (no sandbox)".to_string()),
            ),
            (SandboxMode::Auto, Some(missing)) => (
                SandboxMode::Host,
                Some(format!("missing for pod sandboxes: {missing}: pods share the host's network, cgroups and /etc (no sandbox); install containernetworking-plugins, iproute2 and nftables")),
            ),
            (SandboxMode::Auto, None) => (SandboxMode::Isolated, None),
            (other, _) => (other, None),
        };
        (
            SandboxContext {
                network: config.network.clone(),
                data_dir: config.data_dir.clone(),
                mode,
                cni_bin_dir: config.cni_bin_dir.clone(),
                pod_pids_limit: config.pod_pids_limit,
            },
            note,
        )
    }

    /// Makes the node's side of the sandboxes (bridge, CNI configuration, hygiene rules) at
    /// agent start; a no-op in host mode.
    pub async fn prepare_node(&self, pods_dir: &Path) -> Result<(), SandboxError> {
        if self.mode == SandboxMode::Host {
            return Ok(());
        }
        network::prepare_node(self, pods_dir).await
    }
}

/// Reads the record of the pod whose directory is `pod_dir`, if it has one.
pub fn load(pod_dir: &Path) -> Result<Option<SandboxRecord>, SandboxError> {
    let path = pod_dir.join(RECORD);
    read_json(&path).map_err(|error| SandboxError::Io {
        action: "read",
        path,
        error,
    })
}

/// Writes the record (atomically).
pub fn save(pod_dir: &Path, record: &SandboxRecord) -> Result<(), SandboxError> {
    let path = pod_dir.join(RECORD);
    write_json_atomic(&path, record).map_err(|error| SandboxError::Io {
        action: "write",
        path,
        error,
    })
}

/// Makes (or adopts) the sandbox of `pod`, whose state lives in `pod_dir`. Idempotent: each
/// part already in the record is kept; missing parts are made and recorded one by one.
pub async fn ensure(
    ctx: &SandboxContext,
    pod: &Pod,
    uid: &str,
    pod_dir: &Path,
) -> Result<SandboxRecord, SandboxError> {
    let started = std::time::Instant::now();
    let mut record = load(pod_dir)?.unwrap_or_default();
    if record.runtime.is_empty() {
        record.runtime = "host".into();
    }
    let host_network = ctx.mode == SandboxMode::Host
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
    record.host_network = host_network;
    if ctx.mode != SandboxMode::Host && record.cgroup.is_none() {
        record.cgroup = cgroup::create_pod(ctx, pod, uid)?;
        save(pod_dir, &record)?;
    }
    if !host_network && (record.netns.is_none() || record.pod_ips.is_empty()) {
        record.pod_ips = network::setup(ctx, pod, uid, pod_dir, &mut record).await?;
        save(pod_dir, &record)?;
        tracing::debug!(uid, elapsed = ?started.elapsed(), "pod network ready");
    }
    if ctx.mode != SandboxMode::Host && record.etc.is_none() {
        record.etc = etc::write(ctx, pod, &record, pod_dir)?;
    }
    save(pod_dir, &record)?;
    tracing::debug!(uid, elapsed = ?started.elapsed(), "pod sandbox ready");
    Ok(record)
}

/// Releases the pod's network (a pod in a terminal phase): the namespace, its address and
/// host ports go; the record keeps the addresses for `status.podIPs`, as Kubernetes does.
pub async fn release_network(
    ctx: &SandboxContext,
    uid: &str,
    pod_dir: &Path,
) -> Result<Option<SandboxRecord>, SandboxError> {
    let Some(mut record) = load(pod_dir)? else {
        return Ok(None);
    };
    if record.netns.is_some() {
        network::teardown(ctx, uid, &record, pod_dir).await?;
        record.netns = None;
        save(pod_dir, &record)?;
    }
    Ok(Some(record))
}

/// Removes the sandbox the record names (network, then cgroup). Idempotent: what is already
/// gone is skipped; the record is updated as parts go, so a crash part-way resumes.
pub async fn teardown(ctx: &SandboxContext, uid: &str, pod_dir: &Path) -> Result<(), SandboxError> {
    let Some(mut record) = load(pod_dir)? else {
        return Ok(());
    };
    if record.netns.is_some() {
        network::teardown(ctx, uid, &record, pod_dir).await?;
        record.netns = None;
        save(pod_dir, &record)?;
    }
    if let Some(cg) = record.cgroup.take() {
        cgroup::remove_pod(&cg)?;
        save(pod_dir, &record)?;
    }
    Ok(())
}

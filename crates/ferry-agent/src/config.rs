//! The agent's settings.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::gpu::GpuSource;
use crate::runtime::{MountMode, ShimCommand};

/// Default port of the log server (the kubelet's port).
pub const DEFAULT_LOG_PORT: u16 = 10250;

/// Everything [`crate::run`] needs besides a Kubernetes client.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The Node this agent registers and whose pods it runs.
    pub node_name: String,
    /// The node's InternalIP: reported on the Node, and as every pod's `podIP`/`hostIP`.
    pub node_ip: IpAddr,
    /// Where pods, logs and container state live. Must survive agent restarts.
    pub data_dir: PathBuf,
    /// Where the GPUs come from.
    pub gpus: GpuSource,
    /// How often the node Lease is renewed.
    pub heartbeat_interval: Duration,
    /// How long the Lease is valid without renewal (its `leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the Node status (Ready condition, GPU health) is refreshed.
    pub node_status_interval: Duration,
    /// Address of the log server; port 0 picks a free port (the Node publishes the real one).
    pub log_server_addr: SocketAddr,
    /// Pod capacity published on the Node.
    pub max_pods: u32,
    /// Pids limit of every pod's cgroup (the kubelet's `podPidsLimit`); -1 for none.
    pub pod_pids_limit: i64,
    /// Extra labels for the Node.
    pub node_labels: BTreeMap<String, String>,
    /// How to start a container's shim.
    pub shim: ShimCommand,
    /// How containers see their volumes.
    pub mount_mode: MountMode,
    /// First crash-loop back-off delay (the kubelet's is 10 s).
    pub backoff_initial: Duration,
    /// Longest crash-loop back-off delay (the kubelet's is 5 min).
    pub backoff_max: Duration,
    /// A container that ran at least this long before exiting restarts without back-off.
    pub backoff_reset: Duration,
    /// The cluster network plan (pod and Service ranges, bridge, DNS).
    pub network: ferry_api::network::ClusterNetwork,
    /// How pods are isolated (network namespace, cgroups, `/etc` files).
    pub sandbox: crate::sandbox::SandboxMode,
    /// Where the CNI plugins are (Debian's `containernetworking-plugins`: `/usr/lib/cni`).
    pub cni_bin_dir: PathBuf,
    /// containerd's CRI socket: pods with images run there (see `docs/runtimes.md`); `None`:
    /// every pod runs on the host runtime.
    pub cri_endpoint: Option<PathBuf>,
    /// The endpoints' serving certificate and the CA of allowed clients (mutual TLS, see
    /// [`crate::tls`]). Required: without it [`crate::start`] refuses to start, as there is no
    /// plain-HTTP mode.
    pub tls: Option<crate::tls::AgentTls>,
    /// CPU (millicores) and memory (bytes) the Node declares instead of the machine's, as a
    /// simulated node declares its GPUs: for tests whose manifests ask for more than a small
    /// machine has. Limits are still applied to the pods' cgroups as written. `None`: measured.
    pub declared_capacity: Option<(i64, i64)>,
}

impl AgentConfig {
    /// Defaults for a node called `node_name` keeping its state in `data_dir`: InternalIP
    /// 127.0.0.1, GPUs from NVML, Lease renewed every 10 s, log server on 127.0.0.1:10250,
    /// 110 pods, the shim from the running executable (`<exe> agent-shim`).
    pub fn new(node_name: impl Into<String>, data_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            node_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            data_dir: data_dir.into(),
            gpus: GpuSource::Auto,
            heartbeat_interval: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            node_status_interval: Duration::from_secs(60),
            log_server_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DEFAULT_LOG_PORT),
            max_pods: 110,
            declared_capacity: None,
            pod_pids_limit: crate::sandbox::cgroup::DEFAULT_POD_PIDS_LIMIT,
            node_labels: BTreeMap::new(),
            shim: ShimCommand::current_exe().unwrap_or_else(|_| ShimCommand {
                program: PathBuf::from("ferry"),
                args: vec![crate::shim::SHIM_SUBCOMMAND.to_string()],
            }),
            mount_mode: MountMode::Auto,
            backoff_initial: Duration::from_secs(10),
            backoff_max: Duration::from_secs(300),
            backoff_reset: Duration::from_secs(600),
            network: ferry_api::network::ClusterNetwork::default(),
            sandbox: crate::sandbox::SandboxMode::Auto,
            cni_bin_dir: PathBuf::from(crate::sandbox::network::DEFAULT_CNI_BIN_DIR),
            cri_endpoint: None,
            tls: None,
        }
    }

    /// Checks values that would make the agent misbehave.
    pub fn validate(&self) -> Result<(), crate::AgentError> {
        let fail = |m: String| Err(crate::AgentError::Config(m));
        if let Some(reason) = invalid_node_name(&self.node_name) {
            return fail(format!("node name {:?} {reason}", self.node_name));
        }
        if self.heartbeat_interval.is_zero() {
            return fail("the heartbeat interval must be positive".into());
        }
        if self.lease_duration <= self.heartbeat_interval {
            return fail(format!(
                "the lease duration ({:?}) must be longer than the heartbeat interval ({:?})",
                self.lease_duration, self.heartbeat_interval
            ));
        }
        if self.node_status_interval.is_zero() {
            return fail("the node status interval must be positive".into());
        }
        if self.backoff_initial > self.backoff_max {
            return fail("the initial back-off must not exceed the maximum back-off".into());
        }
        if self.max_pods == 0 {
            return fail("max pods must be at least 1".into());
        }
        if self.pod_pids_limit == 0 || self.pod_pids_limit < -1 {
            return fail("the pod pids limit must be at least 1, or -1 for none".into());
        }
        if let Err(e) = self.network.validate() {
            return fail(format!("cluster network: {e}"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("the data directory must not be empty".into());
        }
        Ok(())
    }
}

/// Why `name` is not a valid node name (a DNS subdomain), if it is not.
pub fn invalid_node_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("is empty");
    }
    if name.len() > 253 {
        return Some("is longer than 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Some("may only contain lowercase letters, digits, '-' and '.'");
    }
    let b = name.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Some("must start and end with a lowercase letter or digit");
    }
    None
}

/// The machine's hostname as a valid node name (lowercased, invalid characters replaced).
pub fn default_node_name() -> String {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let mut name: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    name.truncate(253);
    if name.is_empty() {
        "ferry-node".into()
    } else {
        name
    }
}

/// The default data directory: `/var/lib/ferry/agent` for root, else
/// `$XDG_DATA_HOME/ferry/agent` (`~/.local/share/ferry/agent`).
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/ferry/agent");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("ferry/agent");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/ferry/agent"),
        None => PathBuf::from("ferry-agent-data"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(invalid_node_name("node-1.example").is_none());
        assert!(invalid_node_name("").is_some());
        assert!(invalid_node_name("Node").is_some());
        assert!(invalid_node_name("-x").is_some());
        assert!(invalid_node_name(&default_node_name()).is_none());
    }

    #[test]
    fn validation_catches_inconsistent_timings() {
        let mut c = AgentConfig::new("n", "/tmp/x");
        assert!(c.validate().is_ok());
        c.lease_duration = c.heartbeat_interval;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("lease duration")
        );
        let mut c = AgentConfig::new("Bad_Name", "/tmp/x");
        assert!(c.validate().is_err());
        c.node_name = "ok".into();
        c.backoff_initial = Duration::from_secs(1000);
        assert!(c.validate().is_err());
    }
}

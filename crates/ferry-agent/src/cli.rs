//! Command-line arguments of `ferry agent`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{AgentConfig, default_data_dir, default_node_name};
use crate::error::AgentError;
use crate::gpu::{FakeGpuGroup, GpuSource, parse_fake_gpus};
use crate::runtime::{MountMode, ShimCommand};

/// A parsed `--fake-gpus` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeGpus(pub Vec<FakeGpuGroup>);

fn parse_fake(s: &str) -> Result<FakeGpus, crate::gpu::GpuSpecError> {
    parse_fake_gpus(s).map(FakeGpus)
}

/// A `--node-label` value that is not `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// No `=`.
    #[error("{0:?} is not KEY=VALUE")]
    NotKeyValue(String),
    /// Nothing before the `=`.
    #[error("{0:?} has an empty key")]
    EmptyKey(String),
}

fn parse_label(s: &str) -> Result<(String, String), LabelError> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| LabelError::NotKeyValue(s.into()))?;
    if k.is_empty() {
        return Err(LabelError::EmptyKey(s.into()));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Run the node agent: register this machine as a Kubernetes Node and run the pods bound to it
/// as host processes.
///
/// The agent joins the cluster named by the kubeconfig, publishes the node's CPUs, memory and
/// GPUs (discovered through NVML, or declared with --fake-gpus), renews the node's Lease, and
/// runs the containers of pods scheduled to it: their command and args, as processes on this
/// machine, with logs served to `kubectl logs`. Ctrl-C stops the agent but not the pods: a
/// restarted agent re-adopts them from the data directory.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// Kubeconfig of the cluster to join [default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Name of this node in the cluster [default: the hostname, lowercased]
    #[arg(long, value_name = "NAME", env = "FERRY_NODE_NAME")]
    pub node_name: Option<String>,

    /// Directory for pod state, container logs and emptyDir volumes. Keep it across restarts:
    /// it is how a restarted agent finds the containers still running [default:
    /// /var/lib/ferry/agent as root, else ~/.local/share/ferry/agent]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Declare fake GPUs instead of discovering real ones, for demos and tests:
    /// [COUNTx]MODEL[:MEMORY], comma-separated. Examples: 8xA100-80GB; 4xA100-80GB,2xT4;
    /// 2xMyGPU:16384 (MiB; 16Gi also works). Memory comes from a size in the model name (80GB)
    /// or a table of well-known models (T4, A100, H100, ...). The node is labelled
    /// ferry.dev/gpu-fake=true
    #[arg(long, value_name = "SPEC", value_parser = parse_fake)]
    pub fake_gpus: Option<FakeGpus>,

    /// Do not look for NVIDIA GPUs at all (the node reports nvidia.com/gpu: 0)
    #[arg(long, conflicts_with = "fake_gpus")]
    pub no_gpus: bool,

    /// The node's InternalIP, also the IP of hostNetwork pods (and of every pod without a
    /// sandbox). The API
    /// server reaches the log server at this address
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub node_ip: IpAddr,

    /// Where the log server listens; the API server proxies `kubectl logs` to it. Port 0 picks
    /// a free port (the Node publishes the one chosen)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10250")]
    pub log_server_addr: SocketAddr,

    /// Seconds between renewals of the node's Lease (the heartbeat)
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub heartbeat_seconds: u64,

    /// Seconds between refreshes of the Node status (Ready condition, GPU health)
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub node_status_seconds: u64,

    /// An extra label for the Node, KEY=VALUE (repeatable)
    #[arg(long = "node-label", value_name = "KEY=VALUE", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,

    /// How many pods the node accepts (its `pods` capacity)
    #[arg(long, value_name = "N", default_value_t = 110, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pods: u32,

    /// The most processes and threads each pod may have (the kubelet's podPidsLimit); -1 for
    /// no limit
    #[arg(long, value_name = "N", default_value_t = crate::sandbox::cgroup::DEFAULT_POD_PIDS_LIMIT, allow_negative_numbers = true)]
    pub pod_pids_limit: i64,

    /// How containers see their volumes at their mountPath: `auto` uses a private mount
    /// namespace with bind mounts when the agent runs as root (or with CAP_SYS_ADMIN) and
    /// symlinks otherwise; `namespace` insists on bind mounts; `symlink` never uses them
    #[arg(long, value_enum, value_name = "MODE", default_value_t = MountMode::Auto)]
    pub volume_mounts: MountMode,

    /// First delay before restarting a crashing container; it doubles on each crash up to
    /// --backoff-max-seconds (CrashLoopBackOff)
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub backoff_initial_seconds: u64,

    /// Longest delay before restarting a crashing container
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    pub backoff_max_seconds: u64,

    /// How pods are isolated: `auto` gives each pod its own network namespace (CNI), cgroup
    /// and /etc files when the agent runs as root and the CNI plugins, ip and nft exist, else
    /// runs pods as plain host processes; `isolated` insists; `host` never isolates
    #[arg(long, value_enum, value_name = "MODE", default_value_t = crate::sandbox::SandboxMode::Auto)]
    pub sandbox: crate::sandbox::SandboxMode,

    /// Where the CNI plugins (bridge, host-local, loopback, portmap) are
    #[arg(long, value_name = "DIR", default_value = crate::sandbox::network::DEFAULT_CNI_BIN_DIR)]
    pub cni_bin_dir: PathBuf,

    /// The cluster's pod range
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/16")]
    pub pod_cidr: ferry_api::network::Ipv4Range,

    /// This node's share of the pod range (the bridge's subnet; its first address is the
    /// pods' gateway)
    #[arg(long, value_name = "CIDR", default_value = "10.244.0.0/24")]
    pub node_pod_cidr: ferry_api::network::Ipv4Range,

    /// The cluster's Service range (the cluster DNS is its tenth address)
    #[arg(long, value_name = "CIDR", default_value = "10.96.0.0/16")]
    pub service_cidr: ferry_api::network::Ipv4Range,

    /// The node bridge pods attach to
    #[arg(long, value_name = "NAME", default_value = "ferry0")]
    pub bridge: String,

    /// The cluster's DNS domain
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,

    /// The program that supervises each container, with its leading arguments, space-separated
    /// [default: this executable's hidden `agent-shim` subcommand]
    #[arg(long, value_name = "COMMAND", hide = true)]
    pub shim_command: Option<String>,

    /// containerd's CRI socket: pods with images (or a RuntimeClass other than `host`) run
    /// there as real containers; without it every pod runs on the host runtime
    #[arg(long, value_name = "SOCKET")]
    pub containerd: Option<PathBuf>,

    /// The serving certificate (PEM, chain leaf first) of the agent's endpoints (logs, exec,
    /// attach, port-forward, stats), for the node's IP addresses. Required with
    /// --tls-private-key-file and --client-ca-file: the endpoints are served over mutual TLS
    /// only
    #[arg(long, value_name = "PATH")]
    pub tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of --tls-cert-file
    #[arg(long, value_name = "PATH")]
    pub tls_private_key_file: Option<PathBuf>,

    /// The CA (PEM) whose client certificates are accepted; only the API server's
    /// (CN kube-apiserver-kubelet-client) or a system:masters member's are served
    #[arg(long, value_name = "PATH")]
    pub client_ca_file: Option<PathBuf>,
}

impl AgentArgs {
    /// The agent configuration these arguments describe.
    pub fn to_config(&self) -> Result<AgentConfig, AgentError> {
        let node_name = match &self.node_name {
            Some(n) => n.clone(),
            None => default_node_name(),
        };
        let data_dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        let mut config = AgentConfig::new(node_name, data_dir);
        config.node_ip = self.node_ip;
        config.gpus = match (&self.fake_gpus, self.no_gpus) {
            (Some(f), _) => GpuSource::Fake(f.0.clone()),
            (None, true) => GpuSource::Disabled,
            (None, false) => GpuSource::Auto,
        };
        config.log_server_addr = self.log_server_addr;
        config.heartbeat_interval = Duration::from_secs(self.heartbeat_seconds);
        config.lease_duration = Duration::from_secs((self.heartbeat_seconds * 4).max(40));
        config.node_status_interval = Duration::from_secs(self.node_status_seconds);
        config.node_labels = self.node_labels.iter().cloned().collect();
        config.max_pods = self.max_pods;
        config.pod_pids_limit = self.pod_pids_limit;
        config.mount_mode = self.volume_mounts;
        config.backoff_initial = Duration::from_secs(self.backoff_initial_seconds);
        config.backoff_max = Duration::from_secs(self.backoff_max_seconds);
        config.sandbox = self.sandbox;
        config.cni_bin_dir = self.cni_bin_dir.clone();
        config.network.pod_cidr = self.pod_cidr;
        config.network.node_pod_cidr = self.node_pod_cidr;
        config.network.service_cidr = self.service_cidr;
        config.network.bridge = self.bridge.clone();
        config.network.cluster_domain = self.cluster_domain.clone();
        config.cri_endpoint = self.containerd.clone();
        config.tls = match (
            &self.tls_cert_file,
            &self.tls_private_key_file,
            &self.client_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => {
                Some(crate::tls::AgentTls::from_files(cert, key, ca)?)
            }
            (None, None, None) => None,
            _ => {
                return Err(AgentError::Config(
                    "--tls-cert-file, --tls-private-key-file and --client-ca-file go together"
                        .into(),
                ));
            }
        };
        if let Some(cmd) = &self.shim_command {
            let mut parts = cmd.split_whitespace().map(str::to_string);
            let program = parts
                .next()
                .ok_or_else(|| AgentError::Config("--shim-command is empty".into()))?;
            config.shim = ShimCommand {
                program: program.into(),
                args: parts.collect(),
            };
        }
        if !config.node_ip.is_loopback() && self.log_server_addr.ip().is_loopback() {
            tracing::warn!(
                node_ip = %config.node_ip,
                log_server = %self.log_server_addr,
                "the log server listens on loopback but the node IP is not: the API server may not reach it for logs"
            );
        }
        config.validate()?;
        Ok(config)
    }

    /// A Kubernetes client for the cluster these arguments name.
    pub async fn client(&self) -> Result<kube::Client, AgentError> {
        client_from(self.kubeconfig.as_deref()).await
    }
}

/// A client from a kubeconfig file, or from the usual places when `None`.
pub async fn client_from(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, AgentError> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| AgentError::Kubeconfig(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| AgentError::Kubeconfig(format!("{e} (pass --kubeconfig)")))?,
    };
    kube::Client::try_from(config).map_err(|e| AgentError::Kubeconfig(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn node_labels_parse_or_say_what_is_wrong() {
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert_eq!(
            parse_label("nolabel"),
            Err(LabelError::NotKeyValue("nolabel".into()))
        );
        assert_eq!(parse_label("=v"), Err(LabelError::EmptyKey("=v".into())));
        assert!(parse_fake("0xA100").is_err());
    }

    #[test]
    fn parses_and_converts() {
        let cli = Cli::try_parse_from([
            "agent",
            "--node-name",
            "gpu-1",
            "--data-dir",
            "/tmp/agent",
            "--fake-gpus",
            "4xA100-80GB,2xT4",
            "--heartbeat-seconds",
            "5",
            "--log-server-addr",
            "127.0.0.1:0",
            "--node-label",
            "zone=a",
        ])
        .unwrap();
        let config = cli.agent.to_config().unwrap();
        assert_eq!(config.node_name, "gpu-1");
        assert_eq!(config.heartbeat_interval, Duration::from_secs(5));
        assert_eq!(config.node_labels["zone"], "a");
        match config.gpus {
            GpuSource::Fake(g) => assert_eq!(g.iter().map(|g| g.count).sum::<u32>(), 6),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_tls_files_go_together_and_are_read() {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), format!("{f} contents")).unwrap();
        }
        let p = |f: &str| dir.path().join(f).display().to_string();
        let base = ["agent", "--node-name", "n1", "--data-dir", "/tmp/agent"];
        let half =
            Cli::try_parse_from(base.into_iter().chain(["--tls-cert-file", &p("c.pem")])).unwrap();
        assert!(matches!(
            half.agent.to_config(),
            Err(AgentError::Config(m)) if m.contains("go together")
        ));
        let (c, k, ca) = (p("c.pem"), p("k.pem"), p("ca.pem"));
        let all = Cli::try_parse_from(base.into_iter().chain([
            "--tls-cert-file",
            &c,
            "--tls-private-key-file",
            &k,
            "--client-ca-file",
            &ca,
        ]))
        .unwrap();
        let tls = all.agent.to_config().unwrap().tls.expect("TLS configured");
        assert_eq!(tls.cert_pem, "c.pem contents");
        assert_eq!(tls.key_pem, "k.pem contents");
        assert_eq!(tls.client_ca_pem, "ca.pem contents");
        let missing = Cli::try_parse_from(base.into_iter().chain([
            "--tls-cert-file",
            "/nonexistent/c.pem",
            "--tls-private-key-file",
            &k,
            "--client-ca-file",
            &ca,
        ]))
        .unwrap();
        assert!(matches!(
            missing.agent.to_config(),
            Err(AgentError::Io { .. })
        ));
    }

    #[test]
    fn help_explains_the_flags() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        println!("{help}");
        for flag in [
            "--kubeconfig",
            "--node-name",
            "--data-dir",
            "--fake-gpus",
            "--no-gpus",
            "--node-ip",
            "--log-server-addr",
            "--heartbeat-seconds",
            "--volume-mounts",
            "8xA100-80GB",
        ] {
            assert!(help.contains(flag), "help lacks {flag}");
        }
        assert!(
            !help.contains("--shim-command"),
            "the shim command is an internal knob"
        );
    }

    #[test]
    fn rejects_bad_values_with_clear_errors() {
        let err = Cli::try_parse_from(["agent", "--fake-gpus", "0xA100"])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("zero devices"), "{err}");
        assert!(Cli::try_parse_from(["agent", "--heartbeat-seconds", "0"]).is_err());
        assert!(Cli::try_parse_from(["agent", "--node-label", "novalue"]).is_err());
        assert!(Cli::try_parse_from(["agent", "--fake-gpus", "T4", "--no-gpus"]).is_err());
        let bad_name = Cli::try_parse_from(["agent", "--node-name", "Bad_Name"]).unwrap();
        assert!(
            bad_name
                .agent
                .to_config()
                .unwrap_err()
                .to_string()
                .contains("node name")
        );
    }
}

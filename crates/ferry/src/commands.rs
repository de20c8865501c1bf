//! Subcommands that run Ferry's components.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

/// Arguments of `ferry apiserver`.
#[derive(Debug, Args)]
pub struct ApiserverArgs {
    /// Directory of the database and the generated kubeconfig.
    #[arg(long, env = "FERRY_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address to serve the Kubernetes API on (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// The EncryptionConfiguration (`apiserver.config.k8s.io/v1`) of Secrets at rest [default:
    /// <data dir>/pki/encryption-config.yaml, created with a fresh AES-GCM key when missing]
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    /// Authentication settings.
    #[command(flatten)]
    pub authn: AuthnArgs,
}

/// How the API server authenticates, as kube-apiserver's flags of the same names.
#[derive(Debug, Clone, Args)]
pub struct AuthnArgs {
    /// Static bearer tokens: a CSV file of lines `token,user,uid[,"group1,group2"]`.
    #[arg(long, value_name = "FILE")]
    pub token_auth_file: Option<PathBuf>,
    /// `iss` of the service-account tokens the server issues and accepts [default:
    /// https://kubernetes.default.svc.cluster.local]
    #[arg(long, value_name = "URL")]
    pub service_account_issuer: Option<String>,
    /// Audiences bearer tokens must be meant for (comma-separated) [default: the issuer]
    #[arg(long, value_name = "AUDIENCES", value_delimiter = ',')]
    pub api_audiences: Vec<String>,
}

/// Arguments of `ferry up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Directory of the database, the kubeconfig, pod logs and agent state. Everything
    /// survives restarts (and `kill -9`): run `ferry up` again to resume.
    #[arg(long, env = "FERRY_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Address to serve the Kubernetes API on (loopback by default).
    #[arg(long, default_value = "127.0.0.1:6443")]
    pub listen: SocketAddr,
    /// Declare GPUs instead of discovering them, for demos and tests: comma-separated groups
    /// `[COUNTx]MODEL[:MEMORY]`, such as `8xA100-80GB` or `4xH100,2xT4:16Gi`. Fake devices are
    /// labelled `ferry.dev/gpu-fake=true` on the Node.
    #[arg(long, value_name = "SPEC")]
    pub fake_gpus: Option<String>,
    /// Name of this machine's Node (default: the host name).
    #[arg(long, env = "FERRY_NODE_NAME")]
    pub node_name: Option<String>,
    /// Run no node agent (a control plane without a node; pods stay Pending).
    #[arg(long)]
    pub no_agent: bool,
    /// Where the scheduler serves its Prometheus metrics.
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub metrics_listen: SocketAddr,
    /// containerd's CRI socket for pods with images [default: /run/containerd/containerd.sock
    /// when that socket exists; else every pod runs on the host runtime]
    #[arg(long, value_name = "SOCKET", conflicts_with = "no_containerd")]
    pub containerd: Option<PathBuf>,
    /// Never use containerd, even where it runs: every pod runs on the host runtime.
    #[arg(long)]
    pub no_containerd: bool,
    /// The EncryptionConfiguration (`apiserver.config.k8s.io/v1`) of Secrets at rest [default:
    /// <data dir>/pki/encryption-config.yaml, created with a fresh AES-GCM key when missing]
    #[arg(long, value_name = "FILE")]
    pub encryption_provider_config: Option<PathBuf>,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// marked NotReady (`Ready=Unknown`) and tainted `node.kubernetes.io/unreachable`; its
    /// pods are evicted once their tolerations of that taint run out (300 s by default).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_go_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// Authentication settings.
    #[command(flatten)]
    pub authn: AuthnArgs,
}

/// Arguments of `ferry store check` and `ferry store recover`.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The data directory whose store to check (that of `ferry up` or `ferry apiserver`).
    #[arg(long, env = "FERRY_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
}

/// The database of a data directory, as the API server names it.
pub fn database_path(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("state.db")
}

/// `ferry store check`: prints what the check found; an error (exit 1) when damaged.
pub fn store_check(args: StoreArgs) -> anyhow::Result<()> {
    init_logging();
    let db = database_path(&args.data_dir);
    let report = ferry_store::check(&db)?;
    println!("store {}", db.display());
    println!(
        "  rows verified        {} ({} damaged)",
        report.good_rows + report.bad_rows,
        report.bad_rows
    );
    println!("  newest revision      {}", report.newest);
    match report.acknowledged {
        Some(rev) => println!("  acknowledged         {rev}"),
        None => {
            println!("  acknowledged         not recorded (a store from before Ferry recorded it)")
        }
    }
    println!("  last good revision   {}", report.last_good);
    if report.is_ok() {
        println!("intact");
        return Ok(());
    }
    println!("damaged:");
    for problem in &report.problems {
        println!("  - {problem}");
    }
    println!(
        "Run `ferry store recover --data-dir {}` to keep every revision up to {} (the damaged files are moved aside as a backup).",
        args.data_dir.display(),
        report.last_good
    );
    anyhow::bail!("the store in {} is damaged", args.data_dir.display())
}

/// `ferry store recover`: keeps the good revisions, moves the damaged files aside.
pub fn store_recover(args: StoreArgs) -> anyhow::Result<()> {
    init_logging();
    let db = database_path(&args.data_dir);
    let report = ferry_store::recover(&db)?;
    if report.intact {
        println!(
            "store {} is intact (newest revision {}): nothing changed",
            db.display(),
            report.newest
        );
        return Ok(());
    }
    println!("recovered {}", db.display());
    println!(
        "  kept                 every revision up to {} ({} rows)",
        report.last_good, report.kept_rows
    );
    println!(
        "  dropped              {} revisions ({} to {})",
        report.dropped_revisions,
        report.last_good + 1,
        report.newest
    );
    if report.lost_objects > 0 {
        println!(
            "  lost                 {} objects that existed at revision {} (their older rows had been compacted)",
            report.lost_objects, report.last_good
        );
    }
    if let Some(backup) = &report.backup {
        println!("  damaged files        moved to {}", backup.display());
    }
    println!(
        "  revision             now {}: watches from older revisions expire and clients list again",
        report.new_revision
    );
    Ok(())
}

/// Arguments of `ferry scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    /// Kubeconfig of the cluster (default: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The schedulerName values to serve (repeat the flag for several). Pods naming another
    /// scheduler are left alone.
    #[arg(long = "scheduler-name", value_name = "NAME", default_value = ferry_api::SCHEDULER_NAME)]
    pub scheduler_names: Vec<String>,
    /// Where to serve Prometheus metrics (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:10259")]
    pub metrics_listen: SocketAddr,
    /// Node-level GPU placement policy: ferry (default), fgd, bestfit, dotprod, packing,
    /// clustering or random.
    #[arg(long, default_value = "ferry")]
    pub policy: String,
}

/// Arguments of `ferry controllers`.
#[derive(Debug, Args)]
pub struct ControllersArgs {
    /// Kubeconfig of the cluster (default: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// PEM CA certificate that signs `kubernetes.io/kube-apiserver-client`
    /// CertificateSigningRequests (with `--cluster-signing-key-file`; without both, no CSR
    /// is signed).
    #[arg(long, value_name = "PATH", requires = "cluster_signing_key_file")]
    pub cluster_signing_cert_file: Option<PathBuf>,
    /// PEM private key of `--cluster-signing-cert-file`.
    #[arg(long, value_name = "PATH", requires = "cluster_signing_cert_file")]
    pub cluster_signing_key_file: Option<PathBuf>,
    /// The longest validity of a signed certificate, as kube-controller-manager writes it
    /// (`8760h`, `720h0m0s`, `90m`; plain seconds too); a CSR's `spec.expirationSeconds` may
    /// ask for less.
    #[arg(long, value_name = "DURATION", default_value = "8760h", value_parser = parse_go_duration)]
    pub cluster_signing_duration: std::time::Duration,
    /// Where the local-path provisioner (StorageClass `local-path`) puts volumes'
    /// directories on the nodes.
    #[arg(long, value_name = "PATH", default_value = ferry_controllers::localpath::DEFAULT_ROOT)]
    pub local_path_root: PathBuf,
    /// How long a node may go without a heartbeat (Lease renewal or status) before it is
    /// marked NotReady (`Ready=Unknown`) and tainted `node.kubernetes.io/unreachable`; its
    /// pods are evicted once their tolerations of that taint run out (300 s by default).
    #[arg(long, value_name = "DURATION", default_value = "40s", value_parser = parse_go_duration)]
    pub node_monitor_grace_period: std::time::Duration,
}

/// Arguments of `ferry proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Kubeconfig of the cluster (default: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's Service range (rejected unless a rule serves it).
    #[arg(long, default_value_t = ferry_api::network::ClusterNetwork::default().service_cidr)]
    pub service_cidr: ferry_api::network::Ipv4Range,
    /// The nftables table (family `ip`) the proxy owns.
    #[arg(long, default_value_t = ferry_api::network::ClusterNetwork::default().nft_table)]
    pub nft_table: String,
}

/// Arguments of `ferry dns`.
#[derive(Debug, Args)]
pub struct DnsArgs {
    /// Kubeconfig of the cluster (default: `$KUBECONFIG`, `~/.kube/config`, or the in-cluster
    /// service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Address to serve on, UDP and TCP (default: the node gateway and DNS port of the default
    /// network plan, `10.244.0.1:53`).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Do not create or keep the `kube-dns` Service.
    #[arg(long)]
    pub no_service: bool,
}

/// The default data directory: `$XDG_DATA_HOME/ferry` or `~/.local/share/ferry`.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("ferry");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/ferry"),
        None => PathBuf::from(".ferry"),
    }
}

/// Sets up logging (`RUST_LOG`, default `info`, hickory-server's per-query lines off) and runs `future` on a multi-threaded runtime.
pub fn run_async(
    future: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    init_logging();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(future)
}

fn init_logging() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .try_init();
}

/// Whether logs are coloured: only on a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Runs the embedded control plane until Ctrl-C.
pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    use crate::up::{AgentOptions, ControlPlane, UpConfig};
    let mut config = UpConfig::new(&args.data_dir);
    config.listen = args.listen;
    config.metrics = Some(args.metrics_listen);
    config.encryption_provider_config = args.encryption_provider_config.clone();
    config.token_file = args.authn.token_auth_file.clone();
    config.service_account_issuer = args.authn.service_account_issuer.clone();
    config.api_audiences = args.authn.api_audiences.clone();
    config.node_monitor_grace_period = args.node_monitor_grace_period;
    config.agent = if args.no_agent {
        None
    } else {
        let mut options = AgentOptions::new();
        if let Some(name) = args.node_name {
            options.node_name = name;
        }
        if let Some(spec) = &args.fake_gpus {
            let groups = ferry_agent::gpu::parse_fake_gpus(spec)
                .map_err(|e| anyhow::anyhow!("--fake-gpus {spec:?}: {e}"))?;
            options.gpus = ferry_agent::gpu::GpuSource::Fake(groups);
        }
        let default_socket = PathBuf::from(ferry_agent::cri::DEFAULT_CONTAINERD_SOCKET);
        options.containerd = match (&args.containerd, args.no_containerd) {
            (_, true) => None,
            (Some(socket), false) => Some(socket.clone()),
            (None, false) => default_socket.exists().then_some(default_socket),
        };
        Some(options)
    };
    println!("Starting Ferry in {} ...", args.data_dir.display());
    let containerd = config.agent.as_ref().and_then(|a| a.containerd.clone());
    let plane = ControlPlane::start(config).await?;
    let kubeconfig = plane.kubeconfig.display().to_string();
    println!();
    println!("Ferry is up.");
    println!(
        "  API server   {} (TLS, cluster CA in {})",
        plane.server.url(),
        args.data_dir.join("pki/ca.crt").display()
    );
    println!(
        "  kubeconfig   {kubeconfig} (cluster admin: carries the kubernetes-admin client certificate; keep it private)"
    );
    match &plane.node_name {
        Some(node) => println!("  node         {node}"),
        None => println!("  node         none (--no-agent)"),
    }
    match &containerd {
        Some(socket) => println!(
            "  containers   containerd at {} (pods with images; RuntimeClass host for host processes)",
            socket.display()
        ),
        None => {
            println!("  containers   host processes only (no containerd; see docs/runtimes.md)")
        }
    }
    if args.metrics_listen.port() == 0 {
        println!("  metrics      a free port (the scheduler logs which)");
    } else {
        println!(
            "  metrics      http://{}/metrics (scheduler)",
            args.metrics_listen
        );
    }
    println!();
    println!("Run a first job from another shell:");
    println!("  export KUBECONFIG={kubeconfig}");
    println!("  kubectl get nodes");
    println!(
        "  kubectl run hello --image=busybox --restart=Never --command -- sh -c 'echo hello from Ferry'"
    );
    println!("  kubectl logs hello");
    println!();
    println!("Press Ctrl-C to stop. Running pods keep running and are adopted on the next start.");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("Stopping Ferry ...");
    plane.stop().await;
    println!("Stopped. Data kept in {}", args.data_dir.display());
    Ok(())
}

/// Runs only the node agent until Ctrl-C.
pub async fn agent(args: ferry_agent::cli::AgentArgs) -> anyhow::Result<()> {
    let client = args.client().await?;
    let config = args.to_config()?;
    ferry_agent::run(client, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// Parses a duration as Go's `time.ParseDuration` writes whole ones (`8760h0m0s`, `90m`,
/// `30s`), or plain seconds.
pub fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    let invalid = || {
        format!("invalid duration {text:?}: use hours, minutes and seconds such as 8760h or 90m30s")
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(invalid()),
        };
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(invalid)?;
        digits.clear();
    }
    if !digits.is_empty() || total == 0 {
        return Err(invalid());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Runs only the built-in controllers (garbage collection, namespaces, service accounts)
/// against any API server until Ctrl-C.
pub async fn controllers(args: ControllersArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let signer = match (
        &args.cluster_signing_cert_file,
        &args.cluster_signing_key_file,
    ) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| {
                std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
            };
            let signer = ferry_controllers::csrsigning::Signer::new(
                &read(cert)?,
                &read(key)?,
                args.cluster_signing_duration,
            )?;
            Some(std::sync::Arc::new(signer))
        }
        _ => None,
    };
    let options = ferry_controllers::Options {
        signer,
        local_path_root: Some(args.local_path_root),
        node_lifecycle: ferry_controllers::nodelifecycle::Config {
            grace_period: args.node_monitor_grace_period,
        },
        ..Default::default()
    };
    tracing::info!("controllers started");
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let ctrl_c = futures::future::FutureExt::shared(Box::pin(ctrl_c));
    futures::join!(
        ferry_controllers::run_with(client.clone(), options, ctrl_c.clone()),
        ferry_training::run(client, ctrl_c),
    );
    Ok(())
}

/// Runs only the Service proxy (this node's nftables Service rules) until Ctrl-C, then
/// removes its table.
pub async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let network = ferry_api::network::ClusterNetwork {
        service_cidr: args.service_cidr,
        nft_table: args.nft_table,
        ..Default::default()
    };
    tracing::info!(table = %network.nft_table, "proxy started");
    ferry_proxy::run(client, ferry_proxy::ProxyConfig::new(network), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// Runs only the cluster DNS until Ctrl-C.
pub async fn dns(args: DnsArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let network = ferry_api::network::ClusterNetwork {
        cluster_domain: args.cluster_domain,
        ..Default::default()
    };
    let mut config = ferry_dns::DnsConfig::for_node(&network);
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.manage_service = !args.no_service;
    ferry_dns::run(client, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}

/// Runs only the scheduler until Ctrl-C.
pub async fn scheduler(args: SchedulerArgs) -> anyhow::Result<()> {
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let policy: ferry_sched_core::PolicyKind = args
        .policy
        .parse()
        .map_err(|e| anyhow::anyhow!("--policy {:?}: {e}", args.policy))?;
    let config = ferry_scheduler::SchedulerConfig {
        scheduler_names: args.scheduler_names,
        metrics_addr: Some(args.metrics_listen),
        policy,
        ..Default::default()
    };
    ferry_scheduler::run(client, config, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

/// A client from an explicit kubeconfig, or kube-rs's default discovery.
pub async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .with_context(|| format!("invalid kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration found: pass --kubeconfig or set KUBECONFIG")?,
    };
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

/// Runs the API server until Ctrl-C.
pub async fn apiserver(args: ApiserverArgs) -> anyhow::Result<()> {
    let mut config = ferry_apiserver::ServerConfig::new(&args.data_dir);
    config.listen = args.listen;
    config.encryption_provider_config = args.encryption_provider_config;
    config.token_file = args.authn.token_auth_file;
    if let Some(issuer) = args.authn.service_account_issuer {
        config.service_account_issuer = issuer;
    }
    config.api_audiences = args.authn.api_audiences;
    let server = ferry_apiserver::start(config).await?;
    let kubeconfig = args.data_dir.join("kubeconfig");
    server
        .write_kubeconfig(&kubeconfig)
        .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
    println!("Ferry API server: {}", server.url());
    println!("kubeconfig:       {}", kubeconfig.display());
    println!("                  (cluster admin: the kubernetes-admin client certificate)");
    tokio::signal::ctrl_c()
        .await
        .context("cannot wait for Ctrl-C")?;
    println!("stopping");
    server.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_durations_read_as_kube_controller_manager_writes_them() {
        let d = |s: &str| parse_go_duration(s).map(|d| d.as_secs());
        assert_eq!(d("8760h"), Ok(8760 * 3600));
        assert_eq!(d("720h0m0s"), Ok(720 * 3600));
        assert_eq!(d("90m30s"), Ok(90 * 60 + 30));
        assert_eq!(d("600"), Ok(600));
        for bad in ["", "1y", "h", "5d", "0s", "10x"] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
    }
}

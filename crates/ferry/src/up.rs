//! The embedded control plane: API server, controllers, scheduler and node agent in one
//! process, as `ferry up` runs it (and as integration tests start it).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Settings of the embedded control plane.
#[derive(Debug, Clone)]
pub struct UpConfig {
    /// Data directory (database, kubeconfig, agent state, logs).
    pub data_dir: PathBuf,
    /// API server address.
    pub listen: SocketAddr,
    /// Run the scheduler.
    pub scheduler: bool,
    /// Run the built-in controllers (garbage collection, namespaces, service accounts).
    pub controllers: bool,
    /// Where the scheduler serves `/metrics` (none: not served).
    pub metrics: Option<SocketAddr>,
    /// Run a node agent for this machine (`None`: no node).
    pub agent: Option<AgentOptions>,
    /// The cluster network plan (pod and Service ranges, bridge, DNS), shared by every
    /// component.
    pub network: ferry_api::network::ClusterNetwork,
    /// Serve the cluster DNS on `<gateway>:<dns_port>` (once the node bridge exists).
    pub dns: bool,
    /// Port of the API's TLS listener on the gateway, for pods (none: no in-cluster API).
    pub tls_port: Option<u16>,
    /// The static token file (`token,user,uid[,"group1,group2"]`), if any.
    pub token_file: Option<PathBuf>,
    /// The EncryptionConfiguration of Secrets at rest (`None`: the data directory's own,
    /// `pki/encryption-config.yaml`, created when missing).
    pub encryption_provider_config: Option<PathBuf>,
    /// `iss` of service-account tokens (none: `https://kubernetes.default.svc.<domain>`).
    pub service_account_issuer: Option<String>,
    /// The audiences bearer tokens must be meant for (empty: the issuer).
    pub api_audiences: Vec<String>,
    /// How long a node may go without a heartbeat before the node lifecycle controller marks
    /// it NotReady and taints it `node.kubernetes.io/unreachable`.
    pub node_monitor_grace_period: std::time::Duration,
}

/// How `ferry up` runs its node agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    /// The Node's name (default: the host name).
    pub node_name: String,
    /// Where the GPUs come from (NVML, declared fakes, or none).
    pub gpus: ferry_agent::gpu::GpuSource,
    /// The container supervisor to start (default: this executable's hidden `agent-shim`).
    pub shim: Option<ferry_agent::runtime::ShimCommand>,
    /// How the agent isolates pods (default: `auto`).
    pub sandbox: ferry_agent::sandbox::SandboxMode,
    /// containerd's CRI socket: pods with images run there (`None`: host runtime only).
    pub containerd: Option<PathBuf>,
    /// CPU millicores and memory bytes declared instead of the machine's (tests).
    pub declared_capacity: Option<(i64, i64)>,
}

impl AgentOptions {
    /// An agent for this host with automatic GPU discovery.
    pub fn new() -> Self {
        Self {
            node_name: ferry_agent::config::default_node_name(),
            gpus: ferry_agent::gpu::GpuSource::Auto,
            shim: None,
            sandbox: ferry_agent::sandbox::SandboxMode::Auto,
            containerd: None,
            declared_capacity: None,
        }
    }
}

impl Default for AgentOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl UpConfig {
    /// Defaults: everything on, loopback port 6443.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 6443)),
            scheduler: true,
            controllers: true,
            metrics: None,
            agent: Some(AgentOptions::new()),
            network: ferry_api::network::ClusterNetwork::default(),
            dns: true,
            tls_port: Some(crate::incluster::DEFAULT_TLS_PORT),
            token_file: None,
            encryption_provider_config: None,
            service_account_issuer: None,
            api_audiences: Vec::new(),
            node_monitor_grace_period: ferry_controllers::nodelifecycle::DEFAULT_GRACE_PERIOD,
        }
    }
}

/// A running embedded control plane.
pub struct ControlPlane {
    /// The API server.
    pub server: ferry_apiserver::RunningServer,
    /// Where the kubeconfig was written.
    pub kubeconfig: PathBuf,
    /// The node agent, if one runs.
    pub agent: Option<ferry_agent::AgentHandle>,
    /// The agent's Node name, if an agent runs.
    pub node_name: Option<String>,
    /// The cluster DNS, when the gateway address exists.
    pub dns: Option<ferry_dns::RunningDns>,
    /// The API's TLS listener on the gateway, when the gateway address exists.
    pub tls: Option<ferry_apiserver::tls::TlsListener>,
    /// The cluster CA, serving certificate and token key (`<data dir>/pki`).
    pub pki: Option<ferry_apiserver::tls::Pki>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Creates or updates Ferry's CRDs (PodGroup, Queue, Reservation, ResourcePolicy) and the
/// upstream ones it serves unchanged (Kubeflow's v1 jobs, JobSet, Trainer v2's TrainJob and
/// runtimes; `deploy/crds/upstream/`) through the API, as `kubectl apply -f deploy/crds` would.
pub async fn install_crds(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, PostParams};
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The upstream schemas nest deeply (pod templates inside job templates): decode them on a
    // thread with a stack to match, once per process.
    static PARSED: std::sync::OnceLock<Result<Vec<(&str, CustomResourceDefinition)>, String>> =
        std::sync::OnceLock::new();
    let parsed = PARSED.get_or_init(|| {
        std::thread::Builder::new()
            .name("crd-decode".into())
            .stack_size(256 << 20)
            .spawn(|| {
                ferry_api::scheduling::CRDS
                    .into_iter()
                    .chain(ferry_training::crds::UPSTREAM)
                    .map(|(name, yaml)| {
                        serde_saphyr::from_str::<CustomResourceDefinition>(yaml)
                            .map(|crd| (name, crd))
                            .map_err(|e| format!("the embedded CRD {name} is not valid: {e}"))
                    })
                    .collect()
            })
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t.join()
                    .map_err(|_| "decoding the CRDs panicked".to_string())
            })
            .and_then(|r| r)
    });
    let parsed = parsed.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, crd) in parsed {
        let name = *name;
        let mut crd = crd.clone();
        match api.get_opt(name).await? {
            None => {
                api.create(&PostParams::default(), &crd).await?;
            }
            Some(existing) if existing.spec == crd.spec => {}
            Some(existing) => {
                crd.metadata.resource_version = existing.metadata.resource_version;
                api.replace(name, &PostParams::default(), &crd).await?;
            }
        }
    }
    Ok(())
}

/// Creates the standard Kubeflow Trainer runtimes Ferry ships (`deploy/runtimes/`) that are
/// missing; one that exists is left as it is (an administrator may have changed it).
pub async fn install_runtimes(client: &kube::Client) -> anyhow::Result<()> {
    use kube::api::{Api, DynamicObject, PostParams};
    let api: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ferry_training::trainer::cluster_training_runtime_resource(),
    );
    for (name, yaml) in ferry_training::trainer::RUNTIMES {
        let runtime: DynamicObject = serde_saphyr::from_str(yaml)
            .with_context(|| format!("the embedded runtime {name} is not valid"))?;
        // The CRD was created a moment ago: its resource may take a moment to be served.
        let mut tries = 0;
        loop {
            match api.create(&PostParams::default(), &runtime).await {
                Ok(_) => break,
                Err(kube::Error::Api(e)) if e.code == 409 => break,
                Err(kube::Error::Api(e)) if e.code == 404 && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("cannot create {name}")),
            }
        }
    }
    Ok(())
}

/// A kube-rs client from a kubeconfig document.
pub async fn client_from_kubeconfig(yaml: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig: kube::config::Kubeconfig =
        serde_saphyr::from_str(yaml).context("the generated kubeconfig is not valid")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("the generated kubeconfig is not valid")?;
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

/// A kube-rs client of `server` as `user` in `groups`, with a client certificate from the
/// cluster CA: each component gets its own identity and only what its role allows.
pub async fn client_as(
    server: &ferry_apiserver::RunningServer,
    user: &str,
    groups: &[&str],
) -> anyhow::Result<kube::Client> {
    let kubeconfig = server
        .kubeconfig_as(user, groups)
        .with_context(|| format!("cannot issue a client certificate for {user}"))?;
    client_from_kubeconfig(&kubeconfig).await
}

/// Fails with a clear message when `addr` (the scheduler's metrics address) is taken, before
/// anything starts, rather than advertising metrics that another program serves.
fn check_free(addr: SocketAddr) -> anyhow::Result<()> {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "cannot serve the scheduler's metrics on {addr}: the address is in use (another program, perhaps another Ferry, uses it); stop it or pick another address with --metrics-listen"
        ),
        Err(e) => Err(e).with_context(|| {
            format!("cannot serve the scheduler's metrics on {addr} (--metrics-listen)")
        }),
    }
}

/// The node agent's TLS settings: a serving certificate from the cluster CA (CN
/// `system:node:<name>`, SANs the node name, `localhost`, the node IP and loopback), and the
/// cluster CA as the CA of its clients (the API server's kubelet-client certificate).
pub fn agent_tls(
    pki: &ferry_apiserver::tls::Pki,
    node_name: &str,
    node_ip: std::net::IpAddr,
) -> anyhow::Result<ferry_agent::tls::AgentTls> {
    let mut ips = vec![node_ip];
    for loopback in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
    ] {
        if !ips.contains(&loopback) {
            ips.push(loopback);
        }
    }
    let names = ferry_apiserver::tls::ServingNames {
        dns: vec![node_name.to_string(), "localhost".into()],
        ips,
    };
    let serving = pki.issue_serving_cert(&format!("system:node:{node_name}"), &names)?;
    Ok(ferry_agent::tls::AgentTls {
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
        client_ca_pem: pki.ca_cert_pem.clone(),
    })
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

impl ControlPlane {
    /// Starts every component and writes the kubeconfig.
    pub async fn start(config: UpConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                config.data_dir.display()
            )
        })?;
        if let Some(addr) = config.metrics {
            check_free(addr)?;
        }
        let mut server_config = ferry_apiserver::ServerConfig::new(&config.data_dir);
        server_config.listen = config.listen;
        server_config.token_file = config.token_file.clone();
        server_config.encryption_provider_config = config.encryption_provider_config.clone();
        server_config.serving_names = crate::incluster::serving_names(&config.network);
        server_config.network = config.network.clone();
        server_config.service_account_issuer =
            config.service_account_issuer.clone().unwrap_or_else(|| {
                ferry_apiserver::token::default_issuer(&config.network.cluster_domain)
            });
        server_config.api_audiences = config.api_audiences.clone();
        let server = ferry_apiserver::start(server_config).await?;
        let pki = server.pki.clone();
        use ferry_apiserver::auth::{groups, users};
        let kubeconfig = config.data_dir.join("kubeconfig");
        server
            .write_kubeconfig(&kubeconfig)
            .with_context(|| format!("cannot write {}", kubeconfig.display()))?;
        install_crds(&client_from_kubeconfig(&server.kubeconfig()).await?)
            .await
            .context("cannot install Ferry's CRDs")?;
        install_runtimes(&client_from_kubeconfig(&server.kubeconfig()).await?)
            .await
            .context("cannot install the standard training runtimes")?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        if config.scheduler {
            let client = client_as(&server, users::SCHEDULER, &[]).await?;
            let scheduler_config = ferry_scheduler::SchedulerConfig {
                scheduler_names: vec![
                    ferry_api::SCHEDULER_NAME.into(),
                    ferry_api::DEFAULT_SCHEDULER_NAME.into(),
                ],
                metrics_addr: config.metrics,
                ..Default::default()
            };
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(ferry_scheduler::run(
                client,
                scheduler_config,
                shutdown,
            )));
        }
        let mut agent = None;
        let mut node_name = None;
        if let Some(options) = config.agent {
            let mut agent_config = ferry_agent::AgentConfig::new(
                options.node_name.clone(),
                config.data_dir.join("agent"),
            );
            agent_config.gpus = options.gpus;
            agent_config.network = config.network.clone();
            agent_config.sandbox = options.sandbox;
            // Any free port: the Node publishes the one chosen.
            agent_config.log_server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
            if let Some(shim) = options.shim {
                agent_config.shim = shim;
            }
            agent_config.cri_endpoint = options.containerd.clone();
            agent_config.declared_capacity = options.declared_capacity;
            // Heartbeat at least four times per grace period (the kubelet renews its Lease
            // every quarter of its duration), so a short grace period marks no live node.
            let beat =
                (config.node_monitor_grace_period / 4).max(std::time::Duration::from_millis(100));
            if beat < agent_config.heartbeat_interval {
                agent_config.heartbeat_interval = beat;
                agent_config.lease_duration = config.node_monitor_grace_period.max(beat * 2);
            }
            let ca = pki
                .as_ref()
                .context("the node agent needs the cluster CA (its endpoints are mutual TLS)")?;
            agent_config.tls = Some(
                agent_tls(ca, &options.node_name, agent_config.node_ip)
                    .context("cannot issue the node agent's serving certificate")?,
            );
            crate::runtimeclass::install(
                &client_from_kubeconfig(&server.kubeconfig()).await?,
                options.containerd.is_some(),
            )
            .await
            .context("cannot create the RuntimeClasses")?;
            let node_client =
                client_as(&server, &users::node(&options.node_name), &[groups::NODES]).await?;
            let handle = ferry_agent::start(node_client, agent_config)
                .await
                .context("cannot start the node agent")?;
            agent = Some(handle);
            node_name = Some(options.node_name);
            // The node's Service proxy: its nftables table goes when it stops.
            let proxy = ferry_proxy::ProxyConfig::new(config.network.clone());
            let client = client_as(&server, users::PROXY, &[]).await?;
            let shutdown = stopped(stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                if let Err(e) = ferry_proxy::run(client, proxy, shutdown).await {
                    tracing::warn!(error = %e, "no Service proxy on this node: Service IPs are not served");
                }
            }));
        }
        // In-cluster endpoints on the node gateway (the bridge exists once the agent started).
        let tls = match (config.tls_port, &pki) {
            (Some(port), Some(pki)) => {
                let addr = SocketAddr::from((config.network.gateway(), port));
                match server.serve_tls(addr, pki).await {
                    Ok(l) => Some(l),
                    Err(ferry_apiserver::tls::TlsError::Listen { source, .. })
                        if crate::incluster::address_missing(&source) =>
                    {
                        tracing::warn!(%addr, "no in-cluster API: the gateway address is not on this machine (no node bridge)");
                        None
                    }
                    Err(e) => return Err(e).context("cannot serve the in-cluster API"),
                }
            }
            _ => None,
        };
        if config.controllers {
            // An API client like any other: the same code runs with `ferry controllers`.
            let client = client_as(&server, users::CONTROLLER_MANAGER, &[]).await?;
            let signer = match &pki {
                Some(pki) => Some(std::sync::Arc::new(
                    ferry_controllers::csrsigning::Signer::new(
                        &pki.ca_cert_pem,
                        &pki.ca_key_pem,
                        ferry_controllers::csrsigning::DEFAULT_MAX_DURATION,
                    )
                    .context("cannot sign client certificates with the cluster CA")?,
                )),
                None => None,
            };
            let options = ferry_controllers::Options {
                // The API server's TLS listener on the gateway, for in-cluster clients.
                kubernetes_endpoint: tls.as_ref().map(|l| l.addr),
                // Client-certificate requests (`ferry tenant add --user`) signed by the CA.
                signer,
                // The local-path provisioner's directories, under the data directory.
                local_path_root: Some(config.data_dir.join("storage")),
                // Silent nodes: NotReady, tainted, their pods evicted after their tolerations.
                node_lifecycle: ferry_controllers::nodelifecycle::Config {
                    grace_period: config.node_monitor_grace_period,
                },
            };
            tasks.push(tokio::spawn(ferry_controllers::run_with(
                client.clone(),
                options,
                stopped(stop_rx.clone()),
            )));
            // The training controllers (Kubeflow jobs, JobSet, TrainJob), the same identity.
            tasks.push(tokio::spawn(ferry_training::run(
                client,
                stopped(stop_rx.clone()),
            )));
            if let Some(pki) = &pki {
                let client = client_as(&server, users::CONTROLLER_MANAGER, &[]).await?;
                let publisher = ferry_controllers::rootca::run(client, pki.ca_cert_pem.clone());
                let stop = stopped(stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    tokio::select! {
                        () = publisher => {}
                        () = stop => {}
                    }
                }));
            }
        }
        let dns = if config.dns {
            let dns_config = ferry_dns::DnsConfig::for_node(&config.network);
            match ferry_dns::start(client_as(&server, users::DNS, &[]).await?, dns_config).await {
                Ok(d) => Some(d),
                Err(ferry_dns::DnsError::Listen { addr, source })
                    if crate::incluster::address_missing(&source) =>
                {
                    tracing::warn!(%addr, "no cluster DNS: the gateway address is not on this machine (no node bridge)");
                    None
                }
                Err(e) => return Err(e).context("cannot start the cluster DNS"),
            }
        } else {
            None
        };
        Ok(Self {
            dns,
            tls,
            pki,
            server,
            kubeconfig,
            agent,
            node_name,
            stop,
            tasks,
        })
    }

    /// A serving certificate for the node agent of `node_name` at `node_ip`, from the cluster
    /// CA, with the CA its clients must come from: what an agent started next to this plane
    /// (or restarted) needs in [`ferry_agent::AgentConfig::tls`].
    pub fn agent_tls(
        &self,
        node_name: &str,
        node_ip: std::net::IpAddr,
    ) -> anyhow::Result<ferry_agent::tls::AgentTls> {
        let pki = self.pki.as_ref().context("the control plane has no CA")?;
        agent_tls(pki, node_name, node_ip)
    }

    /// A kube-rs client for this control plane as the admin.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.server.kubeconfig()).await
    }

    /// A kube-rs client as `user` in `groups` (a client certificate from the cluster CA).
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> anyhow::Result<kube::Client> {
        client_as(&self.server, user, groups).await
    }

    /// A kubeconfig (YAML) for this control plane that authenticates with the bearer
    /// `token` (a static token or a service-account token).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        self.server.kubeconfig_for_token(token)
    }

    /// A kube-rs client for this control plane that authenticates with the bearer `token`.
    pub async fn client_for_token(&self, token: &str) -> anyhow::Result<kube::Client> {
        client_from_kubeconfig(&self.kubeconfig_for_token(token)).await
    }

    /// Stops every component (running pods keep running; the agent adopts them on restart).
    pub async fn stop(self) {
        if let Some(agent) = self.agent {
            agent.stop().await;
        }
        if let Some(dns) = self.dns {
            dns.shutdown().await;
        }
        if let Some(tls) = self.tls {
            tls.shutdown().await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
        }
        self.server.shutdown().await;
    }
}

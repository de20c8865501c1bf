//! Ferry's node agent: GPU discovery, node registration and heartbeats, and the pods bound to
//! the node run as host processes.
//!
//! The agent is a client of a Kubernetes API server like any other: the same code runs against
//! Ferry's embedded API server and against a real cluster. Embed it with [`run`] (or [`start`]
//! for a handle); the `ferry agent` command line is [`cli::AgentArgs`], and the hidden
//! container-supervisor subcommand is [`shim`].
//!
//! Modules:
//! - [`config`], [`cli`]: settings and the command line.
//! - [`gpu`]: NVML discovery and `--fake-gpus`.
//! - [`node`]: Node registration, status and Lease heartbeats.
//! - The pod watch and one worker per pod (private), with the Kubernetes semantics of
//!   environment and command line ([`pod_env`]), status ([`pod_status`]) and volumes
//!   ([`pod_volumes`]).
//! - [`runtime`], [`shim`], [`mounts`], [`procfs`], [`layout`]: containers as supervised host
//!   processes, and where their state lives.
//! - [`logs`], [`logserver`]: log files and the `containerLogs` endpoint.
//! - [`streaming`]: `exec`, `attach` and `portForward` (WebSocket), on the log server.
//! - [`tls`]: mutual TLS on those endpoints (only the API server is served).
//! - [`events`]: core/v1 Events.

pub mod cli;
pub mod config;
pub mod cri;
pub mod error;
pub mod events;
pub mod gpu;
pub mod layout;
pub mod logs;
pub mod logserver;
mod manager;
pub mod mounts;
pub mod node;
mod pod;
pub mod procfs;
pub mod runtime;
pub mod sandbox;
pub mod shim;
pub mod stats;
pub mod streaming;
pub mod tls;

pub use config::AgentConfig;
pub use error::AgentError;
/// How a container's environment and command line are built.
pub use pod::env as pod_env;
/// Startup, liveness and readiness probes.
pub use pod::probes as pod_probes;
/// How the pod status is computed.
pub use pod::status as pod_status;
/// How volumes map to host paths.
pub use pod::volumes as pod_volumes;

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::events::EventRecorder;
use crate::gpu::GpuInventory;
use crate::layout::Layout;
use crate::logserver::{LogIndex, LogServerState};
use crate::node::{HostFacts, NodeReporter};
use crate::pod::Shared;
use crate::pod_env::NodeFacts;

/// A running agent. Dropping it stops the agent abruptly (as a crash would); containers keep
/// running either way and are re-adopted by the next agent with the same data directory.
pub struct AgentHandle {
    log_server_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl AgentHandle {
    /// Where the log server listens (the port is published on the Node).
    pub fn log_server_addr(&self) -> SocketAddr {
        self.log_server_addr
    }

    /// Stops the agent cleanly: heartbeats, the pod watch and the log server end; running
    /// containers are left running.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("the agent did not stop within 10s; aborting");
            self.tasks.abort_all();
        }
        tracing::info!("agent stopped; running containers were left running");
    }
}

/// Starts the agent: GPU discovery, the log server, then (in the background) node registration,
/// heartbeats and the pods. Returns once the log server listens.
pub async fn start(
    client: kube::Client,
    mut config: AgentConfig,
) -> Result<AgentHandle, AgentError> {
    config.validate()?;
    // Shims outlive the agent and must not depend on its working directory.
    config.data_dir = std::path::absolute(&config.data_dir)
        .map_err(|e| AgentError::io("cannot resolve the data directory", &config.data_dir, e))?;
    let layout = Layout::new(&config.data_dir);
    std::fs::create_dir_all(layout.pods())
        .map_err(|e| AgentError::io("cannot create the data directory", layout.pods(), e))?;
    // The agent's state (specs with the containers' environment, secret volumes where no
    // tmpfs can be mounted) is private to the agent's user: containers see their volumes
    // through bind mounts, never through these paths.
    let _ = std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
    let _ = std::fs::set_permissions(layout.pods(), std::fs::Permissions::from_mode(0o700));

    let source = config.gpus.clone();
    let node_name = config.node_name.clone();
    let inventory =
        tokio::task::spawn_blocking(move || GpuInventory::discover(&source, &node_name))
            .await
            .map_err(|e| AgentError::Config(format!("GPU discovery failed: {e}")))?;
    match inventory.note() {
        Some(note) if inventory.devices().is_empty() => tracing::info!("no GPUs: {note}"),
        _ => tracing::info!(
            count = inventory.devices().len(),
            healthy = inventory.healthy_count(),
            fake = inventory.is_fake(),
            "GPUs found"
        ),
    }
    let mut facts = HostFacts::gather(&config.data_dir);
    if let Some((cpu_milli, memory_bytes)) = config.declared_capacity {
        tracing::info!(
            cpu_milli,
            memory_bytes,
            "declared capacity instead of the machine's"
        );
        facts.cpu_milli = cpu_milli;
        facts.memory_bytes = memory_bytes;
    }

    let tls_config = match &config.tls {
        Some(tls) => tls.server_config()?,
        None => {
            return Err(AgentError::Config(
                "the agent's endpoints (logs, exec, attach, port-forward, stats) are served over mutual TLS only: give --tls-cert-file, --tls-private-key-file and --client-ca-file".into(),
            ));
        }
    };
    let listener = tokio::net::TcpListener::bind(config.log_server_addr)
        .await
        .map_err(|source| AgentError::LogServerBind {
            addr: config.log_server_addr,
            source,
        })?;
    let log_server_addr = listener
        .local_addr()
        .map_err(|source| AgentError::LogServerBind {
            addr: config.log_server_addr,
            source,
        })?;
    tracing::info!(node = %config.node_name, %log_server_addr, data_dir = %config.data_dir.display(), "node agent starting");

    let log_index = Arc::new(LogIndex::default());
    for meta in pod::known_pods(&layout) {
        log_index.insert(&meta.namespace, &meta.name, &meta.uid);
    }
    let config = Arc::new(config);
    let gpus = Arc::new(Mutex::new(inventory));
    let events = EventRecorder::new(client.clone(), &config.node_name);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();

    let state = LogServerState {
        layout: layout.clone(),
        index: log_index.clone(),
        node_name: config.node_name.clone(),
        shutdown: shutdown_rx.clone(),
    };
    let mut stop = shutdown_rx.clone();
    tasks.spawn(tls::serve(
        listener,
        tls_config,
        logserver::router(state),
        async move {
            let _ = stop.changed().await;
        },
    ));

    let (mut sandbox, sandbox_note) = sandbox::SandboxContext::for_config(&config);
    match sandbox_note {
        Some(note) => tracing::warn!("{note}"),
        None => tracing::info!(mode = ?sandbox.mode, "pod sandboxes"),
    }
    // The node bridge exists (with the gateway address) once `start` returns.
    if let Err(e) = sandbox.prepare_node(&layout.pods()).await {
        if config.sandbox == sandbox::SandboxMode::Auto {
            tracing::warn!(error = %e, "cannot prepare the pod network; pods share the host's network, cgroups and /etc (no sandbox)");
            sandbox.mode = sandbox::SandboxMode::Host;
        } else {
            return Err(AgentError::Config(format!("pod sandboxes: {e}")));
        }
    }
    let cri = match &config.cri_endpoint {
        Some(socket) => {
            let cri = cri::Cri::new(socket).map_err(|e| AgentError::Config(e.to_string()))?;
            tracing::info!(endpoint = %socket.display(), "pods with images run under containerd (CRI)");
            Some(cri)
        }
        None => None,
    };
    let shared = Arc::new(Shared {
        client: client.clone(),
        config: config.clone(),
        layout,
        node: NodeFacts {
            node_ip: config.node_ip.to_string(),
            cpu_milli: facts.cpu_milli,
            memory_bytes: facts.memory_bytes,
            pod_ip: None,
        },
        gpus: gpus.clone(),
        allocations: Mutex::default(),
        events: events.clone(),
        log_index,
        sandbox,
        cri,
    });
    let reporter = NodeReporter {
        client,
        config,
        facts,
        gpus,
        log_port: log_server_addr.port(),
        events,
    };
    let mut shutdown = shutdown_rx.clone();
    tasks.spawn(async move {
        let Some(node_uid) = node::register_with_retry(&reporter, &mut shutdown).await else {
            return;
        };
        tracing::info!(node = %reporter.config.node_name, "node registered");
        // One task for both, so that aborting the agent (dropping its handle) stops both.
        let heartbeat = reporter.run(node_uid, shutdown.clone());
        tokio::join!(heartbeat, manager::run(shared, shutdown));
    });
    Ok(AgentHandle {
        log_server_addr,
        shutdown: shutdown_tx,
        tasks,
    })
}

/// Runs the agent until `shutdown` resolves, then stops it cleanly (containers keep running).
pub async fn run(
    client: kube::Client,
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let handle = start(client, config).await?;
    shutdown.await;
    handle.stop().await;
    Ok(())
}

//! `ferry bench sandbox`: pod start latency (create call to phase Running) with the pod sandbox
//! (network namespace through the CNI plugins, `/etc` files, mount namespace) beside bare host
//! processes (`--sandbox host`), measured in the same run on the same machine.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

use crate::bench::{has_node, ms, submit_to_running};
use crate::up::{AgentOptions, ControlPlane, UpConfig};
use ferry_agent::sandbox::SandboxMode;

/// Arguments of `ferry bench sandbox`.
#[derive(Debug, Args)]
pub struct SandboxBenchArgs {
    /// Pods whose submit-to-running latency is measured, per mode.
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// The test network slot (its own bridge, ranges and tables; see
    /// `ClusterNetwork::for_index`), away from `ferry up`'s and the tests' (1..=200).
    #[arg(long, default_value_t = 240)]
    pub network_slot: u8,
}

async fn measure(mode: SandboxMode, pods: usize, slot: u8) -> anyhow::Result<(Duration, Duration)> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let mut config = UpConfig::new(tmp.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.network = ferry_api::network::ClusterNetwork::for_index(slot);
    let mut agent = AgentOptions::new();
    agent.node_name = "bench-node".into();
    agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
    agent.sandbox = mode;
    config.agent = Some(agent);
    let network = config.network.clone();
    let plane = ControlPlane::start(config).await?;
    let client = plane.client().await?;
    anyhow::ensure!(has_node(&client).await?, "the node never registered");
    let result = submit_to_running(&client, pods).await;
    // Let the agent tear every pod down before it stops.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    for _ in 0..600 {
        if api.list(&Default::default()).await?.items.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    plane.stop().await;
    if mode == SandboxMode::Isolated {
        ferry_agent::sandbox::network::remove_node(&network);
    }
    result
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: SandboxBenchArgs) -> anyhow::Result<()> {
    println!(
        "pod start latency ({} pods per mode, one at a time, create call to phase Running):",
        args.pods
    );
    let (h50, h99) = measure(SandboxMode::Host, args.pods, args.network_slot).await?;
    let (s50, s99) = measure(SandboxMode::Isolated, args.pods, args.network_slot).await?;
    println!(
        "  sandbox (netns + CNI bridge/host-local/portmap, /etc, mount ns)  p50 {:>8.2} ms   p99 {:>8.2} ms",
        ms(s50),
        ms(s99)
    );
    println!(
        "  baseline: bare host process (--sandbox host)                     p50 {:>8.2} ms   p99 {:>8.2} ms",
        ms(h50),
        ms(h99)
    );
    println!(
        "  the sandbox adds p50 {:+.2} ms, p99 {:+.2} ms",
        ms(s50) - ms(h50),
        ms(s99) - ms(h99)
    );
    Ok(())
}

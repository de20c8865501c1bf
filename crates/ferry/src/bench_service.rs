//! `ferry bench service`: HTTP request latency through a Service's ClusterIP beside the same
//! requests straight to the pod IP, in one run against one server pod. Every request opens
//! a new connection (as a Service client without keep-alive does), so the figures include
//! the DNAT of the connection's first packet and conntrack's handling of the rest.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::up::{AgentOptions, ControlPlane, UpConfig};

/// Arguments of `ferry bench service`.
#[derive(Debug, Args)]
pub struct ServiceBenchArgs {
    /// Requests to each target (ClusterIP and pod IP, interleaved).
    #[arg(long, default_value_t = 2_000)]
    pub requests: usize,
    /// The test-network slot of the benchmark's cluster (`ClusterNetwork::for_index`), so it
    /// never shares ranges or tables with `ferry up` or with tests.
    #[arg(long, default_value_t = 249)]
    pub slot: u8,
}

async fn get(addr: SocketAddr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).await?;
    let took = started.elapsed();
    anyhow::ensure!(
        buf.starts_with(b"HTTP/1.0 200"),
        "{addr} did not answer 200"
    );
    Ok(took)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn nft_has(table: &str, needle: &str) -> bool {
    std::process::Command::new("nft")
        .args(["list", "table", "ip", table])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(needle))
}

async fn wait(what: &str, mut check: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Runs the benchmark and prints both latency distributions.
pub async fn run(args: ServiceBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let network = ferry_api::network::ClusterNetwork::for_index(args.slot);
    let mut config = UpConfig::new(dir.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.metrics = None;
    config.network = network.clone();
    let mut agent = AgentOptions::new();
    agent.node_name = "bench-node".into();
    agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
    config.agent = Some(agent);
    let _table = ferry_proxy::TableGuard(network.clone());
    let plane = ControlPlane::start(config).await?;
    let result = measure(&plane, &network, dir.path(), args.requests).await;
    plane.stop().await;
    result
}

async fn measure(
    plane: &ControlPlane,
    network: &ferry_api::network::ClusterNetwork,
    dir: &std::path::Path,
    requests: usize,
) -> anyhow::Result<()> {
    let client = plane.client().await?;
    let table = network.nft_table.clone();
    wait(
        "the Service proxy's table (root and nftables needed)",
        async || nft_has(&table, "service-ips"),
    )
    .await?;
    // A free port for the server (pods share the host network where there is no sandbox).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("index.html"), "bench\n")?;
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench-server", "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox",
            "command": ["timeout", "600", "python3", "-m", "http.server", port.to_string(),
                        "--bind", "0.0.0.0", "--directory", www.display().to_string()],
            "ports": [{"name": "http", "containerPort": port}]}]}
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&PostParams::default(), &pod).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {"selector": {"app": "bench"},
                 "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
    }))?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let svc = services.create(&PostParams::default(), &svc).await?;
    let cluster_ip: Ipv4Addr = svc
        .spec
        .and_then(|s| s.cluster_ip)
        .context("no cluster IP")?
        .parse()?;
    let mut pod_ip = None;
    wait("the server pod to be ready", async || {
        let Ok(p) = pods.get("bench-server").await else {
            return false;
        };
        let status = p.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        pod_ip = status.pod_ip.and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        ready && pod_ip.is_some()
    })
    .await?;
    let pod_addr = SocketAddr::from((pod_ip.context("no pod IP")?, port));
    let svc_addr = SocketAddr::from((cluster_ip, 80));
    wait("the Service rule", async || {
        nft_has(&table, &format!("{cluster_ip} . tcp . 80 : goto"))
    })
    .await?;
    wait("the server to answer", async || get(pod_addr).await.is_ok()).await?;
    for _ in 0..50 {
        get(pod_addr).await?;
        get(svc_addr).await?;
    }
    let mut direct = Vec::with_capacity(requests);
    let mut through = Vec::with_capacity(requests);
    for i in 0..requests {
        // Interleaved, alternating which goes first, so both see the same conditions.
        if i % 2 == 0 {
            direct.push(get(pod_addr).await?);
            through.push(get(svc_addr).await?);
        } else {
            through.push(get(svc_addr).await?);
            direct.push(get(pod_addr).await?);
        }
    }
    direct.sort();
    through.sort();
    let row = |name: &str, v: &[Duration]| {
        println!(
            "  {name:<22} p50 {:>7.3} ms   p99 {:>7.3} ms",
            percentile(v, 0.5),
            percentile(v, 0.99)
        );
    };
    println!(
        "Service request latency: {requests} HTTP GETs each, a new connection per request, one server pod ({pod_addr})"
    );
    row("pod IP (baseline)", &direct);
    row(&format!("ClusterIP {cluster_ip}"), &through);
    println!(
        "  ClusterIP adds         p50 {:>+7.3} ms   p99 {:>+7.3} ms   (target: under 0.2 ms at p99)",
        percentile(&through, 0.5) - percentile(&direct, 0.5),
        percentile(&through, 0.99) - percentile(&direct, 0.99)
    );
    let now = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("bench-server", &now).await?;
    wait("the server pod to go", async || {
        matches!(pods.get_opt("bench-server").await, Ok(None))
    })
    .await?;
    Ok(())
}

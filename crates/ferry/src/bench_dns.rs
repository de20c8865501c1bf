//! `ferry bench dns`: latency of a Service-name lookup at Ferry's cluster DNS (p50/p99),
//! beside a baseline from the same run: a UDP echo server on the same kind of address,
//! answered by the same client loop (the cost of the transport and the client alone).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ferry_dns::proto::rr::RecordType;
use ferry_dns::{DnsListener, Zone, ZoneConfig, ZoneHandle};
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Arguments of `ferry bench dns`.
#[derive(Debug, Args)]
pub struct DnsBenchArgs {
    /// Lookups measured (after 200 of warm-up).
    #[arg(long, default_value_t = 20_000)]
    pub samples: usize,
    /// Services in the zone of the in-process server.
    #[arg(long, default_value_t = 1_000)]
    pub services: usize,
    /// Measure a running cluster DNS instead (such as `ferry up`'s, `<gateway>:53`), asking
    /// for `--name`.
    #[arg(long)]
    pub server: Option<SocketAddr>,
    /// The name asked with `--server`.
    #[arg(long, default_value = "kubernetes.default.svc.cluster.local.")]
    pub name: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A zone of `n` ClusterIP Services in namespace `bench`.
fn zone(n: usize) -> Zone {
    let services: Vec<Service> = (0..n)
        .map(|i| Service {
            metadata: ObjectMeta {
                name: Some(format!("svc-{i}")),
                namespace: Some("bench".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(format!("10.96.{}.{}", 1 + i / 250, 1 + i % 250)),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let network = ferry_api::network::ClusterNetwork::default();
    Zone::build(ZoneConfig::from_network(&network), &services, &[], &[], 1)
}

/// Sends `query` to `server` `samples` times (one outstanding), returning sorted latencies.
async fn measure(
    server: SocketAddr,
    query: &[u8],
    samples: usize,
    check: impl Fn(&[u8]) -> bool,
) -> anyhow::Result<Vec<Duration>> {
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(
        if server.is_ipv4() {
            "0.0.0.0".parse()?
        } else {
            "::".parse()?
        },
        0,
    ))
    .await?;
    socket.connect(server).await?;
    let mut buf = vec![0u8; 4096];
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples + 200 {
        let start = Instant::now();
        socket.send(query).await?;
        let n = tokio::time::timeout(Duration::from_secs(2), socket.recv(&mut buf))
            .await
            .with_context(|| format!("no answer from {server} within 2 s"))??;
        let took = start.elapsed();
        anyhow::ensure!(
            check(buf.get(..n).unwrap_or_default()),
            "unexpected answer from {server}"
        );
        if i >= 200 {
            out.push(took);
        }
    }
    out.sort();
    Ok(out)
}

/// A UDP echo server on `addr` (the baseline).
async fn echo(addr: SocketAddr) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let socket = tokio::net::UdpSocket::bind(addr).await?;
    let bound = socket.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(buf.get(..n).unwrap_or_default(), peer).await;
        }
    });
    Ok((bound, task))
}

fn answered(bytes: &[u8]) -> bool {
    ferry_dns::proto::op::Message::from_vec(bytes).is_ok_and(|m| !m.answers.is_empty())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: DnsBenchArgs) -> anyhow::Result<()> {
    let (server, name, listener) = match args.server {
        Some(s) => (s, args.name.clone(), None),
        None => {
            let l = DnsListener::bind("127.0.0.1:0".parse()?, ZoneHandle::new(zone(args.services)))
                .await?;
            let name = format!("svc-{}.bench.svc.cluster.local.", args.services / 2);
            (l.addr, name, Some(l))
        }
    };
    let query = ferry_dns::client::query_message(7, &name, RecordType::A)?;
    let dns = measure(server, &query, args.samples, answered).await?;
    let (echo_addr, echo_task) = echo(SocketAddr::new(server.ip(), 0)).await?;
    let base = measure(echo_addr, &query, args.samples, |b| b == query.as_slice()).await?;
    echo_task.abort();
    if let Some(l) = listener {
        l.shutdown().await;
    }
    println!(
        "DNS lookup of a Service name ({name} A, UDP, one query in flight, {} samples)",
        args.samples
    );
    if args.server.is_none() {
        println!(
            "  zone: {} Services, in-process server on {server}",
            args.services
        );
    }
    println!(
        "  Ferry cluster DNS         p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(percentile(&dns, 0.5)),
        us(percentile(&dns, 0.99))
    );
    println!(
        "  baseline: UDP echo        p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(percentile(&base, 0.5)),
        us(percentile(&base, 0.99))
    );
    println!(
        "  DNS work (difference)     p50 {:>8.1} µs   p99 {:>8.1} µs",
        us(percentile(&dns, 0.5).saturating_sub(percentile(&base, 0.5))),
        us(percentile(&dns, 0.99).saturating_sub(percentile(&base, 0.99)))
    );
    Ok(())
}

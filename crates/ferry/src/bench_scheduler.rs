//! `ferry bench scheduler`: end-to-end binding throughput of the live scheduler through the
//! embedded API server, beside the raw Binding throughput of the same server, and the
//! scheduler's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::up::{ControlPlane, UpConfig};

/// Arguments of `ferry bench scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerBenchArgs {
    /// Nodes (8 GPUs each).
    #[arg(long, default_value_t = 5_000)]
    pub nodes: usize,
    /// Gangs (PodGroups) of pending pods.
    #[arg(long, default_value_t = 5_000)]
    pub gangs: usize,
    /// Pods per gang (half ask for one whole GPU, half for half a GPU).
    #[arg(long, default_value_t = 10)]
    pub gang_size: usize,
    /// Queues the gangs are spread over.
    #[arg(long, default_value_t = 20)]
    pub queues: usize,
    /// Pods bound directly (no scheduling) for the baseline.
    #[arg(long, default_value_t = 10_000)]
    pub baseline_pods: usize,
}

async fn create_all<T, F>(
    api: Api<T>,
    items: Vec<T>,
    concurrency: usize,
    what: &str,
    label: F,
) -> anyhow::Result<()>
where
    T: kube::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
    F: Fn(usize) -> bool,
{
    let total = items.len();
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let results: Vec<Result<T, kube::Error>> = futures::stream::iter(items)
        .map(|item| {
            let api = api.clone();
            let done = done.clone();
            async move {
                let r = api.create(&PostParams::default(), &item).await;
                done.fetch_add(1, Ordering::Relaxed);
                r
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.with_context(|| format!("cannot create {what}"))?;
    }
    if label(total) {
        println!(
            "  created {total} {what} in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn node(i: usize) -> anyhow::Result<Node> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i:05}"), "labels": {"ferry.dev/gpu-model": "H100"}},
        "status": {
            "capacity": {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "128", "memory": "1Ti", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))?)
}

fn pod(
    ns: &str,
    name: &str,
    group: Option<&str>,
    whole_gpu: bool,
    scheduler: &str,
) -> anyhow::Result<Pod> {
    let limits = if whole_gpu {
        json!({"nvidia.com/gpu": "1"})
    } else {
        json!({"ferry.dev/gpu-milli": "500"})
    };
    let mut labels = serde_json::Map::new();
    if let Some(g) = group {
        labels.insert(ferry_api::scheduling::POD_GROUP_LABEL.into(), json!(g));
    }
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"schedulerName": scheduler, "containers": [{"name": "main", "image": "trainer", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": limits}}]}
    }))?)
}

/// Reads a field of `/proc/<pid>/status` in kB.
fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: SchedulerBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut config = UpConfig::new(tmp.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.scheduler = false;
    config.agent = None;
    let plane = ControlPlane::start(config).await?;
    let client = plane.client().await?;
    let total_pods = args.gangs * args.gang_size;
    println!(
        "ferry bench scheduler: {} nodes / {} GPUs, {} pending pods in {} gangs over {} queues",
        args.nodes,
        args.nodes * 8,
        total_pods,
        args.gangs,
        args.queues
    );
    // The cluster: nodes, namespaces bound to queues, queues with guarantees.
    let nodes: Vec<Node> = (0..args.nodes).map(node).collect::<anyhow::Result<_>>()?;
    create_all(
        Api::<Node>::all(client.clone()),
        nodes,
        128,
        "nodes",
        |_| true,
    )
    .await?;
    let gpus_per_queue = args.nodes * 8 / args.queues.max(1);
    let mut queues = Vec::new();
    let mut namespaces = Vec::new();
    for q in 0..args.queues {
        queues.push(serde_json::from_value::<ferry_api::scheduling::Queue>(
            json!({
                "metadata": {"name": format!("queue-{q:02}")},
                "spec": {"resources": [{"name": "nvidia.com/gpu", "guaranteed": gpus_per_queue}]}
            }),
        )?);
        namespaces.push(serde_json::from_value::<Namespace>(json!({
            "metadata": {"name": format!("team-{q:02}"), "labels": {ferry_api::scheduling::QUEUE_LABEL: format!("queue-{q:02}")}}
        }))?);
    }
    create_all(Api::all(client.clone()), queues, 16, "queues", |_| true).await?;
    create_all(
        Api::all(client.clone()),
        namespaces,
        16,
        "namespaces",
        |_| true,
    )
    .await?;
    let mut groups = Vec::new();
    let mut pods = Vec::new();
    for g in 0..args.gangs {
        let ns = format!("team-{:02}", g % args.queues.max(1));
        let name = format!("gang-{g:05}");
        groups.push(serde_json::from_value::<ferry_api::scheduling::PodGroup>(
            json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"minMember": args.gang_size}
            }),
        )?);
        for p in 0..args.gang_size {
            pods.push(pod(
                &ns,
                &format!("{name}-{p}"),
                Some(&name),
                p % 2 == 0,
                ferry_api::SCHEDULER_NAME,
            )?);
        }
    }
    for g in groups {
        let ns = g.metadata.namespace.clone().unwrap_or_default();
        Api::<ferry_api::scheduling::PodGroup>::namespaced(client.clone(), &ns)
            .create(&PostParams::default(), &g)
            .await?;
    }
    println!("  created {} PodGroups", args.gangs);
    let by_ns: Vec<(String, Vec<Pod>)> = {
        let mut m: std::collections::BTreeMap<String, Vec<Pod>> = Default::default();
        for p in pods {
            m.entry(p.metadata.namespace.clone().unwrap_or_default())
                .or_default()
                .push(p);
        }
        m.into_iter().collect()
    };
    let started = Instant::now();
    for (ns, list) in by_ns {
        create_all(
            Api::<Pod>::namespaced(client.clone(), &ns),
            list,
            128,
            "pods",
            |_| false,
        )
        .await?;
    }
    println!(
        "  created {total_pods} pods in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The scheduler, as its own process, so its memory can be read.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("scheduler")
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .args(["--metrics-listen", "127.0.0.1:0"])
        .env(
            "RUST_LOG",
            std::env::var("FERRY_SCHEDULER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `ferry scheduler`")?;
    let pid = child.id().unwrap_or(0);
    // Count bound pods in the server's own store (no client watch competing for the CPU).
    let store = plane.server.service.store.clone();
    let count_bound = move || {
        store
            .list("pods", None, None, 0, |v| {
                v.pointer("/spec/nodeName").is_some_and(|n| n.is_string())
                    && v.pointer("/metadata/namespace")
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| n.starts_with("team-"))
            })
            .items
            .len()
    };
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut first_bind = None;
    let mut last_print = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let bound = count_bound();
        if bound > 0 && first_bind.is_none() {
            first_bind = Some(started.elapsed());
        }
        if last_print.elapsed() > Duration::from_secs(2) || bound >= total_pods {
            peak_rss = peak_rss.max(proc_status_kb(pid, "VmRSS:").unwrap_or(0));
            println!(
                "  {bound:>6} pods bound after {:.1} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if bound >= total_pods {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("only {bound} of {total_pods} pods bound after 10 minutes");
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let first = first_bind.map_or(0.0, |d| d.as_secs_f64());
    let hwm = proc_status_kb(pid, "VmHWM:").unwrap_or(peak_rss);
    child.kill().await.ok();
    let throughput = total_pods as f64 / (elapsed - first).max(1e-3);

    // Baseline: Bindings posted directly with the nodes already chosen.
    let baseline_pods: Vec<Pod> = (0..args.baseline_pods)
        .map(|i| pod("default", &format!("direct-{i}"), None, false, "none"))
        .collect::<anyhow::Result<_>>()?;
    let default_pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    create_all(
        default_pods.clone(),
        baseline_pods,
        128,
        "baseline pods",
        |_| false,
    )
    .await?;
    let started = Instant::now();
    let results: Vec<Result<serde_json::Value, kube::Error>> = futures::stream::iter(0..args.baseline_pods)
        .map(|i| {
            let api = default_pods.clone();
            let nodes = args.nodes.max(1);
            async move {
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": format!("direct-{i}")},
                    "target": {"kind": "Node", "name": format!("node-{:05}", i % nodes)}});
                api.create_subresource("binding", &format!("direct-{i}"), &PostParams::default(), &binding).await
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    for r in results {
        r.context("a direct binding failed")?;
    }
    let baseline = args.baseline_pods as f64 / started.elapsed().as_secs_f64();
    println!();
    println!(
        "end-to-end binding throughput (first to last binding; the scheduler runs in its own process):"
    );
    println!(
        "  ferry scheduler      {throughput:>9.0} pods/s ({total_pods} pods bound in {:.1} s)",
        elapsed - first
    );
    println!(
        "  (before its first binding the scheduler started, synced {total_pods} pods and {} nodes, and decided: {first:.1} s)",
        args.nodes
    );
    println!("  baseline: Bindings posted directly, nodes chosen in advance, 256 concurrent");
    println!("                       {baseline:>9.0} pods/s");
    println!(
        "  ratio                {:>9.2}x of the API server's own binding rate",
        throughput / baseline
    );
    println!(
        "scheduler memory: peak RSS {:.0} MiB ({:.1} KiB per pod, {:.1} KiB per node)",
        hwm as f64 / 1024.0,
        hwm as f64 / total_pods as f64,
        hwm as f64 / args.nodes as f64
    );
    plane.stop().await;
    Ok(())
}

//! `ferry bench api`: throughput and latency of the embedded control plane, each printed
//! beside a baseline measured in the same run on the same machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;

use crate::up::{ControlPlane, UpConfig};

/// Arguments of `ferry bench api`.
#[derive(Debug, Args)]
pub struct ApiBenchArgs {
    /// Objects created in the throughput run.
    #[arg(long, default_value_t = 20_000)]
    pub objects: usize,
    /// Concurrent clients in the throughput run.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Objects whose watch delivery latency is measured.
    #[arg(long, default_value_t = 2_000)]
    pub watch_samples: usize,
    /// Pods whose submit-to-running latency is measured (needs the node agent).
    #[arg(long, default_value_t = 30)]
    pub pods: usize,
    /// Pods created, changed and deleted in the memory run (0: skip it).
    #[arg(long, default_value_t = 2_000)]
    pub memory_pods: usize,
    /// In the memory run, run the pods on the node to completion (`true`) instead of leaving
    /// them unscheduled: the scheduler, the agent and its workers take part.
    #[arg(long)]
    pub memory_on_node: bool,
    /// Memory runs, one after the other.
    #[arg(long, default_value_t = 2)]
    pub memory_cycles: usize,
    /// Where to put the temporary control plane (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Percentile of sorted durations.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ApiBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    println!("ferry bench api: control plane in {}", dir.display());
    let mut config = UpConfig::new(dir.join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    let plane = ControlPlane::start(config).await?;
    let client = plane.client().await?;

    // 0. Memory that comes back: a fresh control plane is the baseline; a second cycle tells
    // a leak (it grows again) from memory the allocator or the history keeps (it does not).
    if args.memory_pods > 0 {
        let baseline = rss_mb();
        println!();
        if args.memory_on_node {
            println!(
                "memory ({} pods run to completion on the node, then deleted, per cycle; resident set of this process, MB):",
                args.memory_pods
            );
        } else {
            println!(
                "memory ({} pods created, changed 3 times, deleted, per cycle; resident set of this process, MB):",
                args.memory_pods
            );
        }
        println!("  baseline: the fresh control plane {baseline:>7.1}");
        println!(
            "  cycle     peak  after delete  after malloc_trim  history (events, MB encoded)  objects left (Events)"
        );
        for cycle in 1..=args.memory_cycles {
            let m =
                memory_after_delete(&plane, &client, args.memory_pods, args.memory_on_node).await?;
            println!(
                "  {cycle:>5} {:>8.1} {:>13.1} {:>18.1}  {:>10} {:>6.1}              {:>6} ({})",
                m.peak,
                m.after_delete,
                m.after_trim,
                m.history_events,
                m.history_bytes as f64 / 1e6,
                m.objects_left,
                m.events_left
            );
        }
    }

    // 1. Durable create throughput, against naive one-transaction-per-write SQLite.
    let baseline = naive_sqlite_writes(&dir.join("baseline.db"), 2_000)?;
    let throughput = create_throughput(&client, args.objects, args.clients).await?;
    println!();
    println!(
        "create throughput ({} ConfigMaps, {} concurrent clients over HTTP):",
        args.objects, args.clients
    );
    println!(
        "  ferry API server        {throughput:>10.0} objects/s (each acknowledged after fsync)"
    );
    println!("  baseline: SQLite WAL, one fsync'd transaction per insert, in-process, no HTTP");
    println!("                          {baseline:>10.0} writes/s");
    println!("  ratio                   {:>10.2}x", throughput / baseline);

    // 2. Watch delivery latency, against a plain HTTP round trip to the same server.
    let (p50, p99) = watch_latency(&client, args.watch_samples).await?;
    let (b50, b99) = round_trip_latency(&client, args.watch_samples).await?;
    println!();
    println!(
        "watch delivery latency ({} creates, one at a time, write call to event):",
        args.watch_samples
    );
    println!("  p50 {:>8.2} ms   p99 {:>8.2} ms", ms(p50), ms(p99));
    println!("  baseline: GET /healthz round trip on the same server");
    println!("  p50 {:>8.2} ms   p99 {:>8.2} ms", ms(b50), ms(b99));
    println!(
        "  ratio p50 {:.2}x, p99 {:.2}x",
        ms(p50) / ms(b50).max(1e-6),
        ms(p99) / ms(b99).max(1e-6)
    );

    // 3. Submit-to-running, against starting the same process directly.
    if has_node(&client).await? {
        let (s50, s99) = submit_to_running(&client, args.pods).await?;
        let (d50, d99) = direct_spawn_latency(args.pods)?;
        println!();
        println!(
            "submit-to-running latency ({} pods, create call to phase Running):",
            args.pods
        );
        println!("  p50 {:>8.2} ms   p99 {:>8.2} ms", ms(s50), ms(s99));
        println!("  baseline: fork/exec of the same command by this process");
        println!("  p50 {:>8.2} ms   p99 {:>8.2} ms", ms(d50), ms(d99));
    } else {
        println!();
        println!("submit-to-running: skipped (no node registered)");
    }
    plane.stop().await;
    Ok(())
}

fn naive_sqlite_writes(path: &std::path::Path, n: usize) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(path)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.execute_batch("PRAGMA synchronous=FULL; CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)")?;
    let value = vec![b'x'; 300];
    let started = Instant::now();
    for i in 0..n {
        conn.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2)",
            rusqlite::params![i.to_string(), value],
        )?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn create_throughput(
    client: &kube::Client,
    objects: usize,
    clients: usize,
) -> anyhow::Result<f64> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1) {
        let api = api.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= objects {
                    return Ok::<(), kube::Error>(());
                }
                let cm: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("bench-{i}"), "labels": {"bench": "create"}},
                    "data": {"payload": "x".repeat(200)},
                }))
                .expect("static object");
                api.create(&PostParams::default(), &cm).await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(objects as f64 / started.elapsed().as_secs_f64())
}

async fn watch_latency(
    client: &kube::Client,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-public");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch_api = api.clone();
    let watcher = tokio::spawn(async move {
        let stream = watch_api
            .watch(&WatchParams::default().timeout(290), "0")
            .await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let WatchEvent::Added(cm) = event? {
                let _ = tx.send((cm.metadata.name.unwrap_or_default(), Instant::now()));
            }
        }
        Ok::<(), kube::Error>(())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut latencies = Vec::with_capacity(samples);
    for i in 0..samples {
        let name = format!("watch-{i}");
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        let sent = Instant::now();
        api.create(&PostParams::default(), &cm).await?;
        loop {
            let (got, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .context("a watch event did not arrive within 10 s")?
                .context("the watch ended")?;
            if got == name {
                latencies.push(at - sent);
                break;
            }
        }
    }
    watcher.abort();
    latencies.sort();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

async fn round_trip_latency(
    client: &kube::Client,
    samples: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let request = http::Request::get("/healthz").body(Vec::new())?;
        let started = Instant::now();
        client.request_text(request).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

pub(crate) async fn has_node(client: &kube::Client) -> anyhow::Result<bool> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for _ in 0..50 {
        if !nodes.list(&Default::default()).await?.items.is_empty() {
            return Ok(true);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(false)
}

pub(crate) async fn submit_to_running(
    client: &kube::Client,
    pods: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut latencies = Vec::with_capacity(pods);
    for i in 0..pods {
        let name = format!("latency-{i}");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "30"]}]}
        }))?;
        let stream = api
            .watch(
                &WatchParams::default()
                    .fields(&format!("metadata.name={name}"))
                    .timeout(30),
                "0",
            )
            .await?;
        let sent = Instant::now();
        api.create(&PostParams::default(), &pod).await?;
        let mut stream = std::pin::pin!(stream);
        let mut running = None;
        while let Some(event) = stream.next().await {
            if let WatchEvent::Modified(p) | WatchEvent::Added(p) = event?
                && p.status.and_then(|s| s.phase).as_deref() == Some("Running")
            {
                running = Some(sent.elapsed());
                break;
            }
        }
        latencies.push(running.with_context(|| format!("pod {name} never reached Running"))?);
        api.delete(&name, &Default::default()).await?;
    }
    latencies.sort();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

fn direct_spawn_latency(samples: usize) -> anyhow::Result<(Duration, Duration)> {
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let started = Instant::now();
        let mut child = std::process::Command::new("sleep").arg("30").spawn()?;
        latencies.push(started.elapsed());
        child.kill()?;
        child.wait()?;
    }
    latencies.sort();
    Ok((percentile(&latencies, 0.5), percentile(&latencies, 0.99)))
}

/// Resident set size of this process in MB (Linux; 0 elsewhere).
pub fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// What the memory run measured.
struct Memory {
    peak: f64,
    after_delete: f64,
    after_trim: f64,
    history_events: usize,
    history_bytes: usize,
    /// Objects left in the store after the deletions, and how many of them are Events (kept
    /// for their time to live, as Kubernetes does).
    objects_left: usize,
    events_left: usize,
}

/// Creates `pods` pods (left unscheduled: a scheduler name nobody serves), changes each three
/// times, deletes them all, and measures the resident set at each step.
async fn memory_after_delete(
    plane: &ControlPlane,
    client: &kube::Client,
    pods: usize,
    on_node: bool,
) -> anyhow::Result<Memory> {
    use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let concurrency = 16;
    let run = |step: usize| {
        let api = api.clone();
        async move {
            futures::stream::iter(0..pods)
                .map(|i| {
                    let api = api.clone();
                    async move {
                        let name = format!("memory-{i}");
                        match step {
                            0 => {
                                let (scheduler, command) = if on_node {
                                    (ferry_api::SCHEDULER_NAME, "true")
                                } else {
                                    ("bench-unserved", "sleep 3600")
                                };
                                let pod: Pod = serde_json::from_value(json!({
                                    "metadata": {"name": name, "labels": {"app": "memory", "index": i.to_string()}},
                                    "spec": {"schedulerName": scheduler, "restartPolicy": "Never",
                                        "terminationGracePeriodSeconds": 1,
                                        "containers": [{"name": "main", "image": "busybox",
                                            "command": ["sh", "-c", command],
                                            "env": (0..8).map(|e| json!({"name": format!("VAR_{e}"), "value": "x".repeat(24)})).collect::<Vec<_>>(),
                                            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
                                }))
                                .expect("static pod");
                                api.create(&PostParams::default(), &pod).await.map(|_| ())
                            }
                            1..=3 => {
                                let patch = json!({"metadata": {"annotations": {"bench/step": step.to_string()}}});
                                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                                    .await
                                    .map(|_| ())
                            }
                            _ => api.delete(&name, &DeleteParams::default()).await.map(|_| ()),
                        }
                    }
                })
                .buffer_unordered(concurrency)
                .collect::<Vec<Result<(), kube::Error>>>()
                .await
                .into_iter()
                .collect::<Result<Vec<()>, kube::Error>>()
        }
    };
    let mine = ListParams::default().labels("app=memory");
    let mut peak = 0f64;
    if on_node {
        run(0).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            peak = peak.max(rss_mb());
            let list = api.list(&mine).await?;
            let done = list
                .items
                .iter()
                .filter(|p| {
                    matches!(
                        p.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    )
                })
                .count();
            if done == pods {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {done} of {pods} pods finished"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    } else {
        for step in 0..=3 {
            run(step).await?;
        }
    }
    peak = peak.max(rss_mb());
    run(4).await?;
    // Pods on a node go once their agent has confirmed.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = api.list(&mine).await?.items.len();
        if left == 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "{left} pods were not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after_delete = rss_mb();
    let (history_events, history_bytes) = plane.server.service.store.history_size();
    let (mut objects_left, mut events_left) = (0, 0);
    plane.server.service.store.for_each(|key, _| {
        objects_left += 1;
        events_left += usize::from(key.resource == "events");
    });
    ferry_store::release_free_memory();
    let after_trim = rss_mb();
    Ok(Memory {
        peak,
        after_delete,
        after_trim,
        history_events,
        history_bytes,
        objects_left,
        events_left,
    })
}

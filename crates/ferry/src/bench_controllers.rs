//! `ferry bench controllers`: the workload controllers reconciling at scale, each figure
//! beside a baseline from the same run.
//!
//! - 1,000 Deployments × 3 replicas reconciled to ready (every Deployment's
//!   `availableReplicas` equal to its replicas): wall time and the controller-manager's peak
//!   memory, beside creating the same pods directly and waiting for them to be ready.
//! - An Indexed Job of 500 completions (parallelism 50) run to completion, beside the same
//!   number of bare pods created directly and run to `Succeeded`.
//!
//! The controllers run in their own process (`ferry controller-manager`, spawned from this
//! binary against the embedded API server), so their resident memory is theirs alone; the
//! API server and Ferry's scheduler run in this process. Pods are placed by Ferry's
//! scheduler on simulated nodes whose "kubelet" is a task of this process: it marks each
//! bound pod Running and Ready (or, for pods that do not restart, Succeeded) with one status
//! write, and finishes the deletion of pods being deleted — no processes are started, so the
//! figures are the control plane's, not a container runtime's.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::up::{ControlPlane, UpConfig};

/// Arguments of `ferry bench controllers`.
#[derive(Debug, Args)]
pub struct ControllersBenchArgs {
    /// Deployments to create.
    #[arg(long, default_value_t = 1_000)]
    pub deployments: usize,
    /// Replicas of each Deployment.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Completions of the Indexed Job.
    #[arg(long, default_value_t = 500)]
    pub completions: usize,
    /// Parallelism of the Indexed Job.
    #[arg(long, default_value_t = 50)]
    pub parallelism: usize,
    /// Simulated nodes the pods are spread over (1,000 pods each at most).
    #[arg(long, default_value_t = 8)]
    pub nodes: usize,
    /// Give up on a phase after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
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

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn node(i: usize) -> anyhow::Result<Node> {
    let resources = json!({"cpu": "1000", "memory": "4Ti", "pods": "1000"});
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("sim-node-{i:03}")},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}]
        }
    }))?)
}

/// The pod template (or bare pod spec) every figure uses: a small request, no real process.
fn pod_spec(restart: &str) -> Value {
    json!({
        "restartPolicy": restart,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.9", "command": ["sleep", "3600"],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]
    })
}

/// The status the simulated kubelet writes for a pod on its node.
fn status_for(pod: &Pod) -> Value {
    let spec = pod.spec.as_ref();
    let restarts = spec.and_then(|s| s.restart_policy.as_deref()) == Some("Always")
        || spec.and_then(|s| s.restart_policy.as_deref()).is_none();
    let at = now();
    let condition = |t: &str, s: &str| json!({"type": t, "status": s, "lastProbeTime": null, "lastTransitionTime": at});
    let names: Vec<String> = spec
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if restarts {
        json!({"status": {
            "phase": "Running", "startTime": at, "hostIP": "10.255.0.1", "podIP": "10.255.0.2",
            "conditions": [condition("PodScheduled", "True"), condition("Initialized", "True"),
                condition("ContainersReady", "True"), condition("Ready", "True")],
            "containerStatuses": names.iter().map(|n| json!({"name": n, "ready": true, "started": true,
                "restartCount": 0, "image": "registry.k8s.io/pause:3.9", "imageID": "",
                "state": {"running": {"startedAt": at}}})).collect::<Vec<_>>()
        }})
    } else {
        json!({"status": {
            "phase": "Succeeded", "startTime": at, "hostIP": "10.255.0.1", "podIP": "10.255.0.2",
            "conditions": [condition("PodScheduled", "True"), condition("Initialized", "True"),
                condition("ContainersReady", "False"), condition("Ready", "False")],
            "containerStatuses": names.iter().map(|n| json!({"name": n, "ready": false, "started": false,
                "restartCount": 0, "image": "registry.k8s.io/pause:3.9", "imageID": "",
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": at, "finishedAt": at}}})).collect::<Vec<_>>()
        }})
    }
}

/// What the simulated kubelet does to a pod it sees.
enum KubeletAction {
    Start(Pod),
    Finish(Pod),
}

/// The simulated kubelet of every `sim-node-*` node: marks bound pods Running and Ready (or
/// Succeeded), and completes the deletion of pods being deleted, as a kubelet does once
/// their containers have stopped.
async fn simulated_kubelet(client: kube::Client) {
    let all: Api<Pod> = Api::all(client.clone());
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let finished: Arc<Mutex<HashSet<String>>> = Arc::default();
    watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .filter_map(move |pod| {
            let started = started.clone();
            let finished = finished.clone();
            async move {
                let pod = pod.ok()?;
                let node = pod.spec.as_ref()?.node_name.as_deref()?;
                if !node.starts_with("sim-node-") {
                    return None;
                }
                let uid = pod.metadata.uid.clone()?;
                if pod.metadata.deletion_timestamp.is_some() {
                    return finished
                        .lock()
                        .unwrap()
                        .insert(uid)
                        .then_some(KubeletAction::Finish(pod));
                }
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                if matches!(phase, Some("Running" | "Succeeded" | "Failed")) {
                    return None;
                }
                started
                    .lock()
                    .unwrap()
                    .insert(uid)
                    .then_some(KubeletAction::Start(pod))
            }
        })
        .for_each_concurrent(64, |action| {
            let client = client.clone();
            async move {
                let (pod, start) = match action {
                    KubeletAction::Start(p) => (p, true),
                    KubeletAction::Finish(p) => (p, false),
                };
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client, &ns);
                let result = if start {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(status_for(&pod)),
                    )
                    .await
                    .map(|_| ())
                } else {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: pod.metadata.uid.clone(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    api.delete(&name, &params).await.map(|_| ())
                };
                if let Err(e) = result {
                    tracing::debug!(pod = %name, error = %e, "simulated kubelet write failed");
                }
            }
        })
        .await;
}

/// Creates `items` with up to `concurrency` requests in flight.
async fn create_all<T>(api: &Api<T>, items: Vec<T>, concurrency: usize) -> anyhow::Result<()>
where
    T: kube::Resource
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let results: Vec<Result<T, kube::Error>> = futures::stream::iter(items)
        .map(|item| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &item).await }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for r in results {
        r.context("a create failed")?;
    }
    Ok(())
}

/// Waits until `count()` reaches `target`, printing progress, sampling `sample` now and
/// then; the time it took.
async fn wait_for(
    what: &str,
    target: usize,
    timeout: Duration,
    count: impl Fn() -> usize,
    mut sample: impl FnMut(),
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut last_print = Instant::now();
    loop {
        let n = count();
        sample();
        if n >= target {
            return Ok(started.elapsed());
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            println!(
                "    {n:>6} of {target} {what} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        if started.elapsed() > timeout {
            anyhow::bail!(
                "only {n} of {target} {what} after {:.0} s",
                timeout.as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn namespace(name: &str) -> anyhow::Result<Namespace> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name}}))?)
}

fn ready(v: &Value) -> bool {
    v.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some("Ready")
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

fn phase_is(v: &Value, phase: &str) -> bool {
    v.pointer("/status/phase").and_then(Value::as_str) == Some(phase)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Deletes every pod of `ns` at once (the simulated kubelet completes their deletion), and
/// waits until they are gone.
async fn clear_pods(
    client: &kube::Client,
    plane: &ControlPlane,
    ns: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
        &ListParams::default(),
    )
    .await
    .context("cannot delete the baseline pods")?;
    let store = plane.server.service.store.clone();
    let ns = ns.to_string();
    wait_for(
        "baseline pods deleted",
        1,
        timeout,
        || {
            usize::from(
                store
                    .list("pods", Some(&ns), None, 0, |_| true)
                    .items
                    .is_empty(),
            )
        },
        || {},
    )
    .await?;
    Ok(())
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: ControllersBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut config = UpConfig::new(tmp.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.agent = None;
    // No pod network: nothing listens on the cluster gateway (no DNS, no in-cluster API).
    config.dns = false;
    config.tls_port = None;
    // The controllers run in their own process (below), so their memory is measured alone.
    config.controllers = false;
    let plane = ControlPlane::start(config).await?;
    let client = plane.client().await?;
    let timeout = Duration::from_secs(args.timeout_secs);
    let pods_total = args.deployments * args.replicas;
    println!(
        "ferry bench controllers: {} Deployments x {} replicas ({pods_total} pods); an Indexed Job of {} completions, parallelism {}; {} simulated nodes",
        args.deployments, args.replicas, args.completions, args.parallelism, args.nodes
    );
    let nodes: Vec<Node> = (0..args.nodes.max(1))
        .map(node)
        .collect::<anyhow::Result<_>>()?;
    create_all(&Api::all(client.clone()), nodes, 16).await?;
    for ns in ["bare", "deploy", "bare-job", "indexed"] {
        create_all(
            &Api::<Namespace>::all(client.clone()),
            vec![namespace(ns)?],
            1,
        )
        .await?;
    }
    let kubelet = tokio::spawn(simulated_kubelet(client.clone()));
    let store = plane.server.service.store.clone();
    let count = |resource: &'static str, ns: &'static str, f: fn(&Value) -> bool| {
        let store = store.clone();
        move || store.list(resource, Some(ns), None, 0, f).items.len()
    };

    // (a) baseline: the same pods created directly, until every one is ready.
    let mut baseline_ready = Duration::ZERO;
    if args.deployments > 0 {
        let bare: Vec<Pod> = (0..pods_total)
            .map(|i| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("bare-{i}"), "labels": {"app": "bare"}},
                    "spec": pod_spec("Always")
                }))
            })
            .collect::<Result<_, _>>()?;
        println!("  (a) baseline: {pods_total} pods created directly, to ready");
        let started = Instant::now();
        create_all(&Api::namespaced(client.clone(), "bare"), bare, 64).await?;
        wait_for(
            "bare pods ready",
            pods_total,
            timeout,
            count("pods", "bare", ready),
            || {},
        )
        .await?;
        baseline_ready = started.elapsed();
        // Gone before the controllers start, so their caches do not hold them.
        clear_pods(&client, &plane, "bare", timeout).await?;
    }

    // The controller-manager, in its own process.
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("controller-manager")
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("FERRY_CONTROLLERS_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `ferry controller-manager`")?;
    let pid = child.id().unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kb = proc_status_kb(pid, "VmRSS:").unwrap_or(0);
    let mut peak_kb = idle_kb;
    let mib = |kb: u64| kb as f64 / 1024.0;
    let mut report = Vec::new();

    // (a) Deployments, until every one has all its replicas available.
    if args.deployments > 0 {
        println!(
            "  (a) {} Deployments x {} replicas, to availableReplicas = {}",
            args.deployments, args.replicas, args.replicas
        );
        let deployments: Vec<Deployment> = (0..args.deployments)
            .map(|i| {
                let app = format!("app-{i}");
                serde_json::from_value(json!({
                    "metadata": {"name": app},
                    "spec": {"replicas": args.replicas, "selector": {"matchLabels": {"app": app}},
                        "template": {"metadata": {"labels": {"app": app}}, "spec": pod_spec("Always")}}
                }))
            })
            .collect::<Result<_, _>>()?;
        let started = Instant::now();
        create_all(&Api::namespaced(client.clone(), "deploy"), deployments, 64).await?;
        wait_for(
            "Deployments available",
            args.deployments,
            timeout,
            count("apps/deployments", "deploy", |v| {
                let available = v
                    .pointer("/status/availableReplicas")
                    .and_then(Value::as_i64);
                available.is_some()
                    && available == v.pointer("/spec/replicas").and_then(Value::as_i64)
            }),
            || peak_kb = peak_kb.max(proc_status_kb(pid, "VmRSS:").unwrap_or(0)),
        )
        .await?;
        let took = started.elapsed();
        let owned_pods = count("pods", "deploy", |_| true)();
        let hwm = proc_status_kb(pid, "VmHWM:").unwrap_or(peak_kb);
        report.push(format!(
            "(a) {} Deployments x {} replicas reconciled to ready (simulated kubelet; controllers in their own process):",
            args.deployments, args.replicas
        ));
        report.push(format!(
            "  ferry controller-manager  {:>8.1} s  ({:.0} pods/s; {owned_pods} pods exist)",
            secs(took),
            pods_total as f64 / secs(took).max(1e-3)
        ));
        report.push(format!(
            "  baseline: {pods_total} pods created directly, to ready"
        ));
        report.push(format!(
            "                            {:>8.1} s  ({:.0} pods/s)",
            secs(baseline_ready),
            pods_total as f64 / secs(baseline_ready).max(1e-3)
        ));
        report.push(format!(
            "  ratio                     {:>8.2}x the baseline's time",
            secs(took) / secs(baseline_ready).max(1e-3)
        ));
        report.push(format!(
            "  controller-manager memory: {:.0} MiB idle, peak RSS {:.0} MiB with {} Deployments ({:.1} KiB per pod)",
            mib(idle_kb),
            mib(hwm),
            args.deployments,
            hwm as f64 / pods_total.max(1) as f64
        ));
    }

    if args.completions > 0 {
        // (b) baseline: as many bare pods as the Job has completions, run to Succeeded.
        println!(
            "  (b) baseline: {} bare pods created directly, to Succeeded",
            args.completions
        );
        let bare: Vec<Pod> = (0..args.completions)
            .map(|i| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("bare-{i}")},
                    "spec": pod_spec("Never")
                }))
            })
            .collect::<Result<_, _>>()?;
        let started = Instant::now();
        create_all(&Api::namespaced(client.clone(), "bare-job"), bare, 64).await?;
        wait_for(
            "bare pods succeeded",
            args.completions,
            timeout,
            count("pods", "bare-job", |v| phase_is(v, "Succeeded")),
            || {},
        )
        .await?;
        let baseline_succeeded = started.elapsed();

        // (b) the Indexed Job, to its Complete condition.
        println!(
            "  (b) Indexed Job: {} completions, parallelism {}, to Complete",
            args.completions, args.parallelism
        );
        let job: Job = serde_json::from_value(json!({
            "metadata": {"name": "indexed"},
            "spec": {"completions": args.completions, "parallelism": args.parallelism,
                "completionMode": "Indexed", "backoffLimit": 6,
                "template": {"spec": pod_spec("Never")}}
        }))?;
        let started = Instant::now();
        Api::<Job>::namespaced(client.clone(), "indexed")
            .create(&PostParams::default(), &job)
            .await
            .context("cannot create the Indexed Job")?;
        wait_for(
            "Job complete",
            1,
            timeout,
            count("batch/jobs", "indexed", |v| {
                v.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .is_some_and(|c| {
                        c.iter().any(|c| {
                            c.get("type").and_then(Value::as_str) == Some("Complete")
                                && c.get("status").and_then(Value::as_str) == Some("True")
                        })
                    })
            }),
            || peak_kb = peak_kb.max(proc_status_kb(pid, "VmRSS:").unwrap_or(0)),
        )
        .await?;
        let took = started.elapsed();
        let job_pods = count("pods", "indexed", |_| true)();
        report.push(format!(
            "(b) Indexed Job of {} completions, parallelism {}, to Complete:",
            args.completions, args.parallelism
        ));
        report.push(format!(
            "  ferry controller-manager  {:>8.1} s  ({:.0} completions/s; {job_pods} pods exist)",
            secs(took),
            args.completions as f64 / secs(took).max(1e-3)
        ));
        report.push(format!(
            "  baseline: {} bare pods created directly, to Succeeded",
            args.completions
        ));
        report.push(format!(
            "                            {:>8.1} s  ({:.0} pods/s)",
            secs(baseline_succeeded),
            args.completions as f64 / secs(baseline_succeeded).max(1e-3)
        ));
        report.push(format!(
            "  ratio                     {:>8.2}x the baseline's time",
            secs(took) / secs(baseline_succeeded).max(1e-3)
        ));
    }
    let final_hwm = proc_status_kb(pid, "VmHWM:").unwrap_or(peak_kb);
    child.kill().await.ok();
    kubelet.abort();
    println!();
    for line in report {
        println!("{line}");
    }
    println!(
        "controller-manager memory: peak RSS {:.0} MiB over the whole run ({:.0} MiB idle)",
        mib(final_hwm),
        mib(idle_kb)
    );
    plane.stop().await;
    Ok(())
}

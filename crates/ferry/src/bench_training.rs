//! `ferry bench training`: the training controllers' cost, each figure beside a baseline from
//! the same run.
//!
//! - (a) Submit-to-all-ranks-running of a PyTorchJob of `--ranks` pods (1 master, the rest
//!   workers), p50/p90 over `--rounds`, beside the same number of bare pods created directly.
//!   Both are placed by Ferry's scheduler on simulated nodes whose "kubelet" is a task of this
//!   process (one status write per pod, no process started), so the difference is the
//!   controller's work (job read, PodGroup, Services, pod creates, gang placement).
//! - (b) Recovery of one crashed rank of a 2-rank job on the real node agent (host processes):
//!   in place (`restartPolicy: OnFailure`: the agent restarts the container) beside a
//!   whole-gang restart (a lost rank: the benchmark deletes its pod, and the controller
//!   deletes and recreates every pod of the job). In place, the rank exits when the benchmark
//!   drops a trigger file it polls every 20 ms; the time runs from the trigger (or the
//!   deletion) to every rank running again (in place: the container's `restartCount` up and
//!   its state running; whole gang: new pods Running).
//!
//! Needs root for (b) (pod sandboxes); `--skip-recovery` runs (a) alone.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::up::{AgentOptions, ControlPlane, UpConfig};

/// Arguments of `ferry bench training`.
#[derive(Debug, Args)]
pub struct TrainingBenchArgs {
    /// Pods of the PyTorchJob in (a) (1 master + ranks-1 workers) and of its baseline.
    #[arg(long, default_value_t = 16)]
    pub ranks: usize,
    /// Rounds of (a); p50/p90 are over these.
    #[arg(long, default_value_t = 20)]
    pub rounds: usize,
    /// Crashes of each kind in (b).
    #[arg(long, default_value_t = 5)]
    pub recoveries: usize,
    /// Run (a) alone (no real node agent, no root needed).
    #[arg(long)]
    pub skip_recovery: bool,
    /// The network slot of the plane's node (see `ClusterNetwork::for_index`), away from
    /// `ferry up`'s and the tests' (1..=200).
    #[arg(long, default_value_t = 241)]
    pub network_slot: u8,
    /// Give up on one wait after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout_secs: u64,
}

const SIM_LABEL: &str = "bench.ferry.dev/simulated";
const NS_JOBS: &str = "bench-jobs";
const NS_BARE: &str = "bench-bare";
const NS_RECOVERY: &str = "bench-recovery";

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn sim_node(i: usize) -> anyhow::Result<Node> {
    let resources = json!({"cpu": "1000", "memory": "4Ti", "pods": "1000"});
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("sim-node-{i}"), "labels": {SIM_LABEL: "true"}},
        "status": {
            "capacity": resources, "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}]
        }
    }))?)
}

/// The pod spec of (a): pinned to the simulated nodes, no real process.
fn sim_pod_spec(container: &str) -> Value {
    json!({
        "nodeSelector": {SIM_LABEL: "true"},
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": container, "image": "registry.k8s.io/pause:3.9",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]
    })
}

/// The simulated kubelet of the `sim-node-*` nodes: marks each bound pod Running with one
/// status write and completes the deletion of pods being deleted.
async fn simulated_kubelet(client: kube::Client) {
    let all: Api<Pod> = Api::all(client.clone());
    watcher(all, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each_concurrent(64, |pod| {
            let client = client.clone();
            async move {
                let Ok(pod) = pod else { return };
                let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                    return;
                };
                if !node.starts_with("sim-node-") {
                    return;
                }
                let ns = pod.metadata.namespace.clone().unwrap_or_default();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client, &ns);
                if pod.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(
                            &name,
                            &DeleteParams {
                                grace_period_seconds: Some(0),
                                ..DeleteParams::default()
                            },
                        )
                        .await;
                    return;
                }
                if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") {
                    return;
                }
                let at = now();
                let names: Vec<String> = pod
                    .spec
                    .iter()
                    .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
                    .collect();
                let status = json!({"status": {
                    "phase": "Running", "startTime": at, "hostIP": "10.255.0.1", "podIP": "10.255.0.2",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}],
                    "containerStatuses": names.iter().map(|n| json!({"name": n, "ready": true,
                        "started": true, "restartCount": 0, "image": "registry.k8s.io/pause:3.9",
                        "imageID": "", "state": {"running": {"startedAt": at}}})).collect::<Vec<_>>()
                }});
                if let Err(e) = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                {
                    tracing::debug!(pod = %name, error = %e, "simulated kubelet write failed");
                }
            }
        })
        .await;
}

fn pytorchjob_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("kubeflow.org", "v1", "PyTorchJob");
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, "pytorchjobs"),
    )
}

fn pytorchjob(
    name: &str,
    workers: usize,
    restart: &str,
    spec: Value,
) -> anyhow::Result<DynamicObject> {
    let template = json!({"spec": spec});
    let mut replicas = json!({
        "Master": {"replicas": 1, "restartPolicy": restart, "template": template},
    });
    if workers > 0 {
        replicas["Worker"] =
            json!({"replicas": workers, "restartPolicy": restart, "template": template});
    }
    Ok(serde_json::from_value(json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {"runPolicy": {"backoffLimit": 1000}, "pytorchReplicaSpecs": replicas}
    }))?)
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// Polls `check` every 2 ms until it holds; the time it took.
async fn until(
    what: &str,
    timeout: Duration,
    mut check: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    loop {
        if check().await? {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn pods_of(api: &Api<Pod>, selector: Option<&str>) -> anyhow::Result<Vec<Pod>> {
    let mut lp = ListParams::default();
    if let Some(s) = selector {
        lp = lp.labels(s);
    }
    Ok(api.list(&lp).await?.items)
}

async fn all_running(api: &Api<Pod>, selector: Option<&str>, n: usize) -> anyhow::Result<bool> {
    let pods = pods_of(api, selector).await?;
    Ok(pods.len() == n
        && pods
            .iter()
            .all(|p| phase(p) == "Running" && p.metadata.deletion_timestamp.is_none()))
}

async fn delete_all_pods(api: &Api<Pod>, timeout: Duration) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
        &ListParams::default(),
    )
    .await?;
    until("pods deleted", timeout, async || {
        Ok(pods_of(api, None).await?.is_empty())
    })
    .await?;
    Ok(())
}

/// p50 and p90 of `samples` (nearest rank).
pub fn percentiles(samples: &[Duration]) -> (Duration, Duration) {
    let mut s = samples.to_vec();
    s.sort();
    let at = |q: f64| {
        if s.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    };
    (at(0.5), at(0.9))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (a): PyTorchJob submit-to-all-ranks-running beside bare pods.
async fn submit_to_running(
    client: &kube::Client,
    args: &TrainingBenchArgs,
) -> anyhow::Result<Vec<String>> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let ranks = args.ranks.max(1);
    let bare_api: Api<Pod> = Api::namespaced(client.clone(), NS_BARE);
    let job_pods: Api<Pod> = Api::namespaced(client.clone(), NS_JOBS);
    let jobs = pytorchjob_api(client, NS_JOBS);
    let (mut bare, mut job) = (Vec::new(), Vec::new());
    let mut stages: Vec<(Duration, Duration)> = Vec::new();
    for round in 0..args.rounds {
        // Baseline: the same number of pods, created directly at once.
        let started = Instant::now();
        let creates = (0..ranks).map(|i| {
            let api = bare_api.clone();
            async move {
                let pod: Pod = serde_json::from_value(json!({
                    "metadata": {"name": format!("bare-{round}-{i}")},
                    "spec": sim_pod_spec("pytorch"),
                }))?;
                api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok(())
            }
        });
        for r in futures::future::join_all(creates).await {
            r?;
        }
        until("bare pods running", timeout, async || {
            all_running(&bare_api, None, ranks).await
        })
        .await?;
        bare.push(started.elapsed());
        delete_all_pods(&bare_api, timeout).await?;

        // The PyTorchJob.
        let name = format!("ddp-{round}");
        let obj = pytorchjob(&name, ranks - 1, "OnFailure", sim_pod_spec("pytorch"))?;
        let selector = format!("training.kubeflow.org/job-name={name}");
        let started = Instant::now();
        jobs.create(&PostParams::default(), &obj)
            .await
            .context("cannot create the PyTorchJob (are the Kubeflow CRDs installed?)")?;
        // Where the time goes: every pod created, every pod bound, every pod Running.
        let (mut created, mut bound) = (None, None);
        until("the PyTorchJob's ranks running", timeout, async || {
            let pods = pods_of(&job_pods, Some(&selector)).await?;
            let live = || {
                pods.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
            };
            if created.is_none() && live().count() == ranks {
                created = Some(started.elapsed());
            }
            let on_node = live()
                .filter(|p| p.spec.as_ref().is_some_and(|s| s.node_name.is_some()))
                .count();
            if bound.is_none() && on_node == ranks {
                bound = Some(started.elapsed());
            }
            Ok(live().filter(|p| phase(p) == "Running").count() == ranks)
        })
        .await?;
        job.push(started.elapsed());
        stages.push((created.unwrap_or_default(), bound.unwrap_or_default()));
        jobs.delete(&name, &DeleteParams::background()).await?;
        until("the PyTorchJob's pods deleted", timeout, async || {
            Ok(pods_of(&job_pods, Some(&selector)).await?.is_empty())
        })
        .await?;
    }
    let (b50, b90) = percentiles(&bare);
    let (j50, j90) = percentiles(&job);
    let (c50, _) = percentiles(&stages.iter().map(|s| s.0).collect::<Vec<_>>());
    let (n50, _) = percentiles(&stages.iter().map(|s| s.1).collect::<Vec<_>>());
    Ok(vec![
        format!(
            "(a) submit to all {ranks} ranks Running, {} rounds (simulated kubelet, control plane only):",
            args.rounds
        ),
        format!(
            "  PyTorchJob (1 master + {} workers)  p50 {:>8.1} ms  p90 {:>8.1} ms",
            ranks - 1,
            ms(j50),
            ms(j90)
        ),
        format!(
            "  baseline: {ranks} bare pods         p50 {:>8.1} ms  p90 {:>8.1} ms",
            ms(b50),
            ms(b90)
        ),
        format!(
            "  the controller adds                 p50 {:>8.1} ms  p90 {:>8.1} ms  (goal: at most 100 ms at p50)",
            ms(j50) - ms(b50),
            ms(j90) - ms(b90)
        ),
        format!(
            "  PyTorchJob stages (p50 of each): every pod created {:.1} ms, every pod bound {:.1} ms, all Running {:.1} ms",
            ms(c50),
            ms(n50),
            ms(j50)
        ),
    ])
}

/// The command of (b)'s ranks: run until the trigger file for this pod appears, then exit 1.
fn crash_on_trigger(dir: &Path) -> Vec<String> {
    let script = format!(
        "t={}/$POD_NAME; while [ ! -e \"$t\" ]; do sleep 0.02; done; rm -f \"$t\"; exit 1",
        dir.display()
    );
    vec!["/bin/sh".into(), "-c".into(), script]
}

fn restart_counts(pods: &[Pod]) -> BTreeMap<String, (String, i32, bool)> {
    pods.iter()
        .map(|p| {
            let cs = p
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first());
            (
                p.metadata.name.clone().unwrap_or_default(),
                (
                    p.metadata.uid.clone().unwrap_or_default(),
                    cs.map(|c| c.restart_count).unwrap_or(0),
                    cs.and_then(|c| c.state.as_ref())
                        .is_some_and(|s| s.running.is_some())
                        && phase(p) == "Running",
                ),
            )
        })
        .collect()
}

/// (b): one crashed rank, in place and as a whole-gang restart.
async fn recovery(
    client: &kube::Client,
    args: &TrainingBenchArgs,
    dir: &Path,
) -> anyhow::Result<Vec<String>> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS_RECOVERY);
    let jobs = pytorchjob_api(client, NS_RECOVERY);
    let spec = json!({
        "nodeSelector": {"kubernetes.io/hostname": "bench-node"},
        "terminationGracePeriodSeconds": 0,
        // The trigger directory, writable in the sandbox (the rank removes its trigger).
        "volumes": [{"name": "trigger", "hostPath": {"path": dir}}],
        "containers": [{"name": "pytorch", "command": crash_on_trigger(dir),
            "volumeMounts": [{"name": "trigger", "mountPath": dir}],
            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]
    });
    let mut lines = Vec::new();
    for (name, restart, label) in [
        (
            "in-place",
            "OnFailure",
            "in place (OnFailure: the agent restarts the container)",
        ),
        (
            "whole-gang",
            "OnFailure",
            "whole-gang restart (a lost rank: every pod deleted and recreated)",
        ),
    ] {
        let mut samples = Vec::new();
        // A job per crash: each measures a rank's first crash (a container that crashes
        // again soon after is held back by the agent's crash-loop back-off, as kubelet's).
        for round in 0..args.recoveries {
            let job = format!("{name}-{round}");
            let selector = format!("training.kubeflow.org/job-name={job}");
            jobs.create(
                &PostParams::default(),
                &pytorchjob(&job, 1, restart, spec.clone())?,
            )
            .await
            .context("cannot create the recovery PyTorchJob")?;
            until("the recovery job's ranks running", timeout, async || {
                all_running(&pods, Some(&selector), 2).await
            })
            .await?;
            let before = restart_counts(&pods_of(&pods, Some(&selector)).await?);
            let victim = format!("{job}-worker-0");
            let (victim_uid, victim_restarts, _) = before
                .get(&victim)
                .cloned()
                .with_context(|| format!("no pod {victim}"))?;
            let whole_gang = name == "whole-gang";
            let started = Instant::now();
            if whole_gang {
                // The rank's pod is lost (deleted, as a dead node's pods are): the engine
                // restarts the whole gang.
                pods.delete(&victim, &DeleteParams::default().grace_period(0))
                    .await
                    .context("cannot delete the victim rank's pod")?;
            } else {
                std::fs::write(dir.join(&victim), b"")?;
            }
            until("the crashed rank running again", timeout, async || {
                let now = restart_counts(&pods_of(&pods, Some(&selector)).await?);
                if now.len() != 2 || !now.values().all(|(_, _, running)| *running) {
                    return Ok(false);
                }
                let Some((uid, restarts, _)) = now.get(&victim) else {
                    return Ok(false);
                };
                Ok(if whole_gang {
                    // Every pod is new.
                    now.iter()
                        .all(|(n, (u, _, _))| before.get(n).is_none_or(|b| &b.0 != u))
                } else {
                    *uid == victim_uid && *restarts > victim_restarts
                })
            })
            .await?;
            samples.push(started.elapsed());
            jobs.delete(&job, &DeleteParams::background()).await?;
            until("the recovery job's pods deleted", timeout, async || {
                Ok(pods_of(&pods, Some(&selector)).await?.is_empty())
            })
            .await?;
        }
        let (p50, p90) = percentiles(&samples);
        lines.push(format!(
            "  {label:<62} p50 {:>8.1} ms  p90 {:>8.1} ms",
            ms(p50),
            ms(p90)
        ));
    }
    let mut out = vec![format!(
        "(b) one crashed rank of a 2-rank PyTorchJob (real node agent, host processes), {} crashes each, trigger to every rank running again:",
        args.recoveries
    )];
    out.extend(lines);
    out.push("  (goal: in-place recovery under 3 s; the trigger is polled every 20 ms)".into());
    Ok(out)
}

/// Runs the benchmark and prints its figures.
pub async fn run(args: TrainingBenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut config = UpConfig::new(tmp.path().join("data"));
    config.listen = "127.0.0.1:0".parse()?;
    config.network = ferry_api::network::ClusterNetwork::for_index(args.network_slot);
    if args.skip_recovery {
        config.agent = None;
        config.dns = false;
        config.tls_port = None;
    } else {
        let mut agent = AgentOptions::new();
        agent.node_name = "bench-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        config.agent = Some(agent);
    }
    let network = config.network.clone();
    let plane = ControlPlane::start(config).await?;
    let client = plane.client().await?;
    println!(
        "ferry bench training: (a) a {}-rank PyTorchJob x {} rounds beside bare pods; (b) {}",
        args.ranks,
        args.rounds,
        if args.skip_recovery {
            "skipped".to_string()
        } else {
            format!(
                "{} crashes in place and {} whole-gang",
                args.recoveries, args.recoveries
            )
        }
    );
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..2 {
        nodes.create(&PostParams::default(), &sim_node(i)?).await?;
    }
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for ns in [NS_JOBS, NS_BARE, NS_RECOVERY] {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    let kubelet = tokio::spawn(simulated_kubelet(client.clone()));
    let result = async {
        let mut report = submit_to_running(&client, &args).await?;
        if !args.skip_recovery {
            let dir = tmp.path().join("triggers");
            std::fs::create_dir_all(&dir)?;
            report.extend(recovery(&client, &args, &dir).await?);
        }
        anyhow::Ok(report)
    }
    .await;
    kubelet.abort();
    plane.stop().await;
    if !args.skip_recovery {
        ferry_agent::sandbox::network::remove_node(&network);
    }
    let report = result?;
    println!();
    for line in report {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(&s),
            (Duration::from_millis(5), Duration::from_millis(9))
        );
        assert_eq!(
            percentiles(&[Duration::from_millis(7)]),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
        assert_eq!(percentiles(&[]), (Duration::ZERO, Duration::ZERO));
    }
}

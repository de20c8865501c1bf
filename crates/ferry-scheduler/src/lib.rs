//! Ferry's live scheduler: a client of the Kubernetes API that binds pending pods to nodes.
//!
//! The loop is event-driven: reflectors keep nodes and pods in memory; any change wakes a
//! scheduling cycle, which places every pending pod of Ferry's scheduler names in priority
//! order against a snapshot of free capacity (counting pods it has just bound but not yet
//! seen back, "assumed" pods), then posts the Bindings concurrently. A pod that fits nowhere
//! gets `PodScheduled=False` with a message that says how many nodes failed which check,
//! and a `FailedScheduling` Event.
//!
//! Placement is behind [`placement::place`]; the job-level policies (gangs, queues, GPU
//! sharing) plug in there.

pub mod placement;
mod recorder;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use thiserror::Error;

use placement::{NodeView, PodNeeds};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `schedulerName`s served (Ferry's own; the embedded mode adds `default-scheduler`).
    pub scheduler_names: Vec<String>,
    /// Most Bindings posted at once.
    pub bind_concurrency: usize,
    /// Longest wait before retrying unschedulable pods when nothing changes.
    pub retry_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_names: vec![ferry_api::SCHEDULER_NAME.to_string()],
            bind_concurrency: 64,
            retry_interval: Duration::from_secs(10),
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, Error)]
pub enum SchedulerError {
    /// The API server failed in a way the scheduler cannot retry.
    #[error("Kubernetes API error: {0}")]
    Api(#[from] kube::Error),
}

/// Runs the scheduler until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SchedulerError> {
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let wake = Arc::new(tokio::sync::Notify::new());
    let pod_stream = {
        let wake = wake.clone();
        reflector::reflector(
            pod_writer,
            watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "pod watch failed; retrying");
            }
            wake.notify_one();
            futures::future::ready(())
        })
    };
    let node_stream = {
        let wake = wake.clone();
        reflector::reflector(
            node_writer,
            watcher(Api::<Node>::all(client.clone()), watcher::Config::default()),
        )
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = event {
                tracing::warn!(error = %e, "node watch failed; retrying");
            }
            wake.notify_one();
            futures::future::ready(())
        })
    };
    let mut scheduler = Scheduler {
        client,
        config,
        pods,
        nodes,
        assumed: HashMap::new(),
        reported: HashMap::new(),
    };
    let cycle = async {
        scheduler.pods.wait_until_ready().await.ok();
        scheduler.nodes.wait_until_ready().await.ok();
        tracing::info!(names = ?scheduler.config.scheduler_names, "scheduler started");
        loop {
            let _ = tokio::time::timeout(scheduler.config.retry_interval, wake.notified()).await;
            scheduler.cycle().await;
        }
    };
    tokio::select! {
        _ = pod_stream => {}
        _ = node_stream => {}
        _ = cycle => {}
        _ = shutdown => {}
    }
    tracing::info!("scheduler stopped");
    Ok(())
}

/// A pod the scheduler bound but has not yet seen bound in its cache.
struct Assumed {
    node: String,
    needs: PodNeeds,
    gpus: Vec<u32>,
    since: Instant,
}

struct Scheduler {
    client: kube::Client,
    config: SchedulerConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// Pods bound in this process but maybe not yet in the cache, by uid.
    assumed: HashMap<String, Assumed>,
    /// The last unschedulable message written per pod uid (to avoid rewriting it).
    reported: HashMap<String, String>,
}

impl Scheduler {
    fn serves(&self, pod: &Pod) -> bool {
        let name = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(ferry_api::DEFAULT_SCHEDULER_NAME);
        self.config.scheduler_names.iter().any(|n| n == name)
    }

    /// One pass: place every pending pod, then bind the placed ones.
    async fn cycle(&mut self) {
        let started = Instant::now();
        let all_pods = self.pods.state();
        let mut views: Vec<NodeView> = self.nodes.state().iter().map(|n| NodeView::of(n)).collect();
        views.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = views
            .iter()
            .enumerate()
            .map(|(i, v)| (v.name.clone(), i))
            .collect();
        // Charge every pod already on a node, and the assumed ones not yet seen bound.
        let mut seen_bound = HashSet::new();
        for pod in &all_pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
                continue;
            };
            seen_bound.insert(uid);
            if placement::is_terminal(pod) {
                continue;
            }
            if let (Some(&i), Ok(needs)) = (index.get(node), PodNeeds::of(pod)) {
                let gpus = placement::assigned_gpus(pod);
                views[i].charge(&needs, &gpus);
            }
        }
        self.assumed.retain(|uid, a| {
            !seen_bound.contains(uid) && a.since.elapsed() < Duration::from_secs(60)
        });
        for a in self.assumed.values() {
            if let Some(&i) = index.get(&a.node) {
                views[i].charge(&a.needs, &a.gpus);
            }
        }
        let live: HashSet<String> = all_pods
            .iter()
            .filter_map(|p| p.metadata.uid.clone())
            .collect();
        self.reported.retain(|uid, _| live.contains(uid));
        // Pending pods, highest priority first, then oldest first.
        let mut pending: Vec<Arc<Pod>> = all_pods
            .into_iter()
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.node_name.as_deref().is_none_or(str::is_empty))
                    && p.metadata.deletion_timestamp.is_none()
                    && !placement::is_terminal(p)
                    && self.serves(p)
                    && !self
                        .assumed
                        .contains_key(p.metadata.uid.as_deref().unwrap_or_default())
            })
            .collect();
        if pending.is_empty() {
            return;
        }
        pending.sort_by_key(|p| {
            let priority = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            (
                std::cmp::Reverse(priority),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
                p.metadata.name.clone(),
            )
        });
        let mut binds = Vec::new();
        let mut unschedulable = Vec::new();
        for pod in pending {
            match PodNeeds::of(&pod) {
                Err(problem) => unschedulable
                    .push((pod, format!("the pod's requests cannot be read: {problem}"))),
                Ok(needs) => match placement::place(&pod, &needs, &views) {
                    Ok((i, gpus)) => {
                        views[i].charge(&needs, &gpus);
                        binds.push((pod, views[i].name.clone(), needs, gpus));
                    }
                    Err(why) => unschedulable.push((pod, why)),
                },
            }
        }
        let placed = binds.len();
        for (pod, node, needs, gpus) in &binds {
            self.assumed.insert(
                pod.metadata.uid.clone().unwrap_or_default(),
                Assumed {
                    node: node.clone(),
                    needs: *needs,
                    gpus: gpus.clone(),
                    since: Instant::now(),
                },
            );
        }
        let client = self.client.clone();
        let results: Vec<(String, Result<(), kube::Error>)> = futures::stream::iter(binds)
            .map(|(pod, node, _, gpus)| {
                let client = client.clone();
                async move {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    (uid, bind(&client, &pod, &node, &gpus).await)
                }
            })
            .buffer_unordered(self.config.bind_concurrency)
            .collect()
            .await;
        for (uid, result) in results {
            if let Err(e) = result {
                tracing::warn!(pod_uid = %uid, error = %e, "binding failed; the pod will be retried");
                self.assumed.remove(&uid);
            }
        }
        for (pod, why) in unschedulable {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if self.reported.get(&uid) == Some(&why) {
                continue;
            }
            if let Err(e) = recorder::unschedulable(&self.client, &pod, &why).await {
                tracing::debug!(error = %e, "could not record why a pod is pending");
                continue;
            }
            self.reported.insert(uid, why);
        }
        tracing::debug!(
            placed,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scheduling cycle"
        );
    }
}

/// Posts the Binding of `pod` to `node`, with the chosen GPUs as an annotation.
async fn bind(
    client: &kube::Client,
    pod: &Pod,
    node: &str,
    gpus: &[u32],
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let mut annotations = serde_json::Map::new();
    if !gpus.is_empty() {
        annotations.insert(
            ferry_api::gpu::POD_ASSIGNED_ANNOTATION.into(),
            json!(ferry_api::gpu::format_assigned(gpus)),
        );
    }
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": pod.metadata.uid, "annotations": annotations},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _: serde_json::Value = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await?;
    recorder::event(
        client,
        pod,
        "Normal",
        "Scheduled",
        &format!("Successfully assigned {ns}/{name} to {node}"),
    )
    .await;
    Ok(())
}

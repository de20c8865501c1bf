//! Ferry's live scheduler: a client of the Kubernetes API that runs job-level scheduling
//! cycles and binds pods.
//!
//! - Informers (kube-rs reflectors) keep pods, nodes, namespaces, PodGroups, Queues,
//!   Reservations, ResourcePolicies and (slim) ReplicaSets in memory; any change wakes a cycle (after a short
//!   gather delay, so a burst of events makes one cycle).
//! - A cycle turns them into the plain data of [`ferry_sched_jobs`] ([`snapshot`]), runs the
//!   pure job-level session (gangs, queues, fair share, backfill, reclaim, preemption,
//!   reservations, resource policies) and applies its outcome ([`apply`]): Bindings posted
//!   concurrently (with the chosen GPU cards as an annotation), victims evicted, and the
//!   reasons of every waiting job written where people look: PodGroup status, pod
//!   `PodScheduled` conditions, `FailedScheduling` Events, Queue status.
//! - Pods the scheduler bound are "assumed" until the informer shows them bound, so the next
//!   cycle never gives their capacity away.
//! - [`metrics`] exports scheduling latency, cycle duration, queue usage against guarantee
//!   and limit, pending jobs per queue, and preemptions, at `/metrics`.

pub mod apply;
pub mod convert;
pub mod metrics;
pub mod objects;
pub mod snapshot;
pub mod volume_binding;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_api::scheduling::{PodGroup, Queue, Reservation, ResourcePolicy};
use ferry_sched_core::{Knowledge, OnlineWorkload, PolicyKind};
use ferry_sched_jobs::{Planner, PodId};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};

use objects::{Node, Pod, ReplicaSet};
use snapshot::{Assumed, Objects};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// The `schedulerName`s served (Ferry's own; the embedded mode adds `default-scheduler`).
    pub scheduler_names: Vec<String>,
    /// Most Bindings posted at once.
    pub bind_concurrency: usize,
    /// Most status and event writes at once.
    pub status_concurrency: usize,
    /// Longest time between cycles when nothing changes (for holds and TTLs).
    pub retry_interval: Duration,
    /// How long a cycle waits after the first change, gathering the rest of a burst.
    pub gather: Duration,
    /// Where to serve `/metrics` (none: not served).
    pub metrics_addr: Option<SocketAddr>,
    /// The node-level placement policy.
    pub policy: PolicyKind,
    /// The job-level knobs (backfill wait, nomination TTL, …).
    pub jobs: ferry_sched_jobs::Config,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            scheduler_names: vec![ferry_api::SCHEDULER_NAME.to_string()],
            bind_concurrency: 256,
            status_concurrency: 64,
            retry_interval: Duration::from_secs(5),
            gather: Duration::from_millis(20),
            metrics_addr: None,
            policy: PolicyKind::Ferry,
            jobs: ferry_sched_jobs::Config::default(),
        }
    }
}

/// The informers of one resource: a store and the stream that fills it.
fn informer<K>(api: Api<K>, wake: Arc<tokio::sync::Notify>) -> (Store<K>, impl Future<Output = ()>)
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store::<K>();
    let kind = K::kind(&Default::default()).to_string();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(move |event| {
            if let Err(e) = event {
                tracing::debug!(%kind, error = %e, "watch failed; retrying");
            }
            wake.notify_one();
            futures::future::ready(())
        });
    (store, stream)
}

/// Runs the scheduler until `shutdown` completes.
pub async fn run(
    client: kube::Client,
    config: SchedulerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let metrics = Arc::new(metrics::Metrics::new());
    let mut metrics_task = None;
    if let Some(addr) = config.metrics_addr {
        match metrics::serve(metrics.clone(), addr).await {
            Ok((bound, task)) => {
                tracing::info!("scheduler metrics at http://{bound}/metrics");
                metrics_task = Some(task);
            }
            // Scheduling matters more than its metrics: go on without them.
            Err(e) => tracing::warn!("cannot serve metrics on {addr}: {e}"),
        }
    }
    let wake = Arc::new(tokio::sync::Notify::new());
    let (pods, pod_stream) = informer(Api::<Pod>::all(client.clone()), wake.clone());
    let (nodes, node_stream) = informer(Api::<Node>::all(client.clone()), wake.clone());
    let (namespaces, ns_stream) = informer(Api::<Namespace>::all(client.clone()), wake.clone());
    let (groups, group_stream) = informer(Api::<PodGroup>::all(client.clone()), wake.clone());
    let (queues, queue_stream) = informer(Api::<Queue>::all(client.clone()), wake.clone());
    let (reservations, rsv_stream) =
        informer(Api::<Reservation>::all(client.clone()), wake.clone());
    let (policies, policy_stream) =
        informer(Api::<ResourcePolicy>::all(client.clone()), wake.clone());
    let (claims, claim_stream) = informer(
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::all(client.clone()),
        wake.clone(),
    );
    let (volumes, volume_stream) = informer(
        Api::<k8s_openapi::api::core::v1::PersistentVolume>::all(client.clone()),
        wake.clone(),
    );
    let (classes, class_stream) = informer(
        Api::<k8s_openapi::api::storage::v1::StorageClass>::all(client.clone()),
        wake.clone(),
    );
    let (replicasets, rs_stream) = informer(Api::<ReplicaSet>::all(client.clone()), wake.clone());
    let informers = futures::future::join_all([
        claim_stream.boxed(),
        volume_stream.boxed(),
        class_stream.boxed(),
        pod_stream.boxed(),
        node_stream.boxed(),
        ns_stream.boxed(),
        group_stream.boxed(),
        queue_stream.boxed(),
        rsv_stream.boxed(),
        policy_stream.boxed(),
        rs_stream.boxed(),
    ]);
    let mut engine = ferry_sched_core::Scheduler::new(config.policy.build(0));
    engine.set_knowledge(Knowledge::Online(OnlineWorkload::new(95.0)));
    let mut scheduler = Scheduler {
        writer: apply::Writer::new(
            client.clone(),
            metrics.clone(),
            config.status_concurrency,
            wake.clone(),
        ),
        arrivals: snapshot::Arrivals::default(),
        warned: HashSet::new(),
        client,
        planner: Planner::new(engine, config.jobs.clone()),
        config,
        stores: Stores {
            pods,
            nodes,
            namespaces,
            groups,
            queues,
            reservations,
            policies,
            claims,
            volumes,
            classes,
            replicasets,
        },
        delayed_claims: HashMap::new(),
        assumed: HashMap::new(),
        evicting: HashMap::new(),
        metrics,
    };
    let cycles = async {
        // Pods and nodes must be known before anything is placed; Ferry's own kinds may be
        // missing on a cluster without the CRDs, and are then empty.
        let _ = scheduler.stores.pods.wait_until_ready().await;
        let _ = scheduler.stores.nodes.wait_until_ready().await;
        let others = async {
            let s = &scheduler.stores;
            let _ = futures::join!(
                s.namespaces.wait_until_ready(),
                s.groups.wait_until_ready(),
                s.queues.wait_until_ready(),
                s.reservations.wait_until_ready(),
                s.policies.wait_until_ready(),
                s.claims.wait_until_ready(),
                s.volumes.wait_until_ready(),
                s.classes.wait_until_ready(),
                s.replicasets.wait_until_ready(),
            );
        };
        if tokio::time::timeout(Duration::from_secs(10), others)
            .await
            .is_err()
        {
            tracing::warn!(
                "some of the kinds read (PodGroup, Queue, Reservation, ResourcePolicy, ReplicaSet) are not served; are the CRDs installed? Scheduling without them"
            );
        }
        tracing::info!(names = ?scheduler.config.scheduler_names, policy = scheduler.config.policy.name(), rss_mib = rss_mib(), "scheduler started");
        loop {
            scheduler.cycle().await;
            let _ = tokio::time::timeout(scheduler.config.retry_interval, wake.notified()).await;
            tokio::time::sleep(scheduler.config.gather).await;
        }
    };
    tokio::select! {
        _ = informers => {}
        _ = cycles => {}
        _ = shutdown => {}
    }
    if let Some(t) = metrics_task {
        t.abort();
    }
    tracing::info!("scheduler stopped");
}

struct Stores {
    pods: Store<Pod>,
    nodes: Store<Node>,
    namespaces: Store<Namespace>,
    groups: Store<PodGroup>,
    queues: Store<Queue>,
    reservations: Store<Reservation>,
    policies: Store<ResourcePolicy>,
    claims: Store<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    volumes: Store<k8s_openapi::api::core::v1::PersistentVolume>,
    classes: Store<k8s_openapi::api::storage::v1::StorageClass>,
    replicasets: Store<ReplicaSet>,
}

struct Scheduler {
    client: kube::Client,
    config: SchedulerConfig,
    planner: Planner,
    stores: Stores,
    /// The unbound `WaitForFirstConsumer` claims of each pending pod (this cycle's).
    delayed_claims: HashMap<PodId, Vec<String>>,
    /// Pods bound by this process but maybe not yet shown bound by the informer.
    assumed: HashMap<PodId, Assumed>,
    /// Pods this process evicted, with when (they take capacity until they are gone).
    evicting: HashMap<PodId, Instant>,
    writer: apply::Writer,
    /// When each job's object was first seen (FIFO among jobs created in one second).
    arrivals: snapshot::Arrivals,
    /// The warnings of the last snapshot (logged when new).
    warned: HashSet<String>,
    metrics: Arc<metrics::Metrics>,
}

/// The resident memory of this process in MiB (0 where /proc is missing).
fn rss_mib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kb| kb / 1024)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Scheduler {
    fn serves(names: &[String], pod: &Pod) -> bool {
        let name = pod
            .spec
            .scheduler_name
            .as_deref()
            .unwrap_or(ferry_api::DEFAULT_SCHEDULER_NAME);
        names.iter().any(|n| n == name)
    }

    /// One cycle: snapshot, session, then binds, evictions and reports.
    async fn cycle(&mut self) {
        let started = Instant::now();
        let built = {
            // The informers' objects live only while the snapshot is built: the Bindings
            // of this cycle replace the pods they bind, and the old versions are freed as
            // they are replaced rather than kept to the end of the cycle.
            let objects = Objects {
                pods: self.stores.pods.state(),
                nodes: self.stores.nodes.state(),
                namespaces: self.stores.namespaces.state(),
                groups: self.stores.groups.state(),
                queues: self.stores.queues.state(),
                reservations: self.stores.reservations.state(),
                policies: self.stores.policies.state(),
                replicasets: self.stores.replicasets.state(),
            };
            // Forget assumptions the informer has caught up with (or that are too old).
            let bound: HashSet<PodId> = objects
                .pods
                .iter()
                .filter(|p| p.spec.node_name.is_some())
                .map(|p| snapshot::pod_id(p))
                .collect();
            let present: HashSet<PodId> =
                objects.pods.iter().map(|p| snapshot::pod_id(p)).collect();
            let now = now_ms();
            self.assumed.retain(|id, a| {
                !bound.contains(id) && present.contains(id) && now.saturating_sub(a.at) < 60_000
            });
            self.evicting
                .retain(|id, at| present.contains(id) && at.elapsed() < Duration::from_secs(600));
            let evicting: HashSet<PodId> = self.evicting.keys().cloned().collect();
            let names = &self.config.scheduler_names;
            let planner = &mut self.planner;
            // GPU model ids are given per snapshot: only the models of the planner's nodes
            // keep theirs, so names that pods stop asking for are forgotten, and nodes'
            // models are interned before any pod's.
            planner.retain_models(|_| false);
            let mut built = snapshot::build(
                &objects,
                now,
                |p| Self::serves(names, p),
                &self.assumed,
                &evicting,
                &mut |m| planner.intern_model(m),
                &mut self.arrivals,
            );
            let storage = volume_binding::StorageObjects {
                claims: self.stores.claims.state(),
                volumes: self.stores.volumes.state(),
                classes: self.stores.classes.state(),
            };
            self.delayed_claims =
                volume_binding::restrict(&mut built, &objects.pods, &objects.nodes, &storage);
            built
        };
        for w in &built.warnings {
            if !self.warned.contains(w) {
                tracing::warn!("{w}");
            }
        }
        self.warned = built.warnings.iter().cloned().collect();
        let snapshot_ms = started.elapsed().as_millis() as u64;
        let outcome = match self.planner.run(&built.snapshot) {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(error = %e, "scheduling cycle failed");
                return;
            }
        };
        let decided = started.elapsed();
        self.metrics.cycle_duration.observe(decided.as_secs_f64());
        for w in &outcome.warnings {
            tracing::warn!("{w}");
        }
        volume_binding::annotate_selected_nodes(&self.client, &outcome.binds, &self.delayed_claims)
            .await;
        let bound_now = apply::bind_all(
            &self.client,
            &outcome,
            &built,
            self.config.bind_concurrency,
            &self.metrics,
        )
        .await;
        for (id, assumed) in bound_now {
            self.assumed.insert(id, assumed);
        }
        for id in apply::evict_all(&self.client, &outcome, &built, &self.metrics).await {
            self.evicting.insert(id, Instant::now());
        }
        self.writer.report(&outcome, &built);
        if !outcome.binds.is_empty() || !outcome.evictions.is_empty() {
            tracing::debug!(
                binds = outcome.binds.len(),
                evictions = outcome.evictions.len(),
                snapshot_ms,
                rss_mib = rss_mib(),
                decide_ms = decided.as_millis() as u64,
                total_ms = started.elapsed().as_millis() as u64,
                "scheduling cycle"
            );
        }
    }
}

//! Prometheus metrics of the scheduler, served at `/metrics`.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-queue metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// The queue.
    pub queue: String,
}

/// Labels of per-queue, per-resource metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueResourceLabels {
    /// The queue.
    pub queue: String,
    /// The resource (`cpu`, `memory`, `nvidia.com/gpu`, …), in its base unit.
    pub resource: String,
}

/// Labels of preemption counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PreemptionLabels {
    /// The queue whose pods were evicted.
    pub queue: String,
    /// `reclaim` or `priority`.
    pub reason: String,
}

/// Every metric the scheduler exports.
pub struct Metrics {
    registry: Registry,
    /// Time from a pod's creation to its binding.
    pub scheduling_latency: Histogram,
    /// Time one scheduling cycle takes.
    pub cycle_duration: Histogram,
    /// Pods bound.
    pub binds: Counter,
    /// Bindings that failed.
    pub bind_errors: Counter,
    /// Jobs waiting, per queue.
    pub pending_jobs: Family<QueueLabels, Gauge>,
    /// Resources in use, per queue and resource.
    pub queue_usage: Family<QueueResourceLabels, Gauge>,
    /// Guarantees, per queue and resource.
    pub queue_guaranteed: Family<QueueResourceLabels, Gauge>,
    /// Limits (guarantee + borrowing limit), per queue and resource.
    pub queue_limit: Family<QueueResourceLabels, Gauge>,
    /// Pods evicted to make room, per victim queue and reason.
    pub preemptions: Family<PreemptionLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("ferry_scheduler");
        let scheduling_latency = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let cycle_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 20));
        let binds = Counter::default();
        let bind_errors = Counter::default();
        let pending_jobs = Family::default();
        let queue_usage = Family::default();
        let queue_guaranteed = Family::default();
        let queue_limit = Family::default();
        let preemptions = Family::default();
        registry.register(
            "scheduling_latency_seconds",
            "Time from a pod's creation to its binding",
            scheduling_latency.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "Time one scheduling cycle takes",
            cycle_duration.clone(),
        );
        registry.register("binds", "Pods bound to nodes", binds.clone());
        registry.register(
            "bind_errors",
            "Bindings the API server refused",
            bind_errors.clone(),
        );
        registry.register(
            "queue_pending_jobs",
            "Jobs waiting in each queue",
            pending_jobs.clone(),
        );
        registry.register(
            "queue_usage",
            "Resources in use by each queue's subtree (cpu in milli-cores, memory in MiB, GPUs in thousandths)",
            queue_usage.clone(),
        );
        registry.register(
            "queue_guaranteed",
            "Guaranteed resources of each queue",
            queue_guaranteed.clone(),
        );
        registry.register(
            "queue_limit",
            "Most each queue may use (guarantee plus borrowing limit)",
            queue_limit.clone(),
        );
        registry.register(
            "preemptions",
            "Pods evicted to make room",
            preemptions.clone(),
        );
        Self {
            registry,
            scheduling_latency,
            cycle_duration,
            binds,
            bind_errors,
            pending_jobs,
            queue_usage,
            queue_guaranteed,
            queue_limit,
            preemptions,
        }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` (and `/healthz`) on `addr` until the task is dropped; returns the bound
/// address.
pub async fn serve(
    metrics: Arc<Metrics>,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    });
    Ok((bound, task))
}

//! Acting on a cycle's outcome: Bindings, evictions, and the reports people read (PodGroup
//! status, pod conditions, Events, Queue and Reservation status). Reports are written only
//! when they change.

use std::collections::HashMap;
use std::sync::Arc;

use ferry_api::scheduling::{
    Condition, PodGroup, PodGroupStatus, Queue, QueueStatus, Reservation, ReservationStatus,
};
use ferry_sched_jobs::{JobState, Outcome, PodId, PreemptionRule, Resource, Resources};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::metrics::{Metrics, PreemptionLabels, QueueLabels, QueueResourceLabels};
use crate::snapshot::{Assumed, Built, PodCounts, PodRef, split_id};

/// Now, as a Kubernetes time string.
fn now_string() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Posts every Binding of the outcome, concurrently. Returns the pods now assumed bound.
pub async fn bind_all(
    client: &kube::Client,
    outcome: &Outcome,
    built: &Built,
    concurrency: usize,
    metrics: &Metrics,
) -> Vec<(PodId, Assumed)> {
    let now = crate::now_ms();
    // The Bindings are posted straight from the outcome, and each result is taken as it
    // comes: nothing per pod is copied or held beyond what is returned.
    let mut assumed = Vec::with_capacity(outcome.binds.len());
    // At most `concurrency` in flight (a loop rather than a stream combinator, whose
    // closure over borrowed pods would not be `Send` for every lifetime).
    let mut waiting = outcome.binds.iter();
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        while running.len() < concurrency.max(1)
            && let Some(b) = waiting.next()
        {
            running.push(bind_one(client, b, built.pods.get(&b.pod)));
        }
        let Some((b, pod, result)) = running.next().await else {
            break;
        };
        match result {
            Ok(()) => {
                metrics.binds.inc();
                if let Some(pod) = pod {
                    metrics
                        .scheduling_latency
                        .observe(now.saturating_sub(pod.created) as f64 / 1000.0);
                }
                assumed.push((
                    b.pod.clone(),
                    Assumed {
                        node: b.node.clone(),
                        cards: b.cards,
                        at: now,
                    },
                ));
            }
            Err(e) => {
                metrics.bind_errors.inc();
                tracing::warn!(pod = %b.pod, error = %e, "binding failed; the pod is tried again");
            }
        }
    }
    assumed
}

/// Binds one pod of the outcome (none to post where the pod is unknown).
async fn bind_one<'a>(
    client: &kube::Client,
    b: &'a ferry_sched_jobs::Bind,
    pod: Option<&'a PodRef>,
) -> (
    &'a ferry_sched_jobs::Bind,
    Option<&'a PodRef>,
    Result<(), kube::Error>,
) {
    let indices: Vec<u32> = b.cards.indices().map(|i| i as u32).collect();
    let result = match pod {
        Some(pod) => bind(client, &b.pod, pod.uid.as_deref(), &b.node, &indices).await,
        None => Ok(()),
    };
    (b, pod, result)
}

/// Posts the Binding of pod `id` (with `uid`) to `node`, with its GPU cards as an annotation
/// (Kubernetes copies a Binding's annotations onto the pod).
async fn bind(
    client: &kube::Client,
    id: &str,
    uid: Option<&str>,
    node: &str,
    cards: &[u32],
) -> Result<(), kube::Error> {
    let (ns, name) = split_id(id);
    let ns = if ns.is_empty() { "default" } else { ns };
    let mut annotations = serde_json::Map::new();
    if !cards.is_empty() {
        annotations.insert(
            ferry_api::gpu::POD_ASSIGNED_ANNOTATION.into(),
            json!(ferry_api::gpu::format_assigned(cards)),
        );
    }
    let binding = json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "annotations": annotations},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    });
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let _: serde_json::Value = api
        .create_subresource("binding", name, &PostParams::default(), &binding)
        .await?;
    Ok(())
}

/// Deletes every victim of the outcome (with its grace period) and records why. Returns the
/// pods being evicted.
pub async fn evict_all(
    client: &kube::Client,
    outcome: &Outcome,
    built: &Built,
    metrics: &Metrics,
) -> Vec<PodId> {
    let mut evicted = Vec::new();
    for e in &outcome.evictions {
        let Some(pod) = built.pods.get(&e.pod) else {
            continue;
        };
        let (ns, name) = split_id(&e.pod);
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                let (queue, reason) = match &e.rule {
                    PreemptionRule::Reclaim { victim_queue, .. } => {
                        (victim_queue.clone(), "reclaim")
                    }
                    PreemptionRule::Priority { .. } => (
                        built.queue_of_job.get(&e.job).cloned().unwrap_or_default(),
                        "priority",
                    ),
                };
                metrics
                    .preemptions
                    .get_or_create(&PreemptionLabels {
                        queue,
                        reason: reason.into(),
                    })
                    .inc();
                event(
                    client,
                    &object_ref_pod(&e.pod, pod),
                    "Warning",
                    "Preempted",
                    &e.message,
                )
                .await;
                evicted.push(e.pod.clone());
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(err) => tracing::warn!(pod = %e.pod, error = %err, "eviction failed"),
        }
    }
    evicted
}

/// The `involvedObject` of an Event.
#[derive(Debug, Clone)]
struct ObjectRef {
    api_version: &'static str,
    kind: &'static str,
    namespace: String,
    name: String,
    uid: Option<String>,
}

fn object_ref_pod(id: &str, pod: &PodRef) -> ObjectRef {
    let (namespace, name) = split_id(id);
    ObjectRef {
        api_version: "v1",
        kind: "Pod",
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: pod.uid.clone(),
    }
}

fn object_ref_group(g: &PodGroup) -> ObjectRef {
    ObjectRef {
        api_version: "scheduling.x-k8s.io/v1alpha1",
        kind: "PodGroup",
        namespace: g.metadata.namespace.clone().unwrap_or_default(),
        name: g.metadata.name.clone().unwrap_or_default(),
        uid: g.metadata.uid.clone(),
    }
}

/// Records an Event (best effort).
async fn event(
    client: &kube::Client,
    object: &ObjectRef,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let now = now_string();
    // Events within one second keep their order: a MicroTime, and client-go's names
    // (`<object>.<nanoseconds in hex>`, the order `kubectl describe` lists ties in).
    let at = k8s_openapi::jiff::Timestamp::now();
    let micro = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(at);
    let value = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{}.{:x}", object.name, at.as_nanosecond()), "namespace": object.namespace},
        "involvedObject": {
            "apiVersion": object.api_version, "kind": object.kind,
            "namespace": object.namespace, "name": object.name, "uid": object.uid,
        },
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": ferry_api::SCHEDULER_NAME},
        "reportingComponent": ferry_api::SCHEDULER_NAME,
        "reportingInstance": ferry_api::SCHEDULER_NAME,
        "action": reason,
        "eventTime": micro,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let Ok(ev) = serde_json::from_value::<Event>(value) else {
        return;
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &object.namespace);
    if let Err(e) = api.create(&PostParams::default(), &ev).await {
        tracing::debug!(error = %e, "could not record an Event");
    }
}

/// One write of a report.
enum Write {
    PodPending {
        id: PodId,
        pod: PodRef,
        reason: String,
        message: String,
    },
    PodScheduledEvent {
        id: PodId,
        pod: PodRef,
        node: String,
    },
    GroupStatus {
        group: Arc<PodGroup>,
        status: PodGroupStatus,
        event: Option<(&'static str, &'static str, String)>,
    },
    QueueStatus {
        name: String,
        status: QueueStatus,
    },
    ReservationStatus {
        namespace: String,
        name: String,
        status: ReservationStatus,
    },
}

/// Writes reports, remembering what was written so unchanged reports are not rewritten. The
/// writes themselves run in the background, so a cycle never waits for them (Bindings come
/// first).
pub struct Writer {
    queue: tokio::sync::mpsc::UnboundedSender<Write>,
    metrics: Arc<Metrics>,
    /// Last message written per pod / group / queue / reservation key.
    written: HashMap<String, String>,
}

impl Writer {
    /// A writer whose background task writes at most `concurrency` reports at once.
    pub fn new(client: kube::Client, metrics: Arc<Metrics>, concurrency: usize) -> Self {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel::<Write>();
        let incoming =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) });
        tokio::spawn(incoming.for_each_concurrent(concurrency.max(1), move |w| {
            let client = client.clone();
            async move { write(&client, w).await }
        }));
        Self {
            queue,
            metrics,
            written: HashMap::new(),
        }
    }

    /// Keeps `key` → `value`; true when it changed (and must be written).
    fn changed(&mut self, key: String, value: String) -> bool {
        if self.written.get(&key) == Some(&value) {
            return false;
        }
        self.written.insert(key, value);
        true
    }

    /// Writes everything that changed in this cycle's outcome, and updates the metrics.
    pub fn report(&mut self, outcome: &Outcome, built: &Built) {
        let mut writes = Vec::new();
        let bound_jobs: HashMap<&str, Vec<&str>> =
            outcome.binds.iter().fold(HashMap::new(), |mut m, b| {
                m.entry(b.job.as_str()).or_default().push(b.node.as_str());
                m
            });
        // Waiting jobs: why, on each waiting pod and on the PodGroup.
        let mut messages: HashMap<&str, (String, String)> = HashMap::new();
        for r in &outcome.jobs {
            if matches!(r.state, JobState::Pending | JobState::Nominated) {
                let reason = match r.state {
                    JobState::Nominated => "Nominated".to_string(),
                    _ => r
                        .reason
                        .as_ref()
                        .map(reason_code)
                        .unwrap_or("Unschedulable")
                        .to_string(),
                };
                // The message already tells what preemption tried (`r.preemption`).
                messages.insert(r.job.as_str(), (reason, r.message.clone()));
            }
        }
        for rej in &built.rejected {
            messages.insert(
                rej.job.as_str(),
                (rej.reason.to_string(), rej.message.clone()),
            );
        }
        for (job, (reason, message)) in &messages {
            for pod_id in built.pending.get(*job).into_iter().flatten().chain(
                built
                    .rejected
                    .iter()
                    .filter(|r| r.job == *job)
                    .flat_map(|r| r.pods.iter()),
            ) {
                let Some(pod) = built.pods.get(pod_id) else {
                    continue;
                };
                if self.changed(format!("pod {pod_id}"), message.clone()) {
                    writes.push(Write::PodPending {
                        id: pod_id.clone(),
                        pod: pod.clone(),
                        reason: reason.clone(),
                        message: message.clone(),
                    });
                }
            }
        }
        // Pods bound alone: a Scheduled event each (gangs get one on their PodGroup).
        for b in &outcome.binds {
            if built.groups.contains_key(&b.job) {
                continue;
            }
            if let Some(pod) = built.pods.get(&b.pod) {
                self.written.remove(&format!("pod {}", b.pod));
                writes.push(Write::PodScheduledEvent {
                    id: b.pod.clone(),
                    pod: pod.clone(),
                    node: b.node.clone(),
                });
            }
        }
        // PodGroups: phase, counts, and why they wait.
        for (job, group) in &built.groups {
            let mut counts: PodCounts = built.counts.get(job).cloned().unwrap_or_default();
            let just_bound = bound_jobs.get(job.as_str()).map_or(0, Vec::len) as i32;
            counts.scheduled += just_bound;
            counts.pending -= just_bound.min(counts.pending);
            let min = group.spec.min_member.max(1);
            let phase = if counts.failed > 0 && counts.running + counts.pending == 0 {
                "Failed"
            } else if counts.succeeded >= min && counts.running + counts.pending == 0 {
                "Succeeded"
            } else if counts.running >= min {
                "Running"
            } else if counts.scheduled >= min {
                "Scheduled"
            } else {
                "Pending"
            };
            let condition = match messages.get(job.as_str()) {
                Some((reason, message)) => Condition {
                    type_: "Scheduled".into(),
                    status: "False".into(),
                    reason: reason.clone(),
                    message: message.clone(),
                    last_transition_time: None,
                },
                None if counts.scheduled >= min => Condition {
                    type_: "Scheduled".into(),
                    status: "True".into(),
                    reason: "Scheduled".into(),
                    message: format!(
                        "{} of {} pods bound (minMember {min})",
                        counts.scheduled,
                        counts.scheduled + counts.pending
                    ),
                    last_transition_time: None,
                },
                None => continue,
            };
            let start = group
                .status
                .as_ref()
                .and_then(|s| s.schedule_start_time.clone())
                .unwrap_or_else(now_string);
            let status = PodGroupStatus {
                phase: Some(phase.into()),
                scheduled: Some(counts.scheduled),
                running: Some(counts.running),
                succeeded: Some(counts.succeeded),
                failed: Some(counts.failed),
                occupied_by: group.status.as_ref().and_then(|s| s.occupied_by.clone()),
                schedule_start_time: Some(start),
                conditions: vec![condition],
            };
            let fingerprint = format!("{status:?}");
            if self.changed(format!("group {job}"), fingerprint) {
                let event = if just_bound > 0 {
                    let nodes: std::collections::BTreeSet<&str> =
                        bound_jobs[job.as_str()].iter().copied().collect();
                    Some((
                        "Normal",
                        "Scheduled",
                        format!(
                            "Bound {just_bound} pods to {} node(s): {}",
                            nodes.len(),
                            nodes.into_iter().take(10).collect::<Vec<_>>().join(", ")
                        ),
                    ))
                } else {
                    messages
                        .get(job.as_str())
                        .map(|(_, m)| ("Warning", "FailedScheduling", m.clone()))
                };
                let mut status = status;
                status.conditions[0].last_transition_time = Some(now_string());
                writes.push(Write::GroupStatus {
                    group: group.clone(),
                    status,
                    event,
                });
            }
        }
        // Queues: status and metrics.
        let mut running_jobs: HashMap<&str, u32> = HashMap::new();
        for r in &outcome.jobs {
            if matches!(r.state, JobState::Running | JobState::Bound) {
                *running_jobs.entry(r.queue.as_str()).or_default() += 1;
            }
        }
        for q in &outcome.queues {
            self.metrics
                .pending_jobs
                .get_or_create(&QueueLabels {
                    queue: q.name.clone(),
                })
                .set(q.pending_jobs as i64);
            for r in Resource::ALL {
                let labels = QueueResourceLabels {
                    queue: q.name.clone(),
                    resource: resource_label(r).into(),
                };
                self.metrics
                    .queue_usage
                    .get_or_create(&labels)
                    .set(q.usage.get(r) as i64);
                self.metrics
                    .queue_guaranteed
                    .get_or_create(&labels)
                    .set(q.guaranteed.get(r) as i64);
                self.metrics
                    .queue_limit
                    .get_or_create(&labels)
                    .set(q.limit.get(r).map_or(-1, |v| v.min(i64::MAX as u64) as i64));
            }
            let status = QueueStatus {
                pending_jobs: Some(q.pending_jobs),
                running_jobs: Some(running_jobs.get(q.name.as_str()).copied().unwrap_or(0)),
                usage: amounts(&q.usage),
                guaranteed: amounts(&q.guaranteed),
                limit: Resource::ALL
                    .into_iter()
                    .filter_map(|r| {
                        q.limit
                            .get(r)
                            .map(|v| (resource_label(r).to_string(), format_amount(r, v)))
                    })
                    .collect(),
            };
            if self.changed(format!("queue {}", q.name), format!("{status:?}"))
                && !q.name.is_empty()
            {
                writes.push(Write::QueueStatus {
                    name: q.name.clone(),
                    status,
                });
            }
        }
        for r in &outcome.reservations {
            let (ns, name) = split_id(&r.name);
            let status = ReservationStatus {
                phase: Some(if r.active { "Active" } else { "Expired" }.into()),
                expires_at: None,
                message: Some(
                    r.nodes
                        .iter()
                        .map(|n| {
                            format!(
                                "{}: {} of {} GPU used",
                                n.node,
                                n.used.gpu_milli / 1000,
                                n.held.gpu_milli / 1000
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            if self.changed(format!("reservation {}", r.name), format!("{status:?}")) {
                writes.push(Write::ReservationStatus {
                    namespace: ns.into(),
                    name: name.into(),
                    status,
                });
            }
        }
        for w in writes {
            // The receiver lives as long as the runtime; a send fails only at shutdown.
            let _ = self.queue.send(w);
        }
        // Forget pods that are gone.
        self.written.retain(|k, _| {
            k.strip_prefix("pod ")
                .is_none_or(|id| built.pods.contains_key(id))
        });
    }
}

fn reason_code(r: &ferry_sched_jobs::PendingReason) -> &'static str {
    use ferry_sched_jobs::PendingReason as P;
    match r {
        P::Quota(_) => "QuotaExceeded",
        P::Unschedulable { .. } => "Unschedulable",
        P::WaitingForPods { .. } => "WaitingForPods",
        P::UnknownQueue { .. } => "QueueNotFound",
        P::NotALeafQueue { .. } => "NotALeafQueue",
        P::InvalidPod { .. } => "InvalidRequest",
        _ => "Waiting",
    }
}

fn resource_label(r: Resource) -> &'static str {
    match r {
        Resource::Cpu => "cpu",
        Resource::Memory => "memory",
        Resource::Gpu => "nvidia.com/gpu",
        Resource::GpuMemory => crate::convert::GPU_MEMORY_RESOURCE,
    }
}

/// An amount in Kubernetes quantity notation.
fn format_amount(r: Resource, v: u64) -> String {
    match r {
        Resource::Cpu | Resource::Gpu if v.is_multiple_of(1000) => (v / 1000).to_string(),
        Resource::Cpu | Resource::Gpu => format!("{v}m"),
        Resource::Memory | Resource::GpuMemory => format!("{v}Mi"),
    }
}

fn amounts(r: &Resources) -> std::collections::BTreeMap<String, String> {
    Resource::ALL
        .into_iter()
        .filter(|x| r.get(*x) > 0)
        .map(|x| (resource_label(x).to_string(), format_amount(x, r.get(x))))
        .collect()
}

async fn write(client: &kube::Client, w: Write) {
    let result = match w {
        Write::PodPending {
            id,
            pod,
            reason,
            message,
        } => {
            let (ns, name) = split_id(&id);
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            let patch = json!({"status": {"conditions": [{
                "type": "PodScheduled", "status": "False", "reason": reason, "message": message,
                "lastProbeTime": null, "lastTransitionTime": now_string(),
            }]}});
            let r = api
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map(|_| ());
            if r.is_ok() {
                event(
                    client,
                    &object_ref_pod(&id, &pod),
                    "Warning",
                    "FailedScheduling",
                    &message,
                )
                .await;
            }
            r
        }
        Write::PodScheduledEvent { id, pod, node } => {
            let msg = format!("Successfully assigned {id} to {node}");
            event(
                client,
                &object_ref_pod(&id, &pod),
                "Normal",
                "Scheduled",
                &msg,
            )
            .await;
            Ok(())
        }
        Write::GroupStatus {
            group,
            status,
            event: ev,
        } => {
            let ns = group.metadata.namespace.clone().unwrap_or_default();
            let name = group.metadata.name.clone().unwrap_or_default();
            let api: Api<PodGroup> = Api::namespaced(client.clone(), &ns);
            let r = api
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await
                .map(|_| ());
            if let (Ok(()), Some((t, reason, message))) = (&r, ev) {
                event(client, &object_ref_group(&group), t, reason, &message).await;
            }
            r
        }
        Write::QueueStatus { name, status } => {
            let api: Api<Queue> = Api::all(client.clone());
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map(|_| ())
        }
        Write::ReservationStatus {
            namespace,
            name,
            status,
        } => {
            let api: Api<Reservation> = Api::namespaced(client.clone(), &namespace);
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map(|_| ())
        }
    };
    match result {
        Ok(()) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => tracing::debug!(error = %e, "could not write a scheduling report"),
    }
}

//! Acting on a cycle's outcome: Bindings, evictions, and the reports people read (PodGroup
//! status, pod conditions, Events, Queue and Reservation status). Reports are
//! level-triggered: compared with the objects as the informers show them, and written
//! again with back-off until they show.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::scheduling::{
    Condition, PodGroup, PodGroupStatus, Queue, QueueStatus, Reservation, ReservationStatus,
};
use ferry_sched_jobs::{JobId, JobState, Outcome, PodId, PreemptionRule, Resource, Resources};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::metrics::{Metrics, PreemptionLabels, QueueLabels, QueueResourceLabels};
use crate::objects::ScheduledCondition;
use crate::snapshot::{Assumed, Built, PodCounts, PodRef, split_id};

/// Now, as a Kubernetes time string.
fn now_string() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
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
                let message = if e.surplus {
                    format!(
                        "surplus pod (beyond minMember) of elastic group {} taken back, its minimum keeps running: {}",
                        e.job, e.message
                    )
                } else {
                    e.message.clone()
                };
                event(
                    client,
                    &object_ref_pod(&e.pod, pod),
                    "Warning",
                    "Preempted",
                    &message,
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

/// Tries to record one Event this many times.
const EVENT_ATTEMPTS: u32 = 4;

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
    // An Event records a moment, and has no object to compare with: retried a few times.
    let mut delay = RETRY_MIN;
    for attempt in 1..=EVENT_ATTEMPTS {
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 422 => return,
            Err(e) if attempt == EVENT_ATTEMPTS => {
                tracing::debug!(error = %e, "could not record an Event");
            }
            Err(_) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX);
            }
        }
    }
}

/// What a report is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pod(PodId),
    Group(JobId),
    Queue(String),
    Reservation(String),
}

/// Where the last write of a report stands.
#[derive(Debug, Clone)]
enum Sent {
    /// Being written.
    InFlight,
    /// Written while the informer showed `rv`.
    Written { rv: Option<String>, at: Instant },
    /// Failed while the informer showed `rv`: tried again at `retry_at`, or as soon as the
    /// informer shows another version (a 409 is answered by re-reading, re-computing and
    /// writing again).
    Failed {
        rv: Option<String>,
        retry_at: Instant,
    },
}

/// The last write of one report.
#[derive(Debug, Clone)]
struct Track {
    /// The report written (its fingerprint, without timestamps).
    report: String,
    sent: Sent,
    /// Failed writes in a row (for the back-off).
    failures: u32,
    /// Writes of this report that succeeded and were then not what the informer showed
    /// (another writer, or a version in between): written again with back-off, so two
    /// writers that disagree do not fight at full speed.
    rewrites: u32,
}

/// The first retry of a failed write waits this long; each failure doubles it.
const RETRY_MIN: Duration = Duration::from_millis(100);
/// The longest wait between retries.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// A write the informer never shows (a lost watch event) is written again after this.
const UNSEEN: Duration = Duration::from_secs(30);

fn backoff(failures: u32) -> Duration {
    RETRY_MIN
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

/// One write of a report.
enum Write {
    /// A pending pod's `PodScheduled=False` condition, and a `FailedScheduling` Event.
    PodPending {
        id: PodId,
        pod: PodRef,
        reason: String,
        message: String,
    },
    /// An Event only.
    Event {
        object: ObjectRef,
        type_: &'static str,
        reason: &'static str,
        message: String,
    },
    /// A PodGroup's status (a merge patch from the informer's version), and an Event.
    GroupStatus {
        group: ObjectRef,
        patch: Value,
        event: Option<(&'static str, &'static str, String)>,
    },
    /// A Queue's status (a merge patch).
    QueueStatus { name: String, patch: Value },
    /// A Reservation's status (a merge patch).
    ReservationStatus {
        namespace: String,
        name: String,
        patch: Value,
    },
}

/// A merge patch of `status` that turns `observed` into `desired`: `desired`, with `null`
/// for each key of an object in `observed` that `desired` lacks (a merge patch removes only
/// what it names, so usage that went back to zero would otherwise stay).
fn status_patch<T: serde::Serialize>(observed: Option<&T>, desired: &T) -> Value {
    fn diff(observed: &Value, desired: &Value) -> Value {
        match (observed, desired) {
            (Value::Object(o), Value::Object(d)) => {
                let mut out = serde_json::Map::new();
                for (k, v) in d {
                    out.insert(k.clone(), diff(o.get(k).unwrap_or(&Value::Null), v));
                }
                for k in o.keys().filter(|k| !d.contains_key(*k)) {
                    out.insert(k.clone(), Value::Null);
                }
                Value::Object(out)
            }
            (_, d) => d.clone(),
        }
    }
    let observed = observed
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    let desired = serde_json::to_value(desired).unwrap_or(Value::Null);
    json!({ "status": diff(&observed, &desired) })
}

/// A write, and the report it carries (none for Events).
struct Job {
    key: Option<Key>,
    /// The object's resourceVersion as the informer showed it.
    rv: Option<String>,
    write: Write,
}

/// The writes of one cycle, decided against the informers' objects and the last writes.
struct Plan<'a> {
    tracks: &'a mut HashMap<Key, Track>,
    considered: HashSet<Key>,
    jobs: Vec<Job>,
    now: Instant,
}

impl Plan<'_> {
    /// Offers the report `report` about `key`. `settled`: the object as the informer shows
    /// it already says so. Otherwise the report is written unless the same one is in
    /// flight, written and not yet shown by the informer, or failed and waiting for its
    /// retry with the object unchanged.
    fn offer(
        &mut self,
        key: Key,
        report: String,
        rv: Option<&str>,
        settled: bool,
        write: impl FnOnce() -> Write,
    ) {
        self.considered.insert(key.clone());
        let in_flight = |t: &Track| matches!(t.sent, Sent::InFlight);
        if settled {
            if self.tracks.get(&key).is_some_and(|t| !in_flight(t)) {
                self.tracks.remove(&key);
            }
            return;
        }
        let due = match self.tracks.get(&key) {
            None => true,
            Some(t) if in_flight(t) => false,
            Some(t) if t.report != report => true,
            Some(t) => match &t.sent {
                Sent::InFlight => false,
                Sent::Written { rv: sent, at } => {
                    let waited = self.now.saturating_duration_since(*at);
                    (sent.as_deref() != rv && waited >= backoff(t.rewrites + 1)) || waited > UNSEEN
                }
                Sent::Failed { rv: sent, retry_at } => {
                    sent.as_deref() != rv || self.now >= *retry_at
                }
            },
        };
        if !due {
            return;
        }
        let track = self.tracks.entry(key.clone()).or_insert_with(|| Track {
            report: String::new(),
            sent: Sent::InFlight,
            failures: 0,
            rewrites: 0,
        });
        if track.report != report {
            track.failures = 0;
            track.rewrites = 0;
        } else if matches!(track.sent, Sent::Written { .. }) {
            track.rewrites += 1;
        }
        track.report = report;
        track.sent = Sent::InFlight;
        self.jobs.push(Job {
            key: Some(key),
            rv: rv.map(str::to_string),
            write: write(),
        });
    }

    /// An Event, written once.
    fn event(&mut self, write: Write) {
        self.jobs.push(Job {
            key: None,
            rv: None,
            write,
        });
    }
}

/// Records the result of a write; returns when to try again after a failure.
fn finished(
    tracks: &mut HashMap<Key, Track>,
    key: &Key,
    rv: Option<String>,
    result: Result<(), kube::Error>,
) -> Option<Duration> {
    let track = tracks.get_mut(key)?;
    match result {
        Ok(()) => {
            track.failures = 0;
            track.sent = Sent::Written {
                rv,
                at: Instant::now(),
            };
            None
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracks.remove(key);
            None
        }
        Err(e) => {
            track.failures += 1;
            let delay = backoff(track.failures);
            if track.failures >= 5 {
                tracing::warn!(report = ?key, failures = track.failures, error = %e, "a scheduling report cannot be written; trying again");
            } else {
                tracing::debug!(report = ?key, error = %e, "could not write a scheduling report; trying again");
            }
            track.sent = Sent::Failed {
                rv,
                retry_at: Instant::now() + delay,
            };
            Some(delay)
        }
    }
}

/// Writes the reports people read. Reports are level-triggered: each cycle computes them
/// all and compares each with its object as the informer shows it (not with what was sent
/// last); a report that differs is written, and written again with back-off while the
/// write fails. The writes run in the background, so a cycle never waits for them
/// (Bindings come first).
pub struct Writer {
    queue: tokio::sync::mpsc::UnboundedSender<Job>,
    tracks: Arc<Mutex<HashMap<Key, Track>>>,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// A writer whose background task writes at most `concurrency` reports at once, and
    /// notifies `wake` when a failed write is due again.
    pub fn new(
        client: kube::Client,
        metrics: Arc<Metrics>,
        concurrency: usize,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let (queue, rx) = tokio::sync::mpsc::unbounded_channel::<Job>();
        let tracks: Arc<Mutex<HashMap<Key, Track>>> = Arc::default();
        let incoming =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|w| (w, rx)) });
        let shared = tracks.clone();
        tokio::spawn(
            incoming.for_each_concurrent(concurrency.max(1), move |job| {
                let client = client.clone();
                let tracks = shared.clone();
                let wake = wake.clone();
                async move {
                    let result = write(&client, job.write).await;
                    let Some(key) = job.key else { return };
                    let retry = finished(&mut lock(&tracks), &key, job.rv, result);
                    if let Some(delay) = retry {
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            wake.notify_one();
                        });
                    }
                }
            }),
        );
        Self {
            queue,
            tracks,
            metrics,
        }
    }

    /// Writes every report of this cycle's outcome that the informers' objects do not show
    /// yet, and updates the metrics.
    pub fn report(&mut self, outcome: &Outcome, built: &Built) {
        let tracks = self.tracks.clone();
        let mut tracks = lock(&tracks);
        let mut plan = Plan {
            tracks: &mut tracks,
            considered: HashSet::new(),
            jobs: Vec::new(),
            now: Instant::now(),
        };
        let bound_jobs: HashMap<&str, Vec<&str>> =
            outcome.binds.iter().fold(HashMap::new(), |mut m, b| {
                m.entry(b.job.as_str()).or_default().push(b.node.as_str());
                m
            });
        // Waiting jobs: why, on each waiting pod and on the PodGroup. A job some of whose
        // pods are bound or running (a controller's, or a gang's pods beyond its
        // minMember) still says why the rest wait.
        let mut messages: HashMap<&str, (String, String)> = HashMap::new();
        // Jobs none of whose pods is placed (a PodGroup's status says so).
        let mut unplaced: HashSet<&str> = HashSet::new();
        for r in &outcome.jobs {
            if matches!(r.state, JobState::Pending | JobState::Nominated) {
                unplaced.insert(r.job.as_str());
            }
            if unplaced.contains(r.job.as_str()) || (r.reason.is_some() && r.pending > 0) {
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
        // Pods left out of the cycle: the whole job's pods, or only these.
        for rej in built.rejected.iter().filter(|r| r.whole_job) {
            unplaced.insert(rej.job.as_str());
            messages.insert(
                rej.job.as_str(),
                (rej.reason.to_string(), rej.message.clone()),
            );
        }
        // Every waiting pod with its job, reason and message.
        let mut pod_messages: Vec<(&PodId, &str, &str, &str)> = Vec::new();
        for rej in built.rejected.iter().filter(|r| !r.whole_job) {
            for p in &rej.pods {
                pod_messages.push((p, rej.job.as_str(), rej.reason, rej.message.as_str()));
            }
        }
        for (job, (reason, message)) in &messages {
            let pods = built.pending.get(*job).into_iter().flatten().chain(
                built
                    .rejected
                    .iter()
                    .filter(|r| r.job == *job && r.whole_job)
                    .flat_map(|r| r.pods.iter()),
            );
            pod_messages.extend(pods.map(|p| (p, *job, reason.as_str(), message.as_str())));
        }
        let just_bound: HashSet<&str> = outcome.binds.iter().map(|b| b.pod.as_str()).collect();
        for (pod_id, job, reason, message) in pod_messages {
            let Some(pod) = built.pods.get(pod_id) else {
                continue;
            };
            if just_bound.contains(pod_id.as_str()) {
                continue;
            }
            // Pods of a controller say which one they wait as.
            let message = match built.owners.get(job) {
                Some(owner) if owner == job => format!("{owner}: {message}"),
                Some(owner) => format!("{owner} ({job}): {message}"),
                None => message.to_string(),
            };
            let want = ScheduledCondition {
                status: "False".into(),
                reason: reason.to_string(),
                message,
            };
            let settled = pod.scheduled.as_ref() == Some(&want);
            plan.offer(
                Key::Pod(pod_id.clone()),
                format!("{reason}\n{}", want.message),
                pod.resource_version.as_deref(),
                settled,
                || Write::PodPending {
                    id: pod_id.clone(),
                    pod: pod.clone(),
                    reason: want.reason,
                    message: want.message,
                },
            );
        }
        // Pods bound alone: a Scheduled event each (gangs get one on their PodGroup).
        for b in &outcome.binds {
            if built.groups.contains_key(&b.job) {
                continue;
            }
            if let Some(pod) = built.pods.get(&b.pod) {
                plan.event(Write::Event {
                    object: object_ref_pod(&b.pod, pod),
                    type_: "Normal",
                    reason: "Scheduled",
                    message: format!("Successfully assigned {} to {}", b.pod, b.node),
                });
            }
        }
        // PodGroups: phase, counts, and why they wait.
        let shrunk: HashMap<&str, &str> = outcome
            .jobs
            .iter()
            .filter(|r| r.shrunk > 0)
            .map(|r| (r.job.as_str(), r.message.as_str()))
            .collect();
        for (job, group) in &built.groups {
            if let Some(message) = shrunk.get(job.as_str()) {
                // An elastic group gave surplus pods back: its minimum keeps running.
                plan.event(Write::Event {
                    object: object_ref_group(group),
                    type_: "Normal",
                    reason: "SurplusPreempted",
                    message: message.to_string(),
                });
            }
            let mut counts: PodCounts = built.counts.get(job).cloned().unwrap_or_default();
            let bound_now = bound_jobs.get(job.as_str());
            let just_bound = bound_now.map_or(0, Vec::len) as i32;
            counts.scheduled += just_bound;
            counts.pending -= just_bound.min(counts.pending);
            if let Some(nodes) = bound_now {
                let nodes: BTreeSet<&str> = nodes.iter().copied().collect();
                plan.event(Write::Event {
                    object: object_ref_group(group),
                    type_: "Normal",
                    reason: "Scheduled",
                    message: format!(
                        "Bound {just_bound} pods to {} node(s): {}",
                        nodes.len(),
                        nodes.into_iter().take(10).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            let observed = group.status.clone().unwrap_or_default();
            let message = messages
                .get(job.as_str())
                .filter(|_| unplaced.contains(job.as_str()));
            let status = group_status(&observed, &counts, group.spec.min_member, message);
            let settled = group.status.as_ref() == Some(&status);
            let fingerprint = format!("{:?}", without_times(&status));
            plan.offer(
                Key::Group(job.clone()),
                fingerprint,
                group.metadata.resource_version.as_deref(),
                settled,
                || {
                    let changed =
                        observed.phase != status.phase || observed.conditions != status.conditions;
                    let event = message
                        .filter(|_| changed)
                        .map(|(_, m)| ("Warning", "FailedScheduling", m.clone()));
                    Write::GroupStatus {
                        group: object_ref_group(group),
                        patch: status_patch(group.status.as_ref(), &status),
                        event,
                    }
                },
            );
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
            // The default queue may be implied (no object): nothing to write then.
            let Some(queue) = built.queues.get(&q.name) else {
                continue;
            };
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
            let settled = queue.status.as_ref() == Some(&status);
            plan.offer(
                Key::Queue(q.name.clone()),
                format!("{status:?}"),
                queue.metadata.resource_version.as_deref(),
                settled,
                || Write::QueueStatus {
                    name: q.name.clone(),
                    patch: status_patch(queue.status.as_ref(), &status),
                },
            );
        }
        for r in &outcome.reservations {
            let Some(reservation) = built.reservations.get(&r.name) else {
                continue;
            };
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
            let settled = reservation.status.as_ref() == Some(&status);
            plan.offer(
                Key::Reservation(r.name.clone()),
                format!("{status:?}"),
                reservation.metadata.resource_version.as_deref(),
                settled,
                || {
                    let (namespace, name) = split_id(&r.name);
                    Write::ReservationStatus {
                        namespace: namespace.into(),
                        name: name.into(),
                        patch: status_patch(reservation.status.as_ref(), &status),
                    }
                },
            );
        }
        let Plan {
            considered, jobs, ..
        } = plan;
        // Forget reports about objects that are gone or no longer reported on.
        tracks.retain(|k, t| considered.contains(k) || matches!(t.sent, Sent::InFlight));
        drop(tracks);
        for job in jobs {
            // The receiver lives as long as the runtime; a send fails only at shutdown.
            let _ = self.queue.send(job);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The phase of a PodGroup from its pods, with scheduler-plugins' names: `Finished` once
/// every pod ended and none failed, `Failed` once one failed and the group has run (as
/// scheduler-plugins decides), `Running` while at least `minMember` run (or ran),
/// `Scheduled` once `minMember` are bound, `Pending` otherwise (also when its pods are gone).
pub fn group_phase(c: &PodCounts, min_member: i32) -> &'static str {
    let min = min_member.max(1);
    let active = c.scheduled + c.pending;
    if active == 0 && c.succeeded + c.failed > 0 {
        if c.failed > 0 { "Failed" } else { "Finished" }
    } else if c.failed > 0 && c.failed + c.running + c.succeeded >= min {
        "Failed"
    } else if c.running > 0 && c.running + c.succeeded >= min {
        "Running"
    } else if c.scheduled >= min {
        "Scheduled"
    } else {
        "Pending"
    }
}

/// The status a PodGroup should show: `observed` (as the informer has it) brought up to
/// date with its pods' `counts` and why it waits. A finished or failed group stays so while
/// none of its pods is active (its pods may be deleted afterwards).
pub fn group_status(
    observed: &PodGroupStatus,
    counts: &PodCounts,
    min_member: i32,
    waiting: Option<&(String, String)>,
) -> PodGroupStatus {
    let min = min_member.max(1);
    let ended = matches!(observed.phase.as_deref(), Some("Finished" | "Failed"));
    if ended && counts.scheduled + counts.pending == 0 && observed.schedule_start_time.is_some() {
        return observed.clone();
    }
    let total = counts.scheduled + counts.pending + counts.succeeded + counts.failed;
    let scheduled = match waiting {
        Some((reason, message)) => Some(("False", reason.clone(), message.clone())),
        None if counts.scheduled >= min => Some((
            "True",
            "Scheduled".to_string(),
            format!(
                "{} of {} pods bound (minMember {min})",
                counts.scheduled,
                counts.scheduled + counts.pending
            ),
        )),
        None if total == 0 => Some((
            "False",
            "WaitingForPods".to_string(),
            format!("gang needs {min} pods, only 0 exist; waiting for the rest to be created"),
        )),
        // Nothing new to say (e.g. every pod ended): what was said stays.
        None => None,
    };
    let mut conditions = observed.conditions.clone();
    if let Some((status, reason, message)) = scheduled {
        let before = conditions.iter().position(|c| c.type_ == "Scheduled");
        let since = before
            .map(|i| &conditions[i])
            .filter(|c| c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(now_string);
        let condition = Condition {
            type_: "Scheduled".into(),
            status: status.into(),
            reason,
            message,
            last_transition_time: Some(since),
        };
        match before {
            Some(i) => conditions[i] = condition,
            None => conditions.push(condition),
        }
    }
    PodGroupStatus {
        phase: Some(group_phase(counts, min).into()),
        scheduled: Some(counts.scheduled),
        running: Some(counts.running),
        succeeded: Some(counts.succeeded),
        failed: Some(counts.failed),
        occupied_by: observed.occupied_by.clone(),
        schedule_start_time: Some(
            observed
                .schedule_start_time
                .clone()
                .unwrap_or_else(now_string),
        ),
        conditions,
    }
}

/// A status without its timestamps (which do not make a report different).
fn without_times(s: &PodGroupStatus) -> PodGroupStatus {
    let mut s = s.clone();
    s.schedule_start_time = None;
    for c in &mut s.conditions {
        c.last_transition_time = None;
    }
    s
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

async fn write(client: &kube::Client, w: Write) -> Result<(), kube::Error> {
    match w {
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
            api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await?;
            event(
                client,
                &object_ref_pod(&id, &pod),
                "Warning",
                "FailedScheduling",
                &message,
            )
            .await;
            Ok(())
        }
        Write::Event {
            object,
            type_,
            reason,
            message,
        } => {
            event(client, &object, type_, reason, &message).await;
            Ok(())
        }
        Write::GroupStatus {
            group,
            patch,
            event: ev,
        } => {
            // No resourceVersion: the patch is computed from the informer's version, and a
            // write that fails (or that the informer shows overwritten) is re-computed from
            // the newer version and written again.
            let api: Api<PodGroup> = Api::namespaced(client.clone(), &group.namespace);
            api.patch_status(&group.name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            if let Some((t, reason, message)) = ev {
                event(client, &group, t, reason, &message).await;
            }
            Ok(())
        }
        Write::QueueStatus { name, patch } => {
            let api: Api<Queue> = Api::all(client.clone());
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
        Write::ReservationStatus {
            namespace,
            name,
            patch,
        } => {
            let api: Api<Reservation> = Api::namespaced(client.clone(), &namespace);
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        scheduled: i32,
        running: i32,
        succeeded: i32,
        failed: i32,
        pending: i32,
    ) -> PodCounts {
        PodCounts {
            scheduled,
            running,
            succeeded,
            failed,
            pending,
        }
    }

    #[test]
    fn podgroup_status_follows_its_pods_to_the_end() {
        let running = group_status(&PodGroupStatus::default(), &counts(4, 4, 0, 0, 0), 4, None);
        assert_eq!(running.phase.as_deref(), Some("Running"));
        assert_eq!(running.conditions[0].status, "True");
        // Every pod succeeded: Finished, with the counts.
        let done = group_status(&running, &counts(0, 0, 4, 0, 0), 4, None);
        assert_eq!(done.phase.as_deref(), Some("Finished"));
        assert_eq!((done.succeeded, done.running), (Some(4), Some(0)));
        // It stays finished when its pods are deleted afterwards.
        assert_eq!(group_status(&done, &PodCounts::default(), 4, None), done);
        // One failed once the group ran: Failed.
        let failed = group_status(&running, &counts(3, 3, 0, 1, 0), 4, None);
        assert_eq!(failed.phase.as_deref(), Some("Failed"));
        // Evicted: no pods left, no longer "Running 4/4".
        let gone = group_status(&running, &PodCounts::default(), 4, None);
        assert_eq!(gone.phase.as_deref(), Some("Pending"));
        assert_eq!((gone.scheduled, gone.running), (Some(0), Some(0)));
        assert_eq!(gone.conditions[0].reason, "WaitingForPods");
        assert_eq!(
            gone.schedule_start_time, running.schedule_start_time,
            "times are kept"
        );
        // The condition's transition time is kept while its status stays.
        let waiting = ("Unschedulable".to_string(), "no room".to_string());
        let w1 = group_status(&gone, &counts(0, 0, 0, 0, 4), 4, Some(&waiting));
        assert_eq!(w1.conditions.len(), 1);
        assert_eq!(
            w1.conditions[0].last_transition_time,
            gone.conditions[0].last_transition_time
        );
        assert_eq!(
            group_status(&w1, &counts(0, 0, 0, 0, 4), 4, Some(&waiting)),
            w1
        );
    }

    #[test]
    fn status_patches_remove_what_went_away() {
        let before = QueueStatus {
            pending_jobs: Some(0),
            usage: [("nvidia.com/gpu".to_string(), "2".to_string())].into(),
            ..QueueStatus::default()
        };
        let after = QueueStatus {
            pending_jobs: Some(0),
            ..QueueStatus::default()
        };
        let patch = status_patch(Some(&before), &after);
        assert_eq!(patch, json!({"status": {"pendingJobs": 0, "usage": null}}));
        let mut merged = json!({"status": serde_json::to_value(&before).unwrap()});
        json_patch_merge(&mut merged, &patch);
        let back: QueueStatus = serde_json::from_value(merged["status"].clone()).unwrap();
        assert_eq!(back, after);
    }

    /// RFC 7386, as the API server applies it.
    fn json_patch_merge(target: &mut Value, patch: &Value) {
        if let Value::Object(p) = patch {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    json_patch_merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        } else {
            *target = patch.clone();
        }
    }

    fn conflict() -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("the object has been modified", "Conflict")
                .with_code(409)
                .boxed(),
        )
    }

    fn event_write() -> Write {
        Write::QueueStatus {
            name: "q".into(),
            patch: json!({}),
        }
    }

    /// Offers the same report against the object at resourceVersion `rv`; true when written.
    fn offer(tracks: &mut HashMap<Key, Track>, rv: &str, settled: bool, now: Instant) -> bool {
        let mut plan = Plan {
            tracks,
            considered: HashSet::new(),
            jobs: Vec::new(),
            now,
        };
        plan.offer(
            Key::Queue("q".into()),
            "usage 0".into(),
            Some(rv),
            settled,
            event_write,
        );
        !plan.jobs.is_empty()
    }

    #[test]
    fn failed_reports_are_written_again_until_the_informer_shows_them() {
        let key = Key::Queue("q".into());
        let mut tracks = HashMap::new();
        let t0 = Instant::now();
        assert!(offer(&mut tracks, "5", false, t0));
        // In flight: not written twice.
        assert!(!offer(&mut tracks, "5", false, t0));
        // A 409: not again at once with the object unchanged, but after the back-off ...
        let delay = finished(&mut tracks, &key, Some("5".into()), Err(conflict())).unwrap();
        assert!(!offer(&mut tracks, "5", false, t0));
        assert!(offer(&mut tracks, "5", false, Instant::now() + delay));
        // ... or as soon as the informer shows a newer version (re-read, re-compute).
        finished(&mut tracks, &key, Some("5".into()), Err(conflict()));
        assert!(offer(&mut tracks, "6", false, Instant::now()));
        // Written: not again while the informer has not caught up ...
        assert_eq!(finished(&mut tracks, &key, Some("6".into()), Ok(())), None);
        assert!(!offer(&mut tracks, "6", false, Instant::now()));
        // ... written again (after a short back-off) when a newer version still does not
        // show it ...
        let later = Instant::now() + RETRY_MIN;
        assert!(offer(&mut tracks, "7", false, later));
        finished(&mut tracks, &key, Some("7".into()), Ok(()));
        assert!(!offer(&mut tracks, "8", false, Instant::now()), "backs off");
        // ... and forgotten once it shows.
        assert!(!offer(&mut tracks, "9", true, Instant::now()));
        assert!(tracks.is_empty());
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(1), RETRY_MIN);
        assert_eq!(backoff(2), RETRY_MIN * 2);
        assert_eq!(backoff(40), RETRY_MAX);
    }
}

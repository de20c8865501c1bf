//! The node lifecycle controller, as kube-controller-manager's (`node-lifecycle-controller`
//! with its taint-based eviction):
//! - a node whose heartbeats (its Lease in `kube-node-lease`, or its `Ready` condition's
//!   `lastHeartbeatTime`) stop changing for [`Config::grace_period`] gets every condition set
//!   to `Unknown` (reason `NodeStatusUnknown`, "Kubelet stopped posting node status.");
//! - its taints follow its `Ready` condition: `Unknown` means `node.kubernetes.io/unreachable`,
//!   `False` means `node.kubernetes.io/not-ready`, each with `NoSchedule` and `NoExecute`;
//!   `True` lifts them (the agent posts `Ready=True` again when it heartbeats again);
//! - a pod on a node with `NoExecute` taints is evicted once it stops tolerating them: at once
//!   for a taint it does not tolerate, else when the shortest `tolerationSeconds` of the
//!   tolerations it uses has passed since the taint's `timeAdded` (the DefaultTolerationSeconds
//!   admission gives every pod 300 s for both taints unless it says otherwise). Eviction adds
//!   the `DisruptionTarget` condition (reason `DeletionByTaintManager`) and deletes the pod; on
//!   an unreachable node, whose agent cannot confirm anything, the pod is first marked `Failed`
//!   and then deleted at once (grace period 0), so controllers can replace it under its name.
//!   A pod already being deleted on an unreachable node is removed once its grace period ends.
//!
//! Only nodes that have a Lease are judged: a Node object that never had a heartbeat (one
//! written by hand) is left as it is (kube marks it `Unknown` too). Terminal pods are not
//! evicted. Heartbeats are compared by value and timed with this process's clock, as kube
//! does, so clock skew between machines does not matter; after a restart every node gets a
//! full grace period again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferry_api::NODE_LEASE_NAMESPACE;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, EventSource, Node, NodeCondition, ObjectReference, Pod};
use k8s_openapi::api::core::v1::{PodCondition, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use crate::Error;

/// The taint of a node whose heartbeats stopped (`Ready=Unknown`).
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a node whose agent reports `Ready=False`.
pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
/// kube's default grace period before a silent node is marked `Unknown`
/// (`--node-monitor-grace-period`).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// The reason on the conditions of a node that stopped heartbeating.
pub const REASON_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// The reason of the `DisruptionTarget` condition on evicted pods.
pub const REASON_TAINT_EVICTION: &str = "DeletionByTaintManager";

/// How the controller judges nodes.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a node may go without a new heartbeat before it is marked `Unknown`.
    pub grace_period: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            grace_period: DEFAULT_GRACE_PERIOD,
        }
    }
}

impl Config {
    /// How often nodes are looked at (kube's `--node-monitor-period`, 5 s, shorter for short
    /// grace periods).
    pub fn monitor_period(&self) -> Duration {
        (self.grace_period / 4).clamp(Duration::from_millis(200), Duration::from_secs(5))
    }
}

/// The heartbeat last seen for a node and when (this process's clock) it last changed.
#[derive(Debug)]
struct Probe {
    seen: (Option<Timestamp>, Option<Timestamp>),
    changed_at: Instant,
}

/// Runs the controller until the process stops.
pub async fn run(client: kube::Client, config: Config) {
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut first_seen: HashMap<(String, String), Timestamp> = HashMap::new();
    let mut backoff = crate::Backoff::new(config.monitor_period(), Duration::from_secs(30));
    loop {
        let delay = match monitor(&client, &config, &mut probes, &mut first_seen).await {
            Ok(()) => {
                backoff.reset();
                config.monitor_period()
            }
            Err(e) => {
                tracing::debug!(error = %e, "node lifecycle controller");
                backoff.next_delay()
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// One pass over every node.
async fn monitor(
    client: &kube::Client,
    config: &Config,
    probes: &mut HashMap<String, Probe>,
    first_seen: &mut HashMap<(String, String), Timestamp>,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let node_list = nodes.list(&ListParams::default()).await?;
    let renewals: HashMap<String, Option<Timestamp>> = leases
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|l| {
            let renewed = l.spec.and_then(|s| s.renew_time).map(|t| t.0);
            (l.metadata.name.unwrap_or_default(), renewed)
        })
        .collect();
    let now = Instant::now();
    probes.retain(|name, _| node_list.items.iter().any(|n| n.name_any() == *name));
    for node in node_list.items {
        let name = node.name_any();
        let Some(renewed) = renewals.get(&name) else {
            continue; // never heartbeated: not judged
        };
        let seen = (*renewed, ready_heartbeat(&node));
        let probe = probes.entry(name.clone()).or_insert(Probe {
            seen,
            changed_at: now,
        });
        if probe.seen != seen {
            probe.seen = seen;
            probe.changed_at = now;
        }
        let stale = now.duration_since(probe.changed_at) > config.grace_period;
        if let Err(e) = reconcile_node(client, node, stale, first_seen).await {
            tracing::debug!(node = %name, error = %e, "node lifecycle: will retry");
        }
    }
    first_seen.retain(|(node, _), _| probes.contains_key(node));
    Ok(())
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

fn ready_heartbeat(node: &Node) -> Option<Timestamp> {
    ready_condition(node)?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
}

/// The node's conditions once it is found silent: every one `Unknown` (a missing `Ready`
/// added), transition times moved to `now` where the status changes. `None`: already so.
pub fn unknown_conditions(node: &Node, now: Timestamp) -> Option<Vec<NodeCondition>> {
    let mut conditions = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if conditions.iter().all(|c| c.status == "Unknown") && ready_condition(node).is_some() {
        return None;
    }
    if !conditions.iter().any(|c| c.type_ == "Ready") {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            ..Default::default()
        });
    }
    for c in &mut conditions {
        if c.status != "Unknown" {
            c.status = "Unknown".into();
            c.last_transition_time = Some(Time(now));
        }
        c.reason = Some(REASON_STATUS_UNKNOWN.into());
        c.message = Some("Kubelet stopped posting node status.".into());
    }
    Some(conditions)
}

/// The node's taints as its `Ready` condition asks: the other taints kept, the condition
/// taints added (with `timeAdded = now`) or removed. `None`: no change.
pub fn desired_taints(node: &Node, now: Timestamp) -> Option<Vec<Taint>> {
    let ready = ready_condition(node).map(|c| c.status.as_str());
    let wanted = match ready {
        Some("Unknown") => Some(TAINT_UNREACHABLE),
        Some("False") => Some(TAINT_NOT_READY),
        _ => None,
    };
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let managed = |t: &Taint| {
        (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY)
            && (t.effect == "NoSchedule" || t.effect == "NoExecute")
    };
    let mut taints: Vec<Taint> = current
        .iter()
        .filter(|t| !managed(t) || Some(t.key.as_str()) == wanted)
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: Some(Time(now)),
                    value: None,
                });
            }
        }
    }
    (taints != current).then_some(taints)
}

/// Whether a toleration tolerates a taint (kube's `ToleratesTaint`; shared with the DaemonSet
/// controller).
pub use crate::daemonset::tolerates;

/// When a pod with `tolerations` must leave a node with `taints` (only the `NoExecute` ones
/// count): `Some(now-or-earlier)` when a taint is not tolerated, `Some(t)` for the earliest
/// end of a `tolerationSeconds`, `None` when it may stay for ever. `since` gives each taint's
/// start (its `timeAdded`, or when it was first seen).
pub fn eviction_time(
    tolerations: &[Toleration],
    taints: &[Taint],
    since: impl Fn(&Taint) -> Timestamp,
) -> Option<Timestamp> {
    let mut earliest: Option<Timestamp> = None;
    for taint in taints.iter().filter(|t| t.effect == "NoExecute") {
        let start = since(taint);
        let used: Vec<&Toleration> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if used.is_empty() {
            Some(start.min(Timestamp::now()))
        } else {
            used.iter()
                .filter_map(|t| t.toleration_seconds)
                .min()
                .map(|s| {
                    start
                        .checked_add(SignedDuration::from_secs(s.max(0)))
                        .unwrap_or(start)
                })
        };
        if let Some(at) = at {
            earliest = Some(earliest.map_or(at, |e: Timestamp| e.min(at)));
        }
    }
    earliest
}

/// The pod's status once it is evicted from a node: `DisruptionTarget=True`; on an
/// unreachable node also `Ready=False` and phase `Failed` (its agent cannot say so).
pub fn evicted_status(
    pod: &Pod,
    node: &str,
    unreachable: bool,
    now: Timestamp,
) -> serde_json::Value {
    let mut conditions: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some(REASON_TAINT_EVICTION.into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(Time(now)),
        ..Default::default()
    });
    if !unreachable {
        return json!({"status": {"conditions": conditions}});
    }
    for c in &mut conditions {
        if (c.type_ == "Ready" || c.type_ == "ContainersReady") && c.status != "False" {
            c.status = "False".into();
            c.reason = Some("NodeLost".into());
            c.last_transition_time = Some(Time(now));
        }
    }
    json!({"status": {
        "phase": "Failed",
        "reason": "NodeLost",
        "message": format!("Node {node} which was running pod {} is unresponsive", pod.name_any()),
        "conditions": conditions,
    }})
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) && pod.metadata.deletion_timestamp.is_none()
}

async fn reconcile_node(
    client: &kube::Client,
    mut node: Node,
    stale: bool,
    first_seen: &mut HashMap<(String, String), Timestamp>,
) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let now = Timestamp::now();
    if stale && let Some(conditions) = unknown_conditions(&node, now) {
        let was_ready = ready_condition(&node).is_some_and(|c| c.status == "True");
        node.status.get_or_insert_default().conditions = Some(conditions);
        node = nodes
            .replace_status(&name, &PostParams::default(), &node)
            .await?;
        tracing::info!(node = %name, "node stopped heartbeating: Ready=Unknown");
        if was_ready {
            event(
                client,
                node_ref(&node),
                "NodeNotReady",
                &format!("Node {name} status is now: NodeNotReady"),
            )
            .await;
        }
    }
    if let Some(taints) = desired_taints(&node, now) {
        node.spec.get_or_insert_default().taints = Some(taints).filter(|t| !t.is_empty());
        node = nodes.replace(&name, &PostParams::default(), &node).await?;
        tracing::info!(node = %name, taints = ?node.spec.as_ref().and_then(|s| s.taints.as_ref()), "node taints updated");
    }
    let taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.effect == "NoExecute")
        .collect();
    for t in &taints {
        first_seen
            .entry((name.clone(), t.key.clone()))
            .or_insert(now);
    }
    first_seen.retain(|(n, key), _| n != &name || taints.iter().any(|t| &t.key == key));
    if taints.is_empty() {
        return Ok(());
    }
    let unreachable = taints.iter().any(|t| t.key == TAINT_UNREACHABLE);
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await?;
    for pod in on_node.items {
        if terminal(&pod) {
            continue;
        }
        if let Err(e) = evict_if_due(client, &name, &pod, &taints, unreachable, first_seen).await {
            tracing::debug!(pod = %pod.name_any(), error = %e, "taint eviction: will retry");
        }
    }
    Ok(())
}

async fn evict_if_due(
    client: &kube::Client,
    node: &str,
    pod: &Pod,
    taints: &[Taint],
    unreachable: bool,
    first_seen: &HashMap<(String, String), Timestamp>,
) -> Result<(), Error> {
    let now = Timestamp::now();
    let ns = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let uid = pod.uid();
    let delete_now = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    if let Some(deleting) = &pod.metadata.deletion_timestamp {
        // Being deleted already: on an unreachable node nobody will confirm it.
        if unreachable && deleting.0 <= now {
            api.delete(&pod.name_any(), &delete_now).await?;
            tracing::info!(pod = %pod.name_any(), %node, "removed a terminating pod of an unreachable node");
        }
        return Ok(());
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.clone())
        .unwrap_or_default();
    let since = |t: &Taint| {
        t.time_added.as_ref().map(|t| t.0).unwrap_or_else(|| {
            first_seen
                .get(&(node.to_string(), t.key.clone()))
                .copied()
                .unwrap_or(now)
        })
    };
    match eviction_time(&tolerations, taints, since) {
        Some(at) if at <= now => {}
        _ => return Ok(()),
    }
    // Re-read: the pod must still be this one, on this node, and not terminal.
    let Some(fresh) = api.get_opt(&pod.name_any()).await? else {
        return Ok(());
    };
    if fresh.uid() != uid
        || fresh.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node)
        || terminal(&fresh) && !unreachable
    {
        return Ok(());
    }
    let status = evicted_status(&fresh, node, unreachable, now);
    api.patch_status(
        &fresh.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;
    let pod_ref = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(fresh.name_any()),
        namespace: Some(ns.clone()),
        uid: uid.clone(),
        ..Default::default()
    };
    event(
        client,
        pod_ref,
        "TaintManagerEviction",
        &format!("Marking for deletion Pod {ns}/{}", fresh.name_any()),
    )
    .await;
    let params = if unreachable {
        delete_now
    } else {
        DeleteParams {
            preconditions: delete_now.preconditions,
            ..Default::default()
        }
    };
    api.delete(&fresh.name_any(), &params).await?;
    tracing::info!(pod = %fresh.name_any(), %node, unreachable, "evicted a pod from a tainted node");
    Ok(())
}

fn node_ref(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Records a Normal Event (best effort).
async fn event(client: &kube::Client, regarding: ObjectReference, reason: &str, message: &str) {
    let ns = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = Timestamp::now();
    let e = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", regarding.name.clone().unwrap_or_default())),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: regarding,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some("Normal".into()),
        count: Some(1),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        source: Some(EventSource {
            component: Some("node-controller".into()),
            host: None,
        }),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &e).await {
        tracing::debug!(error = %e, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn node(ready: Option<&str>, taints: &[(&str, &str)]) -> Node {
        let mut n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {},
            "status": {"conditions": [
                {"type": "MemoryPressure", "status": "False"},
            ]}
        }))
        .unwrap();
        if let Some(r) = ready {
            n.status
                .as_mut()
                .unwrap()
                .conditions
                .as_mut()
                .unwrap()
                .push(NodeCondition {
                    type_: "Ready".into(),
                    status: r.into(),
                    last_transition_time: Some(Time(ts("2026-01-01T00:00:00Z"))),
                    ..Default::default()
                });
        }
        if !taints.is_empty() {
            n.spec.as_mut().unwrap().taints = Some(
                taints
                    .iter()
                    .map(|(k, e)| Taint {
                        key: (*k).into(),
                        effect: (*e).into(),
                        ..Default::default()
                    })
                    .collect(),
            );
        }
        n
    }

    fn toleration(key: &str, op: &str, effect: &str, seconds: Option<i64>) -> Toleration {
        Toleration {
            key: Some(key.into()).filter(|k: &String| !k.is_empty()),
            operator: Some(op.into()),
            effect: Some(effect.into()).filter(|e: &String| !e.is_empty()),
            toleration_seconds: seconds,
            value: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_silent_node_gets_every_condition_unknown_once() {
        let now = ts("2026-01-02T00:00:00Z");
        let n = node(Some("True"), &[]);
        let c = unknown_conditions(&n, now).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c.iter().all(|c| c.status == "Unknown"
            && c.reason.as_deref() == Some(REASON_STATUS_UNKNOWN)
            && c.last_transition_time == Some(Time(now))));
        let mut n2 = n.clone();
        n2.status.as_mut().unwrap().conditions = Some(c);
        assert_eq!(
            unknown_conditions(&n2, now),
            None,
            "already Unknown: no write"
        );
        // No Ready condition at all: one is added.
        let c = unknown_conditions(&node(None, &[]), now).unwrap();
        assert!(
            c.iter()
                .any(|c| c.type_ == "Ready" && c.status == "Unknown")
        );
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let now = ts("2026-01-02T00:00:00Z");
        let t = desired_taints(&node(Some("Unknown"), &[("gpu", "NoSchedule")]), now).unwrap();
        let keys: Vec<(&str, &str)> = t
            .iter()
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                ("gpu", "NoSchedule"),
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute")
            ]
        );
        assert!(t[2].time_added == Some(Time(now)));
        // Unreachable becomes not-ready when the agent reports Ready=False.
        let n = node(
            Some("False"),
            &[
                (TAINT_UNREACHABLE, "NoSchedule"),
                (TAINT_UNREACHABLE, "NoExecute"),
            ],
        );
        let t = desired_taints(&n, now).unwrap();
        assert!(t.iter().all(|t| t.key == TAINT_NOT_READY) && t.len() == 2);
        // Ready again: lifted, other taints kept; nothing to do when already right.
        let n = node(
            Some("True"),
            &[("gpu", "NoSchedule"), (TAINT_UNREACHABLE, "NoExecute")],
        );
        assert_eq!(
            desired_taints(&n, now).unwrap(),
            vec![taint("gpu", "NoSchedule")]
        );
        assert_eq!(desired_taints(&node(Some("True"), &[]), now), None);
        let mut n = node(Some("Unknown"), &[]);
        n.spec.as_mut().unwrap().taints = desired_taints(&n, now);
        assert_eq!(desired_taints(&n, ts("2026-01-03T00:00:00Z")), None);
    }

    #[test]
    fn toleration_matching_follows_kube() {
        let t = taint(TAINT_UNREACHABLE, "NoExecute");
        assert!(tolerates(
            &toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", None),
            &t
        ));
        assert!(tolerates(
            &toleration(TAINT_UNREACHABLE, "Exists", "", None),
            &t
        ));
        assert!(
            tolerates(&toleration("", "Exists", "", None), &t),
            "tolerate everything"
        );
        assert!(!tolerates(
            &toleration(TAINT_UNREACHABLE, "Exists", "NoSchedule", None),
            &t
        ));
        assert!(!tolerates(
            &toleration(TAINT_NOT_READY, "Exists", "NoExecute", None),
            &t
        ));
        assert!(tolerates(
            &toleration(TAINT_UNREACHABLE, "Equal", "NoExecute", None),
            &t
        ));
        let mut v = toleration(TAINT_UNREACHABLE, "Equal", "NoExecute", None);
        v.value = Some("x".into());
        assert!(!tolerates(&v, &t), "value differs");
    }

    #[test]
    fn eviction_waits_for_the_shortest_toleration() {
        let added = ts("2026-01-02T00:00:00Z");
        let taints = [
            taint(TAINT_UNREACHABLE, "NoExecute"),
            taint("gpu", "NoSchedule"),
        ];
        let since = |_: &Taint| added;
        // The DefaultTolerationSeconds pair: 300 s.
        let default = [
            toleration(TAINT_NOT_READY, "Exists", "NoExecute", Some(300)),
            toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(300)),
        ];
        assert_eq!(
            eviction_time(&default, &taints, since),
            Some(ts("2026-01-02T00:05:00Z"))
        );
        // Two matching tolerations: the shorter wins.
        let two = [
            toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", Some(300)),
            toleration("", "Exists", "", Some(5)),
        ];
        assert_eq!(
            eviction_time(&two, &taints, since),
            Some(ts("2026-01-02T00:00:05Z"))
        );
        // Tolerated for ever; NoSchedule taints never evict.
        let forever = [toleration(TAINT_UNREACHABLE, "Exists", "NoExecute", None)];
        assert_eq!(eviction_time(&forever, &taints, since), None);
        assert_eq!(eviction_time(&[], &taints[1..], since), None);
        // Not tolerated: now (or the taint's start, if earlier).
        assert_eq!(eviction_time(&[], &taints, since), Some(added));
        // Negative seconds mean at once.
        let negative = [toleration(
            TAINT_UNREACHABLE,
            "Exists",
            "NoExecute",
            Some(-3),
        )];
        assert_eq!(eviction_time(&negative, &taints, since), Some(added));
    }

    #[test]
    fn an_evicted_pod_on_an_unreachable_node_is_failed_with_disruption_target() {
        let now = ts("2026-01-02T00:00:00Z");
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "d"},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True"},
                {"type": "PodScheduled", "status": "True"}
            ]}
        }))
        .unwrap();
        let s = evicted_status(&pod, "n1", true, now);
        assert_eq!(s["status"]["phase"], "Failed");
        assert_eq!(s["status"]["reason"], "NodeLost");
        let c = s["status"]["conditions"].as_array().unwrap();
        let find = |t: &str| c.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(find("DisruptionTarget")["status"], "True");
        assert_eq!(find("DisruptionTarget")["reason"], REASON_TAINT_EVICTION);
        assert_eq!(find("Ready")["status"], "False");
        assert_eq!(find("PodScheduled")["status"], "True");
        // A reachable (not-ready) node's agent reports the phase itself.
        let s = evicted_status(&pod, "n1", false, now);
        assert!(s["status"].get("phase").is_none());
        assert_eq!(s["status"]["conditions"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn short_grace_periods_look_more_often() {
        let c = Config {
            grace_period: Duration::from_secs(2),
        };
        assert_eq!(c.monitor_period(), Duration::from_millis(500));
        assert_eq!(Config::default().monitor_period(), Duration::from_secs(5));
    }
}

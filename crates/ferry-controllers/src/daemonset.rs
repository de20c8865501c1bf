//! The DaemonSet controller, as kube-controller-manager's: one pod on every node that matches
//! the template's node selector, affinity and tolerations.
//!
//! - A node should run the set's pod when the template's `nodeSelector` and required node
//!   affinity match it and the template's tolerations, plus the ones kube adds to every
//!   daemon pod (`node.kubernetes.io/not-ready` and `unreachable` NoExecute, `disk-pressure`,
//!   `memory-pressure`, `pid-pressure`, `unschedulable` NoSchedule, and
//!   `network-unavailable` NoSchedule for host-network pods), tolerate its NoSchedule and
//!   NoExecute taints. A pod on a node with an untolerated NoExecute taint, or one its
//!   selector no longer matches, is deleted; an untolerated NoSchedule taint only keeps new
//!   pods away.
//! - Pods are named `<set>-<random>`, carry the `controller-revision-hash` label (the hash of
//!   the set's ControllerRevision) and a required node affinity on `metadata.name` naming
//!   their node, as kube's; `spec.nodeName` is set too, so they run there even where the
//!   scheduler does not read node affinity.
//! - `RollingUpdate`: with `maxSurge` 0, old pods are deleted while at most `maxUnavailable`
//!   nodes lack an available pod (an unavailable old pod goes at once); with `maxSurge` above
//!   0, the new pod starts beside the old one, which is deleted once the new one is available.
//!   `OnDelete`: new pods take the new template only after someone deletes the old ones.
//!
//! Each reconcile lists nodes and pods from the API server, so a restart never duplicates
//! pods: a node with two pods of one revision keeps the oldest.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::history::{self, CONTROLLER_REVISION_HASH_LABEL};
use crate::statefulset::{available, controlled_by, delete_pod, finished, ready, selector_string};

/// The tolerations kube adds to every DaemonSet pod (`AddOrUpdateDaemonPodTolerations`):
/// key and effect.
pub const DEFAULT_TOLERATIONS: &[(&str, &str)] = &[
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
];

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let sets: Api<DaemonSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    controller
        .owns(pods, watcher::Config::default())
        .watches(nodes, watcher::Config::default(), move |_: Node| {
            store
                .state()
                .into_iter()
                .map(|s| ObjectRef::from_obj(&*s))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "daemonset controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(set: Arc<DaemonSet>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(daemonset = %set.name_any(), %error, "cannot sync the DaemonSet");
    Action::requeue(Duration::from_secs(2))
}

/// Whether `toleration` tolerates `taint` (`Toleration.ToleratesTaint`).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            !key.is_empty()
                && toleration.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The template's tolerations with kube's daemon pod tolerations added.
pub fn daemon_tolerations(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<Toleration> {
    let mut out = spec.tolerations.clone().unwrap_or_default();
    let mut add = |key: &str, effect: &str| {
        let exists = out.iter().any(|t| {
            t.key.as_deref() == Some(key)
                && t.effect.as_deref() == Some(effect)
                && t.operator.as_deref() == Some("Exists")
        });
        if !exists {
            out.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some(effect.into()),
                ..Default::default()
            });
        }
    };
    for (key, effect) in DEFAULT_TOLERATIONS {
        add(key, effect);
    }
    if spec.host_network == Some(true) {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    out
}

/// Whether the template's node selector and required node affinity choose `node`.
pub fn selects_node(spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> bool {
    let labels = node.labels();
    if let Some(selector) = &spec.node_selector
        && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let Some(required) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    else {
        return true;
    };
    let name = node.name_any();
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!exprs.is_empty() || !fields.is_empty())
            && exprs.iter().all(|r| {
                ferry_api::node_selector::requirement_holds(
                    r,
                    labels.get(&r.key).map(String::as_str),
                )
            })
            && fields.iter().all(|r| {
                r.key == "metadata.name"
                    && ferry_api::node_selector::requirement_holds(r, Some(name.as_str()))
            })
    })
}

/// Whether the pod should run on `node`, and whether one already there may keep running
/// (`NodeShouldRunDaemonPod`).
pub fn should_run(spec: &k8s_openapi::api::core::v1::PodSpec, node: &Node) -> (bool, bool) {
    if !selects_node(spec, node) {
        return (false, false);
    }
    let tolerations = daemon_tolerations(spec);
    let untolerated = |effects: &[&str]| {
        node.spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .into_iter()
            .flatten()
            .filter(|t| effects.contains(&t.effect.as_str()))
            .any(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
    };
    if untolerated(&["NoSchedule", "NoExecute"]) {
        return (false, !untolerated(&["NoExecute"]));
    }
    (true, true)
}

/// The node a daemon pod is for: its `nodeName`, else its node affinity's `metadata.name`.
fn node_of(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|f| f.key == "metadata.name" && f.operator == "In")
        .and_then(|f| f.values.as_ref()?.first().cloned())
}

/// A percentage of `total` rounded up, or a number (`GetScaledValueFromIntOrPercent`).
fn scaled(value: Option<&IntOrString>, total: i32, default: i32) -> i32 {
    match value {
        None => default,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
                Some(p) => ((p * i64::from(total) + 99) / 100) as i32,
                None => default,
            }
        }
    }
}

/// The daemon pod for `node` from `template`, as `NewPod` plus kube's node-name affinity.
fn new_pod(set: &DaemonSet, template: &Value, hash: &str, node: &str) -> Result<Pod, Error> {
    let mut pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    }))
    .map_err(|e| {
        kube::Error::Api(
            kube::core::Status::failure(&format!("cannot build a pod: {e}"), "Invalid")
                .with_code(422)
                .boxed(),
        )
    })?;
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(format!("{}-", set.name_any()));
    pod.metadata.namespace = set.namespace();
    pod.metadata.owner_references = set.controller_owner_ref(&()).map(|r| vec![r]);
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.tolerations = Some(daemon_tolerations(spec));
    let affinity = spec.affinity.get_or_insert_with(Default::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(Default::default);
    node_affinity.required_during_scheduling_ignored_during_execution =
        Some(k8s_openapi::api::core::v1::NodeSelector {
            node_selector_terms: vec![k8s_openapi::api::core::v1::NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
                match_expressions: None,
            }],
        });
    spec.node_name = Some(node.into());
    Ok(pod)
}

fn hash_of(pod: &Pod) -> Option<&str> {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

fn created(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

async fn reconcile(set: Arc<DaemonSet>, client: Arc<kube::Client>) -> Result<Action, Error> {
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(reference) = set.controller_owner_ref(&()) else {
        return Ok(Action::await_change());
    };
    let spec = &set.spec;
    let ns = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let uid = set.uid().unwrap_or_default();
    let selector = selector_string(&spec.selector);
    let pod_spec = spec.template.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let rolling = strategy.and_then(|s| s.rolling_update.as_ref());

    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let owner = history::Owner {
        namespace: ns.clone(),
        name: name.clone(),
        uid: uid.clone(),
        reference,
        labels: spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        selector: selector.clone(),
        template: template.clone(),
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
    };
    let revisions = history::sync(&client, &owner).await?;
    let hash = revisions
        .update
        .labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .cloned()
        .unwrap_or_default();

    let nodes: Vec<Node> = Api::<Node>::all((*client).clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods_api: Api<Pod> = Api::namespaced((*client).clone(), &ns);
    let list_pods = async || -> Result<BTreeMap<String, Vec<Pod>>, Error> {
        let mut by_node: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
        for p in pods_api
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| controlled_by(p, &uid))
        {
            if let Some(n) = node_of(&p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        for pods in by_node.values_mut() {
            pods.sort_by_key(created);
        }
        Ok(by_node)
    };
    let by_node = list_pods().await?;
    let plan: Vec<(String, bool, bool)> = nodes
        .iter()
        .map(|n| {
            let (run, keep) = should_run(&pod_spec, n);
            (n.name_any(), run, keep)
        })
        .collect();
    let desired = plan.iter().filter(|(_, run, _)| *run).count() as i32;
    let max_surge = if on_delete {
        0
    } else {
        scaled(rolling.and_then(|r| r.max_surge.as_ref()), desired, 0)
    };
    let mut max_unavailable = scaled(rolling.and_then(|r| r.max_unavailable.as_ref()), desired, 1);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }

    let mut requeue: Option<Duration> = None;
    let mut creates: Vec<String> = Vec::new();
    let mut deletes: Vec<&Pod> = Vec::new();
    // Nodes whose old pod may be replaced, with whether that pod is available now.
    let mut replaceable: Vec<(&str, &Pod, bool)> = Vec::new();
    let mut unavailable = 0;
    let mut surging = 0;
    let empty = Vec::new();
    for (node, run, keep) in &plan {
        let pods: Vec<&Pod> = by_node
            .get(node)
            .unwrap_or(&empty)
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        if !run {
            if !keep {
                deletes.extend(pods.iter().copied());
            }
            continue;
        }
        let (failed, live): (Vec<&Pod>, Vec<&Pod>) = pods.iter().partition(|p| finished(p));
        deletes.extend(failed);
        let terminating = by_node
            .get(node)
            .is_some_and(|ps| ps.iter().any(|p| p.metadata.deletion_timestamp.is_some()));
        if live.is_empty() {
            if !terminating {
                creates.push(node.clone());
            }
            unavailable += 1;
            continue;
        }
        let (new, old): (Vec<&Pod>, Vec<&Pod>) =
            live.iter().partition(|p| hash_of(p) == Some(hash.as_str()));
        // One pod per revision at most: the oldest stays.
        deletes.extend(new.iter().skip(1).copied());
        deletes.extend(old.iter().skip(1).copied());
        let new_available = new.first().map(|p| available(p, min_ready));
        if let Some(Err(Some(wait))) = new_available {
            requeue = requeue.min(Some(wait)).or(Some(wait));
        }
        let new_ok = matches!(new_available, Some(Ok(())));
        match (new.first(), old.first()) {
            (Some(_), Some(old)) if !on_delete => {
                if new_ok {
                    deletes.push(old);
                } else {
                    surging += 1;
                    if available(old, min_ready).is_err() {
                        unavailable += 1;
                    }
                }
            }
            (Some(_), _) => {
                if !new_ok {
                    unavailable += 1;
                }
            }
            (None, Some(old)) => {
                let ok = available(old, min_ready).is_ok();
                if !ok {
                    unavailable += 1;
                }
                if !on_delete {
                    replaceable.push((node.as_str(), old, ok));
                }
            }
            (None, None) => {}
        }
    }
    if !on_delete {
        if max_surge == 0 {
            // Unavailable old pods go at once; available ones while the budget lasts.
            let mut budget = max_unavailable - unavailable;
            for (_, old, ok) in &replaceable {
                if !ok {
                    deletes.push(old);
                } else if budget > 0 {
                    deletes.push(old);
                    budget -= 1;
                }
            }
        } else {
            let mut budget = max_surge - surging;
            for (node, old, ok) in &replaceable {
                if !ok {
                    deletes.push(old);
                } else if budget > 0 {
                    creates.push((*node).to_string());
                    budget -= 1;
                }
            }
        }
    }
    let mut failure: Result<(), Error> = Ok(());
    for node in &creates {
        let pod = new_pod(&set, &template, &hash, node)?;
        match pods_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if matches!(e.code, 403 | 404 | 409) => {}
            Err(e) => failure = Err(e.into()),
        }
    }
    for pod in deletes {
        if let Err(e) = delete_pod(&pods_api, &pod.name_any(), pod.uid()).await {
            failure = Err(e);
        }
    }

    // Status from the pods as they are now.
    let by_node = list_pods().await?;
    let mut status = DaemonSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: revisions.collision_count,
        desired_number_scheduled: desired,
        ..Default::default()
    };
    let (mut number_available, mut updated) = (0, 0);
    for (node, run, _) in &plan {
        let pods: Vec<&Pod> = by_node
            .get(node)
            .map(|ps| {
                ps.iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .collect()
            })
            .unwrap_or_default();
        if pods.is_empty() {
            continue;
        }
        if !run {
            status.number_misscheduled += 1;
            continue;
        }
        status.current_number_scheduled += 1;
        let pod = pods
            .iter()
            .find(|p| hash_of(p) == Some(hash.as_str()))
            .unwrap_or(&pods[0]);
        if ready(pod) {
            status.number_ready += 1;
            match available(pod, min_ready) {
                Ok(()) => number_available += 1,
                Err(wait) => requeue = requeue.min(wait).or(wait),
            }
        }
        if hash_of(pod) == Some(hash.as_str()) {
            updated += 1;
        }
    }
    status.updated_number_scheduled = Some(updated);
    status.number_available = Some(number_available);
    status.number_unavailable = Some(desired - number_available);
    let live: Vec<String> = by_node
        .values()
        .flatten()
        .filter_map(|p| hash_of(p).map(|h| history::revision_name(&name, h)))
        .chain(revisions.update.metadata.name.clone())
        .collect();
    history::truncate(&client, &owner, &revisions.all, &live).await?;
    if set.status.as_ref() != Some(&status) {
        let sets: Api<DaemonSet> = Api::namespaced((*client).clone(), &ns);
        match sets
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    failure?;
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: Value) -> Node {
        serde_json::from_value(value).unwrap()
    }

    fn spec(value: Value) -> k8s_openapi::api::core::v1::PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn node_selectors_and_affinity_choose_nodes() {
        let gpu = node(json!({"metadata": {"name": "a", "labels": {"gpu": "yes", "n": "5"}}}));
        let plain = node(json!({"metadata": {"name": "b"}}));
        let by_selector = spec(json!({"containers": [], "nodeSelector": {"gpu": "yes"}}));
        assert!(selects_node(&by_selector, &gpu));
        assert!(!selects_node(&by_selector, &plain));
        let by_affinity = spec(json!({"containers": [], "affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "n", "operator": "Gt", "values": ["3"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
        ]}}}}));
        assert!(selects_node(&by_affinity, &gpu));
        assert!(selects_node(&by_affinity, &plain));
        assert!(!selects_node(
            &by_affinity,
            &node(json!({"metadata": {"name": "c", "labels": {"n": "2"}}}))
        ));
    }

    #[test]
    fn taints_keep_pods_away_unless_tolerated() {
        let tainted = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        let evicting = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "dedicated", "effect": "NoExecute"}]}}));
        let cordoned = node(json!({"metadata": {"name": "a"}, "spec": {"taints": [
            {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]}}));
        let plain = spec(json!({"containers": []}));
        assert_eq!(should_run(&plain, &tainted), (false, true));
        assert_eq!(should_run(&plain, &evicting), (false, false));
        assert_eq!(should_run(&plain, &cordoned), (true, true));
        let tolerant = spec(json!({"containers": [], "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}));
        assert_eq!(should_run(&tolerant, &tainted), (true, true));
        let everything = spec(json!({"containers": [], "tolerations": [{"operator": "Exists"}]}));
        assert_eq!(should_run(&everything, &evicting), (true, true));
    }

    #[test]
    fn daemon_pods_get_the_node_affinity_and_default_tolerations() {
        let set: DaemonSet = serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "kube-system", "uid": "u"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {"metadata": {"labels": {"app": "agent"}},
                             "spec": {"containers": [{"name": "a", "image": "x"}]}}
            }
        }))
        .unwrap();
        let template = serde_json::to_value(&set.spec.template).unwrap();
        let pod = new_pod(&set, &template, "h1", "node-2").unwrap();
        assert_eq!(pod.metadata.generate_name.as_deref(), Some("agent-"));
        assert_eq!(pod.labels()[CONTROLLER_REVISION_HASH_LABEL], "h1");
        assert_eq!(node_of(&pod).as_deref(), Some("node-2"));
        let spec = pod.spec.unwrap();
        let tolerations = spec.tolerations.unwrap();
        assert_eq!(tolerations.len(), DEFAULT_TOLERATIONS.len());
        let terms = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(
            terms[0].match_fields.as_ref().unwrap()[0].key,
            "metadata.name"
        );
    }

    #[test]
    fn percentages_round_up() {
        let pct = IntOrString::String("10%".into());
        assert_eq!(scaled(Some(&pct), 3, 1), 1);
        assert_eq!(scaled(Some(&pct), 25, 1), 3);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 25, 1), 2);
        assert_eq!(scaled(None, 25, 1), 1);
    }
}

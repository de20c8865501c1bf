//! The ReplicaSet controller, as kube-controller-manager's: keeps `spec.replicas` pods matching
//! the selector, adopting orphans and releasing pods that no longer match.
//!
//! Every reconcile re-lists the namespace's pods from the API server before it acts (a
//! consistent read, not the watch cache): what it creates or deletes is decided from what is
//! stored, so a lagging cache or a restart in the middle of a scale-up (`kill -9` of
//! `ferry up`) never makes duplicates or loses pods. The watches only say *when* to look.
//!
//! Surplus pods go in kube-controller-manager's order: unscheduled before scheduled, pending
//! before running, not ready before ready, pods on crowded nodes first, ready for less time,
//! more restarts, newer. Status counts what the list shows: `replicas` (active pods),
//! `fullyLabeledReplicas` (with all the template's labels), `readyReplicas`,
//! `availableReplicas` (ready for `minReadySeconds`), `observedGeneration`, and the
//! `ReplicaFailure` condition while pods cannot be created.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Error;

/// Most pods created or deleted in one reconcile (kube-controller-manager's `burstReplicas`).
pub const BURST_REPLICAS: usize = 500;
/// How often a ReplicaSet is looked at again when nothing happens.
const RESYNC: Duration = Duration::from_secs(300);

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(sets, watcher::Config::default());
    let store = controller.store();
    let context = Arc::new(Context {
        client,
        relabelled: Arc::new(Mutex::new(HashSet::new())),
    });
    let relabelled = context.relabelled.clone();
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            owners_to_wake(&store, &relabelled, &pod)
        })
        .run(reconcile, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "replicaset controller");
            }
            futures::future::ready(())
        })
        .await;
}

/// What every reconcile shares.
struct Context {
    client: kube::Client,
    /// ReplicaSets owning a pod their selector no longer matches: their next reconcile lists
    /// the whole namespace to release it (otherwise a reconcile lists only the pods its
    /// selector matches, so that thousands of ReplicaSets in one namespace stay cheap).
    relabelled: Arc<Mutex<HashSet<ObjectRef<ReplicaSet>>>>,
}

/// The ReplicaSets a pod change concerns: its controller if it has one of kind ReplicaSet,
/// else (an orphan) every ReplicaSet of its namespace whose selector matches it.
fn owners_to_wake(
    store: &Store<ReplicaSet>,
    relabelled: &Mutex<HashSet<ObjectRef<ReplicaSet>>>,
    pod: &Pod,
) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace();
    if let Some(owner) = controller_of(&pod.metadata) {
        if owner.kind == "ReplicaSet" && owner.api_version.starts_with("apps/") {
            let mut r = ObjectRef::new(&owner.name);
            if let Some(ns) = &ns {
                r = r.within(ns);
            }
            let stray = store.get(&r).is_some_and(|rs| {
                rs.metadata.uid.as_deref() == Some(owner.uid.as_str())
                    && selector_of(Some(&rs.spec.selector))
                        .is_some_and(|s| !s.matches(pod.labels()))
            });
            if stray {
                relabelled
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(r.clone());
            }
            return vec![r];
        }
        return Vec::new();
    }
    store
        .state()
        .into_iter()
        .filter(|rs| rs.namespace() == ns)
        .filter(|rs| selector_of(Some(&rs.spec.selector)).is_some_and(|s| s.matches(pod.labels())))
        .map(|rs| ObjectRef::from_obj(&*rs))
        .collect()
}

fn error_policy(rs: Arc<ReplicaSet>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(replicaset = %rs.name_any(), %error, "cannot sync the ReplicaSet");
    Action::requeue(Duration::from_secs(2))
}

/// The controller owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// A `metav1.LabelSelector` as a selector; `None` for a missing, empty or malformed one
/// (which selects nothing, as kube-controller-manager treats it).
pub fn selector_of(selector: Option<&LabelSelector>) -> Option<Selector> {
    let selector = selector?;
    let empty = selector.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(|e| e.is_empty());
    if empty {
        return None;
    }
    Selector::try_from(selector.clone()).ok()
}

/// Whether the pod is counted: not finished and not being deleted.
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// When the pod's `Ready` condition turned True, if it is True.
pub fn ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Whether the pod's `Ready` condition is True.
pub fn pod_is_ready(pod: &Pod) -> bool {
    ready_since(pod).is_some()
}

/// Whether the pod has been ready for `min_ready_seconds` at `now` (kube's
/// `IsPodAvailable`).
pub fn pod_is_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    match ready_since(pod) {
        None => false,
        Some(_) if min_ready_seconds <= 0 => true,
        Some(None) => false,
        Some(Some(since)) => since.as_second() + i64::from(min_ready_seconds) <= now.as_second(),
    }
}

/// How long until a ready pod becomes available, if it is ready but not yet available.
fn until_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<Duration> {
    if min_ready_seconds <= 0 {
        return None;
    }
    let since = ready_since(pod)??;
    let left = since.as_second() + i64::from(min_ready_seconds) - now.as_second();
    (left > 0).then(|| Duration::from_secs(left.unsigned_abs()))
}

/// The pod a template makes for `owner` (kube's `GetPodFromTemplate`): the template's labels,
/// annotations, finalizers and spec, `generateName` `<owner>-`, and a controller reference.
pub fn pod_from_template(
    template: &PodTemplateSpec,
    namespace: &str,
    generate_name: String,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: Some(namespace.to_string()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// The owner reference a dependent of `owner` carries (`controller` and
/// `blockOwnerDeletion` true).
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let mut r = owner.controller_owner_ref(&())?;
    r.block_owner_deletion = Some(true);
    Some(r)
}

/// The pods of one ReplicaSet after adoption and release, from a fresh list.
struct Claimed {
    /// Owned and matching (active or not).
    pods: Vec<Pod>,
}

async fn reconcile(rs: Arc<ReplicaSet>, context: Arc<Context>) -> Result<Action, Error> {
    let client = context.client.clone();
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns);
    // The cache may lag: act on the stored ReplicaSet.
    let Some(rs) = sets.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    if rs.metadata.uid.is_none() {
        return Ok(Action::await_change());
    }
    let spec = rs.spec.clone();
    let Some(selector) = selector_of(Some(&spec.selector)) else {
        tracing::debug!(replicaset = %name, "invalid or empty selector: nothing to manage");
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // A fresh list (never the cache) before acting: what the selector matches, or the whole
    // namespace when an owned pod was relabelled out of the selector.
    let full = context
        .relabelled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ObjectRef::from_obj(&rs));
    let params = if full {
        ListParams::default()
    } else {
        ListParams::default().labels_from(&selector)
    };
    let listed = pods_api.list(&params).await?.items;
    let claimed = claim(&pods_api, &sets, &rs, &selector, listed).await?;

    let deleting = rs.metadata.deletion_timestamp.is_some();
    let active: Vec<&Pod> = claimed.pods.iter().filter(|p| pod_is_active(p)).collect();
    let desired = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
    let mut failure: Option<String> = None;
    if !deleting {
        if active.len() < desired {
            let want = (desired - active.len()).min(BURST_REPLICAS);
            if let Err(e) = create_pods(&pods_api, &rs, want).await {
                failure = Some(match &e {
                    Error::Kube(kube::Error::Api(s)) => s.message.clone(),
                    other => other.to_string(),
                });
            }
        } else if active.len() > desired {
            let surplus = (active.len() - desired).min(BURST_REPLICAS);
            let related = related_pods(&client, &rs, &ns).await.unwrap_or_default();
            for pod in pods_to_delete(&active, &related, surplus) {
                delete_pod(&pods_api, pod).await?;
            }
        }
    }

    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let status = status_of(&rs, &claimed.pods, failure.as_deref(), now);
    write_status(&sets, &rs, status).await?;
    if let Some(message) = failure {
        tracing::warn!(replicaset = %name, %message, "cannot create pods");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let wait = active
        .iter()
        .filter_map(|p| until_available(p, min_ready, now))
        .min()
        .map(|d| d + Duration::from_millis(200))
        .unwrap_or(RESYNC);
    Ok(Action::requeue(wait))
}

/// Adopts matching orphans and releases owned pods that no longer match (kube's
/// `ClaimPods`); returns the pods the ReplicaSet owns afterwards.
async fn claim(
    pods_api: &Api<Pod>,
    sets: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    selector: &Selector,
    listed: Vec<Pod>,
) -> Result<Claimed, Error> {
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    let mut can_adopt: Option<bool> = None;
    let mut pods = Vec::new();
    for mut pod in listed {
        let matches = selector.matches(pod.labels());
        match controller_of(&pod.metadata) {
            Some(owner) if owner.uid == uid => {
                if matches {
                    pods.push(pod);
                } else if !deleting {
                    release(pods_api, &mut pod, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                if !matches || deleting || pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                // Recheck against the stored owner before adopting (kube's
                // `RecheckDeletionTimestamp`).
                let allowed = match can_adopt {
                    Some(v) => v,
                    None => {
                        let fresh = sets.get_opt(&rs.name_any()).await?;
                        let v = fresh.is_some_and(|f| {
                            f.metadata.uid.as_deref() == Some(uid.as_str())
                                && f.metadata.deletion_timestamp.is_none()
                        });
                        can_adopt = Some(v);
                        v
                    }
                };
                if allowed && let Some(adopted) = adopt(pods_api, pod, rs).await? {
                    pods.push(adopted);
                }
            }
        }
    }
    Ok(Claimed { pods })
}

async fn adopt(pods_api: &Api<Pod>, mut pod: Pod, rs: &ReplicaSet) -> Result<Option<Pod>, Error> {
    let Some(owner) = controller_ref(rs) else {
        return Ok(None);
    };
    pod.metadata
        .owner_references
        .get_or_insert_with(Vec::new)
        .push(owner);
    pod.metadata.managed_fields = None;
    match pods_api
        .replace(&pod.name_any(), &PostParams::default(), &pod)
        .await
    {
        Ok(p) => {
            tracing::info!(pod = %p.name_any(), replicaset = %rs.name_any(), "adopted pod");
            Ok(Some(p))
        }
        // Changed or gone meanwhile: the next reconcile decides again.
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn release(pods_api: &Api<Pod>, pod: &mut Pod, uid: &str) -> Result<(), Error> {
    if let Some(refs) = pod.metadata.owner_references.as_mut() {
        refs.retain(|r| r.uid != uid);
    }
    pod.metadata.managed_fields = None;
    match pods_api
        .replace(&pod.name_any(), &PostParams::default(), pod)
        .await
    {
        Ok(_) => {
            tracing::info!(pod = %pod.name_any(), "released pod that no longer matches");
            Ok(())
        }
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409 | 422) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates `count` pods in slow-start batches (1, 2, 4, ...), stopping at the first failure
/// (kube's `slowStartBatch`).
async fn create_pods(pods_api: &Api<Pod>, rs: &ReplicaSet, count: usize) -> Result<(), Error> {
    let Some(template) = rs.spec.template.clone() else {
        return Ok(());
    };
    let Some(owner) = controller_ref(rs) else {
        return Ok(());
    };
    let ns = rs.namespace().unwrap_or_default();
    let pod = pod_from_template(&template, &ns, format!("{}-", rs.name_any()), owner);
    let params = PostParams::default();
    let mut left = count;
    let mut batch = 1;
    while left > 0 {
        let n = batch.min(left);
        let results =
            futures::future::join_all((0..n).map(|_| pods_api.create(&params, &pod))).await;
        for r in results {
            match r {
                Ok(_) => {}
                // The namespace is going away: nothing to do.
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("being terminated") =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        left -= n;
        batch *= 2;
    }
    Ok(())
}

async fn delete_pod(pods_api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: pod.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match pods_api.delete(&pod.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The active pods of every ReplicaSet sharing `rs`'s controller (the same Deployment), or of
/// `rs` alone: they rank surplus pods by how crowded their node is.
async fn related_pods(client: &kube::Client, rs: &ReplicaSet, ns: &str) -> Result<Vec<Pod>, Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let mut uids = vec![rs.metadata.uid.clone().unwrap_or_default()];
    if let Some(owner) = controller_of(&rs.metadata) {
        for other in sets.list(&ListParams::default()).await?.items {
            if controller_of(&other.metadata).is_some_and(|o| o.uid == owner.uid) {
                uids.push(other.metadata.uid.clone().unwrap_or_default());
            }
        }
    }
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(pod_is_active)
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| uids.contains(&o.uid)))
        .collect())
}

/// The `count` pods to delete first, in kube-controller-manager's order
/// (`ActivePodsWithRanks`): unscheduled, pending, not ready, on the most crowded node, ready
/// for the shortest time, most restarts, newest.
pub fn pods_to_delete<'a>(active: &[&'a Pod], related: &[Pod], count: usize) -> Vec<&'a Pod> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        if let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let mut ranked: Vec<&Pod> = active.to_vec();
    ranked.sort_by(|a, b| deletion_order(a, b, &per_node));
    ranked.truncate(count);
    ranked
}

fn deletion_order(a: &Pod, b: &Pod, per_node: &HashMap<&str, usize>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
    };
    let phase_rank = |p: &Pod| match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 0,
    };
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .max()
            .unwrap_or(0)
    };
    let (na, nb) = (node(a), node(b));
    // 1. Unassigned first.
    if na.is_none() != nb.is_none() {
        return if na.is_none() {
            Ordering::Less
        } else {
            Ordering::Greater
        };
    }
    // 2. Pending < Unknown < Running.
    let (pa, pb) = (phase_rank(a), phase_rank(b));
    if pa != pb {
        return pa.cmp(&pb);
    }
    // 3. Not ready first.
    let (ra, rb) = (pod_is_ready(a), pod_is_ready(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    // 4. More pods of the same owner on the node first.
    let crowd = |n: &Option<String>| n.as_deref().and_then(|n| per_node.get(n)).copied();
    let (ca, cb) = (crowd(&na).unwrap_or(0), crowd(&nb).unwrap_or(0));
    if ca != cb {
        return cb.cmp(&ca);
    }
    // 5. Ready for less time first.
    if ra && rb {
        let (ta, tb) = (ready_since(a).flatten(), ready_since(b).flatten());
        if ta != tb {
            return match (ta, tb) {
                (Some(x), Some(y)) => y.cmp(&x),
                (None, _) => Ordering::Less,
                (_, None) => Ordering::Greater,
            };
        }
    }
    // 6. More restarts first.
    let (xa, xb) = (restarts(a), restarts(b));
    if xa != xb {
        return xb.cmp(&xa);
    }
    // 7. Newer first.
    let created = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
    created(b).cmp(&created(a))
}

/// The status the pods show (kube's `calculateStatus`).
fn status_of(
    rs: &ReplicaSet,
    owned: &[Pod],
    failure: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let spec = rs.spec.clone();
    let template_labels: BTreeMap<String, String> = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let active: Vec<&Pod> = owned.iter().filter(|p| pod_is_active(p)).collect();
    let count = |f: &dyn Fn(&Pod) -> bool| -> i32 {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let fully_labeled = count(&|p| {
        template_labels
            .iter()
            .all(|(k, v)| p.labels().get(k) == Some(v))
    });
    let ready = count(&|p| pod_is_ready(p));
    let available = count(&|p| pod_is_available(p, min_ready, now));
    let old = rs.status.clone().unwrap_or_default();
    let mut conditions: Vec<ReplicaSetCondition> = old
        .conditions
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.type_.as_deref() != Some("ReplicaFailure"))
        .collect();
    if let Some(message) = failure {
        let previous = old
            .conditions
            .iter()
            .flatten()
            .find(|c| {
                c.type_.as_deref() == Some("ReplicaFailure")
                    && c.message.as_deref() == Some(message)
            })
            .cloned();
        conditions.push(previous.unwrap_or(ReplicaSetCondition {
            type_: Some("ReplicaFailure".into()),
            status: Some("True".into()),
            reason: Some("FailedCreate".into()),
            message: Some(message.to_string()),
            last_transition_time: Some(Time(now)),
        }));
    }
    ReplicaSetStatus {
        replicas: i32::try_from(active.len()).unwrap_or(i32::MAX),
        fully_labeled_replicas: (fully_labeled > 0).then_some(fully_labeled),
        ready_replicas: (ready > 0).then_some(ready),
        available_replicas: (available > 0).then_some(available),
        observed_generation: rs.metadata.generation,
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: old.terminating_replicas,
    }
}

async fn write_status(
    sets: &Api<ReplicaSet>,
    rs: &ReplicaSet,
    status: ReplicaSetStatus,
) -> Result<(), Error> {
    if rs.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let mut updated = rs.clone();
    updated.status = Some(status);
    updated.metadata.managed_fields = None;
    match sets
        .replace_status(&rs.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // Gone, or changed meanwhile (its event reconciles again).
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(name: &str, node: Option<&str>, phase: &str, ready_at: Option<i64>, age: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(1_000_000 + age).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn surplus_pods_go_unscheduled_then_not_ready_then_newest() {
        let ready_old = pod("ready-old", Some("n1"), "Running", Some(10), 1);
        let ready_new = pod("ready-new", Some("n1"), "Running", Some(20), 2);
        let not_ready = pod("not-ready", Some("n1"), "Running", None, 0);
        let pending = pod("pending", Some("n1"), "Pending", None, 0);
        let unscheduled = pod("unscheduled", None, "Pending", None, 0);
        let active = vec![&ready_old, &ready_new, &not_ready, &pending, &unscheduled];
        let order: Vec<String> = pods_to_delete(&active, &[], 5)
            .into_iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(
            order,
            [
                "unscheduled",
                "pending",
                "not-ready",
                "ready-new",
                "ready-old"
            ]
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let p = pod("p", Some("n"), "Running", Some(100), 0);
        let at = |s| Timestamp::from_second(s).unwrap();
        assert!(pod_is_available(&p, 0, at(100)));
        assert!(!pod_is_available(&p, 10, at(105)));
        assert!(pod_is_available(&p, 10, at(110)));
        assert_eq!(
            until_available(&p, 10, at(105)),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn empty_or_missing_selectors_select_nothing() {
        assert!(selector_of(None).is_none());
        assert!(selector_of(Some(&LabelSelector::default())).is_none());
        let s = selector_of(Some(&LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        }))
        .unwrap();
        assert!(s.matches(&[("app".to_string(), "web".to_string())].into()));
        assert!(!s.matches(&BTreeMap::new()));
    }
}

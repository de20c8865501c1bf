//! The disruption controller, as kube-controller-manager's: the status of every
//! PodDisruptionBudget (healthy pods, disruptions allowed) that the eviction subresource reads.
//!
//! For each budget, from what is observed:
//! - the pods its selector chooses (an empty selector chooses every pod of the namespace, a
//!   missing one none);
//! - `expectedPods`: the pod count for an integer `minAvailable`; otherwise the sum of the
//!   scales of the pods' controllers (a Deployment's `spec.replicas` through its ReplicaSet,
//!   a ReplicaSet's, a StatefulSet's, a ReplicationController's); a pod without controller, or
//!   whose controller is not found, fails the sync;
//! - `desiredHealthy`: `minAvailable` (a percentage of `expectedPods`, rounded up), or
//!   `expectedPods - maxUnavailable` (rounded up too);
//! - `currentHealthy`: ready pods that are neither being deleted nor listed under
//!   `disruptedPods` (entries the eviction subresource adds, dropped once the pod is being
//!   deleted or after two minutes, when the budget is synced again);
//! - `disruptionsAllowed = currentHealthy - desiredHealthy` (zero when negative or when no pod
//!   is expected), `observedGeneration`, and the `DisruptionAllowed` condition
//!   (`SufficientPods`, `InsufficientPods`; `SyncFailed` with `disruptionsAllowed: 0` when the
//!   status cannot be computed, kube's fail-safe).
//!
//! The status is replaced with the resourceVersion it was computed from, so a concurrent
//! eviction (which decrements the budget) makes the write conflict and the budget is synced
//! again from fresh state.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::Error;

/// How long an entry of `status.disruptedPods` keeps its pod counted as gone (kube's
/// `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition type the controller keeps.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";

/// How often every budget is synced again even without events.
const RESYNC: Duration = Duration::from_secs(30);

/// Runs the controller until the process stops: budgets' status, and stale
/// `DisruptionTarget` pod conditions.
pub async fn run(client: kube::Client) {
    futures::join!(run_budgets(client.clone()), run_stale_disruptions(client));
}

async fn run_budgets(client: kube::Client) {
    let budgets: Api<PodDisruptionBudget> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    let controller = Controller::new(budgets, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(pods, watcher::Config::default(), move |pod: Pod| {
            let ns = pod.namespace();
            store
                .state()
                .into_iter()
                .filter(|b| b.namespace() == ns)
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "disruption controller");
            }
            futures::future::ready(())
        })
        .await;
}

/// The pod condition an eviction sets before deleting a pod.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// How long a pod may carry `DisruptionTarget=True` without being deleted before the
/// condition is reset (kube's `stalePodDisruptionTimeout`): the eviction that set it did not
/// delete the pod after all.
pub const STALE_DISRUPTION_TIMEOUT: Duration = Duration::from_secs(120);

/// Resets `DisruptionTarget` to `False` on pods that kept it [`STALE_DISRUPTION_TIMEOUT`]
/// without being deleted (kube's stale pod disruption worker).
async fn run_stale_disruptions(client: kube::Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(pods, watcher::Config::default())
        .run(
            reconcile_stale_disruption,
            |_pod, error, _| {
                tracing::debug!(%error, "cannot reset a stale DisruptionTarget condition");
                Action::requeue(Duration::from_secs(5))
            },
            Arc::new(client),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
}

/// When a pod's `DisruptionTarget=True` condition goes stale: `None` if it has none (or
/// is being deleted).
pub fn stale_disruption_at(pod: &Pod) -> Option<Timestamp> {
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let c = pod
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == DISRUPTION_TARGET && c.status == "True")?;
    let since = c
        .last_transition_time
        .as_ref()
        .map_or_else(Timestamp::now, |t| t.0);
    since
        .checked_add(SignedDuration::try_from(STALE_DISRUPTION_TIMEOUT).unwrap_or_default())
        .ok()
}

async fn reconcile_stale_disruption(
    pod: Arc<Pod>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let Some(stale_at) = stale_disruption_at(&pod) else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    if stale_at > now {
        let wait: Duration = stale_at.duration_since(now).try_into().unwrap_or_default();
        return Ok(Action::requeue(wait + Duration::from_millis(100)));
    }
    let api: Api<Pod> = Api::namespaced((*client).clone(), &pod.namespace().unwrap_or_default());
    let mut updated = (*pod).clone();
    if let Some(c) = updated
        .status
        .as_mut()
        .and_then(|s| s.conditions.as_mut())
        .and_then(|cs| cs.iter_mut().find(|c| c.type_ == DISRUPTION_TARGET))
    {
        c.status = "False".into();
        c.reason = None;
        c.message = None;
        c.last_transition_time = Some(Time(now));
    }
    match api
        .replace_status(&pod.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::debug!(pdb = %pdb.name_any(), %error, "cannot update the PodDisruptionBudget's status");
    Action::requeue(Duration::from_secs(1))
}

/// Why a budget's status cannot be computed.
#[derive(Debug, thiserror::Error)]
enum SyncError {
    #[error("{0}")]
    Failed(String),
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    if pdb.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = pdb.namespace().unwrap_or_default();
    let api: Api<PodDisruptionBudget> = Api::namespaced((*client).clone(), &ns);
    // Read the budget afresh: the eviction subresource writes its status too.
    let Some(pdb) = api.get_opt(&pdb.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let now = Timestamp::now();
    match compute(&client, &pdb, now).await {
        Ok((status, recheck)) => {
            write_status(&api, &pdb, status).await?;
            let next = recheck
                .and_then(|at| at.duration_since(now).try_into().ok())
                .map_or(RESYNC, |d: Duration| {
                    d.min(RESYNC) + Duration::from_millis(100)
                });
            Ok(Action::requeue(next))
        }
        Err(SyncError::Kube(e)) if is_transient(&e) => Err(e.into()),
        Err(e) => {
            tracing::debug!(pdb = %pdb.name_any(), error = %e, "PodDisruptionBudget sync failed");
            fail_safe(&api, &pdb, &e.to_string()).await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
    }
}

fn is_transient(e: &kube::Error) -> bool {
    !matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// Computes the status of `pdb` at `now`, and when an entry of `disruptedPods` expires.
async fn compute(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    now: Timestamp,
) -> Result<(PodDisruptionBudgetStatus, Option<Timestamp>), SyncError> {
    let ns = pdb.namespace().unwrap_or_default();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pods: Vec<Pod> = match spec.selector.as_ref() {
        None => Vec::new(),
        Some(selector) => {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let selector = selector_string(selector).map_err(SyncError::Failed)?;
            api.list(&ListParams::default().labels(&selector))
                .await?
                .items
        }
    };
    let needs_scale = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let expected_scale = if needs_scale {
        Some(expected_scale(client, &ns, &pods).await?)
    } else {
        None
    };
    let (expected, desired) = expected_and_desired(
        &spec.min_available,
        &spec.max_unavailable,
        pods.len(),
        expected_scale,
    )
    .map_err(SyncError::Failed)?;
    let old = pdb.status.clone().unwrap_or_default();
    let (disrupted, recheck) = live_disruptions(&pods, old.disrupted_pods.as_ref(), now);
    let healthy = count_healthy(&pods, &disrupted, now);
    let generation = pdb.metadata.generation.unwrap_or(0);
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: Some(healthy),
        desired_healthy: Some(desired),
        expected_pods: Some(expected),
        disruptions_allowed: Some(disruptions_allowed(healthy, desired, expected)),
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: Some(generation),
        conditions: old.conditions.clone(),
    };
    update_condition(&mut status, now);
    Ok((status, recheck))
}

/// `currentHealthy - desiredHealthy`, or zero when that is negative or no pod is expected
/// (a budget that matches no pod yet is safe when its first pods appear).
pub fn disruptions_allowed(current_healthy: i32, desired_healthy: i32, expected: i32) -> i32 {
    let allowed = current_healthy - desired_healthy;
    if expected <= 0 || allowed <= 0 {
        0
    } else {
        allowed
    }
}

/// `expectedPods` and `desiredHealthy` from the budget's bounds (kube's
/// `getExpectedPodCount`): an integer `minAvailable` counts the pods; a percentage or
/// `maxUnavailable` needs the controllers' scale.
pub fn expected_and_desired(
    min_available: &Option<IntOrString>,
    max_unavailable: &Option<IntOrString>,
    pod_count: usize,
    scale: Option<i32>,
) -> Result<(i32, i32), String> {
    let pod_count = i32::try_from(pod_count).unwrap_or(i32::MAX);
    if let Some(max) = max_unavailable {
        let expected = scale.unwrap_or(0);
        let unavailable = scaled_value(max, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match min_available {
        Some(IntOrString::Int(n)) => Ok((pod_count, *n)),
        Some(min @ IntOrString::String(_)) => {
            let expected = scale.unwrap_or(0);
            Ok((expected, scaled_value(min, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// An integer, or a percentage of `total` rounded up (apimachinery's
/// `GetScaledValueFromIntOrPercent` with `roundUp`).
pub fn scaled_value(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let digits = s
                .strip_suffix('%')
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let percent: i64 = digits
                .parse()
                .map_err(|_| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            let scaled = (percent * i64::from(total) + 99) / 100;
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// The sum of the scales of the pods' controllers (kube's `getExpectedScale`): each
/// controller counted once, a Deployment once for all its ReplicaSets.
async fn expected_scale(client: &kube::Client, ns: &str, pods: &[Pod]) -> Result<i32, SyncError> {
    // Owner uid -> (the uid of the controller whose scale counts, its scale).
    let mut by_owner: HashMap<String, (String, i32)> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_of(pod) else {
            return Err(SyncError::Failed(format!(
                "found no controller ref for pod {:?}",
                pod.name_any()
            )));
        };
        if by_owner.contains_key(&owner.uid) {
            continue;
        }
        let Some(found) = scale_of(client, ns, &owner).await? else {
            return Err(SyncError::Failed(format!(
                "found no controllers for pod {:?}",
                pod.name_any()
            )));
        };
        by_owner.insert(owner.uid.clone(), found);
    }
    let by_controller: HashMap<&String, i32> = by_owner.values().map(|(u, s)| (u, *s)).collect();
    Ok(by_controller.values().sum())
}

/// The controlling owner reference of a pod (`controller: true`).
fn controller_of<K: Resource>(object: &K) -> Option<OwnerReference> {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .cloned()
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

/// The controller (its uid) whose scale counts for pods owned by `owner`, and that scale:
/// a ReplicaSet's Deployment, else the ReplicaSet; a StatefulSet; a ReplicationController.
async fn scale_of(
    client: &kube::Client,
    ns: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, SyncError> {
    let group = group_of(&owner.api_version);
    let found = |uid: Option<&String>| uid == Some(&owner.uid);
    match (group, owner.kind.as_str()) {
        ("apps" | "extensions", "ReplicaSet") => {
            let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
            let Some(rs) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !found(rs.metadata.uid.as_ref()) {
                return Ok(None);
            }
            if let Some(d) = controller_of(&rs)
                && d.kind == "Deployment"
                && matches!(group_of(&d.api_version), "apps" | "extensions")
            {
                let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                let Some(deployment) = api.get_opt(&d.name).await? else {
                    return Ok(None);
                };
                if deployment.metadata.uid.as_ref() != Some(&d.uid) {
                    return Ok(None);
                }
                let replicas = deployment.spec.replicas.unwrap_or(1);
                return Ok(Some((d.uid, replicas)));
            }
            let replicas = rs.spec.replicas.unwrap_or(1);
            Ok(Some((owner.uid.clone(), replicas)))
        }
        ("apps", "StatefulSet") => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
            let Some(ss) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !found(ss.metadata.uid.as_ref()) {
                return Ok(None);
            }
            let replicas = ss.spec.replicas.unwrap_or(1);
            Ok(Some((owner.uid.clone(), replicas)))
        }
        ("", "ReplicationController") => {
            let api: Api<ReplicationController> = Api::namespaced(client.clone(), ns);
            let Some(rc) = api.get_opt(&owner.name).await? else {
                return Ok(None);
            };
            if !found(rc.metadata.uid.as_ref()) {
                return Ok(None);
            }
            let replicas = rc.spec.and_then(|s| s.replicas).unwrap_or(1);
            Ok(Some((owner.uid.clone(), replicas)))
        }
        _ => Ok(None),
    }
}

/// The entries of `disruptedPods` that still count at `now` (their pod exists, is not being
/// deleted and was evicted less than [`DELETION_TIMEOUT`] ago), and when the first of them
/// expires (kube's `buildDisruptedPodMap`).
pub fn live_disruptions(
    pods: &[Pod],
    recorded: Option<&BTreeMap<String, Time>>,
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let mut live = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    let Some(recorded) = recorded else {
        return (live, recheck);
    };
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else {
            continue;
        };
        let Ok(expires) = at.0.checked_add(timeout) else {
            continue;
        };
        if expires < now {
            tracing::info!(pod = %pod.name_any(), "pod was expected to be deleted but it was not");
            continue;
        }
        if recheck.is_none_or(|r| expires < r) {
            recheck = Some(expires);
        }
        live.insert(pod.name_any(), at.clone());
    }
    (live, recheck)
}

/// Whether a pod's `Ready` condition is `True`.
pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Ready pods that are not being deleted and not about to be (kube's `countHealthyPods`).
pub fn count_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    let timeout = SignedDuration::try_from(DELETION_TIMEOUT).unwrap_or_default();
    let healthy = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|at| at.0.checked_add(timeout).is_ok_and(|e| e <= now))
        })
        .filter(|p| pod_ready(p))
        .count();
    i32::try_from(healthy).unwrap_or(i32::MAX)
}

/// Sets `DisruptionAllowed` from `disruptionsAllowed` (kube's
/// `UpdateDisruptionAllowedCondition`).
pub fn update_condition(status: &mut PodDisruptionBudgetStatus, now: Timestamp) {
    let (value, reason) = if status.disruptions_allowed.unwrap_or(0) > 0 {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_condition(status, value, reason, "", now);
}

fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) {
    let observed = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let since = conditions
        .iter()
        .find(|c| c.type_ == DISRUPTION_ALLOWED && c.status == value)
        .map(|c| c.last_transition_time.clone());
    conditions.retain(|c| c.type_ != DISRUPTION_ALLOWED);
    conditions.push(Condition {
        type_: DISRUPTION_ALLOWED.into(),
        status: value.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: observed,
        last_transition_time: since.unwrap_or(Time(now)),
    });
}

/// Whether the condition matches the counters (kube's `ConditionsAreUpToDate`).
fn condition_current(status: &PodDisruptionBudgetStatus, generation: i64) -> bool {
    let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == DISRUPTION_ALLOWED)
    else {
        return false;
    };
    if status.observed_generation != Some(generation) {
        return false;
    }
    if status.disruptions_allowed.unwrap_or(0) > 0 {
        c.status == "True" && c.reason == "SufficientPods"
    } else {
        c.status == "False" && c.reason == "InsufficientPods"
    }
}

/// Replaces the status when it differs, with the resourceVersion it was computed from.
async fn write_status(
    api: &Api<PodDisruptionBudget>,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
) -> Result<(), Error> {
    let old = pdb.status.clone().unwrap_or_default();
    let generation = pdb.metadata.generation.unwrap_or(0);
    let same = old.current_healthy == status.current_healthy
        && old.desired_healthy == status.desired_healthy
        && old.expected_pods == status.expected_pods
        && old.disruptions_allowed == status.disruptions_allowed
        && old.disrupted_pods.clone().unwrap_or_default()
            == status.disrupted_pods.clone().unwrap_or_default()
        && old.observed_generation == Some(generation)
        && condition_current(&old, generation);
    if same {
        return Ok(());
    }
    let mut new = pdb.clone();
    new.status = Some(status);
    api.replace_status(&pdb.name_any(), &PostParams::default(), &new)
        .await?;
    Ok(())
}

/// Sets `disruptionsAllowed` to zero with `DisruptionAllowed=False` (`SyncFailed`), so no
/// eviction is approved while the budget cannot be computed (kube's `failSafe`).
async fn fail_safe(
    api: &Api<PodDisruptionBudget>,
    pdb: &PodDisruptionBudget,
    why: &str,
) -> Result<(), Error> {
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = Some(0);
    set_condition(&mut status, "False", "SyncFailed", why, Timestamp::now());
    if pdb.status.as_ref() == Some(&status)
        || pdb.status.as_ref().is_some_and(|old| {
            old.disruptions_allowed.unwrap_or(0) == 0
                && old.conditions.iter().flatten().any(|c| {
                    c.type_ == DISRUPTION_ALLOWED && c.reason == "SyncFailed" && c.message == why
                })
        })
    {
        return Ok(());
    }
    let mut new = pdb.clone();
    new.status = Some(status);
    api.replace_status(&pdb.name_any(), &PostParams::default(), &new)
        .await?;
    Ok(())
}

/// A label selector in the `kubectl -l` syntax the list API reads.
pub fn selector_string(selector: &LabelSelector) -> Result<String, String> {
    let mut terms: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        terms.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        });
    }
    Ok(terms.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kube::api::ObjectMeta;

    fn pod(name: &str, ready: bool, deleting: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                deletion_timestamp: deleting.then(|| Time(Timestamp::now())),
                ..Default::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn desired_healthy_follows_kube_rounding() {
        let int = |n| Some(IntOrString::Int(n));
        let pct = |s: &str| Some(IntOrString::String(s.into()));
        assert_eq!(expected_and_desired(&int(2), &None, 3, None), Ok((3, 2)));
        assert_eq!(
            expected_and_desired(&pct("50%"), &None, 2, Some(3)),
            Ok((3, 2))
        );
        assert_eq!(expected_and_desired(&None, &int(1), 2, Some(3)), Ok((3, 2)));
        // maxUnavailable 50% of 3 rounds up to 2 unavailable: 1 must stay healthy.
        assert_eq!(
            expected_and_desired(&None, &pct("50%"), 3, Some(3)),
            Ok((3, 1))
        );
        assert_eq!(expected_and_desired(&None, &int(5), 3, Some(3)), Ok((3, 0)));
        assert!(expected_and_desired(&pct("x"), &None, 1, Some(1)).is_err());
    }

    #[test]
    fn allowed_disruptions_are_never_negative_and_need_expected_pods() {
        assert_eq!(disruptions_allowed(3, 2, 3), 1);
        assert_eq!(disruptions_allowed(1, 2, 3), 0);
        assert_eq!(disruptions_allowed(2, 0, 0), 0);
    }

    #[test]
    fn evicted_and_deleting_pods_are_not_healthy() {
        let now = Timestamp::now();
        let pods = vec![
            pod("a", true, false),
            pod("b", true, false),
            pod("c", true, true),
            pod("d", false, false),
        ];
        let mut recorded = BTreeMap::new();
        recorded.insert("a".to_string(), Time(now - SignedDuration::from_secs(10)));
        recorded.insert("b".to_string(), Time(now - SignedDuration::from_secs(300)));
        recorded.insert("c".to_string(), Time(now));
        recorded.insert("gone".to_string(), Time(now));
        let (live, recheck) = live_disruptions(&pods, Some(&recorded), now);
        assert_eq!(live.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(recheck, Some(now + SignedDuration::from_secs(110)));
        assert_eq!(count_healthy(&pods, &live, now), 1);
        assert_eq!(count_healthy(&pods, &BTreeMap::new(), now), 2);
    }

    #[test]
    fn the_condition_tracks_allowed_disruptions() {
        let now = Timestamp::now();
        let mut status = PodDisruptionBudgetStatus {
            disruptions_allowed: Some(1),
            observed_generation: Some(2),
            ..Default::default()
        };
        update_condition(&mut status, now);
        assert!(condition_current(&status, 2));
        assert!(!condition_current(&status, 3));
        status.disruptions_allowed = Some(0);
        assert!(!condition_current(&status, 2));
        update_condition(&mut status, now);
        let c = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "InsufficientPods")
        );
        assert_eq!(status.conditions.as_ref().unwrap().len(), 1);
    }

    #[test]
    fn a_disruption_target_goes_stale_after_two_minutes_unless_deleting() {
        use k8s_openapi::api::core::v1::PodCondition;
        let since = Timestamp::now() - SignedDuration::from_secs(30);
        let mut p = pod("a", true, false);
        assert_eq!(stale_disruption_at(&p), None);
        p.status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()
            .push(PodCondition {
                type_: DISRUPTION_TARGET.into(),
                status: "True".into(),
                reason: Some("EvictionByEvictionAPI".into()),
                last_transition_time: Some(Time(since)),
                ..Default::default()
            });
        assert_eq!(
            stale_disruption_at(&p),
            Some(since + SignedDuration::from_secs(120))
        );
        p.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert_eq!(stale_disruption_at(&p), None);
    }

    #[test]
    fn selectors_become_list_queries() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "web".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "legacy".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&selector).unwrap(),
            "app=web,tier in (a,b),!legacy"
        );
        assert_eq!(selector_string(&LabelSelector::default()).unwrap(), "");
    }
}

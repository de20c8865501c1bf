//! The `pods/eviction` subresource, as kube-apiserver's `EvictionREST`: a deletion of a pod
//! that honours the PodDisruptionBudget covering it. `kubectl drain` evicts through it.
//!
//! - The body is a `policy/v1` (or `policy/v1beta1`) `Eviction` naming the pod, with optional
//!   `deleteOptions` (grace period, preconditions, dry run).
//! - A pod that is terminal (`Succeeded`/`Failed`), `Pending` or already being deleted has no
//!   budget to honour: it is deleted at once (with a resourceVersion precondition for a
//!   pending one, so it cannot turn ready in between).
//! - Otherwise the budgets whose (non-empty) selector chooses the pod are read: none, the pod
//!   goes; more than one, `500` (the subresource does not support it); one, it must allow a
//!   disruption: its status observed its current generation, and `disruptionsAllowed > 0`.
//!   If not: `429 TooManyRequests` "Cannot evict pod as it would violate the pod's disruption
//!   budget." with a `DisruptionBudget` cause (clients such as kubectl retry). If it does,
//!   `disruptionsAllowed` is decremented and the pod recorded under `status.disruptedPods`
//!   (the disruption controller keeps counting it as gone until it is, or for two minutes),
//!   written with a resourceVersion precondition and retried on conflict, before the pod is
//!   deleted.
//! - A pod that is not ready does not use up the budget: with `unhealthyPodEvictionPolicy:
//!   AlwaysAllow` always, with `IfHealthyBudget` (the default) while the budget has its
//!   healthy pods; it is deleted with a resourceVersion precondition, so a pod that turned
//!   ready meanwhile answers `429` instead.
//! - Before the pod is deleted it gets the `DisruptionTarget` condition (reason
//!   `EvictionByEvictionAPI`), as kube-apiserver sets it.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use ferry_store::StoreError;

use crate::error::{ApiError, ApiResult};
use crate::meta;
use crate::selectors::LabelSelector;
use crate::service::{DeleteOptions, ListOptions, Service};

/// How long an entry of `status.disruptedPods` keeps a pod counted as gone (kube's
/// `DeletionTimeout` of the disruption controller).
pub const DISRUPTED_POD_TIMEOUT: Duration = Duration::from_secs(120);

/// Most entries `status.disruptedPods` may hold before evictions are refused (kube's
/// `MaxDisruptedPodSize`): the disruption controller has fallen behind.
pub const MAX_DISRUPTED_PODS: usize = 2000;

/// How often a conflicting write (of the pod or of the budget) is retried (kube's
/// `EvictionsRetry` steps).
const CONFLICT_RETRIES: usize = 20;

/// The pause between retries of a conflicting write.
const CONFLICT_PAUSE: Duration = Duration::from_millis(50);

/// The message of a refused eviction.
pub const BUDGET_MESSAGE: &str =
    "Cannot evict pod as it would violate the pod's disruption budget.";

/// The cause type of a refused eviction (`policy/v1` `DisruptionBudgetCause`).
pub const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// The pod condition an evicted pod gets.
pub const DISRUPTION_TARGET: &str = "DisruptionTarget";

/// `429` because the budget allows no disruption now.
fn budget_exhausted(pdb: &Value) -> ApiError {
    let mut e = ApiError::too_many_requests(BUDGET_MESSAGE);
    e.details = Some(json!({"causes": [{
        "reason": DISRUPTION_BUDGET_CAUSE,
        "message": format!(
            "The disruption budget {} needs {} healthy pods and has {} currently",
            meta::name(pdb),
            pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
            pdb["status"]["currentHealthy"].as_i64().unwrap_or(0),
        ),
    }]}));
    e
}

/// `429` because the budget's status is not current (kube's `createTooManyRequestsError`).
fn budget_being_processed(name: &str) -> ApiError {
    let mut e = ApiError::too_many_requests(BUDGET_MESSAGE);
    e.details = Some(json!({
        "retryAfterSeconds": 10,
        "causes": [{
            "reason": DISRUPTION_BUDGET_CAUSE,
            "message": format!("The disruption budget {name} is still being processed by the server."),
        }],
    }));
    e
}

fn pdb_forbidden(name: &str, why: &str) -> ApiError {
    let mut e = ApiError::forbidden(format!(
        "poddisruptionbudget.policy \"{name}\" is forbidden: {why}"
    ));
    e.details = Some(json!({"name": name, "group": "policy", "kind": "poddisruptionbudget"}));
    e
}

/// The `Success` Status an eviction answers.
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// Reads the `deleteOptions` of an Eviction, with the request's `dryRun` (kube's
/// `propagateDryRun`: both may be given only if they agree).
fn delete_options(
    eviction: &Value,
    request_dry_run: bool,
    user: Option<std::sync::Arc<crate::auth::UserInfo>>,
) -> ApiResult<DeleteOptions> {
    let options = &eviction["deleteOptions"];
    let body_dry_run = match options["dryRun"].as_array() {
        None => None,
        Some(a) if a.is_empty() => None,
        Some(a) => {
            if a.iter().any(|v| v != "All") {
                return Err(ApiError::bad_request(format!(
                    "dryRun must be [\"All\"] (got {})",
                    options["dryRun"]
                )));
            }
            Some(true)
        }
    };
    if request_dry_run && body_dry_run == Some(false) {
        return Err(ApiError::bad_request(
            "Non-matching dry-run options in request and content",
        ));
    }
    let propagation = options["propagationPolicy"]
        .as_str()
        .map(str::to_string)
        .or_else(|| match options["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan".into()),
            _ => None,
        });
    Ok(DeleteOptions {
        grace_period_seconds: options["gracePeriodSeconds"].as_i64(),
        propagation_policy: propagation,
        precondition_uid: options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        precondition_resource_version: options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        dry_run: request_dry_run || body_dry_run.unwrap_or(false),
        user,
    })
}

/// Whether a pod's `Ready` condition is `True` (kube's `IsPodReady`).
pub fn pod_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

/// A pod whose eviction needs no budget (kube's `canIgnorePDB`).
fn can_ignore_budget(pod: &Value) -> bool {
    matches!(phase(pod), "Succeeded" | "Failed" | "Pending") || meta::is_deleting(pod)
}

/// A pod whose budget-free deletion still needs its resourceVersion pinned (kube's
/// `shouldEnforceResourceVersion`): one that might turn ready meanwhile.
fn should_enforce_resource_version(pod: &Value) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !meta::is_deleting(pod)
}

/// Evicts pod `name` of `namespace` as the `Eviction` body asks. Returns the `Success`
/// Status, or the error kube-apiserver answers.
pub async fn evict(
    service: &Service,
    namespace: &str,
    name: &str,
    eviction: &Value,
    request_dry_run: bool,
    user: Option<std::sync::Arc<crate::auth::UserInfo>>,
) -> ApiResult<Value> {
    match (
        eviction["apiVersion"].as_str().unwrap_or_default(),
        eviction["kind"].as_str().unwrap_or_default(),
    ) {
        ("policy/v1" | "policy/v1beta1" | "", "Eviction" | "") => {}
        (api_version, kind) => {
            return Err(ApiError::bad_request(format!(
                "not a Eviction object: {api_version}, Kind={kind}"
            )));
        }
    }
    if meta::name(eviction) != name {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let body_namespace = meta::namespace(eviction);
    if !body_namespace.is_empty() && body_namespace != namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let original = delete_options(eviction, request_dry_run, user)?;
    let pods = service
        .registry
        .get("", "v1", "pods")
        .ok_or_else(|| ApiError::internal("pods are not served"))?;
    let pdbs = service
        .registry
        .get("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| ApiError::internal("poddisruptionbudgets are not served"))?;

    // Pods whose eviction needs no budget go at once; retried on conflicts unless the
    // client pinned the pod's resourceVersion.
    let mut pod;
    let mut attempts = 0;
    loop {
        pod = service.get(&pods, Some(namespace), name)?;
        if !can_ignore_budget(&pod.value) {
            break;
        }
        let mut options = original.clone();
        if should_enforce_resource_version(&pod.value)
            && options.precondition_resource_version.is_none()
        {
            options.precondition_resource_version = Some(pod.rev.to_string());
        }
        match mark_and_delete(service, &pods, namespace, name, options).await {
            Err(e)
                if is_conflict(&e)
                    && original.precondition_resource_version.is_none()
                    && attempts < CONFLICT_RETRIES =>
            {
                attempts += 1;
                tokio::time::sleep(CONFLICT_PAUSE).await;
            }
            Err(e) => return Err(e),
            Ok(()) => return Ok(success()),
        }
    }

    let covering: Vec<Value> = service
        .list(&pdbs, Some(namespace), &ListOptions::default())?
        .items
        .iter()
        .filter(|pdb| budget_selects(pdb, &pod.value))
        .map(|pdb| (**pdb).clone())
        .collect();
    if covering.len() > 1 {
        return Err(ApiError {
            code: 500,
            reason: "",
            message: "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into(),
            details: None,
        });
    }
    let mut pin_pod_version = false;
    let mut budget_name = String::new();
    if let Some(pdb) = covering.into_iter().next() {
        budget_name = meta::name(&pdb).to_string();
        let status = &pdb["status"];
        let current = status["currentHealthy"].as_i64().unwrap_or(0);
        let desired = status["desiredHealthy"].as_i64().unwrap_or(0);
        let always_allow = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
        if !pod_ready(&pod.value) && (always_allow || (current >= desired && desired > 0)) {
            // An unhealthy pod does not count towards the budget: no decrement, but the
            // pod must still be unready when it is deleted.
            pin_pod_version = true;
        } else {
            take_disruption(
                service,
                &pdbs,
                namespace,
                &budget_name,
                name,
                original.dry_run,
            )
            .await?;
        }
    }

    let mut options = original.clone();
    if pin_pod_version {
        options.precondition_resource_version = Some(pod.rev.to_string());
    }
    match mark_and_delete(service, &pods, namespace, name, options).await {
        Err(e)
            if is_conflict(&e)
                && pin_pod_version
                && original.precondition_resource_version.is_none() =>
        {
            Err(budget_being_processed(&budget_name))
        }
        Err(e) => Err(e),
        Ok(()) => Ok(success()),
    }
}

/// Whether `pdb`'s selector chooses `pod` (a missing or empty selector chooses nothing,
/// as the eviction subresource reads it; an invalid one, nothing either).
fn budget_selects(pdb: &Value, pod: &Value) -> bool {
    match LabelSelector::from_object(&pdb["spec"]["selector"]) {
        Ok(selector) => !selector.is_empty() && selector.matches(pod),
        Err(_) => false,
    }
}

/// Verifies that budget `pdb_name` allows one more disruption and takes it (kube's
/// `checkAndDecrement`), retrying on conflicting writes of the budget.
async fn take_disruption(
    service: &Service,
    pdbs: &crate::registry::ResourceInfo,
    namespace: &str,
    pdb_name: &str,
    pod_name: &str,
    dry_run: bool,
) -> ApiResult<()> {
    for _ in 0..CONFLICT_RETRIES {
        let stored = service.get(pdbs, Some(namespace), pdb_name)?;
        let mut pdb = (*stored.value).clone();
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
        if observed < generation {
            return Err(budget_being_processed(pdb_name));
        }
        let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
        if allowed < 0 {
            return Err(pdb_forbidden(
                pdb_name,
                "pdb disruptions allowed is negative",
            ));
        }
        if pdb["status"]["disruptedPods"]
            .as_object()
            .is_some_and(|m| m.len() > MAX_DISRUPTED_PODS)
        {
            return Err(pdb_forbidden(
                pdb_name,
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ));
        }
        if allowed == 0 {
            return Err(budget_exhausted(&pdb));
        }
        let status = crate::strategy::object_field(&mut pdb, "status");
        status.insert("disruptionsAllowed".into(), json!(allowed - 1));
        if allowed - 1 == 0 {
            set_disruption_allowed_condition(&mut pdb);
        }
        if dry_run {
            return Ok(());
        }
        let disrupted = crate::strategy::object_field(&mut pdb, "status")
            .entry("disruptedPods")
            .or_insert_with(|| json!({}));
        if !disrupted.is_object() {
            *disrupted = json!({});
        }
        if let Some(map) = disrupted.as_object_mut() {
            map.insert(pod_name.to_string(), json!(meta::now_time()));
        }
        let key = Service::key(pdbs, Some(namespace), pdb_name);
        match service.store.update(key, pdb, Some(stored.rev)).await {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => {
                tokio::time::sleep(CONFLICT_PAUSE).await;
                continue;
            }
            Err(e) => return Err(ApiError::from_store(e, "policy", "poddisruptionbudgets")),
        }
    }
    let mut e = ApiError {
        code: 504,
        reason: "Timeout",
        message: format!("couldn't update PodDisruptionBudget {pdb_name:?} due to conflicts"),
        details: None,
    };
    e.details = Some(json!({"retryAfterSeconds": 10}));
    Err(e)
}

/// Sets the `DisruptionAllowed` condition from `status.disruptionsAllowed` (kube's
/// `UpdateDisruptionAllowedCondition`): `True`/`SufficientPods` above zero,
/// `False`/`InsufficientPods` otherwise; the transition time moves only with the status.
pub fn set_disruption_allowed_condition(pdb: &mut Value) {
    let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0) > 0;
    let observed = pdb["status"]["observedGeneration"].as_i64().unwrap_or(0);
    let (status, reason) = if allowed {
        ("True", "SufficientPods")
    } else {
        ("False", "InsufficientPods")
    };
    set_status_condition(pdb, "DisruptionAllowed", status, reason, "", observed);
}

/// Sets a `metav1.Condition` in `status.conditions` (apimachinery's `SetStatusCondition`).
pub fn set_status_condition(
    object: &mut Value,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    observed_generation: i64,
) {
    let conditions = crate::strategy::object_field(object, "status")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array");
    let mut condition = json!({
        "type": type_,
        "status": status,
        "observedGeneration": observed_generation,
        "lastTransitionTime": meta::now_time(),
        "reason": reason,
        "message": message,
    });
    match list.iter_mut().find(|c| c["type"] == type_) {
        Some(existing) => {
            if existing["status"] == status {
                condition["lastTransitionTime"] = existing["lastTransitionTime"].clone();
            }
            *existing = condition;
        }
        None => list.push(condition),
    }
}

/// Gives the pod the `DisruptionTarget` condition and deletes it with `options` (kube's
/// `addConditionAndDeletePod`). The condition is written over the latest pod after checking
/// the preconditions, and a pinned resourceVersion follows that write.
async fn mark_and_delete(
    service: &Service,
    pods: &crate::registry::ResourceInfo,
    namespace: &str,
    name: &str,
    mut options: DeleteOptions,
) -> ApiResult<()> {
    if !options.dry_run {
        let mut written = None;
        for _ in 0..CONFLICT_RETRIES {
            let latest = service.get(pods, Some(namespace), name)?;
            if let Some(uid) = &options.precondition_uid
                && uid != meta::uid(&latest.value)
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&latest.value)
                    ),
                ));
            }
            if let Some(rv) = &options.precondition_resource_version
                && *rv != latest.rev.to_string()
            {
                return Err(ApiError::conflict(
                    "",
                    "pods",
                    name,
                    format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        latest.rev
                    ),
                ));
            }
            let mut pod = (*latest.value).clone();
            set_disruption_target(&mut pod);
            if pod == *latest.value {
                written = Some(latest.rev);
                break;
            }
            let key = Service::key(pods, Some(namespace), name);
            match service.store.update(key, pod, Some(latest.rev)).await {
                Ok(stored) => {
                    written = Some(stored.rev);
                    break;
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, "", "pods")),
            }
        }
        let Some(rev) = written else {
            return Err(ApiError::conflict(
                "",
                "pods",
                name,
                "too many concurrent writes; try again",
            ));
        };
        if options.precondition_resource_version.is_some() {
            options.precondition_resource_version = Some(rev.to_string());
        }
    }
    service
        .delete(pods, Some(namespace), name, &options)
        .await
        .map(|_| ())
}

/// Sets the pod condition `DisruptionTarget=True` (reason `EvictionByEvictionAPI`), keeping
/// the transition time if it was already set.
fn set_disruption_target(pod: &mut Value) {
    let conditions = crate::strategy::object_field(pod, "status")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let list = conditions.as_array_mut().expect("made an array");
    let wanted = json!({
        "type": DISRUPTION_TARGET,
        "status": "True",
        "reason": "EvictionByEvictionAPI",
        "message": "Eviction API: evicting",
    });
    match list.iter_mut().find(|c| c["type"] == DISRUPTION_TARGET) {
        Some(existing) => {
            let same = existing["status"] == wanted["status"];
            let since = existing["lastTransitionTime"].clone();
            let mut c = wanted;
            c["lastTransitionTime"] = if same { since } else { json!(meta::now_time()) };
            c["lastProbeTime"] = Value::Null;
            *existing = c;
        }
        None => {
            let mut c = wanted;
            c["lastProbeTime"] = Value::Null;
            c["lastTransitionTime"] = json!(meta::now_time());
            list.push(c);
        }
    }
}

/// Whether the disruption recorded at `since` (an RFC 3339 time) still counts at `now`.
pub fn disruption_pending(since: &str, now: Timestamp) -> bool {
    let Some(at) = meta::parse_time(since) else {
        return false;
    };
    let timeout = SignedDuration::try_from(DISRUPTED_POD_TIMEOUT).unwrap_or_default();
    at.checked_add(timeout).is_ok_and(|deadline| deadline > now)
}

fn is_conflict(e: &ApiError) -> bool {
    e.code == 409 && e.reason == "Conflict"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_running_pods_need_a_budget() {
        for (phase, deleting, ignore) in [
            ("Running", false, false),
            ("Pending", false, true),
            ("Succeeded", false, true),
            ("Failed", false, true),
            ("Running", true, true),
        ] {
            let mut pod = json!({"metadata": {"name": "p"}, "status": {"phase": phase}});
            if deleting {
                pod["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
            assert_eq!(can_ignore_budget(&pod), ignore, "{phase} {deleting}");
        }
        assert!(should_enforce_resource_version(
            &json!({"status": {"phase": "Pending"}})
        ));
        assert!(!should_enforce_resource_version(
            &json!({"status": {"phase": "Failed"}})
        ));
    }

    #[test]
    fn a_budget_with_an_empty_selector_covers_nothing() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        assert!(budget_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "web"}}}}),
            &pod
        ));
        assert!(!budget_selects(
            &json!({"spec": {"selector": {"matchLabels": {"app": "db"}}}}),
            &pod
        ));
        assert!(!budget_selects(&json!({"spec": {"selector": {}}}), &pod));
        assert!(!budget_selects(&json!({"spec": {}}), &pod));
    }

    #[tokio::test]
    async fn the_body_must_be_an_eviction_of_the_named_pod() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        let wrong_kind = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
        let e = evict(&service, "default", "p", &wrong_kind, false, None)
            .await
            .unwrap_err();
        assert_eq!(e.code, 400);
        let other =
            json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": "q"}});
        let e = evict(&service, "default", "p", &other, false, None)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "name in URL does not match name in Eviction object")
        );
        let missing =
            json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "p"}});
        let e = evict(&service, "default", "p", &missing, false, None)
            .await
            .unwrap_err();
        assert_eq!(e.code, 404);
    }

    #[test]
    fn dry_run_comes_from_the_request_or_the_body() {
        let plain = json!({"metadata": {"name": "p"}});
        assert!(!delete_options(&plain, false, None).unwrap().dry_run);
        assert!(delete_options(&plain, true, None).unwrap().dry_run);
        let body = json!({"metadata": {"name": "p"}, "deleteOptions": {"dryRun": ["All"], "gracePeriodSeconds": 3, "preconditions": {"uid": "u"}}});
        let options = delete_options(&body, false, None).unwrap();
        assert!(options.dry_run);
        assert_eq!(options.grace_period_seconds, Some(3));
        assert_eq!(options.precondition_uid.as_deref(), Some("u"));
    }

    #[test]
    fn the_refusal_names_the_budget_and_its_counts() {
        let pdb = json!({"metadata": {"name": "web"}, "status": {"desiredHealthy": 2, "currentHealthy": 2}});
        let e = budget_exhausted(&pdb);
        assert_eq!(e.code, 429);
        assert_eq!(e.reason, "TooManyRequests");
        assert_eq!(e.message, BUDGET_MESSAGE);
        let cause = &e.details.unwrap()["causes"][0];
        assert_eq!(cause["reason"], "DisruptionBudget");
        assert_eq!(
            cause["message"],
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
    }

    #[test]
    fn the_condition_follows_the_allowed_disruptions() {
        let mut pdb = json!({"status": {"disruptionsAllowed": 1, "observedGeneration": 3}});
        set_disruption_allowed_condition(&mut pdb);
        let c = &pdb["status"]["conditions"][0];
        assert_eq!(
            (
                c["type"].as_str(),
                c["status"].as_str(),
                c["reason"].as_str()
            ),
            (
                Some("DisruptionAllowed"),
                Some("True"),
                Some("SufficientPods")
            )
        );
        assert_eq!(c["observedGeneration"], 3);
        pdb["status"]["disruptionsAllowed"] = json!(0);
        set_disruption_allowed_condition(&mut pdb);
        assert_eq!(pdb["status"]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(pdb["status"]["conditions"][0]["reason"], "InsufficientPods");
    }

    #[test]
    fn recorded_disruptions_expire_after_two_minutes() {
        let now = Timestamp::now();
        let recent = meta::time_string(now - SignedDuration::from_secs(60));
        let old = meta::time_string(now - SignedDuration::from_secs(180));
        assert!(disruption_pending(&recent, now));
        assert!(!disruption_pending(&old, now));
        assert!(!disruption_pending("not a time", now));
    }
}

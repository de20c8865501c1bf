//! The StatefulSet controller, as kube-controller-manager's: pods with stable ordinal names,
//! claims from `volumeClaimTemplates`, ordered or parallel management, rolling updates with a
//! partition, revisions as ControllerRevisions.
//!
//! Each reconcile lists the set's pods and claims from the API server (not a cache), so a
//! restarted controller picks up where the last one stopped; pod and claim names are fixed by
//! the ordinal, so a create that raced another one answers 409 and changes nothing.
//!
//! - Pod `<set>-<i>` for every ordinal `i` in `[start, start + replicas)`, with
//!   `spec.hostname` = its name and `spec.subdomain` = `serviceName` (its DNS name through the
//!   headless Service), and the labels `statefulset.kubernetes.io/pod-name`,
//!   `apps.kubernetes.io/pod-index` and `controller-revision-hash` (the revision's name).
//! - Claims `<template>-<set>-<i>` are created before the pod and kept when it goes, so its
//!   replacement mounts the same claim. `persistentVolumeClaimRetentionPolicy`: `whenDeleted:
//!   Delete` makes the set an owner of its claims, `whenScaled: Delete` makes a condemned pod
//!   the owner of its claims (the garbage collector deletes them after their owner).
//! - `OrderedReady`: pods are created one at a time in ordinal order, each Running and
//!   available (Ready for `minReadySeconds`) before the next, and removed from the highest ordinal down, one at a time; `Parallel`
//!   creates and deletes them all at once.
//! - `RollingUpdate`: pods at ordinals `>= partition` not on the update revision are deleted
//!   (and recreated from it) from the highest ordinal down, each replacement available before
//!   the next; `OnDelete`: pods take the new template only when someone deletes them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::Error;
use crate::history::{self, CONTROLLER_REVISION_HASH_LABEL};

/// The label naming a StatefulSet pod.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a StatefulSet pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let sets: Api<StatefulSet> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(sets, watcher::Config::default())
        .owns(pods, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "statefulset controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(set: Arc<StatefulSet>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(statefulset = %set.name_any(), %error, "cannot sync the StatefulSet");
    Action::requeue(Duration::from_secs(2))
}

/// `k=v,...` of a selector's `matchLabels` and `matchExpressions` (In, NotIn, Exists,
/// DoesNotExist), as the list API takes it.
pub(crate) fn selector_string(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

/// True when `pod`'s controller is the object with `uid`.
pub(crate) fn controlled_by(pod: &Pod, uid: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

/// Running with its Ready condition True.
pub(crate) fn running_and_ready(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && ready(pod)
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
}

/// Its Ready condition is True.
pub(crate) fn ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready_seconds` (`podutil.IsPodAvailable`); `None`: not yet, with
/// how long until it is when it is ready.
pub(crate) fn available(pod: &Pod, min_ready_seconds: i32) -> Result<(), Option<Duration>> {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return Err(None);
    };
    if min_ready_seconds <= 0 {
        return Ok(());
    }
    let Some(since) = c.last_transition_time.as_ref() else {
        return Ok(());
    };
    let ready_for = k8s_openapi::jiff::Timestamp::now().duration_since(since.0);
    let needed = k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready_seconds));
    if ready_for >= needed {
        Ok(())
    } else {
        Err(Some(
            Duration::try_from(needed - ready_for).unwrap_or(Duration::from_secs(1)),
        ))
    }
}

/// Running and available (`isRunningAndAvailable`): ordered management waits for it.
fn running_and_available(pod: &Pod, min_ready_seconds: i32) -> bool {
    running_and_ready(pod) && available(pod, min_ready_seconds).is_ok()
}

/// Failed or Succeeded: it will not run again.
pub(crate) fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Failed") | Some("Succeeded")
    )
}

/// Deletes `name` if it still has `uid` (a pod recreated meanwhile is left alone).
pub(crate) async fn delete_pod(
    api: &Api<Pod>,
    name: &str,
    uid: Option<String>,
) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The ordinal of `pod` when it is named `<set>-<ordinal>`.
fn ordinal_of(set: &str, pod: &Pod) -> Option<i32> {
    let name = pod.metadata.name.as_deref()?;
    let suffix = name.strip_prefix(set)?.strip_prefix('-')?;
    if suffix.starts_with('+') || (suffix.len() > 1 && suffix.starts_with('0')) {
        return None;
    }
    suffix.parse::<i32>().ok().filter(|o| *o >= 0)
}

/// The claim of `template` for the pod at `ordinal`: `<template>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

/// The revision's name a pod carries.
fn revision_of(pod: &Pod) -> Option<&str> {
    pod.labels()
        .get(CONTROLLER_REVISION_HASH_LABEL)
        .map(String::as_str)
}

/// The settings of one set, read with kube's defaults.
struct Settings {
    name: String,
    namespace: String,
    replicas: i32,
    start: i32,
    parallel: bool,
    on_delete: bool,
    partition: i32,
    min_ready_seconds: i32,
    delete_when_deleted: bool,
    delete_when_scaled: bool,
}

impl Settings {
    fn of(set: &StatefulSet) -> Self {
        let spec = Some(&set.spec);
        let strategy = spec.and_then(|s| s.update_strategy.as_ref());
        let policy = spec.and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
        Self {
            name: set.name_any(),
            namespace: set.namespace().unwrap_or_default(),
            replicas: spec.and_then(|s| s.replicas).unwrap_or(1).max(0),
            start: spec
                .and_then(|s| s.ordinals.as_ref())
                .and_then(|o| o.start)
                .unwrap_or(0)
                .max(0),
            parallel: spec.and_then(|s| s.pod_management_policy.as_deref()) == Some("Parallel"),
            on_delete: strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete"),
            partition: strategy
                .and_then(|s| s.rolling_update.as_ref())
                .and_then(|r| r.partition)
                .unwrap_or(0),
            min_ready_seconds: spec.and_then(|s| s.min_ready_seconds).unwrap_or(0),
            delete_when_deleted: policy.and_then(|p| p.when_deleted.as_deref()) == Some("Delete"),
            delete_when_scaled: policy.and_then(|p| p.when_scaled.as_deref()) == Some("Delete"),
        }
    }

    fn wanted(&self, ordinal: i32) -> bool {
        ordinal >= self.start && ordinal < self.start.saturating_add(self.replicas)
    }
}

/// A non-controller owner reference to `owner` (claims kept by the retention policy).
fn plain_reference(owner: &OwnerReference) -> OwnerReference {
    OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..owner.clone()
    }
}

async fn reconcile(set: Arc<StatefulSet>, client: Arc<kube::Client>) -> Result<Action, Error> {
    if set.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let spec = &set.spec;
    let s = Settings::of(&set);
    let uid = set.uid().unwrap_or_default();
    let selector = selector_string(&spec.selector);
    let Some(reference) = set.controller_owner_ref(&()) else {
        return Ok(Action::await_change());
    };
    let pods_api: Api<Pod> = Api::namespaced((*client).clone(), &s.namespace);
    let mut pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| controlled_by(p, &uid))
        .collect();
    pods.sort_by_key(|p| ordinal_of(&s.name, p).unwrap_or(i32::MAX));

    // Revisions: the update revision is the template now, the current one what the
    // status last recorded (the update revision once a rollout completed).
    let template = serde_json::to_value(&spec.template).unwrap_or_default();
    let owner = history::Owner {
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        uid: uid.clone(),
        reference: reference.clone(),
        labels: spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default(),
        selector: selector.clone(),
        template,
        collision_count: set.status.as_ref().and_then(|st| st.collision_count),
        history_limit: spec.revision_history_limit.unwrap_or(10).max(0) as usize,
    };
    let revisions = history::sync(&client, &owner).await?;
    let update_name = revisions.update.metadata.name.clone().unwrap_or_default();
    let current = set
        .status
        .as_ref()
        .and_then(|st| st.current_revision.as_ref())
        .and_then(|n| {
            revisions
                .all
                .iter()
                .find(|r| r.metadata.name.as_deref() == Some(n.as_str()))
        })
        .unwrap_or(&revisions.update)
        .clone();
    let current_name = current.metadata.name.clone().unwrap_or_default();
    let update_template = history::template_of(&revisions.update).unwrap_or_default();
    let current_template = history::template_of(&current).unwrap_or_default();

    let mut requeue: Option<Duration> = None;
    let outcome = sync_pods(
        &client,
        &set,
        &s,
        &reference,
        &pods,
        (&current_name, &current_template),
        (&update_name, &update_template),
    )
    .await;

    // Status from the pods as they are now.
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items
        .into_iter()
        .filter(|p| controlled_by(p, &uid))
        .collect();
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        collision_count: revisions.collision_count,
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        ..Default::default()
    };
    let (mut replicas, mut ready_count, mut available_count) = (0, 0, 0);
    let (mut current_count, mut updated_count) = (0, 0);
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        replicas += 1;
        if running_and_ready(p) {
            ready_count += 1;
            match available(p, s.min_ready_seconds) {
                Ok(()) => available_count += 1,
                Err(wait) => requeue = requeue.min(wait).or(wait),
            }
        }
        match revision_of(p) {
            Some(r) if r == current_name => current_count += 1,
            _ => {}
        }
        if revision_of(p) == Some(update_name.as_str()) {
            updated_count += 1;
        }
    }
    status.replicas = replicas;
    status.ready_replicas = Some(ready_count);
    status.available_replicas = Some(available_count);
    status.current_replicas = Some(current_count);
    status.updated_replicas = Some(updated_count);
    // A completed rolling update: the update revision becomes the current one.
    if !s.on_delete
        && updated_count == s.replicas
        && ready_count == s.replicas
        && replicas == s.replicas
    {
        status.current_revision = Some(update_name.clone());
        status.current_replicas = Some(updated_count);
    }
    let live: Vec<String> = pods
        .iter()
        .filter_map(|p| revision_of(p).map(str::to_string))
        .chain([
            status.current_revision.clone().unwrap_or_default(),
            update_name.clone(),
        ])
        .collect();
    history::truncate(&client, &owner, &revisions.all, &live).await?;

    if set.status.as_ref() != Some(&status) {
        let sets: Api<StatefulSet> = Api::namespaced((*client).clone(), &s.namespace);
        match sets
            .patch_status(
                &s.name,
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
    outcome?;
    Ok(Action::requeue(requeue.unwrap_or(Duration::from_secs(300))))
}

/// The pod at `ordinal` made from `template` of revision `revision`, as `newStatefulSetPod`.
fn new_pod(
    set: &StatefulSet,
    s: &Settings,
    reference: &OwnerReference,
    ordinal: i32,
    (revision, template): (&str, &Value),
) -> Result<Pod, Error> {
    let name = format!("{}-{ordinal}", s.name);
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    });
    let meta = pod["metadata"].as_object_mut().expect("an object");
    for drop in [
        "name",
        "generateName",
        "resourceVersion",
        "uid",
        "creationTimestamp",
    ] {
        meta.remove(drop);
    }
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(s.namespace));
    meta.insert(
        "ownerReferences".into(),
        serde_json::to_value(vec![reference]).unwrap_or_default(),
    );
    let labels = meta
        .entry("labels")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("labels are a map");
    labels.insert(POD_NAME_LABEL.into(), json!(name));
    labels.insert(POD_INDEX_LABEL.into(), json!(ordinal.to_string()));
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), json!(revision));
    let spec = pod["spec"].as_object_mut().expect("a pod spec");
    spec.insert("hostname".into(), json!(name));
    let service = set.spec.service_name.clone().unwrap_or_default();
    if !service.is_empty() {
        spec.insert("subdomain".into(), json!(service));
    }
    // A claim volume per template, replacing a template volume of the same name.
    let claims: Vec<String> = set
        .spec
        .volume_claim_templates
        .iter()
        .flatten()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    if !claims.is_empty() {
        let volumes = spec
            .entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("volumes are a list");
        volumes.retain(|v| {
            v["name"]
                .as_str()
                .is_none_or(|n| !claims.iter().any(|c| c == n))
        });
        for c in &claims {
            volumes.push(json!({
                "name": c,
                "persistentVolumeClaim": {"claimName": claim_name(c, &s.name, ordinal)},
            }));
        }
    }
    Ok(serde_json::from_value(pod).map_err(|e| {
        kube::Error::Api(
            kube::core::Status::failure(&format!("cannot build a pod: {e}"), "Invalid")
                .with_code(422)
                .boxed(),
        )
    })?)
}

/// Creates the missing claims of the pod at `ordinal`, and keeps their owner references as
/// the retention policy says.
async fn sync_claims(
    client: &kube::Client,
    set: &StatefulSet,
    s: &Settings,
    reference: &OwnerReference,
    ordinal: i32,
    pod: Option<&Pod>,
) -> Result<(), Error> {
    let templates = set.spec.volume_claim_templates.clone().unwrap_or_default();
    if templates.is_empty() {
        return Ok(());
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &s.namespace);
    let set_ref = plain_reference(reference);
    let pod_ref = pod
        .and_then(|p| p.controller_owner_ref(&()))
        .map(|r| plain_reference(&r));
    let condemned = !s.wanted(ordinal);
    for t in templates {
        let Some(tname) = t.metadata.name.clone() else {
            continue;
        };
        let name = claim_name(&tname, &s.name, ordinal);
        // The owners the retention policy wants.
        let mut owners: Vec<OwnerReference> = Vec::new();
        if s.delete_when_deleted {
            owners.push(set_ref.clone());
        }
        if s.delete_when_scaled
            && condemned
            && let Some(r) = &pod_ref
        {
            owners.push(r.clone());
        }
        match api.get_opt(&name).await? {
            Some(existing) => {
                let mut refs: Vec<OwnerReference> = existing
                    .metadata
                    .owner_references
                    .clone()
                    .unwrap_or_default();
                let before = refs.clone();
                // Our references not wanted any more go; wanted ones are added.
                refs.retain(|r| {
                    let ours = r.uid == set_ref.uid
                        || (r.kind == "Pod" && r.name.starts_with(&format!("{}-", s.name)));
                    !ours || owners.iter().any(|o| o.uid == r.uid)
                });
                for o in &owners {
                    if !refs.iter().any(|r| r.uid == o.uid) {
                        refs.push(o.clone());
                    }
                }
                if refs != before && existing.metadata.deletion_timestamp.is_none() {
                    let patch = json!({"metadata": {
                        "ownerReferences": refs,
                        "resourceVersion": existing.metadata.resource_version,
                    }});
                    match api
                        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            None if condemned => {}
            None => {
                let mut claim = PersistentVolumeClaim {
                    metadata: t.metadata.clone(),
                    spec: t.spec.clone(),
                    status: None,
                };
                claim.metadata.name = Some(name.clone());
                claim.metadata.namespace = Some(s.namespace.clone());
                claim.metadata.resource_version = None;
                claim.metadata.uid = None;
                let labels = claim.metadata.labels.get_or_insert_with(BTreeMap::new);
                for (k, v) in set.spec.selector.match_labels.clone().unwrap_or_default() {
                    labels.insert(k, v);
                }
                claim.metadata.owner_references = (!owners.is_empty()).then_some(owners);
                match api.create(&PostParams::default(), &claim).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}

/// Creates, deletes and replaces pods one step as `updateStatefulSet` does.
async fn sync_pods(
    client: &kube::Client,
    set: &StatefulSet,
    s: &Settings,
    reference: &OwnerReference,
    pods: &[Pod],
    current: (&str, &Value),
    update: (&str, &Value),
) -> Result<(), Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &s.namespace);
    let monotonic = !s.parallel;
    let by_ordinal: BTreeMap<i32, &Pod> = pods
        .iter()
        .filter_map(|p| ordinal_of(&s.name, p).map(|o| (o, p)))
        .collect();
    let condemned: Vec<&Pod> = by_ordinal
        .iter()
        .filter(|(o, _)| !s.wanted(**o))
        .map(|(_, p)| *p)
        .rev()
        .collect();
    // Replicas, lowest ordinal first.
    let end = s.start.saturating_add(s.replicas);
    for ordinal in s.start..end {
        match by_ordinal.get(&ordinal) {
            None => {
                // OnDelete and ordinals below the partition keep the current revision.
                let from = if !s.on_delete && ordinal < s.start.saturating_add(s.partition) {
                    current
                } else {
                    update
                };
                sync_claims(client, set, s, reference, ordinal, None).await?;
                let pod = new_pod(set, s, reference, ordinal, from)?;
                match api.create(&PostParams::default(), &pod).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
                if monotonic {
                    return Ok(());
                }
            }
            Some(pod) => {
                if pod.metadata.deletion_timestamp.is_some() {
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
                if finished(pod) {
                    // Replaced by a fresh pod on the next pass.
                    delete_pod(&api, &pod.name_any(), pod.uid()).await?;
                    if monotonic {
                        return Ok(());
                    }
                    continue;
                }
                sync_claims(client, set, s, reference, ordinal, Some(pod)).await?;
                if monotonic && !running_and_available(pod, s.min_ready_seconds) {
                    return Ok(());
                }
            }
        }
    }
    // Condemned pods, highest ordinal first; ordered management removes one at a time.
    for pod in &condemned {
        let ordinal = ordinal_of(&s.name, pod).unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if monotonic {
                return Ok(());
            }
            continue;
        }
        sync_claims(client, set, s, reference, ordinal, Some(pod)).await?;
        delete_pod(&api, &pod.name_any(), pod.uid()).await?;
        if monotonic {
            return Ok(());
        }
    }
    if s.on_delete {
        return Ok(());
    }
    // Rolling update: the highest ordinal at or above the partition first, one at a time,
    // each replacement Running and Ready before the next.
    let floor = s.start.saturating_add(s.partition);
    for ordinal in (floor..end).rev() {
        let Some(pod) = by_ordinal.get(&ordinal) else {
            return Ok(());
        };
        if revision_of(pod) != Some(update.0) {
            if pod.metadata.deletion_timestamp.is_none() {
                delete_pod(&api, &pod.name_any(), pod.uid()).await?;
            }
            return Ok(());
        }
        if !running_and_available(pod, s.min_ready_seconds) {
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn ordinals_come_from_pod_names() {
        assert_eq!(ordinal_of("web", &pod("web-0")), Some(0));
        assert_eq!(ordinal_of("web", &pod("web-12")), Some(12));
        assert_eq!(ordinal_of("web", &pod("web-01")), None);
        assert_eq!(ordinal_of("web", &pod("web-x")), None);
        assert_eq!(ordinal_of("web", &pod("webs-1")), None);
        assert_eq!(ordinal_of("web", &pod("web-1-2")), None);
        assert_eq!(claim_name("www", "web", 2), "www-web-2");
    }

    #[test]
    fn pods_get_stable_identity_claims_and_labels() {
        let set: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "nginx"}},
                "template": {
                    "metadata": {"labels": {"app": "nginx"}},
                    "spec": {"containers": [{"name": "nginx", "image": "nginx"}]}
                },
                "volumeClaimTemplates": [{"metadata": {"name": "www"}, "spec": {}}]
            }
        }))
        .unwrap();
        let s = Settings::of(&set);
        let reference = set.controller_owner_ref(&()).unwrap();
        let template = serde_json::to_value(&set.spec.template).unwrap();
        let p = new_pod(&set, &s, &reference, 1, ("web-abc", &template)).unwrap();
        assert_eq!(p.name_any(), "web-1");
        let spec = p.spec.unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("web-1"));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        let volumes = spec.volumes.unwrap();
        assert_eq!(
            volumes[0]
                .persistent_volume_claim
                .as_ref()
                .unwrap()
                .claim_name,
            "www-web-1"
        );
        let labels = p.metadata.labels.unwrap();
        assert_eq!(labels[POD_NAME_LABEL], "web-1");
        assert_eq!(labels[POD_INDEX_LABEL], "1");
        assert_eq!(labels[CONTROLLER_REVISION_HASH_LABEL], "web-abc");
        assert_eq!(labels["app"], "nginx");
        assert_eq!(
            p.metadata.owner_references.unwrap()[0].controller,
            Some(true)
        );
    }

    #[test]
    fn selectors_become_list_selectors() {
        let sel: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
            serde_json::from_value(json!({
                "matchLabels": {"app": "a"},
                "matchExpressions": [
                    {"key": "tier", "operator": "In", "values": ["x", "y"]},
                    {"key": "gone", "operator": "DoesNotExist"}
                ]
            }))
            .unwrap();
        assert_eq!(selector_string(&sel), "app=a,tier in (x,y),!gone");
    }
}

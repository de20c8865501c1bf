//! The Deployment controller, as kube-controller-manager's: rolls a Deployment's ReplicaSets
//! (RollingUpdate with maxSurge and maxUnavailable, Recreate), keeps revision history, and
//! reports status from the ReplicaSets and pods it observes.
//!
//! Each reconcile reads the Deployment and re-lists its namespace's ReplicaSets from the API
//! server, claims them (adoption and release by selector, as `ClaimReplicaSets`), then takes
//! one step of kube-controller-manager's `syncDeployment`: pause and resume conditions,
//! proportional scaling on a scaling event, or a rollout step. The new ReplicaSet is named
//! `<deployment>-<pod-template-hash>` from a hash of the template and `collisionCount`, so a
//! step repeated after a crash finds what the first attempt created instead of making
//! another. Every number comes from stored objects: a `kill -9` of `ferry up` mid-rollout
//! resumes where the stored state is.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;

use crate::Error;
use crate::replicaset::{controller_of, controller_ref, selector_of};

/// The label that tells the ReplicaSets (and pods) of one Deployment's templates apart.
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The revision of a ReplicaSet (and of its Deployment).
pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
/// The Deployment's replicas plus maxSurge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";

/// Reasons of the `Progressing` and `Available` conditions (as kube's `deploymentutil`).
pub mod reason {
    /// The new ReplicaSet is available: the rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// The rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// A new ReplicaSet was created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The Deployment is paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// The Deployment was resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// At least `replicas - maxUnavailable` pods are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Fewer than `replicas - maxUnavailable` pods are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// The new ReplicaSet cannot be created.
    pub const FAILED_RS_CREATE: &str = "ReplicaSetCreateError";
}

/// Annotations of a Deployment that its ReplicaSets do not inherit.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    DESIRED_REPLICAS_ANNOTATION,
    MAX_REPLICAS_ANNOTATION,
    "deprecated.deployment.rollback.to",
];

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let sets: Api<ReplicaSet> = Api::all(client.clone());
    let controller = Controller::new(deployments, watcher::Config::default());
    let store = controller.store();
    controller
        .watches(sets, watcher::Config::default(), move |rs: ReplicaSet| {
            deployments_to_wake(&store, &rs)
        })
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "deployment controller");
            }
            futures::future::ready(())
        })
        .await;
}

/// The Deployments a ReplicaSet change concerns: its controller, or (an orphan) every
/// Deployment of its namespace whose selector matches it.
fn deployments_to_wake(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace();
    if let Some(owner) = controller_of(&rs.metadata) {
        if owner.kind == "Deployment" && owner.api_version.starts_with("apps/") {
            let mut r = ObjectRef::new(&owner.name);
            if let Some(ns) = &ns {
                r = r.within(ns);
            }
            return vec![r];
        }
        return Vec::new();
    }
    store
        .state()
        .into_iter()
        .filter(|d| d.namespace() == ns)
        .filter(|d| selector_of(Some(&d.spec.selector)).is_some_and(|s| s.matches(rs.labels())))
        .map(|d| ObjectRef::from_obj(&*d))
        .collect()
}

fn error_policy(d: Arc<Deployment>, error: &Error, _: Arc<kube::Client>) -> Action {
    tracing::warn!(deployment = %d.name_any(), %error, "cannot sync the Deployment");
    Action::requeue(Duration::from_secs(2))
}

/// Resolves an int-or-percent against `total` (kube's `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let Some(p) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let product = p * i64::from(total);
            let v = if round_up {
                (product + 99).div_euclid(100)
            } else {
                product.div_euclid(100)
            };
            i32::try_from(v).unwrap_or(i32::MAX)
        }
    }
}

fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .strategy
        .as_ref()
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

/// maxSurge and maxUnavailable resolved against the replicas (kube's `ResolveFenceposts`):
/// surge rounds up, unavailable down, and both zero makes unavailable one.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let rolling = d
        .spec
        .strategy
        .as_ref()
        .and_then(|s| s.rolling_update.as_ref());
    let desired = replicas_of(d);
    let default = IntOrString::String("25%".into());
    let surge_v = rolling
        .and_then(|r| r.max_surge.as_ref())
        .unwrap_or(&default);
    let unav_v = rolling
        .and_then(|r| r.max_unavailable.as_ref())
        .unwrap_or(&default);
    let surge = scaled_value(Some(surge_v), desired, true);
    let mut unavailable = scaled_value(Some(unav_v), desired, false);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// The most pods above the replicas during a rolling update.
pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d).0
}

/// The most unavailable pods during a rolling update, at most the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = replicas_of(d);
    if !is_rolling(d) || replicas == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas)
}

/// The template without the `pod-template-hash` label.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(m) = t.metadata.as_mut() {
        if let Some(l) = m.labels.as_mut() {
            l.remove(POD_TEMPLATE_HASH_LABEL);
            if l.is_empty() {
                m.labels = None;
            }
        }
        if *m == ObjectMeta::default() {
            t.metadata = None;
        }
    }
    t
}

/// Whether two templates are equal but for `pod-template-hash` (kube's `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// kube's `rand.SafeEncodeString`: no vowels or look-alike characters.
fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template (kube's `ComputeHash`: FNV-1a over the template,
/// then the collision count, printed in decimal and safe-encoded).
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u32::from(*b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(&without_hash(t)).unwrap_or_default());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    safe_encode(&hash.to_string())
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (
        s.replicas,
        s.ready_replicas.unwrap_or(0),
        s.available_replicas.unwrap_or(0),
    )
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.annotations().get(key).and_then(|v| v.parse().ok())
}

fn condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions
        .iter()
        .flatten()
        .find(|c| c.type_.as_deref() == Some(type_))
}

fn new_condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let now = Some(Time(Timestamp::now()));
    DeploymentCondition {
        type_: Some(type_.into()),
        status: Some(status.into()),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: now.clone(),
        last_transition_time: now,
    }
}

/// kube's `SetDeploymentCondition`: nothing changes for the same status and reason; the
/// transition time stays while the status does.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(s, c.type_.as_deref().unwrap_or_default()) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    remove_condition(s, c.type_.as_deref().unwrap_or_default());
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_.as_deref() != Some(type_));
        if cs.is_empty() {
            s.conditions = None;
        }
    }
}

fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec
        .progress_deadline_seconds
        .is_some_and(|s| s != i32::MAX)
}

/// One reconcile's view: the Deployment (its status being rewritten) and its ReplicaSets.
struct Sync {
    client: kube::Client,
    ns: String,
    d: Deployment,
    /// The status as stored when the reconcile began.
    stored_status: DeploymentStatus,
    /// The status being built.
    status: DeploymentStatus,
    sets: Vec<ReplicaSet>,
    /// When to look again (the soonest of what the steps asked for).
    requeue: Option<Duration>,
}

impl Sync {
    fn rs_api(&self) -> Api<ReplicaSet> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn wake_in(&mut self, after: Duration) {
        self.requeue = Some(self.requeue.map_or(after, |r| r.min(after)));
    }
}

async fn reconcile(d: Arc<Deployment>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let client = (*client).clone();
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let Some(d) = deployments.get_opt(&name).await? else {
        return Ok(Action::await_change());
    };
    let stored_status = d.status.clone().unwrap_or_default();
    let mut sync = Sync {
        client: client.clone(),
        ns: ns.clone(),
        status: stored_status.clone(),
        stored_status,
        sets: Vec::new(),
        d,
        requeue: None,
    };
    let Some(selector) = selector_of(Some(&sync.d.spec.selector)) else {
        // An empty selector selects nothing: only the generation is observed.
        sync.status.observed_generation = sync.d.metadata.generation;
        write_status(&sync).await?;
        return Ok(Action::await_change());
    };
    sync.sets = claim(&sync, &selector).await?;
    let result = step(&mut sync).await;
    if let Err(e) = &result {
        tracing::debug!(deployment = %name, error = %e, "deployment step failed");
    }
    write_status(&sync).await?;
    result?;
    Ok(Action::requeue(
        sync.requeue.unwrap_or(Duration::from_secs(300)),
    ))
}

/// kube's `syncDeployment` after the claim.
async fn step(s: &mut Sync) -> Result<(), Error> {
    if s.d.metadata.deletion_timestamp.is_some() {
        let (new_rs, old) = split(s);
        rollout_status_only(s, new_rs.as_ref(), &old);
        return Ok(());
    }
    check_paused_conditions(s);
    if s.d.spec.paused == Some(true) {
        return sync_scale(s).await;
    }
    if is_scaling_event(s).await? {
        return sync_scale(s).await;
    }
    if is_rolling(&s.d) {
        rollout_rolling(s).await
    } else {
        rollout_recreate(s).await
    }
}

/// Adopts matching orphan ReplicaSets and releases owned ones that no longer match.
async fn claim(s: &Sync, selector: &Selector) -> Result<Vec<ReplicaSet>, Error> {
    let api = s.rs_api();
    let uid = s.d.metadata.uid.clone().unwrap_or_default();
    let deleting = s.d.metadata.deletion_timestamp.is_some();
    let mut owned = Vec::new();
    // The ReplicaSets the selector matches (the selector is immutable, so an owned one only
    // stops matching when its own labels are edited: those are found in the full list taken
    // every time a pass finds nothing to own).
    let mut listed = api
        .list(&ListParams::default().labels_from(selector))
        .await?
        .items;
    if listed.is_empty() {
        listed = api.list(&ListParams::default()).await?.items;
    }
    for mut rs in listed {
        let matches = selector.matches(rs.labels());
        match controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    owned.push(rs);
                } else if !deleting {
                    if let Some(refs) = rs.metadata.owner_references.as_mut() {
                        refs.retain(|r| r.uid != uid);
                    }
                    rs.metadata.managed_fields = None;
                    ignore_conflicts(
                        api.replace(&rs.name_any(), &PostParams::default(), &rs)
                            .await,
                    )?;
                }
            }
            Some(_) => {}
            None => {
                if !matches || deleting || rs.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                let Some(owner) = controller_ref(&s.d) else {
                    continue;
                };
                rs.metadata
                    .owner_references
                    .get_or_insert_with(Vec::new)
                    .push(owner);
                rs.metadata.managed_fields = None;
                if let Some(adopted) = ignore_conflicts(
                    api.replace(&rs.name_any(), &PostParams::default(), &rs)
                        .await,
                )? {
                    owned.push(adopted);
                }
            }
        }
    }
    Ok(owned)
}

fn ignore_conflicts<T>(r: Result<T, kube::Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The new ReplicaSet (the oldest whose template equals the Deployment's) and the others.
fn split(s: &Sync) -> (Option<ReplicaSet>, Vec<ReplicaSet>) {
    let mut sets = s.sets.clone();
    sets.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let position = sets.iter().position(|rs| {
        rs.spec
            .template
            .as_ref()
            .is_some_and(|t| equal_ignore_hash(t, &s.d.spec.template))
    });
    match position {
        Some(i) => {
            let new_rs = sets.remove(i);
            (Some(new_rs), sets)
        }
        None => (None, sets),
    }
}

fn replace_set(s: &mut Sync, rs: ReplicaSet) {
    match s
        .sets
        .iter_mut()
        .find(|r| r.metadata.uid == rs.metadata.uid)
    {
        Some(slot) => *slot = rs,
        None => s.sets.push(rs),
    }
}

/// kube's `getAllReplicaSetsAndSyncRevision`: the new ReplicaSet (its revision brought up to
/// date, created when `create` and missing) and the old ones.
async fn new_and_old(
    s: &mut Sync,
    create: bool,
) -> Result<(Option<ReplicaSet>, Vec<ReplicaSet>), Error> {
    let (existing, old) = split(s);
    let max_old = old.iter().map(revision_of).max().unwrap_or(0);
    let new_revision = max_old + 1;
    if let Some(rs) = existing {
        let mut updated = rs.clone();
        let annotations_changed = set_new_rs_annotations(&s.d, &mut updated, new_revision, true);
        let min_ready_changed = updated.spec.min_ready_seconds != s.d.spec.min_ready_seconds;
        updated.spec.min_ready_seconds = s.d.spec.min_ready_seconds;
        let rs = if annotations_changed || min_ready_changed {
            updated.metadata.managed_fields = None;
            let api = s.rs_api();
            let written = api
                .replace(&rs.name_any(), &PostParams::default(), &updated)
                .await?;
            replace_set(s, written.clone());
            written
        } else {
            rs
        };
        let revision = rs.annotations().get(REVISION_ANNOTATION).cloned();
        sync_deployment_revision(s, revision).await?;
        if has_progress_deadline(&s.d) && condition(&s.status, "Progressing").is_none() {
            set_condition(
                &mut s.status,
                new_condition(
                    "Progressing",
                    "True",
                    reason::FOUND_NEW_RS,
                    format!("Found new replica set {:?}", rs.name_any()),
                ),
            );
        }
        return Ok((Some(rs), old));
    }
    if !create {
        return Ok((None, old));
    }
    let created = create_new_rs(s, &old, new_revision).await?;
    Ok((created, old))
}

/// Sets the new ReplicaSet's annotations from the Deployment (kube's
/// `SetNewReplicaSetAnnotations`); true when something changed.
fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut annotations = rs.metadata.annotations.clone().unwrap_or_default();
    let before = annotations.clone();
    for (k, v) in d.annotations() {
        if NOT_COPIED.contains(&k.as_str()) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
    }
    let old_revision = annotations
        .get(REVISION_ANNOTATION)
        .and_then(|r| r.parse::<i64>().ok());
    if old_revision.is_none_or(|o| o < new_revision) {
        annotations.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        if let Some(o) = old_revision.filter(|_| exists) {
            let history = annotations
                .get(REVISION_HISTORY_ANNOTATION)
                .filter(|h| !h.is_empty())
                .map(|h| format!("{h},{o}"))
                .unwrap_or_else(|| o.to_string());
            annotations.insert(REVISION_HISTORY_ANNOTATION.into(), history);
        }
    }
    if !exists {
        let replicas = replicas_of(d);
        annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), replicas.to_string());
        annotations.insert(
            MAX_REPLICAS_ANNOTATION.into(),
            (replicas + max_surge(d)).to_string(),
        );
    }
    let changed = annotations != before;
    rs.metadata.annotations = Some(annotations);
    changed
}

/// Writes the Deployment's own revision annotation when it differs (a metadata patch: it
/// does not change the generation).
async fn sync_deployment_revision(s: &mut Sync, revision: Option<String>) -> Result<(), Error> {
    let Some(revision) = revision else {
        return Ok(());
    };
    if s.d.annotations().get(REVISION_ANNOTATION) == Some(&revision) {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns);
    let patch = json!({"metadata": {"annotations": {REVISION_ANNOTATION: revision}}});
    if let Some(d) = ignore_conflicts(
        api.patch(
            &s.d.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await,
    )? {
        // Keep the status being built; take the new metadata (resourceVersion).
        s.d.metadata = d.metadata;
    }
    Ok(())
}

/// The replicas a new ReplicaSet gets now (kube's `NewRSNewReplicas`).
fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new_rs: Option<&ReplicaSet>) -> i32 {
    let replicas = replicas_of(d);
    if !is_rolling(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let max_total = replicas + max_surge(d);
    if current >= max_total {
        return new_rs.map_or(0, rs_replicas);
    }
    let new_current = new_rs.map_or(0, rs_replicas);
    (max_total - current).min(replicas - new_current).max(0) + new_current
}

async fn create_new_rs(
    s: &mut Sync,
    old: &[ReplicaSet],
    new_revision: i64,
) -> Result<Option<ReplicaSet>, Error> {
    let collision_count = s.status.collision_count;
    let hash = template_hash(&s.d.spec.template, collision_count);
    let mut template = s.d.spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let labels = meta.labels.clone();
    let mut selector: LabelSelector = s.d.spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(BTreeMap::new)
        .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
    let name = format!("{}-{hash}", s.d.name_any());
    let old_refs: Vec<&ReplicaSet> = old.iter().collect();
    let replicas = new_rs_new_replicas(&s.d, &old_refs, None);
    let mut rs = ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(s.ns.clone()),
            labels,
            owner_references: controller_ref(&s.d).map(|r| vec![r]),
            ..Default::default()
        },
        spec: ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: s.d.spec.min_ready_seconds,
            selector,
            template: Some(template),
        },
        status: None,
    };
    set_new_rs_annotations(&s.d, &mut rs, new_revision, false);
    let api = s.rs_api();
    match api.create(&PostParams::default(), &rs).await {
        Ok(created) => {
            tracing::info!(deployment = %s.d.name_any(), replicaset = %name, replicas, "created new ReplicaSet");
            if has_progress_deadline(&s.d) {
                set_condition(
                    &mut s.status,
                    new_condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_CREATED,
                        format!("Created new replica set {name:?}"),
                    ),
                );
            }
            let revision = created.annotations().get(REVISION_ANNOTATION).cloned();
            replace_set(s, created.clone());
            sync_deployment_revision(s, revision).await?;
            Ok(Some(created))
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A ReplicaSet of that name exists: ours with the same template (an earlier
            // attempt, maybe before a crash) is the new one; anything else is a hash
            // collision, which a new collisionCount resolves.
            let existing = api.get(&name).await?;
            let ours = controller_of(&existing.metadata)
                .is_some_and(|o| Some(&o.uid) == s.d.metadata.uid.as_ref());
            let same = existing
                .spec
                .template
                .as_ref()
                .is_some_and(|t| equal_ignore_hash(t, &s.d.spec.template));
            if ours && same {
                replace_set(s, existing.clone());
                return Ok(Some(existing));
            }
            s.status.collision_count = Some(collision_count.unwrap_or(0).saturating_add(1));
            s.wake_in(Duration::from_millis(100));
            Ok(None)
        }
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 422 => {
            if has_progress_deadline(&s.d) {
                set_condition(
                    &mut s.status,
                    new_condition(
                        "Progressing",
                        "False",
                        reason::FAILED_RS_CREATE,
                        e.message.clone(),
                    ),
                );
            }
            Err(Error::Kube(kube::Error::Api(e)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Scales one ReplicaSet and records the Deployment's size on it (kube's
/// `scaleReplicaSet`); true when it was scaled.
async fn scale_rs(s: &mut Sync, rs: &ReplicaSet, size: i32) -> Result<bool, Error> {
    let size = size.max(0);
    let replicas = replicas_of(&s.d);
    let max = replicas + max_surge(&s.d);
    let size_changed = rs_replicas(rs) != size;
    let annotations_changed = annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION) != Some(replicas)
        || annotation_i32(rs, MAX_REPLICAS_ANNOTATION) != Some(max);
    if !size_changed && !annotations_changed {
        return Ok(false);
    }
    let mut updated = rs.clone();
    updated.spec.replicas = Some(size);
    let annotations = updated
        .metadata
        .annotations
        .get_or_insert_with(BTreeMap::new);
    annotations.insert(DESIRED_REPLICAS_ANNOTATION.into(), replicas.to_string());
    annotations.insert(MAX_REPLICAS_ANNOTATION.into(), max.to_string());
    updated.metadata.managed_fields = None;
    let written = s
        .rs_api()
        .replace(&rs.name_any(), &PostParams::default(), &updated)
        .await?;
    if size_changed {
        tracing::info!(deployment = %s.d.name_any(), replicaset = %rs.name_any(), from = rs_replicas(rs), to = size, "scaled ReplicaSet");
    }
    replace_set(s, written);
    Ok(size_changed)
}

fn fresh(s: &Sync, rs: &ReplicaSet) -> ReplicaSet {
    s.sets
        .iter()
        .find(|r| r.metadata.uid == rs.metadata.uid)
        .cloned()
        .unwrap_or_else(|| rs.clone())
}

/// kube's `checkPausedConditions`.
fn check_paused_conditions(s: &mut Sync) {
    if !has_progress_deadline(&s.d) {
        return;
    }
    let current = condition(&s.status, "Progressing");
    if current.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
        return;
    }
    let paused_cond = current.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
    let paused = s.d.spec.paused == Some(true);
    if paused && !paused_cond {
        set_condition(
            &mut s.status,
            new_condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
            ),
        );
    } else if !paused && paused_cond {
        set_condition(
            &mut s.status,
            new_condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
            ),
        );
    }
}

/// kube's `isScalingEvent`: an active ReplicaSet was sized for other replicas.
async fn is_scaling_event(s: &mut Sync) -> Result<bool, Error> {
    let (new_rs, old) = new_and_old(s, false).await?;
    let replicas = replicas_of(&s.d);
    Ok(old
        .iter()
        .chain(new_rs.iter())
        .filter(|rs| rs_replicas(rs) > 0)
        .filter_map(|rs| annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION))
        .any(|desired| desired != replicas))
}

/// kube's `sync`: scaling (paused Deployments, scaling events) without a rollout step.
async fn sync_scale(s: &mut Sync) -> Result<(), Error> {
    let (new_rs, old) = new_and_old(s, false).await?;
    scale(s, new_rs.as_ref(), &old).await?;
    let (new_rs, old) = split(s);
    if s.d.spec.paused == Some(true) {
        cleanup(s, &old).await?;
    }
    rollout_status_only(s, new_rs.as_ref(), &old);
    Ok(())
}

/// kube's `scale`: the one active ReplicaSet gets all the replicas; a saturated new one
/// scales the old ones to zero; otherwise (rolling) replicas are added or removed in
/// proportion to each ReplicaSet's size.
async fn scale(s: &mut Sync, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> Result<(), Error> {
    let replicas = replicas_of(&s.d);
    // The active one, or the latest when none is active.
    let mut by_newest: Vec<&ReplicaSet> = old.iter().collect();
    by_newest.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(b).cmp(&t(a))
    });
    let active: Vec<&ReplicaSet> = by_newest
        .iter()
        .copied()
        .chain(new_rs)
        .filter(|r| rs_replicas(r) > 0)
        .collect();
    let target = match active.len() {
        0 => new_rs.or(by_newest.first().copied()),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(rs) = target {
        let rs = rs.clone();
        if rs_replicas(&rs) != replicas {
            scale_rs(s, &rs, replicas).await?;
        }
        return Ok(());
    }
    let saturated = new_rs.is_some_and(|rs| {
        annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION) == Some(replicas)
            && rs_status(rs).2 == replicas
    });
    if saturated {
        for rs in old.iter().filter(|r| rs_replicas(r) > 0) {
            scale_rs(s, rs, 0).await?;
        }
        return Ok(());
    }
    if !is_rolling(&s.d) {
        return Ok(());
    }
    let mut all: Vec<ReplicaSet> = old
        .iter()
        .chain(new_rs)
        .filter(|r| rs_replicas(r) > 0)
        .cloned()
        .collect();
    let all_replicas: i32 = all.iter().map(rs_replicas).sum();
    let allowed = if replicas > 0 {
        replicas + max_surge(&s.d)
    } else {
        0
    };
    let to_add = allowed - all_replicas;
    let created = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    if to_add > 0 {
        // Larger first; newer first among equals.
        all.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then(created(b).cmp(&created(a)))
        });
    } else if to_add < 0 {
        // Larger first; older first among equals.
        all.sort_by(|a, b| {
            rs_replicas(b)
                .cmp(&rs_replicas(a))
                .then(created(a).cmp(&created(b)))
        });
    }
    let mut added = 0;
    let mut sizes: Vec<i32> = Vec::new();
    for rs in &all {
        if to_add != 0 {
            let p = proportion(&s.d, rs, to_add, added);
            sizes.push(rs_replicas(rs) + p);
            added += p;
        } else {
            sizes.push(rs_replicas(rs));
        }
    }
    for (i, rs) in all.iter().enumerate() {
        let mut size = sizes[i];
        if i == 0 && to_add != 0 {
            size = (size + to_add - added).max(0);
        }
        scale_rs(s, rs, size).await?;
    }
    Ok(())
}

/// kube's `GetProportion`.
fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas_of(d) == 0 {
        -rs_replicas(rs)
    } else {
        let deployment_replicas = replicas_of(d) + max_surge(d);
        let annotated = annotation_i32(rs, MAX_REPLICAS_ANNOTATION)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let size =
                f64::from(rs_replicas(rs)) * f64::from(deployment_replicas) / f64::from(annotated);
            #[allow(clippy::cast_possible_truncation)]
            let rounded = size.round() as i32;
            rounded - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// kube's `rolloutRolling`.
async fn rollout_rolling(s: &mut Sync) -> Result<(), Error> {
    let (new_rs, old) = new_and_old(s, true).await?;
    let Some(new_rs) = new_rs else {
        let (n, o) = split(s);
        rollout_status(s, n.as_ref(), &o);
        return Ok(());
    };
    // Scale up the new ReplicaSet.
    let replicas = replicas_of(&s.d);
    let scaled_up = if rs_replicas(&new_rs) == replicas {
        false
    } else if rs_replicas(&new_rs) > replicas {
        scale_rs(s, &new_rs, replicas).await?
    } else {
        let all: Vec<&ReplicaSet> = old.iter().chain(Some(&new_rs)).collect();
        let size = new_rs_new_replicas(&s.d, &all, Some(&new_rs));
        scale_rs(s, &new_rs, size).await?
    };
    if scaled_up {
        let (n, o) = split(s);
        rollout_status(s, n.as_ref(), &o);
        return Ok(());
    }
    // Scale down old ReplicaSets.
    let new_rs = fresh(s, &new_rs);
    let scaled_down = reconcile_old(s, &new_rs, &old).await?;
    let (n, o) = split(s);
    if scaled_down {
        rollout_status(s, n.as_ref(), &o);
        return Ok(());
    }
    if complete(&s.d, &s.status) {
        cleanup(s, &o).await?;
    }
    let (n, o) = split(s);
    rollout_status(s, n.as_ref(), &o);
    Ok(())
}

/// kube's `reconcileOldReplicaSets`: scales old ReplicaSets down as far as availability
/// allows, unhealthy pods first.
async fn reconcile_old(
    s: &mut Sync,
    new_rs: &ReplicaSet,
    old: &[ReplicaSet],
) -> Result<bool, Error> {
    let old_pods: i32 = old.iter().map(rs_replicas).sum();
    if old_pods == 0 {
        return Ok(false);
    }
    let all_pods: i32 = old_pods + rs_replicas(new_rs);
    let replicas = replicas_of(&s.d);
    let min_available = replicas - max_unavailable(&s.d);
    let new_unavailable = rs_replicas(new_rs) - rs_status(new_rs).2;
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(false);
    }
    // Clean up unhealthy replicas first, oldest ReplicaSets first.
    let mut by_age: Vec<ReplicaSet> = old.to_vec();
    by_age.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let mut cleaned = 0;
    for rs in &by_age {
        if cleaned >= max_scaled_down {
            break;
        }
        let rs = fresh(s, rs);
        if rs_replicas(&rs) == 0 {
            continue;
        }
        let available = rs_status(&rs).2;
        if rs_replicas(&rs) == available {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(rs_replicas(&rs) - available);
        if down <= 0 {
            continue;
        }
        scale_rs(s, &rs, rs_replicas(&rs) - down).await?;
        cleaned += down;
    }
    // Then scale down healthy ones while enough stay available.
    let all: Vec<ReplicaSet> = s.sets.clone();
    let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
    let mut scaled = 0;
    if available > min_available {
        let total = available - min_available;
        for rs in &by_age {
            if scaled >= total {
                break;
            }
            let rs = fresh(s, rs);
            if rs_replicas(&rs) == 0 {
                continue;
            }
            let down = rs_replicas(&rs).min(total - scaled);
            scale_rs(s, &rs, rs_replicas(&rs) - down).await?;
            scaled += down;
        }
    }
    Ok(cleaned + scaled > 0)
}

/// kube's `rolloutRecreate`: old ReplicaSets to zero, wait until their pods are gone, then
/// the new ReplicaSet to full size.
async fn rollout_recreate(s: &mut Sync) -> Result<(), Error> {
    let (new_rs, old) = new_and_old(s, false).await?;
    let mut scaled_down = false;
    for rs in old.iter().filter(|r| rs_replicas(r) != 0) {
        scaled_down |= scale_rs(s, rs, 0).await?;
    }
    if scaled_down {
        let (n, o) = split(s);
        rollout_status(s, n.as_ref(), &o);
        s.wake_in(Duration::from_secs(1));
        return Ok(());
    }
    if old_pods_running(s, &old).await? {
        let (n, o) = split(s);
        rollout_status(s, n.as_ref(), &o);
        s.wake_in(Duration::from_secs(1));
        return Ok(());
    }
    let new_rs = match new_rs {
        Some(rs) => Some(rs),
        None => new_and_old(s, true).await?.0,
    };
    if let Some(rs) = new_rs {
        let replicas = replicas_of(&s.d);
        scale_rs(s, &rs, replicas).await?;
    }
    let (n, o) = split(s);
    if complete(&s.d, &s.status) {
        cleanup(s, &o).await?;
    }
    rollout_status(s, n.as_ref(), &o);
    Ok(())
}

/// Whether any pod of the old ReplicaSets may still run (kube's `oldPodsRunning`).
async fn old_pods_running(s: &Sync, old: &[ReplicaSet]) -> Result<bool, Error> {
    if old.iter().any(|r| rs_status(r).0 > 0) {
        return Ok(true);
    }
    let uids: Vec<String> = old.iter().filter_map(|r| r.metadata.uid.clone()).collect();
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), &s.ns);
    Ok(pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|p| {
            controller_of(&p.metadata).is_some_and(|o| uids.contains(&o.uid))
                && !matches!(
                    p.status.as_ref().and_then(|st| st.phase.as_deref()),
                    Some("Failed" | "Succeeded")
                )
        }))
}

/// kube's `cleanupDeployment`: deletes the oldest fully scaled-down old ReplicaSets beyond
/// `revisionHistoryLimit`.
async fn cleanup(s: &mut Sync, old: &[ReplicaSet]) -> Result<(), Error> {
    let Some(limit) = s.d.spec.revision_history_limit else {
        return Ok(());
    };
    let mut cleanable: Vec<&ReplicaSet> = old
        .iter()
        .filter(|r| r.metadata.deletion_timestamp.is_none())
        .collect();
    let excess = cleanable.len() as i64 - i64::from(limit.max(0));
    if excess <= 0 {
        return Ok(());
    }
    cleanable.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        revision_of(a).cmp(&revision_of(b)).then(t(a).cmp(&t(b)))
    });
    let api = s.rs_api();
    for rs in cleanable
        .into_iter()
        .take(usize::try_from(excess).unwrap_or(0))
    {
        let observed = rs
            .status
            .as_ref()
            .and_then(|st| st.observed_generation)
            .unwrap_or(0);
        if rs_status(rs).0 != 0
            || rs_replicas(rs) != 0
            || rs.metadata.generation.unwrap_or(0) > observed
        {
            continue;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: rs.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(deployment = %s.d.name_any(), replicaset = %rs.name_any(), "deleting old ReplicaSet beyond the revision history limit");
        ignore_conflicts(api.delete(&rs.name_any(), &params).await)?;
        s.sets.retain(|r| r.metadata.uid != rs.metadata.uid);
    }
    Ok(())
}

/// kube's `calculateStatus`: counts from the ReplicaSets and the `Available` condition.
fn calculate_status(s: &Sync, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) -> DeploymentStatus {
    let all: Vec<&ReplicaSet> = old.iter().chain(new_rs).collect();
    let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
    let total: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let actual: i32 = all.iter().map(|r| rs_status(r).0).sum();
    let ready: i32 = all.iter().map(|r| rs_status(r).1).sum();
    let updated = new_rs.map_or(0, |r| rs_status(r).0);
    let nonzero = |v: i32| (v != 0).then_some(v);
    let mut status = DeploymentStatus {
        observed_generation: s.d.metadata.generation,
        replicas: nonzero(actual),
        updated_replicas: nonzero(updated),
        ready_replicas: nonzero(ready),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((total - available).max(0)),
        collision_count: s.status.collision_count,
        conditions: s.status.conditions.clone(),
        terminating_replicas: s.status.terminating_replicas,
    };
    if available >= replicas_of(&s.d) - max_unavailable(&s.d) {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
            ),
        );
    } else {
        set_condition(
            &mut status,
            new_condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
            ),
        );
    }
    status
}

fn rollout_status_only(s: &mut Sync, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) {
    s.status = calculate_status(s, new_rs, old);
}

/// kube's `DeploymentComplete`.
fn complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let r = replicas_of(d);
    status.updated_replicas.unwrap_or(0) == r
        && status.replicas.unwrap_or(0) == r
        && status.available_replicas.unwrap_or(0) == r
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// kube's `syncRolloutStatus`: the status and the `Progressing` condition.
fn rollout_status(s: &mut Sync, new_rs: Option<&ReplicaSet>, old: &[ReplicaSet]) {
    let mut status = calculate_status(s, new_rs, old);
    let deadline = has_progress_deadline(&s.d);
    if !deadline {
        remove_condition(&mut status, "Progressing");
    }
    let current = condition(&s.status, "Progressing").cloned();
    let is_complete = status.replicas == status.updated_replicas
        && current
            .as_ref()
            .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
    let rs_name = new_rs.map(ResourceExt::name_any);
    if deadline && !is_complete {
        let before = &s.stored_status;
        let old_before = before.replicas.unwrap_or(0) - before.updated_replicas.unwrap_or(0);
        let old_now = status.replicas.unwrap_or(0) - status.updated_replicas.unwrap_or(0);
        let progressing = status.updated_replicas.unwrap_or(0)
            > before.updated_replicas.unwrap_or(0)
            || old_now < old_before
            || status.ready_replicas.unwrap_or(0) > before.ready_replicas.unwrap_or(0)
            || status.available_replicas.unwrap_or(0) > before.available_replicas.unwrap_or(0);
        if complete(&s.d, &status) {
            let message = rs_name.as_ref().map_or_else(
                || "Deployment has successfully progressed.".to_string(),
                |n| format!("ReplicaSet {n:?} has successfully progressed."),
            );
            set_condition(
                &mut status,
                new_condition("Progressing", "True", reason::NEW_RS_AVAILABLE, message),
            );
        } else if progressing {
            let message = rs_name.as_ref().map_or_else(
                || "Deployment is progressing.".to_string(),
                |n| format!("ReplicaSet {n:?} is progressing."),
            );
            let mut c = new_condition("Progressing", "True", reason::RS_UPDATED, message);
            if let Some(cur) = &current {
                if cur.status.as_deref() == Some("True") {
                    c.last_transition_time = cur.last_transition_time.clone();
                }
                remove_condition(&mut status, "Progressing");
            }
            status.conditions.get_or_insert_with(Vec::new).push(c);
        } else if timed_out(&s.d, &status) {
            let message = rs_name.as_ref().map_or_else(
                || "Deployment has timed out progressing.".to_string(),
                |n| format!("ReplicaSet {n:?} has timed out progressing."),
            );
            set_condition(
                &mut status,
                new_condition("Progressing", "False", reason::TIMED_OUT, message),
            );
        }
    }
    // ReplicaSet failures show on the Deployment.
    let failure = new_rs
        .into_iter()
        .chain(old.iter())
        .filter_map(|r| r.status.as_ref()?.conditions.as_ref())
        .flatten()
        .find(|c| {
            c.type_.as_deref() == Some("ReplicaFailure") && c.status.as_deref() == Some("True")
        })
        .cloned();
    match failure {
        Some(f) => set_condition(
            &mut status,
            new_condition(
                "ReplicaFailure",
                "True",
                f.reason.as_deref().unwrap_or("FailedCreate"),
                f.message.unwrap_or_default(),
            ),
        ),
        None => remove_condition(&mut status, "ReplicaFailure"),
    }
    // Look again when the deadline would pass (kube's `requeueStuckDeployment`).
    if deadline
        && !complete(&s.d, &status)
        && let Some(c) = condition(&status, "Progressing")
        && c.reason.as_deref() != Some(reason::TIMED_OUT)
        && c.reason.as_deref() != Some(reason::NEW_RS_AVAILABLE)
        && let Some(from) = c.last_update_time.as_ref()
    {
        let at =
            from.0.as_second() + i64::from(s.d.spec.progress_deadline_seconds.unwrap_or(600)) + 1;
        let left = (at - Timestamp::now().as_second()).max(1);
        s.wake_in(Duration::from_secs(left.unsigned_abs()));
    }
    s.status = status;
}

/// kube's `DeploymentTimedOut`.
fn timed_out(d: &Deployment, status: &DeploymentStatus) -> bool {
    let Some(c) = condition(status, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => {
            let Some(from) = c.last_update_time.as_ref() else {
                return false;
            };
            let deadline = i64::from(d.spec.progress_deadline_seconds.unwrap_or(600));
            from.0.as_second() + deadline < Timestamp::now().as_second()
        }
    }
}

async fn write_status(s: &Sync) -> Result<(), Error> {
    if s.status == s.stored_status {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(s.client.clone(), &s.ns);
    let mut updated = s.d.clone();
    updated.status = Some(s.status.clone());
    updated.metadata.managed_fields = None;
    match api
        .replace_status(&s.d.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if matches!(e.code, 404 | 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};

    fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn percentages_round_as_kube_does() {
        let pct = |s: &str| IntOrString::String(s.into());
        // 25% of 1: surge rounds up to 1, unavailable down to 0.
        let d = deployment(1, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 0));
        let d = deployment(10, pct("25%"), pct("25%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
        // Both zero: one may be unavailable.
        let d = deployment(3, IntOrString::Int(0), pct("0%"));
        assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 1));
        // Unavailable is capped at the replicas.
        let d = deployment(2, IntOrString::Int(1), IntOrString::Int(5));
        assert_eq!(max_unavailable(&d), 2);
    }

    #[test]
    fn the_template_hash_ignores_the_hash_label_and_follows_collisions() {
        let mut t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let h = template_hash(&t, None);
        assert!(
            h.len() >= 8 && h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
            "{h}"
        );
        assert_ne!(h, template_hash(&t, Some(1)));
        let plain = t.clone();
        t.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH_LABEL.into(), h.clone());
        assert_eq!(template_hash(&t, None), h);
        assert!(equal_ignore_hash(&t, &plain));
    }

    #[test]
    fn new_replica_sets_grow_within_max_surge() {
        let pct = |s: &str| IntOrString::String(s.into());
        let d = deployment(4, pct("25%"), pct("25%"));
        let mut old = ReplicaSet::default();
        old.spec.replicas = Some(4);
        // 4 + 1 surge, 4 old: the new one may have 1.
        assert_eq!(new_rs_new_replicas(&d, &[&old], None), 1);
        let mut new_rs = ReplicaSet::default();
        new_rs.spec.replicas = Some(1);
        old.spec.replicas = Some(3);
        assert_eq!(new_rs_new_replicas(&d, &[&old, &new_rs], Some(&new_rs)), 2);
    }
}

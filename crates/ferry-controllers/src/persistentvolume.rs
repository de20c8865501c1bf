//! The PersistentVolume controller, as kube-controller-manager's: binds claims to volumes
//! (waiting for the first consumer's node where the class says so) and reclaims released
//! volumes (Delete or Retain); with the protection controllers, which hold a claim while a
//! pod uses it (`kubernetes.io/pvc-protection`) and a volume while it is bound
//! (`kubernetes.io/pv-protection`).
//!
//! - **Claims** (`syncClaim`): an unbound claim gets the smallest Available volume of its
//!   class that has its access modes, at least its request, matches its selector and volume
//!   mode (and, with a selected node, whose node affinity admits that node), or the volume its
//!   `spec.volumeName` names. Binding writes the volume first (`claimRef`,
//!   `pv.kubernetes.io/bound-by-controller`), then the claim (`volumeName`,
//!   `pv.kubernetes.io/bind-completed`), then both statuses. A claim of a
//!   `WaitForFirstConsumer` class waits for `volume.kubernetes.io/selected-node` (set by the
//!   scheduler). A claim with no volume and a class with a provisioner is annotated
//!   `volume.kubernetes.io/storage-provisioner` for that provisioner. A bound claim whose
//!   volume is gone (or bound elsewhere) is `Lost`.
//! - **Volumes** (`syncVolume`): without a claim, `Available`; bound to a claim that exists
//!   with the same uid, `Bound`; otherwise `Released`, then reclaimed: `Retain` keeps it;
//!   `Delete` of a volume provisioned by an external provisioner
//!   (`pv.kubernetes.io/provisioned-by`) is that provisioner's work (Ferry's own:
//!   [`crate::localpath`]); others cannot be deleted here and become `Failed`.
//!
//! Everything is decided from objects read from the API in the reconcile (not from a
//! possibly stale cache), and every write carries the resourceVersion it was decided on, so
//! a conflict retries instead of binding twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, NodeSelector, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Error;

/// Set on a claim when the binding is complete.
pub const BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// Set on a claim or volume the controller bound (rather than the user).
pub const BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// Set on a volume by the provisioner that made it.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// The node the scheduler chose for a claim's first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The provisioner a claim waits for.
pub const STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The beta form of [`STORAGE_PROVISIONER`], still set by kube-controller-manager.
pub const BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer that keeps a volume while it is bound.
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// Runs the controller until its future is dropped.
pub async fn run(client: kube::Client) {
    futures::join!(run_claims(client.clone()), run_volumes(client));
}

async fn run_claims(client: kube::Client) {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    Controller::new(claims, watcher::Config::default())
        .watches(
            volumes,
            watcher::Config::default(),
            |pv: PersistentVolume| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .and_then(|c| {
                        Some(ObjectRef::new(c.name.as_deref()?).within(c.namespace.as_deref()?))
                    })
            },
        )
        .watches(pods, watcher::Config::default(), |pod: Pod| {
            let ns = pod.namespace().unwrap_or_default();
            claim_names(&pod)
                .into_iter()
                .map(move |c| ObjectRef::new(&c).within(&ns))
                .collect::<Vec<_>>()
        })
        .run(reconcile_claim, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "persistentvolume controller (claims)");
            }
            futures::future::ready(())
        })
        .await;
}

async fn run_volumes(client: kube::Client) {
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    Controller::new(volumes, watcher::Config::default())
        .watches(
            claims,
            watcher::Config::default(),
            |c: PersistentVolumeClaim| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.volume_name.clone())
                    .filter(|v| !v.is_empty())
                    .map(|v| ObjectRef::new(&v))
            },
        )
        .run(reconcile_volume, error_policy, Arc::new(client))
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "persistentvolume controller (volumes)");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    _: Arc<kube::Client>,
) -> Action {
    tracing::debug!(kind = %K::kind(&()), name = %object.meta().name.clone().unwrap_or_default(), %error, "cannot sync; retrying");
    Action::requeue(Duration::from_secs(1))
}

/// Claims already told each reason (by uid and reason), so a requeued claim is not told
/// again: the Events kube-controller-manager's recorder would aggregate.
static TOLD: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<(String, String)>>> =
    std::sync::LazyLock::new(Default::default);

/// Records a `Normal` Event on `claim` once per reason (as `persistentvolume-controller`).
async fn claim_event(
    client: &kube::Client,
    claim: &PersistentVolumeClaim,
    reason: &str,
    message: &str,
) {
    use k8s_openapi::api::core::v1::Event;
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let fresh = TOLD
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((uid.clone(), reason.to_string()));
    if !fresh {
        return;
    }
    let ns = claim.namespace().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now();
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event: Event = match serde_json::from_value(json!({
        "metadata": {"name": format!("{}.{:x}", claim.name_any(), now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "namespace": ns, "name": claim.name_any(), "uid": uid,
            "resourceVersion": claim.metadata.resource_version},
        "reason": reason,
        "message": message,
        "type": "Normal",
        "source": {"component": "persistentvolume-controller"},
        "reportingComponent": "persistentvolume-controller",
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    })) {
        Ok(e) => e,
        Err(_) => return,
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, "cannot record an Event on a claim");
    }
}

/// The default StorageClass among `classes` (annotated
/// `storageclass.kubernetes.io/is-default-class: "true"`, or the beta form; of several, the
/// newest, then the first by name).
pub fn default_class(classes: &[StorageClass]) -> Option<String> {
    classes
        .iter()
        .filter(|c| {
            [
                "storageclass.kubernetes.io/is-default-class",
                "storageclass.beta.kubernetes.io/is-default-class",
            ]
            .iter()
            .any(|a| annotation(*c, a) == Some("true"))
        })
        .max_by(|a, b| {
            a.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0)
                .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .then_with(|| b.name_any().cmp(&a.name_any()))
        })
        .map(|c| c.name_any())
}

/// The claims a pod's volumes name.
pub fn claim_names(pod: &Pod) -> Vec<String> {
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

fn annotation<'a, K: Resource>(o: &'a K, key: &str) -> Option<&'a str> {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The claim's storage class name (`""`: none).
pub fn claim_class(c: &PersistentVolumeClaim) -> String {
    c.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or_else(|| annotation(c, "volume.beta.kubernetes.io/storage-class").map(String::from))
        .unwrap_or_default()
}

fn volume_class(v: &PersistentVolume) -> String {
    v.spec
        .as_ref()
        .and_then(|s| s.storage_class_name.clone())
        .or_else(|| annotation(v, "volume.beta.kubernetes.io/storage-class").map(String::from))
        .unwrap_or_default()
}

fn storage_bytes(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> i64 {
    q.and_then(|q| ferry_api::quantity::parse_units(&q.0).ok())
        .unwrap_or(0)
}

fn requested(c: &PersistentVolumeClaim) -> i64 {
    storage_bytes(
        c.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage")),
    )
}

fn capacity(v: &PersistentVolume) -> i64 {
    storage_bytes(
        v.spec
            .as_ref()
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage")),
    )
}

/// Whether a node (its name and labels) satisfies a required node selector: any term, each
/// of whose requirements holds. A selector without terms matches no node.
pub fn node_selector_matches(
    selector: &NodeSelector,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.node_selector_terms.iter().any(|term| {
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
                ferry_api::node_selector::requirement_holds(
                    r,
                    (r.key == "metadata.name").then_some(node_name),
                )
            })
    })
}

/// Whether a volume may be used on a node (no node affinity: anywhere).
pub fn volume_fits_node(v: &PersistentVolume, node: &Node) -> bool {
    let Some(required) = v
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
    else {
        return true;
    };
    let empty = BTreeMap::new();
    node_selector_matches(
        required,
        node.metadata.name.as_deref().unwrap_or_default(),
        node.metadata.labels.as_ref().unwrap_or(&empty),
    )
}

fn label_selector_matches(
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let ok_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let ok_exprs = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    ok_labels && ok_exprs
}

/// Whether `v` can serve `c` (ignoring whom it is bound to): class, access modes, capacity,
/// volume mode, selector and, with `node`, node affinity.
pub fn volume_matches(
    c: &PersistentVolumeClaim,
    v: &PersistentVolume,
    node: Option<&Node>,
) -> bool {
    let (Some(cs), Some(vs)) = (c.spec.as_ref(), v.spec.as_ref()) else {
        return false;
    };
    if claim_class(c) != volume_class(v) {
        return false;
    }
    let modes = vs.access_modes.as_deref().unwrap_or_default();
    if !cs.access_modes.iter().flatten().all(|m| modes.contains(m)) {
        return false;
    }
    if capacity(v) < requested(c) {
        return false;
    }
    let mode = |m: &Option<String>| m.clone().unwrap_or_else(|| "Filesystem".into());
    if mode(&cs.volume_mode) != mode(&vs.volume_mode) {
        return false;
    }
    if let Some(sel) = &cs.selector
        && !label_selector_matches(sel, v.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
    {
        return false;
    }
    node.is_none_or(|n| volume_fits_node(v, n))
}

/// The volume `c` should bind to among `volumes`: one pre-bound to it, else the smallest
/// unclaimed match.
pub fn find_match<'a>(
    c: &PersistentVolumeClaim,
    volumes: &'a [PersistentVolume],
    node: Option<&Node>,
) -> Option<&'a PersistentVolume> {
    let uid = c.metadata.uid.as_deref().unwrap_or_default();
    let ns = c.namespace().unwrap_or_default();
    let name = c.name_any();
    let claimed_by_us = |v: &PersistentVolume| {
        v.spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some_and(|r| {
                r.name.as_deref() == Some(name.as_str())
                    && r.namespace.as_deref() == Some(ns.as_str())
                    && r.uid.as_deref().is_none_or(|u| u.is_empty() || u == uid)
            })
    };
    let usable = |v: &&PersistentVolume| {
        v.metadata.deletion_timestamp.is_none() && !matches!(volume_phase(v), "Released" | "Failed")
    };
    if let Some(v) = volumes
        .iter()
        .filter(usable)
        .find(|v| claimed_by_us(v) && volume_matches(c, v, node))
    {
        return Some(v);
    }
    volumes
        .iter()
        .filter(usable)
        .filter(|v| v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
        .filter(|v| volume_matches(c, v, node))
        .min_by_key(|v| (capacity(v), v.name_any()))
}

fn claim_reference(c: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: c.namespace(),
        name: Some(c.name_any()),
        uid: c.metadata.uid.clone(),
        resource_version: c.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// Removes `finalizer` from a deleted object, guarded by its resourceVersion.
async fn remove_finalizer<K>(api: &Api<K>, o: &K, finalizer: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let kept: Vec<String> = o
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    let patch = json!({"metadata": {
        "resourceVersion": o.meta().resource_version,
        "finalizers": kept,
    }});
    match api
        .patch(
            &o.meta().name.clone().unwrap_or_default(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pod_is_terminal(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

async fn reconcile_claim(
    cached: Arc<PersistentVolumeClaim>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced((*client).clone(), &ns);
    let Some(claim) = claims.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if claim.metadata.deletion_timestamp.is_some() {
        return protect_claim(&client, &claims, &claim).await;
    }
    let volumes: Api<PersistentVolume> = Api::all((*client).clone());
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .unwrap_or_default();
    if !volume_name.is_empty() {
        return sync_bound_claim(&claims, &volumes, &claim, &volume_name).await;
    }
    // Unbound. A claim that names no class (not even "") gets the default one once there
    // is one (kube's RetroactiveDefaultStorageClass).
    let classless = claim
        .spec
        .as_ref()
        .is_some_and(|s| s.storage_class_name.is_none())
        && annotation(&claim, "volume.beta.kubernetes.io/storage-class").is_none();
    if classless {
        let classes = Api::<StorageClass>::all((*client).clone())
            .list(&ListParams::default())
            .await?
            .items;
        if let Some(default) = default_class(&classes) {
            let patch = json!({"metadata": {"resourceVersion": claim.metadata.resource_version},
                "spec": {"storageClassName": default}});
            claims
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    let class_name = claim_class(&claim);
    let class = if class_name.is_empty() {
        None
    } else {
        Api::<StorageClass>::all((*client).clone())
            .get_opt(&class_name)
            .await?
    };
    let delayed = class
        .as_ref()
        .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
    let selected = annotation(&claim, SELECTED_NODE).map(String::from);
    if delayed && selected.is_none() {
        // Waits for the scheduler to choose its first consumer's node.
        ensure_claim_pending(&claims, &claim).await?;
        claim_event(
            &client,
            &claim,
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        )
        .await;
        return Ok(Action::await_change());
    }
    let node = match &selected {
        Some(n) => Api::<Node>::all((*client).clone()).get_opt(n).await?,
        None => None,
    };
    let all = volumes.list(&ListParams::default()).await?.items;
    if let Some(v) = find_match(&claim, &all, node.as_ref()) {
        bind(&claims, &volumes, &claim, v).await?;
        return Ok(Action::await_change());
    }
    ensure_claim_pending(&claims, &claim).await?;
    if let Some(provisioner) = class.as_ref().map(|c| c.provisioner.clone())
        && provisioner != "kubernetes.io/no-provisioner"
        && annotation(&claim, STORAGE_PROVISIONER) != Some(provisioner.as_str())
    {
        let patch = json!({"metadata": {"annotations": {
            STORAGE_PROVISIONER: provisioner,
            BETA_STORAGE_PROVISIONER: provisioner,
        }}});
        claims
            .patch(
                &claim.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        tracing::info!(claim = %format!("{ns}/{}", claim.name_any()), %provisioner, "waiting for a volume to be created by the external provisioner");
        claim_event(
            &client,
            &claim,
            "ExternalProvisioning",
            &format!("Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."),
        )
        .await;
    }
    Ok(Action::requeue(Duration::from_secs(15)))
}

async fn ensure_claim_pending(
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
) -> Result<(), Error> {
    if claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending") {
        return Ok(());
    }
    let patch = json!({"status": {"phase": "Pending"}});
    claims
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// Binds `claim` and `volume`: the volume's claimRef, then the claim's volumeName, then the
/// statuses.
async fn bind(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
) -> Result<(), Error> {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let pre_bound = volume
        .spec
        .as_ref()
        .and_then(|s| s.claim_ref.as_ref())
        .is_some_and(|r| r.uid.as_deref() == Some(uid.as_str()));
    let mut volume = volume.clone();
    if !pre_bound {
        let mut v = volume.clone();
        let spec = v.spec.get_or_insert_with(Default::default);
        spec.claim_ref = Some(claim_reference(claim));
        v.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(BOUND_BY_CONTROLLER.into(), "yes".into());
        volume = volumes
            .replace(&v.name_any(), &PostParams::default(), &v)
            .await?;
    }
    if volume_phase(&volume) != "Bound" {
        let patch = json!({"status": {"phase": "Bound"}});
        volumes
            .patch_status(
                &volume.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    let mut c = claim.clone();
    c.spec.get_or_insert_with(Default::default).volume_name = Some(volume.name_any());
    let annotations = c.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(BIND_COMPLETED.into(), "yes".into());
    annotations.insert(BOUND_BY_CONTROLLER.into(), "yes".into());
    let c = claims
        .replace(&c.name_any(), &PostParams::default(), &c)
        .await?;
    write_claim_status(claims, &c, &volume, "Bound").await?;
    tracing::info!(claim = %format!("{}/{}", c.namespace().unwrap_or_default(), c.name_any()), volume = %volume.name_any(), "bound");
    Ok(())
}

async fn write_claim_status(
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    volume: &PersistentVolume,
    phase: &str,
) -> Result<(), Error> {
    let spec = volume.spec.clone().unwrap_or_default();
    let status = claim.status.clone().unwrap_or_default();
    if status.phase.as_deref() == Some(phase)
        && status.access_modes == spec.access_modes
        && status.capacity == spec.capacity
    {
        return Ok(());
    }
    let patch = json!({"status": {
        "phase": phase,
        "accessModes": spec.access_modes,
        "capacity": spec.capacity,
    }});
    claims
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn sync_bound_claim(
    claims: &Api<PersistentVolumeClaim>,
    volumes: &Api<PersistentVolume>,
    claim: &PersistentVolumeClaim,
    volume_name: &str,
) -> Result<Action, Error> {
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let volume = volumes.get_opt(volume_name).await?;
    let Some(volume) = volume else {
        if annotation(claim, BIND_COMPLETED).is_some() {
            set_claim_phase(claims, claim, "Lost").await?;
            tracing::warn!(claim = %claim.name_any(), %volume_name, "the bound volume is gone: claim Lost");
        } else {
            ensure_claim_pending(claims, claim).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(15)));
    };
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    match claim_ref {
        // The user pre-bound the claim: bind the volume to it.
        None => {
            if volume_matches(claim, &volume, None) {
                bind(claims, volumes, claim, &volume).await?;
            } else {
                ensure_claim_pending(claims, claim).await?;
            }
            Ok(Action::requeue(Duration::from_secs(15)))
        }
        Some(r)
            if r.name.as_deref() == Some(claim.name_any().as_str())
                && r.namespace == claim.namespace()
                && r.uid.as_deref().is_none_or(|u| u.is_empty() || u == uid) =>
        {
            if annotation(claim, BIND_COMPLETED).is_none()
                || r.uid.as_deref().is_none_or(str::is_empty)
            {
                bind(claims, volumes, claim, &volume).await?;
            } else {
                write_claim_status(claims, claim, &volume, "Bound").await?;
            }
            Ok(Action::await_change())
        }
        // The volume belongs to someone else.
        Some(_) => {
            if annotation(claim, BIND_COMPLETED).is_some() {
                set_claim_phase(claims, claim, "Lost").await?;
            } else {
                ensure_claim_pending(claims, claim).await?;
            }
            Ok(Action::requeue(Duration::from_secs(15)))
        }
    }
}

async fn set_claim_phase(
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
    phase: &str,
) -> Result<(), Error> {
    if claim_phase(claim) == phase {
        return Ok(());
    }
    let patch = json!({"status": {"phase": phase}});
    claims
        .patch_status(
            &claim.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

/// The pvc-protection controller: a deleted claim keeps its finalizer while a pod that is
/// not terminal uses it (pods are listed live, as kube-controller-manager does before it
/// lets a claim go).
async fn protect_claim(
    client: &kube::Client,
    claims: &Api<PersistentVolumeClaim>,
    claim: &PersistentVolumeClaim,
) -> Result<Action, Error> {
    if !claim
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == PVC_PROTECTION)
    {
        return Ok(Action::await_change());
    }
    let ns = claim.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = claim.name_any();
    let in_use = pods
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|p| !pod_is_terminal(p) && claim_names(p).contains(&name));
    if in_use {
        tracing::debug!(claim = %format!("{ns}/{name}"), "in use by a pod: kept");
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    remove_finalizer(claims, claim, PVC_PROTECTION).await?;
    Ok(Action::await_change())
}

async fn reconcile_volume(
    cached: Arc<PersistentVolume>,
    client: Arc<kube::Client>,
) -> Result<Action, Error> {
    let volumes: Api<PersistentVolume> = Api::all((*client).clone());
    let Some(volume) = volumes.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let name = volume.name_any();
    let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.clone());
    if volume.metadata.deletion_timestamp.is_some() {
        // pv-protection: a bound volume stays.
        let bound = volume_phase(&volume) == "Bound" && claim_ref.is_some();
        if !bound
            && volume
                .metadata
                .finalizers
                .iter()
                .flatten()
                .any(|f| f == PV_PROTECTION)
        {
            remove_finalizer(&volumes, &volume, PV_PROTECTION).await?;
        }
        return Ok(Action::requeue(Duration::from_secs(10)));
    }
    let Some(claim_ref) = claim_ref else {
        set_volume_phase(&volumes, &volume, "Available", None).await?;
        return Ok(Action::await_change());
    };
    let uid = claim_ref.uid.clone().unwrap_or_default();
    if uid.is_empty() {
        // Pre-bound by name: the claim's sync binds it.
        set_volume_phase(&volumes, &volume, "Available", None).await?;
        return Ok(Action::await_change());
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(
        (*client).clone(),
        claim_ref.namespace.as_deref().unwrap_or_default(),
    );
    let claim = claims
        .get_opt(claim_ref.name.as_deref().unwrap_or_default())
        .await?;
    match claim {
        Some(c) if c.metadata.uid.as_deref() == Some(uid.as_str()) => {
            let bound_here = c
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| v == name);
            if bound_here {
                set_volume_phase(&volumes, &volume, "Bound", None).await?;
            }
            // Otherwise the claim's sync finishes the binding.
            Ok(Action::await_change())
        }
        _ => {
            if !matches!(volume_phase(&volume), "Released" | "Failed") {
                set_volume_phase(&volumes, &volume, "Released", None).await?;
                tracing::info!(volume = %name, "its claim is gone: released");
            }
            reclaim(&volumes, &volume).await
        }
    }
}

async fn reclaim(
    volumes: &Api<PersistentVolume>,
    volume: &PersistentVolume,
) -> Result<Action, Error> {
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Delete" if annotation(volume, PROVISIONED_BY).is_some() => {
            // The external provisioner that made it deletes it (Ferry's: crate::localpath).
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        "Delete" | "Recycle" if volume_phase(volume) != "Failed" => {
            let message = format!(
                "error getting deleter volume plugin for volume \"{}\": no deletable volume plugin matched",
                volume.name_any()
            );
            set_volume_phase(
                volumes,
                volume,
                "Failed",
                Some(("VolumeFailedDelete", &message)),
            )
            .await?;
            Ok(Action::await_change())
        }
        _ => Ok(Action::await_change()),
    }
}

async fn set_volume_phase(
    volumes: &Api<PersistentVolume>,
    volume: &PersistentVolume,
    phase: &str,
    reason: Option<(&str, &str)>,
) -> Result<(), Error> {
    if volume_phase(volume) == phase {
        return Ok(());
    }
    let (reason, message) = reason.unwrap_or_default();
    let patch = json!({"status": {
        "phase": phase,
        "reason": (!reason.is_empty()).then_some(reason),
        "message": (!message.is_empty()).then_some(message),
    }});
    volumes
        .patch_status(
            &volume.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(spec: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "c", "namespace": "ns", "uid": "u1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn volume(name: &str, size: &str, extra: serde_json::Value) -> PersistentVolume {
        let mut spec = json!({
            "capacity": {"storage": size},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": "/x"},
            "storageClassName": "manual",
        });
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"tier": "a"}}, "spec": spec}),
        )
        .unwrap()
    }

    #[test]
    fn binds_the_smallest_matching_volume() {
        let c = claim(json!({
            "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}},
        }));
        let volumes = vec![
            volume("big", "10Gi", json!({})),
            volume("small", "2Gi", json!({})),
            volume("tiny", "500Mi", json!({})),
            volume("other-class", "1Gi", json!({"storageClassName": "fast"})),
            volume("rwx-only", "1Gi", json!({"accessModes": ["ReadWriteMany"]})),
            volume(
                "taken",
                "1Gi",
                json!({"claimRef": {"namespace": "ns", "name": "d", "uid": "u2"}}),
            ),
        ];
        assert_eq!(find_match(&c, &volumes, None).unwrap().name_any(), "small");
        let with_selector = claim(json!({
            "accessModes": ["ReadWriteOnce"], "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}},
            "selector": {"matchLabels": {"tier": "b"}},
        }));
        assert!(find_match(&with_selector, &volumes, None).is_none());
    }

    #[test]
    fn node_affinity_limits_where_a_volume_fits() {
        let v = volume(
            "local",
            "1Gi",
            json!({"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}),
        );
        let node = |name: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}}}))
            .unwrap()
        };
        assert!(volume_fits_node(&v, &node("n1")));
        assert!(!volume_fits_node(&v, &node("n2")));
    }
}

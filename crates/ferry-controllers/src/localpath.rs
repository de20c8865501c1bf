//! The built-in local-path provisioner (like k3s's `rancher.io/local-path`): the default
//! StorageClass, and a directory on the chosen node for every claim of it.
//!
//! - Ensures the StorageClass [`CLASS`] (provisioner [`PROVISIONER`], `WaitForFirstConsumer`,
//!   reclaim `Delete`, marked default) exists; an existing one is left as the user made it.
//! - For each claim waiting for this provisioner (`volume.kubernetes.io/storage-provisioner`,
//!   set by [`crate::persistentvolume`]) with a node chosen by the scheduler
//!   (`volume.kubernetes.io/selected-node`), creates the PersistentVolume `pvc-<claim uid>`:
//!   a `hostPath` (`DirectoryOrCreate`) at `<root>/pvc-<uid>_<namespace>_<name>`, required node
//!   affinity to that node, the claim's access modes and request as capacity, the class's
//!   reclaim policy, pre-bound to the claim (`claimRef` with its uid) so the binder binds it.
//!   The node agent creates the directory when a pod mounts it.
//! - A Released volume it provisioned with reclaim policy `Delete` is removed: a helper pod
//!   (`helper-pod-delete-<volume>` in `kube-system`, bound to the volume's node, the root
//!   directory mounted as a `hostPath` at the same path) runs `rm -rf` on the directory, as
//!   k3s's provisioner does; when it succeeds the volume is deleted, when it fails the volume
//!   is marked `Failed`. Working through a pod, it needs nothing of the node but a pod
//!   runtime, so it works with any node agent on any cluster.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::persistentvolume::{PROVISIONED_BY, SELECTED_NODE, STORAGE_PROVISIONER, claim_class};

/// The name of the default StorageClass.
pub const CLASS: &str = "local-path";
/// The provisioner name of the class.
pub const PROVISIONER: &str = "ferry.dev/local-path";
/// Where directories go when nothing else is configured.
pub const DEFAULT_ROOT: &str = "/var/lib/ferry/storage";
/// The namespace of helper pods.
const HELPER_NAMESPACE: &str = "kube-system";
/// The label of helper pods (naming their volume).
const HELPER_LABEL: &str = "storage.ferry.dev/delete-volume";

struct Context {
    client: kube::Client,
    root: PathBuf,
}

/// Runs the provisioner until its future is dropped; volumes' directories go under `root`.
pub async fn run(client: kube::Client, root: PathBuf) {
    ensure_class(&client).await;
    let context = Arc::new(Context { client, root });
    futures::join!(run_claims(context.clone()), run_volumes(context));
}

/// Creates the default StorageClass unless it exists, retrying until the API answers.
async fn ensure_class(client: &kube::Client) {
    let api: Api<StorageClass> = Api::all(client.clone());
    let class: StorageClass = serde_json::from_value(json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS, "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true",
        }},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }))
    .expect("a valid StorageClass");
    let mut backoff = crate::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match api.create(&PostParams::default(), &class).await {
            Ok(_) => {
                tracing::info!("created the default StorageClass {CLASS}");
                return;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => return,
            Err(e) => {
                tracing::debug!(error = %e, "cannot create the StorageClass {CLASS} yet");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

async fn run_claims(context: Arc<Context>) {
    let claims: Api<PersistentVolumeClaim> = Api::all(context.client.clone());
    Controller::new(claims, watcher::Config::default())
        .run(reconcile_claim, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "local-path provisioner (claims)");
            }
            futures::future::ready(())
        })
        .await;
}

async fn run_volumes(context: Arc<Context>) {
    let volumes: Api<PersistentVolume> = Api::all(context.client.clone());
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), HELPER_NAMESPACE);
    Controller::new(volumes, watcher::Config::default())
        .watches(
            pods,
            watcher::Config::default().labels(HELPER_LABEL),
            |p: Pod| p.labels().get(HELPER_LABEL).map(|v| ObjectRef::new(v)),
        )
        .run(reconcile_volume, error_policy, context)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "local-path provisioner (volumes)");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    _: Arc<Context>,
) -> Action {
    tracing::warn!(kind = %K::kind(&()), name = %object.meta().name.clone().unwrap_or_default(), %error, "local-path provisioner: retrying");
    Action::requeue(Duration::from_secs(2))
}

/// The directory of a claim's volume under `root`.
pub fn volume_dir(root: &std::path::Path, claim: &PersistentVolumeClaim) -> PathBuf {
    root.join(format!(
        "pvc-{}_{}_{}",
        claim.metadata.uid.as_deref().unwrap_or_default(),
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    ))
}

/// The volume the provisioner makes for `claim` on `node`, of `class`.
pub fn volume_for(
    root: &std::path::Path,
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
) -> PersistentVolume {
    let spec = claim.spec.clone().unwrap_or_default();
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned();
    let path = volume_dir(root, claim);
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default()),
            "annotations": {PROVISIONED_BY: PROVISIONER, "local.path.provisioner/selected-node": node},
        },
        "spec": {
            "capacity": {"storage": storage},
            "accessModes": spec.access_modes,
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": class.name_any(),
            "volumeMode": spec.volume_mode.unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]},
            ]}]}},
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim.namespace(),
                "name": claim.name_any(),
                "uid": claim.metadata.uid,
                "resourceVersion": claim.metadata.resource_version,
            },
        },
    }))
    .expect("a valid PersistentVolume")
}

fn annotation<'a, K: Resource>(o: &'a K, key: &str) -> Option<&'a str> {
    o.meta()
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

async fn reconcile_claim(
    claim: Arc<PersistentVolumeClaim>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    let unbound = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .is_none_or(str::is_empty);
    if !unbound
        || claim.metadata.deletion_timestamp.is_some()
        || annotation(&*claim, STORAGE_PROVISIONER) != Some(PROVISIONER)
    {
        return Ok(Action::await_change());
    }
    let Some(node) = annotation(&*claim, SELECTED_NODE) else {
        return Ok(Action::await_change());
    };
    let class_name = claim_class(&claim);
    let Some(class) = Api::<StorageClass>::all(context.client.clone())
        .get_opt(&class_name)
        .await?
    else {
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    if class.provisioner != PROVISIONER {
        return Ok(Action::await_change());
    }
    let volume = volume_for(&context.root, &claim, &class, node);
    let volumes: Api<PersistentVolume> = Api::all(context.client.clone());
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => {
            tracing::info!(claim = %format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any()), volume = %volume.name_any(), %node, "provisioned a local-path volume");
        }
        // Made before (its name is the claim's uid).
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

/// The node a provisioned volume's affinity names.
fn volume_node(v: &PersistentVolume) -> Option<String> {
    annotation(v, "local.path.provisioner/selected-node")
        .map(String::from)
        .or_else(|| {
            v.spec
                .as_ref()?
                .node_affinity
                .as_ref()?
                .required
                .as_ref()?
                .node_selector_terms
                .first()?
                .match_expressions
                .as_ref()?
                .iter()
                .find(|e| e.key == "kubernetes.io/hostname")?
                .values
                .as_ref()?
                .first()
                .cloned()
        })
}

async fn reconcile_volume(
    volume: Arc<PersistentVolume>,
    context: Arc<Context>,
) -> Result<Action, Error> {
    if annotation(&*volume, PROVISIONED_BY) != Some(PROVISIONER) {
        return Ok(Action::await_change());
    }
    let phase = volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default();
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or_default();
    if phase != "Released" || policy != "Delete" {
        return Ok(Action::await_change());
    }
    let name = volume.name_any();
    let volumes: Api<PersistentVolume> = Api::all(context.client.clone());
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), HELPER_NAMESPACE);
    let helper_name = format!("helper-pod-delete-{name}");
    let path = volume
        .spec
        .as_ref()
        .and_then(|s| {
            s.host_path
                .as_ref()
                .map(|h| h.path.clone())
                .or_else(|| s.local.as_ref().map(|l| l.path.clone()))
        })
        .unwrap_or_default();
    let path = PathBuf::from(path);
    let (Some(node), Some(parent)) = (volume_node(&volume), path.parent()) else {
        return Ok(Action::await_change());
    };
    match pods.get_opt(&helper_name).await? {
        None => {
            let helper = helper_pod(&helper_name, &name, &node, parent, &path);
            match pods.create(&PostParams::default(), &helper).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(pod) => {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or_default();
            match phase {
                "Succeeded" => {
                    match volumes.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                    let _ = pods.delete(&helper_name, &DeleteParams::default()).await;
                    tracing::info!(volume = %name, %node, "deleted a local-path volume and its directory");
                    Ok(Action::await_change())
                }
                "Failed" => {
                    let message = format!(
                        "failed to delete volume {name}: helper pod {HELPER_NAMESPACE}/{helper_name} failed on node {node}"
                    );
                    let patch = json!({"status": {"phase": "Failed", "reason": "VolumeFailedDelete", "message": message}});
                    volumes
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                    let _ = pods.delete(&helper_name, &DeleteParams::default()).await;
                    Ok(Action::await_change())
                }
                _ => Ok(Action::requeue(Duration::from_secs(5))),
            }
        }
    }
}

/// The pod that removes `path` on `node`, with `root` (its parent) mounted where it is.
fn helper_pod(
    name: &str,
    volume: &str,
    node: &str,
    root: &std::path::Path,
    path: &std::path::Path,
) -> Pod {
    let labels: BTreeMap<String, String> = [(HELPER_LABEL.to_string(), volume.to_string())].into();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": HELPER_NAMESPACE, "labels": labels},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "volumes": [{"name": "data", "hostPath": {
                "path": root.display().to_string(), "type": "DirectoryOrCreate"}}],
            "containers": [{
                "name": "helper-pod",
                "image": "busybox",
                "command": ["sh", "-c", "rm -rf \"$VOL_DIR\""],
                "env": [{"name": "VOL_DIR", "value": path.display().to_string()}],
                "volumeMounts": [{"name": "data", "mountPath": root.display().to_string()}],
            }],
        },
    }))
    .expect("a valid Pod")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_are_pre_bound_host_paths_on_the_chosen_node() {
        let claim: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "1234"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }))
        .unwrap();
        let class: StorageClass = serde_json::from_value(json!({
            "metadata": {"name": CLASS}, "provisioner": PROVISIONER, "reclaimPolicy": "Retain",
        }))
        .unwrap();
        let v = volume_for(std::path::Path::new("/srv/storage"), &claim, &class, "n1");
        assert_eq!(v.name_any(), "pvc-1234");
        let spec = v.spec.as_ref().unwrap();
        assert_eq!(
            spec.host_path.as_ref().unwrap().path,
            "/srv/storage/pvc-1234_ns_data"
        );
        assert_eq!(
            spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(
            spec.claim_ref.as_ref().unwrap().uid.as_deref(),
            Some("1234")
        );
        assert_eq!(volume_node(&v).as_deref(), Some("n1"));
    }
}

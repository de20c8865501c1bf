//! Volume binding, as kube-scheduler's `VolumeBinding` plugin:
//!
//! - a pod whose claim is missing or being deleted waits with the reason
//!   (`persistentvolumeclaim "x" not found`);
//! - a claim bound to a volume with node affinity limits the pod to the nodes that affinity
//!   admits (`node(s) had volume node affinity conflict` when none does);
//! - an unbound claim of an `Immediate` class keeps the pod waiting
//!   (`pod has unbound immediate PersistentVolumeClaims`) until the binder binds it;
//! - an unbound claim of a `WaitForFirstConsumer` class leaves the node open (or held to the
//!   node an earlier cycle chose, `volume.kubernetes.io/selected-node`); once the pod gets a
//!   node, [`annotate_selected_nodes`] writes that annotation on the claim before the pod's
//!   Binding is posted, so the binder or the provisioner acts on that node.
//!
//! The placement core stays pure: [`restrict`] turns the eligible nodes of each pending pod
//! into data of the snapshot (a per-cycle label on the eligible nodes and a matching node
//! selector term on the pod); it is computed from the informers' claims, volumes and
//! classes passed in as plain lists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ferry_sched_jobs::PodId;
use k8s_openapi::api::core::v1::{NodeSelector, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, Patch, PatchParams};
use serde::Deserialize;

use crate::objects::{Node, Pod};
use crate::snapshot::{Built, Rejected};

/// The annotation naming the node chosen for a claim's first consumer.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The prefix of the per-cycle node labels that carry volume node affinity.
const ELIGIBLE_LABEL: &str = "volumes.scheduling.ferry.dev/eligible-";

/// One volume of a pod as the scheduler keeps it: the claim it names, if any.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodVolume {
    /// The `persistentVolumeClaim` source.
    pub persistent_volume_claim: Option<ClaimSource>,
}

/// A `persistentVolumeClaim` volume source: the claim's name.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClaimSource {
    /// The claim, in the pod's namespace.
    pub claim_name: String,
}

/// The storage objects the informers hold.
#[derive(Debug, Default, Clone)]
pub struct StorageObjects {
    /// Every PersistentVolumeClaim.
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    /// Every PersistentVolume.
    pub volumes: Vec<Arc<PersistentVolume>>,
    /// Every StorageClass.
    pub classes: Vec<Arc<StorageClass>>,
}

/// What a pod's claims ask of its placement.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeNeeds {
    /// The nodes the pod may use (`None`: any).
    pub eligible: Option<BTreeSet<String>>,
    /// Unbound `WaitForFirstConsumer` claims that must learn the pod's node.
    pub delayed_claims: Vec<String>,
}

/// Why a pod cannot be placed because of its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeBlock {
    /// For people.
    pub message: String,
}

fn node_labels(node: &Node) -> BTreeMap<String, String> {
    node.labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Whether a node (name and labels) satisfies a required node selector.
pub fn selector_matches(
    selector: &NodeSelector,
    name: &str,
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
                    (r.key == "metadata.name").then_some(name),
                )
            })
    })
}

/// What `pod`'s claims ask of its placement among `nodes`, or why it cannot be placed.
pub fn needs(
    pod: &Pod,
    storage: &StorageObjects,
    nodes: &[Arc<Node>],
) -> Result<VolumeNeeds, VolumeBlock> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = VolumeNeeds::default();
    let limit = |out: &mut VolumeNeeds, allowed: BTreeSet<String>| {
        out.eligible = Some(match out.eligible.take() {
            None => allowed,
            Some(e) => e.intersection(&allowed).cloned().collect(),
        });
    };
    let mut unbound_immediate = false;
    for v in &pod.spec.volumes {
        let Some(source) = &v.persistent_volume_claim else {
            continue;
        };
        let name = source.claim_name.as_str();
        let Some(claim) = storage.claims.iter().find(|c| {
            c.metadata.namespace.as_deref() == Some(ns) && c.metadata.name.as_deref() == Some(name)
        }) else {
            return Err(VolumeBlock {
                message: format!("persistentvolumeclaim \"{name}\" not found"),
            });
        };
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(VolumeBlock {
                message: format!("persistentvolumeclaim \"{name}\" is being deleted"),
            });
        }
        let spec = claim.spec.clone().unwrap_or_default();
        let volume_name = spec.volume_name.clone().unwrap_or_default();
        if !volume_name.is_empty() {
            let Some(volume) = storage
                .volumes
                .iter()
                .find(|pv| pv.metadata.name.as_deref() == Some(volume_name.as_str()))
            else {
                return Err(VolumeBlock {
                    message:
                        "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
                            .into(),
                });
            };
            if let Some(required) = volume
                .spec
                .as_ref()
                .and_then(|s| s.node_affinity.as_ref())
                .and_then(|a| a.required.as_ref())
            {
                let allowed = nodes
                    .iter()
                    .filter(|n| {
                        selector_matches(
                            required,
                            n.metadata.name.as_deref().unwrap_or_default(),
                            &node_labels(n),
                        )
                    })
                    .filter_map(|n| n.metadata.name.clone())
                    .collect();
                limit(&mut out, allowed);
            }
            continue;
        }
        let class_name = spec.storage_class_name.clone().unwrap_or_default();
        let delayed = storage
            .classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class_name.as_str()))
            .is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !delayed {
            unbound_immediate = true;
            continue;
        }
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(SELECTED_NODE))
            .filter(|n| !n.is_empty());
        if let Some(node) = selected {
            // An earlier cycle chose (and maybe provisioned on) that node.
            limit(&mut out, [node.clone()].into());
        }
        out.delayed_claims.push(name.to_string());
    }
    if unbound_immediate {
        return Err(VolumeBlock {
            message: "pod has unbound immediate PersistentVolumeClaims".into(),
        });
    }
    if out.eligible.as_ref().is_some_and(BTreeSet::is_empty) {
        return Err(VolumeBlock {
            message: format!(
                "0/{} nodes are available: {} node(s) had volume node affinity conflict.",
                nodes.len(),
                nodes.len()
            ),
        });
    }
    Ok(out)
}

/// Applies the volume needs of every pending pod of `built`: jobs with a blocked pod are
/// rejected with its reason; eligible node sets become a per-cycle node label and a node
/// selector term. Returns the delayed claims of each pending pod.
pub fn restrict(
    built: &mut Built,
    pods: &[Arc<Pod>],
    nodes: &[Arc<Node>],
    storage: &StorageObjects,
) -> HashMap<PodId, Vec<String>> {
    let by_id: HashMap<PodId, &Arc<Pod>> = pods
        .iter()
        .map(|p| (crate::snapshot::pod_id(p), p))
        .collect();
    let mut delayed = HashMap::new();
    let mut sets: Vec<BTreeSet<String>> = Vec::new();
    let mut rejected: Vec<(String, String)> = Vec::new();
    // Pods of a controller that is no gang are placed independently: a blocked one is left
    // out alone, and its siblings are still scheduled.
    let mut rejected_pods: Vec<(String, PodId, String)> = Vec::new();
    for job in &mut built.snapshot.jobs {
        let gang = job.id.starts_with("podgroup ");
        for pending in &mut job.pods {
            let Some(pod) = by_id.get(&pending.id) else {
                continue;
            };
            if pod
                .spec
                .volumes
                .iter()
                .all(|v| v.persistent_volume_claim.is_none())
            {
                continue;
            }
            match needs(pod, storage, nodes) {
                Err(block) if gang => {
                    rejected.push((job.id.clone(), block.message));
                    break;
                }
                Err(block) => {
                    rejected_pods.push((job.id.clone(), pending.id.clone(), block.message));
                }
                Ok(need) => {
                    if let Some(eligible) = need.eligible {
                        let index = match sets.iter().position(|s| *s == eligible) {
                            Some(i) => i,
                            None => {
                                sets.push(eligible);
                                sets.len() - 1
                            }
                        };
                        pending
                            .request
                            .node_selector
                            .push((format!("{ELIGIBLE_LABEL}{index}"), "true".into()));
                    }
                    if !need.delayed_claims.is_empty() {
                        delayed.insert(pending.id.clone(), need.delayed_claims);
                    }
                }
            }
        }
    }
    for (index, set) in sets.iter().enumerate() {
        for node in &mut built.snapshot.nodes {
            if set.contains(&node.name) {
                node.labels
                    .push((format!("{ELIGIBLE_LABEL}{index}"), "true".into()));
            }
        }
    }
    let mut emptied: Vec<String> = Vec::new();
    for (job, pod, message) in rejected_pods {
        if let Some(j) = built.snapshot.jobs.iter_mut().find(|j| j.id == job) {
            j.pods.retain(|p| p.id != pod);
            if j.pods.is_empty() {
                emptied.push(job.clone());
            }
        }
        if let Some(pending) = built.pending.get_mut(&job) {
            pending.retain(|p| *p != pod);
        }
        delayed.remove(&pod);
        built.rejected.push(Rejected {
            job,
            pods: vec![pod],
            message,
            reason: "Unschedulable",
            whole_job: false,
        });
    }
    // A job left with no pod to place is no longer the cycle's (jobs that only run pods
    // stay: they count for quota and may be preemption victims).
    built
        .snapshot
        .jobs
        .retain(|j| !(j.pods.is_empty() && emptied.contains(&j.id)));
    for (job, message) in rejected {
        built.snapshot.jobs.retain(|j| j.id != job);
        let pods = built.pending.remove(&job).unwrap_or_default();
        for p in &pods {
            delayed.remove(p);
        }
        built.rejected.push(Rejected {
            job,
            pods,
            message,
            reason: "Unschedulable",
            whole_job: true,
        });
    }
    delayed
}

/// Writes `volume.kubernetes.io/selected-node` on the delayed claims of every pod about to
/// be bound (before its Binding, as kube-scheduler's PreBind does).
pub async fn annotate_selected_nodes(
    client: &kube::Client,
    binds: &[ferry_sched_jobs::outcome::Bind],
    delayed: &HashMap<PodId, Vec<String>>,
) {
    for bind in binds {
        let Some(claims) = delayed.get(&bind.pod) else {
            continue;
        };
        let ns = bind.pod.split('/').next().unwrap_or_default();
        let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
        for claim in claims {
            let patch =
                serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: bind.node}}});
            if let Err(e) = api
                .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pod = %bind.pod, %claim, error = %e, "cannot record the selected node on the claim");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(claims: &[&str]) -> Arc<Pod> {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "p", "namespace": "ns"},
                "spec": {"containers": [{"name": "c"}], "volumes": volumes},
            }))
            .unwrap(),
        )
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}}}))
            .unwrap(),
        )
    }

    fn storage() -> StorageObjects {
        let claim = |name: &str, class: &str, volume: Option<&str>| {
            Arc::new(
                serde_json::from_value::<PersistentVolumeClaim>(json!({
                    "metadata": {"name": name, "namespace": "ns"},
                    "spec": {"storageClassName": class, "volumeName": volume},
                }))
                .unwrap(),
            )
        };
        StorageObjects {
            claims: vec![
                claim("bound", "local", Some("pv1")),
                claim("late", "local", None),
                claim("now", "fast", None),
            ],
            volumes: vec![Arc::new(
                serde_json::from_value(json!({"metadata": {"name": "pv1"}, "spec": {
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}))
                .unwrap(),
            )],
            classes: vec![
                Arc::new(
                    serde_json::from_value(json!({"metadata": {"name": "local"},
                        "provisioner": "p", "volumeBindingMode": "WaitForFirstConsumer"}))
                    .unwrap(),
                ),
                Arc::new(
                    serde_json::from_value(json!({"metadata": {"name": "fast"},
                        "provisioner": "p", "volumeBindingMode": "Immediate"}))
                    .unwrap(),
                ),
            ],
        }
    }

    #[test]
    fn claims_limit_nodes_or_block_with_kubes_reasons() {
        let nodes = vec![node("n1"), node("n2")];
        let s = storage();
        let need = needs(&pod(&["bound", "late"]), &s, &nodes).unwrap();
        assert_eq!(need.eligible, Some(["n2".to_string()].into()));
        assert_eq!(need.delayed_claims, vec!["late".to_string()]);
        assert_eq!(
            needs(&pod(&["missing"]), &s, &nodes).unwrap_err().message,
            "persistentvolumeclaim \"missing\" not found"
        );
        assert_eq!(
            needs(&pod(&["now"]), &s, &nodes).unwrap_err().message,
            "pod has unbound immediate PersistentVolumeClaims"
        );
        let only_n1 = vec![node("n1")];
        assert!(
            needs(&pod(&["bound"]), &s, &only_n1)
                .unwrap_err()
                .message
                .contains("volume node affinity conflict")
        );
    }
}

//! The scheduling kinds: PodGroup (the scheduler-plugins shape, so Kubeflow jobs that create
//! PodGroups work), and Ferry's Queue, Reservation and ResourcePolicy. Their CRDs are the YAML
//! files under `deploy/crds/`, embedded here as [`CRDS`]; those files are generated from these
//! types (kube's `CustomResource` derive with schemars, in this crate's tests only, so the
//! binary carries no schema code): `crd_yaml_matches_the_rust_types` fails when they differ,
//! and `FERRY_BLESS=1 cargo test -p ferry-api crd_yaml` rewrites them.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use serde::{Deserialize, Serialize};

/// Label a pod carries to join a PodGroup (scheduler-plugins' key).
pub const POD_GROUP_LABEL: &str = "scheduling.x-k8s.io/pod-group";
/// Label binding a Namespace (or overriding it on a pod or PodGroup) to a Queue.
pub const QUEUE_LABEL: &str = "scheduling.ferry.dev/queue";
/// The queue of pods whose namespace names none.
pub const DEFAULT_QUEUE: &str = "default";
/// Annotation of a pod in an elastic PodGroup (more pods than `minMember`): an integer, absent
/// meaning 0. Ordered by it (then by name), the group's first `minMember` pods are its minimum
/// and the rest its surplus: grown lowest first into idle capacity, taken back highest first
/// under pressure. Elastic PyTorchJob workers carry their replica index + 1, a master none.
pub const SURPLUS_ORDER_ANNOTATION: &str = "scheduling.ferry.dev/surplus-order";
/// Ferry's scheduling API group.
pub const SCHEDULING_GROUP: &str = "scheduling.ferry.dev";

/// The CRD manifests, as (name, YAML).
pub const CRDS: [(&str, &str); 4] = [
    (
        "podgroups.scheduling.x-k8s.io",
        include_str!("../../../deploy/crds/podgroups.yaml"),
    ),
    (
        "queues.scheduling.ferry.dev",
        include_str!("../../../deploy/crds/queues.yaml"),
    ),
    (
        "reservations.scheduling.ferry.dev",
        include_str!("../../../deploy/crds/reservations.yaml"),
    ),
    (
        "resourcepolicies.scheduling.ferry.dev",
        include_str!("../../../deploy/crds/resourcepolicies.yaml"),
    ),
];

/// A group of pods scheduled all together or not at all.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "scheduling.x-k8s.io",
    version = "v1alpha1",
    kind = "PodGroup",
    doc = "A group of pods scheduled all together or not at all (scheduler-plugins shape).",
    namespaced,
    status = "PodGroupStatus",
    shortname = "pg",
    shortname = "pgs",
    printcolumn = r#"{"name":"Phase", "type":"string", "jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"MinMember", "type":"integer", "jsonPath":".spec.minMember"}"#,
    printcolumn = r#"{"name":"Scheduled", "type":"integer", "jsonPath":".status.scheduled"}"#,
    printcolumn = r#"{"name":"Running", "type":"integer", "jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Reason", "type":"string", "jsonPath":".status.conditions[0].reason", "priority":1}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[cfg_attr(not(test), kube(schema = "disabled"))]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PodGroupSpec {
    /// The least number of pods that must run at once.
    #[serde(default)]
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub min_member: i32,
    /// The least resources the group needs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_resources: Option<BTreeMap<String, IntOrString>>,
    /// How long a partial attempt may wait for the rest of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 0)))]
    pub schedule_timeout_seconds: Option<i32>,
}

/// What the scheduler reports about a PodGroup.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PodGroupStatus {
    /// `Pending`, `Scheduled`, `Running`, `Finished`, `Failed` (scheduler-plugins' phases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Pods bound to nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled: Option<i32>,
    /// Pods running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<i32>,
    /// Pods succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<i32>,
    /// Pods failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<i32>,
    /// The owner that created the group (as scheduler-plugins reports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occupied_by: Option<String>,
    /// When the scheduler first tried the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(extend("format" = "date-time")))]
    pub schedule_start_time: Option<String>,
    /// Why the group waits (`Scheduled=False` with a reason and message).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A status condition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Human message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(extend("format" = "date-time")))]
    pub last_transition_time: Option<String>,
}

/// A node of the queue tree with guaranteed quota, borrowing limits and fair-share weights.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "scheduling.ferry.dev",
    version = "v1alpha1",
    kind = "Queue",
    doc = "A node of the queue tree with guaranteed quota, borrowing limits and fair-share weights.",
    status = "QueueStatus",
    shortname = "q",
    printcolumn = r#"{"name":"Parent", "type":"string", "jsonPath":".spec.parent"}"#,
    printcolumn = r#"{"name":"Pending", "type":"integer", "jsonPath":".status.pendingJobs"}"#,
    printcolumn = r#"{"name":"Running", "type":"integer", "jsonPath":".status.runningJobs"}"#,
    printcolumn = r#"{"name":"GPU-Used", "type":"string", "jsonPath":".status.usage['nvidia.com/gpu']"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[cfg_attr(not(test), kube(schema = "disabled"))]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueSpec {
    /// The parent queue (none for a root queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Default fair-share weight for resources without their own (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub weight: Option<u32>,
    /// Per resource: guarantee, borrowing limit, weight.
    #[serde(default)]
    pub resources: Vec<QueueResource>,
}

/// A queue's terms for one resource.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueResource {
    /// `cpu`, `memory`, `nvidia.com/gpu`, `ferry.dev/gpu-milli` or `ferry.dev/gpu-memory`.
    pub name: String,
    /// Always available to the queue (reclaimed from borrowers when needed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guaranteed: Option<IntOrString>,
    /// How much above the guarantee the queue may borrow (none: no limit but its parent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub borrowing_limit: Option<IntOrString>,
    /// Fair-share weight for this resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub weight: Option<u32>,
}

/// What the scheduler reports about a Queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Jobs waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_jobs: Option<u32>,
    /// Jobs with pods bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_jobs: Option<u32>,
    /// Resources in use by the queue's subtree.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub usage: BTreeMap<String, String>,
    /// Guarantees in effect.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub guaranteed: BTreeMap<String, String>,
    /// Limits in effect (guarantee plus borrowing limit).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limit: BTreeMap<String, String>,
}

/// Resources held on chosen nodes for matching pods, until a TTL.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "scheduling.ferry.dev",
    version = "v1alpha1",
    kind = "Reservation",
    doc = "Resources held on chosen nodes for matching pods, until a TTL.",
    namespaced,
    status = "ReservationStatus",
    shortname = "rsv",
    printcolumn = r#"{"name":"Phase", "type":"string", "jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Nodes", "type":"string", "jsonPath":".spec.nodeNames"}"#,
    printcolumn = r#"{"name":"Expires", "type":"string", "jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Age", "type":"date", "jsonPath":".metadata.creationTimestamp"}"#
)]
#[cfg_attr(not(test), kube(schema = "disabled"))]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReservationSpec {
    /// Nodes on which the resources are held (the same amount on each).
    pub node_names: Vec<String>,
    /// What is held on each node.
    pub resources: BTreeMap<String, IntOrString>,
    /// The pods (of this namespace) that may use what is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelMatch>,
    /// How long the resources are held after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1)))]
    pub ttl_seconds: Option<i64>,
}

/// An equality label selector.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct LabelMatch {
    /// Labels that must all be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// What the scheduler reports about a Reservation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ReservationStatus {
    /// `Active` or `Expired`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// When the hold ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(extend("format" = "date-time")))]
    pub expires_at: Option<String>,
    /// Details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Ordered node units for the pods it selects: fill the first unit first, empty the last first.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "scheduling.ferry.dev",
    version = "v1alpha1",
    kind = "ResourcePolicy",
    doc = "Ordered node units for the pods it selects: fill the first unit first, empty the last first.",
    namespaced,
    status = "ResourcePolicyStatus",
    shortname = "rp"
)]
#[cfg_attr(not(test), kube(schema = "disabled"))]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicySpec {
    /// The pods of this namespace the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelMatch>,
    /// The units, in order of preference.
    #[cfg_attr(test, schemars(length(min = 1)))]
    pub units: Vec<ResourcePolicyUnit>,
}

/// One unit of a ResourcePolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicyUnit {
    /// Unit name.
    pub name: String,
    /// Nodes of the unit.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// Most pods of the policy in this unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// What is reported about a ResourcePolicy: its pods per unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicyStatus {
    /// Per unit, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<ResourcePolicyUnitStatus>,
}

/// One unit's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicyUnitStatus {
    /// Unit name.
    pub name: String,
    /// Pods of the policy in the unit.
    #[serde(default)]
    pub pods: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each CRD file: its name under `deploy/crds/`, a header comment, and the generated CRD.
    fn generated() -> Vec<(&'static str, &'static str, serde_json::Value)> {
        use kube::CustomResourceExt;
        let json = |crd| serde_json::to_value(crd).unwrap();
        vec![
            (
                "podgroups.yaml",
                "# PodGroup in the shape of kubernetes-sigs/scheduler-plugins \
                 (scheduling.x-k8s.io/v1alpha1):\n# pods join a group with the label \
                 scheduling.x-k8s.io/pod-group=<name>. Ferry adds\n# status.conditions (why \
                 the group is pending) and status.scheduled.\n",
                json(PodGroup::crd()),
            ),
            (
                "queues.yaml",
                "# Queue: a node of Ferry's queue tree (guarantees, borrowing limits, \
                 fair-share weights).\n",
                json(Queue::crd()),
            ),
            (
                "reservations.yaml",
                "# Reservation: resources held on chosen nodes for matching pods, until a \
                 TTL.\n",
                json(Reservation::crd()),
            ),
            (
                "resourcepolicies.yaml",
                "# ResourcePolicy: ordered node units for the pods it selects.\n",
                json(ResourcePolicy::crd()),
            ),
        ]
    }

    /// `deploy/crds/*.yaml` are the CRDs generated from the Rust types above;
    /// `FERRY_BLESS=1` rewrites them.
    #[test]
    fn crd_yaml_matches_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
        let bless = std::env::var_os("FERRY_BLESS").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for (file, header, crd) in generated() {
            let yaml = format!(
                "{header}# Generated from crates/ferry-api/src/scheduling.rs: do not edit; \
                 regenerate with\n# FERRY_BLESS=1 cargo test -p ferry-api crd_yaml\n{}",
                serde_saphyr::to_string(&crd).unwrap()
            );
            let path = dir.join(file);
            if bless {
                std::fs::write(&path, &yaml).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(yaml.as_str()) {
                stale.push(file);
            }
        }
        assert!(
            stale.is_empty(),
            "deploy/crds/{stale:?} differ from the Rust types; regenerate with \
             FERRY_BLESS=1 cargo test -p ferry-api crd_yaml"
        );
    }

    /// The generated CRDs keep what the hand-written ones had.
    #[test]
    fn generated_crds_keep_columns_names_subresources_and_validation() {
        let crds: BTreeMap<&str, serde_json::Value> = generated()
            .into_iter()
            .map(|(f, _, crd)| (f, crd))
            .collect();
        let pg = &crds["podgroups.yaml"]["spec"];
        assert_eq!(pg["names"]["shortNames"], serde_json::json!(["pg", "pgs"]));
        assert_eq!(pg["scope"], "Namespaced");
        let v = &pg["versions"][0];
        assert!(v["subresources"]["status"].is_object());
        let columns: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            [
                "Phase",
                "MinMember",
                "Scheduled",
                "Running",
                "Reason",
                "Age"
            ]
        );
        let props = &v["schema"]["openAPIV3Schema"]["properties"];
        assert_eq!(
            props["spec"]["properties"]["minMember"]["minimum"].as_f64(),
            Some(0.0)
        );
        assert_eq!(
            props["status"]["properties"]["scheduleStartTime"]["format"],
            "date-time"
        );
        let q = &crds["queues.yaml"]["spec"];
        assert_eq!(q["scope"], "Cluster");
        let rp = &crds["resourcepolicies.yaml"]["spec"]["versions"][0];
        assert!(rp["subresources"]["status"].is_object());
        assert_eq!(
            rp["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["units"]["minItems"]
                .as_i64(),
            Some(1)
        );
        assert_eq!(
            crds["reservations.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
                ["spec"]["required"],
            serde_json::json!(["nodeNames", "resources"])
        );
    }

    /// Each embedded manifest is the CRD of its name, as generated (not a check of the
    /// constant against itself: the YAML is parsed and compared with the types' CRDs).
    #[test]
    fn crd_manifests_name_their_kinds() {
        let generated: Vec<serde_json::Value> =
            generated().into_iter().map(|(_, _, crd)| crd).collect();
        assert_eq!(CRDS.len(), generated.len());
        for ((name, yaml), crd) in CRDS.iter().zip(&generated) {
            let parsed: serde_json::Value = serde_saphyr::from_str(yaml).unwrap();
            assert_eq!(parsed["metadata"]["name"], *name);
            assert_eq!(crd["metadata"]["name"], *name);
            assert_eq!(parsed["spec"]["names"], crd["spec"]["names"], "{name}");
        }
    }

    #[test]
    fn podgroup_round_trip() {
        let pg: PodGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {"name": "job", "namespace": "team-a"},
            "spec": {"minMember": 4, "minResources": {"nvidia.com/gpu": "4"}, "scheduleTimeoutSeconds": 60}
        }))
        .unwrap();
        assert_eq!(pg.spec.min_member, 4);
        let back = serde_json::to_value(&pg).unwrap();
        assert_eq!(back["spec"]["minResources"]["nvidia.com/gpu"], "4");
    }
}

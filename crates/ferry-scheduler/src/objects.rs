//! The slim pods and nodes the informers keep: only the fields the scheduler reads.
//!
//! A k8s-openapi `Pod` is several kilobytes even for a small pod (its `PodSpec`, `Container`
//! and `PodStatus` are large structs of optional fields, and every map is a `BTreeMap` whose
//! first node has room for eleven pairs); at 50,000 pods that was most of the scheduler's
//! memory. These types deserialize from the same JSON and skip everything else:
//!
//! - metadata: name, namespace, uid, resourceVersion, creationTimestamp, deletionTimestamp
//!   (in an [`ObjectMeta`], which the informers need), labels, and only the annotations the
//!   scheduler reads ([`KEPT_ANNOTATIONS`]);
//! - pod spec: nodeName, schedulerName, priority, nodeSelector, tolerations, overhead, and
//!   only `resources` of each container and init container, the claim of each
//!   `persistentVolumeClaim` volume; pod status: phase, startTime,
//!   and the `PodScheduled` condition;
//! - node spec: taints, unschedulable; node status: allocatable, and the type and status of
//!   each condition.
//!
//! Maps are kept as [`Pairs`]: sorted vectors with one pair per key, as the `BTreeMap` they
//! replace would hold them.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use ferry_api::requests::ContainerResources;
use k8s_openapi::api::core::v1::{Taint, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The annotations the scheduler reads; the informers drop every other one.
pub const KEPT_ANNOTATIONS: [&str; 3] = [
    ferry_api::gpu::POD_ASSIGNED_ANNOTATION,
    ferry_api::gpu::NODE_DEVICES_ANNOTATION,
    ferry_api::scheduling::SURPLUS_ORDER_ANNOTATION,
];

/// The pairs of a JSON object, sorted by key with one pair per key (the last one written,
/// as a `BTreeMap` would keep): a map in a vector, without a map's eleven-slot nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pairs<V>(Vec<(String, V)>);

impl<V> Default for Pairs<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Pairs<V> {
    /// The pairs of `pairs` (sorted, and the last of each key kept).
    pub fn new(mut pairs: Vec<(String, V)>) -> Self {
        // Reversed first so a stable sort puts the last pair of each key first, and
        // `dedup` keeps it.
        pairs.reverse();
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        pairs.shrink_to_fit();
        Self(pairs)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    /// The pairs, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<V> IntoIterator for Pairs<V> {
    type Item = (String, V);
    type IntoIter = std::vec::IntoIter<(String, V)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// Reads a JSON object (or `null`, as no pairs) into [`Pairs`], keeping the keys `keep`
/// accepts.
struct PairsVisitor<V> {
    keep: fn(&str) -> bool,
    value: PhantomData<V>,
}

impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
    type Value = Pairs<V>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Pairs::default())
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Pairs::default())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut pairs = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if (self.keep)(&key) {
                pairs.push((key, map.next_value::<V>()?));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Pairs::new(pairs))
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_option(PairsVisitor {
            keep: |_| true,
            value: PhantomData,
        })
    }
}

/// Only the annotations in [`KEPT_ANNOTATIONS`].
fn kept_annotations<'de, D: Deserializer<'de>>(d: D) -> Result<Pairs<String>, D::Error> {
    d.deserialize_option(PairsVisitor {
        keep: |k| KEPT_ANNOTATIONS.contains(&k),
        value: PhantomData,
    })
}

/// A value, or its default where the JSON has `null`.
fn or_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The metadata as read; see [`Meta::split`].
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct MetaWire {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    labels: Pairs<String>,
    #[serde(deserialize_with = "kept_annotations")]
    annotations: Pairs<String>,
    #[serde(deserialize_with = "controller_owner")]
    owner_references: Option<Owner>,
}

/// An object's controller: the owner reference with `controller: true` (kind, name and uid
/// only; the rest of `ownerReferences` is dropped).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Owner {
    /// Its apiVersion, e.g. `apps/v1`.
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    /// Its kind, e.g. `ReplicaSet`.
    #[serde(default)]
    pub kind: String,
    /// Its name (in the object's namespace).
    #[serde(default)]
    pub name: String,
    /// Its uid.
    #[serde(default)]
    pub uid: String,
}

/// One owner reference as read.
#[derive(Deserialize)]
struct OwnerWire {
    #[serde(flatten)]
    owner: Owner,
    #[serde(default)]
    controller: Option<bool>,
}

/// The controller among `ownerReferences` (at most one may have `controller: true`).
fn controller_owner<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Owner>, D::Error> {
    let all: Option<Vec<OwnerWire>> = Option::deserialize(d)?;
    Ok(all
        .into_iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.owner))
}

impl MetaWire {
    /// The informers' [`ObjectMeta`] (without labels and annotations), the labels, and the
    /// kept annotations.
    fn split(self) -> (ObjectMeta, Pairs<String>, Pairs<String>) {
        (
            ObjectMeta {
                name: self.name,
                namespace: self.namespace,
                uid: self.uid,
                resource_version: self.resource_version,
                creation_timestamp: self.creation_timestamp,
                deletion_timestamp: self.deletion_timestamp,
                ..ObjectMeta::default()
            },
            self.labels,
            self.annotations,
        )
    }
}

/// The resources of a container.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// Requests by resource name.
    pub requests: Pairs<Quantity>,
    /// Limits by resource name.
    pub limits: Pairs<Quantity>,
}

/// A container: only its resources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Its requests and limits.
    #[serde(deserialize_with = "or_default")]
    pub resources: Resources,
}

impl ContainerResources for Container {
    fn request(&self, name: &str) -> Option<&Quantity> {
        self.resources.requests.get(name)
    }

    fn limit(&self, name: &str) -> Option<&Quantity> {
        self.resources.limits.get(name)
    }
}

/// What the scheduler reads of a pod's spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The node it is bound to.
    pub node_name: Option<String>,
    /// The scheduler that places it.
    pub scheduler_name: Option<String>,
    /// Its priority.
    pub priority: Option<i32>,
    /// Labels its node must have.
    pub node_selector: Pairs<String>,
    /// The taints it tolerates.
    #[serde(deserialize_with = "or_default")]
    pub tolerations: Vec<Toleration>,
    /// Resources taken beyond its containers.
    pub overhead: Pairs<Quantity>,
    /// Its containers.
    #[serde(deserialize_with = "or_default")]
    pub containers: Vec<Container>,
    /// Its init containers.
    #[serde(deserialize_with = "or_default")]
    pub init_containers: Vec<Container>,
    /// Its volumes: only the claims they name ([`crate::volume_binding`]).
    #[serde(deserialize_with = "or_default")]
    pub volumes: Vec<crate::volume_binding::PodVolume>,
}

/// A pod's `PodScheduled` condition: what the scheduler last reported, as the API server
/// holds it (reports are compared with it, not with what was sent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ScheduledCondition {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason.
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// One condition as read (only the `PodScheduled` one is kept).
#[derive(Default, Deserialize)]
#[serde(default)]
struct ConditionWire {
    #[serde(rename = "type", deserialize_with = "or_default")]
    type_: String,
    #[serde(deserialize_with = "or_default")]
    status: String,
    #[serde(deserialize_with = "or_default")]
    reason: String,
    #[serde(deserialize_with = "or_default")]
    message: String,
}

/// The `PodScheduled` condition of a `conditions` list.
fn scheduled_condition<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<ScheduledCondition>, D::Error> {
    let all: Option<Vec<ConditionWire>> = Option::deserialize(d)?;
    Ok(all
        .into_iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .map(|c| ScheduledCondition {
            status: c.status,
            reason: c.reason,
            message: c.message,
        }))
}

/// What the scheduler reads of a pod's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    pub phase: Option<String>,
    /// When its kubelet started it.
    pub start_time: Option<Time>,
    /// Its `PodScheduled` condition.
    #[serde(rename = "conditions", deserialize_with = "scheduled_condition")]
    pub scheduled: Option<ScheduledCondition>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PodWire {
    #[serde(deserialize_with = "or_default")]
    metadata: MetaWire,
    #[serde(deserialize_with = "or_default")]
    spec: PodSpec,
    #[serde(deserialize_with = "or_default")]
    status: PodStatus,
}

/// A pod as the scheduler's informer keeps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "PodWire")]
pub struct Pod {
    /// Name, namespace, uid, resourceVersion, creation and deletion timestamps.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Pairs<String>,
    /// Its annotations among [`KEPT_ANNOTATIONS`].
    pub annotations: Pairs<String>,
    /// Its controller (the owner reference with `controller: true`).
    pub owner: Option<Owner>,
    /// Its spec.
    pub spec: PodSpec,
    /// Its status.
    pub status: PodStatus,
}

impl From<PodWire> for Pod {
    fn from(mut w: PodWire) -> Self {
        let owner = w.metadata.owner_references.take();
        let (metadata, labels, annotations) = w.metadata.split();
        Self {
            metadata,
            labels,
            annotations,
            owner,
            spec: w.spec,
            status: w.status,
        }
    }
}

impl Pod {
    /// The effective requests of its containers.
    pub fn requests(
        &self,
    ) -> Result<ferry_api::requests::PodRequests, ferry_api::requests::RequestsError> {
        ferry_api::requests::PodRequests::of_containers(
            &self.spec.containers,
            &self.spec.init_containers,
            |name| self.spec.overhead.get(name),
        )
    }
}

/// The type and status of a node condition.
#[derive(Debug, Clone, Deserialize)]
pub struct NodeCondition {
    /// `Ready`, `MemoryPressure`, …
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
}

/// What the scheduler reads of a node's spec.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeSpec {
    /// Its taints.
    #[serde(deserialize_with = "or_default")]
    pub taints: Vec<Taint>,
    /// Whether it is cordoned.
    pub unschedulable: Option<bool>,
}

/// What the scheduler reads of a node's status.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatus {
    /// What pods may take, by resource name.
    pub allocatable: Pairs<Quantity>,
    /// Its conditions.
    #[serde(deserialize_with = "or_default")]
    pub conditions: Vec<NodeCondition>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct NodeWire {
    #[serde(deserialize_with = "or_default")]
    metadata: MetaWire,
    #[serde(deserialize_with = "or_default")]
    spec: NodeSpec,
    #[serde(deserialize_with = "or_default")]
    status: NodeStatus,
}

/// A node as the scheduler's informer keeps it.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "NodeWire")]
pub struct Node {
    /// Name, uid, resourceVersion, creation and deletion timestamps.
    pub metadata: ObjectMeta,
    /// Its labels.
    pub labels: Pairs<String>,
    /// Its annotations among [`KEPT_ANNOTATIONS`].
    pub annotations: Pairs<String>,
    /// Its spec.
    pub spec: NodeSpec,
    /// Its status.
    pub status: NodeStatus,
}

impl From<NodeWire> for Node {
    fn from(w: NodeWire) -> Self {
        let (metadata, labels, annotations) = w.metadata.split();
        Self {
            metadata,
            labels,
            annotations,
            spec: w.spec,
            status: w.status,
        }
    }
}

/// A ReplicaSet as the scheduler's informer keeps it: only its name, namespace, uid and
/// controller (its Deployment, when one owns it), so a pod of the ReplicaSet is accounted to
/// the Deployment.
#[derive(Debug, Clone, Deserialize)]
#[serde(from = "OwnedWire")]
pub struct ReplicaSet {
    /// Name, namespace, uid, resourceVersion, creation and deletion timestamps.
    pub metadata: ObjectMeta,
    /// Its controller.
    pub owner: Option<Owner>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct OwnedWire {
    #[serde(deserialize_with = "or_default")]
    metadata: MetaWire,
}

impl From<OwnedWire> for ReplicaSet {
    fn from(mut w: OwnedWire) -> Self {
        let owner = w.metadata.owner_references.take();
        let (metadata, _, _) = w.metadata.split();
        Self { metadata, owner }
    }
}

impl kube::Resource for ReplicaSet {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("ReplicaSet")
    }

    fn group(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("apps")
    }

    fn version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn api_version(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("apps/v1")
    }

    fn plural(_: &()) -> Cow<'_, str> {
        Cow::Borrowed("replicasets")
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

macro_rules! core_v1_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("")
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }

            fn api_version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

core_v1_resource!(Pod, "Pod", "pods", k8s_openapi::NamespaceResourceScope);
core_v1_resource!(Node, "Node", "nodes", k8s_openapi::ClusterResourceScope);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_keep_what_the_scheduler_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "labels": {"b": "2", "a": "1"},
                "annotations": {"ferry.dev/gpu-assigned": "0,1", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "x"}], "ownerReferences": null},
            "spec": {"nodeName": "n", "schedulerName": "s", "priority": 5, "tolerations": null,
                "nodeSelector": {"zone": "a"}, "overhead": {"cpu": "100m"},
                "containers": [{"name": "c", "image": "i", "command": ["sleep"], "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi", "nvidia.com/gpu": 2}}}],
                "initContainers": [{"name": "i", "resources": null}]},
            "status": {"phase": "Running", "startTime": "2024-01-01T00:00:01Z", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(pod.metadata.name.as_deref(), Some("p"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert!(pod.metadata.creation_timestamp.is_some());
        let labels: Vec<_> = pod.labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(labels, ["a", "b"]);
        assert_eq!(pod.annotations.iter().count(), 1);
        assert_eq!(
            pod.spec.node_selector.get("zone").map(String::as_str),
            Some("a")
        );
        assert_eq!(pod.spec.priority, Some(5));
        assert!(pod.spec.tolerations.is_empty());
        assert_eq!(pod.status.phase.as_deref(), Some("Running"));
        assert_eq!(pod.status.scheduled, None);
        let waiting: Pod = serde_json::from_value(json!({"metadata": {"name": "w"}, "status": {
            "conditions": [{"type": "Ready", "status": "False", "message": "x"},
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "no", "x": null,
                 "lastTransitionTime": "2024-01-01T00:00:00Z", "lastProbeTime": null}]}}))
        .unwrap();
        assert_eq!(
            waiting.status.scheduled,
            Some(ScheduledCondition {
                status: "False".into(),
                reason: "Unschedulable".into(),
                message: "no".into()
            })
        );
        let r = pod.requests().unwrap();
        assert_eq!((r.cpu_milli, r.memory_bytes, r.gpus), (1100, 1 << 30, 2));
        // The same as the full pod gives.
        let full: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"overhead": {"cpu": "100m"}, "containers": [{"name": "c",
                "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi", "nvidia.com/gpu": 2}}}]}
        }))
        .unwrap();
        let f = ferry_api::requests::PodRequests::of(full.spec.as_ref().unwrap()).unwrap();
        assert_eq!(f, r);
    }

    #[test]
    fn pairs_keep_the_last_of_each_key_in_order() {
        let p: Pairs<String> =
            serde_json::from_str(r#"{"b": "1", "a": "2", "b": "3", "c": "4"}"#).unwrap();
        let v: Vec<(&str, &str)> = p.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(v, [("a", "2"), ("b", "3"), ("c", "4")]);
        assert_eq!(p.get("b").map(String::as_str), Some("3"));
        assert_eq!(p.get("d"), None);
        let none: Pairs<String> = serde_json::from_str("null").unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn empty_objects_read() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}})).unwrap();
        assert!(pod.spec.containers.is_empty());
        let node: Node =
            serde_json::from_value(json!({"metadata": {"name": "n"}, "spec": null})).unwrap();
        assert!(node.spec.taints.is_empty());
    }
}

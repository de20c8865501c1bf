//! One strategy per kind, as kube-apiserver's registry has: everything that differs between
//! kinds (defaulting and preparation on create and update, validation, status handling,
//! printer columns, selectable fields, graceful deletion, hooks after writes) lives in the
//! kind's own file, and [`crate::service::Service`] runs the generic steps around it.
//!
//! Adding a built-in kind is one file here plus one line in [`BUILTINS`].

use serde_json::{Value, json};

use crate::authz::review;
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta::{self, human_age};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation;

pub mod configmap;
pub mod controllerrevision;
pub mod crd;
pub mod cronjob;
pub mod csr;
pub mod custom;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod event;
pub mod job;
pub mod lease;
pub mod limitrange;
pub mod namespace;
pub mod node;
pub mod persistentvolume;
pub mod persistentvolumeclaim;
pub mod pod;
pub mod poddisruptionbudget;
pub mod priorityclass;
pub mod rbac;
pub mod replicaset;
pub mod resourcequota;
pub mod runtimeclass;
pub mod secret;
pub mod service;
pub mod serviceaccount;
pub mod statefulset;
pub mod storageclass;
pub mod tokenreview;

/// The built-in kinds: one line per kind.
pub static BUILTINS: &[StrategyRef] = &[
    StrategyRef::new("namespaces", &namespace::Namespaces),
    StrategyRef::new("nodes", &node::Nodes),
    StrategyRef::new("pods", &pod::Pods),
    StrategyRef::new("events", &event::Events),
    StrategyRef::new("configmaps", &configmap::ConfigMaps),
    StrategyRef::new("secrets", &secret::Secrets),
    StrategyRef::new("services", &service::Services),
    StrategyRef::new("endpoints", &endpoints::Endpoints),
    StrategyRef::new("endpointslices", &endpointslice::EndpointSlices),
    StrategyRef::new("serviceaccounts", &serviceaccount::ServiceAccounts),
    StrategyRef::new("leases", &lease::Leases),
    StrategyRef::new("priorityclasses", &priorityclass::PriorityClasses),
    StrategyRef::new("runtimeclasses", &runtimeclass::RuntimeClasses),
    StrategyRef::new("resourcequotas", &resourcequota::ResourceQuotas),
    StrategyRef::new("limitranges", &limitrange::LimitRanges),
    StrategyRef::new("customresourcedefinitions", &crd::CustomResourceDefinitions),
    StrategyRef::new("roles", &rbac::Roles),
    StrategyRef::new("clusterroles", &rbac::ClusterRoles),
    StrategyRef::new("rolebindings", &rbac::RoleBindings),
    StrategyRef::new("clusterrolebindings", &rbac::ClusterRoleBindings),
    StrategyRef::new(
        "selfsubjectaccessreviews",
        &review::SELF_SUBJECT_ACCESS_REVIEWS,
    ),
    StrategyRef::new("subjectaccessreviews", &review::SUBJECT_ACCESS_REVIEWS),
    StrategyRef::new(
        "localsubjectaccessreviews",
        &review::LOCAL_SUBJECT_ACCESS_REVIEWS,
    ),
    StrategyRef::new(
        "selfsubjectrulesreviews",
        &review::SELF_SUBJECT_RULES_REVIEWS,
    ),
    StrategyRef::new("selfsubjectreviews", &review::SELF_SUBJECT_REVIEWS),
    StrategyRef::new(
        "certificatesigningrequests",
        &csr::CertificateSigningRequests,
    ),
    StrategyRef::new("tokenreviews", &tokenreview::TokenReviews),
    StrategyRef::new("persistentvolumes", &persistentvolume::PersistentVolumes),
    StrategyRef::new(
        "persistentvolumeclaims",
        &persistentvolumeclaim::PersistentVolumeClaims,
    ),
    StrategyRef::new("storageclasses", &storageclass::StorageClasses),
    StrategyRef::new("deployments", &deployment::Deployments),
    StrategyRef::new("replicasets", &replicaset::ReplicaSets),
    StrategyRef::new("statefulsets", &statefulset::StatefulSets),
    StrategyRef::new("daemonsets", &daemonset::DaemonSets),
    StrategyRef::new(
        "controllerrevisions",
        &controllerrevision::ControllerRevisions,
    ),
    StrategyRef::new("jobs", &job::Jobs),
    StrategyRef::new("cronjobs", &cronjob::CronJobs),
    StrategyRef::new(
        "poddisruptionbudgets",
        &poddisruptionbudget::PodDisruptionBudgets,
    ),
];

/// The strategy of every custom resource (served from a CRD).
pub static CUSTOM: StrategyRef = StrategyRef::new("custom resources", &custom::CustomResources);

/// The resources of the built-in kinds.
pub fn builtin_resources() -> Vec<ResourceInfo> {
    BUILTINS
        .iter()
        .filter_map(|s| {
            let mut info = s.0.resource()?;
            info.strategy = *s;
            Some(info)
        })
        .collect()
}

/// Field labels every kind can be selected by.
pub const METADATA_FIELDS: &[&str] = &["metadata.name", "metadata.namespace"];

/// The per-kind behaviour of the API. Every method but [`Strategy::decode`] has the
/// behaviour most kinds want as its default.
pub trait Strategy: Send + Sync + 'static {
    /// The built-in resource this strategy serves; `None` for custom resources (their
    /// resources come from CRDs).
    fn resource(&self) -> Option<ResourceInfo> {
        None
    }

    /// Whether the resource only answers `create` and stores nothing (access reviews).
    fn create_only(&self) -> bool {
        false
    }

    /// Why `name` cannot name a new object, if it cannot.
    fn name_problem(&self, name: &str) -> Option<String> {
        validation::dns_subdomain_problem(name)
    }

    /// Normalizes the object through the kind's schema (typed form or CRD schema) and returns
    /// the paths of the fields it does not know.
    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>>;

    /// Defaults and resets fields of a new object (status included).
    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        _object: &mut Value,
    ) -> ApiResult<()> {
        Ok(())
    }

    /// Sets what the server takes from the requesting user rather than the body (a
    /// CertificateSigningRequest's requester), after [`Strategy::prepare_for_create`].
    fn prepare_for_create_by(&self, _user: Option<&crate::auth::UserInfo>, _object: &mut Value) {}

    /// Prepares an update through the `approval` subresource (CertificateSigningRequests):
    /// by default, as a status update.
    fn prepare_for_approval_update(&self, old: &Value, new: &mut Value) {
        self.prepare_for_status_update(old, new)
    }

    /// Prepares an update of the main resource: with a status subresource, the status stays
    /// as it was.
    fn prepare_for_update(&self, info: &ResourceInfo, old: &Value, new: &mut Value) {
        if info.status {
            keep_field(old, new, "status");
        }
    }

    /// Takes what an update newly needs from a shared pool (a Service's node ports).
    fn allocate_on_update(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        _old: &Value,
        _new: &mut Value,
    ) -> ApiResult<()> {
        Ok(())
    }

    /// Prepares an update of the status subresource: only the status changes.
    fn prepare_for_status_update(&self, old: &Value, new: &mut Value) {
        let status = new.get("status").cloned();
        *new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                new.as_object_mut().map(|o| o.remove("status"));
            }
        }
    }

    /// Validates an object about to be written (metadata is checked for every kind).
    fn validate(&self, _object: &Value, _causes: &mut Vec<FieldCause>) {}

    /// Validates an update beyond [`Strategy::validate`]: what may not change.
    fn validate_update(&self, _old: &Value, _new: &Value, _causes: &mut Vec<FieldCause>) {}

    /// The columns of `kubectl get`; `None` takes the CRD's printer columns.
    fn columns(&self) -> Option<Vec<Column>> {
        None
    }

    /// The cells of one row, matching [`Strategy::columns`].
    fn cells(&self, object: &Value) -> Vec<Value> {
        name_and_age(object)
    }

    /// Field labels this kind can be selected by, besides [`METADATA_FIELDS`].
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// The object path a selectable field label reads, where it differs from the label.
    fn field_path(&self, _label: &str) -> Option<&'static str> {
        None
    }

    /// Seconds the object waits before it goes (graceful deletion); 0 deletes at once.
    fn deletion_grace(&self, _object: &Value, _requested: Option<i64>) -> i64 {
        0
    }

    /// Whether an object marked for deletion with `grace` stays until someone else
    /// finishes it (a node agent, a controller), even without finalizers.
    fn awaits_termination(&self, _object: &Value, _grace: i64) -> bool {
        false
    }

    /// Changes made when the object is marked for deletion.
    fn mark_deleting(&self, _object: &mut Value) {}

    /// Gives back what [`Strategy::prepare_for_create`] took from a shared pool when the
    /// object is not stored after all (invalid, or a dry run).
    fn release(&self, _service: &Service, _object: &Value) {}

    /// Runs after the object was created or updated.
    fn after_write(&self, _service: &Service, _object: &Value) {}

    /// Runs after the object is gone for good.
    fn after_delete(&self, _service: &Service, _object: &Value) {}
}

/// A strategy with a name, so that resources holding it can be compared and printed.
#[derive(Clone, Copy)]
pub struct StrategyRef(pub &'static dyn Strategy, &'static str);

impl StrategyRef {
    /// A reference to `strategy`, named for logs and comparisons.
    pub const fn new(name: &'static str, strategy: &'static dyn Strategy) -> Self {
        Self(strategy, name)
    }
}

impl std::ops::Deref for StrategyRef {
    type Target = dyn Strategy;
    fn deref(&self) -> &Self::Target {
        self.0
    }
}

impl std::fmt::Debug for StrategyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.1)
    }
}

impl PartialEq for StrategyRef {
    fn eq(&self, other: &Self) -> bool {
        self.1 == other.1
    }
}

impl Eq for StrategyRef {}

/// Normalizes a built-in object through its typed form `T` and returns the unknown fields.
pub fn decode_typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    info: &ResourceInfo,
    object: &mut Value,
) -> ApiResult<Vec<String>> {
    let typed = serde_json::from_value::<T>(object.clone())
        .and_then(serde_json::to_value)
        .map_err(|e| {
            ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
    let unknown = validation::unknown_fields(object, &typed);
    *object = typed;
    Ok(unknown)
}

/// Sets `new[field]` to `old[field]` (removing it where `old` has none).
pub fn keep_field(old: &Value, new: &mut Value, field: &str) {
    match old.get(field) {
        Some(v) => new[field] = v.clone(),
        None => {
            new.as_object_mut().map(|o| o.remove(field));
        }
    }
}

/// The `Name` column.
pub fn name_column() -> Column {
    Column::new(
        "Name",
        "string",
        0,
        "Name must be unique within a namespace.",
    )
}

/// The `Age` column.
pub fn age_column() -> Column {
    Column::new("Age", "string", 0, "Time since the object was created.")
}

/// The name and age cells.
pub fn name_and_age(object: &Value) -> Vec<Value> {
    vec![json!(meta::name(object)), age(object)]
}

/// The age cell.
pub fn age(object: &Value) -> Value {
    json!(human_age(meta::meta_str(object, "creationTimestamp")))
}

/// A string at a JSON pointer, or "".
pub fn str_at<'a>(o: &'a Value, pointer: &str) -> &'a str {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `<none>` for the empty string.
pub fn or_none(s: &str) -> &str {
    if s.is_empty() { "<none>" } else { s }
}

/// The number of entries of a map.
pub fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// The object's `field`, made an object if missing.
pub fn object_field<'a>(v: &'a mut Value, field: &str) -> &'a mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let Value::Object(obj) = v else {
        unreachable!("made an object")
    };
    let f = obj.entry(field).or_insert_with(|| json!({}));
    if !f.is_object() {
        *f = json!({});
    }
    let Value::Object(f) = f else {
        unreachable!("made an object")
    };
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_serves_one_resource_with_matching_columns() {
        let resources = builtin_resources();
        assert_eq!(resources.len(), BUILTINS.len());
        let empty = json!({"metadata": {"name": "x"}});
        for info in &resources {
            let columns = info
                .strategy
                .columns()
                .expect("built-in kinds print columns");
            assert_eq!(
                info.strategy.cells(&empty).len(),
                columns.len(),
                "{}",
                info.plural
            );
        }
        assert!(CUSTOM.resource().is_none());
    }
}

//! PersistentVolumeClaims: a pod's request for storage.
//!
//! As kube-apiserver: defaults (`volumeMode: Filesystem`, phase `Pending`), the default
//! StorageClass (`storageclass.kubernetes.io/is-default-class`) on a claim that names none
//! (the `DefaultStorageClass` admission plugin), the `kubernetes.io/pvc-protection`
//! finalizer (the `StorageObjectInUseProtection` plugin), the validation of
//! `pkg/apis/core/validation` (access modes, a storage request, an immutable spec but for a
//! growing request and `volumeAttributesClassName`), growth only where the class allows
//! expansion (the `PersistentVolumeClaimResize` plugin), and kubectl's columns.

use serde_json::{Value, json};

use super::persistentvolume::{ACCESS_MODES, access_modes_short};
use super::storageclass::default_class;
use super::{Strategy, age, age_column, name_column, object_field, str_at};
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;
use crate::validation::label_selector_causes as selector_causes;

/// The finalizer that keeps a claim while a pod uses it.
pub const PVC_PROTECTION_FINALIZER: &str = "kubernetes.io/pvc-protection";

/// The strategy of PersistentVolumeClaims.
pub struct PersistentVolumeClaims;

/// The `spec.resources.requests.storage` of a claim, parsed to bytes.
fn requested_bytes(o: &Value) -> Option<i64> {
    o.pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(|q| ferry_api::quantity::parse_units(q).ok())
}

impl Strategy for PersistentVolumeClaims {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "",
                "v1",
                "persistentvolumeclaims",
                "PersistentVolumeClaim",
                true,
                &["pvc"],
            )
            .with_status(),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(info, object)
    }

    fn prepare_for_create(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        let class = default_class(service);
        let spec = object_field(object, "spec");
        spec.entry("volumeMode").or_insert(json!("Filesystem"));
        // DefaultStorageClass: only a claim that does not set the field (not "") is defaulted.
        let beta = object
            .pointer("/metadata/annotations/volume.beta.kubernetes.io~1storage-class")
            .is_some();
        if object["spec"].get("storageClassName").is_none()
            && !beta
            && let Some(class) = class
        {
            object["spec"]["storageClassName"] = json!(class);
        }
        object["status"] = json!({"phase": "Pending"});
        add_finalizer(object, PVC_PROTECTION_FINALIZER);
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        // Defaults apply to every write, as kube-apiserver's decoding does.
        object_field(new, "spec")
            .entry("volumeMode")
            .or_insert(json!("Filesystem"));
    }

    fn allocate_on_update(
        &self,
        service: &Service,
        _info: &ResourceInfo,
        old: &Value,
        new: &mut Value,
    ) -> ApiResult<()> {
        // PersistentVolumeClaimResize: a bound claim grows only where its class allows it.
        let (Some(before), Some(after)) = (requested_bytes(old), requested_bytes(new)) else {
            return Ok(());
        };
        if after <= before || str_at(old, "/status/phase") != "Bound" {
            return Ok(());
        }
        let class = str_at(new, "/spec/storageClassName");
        let expandable = !class.is_empty()
            && service
                .store
                .get(&ferry_store::ObjectKey::new(
                    "storage.k8s.io/storageclasses",
                    "",
                    class,
                ))
                .is_some_and(|sc| sc.value["allowVolumeExpansion"].as_bool() == Some(true));
        if expandable {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "persistentvolumeclaims \"{}\" is forbidden: only dynamically provisioned pvc can be resized and the storageclass that provisions the pvc must support resize",
                meta::name(new)
            )))
        }
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let spec = &o["spec"];
        let modes: Vec<&str> = spec["accessModes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if modes.is_empty() {
            causes.push(FieldCause {
                field: "spec.accessModes".into(),
                reason: "FieldValueRequired",
                message: "Required value: at least 1 access mode is required".into(),
            });
        }
        for m in &modes {
            if !ACCESS_MODES.contains(m) {
                causes.push(FieldCause::not_supported(
                    "spec.accessModes",
                    m,
                    ACCESS_MODES,
                ));
            }
        }
        if modes.contains(&"ReadWriteOncePod") && modes.len() > 1 {
            causes.push(FieldCause::forbidden(
                "spec.accessModes",
                "may not use ReadWriteOncePod with other access modes",
            ));
        }
        match spec.pointer("/resources/requests/storage") {
            None => causes.push(FieldCause::required("spec.resources[storage]")),
            Some(q) => {
                let text = q.as_str().unwrap_or_default();
                match ferry_api::quantity::parse_units(text) {
                    Ok(v) if v > 0 => {}
                    Ok(_) => causes.push(FieldCause::invalid(
                        "spec.resources[storage]",
                        text,
                        "must be greater than zero",
                    )),
                    Err(e) => causes.push(FieldCause::invalid(
                        "spec.resources[storage]",
                        text,
                        e.to_string(),
                    )),
                }
            }
        }
        let class = str_at(o, "/spec/storageClassName");
        if !class.is_empty()
            && let Some(problem) = crate::validation::dns_subdomain_problem(class)
        {
            causes.push(FieldCause::invalid("spec.storageClassName", class, problem));
        }
        if let Some(mode) = spec["volumeMode"].as_str()
            && !["Block", "Filesystem"].contains(&mode)
        {
            causes.push(FieldCause::not_supported(
                "spec.volumeMode",
                mode,
                &["Block", "Filesystem"],
            ));
        }
        selector_causes(&spec["selector"], "spec.selector", causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let mut old_spec = old["spec"].clone();
        let mut new_spec = new["spec"].clone();
        // The binder sets volumeName once.
        if str_at(old, "/spec/volumeName").is_empty() {
            old_spec["volumeName"] = new_spec["volumeName"].clone();
        }
        // RetroactiveDefaultStorageClass: an unbound claim without a class may get one.
        if old_spec.get("storageClassName").is_none_or(Value::is_null)
            && str_at(old, "/spec/volumeName").is_empty()
        {
            old_spec["storageClassName"] = new_spec["storageClassName"].clone();
        }
        // A bound claim may change its storage request (checked below) and its
        // volumeAttributesClassName.
        if str_at(new, "/status/phase") == "Bound" {
            for s in [&mut old_spec, &mut new_spec] {
                if let Some(r) = s.pointer_mut("/resources/requests") {
                    r.as_object_mut().map(|m| m.remove("storage"));
                }
            }
        }
        for s in [&mut old_spec, &mut new_spec] {
            if let Some(m) = s.as_object_mut() {
                m.remove("volumeAttributesClassName");
                m.retain(|_, v| !v.is_null());
            }
        }
        if old_spec != new_spec {
            causes.push(FieldCause::forbidden(
                "spec",
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
            ));
        }
        if let (Some(before), Some(after)) = (requested_bytes(old), requested_bytes(new))
            && after < before
        {
            causes.push(FieldCause::forbidden(
                "spec.resources.requests.storage",
                "field can not be less than previous value",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Status", "string", 0, "The phase of the claim."),
            Column::new("Volume", "string", 0, "The volume the claim is bound to."),
            Column::new("Capacity", "string", 0, "The capacity of the bound volume."),
            Column::new(
                "Access Modes",
                "string",
                0,
                "The access modes of the volume.",
            ),
            Column::new("StorageClass", "string", 0, "The claim's StorageClass."),
            Column::new(
                "VolumeAttributesClass",
                "string",
                0,
                "The claim's VolumeAttributesClass.",
            ),
            age_column(),
            Column::new("VolumeMode", "string", 1, "Filesystem or Block."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else {
            str_at(o, "/status/phase")
        };
        let volume = str_at(o, "/spec/volumeName");
        let (capacity, modes) = if volume.is_empty() {
            (String::new(), String::new())
        } else {
            (
                str_at(o, "/status/capacity/storage").to_string(),
                access_modes_short(&o["status"]["accessModes"]),
            )
        };
        let class = match str_at(o, "/spec/storageClassName") {
            "" => str_at(
                o,
                "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
            ),
            c => c,
        };
        let unset = |s: &str| {
            if s.is_empty() {
                "<unset>".to_string()
            } else {
                s.to_string()
            }
        };
        vec![
            json!(meta::name(o)),
            json!(phase),
            json!(volume),
            json!(capacity),
            json!(modes),
            json!(class),
            json!(unset(str_at(o, "/spec/volumeAttributesClassName"))),
            age(o),
            json!(unset(str_at(o, "/spec/volumeMode"))),
        ]
    }
}

/// Adds `finalizer` to the object's `metadata.finalizers` unless it is there.
pub fn add_finalizer(object: &mut Value, finalizer: &str) {
    let m = object_field(object, "metadata");
    let list = m.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let items = list.as_array_mut().expect("made an array");
    if !items.iter().any(|f| f == finalizer) {
        items.push(json!(finalizer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(spec: Value) -> Value {
        json!({"metadata": {"name": "c", "namespace": "ns"}, "spec": spec})
    }

    #[test]
    fn requires_access_modes_and_a_storage_request() {
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate(&claim(json!({})), &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.accessModes", "spec.resources[storage]"]);
        assert_eq!(
            causes[0].message,
            "Required value: at least 1 access mode is required"
        );
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate(
            &claim(json!({"accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}}})),
            &mut causes,
        );
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn a_bound_claims_spec_is_immutable_but_its_request_may_grow() {
        let old = json!({"metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "a",
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeName": "pv"},
            "status": {"phase": "Bound"}});
        let mut new = old.clone();
        new["spec"]["storageClassName"] = json!("b");
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate_update(&old, &new, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"
        );
        let mut grown = old.clone();
        grown["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate_update(&old, &grown, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate_update(&grown, &old, &mut causes);
        assert_eq!(causes[0].field, "spec.resources.requests.storage");
        // The binder's one-time volumeName.
        let mut pending = old.clone();
        pending["spec"]["volumeName"] = Value::Null;
        pending["status"]["phase"] = json!("Pending");
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate_update(&pending, &old, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
    }

    #[test]
    fn an_unbound_claim_without_a_class_may_get_one() {
        let old = json!({"metadata": {"name": "c"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        let mut new = old.clone();
        new["spec"]["storageClassName"] = json!("local-path");
        let mut causes = Vec::new();
        PersistentVolumeClaims.validate_update(&old, &new, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        // But a class, once set, stays.
        let mut changed = new.clone();
        changed["spec"]["storageClassName"] = json!("other");
        PersistentVolumeClaims.validate_update(&new, &changed, &mut causes);
        assert_eq!(causes.len(), 1);
    }

    #[test]
    fn prints_kubectls_columns() {
        let o = json!({"metadata": {"name": "c"},
            "spec": {"volumeName": "pv1", "storageClassName": "local-path", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                       "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
        let cells = PersistentVolumeClaims.cells(&o);
        assert_eq!(
            cells[..7],
            [
                json!("c"),
                json!("Bound"),
                json!("pv1"),
                json!("1Gi"),
                json!("RWO,ROX"),
                json!("local-path"),
                json!("<unset>")
            ]
        );
        assert_eq!(cells[8], json!("Filesystem"));
    }
}

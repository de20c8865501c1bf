//! PersistentVolumes: storage of the cluster.
//!
//! As kube-apiserver: defaults (`persistentVolumeReclaimPolicy: Retain`,
//! `volumeMode: Filesystem`, phase `Pending`), the `kubernetes.io/pv-protection` finalizer,
//! the validation of `pkg/apis/core/validation` (access modes, a storage capacity, exactly one
//! volume source, node affinity for `local` volumes, an immutable source) and kubectl's
//! columns.

use serde_json::{Value, json};

use super::persistentvolumeclaim::add_finalizer;
use super::{Strategy, age, age_column, name_column, object_field, str_at};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The finalizer that keeps a volume while a claim is bound to it.
pub const PV_PROTECTION_FINALIZER: &str = "kubernetes.io/pv-protection";

/// The access modes of volumes and claims.
pub const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// The volume sources of `PersistentVolumeSpec` (the `PersistentVolumeSource` fields).
const SOURCES: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "csi",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "glusterfs",
    "hostPath",
    "iscsi",
    "local",
    "nfs",
    "photonPersistentDisk",
    "portworxVolume",
    "quobyte",
    "rbd",
    "scaleIO",
    "storageos",
    "vsphereVolume",
];

/// Access modes as kubectl abbreviates them (`RWO,ROX`).
pub fn access_modes_short(modes: &Value) -> String {
    let modes: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for (mode, short) in [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ] {
        if modes.contains(&mode) {
            out.push(short);
        }
    }
    out.join(",")
}

/// The strategy of PersistentVolumes.
pub struct PersistentVolumes;

impl Strategy for PersistentVolumes {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin(
                "",
                "v1",
                "persistentvolumes",
                "PersistentVolume",
                false,
                &["pv"],
            )
            .with_status(),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::PersistentVolume>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        let spec = object_field(object, "spec");
        spec.entry("persistentVolumeReclaimPolicy")
            .or_insert(json!("Retain"));
        spec.entry("volumeMode").or_insert(json!("Filesystem"));
        object["status"] = json!({"phase": "Pending"});
        add_finalizer(object, PV_PROTECTION_FINALIZER);
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, old: &Value, new: &mut Value) {
        super::keep_field(old, new, "status");
        // Defaults apply to every write, as kube-apiserver's decoding does.
        let spec = object_field(new, "spec");
        spec.entry("persistentVolumeReclaimPolicy")
            .or_insert(json!("Retain"));
        spec.entry("volumeMode").or_insert(json!("Filesystem"));
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
                message: "Required value: must specify at least 1 access mode".into(),
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
        match spec["capacity"].as_object() {
            None => causes.push(FieldCause {
                field: "spec.capacity".into(),
                reason: "FieldValueRequired",
                message: "Required value: must specify a capacity".into(),
            }),
            Some(c) if !c.contains_key("storage") || c.len() > 1 => {
                let keys: Vec<&str> = c.keys().map(String::as_str).collect();
                causes.push(FieldCause::not_supported(
                    "spec.capacity",
                    &keys.join(","),
                    &["storage"],
                ));
            }
            Some(c) => {
                let text = c["storage"].as_str().unwrap_or_default();
                match ferry_api::quantity::parse_units(text) {
                    Ok(v) if v > 0 => {}
                    Ok(_) => causes.push(FieldCause::invalid(
                        "spec.capacity[storage]",
                        text,
                        "must be greater than zero",
                    )),
                    Err(e) => causes.push(FieldCause::invalid(
                        "spec.capacity[storage]",
                        text,
                        e.to_string(),
                    )),
                }
            }
        }
        let sources: Vec<&str> = SOURCES
            .iter()
            .copied()
            .filter(|s| spec.get(*s).is_some_and(|v| !v.is_null()))
            .collect();
        match sources.as_slice() {
            [] => causes.push(FieldCause {
                field: "spec".into(),
                reason: "FieldValueRequired",
                message: "Required value: must specify a volume type".into(),
            }),
            [_] => {}
            [_, more @ ..] => {
                for s in more {
                    causes.push(FieldCause::forbidden(
                        format!("spec.{s}"),
                        "may not specify more than 1 volume type",
                    ));
                }
            }
        }
        if spec.get("hostPath").is_some() && str_at(o, "/spec/hostPath/path").is_empty() {
            causes.push(FieldCause::required("spec.hostPath.path"));
        }
        if spec.get("local").is_some() {
            if str_at(o, "/spec/local/path").is_empty() {
                causes.push(FieldCause::required("spec.local.path"));
            }
            if spec.pointer("/nodeAffinity/required").is_none() {
                causes.push(FieldCause {
                    field: "spec.nodeAffinity".into(),
                    reason: "FieldValueRequired",
                    message: "Required value: Local volume requires node affinity".into(),
                });
            }
        }
        if let Some(policy) = spec["persistentVolumeReclaimPolicy"].as_str()
            && !["Delete", "Recycle", "Retain"].contains(&policy)
        {
            causes.push(FieldCause::not_supported(
                "spec.persistentVolumeReclaimPolicy",
                policy,
                &["Delete", "Recycle", "Retain"],
            ));
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
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let source = |o: &Value| -> Vec<(&str, Value)> {
            SOURCES
                .iter()
                .map(|s| (*s, o["spec"].get(*s).cloned().unwrap_or(Value::Null)))
                .collect()
        };
        if source(old) != source(new) {
            causes.push(FieldCause::forbidden(
                "spec.persistentvolumesource",
                "spec.persistentvolumesource is immutable after creation",
            ));
        }
        if old["spec"]["volumeMode"] != new["spec"]["volumeMode"] {
            causes.push(FieldCause::invalid(
                "spec.volumeMode",
                str_at(new, "/spec/volumeMode"),
                "field is immutable",
            ));
        }
        if old["spec"].get("nodeAffinity").is_some()
            && old["spec"]["nodeAffinity"] != new["spec"]["nodeAffinity"]
        {
            causes.push(FieldCause::invalid(
                "spec.nodeAffinity.required",
                new["spec"]["nodeAffinity"].to_string(),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Capacity", "string", 0, "The volume's storage capacity."),
            Column::new("Access Modes", "string", 0, "The volume's access modes."),
            Column::new(
                "Reclaim Policy",
                "string",
                0,
                "What happens to the volume when its claim goes.",
            ),
            Column::new("Status", "string", 0, "The phase of the volume."),
            Column::new("Claim", "string", 0, "The claim bound to the volume."),
            Column::new("StorageClass", "string", 0, "The volume's StorageClass."),
            Column::new(
                "VolumeAttributesClass",
                "string",
                0,
                "The volume's VolumeAttributesClass.",
            ),
            Column::new("Reason", "string", 0, "Why the volume is in its phase."),
            age_column(),
            Column::new("VolumeMode", "string", 1, "Filesystem or Block."),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let claim = if o.pointer("/spec/claimRef").is_some() {
            format!(
                "{}/{}",
                str_at(o, "/spec/claimRef/namespace"),
                str_at(o, "/spec/claimRef/name")
            )
        } else {
            String::new()
        };
        let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
            "Terminating"
        } else {
            str_at(o, "/status/phase")
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
            json!(str_at(o, "/spec/capacity/storage")),
            json!(access_modes_short(&o["spec"]["accessModes"])),
            json!(str_at(o, "/spec/persistentVolumeReclaimPolicy")),
            json!(phase),
            json!(claim),
            json!(str_at(o, "/spec/storageClassName")),
            json!(unset(str_at(o, "/spec/volumeAttributesClassName"))),
            json!(str_at(o, "/status/reason")),
            age(o),
            json!(unset(str_at(o, "/spec/volumeMode"))),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requires_one_source_access_modes_and_capacity() {
        let mut causes = Vec::new();
        PersistentVolumes.validate(&json!({"metadata": {"name": "v"}, "spec": {}}), &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["spec.accessModes", "spec.capacity", "spec"]);
        let mut causes = Vec::new();
        PersistentVolumes.validate(
            &json!({"metadata": {"name": "v"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                "hostPath": {"path": "/a"}, "nfs": {"server": "s", "path": "/b"}}}),
            &mut causes,
        );
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.nfs");
        let mut causes = Vec::new();
        PersistentVolumes.validate(
            &json!({"metadata": {"name": "v"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"},
                "local": {"path": "/a"}}}),
            &mut causes,
        );
        assert_eq!(causes[0].field, "spec.nodeAffinity");
    }

    #[test]
    fn prints_the_claim_and_abbreviated_modes() {
        let o = json!({"metadata": {"name": "v"}, "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
            "claimRef": {"namespace": "ns", "name": "c"}},
            "status": {"phase": "Bound"}});
        let cells = PersistentVolumes.cells(&o);
        assert_eq!(
            cells[..9],
            [
                json!("v"),
                json!("1Gi"),
                json!("RWO"),
                json!("Delete"),
                json!("Bound"),
                json!("ns/c"),
                json!("local-path"),
                json!("<unset>"),
                json!("")
            ]
        );
    }
}

//! StorageClasses (`storage.k8s.io/v1`): how volumes are provisioned.
//!
//! As kube-apiserver: defaults (`reclaimPolicy: Delete`, `volumeBindingMode: Immediate`),
//! validation (a provisioner, known policies and modes; provisioner, parameters, reclaim
//! policy and binding mode immutable) and kubectl's columns, with `(default)` after the name
//! of a class annotated `storageclass.kubernetes.io/is-default-class: "true"`.

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column, str_at};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The annotation that makes a class the default one.
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// The beta form of [`DEFAULT_CLASS_ANNOTATION`], still honoured by Kubernetes.
pub const BETA_DEFAULT_CLASS_ANNOTATION: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// Whether the class carries the default-class annotation.
pub fn is_default(class: &Value) -> bool {
    let annotations = &class["metadata"]["annotations"];
    [DEFAULT_CLASS_ANNOTATION, BETA_DEFAULT_CLASS_ANNOTATION]
        .iter()
        .any(|a| annotations[*a].as_str() == Some("true"))
}

/// The name of the default StorageClass: of several, the newest (then the first by name), as
/// the `DefaultStorageClass` admission plugin picks it.
pub fn default_class(service: &Service) -> Option<String> {
    let classes = service
        .store
        .list("storage.k8s.io/storageclasses", None, None, 0, is_default)
        .items;
    classes
        .iter()
        .map(|c| {
            (
                meta::meta_str(&c.value, "creationTimestamp").to_string(),
                meta::name(&c.value).to_string(),
            )
        })
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, name)| name)
}

/// The strategy of StorageClasses.
pub struct StorageClasses;

impl Strategy for StorageClasses {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            "storage.k8s.io",
            "v1",
            "storageclasses",
            "StorageClass",
            false,
            &["sc"],
        ))
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::storage::v1::StorageClass>(info, object)
    }

    fn prepare_for_create(
        &self,
        _service: &Service,
        _info: &ResourceInfo,
        object: &mut Value,
    ) -> ApiResult<()> {
        if let Some(o) = object.as_object_mut() {
            o.entry("reclaimPolicy").or_insert(json!("Delete"));
            o.entry("volumeBindingMode").or_insert(json!("Immediate"));
        }
        Ok(())
    }

    fn prepare_for_update(&self, _info: &ResourceInfo, _old: &Value, new: &mut Value) {
        // Defaults apply to every write, as kube-apiserver's decoding does.
        if let Some(o) = new.as_object_mut() {
            o.entry("reclaimPolicy").or_insert(json!("Delete"));
            o.entry("volumeBindingMode").or_insert(json!("Immediate"));
        }
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        let provisioner = str_at(o, "/provisioner");
        if provisioner.is_empty() {
            causes.push(FieldCause::required("provisioner"));
        } else if let Some(problem) = crate::validation::dns_subdomain_problem(
            provisioner.replace('/', ".").to_lowercase().as_str(),
        ) {
            causes.push(FieldCause::invalid("provisioner", provisioner, problem));
        }
        if let Some(p) = o["reclaimPolicy"].as_str()
            && !["Delete", "Retain"].contains(&p)
        {
            causes.push(FieldCause::not_supported(
                "reclaimPolicy",
                p,
                &["Delete", "Retain"],
            ));
        }
        if let Some(m) = o["volumeBindingMode"].as_str()
            && !["Immediate", "WaitForFirstConsumer"].contains(&m)
        {
            causes.push(FieldCause::not_supported(
                "volumeBindingMode",
                m,
                &["Immediate", "WaitForFirstConsumer"],
            ));
        }
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        let params = |o: &Value| o.get("parameters").cloned().filter(|p| !p.is_null());
        if params(old) != params(new) {
            causes.push(FieldCause::forbidden(
                "parameters",
                "updates to parameters are forbidden.",
            ));
        }
        if old["provisioner"] != new["provisioner"] {
            causes.push(FieldCause::forbidden(
                "provisioner",
                "updates to provisioner are forbidden.",
            ));
        }
        if old["reclaimPolicy"] != new["reclaimPolicy"] {
            causes.push(FieldCause::forbidden(
                "reclaimPolicy",
                "updates to reclaimPolicy are forbidden.",
            ));
        }
        if old["volumeBindingMode"] != new["volumeBindingMode"] {
            causes.push(FieldCause::invalid(
                "volumeBindingMode",
                str_at(new, "/volumeBindingMode"),
                "field is immutable",
            ));
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![
            name_column(),
            Column::new("Provisioner", "string", 0, "Who provisions the volumes."),
            Column::new(
                "ReclaimPolicy",
                "string",
                0,
                "What happens to a volume when its claim goes.",
            ),
            Column::new(
                "VolumeBindingMode",
                "string",
                0,
                "When claims are bound and provisioned.",
            ),
            Column::new(
                "AllowVolumeExpansion",
                "string",
                0,
                "Whether claims may grow.",
            ),
            age_column(),
        ])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        let mut name = meta::name(o).to_string();
        if is_default(o) {
            name.push_str(" (default)");
        }
        let or = |v: &str, d: &str| {
            if v.is_empty() {
                d.to_string()
            } else {
                v.to_string()
            }
        };
        vec![
            json!(name),
            json!(str_at(o, "/provisioner")),
            json!(or(str_at(o, "/reclaimPolicy"), "Delete")),
            json!(or(str_at(o, "/volumeBindingMode"), "Immediate")),
            json!(o["allowVolumeExpansion"].as_bool().unwrap_or(false)),
            age(o),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_class_is_marked_and_its_policies_immutable() {
        let sc = json!({"metadata": {"name": "local-path",
                "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
            "provisioner": "ferry.dev/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"});
        let cells = StorageClasses.cells(&sc);
        assert_eq!(cells[0], json!("local-path (default)"));
        assert_eq!(cells[3], json!("WaitForFirstConsumer"));
        let mut changed = sc.clone();
        changed["reclaimPolicy"] = json!("Retain");
        changed["provisioner"] = json!("other.io/x");
        let mut causes = Vec::new();
        StorageClasses.validate_update(&sc, &changed, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["provisioner", "reclaimPolicy"]);
        let mut causes = Vec::new();
        StorageClasses.validate(&json!({"metadata": {"name": "x"}}), &mut causes);
        assert_eq!(causes[0].field, "provisioner");
    }
}

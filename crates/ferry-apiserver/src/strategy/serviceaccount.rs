//! ServiceAccounts.

use serde_json::Value;

use super::{Strategy, age_column, name_column};
use crate::error::ApiResult;
use crate::registry::ResourceInfo;
use crate::table::Column;

/// The strategy of ServiceAccounts.
pub struct ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(
            ResourceInfo::builtin("", "v1", "serviceaccounts", "ServiceAccount", true, &["sa"])
                .with_subresources(&["token"]),
        )
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::core::v1::ServiceAccount>(info, object)
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), age_column()])
    }
}

/// Where every container finds its service-account credentials.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Prefix of the projected volume the admission adds.
pub const API_ACCESS_VOLUME_PREFIX: &str = "kube-api-access-";

/// Lifetime asked for the projected token (kube-apiserver's: one hour and 7 s, so that
/// clients that cache a token for an hour never hold an expired one).
pub const PROJECTED_TOKEN_EXPIRATION_SECONDS: i64 = 3607;

/// The ConfigMap holding the cluster CA in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

/// The ServiceAccount admission of pods, as kube-apiserver's `ServiceAccount` plugin:
/// `spec.serviceAccountName` defaults to `default`; unless `automountServiceAccountToken` is
/// false (on the pod, else on the ServiceAccount), a projected `kube-api-access-<random>`
/// volume (token, `ca.crt`, `namespace`) is added and mounted read-only at
/// [`SERVICE_ACCOUNT_MOUNT_PATH`] in every container and init container that does not mount
/// something there already.
pub fn admit_pod(service: &crate::service::Service, pod: &mut Value) {
    use serde_json::json;
    let ns = crate::meta::namespace(pod).to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let sa = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(sa));
    spec.insert("serviceAccount".into(), json!(sa));
    let automount = match spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
    {
        Some(b) => b,
        None => service
            .registry
            .get("", "v1", "serviceaccounts")
            .and_then(|info| {
                service
                    .store
                    .get(&crate::service::Service::key(&info, Some(&ns), &sa))
            })
            .and_then(|o| o.value["automountServiceAccountToken"].as_bool())
            .unwrap_or(true),
    };
    if !automount {
        return;
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else {
        return;
    };
    let existing = volumes.iter().find_map(|v| {
        v["name"]
            .as_str()
            .filter(|n| n.starts_with(API_ACCESS_VOLUME_PREFIX) && v.get("projected").is_some())
            .map(str::to_string)
    });
    let name = match existing {
        Some(n) => n,
        None => {
            let name = crate::service::generate_name(API_ACCESS_VOLUME_PREFIX);
            volumes.push(json!({
                "name": name,
                "projected": {
                    "defaultMode": 0o644,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": PROJECTED_TOKEN_EXPIRATION_SECONDS, "path": "token"}},
                        {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                },
            }));
            name
        }
    };
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            if mounts
                .iter()
                .any(|m| m["mountPath"].as_str() == Some(SERVICE_ACCOUNT_MOUNT_PATH))
            {
                continue;
            }
            mounts.push(
                json!({"name": name, "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}),
            );
        }
    }
}

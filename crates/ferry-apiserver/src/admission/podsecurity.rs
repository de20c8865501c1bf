//! The `PodSecurity` admission plugin, as Kubernetes' Pod Security Admission: a namespace
//! picks a level per mode with the labels `pod-security.kubernetes.io/<mode>` (`enforce`,
//! `warn`, `audit`) and `pod-security.kubernetes.io/<mode>-version` (`latest`, `v1.<minor>`;
//! default `latest`). Namespaces without labels are `privileged`, and nothing is exempt.
//!
//! - `enforce`: a new pod that fails its level is refused `403 Forbidden`, `pods "x" is
//!   forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not
//!   set securityContext.privileged=true), …`;
//! - `warn`: an admitted pod that fails its level gets the warning `would violate
//!   PodSecurity "<level>:<version>": …` (kubectl prints it as `Warning: …`);
//! - `audit`: logged (Ferry keeps no audit log).
//!
//! Pod updates are checked again only when they change a container image (as Kubernetes).
//! Namespace labels are validated (`422` for an unknown level or version), and setting a new
//! `enforce` level warns about the namespace's existing pods that fail it. Pods made by
//! workload controllers are checked when the pod is created. The checks themselves are the
//! pure [`levels`] module.

pub mod levels;

use serde_json::Value;

use self::levels::{Level, describe, evaluate, valid_version};
use super::quota::forbidden;
use super::{Admitted, Attributes, Operation, Plugin};
use crate::error::{ApiError, ApiResult, FieldCause};
use crate::service::Service;

/// The prefix of the Pod Security labels.
pub const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";
/// The modes a namespace sets a level for.
pub const MODES: &[&str] = &["enforce", "audit", "warn"];

/// The PodSecurity admission plugin.
#[derive(Default)]
pub struct PodSecurity;

/// A level and version, as PSA prints them (`restricted:latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The level.
    pub level: Level,
    /// `latest` or `v1.<minor>`.
    pub version: String,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.level.as_str(), self.version)
    }
}

/// The policy of `mode` in a namespace's labels. Labels that do not parse count as
/// `restricted:latest` (failing closed, as Kubernetes does).
pub fn policy_of(labels: &Value, mode: &str) -> Policy {
    let level = labels[format!("{LABEL_PREFIX}{mode}")].as_str();
    let version = labels[format!("{LABEL_PREFIX}{mode}-version")].as_str();
    let parsed_level = match level {
        None => Some(Level::Privileged),
        Some(l) => Level::parse(l),
    };
    let parsed_version = match version {
        None => Some("latest".to_string()),
        Some(v) if valid_version(v) => Some(v.to_string()),
        Some(_) => None,
    };
    match (parsed_level, parsed_version) {
        (Some(level), Some(version)) => Policy { level, version },
        _ => Policy {
            level: Level::Restricted,
            version: "latest".into(),
        },
    }
}

/// The problems of a namespace's Pod Security labels (Kubernetes' words).
pub fn label_problems(labels: &Value) -> Vec<FieldCause> {
    let mut causes = Vec::new();
    for mode in MODES {
        let key = format!("{LABEL_PREFIX}{mode}");
        if let Some(v) = labels[&key].as_str()
            && Level::parse(v).is_none()
        {
            causes.push(FieldCause::invalid(
                format!("metadata.labels[{key}]"),
                v,
                "must be one of privileged, baseline, restricted",
            ));
        }
        let key = format!("{LABEL_PREFIX}{mode}-version");
        if let Some(v) = labels[&key].as_str()
            && !valid_version(v)
        {
            causes.push(FieldCause::invalid(
                format!("metadata.labels[{key}]"),
                v,
                "must be \"latest\" or \"v1.x\"",
            ));
        }
    }
    causes
}

/// Whether a pod update is checked again (Kubernetes' `isSignificantPodUpdate`): the
/// containers changed in number or image; other pod updates (metadata, status) are not.
pub fn significant_pod_update(old: &Value, new: &Value) -> bool {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .any(|list| {
            let images = |pod: &Value| -> Vec<Value> {
                pod["spec"][*list]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["image"].clone())
                    .collect()
            };
            images(old) != images(new)
        })
}

fn namespace_labels(service: &Service, namespace: &str) -> Value {
    let Some(info) = service.registry.get("", "v1", "namespaces") else {
        return Value::Null;
    };
    service
        .store
        .get(&Service::key(&info, None, namespace))
        .map(|ns| ns.value["metadata"]["labels"].clone())
        .unwrap_or(Value::Null)
}

impl PodSecurity {
    fn validate_pod(
        service: &Service,
        a: &Attributes<'_>,
        namespace: &str,
        pod: &Value,
    ) -> ApiResult<Admitted> {
        let labels = namespace_labels(service, namespace);
        let check = |policy: &Policy| -> Option<String> {
            let v = evaluate(policy.level, &pod["metadata"], &pod["spec"]);
            (!v.is_empty()).then(|| describe(&v))
        };
        let enforce = policy_of(&labels, "enforce");
        if let Some(reasons) = check(&enforce) {
            return Err(forbidden(
                a,
                &format!("violates PodSecurity \"{enforce}\": {reasons}"),
            ));
        }
        let audit = policy_of(&labels, "audit");
        if let Some(reasons) = check(&audit) {
            tracing::info!(namespace, pod = a.name, policy = %audit, %reasons, "pod would violate PodSecurity (audit)");
        }
        let warn = policy_of(&labels, "warn");
        let warnings = check(&warn)
            .map(|reasons| format!("would violate PodSecurity \"{warn}\": {reasons}"))
            .into_iter()
            .collect();
        Ok(Admitted {
            warnings,
            guards: Vec::new(),
        })
    }

    fn validate_namespace(
        service: &Service,
        a: &Attributes<'_>,
        namespace: &Value,
    ) -> ApiResult<Admitted> {
        let labels = &namespace["metadata"]["labels"];
        let old_labels = a.old.map(|o| &o["metadata"]["labels"]);
        if old_labels == Some(labels) {
            return Ok(Admitted::default());
        }
        let causes = label_problems(labels);
        if !causes.is_empty() {
            let mut e = ApiError::invalid("", "namespaces", a.name, causes);
            if let Some(d) = e.details.as_mut() {
                d["kind"] = "namespaces".into();
            }
            return Err(e);
        }
        let mut warnings = Vec::new();
        let enforce = policy_of(labels, "enforce");
        let before = old_labels.map(|l| policy_of(l, "enforce"));
        if a.operation == Operation::Update && before.as_ref() != Some(&enforce) {
            let Some(pods) = service.registry.get("", "v1", "pods") else {
                return Ok(Admitted::default());
            };
            let mut failing = Vec::new();
            for pod in service
                .store
                .list(&pods.storage_resource(), Some(a.name), None, 0, |_| true)
                .items
            {
                let v = evaluate(enforce.level, &pod.value["metadata"], &pod.value["spec"]);
                if !v.is_empty() {
                    let reasons: Vec<String> = v.into_iter().map(|v| v.reason).collect();
                    failing.push(format!(
                        "{}: {}",
                        crate::meta::name(&pod.value),
                        reasons.join(", ")
                    ));
                }
            }
            if !failing.is_empty() {
                warnings.push(format!(
                    "existing pods in namespace \"{}\" violate the new PodSecurity enforce level \"{enforce}\"",
                    a.name
                ));
                warnings.extend(failing);
            }
        }
        Ok(Admitted {
            warnings,
            guards: Vec::new(),
        })
    }
}

#[async_trait::async_trait]
impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    async fn validate(
        &self,
        service: &Service,
        attributes: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        let a = attributes;
        if a.operation == Operation::Delete || a.subresource.is_some() || !a.info.group.is_empty() {
            return Ok(Admitted::default());
        }
        match (a.info.plural.as_str(), a.operation, a.namespace) {
            ("pods", Operation::Create, Some(ns)) => Self::validate_pod(service, a, ns, object),
            ("pods", Operation::Update, Some(ns))
                if a.old.is_some_and(|old| significant_pod_update(old, object)) =>
            {
                Self::validate_pod(service, a, ns, object)
            }
            ("namespaces", _, _) => Self::validate_namespace(service, a, object),
            _ => Ok(Admitted::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn policies_from_labels() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline",
            "pod-security.kubernetes.io/enforce-version": "v1.29",
            "pod-security.kubernetes.io/warn": "restricted"});
        assert_eq!(policy_of(&labels, "enforce").to_string(), "baseline:v1.29");
        assert_eq!(policy_of(&labels, "warn").to_string(), "restricted:latest");
        assert_eq!(policy_of(&labels, "audit").to_string(), "privileged:latest");
        assert_eq!(policy_of(&Value::Null, "enforce").level, Level::Privileged);
        let bad = json!({"pod-security.kubernetes.io/enforce": "strict"});
        assert_eq!(policy_of(&bad, "enforce").level, Level::Restricted);
    }

    #[test]
    fn only_image_changes_are_significant_updates() {
        let pod = json!({"metadata": {"labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let mut relabelled = pod.clone();
        relabelled["metadata"]["labels"]["a"] = json!("2");
        assert!(!significant_pod_update(&pod, &relabelled));
        let mut new_image = pod.clone();
        new_image["spec"]["containers"][0]["image"] = json!("busybox:2");
        assert!(significant_pod_update(&pod, &new_image));
    }

    #[test]
    fn label_values_are_validated() {
        let causes = label_problems(&json!({"pod-security.kubernetes.io/enforce": "strict",
            "pod-security.kubernetes.io/warn-version": "1.2"}));
        assert_eq!(causes.len(), 2);
        assert_eq!(
            causes[0].field,
            "metadata.labels[pod-security.kubernetes.io/enforce]"
        );
        assert!(
            causes[0]
                .message
                .contains("must be one of privileged, baseline, restricted")
        );
        assert!(
            label_problems(&json!({"pod-security.kubernetes.io/audit": "restricted"})).is_empty()
        );
    }
}

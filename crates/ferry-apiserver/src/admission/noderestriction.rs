//! The NodeRestriction admission plugin, as kube-apiserver's: a node agent
//! (`system:node:<name>`) may create and modify only its own Node object, may not set or change
//! labels under `node-restriction.kubernetes.io/` on it, may write only its own Lease, and may
//! change only pods bound to itself (their status, or deleting them).

use serde_json::Value;

use super::{Admitted, Attributes, Operation, Plugin};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;

/// The label prefix only administrators may set on Nodes.
pub const RESTRICTED_LABEL_PREFIX: &str = "node-restriction.kubernetes.io/";

/// The plugin.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeRestriction;

fn restricted_labels(object: Option<&Value>) -> Vec<(String, Value)> {
    object
        .and_then(|o| o.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter(|(k, _)| {
                    k.split_once('/').is_some_and(|(prefix, _)| {
                        prefix == "node-restriction.kubernetes.io"
                            || prefix.ends_with(".node-restriction.kubernetes.io")
                    })
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Plugin for NodeRestriction {
    fn name(&self) -> &'static str {
        "NodeRestriction"
    }

    async fn validate(
        &self,
        _service: &Service,
        a: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        let Some(node) = a.user.and_then(|u| u.node_name()) else {
            return Ok(Admitted::default());
        };
        let name = if a.name.is_empty() {
            crate::meta::name(object)
        } else {
            a.name
        };
        let forbid = |why: String| -> ApiResult<Admitted> {
            Err(ApiError::forbidden(format!(
                "{}{} {name:?} is forbidden: {why}",
                a.info.plural,
                if a.info.group.is_empty() {
                    String::new()
                } else {
                    format!(".{}", a.info.group)
                }
            )))
        };
        match (a.info.group.as_str(), a.info.plural.as_str()) {
            ("", "nodes") => {
                if name != node {
                    return forbid(format!(
                        "node {node:?} is not allowed to modify node {name:?}"
                    ));
                }
                if a.operation != Operation::Delete
                    && restricted_labels(Some(object)) != restricted_labels(a.old)
                {
                    return forbid(format!(
                        "is not allowed to modify labels: {}",
                        restricted_labels(Some(object))
                            .into_iter()
                            .chain(restricted_labels(a.old))
                            .map(|(k, _)| k)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            ("", "pods") => {
                let bound_to = |o: Option<&Value>| {
                    o.and_then(|o| o.pointer("/spec/nodeName"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                let current = if a.operation == Operation::Create {
                    bound_to(Some(object))
                } else {
                    bound_to(a.old.or(Some(object)))
                };
                if current != node {
                    return forbid(format!(
                        "node {node:?} can only {} pods with spec.nodeName set to itself",
                        match a.operation {
                            Operation::Create => "create",
                            Operation::Update => "update",
                            Operation::Delete => "delete",
                        }
                    ));
                }
                if a.operation == Operation::Update && a.subresource != Some("status") {
                    return forbid(format!("node {node:?} can only update pod status"));
                }
            }
            ("coordination.k8s.io", "leases")
                if a.namespace != Some(crate::authz::node::NODE_LEASE_NAMESPACE)
                    || name != node =>
            {
                return forbid(
                    "can only access node lease with the same name as the requesting node".into(),
                );
            }
            _ => {}
        }
        Ok(Admitted::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{UserInfo, groups, users};
    use serde_json::json;

    #[tokio::test]
    async fn a_node_changes_only_itself_and_its_pods() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        let nodes = service.registry.get("", "v1", "nodes").unwrap();
        let pods = service.registry.get("", "v1", "pods").unwrap();
        let n1 = UserInfo::new(users::node("n1"), &[groups::NODES]);
        let check = async |info, operation, name: &str, sub, old: Option<&Value>, new: &Value| {
            let a = Attributes {
                operation,
                info,
                namespace: None,
                name,
                subresource: sub,
                old,
                user: Some(&n1),
                dry_run: false,
            };
            NodeRestriction
                .validate(&service, &a, new)
                .await
                .map(|_| ())
        };
        let node = |name: &str, label: Option<&str>| {
            let mut n =
                json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}});
            if let Some(l) = label {
                n["metadata"]["labels"][l] = json!("x");
            }
            n
        };
        let own = node("n1", None);
        assert!(
            check(&nodes, Operation::Create, "", None, None, &own)
                .await
                .is_ok()
        );
        let e = check(&nodes, Operation::Create, "", None, None, &node("n2", None))
            .await
            .unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "nodes \"n2\" is forbidden: node \"n1\" is not allowed to modify node \"n2\""
        );
        let labelled = node("n1", Some("node-restriction.kubernetes.io/pool"));
        let e = check(&nodes, Operation::Update, "n1", None, Some(&own), &labelled)
            .await
            .unwrap_err();
        assert!(
            e.message.contains("is not allowed to modify labels"),
            "{}",
            e.message
        );
        let other_label = node("n1", Some("example.com/zone"));
        assert!(
            check(
                &nodes,
                Operation::Update,
                "n1",
                Some("status"),
                Some(&own),
                &other_label
            )
            .await
            .is_ok()
        );
        let pod = |node: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}});
        let (mine, theirs) = (pod("n1"), pod("n2"));
        assert!(
            check(
                &pods,
                Operation::Update,
                "p",
                Some("status"),
                Some(&mine),
                &mine
            )
            .await
            .is_ok()
        );
        assert!(
            check(&pods, Operation::Delete, "p", None, Some(&mine), &mine)
                .await
                .is_ok()
        );
        assert!(
            check(
                &pods,
                Operation::Update,
                "p",
                Some("status"),
                Some(&theirs),
                &theirs
            )
            .await
            .is_err()
        );
        assert!(
            check(&pods, Operation::Update, "p", None, Some(&mine), &mine)
                .await
                .is_err()
        );
    }
}

//! RBAC escalation prevention, as kube-apiserver's RBAC storage: a user may write a Role or
//! ClusterRole only with rules it holds itself (where the role applies), unless it may
//! `escalate` on that role; it may bind a role only if it holds the role's rules in the
//! binding's namespace, unless it may `bind` that role. Only `system:masters` may write a
//! ClusterRole with an `aggregationRule`. Writes by the server itself pass.

use serde_json::Value;

use super::{Admitted, Attributes, Operation, Plugin};
use crate::auth::{UserInfo, groups};
use crate::authz::rbac::{RbacAuthorizer, Rule, uncovered};
use crate::authz::{self, Authorizer};
use crate::error::{ApiError, ApiResult};
use crate::service::Service;
use crate::strategy::rbac::GROUP;

/// The plugin.
#[derive(Debug, Default)]
pub struct RbacEscalation {
    rbac: RbacAuthorizer,
}

impl RbacEscalation {
    /// A plugin with its own view of the RBAC objects.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether RBAC allows `user` `verb` on the role `resource/name` in `namespace`.
    fn may(
        &self,
        service: &Service,
        user: &UserInfo,
        verb: &str,
        resource: &str,
        name: &str,
        namespace: &str,
    ) -> bool {
        let a = authz::Attributes {
            user: user.clone(),
            verb: verb.into(),
            resource_request: true,
            api_group: GROUP.into(),
            api_version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..authz::Attributes::default()
        };
        self.rbac.authorize(service, &a).allowed()
    }

    fn confirm_no_escalation(
        &self,
        service: &Service,
        user: &UserInfo,
        namespace: &str,
        wanted: &[Rule],
        qualified: &str,
        name: &str,
    ) -> ApiResult<()> {
        let (owned, errors) = self.rbac.user_rules(service, user, namespace);
        let missing = uncovered(&owned, wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
        let mut message = format!(
            "{qualified} {name:?} is forbidden: user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n",
            user.name,
            groups.join(" ")
        );
        for r in &missing {
            message.push_str(&r.compact_string());
            message.push('\n');
        }
        if !errors.is_empty() {
            message.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
        }
        let mut e = ApiError::forbidden(message);
        e.details = Some(
            serde_json::json!({"name": name, "group": GROUP, "kind": qualified.split('.').next().unwrap_or_default()}),
        );
        Err(e)
    }
}

fn role_rules_of(service: &Service, role_ref: &Value, namespace: &str) -> Vec<Rule> {
    let name = role_ref["name"].as_str().unwrap_or_default();
    let key = match role_ref["kind"].as_str() {
        Some("ClusterRole") => {
            ferry_store::ObjectKey::new(format!("{GROUP}/clusterroles"), "", name)
        }
        Some("Role") => ferry_store::ObjectKey::new(format!("{GROUP}/roles"), namespace, name),
        _ => return Vec::new(),
    };
    service
        .store
        .get(&key)
        .map(|o| Rule::all_of(&o.value))
        .unwrap_or_default()
}

#[async_trait::async_trait]
impl Plugin for RbacEscalation {
    fn name(&self) -> &'static str {
        "RBACEscalation"
    }

    async fn validate(
        &self,
        service: &Service,
        a: &Attributes<'_>,
        object: &Value,
    ) -> ApiResult<Admitted> {
        let Some(user) = a.user else {
            return Ok(Admitted::default());
        };
        if a.info.group != GROUP
            || a.operation == Operation::Delete
            || user.in_group(groups::MASTERS)
        {
            return Ok(Admitted::default());
        }
        let namespace = a.namespace.unwrap_or_default();
        let qualified = format!("{}.{GROUP}", a.info.plural);
        let name = if a.name.is_empty() {
            crate::meta::name(object)
        } else {
            a.name
        };
        let unchanged = |field: &str| a.old.is_some_and(|old| old.get(field) == object.get(field));
        match a.info.plural.as_str() {
            "roles" | "clusterroles" => {
                if a.info.plural == "clusterroles"
                    && object.get("aggregationRule").is_some_and(|r| !r.is_null())
                    && !(unchanged("aggregationRule") && unchanged("rules"))
                    && !self.may(service, user, "escalate", "clusterroles", name, "")
                {
                    return Err(ApiError::forbidden(format!(
                        "{qualified} {name:?} is forbidden: must have cluster-admin privileges to use the aggregationRule"
                    )));
                }
                if unchanged("rules")
                    || self.may(service, user, "escalate", &a.info.plural, name, namespace)
                {
                    return Ok(Admitted::default());
                }
                let wanted = Rule::all_of(object);
                self.confirm_no_escalation(service, user, namespace, &wanted, &qualified, name)?;
            }
            "rolebindings" | "clusterrolebindings" => {
                if unchanged("roleRef") && unchanged("subjects") {
                    return Ok(Admitted::default());
                }
                let role_ref = &object["roleRef"];
                let resource = match role_ref["kind"].as_str() {
                    Some("Role") => "roles",
                    _ => "clusterroles",
                };
                let role_name = role_ref["name"].as_str().unwrap_or_default();
                if self.may(service, user, "bind", resource, role_name, namespace) {
                    return Ok(Admitted::default());
                }
                let wanted = role_rules_of(service, role_ref, namespace);
                self.confirm_no_escalation(service, user, namespace, &wanted, &qualified, name)?;
            }
            _ => {}
        }
        Ok(Admitted::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn rules_beyond_the_writers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        crate::authz::bootstrap::reconcile(&service).await.unwrap();
        // carol may write ClusterRoles and their bindings (neither `escalate` nor `bind`), and
        // holds little else.
        let crb = service
            .registry
            .get(GROUP, "v1", "clusterrolebindings")
            .unwrap();
        let roles = service.registry.get(GROUP, "v1", "clusterroles").unwrap();
        let editor = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "role-editor"},
            "rules": [{"apiGroups": [GROUP], "resources": ["clusterroles", "clusterrolebindings"],
                       "verbs": ["get", "list", "create", "update", "patch", "delete"]}]});
        service
            .create(&roles, None, editor, &Default::default())
            .await
            .unwrap();
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "carol"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "role-editor"},
            "subjects": [{"kind": "User", "name": "carol"}]});
        service
            .create(&crb, None, binding, &Default::default())
            .await
            .unwrap();
        let carol = UserInfo::new("carol", &[]);
        let plugin = RbacEscalation::new();
        let check = async |info, object: &Value, old: Option<&Value>| {
            let a = Attributes {
                operation: if old.is_some() {
                    Operation::Update
                } else {
                    Operation::Create
                },
                info,
                namespace: None,
                name: crate::meta::name(object),
                subresource: None,
                old,
                user: Some(&carol),
                dry_run: false,
            };
            plugin.validate(&service, &a, object).await.map(|_| ())
        };
        let held = json!({"metadata": {"name": "r"}, "rules": [{"apiGroups": [GROUP], "resources": ["clusterroles"], "verbs": ["get"]}]});
        assert!(check(&roles, &held, None).await.is_ok());
        let secrets = json!({"metadata": {"name": "r"}, "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
        let e = check(&roles, &secrets, None).await.unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "clusterroles.rbac.authorization.k8s.io \"r\" is forbidden: user \"carol\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"secrets\"], Verbs:[\"get\"]}\n"
        );
        // Unchanged rules (a metadata update) pass.
        assert!(check(&roles, &secrets, Some(&secrets)).await.is_ok());
        // Aggregation is for cluster administrators.
        let aggregating = json!({"metadata": {"name": "r"}, "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]}});
        let e = check(&roles, &aggregating, None).await.unwrap_err();
        assert!(
            e.message
                .ends_with("must have cluster-admin privileges to use the aggregationRule")
        );
        // Binding a role is allowed only with its rules held.
        let bind = |role: &str| {
            json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "User", "name": "dave", "apiGroup": GROUP}]})
        };
        assert!(check(&crb, &bind("system:basic-user"), None).await.is_ok());
        assert_eq!(
            check(&crb, &bind("cluster-admin"), None)
                .await
                .unwrap_err()
                .code,
            403
        );
        // The server itself and system:masters are not checked.
        let masters = UserInfo::new("root", &[groups::MASTERS]);
        let a = Attributes {
            operation: Operation::Create,
            info: &crb,
            namespace: None,
            name: "b",
            subresource: None,
            old: None,
            user: Some(&masters),
            dry_run: false,
        };
        assert!(
            plugin
                .validate(&service, &a, &bind("cluster-admin"))
                .await
                .is_ok()
        );
    }
}

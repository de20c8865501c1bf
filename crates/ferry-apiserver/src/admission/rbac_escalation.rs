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

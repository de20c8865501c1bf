//! `rbac.authorization.k8s.io/v1`: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings,
//! validated as kube-apiserver validates them (rules need verbs, resource rules need API groups
//! and resources, bindings need a `roleRef` of kind Role or ClusterRole in this API group that
//! never changes, subjects are Users, Groups or ServiceAccounts). Every write invalidates the
//! RBAC authorizer's index ([`crate::authz::rbac::invalidate`]).

use serde_json::{Value, json};

use super::{Strategy, age, age_column, name_column};
use crate::error::{ApiResult, FieldCause};
use crate::meta;
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::table::Column;

/// The API group of RBAC.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The strategy of Roles.
pub struct Roles;
/// The strategy of ClusterRoles.
pub struct ClusterRoles;
/// The strategy of RoleBindings.
pub struct RoleBindings;
/// The strategy of ClusterRoleBindings.
pub struct ClusterRoleBindings;

fn created_at_column() -> Column {
    Column::new(
        "Created At",
        "date",
        0,
        "CreationTimestamp is a timestamp representing the server time when this object was created.",
    )
}

fn created_at_cells(o: &Value) -> Vec<Value> {
    vec![
        json!(meta::name(o)),
        json!(meta::meta_str(o, "creationTimestamp")),
    ]
}

fn binding_columns() -> Vec<Column> {
    vec![
        name_column(),
        Column::new("Role", "string", 0, "The role the binding grants."),
        age_column(),
        Column::new("Users", "string", 1, "The users the binding grants to."),
        Column::new("Groups", "string", 1, "The groups the binding grants to."),
        Column::new(
            "ServiceAccounts",
            "string",
            1,
            "The service accounts the binding grants to.",
        ),
    ]
}

fn binding_cells(o: &Value) -> Vec<Value> {
    let role = format!(
        "{}/{}",
        o["roleRef"]["kind"].as_str().unwrap_or_default(),
        o["roleRef"]["name"].as_str().unwrap_or_default()
    );
    let subjects = o["subjects"].as_array().cloned().unwrap_or_default();
    let of_kind = |kind: &str| -> String {
        subjects
            .iter()
            .filter(|s| s["kind"] == kind)
            .map(|s| {
                let name = s["name"].as_str().unwrap_or_default();
                if kind == "ServiceAccount" {
                    format!("{}/{name}", s["namespace"].as_str().unwrap_or_default())
                } else {
                    name.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        json!(meta::name(o)),
        json!(role),
        age(o),
        json!(of_kind("User")),
        json!(of_kind("Group")),
        json!(of_kind("ServiceAccount")),
    ]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Validates `rules` (PolicyRules) at `path`, as Kubernetes' `ValidatePolicyRule`.
pub fn validate_rules(rules: &Value, path: &str, namespaced: bool, causes: &mut Vec<FieldCause>) {
    for (i, rule) in rules.as_array().into_iter().flatten().enumerate() {
        let at = format!("{path}[{i}]");
        if strings(&rule["verbs"]).is_empty() {
            causes.push(FieldCause::required(format!("{at}.verbs")));
        }
        let urls = strings(&rule["nonResourceURLs"]);
        if !urls.is_empty() {
            if namespaced {
                causes.push(FieldCause::invalid(
                    format!("{at}.nonResourceURLs"),
                    format!("{urls:?}"),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            if !strings(&rule["apiGroups"]).is_empty() || !strings(&rule["resources"]).is_empty() {
                causes.push(FieldCause::invalid(
                    format!("{at}.nonResourceURLs"),
                    format!("{urls:?}"),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if rule["apiGroups"].as_array().is_none() {
            causes.push(FieldCause::required(format!("{at}.apiGroups")));
        }
        if strings(&rule["resources"]).is_empty() {
            causes.push(FieldCause::required(format!("{at}.resources")));
        }
    }
}

fn validate_role_ref(o: &Value, cluster: bool, causes: &mut Vec<FieldCause>) {
    let r = &o["roleRef"];
    if r["apiGroup"].as_str() != Some(GROUP) {
        causes.push(FieldCause::not_supported(
            "roleRef.apiGroup",
            r["apiGroup"].as_str().unwrap_or_default(),
            &[GROUP],
        ));
    }
    match r["kind"].as_str().unwrap_or_default() {
        "Role" if !cluster => {}
        "ClusterRole" => {}
        other => {
            let supported: &[&str] = if cluster {
                &["ClusterRole"]
            } else {
                &["Role", "ClusterRole"]
            };
            causes.push(FieldCause::not_supported("roleRef.kind", other, supported));
        }
    }
    let name = r["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        causes.push(FieldCause::required("roleRef.name"));
    } else if let Some(p) = path_segment_problem(name) {
        causes.push(FieldCause::invalid("roleRef.name", name, p));
    }
    for (i, s) in o["subjects"].as_array().into_iter().flatten().enumerate() {
        let at = format!("subjects[{i}]");
        let name = s["name"].as_str().unwrap_or_default();
        if name.is_empty() {
            causes.push(FieldCause::required(format!("{at}.name")));
        }
        match s["kind"].as_str().unwrap_or_default() {
            "ServiceAccount" => {
                if !s["apiGroup"].as_str().unwrap_or_default().is_empty() {
                    causes.push(FieldCause::not_supported(
                        format!("{at}.apiGroup"),
                        s["apiGroup"].as_str().unwrap_or_default(),
                        &[""],
                    ));
                }
                if s["namespace"].as_str().unwrap_or_default().is_empty() && cluster {
                    causes.push(FieldCause::required(format!("{at}.namespace")));
                }
            }
            "User" | "Group" => {
                if s["apiGroup"].as_str() != Some(GROUP) {
                    causes.push(FieldCause::not_supported(
                        format!("{at}.apiGroup"),
                        s["apiGroup"].as_str().unwrap_or_default(),
                        &[GROUP],
                    ));
                }
            }
            other => causes.push(FieldCause::not_supported(
                format!("{at}.kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

fn validate_role_ref_update(old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
    if old["roleRef"] != new["roleRef"] {
        causes.push(FieldCause::invalid(
            "roleRef",
            new["roleRef"].to_string(),
            "cannot change roleRef",
        ));
    }
}

/// Defaults of subjects as Kubernetes sets them: `apiGroup` of Users and Groups.
fn default_subjects(o: &mut Value) {
    for s in o
        .get_mut("subjects")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if matches!(s["kind"].as_str(), Some("User" | "Group"))
            && s["apiGroup"].as_str().unwrap_or_default().is_empty()
        {
            s["apiGroup"] = json!(GROUP);
        }
    }
}

macro_rules! invalidating_hooks {
    () => {
        fn after_write(&self, _service: &Service, _object: &Value) {
            crate::authz::rbac::invalidate();
        }

        fn after_delete(&self, _service: &Service, _object: &Value) {
            crate::authz::rbac::invalidate();
        }
    };
}

impl Strategy for Roles {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            GROUP,
            "v1",
            "roles",
            "Role",
            true,
            &[],
        ))
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        path_segment_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::rbac::v1::Role>(info, object)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        validate_rules(&o["rules"], "rules", true, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), created_at_column()])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        created_at_cells(o)
    }

    invalidating_hooks!();
}

impl Strategy for ClusterRoles {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            GROUP,
            "v1",
            "clusterroles",
            "ClusterRole",
            false,
            &[],
        ))
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        // Kubernetes accepts any path segment name for roles (`system:basic-user`).
        path_segment_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        super::decode_typed::<k8s_openapi::api::rbac::v1::ClusterRole>(info, object)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        validate_rules(&o["rules"], "rules", false, causes);
        for (i, s) in o["aggregationRule"]["clusterRoleSelectors"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if crate::selectors::LabelSelector::from_object(s).is_err() {
                causes.push(FieldCause::invalid(
                    format!("aggregationRule.clusterRoleSelectors[{i}]"),
                    s.to_string(),
                    "not a valid label selector",
                ));
            }
        }
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column(), created_at_column()])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        created_at_cells(o)
    }

    invalidating_hooks!();
}

impl Strategy for RoleBindings {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            GROUP,
            "v1",
            "rolebindings",
            "RoleBinding",
            true,
            &[],
        ))
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        path_segment_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        let unknown = super::decode_typed::<k8s_openapi::api::rbac::v1::RoleBinding>(info, object)?;
        default_subjects(object);
        Ok(unknown)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        validate_role_ref(o, false, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        validate_role_ref_update(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(binding_columns())
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        binding_cells(o)
    }

    invalidating_hooks!();
}

impl Strategy for ClusterRoleBindings {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            GROUP,
            "v1",
            "clusterrolebindings",
            "ClusterRoleBinding",
            false,
            &[],
        ))
    }

    fn name_problem(&self, name: &str) -> Option<String> {
        path_segment_problem(name)
    }

    fn decode(&self, info: &ResourceInfo, object: &mut Value) -> ApiResult<Vec<String>> {
        let unknown =
            super::decode_typed::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>(info, object)?;
        default_subjects(object);
        Ok(unknown)
    }

    fn validate(&self, o: &Value, causes: &mut Vec<FieldCause>) {
        validate_role_ref(o, true, causes);
    }

    fn validate_update(&self, old: &Value, new: &Value, causes: &mut Vec<FieldCause>) {
        validate_role_ref_update(old, new, causes);
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(binding_columns())
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        binding_cells(o)
    }

    invalidating_hooks!();
}

/// Kubernetes' `ValidatePathSegmentName`: RBAC names may hold `:` (`system:node`).
fn path_segment_problem(name: &str) -> Option<String> {
    if name == "." || name == ".." {
        return Some(format!("may not be '{name}'"));
    }
    if name.contains('/') || name.contains('%') {
        return Some("may not contain '/' or '%'".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes_of(s: &dyn Strategy, o: &Value) -> Vec<FieldCause> {
        let mut c = Vec::new();
        s.validate(o, &mut c);
        c
    }

    #[test]
    fn rules_need_verbs_and_resources() {
        let role = json!({"kind": "Role", "metadata": {"name": "r", "namespace": "a"},
            "rules": [{"apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "apiGroups": [""]},
                      {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        let fields: Vec<String> = causes_of(&Roles, &role)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            [
                "rules[0].verbs",
                "rules[1].resources",
                "rules[2].nonResourceURLs"
            ]
        );
        let ok = json!({"rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]});
        assert!(causes_of(&ClusterRoles, &ok).is_empty());
    }

    #[test]
    fn bindings_need_a_role_ref_and_known_subjects() {
        let b = json!({"kind": "ClusterRoleBinding", "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "x"},
            "subjects": [{"kind": "Robot", "name": "r"}, {"kind": "ServiceAccount", "name": "sa"}]});
        let fields: Vec<String> = causes_of(&ClusterRoleBindings, &b)
            .into_iter()
            .map(|c| c.field)
            .collect();
        assert_eq!(
            fields,
            ["roleRef.kind", "subjects[0].kind", "subjects[1].namespace"]
        );
        let mut old = b.clone();
        old["roleRef"]["name"] = json!("y");
        let mut c = Vec::new();
        RoleBindings.validate_update(&old, &b, &mut c);
        assert_eq!(c[0].field, "roleRef");
    }

    #[test]
    fn binding_row_as_kubectl_prints_it() {
        let b = json!({"metadata": {"name": "b"},
            "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "sa", "namespace": "a"}]});
        let cells = binding_cells(&b);
        assert_eq!(cells[1], "ClusterRole/edit");
        assert_eq!(cells[3], "alice");
        assert_eq!(cells[5], "a/sa");
    }
}

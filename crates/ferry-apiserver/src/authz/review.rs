//! The review APIs, create-only virtual resources as in Kubernetes: `authorization.k8s.io/v1`
//! SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview and
//! SelfSubjectRulesReview (what `kubectl auth can-i [--list]` asks), and
//! `authentication.k8s.io/v1` SelfSubjectReview (`kubectl auth whoami`). Nothing is stored:
//! the answer is the request with its `status` filled in.

use serde_json::{Value, json};

use super::{Attributes, Authorizer, Decision};
use crate::auth::{UserInfo, groups};
use crate::error::{ApiError, ApiResult};
use crate::registry::ResourceInfo;
use crate::service::Service;
use crate::strategy::{Strategy, name_column};
use crate::table::Column;

/// The API group of access reviews.
pub const AUTHORIZATION: &str = "authorization.k8s.io";
/// The API group of SelfSubjectReview.
pub const AUTHENTICATION: &str = "authentication.k8s.io";

/// The strategy of every review kind (create-only, never stored).
pub struct Reviews {
    group: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
}

/// SelfSubjectAccessReviews.
pub static SELF_SUBJECT_ACCESS_REVIEWS: Reviews = Reviews {
    group: AUTHORIZATION,
    plural: "selfsubjectaccessreviews",
    kind: "SelfSubjectAccessReview",
    namespaced: false,
};
/// SubjectAccessReviews.
pub static SUBJECT_ACCESS_REVIEWS: Reviews = Reviews {
    group: AUTHORIZATION,
    plural: "subjectaccessreviews",
    kind: "SubjectAccessReview",
    namespaced: false,
};
/// LocalSubjectAccessReviews.
pub static LOCAL_SUBJECT_ACCESS_REVIEWS: Reviews = Reviews {
    group: AUTHORIZATION,
    plural: "localsubjectaccessreviews",
    kind: "LocalSubjectAccessReview",
    namespaced: true,
};
/// SelfSubjectRulesReviews.
pub static SELF_SUBJECT_RULES_REVIEWS: Reviews = Reviews {
    group: AUTHORIZATION,
    plural: "selfsubjectrulesreviews",
    kind: "SelfSubjectRulesReview",
    namespaced: false,
};
/// SelfSubjectReviews.
pub static SELF_SUBJECT_REVIEWS: Reviews = Reviews {
    group: AUTHENTICATION,
    plural: "selfsubjectreviews",
    kind: "SelfSubjectReview",
    namespaced: false,
};

impl Strategy for Reviews {
    fn resource(&self) -> Option<ResourceInfo> {
        Some(ResourceInfo::builtin(
            self.group,
            "v1",
            self.plural,
            self.kind,
            self.namespaced,
            &[],
        ))
    }

    fn decode(&self, _info: &ResourceInfo, _object: &mut Value) -> ApiResult<Vec<String>> {
        Ok(Vec::new())
    }

    fn create_only(&self) -> bool {
        true
    }

    fn columns(&self) -> Option<Vec<Column>> {
        Some(vec![name_column()])
    }

    fn cells(&self, o: &Value) -> Vec<Value> {
        vec![json!(crate::meta::name(o))]
    }
}

/// Whether `info` is one of the review resources.
pub fn is_review(info: &ResourceInfo) -> bool {
    !info.custom && matches!(info.group.as_str(), AUTHORIZATION | AUTHENTICATION)
}

/// The decision of the server's chain for `attributes`: `system:masters` first.
pub fn decide(authz: &dyn Authorizer, service: &Service, attributes: &Attributes) -> Decision {
    if attributes.user.in_group(groups::MASTERS) {
        return Decision::Allow(String::new());
    }
    authz.authorize(service, attributes)
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn attributes_of(spec: &Value, user: UserInfo) -> ApiResult<Attributes> {
    let mut a = Attributes {
        user,
        ..Attributes::default()
    };
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
        a.resource_request = true;
        a.verb = s(&r["verb"]);
        a.api_group = s(&r["group"]);
        a.api_version = s(&r["version"]);
        a.resource = s(&r["resource"]);
        a.subresource = s(&r["subresource"]);
        a.namespace = s(&r["namespace"]);
        a.name = s(&r["name"]);
    } else if let Some(n) = spec.get("nonResourceAttributes").filter(|n| n.is_object()) {
        a.verb = s(&n["verb"]);
        a.path = s(&n["path"]);
    } else {
        return Err(ApiError::invalid(
            AUTHORIZATION,
            "SubjectAccessReview",
            "",
            vec![crate::error::FieldCause::required(
                "spec.resourceAttributes",
            )],
        ));
    }
    Ok(a)
}

fn access_status(decision: Decision) -> Value {
    match decision {
        Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
        Decision::Deny(reason) => json!({"allowed": false, "denied": true, "reason": reason}),
        Decision::NoOpinion(reason) => json!({"allowed": false, "reason": reason}),
    }
}

fn rules_status(rules: super::Rules) -> Value {
    json!({
        "resourceRules": rules.resource_rules.iter().map(|r| {
            let mut v = json!({"verbs": r.verbs, "apiGroups": r.api_groups, "resources": r.resources});
            if !r.resource_names.is_empty() {
                v["resourceNames"] = json!(r.resource_names);
            }
            v
        }).collect::<Vec<_>>(),
        "nonResourceRules": rules.non_resource_rules.iter().map(|r| {
            json!({"verbs": r.verbs, "nonResourceURLs": r.non_resource_urls})
        }).collect::<Vec<_>>(),
        "incomplete": rules.incomplete,
    })
}

/// Answers a `POST` of a review: the request with its `status`.
pub fn create(
    authz: &dyn Authorizer,
    service: &Service,
    info: &ResourceInfo,
    namespace: Option<&str>,
    user: &UserInfo,
    mut review: Value,
) -> ApiResult<Value> {
    if !review.is_object() {
        return Err(ApiError::bad_request("the review must be an object"));
    }
    let spec = review.get("spec").cloned().unwrap_or(json!({}));
    let status = match info.plural.as_str() {
        "selfsubjectaccessreviews" => {
            let a = attributes_of(&spec, user.clone())?;
            access_status(decide(authz, service, &a))
        }
        "subjectaccessreviews" | "localsubjectaccessreviews" => {
            let name = spec["user"].as_str().unwrap_or_default();
            let group_list = string_list(&spec["groups"]);
            if name.is_empty() && group_list.is_empty() {
                return Err(ApiError::invalid(
                    AUTHORIZATION,
                    &info.kind,
                    "",
                    vec![crate::error::FieldCause::invalid(
                        "spec.user",
                        "",
                        "at least one of user or group must be specified",
                    )],
                ));
            }
            let subject = UserInfo {
                name: name.to_string(),
                uid: spec["uid"].as_str().unwrap_or_default().to_string(),
                groups: group_list,
                extra: serde_json::from_value(spec["extra"].clone()).unwrap_or_default(),
            };
            let mut a = attributes_of(&spec, subject)?;
            if info.plural == "localsubjectaccessreviews" {
                let ns = namespace.unwrap_or_default();
                if a.namespace.is_empty() {
                    a.namespace = ns.to_string();
                    review["spec"]["resourceAttributes"]["namespace"] = json!(ns);
                } else if a.namespace != ns {
                    return Err(ApiError::bad_request(format!(
                        "spec.resourceAttributes.namespace must match namespace: {ns}"
                    )));
                }
                if !a.resource_request {
                    return Err(ApiError::bad_request(
                        "nonResourceAttributes are not allowed in a LocalSubjectAccessReview",
                    ));
                }
            }
            access_status(decide(authz, service, &a))
        }
        "selfsubjectrulesreviews" => {
            let ns = spec["namespace"].as_str().unwrap_or_default();
            rules_status(authz.rules_for(service, user, ns))
        }
        "selfsubjectreviews" => json!({"userInfo": user.to_json()}),
        other => return Err(ApiError::no_route(other)),
    };
    review["status"] = status;
    review["apiVersion"] = json!(info.api_version());
    review["kind"] = json!(info.kind);
    if review.get("metadata").is_none_or(|m| !m.is_object()) {
        review["metadata"] = json!({});
    }
    review["metadata"]["creationTimestamp"] = Value::Null;
    Ok(review)
}

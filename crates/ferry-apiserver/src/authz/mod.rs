//! Authorization: whether a user may do what a request asks, as kube-apiserver decides it.
//!
//! [`Attributes::of_request`] turns a request into Kubernetes' authorization attributes (its
//! `RequestInfo`: verb, API group, resource, subresource, namespace, name, or a non-resource
//! path). An [`Authorizer`] answers [`Decision::Allow`], [`Decision::Deny`] or
//! [`Decision::NoOpinion`]; the server's chain is: `system:masters` allowed, then the Node
//! authorizer (for `system:node:<name>`), then RBAC; no opinion from any is a `403`.

pub mod bootstrap;
pub mod node;
pub mod rbac;
pub mod review;

use crate::auth::UserInfo;

/// What a request asks to do, as authorizers see it (Kubernetes' `authorizer.Attributes`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attributes {
    /// Who asks.
    pub user: UserInfo,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or
    /// for non-resource requests the lower-case HTTP method.
    pub verb: String,
    /// True for `/api/...` and `/apis/...` resource paths.
    pub resource_request: bool,
    /// The API group (`""` for core).
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The resource (plural).
    pub resource: String,
    /// The subresource (`status`, `log`, `exec`, …), empty if none.
    pub subresource: String,
    /// The namespace, empty for cluster-scoped requests and all-namespace lists.
    pub namespace: String,
    /// The object name, empty for collections.
    pub name: String,
    /// The request path (non-resource requests: `/healthz`, `/version`, `/api`, …).
    pub path: String,
}

/// An authorizer's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; the reason says by what (`RBAC: allowed by ClusterRoleBinding "x" of ...`).
    Allow(String),
    /// Explicitly denied (no later authorizer is asked).
    Deny(String),
    /// This authorizer neither allows nor denies.
    NoOpinion(String),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }
}

/// A rule of `SelfSubjectRulesReview` (resource rules).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceRule {
    /// Verbs.
    pub verbs: Vec<String>,
    /// API groups.
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*`).
    pub resources: Vec<String>,
    /// Resource names (empty: all).
    pub resource_names: Vec<String>,
}

/// A rule of `SelfSubjectRulesReview` (non-resource URLs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NonResourceRule {
    /// Verbs.
    pub verbs: Vec<String>,
    /// URLs (`/healthz`, `/api/*`).
    pub non_resource_urls: Vec<String>,
}

/// What a user may do in a namespace (`SelfSubjectRulesReview` status).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rules {
    /// Resource rules.
    pub resource_rules: Vec<ResourceRule>,
    /// Non-resource rules.
    pub non_resource_rules: Vec<NonResourceRule>,
    /// True when the list may be incomplete (an authorizer cannot enumerate its rules).
    pub incomplete: bool,
}

/// Decides requests. Implementations are cheap to call on every request (no I/O; they read
/// in-memory state kept current by the store).
pub trait Authorizer: Send + Sync {
    /// The decision for `attributes`.
    fn authorize(&self, service: &crate::service::Service, attributes: &Attributes) -> Decision;

    /// What `user` may do in `namespace` (empty: cluster-wide), for `SelfSubjectRulesReview`.
    fn rules_for(
        &self,
        service: &crate::service::Service,
        user: &UserInfo,
        namespace: &str,
    ) -> Rules;
}

/// Allows everything (the server's authorizer until RBAC is wired in).
#[derive(Debug, Default, Clone, Copy)]
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _: &crate::service::Service, _: &Attributes) -> Decision {
        Decision::Allow("always allowed".into())
    }

    fn rules_for(&self, _: &crate::service::Service, _: &UserInfo, _: &str) -> Rules {
        Rules {
            resource_rules: vec![ResourceRule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                resource_names: vec![],
            }],
            non_resource_rules: vec![NonResourceRule {
                verbs: vec!["*".into()],
                non_resource_urls: vec!["*".into()],
            }],
            incomplete: false,
        }
    }
}

/// The `403` kube-apiserver answers when no authorizer allowed a request, such as
/// `pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the
/// namespace "team-b"`, with the reason appended when there is one.
pub fn forbidden(attributes: &Attributes, reason: &str) -> crate::error::ApiError {
    let a = attributes;
    let mut message = if a.resource_request {
        let resource = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let qualified = if a.api_group.is_empty() {
            a.resource.clone()
        } else {
            format!("{}.{}", a.resource, a.api_group)
        };
        let subject = if a.name.is_empty() {
            qualified
        } else {
            format!("{qualified} \"{}\"", a.name)
        };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", a.namespace)
        };
        format!(
            "{subject} is forbidden: User \"{}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
            a.user.name, a.verb, a.api_group
        )
    } else {
        format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            a.user.name, a.verb, a.path
        )
    };
    if !reason.is_empty() {
        message.push_str(": ");
        message.push_str(reason);
    }
    let mut e = crate::error::ApiError::forbidden(message);
    if a.resource_request {
        e.details = Some(serde_json::json!({
            "name": a.name, "group": a.api_group, "kind": a.resource,
        }));
    }
    e
}

impl Attributes {
    /// The attributes of a request (`method`, `path`, `query`) by `user`, as Kubernetes'
    /// RequestInfoFactory resolves them: `GET` of a collection is `list` (`watch` with
    /// `watch=true` or a `/watch/` path), of an object `get`; `POST` is `create`, `PUT`
    /// `update`, `PATCH` `patch`, `DELETE` of an object `delete`, of a collection
    /// `deletecollection`. Paths outside `/api` and `/apis/<group>/<version>` are
    /// non-resource requests (verb: the lower-case method).
    pub fn of_request(user: UserInfo, method: &str, path: &str, query: Option<&str>) -> Self {
        let lower = method.to_ascii_lowercase();
        let mut a = Self {
            user,
            verb: lower.clone(),
            path: path.to_string(),
            ..Self::default()
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let (group, version, mut rest) = match segments.as_slice() {
            ["api", version, rest @ ..] => ("", *version, rest.to_vec()),
            ["apis", group, version, rest @ ..] => (*group, *version, rest.to_vec()),
            _ => return a,
        };
        if rest.is_empty() {
            // Discovery of a group version is a non-resource request.
            return a;
        }
        a.resource_request = true;
        a.api_group = group.to_string();
        a.api_version = version.to_string();
        let mut watch_path = false;
        if rest.first() == Some(&"watch") {
            watch_path = true;
            rest.remove(0);
        }
        // namespaces/<ns>/<resource>/... ; namespaces/<ns> itself is the namespace object.
        if rest.first() == Some(&"namespaces") && rest.len() >= 2 {
            a.namespace = rest[1].to_string();
            if rest.len() == 2 || (rest.len() == 3 && matches!(rest[2], "status" | "finalize")) {
                a.resource = "namespaces".into();
                a.name = rest[1].to_string();
                a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
                rest.clear();
            } else {
                rest.drain(..2);
            }
        }
        if !rest.is_empty() {
            a.resource = rest[0].to_string();
            a.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
            a.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        }
        let watch_param = query.is_some_and(|q| {
            q.split('&')
                .any(|kv| matches!(kv, "watch=true" | "watch=1" | "watch=True"))
        });
        a.verb = match lower.as_str() {
            "get" | "head" if watch_path || watch_param => "watch".into(),
            "get" | "head" if a.name.is_empty() => "list".into(),
            "get" | "head" => "get".into(),
            "post" => "create".into(),
            "put" => "update".into(),
            "patch" => "patch".into(),
            "delete" if a.name.is_empty() => "deletecollection".into(),
            "delete" => "delete".into(),
            other => other.to_string(),
        };
        // A WebSocket exec, attach or port-forward is a GET upgrade, authorized as the
        // `create` it is (Kubernetes 1.35's AuthorizePodWebsocketUpgradeCreatePermission,
        // on by default): `create pods/exec` allows it whichever transport kubectl picks.
        if a.resource == "pods"
            && matches!(a.subresource.as_str(), "exec" | "attach" | "portforward")
            && a.verb == "get"
        {
            a.verb = "create".into();
        }
        // A namespace's own object is cluster-scoped for authorization.
        if a.resource == "namespaces" {
            a.namespace = a.name.clone();
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(method: &str, path: &str, query: Option<&str>) -> Attributes {
        Attributes::of_request(UserInfo::new("u", &[]), method, path, query)
    }

    #[test]
    fn request_info() {
        let a = of("GET", "/api/v1/namespaces/ns/pods", None);
        assert_eq!(
            (a.verb.as_str(), a.namespace.as_str(), a.resource.as_str()),
            ("list", "ns", "pods")
        );
        let a = of("GET", "/api/v1/namespaces/ns/pods", Some("watch=true&x=1"));
        assert_eq!(a.verb, "watch");
        let a = of("GET", "/api/v1/watch/namespaces/ns/pods/p", None);
        assert_eq!((a.verb.as_str(), a.name.as_str()), ("watch", "p"));
        let a = of("GET", "/api/v1/namespaces/ns/pods/p/log", None);
        assert_eq!((a.verb.as_str(), a.subresource.as_str()), ("get", "log"));
        let a = of("POST", "/api/v1/namespaces/ns/pods/p/exec", None);
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "exec")
        );
        let a = of(
            "GET",
            "/api/v1/namespaces/ns/pods/p/exec",
            Some("command=sh"),
        );
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("create", "exec"),
            "a WebSocket exec is authorized as create"
        );
        let a = of("DELETE", "/apis/batch/v1/namespaces/ns/jobs", None);
        assert_eq!(
            (a.verb.as_str(), a.api_group.as_str()),
            ("deletecollection", "batch")
        );
        let a = of("GET", "/api/v1/namespaces/ns", None);
        assert_eq!(
            (a.resource.as_str(), a.name.as_str(), a.namespace.as_str()),
            ("namespaces", "ns", "ns")
        );
        let a = of("PUT", "/api/v1/namespaces/ns/finalize", None);
        assert_eq!(
            (a.verb.as_str(), a.subresource.as_str()),
            ("update", "finalize")
        );
        let a = of("GET", "/api/v1/nodes", None);
        assert_eq!((a.verb.as_str(), a.namespace.as_str()), ("list", ""));
        let a = of("GET", "/healthz", None);
        assert!(!a.resource_request);
        assert_eq!(a.verb, "get");
        assert!(!of("GET", "/apis/apps/v1", None).resource_request);
    }

    #[test]
    fn forbidden_message_as_kubernetes() {
        let mut a = of("GET", "/api/v1/namespaces/team-b/pods", None);
        a.user.name = "alice".into();
        let e = forbidden(&a, "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"team-b\""
        );
    }
}

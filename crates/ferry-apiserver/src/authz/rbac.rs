//! The RBAC authorizer, as kube-apiserver's: a request is allowed when a ClusterRoleBinding,
//! or a RoleBinding in the request's namespace, binds the user (by name, by group, or as a
//! service account `system:serviceaccount:<ns>:<name>`) to a Role or ClusterRole with a rule
//! that matches the request (verbs, API groups, resources with `resource/subresource` and
//! `*/subresource`, resource names, non-resource URLs with a trailing `*`).
//!
//! Requests read an in-memory index (bindings resolved to their roles' rules), rebuilt from
//! the store only after an RBAC object was written: the RBAC strategies call [`invalidate`]
//! after every write, so a request costs no scan of the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::{Attributes, Authorizer, Decision, NonResourceRule, ResourceRule, Rules};
use crate::auth::UserInfo;
use crate::meta;
use crate::service::Service;

/// Bumped after every write of an RBAC object (in this process); indexes built before are
/// stale.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Marks every RBAC index stale (called after a Role, ClusterRole or binding was written).
pub fn invalidate() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// One PolicyRule.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rule {
    /// Verbs (`*`: all).
    pub verbs: Vec<String>,
    /// API groups (`*`: all, `""`: core).
    pub api_groups: Vec<String>,
    /// Resources (`pods`, `pods/log`, `*/scale`, `*`).
    pub resources: Vec<String>,
    /// Resource names (empty: all).
    pub resource_names: Vec<String>,
    /// Non-resource URLs (`/healthz`, `/api/*`, `*`).
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    /// A rule from its JSON form (a `PolicyRule`).
    pub fn from_json(v: &Value) -> Self {
        Self {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// The rules of a Role or ClusterRole object.
    pub fn all_of(role: &Value) -> Vec<Self> {
        role["rules"]
            .as_array()
            .map(|r| r.iter().map(Self::from_json).collect())
            .unwrap_or_default()
    }

    /// The rule's JSON form.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::json!({"verbs": self.verbs});
        if !self.non_resource_urls.is_empty() {
            v["nonResourceURLs"] = serde_json::json!(self.non_resource_urls);
            return v;
        }
        v["apiGroups"] = serde_json::json!(self.api_groups);
        v["resources"] = serde_json::json!(self.resources);
        if !self.resource_names.is_empty() {
            v["resourceNames"] = serde_json::json!(self.resource_names);
        }
        v
    }

    /// Whether the rule allows the request, as Kubernetes' `RuleAllows`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !verb {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*"
                    || *u == a.path
                    || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        let group = self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group);
        group && self.resource_matches(&a.resource, &a.subresource) && self.name_matches(&a.name)
    }

    fn resource_matches(&self, resource: &str, subresource: &str) -> bool {
        self.resources.iter().any(|r| {
            if r == "*" {
                return true;
            }
            if subresource.is_empty() {
                return r == resource;
            }
            r.split_once('/')
                .is_some_and(|(res, sub)| sub == subresource && (res == resource || res == "*"))
        })
    }

    fn name_matches(&self, name: &str) -> bool {
        self.resource_names.is_empty() || self.resource_names.iter().any(|n| n == name)
    }

    /// As Kubernetes' `CompactString`, for escalation messages.
    pub fn compact_string(&self) -> String {
        let q = |v: &[String]| {
            let inner: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", inner.join(" "))
        };
        let mut parts = Vec::new();
        if !self.api_groups.is_empty() {
            parts.push(format!("APIGroups:{}", q(&self.api_groups)));
        }
        if !self.resources.is_empty() {
            parts.push(format!("Resources:{}", q(&self.resources)));
        }
        if !self.non_resource_urls.is_empty() {
            parts.push(format!("NonResourceURLs:{}", q(&self.non_resource_urls)));
        }
        if !self.resource_names.is_empty() {
            parts.push(format!("ResourceNames:{}", q(&self.resource_names)));
        }
        parts.push(format!("Verbs:{}", q(&self.verbs)));
        format!("{{{}}}", parts.join(", "))
    }

    /// The rule split into rules of one verb, group, resource and name each (Kubernetes'
    /// `BreakdownRule`).
    pub fn breakdown(&self) -> Vec<Rule> {
        let mut out = Vec::new();
        for verb in &self.verbs {
            for group in &self.api_groups {
                for resource in &self.resources {
                    if self.resource_names.is_empty() {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            ..Rule::default()
                        });
                    }
                    for name in &self.resource_names {
                        out.push(Rule {
                            verbs: vec![verb.clone()],
                            api_groups: vec![group.clone()],
                            resources: vec![resource.clone()],
                            resource_names: vec![name.clone()],
                            ..Rule::default()
                        });
                    }
                }
            }
            for url in &self.non_resource_urls {
                out.push(Rule {
                    verbs: vec![verb.clone()],
                    non_resource_urls: vec![url.clone()],
                    ..Rule::default()
                });
            }
        }
        out
    }

    /// Whether this (owner's) rule covers every permission of `sub` (Kubernetes'
    /// `ruleCovers`).
    pub fn covers(&self, sub: &Rule) -> bool {
        let has_all = |set: &[String], want: &[String]| want.iter().all(|w| set.contains(w));
        let star = |set: &[String]| set.iter().any(|s| s == "*");
        let verbs = star(&self.verbs) || has_all(&self.verbs, &sub.verbs);
        let groups = star(&self.api_groups) || has_all(&self.api_groups, &sub.api_groups);
        let resources = star(&self.resources)
            || sub.resources.iter().all(|path| {
                self.resources.contains(path)
                    || path
                        .split_once('/')
                        .is_some_and(|(_, s)| self.resources.iter().any(|r| *r == format!("*/{s}")))
            });
        let urls = sub.non_resource_urls.iter().all(|path| {
            self.non_resource_urls
                .iter()
                .any(|u| u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p)))
        });
        let names = self.resource_names.is_empty()
            || (!sub.resource_names.is_empty()
                && has_all(&self.resource_names, &sub.resource_names));
        verbs && groups && resources && urls && names
    }
}

/// The rules of `wanted` that `owned` does not cover (empty: no escalation).
pub fn uncovered(owned: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    wanted
        .iter()
        .flat_map(Rule::breakdown)
        .filter(|piece| !owned.iter().any(|o| o.covers(piece)))
        .collect()
}

/// A binding's subject.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Group(String),
    ServiceAccount { namespace: String, name: String },
}

impl Subject {
    fn from_json(s: &Value, binding_namespace: &str) -> Option<Self> {
        let name = s["name"].as_str()?.to_string();
        Some(match s["kind"].as_str()? {
            "User" => Self::User(name),
            "Group" => Self::Group(name),
            "ServiceAccount" => Self::ServiceAccount {
                namespace: s["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(binding_namespace)
                    .to_string(),
                name,
            },
            _ => return None,
        })
    }

    fn applies_to(&self, user: &UserInfo) -> bool {
        match self {
            Self::User(n) => *n == user.name,
            Self::Group(g) => user.in_group(g),
            Self::ServiceAccount { namespace, name } => {
                !namespace.is_empty()
                    && user.service_account() == Some((namespace.as_str(), name.as_str()))
            }
        }
    }

    /// As Kubernetes' `describeSubject`.
    fn describe(&self) -> String {
        match self {
            Self::User(n) => format!("User {n:?}"),
            Self::Group(n) => format!("Group {n:?}"),
            Self::ServiceAccount { namespace, name } => {
                format!("ServiceAccount {:?}", format!("{name}/{namespace}"))
            }
        }
    }
}

/// A binding with its role's rules resolved.
#[derive(Debug)]
struct Binding {
    /// `ClusterRoleBinding "x"` or `RoleBinding "x/ns"`.
    describe: String,
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
    rules: Arc<Vec<Rule>>,
    /// Why the role could not be resolved (it does not exist).
    error: Option<String>,
}

/// Every binding, resolved.
#[derive(Debug, Default)]
struct Index {
    cluster: Vec<Binding>,
    by_namespace: HashMap<String, Vec<Binding>>,
}

fn objects(service: &Service, plural: &str) -> Vec<Arc<Value>> {
    let resource = format!("{}/{plural}", crate::strategy::rbac::GROUP);
    service
        .store
        .list(&resource, None, None, 0, |_| true)
        .items
        .into_iter()
        .map(|o| o.value)
        .collect()
}

impl Index {
    fn build(service: &Service) -> Self {
        let cluster_roles: HashMap<String, Arc<Vec<Rule>>> = objects(service, "clusterroles")
            .iter()
            .map(|r| (meta::name(r).to_string(), Arc::new(Rule::all_of(r))))
            .collect();
        let roles: HashMap<(String, String), Arc<Vec<Rule>>> = objects(service, "roles")
            .iter()
            .map(|r| {
                (
                    (meta::namespace(r).to_string(), meta::name(r).to_string()),
                    Arc::new(Rule::all_of(r)),
                )
            })
            .collect();
        let resolve = |b: &Value, namespace: &str| -> Binding {
            let kind = b["roleRef"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let name = b["roleRef"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let found = match kind.as_str() {
                "ClusterRole" => cluster_roles.get(&name).cloned(),
                "Role" if !namespace.is_empty() => {
                    roles.get(&(namespace.to_string(), name.clone())).cloned()
                }
                _ => None,
            };
            let error = found.is_none().then(|| {
                let plural = if kind == "Role" {
                    "role"
                } else {
                    "clusterrole"
                };
                format!("{plural}.rbac.authorization.k8s.io {name:?} not found")
            });
            let describe = if namespace.is_empty() {
                format!("ClusterRoleBinding {:?}", meta::name(b))
            } else {
                format!("RoleBinding {:?}", format!("{}/{namespace}", meta::name(b)))
            };
            Binding {
                describe,
                role_kind: kind,
                role_name: name,
                subjects: b["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| Subject::from_json(s, namespace))
                    .collect(),
                rules: found.unwrap_or_default(),
                error,
            }
        };
        let mut index = Index {
            cluster: objects(service, "clusterrolebindings")
                .iter()
                .map(|b| resolve(b, ""))
                .collect(),
            ..Index::default()
        };
        for b in objects(service, "rolebindings") {
            let ns = meta::namespace(&b).to_string();
            let binding = resolve(&b, &ns);
            index.by_namespace.entry(ns).or_default().push(binding);
        }
        index
    }

    /// Bindings that apply in `namespace` (cluster bindings first), with the subject that
    /// matched `user`.
    fn applicable<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a Binding, &'a Subject)> + 'a {
        let namespaced = if namespace.is_empty() {
            None
        } else {
            self.by_namespace.get(namespace)
        };
        self.cluster
            .iter()
            .chain(namespaced.into_iter().flatten())
            .filter_map(move |b| {
                b.subjects
                    .iter()
                    .find(|s| s.applies_to(user))
                    .map(|s| (b, s))
            })
    }
}

/// The RBAC authorizer (see the module's documentation).
#[derive(Debug, Default)]
pub struct RbacAuthorizer {
    index: RwLock<Option<(u64, Arc<Index>)>>,
}

impl RbacAuthorizer {
    /// An authorizer whose index is built on first use.
    pub fn new() -> Self {
        Self::default()
    }

    fn index(&self, service: &Service) -> Arc<Index> {
        let generation = GENERATION.load(Ordering::Acquire);
        if let Some((g, index)) = &*self.index.read().unwrap_or_else(|p| p.into_inner())
            && *g == generation
        {
            return index.clone();
        }
        let mut slot = self.index.write().unwrap_or_else(|p| p.into_inner());
        if let Some((g, index)) = &*slot
            && *g == generation
        {
            return index.clone();
        }
        let index = Arc::new(Index::build(service));
        *slot = Some((generation, index.clone()));
        index
    }

    /// Every rule `user` holds in `namespace` (cluster-wide ones included), and the errors
    /// met resolving its bindings.
    pub fn user_rules(
        &self,
        service: &Service,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<Rule>, Vec<String>) {
        let index = self.index(service);
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        for (b, _) in index.applicable(user, namespace) {
            rules.extend(b.rules.iter().cloned());
            errors.extend(b.error.clone());
        }
        (rules, errors)
    }
}

impl Authorizer for RbacAuthorizer {
    fn authorize(&self, service: &Service, attributes: &Attributes) -> Decision {
        let index = self.index(service);
        let mut errors = Vec::new();
        for (b, subject) in index.applicable(&attributes.user, &attributes.namespace) {
            if b.rules.iter().any(|r| r.allows(attributes)) {
                return Decision::Allow(format!(
                    "RBAC: allowed by {} of {} {:?} to {}",
                    b.describe,
                    b.role_kind,
                    b.role_name,
                    subject.describe()
                ));
            }
            errors.extend(b.error.clone());
        }
        if errors.is_empty() {
            Decision::NoOpinion(String::new())
        } else {
            Decision::NoOpinion(format!("RBAC: [{}]", errors.join(", ")))
        }
    }

    fn rules_for(&self, service: &Service, user: &UserInfo, namespace: &str) -> Rules {
        let (rules, _) = self.user_rules(service, user, namespace);
        let mut out = Rules::default();
        for r in rules {
            if r.non_resource_urls.is_empty() {
                out.resource_rules.push(ResourceRule {
                    verbs: r.verbs,
                    api_groups: r.api_groups,
                    resources: r.resources,
                    resource_names: r.resource_names,
                });
            } else {
                out.non_resource_rules.push(NonResourceRule {
                    verbs: r.verbs,
                    non_resource_urls: r.non_resource_urls,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> Attributes {
        Attributes {
            user: UserInfo::new("u", &[]),
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ns".into(),
            name: name.into(),
            ..Attributes::default()
        }
    }

    fn rule(v: Value) -> Rule {
        Rule::from_json(&v)
    }

    #[test]
    fn rule_matching_as_kubernetes() {
        let pods =
            rule(json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(pods.allows(&attrs("get", "", "pods", "", "p")));
        assert!(!pods.allows(&attrs("delete", "", "pods", "", "p")));
        assert!(!pods.allows(&attrs("get", "apps", "pods", "", "p")));
        // A subresource needs its own rule.
        assert!(!pods.allows(&attrs("get", "", "pods", "log", "p")));
        let log = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}));
        assert!(log.allows(&attrs("get", "", "pods", "log", "p")));
        assert!(!log.allows(&attrs("get", "", "pods", "", "p")));
        let scale = rule(json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*/scale"]}));
        assert!(scale.allows(&attrs("update", "apps", "deployments", "scale", "d")));
        assert!(!scale.allows(&attrs("update", "apps", "deployments", "", "d")));
        assert!(!scale.allows(&attrs("update", "apps", "deployments", "status", "d")));
        let named = rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"]}),
        );
        assert!(named.allows(&attrs("get", "", "configmaps", "", "c")));
        assert!(!named.allows(&attrs("get", "", "configmaps", "", "d")));
        assert!(!named.allows(&attrs("list", "", "configmaps", "", "")));
        let urls = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/healthz", "/api/*"]}));
        let mut a = Attributes {
            verb: "get".into(),
            path: "/api/v1".into(),
            ..Attributes::default()
        };
        assert!(urls.allows(&a));
        a.path = "/healthz".into();
        assert!(urls.allows(&a));
        a.path = "/healthz/etcd".into();
        assert!(!urls.allows(&a));
        assert!(!pods.allows(&a));
    }

    #[test]
    fn covering_and_escalation() {
        let admin = vec![rule(
            json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}),
        )];
        let edit = vec![rule(
            json!({"verbs": ["get", "create"], "apiGroups": [""], "resources": ["pods", "pods/log"]}),
        )];
        assert!(uncovered(&admin, &edit).is_empty());
        let wants = vec![rule(
            json!({"verbs": ["get", "delete"], "apiGroups": [""], "resources": ["pods", "secrets"]}),
        )];
        let missing = uncovered(&edit, &wants);
        assert_eq!(missing.len(), 3);
        assert_eq!(
            missing[0].compact_string(),
            r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}"#
        );
        let sub = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]}),
        )];
        let star = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]}),
        )];
        assert!(uncovered(&star, &sub).is_empty());
        let named = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["a"]}),
        )];
        let all_pods = vec![rule(
            json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}),
        )];
        assert!(!uncovered(&named, &all_pods).is_empty());
        assert!(uncovered(&all_pods, &named).is_empty());
        let urls = vec![rule(
            json!({"verbs": ["get"], "nonResourceURLs": ["/api/*"]}),
        )];
        let want_url = vec![rule(
            json!({"verbs": ["get"], "nonResourceURLs": ["/api/v1"]}),
        )];
        assert!(uncovered(&urls, &want_url).is_empty());
        assert!(!uncovered(&want_url, &urls).is_empty());
    }

    #[tokio::test]
    async fn bootstrap_policy_and_an_index_rebuilt_only_after_rbac_writes() {
        use crate::auth::users;
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        let namespaces = service.registry.get("", "v1", "namespaces").unwrap();
        for name in ["default", "kube-system"] {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            service
                .create(&namespaces, None, ns, &Default::default())
                .await
                .unwrap();
        }
        crate::authz::bootstrap::reconcile(&service).await.unwrap();
        let z = RbacAuthorizer::new();
        let can = |user: &UserInfo, method: &str, path: &str| {
            z.authorize(
                &service,
                &Attributes::of_request(user.clone(), method, path, None),
            )
        };
        let scheduler = UserInfo::new(users::SCHEDULER, &[]);
        assert!(can(&scheduler, "POST", "/api/v1/namespaces/a/pods/p/binding").allowed());
        assert!(
            can(
                &scheduler,
                "PATCH",
                "/apis/scheduling.x-k8s.io/v1alpha1/namespaces/a/podgroups/g/status"
            )
            .allowed()
        );
        assert!(!can(&scheduler, "GET", "/api/v1/namespaces/a/secrets/s").allowed());
        let proxy = UserInfo::new(users::PROXY, &[]);
        assert!(can(&proxy, "GET", "/apis/discovery.k8s.io/v1/endpointslices").allowed());
        assert!(!can(&proxy, "GET", "/api/v1/secrets").allowed());
        let dns = UserInfo::new(users::DNS, &[]);
        assert!(can(&dns, "GET", "/api/v1/pods").allowed());
        assert!(!can(&dns, "POST", "/api/v1/namespaces/a/pods").allowed());
        assert!(
            can(
                &dns,
                "PATCH",
                "/api/v1/namespaces/kube-system/services/kube-dns"
            )
            .allowed()
        );
        assert!(
            !can(
                &dns,
                "PATCH",
                "/api/v1/namespaces/kube-system/services/other"
            )
            .allowed()
        );
        assert!(
            !can(
                &dns,
                "PATCH",
                "/api/v1/namespaces/default/services/kube-dns"
            )
            .allowed()
        );
        let kcm = UserInfo::new(users::CONTROLLER_MANAGER, &[]);
        assert!(can(&kcm, "DELETE", "/apis/apps/v1/namespaces/a/replicasets/r").allowed());
        assert!(can(&kcm, "PUT", "/api/v1/namespaces/a/finalize").allowed());
        assert!(can(&kcm, "POST", "/api/v1/namespaces/a/serviceaccounts").allowed());
        let anyone = UserInfo::new("carol", &[]);
        assert_eq!(
            can(&anyone, "GET", "/apis/apps/v1"),
            Decision::Allow("RBAC: allowed by ClusterRoleBinding \"system:discovery\" of ClusterRole \"system:discovery\" to Group \"system:authenticated\"".into())
        );
        assert!(
            can(
                &anyone,
                "POST",
                "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
            )
            .allowed()
        );
        assert!(!can(&anyone, "GET", "/api/v1/namespaces/default/pods").allowed());
        assert!(can(&UserInfo::anonymous(), "GET", "/healthz").allowed());
        assert!(!can(&UserInfo::anonymous(), "GET", "/api").allowed());

        // The index is shared between requests until an RBAC object is written.
        // (Other tests of this process may write RBAC objects meanwhile: try a few times.)
        let reused = (0..100).any(|_| Arc::ptr_eq(&z.index(&service), &z.index(&service)));
        assert!(reused);
        let first = z.index(&service);
        let bindings = service
            .registry
            .get(crate::strategy::rbac::GROUP, "v1", "rolebindings")
            .unwrap();
        let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "carol-edit", "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "missing"},
            "subjects": [{"kind": "User", "name": "carol"}]});
        service
            .create(&bindings, Some("default"), binding, &Default::default())
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &z.index(&service)));
        assert_eq!(
            can(&anyone, "GET", "/api/v1/namespaces/default/pods"),
            Decision::NoOpinion(
                "RBAC: [role.rbac.authorization.k8s.io \"missing\" not found]".into()
            )
        );
    }

    #[test]
    fn subjects() {
        let user = UserInfo::new("system:serviceaccount:a:sa", &["system:serviceaccounts"]);
        let sa = Subject::from_json(&json!({"kind": "ServiceAccount", "name": "sa"}), "a").unwrap();
        assert!(sa.applies_to(&user));
        let other =
            Subject::from_json(&json!({"kind": "ServiceAccount", "name": "sa"}), "b").unwrap();
        assert!(!other.applies_to(&user));
        let group = Subject::from_json(
            &json!({"kind": "Group", "name": "system:serviceaccounts"}),
            "",
        )
        .unwrap();
        assert!(group.applies_to(&user));
        assert_eq!(sa.describe(), "ServiceAccount \"sa/a\"");
        assert!(!Subject::User("alice".into()).applies_to(&user));
    }
}

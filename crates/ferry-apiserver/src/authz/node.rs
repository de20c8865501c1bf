//! The Node authorizer, as Kubernetes': node agents (`system:node:<name>` in `system:nodes`)
//! may read what every node reads (nodes, pods, services, endpoints, EndpointSlices,
//! RuntimeClasses), write their own Node and its status and their own Lease, write the status
//! of (and finish deleting) the pods bound to them, read the Secrets, ConfigMaps and
//! PersistentVolumeClaims those pods use (and the PersistentVolumes those claims are bound
//! to), ask for tokens of those pods' service accounts, and
//! write Events. Everything else gets no opinion (RBAC binds nothing to nodes by default).
//!
//! Which objects a node's pods use is computed from the pods in the store on request (only
//! node agents' requests pay for it).

use serde_json::Value;

use super::{Attributes, Authorizer, Decision, NonResourceRule, ResourceRule, Rules};
use crate::auth::UserInfo;
use crate::service::Service;

/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// The Node authorizer.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeAuthorizer;

const READ: &[&str] = &["get", "list", "watch"];

/// The rules every node holds (Kubernetes' `NodeRules`, reduced to what Ferry serves).
fn static_rules() -> Vec<super::rbac::Rule> {
    let r = |verbs: &[&str], groups: &[&str], resources: &[&str]| super::rbac::Rule {
        verbs: verbs.iter().map(|s| s.to_string()).collect(),
        api_groups: groups.iter().map(|s| s.to_string()).collect(),
        resources: resources.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    vec![
        r(READ, &[""], &["services", "endpoints", "namespaces"]),
        r(READ, &["discovery.k8s.io"], &["endpointslices"]),
        r(READ, &["node.k8s.io"], &["runtimeclasses"]),
        r(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
        r(
            &["create", "update", "patch"],
            &["", "events.k8s.io"],
            &["events"],
        ),
        r(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        r(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "selfsubjectaccessreviews"],
        ),
    ]
}

fn no_relationship(node: &str) -> Decision {
    Decision::NoOpinion(format!(
        "no relationship found between node '{node}' and this object"
    ))
}

fn pods_on<'a>(
    service: &'a Service,
    node: &'a str,
    namespace: Option<&str>,
) -> impl Iterator<Item = std::sync::Arc<Value>> + 'a {
    service
        .store
        .list("pods", namespace, None, 0, |p| {
            p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
        })
        .items
        .into_iter()
        .map(|o| o.value)
}

/// The names of the objects of `kind` (`secret`, `configmap`, `pvc`, `serviceaccount`) a
/// pod uses.
pub fn referenced_by_pod(pod: &Value, kind: &str) -> Vec<String> {
    let spec = &pod["spec"];
    let mut names = Vec::new();
    let mut push = |v: &Value| {
        if let Some(n) = v.as_str().filter(|n| !n.is_empty()) {
            names.push(n.to_string());
        }
    };
    match kind {
        "serviceaccount" => {
            push(&spec["serviceAccountName"]);
            push(&spec["serviceAccount"]);
        }
        "pvc" => {
            for v in spec["volumes"].as_array().into_iter().flatten() {
                push(&v["persistentVolumeClaim"]["claimName"]);
            }
        }
        "secret" | "configmap" => {
            let secret = kind == "secret";
            if secret {
                for s in spec["imagePullSecrets"].as_array().into_iter().flatten() {
                    push(&s["name"]);
                }
            }
            for v in spec["volumes"].as_array().into_iter().flatten() {
                if secret {
                    push(&v["secret"]["secretName"]);
                } else {
                    push(&v["configMap"]["name"]);
                }
                for source in v["projected"]["sources"].as_array().into_iter().flatten() {
                    push(&source[if secret { "secret" } else { "configMap" }]["name"]);
                }
            }
            let (key_ref, env_from) = if secret {
                ("secretKeyRef", "secretRef")
            } else {
                ("configMapKeyRef", "configMapRef")
            };
            for list in ["initContainers", "containers", "ephemeralContainers"] {
                for c in spec[list].as_array().into_iter().flatten() {
                    for e in c["env"].as_array().into_iter().flatten() {
                        push(&e["valueFrom"][key_ref]["name"]);
                    }
                    for e in c["envFrom"].as_array().into_iter().flatten() {
                        push(&e[env_from]["name"]);
                    }
                }
            }
        }
        _ => {}
    }
    names
}

impl NodeAuthorizer {
    fn authorize_node(&self, node: &str, a: &Attributes) -> Decision {
        match (a.verb.as_str(), a.subresource.as_str()) {
            (v, "") if READ.contains(&v) => Decision::Allow(String::new()),
            // The name of a new Node is checked by NodeRestriction.
            ("create", "") => Decision::Allow(String::new()),
            ("update" | "patch", "" | "status") if a.name == node => Decision::Allow(String::new()),
            ("get", "status") if a.name == node => Decision::Allow(String::new()),
            _ => Decision::NoOpinion(format!("node '{node}' cannot {} node '{}'", a.verb, a.name)),
        }
    }

    fn authorize_pod(&self, service: &Service, node: &str, a: &Attributes) -> Decision {
        let bound = || {
            service
                .store
                .get(&ferry_store::ObjectKey::new("pods", &a.namespace, &a.name))
                .is_some_and(|p| {
                    p.value.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
                })
        };
        match (a.verb.as_str(), a.subresource.as_str()) {
            (v, "") if READ.contains(&v) => Decision::Allow(String::new()),
            ("get", "status") => Decision::Allow(String::new()),
            ("update" | "patch", "status") | ("delete", "") if bound() => {
                Decision::Allow(String::new())
            }
            _ => no_relationship(node),
        }
    }

    fn authorize_referenced(
        &self,
        service: &Service,
        node: &str,
        kind: &str,
        a: &Attributes,
    ) -> Decision {
        if a.verb != "get" || a.name.is_empty() || !a.subresource.is_empty() {
            return Decision::NoOpinion("can only get individual resources of this type".into());
        }
        let used = pods_on(service, node, Some(&a.namespace))
            .any(|p| referenced_by_pod(&p, kind).contains(&a.name));
        if used {
            Decision::Allow(String::new())
        } else {
            no_relationship(node)
        }
    }

    /// A node may get the PersistentVolumes bound to the claims of its pods.
    fn authorize_volume(&self, service: &Service, node: &str, a: &Attributes) -> Decision {
        if a.verb != "get" || a.name.is_empty() || !a.subresource.is_empty() {
            return Decision::NoOpinion("can only get individual resources of this type".into());
        }
        let used = pods_on(service, node, None).any(|p| {
            let namespace = p
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            referenced_by_pod(&p, "pvc").iter().any(|claim| {
                service
                    .store
                    .get(&ferry_store::ObjectKey::new(
                        "persistentvolumeclaims",
                        &namespace,
                        claim,
                    ))
                    .is_some_and(|c| {
                        c.value.pointer("/spec/volumeName").and_then(Value::as_str)
                            == Some(a.name.as_str())
                    })
            })
        });
        if used {
            Decision::Allow(String::new())
        } else {
            no_relationship(node)
        }
    }

    fn authorize_token(&self, service: &Service, node: &str, a: &Attributes) -> Decision {
        if a.verb != "create" || a.subresource != "token" {
            return Decision::NoOpinion(
                "can only create tokens for individual service accounts".into(),
            );
        }
        let used = pods_on(service, node, Some(&a.namespace))
            .any(|p| referenced_by_pod(&p, "serviceaccount").contains(&a.name));
        if used {
            Decision::Allow(String::new())
        } else {
            no_relationship(node)
        }
    }

    fn authorize_lease(&self, node: &str, a: &Attributes) -> Decision {
        if a.namespace != NODE_LEASE_NAMESPACE {
            return Decision::NoOpinion(format!(
                "can only access leases in the namespace {NODE_LEASE_NAMESPACE}"
            ));
        }
        match a.verb.as_str() {
            // The name of a new Lease is checked by NodeRestriction.
            "create" => Decision::Allow(String::new()),
            "get" | "update" | "patch" | "delete" if a.name == node => {
                Decision::Allow(String::new())
            }
            _ => Decision::NoOpinion(
                "can only access node lease with the same name as the requesting node".into(),
            ),
        }
    }
}

impl Authorizer for NodeAuthorizer {
    fn authorize(&self, service: &Service, a: &Attributes) -> Decision {
        let Some(node) = a.user.node_name() else {
            return Decision::NoOpinion(String::new());
        };
        if node.is_empty() {
            return Decision::NoOpinion(format!("unknown node for user {:?}", a.user.name));
        }
        if a.resource_request {
            match (a.api_group.as_str(), a.resource.as_str()) {
                ("", "nodes") => return self.authorize_node(node, a),
                ("", "pods") => return self.authorize_pod(service, node, a),
                ("", "secrets") => return self.authorize_referenced(service, node, "secret", a),
                ("", "configmaps") => {
                    return self.authorize_referenced(service, node, "configmap", a);
                }
                ("", "persistentvolumeclaims") => {
                    return self.authorize_referenced(service, node, "pvc", a);
                }
                ("", "persistentvolumes") => return self.authorize_volume(service, node, a),
                ("", "serviceaccounts") => return self.authorize_token(service, node, a),
                ("coordination.k8s.io", "leases") => return self.authorize_lease(node, a),
                _ => {}
            }
        }
        if static_rules().iter().any(|r| r.allows(a)) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    fn rules_for(&self, _service: &Service, user: &UserInfo, _namespace: &str) -> Rules {
        if user.node_name().is_none() {
            return Rules::default();
        }
        let mut rules = Rules {
            incomplete: true,
            ..Rules::default()
        };
        let mut all = static_rules();
        all.push(super::rbac::Rule {
            verbs: READ.iter().map(|s| s.to_string()).collect(),
            api_groups: vec![String::new()],
            resources: vec!["nodes".into(), "pods".into()],
            ..Default::default()
        });
        for r in all {
            rules.resource_rules.push(ResourceRule {
                verbs: r.verbs,
                api_groups: r.api_groups,
                resources: r.resources,
                resource_names: r.resource_names,
            });
        }
        rules.non_resource_rules = Vec::<NonResourceRule>::new();
        rules
    }
}

/// The authorizers of a server, asked in order: the first that allows or denies decides.
pub struct Union(pub Vec<std::sync::Arc<dyn Authorizer>>);

impl Authorizer for Union {
    fn authorize(&self, service: &Service, a: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for z in &self.0 {
            match z.authorize(service, a) {
                Decision::NoOpinion(why) => {
                    if !why.is_empty() {
                        reasons.push(why);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    fn rules_for(&self, service: &Service, user: &UserInfo, namespace: &str) -> Rules {
        let mut all = Rules::default();
        for z in &self.0 {
            let r = z.rules_for(service, user, namespace);
            all.resource_rules.extend(r.resource_rules);
            all.non_resource_rules.extend(r.non_resource_rules);
            all.incomplete |= r.incomplete;
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(user: &UserInfo, method: &str, path: &str) -> Attributes {
        Attributes::of_request(user.clone(), method, path, None)
    }

    #[tokio::test]
    async fn nodes_reach_what_their_pods_use() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            ferry_store::Store::open(ferry_store::StoreConfig::new(dir.path().join("state.db")))
                .unwrap();
        let service = Service::new(store);
        for (name, node, secret) in [("mine", "n1", "s1"), ("theirs", "n2", "s2")] {
            let pod = json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"nodeName": node, "serviceAccountName": format!("sa-{node}"),
                         "volumes": [{"name": "v", "secret": {"secretName": secret}},
                                     {"name": "d", "persistentVolumeClaim": {"claimName": format!("claim-{node}")}}],
                         "containers": [{"name": "c", "image": "i"}]}});
            let key = ferry_store::ObjectKey::new("pods", "ns", name);
            service.store.create(key, pod).await.unwrap();
            let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": format!("claim-{node}"), "namespace": "ns"},
                "spec": {"volumeName": format!("pv-{node}")}});
            let key = ferry_store::ObjectKey::new(
                "persistentvolumeclaims",
                "ns",
                format!("claim-{node}"),
            );
            service.store.create(key, claim).await.unwrap();
        }
        let n1 = UserInfo::new(
            crate::auth::users::node("n1"),
            &[crate::auth::groups::NODES],
        );
        let z = NodeAuthorizer;
        let allowed =
            |method: &str, path: &str| z.authorize(&service, &request(&n1, method, path)).allowed();
        // Reads every node has.
        assert!(allowed("GET", "/api/v1/nodes"));
        assert!(allowed("GET", "/api/v1/pods"));
        assert!(allowed("GET", "/api/v1/namespaces/ns/services"));
        assert!(allowed("GET", "/apis/discovery.k8s.io/v1/endpointslices"));
        assert!(allowed("POST", "/api/v1/namespaces/ns/events"));
        // Its own Node and Lease only.
        assert!(allowed("PATCH", "/api/v1/nodes/n1/status"));
        assert!(allowed("PUT", "/api/v1/nodes/n1"));
        assert!(!allowed("PATCH", "/api/v1/nodes/n2/status"));
        assert!(!allowed("DELETE", "/api/v1/nodes/n1"));
        assert!(allowed(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1"
        ));
        assert!(!allowed(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n2"
        ));
        assert!(!allowed(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/n1"
        ));
        // The status of its pods only.
        assert!(allowed("PATCH", "/api/v1/namespaces/ns/pods/mine/status"));
        assert!(!allowed(
            "PATCH",
            "/api/v1/namespaces/ns/pods/theirs/status"
        ));
        assert!(!allowed("PATCH", "/api/v1/namespaces/ns/pods/mine"));
        assert!(allowed("DELETE", "/api/v1/namespaces/ns/pods/mine"));
        assert!(!allowed("DELETE", "/api/v1/namespaces/ns/pods/theirs"));
        // Secrets and tokens its pods use, one by one.
        assert!(allowed("GET", "/api/v1/namespaces/ns/secrets/s1"));
        assert!(!allowed("GET", "/api/v1/namespaces/ns/secrets/s2"));
        assert!(!allowed("GET", "/api/v1/namespaces/ns/secrets"));
        assert!(!allowed("GET", "/api/v1/namespaces/other/secrets/s1"));
        assert!(!allowed("GET", "/api/v1/namespaces/ns/configmaps/s1"));
        assert!(allowed(
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/sa-n1/token"
        ));
        assert!(!allowed(
            "POST",
            "/api/v1/namespaces/ns/serviceaccounts/sa-n2/token"
        ));
        // The claims of its pods and the volumes they are bound to.
        assert!(allowed(
            "GET",
            "/api/v1/namespaces/ns/persistentvolumeclaims/claim-n1"
        ));
        assert!(!allowed(
            "GET",
            "/api/v1/namespaces/ns/persistentvolumeclaims/claim-n2"
        ));
        assert!(allowed("GET", "/api/v1/persistentvolumes/pv-n1"));
        assert!(!allowed("GET", "/api/v1/persistentvolumes/pv-n2"));
        assert!(!allowed("GET", "/api/v1/persistentvolumes"));
        // Nothing else.
        assert!(!allowed("POST", "/api/v1/namespaces"));
        assert!(!allowed(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles"
        ));
        let d = z.authorize(
            &service,
            &request(&n1, "GET", "/api/v1/namespaces/ns/secrets/s2"),
        );
        assert_eq!(
            d,
            Decision::NoOpinion("no relationship found between node 'n1' and this object".into())
        );
        // Not a node (no `system:nodes`): no opinion.
        let pretender = UserInfo::new(crate::auth::users::node("n1"), &[]);
        assert!(matches!(
            z.authorize(&service, &request(&pretender, "GET", "/api/v1/nodes")),
            Decision::NoOpinion(_)
        ));
    }

    #[test]
    fn what_a_pod_uses() {
        let pod = json!({"spec": {
            "serviceAccountName": "sa",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol"}},
                {"name": "b", "configMap": {"name": "cm"}},
                {"name": "c", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "d", "projected": {"sources": [{"secret": {"name": "proj"}}, {"configMap": {"name": "kube-root-ca.crt"}}]}}
            ],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "env", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "envcm"}}]}]
        }});
        assert_eq!(
            referenced_by_pod(&pod, "secret"),
            ["pull", "vol", "proj", "env"]
        );
        assert_eq!(
            referenced_by_pod(&pod, "configmap"),
            ["cm", "kube-root-ca.crt", "envcm"]
        );
        assert_eq!(referenced_by_pod(&pod, "pvc"), ["data"]);
        assert_eq!(referenced_by_pod(&pod, "serviceaccount"), ["sa"]);
    }
}

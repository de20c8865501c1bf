//! Authorization end to end: RBAC objects written with kubectl and kube-rs, requests of the
//! static-token users (`alice`, `bob`, `carol`) allowed and refused as Kubernetes decides,
//! the review APIs, escalation prevention and ClusterRole aggregation.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::authorization::v1::{
    SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use k8s_openapi::api::rbac::v1::{ClusterRole, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use common::{TestPlane, eventually};

const WAIT: Duration = Duration::from_secs(60);

fn status_of(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]}
    }))
    .unwrap()
}

async fn namespaces(plane: &TestPlane, names: &[&str]) {
    let api: Api<Namespace> = Api::all(plane.client.clone());
    for n in names {
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": n}})).unwrap();
        api.create(&PostParams::default(), &ns).await.unwrap();
    }
}

/// Waits until the aggregation controller has filled in ClusterRole `name`.
async fn aggregated(plane: &TestPlane, name: &str) {
    let api: Api<ClusterRole> = Api::all(plane.client.clone());
    eventually(
        &format!("ClusterRole {name} aggregated"),
        WAIT,
        async || {
            let r = api.get(name).await.ok()?;
            r.rules.filter(|r| !r.is_empty()).map(|_| ())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn edit_in_one_namespace_and_view_without_secrets() {
    let plane = common::start().await;
    namespaces(&plane, &["a", "b"]).await;
    aggregated(&plane, "edit").await;
    aggregated(&plane, "view").await;
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "a",
        ])
        .success();
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "alice-view",
            "--clusterrole=view",
            "--user=alice",
            "-n",
            "b",
        ])
        .success();
    let alice = plane.client_as("alice").await;

    let in_a: Api<Pod> = Api::namespaced(alice.clone(), "a");
    in_a.create(&PostParams::default(), &pod("p"))
        .await
        .unwrap();
    let secrets_a: Api<Secret> = Api::namespaced(alice.clone(), "a");
    secrets_a.list(&ListParams::default()).await.unwrap();

    let in_b: Api<Pod> = Api::namespaced(alice.clone(), "b");
    let refused = status_of(
        in_b.create(&PostParams::default(), &pod("p"))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert_eq!(refused.reason, "Forbidden");
    assert_eq!(
        refused.message,
        "pods is forbidden: User \"alice\" cannot create resource \"pods\" in API group \"\" in the namespace \"b\""
    );
    // view reads pods but not secrets.
    in_b.list(&ListParams::default()).await.unwrap();
    let secrets_b: Api<Secret> = Api::namespaced(alice.clone(), "b");
    let refused = status_of(secrets_b.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.contains("cannot list resource \"secrets\""),
        "{}",
        refused.message
    );
    // Nothing in other namespaces, nothing cluster-wide.
    let in_default: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    assert_eq!(
        status_of(in_default.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    let all_pods: Api<Pod> = Api::all(alice.clone());
    let refused = status_of(all_pods.list(&ListParams::default()).await.unwrap_err());
    assert!(
        refused.message.ends_with("at the cluster scope"),
        "{}",
        refused.message
    );
    // bob holds nothing; a binding to his group takes effect at once, and so does its
    // deletion.
    let bob = plane.client_as("bob").await;
    let bob_a: Api<Pod> = Api::namespaced(bob.clone(), "a");
    assert_eq!(
        status_of(bob_a.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "tenant-b-view",
            "--clusterrole=view",
            "--group=tenant-b",
            "-n",
            "a",
        ])
        .success();
    bob_a.list(&ListParams::default()).await.unwrap();
    plane
        .kubectl(&["delete", "rolebinding", "tenant-b-view", "-n", "a"])
        .success();
    assert_eq!(
        status_of(bob_a.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn access_reviews_answer_as_kubernetes() {
    let plane = common::start().await;
    namespaces(&plane, &["a"]).await;
    aggregated(&plane, "edit").await;
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "alice-edit",
            "--clusterrole=edit",
            "--user=alice",
            "-n",
            "a",
        ])
        .success();
    let review = |ns: &str, verb: &str, resource: &str| -> SubjectAccessReview {
        serde_json::from_value(json!({
            "spec": {"user": "alice", "groups": ["tenant-a", "system:authenticated"],
                     "resourceAttributes": {"namespace": ns, "verb": verb, "resource": resource}}
        }))
        .unwrap()
    };
    let reviews: Api<SubjectAccessReview> = Api::all(plane.client.clone());
    let yes = reviews
        .create(&PostParams::default(), &review("a", "create", "pods"))
        .await
        .unwrap();
    let status = yes.status.unwrap();
    assert!(status.allowed);
    assert_eq!(
        status.reason.as_deref(),
        Some(
            "RBAC: allowed by RoleBinding \"alice-edit/a\" of ClusterRole \"edit\" to User \"alice\""
        )
    );
    let no = reviews
        .create(&PostParams::default(), &review("b", "create", "pods"))
        .await
        .unwrap();
    assert!(!no.status.unwrap().allowed);
    let group = reviews
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"spec": {"user": "x", "groups": ["system:masters"],
                "resourceAttributes": {"verb": "delete", "resource": "nodes"}}}))
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(group.status.unwrap().allowed);

    // alice may not ask about others (no create on subjectaccessreviews)...
    let alice = plane.client_as("alice").await;
    let as_alice: Api<SubjectAccessReview> = Api::all(alice.clone());
    let refused = status_of(
        as_alice
            .create(&PostParams::default(), &review("a", "get", "pods"))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused
            .message
            .contains("subjectaccessreviews.authorization.k8s.io")
    );
    // ...but about herself.
    let selfs: Api<SelfSubjectAccessReview> = Api::all(alice.clone());
    let mine: SelfSubjectAccessReview = serde_json::from_value(json!({"spec": {
        "resourceAttributes": {"namespace": "a", "verb": "delete", "resource": "pods"}}}))
    .unwrap();
    let answer = selfs.create(&PostParams::default(), &mine).await.unwrap();
    assert!(answer.status.unwrap().allowed);
    let rules: Api<SelfSubjectRulesReview> = Api::all(alice.clone());
    let list: SelfSubjectRulesReview =
        serde_json::from_value(json!({"spec": {"namespace": "a"}})).unwrap();
    let list = rules.create(&PostParams::default(), &list).await.unwrap();
    let status = list.status.unwrap();
    assert!(status.resource_rules.iter().any(|r| {
        r.verbs.contains(&"create".to_string())
            && r.resources
                .as_ref()
                .is_some_and(|res| res.contains(&"pods".to_string()))
    }));
    assert!(status.resource_rules.iter().any(|r| {
        r.resources
            .as_ref()
            .is_some_and(|res| res.contains(&"selfsubjectaccessreviews".to_string()))
    }));
    let whoami: Api<SelfSubjectReview> = Api::all(alice.clone());
    let me = whoami
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({})).unwrap(),
        )
        .await
        .unwrap();
    let user = me.status.unwrap().user_info.unwrap();
    assert_eq!(user.username.as_deref(), Some("alice"));
    assert_eq!(
        user.groups.unwrap(),
        ["tenant-a", "system:authenticated"].map(String::from)
    );

    // kubectl as alice.
    let yes = plane
        .kubectl_as("alice", &["auth", "can-i", "create", "pods", "-n", "a"])
        .success();
    assert_eq!(yes.trim(), "yes");
    let no = plane.kubectl_as("alice", &["auth", "can-i", "create", "pods", "-n", "b"]);
    assert!(!no.ok);
    assert_eq!(no.stdout.trim(), "no");
    let no = plane.kubectl_as("alice", &["auth", "can-i", "list", "nodes"]);
    assert_eq!(no.stdout.trim(), "no");
    let list = plane
        .kubectl_as("alice", &["auth", "can-i", "--list", "-n", "a"])
        .success();
    let pods = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(pods.contains("create") && pods.contains("delete"), "{list}");
    assert!(
        !list.contains("rolebindings.rbac.authorization.k8s.io"),
        "{list}"
    );
    assert!(
        list.contains("selfsubjectaccessreviews.authorization.k8s.io"),
        "{list}"
    );
    let whoami = plane.kubectl_as("alice", &["auth", "whoami"]).success();
    assert!(
        whoami.contains("alice") && whoami.contains("tenant-a"),
        "{whoami}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn escalation_is_refused() {
    let plane = common::start().await;
    namespaces(&plane, &["a"]).await;
    aggregated(&plane, "admin").await;
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "alice-admin",
            "--clusterrole=admin",
            "--user=alice",
            "-n",
            "a",
        ])
        .success();
    let alice = plane.client_as("alice").await;
    let roles: Api<Role> = Api::namespaced(alice.clone(), "a");
    // A namespace admin may hand out what it holds...
    let reader: Role = serde_json::from_value(json!({"metadata": {"name": "reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]}]}))
    .unwrap();
    roles.create(&PostParams::default(), &reader).await.unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(alice.clone(), "a");
    let to_bob = |name: &str, kind: &str, role: &str| -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}))
        .unwrap()
    };
    bindings
        .create(
            &PostParams::default(),
            &to_bob("bob-reader", "Role", "reader"),
        )
        .await
        .unwrap();
    bindings
        .create(
            &PostParams::default(),
            &to_bob("bob-view", "ClusterRole", "view"),
        )
        .await
        .unwrap();
    // ...but not what it does not hold.
    let nodes: Role = serde_json::from_value(json!({"metadata": {"name": "nodes"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]}))
    .unwrap();
    let refused = status_of(
        roles
            .create(&PostParams::default(), &nodes)
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused.message.starts_with(
            "roles.rbac.authorization.k8s.io \"nodes\" is forbidden: user \"alice\" (groups=[\"tenant-a\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"get\"]}"
        ),
        "{}",
        refused.message
    );
    let refused = status_of(
        bindings
            .create(
                &PostParams::default(),
                &to_bob("bob-root", "ClusterRole", "cluster-admin"),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    assert!(
        refused
            .message
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        refused.message
    );
    // Widening an existing role is refused as well.
    let widened = json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]});
    let refused = status_of(
        roles
            .patch("reader", &PatchParams::default(), &Patch::Merge(&widened))
            .await
            .unwrap_err(),
    );
    assert_eq!(refused.code, 403);
    // Cluster-wide objects are out of reach (plain authorization).
    let cluster_roles: Api<ClusterRole> = Api::all(alice.clone());
    let mine: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "alice-all"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}))
    .unwrap();
    assert_eq!(
        status_of(
            cluster_roles
                .create(&PostParams::default(), &mine)
                .await
                .unwrap_err()
        )
        .code,
        403
    );
    // With `bind` on cluster-admin granted by the administrator, the binding passes.
    plane
        .kubectl_stdin(
            &["apply", "-f", "-"],
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: bind-cluster-admin
rules:
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["clusterroles"]
  resourceNames: ["cluster-admin"]
  verbs: ["bind"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: alice-may-bind
  namespace: a
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: bind-cluster-admin
subjects:
- kind: User
  name: alice
  apiGroup: rbac.authorization.k8s.io
"#,
        )
        .success();
    bindings
        .create(
            &PostParams::default(),
            &to_bob("bob-root", "ClusterRole", "cluster-admin"),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_writes_and_prints_rbac_objects() {
    let plane = common::start().await;
    namespaces(&plane, &["a"]).await;
    plane
        .kubectl(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods,pods/log",
            "-n",
            "a",
        ])
        .success();
    plane
        .kubectl(&[
            "create",
            "clusterrole",
            "node-reader",
            "--verb=get,list,watch",
            "--resource=nodes",
        ])
        .success();
    plane
        .kubectl(&[
            "create",
            "rolebinding",
            "read-pods",
            "--role=pod-reader",
            "--user=alice",
            "--serviceaccount=a:robot",
            "-n",
            "a",
        ])
        .success();
    plane
        .kubectl(&[
            "create",
            "clusterrolebinding",
            "read-nodes",
            "--clusterrole=node-reader",
            "--group=tenant-a",
        ])
        .success();
    let roles = plane.kubectl(&["get", "roles", "-n", "a"]).success();
    assert!(roles.starts_with("NAME"), "{roles}");
    assert!(
        roles.contains("CREATED AT") && roles.contains("pod-reader"),
        "{roles}"
    );
    let wide = plane
        .kubectl(&["get", "rolebinding", "read-pods", "-n", "a", "-o", "wide"])
        .success();
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"]
    );
    assert!(
        wide.contains("Role/pod-reader") && wide.contains("a/robot"),
        "{wide}"
    );
    let crb = plane
        .kubectl(&["get", "clusterrolebinding", "read-nodes"])
        .success();
    assert!(crb.contains("ClusterRole/node-reader"), "{crb}");
    // The default roles are there, aggregated.
    aggregated(&plane, "view").await;
    let defaults = plane
        .kubectl(&[
            "get",
            "clusterroles",
            "-l",
            "kubernetes.io/bootstrapping=rbac-defaults",
            "-o",
            "name",
        ])
        .success();
    for r in [
        "cluster-admin",
        "admin",
        "edit",
        "view",
        "system:kube-scheduler",
        "system:basic-user",
    ] {
        assert!(
            defaults.contains(&format!("clusterrole.rbac.authorization.k8s.io/{r}\n")),
            "{defaults}"
        );
    }
    // roleRef is immutable.
    let err = plane
        .kubectl(&[
            "patch",
            "rolebinding",
            "read-pods",
            "-n",
            "a",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"other"}}"#,
        ])
        .failure();
    assert!(err.contains("cannot change roleRef"), "{err}");
    // Invalid objects are refused with 422.
    let err = plane
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: bad, namespace: a}\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n",
        )
        .failure();
    assert!(err.contains("rules[0].verbs: Required value"), "{err}");
    // A standard manifest applies, twice (the second time unchanged).
    let manifest = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: queue-viewer
  labels:
    rbac.authorization.k8s.io/aggregate-to-view: "true"
rules:
- apiGroups: ["scheduling.ferry.dev"]
  resources: ["queues"]
  verbs: ["get", "list", "watch"]
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: queue-viewers
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: queue-viewer
subjects:
- kind: ServiceAccount
  name: default
  namespace: a
"#;
    let out = plane
        .kubectl_stdin(&["apply", "-f", "-"], manifest)
        .success();
    assert!(
        out.contains("clusterrole.rbac.authorization.k8s.io/queue-viewer created"),
        "{out}"
    );
    let out = plane
        .kubectl_stdin(&["apply", "-f", "-"], manifest)
        .success();
    assert!(out.contains("unchanged"), "{out}");
    // The aggregation controller picks up the new piece of view.
    let api: Api<ClusterRole> = Api::all(plane.client.clone());
    eventually("view aggregates queue-viewer", WAIT, async || {
        let view = api.get("view").await.ok()?;
        view.rules?
            .iter()
            .any(|r| {
                r.non_resource_urls
                    .as_ref()
                    .is_some_and(|u| u.contains(&"/metrics".to_string()))
            })
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn discovery_lists_the_review_apis() {
    let plane = common::start().await;
    let out = plane
        .kubectl(&[
            "api-resources",
            "--api-group=authorization.k8s.io",
            "-o",
            "wide",
        ])
        .success();
    for r in [
        "selfsubjectaccessreviews",
        "subjectaccessreviews",
        "localsubjectaccessreviews",
        "selfsubjectrulesreviews",
    ] {
        assert!(out.contains(r), "{out}");
    }
    for line in out.lines().skip(1) {
        let columns: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(columns.last(), Some(&"create"), "create-only: {line}");
    }
    let out = plane
        .kubectl(&["auth", "can-i", "create", "pods"])
        .success();
    assert_eq!(out.trim(), "yes");
    let out = plane.kubectl(&["auth", "whoami"]).success();
    assert!(out.contains("kubernetes-admin"), "{out}");
    let out = plane
        .kubectl(&["auth", "can-i", "--list", "-n", "default"])
        .success();
    assert!(out.contains("*.*"), "{out}");
}

//! The default ClusterRoles and ClusterRoleBindings every cluster has, as kube-apiserver's
//! bootstrap policy: `cluster-admin` (bound to `system:masters`), the user-facing `admin`,
//! `edit` and `view` (aggregated from `system:aggregate-to-*`, which cover the core, apps and
//! batch kinds and Ferry's scheduling CRDs), the discovery roles every user holds, and one
//! least-privilege role per component (scheduler, controllers, Service proxy, DNS).
//!
//! They are created at start and reconciled when they carry
//! `rbac.authorization.kubernetes.io/autoupdate: "true"` (an administrator who sets it to
//! `false` keeps their changes).

use serde_json::{Value, json};

use crate::auth::{groups, users};
use crate::error::ApiError;
use crate::service::{Service, WriteOptions};

/// The annotation that lets the server reconcile a default object.
pub const AUTOUPDATE: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The label of every default object.
pub const BOOTSTRAPPING: &str = "kubernetes.io/bootstrapping";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
const ALL: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(verbs: &[&str], urls: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn cluster_role(name: &str, labels: &[(&str, &str)], rules: Vec<Value>) -> Value {
    let mut l = serde_json::Map::new();
    l.insert(BOOTSTRAPPING.into(), json!("rbac-defaults"));
    for (k, v) in labels {
        l.insert((*k).into(), json!(v));
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": l, "annotations": {AUTOUPDATE: "true"}},
        "rules": rules,
    })
}

fn aggregated(name: &str, labels: &[(&str, &str)], selectors: &[&str]) -> Value {
    let mut role = cluster_role(name, labels, vec![]);
    role["aggregationRule"] = json!({
        "clusterRoleSelectors": selectors.iter().map(|s| json!({"matchLabels": {*s: "true"}})).collect::<Vec<_>>()
    });
    role
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, n)| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": n}))
        .collect();
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {BOOTSTRAPPING: "rbac-defaults"}, "annotations": {AUTOUPDATE: "true"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects,
    })
}

const AGG_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
const AGG_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const AGG_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const FERRY: &str = "scheduling.ferry.dev";
const PODGROUPS: &str = "scheduling.x-k8s.io";

/// The default ClusterRoles.
pub fn cluster_roles() -> Vec<Value> {
    let mut roles = default_cluster_roles();
    fill_aggregated(&mut roles);
    roles
}

/// Fills the rules of the aggregated defaults (`admin`, `edit`, `view`) from the defaults their
/// selectors match, to a fixed point (admin takes edit's, edit takes view's), so the roles
/// grant what they say from the first start, before the aggregation controller runs.
fn fill_aggregated(roles: &mut [Value]) {
    for _ in 0..roles.len() {
        let mut changed = false;
        for i in 0..roles.len() {
            let Some(selectors) = roles[i].pointer("/aggregationRule/clusterRoleSelectors") else {
                continue;
            };
            let selectors: Vec<(String, Value)> = selectors
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.get("matchLabels")?.as_object())
                .flat_map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())))
                .collect();
            let mut rules: Vec<Value> = Vec::new();
            for (j, other) in roles.iter().enumerate() {
                let labels = &other["metadata"]["labels"];
                if j != i && selectors.iter().any(|(k, v)| labels.get(k) == Some(v)) {
                    for r in other["rules"].as_array().into_iter().flatten() {
                        if !rules.contains(r) {
                            rules.push(r.clone());
                        }
                    }
                }
            }
            if roles[i]["rules"] != json!(rules) {
                roles[i]["rules"] = json!(rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn default_cluster_roles() -> Vec<Value> {
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        aggregated("admin", &[], &[AGG_ADMIN]),
        aggregated("edit", &[(AGG_ADMIN, "true")], &[AGG_EDIT]),
        aggregated("view", &[(AGG_EDIT, "true")], &[AGG_VIEW]),
        cluster_role(
            "system:aggregate-to-admin",
            &[(AGG_ADMIN, "true")],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["localsubjectaccessreviews"],
                ),
                rule(
                    ALL,
                    &["rbac.authorization.k8s.io"],
                    &["rolebindings", "roles"],
                ),
                // As Kubernetes' admin: ResourceQuotas and LimitRanges are read-only (from
                // view), so a namespace admin cannot lift its own ceiling.
                rule(WRITE, &[FERRY], &["reservations", "resourcepolicies"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-edit",
            &[(AGG_EDIT, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/exec",
                        "pods/portforward",
                        "pods/proxy",
                    ],
                ),
                rule(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                    ],
                ),
                rule(
                    WRITE,
                    &["apps"],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/rollback",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/scale",
                        "statefulsets",
                        "statefulsets/scale",
                    ],
                ),
                rule(WRITE, &["autoscaling"], &["horizontalpodautoscalers"]),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
                rule(
                    WRITE,
                    &["networking.k8s.io"],
                    &["ingresses", "networkpolicies"],
                ),
                rule(WRITE, &["policy"], &["poddisruptionbudgets"]),
                rule(WRITE, &["discovery.k8s.io"], &["endpointslices"]),
                rule(WRITE, &[PODGROUPS], &["podgroups"]),
            ],
        ),
        cluster_role(
            "system:aggregate-to-view",
            &[(AGG_VIEW, "true")],
            vec![
                rule(
                    READ,
                    &[""],
                    &[
                        "configmaps",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                    ],
                ),
                rule(
                    READ,
                    &[""],
                    &[
                        "bindings",
                        "events",
                        "limitranges",
                        "namespaces/status",
                        "pods/log",
                        "pods/status",
                        "replicationcontrollers/status",
                        "resourcequotas",
                        "resourcequotas/status",
                    ],
                ),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(
                    READ,
                    &["apps"],
                    &[
                        "controllerrevisions",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "statefulsets",
                        "statefulsets/scale",
                        "statefulsets/status",
                    ],
                ),
                rule(
                    READ,
                    &["autoscaling"],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
                rule(
                    READ,
                    &["policy"],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &["networking.k8s.io"],
                    &["ingresses", "ingresses/status", "networkpolicies"],
                ),
                rule(READ, &["metrics.k8s.io"], &["pods"]),
                rule(
                    READ,
                    &[FERRY],
                    &[
                        "queues",
                        "queues/status",
                        "reservations",
                        "reservations/status",
                        "resourcepolicies",
                        "resourcepolicies/status",
                    ],
                ),
                rule(READ, &[PODGROUPS], &["podgroups", "podgroups/status"]),
            ],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        cluster_role(
            "system:kube-scheduler",
            &[],
            vec![
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["create", "get", "list", "watch", "update", "patch"],
                    &["coordination.k8s.io"],
                    &["leases"],
                ),
                rule(READ, &[""], &["nodes", "namespaces", "services"]),
                rule(&["delete", "get", "list", "watch"], &[""], &["pods"]),
                rule(&["create"], &[""], &["bindings", "pods/binding"]),
                rule(&["patch", "update"], &[""], &["pods/status"]),
                rule(READ, &["scheduling.k8s.io"], &["priorityclasses"]),
                rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
                // Volume binding: claims wait for their first consumer's node.
                rule(READ, &[""], &["persistentvolumes"]),
                rule(
                    &["get", "list", "watch", "patch", "update"],
                    &[""],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &["storage.k8s.io"], &["storageclasses", "csinodes"]),
                // The owners of pods (a Job's pods are one job of the scheduler).
                rule(
                    READ,
                    &["apps"],
                    &["replicasets", "statefulsets", "deployments", "daemonsets"],
                ),
                rule(READ, &["batch"], &["jobs"]),
                rule(
                    &["get", "list", "watch", "patch", "update"],
                    &[FERRY],
                    &["queues", "reservations", "resourcepolicies"],
                ),
                rule(
                    &["get", "patch", "update"],
                    &[FERRY],
                    &[
                        "queues/status",
                        "reservations/status",
                        "resourcepolicies/status",
                    ],
                ),
                rule(
                    &["get", "list", "watch", "patch", "update"],
                    &[PODGROUPS],
                    &["podgroups", "podgroups/status"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            &[],
            vec![
                // Garbage collection and namespace clean-up over every kind.
                rule(
                    &["get", "list", "watch", "patch", "update", "delete"],
                    &["*"],
                    &["*"],
                ),
                rule(
                    &["create"],
                    &[""],
                    &[
                        "serviceaccounts",
                        "configmaps",
                        "endpoints",
                        "services",
                        "events",
                        "serviceaccounts/token",
                    ],
                ),
                rule(&["create"], &["discovery.k8s.io"], &["endpointslices"]),
                rule(&["create"], &["events.k8s.io"], &["events"]),
                // The workload controllers' pods, claims and revisions; the local-path
                // provisioner's volumes.
                rule(
                    &["create"],
                    &[""],
                    &[
                        "pods",
                        "pods/eviction",
                        "persistentvolumeclaims",
                        "persistentvolumes",
                    ],
                ),
                rule(
                    &["create"],
                    &["apps"],
                    &["replicasets", "controllerrevisions"],
                ),
                rule(&["create"], &["batch"], &["jobs"]),
                rule(&["create"], &["storage.k8s.io"], &["storageclasses"]),
                rule(&["create"], &[PODGROUPS], &["podgroups"]),
                rule(&["create"], &["coordination.k8s.io"], &["leases"]),
                // The training controllers: a TrainJob runs as a JobSet; MPI's SSH keys.
                rule(&["create"], &["jobset.x-k8s.io"], &["jobsets"]),
                rule(&["create"], &[""], &["secrets"]),
                // MPIJob v1's launcher Role (pods/exec on its workers) and RoleBinding, which
                // grant what the controller-manager itself does not hold.
                rule(
                    &["create", "escalate", "bind"],
                    &["rbac.authorization.k8s.io"],
                    &["roles", "rolebindings"],
                ),
                // The ClusterRole aggregation controller writes rules it does not hold.
                rule(
                    &["escalate", "get", "list", "watch", "patch", "update"],
                    &["rbac.authorization.k8s.io"],
                    &["clusterroles"],
                ),
                rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["subjectaccessreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:node-proxier",
            &[],
            vec![
                rule(&["list", "watch"], &[""], &["endpoints", "services"]),
                rule(READ, &[""], &["nodes"]),
                rule(
                    &["create", "patch", "update"],
                    &["", "events.k8s.io"],
                    &["events"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
        cluster_role(
            "system:ferry-dns",
            &[],
            vec![
                rule(
                    &["list", "watch"],
                    &[""],
                    &["services", "endpoints", "pods", "namespaces"],
                ),
                rule(
                    &["list", "watch"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
            ],
        ),
    ]
}

/// The default ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<Value> {
    vec![
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", groups::MASTERS)],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", groups::AUTHENTICATED)],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", groups::AUTHENTICATED)],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", groups::AUTHENTICATED),
                ("Group", groups::UNAUTHENTICATED),
            ],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", users::SCHEDULER)],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", users::CONTROLLER_MANAGER)],
        ),
        binding(
            "system:node-proxier",
            "system:node-proxier",
            &[("User", users::PROXY)],
        ),
        binding(
            "system:ferry-dns",
            "system:ferry-dns",
            &[("User", users::DNS)],
        ),
    ]
}

/// The namespace of the components' own objects.
pub const KUBE_SYSTEM: &str = "kube-system";

/// The default Roles (in `kube-system`): the cluster DNS keeps its own `kube-dns` Service,
/// Endpoints and EndpointSlice there, and nothing else.
pub fn roles() -> Vec<Value> {
    let mut dns = cluster_role(
        "system:ferry-dns",
        &[],
        vec![
            json!({"apiGroups": [""], "resources": ["services", "endpoints"],
                   "resourceNames": ["kube-dns"], "verbs": ["get", "create", "update", "patch"]}),
            json!({"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                   "resourceNames": ["kube-dns-ferry"], "verbs": ["get", "create", "update", "patch"]}),
        ],
    );
    dns["kind"] = json!("Role");
    dns["metadata"]["namespace"] = json!(KUBE_SYSTEM);
    vec![dns]
}

/// The default RoleBindings (in `kube-system`).
pub fn role_bindings() -> Vec<Value> {
    let mut dns = binding(
        "system:ferry-dns",
        "system:ferry-dns",
        &[("User", users::DNS)],
    );
    dns["kind"] = json!("RoleBinding");
    dns["metadata"]["namespace"] = json!(KUBE_SYSTEM);
    dns["roleRef"]["kind"] = json!("Role");
    vec![dns]
}

/// The fields reconciled on an existing default object.
const RECONCILED: &[&str] = &["rules", "aggregationRule", "subjects"];

/// Creates the default roles and bindings that are missing, and brings back those marked for
/// automatic update that differ.
pub async fn reconcile(service: &Service) -> Result<(), ApiError> {
    let group = crate::strategy::rbac::GROUP;
    let internal = |m: &str| ApiError::internal(format!("{m} not served"));
    let roles = service
        .registry
        .get(group, "v1", "clusterroles")
        .ok_or_else(|| internal("clusterroles"))?;
    let bindings = service
        .registry
        .get(group, "v1", "clusterrolebindings")
        .ok_or_else(|| internal("clusterrolebindings"))?;
    let namespaced_roles = service
        .registry
        .get(group, "v1", "roles")
        .ok_or_else(|| internal("roles"))?;
    let role_bindings_info = service
        .registry
        .get(group, "v1", "rolebindings")
        .ok_or_else(|| internal("rolebindings"))?;
    let options = WriteOptions::default();
    for (info, objects) in [
        (&roles, cluster_roles()),
        (&bindings, cluster_role_bindings()),
        (&namespaced_roles, self::roles()),
        (&role_bindings_info, role_bindings()),
    ] {
        for mut want in objects {
            let name = crate::meta::name(&want).to_string();
            let namespace =
                Some(crate::meta::namespace(&want).to_string()).filter(|n| !n.is_empty());
            let ns = namespace.as_deref();
            let Ok(have) = service.get(info, ns, &name) else {
                match service.create(info, ns, want, &options).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {}
                    // A namespace of a namespaced default is missing (a bare store in tests).
                    Err(e) if e.code == 404 && ns.is_some() => {
                        tracing::warn!(%name, namespace = ?ns, "default RBAC object skipped: its namespace is missing");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            };
            let have = &*have.value;
            if have.pointer(&format!(
                "/metadata/annotations/{}",
                AUTOUPDATE.replace('/', "~1")
            )) != Some(&json!("true"))
            {
                continue;
            }
            // Aggregated roles' rules belong to the aggregation controller.
            if want.get("aggregationRule").is_some()
                && have["rules"].as_array().is_some_and(|r| !r.is_empty())
            {
                want["rules"] = have["rules"].clone();
            }
            if RECONCILED.iter().all(|f| have.get(*f) == want.get(*f)) {
                continue;
            }
            let mut updated = have.clone();
            for f in RECONCILED {
                match want.get(*f) {
                    Some(v) => updated[*f] = v.clone(),
                    None => {
                        updated.as_object_mut().map(|o| o.remove(*f));
                    }
                }
            }
            service
                .update(info, ns, &name, updated, None, &options)
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::rbac::{Rule, uncovered};

    fn rules_of(name: &str) -> Vec<Rule> {
        cluster_roles()
            .iter()
            .find(|r| r["metadata"]["name"] == name)
            .map(Rule::all_of)
            .unwrap()
    }

    #[test]
    fn view_reads_no_secrets_and_edit_grants_no_rbac() {
        let secrets = vec![Rule::from_json(
            &json!({"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}),
        )];
        assert!(!uncovered(&rules_of("system:aggregate-to-view"), &secrets).is_empty());
        assert!(uncovered(&rules_of("system:aggregate-to-edit"), &secrets).is_empty());
        let roles = vec![Rule::from_json(
            &json!({"verbs": ["create"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"]}),
        )];
        assert!(!uncovered(&rules_of("system:aggregate-to-edit"), &roles).is_empty());
        assert!(uncovered(&rules_of("system:aggregate-to-admin"), &roles).is_empty());
        assert!(!uncovered(&rules_of("system:kube-scheduler"), &secrets).is_empty());
    }

    #[test]
    fn defaults_are_labelled_and_bindings_name_existing_roles() {
        let roles = cluster_roles();
        for r in roles
            .iter()
            .chain(cluster_role_bindings().iter())
            .chain(self::roles().iter())
            .chain(role_bindings().iter())
        {
            assert_eq!(r["metadata"]["labels"][BOOTSTRAPPING], "rbac-defaults");
            assert_eq!(r["metadata"]["annotations"][AUTOUPDATE], "true");
        }
        for b in cluster_role_bindings() {
            assert!(
                roles
                    .iter()
                    .any(|r| r["metadata"]["name"] == b["roleRef"]["name"]),
                "{b}"
            );
        }
    }
}

//! Tenant isolation, end to end: two tenants made by the real `ferry tenant add` binary, each
//! with its own client certificate and kubeconfig, driven with the real kubectl and kube-rs.
//! Tenant A (`alice`, namespace `team-a`) must not see or touch anything of tenant B (`bob`,
//! namespace `team-b`), must stay within its ResourceQuota and its namespace's Pod Security
//! level, and every refusal carries the status kube-apiserver gives.
//!
//! Also here: the CertificateSigningRequest API and its signer (`kubectl certificate
//! approve/deny`), the `ferry tenant` CLI's idempotence and bad-input handling, `401` for
//! missing, bogus and foreign-CA credentials, and a ServiceAccount token that reaches only
//! what its Role allows.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine as _;
use common::TestPlane;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const A: &str = "team-a";
const B: &str = "team-b";

/// Runs `ferry tenant ARGS --kubeconfig <the plane's admin kubeconfig>` in the plane's
/// directory.
fn ferry_tenant(plane: &TestPlane, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("tenant")
        .args(args)
        .arg("--kubeconfig")
        .arg(&plane.plane.kubeconfig)
        .current_dir(plane.dir.path())
        .output()
        .expect("ferry runs")
}

#[track_caller]
fn succeeded(out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ferry tenant failed:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[track_caller]
fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "ferry tenant should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Adds tenant `name` for `user` with `gpus` GPUs and returns the user's kubeconfig.
fn add_tenant(plane: &TestPlane, name: &str, user: &str, gpus: &str) -> PathBuf {
    let out = plane.dir.path().join(format!("{user}.tenant.kubeconfig"));
    let out_s = out.to_str().unwrap().to_string();
    succeeded(ferry_tenant(
        plane,
        &[
            "add",
            name,
            "--gpus",
            gpus,
            "--user",
            user,
            "--kubeconfig-out",
            &out_s,
        ],
    ));
    out
}

/// A kube-rs client from a kubeconfig file.
async fn client_from(path: &Path) -> kube::Client {
    let file = kube::config::Kubeconfig::read_from(path).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .expect("valid kubeconfig");
    kube::Client::try_from(config).expect("client")
}

/// kubectl with a kubeconfig file.
fn kubectl_with(path: &Path, args: &[&str]) -> common::Kubectl {
    common::kubectl(path, args, None)
}

/// The HTTP status and message of a raw request (kube-rs), `(200, body)` on success.
async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, String) {
    let mut builder = http::Request::builder().method(method).uri(path);
    let bytes = match &body {
        Some(b) => {
            let content_type = if method == "PATCH" {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            builder = builder.header("Content-Type", content_type);
            serde_json::to_vec(b).unwrap()
        }
        None => Vec::new(),
    };
    let request = builder.body(bytes).unwrap();
    match tokio::time::timeout(Duration::from_secs(20), client.request_text(request)).await {
        Err(_) => panic!("{method} {path}: no answer in 20 s"),
        Ok(Ok(text)) => (200, text),
        Ok(Err(kube::Error::Api(status))) => (status.code, status.message),
        Ok(Err(e)) => panic!("{method} {path}: {e}"),
    }
}

/// The message kube-apiserver's RBAC gives `user` refused `verb` on `resource` in
/// `namespace` (`resource` may be `pods/log`; `name` may be empty).
fn rbac_refusal(
    user: &str,
    verb: &str,
    resource: &str,
    group: &str,
    name: &str,
    namespace: &str,
) -> String {
    let base = resource.split('/').next().unwrap();
    let qualified = if group.is_empty() {
        base.to_string()
    } else {
        format!("{base}.{group}")
    };
    let subject = if name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{name}\"")
    };
    format!(
        "{subject} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{namespace}\""
    )
}

#[track_caller]
fn assert_refused(answer: (u16, String), code: u16, message: &str) {
    assert_eq!(
        answer.0, code,
        "expected {code} ({message}), got {}: {}",
        answer.0, answer.1
    );
    assert!(
        answer.1.contains(message),
        "expected the message {message:?}, got {:?}",
        answer.1
    );
}

/// A pod that the `restricted` Pod Security level admits, asking for `gpus` GPUs.
fn restricted_pod(name: &str, gpus: u32) -> Value {
    let mut resources = json!({});
    if gpus > 0 {
        resources = json!({
            "requests": {"nvidia.com/gpu": gpus.to_string()},
            "limits": {"nvidia.com/gpu": gpus.to_string()},
        });
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "c",
                "image": "busybox",
                "command": ["sleep", "3600"],
                "resources": resources,
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            }],
        },
    })
}

/// Two tenants (A for `alice`, B for `bob`) and B's objects, made by the admin: a pod, a
/// Secret, a ConfigMap and a PodGroup in `team-b`.
struct Tenants {
    plane: TestPlane,
    alice: PathBuf,
    bob: PathBuf,
}

async fn two_tenants() -> Tenants {
    let plane = common::start().await;
    let alice = add_tenant(&plane, A, "alice", "1");
    let bob = add_tenant(&plane, B, "bob", "4");
    let admin = plane.client.clone();
    for (path, body) in [
        (
            format!("/api/v1/namespaces/{B}/pods"),
            restricted_pod("b-pod", 0),
        ),
        (
            format!("/api/v1/namespaces/{B}/secrets"),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "b-secret"}, "stringData": {"token": "b-secret-value"}}),
        ),
        (
            format!("/api/v1/namespaces/{B}/configmaps"),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b-config"}, "data": {"k": "v"}}),
        ),
        (
            format!("/apis/scheduling.x-k8s.io/v1alpha1/namespaces/{B}/podgroups"),
            json!({"apiVersion": "scheduling.x-k8s.io/v1alpha1", "kind": "PodGroup", "metadata": {"name": "b-group"}, "spec": {"minMember": 1}}),
        ),
    ] {
        let (code, message) = raw(&admin, "POST", &path, Some(body)).await;
        assert_eq!(code, 200, "the admin creates {path}: {message}");
    }
    Tenants { plane, alice, bob }
}

// ---------------------------------------------------------------------------------------
// The CSR API and its signer (needs only this branch; the certificate authenticates once the
// API server serves TLS with x509 authentication).

fn csr_manifest(name: &str, cn: &str, orgs: &[&str], usages: &[&str]) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    for o in orgs {
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, *o);
    }
    let pem = p.serialize_request(&key).unwrap().pem().unwrap();
    let request = base64::engine::general_purpose::STANDARD.encode(pem);
    json!({
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {
            "request": request,
            "signerName": "kubernetes.io/kube-apiserver-client",
            "usages": usages,
            "expirationSeconds": 3600,
            "username": "someone-else",
            "groups": ["system:masters"],
        },
    })
    .to_string()
}

async fn wait_for_csr(
    api: &Api<CertificateSigningRequest>,
    name: &str,
    done: impl Fn(&CertificateSigningRequest) -> bool,
) -> CertificateSigningRequest {
    common::eventually(
        &format!("CSR {name}"),
        Duration::from_secs(20),
        async || api.get(name).await.ok().filter(|c| done(c)),
    )
    .await
}

fn has_condition(csr: &CertificateSigningRequest, t: &str) -> bool {
    csr.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_certificate_approve_gets_a_certificate_signed_by_the_cluster_ca() {
    let t = common::start().await;
    let csrs: Api<CertificateSigningRequest> = Api::all(t.client.clone());

    t.kubectl_stdin(
        &["create", "-f", "-"],
        &csr_manifest(
            "dana",
            "dana",
            &["ml"],
            &["digital signature", "client auth"],
        ),
    )
    .success();
    let created = csrs.get("dana").await.unwrap();
    // The requester is whoever asked (the admin), never what the body claimed.
    assert_ne!(created.spec.username.as_deref(), Some("someone-else"));
    assert_eq!(created.spec.username.as_deref(), Some("kubernetes-admin"));
    let listed = t.kubectl(&["get", "csr"]).success();
    assert!(
        listed.contains("SIGNERNAME") && listed.contains("Pending"),
        "{listed}"
    );

    t.kubectl(&["certificate", "approve", "dana"]).success();
    let signed = wait_for_csr(&csrs, "dana", |c| {
        c.status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .is_some()
    })
    .await;
    assert!(has_condition(&signed, "Approved"));
    let pem = signed.status.unwrap().certificate.unwrap().0;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&block.contents).unwrap();
    let cn: Vec<&str> = cert
        .subject()
        .iter_common_name()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["dana"]);
    let ca_pem = &t
        .plane
        .pki
        .as_ref()
        .expect("the plane has a CA")
        .ca_cert_pem;
    let (_, ca_block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_block.contents).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    cert.verify_signature(Some(ca.public_key()))
        .expect("signed by the cluster CA");
    let validity = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(
        validity,
        3600 + 300,
        "expirationSeconds plus the five-minute backdate"
    );
    let listed = t.kubectl(&["get", "csr", "dana"]).success();
    assert!(listed.contains("Approved,Issued"), "{listed}");

    // Approval cannot be taken back (kubectl refuses first; the server too), and the
    // certificate cannot be replaced.
    let err = t.kubectl(&["certificate", "deny", "dana"]).failure();
    assert!(err.contains("already Approved"), "{err}");
    let path = "/apis/certificates.k8s.io/v1/certificatesigningrequests/dana";
    let (_, body) = raw(&t.client, "GET", path, None).await;
    let mut both: Value = serde_json::from_str(&body).unwrap();
    both["status"]["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Denied", "status": "True", "reason": "Changed"}));
    let (code, message) = raw(&t.client, "PUT", &format!("{path}/approval"), Some(both)).await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("Approved and Denied conditions are mutually exclusive"),
        "{message}"
    );
    let (_, body) = raw(&t.client, "GET", path, None).await;
    let mut replaced: Value = serde_json::from_str(&body).unwrap();
    replaced["status"]["certificate"] =
        json!(base64::engine::general_purpose::STANDARD.encode(ca_pem));
    let (code, message) = raw(&t.client, "PUT", &format!("{path}/status"), Some(replaced)).await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("updates may not modify existing certificate content"),
        "{message}"
    );
    let mut dropped: Value = serde_json::from_str(&body).unwrap();
    dropped["status"]["conditions"] = json!([]);
    let (code, message) = raw(&t.client, "PUT", &format!("{path}/approval"), Some(dropped)).await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("updates may not remove a condition of type \"Approved\""),
        "{message}"
    );

    // Denied: never signed.
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &csr_manifest("erin", "erin", &[], &["client auth"]),
    )
    .success();
    t.kubectl(&["certificate", "deny", "erin"]).success();
    let denied = wait_for_csr(&csrs, "erin", |c| has_condition(c, "Denied")).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let denied = csrs
        .get("erin")
        .await
        .map(|c| c.status)
        .unwrap_or(denied.status);
    assert!(denied.and_then(|s| s.certificate).is_none());

    // The signer signs client certificates only: a server usage fails, with the reason.
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &csr_manifest("srv", "srv", &[], &["server auth", "client auth"]),
    )
    .success();
    t.kubectl(&["certificate", "approve", "srv"]).success();
    let failed = wait_for_csr(&csrs, "srv", |c| has_condition(c, "Failed")).await;
    let condition = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap();
    assert_eq!(condition.reason.as_deref(), Some("SignerValidationFailure"));
    assert_eq!(
        condition.message.as_deref(),
        Some("invalid usage for client certificate: server auth")
    );

    // A request that is not a CSR: 422 with the field.
    let bad = json!({
        "apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
        "metadata": {"name": "bad"},
        "spec": {"request": base64::engine::general_purpose::STANDARD.encode("hello"), "signerName": "nodomain", "usages": []},
    });
    let (code, message) = raw(
        &t.client,
        "POST",
        "/apis/certificates.k8s.io/v1/certificatesigningrequests",
        Some(bad),
    )
    .await;
    assert_eq!(code, 422, "{message}");
    assert!(
        message.contains("spec.request")
            && message.contains("PEM block type must be CERTIFICATE REQUEST"),
        "{message}"
    );
    assert!(message.contains("spec.usages: Required value"), "{message}");
    assert!(message.contains("spec.signerName"), "{message}");
}

// ---------------------------------------------------------------------------------------
// The CLI: bad input (no cluster needed), idempotence (needs RoleBinding from `rbac` and
// ResourceQuota from `admission`).

#[test]
fn tenant_add_refuses_bad_input_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("nowhere");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ferry"))
            .arg("tenant")
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap()
    };
    let stderr = |o: Output| {
        assert!(
            !o.status.success(),
            "should fail: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = stderr(run(&["add", "Team_A", "--gpus", "1"]));
    assert!(e.contains("invalid tenant name \"Team_A\""), "{e}");
    let e = stderr(run(&["add", "kube-system", "--gpus", "1"]));
    assert!(e.contains("reserved"), "{e}");
    let e = stderr(run(&[
        "add",
        "team-a",
        "--gpus",
        "1",
        "--pod-security",
        "lax",
    ]));
    assert!(
        e.contains("invalid value 'lax'") && e.contains("restricted"),
        "{e}"
    );
    let e = stderr(run(&["add", "team-a", "--gpus", "many"]));
    assert!(e.contains("invalid value 'many'"), "{e}");
    let e = stderr(run(&[
        "add",
        "team-a",
        "--gpus",
        "1",
        "--user",
        "system:admin",
    ]));
    assert!(e.contains("reserved for Kubernetes"), "{e}");
    let e = stderr(run(&["add", "team-a", "--gpus", "1", "--cpu", "lots"]));
    assert!(e.contains("invalid --cpu \"lots\""), "{e}");
    let e = stderr(run(&[
        "add", "team-a", "--gpus", "1", "--user", "a", "--group", "g",
    ]));
    assert!(e.contains("cannot be used with"), "{e}");
    let e = stderr(run(&["add", "team-a", "--gpus", "1"]));
    assert!(e.contains("no admin kubeconfig at"), "{e}");
    let e = stderr(run(&["remove", "team-a"]));
    assert!(e.contains("no admin kubeconfig at"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tenant_add_is_idempotent_list_shows_it_and_remove_asks_for_yes() {
    let t = common::start().await;
    let quotas: Api<ResourceQuota> = Api::namespaced(t.client.clone(), A);
    for _ in 0..2 {
        succeeded(ferry_tenant(
            &t,
            &[
                "add", A, "--gpus", "2", "--cpu", "8", "--group", "ml-team", "--queue", "research",
            ],
        ));
    }
    let all = quotas.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "one quota");
    let hard = all.items[0].spec.clone().unwrap().hard.unwrap();
    assert_eq!(hard["requests.nvidia.com/gpu"].0, "2");
    assert_eq!(hard["requests.cpu"].0, "8");
    // Once more with other flags: the tenant is what they say now (updated, not duplicated;
    // the quota without --cpu has no cpu limit any more).
    succeeded(ferry_tenant(
        &t,
        &[
            "add",
            A,
            "--gpus",
            "3",
            "--group",
            "ml-team",
            "--queue",
            "research",
            "--pod-security",
            "baseline",
        ],
    ));

    let ns: Namespace = Api::all(t.client.clone()).get(A).await.unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["ferry.dev/tenant"], A);
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "baseline");
    assert_eq!(labels["scheduling.ferry.dev/queue"], "research");
    let all = quotas.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "one quota");
    let hard = all.items[0].spec.clone().unwrap().hard.unwrap();
    assert_eq!(hard["requests.nvidia.com/gpu"].0, "3");
    assert!(!hard.contains_key("requests.cpu"), "{hard:?}");
    let bindings: Api<RoleBinding> = Api::namespaced(t.client.clone(), A);
    let all = bindings.list(&Default::default()).await.unwrap();
    assert_eq!(all.items.len(), 1, "one binding");
    let subjects = all.items[0].subjects.clone().unwrap();
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("Group", "ml-team")
    );
    assert_eq!(all.items[0].role_ref.name, "admin");
    let queue: Value = serde_json::from_str(
        &t.kubectl(&[
            "get",
            "queues.scheduling.ferry.dev",
            "research",
            "-o",
            "json",
        ])
        .success(),
    )
    .unwrap();
    assert_eq!(queue["spec"]["resources"][0]["name"], "nvidia.com/gpu");
    assert_eq!(queue["spec"]["resources"][0]["guaranteed"], 3);

    let listed = succeeded(ferry_tenant(&t, &["list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(A))
        .unwrap_or_else(|| panic!("{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [A, A, "3", "0", "research", "Group:ml-team"],
        "{listed}"
    );

    let e = failed(ferry_tenant(&t, &["remove", A]));
    assert!(e.contains("--yes"), "{e}");
    assert!(
        Api::<Namespace>::all(t.client.clone()).get(A).await.is_ok(),
        "still there"
    );
    let e = failed(ferry_tenant(&t, &["remove", "default", "--yes"]));
    assert!(
        e.contains("reserved") || e.contains("not a Ferry tenant"),
        "{e}"
    );
    succeeded(ferry_tenant(&t, &["remove", A, "--yes"]));
    common::eventually(
        "the tenant's namespace goes",
        Duration::from_secs(30),
        async || {
            Api::<Namespace>::all(t.client.clone())
                .get_opt(A)
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let gone = t
        .kubectl(&["get", "queues.scheduling.ferry.dev", "research"])
        .failure();
    assert!(gone.contains("NotFound"), "{gone}");
}

// ---------------------------------------------------------------------------------------
// Isolation (needs TLS + x509 authentication, RBAC, and for quota and pod security the
// admission plugins).

#[tokio::test(flavor = "multi_thread")]
async fn tenant_a_cannot_read_or_change_anything_of_tenant_b() {
    let t = two_tenants().await;
    let alice = client_from(&t.alice).await;
    let user = "alice";
    // Every verb on every kind of B's: 403 with RBAC's words.
    let kinds: [(&str, &str, &str, &str); 5] = [
        ("", "pods", "b-pod", "/api/v1"),
        ("", "secrets", "b-secret", "/api/v1"),
        ("", "configmaps", "b-config", "/api/v1"),
        ("batch", "jobs", "b-job", "/apis/batch/v1"),
        (
            "scheduling.x-k8s.io",
            "podgroups",
            "b-group",
            "/apis/scheduling.x-k8s.io/v1alpha1",
        ),
    ];
    for (group, resource, name, prefix) in kinds {
        let collection = format!("{prefix}/namespaces/{B}/{resource}");
        let object = format!("{collection}/{name}");
        assert_refused(
            raw(&alice, "GET", &collection, None).await,
            403,
            &rbac_refusal(user, "list", resource, group, "", B),
        );
        assert_refused(
            raw(&alice, "GET", &format!("{collection}?watch=true"), None).await,
            403,
            &rbac_refusal(user, "watch", resource, group, "", B),
        );
        assert_refused(
            raw(&alice, "GET", &object, None).await,
            403,
            &rbac_refusal(user, "get", resource, group, name, B),
        );
        assert_refused(
            raw(
                &alice,
                "PATCH",
                &object,
                Some(json!({"metadata": {"labels": {"owned": "alice"}}})),
            )
            .await,
            403,
            &rbac_refusal(user, "patch", resource, group, name, B),
        );
        assert_refused(
            raw(&alice, "DELETE", &object, None).await,
            403,
            &rbac_refusal(user, "delete", resource, group, name, B),
        );
        assert_refused(
            raw(&alice, "DELETE", &collection, None).await,
            403,
            &rbac_refusal(user, "deletecollection", resource, group, "", B),
        );
    }
    // The same through kubectl.
    for args in [
        vec!["get", "pods", "-n", B],
        vec!["get", "secret", "b-secret", "-n", B, "-o", "yaml"],
        vec!["get", "configmaps", "-n", B],
        vec!["get", "podgroups.scheduling.x-k8s.io", "-n", B],
        vec!["delete", "pod", "b-pod", "-n", B],
        vec!["label", "configmap", "b-config", "-n", B, "x=y"],
    ] {
        let e = kubectl_with(&t.alice, &args).failure();
        assert!(
            e.contains("Error from server (Forbidden)") && e.contains("User \"alice\" cannot"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("b-secret-value"));
    }
    // B's pod's log, exec, attach and port-forward.
    let pod = format!("/api/v1/namespaces/{B}/pods/b-pod");
    assert_refused(
        raw(&alice, "GET", &format!("{pod}/log"), None).await,
        403,
        &rbac_refusal(user, "get", "pods/log", "", "b-pod", B),
    );
    assert_refused(
        raw(
            &alice,
            "POST",
            &format!("{pod}/exec?command=true&stdout=true"),
            None,
        )
        .await,
        403,
        &rbac_refusal(user, "create", "pods/exec", "", "b-pod", B),
    );
    assert_refused(
        raw(&alice, "POST", &format!("{pod}/attach?stdout=true"), None).await,
        403,
        &rbac_refusal(user, "create", "pods/attach", "", "b-pod", B),
    );
    assert_refused(
        raw(&alice, "POST", &format!("{pod}/portforward?ports=80"), None).await,
        403,
        &rbac_refusal(user, "create", "pods/portforward", "", "b-pod", B),
    );
    for args in [
        vec!["logs", "b-pod", "-n", B],
        vec!["exec", "b-pod", "-n", B, "--", "true"],
        vec!["port-forward", "-n", B, "pod/b-pod", "18080:80"],
    ] {
        let e = kubectl_with(&t.alice, &args).failure();
        assert!(
            e.contains("Forbidden") && e.contains("User \"alice\" cannot"),
            "{args:?}: {e}"
        );
    }
    // A pod in B's namespace (mounting B's Secret): refused before anything is stored.
    let mut thief = restricted_pod("thief", 0);
    thief["spec"]["volumes"] = json!([{"name": "s", "secret": {"secretName": "b-secret"}}]);
    thief["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "s", "mountPath": "/s"}]);
    assert_refused(
        raw(
            &alice,
            "POST",
            &format!("/api/v1/namespaces/{B}/pods"),
            Some(thief.clone()),
        )
        .await,
        403,
        &rbac_refusal(user, "create", "pods", "", "", B),
    );
    // B's objects are as they were.
    let admin = t.plane.client.clone();
    let (code, cm) = raw(
        &admin,
        "GET",
        &format!("/api/v1/namespaces/{B}/configmaps/b-config"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    assert!(!cm.contains("owned"), "{cm}");
    // Cluster-scoped objects are not the tenant's either.
    assert_refused(
        raw(&alice, "GET", "/api/v1/namespaces", None).await,
        403,
        "namespaces is forbidden: User \"alice\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope",
    );
    assert_refused(
        raw(&alice, "DELETE", &format!("/api/v1/namespaces/{B}"), None).await,
        403,
        "cannot delete resource \"namespaces\"",
    );
    // B sees its own pod; A works in its own namespace.
    let bob = client_from(&t.bob).await;
    assert_eq!(raw(&bob, "GET", &pod, None).await.0, 200);
    let (code, message) = raw(
        &alice,
        "POST",
        &format!("/api/v1/namespaces/{A}/configmaps"),
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "mine"}})),
    )
    .await;
    assert_eq!(code, 200, "{message}");
    let own = kubectl_with(&t.alice, &["get", "configmap", "mine", "-o", "name"]).success();
    assert_eq!(
        own.trim(),
        "configmap/mine",
        "the kubeconfig's namespace is the tenant's"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_stays_within_its_quota_and_pod_security_level() {
    let t = two_tenants().await;
    let alice = client_from(&t.alice).await;
    let pods = format!("/api/v1/namespaces/{A}/pods");
    // Tenant A has one GPU: a pod asking two is refused, one asking one fits, and then
    // nothing more fits.
    assert_refused(
        raw(&alice, "POST", &pods, Some(restricted_pod("two-gpus", 2))).await,
        403,
        "pods \"two-gpus\" is forbidden: exceeded quota: tenant-quota, requested: requests.nvidia.com/gpu=2, used: requests.nvidia.com/gpu=0, limited: requests.nvidia.com/gpu=1",
    );
    let (code, message) = raw(&alice, "POST", &pods, Some(restricted_pod("one-gpu", 1))).await;
    assert_eq!(code, 200, "{message}");
    assert_refused(
        raw(
            &alice,
            "POST",
            &pods,
            Some(restricted_pod("another-gpu", 1)),
        )
        .await,
        403,
        "exceeded quota: tenant-quota, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1",
    );
    // The quota itself is the admin's: the tenant may read it, not raise it.
    assert_eq!(
        raw(
            &alice,
            "GET",
            &format!("/api/v1/namespaces/{A}/resourcequotas/tenant-quota"),
            None
        )
        .await
        .0,
        200
    );
    assert_refused(
        raw(
            &alice,
            "PATCH",
            &format!("/api/v1/namespaces/{A}/resourcequotas/tenant-quota"),
            Some(json!({"spec": {"hard": {"requests.nvidia.com/gpu": "100"}}})),
        )
        .await,
        403,
        &rbac_refusal("alice", "patch", "resourcequotas", "", "tenant-quota", A),
    );
    let listed = succeeded(ferry_tenant(&t.plane, &["list"]));
    let row = listed
        .lines()
        .find(|l| l.starts_with(A))
        .unwrap_or_else(|| panic!("{listed}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..5], [A, A, "1", "1", A], "{listed}");
    assert_eq!(cells[5], "User:alice");

    // The namespace is `restricted`: privileged and hostPath pods are refused.
    let mut privileged = restricted_pod("privileged", 0);
    privileged["spec"]["containers"][0]["securityContext"] =
        json!({"privileged": true, "capabilities": {"drop": ["ALL"]}});
    let (code, message) = raw(&alice, "POST", &pods, Some(privileged)).await;
    assert_eq!(code, 403, "{message}");
    for part in [
        "pods \"privileged\" is forbidden: violates PodSecurity \"restricted:latest\": ",
        "privileged (container \"c\" must not set securityContext.privileged=true)",
        "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    let mut host_path = restricted_pod("host-path", 0);
    host_path["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
    host_path["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "root", "mountPath": "/host"}]);
    assert_refused(
        raw(&alice, "POST", &pods, Some(host_path)).await,
        403,
        // (restricted's volume check overrides baseline's hostPath one, as in Kubernetes)
        "violates PodSecurity \"restricted:latest\": restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")",
    );
    let mut root = restricted_pod("root", 0);
    root["spec"]["securityContext"] = json!({"seccompProfile": {"type": "RuntimeDefault"}});
    let (code, message) = raw(&alice, "POST", &pods, Some(root)).await;
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("runAsNonRoot != true"), "{message}");
    // The tenant cannot lower its own level.
    assert_refused(
        raw(&alice, "PATCH", &format!("/api/v1/namespaces/{A}"), Some(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "privileged"}}}))).await,
        403,
        // (a namespace's own namespace is itself, as in kube-apiserver's RequestInfo)
        &rbac_refusal("alice", "patch", "namespaces", "", A, A),
    );
    // An invalid pod is still 422 (validation), not a quota or security refusal.
    let (code, message) = raw(&alice, "POST", &pods, Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "empty"}, "spec": {"containers": []}}))).await;
    assert_eq!(code, 422, "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_auth_can_i_list_matches_each_tenants_bindings() {
    let t = two_tenants().await;
    for (kubeconfig, own, other) in [(&t.alice, A, B), (&t.bob, B, A)] {
        let mine = kubectl_with(kubeconfig, &["auth", "can-i", "--list", "-n", own]).success();
        let line = |resource: &str| {
            mine.lines()
                .find(|l| l.split_whitespace().next() == Some(resource))
                .unwrap_or_else(|| panic!("no {resource} in:\n{mine}"))
                .to_string()
        };
        for resource in [
            "pods",
            "secrets",
            "configmaps",
            "jobs.batch",
            "rolebindings.rbac.authorization.k8s.io",
        ] {
            let l = line(resource);
            for verb in [
                "create", "delete", "get", "list", "patch", "update", "watch",
            ] {
                assert!(l.contains(verb), "{resource} lacks {verb}: {l}");
            }
        }
        assert!(line("pods/exec").contains("create"), "{mine}");
        assert!(
            line("resourcequotas").contains("get") && !line("resourcequotas").contains("create"),
            "{mine}"
        );
        let theirs = kubectl_with(kubeconfig, &["auth", "can-i", "--list", "-n", other]).success();
        for resource in ["pods", "secrets", "configmaps", "pods/exec"] {
            assert!(
                !theirs
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(resource)),
                "{resource} in the other tenant's namespace:\n{theirs}"
            );
        }
        assert!(
            theirs.contains("selfsubjectaccessreviews.authorization.k8s.io"),
            "{theirs}"
        );
        assert_eq!(
            kubectl_with(kubeconfig, &["auth", "can-i", "create", "pods", "-n", own])
                .success()
                .trim(),
            "yes"
        );
        let no = kubectl_with(
            kubeconfig,
            &["auth", "can-i", "create", "pods", "-n", other],
        );
        assert_eq!(no.stdout.trim(), "no");
        assert!(!no.ok);
        let no = kubectl_with(kubeconfig, &["auth", "can-i", "create", "namespaces"]);
        assert_eq!(no.stdout.trim(), "no");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bogus_and_foreign_ca_credentials_get_401() {
    let t = common::start().await;
    let url = t.plane.server.url();
    let ca = t
        .plane
        .pki
        .as_ref()
        .expect("the plane has a CA")
        .ca_cert_pem
        .clone();
    let unauthorized = |answer: (u16, String)| {
        assert_eq!(answer.0, 401, "{}", answer.1);
        assert_eq!(answer.1, "Unauthorized");
    };
    // No credentials: the admin kubeconfig's cluster without its user.
    let file = kube::config::Kubeconfig::read_from(&t.plane.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    config.auth_info = Default::default();
    let anonymous = kube::Client::try_from(config).unwrap();
    unauthorized(raw(&anonymous, "GET", "/api/v1/namespaces", None).await);
    unauthorized(
        raw(
            &anonymous,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}})),
        )
        .await,
    );
    assert_eq!(
        raw(&anonymous, "GET", "/healthz", None).await.0,
        200,
        "health stays open"
    );
    // A token nobody issued.
    let bogus_path = t.dir.path().join("bogus.kubeconfig");
    std::fs::write(
        &bogus_path,
        ferry_apiserver::kubeconfig_with(
            &url,
            &ca,
            ferry_apiserver::KubeconfigUser::Token("not-a-real-token"),
            "default",
        ),
    )
    .unwrap();
    let bogus = client_from(&bogus_path).await;
    unauthorized(raw(&bogus, "GET", "/api/v1/namespaces", None).await);
    let e = kubectl_with(&bogus_path, &["get", "pods"]).failure();
    assert!(
        e.contains("Unauthorized")
            || e.contains("the server has asked for the client to provide credentials"),
        "{e}"
    );
    // A client certificate for the admin from a CA the cluster never heard of.
    let foreign_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes");
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let foreign_ca = ca_params.self_signed(&foreign_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &foreign_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let mut client_params = rcgen::CertificateParams::default();
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "kubernetes-admin");
    client_params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let forged = client_params.signed_by(&client_key, &issuer).unwrap();
    drop(foreign_ca);
    let credentials = ferry_apiserver::tls::Credentials {
        cert_pem: forged.pem(),
        key_pem: client_key.serialize_pem(),
    };
    let forged_path = t.dir.path().join("forged.kubeconfig");
    std::fs::write(
        &forged_path,
        ferry_apiserver::kubeconfig_with(
            &url,
            &ca,
            ferry_apiserver::KubeconfigUser::Certificate(&credentials),
            "default",
        ),
    )
    .unwrap();
    let forged = client_from(&forged_path).await;
    unauthorized(raw(&forged, "GET", "/api/v1/namespaces", None).await);
    unauthorized(
        raw(
            &forged,
            "GET",
            "/api/v1/namespaces/kube-system/secrets",
            None,
        )
        .await,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_token_reaches_only_what_its_role_allows() {
    let t = two_tenants().await;
    let admin = t.plane.client.clone();
    let alice = client_from(&t.alice).await;
    // The tenant itself sets up a ServiceAccount and a Role for it.
    for (path, body) in [
        (
            format!("/api/v1/namespaces/{A}/serviceaccounts"),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "runner"}}),
        ),
        (
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{A}/roles"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pod-reader"},
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        ),
        (
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{A}/rolebindings"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "runner-reads-pods"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                   "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": A}]}),
        ),
    ] {
        let (code, message) = raw(&alice, "POST", &path, Some(body)).await;
        assert_eq!(code, 200, "{path}: {message}");
    }
    // A token for it through the TokenRequest API (as the admin: what matters here is where
    // the token reaches).
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), A);
    let request = k8s_openapi::api::authentication::v1::TokenRequest {
        spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let token = accounts
        .create_token_request("runner", &PostParams::default(), &request)
        .await
        .expect("a token for the ServiceAccount")
        .status
        .and_then(|s| s.token)
        .expect("a token");
    let path = t.plane.dir.path().join("runner.kubeconfig");
    let ca = t.plane.plane.pki.as_ref().unwrap().ca_cert_pem.clone();
    std::fs::write(
        &path,
        ferry_apiserver::kubeconfig_with(
            &t.plane.plane.server.url(),
            &ca,
            ferry_apiserver::KubeconfigUser::Token(&token),
            A,
        ),
    )
    .unwrap();
    let runner = client_from(&path).await;
    let sa = "system:serviceaccount:team-a:runner";
    assert_eq!(
        raw(
            &runner,
            "GET",
            &format!("/api/v1/namespaces/{A}/pods"),
            None
        )
        .await
        .0,
        200
    );
    assert_refused(
        raw(
            &runner,
            "GET",
            &format!("/api/v1/namespaces/{A}/secrets"),
            None,
        )
        .await,
        403,
        &rbac_refusal(sa, "list", "secrets", "", "", A),
    );
    assert_refused(
        raw(
            &runner,
            "POST",
            &format!("/api/v1/namespaces/{A}/pods"),
            Some(restricted_pod("p", 0)),
        )
        .await,
        403,
        &rbac_refusal(sa, "create", "pods", "", "", A),
    );
    assert_refused(
        raw(
            &runner,
            "GET",
            &format!("/api/v1/namespaces/{B}/pods"),
            None,
        )
        .await,
        403,
        &rbac_refusal(sa, "list", "pods", "", "", B),
    );
    assert_refused(
        raw(
            &runner,
            "GET",
            &format!("/api/v1/namespaces/{B}/secrets/b-secret"),
            None,
        )
        .await,
        403,
        &rbac_refusal(sa, "get", "secrets", "", "b-secret", B),
    );
    let can = kubectl_with(&path, &["auth", "can-i", "--list"]).success();
    let pods = can
        .lines()
        .find(|l| l.split_whitespace().next() == Some("pods"))
        .unwrap_or_else(|| panic!("{can}"));
    assert!(
        pods.contains("get") && pods.contains("list") && !pods.contains("create"),
        "{pods}"
    );
    // The token is not a way into B through B's own ServiceAccounts either.
    let theirs: Api<ServiceAccount> = Api::namespaced(alice, B);
    let err = theirs
        .create_token_request("default", &PostParams::default(), &request)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 403);
            assert!(
                s.message.contains(&rbac_refusal(
                    "alice",
                    "create",
                    "serviceaccounts/token",
                    "",
                    "default",
                    B
                )),
                "{}",
                s.message
            );
        }
        other => panic!("{other}"),
    }
}

//! Authentication as kube-apiserver does it, with the real kubectl and kube-rs: anonymous,
//! bogus-token, wrong-CA and empty-CN requests get `401` (the public paths stay open), the
//! admin's certificate and static tokens authenticate, and service-account tokens
//! (TokenRequest, bound to a pod) authenticate as their ServiceAccount until their pod is
//! gone or they expire; a token signed by another key is refused. TokenReview answers as
//! Kubernetes.

use crate::common;

use std::time::Duration;

use common::TestPlane;
use ferry_apiserver::tls::{Credentials, Pki, ServingNames};
use ferry_apiserver::token::TokenIssuer;
use ferry_apiserver::{KubeconfigUser, kubeconfig_with};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One GET over TLS presenting `credentials` (none: anonymous); the status code.
async fn get_as(t: &TestPlane, credentials: Option<&Credentials>, path: &str) -> u16 {
    let mut tls = common::tls_connect_as(&t.plane.server, credentials).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

/// A kube-rs client presenting `credentials` and trusting the plane's CA.
async fn client_with_cert(t: &TestPlane, credentials: &Credentials) -> kube::Client {
    let pki = t.plane.server.pki.as_ref().unwrap();
    let yaml = kubeconfig_with(
        &t.plane.server.url(),
        &pki.ca_cert_pem,
        KubeconfigUser::Certificate(credentials),
        "default",
    );
    ferry::up::client_from_kubeconfig(&yaml).await.unwrap()
}

/// The HTTP status of listing pods with `client` (200 on success).
async fn list_pods_status(client: kube::Client) -> u16 {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    match pods.list(&Default::default()).await {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(other) => panic!("no API answer: {other:?}"),
    }
}

/// Whether `client` is authenticated: anything but `401` (an authorizer may still say `403`).
async fn authenticates(client: kube::Client) -> bool {
    list_pods_status(client).await != 401
}

/// A TokenReview of `token` (as the admin) for `audiences` (empty: the API's).
async fn review(t: &TestPlane, token: &str, audiences: &[&str]) -> Value {
    let reviews: Api<TokenReview> = Api::all(t.client.clone());
    let mut spec = json!({"token": token});
    if !audiences.is_empty() {
        spec["audiences"] = json!(audiences);
    }
    let request: TokenReview = serde_json::from_value(json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": spec,
    }))
    .unwrap();
    let answer = reviews
        .create(&PostParams::default(), &request)
        .await
        .expect("a TokenReview is answered");
    serde_json::to_value(answer).unwrap()["status"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_good_credentials_get_401_and_public_paths_stay_open() {
    let t = common::start().await;
    // Anonymous: 401 on the API, the public paths answer.
    assert_eq!(get_as(&t, None, "/api/v1/pods").await, 401);
    assert_eq!(get_as(&t, None, "/api").await, 401);
    for public in ["/healthz", "/livez", "/readyz", "/version"] {
        assert_eq!(get_as(&t, None, public).await, 200, "{public}");
    }
    // The admin's certificate.
    let admin = t.plane.server.admin.clone().unwrap();
    assert_eq!(get_as(&t, Some(&admin), "/api/v1/pods").await, 200);
    assert_eq!(list_pods_status(t.client.clone()).await, 200);
    t.kubectl(&["get", "pods"]).success();
    // A bogus bearer token, with kube-rs and with kubectl.
    let bogus = t.plane.client_for_token("bogus-token").await.unwrap();
    assert_eq!(list_pods_status(bogus).await, 401);
    let kubeconfig = t.dir.path().join("bogus.kubeconfig");
    std::fs::write(&kubeconfig, t.plane.kubeconfig_for_token("bogus-token")).unwrap();
    let err = common::kubectl(&kubeconfig, &["get", "pods"], None).failure();
    // kubectl's words for a 401.
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // A certificate of another CA, even one that claims to be the admin.
    let other = tempfile::tempdir().unwrap();
    let names = ServingNames::for_cluster("cluster.local", [127, 0, 0, 1].into(), &[]);
    let other_ca = Pki::ensure(other.path(), &names).unwrap();
    let forged = other_ca
        .issue_client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    assert_eq!(get_as(&t, Some(&forged), "/api/v1/pods").await, 401);
    assert_eq!(
        list_pods_status(client_with_cert(&t, &forged).await).await,
        401
    );
    // A certificate of the cluster CA without a user name (empty CN).
    let pki = t.plane.server.pki.as_ref().unwrap();
    let nameless = pki.issue_client_cert("", &["system:masters"]).unwrap();
    assert_eq!(get_as(&t, Some(&nameless), "/api/v1/pods").await, 401);
    // A certificate of the cluster CA for another user authenticates as that user.
    let dave = pki.issue_client_cert("dave", &["team-d"]).unwrap();
    assert!(authenticates(client_with_cert(&t, &dave).await).await);
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_authenticate_their_user() {
    let t = common::start().await;
    // kubectl sends the token over TLS: the answer is not 401 (RBAC may still say 403, and
    // then names the user).
    let out = t.kubectl_as("alice", &["get", "pods"]);
    assert!(
        !out.stderr.contains("You must be logged in"),
        "alice's token is refused: {}",
        out.stderr
    );
    assert!(
        out.ok || out.stderr.contains("User \"alice\""),
        "{}",
        out.stderr
    );
    assert!(authenticates(t.client_as("bob").await).await);
    let status = review(&t, "alice-token", &[]).await;
    assert_eq!(status["authenticated"], true, "{status}");
    assert_eq!(status["user"]["username"], "alice");
    assert_eq!(status["user"]["uid"], "alice-uid");
    assert_eq!(
        status["user"]["groups"],
        json!(["tenant-a", "system:authenticated"])
    );
    let status = review(&t, "nobody-token", &[]).await;
    assert_ne!(status["authenticated"], true, "{status}");
    assert!(status["error"].as_str().is_some(), "{status}");
    t.plane.stop().await;
}

/// The default ServiceAccount of `default` (made by the controllers).
async fn default_service_account(t: &TestPlane) -> ServiceAccount {
    let sas: Api<ServiceAccount> = Api::namespaced(t.client.clone(), "default");
    common::eventually(
        "the default ServiceAccount",
        Duration::from_secs(30),
        async || sas.get_opt("default").await.unwrap(),
    )
    .await
}

/// A token of `default/default` bound to pod `pod`.
async fn token_bound_to(t: &TestPlane, pod: &Pod) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(t.client.clone(), "default");
    let request = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"boundObjectRef": {
            "apiVersion": "v1", "kind": "Pod",
            "name": pod.metadata.name, "uid": pod.metadata.uid,
        }},
    });
    let answer: Value = sas
        .create_subresource("token", "default", &PostParams::default(), &request)
        .await
        .expect("a TokenRequest is answered");
    answer["status"]["token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_authenticate_until_their_pod_is_deleted() {
    let t = common::start().await;
    let sa = default_service_account(&t).await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let token = token_bound_to(&t, &pod).await;
    // kube-rs and kubectl authenticate with it.
    let sa_client = t.plane.client_for_token(&token).await.unwrap();
    assert!(authenticates(sa_client.clone()).await);
    let kubeconfig = t.dir.path().join("sa.kubeconfig");
    std::fs::write(&kubeconfig, t.plane.kubeconfig_for_token(&token)).unwrap();
    let out = common::kubectl(&kubeconfig, &["get", "pods"], None);
    assert!(
        out.ok || out.stderr.contains("system:serviceaccount:default:default"),
        "{}",
        out.stderr
    );
    // TokenReview: the user, its uid, groups, extra and audiences, as Kubernetes answers.
    let status = review(&t, &token, &[]).await;
    assert_eq!(status["authenticated"], true, "{status}");
    let user = &status["user"];
    assert_eq!(user["username"], "system:serviceaccount:default:default");
    assert_eq!(user["uid"], json!(sa.metadata.uid));
    assert_eq!(
        user["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-name"],
        json!(["holder"])
    );
    assert_eq!(
        user["extra"]["authentication.kubernetes.io/pod-uid"],
        json!([pod.metadata.uid])
    );
    let issuer = ferry_apiserver::token::default_issuer(&t.network.cluster_domain);
    assert_eq!(status["audiences"], json!([issuer]));
    // A review for an audience the token is not for.
    let status = review(&t, &token, &["https://vault.example"]).await;
    assert_ne!(status["authenticated"], true, "{status}");
    // The pod goes: the token no longer holds.
    pods.delete("holder", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    common::eventually("the pod to be gone", Duration::from_secs(30), async || {
        pods.get_opt("holder")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(list_pods_status(sa_client).await, 401);
    let status = review(&t, &token, &[]).await;
    assert_ne!(status["authenticated"], true, "{status}");
    // A new pod of the same name does not revive it (another uid).
    let again: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder"},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &again).await.unwrap();
    assert!(
        !authenticates(t.plane.client_for_token(&token).await.unwrap()).await,
        "a token of a deleted pod authenticates once a pod of its name is back"
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_foreign_and_mismatched_tokens_get_401() {
    let t = common::start().await;
    let sa = default_service_account(&t).await;
    let issuer_name = ferry_apiserver::token::default_issuer(&t.network.cluster_domain);
    let data = t.dir.path().join("data");
    let key = ferry_apiserver::tls::service_account_key(&data).unwrap();
    let cluster = TokenIssuer::from_pem(&key, &issuer_name).unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let claims = |sa_uid: &str, iat: i64, exp: i64| {
        json!({
            "iss": issuer_name, "aud": [issuer_name], "iat": iat, "nbf": iat, "exp": exp,
            "sub": "system:serviceaccount:default:default", "jti": "test",
            "kubernetes.io": {
                "namespace": "default",
                "serviceaccount": {"name": "default", "uid": sa_uid},
            },
        })
    };
    let uid = sa.metadata.uid.clone().unwrap();
    // The cluster's key, valid now: it authenticates (the checks below can tell).
    let valid = cluster.sign(&claims(&uid, now, now + 600)).unwrap();
    assert!(authenticates(t.plane.client_for_token(&valid).await.unwrap()).await);
    // Expired (beyond the minute of leeway).
    let expired = cluster.sign(&claims(&uid, now - 7200, now - 3600)).unwrap();
    assert_eq!(
        list_pods_status(t.plane.client_for_token(&expired).await.unwrap()).await,
        401
    );
    // Not valid yet.
    let early = cluster.sign(&claims(&uid, now + 3600, now + 7200)).unwrap();
    assert_eq!(
        list_pods_status(t.plane.client_for_token(&early).await.unwrap()).await,
        401
    );
    // Another key, with claims that would otherwise hold.
    let other = tempfile::tempdir().unwrap();
    let other_key = ferry_apiserver::tls::service_account_key(other.path()).unwrap();
    let foreign = TokenIssuer::from_pem(&other_key, &issuer_name)
        .unwrap()
        .sign(&claims(&uid, now, now + 600))
        .unwrap();
    assert_eq!(
        list_pods_status(t.plane.client_for_token(&foreign).await.unwrap()).await,
        401
    );
    let err = {
        let kubeconfig = t.dir.path().join("foreign.kubeconfig");
        std::fs::write(&kubeconfig, t.plane.kubeconfig_for_token(&foreign)).unwrap();
        common::kubectl(&kubeconfig, &["get", "pods"], None).failure()
    };
    // kubectl's words for a 401.
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // The ServiceAccount's uid is not the token's (deleted and made again).
    let stale = cluster
        .sign(&claims(
            "00000000-0000-0000-0000-000000000000",
            now,
            now + 600,
        ))
        .unwrap();
    assert_eq!(
        list_pods_status(t.plane.client_for_token(&stale).await.unwrap()).await,
        401
    );
    // Another issuer.
    let mut elsewhere = claims(&uid, now, now + 600);
    elsewhere["iss"] = json!("https://elsewhere.example");
    let elsewhere = cluster.sign(&elsewhere).unwrap();
    assert_eq!(
        list_pods_status(t.plane.client_for_token(&elsewhere).await.unwrap()).await,
        401
    );
    t.plane.stop().await;
}

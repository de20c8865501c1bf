//! The node agent's endpoints and the API server as their client (issue 9, point 6):
//! - only the API server (its kubelet-client certificate) is served by an agent: no client
//!   certificate, one from another CA, or a cluster-CA certificate of another user are refused
//!   (a real TLS client, `curl`, straight at the agent's port);
//! - a forged Node whose published address is another local service gets no HTTP request from
//!   the API server (`kubectl logs`, `exec` and metrics all fail clearly, and the service sees
//!   a TLS ClientHello only);
//! - pod and container names with `..` or `%2F` tricks cannot change the path an agent
//!   receives (a recording agent with a real serving certificate from the cluster CA).

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `curl` against `url` with the given TLS files; returns (exit ok, HTTP code, body,
/// stderr).
fn curl(
    url: &str,
    ca: &std::path::Path,
    cert: Option<(&std::path::Path, &std::path::Path)>,
) -> (bool, String, String, String) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "--cacert",
    ])
    .arg(ca);
    if let Some((c, k)) = cert {
        cmd.arg("--cert").arg(c).arg("--key").arg(k);
    }
    let out = cmd
        .arg(url)
        .output()
        .expect("curl runs (apt-get install curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.success(),
        code.to_string(),
        body.to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write_pair(
    dir: &std::path::Path,
    name: &str,
    c: &ferry_apiserver::tls::Credentials,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &c.cert_pem).unwrap();
    std::fs::write(&key, &c.key_pem).unwrap();
    (cert, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_api_server_is_served_by_an_agent() {
    if !common::sandbox_capable("only_the_api_server_is_served_by_an_agent") {
        return;
    }
    let t = common::start_with_node("1xA100-80GB").await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo the-secret-log-line; exec sleep 300']\n",
    )
    .success();
    // Through the API server (mutual TLS with its kubelet-client certificate): served.
    common::eventually("talker's log through the API server", WAIT, async || {
        let out = t.kubectl(&["logs", "talker"]);
        (out.ok && out.stdout.contains("the-secret-log-line")).then_some(())
    })
    .await;

    let addr = t.plane.agent.as_ref().expect("an agent").log_server_addr();
    let url = format!(
        "https://127.0.0.1:{}/containerLogs/default/talker/c",
        addr.port()
    );
    let pki = t.plane.pki.as_ref().expect("the cluster CA");
    let files = t.dir.path();
    let ca = files.join("ca.crt");
    std::fs::write(&ca, &pki.ca_cert_pem).unwrap();

    // The API server's own identity works straight at the port too (the test can fail).
    let apiserver = pki
        .issue_client_cert("kube-apiserver-kubelet-client", &["system:masters"])
        .unwrap();
    let (c, k) = write_pair(files, "apiserver", &apiserver);
    let (ok, code, body, err) = curl(&url, &ca, Some((&c, &k)));
    assert!(ok && code == "200", "{code} {body} {err}");
    assert!(body.contains("the-secret-log-line"), "{body}");

    // No client certificate: the handshake is refused.
    let (ok, code, body, err) = curl(&url, &ca, None);
    assert!(!ok, "served without a certificate: {code} {body}");
    assert!(!body.contains("the-secret-log-line"), "{body}");
    assert!(code == "000", "no HTTP answer at all: {code} {err}");

    // A certificate for the right name from another CA: refused at the handshake.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ferry_apiserver::tls::Pki::ensure(
        other_dir.path(),
        &ferry_apiserver::tls::ServingNames {
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        },
    )
    .unwrap();
    let forged = other
        .issue_client_cert("kube-apiserver-kubelet-client", &["system:masters"])
        .unwrap();
    let (c, k) = write_pair(files, "other-ca", &forged);
    let (ok, code, body, err) = curl(&url, &ca, Some((&c, &k)));
    assert!(
        !ok && code == "000",
        "served with another CA's certificate: {code} {body} {err}"
    );
    assert!(!body.contains("the-secret-log-line"), "{body}");

    // Valid cluster-CA certificates of other users (a tenant, the node itself): 403.
    for (name, groups) in [
        ("mallory", vec![]),
        ("system:node:test-node", vec!["system:nodes"]),
    ] {
        let creds = pki.issue_client_cert(name, &groups).unwrap();
        let (c, k) = write_pair(files, "user", &creds);
        let (_, code, body, err) = curl(&url, &ca, Some((&c, &k)));
        assert_eq!(code, "403", "{name}: {body} {err}");
        assert!(!body.contains("the-secret-log-line"), "{body}");
        assert!(body.contains(&format!("Forbidden (user={name}")), "{body}");
        let stats = format!("https://127.0.0.1:{}/stats/summary", addr.port());
        let (_, code, body, _) = curl(&stats, &ca, Some((&c, &k)));
        assert_eq!(code, "403", "{name} /stats/summary: {body}");
    }

    // Plain HTTP on the agent's port gets nothing.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /containerLogs/default/talker/c HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(!got.contains("the-secret-log-line"), "{got}");

    // `kubectl top` still works (metrics.k8s.io through the same client).
    common::eventually("kubectl top pod talker", WAIT, async || {
        let out = t.kubectl(&["top", "pod", "talker"]);
        (out.ok && out.stdout.contains("talker")).then_some(())
    })
    .await;
    t.kubectl(&["delete", "pod", "talker", "--grace-period=0", "--force"]);
}

/// A plain TCP service that records every byte it receives on every connection.
async fn recording_listener() -> (SocketAddr, Arc<Mutex<Vec<u8>>>, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(Mutex::new(0usize));
    let (r, n) = (received.clone(), connections.clone());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            *n.lock().unwrap() += 1;
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(Ok(k)) =
                    tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await
                {
                    if k == 0 {
                        break;
                    }
                    r.lock().unwrap().extend_from_slice(&buf[..k]);
                    // What a plain HTTP service would answer.
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nforged-reply")
                        .await;
                }
            });
        }
    });
    (addr, received, connections)
}

/// Registers Node `name` (as the admin: NodeRestriction lets only the node itself or an
/// admin write it) with InternalIP 127.0.0.1 and kubelet port `port`.
async fn register_node(client: &kube::Client, name: &str, port: u16) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": "localhost"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
            }})),
        )
        .await
        .unwrap();
}

/// A pod `name` bound to `node` whose container `c` is reported running.
async fn running_pod_on(client: &kube::Client, name: &str, node: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "containerStatuses": [{
            "name": "c", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "",
            "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}}),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_node_address_gets_no_request() {
    let t = common::start().await;
    let (addr, received, connections) = recording_listener().await;
    register_node(&t.client, "forged", addr.port()).await;
    running_pod_on(&t.client, "victim", "forged").await;

    let err = t.kubectl(&["logs", "victim"]).failure();
    assert!(err.contains("could not be verified"), "{err}");
    assert!(!err.contains("forged-reply"), "{err}");
    let err = t.kubectl(&["exec", "victim", "--", "true"]).failure();
    assert!(!err.contains("forged-reply"), "{err}");
    let err = t.kubectl(&["port-forward", "pod/victim", "0:80"]).failure();
    assert!(!err.contains("forged-reply"), "{err}");
    // metrics.k8s.io leaves the node out (metrics-server's behaviour) and sends it nothing.
    let metrics = t
        .client
        .request_text(
            http::Request::get("/apis/metrics.k8s.io/v1beta1/nodes")
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(!metrics.contains("forged"), "{metrics}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes = received.lock().unwrap().clone();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        *connections.lock().unwrap() > 0 && bytes.first() == Some(&0x16),
        "the API server tried TLS (a ClientHello), got: {text:?}"
    );
    for needle in [
        "GET ",
        "POST ",
        "HTTP/1",
        "containerLogs",
        "/exec/",
        "stats",
    ] {
        assert!(
            !text.contains(needle),
            "an HTTP request reached the forged address: {text:?}"
        );
    }
}

/// A fake agent for node `fake`: a real serving certificate from the cluster CA, mutual TLS
/// as the agent serves it, and a router that records every request's raw path and query.
async fn recording_agent(t: &common::TestPlane) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let tls = t
        .plane
        .agent_tls("fake", "127.0.0.1".parse().unwrap())
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let record = record.clone();
        async move {
            record.lock().unwrap().push(uri.path().to_string());
            "agent-reply\n"
        }
    });
    tokio::spawn(ferry_agent::tls::serve(
        listener,
        tls.server_config().unwrap(),
        app,
        std::future::pending(),
    ));
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn names_cannot_change_the_path_an_agent_receives() {
    let t = common::start().await;
    let (addr, seen) = recording_agent(&t).await;
    register_node(&t.client, "fake", addr.port()).await;
    running_pod_on(&t.client, "web", "fake").await;
    running_pod_on(&t.client, "web.v1", "fake").await;

    // The legitimate requests reach the agent at exactly their path (the recorder works).
    let out = t.kubectl(&["logs", "web"]).success();
    assert!(out.contains("agent-reply"), "{out}");
    let out = t.kubectl(&["logs", "web.v1", "-c", "c"]).success();
    assert!(out.contains("agent-reply"), "{out}");

    // Tricks in the pod name (the URL) and in the container parameter.
    for path in [
        "/api/v1/namespaces/default/pods/..%2F..%2Fstats%2Fsummary/log",
        "/api/v1/namespaces/default/pods/web%2F..%2F..%2Fstats/log",
        "/api/v1/namespaces/default/pods/web/log?container=..%2F..%2Fstats%2Fsummary",
        "/api/v1/namespaces/default/pods/web/log?container=c%2F..%2F..%2Fx",
        "/api/v1/namespaces/default/pods/web/log?container=c%3Ffollow%3Dtrue",
        "/api/v1/namespaces/default/pods/web/exec?container=..%2F..%2Fstats&command=ls",
        "/api/v1/namespaces/..%2Fkube-system/pods/web/log",
        "/api/v1/namespaces/default/pods/%2E%2E/log",
    ] {
        let answer = t
            .client
            .request_text(http::Request::get(path).body(Vec::new()).unwrap())
            .await;
        match answer {
            Err(kube::Error::Api(s)) => {
                assert!([400, 404].contains(&s.code), "{path}: {s:?}")
            }
            other => panic!("{path} was served: {other:?}"),
        }
    }
    let err = t
        .kubectl(&["logs", "web", "-c", "../../stats/summary"])
        .failure();
    assert!(err.contains("not valid for pod"), "{err}");

    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the fake agent was reached");
    for p in &seen {
        assert!(
            [
                "/containerLogs/default/web/c",
                "/containerLogs/default/web.v1/c"
            ]
            .contains(&p.as_str()),
            "the agent received {p:?} (all: {seen:?})"
        );
    }
}

//! Cluster DNS and in-cluster API access end to end, with real kubectl: Services (ClusterIP
//! and headless, a pod with `hostname` + `subdomain`) resolve at Ferry's DNS server on the
//! node gateway; the `kube-dns` Service exists; TokenRequest (`kubectl create token`) signs
//! tokens; every namespace has `kube-root-ca.crt`; and the Python `kubernetes` client inside
//! a pod lists pods with its mounted token and `ca.crt` over the API's TLS listener.
//!
//! The in-pod client takes the path every in-cluster client takes: `KUBERNETES_SERVICE_HOST`
//! (the `kubernetes` Service IP, set by the agent) through the node's Service proxy to the
//! API's TLS listener on the gateway; the lookups from inside a pod go through the pod's
//! resolv.conf to the `kube-dns` Service IP.

use crate::common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use ferry_dns::client::{query_tcp, query_udp};
use ferry_dns::proto::op::ResponseCode;
use ferry_dns::proto::rr::{RData, RecordType};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(60);
const ASK: Duration = Duration::from_secs(3);

/// kubectl's stdout when it succeeded.
fn ok(k: common::Kubectl) -> Option<String> {
    k.ok.then_some(k.stdout)
}

/// A plane with a node agent (which makes the node bridge), and the in-cluster endpoints on
/// the gateway.
async fn plane() -> common::TestPlane {
    common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Fake(Vec::new());
        agent.shim = Some(common::shim_command());
        c.agent = Some(agent);
    })
    .await
}

/// The A records `name` resolves to at `server` (NXDOMAIN and the like: none).
async fn resolve(server: SocketAddr, name: &str) -> Vec<String> {
    match query_udp(server, name, RecordType::A, ASK).await {
        Ok(m) => m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// True when `pod` has an address of its own (the pod network), not the host's.
fn pods_have_their_own_network(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let ip = status.and_then(|s| s.pod_ip.clone());
    ip.is_some() && ip != status.and_then(|s| s.host_ip.clone())
}

async fn running(pods: &Api<Pod>, name: &str) -> Pod {
    common::eventually(&format!("pod {name} to run"), WAIT, async || {
        let p = pods.get_opt(name).await.ok().flatten()?;
        (p.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(p)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_and_headless_hostnames_resolve_at_the_cluster_dns() {
    if !common::sandbox_capable("services_and_headless_hostnames_resolve_at_the_cluster_dns") {
        return;
    }
    let t = plane().await;
    let dns = t
        .plane
        .dns
        .as_ref()
        .expect("the cluster DNS runs on the gateway")
        .addr;
    assert_eq!(
        dns,
        SocketAddr::from((t.network.gateway(), t.network.dns_port))
    );

    // kube-dns: the cluster DNS IP, 53/UDP and 53/TCP.
    let kube_dns = common::eventually("the kube-dns Service", WAIT, async || {
        let out = t.kubectl(&[
            "get",
            "svc",
            "kube-dns",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.spec.clusterIP} {.spec.ports[*].name} {.spec.ports[*].protocol}",
        ]);
        let out = ok(out)?;
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert_eq!(
        kube_dns,
        format!("{} dns dns-tcp UDP TCP", t.network.dns_service_ip())
    );

    let manifest = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: trainer}
spec:
  clusterIP: None
  selector: {app: trainer}
  ports: [{name: rdzv, port: 29500}]
---
apiVersion: v1
kind: Pod
metadata: {name: trainer-0, labels: {app: trainer}}
spec:
  hostname: master
  subdomain: trainer
  containers:
  - name: main
    image: busybox
    command: [sleep, '600']
";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let cluster_ip = t
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .success();
    assert!(!cluster_ip.is_empty());
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let pod = running(&pods, "trainer-0").await;
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP");

    let web = common::eventually("web to resolve", WAIT, async || {
        let ips = resolve(dns, "web.default.svc.cluster.local.").await;
        (!ips.is_empty()).then_some(ips)
    })
    .await;
    assert_eq!(web, vec![cluster_ip.clone()]);
    // Over TCP too.
    let m = query_tcp(dns, "web.default.svc.cluster.local.", RecordType::A, ASK)
        .await
        .unwrap();
    assert_eq!(m.answers.len(), 1);

    let master = common::eventually("the headless hostname to resolve", WAIT, async || {
        let ips = resolve(dns, "master.trainer.default.svc.cluster.local.").await;
        (!ips.is_empty()).then_some(ips)
    })
    .await;
    assert_eq!(master, vec![pod_ip.clone()]);
    assert_eq!(
        resolve(dns, "trainer.default.svc.cluster.local.").await,
        vec![pod_ip.clone()]
    );
    let srv = query_udp(
        dns,
        "_rdzv._tcp.trainer.default.svc.cluster.local.",
        RecordType::SRV,
        ASK,
    )
    .await
    .unwrap();
    let targets: Vec<String> = srv
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(format!("{} {}", s.port, s.target)),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        vec!["29500 master.trainer.default.svc.cluster.local.".to_string()]
    );
    let pod_name = format!("{}.default.pod.cluster.local.", pod_ip.replace('.', "-"));
    assert_eq!(resolve(dns, &pod_name).await, vec![pod_ip.clone()]);
    let missing = query_udp(
        dns,
        "nothing.default.svc.cluster.local.",
        RecordType::A,
        ASK,
    )
    .await
    .unwrap();
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let outside = query_udp(dns, "example.com.", RecordType::A, ASK)
        .await
        .unwrap();
    assert_eq!(outside.metadata.response_code, ResponseCode::Refused);

    // Deleting the Service removes its name.
    t.kubectl(&["delete", "svc", "web"]).success();
    common::eventually("web to disappear", WAIT, async || {
        resolve(dns, "web.default.svc.cluster.local.")
            .await
            .is_empty()
            .then_some(())
    })
    .await;

    assert!(
        pods_have_their_own_network(&pod),
        "the pod has no network of its own: {:?}",
        pod.status
    );
    lookups_from_inside_a_pod(&t, &pods).await;
    t.kubectl(&["delete", "pod", "trainer-0", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

/// Short and full names through the pod's own resolv.conf (search path, ndots:5), with
/// busybox's nslookup and Python's resolver.
async fn lookups_from_inside_a_pod(t: &common::TestPlane, pods: &Api<Pod>) {
    let manifest = "
apiVersion: v1
kind: Service
metadata: {name: lookup-target}
spec:
  selector: {app: none}
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: lookup}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command:
    - sh
    - -c
    - |
      busybox nslookup lookup-target.default.svc.cluster.local
      busybox nslookup master.trainer
      python3 -c 'import socket; print(\"PY\", socket.gethostbyname(\"lookup-target\"), socket.gethostbyname(\"master.trainer.default.svc.cluster.local\"))'
";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let target = t
        .kubectl(&[
            "get",
            "svc",
            "lookup-target",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])
        .success();
    common::eventually("the lookup pod to finish", WAIT, async || {
        let p = pods.get_opt("lookup").await.ok().flatten()?;
        matches!(p.status?.phase.as_deref(), Some("Succeeded" | "Failed")).then_some(())
    })
    .await;
    let logs = t.kubectl(&["logs", "lookup"]).success();
    assert!(logs.contains(&target), "{logs}");
    assert!(logs.contains("PY "), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_cluster_python_client_lists_pods_with_its_service_account() {
    if !common::sandbox_capable("an_in_cluster_python_client_lists_pods_with_its_service_account") {
        return;
    }
    if !std::path::Path::new("/usr/bin/python3").exists()
        || !Command::new("/usr/bin/python3")
            .args(["-c", "import kubernetes"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        let message = "the Python kubernetes client is not installed (scripts/install-deps installs python3-kubernetes)";
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("SKIPPED: {message}");
        return;
    }
    let t = plane().await;
    assert!(
        t.plane.tls.is_some(),
        "the API's TLS listener on the gateway"
    );

    // TokenRequest through kubectl.
    common::eventually("the default ServiceAccount", WAIT, async || {
        ok(t.kubectl(&["get", "sa", "default"]))
    })
    .await;
    let token = t
        .kubectl(&["create", "token", "default", "--duration=20m"])
        .success();
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let claims: serde_json::Value = {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        1200
    );
    let short = t
        .kubectl(&["create", "token", "default", "--duration=1m"])
        .failure();
    assert!(short.contains("10 minutes"), "{short}");
    let nobody = t.kubectl(&["create", "token", "nobody"]).failure();
    assert!(nobody.contains("not found"), "{nobody}");

    // Every namespace gets the cluster CA.
    t.kubectl(&["create", "namespace", "team-a"]).success();
    let ca = common::eventually("kube-root-ca.crt in team-a", WAIT, async || {
        ok(t.kubectl(&[
            "get",
            "cm",
            "kube-root-ca.crt",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.ca\\.crt}",
        ]))
        .filter(|s| s.contains("BEGIN CERTIFICATE"))
    })
    .await;
    assert_eq!(
        ca.trim_end(),
        t.plane.pki.as_ref().unwrap().ca_cert_pem.trim_end()
    );

    let script = "from kubernetes import client, config\nconfig.load_incluster_config()\nns = open('/var/run/secrets/kubernetes.io/serviceaccount/namespace').read()\npods = client.CoreV1Api().list_namespaced_pod(ns)\nprint('NAMESPACE', ns)\nprint('PODS', ' '.join(sorted(p.metadata.name for p in pods.items)))\n";
    let manifest = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "lister", "namespace": "team-a"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "python",
                "command": ["/usr/bin/python3", "-c", script],
            }],
        },
    });
    // As in Kubernetes, a service account may do nothing until it is bound to a role.
    t.kubectl(&[
        "create",
        "rolebinding",
        "default-view",
        "--clusterrole=view",
        "--serviceaccount=team-a:default",
        "-n",
        "team-a",
    ])
    .success();
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string())
        .success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "team-a");
    let pod = pods.get("lister").await.unwrap();
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    let volume = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-"));
    assert!(volume.is_some_and(|v| v.projected.is_some()), "{spec:?}");
    let phase = common::eventually("the lister pod to finish", WAIT, async || {
        let p = pods.get_opt("lister").await.ok().flatten()?;
        let phase = p.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let logs = t.kubectl(&["logs", "lister", "-n", "team-a"]).success();
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(logs.contains("NAMESPACE team-a"), "{logs}");
    assert!(logs.contains("PODS lister"), "{logs}");

    // A pod that opts out gets no credentials.
    let opted_out = "apiVersion: v1\nkind: Pod\nmetadata: {name: quiet, namespace: team-a}\nspec:\n  automountServiceAccountToken: false\n  containers:\n  - {name: main, image: busybox, command: [sleep, '1']}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], opted_out).success();
    let quiet = pods.get("quiet").await.unwrap();
    assert!(quiet.spec.unwrap().volumes.unwrap_or_default().is_empty());
    t.plane.stop().await;
}

//! Pods reaching each other by name, as distributed training and inference do, with real
//! kubectl and every piece of the sandbox at once: a client pod fetches over HTTP from a
//! server pod through `<svc>.<ns>.svc.cluster.local` (cluster DNS → ClusterIP → the node
//! proxy's DNAT → the pod network) and through the headless name `<hostname>.<subdomain>`
//! (the search path, the headless Service's endpoint hostname), and sees the two answers
//! come from the right pods.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(90);

async fn start() -> common::TestPlane {
    common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        agent.shim = Some(common::shim_command());
        agent.sandbox = ferry_agent::sandbox::SandboxMode::Isolated;
        c.agent = Some(agent);
    })
    .await
}

/// A server pod answering `GET /name` with its hostname, on port 8080.
fn server(name: &str, labels: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {labels}}}\nspec:\n{extra_spec}  containers:\n  - name: web\n    image: python\n    command: [sh, -c, 'hostname > /srv/name && exec python3 -m http.server 8080 --bind 0.0.0.0 --directory /srv']\n    ports: [{{name: http, containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /name, port: http}}, periodSeconds: 1}}\n    volumeMounts: [{{name: srv, mountPath: /srv}}]\n  volumes: [{{name: srv, emptyDir: {{}}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_each_other_by_service_and_headless_names() {
    if !common::sandbox_capable("pods_reach_each_other_by_service_and_headless_names") {
        return;
    }
    let t = start().await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let manifest = [
        server("web-0", "{app: web}", ""),
        server(
            "trainer-master-0",
            "{job: trainer}",
            "  hostname: master\n  subdomain: trainer\n",
        ),
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}]\n".into(),
        "apiVersion: v1\nkind: Service\nmetadata: {name: trainer}\nspec:\n  clusterIP: None\n  selector: {job: trainer}\n  ports: [{port: 8080}]\n".into(),
    ]
    .join("---\n");
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    for name in ["web-0", "trainer-master-0"] {
        common::eventually(&format!("{name} ready"), WAIT, async || {
            let p = pods.get_opt(name).await.ok().flatten()?;
            let ready = p
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ready.then_some(())
        })
        .await;
    }
    // The client: full Service name through the ClusterIP, then the short headless name
    // through the search path, straight to the pod.
    let script = "import urllib.request as u\nfor url in ['http://web.default.svc.cluster.local/name', 'http://master.trainer:8080/name']:\n    for attempt in range(30):\n        try:\n            print('GOT', url, u.urlopen(url, timeout=2).read().decode().strip())\n            break\n        except Exception as e:\n            last = e\n            import time; time.sleep(0.5)\n    else:\n        print('FAILED', url, last)\n";
    let client = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": "python",
                "command": ["/usr/bin/python3", "-c", script],
            }],
        },
    });
    t.kubectl_stdin(&["apply", "-f", "-"], &client.to_string())
        .success();
    let phase = common::eventually("the client to finish", WAIT, async || {
        let p = pods.get_opt("client").await.ok().flatten()?;
        let phase = p.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let logs = t.kubectl(&["logs", "client"]).success();
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(
        logs.contains("GOT http://web.default.svc.cluster.local/name web-0"),
        "through the Service: {logs}"
    );
    assert!(
        logs.contains("GOT http://master.trainer:8080/name master"),
        "through the headless name: {logs}"
    );
    for name in ["web-0", "trainer-master-0", "client"] {
        t.kubectl(&["delete", "pod", name, "--grace-period=1"])
            .success();
    }
    t.plane.stop().await;
}

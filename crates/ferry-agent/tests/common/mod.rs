//! An API server and an agent for one test, each in a temporary directory, on random loopback
//! ports.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_agent::gpu::{GpuSource, parse_fake_gpus};
use ferry_agent::runtime::ShimCommand;
use ferry_agent::{AgentConfig, AgentHandle};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

pub const NODE: &str = "test-node";

pub struct Cluster {
    pub server: ferry_apiserver::RunningServer,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
    /// The cluster CA: signs the agent's serving certificate and the API server's client
    /// certificate towards it.
    pub pki: ferry_apiserver::tls::Pki,
    /// A client of the agent as the API server is one (mutual TLS).
    pub kubelet: ferry_apiserver::kubelet::KubeletClient,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "ferry_agent=info".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Starts an API server in a fresh temporary directory.
pub async fn cluster() -> Cluster {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ferry_apiserver::ServerConfig::new(dir.path().join("server"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    let server = ferry_apiserver::start(config)
        .await
        .expect("API server starts");
    // The cluster CA signs the agent's serving certificate; the API server issued its own
    // kubelet-client certificate from it. The tests' direct client of the agent has one too.
    let pki = server.pki.clone().expect("the cluster CA (TLS)");
    let me = pki
        .issue_client_cert("kube-apiserver-kubelet-client", &["system:masters"])
        .unwrap();
    let kubelet = ferry_apiserver::kubelet::KubeletClient::new(Some(
        &ferry_apiserver::kubelet::KubeletClientTls {
            ca_pem: pki.ca_cert_pem.clone(),
            cert_pem: me.cert_pem,
            key_pem: me.key_pem,
        },
    ))
    .unwrap();
    // The admin's kubeconfig: TLS with the cluster CA and a client certificate.
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    // What the controllers keep in every namespace of a real cluster, and what every pod's
    // service-account volume needs: the `default` ServiceAccount and `kube-root-ca.crt`.
    let post = PostParams::default();
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
    Api::namespaced(client.clone(), "default")
        .create(&post, &sa)
        .await
        .expect("the default ServiceAccount");
    let ca: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-root-ca.crt"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n"},
    }))
    .unwrap();
    Api::namespaced(client.clone(), "default")
        .create(&post, &ca)
        .await
        .expect("kube-root-ca.crt");
    Cluster {
        server,
        client,
        dir,
        pki,
        kubelet,
    }
}

impl Cluster {
    /// The agent's data directory (kept across agent restarts within a test).
    pub fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    /// An agent configuration for tests: fake GPUs, fast heartbeats and back-off.
    pub fn agent_config(&self) -> AgentConfig {
        let mut c = AgentConfig::new(NODE, self.agent_dir());
        c.shim = ShimCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_ferry-agent-shim")),
            args: vec![],
        };
        c.log_server_addr = "127.0.0.1:0".parse().unwrap();
        c.gpus = GpuSource::Fake(parse_fake_gpus("2xA100-80GB").unwrap());
        c.heartbeat_interval = Duration::from_secs(1);
        c.lease_duration = Duration::from_secs(10);
        c.node_status_interval = Duration::from_secs(2);
        c.backoff_initial = Duration::from_millis(500);
        c.backoff_max = Duration::from_secs(5);
        // Pods as plain host processes: these tests share one machine with other test planes;
        // the sandbox (bridge, netns, nftables per plane) is tested in `ferry`'s e2e tests.
        c.sandbox = ferry_agent::sandbox::SandboxMode::Host;
        let serving = self
            .pki
            .issue_serving_cert(
                &format!("system:node:{NODE}"),
                &ferry_apiserver::tls::ServingNames {
                    dns: vec![NODE.into()],
                    ips: vec!["127.0.0.1".parse().unwrap()],
                },
            )
            .unwrap();
        c.tls = Some(ferry_agent::tls::AgentTls {
            cert_pem: serving.cert_pem,
            key_pem: serving.key_pem,
            client_ca_pem: self.pki.ca_cert_pem.clone(),
        });
        c
    }

    pub async fn agent(&self) -> AgentHandle {
        self.agent_with(|_| {}).await
    }

    pub async fn agent_with(&self, adjust: impl FnOnce(&mut AgentConfig)) -> AgentHandle {
        let mut c = self.agent_config();
        adjust(&mut c);
        ferry_agent::start(self.client.clone(), c)
            .await
            .expect("agent starts")
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), "default")
    }

    /// Creates a pod bound to the test node from JSON.
    pub async fn create_pod(&self, mut pod: serde_json::Value) -> Pod {
        pod["apiVersion"] = "v1".into();
        pod["kind"] = "Pod".into();
        pod["spec"]["nodeName"] = NODE.into();
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("pod created")
    }

    /// Waits until the pod satisfies `check`, returning it.
    pub async fn wait_pod(&self, name: &str, what: &str, check: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            if let Ok(p) = self.pods().get(name).await {
                if check(&p) {
                    return p;
                }
                last = Some(p);
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for pod {name} to be {what}; last seen: {}",
                    serde_json::to_string_pretty(&last.map(|p| p.status)).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_gone(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.pods().get_opt(name).await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "pod {name} was never removed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    /// Kills every container the test's agents started, so a failing test leaves nothing behind.
    fn drop(&mut self) {
        kill_all_containers(&self.agent_dir());
    }
}

/// SIGKILLs the process group of every container recorded under an agent data directory.
pub fn kill_all_containers(agent_dir: &Path) {
    let pods = std::fs::read_dir(agent_dir.join("pods"))
        .into_iter()
        .flatten()
        .flatten();
    for pod in pods {
        let containers = std::fs::read_dir(pod.path().join("containers"))
            .into_iter()
            .flatten()
            .flatten();
        for container in containers {
            for attempt in std::fs::read_dir(container.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let state: Option<ferry_agent::runtime::StateRecord> =
                    ferry_agent::runtime::read_json(&attempt.path().join("state.json"))
                        .ok()
                        .flatten();
                if let Some(state) = state {
                    let _ = ferry_agent::runtime::signal(&state, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
        // And the pod's cgroup, which the agent would remove with the pod.
        let _ = ferry_agent::sandbox::cgroup::release(&pod.path());
    }
}

pub fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn container_status(
    p: &Pod,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .cloned()
}

/// Waits for a file to contain something, then returns its content.
pub async fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True while process `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s[s.rfind(')').unwrap() + 2..].chars().next().unwrap();
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

pub async fn wait_dead(pid: i32, within: Duration) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still alive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` on the agent at `addr` as the API server sends it (mutual TLS with the
/// kubelet-client certificate): the status and the body.
pub async fn agent_get(
    kubelet: ferry_apiserver::kubelet::KubeletClient,
    addr: std::net::SocketAddr,
    path: String,
) -> (u16, String) {
    use http_body_util::BodyExt;
    let endpoint = ferry_apiserver::kubelet::AgentEndpoint {
        node_name: NODE.into(),
        addr,
    };
    let resp = kubelet
        .get(&endpoint, &path)
        .await
        .expect("the agent answers");
    let code = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

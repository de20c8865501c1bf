//! Node registration and heartbeats.
//!
//! The agent creates (or adopts) its Node, publishes capacity and allocatable (`cpu`, `memory`,
//! `ephemeral-storage`, `pods`, `nvidia.com/gpu`), the GPUs in the form defined by
//! [`ferry_api::gpu`] (annotation and labels), a `Ready` condition, addresses, system info and
//! the log server's port as `daemonEndpoints.kubeletEndpoint.Port`. Like the kubelet it renews a
//! `coordination.k8s.io/v1` Lease named after the node in `kube-node-lease` every heartbeat,
//! and refreshes the Node status (and GPU health) less often.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_api::gpu::{
    NODE_COUNT_LABEL, NODE_DEVICES_ANNOTATION, NODE_FAKE_LABEL, NODE_MEMORY_LABEL, NODE_MODEL_LABEL,
};
use ferry_api::{NODE_LEASE_NAMESPACE, RESOURCE_NVIDIA_GPU};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::events::{EventRecorder, EventType, Subject};
use crate::gpu::GpuInventory;

/// What the agent reports about the machine.
#[derive(Debug, Clone)]
pub struct HostFacts {
    /// The machine's hostname (the `Hostname` address).
    pub hostname: String,
    /// CPUs available to the agent, in millicores.
    pub cpu_milli: i64,
    /// Total memory in bytes.
    pub memory_bytes: i64,
    /// Size of the data directory's filesystem in bytes.
    pub storage_bytes: Option<u64>,
    /// `status.nodeInfo`.
    pub info: NodeSystemInfo,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl HostFacts {
    /// Reads the facts from the running system.
    pub fn gather(data_dir: &Path) -> Self {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into());
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        let memory_bytes = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .map_or(0, |kib| kib * 1024);
        let storage_bytes = nix::sys::statvfs::statvfs(data_dir)
            .ok()
            // The field types differ between platforms.
            .map(|s| {
                #[allow(clippy::unnecessary_cast)]
                let bytes = s.blocks() as u64 * s.fragment_size() as u64;
                bytes
            });
        let uname = nix::sys::utsname::uname().ok();
        let os_image = std::fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                    .map(|v| v.trim_matches('"').to_string())
            })
            .unwrap_or_else(|| "Linux".into());
        let machine_id = read_trimmed("/etc/machine-id");
        let system_uuid = match read_trimmed("/sys/class/dmi/id/product_uuid") {
            s if s.is_empty() => machine_id.clone(),
            s => s,
        };
        let info = NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("ferry-host://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: uname
                .as_ref()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            kube_proxy_version: String::new(),
            kubelet_version: format!("v{}-ferry", env!("CARGO_PKG_VERSION")),
            machine_id,
            operating_system: "linux".into(),
            os_image,
            system_uuid,
            ..Default::default()
        };
        HostFacts {
            hostname,
            cpu_milli: cpus * 1000,
            memory_bytes,
            storage_bytes,
            info,
        }
    }
}

/// Kubernetes' (Go's) name for the machine architecture.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node's labels; `None` removes a label the agent may have set before.
pub fn desired_labels(
    config: &AgentConfig,
    gpus: &GpuInventory,
) -> BTreeMap<String, Option<String>> {
    let mut labels: BTreeMap<String, Option<String>> = BTreeMap::new();
    labels.insert(
        "kubernetes.io/hostname".into(),
        Some(config.node_name.clone()),
    );
    labels.insert("kubernetes.io/os".into(), Some("linux".into()));
    labels.insert("kubernetes.io/arch".into(), Some(go_arch().into()));
    let devices = gpus.devices();
    if devices.is_empty() {
        for l in [
            NODE_MODEL_LABEL,
            NODE_COUNT_LABEL,
            NODE_MEMORY_LABEL,
            NODE_FAKE_LABEL,
        ] {
            labels.insert(l.into(), None);
        }
    } else {
        labels.insert(NODE_MODEL_LABEL.into(), Some(devices[0].model.clone()));
        labels.insert(NODE_COUNT_LABEL.into(), Some(devices.len().to_string()));
        let min_memory = devices.iter().map(|d| d.memory_mib).min().unwrap_or(0);
        labels.insert(NODE_MEMORY_LABEL.into(), Some(min_memory.to_string()));
        labels.insert(
            NODE_FAKE_LABEL.into(),
            gpus.is_fake().then(|| "true".to_string()),
        );
    }
    for (k, v) in &config.node_labels {
        labels.insert(k.clone(), Some(v.clone()));
    }
    labels
}

/// The Node's annotations; `None` removes one.
pub fn desired_annotations(gpus: &GpuInventory) -> BTreeMap<String, Option<String>> {
    let value = (!gpus.devices().is_empty())
        .then(|| serde_json::to_string(gpus.devices()).unwrap_or_else(|_| "[]".into()));
    BTreeMap::from([(NODE_DEVICES_ANNOTATION.to_string(), value)])
}

/// The Node status the agent publishes.
pub fn node_status(
    config: &AgentConfig,
    facts: &HostFacts,
    gpus: &GpuInventory,
    log_port: u16,
    now: Timestamp,
    previous: Option<&NodeStatus>,
) -> NodeStatus {
    let q = |s: String| Quantity(s);
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), q(format_cpu(facts.cpu_milli)));
    capacity.insert(
        "memory".to_string(),
        q(format!("{}Ki", facts.memory_bytes / 1024)),
    );
    capacity.insert("pods".to_string(), q(config.max_pods.to_string()));
    if let Some(bytes) = facts.storage_bytes {
        capacity.insert(
            "ephemeral-storage".to_string(),
            q(format!("{}Ki", bytes / 1024)),
        );
    }
    let mut allocatable = capacity.clone();
    capacity.insert(
        RESOURCE_NVIDIA_GPU.to_string(),
        q(gpus.devices().len().to_string()),
    );
    allocatable.insert(
        RESOURCE_NVIDIA_GPU.to_string(),
        q(gpus.healthy_count().to_string()),
    );
    let heartbeat = Time(now);
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        let since = previous
            .and_then(|p| p.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == type_ && c.status == status))
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| heartbeat.clone());
        NodeCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(heartbeat.clone()),
            last_transition_time: Some(since),
        }
    };
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(vec![
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "ferry-agent has sufficient memory available",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "ferry-agent has no disk pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "ferry-agent has sufficient PID available",
            ),
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "ferry-agent is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: config.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: facts.hostname.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(log_port),
            }),
        }),
        node_info: Some(facts.info.clone()),
        ..Default::default()
    }
}

/// CPU as the kubelet writes it: whole cores when whole, else millicores.
fn format_cpu(milli: i64) -> String {
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

fn some_values(map: &BTreeMap<String, Option<String>>) -> BTreeMap<String, String> {
    map.iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
        .collect()
}

/// Registers the Node and keeps its status and Lease fresh.
pub(crate) struct NodeReporter {
    pub client: kube::Client,
    pub config: Arc<AgentConfig>,
    pub facts: HostFacts,
    pub gpus: Arc<Mutex<GpuInventory>>,
    pub log_port: u16,
    pub events: EventRecorder,
}

impl NodeReporter {
    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn snapshot<T>(&self, f: impl FnOnce(&GpuInventory) -> T) -> T {
        let guard = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Creates the Node, or adopts an existing one, and publishes labels, annotations and
    /// status. Returns the Node's uid.
    pub async fn register(&self) -> Result<String, AgentError> {
        let name = &self.config.node_name;
        let api = self.nodes();
        let labels = self.snapshot(|g| desired_labels(&self.config, g));
        let annotations = self.snapshot(desired_annotations);
        let existing = api
            .get_opt(name)
            .await
            .map_err(|e| AgentError::kube(format!("cannot read node {name}"), e))?;
        let node = match existing {
            Some(node) => {
                let patch = json!({"metadata": {"labels": labels, "annotations": annotations}});
                api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| AgentError::kube(format!("cannot update node {name}"), e))?;
                node
            }
            None => {
                let node = Node {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        labels: Some(some_values(&labels)),
                        annotations: Some(some_values(&annotations)).filter(|a| !a.is_empty()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &node).await {
                    Ok(n) => {
                        self.events
                            .record(
                                &Subject::node(name),
                                EventType::Normal,
                                "RegisteredNode",
                                &format!("Node {name} registered by ferry-agent"),
                            )
                            .await;
                        n
                    }
                    Err(kube::Error::Api(s)) if s.code == 409 => api
                        .get(name)
                        .await
                        .map_err(|e| AgentError::kube(format!("cannot read node {name}"), e))?,
                    Err(e) => {
                        return Err(AgentError::kube(format!("cannot create node {name}"), e));
                    }
                }
            }
        };
        self.publish_status(node.status.as_ref())
            .await
            .map_err(|e| {
                AgentError::kube(format!("cannot publish the status of node {name}"), e)
            })?;
        Ok(node.metadata.uid.unwrap_or_default())
    }

    async fn publish_status(&self, previous: Option<&NodeStatus>) -> Result<(), kube::Error> {
        let status = self.snapshot(|g| {
            node_status(
                &self.config,
                &self.facts,
                g,
                self.log_port,
                Timestamp::now(),
                previous,
            )
        });
        let patch = json!({ "status": status });
        self.nodes()
            .patch_status(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        Ok(())
    }

    /// Refreshes GPU health and the Node status; re-registers a deleted Node.
    async fn refresh(&self, node_uid: &mut String) -> Result<(), AgentError> {
        let changed = {
            let mut g = self.gpus.lock().unwrap_or_else(|p| p.into_inner());
            g.refresh_health()
        };
        if changed {
            let annotations = self.snapshot(desired_annotations);
            let patch = json!({"metadata": {"annotations": annotations}});
            let _ = self
                .nodes()
                .patch(
                    &self.config.node_name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await;
        }
        let name = &self.config.node_name;
        match self.nodes().get_opt(name).await {
            Ok(Some(node)) => self
                .publish_status(node.status.as_ref())
                .await
                .map_err(|e| {
                    AgentError::kube(format!("cannot publish the status of node {name}"), e)
                }),
            Ok(None) => {
                tracing::warn!(node = %name, "the Node object was deleted; registering it again");
                *node_uid = self.register().await?;
                Ok(())
            }
            Err(e) => Err(AgentError::kube(format!("cannot read node {name}"), e)),
        }
    }

    /// Creates or renews the node's Lease.
    pub async fn renew_lease(&self, node_uid: &str) -> Result<(), kube::Error> {
        let name = &self.config.node_name;
        let api: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let duration = self
            .config
            .lease_duration
            .as_secs()
            .clamp(1, i32::MAX as u64) as i32;
        let now = MicroTime(Timestamp::now());
        let patch = json!({"spec": {
            "holderIdentity": name,
            "leaseDurationSeconds": duration,
            "renewTime": now,
        }});
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(NODE_LEASE_NAMESPACE.into()),
                owner_references: (!node_uid.is_empty()).then(|| {
                    vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: name.clone(),
                        uid: node_uid.into(),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(name.clone()),
                lease_duration_seconds: Some(duration),
                renew_time: Some(now),
                ..Default::default()
            }),
        };
        match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                // The namespace itself is missing (a bare API server): create it, retry later.
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(NODE_LEASE_NAMESPACE.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let _ = Api::<Namespace>::all(self.client.clone())
                    .create(&PostParams::default(), &ns)
                    .await;
                Err(kube::Error::Api(s))
            }
            Err(e) => Err(e),
        }
    }

    /// Heartbeats until `shutdown` turns true.
    pub async fn run(self, mut node_uid: String, mut shutdown: watch::Receiver<bool>) {
        let mut lease_tick = tokio::time::interval(self.config.heartbeat_interval);
        lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_tick = tokio::time::interval(self.config.node_status_interval);
        status_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        status_tick.tick().await; // registration just published it
        loop {
            tokio::select! {
                _ = lease_tick.tick() => {
                    if let Err(e) = self.renew_lease(&node_uid).await {
                        tracing::warn!(error = %e, "cannot renew the node lease");
                    }
                }
                _ = status_tick.tick() => {
                    if let Err(e) = self.refresh(&mut node_uid).await {
                        tracing::warn!(error = %e, "cannot refresh the node status");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Registers the node, retrying transient failures until `shutdown` (returns `None` then).
pub(crate) async fn register_with_retry(
    reporter: &NodeReporter,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<String> {
    let mut delay = Duration::from_millis(500);
    loop {
        match reporter.register().await {
            Ok(uid) => return Some(uid),
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "node registration failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.changed() => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

/// The JSON of the GPU devices published on a Node, if any.
pub fn published_devices(node: &Node) -> Option<Value> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NODE_DEVICES_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::{GpuSource, parse_fake_gpus};

    #[test]
    fn status_labels_and_annotations_describe_the_gpus() {
        let mut config = AgentConfig::new("node-a", "/tmp");
        config.node_labels.insert("team".into(), "ml".into());
        let mut gpus = GpuInventory::discover(
            &GpuSource::Fake(parse_fake_gpus("2xA100-80GB,1xT4").unwrap()),
            "node-a",
        );
        let facts = HostFacts::gather(Path::new("/"));
        assert!(facts.cpu_milli >= 1000 && facts.memory_bytes > 0);
        let labels = desired_labels(&config, &gpus);
        assert_eq!(labels[NODE_MODEL_LABEL].as_deref(), Some("A100-80GB"));
        assert_eq!(labels[NODE_COUNT_LABEL].as_deref(), Some("3"));
        assert_eq!(labels[NODE_MEMORY_LABEL].as_deref(), Some("15360"));
        assert_eq!(labels[NODE_FAKE_LABEL].as_deref(), Some("true"));
        assert_eq!(labels["team"].as_deref(), Some("ml"));
        let ann = desired_annotations(&gpus);
        let devices: Vec<ferry_api::gpu::GpuDevice> =
            serde_json::from_str(ann[NODE_DEVICES_ANNOTATION].as_deref().unwrap()).unwrap();
        assert_eq!(devices.len(), 3);
        assert!(devices.iter().all(|d| d.fake));

        let now: Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let status = node_status(&config, &facts, &gpus, 10250, now, None);
        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap[RESOURCE_NVIDIA_GPU].0, "3");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(
            status
                .daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(
            (addresses[0].type_.as_str(), addresses[0].address.as_str()),
            ("InternalIP", "127.0.0.1")
        );
        let ready = status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");

        // An unchanged condition keeps its transition time but gets a fresh heartbeat.
        let later: Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let again = node_status(&config, &facts, &gpus, 10250, later, Some(&status));
        let ready2 = again
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready2.last_transition_time, ready.last_transition_time);
        assert_eq!(ready2.last_heartbeat_time, Some(Time(later)));

        // Without GPUs the GPU labels are removed and capacity says zero.
        gpus = GpuInventory::discover(&GpuSource::Disabled, "node-a");
        let labels = desired_labels(&config, &gpus);
        assert_eq!(labels[NODE_MODEL_LABEL], None);
        assert_eq!(desired_annotations(&gpus)[NODE_DEVICES_ANNOTATION], None);
        let status = node_status(&config, &facts, &gpus, 1, now, None);
        assert_eq!(status.capacity.unwrap()[RESOURCE_NVIDIA_GPU].0, "0");
    }
}

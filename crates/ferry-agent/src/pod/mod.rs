//! Running the pods bound to this node: one worker task per pod.
//!
//! A worker is level-triggered, like the kubelet's `syncPod`: each pass reads the pod (from the
//! watch) and the containers' state (from disk, see [`crate::runtime`]), decides what to start,
//! restart or stop, and publishes the resulting status through `pods/status`. It runs again
//! when the pod changes, when a container's shim exits, or when a timer it asked for (a
//! back-off, a grace period) expires. Because every decision is derived from the API and the
//! disk, a restarted agent picks up exactly where the previous one stopped.

mod cri;
pub mod env;
pub mod probes;
mod satoken;
pub mod status;
pub mod volumes;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_api::gpu::{GpuDevice, POD_ASSIGNED_ANNOTATION, format_assigned, parse_assigned};
use ferry_api::requests::PodRequests;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::config::AgentConfig;
use crate::events::{EventRecorder, EventType, Subject};
use crate::gpu::GpuInventory;
use crate::layout::{Layout, safe_component};
use crate::logserver::LogIndex;
use crate::procfs::ProcId;
use crate::runtime::{
    self, AttemptState, ExitRecord, ShimSpec, files, read_json, write_json_atomic,
};
use crate::sandbox::{self, SandboxContext, SandboxRecord};
use env::{EnvError, EnvSources, NodeFacts};
use volumes::VolumeError;

/// Why one pass over a pod failed: it is logged and retried, or, for a container that cannot be
/// configured, reported in an Event and the container's waiting state.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A file or directory of the pod's state on the node.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        /// What the agent was doing (`create`, `write`, `read`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// A request to the API server.
    #[error("cannot {action}: {error}")]
    Kube {
        /// What the agent was doing.
        action: String,
        /// The cause.
        #[source]
        error: kube::Error,
    },
    /// A container's process could not be started, signalled or killed.
    #[error("cannot {action} {container}: {error}")]
    Process {
        /// `start container`, `signal` or `kill`.
        action: &'static str,
        /// The container.
        container: String,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// The pod's uid cannot name a directory.
    #[error("pod uid {0:?} cannot be used as a directory name")]
    BadUid(String),
    /// Fewer free, healthy GPUs than the pod requests.
    #[error(
        "the pod requests {requested} nvidia.com/gpu but only {free} of the node's {total} devices are free and healthy"
    )]
    NotEnoughGpus {
        /// GPUs requested.
        requested: usize,
        /// GPUs free and healthy.
        free: usize,
        /// GPUs of the node.
        total: usize,
    },
    /// A volume cannot be prepared or mounted.
    #[error(transparent)]
    Volume(#[from] VolumeError),
    /// The environment or command line cannot be built.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// The container's `securityContext` cannot be honoured here (a
    /// `CreateContainerConfigError`: the container does not start).
    #[error(transparent)]
    Security(#[from] crate::sandbox::security::SecurityError),
}

impl PodError {
    fn io(action: &'static str, path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        PodError::Io {
            action,
            path: path.into(),
            error,
        }
    }

    fn kube(action: impl Into<String>, error: kube::Error) -> Self {
        PodError::Kube {
            action: action.into(),
            error,
        }
    }
}
use status::{ContainerObs, ContainerView, PodFailure, StatusInput};

/// Grace period of containers whose pod vanished from the API (force deletion).
const GONE_GRACE_SECONDS: i64 = 2;

/// `PATH` of a container that sets none (containerd's default).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What every pod worker shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub config: Arc<AgentConfig>,
    pub layout: Layout,
    pub node: NodeFacts,
    pub gpus: Arc<Mutex<GpuInventory>>,
    /// GPU indices held by each non-terminal pod on this node, by pod uid.
    pub allocations: Mutex<HashMap<String, Vec<u32>>>,
    pub events: EventRecorder,
    pub log_index: Arc<LogIndex>,
    /// What pod sandboxes are made with.
    pub sandbox: SandboxContext,
    /// The CRI runtime (containerd), when the agent has an endpoint.
    pub cri: Option<crate::cri::Cri>,
}

impl Shared {
    fn devices(&self) -> Vec<GpuDevice> {
        self.gpus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .devices()
            .to_vec()
    }

    /// Records that `uid` holds `indices`.
    pub fn hold(&self, uid: &str, indices: Vec<u32>) {
        self.allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.to_string(), indices);
    }

    /// Releases what `uid` holds.
    pub fn release(&self, uid: &str) {
        self.allocations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(uid);
    }

    /// Picks `count` healthy devices nobody holds, and holds them for `uid`.
    fn claim(&self, uid: &str, count: usize) -> Result<Vec<u32>, PodError> {
        let devices = self.devices();
        let mut held = self.allocations.lock().unwrap_or_else(|p| p.into_inner());
        let busy: HashSet<u32> = held
            .iter()
            .filter(|(u, _)| u.as_str() != uid)
            .flat_map(|(_, v)| v.iter().copied())
            .collect();
        let free: Vec<u32> = devices
            .iter()
            .filter(|d| d.healthy && !busy.contains(&d.index))
            .map(|d| d.index)
            .collect();
        if free.len() < count {
            return Err(PodError::NotEnoughGpus {
                requested: count,
                free: free.len(),
                total: devices.len(),
            });
        }
        let chosen = free[..count].to_vec();
        held.insert(uid.to_string(), chosen.clone());
        Ok(chosen)
    }
}

/// The pod's identity and the agent's decisions about it (`pod.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `terminationGracePeriodSeconds`, for when the pod vanishes from the API.
    pub grace_seconds: i64,
    /// When the agent first accepted the pod (`status.startTime`).
    pub accepted_at: Option<Timestamp>,
    /// The image events were recorded.
    #[serde(default)]
    pub announced: bool,
    /// A failure decided at admission.
    #[serde(default)]
    pub failure: Option<PodFailure>,
    /// GPU indices given to the pod (`None` until decided).
    #[serde(default)]
    pub gpus: Option<Vec<u32>>,
    /// The runtime chosen at admission (`None` until decided).
    #[serde(default)]
    pub runtime: Option<crate::cri::select::Choice>,
}

/// Per-attempt bookkeeping of the agent (`agent.json` in the attempt directory).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct AttemptMeta {
    /// Consecutive quick restarts leading to this attempt (drives the back-off).
    streak: u32,
}

const ATTEMPT_META: &str = "agent.json";

/// What the disk says about one container.
#[derive(Debug, Clone)]
struct Observed {
    latest: Option<u32>,
    state: AttemptState,
    previous_exit: Option<ExitRecord>,
}

/// When a crashed container may restart.
enum Due {
    Now(u32),
    Later(Instant, Duration),
}

enum Next {
    Done,
    Wait(Option<Instant>),
}

struct Termination {
    noticed: Instant,
    deadline: Instant,
    killed: bool,
    signalled: HashSet<(String, u32)>,
}

/// The worker of one pod.
pub(crate) struct PodWorker {
    shared: Arc<Shared>,
    uid: String,
    rx: watch::Receiver<Option<Arc<Pod>>>,
    pod: Option<Arc<Pod>>,
    gone: bool,
    meta: PodMeta,
    admitted: bool,
    wake: Arc<Notify>,
    watchers: JoinSet<()>,
    watched: HashSet<(String, u32)>,
    last_status: Option<serde_json::Value>,
    /// Containers whose configuration failed: (message, retry time).
    config_errors: HashMap<String, (String, Instant)>,
    /// Containers waiting out a back-off: message.
    backoff: HashMap<String, String>,
    backoff_announced: HashSet<(String, u32)>,
    termination: Option<Termination>,
    /// The pod's sandbox, once made or adopted.
    sandbox: Option<SandboxRecord>,
    /// The containers' startup, liveness and readiness probes.
    prober: probes::Prober,
    /// Containers whose image is not there (containerd pods).
    pull_errors: HashMap<String, cri::PullFailure>,
}

impl PodWorker {
    /// A worker for pod `uid`; `rx` carries the pod as the API shows it (`None`: gone).
    pub fn new(shared: Arc<Shared>, uid: String, rx: watch::Receiver<Option<Arc<Pod>>>) -> Self {
        let meta = read_json::<PodMeta>(&shared.layout.pod_meta(&uid))
            .ok()
            .flatten()
            .unwrap_or_else(|| PodMeta {
                uid: uid.clone(),
                grace_seconds: 30,
                ..Default::default()
            });
        let wake = Arc::new(Notify::new());
        let prober = probes::Prober::new(shared.events.clone(), wake.clone());
        PodWorker {
            shared,
            uid,
            rx,
            pod: None,
            gone: false,
            meta,
            admitted: false,
            wake,
            watchers: JoinSet::new(),
            watched: HashSet::new(),
            last_status: None,
            config_errors: HashMap::new(),
            backoff: HashMap::new(),
            backoff_announced: HashSet::new(),
            termination: None,
            sandbox: None,
            prober,
            pull_errors: HashMap::new(),
        }
    }

    /// Runs until the pod is gone and cleaned up, or until `shutdown` (leaving processes running).
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let next = tokio::select! {
                r = self.sync() => r,
                _ = shutdown.changed() => return,
            };
            let wake_at = match next {
                Ok(Next::Done) => return,
                Ok(Next::Wait(at)) => at,
                Err(e) => {
                    tracing::warn!(pod = %self.display_name(), error = %e, "pod sync failed; retrying");
                    Some(Instant::now() + Duration::from_secs(2))
                }
            };
            while self.watchers.try_join_next().is_some() {}
            let sleep = async {
                match wake_at {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = self.rx.changed() => if r.is_err() { return },
                _ = self.wake.notified() => {}
                _ = sleep => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    fn display_name(&self) -> String {
        if self.meta.name.is_empty() {
            format!("uid {}", self.uid)
        } else {
            format!("{}/{}", self.meta.namespace, self.meta.name)
        }
    }

    fn save_meta(&self) -> Result<(), PodError> {
        let dir = self.shared.layout.pod(&self.uid);
        std::fs::create_dir_all(&dir).map_err(|e| PodError::io("create", &dir, e))?;
        let path = self.shared.layout.pod_meta(&self.uid);
        write_json_atomic(&path, &self.meta).map_err(|e| PodError::io("write", &path, e))
    }

    fn subject(&self, container: Option<&str>) -> Subject {
        Subject::pod(&self.meta.namespace, &self.meta.name, &self.uid, container)
    }

    /// Records an Event in the background: the pod's progress never waits for it.
    async fn event(&self, container: Option<&str>, kind: EventType, reason: &str, message: &str) {
        let events = self.shared.events.clone();
        let subject = self.subject(container);
        let (reason, message) = (reason.to_string(), message.to_string());
        tokio::spawn(async move { events.record(&subject, kind, &reason, &message).await });
    }

    fn pods_api(&self) -> Api<Pod> {
        Api::namespaced(self.shared.client.clone(), &self.meta.namespace)
    }

    /// One pass: bring the containers in line with the pod, publish the status.
    async fn sync(&mut self) -> Result<Next, PodError> {
        let latest = self.rx.borrow_and_update().clone();
        match latest {
            Some(p) => self.pod = Some(p),
            None => self.gone = true,
        }
        if let Some(p) = &self.pod
            && self.meta.name.is_empty()
        {
            self.meta.namespace = p.metadata.namespace.clone().unwrap_or_default();
            self.meta.name = p.metadata.name.clone().unwrap_or_default();
        }
        let deleting = self.gone
            || self.pod.is_none()
            || self
                .pod
                .as_ref()
                .is_some_and(|p| p.metadata.deletion_timestamp.is_some());
        if deleting {
            return self.sync_terminating().await;
        }
        let pod = self.pod.clone().expect("checked above");
        if !self.admitted {
            self.admit(&pod).await?;
            self.admitted = true;
        }
        let api_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let mut next: Option<Instant> = None;
        let mut soonest = |t: Instant| next = Some(next.map_or(t, |n: Instant| n.min(t)));

        let terminal = matches!(api_phase, "Succeeded" | "Failed") || self.meta.failure.is_some();
        if terminal {
            self.release_cgroup(&spec);
        }
        if !terminal && self.sandbox.is_none() {
            match self.make_sandbox(&pod).await {
                Ok(record) => self.sandbox = Some(record),
                Err(e) => {
                    tracing::warn!(pod = %self.display_name(), error = %e, "cannot create the pod sandbox");
                    self.event(
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        &format!("Failed to create pod sandbox: {e}"),
                    )
                    .await;
                    self.publish_status(&pod, &policy).await?;
                    return Ok(Next::Wait(Some(Instant::now() + Duration::from_secs(2))));
                }
            }
        }
        if self.is_cri() && self.cri_refresh().await {
            soonest(Instant::now() + Duration::from_millis(100));
        }
        if !terminal {
            self.backoff.clear();
            let init = spec.init_containers.clone().unwrap_or_default();
            let mut init_done = true;
            for c in &init {
                let o = self.observe(&c.name)?;
                match &o.state {
                    AttemptState::Exited(e) if e.exit_code == 0 => continue,
                    AttemptState::Exited(_) if policy == "Never" => {}
                    AttemptState::Exited(e) => {
                        if let Some(t) = self.restart(&pod, c, &o, e).await? {
                            soonest(t);
                        }
                    }
                    AttemptState::NotStarted => {
                        if let Some(t) = self.start(&pod, c, 0, 0).await? {
                            soonest(t);
                        }
                    }
                    AttemptState::Running(_) | AttemptState::Starting { .. } => {}
                }
                init_done = false;
                break;
            }
            if init_done {
                for c in &spec.containers {
                    let o = self.observe(&c.name)?;
                    match &o.state {
                        AttemptState::NotStarted => {
                            if let Some(t) = self.start(&pod, c, 0, 0).await? {
                                soonest(t);
                            }
                        }
                        AttemptState::Exited(e) => {
                            let again =
                                policy == "Always" || (policy == "OnFailure" && e.exit_code != 0);
                            if again && let Some(t) = self.restart(&pod, c, &o, e).await? {
                                soonest(t);
                            }
                        }
                        AttemptState::Running(_) | AttemptState::Starting { .. } => {}
                    }
                }
            }
        }
        // Projected service-account tokens: refreshed at 80% of their lifetime.
        if !terminal {
            match satoken::ensure(&self.shared.client, &self.shared.layout, &pod, &self.uid).await {
                Ok(Some(t)) => soonest(t),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(pod = %self.display_name(), error = %e, "cannot refresh a service-account token");
                    soonest(Instant::now() + Duration::from_secs(10));
                }
            }
        }
        // Watch every live shim; re-check soon a shim that is still starting its process.
        for c in spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
        {
            if let AttemptState::Starting { .. } = self.observe(&c.name)?.state {
                soonest(Instant::now() + Duration::from_millis(200));
            }
        }
        if terminal && self.sandbox.is_none() {
            // Adopted after a restart: the record still gives the pod's addresses.
            self.sandbox = sandbox::load(&self.shared.layout.pod(&self.uid))
                .ok()
                .flatten();
        }
        let phase = self.publish_status(&pod, &policy).await?;
        if matches!(phase.as_str(), "Succeeded" | "Failed") {
            self.shared.release(&self.uid);
            if self.sandbox.as_ref().is_some_and(|s| s.netns.is_some()) {
                let dir = self.shared.layout.pod(&self.uid);
                match sandbox::release_network(&self.shared.sandbox, &self.uid, &dir).await {
                    Ok(record) => self.sandbox = record,
                    Err(e) => {
                        tracing::warn!(pod = %self.display_name(), error = %e, "cannot release the pod network; retrying");
                        return Ok(Next::Wait(Some(Instant::now() + Duration::from_secs(2))));
                    }
                }
            }
        }
        Ok(Next::Wait(next))
    }

    /// First pass over a pod: identity on disk, admission checks, GPUs, the image events.
    async fn admit(&mut self, pod: &Pod) -> Result<(), PodError> {
        if !safe_component(&self.uid) {
            return Err(PodError::BadUid(self.uid.clone()));
        }
        self.meta.grace_seconds = pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0);
        if self.meta.accepted_at.is_none() {
            self.meta.accepted_at = Some(
                pod.status
                    .as_ref()
                    .and_then(|s| s.start_time.as_ref())
                    .map_or_else(Timestamp::now, |t| t.0),
            );
        }
        self.save_meta()?;
        self.shared
            .log_index
            .insert(&self.meta.namespace, &self.meta.name, &self.uid);
        let api_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("");
        if matches!(api_phase, "Succeeded" | "Failed") {
            return Ok(());
        }
        if let Some(held) = &self.meta.gpus {
            self.shared.hold(&self.uid, held.clone());
        }
        if self.meta.failure.is_none()
            && let Err(failure) = self.check(pod).await
        {
            self.event(None, EventType::Warning, &failure.reason, &failure.message)
                .await;
            self.meta.failure = Some(failure);
            self.save_meta()?;
        }
        if !self.meta.announced && !self.is_cri() && self.meta.failure.is_none() {
            for c in env::all_containers(pod) {
                if let Some(image) = c.image.as_deref().filter(|i| !i.is_empty()) {
                    let message = format!(
                        "Container image \"{image}\" is not pulled: Ferry's host runtime runs the command of container \"{}\" directly on the node",
                        c.name
                    );
                    self.event(Some(&c.name), EventType::Normal, "HostRuntime", &message)
                        .await;
                }
            }
            self.meta.announced = true;
            self.save_meta()?;
        }
        Ok(())
    }

    /// Checks what makes a pod impossible to run here; decides its GPUs.
    async fn check(&mut self, pod: &Pod) -> Result<(), PodFailure> {
        let fail = |reason: &str, message: String| PodFailure {
            reason: reason.into(),
            message,
        };
        let spec = pod.spec.clone().unwrap_or_default();
        self.choose_runtime(pod).await?;
        let mut names = HashSet::new();
        for c in env::all_containers(pod) {
            if !safe_component(&c.name) || !names.insert(c.name.clone()) {
                return Err(fail(
                    "InvalidContainerName",
                    format!("container name {:?} is invalid or repeated", c.name),
                ));
            }
            if !self.is_cri() && c.command.as_ref().is_none_or(|cmd| cmd.is_empty()) {
                return Err(fail(
                    "NoCommand",
                    format!(
                        "container {:?} has no command: Ferry runs containers as host processes and cannot use an image's entrypoint; set `command` (and optionally `args`)",
                        c.name
                    ),
                ));
            }
        }
        // Permanent volume problems (unsupported types, bad paths) fail the pod now; missing
        // ConfigMaps and the like are retried when the container starts.
        let sources = self.fetch_sources(pod).await.unwrap_or_default();
        match volumes::prepare(
            &self.shared.layout,
            pod,
            &self.uid,
            &sources,
            &self.shared.node,
        ) {
            Err(e) if !e.retryable => return Err(fail("UnsupportedVolume", e.message)),
            Ok(vols) => {
                for c in env::all_containers(pod) {
                    if let Err(e) =
                        volumes::mounts_for(c, &vols, &volumes::read_only_volumes(pod), None)
                        && !e.retryable
                    {
                        return Err(fail("InvalidVolumeMount", e.message));
                    }
                }
            }
            Err(_) => {}
        }
        let requests =
            PodRequests::of(&spec).map_err(|e| fail("InvalidResources", e.to_string()))?;
        if self.meta.gpus.is_some() {
            return Ok(());
        }
        let devices = self.shared.devices();
        let annotation = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(POD_ASSIGNED_ANNOTATION))
            .cloned();
        let chosen = match annotation {
            Some(value) => {
                let indices = parse_assigned(&value).map_err(|e| {
                    fail(
                        "InvalidGpuAssignment",
                        format!("annotation {POD_ASSIGNED_ANNOTATION}={value:?}: {e}"),
                    )
                })?;
                for i in &indices {
                    if !devices.iter().any(|d| d.index == *i) {
                        return Err(fail(
                            "InvalidGpuAssignment",
                            format!(
                                "annotation {POD_ASSIGNED_ANNOTATION}={value:?} names GPU {i}, but this node has {} GPUs",
                                devices.len()
                            ),
                        ));
                    }
                }
                self.shared.hold(&self.uid, indices.clone());
                indices
            }
            None if requests.gpus > 0 => {
                let chosen = self
                    .shared
                    .claim(&self.uid, requests.gpus as usize)
                    .map_err(|e| fail("OutOfnvidia.com/gpu", e.to_string()))?;
                let value = format_assigned(&chosen);
                let patch = serde_json::json!({"metadata": {"annotations": {POD_ASSIGNED_ANNOTATION: value}}});
                if let Err(e) = self
                    .pods_api()
                    .patch(
                        &self.meta.name,
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::warn!(pod = %self.display_name(), error = %e, "cannot record the GPU assignment on the pod");
                }
                self.event(
                    None,
                    EventType::Normal,
                    "GpusAssigned",
                    &format!("Assigned GPUs {value} (the pod carried no {POD_ASSIGNED_ANNOTATION} annotation)"),
                )
                .await;
                chosen
            }
            None => Vec::new(),
        };
        self.meta.gpus = Some(chosen);
        Ok(())
    }

    /// Fetches the ConfigMaps and Secrets the pod refers to.
    async fn fetch_sources(&self, pod: &Pod) -> Result<EnvSources, PodError> {
        let mut cms: Vec<String> = Vec::new();
        let mut secrets: Vec<String> = Vec::new();
        for c in env::all_containers(pod) {
            let (a, b) = EnvSources::referenced(c);
            cms.extend(a);
            secrets.extend(b);
        }
        let (a, b) = volumes::referenced(pod);
        cms.extend(a);
        secrets.extend(b);
        cms.sort();
        cms.dedup();
        secrets.sort();
        secrets.dedup();
        let mut sources = EnvSources::default();
        let cm_api: Api<ConfigMap> =
            Api::namespaced(self.shared.client.clone(), &self.meta.namespace);
        for name in cms {
            let v = cm_api
                .get_opt(&name)
                .await
                .map_err(|e| PodError::kube(format!("read configmap {name}"), e))?;
            sources.config_maps.insert(name, v);
        }
        let secret_api: Api<Secret> =
            Api::namespaced(self.shared.client.clone(), &self.meta.namespace);
        for name in secrets {
            let v = secret_api
                .get_opt(&name)
                .await
                .map_err(|e| PodError::kube(format!("read secret {name}"), e))?;
            sources.secrets.insert(name, v);
        }
        sources.services = self.fetch_services(pod).await?;
        sources.claims = self.fetch_claims(pod).await?;
        Ok(sources)
    }

    /// The PersistentVolumeClaims the pod's volumes name, each with the volume it is bound to.
    async fn fetch_claims(
        &self,
        pod: &Pod,
    ) -> Result<HashMap<String, volumes::ClaimSource>, PodError> {
        use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
        let mut out = HashMap::new();
        let claims: Api<PersistentVolumeClaim> =
            Api::namespaced(self.shared.client.clone(), &self.meta.namespace);
        let volumes: Api<PersistentVolume> = Api::all(self.shared.client.clone());
        for name in volumes::referenced_claims(pod) {
            let claim = claims
                .get_opt(&name)
                .await
                .map_err(|e| PodError::kube(format!("read persistentvolumeclaim {name}"), e))?;
            let volume_name = claim
                .as_ref()
                .and_then(|c| c.spec.as_ref())
                .and_then(|s| s.volume_name.clone())
                .filter(|v| !v.is_empty());
            let volume = match volume_name {
                Some(v) => volumes
                    .get_opt(&v)
                    .await
                    .map_err(|e| PodError::kube(format!("read persistentvolume {v}"), e))?,
                None => None,
            };
            out.insert(name, volumes::ClaimSource { claim, volume });
        }
        Ok(out)
    }

    /// The Services whose variables the containers get: one list of the pod's namespace
    /// (with `enableServiceLinks`) and `default/kubernetes`.
    async fn fetch_services(
        &self,
        pod: &Pod,
    ) -> Result<Vec<k8s_openapi::api::core::v1::Service>, PodError> {
        use k8s_openapi::api::core::v1::Service;
        let ns = self.meta.namespace.as_str();
        let mut out = Vec::new();
        if env::service_links(pod) {
            let api: Api<Service> = Api::namespaced(self.shared.client.clone(), ns);
            out = api
                .list(&Default::default())
                .await
                .map_err(|e| PodError::kube("list services", e))?
                .items;
        }
        if ns != "default" || out.is_empty() {
            let api: Api<Service> = Api::namespaced(self.shared.client.clone(), "default");
            if let Some(k) = api
                .get_opt("kubernetes")
                .await
                .map_err(|e| PodError::kube("read service kubernetes", e))?
            {
                out.push(k);
            }
        }
        Ok(out)
    }

    /// Reads a container's latest attempt from disk and watches its shim if it is alive.
    fn observe(&mut self, name: &str) -> Result<Observed, PodError> {
        let attempts = self.shared.layout.attempts(&self.uid, name);
        let Some(&latest) = attempts.last() else {
            return Ok(Observed {
                latest: None,
                state: AttemptState::NotStarted,
                previous_exit: None,
            });
        };
        let dir = self.shared.layout.attempt(&self.uid, name, latest);
        let mut state = runtime::inspect(&dir).map_err(|e| PodError::io("read", &dir, e))?;
        if let AttemptState::Exited(e) = &mut state {
            probes::annotate_exit(&dir, e);
        }
        let shim = match &state {
            AttemptState::Running(s) => Some(s.shim),
            AttemptState::Starting { shim } => Some(*shim),
            _ => None,
        };
        if let Some(shim) = shim {
            self.watch_shim(name, latest, shim);
        }
        let previous_exit = match latest.checked_sub(1) {
            Some(prev) if attempts.contains(&prev) => {
                let dir = self.shared.layout.attempt(&self.uid, name, prev);
                match runtime::inspect(&dir) {
                    Ok(AttemptState::Exited(mut e)) => {
                        probes::annotate_exit(&dir, &mut e);
                        Some(e)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        Ok(Observed {
            latest: Some(latest),
            state,
            previous_exit,
        })
    }

    fn watch_shim(&mut self, name: &str, attempt: u32, shim: ProcId) {
        if self.watched.insert((name.to_string(), attempt)) {
            let wake = self.wake.clone();
            self.watchers.spawn(async move {
                runtime::wait_exit(shim).await;
                wake.notify_one();
            });
        }
    }

    /// Restarts an exited container once its back-off allows; returns when to look again.
    async fn restart(
        &mut self,
        pod: &Pod,
        c: &Container,
        o: &Observed,
        exit: &ExitRecord,
    ) -> Result<Option<Instant>, PodError> {
        let latest = o.latest.unwrap_or(0);
        match self.due(&c.name, latest, exit) {
            Due::Now(streak) => self.start(pod, c, latest + 1, streak).await,
            Due::Later(at, delay) => {
                let message = format!(
                    "back-off {} restarting failed container={} pod={}_{}({})",
                    human(delay),
                    c.name,
                    self.meta.name,
                    self.meta.namespace,
                    self.uid
                );
                self.backoff.insert(c.name.clone(), message);
                if self.backoff_announced.insert((c.name.clone(), latest)) {
                    self.event(
                        Some(&c.name),
                        EventType::Warning,
                        "BackOff",
                        &format!(
                            "Back-off restarting failed container {} in pod {}",
                            c.name, self.meta.name
                        ),
                    )
                    .await;
                }
                Ok(Some(at))
            }
        }
    }

    /// The kubelet's crash-loop back-off: the first restart is immediate, then the delay
    /// starts at `backoff_initial` and doubles up to `backoff_max`; a run of at least
    /// `backoff_reset` starts over.
    fn due(&self, name: &str, latest: u32, exit: &ExitRecord) -> Due {
        let cfg = &self.shared.config;
        let dir = self.shared.layout.attempt(&self.uid, name, latest);
        let previous: AttemptMeta = read_json(&dir.join(ATTEMPT_META))
            .ok()
            .flatten()
            .unwrap_or_default();
        let ran = exit
            .started_at
            .and_then(|s| exit.finished_at.duration_since(s).try_into().ok())
            .unwrap_or(Duration::ZERO);
        let streak = next_streak(previous.streak, ran, cfg.backoff_reset);
        let delay = restart_delay(streak, cfg.backoff_initial, cfg.backoff_max);
        let elapsed: Duration = Timestamp::now()
            .duration_since(exit.finished_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        if elapsed >= delay {
            Due::Now(streak)
        } else {
            Due::Later(Instant::now() + (delay - elapsed), delay)
        }
    }

    /// Starts attempt `attempt` of container `c`; returns when to look again if it could not.
    async fn start(
        &mut self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        streak: u32,
    ) -> Result<Option<Instant>, PodError> {
        if let Some((_, retry_at)) = self.config_errors.get(&c.name)
            && Instant::now() < *retry_at
        {
            return Ok(Some(*retry_at));
        }
        if let Some(retry_at) = self.cri_pull(pod, c).await {
            return Ok(Some(retry_at));
        }
        let spec = match self.container_spec(pod, c).await {
            Ok(spec) => spec,
            Err(e) => {
                let message = e.to_string();
                let retry_in = self
                    .shared
                    .config
                    .backoff_initial
                    .clamp(Duration::from_secs(1), Duration::from_secs(10));
                let retry_at = Instant::now() + retry_in;
                self.config_errors
                    .insert(c.name.clone(), (message.clone(), retry_at));
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                )
                .await;
                return Ok(Some(retry_at));
            }
        };
        self.config_errors.remove(&c.name);
        let dir = self.shared.layout.attempt(&self.uid, &c.name, attempt);
        std::fs::create_dir_all(&dir).map_err(|e| PodError::io("create", &dir, e))?;
        let meta_path = dir.join(ATTEMPT_META);
        write_json_atomic(&meta_path, &AttemptMeta { streak })
            .map_err(|e| PodError::io("write", &meta_path, e))?;
        // Keep the previous attempt (for `previous=true` logs), drop older ones.
        for old in self.shared.layout.attempts(&self.uid, &c.name) {
            if old + 1 < attempt {
                let _ =
                    std::fs::remove_dir_all(self.shared.layout.attempt(&self.uid, &c.name, old));
            }
        }
        self.event(
            Some(&c.name),
            EventType::Normal,
            "Created",
            &format!("Created container {}", c.name),
        )
        .await;
        let state = if self.is_cri() {
            self.cri_start(pod, c, &dir, attempt, &spec).await?
        } else {
            runtime::start(&self.shared.config.shim, &dir, &spec)
                .await
                .map_err(|error| PodError::Process {
                    action: "start container",
                    container: c.name.clone(),
                    error,
                })?
        };
        match &state {
            AttemptState::Running(s) => {
                self.watch_shim(&c.name, attempt, s.shim);
                self.event(
                    Some(&c.name),
                    EventType::Normal,
                    "Started",
                    &format!("Started container {}", c.name),
                )
                .await;
                for w in &s.mounts.warnings {
                    self.event(Some(&c.name), EventType::Warning, "VolumeNotMounted", w)
                        .await;
                }
            }
            AttemptState::Starting { shim } => self.watch_shim(&c.name, attempt, *shim),
            AttemptState::Exited(e) => {
                let message = e
                    .message
                    .clone()
                    .unwrap_or_else(|| format!("exit code {}", e.exit_code));
                self.event(
                    Some(&c.name),
                    EventType::Warning,
                    "Failed",
                    &format!("Error: {message}"),
                )
                .await;
            }
            AttemptState::NotStarted => {}
        }
        Ok(None)
    }

    /// Removes the cgroup of a finished pod once none of its containers runs (the kubelet
    /// removes the cgroups of terminated pods).
    fn release_cgroup(&mut self, spec: &k8s_openapi::api::core::v1::PodSpec) {
        let names: Vec<String> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.clone())
            .collect();
        let running = names.iter().any(|n| {
            matches!(
                self.observe(n).map(|o| o.state),
                Ok(AttemptState::Running(_) | AttemptState::Starting { .. })
            )
        });
        if running {
            return;
        }
        let dir = self.shared.layout.pod(&self.uid);
        match sandbox::cgroup::release(&dir) {
            Ok(()) => {
                if let Some(record) = &mut self.sandbox {
                    record.cgroup = None;
                }
            }
            Err(e) => {
                tracing::warn!(pod = %self.display_name(), error = %e, "cannot remove the cgroup of a finished pod")
            }
        }
    }

    /// What the shim must run for container `c`.
    async fn container_spec(&self, pod: &Pod, c: &Container) -> Result<ShimSpec, PodError> {
        let sources = self.fetch_sources(pod).await?;
        satoken::ensure(&self.shared.client, &self.shared.layout, pod, &self.uid).await?;
        // The downward API's status.podIP is the pod's own address once it has one.
        let node = NodeFacts {
            pod_ip: self
                .sandbox
                .as_ref()
                .filter(|s| !s.host_network)
                .and_then(|s| s.pod_ips.first().cloned()),
            ..self.shared.node.clone()
        };
        let vols = volumes::prepare(&self.shared.layout, pod, &self.uid, &sources, &node)?;
        let (user_env, warnings) = env::resolve_env(pod, c, &sources, &node)?;
        for w in warnings {
            self.event(
                Some(&c.name),
                EventType::Warning,
                "InvalidEnvironmentVariableNames",
                &w,
            )
            .await;
        }
        let security = sandbox::security::resolve(pod, c)?;
        if !self.is_cri() {
            let host = sandbox::security::HostAbilities::current(self.mount_mode());
            sandbox::security::check_host(&security, host, pod, &c.name)?;
        } else if security.run_as_non_root
            && security.run_as_user.is_none()
            && let Some(cri) = &self.shared.cri
        {
            // The kubelet's check against the image's user.
            let image = c.image.clone().unwrap_or_default();
            let (uid, name) = crate::cri::container::image_user(cri, &image)
                .await
                .map_err(sandbox::security::SecurityError)?;
            sandbox::security::verify_run_as_non_root(
                &security,
                uid,
                name.as_deref(),
                pod,
                &c.name,
            )?;
        } else {
            sandbox::security::verify_run_as_non_root(&security, None, None, pod, &c.name)?;
        }
        let (run_as_user, run_as_group) = (security.run_as_user, security.run_as_group);
        let uid = run_as_user.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let home = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map_or_else(|| "/".to_string(), |u| u.dir.display().to_string());
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), DEFAULT_PATH.into()),
            ("HOME".into(), home),
            ("HOSTNAME".into(), self.meta.name.clone()),
        ];
        for (k, v) in user_env {
            match env.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => env.push((k, v)),
            }
        }
        for (k, v) in self.gpu_env() {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        }
        // containerd takes the command and arguments apart (the image's entrypoint applies).
        let argv = if self.is_cri() {
            Vec::new()
        } else {
            env::command_line(c, &env)?
        };
        let working_dir = match c.working_dir.as_deref().filter(|w| !w.is_empty()) {
            Some(w) => PathBuf::from(w),
            None => {
                let dir = self.shared.layout.workdir(&self.uid);
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|e| PodError::io("create", &dir, e))?;
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
                }
                dir
            }
        };
        let mut mounts =
            volumes::mounts_for(c, &vols, &volumes::read_only_volumes(pod), Some(&env))?;
        let (mut netns, mut cgroups, mut hostname) = (None, Vec::new(), None);
        if let Some(record) = &self.sandbox {
            netns = record.netns.clone();
            if let Some(cg) = &record.cgroup {
                cgroups = sandbox::cgroup::container_dirs(cg, &c.name);
            }
            if let Some(files) = &record.etc {
                sandbox::etc::add_mounts(files, &mut mounts);
            }
            if !record.host_network {
                hostname = Some(sandbox::etc::pod_hostname(pod));
            }
        }
        Ok(ShimSpec {
            argv,
            env,
            working_dir,
            mounts,
            mount_mode: self.mount_mode(),
            run_as_user,
            run_as_group,
            netns,
            cgroups,
            hostname,
            stdin: c.stdin.unwrap_or(false),
            stdin_once: c.stdin_once.unwrap_or(false),
            tty: c.tty.unwrap_or(false),
            security,
        })
    }

    /// How the shim makes the volumes visible (a private mount namespace in isolated mode).
    fn mount_mode(&self) -> crate::runtime::MountMode {
        if self.shared.sandbox.mode == sandbox::SandboxMode::Isolated {
            crate::runtime::MountMode::Namespace
        } else {
            self.shared.config.mount_mode
        }
    }

    /// `CUDA_VISIBLE_DEVICES` and friends: the assigned devices (UUIDs for real devices,
    /// indices for fake ones), or none at all on a GPU node for a pod given none.
    fn gpu_env(&self) -> Vec<(String, String)> {
        let devices = self.shared.devices();
        if devices.is_empty() {
            return Vec::new();
        }
        let assigned = self.meta.gpus.clone().unwrap_or_default();
        if assigned.is_empty() {
            return vec![
                ("CUDA_VISIBLE_DEVICES".into(), String::new()),
                ("NVIDIA_VISIBLE_DEVICES".into(), "void".into()),
            ];
        }
        let ids: Vec<String> = assigned
            .iter()
            .map(|i| match devices.iter().find(|d| d.index == *i) {
                Some(d) if !d.fake => d.uuid.clone(),
                _ => i.to_string(),
            })
            .collect();
        let ids = ids.join(",");
        vec![
            ("CUDA_VISIBLE_DEVICES".into(), ids.clone()),
            ("NVIDIA_VISIBLE_DEVICES".into(), ids),
            ("FERRY_GPU_ASSIGNED".into(), format_assigned(&assigned)),
        ]
    }

    /// How one container is shown in the status.
    fn container_obs(
        &mut self,
        c: &Container,
        init: bool,
        init_done: bool,
    ) -> Result<ContainerObs, PodError> {
        let o = self.observe(&c.name)?;
        let restart_count = o.latest.unwrap_or(0);
        let container_id = o.latest.map(|n| {
            self.cri_container_id(&c.name, n)
                .unwrap_or_else(|| format!("ferry://{}/{}/{n}", self.uid, c.name))
        });
        let pull = self.pull_view(&c.name);
        let config_error = self.config_errors.get(&c.name).map(|(m, _)| m.clone());
        let waiting = |reason: &str, message: Option<String>| ContainerView::Waiting {
            reason: reason.into(),
            message,
        };
        let health = match &o.state {
            AttemptState::Running(s) if !init => {
                let facts = probes::PodFacts {
                    namespace: self.meta.namespace.clone(),
                    name: self.meta.name.clone(),
                    uid: self.uid.clone(),
                    pod_ip: self
                        .sandbox
                        .as_ref()
                        .and_then(|r| r.pod_ips.first().cloned()),
                    grace_seconds: self.meta.grace_seconds,
                };
                let previous = self.pod.as_ref().and_then(|p| {
                    p.status
                        .as_ref()?
                        .container_statuses
                        .as_ref()?
                        .iter()
                        .find(|s| s.name == c.name)
                        .cloned()
                });
                let dir = self
                    .shared
                    .layout
                    .attempt(&self.uid, &c.name, restart_count);
                self.prober
                    .observe(&facts, c, restart_count, s, &dir, previous.as_ref())
            }
            _ => {
                self.prober.stop(&c.name);
                probes::Health {
                    started: false,
                    ready: false,
                }
            }
        };
        let (state, last) = match o.state {
            AttemptState::NotStarted => {
                let view = match (config_error, &self.meta.failure) {
                    (_, Some(f)) => waiting(&f.reason, Some(f.message.clone())),
                    (_, None) if let Some((r, m)) = pull => waiting(&r, Some(m)),
                    (Some(m), None) => waiting("CreateContainerConfigError", Some(m)),
                    (None, None) if init || init_done => waiting("ContainerCreating", None),
                    (None, None) => waiting("PodInitializing", None),
                };
                (view, None)
            }
            AttemptState::Starting { .. } => (waiting("ContainerCreating", None), o.previous_exit),
            AttemptState::Running(s) => (
                ContainerView::Running {
                    started_at: s.started_at,
                },
                o.previous_exit,
            ),
            AttemptState::Exited(e) => {
                if let Some(m) = self.backoff.get(&c.name) {
                    (waiting("CrashLoopBackOff", Some(m.clone())), Some(e))
                } else if let Some(m) = config_error {
                    (waiting("CreateContainerConfigError", Some(m)), Some(e))
                } else if let Some((r, m)) = pull {
                    (waiting(&r, Some(m)), Some(e))
                } else {
                    (ContainerView::Terminated(e), o.previous_exit)
                }
            }
        };
        Ok(ContainerObs {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            restart_count,
            state,
            last,
            container_id,
            started: health.started,
            ready: health.ready,
        })
    }

    /// Computes and (when it changed) writes the pod status; returns the phase.
    async fn publish_status(&mut self, pod: &Pod, policy: &str) -> Result<String, PodError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let init_specs = spec.init_containers.clone().unwrap_or_default();
        let mut init = Vec::new();
        for c in &init_specs {
            init.push(self.container_obs(c, true, false)?);
        }
        let init_done = init
            .iter()
            .all(|c| matches!(&c.state, ContainerView::Terminated(e) if e.exit_code == 0));
        let mut main = Vec::new();
        for c in &spec.containers {
            main.push(self.container_obs(c, false, init_done)?);
        }
        let api_phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let status = status::build(&StatusInput {
            init: &init,
            main: &main,
            restart_policy: policy,
            failure: self.meta.failure.as_ref(),
            node_ip: &self.shared.node.node_ip,
            pod_ips: self
                .sandbox
                .as_ref()
                .map(|s| s.pod_ips.as_slice())
                .unwrap_or_default(),
            start_time: self.meta.accepted_at.unwrap_or_else(Timestamp::now),
            previous: pod.status.as_ref(),
            readiness_gates: &spec
                .readiness_gates
                .iter()
                .flatten()
                .map(|g| g.condition_type.clone())
                .collect::<Vec<_>>(),
            now: Timestamp::now(),
        });
        let mut phase = status.phase.clone().unwrap_or_default();
        // A terminal phase is final: never report a pod as running again.
        if matches!(api_phase.as_str(), "Succeeded" | "Failed") && phase != api_phase {
            phase = api_phase;
            return Ok(phase);
        }
        let patch = status::merge_patch(&status);
        if self.last_status.as_ref() == Some(&patch) {
            return Ok(phase);
        }
        match self
            .pods_api()
            .patch_status(
                &self.meta.name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => {
                self.last_status = Some(patch);
                Ok(phase)
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(phase),
            Err(e) => Err(PodError::kube("update the pod status", e)),
        }
    }

    /// The pod is being deleted (or is gone): stop its containers within the grace period,
    /// publish the final status, remove the pod for good, clean up.
    async fn sync_terminating(&mut self) -> Result<Next, PodError> {
        self.backoff.clear();
        self.prober.close();
        self.pull_errors.clear();
        if self.is_cri() {
            self.cri_refresh().await;
        }
        let names: Vec<String> =
            std::fs::read_dir(self.shared.layout.pod(&self.uid).join("containers"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
        let mut running = Vec::new();
        let mut starting = false;
        for name in &names {
            let o = self.observe(name)?;
            match o.state {
                AttemptState::Running(s) => running.push((name.clone(), o.latest.unwrap_or(0), s)),
                AttemptState::Starting { .. } => starting = true,
                _ => {}
            }
        }
        if !running.is_empty() || starting {
            let now = Instant::now();
            // A pod still in the API gives its deletion grace period. One that is already gone
            // was force-deleted (or deleted while the agent was away): its owner wants it gone,
            // so it gets at most GONE_GRACE_SECONDS.
            let grace = if self.gone || self.pod.is_none() {
                self.meta.grace_seconds.min(GONE_GRACE_SECONDS)
            } else {
                self.pod
                    .as_ref()
                    .and_then(|p| p.metadata.deletion_grace_period_seconds)
                    .unwrap_or(self.meta.grace_seconds)
            }
            .max(0) as u64;
            let termination = self.termination.get_or_insert_with(|| Termination {
                noticed: now,
                deadline: now + Duration::from_secs(grace),
                killed: false,
                signalled: HashSet::new(),
            });
            // A later delete may shorten the grace period (`kubectl delete --grace-period=1`).
            termination.deadline = termination
                .deadline
                .min(termination.noticed + Duration::from_secs(grace));
            let expired = now >= termination.deadline;
            let mut to_announce = Vec::new();
            for (name, attempt, state) in &running {
                let first = termination.signalled.insert((name.clone(), *attempt));
                if expired && !termination.killed {
                    runtime::signal(state, Signal::SIGKILL).map_err(|error| PodError::Process {
                        action: "kill",
                        container: name.clone(),
                        error,
                    })?;
                } else if first {
                    let sig = if expired {
                        Signal::SIGKILL
                    } else {
                        Signal::SIGTERM
                    };
                    runtime::signal(state, sig).map_err(|error| PodError::Process {
                        action: "signal",
                        container: name.clone(),
                        error,
                    })?;
                    to_announce.push(name.clone());
                }
            }
            if expired {
                termination.killed = true;
            }
            let deadline = termination.deadline;
            let killed = termination.killed;
            for name in to_announce {
                self.event(
                    Some(&name),
                    EventType::Normal,
                    "Killing",
                    &format!("Stopping container {name}"),
                )
                .await;
            }
            if let Some(pod) = self.pod.clone().filter(|_| !self.gone) {
                self.publish_status(&pod, "Never").await?;
            }
            let wake = if killed || starting {
                Instant::now() + Duration::from_millis(500)
            } else {
                deadline
            };
            return Ok(Next::Wait(Some(wake)));
        }
        // Everything has stopped.
        if let Some(pod) = self.pod.clone().filter(|_| !self.gone) {
            self.publish_status(&pod, "Never").await?;
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.pods_api().delete(&self.meta.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(PodError::kube("remove the pod", e)),
            }
        }
        if let Err(e) = self.cri_teardown().await {
            tracing::warn!(pod = %self.display_name(), error = %e, "cannot remove the pod's containerd sandbox; retrying");
            return Ok(Next::Wait(Some(Instant::now() + Duration::from_secs(2))));
        }
        let dir = self.shared.layout.pod(&self.uid);
        if let Err(e) = sandbox::teardown(&self.shared.sandbox, &self.uid, &dir).await {
            tracing::warn!(pod = %self.display_name(), error = %e, "cannot remove the pod sandbox; retrying");
            return Ok(Next::Wait(Some(Instant::now() + Duration::from_secs(2))));
        }
        self.sandbox = None;
        self.cleanup();
        tracing::info!(pod = %self.display_name(), "pod removed");
        Ok(Next::Done)
    }

    /// Removes everything the pod left on this node.
    fn cleanup(&mut self) {
        let layout = &self.shared.layout;
        let containers = layout.pod(&self.uid).join("containers");
        for entry in std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            for attempt in layout.attempts(&self.uid, &name) {
                let state: Option<runtime::StateRecord> =
                    read_json(&layout.attempt(&self.uid, &name, attempt).join(files::STATE))
                        .ok()
                        .flatten();
                if let Some(s) = state {
                    crate::mounts::remove_symlinks(&s.mounts.symlinks);
                }
            }
        }
        self.shared.release(&self.uid);
        self.shared.events.forget(&self.uid);
        self.shared
            .log_index
            .remove(&self.meta.namespace, &self.meta.name, &self.uid);
        volumes::unmount_all(&layout.pod(&self.uid));
        if let Err(e) = std::fs::remove_dir_all(layout.pod(&self.uid))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(pod = %self.display_name(), error = %e, "cannot remove the pod's directory");
        }
    }
}

/// The back-off streak of the next attempt: one more than the previous attempt's, or 1 when
/// the exited attempt ran for at least `reset`.
fn next_streak(previous: u32, ran: Duration, reset: Duration) -> u32 {
    if ran >= reset {
        1
    } else {
        previous.saturating_add(1)
    }
}

/// Delay before starting an attempt with back-off streak `streak`, as the kubelet does: none
/// for the first restart of a streak, then `initial`, doubling, capped at `max`.
fn restart_delay(streak: u32, initial: Duration, max: Duration) -> Duration {
    if streak <= 1 {
        return Duration::ZERO;
    }
    let factor = 2u32.saturating_pow((streak - 2).min(31));
    initial.saturating_mul(factor).min(max)
}

/// A duration as Go prints it (`10s`, `1m20s`, `5m0s`).
fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Pod metadata of every pod directory, for the log index at start-up.
pub(crate) fn known_pods(layout: &Layout) -> Vec<PodMeta> {
    layout
        .pod_uids()
        .into_iter()
        .filter_map(|uid| read_json::<PodMeta>(&layout.pod_meta(&uid)).ok().flatten())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_errors_are_typed_and_say_what_failed() {
        let e = PodError::io(
            "create",
            "/data/pods/x",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(
            e.to_string().starts_with("cannot create /data/pods/x: "),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e: PodError =
            crate::sandbox::security::SecurityError("runAsUser -1 is out of range".into()).into();
        assert_eq!(e.to_string(), "runAsUser -1 is out of range");
        let e: PodError = EnvError("bad env".into()).into();
        assert_eq!(e.to_string(), "bad env");
    }

    #[test]
    fn back_off_doubles_caps_and_resets() {
        let (initial, max, reset) = (
            Duration::from_secs(10),
            Duration::from_secs(300),
            Duration::from_secs(600),
        );
        let mut streak = 0;
        let mut delays = Vec::new();
        for _ in 0..8 {
            streak = next_streak(streak, Duration::from_secs(1), reset);
            delays.push(restart_delay(streak, initial, max).as_secs());
        }
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        // A long run starts a new streak: the next restart is immediate.
        streak = next_streak(streak, Duration::from_secs(601), reset);
        assert_eq!(restart_delay(streak, initial, max), Duration::ZERO);
        assert_eq!(
            restart_delay(next_streak(streak, Duration::ZERO, reset), initial, max),
            initial
        );
        assert_eq!(restart_delay(u32::MAX, initial, max), max, "no overflow");
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(human(Duration::from_secs(10)), "10s");
        assert_eq!(human(Duration::from_secs(80)), "1m20s");
        assert_eq!(human(Duration::from_secs(300)), "5m0s");
    }
}

//! The containerd runtime: a client of the Kubernetes Container Runtime Interface (CRI v1)
//! over containerd's unix socket, and what the pod worker does with it.
//!
//! | part        | module          | what it is                                                |
//! |-------------|-----------------|-----------------------------------------------------------|
//! | the client  | this module     | [`Cri`]: the RuntimeService and ImageService clients      |
//! | selection   | [`select`]      | which runtime a pod gets (RuntimeClass, image, endpoint)  |
//! | sandboxes   | [`sandbox`]     | RunPodSandbox / adoption / teardown, recorded in the pod's `sandbox.json` |
//! | containers  | [`container`]   | image pull, CreateContainer/StartContainer, exit records  |
//!
//! A containerd container's attempt directory has the same files as a host container's (see
//! [`crate::runtime`]): `cri.json` ([`CriAttempt`]: the CRI container id) marks it as one,
//! `state.json` once it runs (its `container` is the container's init process as the host
//! sees it, so exec enters it with [`crate::sandbox::enter`]), `exit.json` once containerd
//! reports it exited, and `log`, which containerd writes in the CRI log format the log server
//! reads. So state stays on disk and an agent that restarts adopts containers as it adopts
//! host processes.
//!
//! `runtime.v1.rs` is generated from Kubernetes' `api.proto` (CRI v1, as shipped by the
//! `k8s-cri` crate 0.11) by `tonic-prost-build` with the client only; it is committed so the
//! build needs no `protoc`.

pub mod container;
pub mod sandbox;
pub mod select;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};

/// The generated CRI v1 messages and clients.
#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    rustdoc::all,
    unused_qualifications
)]
pub mod proto {
    include!("runtime.v1.rs");
}

use proto::image_service_client::ImageServiceClient;
use proto::runtime_service_client::RuntimeServiceClient;

/// containerd's socket where it is installed as a service.
pub const DEFAULT_CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

/// Label every Ferry sandbox and container carries: the pod's uid (adoption looks it up).
pub const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
/// Label with the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// Label with the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
/// Label with the container's name.
pub const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// The file marking an attempt as a containerd container.
pub const ATTEMPT_FILE: &str = "cri.json";

/// A containerd container attempt (`cri.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CriAttempt {
    /// The CRI container id.
    pub container_id: String,
    /// The image it runs.
    #[serde(default)]
    pub image: String,
    /// The image's digest reference, once known.
    #[serde(default)]
    pub image_ref: String,
}

/// A failed CRI call.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// containerd answered with an error (or could not be reached).
    #[error("{call}: {}", .status.message())]
    Call {
        /// The CRI method.
        call: &'static str,
        /// containerd's answer.
        status: Box<tonic::Status>,
    },
    /// containerd's answer lacks something it must have.
    #[error("{0}")]
    Invalid(String),
    /// A file of the pod's state.
    #[error("cannot {action} {}: {error}", .path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        error: std::io::Error,
    },
    /// The pod's sandbox record.
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
}

impl CriError {
    fn call(call: &'static str) -> impl FnOnce(tonic::Status) -> CriError {
        move |status| CriError::Call {
            call,
            status: Box::new(status),
        }
    }

    /// containerd said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CriError::Call { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// A CRI client (cheap to clone; one HTTP/2 connection to containerd, made lazily).
#[derive(Debug, Clone)]
pub struct Cri {
    endpoint: PathBuf,
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
}

impl Cri {
    /// A client of the CRI server listening on the unix socket `socket`. Nothing is dialled
    /// until the first call, so the agent starts even while containerd is still starting.
    pub fn new(socket: &Path) -> Result<Self, CriError> {
        let path = socket.to_path_buf();
        // The URI is not used: every connection goes to the socket.
        let channel = Endpoint::from_static("http://containerd.invalid")
            .connect_timeout(std::time::Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: tonic::codegen::http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }));
        Ok(Cri {
            endpoint: socket.to_path_buf(),
            runtime: RuntimeServiceClient::new(channel.clone()),
            image: ImageServiceClient::new(channel),
        })
    }

    /// The socket this client talks to.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// The runtime's name and version (`Version`), to check it answers.
    pub async fn version(&self) -> Result<String, CriError> {
        let v = self
            .runtime
            .clone()
            .version(proto::VersionRequest::default())
            .await
            .map_err(CriError::call("Version"))?
            .into_inner();
        Ok(format!(
            "{} {} (CRI {})",
            v.runtime_name, v.runtime_version, v.runtime_api_version
        ))
    }

    /// The RuntimeService client.
    pub fn runtime(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The ImageService client.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }

    /// Pod sandboxes labelled with `uid` (every state).
    pub async fn sandboxes_of(&self, uid: &str) -> Result<Vec<proto::PodSandbox>, CriError> {
        let filter = proto::PodSandboxFilter {
            label_selector: [(POD_UID_LABEL.to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        self.list_sandboxes(Some(filter)).await
    }

    /// Every pod sandbox (with an optional filter).
    pub async fn list_sandboxes(
        &self,
        filter: Option<proto::PodSandboxFilter>,
    ) -> Result<Vec<proto::PodSandbox>, CriError> {
        Ok(self
            .runtime()
            .list_pod_sandbox(proto::ListPodSandboxRequest { filter })
            .await
            .map_err(CriError::call("ListPodSandbox"))?
            .into_inner()
            .items)
    }

    /// Every container (with an optional filter).
    pub async fn list_containers(
        &self,
        filter: Option<proto::ContainerFilter>,
    ) -> Result<Vec<proto::Container>, CriError> {
        Ok(self
            .runtime()
            .list_containers(proto::ListContainersRequest { filter })
            .await
            .map_err(CriError::call("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// Stops and removes a pod sandbox and its containers; what is already gone is fine.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let filter = proto::ContainerFilter {
            pod_sandbox_id: id.to_string(),
            ..Default::default()
        };
        for c in self.list_containers(Some(filter)).await? {
            self.remove_container(&c.id).await?;
        }
        let mut rt = self.runtime();
        let ok_if_gone = |r: Result<(), CriError>| match r {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        };
        ok_if_gone(
            rt.stop_pod_sandbox(proto::StopPodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(CriError::call("StopPodSandbox")),
        )?;
        ok_if_gone(
            rt.remove_pod_sandbox(proto::RemovePodSandboxRequest {
                pod_sandbox_id: id.to_string(),
            })
            .await
            .map(|_| ())
            .map_err(CriError::call("RemovePodSandbox")),
        )
    }

    /// Kills (no grace: the worker gave it already) and removes a container; gone is fine.
    pub async fn remove_container(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.runtime();
        let stopped = rt
            .stop_container(proto::StopContainerRequest {
                container_id: id.to_string(),
                timeout: 0,
            })
            .await
            .map_err(CriError::call("StopContainer"));
        if let Err(e) = stopped
            && !e.is_not_found()
        {
            return Err(e);
        }
        match rt
            .remove_container(proto::RemoveContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(CriError::call("RemoveContainer"))
        {
            Err(e) if !e.is_not_found() => Err(e),
            _ => Ok(()),
        }
    }
}

/// The CRI state of a container attempt, from its files alone (no call to containerd), for
/// [`crate::runtime::inspect`]: exited once `exit.json` exists, running once `state.json`
/// does (until the worker's refresh records the exit containerd reports), else starting.
pub fn inspect(dir: &Path) -> std::io::Result<crate::runtime::AttemptState> {
    use crate::runtime::{AttemptState, ExitRecord, StateRecord, files, read_json};
    if let Some(exit) = read_json::<ExitRecord>(&dir.join(files::EXIT))? {
        return Ok(AttemptState::Exited(exit));
    }
    if let Some(state) = read_json::<StateRecord>(&dir.join(files::STATE))? {
        return Ok(AttemptState::Running(state));
    }
    // Created but not yet started: the agent itself is the "shim" that will start it.
    let me = crate::procfs::ProcId::of(std::process::id() as i32)?;
    Ok(AttemptState::Starting { shim: me })
}

/// Writes `value` to `path` atomically, as a [`CriError`].
fn save<T: Serialize>(path: &Path, value: &T) -> Result<(), CriError> {
    crate::runtime::write_json_atomic(path, value).map_err(|error| CriError::Io {
        action: "write",
        path: path.to_path_buf(),
        error,
    })
}

/// Reads `path`, as a [`CriError`].
fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, CriError> {
    crate::runtime::read_json(path).map_err(|error| CriError::Io {
        action: "read",
        path: path.to_path_buf(),
        error,
    })
}

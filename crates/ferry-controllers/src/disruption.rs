//! The disruption controller, as kube-controller-manager's: the status of every
//! PodDisruptionBudget (healthy pods, disruptions allowed) that the eviction subresource reads.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

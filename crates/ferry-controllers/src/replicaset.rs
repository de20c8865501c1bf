//! The ReplicaSet controller, as kube-controller-manager's: keeps `spec.replicas` pods matching
//! the selector, adopting orphans and releasing pods that no longer match.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

//! The Deployment controller, as kube-controller-manager's: rolls a Deployment's ReplicaSets
//! (RollingUpdate with maxSurge and maxUnavailable, Recreate), keeps revision history, and
//! reports status from the ReplicaSets and pods it observes.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

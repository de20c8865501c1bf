//! The DaemonSet controller, as kube-controller-manager's: one pod on every node that matches
//! the template's node selector, affinity and tolerations.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

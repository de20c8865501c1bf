//! The StatefulSet controller, as kube-controller-manager's: pods with stable ordinal names,
//! claims from `volumeClaimTemplates`, ordered or parallel management, rolling updates with a
//! partition, revisions as ControllerRevisions.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

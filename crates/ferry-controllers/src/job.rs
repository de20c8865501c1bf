//! The Job controller, as kube-controller-manager's: pods run to completion (NonIndexed and
//! Indexed), back-off limits, pod failure and success policies, suspend, deadlines, and
//! clean-up after `ttlSecondsAfterFinished`.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

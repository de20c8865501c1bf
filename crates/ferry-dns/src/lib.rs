//! Ferry's cluster DNS: the names Kubernetes' DNS specification gives Services and pods,
//! served with hickory-server over UDP and TCP from what the API holds.
//!
//! The server is an API client like any other ([`run`] needs a [`kube::Client`]): kube-rs
//! reflectors keep Services, EndpointSlices and Pods, and every change rebuilds the
//! [`zone::Zone`], which the [`server`] swaps in whole. It listens on the node bridge's
//! address (`<gateway>:<dns_port>`), the endpoint of the `kube-dns` Service that [`run`]
//! creates and keeps in `kube-system` (ClusterIP [`ClusterNetwork::dns_service_ip`]); the
//! node's Service proxy forwards the Service IP there. Names outside the cluster domain are
//! refused at once: the machine has no upstream resolver to forward them to.

#![warn(clippy::string_slice)]

pub mod client;
pub mod server;
pub mod zone;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ferry_api::network::ClusterNetwork;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use thiserror::Error;

pub use hickory_server::proto;
pub use server::{DnsListener, ZoneHandle};
pub use zone::{Answer, Zone, ZoneConfig};

/// Name of the cluster DNS Service (in `kube-system`), as every distribution calls it.
pub const SERVICE_NAME: &str = "kube-dns";

/// Namespace of the cluster DNS Service.
pub const SERVICE_NAMESPACE: &str = "kube-system";

/// Field manager of what the DNS component writes.
pub const FIELD_MANAGER: &str = "ferry-dns";

/// Why the DNS server could not start.
#[derive(Debug, Error)]
pub enum DnsError {
    /// The address could not be bound.
    #[error("cannot serve DNS on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Settings of the cluster DNS.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Where to serve (UDP and TCP); `<gateway>:<dns_port>` for a node.
    pub listen: SocketAddr,
    /// The cluster network plan (domain, ranges, the DNS Service IP).
    pub network: ClusterNetwork,
    /// Create and keep the `kube-dns` Service and its endpoints (pointing at `listen`).
    pub manage_service: bool,
}

impl DnsConfig {
    /// The node's DNS: `<gateway>:<dns_port>`, keeping the `kube-dns` Service.
    pub fn for_node(network: &ClusterNetwork) -> Self {
        Self {
            listen: SocketAddr::from((network.gateway(), network.dns_port)),
            network: network.clone(),
            manage_service: true,
        }
    }
}

/// A running cluster DNS.
pub struct RunningDns {
    /// The address served (UDP and TCP).
    pub addr: SocketAddr,
    /// The zone served (for tests and the benchmark).
    pub zone: ZoneHandle,
    listener: DnsListener,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningDns {
    /// Stops serving and watching.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        self.listener.shutdown().await;
    }
}

/// Binds the listeners, then keeps the zone (and the `kube-dns` Service) in line with the API
/// in the background.
pub async fn start(client: kube::Client, config: DnsConfig) -> Result<RunningDns, DnsError> {
    let zone_config = ZoneConfig::from_network(&config.network);
    let zone = ZoneHandle::new(Zone::empty(zone_config.clone()));
    let listener = DnsListener::bind(config.listen, zone.clone())
        .await
        .map_err(|source| DnsError::Listen {
            addr: config.listen,
            source,
        })?;
    let addr = listener.addr;
    tracing::info!(%addr, domain = %config.network.cluster_domain, "cluster DNS listening");
    let mut tasks = vec![tokio::spawn(follow(
        client.clone(),
        zone_config,
        zone.clone(),
    ))];
    if config.manage_service {
        tasks.push(tokio::spawn(keep_service(client, config.network, addr)));
    }
    Ok(RunningDns {
        addr,
        zone,
        listener,
        tasks,
    })
}

/// Runs the DNS until `shutdown` resolves (`ferry dns`).
pub async fn run(
    client: kube::Client,
    config: DnsConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), DnsError> {
    let dns = start(client, config).await?;
    shutdown.await;
    dns.shutdown().await;
    Ok(())
}

fn serial() -> u32 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

/// Watches Services, EndpointSlices and Pods and rebuilds the zone on every change.
async fn follow(client: kube::Client, config: ZoneConfig, zone: ZoneHandle) {
    let (services, w1) = reflector::store::<Service>();
    let (slices, w2) = reflector::store::<EndpointSlice>();
    let (pods, w3) = reflector::store::<Pod>();
    let cfg = watcher::Config::default;
    let s1 = watcher(Api::<Service>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(w1)
        .map(|r| r.map(|_| ()).map_err(|e| ("services", e)))
        .boxed();
    // EndpointSlices may not be served (an API without discovery.k8s.io): the watcher backs
    // off and retries, and headless Services fall back to their selected pods meanwhile.
    let s2 = watcher(Api::<EndpointSlice>::all(client.clone()), cfg())
        .default_backoff()
        .reflect(w2)
        .map(|r| r.map(|_| ()).map_err(|e| ("endpointslices", e)))
        .boxed();
    let s3 = watcher(Api::<Pod>::all(client), cfg())
        .default_backoff()
        .reflect(w3)
        .map(|r| r.map(|_| ()).map_err(|e| ("pods", e)))
        .boxed();
    let mut events = futures::stream::select_all([s1, s2, s3]);
    while let Some(first) = events.next().await {
        let mut batch = vec![first];
        // Take every event already waiting, then rebuild once.
        while let Some(Some(more)) = events.next().now_or_never() {
            batch.push(more);
        }
        for r in batch {
            if let Err((what, e)) = r {
                tracing::debug!(what, error = %e, "cluster DNS watch error; retrying");
            }
        }
        zone.replace(build(&config, &services, &slices, &pods));
    }
}

fn build(
    config: &ZoneConfig,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    pods: &Store<Pod>,
) -> Zone {
    Zone::build(
        config.clone(),
        &own(services.state()),
        &own(slices.state()),
        &own(pods.state()),
        serial(),
    )
}

/// The `kube-dns` Service: the cluster DNS IP, ports 53/UDP `dns` and 53/TCP `dns-tcp`, no
/// selector (its endpoints are set by [`keep_service`]).
pub fn kube_dns_service(network: &ClusterNetwork) -> serde_json::Value {
    let ip = network.dns_service_ip().to_string();
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": SERVICE_NAME,
            "namespace": SERVICE_NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": network.dns_port},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": network.dns_port},
            ],
        },
    })
}

/// The `kube-dns` Endpoints and EndpointSlice: the DNS server's address.
pub fn kube_dns_endpoints(addr: SocketAddr) -> (serde_json::Value, serde_json::Value) {
    let ip = addr.ip().to_string();
    let port = addr.port();
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": SERVICE_NAME, "namespace": SERVICE_NAMESPACE, "labels": {"k8s-app": "kube-dns"}},
        "subsets": [{
            "addresses": [{"ip": ip}],
            "ports": [
                {"name": "dns", "port": port, "protocol": "UDP"},
                {"name": "dns-tcp", "port": port, "protocol": "TCP"},
            ],
        }],
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{SERVICE_NAME}-ferry"),
            "namespace": SERVICE_NAMESPACE,
            "labels": {
                zone::SERVICE_NAME_LABEL: SERVICE_NAME,
                "endpointslice.kubernetes.io/managed-by": FIELD_MANAGER,
                "k8s-app": "kube-dns",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns", "port": port, "protocol": "UDP"},
            {"name": "dns-tcp", "port": port, "protocol": "TCP"},
        ],
    });
    (endpoints, slice)
}

/// Applies the `kube-dns` Service and its endpoints once. Endpoints and EndpointSlices the API
/// does not serve (404) are skipped: the Service alone is then all there is.
pub async fn ensure_service(
    client: &kube::Client,
    network: &ClusterNetwork,
    addr: SocketAddr,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let services: Api<Service> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    services
        .patch(SERVICE_NAME, &pp, &Patch::Apply(kube_dns_service(network)))
        .await?;
    let (endpoints, slice) = kube_dns_endpoints(addr);
    let ep_api: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let slice_api: Api<EndpointSlice> = Api::namespaced(client.clone(), SERVICE_NAMESPACE);
    let name = format!("{SERVICE_NAME}-ferry");
    for r in [
        ep_api
            .patch(SERVICE_NAME, &pp, &Patch::Apply(endpoints))
            .await
            .map(|_| ()),
        slice_api
            .patch(&name, &pp, &Patch::Apply(slice))
            .await
            .map(|_| ()),
    ] {
        match r {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                tracing::debug!(
                    "the API does not serve Endpoints/EndpointSlices yet; kube-dns has its Service only"
                );
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Keeps the `kube-dns` Service and endpoints: applies them now and every 30 s (retrying
/// sooner after a failure), so a deleted or changed Service comes back.
async fn keep_service(client: kube::Client, network: ClusterNetwork, addr: SocketAddr) {
    let mut delay = Duration::from_millis(200);
    loop {
        match ensure_service(&client, &network, addr).await {
            Ok(()) => delay = Duration::from_secs(30),
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the kube-dns Service; retrying");
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::time::sleep(delay).await;
    }
}

fn own<T: Clone>(v: Vec<std::sync::Arc<T>>) -> Vec<T> {
    v.into_iter().map(|a| (*a).clone()).collect()
}

//! What pods need to reach the cluster from inside: the API over TLS on the node gateway
//! (`<gateway>:6443`, certificate from the cluster CA in `<data dir>/pki`), the cluster DNS
//! on `<gateway>:<dns_port>`, and the `kubernetes` Service in front of the TLS endpoint (kept by the controllers'
//! `kubernetes_service` reconciler, given the listener's address).

use std::net::IpAddr;

use ferry_api::network::ClusterNetwork;

/// Port of the API's TLS listener on the gateway (kube-apiserver's secure port).
pub const DEFAULT_TLS_PORT: u16 = 6443;

/// The names the serving certificate must hold for `network`.
pub fn serving_names(network: &ClusterNetwork) -> ferry_apiserver::tls::ServingNames {
    ferry_apiserver::tls::ServingNames::for_cluster(
        &network.cluster_domain,
        IpAddr::V4(network.kubernetes_service_ip()),
        &[IpAddr::V4(network.gateway())],
    )
}

/// True for a bind error that means "this address is not on the machine (yet)": the node
/// bridge does not exist, so in-cluster listeners are skipped rather than failing `ferry up`.
pub fn address_missing(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::EADDRNOTAVAIL)
}

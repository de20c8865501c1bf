//! What pods need to reach the cluster from inside: the API over TLS on the node gateway
//! (`<gateway>:6443`, certificate from the cluster CA in `<data dir>/pki`), the cluster DNS
//! on `<gateway>:<dns_port>`, and the `kubernetes` Service in front of the TLS endpoint.

use std::net::{IpAddr, SocketAddr};

use ferry_api::network::ClusterNetwork;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

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

/// Applies the `kubernetes` Service (ClusterIP `kubernetes_service_ip()`, port 443 `https`)
/// and its Endpoints (`endpoint`: the API's TLS listener) in `default`.
///
/// Interim: the Services part of the pod-sandbox work owns the `kubernetes` Service
/// reconciler (it takes the endpoint as its argument); this function stands in for it until
/// that lands, and is then replaced by a call to it.
pub async fn publish_kubernetes_service_interim(
    client: &kube::Client,
    network: &ClusterNetwork,
    endpoint: SocketAddr,
) -> Result<(), kube::Error> {
    let pp = PatchParams::apply("ferry-incluster").force();
    let ip = network.kubernetes_service_ip().to_string();
    let service = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"component": "apiserver", "provider": "kubernetes"},
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "clusterIPs": [ip],
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": endpoint.port()}],
        },
    });
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .patch("kubernetes", &pp, &Patch::Apply(service))
        .await?;
    let endpoints = json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{
            "addresses": [{"ip": endpoint.ip().to_string()}],
            "ports": [{"name": "https", "port": endpoint.port(), "protocol": "TCP"}],
        }],
    });
    let api: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(client.clone(), "default");
    match api.patch("kubernetes", &pp, &Patch::Apply(endpoints)).await {
        Ok(_) => Ok(()),
        // Endpoints are not served before the Services work lands.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

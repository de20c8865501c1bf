//! The `kubernetes` Service of the `default` namespace, as kube-apiserver keeps it: cluster
//! IP `kubernetes_service_ip()` (the API server's allocator gives the range's first address
//! to this name only), port 443 named `https`, no selector, and its Endpoints and
//! EndpointSlice pointing at the API server's in-cluster (TLS) address.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointSlice};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Error;
use crate::endpoints::{SERVICE_NAME_LABEL, write};
use crate::endpointslice::MANAGED_BY_LABEL;

/// The Service's name and namespace.
pub const NAME: &str = "kubernetes";
/// Its namespace.
pub const NAMESPACE: &str = "default";
/// Who keeps its EndpointSlice.
pub const MANAGED_BY: &str = "ferry-apiserver";

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("component".to_string(), "apiserver".to_string()),
        ("provider".to_string(), "kubernetes".to_string()),
    ])
}

/// Makes the Service, its Endpoints and EndpointSlice match `endpoint` once.
pub async fn reconcile(client: &kube::Client, endpoint: SocketAddr) -> Result<(), Error> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let port = i32::from(endpoint.port());
    let spec_port = ServicePort {
        name: Some("https".into()),
        port: 443,
        protocol: Some("TCP".into()),
        target_port: Some(IntOrString::Int(port)),
        ..Default::default()
    };
    match services.get_opt(NAME).await? {
        None => {
            let svc = Service {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    labels: Some(labels()),
                    ..Default::default()
                },
                spec: Some(ServiceSpec {
                    type_: Some("ClusterIP".into()),
                    ports: Some(vec![spec_port]),
                    session_affinity: Some("None".into()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            match services.create(&PostParams::default(), &svc).await {
                Ok(_) => tracing::info!("created the kubernetes Service"),
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Some(mut svc) => {
            let spec = svc.spec.get_or_insert_with(Default::default);
            if spec.ports.as_deref() != Some(std::slice::from_ref(&spec_port)) {
                spec.ports = Some(vec![spec_port]);
                services.replace(NAME, &PostParams::default(), &svc).await?;
            }
        }
    }
    let ip = endpoint.ip().to_string();
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), NAMESPACE);
    let mut ep_labels = labels();
    ep_labels.insert(
        "endpointslice.kubernetes.io/skip-mirror".into(),
        "true".into(),
    );
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            labels: Some(ep_labels),
            ..Default::default()
        },
        subsets: Some(vec![EndpointSubset {
            addresses: Some(vec![EndpointAddress {
                ip: ip.clone(),
                ..Default::default()
            }]),
            ports: Some(vec![EndpointPort {
                name: Some("https".into()),
                port,
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }]),
    };
    write(&endpoints, NAME, desired, |a, b| a.subsets == b.subsets).await?;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), NAMESPACE);
    let mut slice_labels = BTreeMap::new();
    slice_labels.insert(SERVICE_NAME_LABEL.to_string(), NAME.to_string());
    slice_labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    let desired = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(NAME.into()),
            labels: Some(slice_labels),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![discovery::Endpoint {
            addresses: vec![ip],
            conditions: Some(discovery::EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Default::default()
        }]),
        ports: Some(vec![discovery::EndpointPort {
            name: Some("https".into()),
            port: Some(port),
            protocol: Some("TCP".into()),
            app_protocol: None,
        }]),
    };
    write(&slices, NAME, desired, |a, b| {
        a.endpoints == b.endpoints && a.ports == b.ports
    })
    .await?;
    Ok(())
}

/// Keeps the `kubernetes` Service pointing at `endpoint` (checked every few seconds, so a
/// deleted or changed object comes back); nothing when `endpoint` is `None`.
pub async fn run(client: kube::Client, endpoint: Option<SocketAddr>) {
    let Some(endpoint) = endpoint else {
        return;
    };
    let mut backoff = crate::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        let delay = match reconcile(&client, endpoint).await {
            Ok(()) => {
                backoff.reset();
                Duration::from_secs(10)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot keep the kubernetes Service");
                backoff.next_delay()
            }
        };
        tokio::time::sleep(delay).await;
    }
}

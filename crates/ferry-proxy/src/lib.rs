//! Ferry's Service proxy: the node's Service rules, in the style of kube-proxy's nftables
//! mode. A client of the API server like any other: it watches Services and EndpointSlices
//! and, after every change, writes one nftables table (family `ip`, named by
//! `ClusterNetwork::nft_table`) whole, in one `nft -f -` transaction (see [`rules`] for its
//! layout). It touches no other table. [`run`] removes the table when it stops;
//! [`TableGuard`] does on drop.

pub mod rules;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::io::AsyncWriteExt;

use ferry_api::network::ClusterNetwork;
pub use rules::{Protocol, ServicePort};

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why the proxy could not program the node.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `nft` failed (or is missing).
    #[error("nft: {0}")]
    Nft(String),
}

/// Settings of the proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The cluster network plan (Service range, table name).
    pub network: ClusterNetwork,
    /// How long changes are gathered before one sync.
    pub batch: Duration,
}

impl ProxyConfig {
    /// A proxy for `network`, syncing 10 ms after a change.
    pub fn new(network: ClusterNetwork) -> Self {
        Self {
            network,
            batch: Duration::from_millis(10),
        }
    }
}

/// Runs `nft -f -` with `script`.
pub async fn nft(script: &str) -> Result<(), ProxyError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| ProxyError::Nft(format!("cannot run nft (install nftables): {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| ProxyError::Nft(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| ProxyError::Nft(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ProxyError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Removes the proxy's table (if it exists).
pub fn delete_table(net: &ClusterNetwork) {
    let t = &net.nft_table;
    let script = format!("table ip {t} {{}}\ndelete table ip {t}\n");
    let child = std::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if let Ok(mut child) = child {
        if let Some(mut stdin) = child.stdin.take() {
            use std::io::Write;
            let _ = stdin.write_all(script.as_bytes());
        }
        let _ = child.wait();
    }
}

/// Removes the proxy's table when dropped (tests, and `ferry up` ending).
pub struct TableGuard(pub ClusterNetwork);

impl Drop for TableGuard {
    fn drop(&mut self) {
        delete_table(&self.0);
    }
}

/// The Service ports of the cluster and their ready endpoints.
pub fn service_ports(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>]) -> Vec<ServicePort> {
    // (namespace, service) → slices.
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for s in slices {
        if s.address_type != "IPv4" {
            continue;
        }
        if let Some(name) = s.labels().get(SERVICE_NAME_LABEL) {
            by_service
                .entry((s.namespace().unwrap_or_default(), name.clone()))
                .or_default()
                .push(s);
        }
    }
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip: Option<Ipv4Addr> = spec.cluster_ip.as_deref().and_then(|s| s.parse().ok());
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let slices = by_service
            .get(&(ns.clone(), name.clone()))
            .map(Vec::as_slice)
            .unwrap_or_default();
        for p in spec.ports.iter().flatten() {
            let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                continue;
            };
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut endpoints = BTreeSet::new();
            for slice in slices {
                let Some(sp) = slice.ports.iter().flatten().find(|sp| {
                    sp.name.clone().unwrap_or_default() == port_name
                        && Protocol::parse(sp.protocol.as_deref()) == Some(protocol)
                }) else {
                    continue;
                };
                let Some(target) = sp.port.and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                for e in slice.endpoints.iter().flatten() {
                    let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    if !ready {
                        continue;
                    }
                    for a in &e.addresses {
                        if let Ok(ip) = a.parse::<Ipv4Addr>() {
                            endpoints.insert((ip, target));
                        }
                    }
                }
            }
            let node_port = p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0);
            if cluster_ip.is_none() && node_port.is_none() {
                continue;
            }
            out.push(ServicePort {
                id: format!("{ns}/{name}:{port_name}"),
                cluster_ip,
                protocol,
                port,
                node_port,
                endpoints: endpoints.into_iter().collect(),
            });
        }
    }
    out.sort();
    out
}

/// Whether NodePorts answer on 127.0.0.1: where `route_localnet` lets a loopback-sourced
/// packet be routed to the pod bridge, or where the node has no pod bridge (every endpoint
/// is then a host process, reached over loopback).
pub fn loopback_node_ports(net: &ClusterNetwork) -> bool {
    rules::route_localnet()
        || !std::path::Path::new("/sys/class/net")
            .join(&net.bridge)
            .exists()
}

/// Writes the rules for what the caches hold, unless they are what was last written.
async fn sync(
    config: &ProxyConfig,
    services: &Store<Service>,
    slices: &Store<EndpointSlice>,
    last: &mut Option<String>,
) -> Result<(), ProxyError> {
    let ports = service_ports(&services.state(), &slices.state());
    let script = rules::render(
        &config.network,
        &ports,
        loopback_node_ports(&config.network),
    );
    if last.as_deref() == Some(script.as_str()) {
        return Ok(());
    }
    let started = std::time::Instant::now();
    nft(&script).await?;
    tracing::debug!(
        table = %config.network.nft_table,
        ports = ports.len(),
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "Service rules written"
    );
    *last = Some(script);
    Ok(())
}

/// Whether the table exists (someone may have deleted it: then it is written again).
async fn table_exists(net: &ClusterNetwork) -> bool {
    tokio::process::Command::new("nft")
        .args(["list", "table", "ip", &net.nft_table])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// Runs the proxy until `shutdown` completes, then removes its table. Fails only when `nft`
/// cannot write the table at all (no nftables, no privilege).
pub async fn run(
    client: kube::Client,
    config: ProxyConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProxyError> {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let watch_services = {
        let changed = changed.clone();
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(services_writer)
        .for_each(move |_| {
            changed.notify_one();
            futures::future::ready(())
        })
    };
    let watch_slices = {
        let changed = changed.clone();
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(slices_writer)
        .for_each(move |_| {
            changed.notify_one();
            futures::future::ready(())
        })
    };
    let net = config.network.clone();
    let _guard = TableGuard(net.clone());
    let work = async {
        // Before the caches fill: the range is rejected, nothing routed out.
        nft(&rules::render(&net, &[], loopback_node_ports(&net))).await?;
        let _ = futures::join!(services.wait_until_ready(), slices.wait_until_ready());
        let mut last = None;
        let mut backoff = Duration::from_millis(100);
        loop {
            match sync(&config, &services, &slices, &mut last).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the Service rules; retrying");
                    last = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            tokio::select! {
                () = changed.notified() => tokio::time::sleep(config.batch).await,
                () = tokio::time::sleep(Duration::from_secs(10)) => {
                    if !table_exists(&net).await {
                        last = None;
                    }
                }
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), ProxyError>(())
    };
    tokio::select! {
        () = shutdown => Ok(()),
        () = watch_services => Ok(()),
        () = watch_slices => Ok(()),
        r = work => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_endpoints_of_matching_ports_only() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {"clusterIP": "10.97.1.5", "type": "NodePort",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30100},
                          {"name": "dns", "port": 53, "protocol": "UDP"}]}
        }))
        .unwrap();
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.245.1.2"], "conditions": {"ready": true}},
                {"addresses": ["10.245.1.3"], "conditions": {"ready": false}},
                {"addresses": ["10.245.1.4"]}
            ]
        }))
        .unwrap();
        let ports = service_ports(&[Arc::new(svc)], &[Arc::new(slice)]);
        assert_eq!(ports.len(), 2);
        let http = ports.iter().find(|p| p.port == 80).unwrap();
        assert_eq!(http.node_port, Some(30100));
        assert_eq!(
            http.endpoints,
            vec![
                (Ipv4Addr::new(10, 245, 1, 2), 8080),
                (Ipv4Addr::new(10, 245, 1, 4), 8080)
            ]
        );
        let dns = ports.iter().find(|p| p.port == 53).unwrap();
        assert!(dns.endpoints.is_empty());
    }
}

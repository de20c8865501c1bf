//! The endpointslice controller, as kube-controller-manager's: for every Service with a
//! selector, `discovery.k8s.io/v1` EndpointSlices (one per distinct set of resolved ports)
//! listing the pods its selector chooses with their `ready`/`serving`/`terminating`
//! conditions, `hostname` (pods a headless Service's name is the subdomain of), node and
//! pod reference; labelled `kubernetes.io/service-name` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`, owned by the
//! Service. Slices it no longer needs are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{Api, DeleteParams, ObjectMeta};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::Error;
use crate::endpoints::{
    Backend, Context, ResolvedPort, SERVICE_NAME_LABEL, backends, has_selector, owner_of,
    pod_reflector, services_of_pod, write,
};

/// The label saying who keeps a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// A short stable hash of a port set, for slice names.
fn port_hash(ports: &[ResolvedPort]) -> String {
    // FNV-1a: stable across runs and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in ports {
        for b in format!("{}/{}/{};", p.name, p.port, p.protocol).bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{:08x}", h as u32)
}

/// The slice name for `service` and a port set (at most 63 bytes).
fn slice_name(service: &str, ports: &[ResolvedPort]) -> String {
    let mut base: String = service.chars().take(53).collect();
    base.push('-');
    base + &port_hash(ports)
}

fn endpoint(b: &Backend) -> Endpoint {
    Endpoint {
        addresses: vec![b.ip.clone()],
        conditions: Some(EndpointConditions {
            ready: Some(b.ready),
            serving: Some(b.serving),
            terminating: Some(b.terminating),
        }),
        hostname: b.hostname.clone(),
        node_name: b.node_name.clone(),
        target_ref: Some(b.target.clone()),
        ..Default::default()
    }
}

/// The slices of `service` over `backends`: one per distinct resolved port set (none when
/// the Service has no backends: then one empty slice with the Service's ports unresolved,
/// as Kubernetes keeps).
pub fn slices(service: &Service, backends: &[Backend]) -> Vec<EndpointSlice> {
    let name = service.name_any();
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<Endpoint>> = BTreeMap::new();
    // A Service without ports (a headless one giving pods DNS names, as JobSet's) publishes
    // its backends with no ports, as Kubernetes does; otherwise a backend needs a port.
    let portless = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .is_none_or(|p| p.is_empty());
    for b in backends.iter().filter(|b| portless || !b.ports.is_empty()) {
        let mut ports = b.ports.clone();
        ports.sort();
        groups.entry(ports).or_default().push(endpoint(b));
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut labels: BTreeMap<String, String> = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    groups
        .into_iter()
        .map(|(ports, endpoints)| EndpointSlice {
            metadata: ObjectMeta {
                name: Some(slice_name(&name, &ports)),
                namespace: service.namespace(),
                labels: Some(labels.clone()),
                owner_references: Some(owner_of(service)),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(endpoints),
            ports: Some(
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: Some(p.name),
                        port: Some(p.port),
                        protocol: Some(p.protocol),
                        app_protocol: p.app_protocol,
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// Runs the endpointslice controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let (pods, pod_events) = pod_reflector(&client);
    let ours = watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    // The slices as published: the Services that still list a pod, and each Service's slices.
    let (published, writer) = reflector::store::<EndpointSlice>();
    let slice_events = watcher(slices, ours)
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let ctx = Arc::new(SliceContext {
        endpoints: Context { client, pods },
        published: published.clone(),
    });
    controller
        .owns_stream(slice_events)
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.namespace();
            let name = pod.name_any();
            let listing = published
                .state()
                .into_iter()
                .filter(|s| s.namespace() == ns && lists_pod(s, &name))
                .filter_map(|s| s.labels().get(SERVICE_NAME_LABEL).cloned())
                .collect::<BTreeSet<_>>();
            services_of_pod(&store, listing, &pod)
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "endpointslice controller");
            }
            futures::future::ready(())
        })
        .await;
}

/// The endpoints controllers' context, and the slices as published.
struct SliceContext {
    endpoints: Context,
    published: Store<EndpointSlice>,
}

/// Whether `slice` lists the pod `pod`.
fn lists_pod(slice: &EndpointSlice, pod: &str) -> bool {
    slice
        .endpoints
        .iter()
        .flatten()
        .any(|e| e.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(pod))
}

fn error_policy(service: Arc<Service>, error: &Error, _: Arc<SliceContext>) -> Action {
    tracing::warn!(service = %service.name_any(), %error, "cannot update the Service's EndpointSlices");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(service: Arc<Service>, ctx: Arc<SliceContext>) -> Result<Action, Error> {
    if !has_selector(&service) || service.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let pods = ctx.endpoints.selected_pods(&service).await?;
    let desired = slices(&service, &backends(&service, &pods));
    let api: Api<EndpointSlice> = Api::namespaced(ctx.endpoints.client.clone(), &ns);
    let keep: BTreeSet<String> = desired.iter().map(ResourceExt::name_any).collect();
    for slice in desired {
        let slice_name = slice.name_any();
        write(&api, &slice_name, slice, |old, new| {
            old.endpoints.as_deref().unwrap_or_default()
                == new.endpoints.as_deref().unwrap_or_default()
                && old.ports.as_deref().unwrap_or_default()
                    == new.ports.as_deref().unwrap_or_default()
                && old.metadata.labels == new.metadata.labels
        })
        .await?;
    }
    // The Service's other slices, as cached: one the cache does not show yet triggers this
    // reconcile again when it arrives.
    let _ = ctx.published.wait_until_ready().await;
    let existing: Vec<String> = ctx
        .published
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns.as_str())
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
        })
        .map(|s| s.name_any())
        .collect();
    for old_name in existing {
        if !keep.contains(&old_name) {
            match api.delete(&old_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, port: i32, ready: bool, host: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}")},
            "spec": {"hostname": host, "subdomain": host.map(|_| "web"), "nodeName": "n",
                "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn slices_resolve_named_ports_group_by_port_and_carry_hostnames() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "ns", "uid": "s"},
            "spec": {"clusterIP": "None", "selector": {"app": "web"},
                "ports": [{"name": "h", "port": 80, "targetPort": "http"}]}
        }))
        .unwrap();
        let pods = [
            pod("a", "10.0.0.1", 8080, true, Some("a")),
            pod("b", "10.0.0.2", 8080, false, None),
            pod("c", "10.0.0.3", 9090, true, None),
        ];
        let b = backends(&svc, &pods);
        let s = slices(&svc, &b);
        assert_eq!(s.len(), 2, "two port sets: {s:?}");
        let first = s
            .iter()
            .find(|s| s.ports.as_ref().unwrap()[0].port == Some(8080))
            .unwrap();
        let eps = first.endpoints.as_ref().unwrap();
        assert_eq!(eps.len(), 2);
        assert_eq!(eps[0].hostname.as_deref(), Some("a"));
        assert_eq!(eps[1].conditions.as_ref().unwrap().ready, Some(false));
        assert_eq!(first.labels()[SERVICE_NAME_LABEL], "web");
        assert_eq!(first.labels()[MANAGED_BY_LABEL], MANAGED_BY);
        assert_eq!(
            first.metadata.owner_references.as_ref().unwrap()[0].name,
            "web"
        );
        let subsets = crate::endpoints::subsets(&b);
        assert_eq!(subsets.len(), 2);
        assert!(subsets.iter().any(|s| s.not_ready_addresses.is_some()));
    }
}

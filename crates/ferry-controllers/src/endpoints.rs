//! The endpoints controller, as kube-controller-manager's: for every Service with a
//! selector, an `Endpoints` object of the same name listing the pods the selector chooses
//! (ready ones under `addresses`, the others under `notReadyAddresses`), with named target
//! ports resolved from each pod's container ports. Services without a selector are left
//! alone: their Endpoints are the user's.
//!
//! The pod side ([`Backend`], [`backends`]) is shared with [`crate::endpointslice`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::Error;

/// The label naming the Service of an Endpoints or EndpointSlice object.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of a Service resolved for one pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResolvedPort {
    /// The Service port's name.
    pub name: String,
    /// The pod's port number.
    pub port: i32,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The Service port's appProtocol.
    pub app_protocol: Option<String>,
}

/// A pod behind a Service.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The pod's IP.
    pub ip: String,
    /// Ready: condition `Ready` True and not terminating (or the Service publishes
    /// not-ready addresses).
    pub ready: bool,
    /// Its Ready condition is True (regardless of termination).
    pub serving: bool,
    /// Being deleted.
    pub terminating: bool,
    /// `spec.hostname`, for a headless Service the pod's `spec.subdomain` names.
    pub hostname: Option<String>,
    /// The pod's node.
    pub node_name: Option<String>,
    /// The pod.
    pub target: ObjectReference,
    /// The Service's ports as this pod serves them (ports whose named target the pod lacks
    /// are left out).
    pub ports: Vec<ResolvedPort>,
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The port `target` (a number or a container port's name) of `pod`.
fn resolve_port(
    pod: &Pod,
    target: &Option<k8s_openapi::apimachinery::pkg::util::intstr::IntOrString>,
    port: i32,
    protocol: &str,
) -> Option<i32> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match target {
        None => Some(port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            spec.containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

/// The backends of `service` among `pods` (already chosen by its selector).
pub fn backends(service: &Service, pods: &[Pod]) -> Vec<Backend> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let mut out = Vec::new();
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let Some(ip) = status.pod_ip.clone().filter(|ip| !ip.is_empty()) else {
            continue;
        };
        if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready(pod);
        let ready = publish_not_ready || (serving && !terminating);
        let pod_spec = pod.spec.as_ref();
        let hostname = pod_spec
            .filter(|s| s.subdomain.as_deref() == Some(service.name_any().as_str()))
            .and_then(|s| s.hostname.clone())
            .filter(|h| !h.is_empty());
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let port = resolve_port(pod, &p.target_port, p.port, &protocol)?;
                Some(ResolvedPort {
                    name: p.name.clone().unwrap_or_default(),
                    port,
                    protocol,
                    app_protocol: p.app_protocol.clone(),
                })
            })
            .collect();
        out.push(Backend {
            ip,
            ready,
            serving,
            terminating,
            hostname,
            node_name: pod_spec.and_then(|s| s.node_name.clone()),
            target: ObjectReference {
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                namespace: pod.namespace(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            },
            ports,
        });
    }
    out.sort_by(|a, b| a.ip.cmp(&b.ip).then(a.target.name.cmp(&b.target.name)));
    out
}

/// The pods `service`'s selector chooses among the cached `pods` (none for a Service
/// without selector).
pub fn selected_pods(pods: &Store<Pod>, service: &Service) -> Vec<Pod> {
    let ns = service.namespace();
    pods.state()
        .into_iter()
        .filter(|p| p.namespace() == ns && chooses(service, p.labels()))
        .map(|p| (*p).clone())
        .collect()
}

/// Whether `service`'s selector (a non-empty one) chooses a pod labelled `labels`.
fn chooses(service: &Service, labels: &BTreeMap<String, String>) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// What the endpoints controllers read: the API, and the pods as their reflector has them.
/// A reconcile triggered by a pod's event sees at least that event (the reflector applies
/// an event to the cache before it triggers), so no pod is listed from the API.
pub(crate) struct Context {
    pub(crate) client: kube::Client,
    pub(crate) pods: Store<Pod>,
}

impl Context {
    /// The pods of `service`, once the pod cache holds its first listing (an empty cache
    /// at start-up would empty every Service's endpoints).
    pub(crate) async fn selected_pods(&self, service: &Service) -> Result<Vec<Pod>, Error> {
        self.pods
            .wait_until_ready()
            .await
            .map_err(|_| Error::CacheDropped("pods"))?;
        Ok(selected_pods(&self.pods, service))
    }
}

/// The pods of the cluster as a reflector (the cache) and its stream of touched pods (the
/// triggers).
pub(crate) fn pod_reflector(
    client: &kube::Client,
) -> (
    Store<Pod>,
    impl futures::Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    let (pods, writer) = reflector::store::<Pod>();
    let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (pods, stream)
}

/// True for a Service the controllers keep endpoints of.
pub fn has_selector(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty())
        && service.spec.as_ref().and_then(|s| s.type_.as_deref()) != Some("ExternalName")
}

/// The owner reference an object of `service` carries.
pub fn owner_of(
    service: &Service,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference> {
    service.controller_owner_ref(&()).into_iter().collect()
}

/// The subsets of an Endpoints object: backends grouped by their resolved port set.
pub fn subsets(backends: &[Backend]) -> Vec<EndpointSubset> {
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for b in backends.iter().filter(|b| !b.ports.is_empty()) {
        let mut ports = b.ports.clone();
        ports.sort();
        let address = EndpointAddress {
            ip: b.ip.clone(),
            hostname: b.hostname.clone(),
            node_name: b.node_name.clone(),
            target_ref: Some(b.target.clone()),
        };
        let entry = groups.entry(ports).or_default();
        if b.ready {
            entry.0.push(address);
        } else if !b.terminating {
            entry.1.push(address);
        }
    }
    groups
        .into_iter()
        .filter(|(_, (r, n))| !r.is_empty() || !n.is_empty())
        .map(|(ports, (ready, not_ready))| EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: Some(
                ports
                    .into_iter()
                    .map(|p| EndpointPort {
                        name: (!p.name.is_empty()).then_some(p.name),
                        port: p.port,
                        protocol: Some(p.protocol),
                        app_protocol: p.app_protocol,
                    })
                    .collect(),
            ),
        })
        .collect()
}

/// The Services a pod's event concerns, in its namespace: those whose selector chooses it
/// now, and `published`, the Services whose published endpoints still name it (a pod
/// relabelled out of a Service, or gone, leaves them). Only these are reconciled: a pod's
/// event costs its own Services, not every Service of the namespace.
pub(crate) fn services_of_pod(
    services: &Store<Service>,
    published: impl IntoIterator<Item = String>,
    pod: &Pod,
) -> Vec<ObjectRef<Service>> {
    let ns = pod.namespace();
    let labels = pod.labels();
    let mut out: Vec<ObjectRef<Service>> = services
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns && has_selector(s) && chooses(s, labels))
        .map(|s| ObjectRef::from_obj(&*s))
        .collect();
    for name in published {
        let r = ObjectRef::<Service>::new(&name).within(ns.as_deref().unwrap_or_default());
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

/// Whether `endpoints` lists the pod `pod` (ready or not).
fn lists_pod(endpoints: &Endpoints, pod: &str) -> bool {
    endpoints.subsets.iter().flatten().any(|s| {
        s.addresses
            .iter()
            .chain(s.not_ready_addresses.iter())
            .flatten()
            .any(|a| a.target_ref.as_ref().and_then(|t| t.name.as_deref()) == Some(pod))
    })
}

/// Runs the endpoints controller until its future is dropped.
pub async fn run(client: kube::Client) {
    let services: Api<Service> = Api::all(client.clone());
    let endpoints: Api<Endpoints> = Api::all(client.clone());
    let (pods, pod_events) = pod_reflector(&client);
    // The Endpoints as published, to find the Services that still list a pod.
    let (published, writer) = reflector::store::<Endpoints>();
    let endpoint_events = watcher(endpoints, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let controller = Controller::new(services, watcher::Config::default());
    let store = controller.store();
    let ctx = Arc::new(Context { client, pods });
    controller
        .owns_stream(endpoint_events)
        .watches_stream(pod_events, move |pod: Pod| {
            let ns = pod.namespace();
            let name = pod.name_any();
            let listing = published
                .state()
                .into_iter()
                .filter(|e| e.namespace() == ns && lists_pod(e, &name))
                .map(|e| e.name_any())
                .collect::<Vec<_>>();
            services_of_pod(&store, listing, &pod)
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                tracing::debug!(error = %e, "endpoints controller");
            }
            futures::future::ready(())
        })
        .await;
}

fn error_policy(service: Arc<Service>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(service = %service.name_any(), %error, "cannot update the Service's Endpoints");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !has_selector(&service) || service.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let pods = ctx.selected_pods(&service).await?;
    let subsets = subsets(&backends(&service, &pods));
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let mut labels: BTreeMap<String, String> = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    let desired = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels),
            owner_references: Some(owner_of(&service)),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    };
    write(&api, &name, desired, |old, new| {
        old.subsets == new.subsets && old.metadata.labels == new.metadata.labels
    })
    .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

/// Creates `desired`, or replaces the stored object when `same` says it differs.
pub(crate) async fn write<K>(
    api: &Api<K>,
    name: &str,
    mut desired: K,
    same: impl Fn(&K, &K) -> bool,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await? {
        None => match api.create(&PostParams::default(), &desired).await {
            Ok(_) => Ok(()),
            // Created meanwhile (the next event reconciles again), or the namespace goes.
            Err(kube::Error::Api(s)) if matches!(s.code, 403 | 404 | 409) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Some(old) if same(&old, &desired) => Ok(()),
        Some(old) => {
            desired.meta_mut().resource_version = old.meta().resource_version.clone();
            match api.replace(name, &PostParams::default(), &desired).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if matches!(s.code, 404 | 409) => {
                    Err(Error::Kube(kube::Error::Api(s)))
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn service(ns: &str, name: &str, app: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_event_concerns_only_the_services_that_select_or_list_it() {
        let mut writer = reflector::store::Writer::<Service>::default();
        for s in [
            service("ns", "a", "a"),
            service("ns", "b", "b"),
            service("other", "a2", "a"),
        ] {
            writer.apply_watcher_event(&Event::Apply(s));
        }
        let store = writer.as_reader();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "a", "x": "y"}},
        }))
        .unwrap();
        let names = |v: Vec<ObjectRef<Service>>| {
            let mut n: Vec<String> = v.into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        assert_eq!(names(services_of_pod(&store, [], &pod)), ["a"]);
        // Relabelled out of "b", whose Endpoints still list it: "b" is reconciled too.
        assert_eq!(
            names(services_of_pod(&store, ["b".to_string()], &pod)),
            ["a", "b"]
        );
        let unlabelled: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "q", "namespace": "ns"},
        }))
        .unwrap();
        assert!(services_of_pod(&store, [], &unlabelled).is_empty());
    }
}

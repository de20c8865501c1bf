//! The cluster zone: every name Kubernetes' DNS specification gives Services and pods, built
//! from the API's Services, EndpointSlices and Pods.
//!
//! Names (`<domain>` is the cluster domain, `cluster.local` by default):
//! - `<svc>.<ns>.svc.<domain>` A: the ClusterIP; for a headless Service, one A record per
//!   ready endpoint; for an `ExternalName` Service a CNAME.
//! - `<hostname>.<svc>.<ns>.svc.<domain>` A: an endpoint with a hostname (a pod whose
//!   `spec.hostname` is set and whose `spec.subdomain` names the headless Service); endpoints
//!   without one are named by their dashed address (`10-244-0-5.<svc>.<ns>.svc.<domain>`), as
//!   CoreDNS names them.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for every named port: the Service name
//!   (ClusterIP), or one record per endpoint (headless).
//! - `<a-b-c-d>.<ns>.pod.<domain>` A for every pod with an IP (`pods verified`: only pods that
//!   exist).
//! - PTR `d.c.b.a.in-addr.arpa` for ClusterIPs and headless endpoints.
//!
//! Every other name inside the domain (or inside the reverse zones of the Service and pod
//! ranges) is NXDOMAIN, an existing name without records of the asked type NODATA; both carry
//! the zone's SOA. Names outside are refused: the cluster DNS has no upstream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use ferry_api::network::Ipv4Range;
use hickory_server::proto::rr::rdata::{A, CNAME, PTR, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// TTL of every record (CoreDNS' kubernetes plugin default).
pub const TTL: u32 = 5;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the zone covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// The cluster domain (`cluster.local`).
    pub domain: String,
    /// Service range: its reverse names are ours (NXDOMAIN when unknown).
    pub service_cidr: Ipv4Range,
    /// Pod range, likewise.
    pub pod_cidr: Ipv4Range,
}

impl ZoneConfig {
    /// The zone of a cluster network plan.
    pub fn from_network(n: &ferry_api::network::ClusterNetwork) -> Self {
        Self {
            domain: n.cluster_domain.clone(),
            service_cidr: n.service_cidr,
            pod_cidr: n.pod_cidr,
        }
    }
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Records of the asked type (and helpful additional records: SRV targets' addresses).
    Records {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section.
        additionals: Vec<Record>,
    },
    /// The name exists, without records of that type (NOERROR, SOA in the authority section).
    NoData,
    /// The name does not exist in the zone (NXDOMAIN, SOA in the authority section).
    NxDomain,
    /// Not a name of this zone: refused (no upstream).
    Refused,
}

/// One built zone (immutable; rebuilt when the API's objects change).
#[derive(Debug, Clone)]
pub struct Zone {
    config: ZoneConfig,
    origin: Name,
    soa: Record,
    /// Records by lower-case owner name (with the trailing dot).
    records: HashMap<String, Vec<Record>>,
    /// Names that exist without records of their own (empty non-terminals).
    names: HashSet<String>,
}

/// An endpoint of a headless Service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    ip: Ipv4Addr,
    hostname: Option<String>,
}

fn key(name: &str) -> String {
    let mut k = name.to_ascii_lowercase();
    if !k.ends_with('.') {
        k.push('.');
    }
    k
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn reverse_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
}

/// The address of a reverse name `d.c.b.a.in-addr.arpa.`, if it is one.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa.")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    match parts.as_slice() {
        [d, c, b, a] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
        _ => None,
    }
}

fn ready_pod(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    if status.phase.as_deref() != Some("Running") {
        return false;
    }
    match status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
    {
        Some(c) => c.status == "True",
        None => true,
    }
}

fn pod_ip(pod: &Pod) -> Option<Ipv4Addr> {
    pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

impl Zone {
    /// An empty zone (no Services, no pods): every name in it is NXDOMAIN.
    pub fn empty(config: ZoneConfig) -> Self {
        Self::build(config, &[], &[], &[], 1)
    }

    /// Builds the zone from the cluster's objects. `serial` is the SOA serial.
    pub fn build(
        config: ZoneConfig,
        services: &[Service],
        slices: &[EndpointSlice],
        pods: &[Pod],
        serial: u32,
    ) -> Self {
        let domain = key(&config.domain);
        let origin = Name::from_str(&domain).unwrap_or_else(|_| Name::root());
        let mname = Name::from_str(&format!("ns.dns.{domain}")).unwrap_or_else(|_| Name::root());
        let rname =
            Name::from_str(&format!("hostmaster.{domain}")).unwrap_or_else(|_| Name::root());
        let soa = Record::from_rdata(
            origin.clone(),
            TTL,
            RData::SOA(SOA::new(mname, rname, serial, 7200, 1800, 86400, TTL)),
        );
        let mut zone = Zone {
            config,
            origin,
            soa,
            records: HashMap::new(),
            names: HashSet::new(),
        };
        let svc_zone = format!("svc.{domain}");
        let pod_zone = format!("pod.{domain}");
        zone.names.insert(svc_zone.clone());
        zone.names.insert(pod_zone.clone());

        // EndpointSlices by (namespace, Service).
        let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            by_service.entry((ns, svc.clone())).or_default().push(s);
        }

        for svc in services {
            let (Some(name), Some(ns)) = (&svc.metadata.name, &svc.metadata.namespace) else {
                continue;
            };
            let Some(spec) = &svc.spec else { continue };
            let fqdn = format!("{name}.{ns}.{svc_zone}");
            zone.names.insert(format!("{ns}.{svc_zone}"));
            zone.names.insert(fqdn.clone());
            let owner = Name::from_str(&fqdn).ok();
            let Some(owner) = owner else { continue };
            if spec.type_.as_deref() == Some("ExternalName") {
                if let Some(target) = spec
                    .external_name
                    .as_deref()
                    .and_then(|t| Name::from_str(&key(t)).ok())
                {
                    zone.add(&fqdn, RData::CNAME(CNAME(target)));
                }
                continue;
            }
            let headless = spec.cluster_ip.as_deref() == Some("None");
            // Named ports: (name, protocol, port).
            let mut ports: Vec<(String, String, u16)> = Vec::new();
            if !headless {
                let Some(ip) = spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()) else {
                    continue;
                };
                zone.add(&fqdn, RData::A(A(ip)));
                zone.add(&reverse_name(ip), RData::PTR(PTR(owner.clone())));
                for p in spec.ports.iter().flatten() {
                    if let Some(n) = &p.name
                        && let Ok(port) = u16::try_from(p.port)
                    {
                        ports.push((n.clone(), p.protocol.clone().unwrap_or("TCP".into()), port));
                    }
                }
                for (pname, proto, port) in &ports {
                    let srv = format!("_{pname}._{}.{fqdn}", proto.to_ascii_lowercase());
                    zone.add(&srv, RData::SRV(SRV::new(0, 100, *port, owner.clone())));
                }
                continue;
            }
            // Headless: the ready endpoints, from the Service's EndpointSlices when there are
            // any, else from the pods its selector picks (as the endpoints controller would).
            let publish_all = spec.publish_not_ready_addresses == Some(true);
            let mut endpoints: Vec<Endpoint> = Vec::new();
            match by_service.get(&(ns.clone(), name.clone())) {
                Some(found) => {
                    for s in found {
                        if s.address_type != "IPv4" {
                            continue;
                        }
                        for e in s.endpoints.iter().flatten() {
                            let ready = e.conditions.as_ref().and_then(|c| c.ready);
                            if !publish_all && ready == Some(false) {
                                continue;
                            }
                            for a in &e.addresses {
                                if let Ok(ip) = a.parse() {
                                    endpoints.push(Endpoint {
                                        ip,
                                        hostname: e.hostname.clone(),
                                    });
                                }
                            }
                        }
                        for p in s.ports.iter().flatten() {
                            if let (Some(n), Some(port)) = (&p.name, p.port)
                                && let Ok(port) = u16::try_from(port)
                                && !n.is_empty()
                            {
                                ports.push((
                                    n.clone(),
                                    p.protocol.clone().unwrap_or("TCP".into()),
                                    port,
                                ));
                            }
                        }
                    }
                }
                None => {
                    let selector = spec.selector.clone().unwrap_or_default();
                    for pod in pods {
                        if pod.metadata.namespace.as_deref() != Some(ns.as_str())
                            || !selects(&selector, pod)
                            || (!publish_all && !ready_pod(pod))
                        {
                            continue;
                        }
                        let Some(ip) = pod_ip(pod) else { continue };
                        let pspec = pod.spec.as_ref();
                        let hostname = pspec
                            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
                            .and_then(|s| s.hostname.clone());
                        endpoints.push(Endpoint { ip, hostname });
                    }
                    for p in spec.ports.iter().flatten() {
                        if let Some(n) = &p.name {
                            let target = match &p.target_port {
                                Some(
                                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                                        t,
                                    ),
                                ) => *t,
                                _ => p.port,
                            };
                            if let Ok(port) = u16::try_from(target) {
                                ports.push((
                                    n.clone(),
                                    p.protocol.clone().unwrap_or("TCP".into()),
                                    port,
                                ));
                            }
                        }
                    }
                }
            }
            ports.sort();
            ports.dedup();
            endpoints.sort_by(|a, b| (a.ip, &a.hostname).cmp(&(b.ip, &b.hostname)));
            endpoints.dedup();
            for e in &endpoints {
                zone.add(&fqdn, RData::A(A(e.ip)));
                let label = e.hostname.clone().unwrap_or_else(|| dashed(e.ip));
                let host = format!("{label}.{fqdn}");
                zone.add(&host, RData::A(A(e.ip)));
                if let Ok(target) = Name::from_str(&host) {
                    zone.add(&reverse_name(e.ip), RData::PTR(PTR(target.clone())));
                    for (pname, proto, port) in &ports {
                        let srv = format!("_{pname}._{}.{fqdn}", proto.to_ascii_lowercase());
                        zone.add(&srv, RData::SRV(SRV::new(0, 100, *port, target.clone())));
                    }
                }
            }
        }

        for pod in pods {
            let (Some(ns), Some(ip)) = (&pod.metadata.namespace, pod_ip(pod)) else {
                continue;
            };
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            zone.names.insert(format!("{ns}.{pod_zone}"));
            zone.add(&format!("{}.{ns}.{pod_zone}", dashed(ip)), RData::A(A(ip)));
        }
        // Deduplicate (several pods on the host network share one address).
        for list in zone.records.values_mut() {
            list.sort();
            list.dedup();
        }
        // Every ancestor of an owner name inside the domain exists.
        let owners: Vec<String> = zone
            .records
            .keys()
            .chain(zone.names.iter())
            .cloned()
            .collect();
        for owner in owners {
            let mut rest = owner.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if parent.len() < domain.len() || !parent.ends_with(&domain) {
                    break;
                }
                zone.names.insert(parent.to_string());
                rest = parent;
            }
        }
        zone.names.insert(domain);
        zone
    }

    fn add(&mut self, owner: &str, rdata: RData) {
        let k = key(owner);
        let Ok(name) = Name::from_str(&k) else {
            return;
        };
        self.records
            .entry(k)
            .or_default()
            .push(Record::from_rdata(name, TTL, rdata));
    }

    /// The zone's SOA record (authority section of negative answers).
    pub fn soa(&self) -> &Record {
        &self.soa
    }

    /// The zone's origin (`cluster.local.`).
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// True when `name` (lower case, trailing dot) lies in a zone this server answers for.
    fn ours(&self, name: &str) -> bool {
        let domain = key(&self.config.domain);
        if name == domain || name.ends_with(&format!(".{domain}")) {
            return true;
        }
        reverse_ip(name).is_some_and(|ip| {
            self.config.service_cidr.contains(ip) || self.config.pod_cidr.contains(ip)
        }) || self.records.contains_key(name)
    }

    /// Answers one question.
    pub fn lookup(&self, name: &str, qtype: RecordType) -> Answer {
        let k = key(name);
        if !self.ours(&k) {
            return Answer::Refused;
        }
        if k == key(&self.config.domain) && qtype == RecordType::SOA {
            return Answer::Records {
                answers: vec![self.soa.clone()],
                additionals: Vec::new(),
            };
        }
        let Some(records) = self.records.get(&k) else {
            return if self.names.contains(&k) {
                Answer::NoData
            } else {
                Answer::NxDomain
            };
        };
        let matching: Vec<Record> = records
            .iter()
            .filter(|r| {
                let t = r.record_type();
                qtype == RecordType::ANY || t == qtype || t == RecordType::CNAME
            })
            .cloned()
            .collect();
        if matching.is_empty() {
            return Answer::NoData;
        }
        let mut additionals = Vec::new();
        for r in &matching {
            if let RData::SRV(srv) = &r.data {
                let target = key(&srv.target.to_string());
                additionals.extend(
                    self.records
                        .get(&target)
                        .into_iter()
                        .flatten()
                        .filter(|a| a.record_type() == RecordType::A)
                        .cloned(),
                );
            }
        }
        additionals.sort();
        additionals.dedup();
        Answer::Records {
            answers: matching,
            additionals,
        }
    }

    /// Number of owner names with records (for logs).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when the zone holds no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn config() -> ZoneConfig {
        ZoneConfig {
            domain: "cluster.local".into(),
            service_cidr: "10.96.0.0/16".parse().unwrap(),
            pod_cidr: "10.244.0.0/16".parse().unwrap(),
        }
    }

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        }
    }

    fn service(ns: &str, name: &str, ip: &str, selector: &[(&str, &str)]) -> Service {
        Service {
            metadata: meta(ns, name),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(ns: &str, name: &str, ip: &str, app: &str, host: Option<(&str, &str)>) -> Pod {
        let mut m = meta(ns, name);
        m.labels = Some([("app".to_string(), app.to_string())].into());
        Pod {
            metadata: m,
            spec: Some(PodSpec {
                hostname: host.map(|h| h.0.into()),
                subdomain: host.map(|h| h.1.into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn a_records(answer: &Answer) -> Vec<Ipv4Addr> {
        match answer {
            Answer::Records { answers, .. } => answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.0),
                    _ => None,
                })
                .collect(),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn cluster_ip_services_and_their_srv_and_ptr_records() {
        let zone = Zone::build(
            config(),
            &[service("default", "web", "10.96.0.20", &[("app", "web")])],
            &[],
            &[],
            1,
        );
        assert_eq!(
            a_records(&zone.lookup("web.default.svc.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 96, 0, 20)]
        );
        // Case does not matter.
        assert_eq!(
            a_records(&zone.lookup("WEB.Default.svc.cluster.local.", RecordType::A)).len(),
            1
        );
        let Answer::Records { answers, .. } =
            zone.lookup("_http._tcp.web.default.svc.cluster.local", RecordType::SRV)
        else {
            panic!("no SRV")
        };
        let RData::SRV(srv) = &answers[0].data else {
            panic!("not SRV")
        };
        assert_eq!(srv.port, 80);
        assert_eq!(srv.target.to_string(), "web.default.svc.cluster.local.");
        let Answer::Records { answers, .. } =
            zone.lookup("20.0.96.10.in-addr.arpa", RecordType::PTR)
        else {
            panic!("no PTR")
        };
        assert_eq!(
            &answers[0].data.to_string(),
            "web.default.svc.cluster.local."
        );
        // The name exists, without AAAA records: NODATA.
        assert_eq!(
            zone.lookup("web.default.svc.cluster.local", RecordType::AAAA),
            Answer::NoData
        );
        assert_eq!(answers[0].ttl, TTL);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_foreign_names_refused() {
        let zone = Zone::build(
            config(),
            &[service("default", "web", "10.96.0.20", &[])],
            &[],
            &[],
            1,
        );
        assert_eq!(
            zone.lookup("nope.default.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
        assert_eq!(
            zone.lookup("web.other.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
        // Empty non-terminals exist.
        assert_eq!(
            zone.lookup("default.svc.cluster.local", RecordType::A),
            Answer::NoData
        );
        assert_eq!(zone.lookup("example.com", RecordType::A), Answer::Refused);
        assert_eq!(
            zone.lookup("1.0.96.10.in-addr.arpa", RecordType::PTR),
            Answer::NxDomain
        );
        assert_eq!(
            zone.lookup("1.2.0.192.in-addr.arpa", RecordType::PTR),
            Answer::Refused
        );
        assert!(matches!(
            zone.lookup("cluster.local", RecordType::SOA),
            Answer::Records { .. }
        ));
    }

    #[test]
    fn headless_services_from_pods_with_hostnames() {
        let pods = [
            pod("ml", "job-0", "10.244.0.5", "job", Some(("job-0", "job"))),
            pod("ml", "job-1", "10.244.0.6", "job", Some(("job-1", "job"))),
            // Subdomain names another Service: no hostname record under this one.
            pod(
                "ml",
                "other",
                "10.244.0.7",
                "job",
                Some(("other", "elsewhere")),
            ),
            pod("ml", "unrelated", "10.244.0.8", "db", None),
        ];
        let zone = Zone::build(
            config(),
            &[service("ml", "job", "None", &[("app", "job")])],
            &[],
            &pods,
            1,
        );
        let mut all = a_records(&zone.lookup("job.ml.svc.cluster.local", RecordType::A));
        all.sort();
        assert_eq!(
            all,
            vec![
                Ipv4Addr::new(10, 244, 0, 5),
                Ipv4Addr::new(10, 244, 0, 6),
                Ipv4Addr::new(10, 244, 0, 7)
            ]
        );
        assert_eq!(
            a_records(&zone.lookup("job-0.job.ml.svc.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 5)]
        );
        assert_eq!(
            a_records(&zone.lookup("10-244-0-7.job.ml.svc.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 7)]
        );
        assert_eq!(
            zone.lookup("other.job.ml.svc.cluster.local", RecordType::A),
            Answer::NxDomain
        );
        let Answer::Records {
            answers,
            additionals,
        } = zone.lookup("_http._tcp.job.ml.svc.cluster.local", RecordType::SRV)
        else {
            panic!("no SRV")
        };
        assert_eq!(answers.len(), 3);
        assert_eq!(additionals.len(), 3);
    }

    #[test]
    fn headless_services_from_endpoint_slices_skip_unready_endpoints() {
        let mut slice = EndpointSlice {
            metadata: meta("ml", "job-abcde"),
            address_type: "IPv4".into(),
            endpoints: Some(vec![
                SliceEndpoint {
                    addresses: vec!["10.244.0.9".into()],
                    hostname: Some("master".into()),
                    ..Default::default()
                },
                SliceEndpoint {
                    addresses: vec!["10.244.0.10".into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(false),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ports: Some(vec![EndpointPort {
                name: Some("rdzv".into()),
                port: Some(29500),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
        };
        slice.metadata.labels = Some([(SERVICE_NAME_LABEL.to_string(), "job".to_string())].into());
        // The pod list disagrees: the slices win.
        let pods = [pod("ml", "x", "10.244.0.99", "job", None)];
        let zone = Zone::build(
            config(),
            &[service("ml", "job", "None", &[("app", "job")])],
            &[slice],
            &pods,
            1,
        );
        assert_eq!(
            a_records(&zone.lookup("job.ml.svc.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 9)]
        );
        assert_eq!(
            a_records(&zone.lookup("master.job.ml.svc.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 9)]
        );
        let Answer::Records { answers, .. } =
            zone.lookup("_rdzv._tcp.job.ml.svc.cluster.local", RecordType::SRV)
        else {
            panic!("no SRV")
        };
        let RData::SRV(srv) = &answers[0].data else {
            panic!()
        };
        assert_eq!(srv.port, 29500);
        assert_eq!(srv.target.to_string(), "master.job.ml.svc.cluster.local.");
    }

    #[test]
    fn pods_get_dashed_address_records() {
        let pods = [pod("default", "a", "10.244.0.5", "x", None)];
        let zone = Zone::build(config(), &[], &[], &pods, 1);
        assert_eq!(
            a_records(&zone.lookup("10-244-0-5.default.pod.cluster.local", RecordType::A)),
            vec![Ipv4Addr::new(10, 244, 0, 5)]
        );
        assert_eq!(
            zone.lookup("10-244-0-6.default.pod.cluster.local", RecordType::A),
            Answer::NxDomain
        );
    }

    #[test]
    fn external_name_services_are_cnames() {
        let mut svc = service("default", "db", "", &[]);
        let spec = svc.spec.as_mut().unwrap();
        spec.type_ = Some("ExternalName".into());
        spec.external_name = Some("db.example.com".into());
        let zone = Zone::build(config(), &[svc], &[], &[], 1);
        let Answer::Records { answers, .. } =
            zone.lookup("db.default.svc.cluster.local", RecordType::A)
        else {
            panic!()
        };
        assert_eq!(answers[0].record_type(), RecordType::CNAME);
    }
}

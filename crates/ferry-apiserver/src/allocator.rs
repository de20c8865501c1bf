//! Cluster IP and NodePort allocation for Services.
//!
//! Durable by construction: what is taken is read from the stored Services at every
//! allocation (so a restart, a delete or a failed create needs no bookkeeping), plus the
//! addresses and ports handed to creates that are not stored yet (reservations, dropped once
//! the object is stored or after [`RESERVATION_TTL`]). The `kubernetes_service_ip()` (.1) and
//! `dns_service_ip()` (.10) of the plan go only to `default/kubernetes` and
//! `kube-system/kube-dns`.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use ferry_api::network::ClusterNetwork;
use ferry_store::Store;

/// How long an address or port handed to a create that was never stored stays taken.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

/// Why a requested address or port cannot be had.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllocError {
    /// Outside the range (the message names the range).
    OutOfRange(String),
    /// Held by another Service (`"IP"` or `"port"`).
    Taken(&'static str),
    /// Reserved for a system Service.
    Reserved(&'static str),
    /// Nothing left.
    Full(String),
}

impl std::fmt::Display for AllocError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllocError::OutOfRange(r) => write!(f, "provided {r}"),
            AllocError::Taken(what) => write!(f, "provided {what} is already allocated"),
            AllocError::Reserved(who) => write!(f, "provided IP is reserved for {who}"),
            AllocError::Full(what) => write!(f, "range is full: no {what} left"),
        }
    }
}

#[derive(Default)]
struct Reservations {
    ips: HashMap<Ipv4Addr, Instant>,
    ports: HashMap<u16, Instant>,
}

impl Reservations {
    fn expire(&mut self) {
        let now = Instant::now();
        self.ips
            .retain(|_, t| now.duration_since(*t) < RESERVATION_TTL);
        self.ports
            .retain(|_, t| now.duration_since(*t) < RESERVATION_TTL);
    }
}

/// The allocator of one API server.
pub struct ServiceAllocator {
    network: ClusterNetwork,
    reserved: Mutex<Reservations>,
}

/// The Service `ns/name` an address is reserved for, if any.
fn reserved_owner(network: &ClusterNetwork, ip: Ipv4Addr) -> Option<(&'static str, &'static str)> {
    if ip == network.kubernetes_service_ip() {
        Some(("default", "kubernetes"))
    } else if ip == network.dns_service_ip() {
        Some(("kube-system", "kube-dns"))
    } else {
        None
    }
}

impl ServiceAllocator {
    /// An allocator for the Service range and NodePort range of `network`.
    pub fn new(network: ClusterNetwork) -> Self {
        Self {
            network,
            reserved: Mutex::new(Reservations::default()),
        }
    }

    /// The plan it allocates from.
    pub fn network(&self) -> &ClusterNetwork {
        &self.network
    }

    fn used(store: &Store, skip: Option<(&str, &str)>) -> (HashSet<Ipv4Addr>, HashSet<u16>) {
        let mut ips = HashSet::new();
        let mut ports = HashSet::new();
        for item in store.list("services", None, None, 0, |_| true).items {
            let v: &Value = &item.value;
            let ns = crate::meta::namespace(v);
            let name = crate::meta::name(v);
            if skip == Some((ns, name)) {
                continue;
            }
            for ip in v["spec"]["clusterIPs"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&v["spec"]["clusterIP"]))
            {
                if let Some(ip) = ip.as_str().and_then(|s| s.parse().ok()) {
                    ips.insert(ip);
                }
            }
            for p in v["spec"]["ports"].as_array().into_iter().flatten() {
                if let Some(n) = p["nodePort"].as_u64() {
                    ports.insert(n as u16);
                }
            }
        }
        (ips, ports)
    }

    /// A cluster IP for Service `ns/name`: `requested` if free (and it is theirs to have),
    /// else a free address of the range.
    pub fn allocate_ip(
        &self,
        store: &Store,
        ns: &str,
        name: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, AllocError> {
        let range = self.network.service_cidr;
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        reserved.expire();
        let (used, _) = Self::used(store, None);
        let taken = |ip: &Ipv4Addr| used.contains(ip) || reserved.ips.contains_key(ip);
        let ip = match requested {
            Some(ip) => {
                let last = range.size().saturating_sub(1);
                if !range.contains(ip) || ip == range.network || Some(ip) == range.nth(last) {
                    return Err(AllocError::OutOfRange(format!(
                        "IP {ip} is not in the valid range. The range of valid IPs is {range}"
                    )));
                }
                if let Some(owner) = reserved_owner(&self.network, ip)
                    && owner != (ns, name)
                {
                    return Err(AllocError::Reserved(if owner.1 == "kubernetes" {
                        "the kubernetes Service in default"
                    } else {
                        "the kube-dns Service in kube-system"
                    }));
                }
                if taken(&ip) {
                    return Err(AllocError::Taken("IP"));
                }
                ip
            }
            None => {
                let own = [
                    self.network.kubernetes_service_ip(),
                    self.network.dns_service_ip(),
                ]
                .into_iter()
                .find(|ip| reserved_owner(&self.network, *ip) == Some((ns, name)) && !taken(ip));
                match own {
                    Some(ip) => ip,
                    None => {
                        // Usable addresses: 1 ..= size-2; start at a random one.
                        let n = range.size().saturating_sub(2).max(1);
                        let start = rand::random::<u32>() % n;
                        (0..n)
                            .filter_map(|i| range.nth(1 + (start + i) % n))
                            .find(|ip| reserved_owner(&self.network, *ip).is_none() && !taken(ip))
                            .ok_or_else(|| AllocError::Full(format!("addresses in {range}")))?
                    }
                }
            }
        };
        reserved.ips.insert(ip, Instant::now());
        Ok(ip)
    }

    /// A node port: `requested` if free, else a free port of the range. `ours` are the
    /// ports Service `ns/name` already holds (an update keeps them).
    pub fn allocate_port(
        &self,
        store: &Store,
        owner: (&str, &str),
        requested: Option<u16>,
        in_use_here: &HashSet<u16>,
    ) -> Result<u16, AllocError> {
        let (lo, hi) = self.network.node_port_range;
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        reserved.expire();
        let (_, used) = Self::used(store, Some(owner));
        let taken =
            |p: &u16| used.contains(p) || reserved.ports.contains_key(p) || in_use_here.contains(p);
        let port = match requested {
            Some(p) => {
                if p < lo || p > hi {
                    return Err(AllocError::OutOfRange(format!(
                        "port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    )));
                }
                if taken(&p) {
                    return Err(AllocError::Taken("port"));
                }
                p
            }
            None => {
                let n = u32::from(hi - lo) + 1;
                let start = rand::random::<u32>() % n;
                (0..n)
                    .map(|i| lo + ((start + i) % n) as u16)
                    .find(|p| !taken(p))
                    .ok_or_else(|| AllocError::Full(format!("node ports in {lo}-{hi}")))?
            }
        };
        reserved.ports.insert(port, Instant::now());
        Ok(port)
    }

    /// The Service is stored: its addresses and ports are read from the store from now on.
    pub fn stored(&self, service: &Value) {
        let mut reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ip) = service["spec"]["clusterIP"]
            .as_str()
            .and_then(|s| s.parse().ok())
        {
            reserved.ips.remove(&ip);
        }
        for p in service["spec"]["ports"].as_array().into_iter().flatten() {
            if let Some(n) = p["nodePort"].as_u64() {
                reserved.ports.remove(&(n as u16));
            }
        }
    }
}

//! The cluster network plan: pod and Service address ranges, the node bridge, the cluster DNS
//! and the names of the rules Ferry owns on a machine.
//!
//! Every component that touches the network (the node agent's pod sandboxes, the Service
//! proxy, the cluster DNS, the API server's Service IP allocator, `ferry up`) reads the same
//! [`ClusterNetwork`], so one value describes one cluster. Tests run several clusters on one
//! machine side by side with [`ClusterNetwork::for_index`]: each gets its own ranges, bridge,
//! nftables table and CNI network, so nothing of one touches another.
//!
//! Hygiene: both ranges belong to rules and namespaces Ferry creates; the node bridge owns the
//! node's pod range and an `unreachable` route (or a reject rule) covers the rest of both
//! ranges, so a packet to an address of them that nothing serves is refused on the machine,
//! never routed out.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// An IPv4 range (`address/prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv4Range {
    /// The first address of the range.
    pub network: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Range {
    /// A range; the address is masked to its prefix.
    pub const fn new(network: Ipv4Addr, prefix: u8) -> Self {
        let prefix = if prefix > 32 { 32 } else { prefix };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix as u32)
        };
        Ipv4Range {
            network: Ipv4Addr::from_bits(network.to_bits() & mask),
            prefix,
        }
    }

    /// The `n`-th address of the range (`network + n`), if it lies inside.
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        Some(Ipv4Addr::from_bits(self.network.to_bits().checked_add(n)?))
    }

    /// Number of addresses in the range.
    pub fn size(&self) -> u32 {
        if self.prefix == 0 {
            u32::MAX
        } else {
            1u32 << (32 - self.prefix as u32)
        }
    }

    /// True when `ip` lies inside the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        Ipv4Range::new(ip, self.prefix).network == self.network
    }
}

impl std::fmt::Display for Ipv4Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl std::str::FromStr for Ipv4Range {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not of the form address/prefix"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: bad address: {e}"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("{s:?}: the prefix must be 0..=32"))?;
        Ok(Ipv4Range::new(ip, prefix))
    }
}

/// The network of one cluster, as every component sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterNetwork {
    /// All pod addresses of the cluster.
    pub pod_cidr: Ipv4Range,
    /// This node's share of `pod_cidr` (the bridge's subnet); its first address is the
    /// bridge's (the pods' gateway, the host as pods see it).
    pub node_pod_cidr: Ipv4Range,
    /// Service cluster IPs. Its first address is the `kubernetes` Service's, its tenth the
    /// cluster DNS's.
    pub service_cidr: Ipv4Range,
    /// NodePort range (inclusive).
    pub node_port_range: (u16, u16),
    /// The node bridge (at most 15 bytes: a Linux interface name).
    pub bridge: String,
    /// The CNI network name (also the host-local IPAM store's name).
    pub cni_network: String,
    /// The nftables table (family `ip`) holding Ferry's Service and hygiene rules.
    pub nft_table: String,
    /// Prefix of the network namespaces Ferry creates (`/run/netns/<prefix><pod uid>`).
    pub netns_prefix: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Port the cluster DNS server listens on at the bridge address (the `kube-dns` Service's
    /// endpoint).
    pub dns_port: u16,
}

impl Default for ClusterNetwork {
    /// `ferry up`'s network: pods in 10.244.0.0/16 (this node 10.244.0.0/24 on bridge
    /// `ferry0`), Services in 10.96.0.0/16, NodePorts 30000-32767, domain `cluster.local`.
    fn default() -> Self {
        ClusterNetwork {
            pod_cidr: Ipv4Range::new(Ipv4Addr::new(10, 244, 0, 0), 16),
            node_pod_cidr: Ipv4Range::new(Ipv4Addr::new(10, 244, 0, 0), 24),
            service_cidr: Ipv4Range::new(Ipv4Addr::new(10, 96, 0, 0), 16),
            node_port_range: (30000, 32767),
            bridge: "ferry0".into(),
            cni_network: "ferry".into(),
            nft_table: "ferry".into(),
            netns_prefix: "ferry-".into(),
            cluster_domain: "cluster.local".into(),
            dns_port: 53,
        }
    }
}

impl ClusterNetwork {
    /// The `index`-th of several clusters on one machine (tests): pods in
    /// 10.245.`index`.0/24, Services in 10.97.`index`.0/24, NodePorts from
    /// 30000 + 100·`index` (100 of them), bridge `ferryt<index>`, table `ferryt<index>`,
    /// DNS on port 53. `index` must be below 250.
    pub fn for_index(index: u8) -> Self {
        let pods = Ipv4Range::new(Ipv4Addr::new(10, 245, index, 0), 24);
        let base = 30000 + 100 * u16::from(index.min(24));
        ClusterNetwork {
            pod_cidr: pods,
            node_pod_cidr: pods,
            service_cidr: Ipv4Range::new(Ipv4Addr::new(10, 97, index, 0), 24),
            node_port_range: (base, base + 99),
            bridge: format!("ferryt{index}"),
            cni_network: format!("ferryt{index}"),
            nft_table: format!("ferryt{index}"),
            netns_prefix: format!("ferryt{index}-"),
            cluster_domain: "cluster.local".into(),
            dns_port: 53,
        }
    }

    /// The bridge's address: the pods' gateway and the host as pods reach it.
    pub fn gateway(&self) -> Ipv4Addr {
        self.node_pod_cidr
            .nth(1)
            .unwrap_or(self.node_pod_cidr.network)
    }

    /// The `kubernetes` Service's cluster IP (first address of the Service range).
    pub fn kubernetes_service_ip(&self) -> Ipv4Addr {
        self.service_cidr
            .nth(1)
            .unwrap_or(self.service_cidr.network)
    }

    /// The cluster DNS Service's (`kube-dns`) cluster IP (tenth address of the Service range).
    pub fn dns_service_ip(&self) -> Ipv4Addr {
        self.service_cidr
            .nth(10)
            .unwrap_or(self.service_cidr.network)
    }

    /// Checks the plan for values no component could use.
    pub fn validate(&self) -> Result<(), String> {
        if !self.pod_cidr.contains(self.node_pod_cidr.network)
            || self.node_pod_cidr.prefix < self.pod_cidr.prefix
        {
            return Err(format!(
                "the node's pod range {} is not inside the pod range {}",
                self.node_pod_cidr, self.pod_cidr
            ));
        }
        if self.node_pod_cidr.prefix > 30 || self.service_cidr.prefix > 28 {
            return Err("the pod and Service ranges are too small".into());
        }
        if self.pod_cidr.contains(self.service_cidr.network)
            || self.service_cidr.contains(self.pod_cidr.network)
        {
            return Err(format!(
                "the pod range {} and the Service range {} overlap",
                self.pod_cidr, self.service_cidr
            ));
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(format!(
                "bridge name {:?} must be 1..=15 bytes",
                self.bridge
            ));
        }
        if self.node_port_range.0 > self.node_port_range.1 {
            return Err("the NodePort range is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_is_kubernetes_like_and_valid() {
        let n = ClusterNetwork::default();
        n.validate().unwrap();
        assert_eq!(n.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(n.kubernetes_service_ip(), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(n.dns_service_ip(), Ipv4Addr::new(10, 96, 0, 10));
        assert_eq!(n.service_cidr.to_string(), "10.96.0.0/16");
    }

    #[test]
    fn test_plans_do_not_overlap() {
        let a = ClusterNetwork::for_index(1);
        let b = ClusterNetwork::for_index(2);
        a.validate().unwrap();
        assert!(!a.pod_cidr.contains(b.pod_cidr.network));
        assert!(!a.service_cidr.contains(b.service_cidr.network));
        assert_ne!(a.bridge, b.bridge);
        assert!(a.node_port_range.1 < b.node_port_range.0);
        let d = ClusterNetwork::default();
        assert!(!d.pod_cidr.contains(a.pod_cidr.network));
        assert!(!d.service_cidr.contains(a.service_cidr.network));
    }

    #[test]
    fn ranges_parse_and_mask() {
        let r: Ipv4Range = "10.1.2.3/16".parse().unwrap();
        assert_eq!(r.to_string(), "10.1.0.0/16");
        assert!(r.contains(Ipv4Addr::new(10, 1, 200, 1)));
        assert!(!r.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!("10.1.2.3".parse::<Ipv4Range>().is_err());
        assert!("10.1.2.3/33".parse::<Ipv4Range>().is_err());
        assert_eq!(r.nth(65536), None);
    }
}

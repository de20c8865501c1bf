//! The Service rules as data ([`ServicePort`]) and their nftables form ([`render`]): one
//! table, written whole in one transaction.
//!
//! Layout of the table (family `ip`, named by `ClusterNetwork::nft_table`):
//! - map `service-ips`: `ip daddr . meta l4proto . th dport` → `goto svc-N` for every Service
//!   port with ready endpoints; map `service-nodeports`: `meta l4proto . th dport` →
//!   `goto svc-N` for NodePorts, matched on the node's own addresses (`fib daddr type local`;
//!   `127.0.0.0/8` only where `route_localnet` is set);
//! - chain `svc-N`: `numgen random mod K vmap { i : goto ep-N-i }`; chain `ep-N-i`: marks a
//!   pod's packet to itself (hairpin) for masquerade, then DNATs to the endpoint;
//! - hooks: nat `prerouting` and `output` (priority -100, dstnat) jump to `services`; nat
//!   `postrouting` (100, srcnat) masquerades marked packets;
//! - filter `output` and `forward` (priority 0, after DNAT): anything still addressed to the
//!   Service range (no endpoints, no such port) is rejected on the spot (TCP reset, else ICMP
//!   port unreachable: the client sees `ECONNREFUSED`), counted by counter `unserved`;
//! - filter `postrouting` guard: a packet to the Service range about to leave through any
//!   interface but `lo` is dropped and counted (`leaked`); it never happens while the rules
//!   above hold.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ferry_api::network::ClusterNetwork;

/// The packet mark asking for masquerade (kube-proxy's).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// From a Kubernetes protocol name (`TCP` when absent).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The nftables keyword.
    pub fn nft(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One port of one Service and where it leads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServicePort {
    /// `namespace/name:port-name`, for comments.
    pub id: String,
    /// The cluster IP (`None` for headless Services: only node ports, if any).
    pub cluster_ip: Option<Ipv4Addr>,
    /// The protocol.
    pub protocol: Protocol,
    /// The Service port.
    pub port: u16,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// Ready endpoints (address, port), sorted, no duplicates.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

fn comment(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "/:-_.".contains(*c))
        .take(120)
        .collect();
    format!("comment \"{clean}\"")
}

/// Whether `net.ipv4.conf.all.route_localnet` is set (NodePorts on 127.0.0.1 then work).
pub fn route_localnet() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/route_localnet")
        .is_ok_and(|s| s.trim() == "1")
}

/// The whole table as an `nft -f` script that replaces it atomically.
pub fn render(net: &ClusterNetwork, ports: &[ServicePort], localnet: bool) -> String {
    let t = &net.nft_table;
    let svc = net.service_cidr;
    let mut chains = String::new();
    let mut ips = Vec::new();
    let mut node_ports = Vec::new();
    for (n, p) in ports.iter().enumerate() {
        if p.endpoints.is_empty() {
            continue;
        }
        let proto = p.protocol.nft();
        let vmap: Vec<String> = (0..p.endpoints.len())
            .map(|i| format!("{i} : goto ep-{n}-{i}"))
            .collect();
        let _ = writeln!(
            chains,
            "  chain svc-{n} {{\n    numgen random mod {} vmap {{ {} }} {}\n  }}",
            p.endpoints.len(),
            vmap.join(", "),
            comment(&p.id)
        );
        for (i, (ip, port)) in p.endpoints.iter().enumerate() {
            let _ = writeln!(
                chains,
                "  chain ep-{n}-{i} {{\n    ip saddr {ip} jump mark-for-masquerade\n    meta l4proto {proto} dnat to {ip}:{port}\n  }}"
            );
        }
        if let Some(ip) = p.cluster_ip {
            ips.push(format!("{ip} . {proto} . {} : goto svc-{n}", p.port));
        }
        if let Some(np) = p.node_port {
            node_ports.push(format!("{proto} . {np} : goto svc-{n}"));
        }
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!("    elements = {{ {} }}\n", v.join(", "))
        }
    };
    let local = if localnet {
        String::new()
    } else {
        "ip daddr != 127.0.0.0/8 ".to_string()
    };
    let localhost_masq = if localnet {
        "    fib daddr type local ip saddr 127.0.0.0/8 meta l4proto . th dport @nodeport-keys jump mark-for-masquerade\n"
    } else {
        ""
    };
    let nodeport_keys: Vec<String> = node_ports
        .iter()
        .map(|e| e.split(" : ").next().unwrap_or_default().to_string())
        .collect();
    let mark = MASQUERADE_MARK;
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \x20 counter unserved {{\n  }}\n\
         \x20 counter leaked {{\n  }}\n\
         \x20 map service-ips {{\n    type ipv4_addr . inet_proto . inet_service : verdict\n{ips}  }}\n\
         \x20 map service-nodeports {{\n    type inet_proto . inet_service : verdict\n{nps}  }}\n\
         \x20 set nodeport-keys {{\n    type inet_proto . inet_service\n{npk}  }}\n\
         \x20 chain mark-for-masquerade {{\n    meta mark set meta mark or {mark:#x}\n  }}\n\
         {chains}\
         \x20 chain services {{\n\
         \x20   ip daddr . meta l4proto . th dport vmap @service-ips\n\
         {localhost_masq}\
         \x20   fib daddr type local {local}meta l4proto . th dport vmap @service-nodeports\n\
         \x20 }}\n\
         \x20 chain nat-prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-output {{\n    type nat hook output priority -100; policy accept;\n    jump services\n  }}\n\
         \x20 chain nat-postrouting {{\n    type nat hook postrouting priority 100; policy accept;\n\
         \x20   meta mark & {mark:#x} == 0 return\n\
         \x20   meta mark set meta mark xor {mark:#x}\n\
         \x20   masquerade fully-random\n  }}\n\
         \x20 chain reject-unserved {{\n\
         \x20   meta l4proto tcp reject with tcp reset\n\
         \x20   reject\n  }}\n\
         \x20 chain filter-output {{\n    type filter hook output priority 0; policy accept;\n\
         \x20   ip daddr {svc} counter name \"unserved\" goto reject-unserved\n  }}\n\
         \x20 chain filter-forward {{\n    type filter hook forward priority 0; policy accept;\n\
         \x20   ip daddr {svc} counter name \"unserved\" goto reject-unserved\n  }}\n\
         \x20 chain guard {{\n    type filter hook postrouting priority 100; policy accept;\n\
         \x20   ip daddr {svc} oifname != \"lo\" counter name \"leaked\" drop\n  }}\n\
         }}\n",
        ips = elements(&ips),
        nps = elements(&node_ports),
        npk = elements(&nodeport_keys),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_map_service_ports_to_random_endpoints() {
        let net = ClusterNetwork::for_index(7);
        let ports = vec![
            ServicePort {
                id: "ns/web:http".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 97, 7, 20)),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: Some(30701),
                endpoints: vec![
                    (Ipv4Addr::new(10, 245, 7, 2), 8080),
                    (Ipv4Addr::new(10, 245, 7, 3), 8080),
                ],
            },
            ServicePort {
                id: "kube-system/kube-dns:dns".into(),
                cluster_ip: Some(net.dns_service_ip()),
                protocol: Protocol::Udp,
                port: 53,
                node_port: None,
                endpoints: vec![(net.gateway(), 53)],
            },
            ServicePort {
                id: "ns/empty:x".into(),
                cluster_ip: Some(Ipv4Addr::new(10, 97, 7, 21)),
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                endpoints: vec![],
            },
        ];
        let text = render(&net, &ports, false);
        assert!(text.starts_with("table ip ferryt7 {}\ndelete table ip ferryt7\n"));
        assert!(
            text.contains("10.97.7.20 . tcp . 80 : goto svc-0"),
            "{text}"
        );
        assert!(text.contains("tcp . 30701 : goto svc-0"), "{text}");
        assert!(text.contains("numgen random mod 2 vmap { 0 : goto ep-0-0, 1 : goto ep-0-1 }"));
        assert!(text.contains("meta l4proto tcp dnat to 10.245.7.3:8080"));
        assert!(
            text.contains("10.97.7.10 . udp . 53 : goto svc-1"),
            "{text}"
        );
        assert!(text.contains("meta l4proto udp dnat to 10.245.7.1:53"));
        assert!(
            !text.contains("10.97.7.21"),
            "no endpoints: rejected by the range rule"
        );
        assert!(
            text.contains("ip daddr 10.97.7.0/24 counter name \"unserved\" goto reject-unserved")
        );
        assert!(text.contains("ip daddr != 127.0.0.0/8 meta l4proto"));
    }

    #[test]
    fn rendered_rules_pass_nft_check() {
        use std::io::Write;
        let net = ClusterNetwork::for_index(7);
        let ports = vec![ServicePort {
            id: "ns/web:http".into(),
            cluster_ip: Some(Ipv4Addr::new(10, 97, 7, 20)),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: Some(30701),
            endpoints: vec![(Ipv4Addr::new(10, 245, 7, 2), 8080)],
        }];
        for localnet in [false, true] {
            let text = render(&net, &ports, localnet);
            // `nft -c` checks the script in the kernel without committing it.
            let child = std::process::Command::new("nft")
                .args(["-c", "-f", "-"])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                eprintln!("SKIP: no nft on this machine");
                return;
            };
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            if err.contains("Operation not permitted") {
                eprintln!("SKIP: nft -c needs CAP_NET_ADMIN");
                return;
            }
            assert!(out.status.success(), "{err}\n{text}");
        }
    }
}

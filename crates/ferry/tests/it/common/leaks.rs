//! Leak accounting for sandbox tests: what a plane has made on the host, counted from the host
//! itself (`/run/netns`, `ip link`, `nft`, `iptables-save`, `/proc/self/mountinfo`, the cgroup
//! hierarchies, the IPAM store), so a test compares the counts before and after.
//!
//! Use: `let before = leaks::Counts::take(&t.network, &data_dir, &[]);` … `let after =
//! leaks::Counts::take(&t.network, &data_dir, &uids); assert_eq!(before, after)` (pass the uids
//! of the pods the test made, so their cgroups are found under any root).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use ferry_api::network::ClusterNetwork;

/// What exists on the host for one plane.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Network namespaces under `/run/netns` with the plane's prefix.
    pub netns: usize,
    /// Interfaces enslaved to the plane's bridge (the pods' veths).
    pub veths: usize,
    /// Rules and set elements in the plane's nftables tables (`<table>`, `<table>-pods`),
    /// plus iptables rules naming the plane's CNI network (portmap's).
    pub nft_rules: usize,
    /// Mount points under the plane's data directory or its namespaces.
    pub mounts: usize,
    /// Cgroup directories naming one of the given pod uids.
    pub cgroups: usize,
    /// Addresses leased by host-local IPAM in the plane's store.
    pub ipam_leases: usize,
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Rules (lines with a handle, other than chains, tables and sets) and set elements of a table.
fn nft_table_rules(table: &str) -> usize {
    let text = output("nft", &["-a", "list", "table", "ip", table]);
    let mut n = 0;
    for line in text.lines() {
        let l = line.trim();
        if l.contains("# handle")
            && !l.starts_with("chain ")
            && !l.starts_with("table ")
            && !l.starts_with("set ")
            && !l.starts_with("map ")
        {
            n += 1;
        }
        if let Some(rest) = l.strip_prefix("elements = {") {
            n += rest
                .split(',')
                .filter(|e| !e.trim().trim_end_matches('}').trim().is_empty())
                .count();
        }
    }
    n
}

/// The raw listings behind the counts, for a failure message.
pub fn describe(net: &ClusterNetwork) -> String {
    format!(
        "{}\n{}\n{}\nnetns: {}\nlinks on {}: {}",
        output("nft", &["-a", "list", "table", "ip", &net.nft_table]),
        output(
            "nft",
            &[
                "-a",
                "list",
                "table",
                "ip",
                &format!("{}-pods", net.nft_table)
            ]
        ),
        output("iptables-save", &["-t", "nat"]),
        output("ip", &["netns", "list"]),
        net.bridge,
        output("ip", &["-o", "link", "show", "master", &net.bridge]),
    )
}

impl Counts {
    /// Counts what exists now for the plane `net` whose data directory is `data_dir`.
    pub fn take(net: &ClusterNetwork, data_dir: &Path, uids: &[String]) -> Self {
        let netns = std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&net.netns_prefix)
            })
            .count();
        let veths = output("ip", &["-o", "link", "show", "master", &net.bridge])
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count();
        let cni_mark = format!("\\\"{}\\\"", net.cni_network);
        let nft_rules = nft_table_rules(&net.nft_table)
            + nft_table_rules(&format!("{}-pods", net.nft_table))
            + output("iptables-save", &["-t", "nat"])
                .lines()
                .filter(|l| l.starts_with("-A") && l.contains(&cni_mark))
                .count();
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let netns_root = PathBuf::from("/run/netns").join(&net.netns_prefix);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| {
                Path::new(m).starts_with(&data_dir)
                    || m.starts_with(netns_root.to_string_lossy().as_ref())
            })
            .count();
        let cgroups = if uids.is_empty() {
            0
        } else {
            let mut n = 0;
            let mut stack: Vec<PathBuf> = vec!["/sys/fs/cgroup".into()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if !e.file_type().is_ok_and(|t| t.is_dir()) {
                        continue;
                    }
                    let name = e.file_name().to_string_lossy().into_owned();
                    if uids.iter().any(|u| name.contains(u.as_str())) {
                        n += 1;
                    }
                    // Only Ferry's roots are walked deeply.
                    if dir.parent() == Some(Path::new("/sys/fs/cgroup"))
                        || dir == Path::new("/sys/fs/cgroup")
                        || e.path().to_string_lossy().contains("ferry")
                    {
                        stack.push(e.path());
                    }
                }
            }
            n
        };
        let ipam = data_dir.join("agent/cni/ipam").join(&net.cni_network);
        let ipam_leases = std::fs::read_dir(&ipam)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.parse::<std::net::Ipv4Addr>().is_ok()
            })
            .count();
        Counts {
            netns,
            veths,
            nft_rules,
            mounts,
            cgroups,
            ipam_leases,
        }
    }
}

//! The pod's `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};

use super::{SandboxContext, SandboxError, SandboxRecord};

/// The generated files, bind-mounted over the container's `/etc/...`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcFiles {
    /// The pod's `hosts`.
    pub hosts: PathBuf,
    /// The pod's `hostname`.
    pub hostname: PathBuf,
    /// The pod's `resolv.conf`.
    pub resolv_conf: PathBuf,
}

/// Writes the pod's files into `<pod dir>/etc` (as the kubelet does):
/// - `hosts`: the localhost lines, the pod IP with its hostname (and FQDN
///   `<hostname>.<subdomain>.<ns>.svc.<domain>` when `spec.subdomain` is set), then
///   `spec.hostAliases`; a `hostNetwork` pod gets the host's file plus its aliases;
/// - `hostname`: the pod's hostname (the host's for `hostNetwork` pods);
/// - `resolv.conf`: per `dnsPolicy` ([`resolv_conf`]).
pub fn write(
    ctx: &SandboxContext,
    pod: &Pod,
    record: &SandboxRecord,
    pod_dir: &Path,
) -> Result<Option<EtcFiles>, SandboxError> {
    let dir = pod_dir.join("etc");
    let fail = |p: &Path, e: std::io::Error| SandboxError::Etc(format!("{}: {e}", p.display()));
    std::fs::create_dir_all(&dir).map_err(|e| fail(&dir, e))?;
    let host_hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let host_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let files = EtcFiles {
        hosts: dir.join("hosts"),
        hostname: dir.join("hostname"),
        resolv_conf: dir.join("resolv.conf"),
    };
    let hostname = if record.host_network {
        host_name
    } else {
        pod_hostname(pod)
    };
    for (path, content) in [
        (&files.hosts, hosts(ctx, pod, record, &host_hosts)),
        (&files.hostname, format!("{hostname}\n")),
        (
            &files.resolv_conf,
            resolv_conf(ctx, pod, record.host_network, &host_resolv),
        ),
    ] {
        std::fs::write(path, content).map_err(|e| fail(path, e))?;
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644));
    }
    Ok(Some(files))
}

/// The pod's `/etc/hosts`.
pub fn hosts(ctx: &SandboxContext, pod: &Pod, record: &SandboxRecord, host_hosts: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut out = String::from("# Kubernetes-managed hosts file (Ferry).\n");
    if record.host_network {
        out.push_str(host_hosts);
        if !host_hosts.ends_with('\n') && !host_hosts.is_empty() {
            out.push('\n');
        }
    } else {
        out.push_str(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
             fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n\
             fe00::2\tip6-allrouters\n",
        );
        let hostname = pod_hostname(pod);
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let subdomain = spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty());
        for ip in &record.pod_ips {
            match subdomain {
                Some(sub) => out.push_str(&format!(
                    "{ip}\t{hostname}.{sub}.{ns}.svc.{}\t{hostname}\n",
                    ctx.network.cluster_domain
                )),
                None => out.push_str(&format!("{ip}\t{hostname}\n")),
            }
        }
    }
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if aliases.is_some_and(|a| !a.is_empty()) {
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases.into_iter().flatten() {
            let names = a.hostnames.clone().unwrap_or_default().join("\t");
            out.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    out
}

/// Name servers, search domains and options of a `resolv.conf`.
type Resolver = (Vec<String>, Vec<String>, Vec<(String, Option<String>)>);

/// The pod's `/etc/resolv.conf`: `ClusterFirst` (the default) points at the cluster DNS with
/// the search path `<ns>.svc.<domain> svc.<domain> <domain>` and `ndots:5`; `Default` (and
/// `ClusterFirst` for `hostNetwork` pods) is the host's file; `None` is only `dnsConfig`, which
/// also adds to the other policies.
pub fn resolv_conf(ctx: &SandboxContext, pod: &Pod, host_network: bool, host: &str) -> String {
    let spec = pod.spec.as_ref();
    let policy = spec
        .and_then(|s| s.dns_policy.as_deref())
        .unwrap_or("ClusterFirst");
    let (mut servers, mut searches, mut options): Resolver = (Vec::new(), Vec::new(), Vec::new());
    let host_parsed = || {
        let (mut s, mut d, mut o) = (Vec::new(), Vec::new(), Vec::new());
        for line in host.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => s.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => d.extend(words.map(str::to_string)),
                Some("options") => o.extend(words.map(|w| match w.split_once(':') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.to_string(), None),
                })),
                _ => {}
            }
        }
        (s, d, o)
    };
    let cluster = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    if cluster {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let domain = &ctx.network.cluster_domain;
        servers.push(ctx.network.dns_service_ip().to_string());
        searches = vec![
            format!("{ns}.svc.{domain}"),
            format!("svc.{domain}"),
            domain.clone(),
        ];
        options.push(("ndots".into(), Some("5".into())));
    } else if policy != "None" {
        (servers, searches, options) = host_parsed();
    }
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for s in cfg.nameservers.iter().flatten() {
            if !servers.contains(s) {
                servers.push(s.clone());
            }
        }
        for s in cfg.searches.iter().flatten() {
            if !searches.contains(s) {
                searches.push(s.clone());
            }
        }
        for o in cfg.options.iter().flatten() {
            let Some(name) = o.name.clone() else { continue };
            options.retain(|(k, _)| *k != name);
            options.push((name, o.value.clone()));
        }
    }
    servers.truncate(3);
    let mut out = String::new();
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    if !options.is_empty() {
        let opts: Vec<String> = options
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}:{v}"),
                None => k.clone(),
            })
            .collect();
        out.push_str(&format!("options {}\n", opts.join(" ")));
    }
    out
}

/// Adds the bind mounts of the pod's files over `/etc/hosts`, `/etc/hostname` and
/// `/etc/resolv.conf` (a container's own mounts of those paths win).
pub fn add_mounts(files: &EtcFiles, mounts: &mut Vec<crate::runtime::MountSpec>) {
    for (source, target) in [
        (&files.hosts, "/etc/hosts"),
        (&files.hostname, "/etc/hostname"),
        (&files.resolv_conf, "/etc/resolv.conf"),
    ] {
        let target = PathBuf::from(target);
        if mounts.iter().any(|m| m.target == target) {
            continue;
        }
        mounts.push(crate::runtime::MountSpec {
            source: source.clone(),
            target,
            read_only: false,
        });
    }
}

/// The pod's hostname: `spec.hostname`, else its name, cut to 63 bytes as the kubelet does.
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut cut = name.len().min(63);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    name[..cut].trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_api::network::ClusterNetwork;

    fn ctx() -> SandboxContext {
        SandboxContext {
            network: ClusterNetwork::default(),
            data_dir: "/d".into(),
            mode: super::super::SandboxMode::Isolated,
            cni_bin_dir: "/usr/lib/cni".into(),
            pod_pids_limit: 4096,
        }
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-0", "namespace": "team"},
            "spec": spec,
        }))
        .unwrap()
    }

    #[test]
    fn cluster_first_points_at_the_cluster_dns() {
        let p = pod(serde_json::json!({"containers": []}));
        let r = resolv_conf(&ctx(), &p, false, "nameserver 1.2.3.4\n");
        assert_eq!(
            r,
            "nameserver 10.96.0.10\nsearch team.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        // hostNetwork + ClusterFirst gets the host's; ClusterFirstWithHostNet the cluster's.
        assert_eq!(
            resolv_conf(&ctx(), &p, true, "nameserver 1.2.3.4\n"),
            "nameserver 1.2.3.4\n"
        );
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "ClusterFirstWithHostNet"}));
        assert!(resolv_conf(&ctx(), &p, true, "").starts_with("nameserver 10.96.0.10\n"));
        let p = pod(serde_json::json!({"containers": [], "dnsPolicy": "None",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "searches": ["x.y"], "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}));
        assert_eq!(
            resolv_conf(&ctx(), &p, false, "nameserver 1.2.3.4\n"),
            "nameserver 9.9.9.9\nsearch x.y\noptions ndots:2 edns0\n"
        );
    }

    #[test]
    fn hosts_name_the_pod_and_its_aliases() {
        let p = pod(
            serde_json::json!({"containers": [], "hostname": "h", "subdomain": "sub",
            "hostAliases": [{"ip": "10.1.1.1", "hostnames": ["a", "b"]}]}),
        );
        let record = SandboxRecord {
            pod_ips: vec!["10.244.0.7".into()],
            ..Default::default()
        };
        let h = hosts(&ctx(), &p, &record, "");
        assert!(h.contains("127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("10.244.0.7\th.sub.team.svc.cluster.local\th\n"),
            "{h}"
        );
        assert!(h.contains("10.1.1.1\ta\tb\n"));
    }
}

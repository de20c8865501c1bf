//! The pod network: a network namespace per pod on the node bridge, through the real CNI
//! plugins, and the node's hygiene rules.
//!
//! At agent start, [`prepare_node`] makes the node's side (idempotent, so a restarted agent
//! keeps what its pods use):
//! - the bridge `<bridge>` with the gateway address (`ClusterNetwork::gateway()`), up;
//! - the CNI configuration `<data dir>/cni/net.d/10-<cni_network>.conflist`: `bridge`
//!   (isGateway, hairpinMode, no masquerade) with `host-local` IPAM over the node's pod range
//!   (store under `<data dir>/cni/ipam`), then `portmap` (capability `portMappings`);
//! - routes: the Service range goes to the bridge (so a host socket to a Service IP has a route
//!   and the proxy's DNAT in the output hook applies); the rest of the pod range is
//!   `unreachable`; an `unreachable` fallback (higher metric) covers both ranges;
//! - the nftables table `<nft_table>-pods` (family `ip`): pods reach pods, the host and Service
//!   IPs (after DNAT) and nothing else; a host or pod packet to an unallocated pod address or an
//!   un-translated Service IP is rejected on the spot (`ECONNREFUSED`); a guard counts and drops
//!   any packet of either range about to leave through another interface than the bridge.
//!
//! Per pod, [`setup`] creates `/run/netns/<netns_prefix><uid>` (`ip netns add`), runs
//! `loopback` and the conflist's plugins with `CNI_COMMAND=ADD` (each plugin's result is the
//! next one's `prevResult`; `runtimeConfig.portMappings` from the containers' `hostPort`s),
//! keeps the result in `<pod dir>/cni-result.json` and returns the pod IP. [`teardown`] runs
//! `DEL` in reverse order with that result and removes the namespace. Everything is named in
//! the sandbox record before it is made, so a crash part-way is undone by the next teardown.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_api::network::ClusterNetwork;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{SandboxContext, SandboxError, SandboxRecord};

/// The CNI spec version of the configuration Ferry writes.
pub const CNI_VERSION: &str = "1.0.0";
/// Where Debian's `containernetworking-plugins` live.
pub const DEFAULT_CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The plugins the pod network needs.
pub const PLUGINS: [&str; 4] = ["bridge", "host-local", "loopback", "portmap"];
/// The cached CNI result inside the pod directory.
pub const RESULT_FILE: &str = "cni-result.json";
/// Metric of the `unreachable` fallback routes (any real route wins).
const FALLBACK_METRIC: u32 = 4242;

fn err(m: impl std::fmt::Display) -> SandboxError {
    SandboxError::Network(m.to_string())
}

/// The nftables table of the hygiene rules.
pub fn pods_table(net: &ClusterNetwork) -> String {
    format!("{}-pods", net.nft_table)
}

/// The CNI configuration directory under the agent's data directory.
pub fn conf_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cni/net.d")
}

/// The conflist's path.
pub fn conflist_path(data_dir: &Path, net: &ClusterNetwork) -> PathBuf {
    conf_dir(data_dir).join(format!("10-{}.conflist", net.cni_network))
}

/// The host-local IPAM store (one directory per network inside).
pub fn ipam_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("cni/ipam")
}

/// The pod's network namespace path.
pub fn netns_path(net: &ClusterNetwork, uid: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(netns_name(net, uid))
}

fn netns_name(net: &ClusterNetwork, uid: &str) -> String {
    format!("{}{uid}", net.netns_prefix)
}

/// What is missing for isolated pod networks on this machine (plugins, `ip`, `nft`), if
/// anything.
pub fn missing_tools(cni_bin_dir: &Path) -> Option<String> {
    let mut missing: Vec<String> = PLUGINS
        .iter()
        .filter(|p| !cni_bin_dir.join(p).exists())
        .map(|p| cni_bin_dir.join(p).display().to_string())
        .collect();
    for tool in ["ip", "nft", "iptables"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false);
        if !found {
            missing.push(tool.to_string());
        }
    }
    (!missing.is_empty()).then(|| missing.join(", "))
}

/// The conflist Ferry writes for `net`.
pub fn conflist(net: &ClusterNetwork, data_dir: &Path) -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": net.cni_network,
        "plugins": [
            {
                "type": "bridge",
                "bridge": net.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir(data_dir),
                    "ranges": [[{
                        "subnet": net.node_pod_cidr.to_string(),
                        "gateway": net.gateway().to_string(),
                    }]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            },
        ],
    })
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SandboxError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| err(format!("cannot run {program}: {e}")))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(input.as_bytes())
            .await
            .map_err(|e| err(format!("{program}: cannot write its input: {e}")))?;
    }
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .map_err(|_| err(format!("{program} {} timed out", args.join(" "))))?
        .map_err(|e| err(format!("{program}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn ip(args: &[&str]) -> Result<String, SandboxError> {
    run("ip", args, None).await
}

async fn nft(script: &str) -> Result<String, SandboxError> {
    run("nft", &["-f", "-"], Some(script)).await
}

/// The hygiene table, with the addresses of the pods that exist (`allocated`).
fn hygiene_rules(net: &ClusterNetwork, allocated: &[Ipv4Addr]) -> String {
    let t = pods_table(net);
    let br = &net.bridge;
    let (pods, node, svc, gw) = (
        net.pod_cidr,
        net.node_pod_cidr,
        net.service_cidr,
        net.gateway(),
    );
    let elements = if allocated.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = allocated.iter().map(Ipv4Addr::to_string).collect();
        format!("elements = {{ {} }}", list.join(", "))
    };
    let other_pods = if pods == node {
        String::new()
    } else {
        format!("ip daddr {pods} ip daddr != {node} reject\n")
    };
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         set pods {{ type ipv4_addr; {elements} }}\n\
         chain output {{ type filter hook output priority 0; policy accept;\n\
           ip daddr {svc} counter reject comment \"service ip without endpoints\"\n\
           ip daddr {node} ip daddr != @pods ip daddr != {gw} counter reject comment \"unallocated pod ip\"\n\
           {other_pods}\
         }}\n\
         chain forward {{ type filter hook forward priority 0; policy accept;\n\
           iifname \"{br}\" ip daddr {svc} counter reject comment \"service ip without endpoints\"\n\
           iifname \"{br}\" ip daddr @pods accept\n\
           iifname \"{br}\" counter reject with icmp type admin-prohibited comment \"pods reach pods, the host and services only\"\n\
         }}\n\
         chain guard {{ type filter hook postrouting priority 100; policy accept;\n\
           ip daddr {{ {pods}, {svc} }} oifname != {{ \"{br}\", \"lo\" }} counter drop comment \"leak guard\"\n\
         }}\n\
         }}\n"
    )
}

/// Addresses of the pods whose records say they have a network namespace.
fn allocated_ips(pods_dir: &Path) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pods_dir).into_iter().flatten().flatten() {
        if let Ok(Some(record)) = super::load(&entry.path())
            && record.netns.is_some()
        {
            out.extend(
                record
                    .pod_ips
                    .iter()
                    .filter_map(|ip| ip.parse::<Ipv4Addr>().ok()),
            );
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Makes the node's side of the pod network (bridge, conflist, routes, hygiene table);
/// idempotent. `pods_dir` holds the pod records whose addresses are live.
pub async fn prepare_node(ctx: &SandboxContext, pods_dir: &Path) -> Result<(), SandboxError> {
    let net = &ctx.network;
    if let Some(missing) = missing_tools(&ctx.cni_bin_dir) {
        return Err(err(format!("missing on this machine: {missing}")));
    }
    let br = net.bridge.as_str();
    let gw = format!("{}/{}", net.gateway(), net.node_pod_cidr.prefix);
    if ip(&["link", "show", "dev", br]).await.is_err() {
        ip(&["link", "add", br, "type", "bridge"]).await?;
    }
    let addrs = ip(&["-4", "-o", "addr", "show", "dev", br]).await?;
    if !addrs.split_whitespace().any(|w| w == gw) {
        ip(&["addr", "add", &gw, "dev", br]).await?;
    }
    ip(&["link", "set", br, "up"]).await?;
    // Routes: replace is idempotent.
    let svc = net.service_cidr.to_string();
    ip(&["route", "replace", &svc, "dev", br, "proto", "static"]).await?;
    let metric = FALLBACK_METRIC.to_string();
    for range in [net.pod_cidr, net.service_cidr] {
        let r = range.to_string();
        ip(&["route", "replace", "unreachable", &r, "metric", &metric]).await?;
    }
    nft(&hygiene_rules(net, &allocated_ips(pods_dir))).await?;
    let conf = conflist_path(&ctx.data_dir, net);
    std::fs::create_dir_all(conf_dir(&ctx.data_dir))
        .and_then(|()| std::fs::create_dir_all(ipam_dir(&ctx.data_dir)))
        .and_then(|()| {
            std::fs::write(
                &conf,
                serde_json::to_vec_pretty(&conflist(net, &ctx.data_dir)).expect("json"),
            )
        })
        .map_err(|e| err(format!("cannot write {}: {e}", conf.display())))?;
    tracing::info!(bridge = br, gateway = %net.gateway(), table = %pods_table(net), "node pod network ready");
    Ok(())
}

/// Removes the node's side of `net` (bridge, routes, hygiene table) and every network
/// namespace with its prefix: for test planes ending, never while pods run.
pub fn remove_node(net: &ClusterNetwork) {
    let quiet = |args: &[&str]| {
        let _ = std::process::Command::new(args[0])
            .args(&args[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    for entry in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&net.netns_prefix) {
            quiet(&["ip", "netns", "del", &name]);
        }
    }
    quiet(&["ip", "link", "del", &net.bridge]);
    let metric = FALLBACK_METRIC.to_string();
    for range in [net.pod_cidr, net.service_cidr] {
        let r = range.to_string();
        quiet(&["ip", "route", "del", "unreachable", &r, "metric", &metric]);
    }
    quiet(&["ip", "route", "del", &net.service_cidr.to_string()]);
    quiet(&["nft", "delete", "table", "ip", &pods_table(net)]);
    // portmap's rules for pods of this network that were never torn down.
    let saved = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mark = format!("name: \\\"{}\\\"", net.cni_network);
    for line in saved.lines() {
        let Some(rule) = line.strip_prefix("-A CNI-HOSTPORT-DNAT ") else {
            continue;
        };
        if !rule.contains(&mark) {
            continue;
        }
        // iptables-save quotes for a shell; let one parse it back.
        quiet(&[
            "sh",
            "-c",
            &format!("iptables -w -t nat -D CNI-HOSTPORT-DNAT {rule}"),
        ]);
        if let Some(chain) = rule
            .rsplit(" -j ")
            .next()
            .filter(|c| c.starts_with("CNI-DN-"))
        {
            quiet(&["iptables", "-w", "-t", "nat", "-F", chain]);
            quiet(&["iptables", "-w", "-t", "nat", "-X", chain]);
        }
    }
}

/// Creates a network namespace bound at `path` (what `ip netns add` does): a thread of its own
/// unshares its network namespace and bind-mounts it; the thread then ends, the mount keeps
/// the namespace.
fn create_netns(path: &Path) -> std::io::Result<()> {
    use nix::mount::{MsFlags, mount};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    let made = std::thread::spawn(move || -> std::io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )?;
        Ok(())
    })
    .join()
    .map_err(|_| std::io::Error::other("the namespace thread panicked"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Unmounts and removes a namespace made by [`create_netns`] (or `ip netns add`).
fn remove_netns(path: &Path) -> std::io::Result<()> {
    match nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A container port published on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    host_port: u16,
    container_port: u16,
    protocol: String,
    host_ip: String,
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|p| *p > 0) else {
                continue;
            };
            out.push(HostPort {
                host_port: hp as u16,
                container_port: p.container_port as u16,
                protocol: p
                    .protocol
                    .clone()
                    .unwrap_or_else(|| "TCP".into())
                    .to_lowercase(),
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    out
}

/// Fails when a host port is already held by a process of this machine.
fn check_ports_free(ports: &[HostPort]) -> Result<(), SandboxError> {
    for p in ports {
        let ip: std::net::IpAddr = p
            .host_ip
            .parse()
            .unwrap_or(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let addr = std::net::SocketAddr::new(ip, p.host_port);
        let held = match p.protocol.as_str() {
            "udp" => std::net::UdpSocket::bind(addr).err(),
            _ => std::net::TcpListener::bind(addr).err(),
        };
        if let Some(e) = held {
            return Err(err(format!(
                "hostPort {}/{} is not available on the node: {e}",
                p.host_port,
                p.protocol.to_uppercase()
            )));
        }
    }
    Ok(())
}

struct Cni<'a> {
    ctx: &'a SandboxContext,
    container_id: &'a str,
    netns: &'a Path,
}

impl Cni<'_> {
    /// Runs one plugin; returns its stdout (the result, for ADD).
    async fn exec(
        &self,
        command: &str,
        ifname: &str,
        conf: &Value,
    ) -> Result<String, SandboxError> {
        use tokio::io::AsyncWriteExt;
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let program = self.ctx.cni_bin_dir.join(&plugin);
        let mut child = tokio::process::Command::new(&program)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_NETNS", self.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.ctx.cni_bin_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| err(format!("cannot run CNI plugin {}: {e}", program.display())))?;
        let input = serde_json::to_vec(conf).expect("json");
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(&input)
            .await
            .map_err(|e| err(format!("CNI plugin {plugin}: {e}")))?;
        drop(pipe);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .map_err(|_| err(format!("CNI plugin {plugin} {command} timed out")))?
            .map_err(|e| err(format!("CNI plugin {plugin}: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            // Errors come as JSON on stdout ({"code","msg","details"}).
            let msg = serde_json::from_str::<Value>(&stdout)
                .ok()
                .and_then(|v| {
                    let m = v["msg"].as_str()?.to_string();
                    Some(match v["details"].as_str() {
                        Some(d) if !d.is_empty() => format!("{m}: {d}"),
                        _ => m,
                    })
                })
                .unwrap_or_else(|| {
                    format!(
                        "{}{}",
                        stdout.trim(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                });
            return Err(err(format!("CNI plugin {plugin} {command}: {msg}")));
        }
        Ok(stdout)
    }

    /// The configuration of plugin `index` of the conflist, as the runtime passes it.
    fn plugin_conf(
        list: &Value,
        plugin: &Value,
        prev: Option<&Value>,
        runtime: &serde_json::Map<String, Value>,
    ) -> Value {
        let mut conf = plugin.clone();
        conf["cniVersion"] = list["cniVersion"].clone();
        conf["name"] = list["name"].clone();
        if let Some(prev) = prev {
            conf["prevResult"] = prev.clone();
        }
        if let Some(caps) = plugin["capabilities"].as_object() {
            let rc: serde_json::Map<String, Value> = runtime
                .iter()
                .filter(|(k, _)| caps.get(*k).and_then(Value::as_bool).unwrap_or(false))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if !rc.is_empty() {
                conf["runtimeConfig"] = Value::Object(rc);
            }
        }
        conf
    }

    fn loopback_conf() -> Value {
        json!({"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"})
    }

    async fn add(
        &self,
        list: &Value,
        runtime: &serde_json::Map<String, Value>,
    ) -> Result<Value, SandboxError> {
        // `lo` and `eth0` are independent: both at once.
        let lo_conf = Self::loopback_conf();
        let lo = self.exec("ADD", "lo", &lo_conf);
        let chain = async {
            let mut prev: Option<Value> = None;
            for plugin in list["plugins"].as_array().into_iter().flatten() {
                if skipped(plugin, runtime) {
                    continue;
                }
                let conf = Self::plugin_conf(list, plugin, prev.as_ref(), runtime);
                let out = self.exec("ADD", "eth0", &conf).await?;
                prev = Some(
                    serde_json::from_str(&out)
                        .map_err(|e| err(format!("CNI result is not JSON ({e}): {out}")))?,
                );
            }
            prev.ok_or_else(|| err("the CNI configuration has no plugins"))
        };
        let (lo, result) = tokio::join!(lo, chain);
        lo?;
        result
    }

    async fn del(
        &self,
        list: &Value,
        prev: Option<&Value>,
        runtime: &serde_json::Map<String, Value>,
    ) -> Result<(), SandboxError> {
        let mut first_error = None;
        for plugin in list["plugins"].as_array().into_iter().flatten().rev() {
            if prev.is_some() && skipped(plugin, runtime) {
                continue;
            }
            let conf = Self::plugin_conf(list, plugin, prev, runtime);
            if let Err(e) = self.exec("DEL", "eth0", &conf).await {
                first_error.get_or_insert(e);
            }
        }
        if self.netns.exists()
            && let Err(e) = self.exec("DEL", "lo", &Self::loopback_conf()).await
        {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// `portmap` without port mappings does nothing: it is not run (saves a process per pod).
/// DEL without a cached result runs every plugin.
fn skipped(plugin: &Value, runtime: &serde_json::Map<String, Value>) -> bool {
    plugin["type"] == "portmap" && !runtime.contains_key("portMappings")
}

fn runtime_config(pod: Option<&Pod>, ports: &[HostPort]) -> serde_json::Map<String, Value> {
    let mut rc = serde_json::Map::new();
    let _ = pod;
    if !ports.is_empty() {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|p| {
                let mut m = json!({
                    "hostPort": p.host_port,
                    "containerPort": p.container_port,
                    "protocol": p.protocol,
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                m
            })
            .collect();
        rc.insert("portMappings".into(), Value::Array(mappings));
    }
    rc
}

fn read_conflist(ctx: &SandboxContext) -> Result<Value, SandboxError> {
    let path = conflist_path(&ctx.data_dir, &ctx.network);
    let text = std::fs::read(&path).map_err(|e| {
        err(format!(
            "cannot read the CNI configuration {}: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| err(format!("{}: {e}", path.display())))
}

/// The pod IPs of a CNI result.
pub fn result_ips(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect()
}

async fn set_element(net: &ClusterNetwork, verb: &str, ips: &[String]) -> Result<(), SandboxError> {
    let mut v4: Vec<&str> = ips
        .iter()
        .map(String::as_str)
        .filter(|ip| ip.parse::<Ipv4Addr>().is_ok())
        .collect();
    v4.sort_unstable();
    v4.dedup();
    if v4.is_empty() {
        return Ok(());
    }
    nft(&format!(
        "{verb} element ip {} pods {{ {} }}\n",
        pods_table(net),
        v4.join(", ")
    ))
    .await
    .map(|_| ())
}

/// Lists (`allow`) or unlists pod addresses in the hygiene table's set of live pods, for
/// sandboxes whose network another runtime made (containerd's CNI call): without it the node
/// rejects their traffic, DNS answers included, as sent to unallocated addresses.
pub async fn list_pod_ips(
    net: &ClusterNetwork,
    ips: &[String],
    allow: bool,
) -> Result<(), SandboxError> {
    set_element(net, if allow { "add" } else { "delete" }, ips).await
}

/// Creates the pod's network namespace and attaches it to the bridge; records the namespace in
/// `record` (saved in `pod_dir`) before anything is made, and returns the pod IPs.
pub async fn setup(
    ctx: &SandboxContext,
    pod: &Pod,
    uid: &str,
    pod_dir: &Path,
    record: &mut SandboxRecord,
) -> Result<Vec<String>, SandboxError> {
    let ports = host_ports(pod);
    check_ports_free(&ports)?;
    let list = read_conflist(ctx)?;
    let path = netns_path(&ctx.network, uid);
    if record.netns.is_some() || path.exists() {
        // A crash part-way through an earlier attempt: undo it first.
        teardown(ctx, uid, record, pod_dir).await?;
    }
    record.netns = Some(path.clone());
    record.pod_ips.clear();
    super::save(pod_dir, record)?;
    let made = path.clone();
    tokio::task::spawn_blocking(move || create_netns(&made))
        .await
        .map_err(|e| err(format!("cannot create a network namespace: {e}")))?
        .map_err(|e| err(format!("cannot create {}: {e}", path.display())))?;
    let cni = Cni {
        ctx,
        container_id: uid,
        netns: &path,
    };
    let result = cni.add(&list, &runtime_config(Some(pod), &ports)).await?;
    let result_path = pod_dir.join(RESULT_FILE);
    std::fs::write(
        &result_path,
        serde_json::to_vec(
            &json!({"result": result, "runtimeConfig": runtime_config(Some(pod), &ports)}),
        )
        .expect("json"),
    )
    .map_err(|e| err(format!("cannot write {}: {e}", result_path.display())))?;
    let ips = result_ips(&result);
    if ips.is_empty() {
        return Err(err(format!("the CNI result has no address: {result}")));
    }
    set_element(&ctx.network, "add", &ips).await?;
    Ok(ips)
}

/// Detaches and removes the pod's network namespace (CNI `DEL` with the cached result, then the
/// namespace). Idempotent.
pub async fn teardown(
    ctx: &SandboxContext,
    uid: &str,
    record: &SandboxRecord,
    pod_dir: &Path,
) -> Result<(), SandboxError> {
    let path = record
        .netns
        .clone()
        .unwrap_or_else(|| netns_path(&ctx.network, uid));
    let cached: Option<Value> = std::fs::read(pod_dir.join(RESULT_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let prev = cached.as_ref().map(|c| c["result"].clone());
    let runtime = cached
        .as_ref()
        .and_then(|c| c["runtimeConfig"].as_object().cloned())
        .unwrap_or_default();
    let cni = Cni {
        ctx,
        container_id: uid,
        netns: &path,
    };
    match read_conflist(ctx) {
        Ok(list) => cni.del(&list, prev.as_ref(), &runtime).await?,
        // Without its configuration no plugin can run; the namespace still goes.
        Err(e) => {
            tracing::warn!(error = %e, "no CNI configuration to release the pod's network with")
        }
    }
    let mut ips = record.pod_ips.clone();
    if let Some(p) = &prev {
        ips.extend(result_ips(p));
    }
    // The table may be gone (a test plane's cleanup); the address is then no longer listed.
    let _ = set_element(&ctx.network, "delete", &ips).await;
    if path.exists() {
        remove_netns(&path).map_err(|e| err(format!("cannot remove {}: {e}", path.display())))?;
    }
    let _ = std::fs::remove_file(pod_dir.join(RESULT_FILE));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_names_the_plan() {
        let net = ClusterNetwork::for_index(7);
        let c = conflist(&net, Path::new("/data"));
        assert_eq!(c["name"], "ferryt7");
        assert_eq!(c["plugins"][0]["bridge"], "ferryt7");
        assert_eq!(c["plugins"][0]["isGateway"], true);
        assert_eq!(c["plugins"][0]["ipMasq"], false);
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/data/cni/ipam");
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.245.7.0/24"
        );
        assert_eq!(c["plugins"][1]["capabilities"]["portMappings"], true);
        assert_eq!(
            conflist_path(Path::new("/data"), &net),
            Path::new("/data/cni/net.d/10-ferryt7.conflist")
        );
    }

    #[test]
    fn plugin_conf_chains_and_filters_capabilities() {
        let net = ClusterNetwork::for_index(7);
        let list = conflist(&net, Path::new("/d"));
        let mut rc = serde_json::Map::new();
        rc.insert("portMappings".into(), json!([{"hostPort": 80}]));
        rc.insert("bandwidth".into(), json!({}));
        let prev = json!({"ips": [{"address": "10.245.7.2/24"}]});
        let bridge = Cni::plugin_conf(&list, &list["plugins"][0], None, &rc);
        assert!(bridge.get("runtimeConfig").is_none());
        assert_eq!(bridge["name"], "ferryt7");
        let pm = Cni::plugin_conf(&list, &list["plugins"][1], Some(&prev), &rc);
        assert_eq!(pm["runtimeConfig"]["portMappings"][0]["hostPort"], 80);
        assert!(pm["runtimeConfig"].get("bandwidth").is_none());
        assert_eq!(result_ips(&pm["prevResult"]), vec!["10.245.7.2"]);
    }

    #[test]
    fn hygiene_rules_cover_both_ranges() {
        let net = ClusterNetwork::default();
        let r = hygiene_rules(&net, &[Ipv4Addr::new(10, 244, 0, 5)]);
        assert!(r.contains("table ip ferry-pods"));
        assert!(r.contains("elements = { 10.244.0.5 }"));
        assert!(r.contains("ip daddr 10.96.0.0/16 counter reject"));
        assert!(r.contains("ip daddr 10.244.0.0/16 ip daddr != 10.244.0.0/24 reject"));
        assert!(r.contains("oifname != { \"ferry0\", \"lo\" } counter drop"));
        let t = hygiene_rules(&ClusterNetwork::for_index(3), &[]);
        assert!(!t.contains("elements"));
    }
}

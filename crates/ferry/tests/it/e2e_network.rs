//! The pod network end to end, with real kubectl, real CNI plugins and real processes: two pods
//! on the same port side by side, each reachable at its own IP from the host and from another
//! pod; a pod reaching the host; `hostNetwork` and `hostPort`; the pod's `/etc` files; network
//! hygiene (addresses of the pod and Service ranges that nothing serves are refused on the
//! machine, never routed out); and nothing leaking across a pod's life, an agent restart, an
//! agent crash and a deletion while the agent is away.

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::leaks::Counts;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(60);

async fn start() -> common::TestPlane {
    common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        agent.shim = Some(common::shim_command());
        agent.sandbox = ferry_agent::sandbox::SandboxMode::Isolated;
        c.agent = Some(agent);
    })
    .await
}

/// Another agent on the plane's data directory (as after a restart).
async fn restart_agent(t: &common::TestPlane) -> ferry_agent::AgentHandle {
    let mut config =
        ferry_agent::AgentConfig::new("test-node", t.dir.path().join("data").join("agent"));
    config.gpus = ferry_agent::gpu::GpuSource::Disabled;
    config.network = t.network.clone();
    config.log_server_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    config.shim = common::shim_command();
    config.sandbox = ferry_agent::sandbox::SandboxMode::Isolated;
    config.tls = Some(
        t.plane
            .agent_tls("test-node", config.node_ip)
            .expect("agent certificate"),
    );
    ferry_agent::start(t.client.clone(), config)
        .await
        .expect("agent restarts")
}

fn web_pod(name: &str, port: u16, extra: &str) -> String {
    web_pod_on(name, port, extra, "{}")
}

/// A web pod whose `/srv` is the emptyDir `empty_dir` (its spec, YAML flow style).
fn web_pod_on(name: &str, port: u16, extra: &str, empty_dir: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers:\n  - name: web\n    image: python\n    command: [sh, -c, 'hostname > /srv/name && exec python3 -m http.server {port} --bind 0.0.0.0 --directory /srv']\n    volumeMounts: [{{name: srv, mountPath: /srv}}]\n{extra}  volumes: [{{name: srv, emptyDir: {empty_dir}}}]\n"
    )
}

/// Waits for the pod to run and returns its IP.
async fn running_ip(pods: &Api<Pod>, name: &str) -> String {
    common::eventually(&format!("{name} Running with a pod IP"), WAIT, async || {
        let s = pods.get_opt(name).await.ok().flatten()?.status?;
        (s.phase.as_deref() == Some("Running")).then_some(())?;
        s.pod_ip
    })
    .await
}

async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    Ok(body
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string())
}

async fn eventually_get(addr: SocketAddr, path: &str) -> String {
    common::eventually(&format!("GET http://{addr}{path}"), WAIT, async || {
        http_get(addr, path).await.ok()
    })
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Packets the plane's leak guard dropped (pod- or Service-range packets about to leave by
/// another interface than the bridge).
fn guard_drops(net: &ferry_api::network::ClusterNetwork) -> u64 {
    let out = std::process::Command::new("nft")
        .args([
            "list",
            "chain",
            "ip",
            &format!("{}-pods", net.nft_table),
            "guard",
        ])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    let n = text
        .split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("no guard counter in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_their_own_network_and_reach_each_other_and_the_host() {
    if !common::sandbox_capable("pods_get_their_own_network_and_reach_each_other_and_the_host") {
        return;
    }
    let t = start().await;
    let net = t.network.clone();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");

    // Two pods on the same port, side by side.
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod("web-a", 8080, ""))
        .success();
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod("web-b", 8080, ""))
        .success();
    let a = running_ip(&pods, "web-a").await;
    let b = running_ip(&pods, "web-b").await;
    assert_ne!(a, b);
    for (name, ip) in [("web-a", &a), ("web-b", &b)] {
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert!(
            net.node_pod_cidr.contains(ip),
            "{ip} outside {}",
            net.node_pod_cidr
        );
        assert_ne!(ip, net.gateway());
        let body = eventually_get(SocketAddr::new(IpAddr::V4(ip), 8080), "/name").await;
        assert_eq!(body.trim(), name, "the pod answers with its own hostname");
    }
    let pod = pods.get("web-a").await.unwrap();
    let ips: Vec<String> = pod
        .status
        .unwrap()
        .pod_ips
        .unwrap()
        .into_iter()
        .map(|i| i.ip)
        .collect();
    assert_eq!(ips, vec![a.clone()]);

    // From another pod: both web pods, the host at the gateway, and the pod's /etc files.
    let host = tokio::net::TcpListener::bind((net.gateway(), 0))
        .await
        .unwrap();
    let host_port = host.local_addr().unwrap().port();
    let answer = tokio::spawn(async move {
        let (mut s, peer) = host.accept().await.unwrap();
        s.write_all(b"host-ok\n").await.unwrap();
        peer
    });
    let script = format!(
        "import socket, urllib.request\n\
         for ip in ['{a}', '{b}']:\n    print('GOT', urllib.request.urlopen('http://%s:8080/name' % ip, timeout=5).read().decode().strip())\n\
         s = socket.create_connection(('{gw}', {host_port}), timeout=5)\n\
         print('HOST', s.recv(100).decode().strip())\n\
         print(open('/etc/resolv.conf').read())\n\
         print(open('/etc/hosts').read())\n\
         print('HOSTNAME', open('/etc/hostname').read().strip(), socket.gethostname())\n\
         try:\n    open('/srv/ro/x', 'w')\n    print('RO writable')\nexcept OSError as e:\n    print('RO refused', e.errno)\n",
        gw = net.gateway()
    );
    let client = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "client"},
        "spec": {
            "restartPolicy": "Never",
            "hostname": "cli", "subdomain": "sub",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["alias.example"]}],
            "containers": [{"name": "c", "image": "python", "command": ["python3", "-c", script],
                "volumeMounts": [{"name": "ro", "mountPath": "/srv/ro", "readOnly": true}]}],
            "volumes": [{"name": "ro", "emptyDir": {}}],
        },
    });
    t.kubectl_stdin(&["apply", "-f", "-"], &client.to_string())
        .success();
    let phase = common::eventually("client done", WAIT, async || {
        let p = pods.get_opt("client").await.ok().flatten()?.status?.phase?;
        matches!(p.as_str(), "Succeeded" | "Failed").then_some(p)
    })
    .await;
    let logs = t.kubectl(&["logs", "client"]).success();
    assert_eq!(phase, "Succeeded", "{logs}");
    assert!(
        logs.contains("GOT web-a\nGOT web-b\nHOST host-ok"),
        "{logs}"
    );
    let peer = answer.await.unwrap();
    assert!(net.node_pod_cidr.contains(match peer.ip() {
        IpAddr::V4(v) => v,
        other => panic!("{other}"),
    }));
    assert!(
        logs.contains(&format!(
            "nameserver {}\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5",
            net.dns_service_ip()
        )),
        "{logs}"
    );
    assert!(
        logs.contains("cli.sub.default.svc.cluster.local\tcli"),
        "{logs}"
    );
    assert!(logs.contains("10.1.2.3\talias.example"), "{logs}");
    assert!(logs.contains("HOSTNAME cli cli"), "{logs}");
    assert!(
        logs.contains("RO refused 30"),
        "a readOnly mount refuses writes (EROFS): {logs}"
    );
    // The terminal pod's network is gone, its address stays in the status.
    let client_ip = pods.get("client").await.unwrap().status.unwrap().pod_ip;
    assert!(client_ip.is_some());

    // hostNetwork keeps the host's network (and the host's resolv.conf with ClusterFirst).
    let hp = free_port();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: hostnet}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: web\n    image: python\n    command: [sh, -c, 'cat /etc/resolv.conf; mkdir -p /tmp/hostnet-{hp} && echo hostnet > /tmp/hostnet-{hp}/name && exec python3 -m http.server {hp} --bind 127.0.0.1 --directory /tmp/hostnet-{hp}']\n"
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    let ip = running_ip(&pods, "hostnet").await;
    assert_eq!(ip, "127.0.0.1", "a hostNetwork pod has the node's IP");
    let body = eventually_get(SocketAddr::from(([127, 0, 0, 1], hp)), "/name").await;
    assert_eq!(body.trim(), "hostnet");
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap();
    let logs = t.kubectl(&["logs", "hostnet"]).success();
    assert!(logs.starts_with(host_resolv.trim()), "{logs}");

    // hostPort: reachable through the node's addresses (here the gateway).
    let hport = free_port();
    let extra = format!("    ports: [{{containerPort: 8080, hostPort: {hport}}}]\n");
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod("web-hp", 8080, &extra))
        .success();
    running_ip(&pods, "web-hp").await;
    let body = eventually_get(SocketAddr::new(IpAddr::V4(net.gateway()), hport), "/name").await;
    assert_eq!(body.trim(), "web-hp");

    // A hostPort held on the host: a clear event, no network made.
    let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let extra = format!("    ports: [{{containerPort: 8080, hostPort: {held_port}}}]\n");
    let netns_before = Counts::take(&net, &t.dir.path().join("data"), &[]).netns;
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod("web-busy", 8080, &extra))
        .success();
    let message = common::eventually("FailedCreatePodSandBox event", WAIT, async || {
        let out = t
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=web-busy,reason=FailedCreatePodSandBox",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .success();
        (!out.is_empty()).then_some(out)
    })
    .await;
    assert!(
        message.contains(&format!("hostPort {held_port}/TCP is not available")),
        "{message}"
    );
    let p = pods.get("web-busy").await.unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
    assert_eq!(
        Counts::take(&net, &t.dir.path().join("data"), &[]).netns,
        netns_before
    );
    drop(held);
    assert_eq!(
        guard_drops(&net),
        0,
        "nothing of the pod or Service range left the machine"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unserved_pod_and_service_addresses_are_refused_locally() {
    if !common::sandbox_capable("unserved_pod_and_service_addresses_are_refused_locally") {
        return;
    }
    let t = start().await;
    let net = t.network.clone();
    let unallocated_pod = net.node_pod_cidr.nth(200).unwrap();
    let no_endpoints = net.service_cidr.nth(50).unwrap();
    for ip in [unallocated_pod, no_endpoints] {
        let route = std::process::Command::new("ip")
            .args(["route", "get", &ip.to_string()])
            .output()
            .unwrap();
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains(&net.bridge),
            "{ip} is routed to the bridge: {route}"
        );
        let started = Instant::now();
        let res = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect((ip, 80)),
        )
        .await
        .expect("the connect fails at once, it does not hang");
        let e = res.expect_err("nothing serves this address");
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::HostUnreachable
            ),
            "{ip}: {e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{ip}: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(
        guard_drops(&net),
        0,
        "nothing was about to leave through another interface"
    );
}

/// The counts once they equal `want`, or the last ones after [`WAIT`].
async fn settle(
    net: &ferry_api::network::ClusterNetwork,
    data: &std::path::Path,
    uids: &[String],
    want: &Counts,
) -> Counts {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = Counts::take(net, data, uids);
        if &c == want || Instant::now() > deadline {
            if &c != want {
                eprintln!("{}", common::leaks::describe(net));
            }
            return c;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The counts once the cluster's own Services (`kubernetes`, `kube-dns`) have their endpoints
/// and the Service proxy has written their rules: those rules belong to live Services, not to
/// any pod, and arrive a moment after the plane starts.
async fn baseline(t: &common::TestPlane, data: &std::path::Path) -> Counts {
    for (ns, name) in [("default", "kubernetes"), ("kube-system", "kube-dns")] {
        common::eventually(&format!("the endpoints of {ns}/{name}"), WAIT, async || {
            let out = t.kubectl(&[
                "get",
                "endpoints",
                name,
                "-n",
                ns,
                "-o",
                "jsonpath={.subsets[*].addresses[*].ip}",
            ]);
            (out.ok && !out.stdout.trim().is_empty()).then_some(())
        })
        .await;
    }
    // Then until two samples a second apart agree.
    let mut last = Counts::take(&t.network, data, &[]);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Counts::take(&t.network, data, &[]);
        if now == last {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_crashes_and_deletions_while_away_leak_nothing() {
    if !common::sandbox_capable("restarts_crashes_and_deletions_while_away_leak_nothing") {
        return;
    }
    let mut t = start().await;
    let net = t.network.clone();
    let data = t.dir.path().join("data");
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let before = baseline(&t, &data).await;
    let mut uids = Vec::new();

    // A pod's whole life.
    let memory = "{medium: Memory, sizeLimit: 16Mi}";
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod_on("life", 8080, "", memory))
        .success();
    let ip = running_ip(&pods, "life").await;
    uids.push(pods.get("life").await.unwrap().metadata.uid.unwrap());
    let during = Counts::take(&net, &data, &uids);
    assert_eq!(during.netns, before.netns + 1, "{during:?}");
    assert_eq!(during.veths, before.veths + 1, "{during:?}");
    assert_eq!(during.ipam_leases, before.ipam_leases + 1, "{during:?}");
    assert_eq!(
        during.mounts,
        before.mounts + 3,
        "the netns, the memory emptyDir and the service-account token's tmpfs: {during:?}"
    );
    eventually_get(SocketAddr::new(ip.parse().unwrap(), 8080), "/name").await;
    t.kubectl(&["delete", "pod", "life", "--wait=true", "--timeout=60s"])
        .success();
    assert_eq!(settle(&net, &data, &uids, &before).await, before);

    // A clean agent restart adopts the running pod: same namespace, same address.
    t.kubectl_stdin(&["apply", "-f", "-"], &web_pod("kept", 8080, ""))
        .success();
    let ip = running_ip(&pods, "kept").await;
    uids.push(pods.get("kept").await.unwrap().metadata.uid.unwrap());
    let running = Counts::take(&net, &data, &uids);
    t.plane.agent.take().unwrap().stop().await;
    let agent = restart_agent(&t).await;
    // Give the new agent a full sync, then check nothing was made twice.
    common::eventually("the restarted agent's status", WAIT, async || {
        let p = pods.get("kept").await.ok()?;
        let ready = p
            .status?
            .conditions?
            .into_iter()
            .any(|c| c.type_ == "Ready");
        ready.then_some(())
    })
    .await;
    eventually_get(SocketAddr::new(ip.parse().unwrap(), 8080), "/name").await;
    assert_eq!(running_ip(&pods, "kept").await, ip);
    assert_eq!(Counts::take(&net, &data, &uids), running);

    // A crash (the handle dropped: tasks aborted), then a deletion while the agent is away.
    drop(agent);
    t.kubectl(&["delete", "pod", "kept", "--force", "--grace-period=0"])
        .success();
    assert_eq!(
        Counts::take(&net, &data, &uids),
        running,
        "nobody cleaned up yet"
    );
    let agent = restart_agent(&t).await;
    assert_eq!(settle(&net, &data, &uids, &before).await, before);
    assert_eq!(guard_drops(&net), 0);
    agent.stop().await;
}

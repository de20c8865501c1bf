//! Pod cgroups across agent restarts: a running pod's cgroup is adopted (recorded in
//! `sandbox.json`), its container keeps running in it, the Summary API reports it, and the
//! cgroup is removed with the pod. Needs root (skipped loudly otherwise; fails under CI).

mod common;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{alive, cluster, container_status, phase, wait_dead, wait_file};
use ferry_agent::sandbox::cgroup::Driver;
use kube::api::DeleteParams;
use serde_json::json;

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    let message = format!("{test}: needs root (cgroups)");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{message}, and CI is set: refusing to skip");
    }
    eprintln!("SKIPPED {message}");
    false
}

/// A test network slot of its own (the same locks as the `ferry` crate's test planes).
fn slot() -> (u8, std::fs::File) {
    let dir = std::path::Path::new("/run/ferry-test-net");
    std::fs::create_dir_all(dir).unwrap();
    for n in 1..=200u8 {
        let f = std::fs::File::create(dir.join(format!("{n}.lock"))).unwrap();
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return (n, f);
        }
    }
    panic!("no free test network slot");
}

/// The cgroup path of `pid` in the memory hierarchy (v1) or the unified one (v2).
fn memory_cgroup_of(pid: i32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    text.lines()
        .find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrl, path) = (parts.next()?, parts.next()?, parts.next()?);
            (ctrl.split(',').any(|c| c == "memory")).then(|| path.to_string())
        })
        .or_else(|| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_default()
}

/// Removes the node network the agent made for the slot (bridge, routes, hygiene table) when
/// the test ends.
struct NodeNetwork(ferry_api::network::ClusterNetwork);

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        ferry_agent::sandbox::network::remove_node(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_cgroup_is_adopted_across_agent_restarts_and_removed_with_the_pod() {
    if !root_or_skip("a_pod_cgroup_is_adopted_across_agent_restarts_and_removed_with_the_pod") {
        return;
    }
    let driver = Driver::host().unwrap();
    let (n, _lock) = slot();
    let network = ferry_api::network::ClusterNetwork::for_index(n);
    let _net = NodeNetwork(network.clone());
    let root = network.nft_table.clone();
    let c = cluster().await;
    let config = {
        let network = network.clone();
        move |cfg: &mut ferry_agent::AgentConfig| {
            cfg.network = network.clone();
            cfg.sandbox = ferry_agent::sandbox::SandboxMode::Isolated;
        }
    };
    let agent = c.agent_with(config.clone()).await;
    let pidfile = c.dir.path().join("pid");
    let pod = c
        .create_pod(json!({
            "metadata": {"name": "kept"},
            "spec": {"containers": [{"name": "c", "image": "x",
                "command": ["sh", "-c", format!("echo $$$$ > {}; exec sleep 300", pidfile.display())],
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "100m"}}}]}
        }))
        .await;
    let uid = pod.metadata.uid.unwrap();
    c.wait_pod("kept", "Running", |p| phase(p) == "Running")
        .await;
    let pid: i32 = wait_file(&pidfile).await.trim().parse().unwrap();
    let expected = format!("/{root}/burstable/pod{uid}/c");
    assert_eq!(memory_cgroup_of(pid), expected);
    let record =
        std::fs::read_to_string(c.agent_dir().join("pods").join(&uid).join("sandbox.json"))
            .unwrap();
    assert!(
        record.contains(&format!("{root}/burstable/pod{uid}")),
        "{record}"
    );

    // The Summary API reports the pod and its container.
    let summary = http_summary(&c, agent.log_server_addr()).await;
    let pods = summary["pods"].as_array().cloned().unwrap_or_default();
    let kept = pods
        .iter()
        .find(|p| p["podRef"]["uid"] == uid.as_str())
        .unwrap_or_else(|| panic!("kept missing from {summary}"));
    assert_eq!(kept["containers"][0]["name"], "c");
    assert!(
        kept["containers"][0]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(summary["node"]["cpu"]["usageNanoCores"].as_u64().unwrap() > 0);
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0
    );

    // The agent crashes and comes back: the pod keeps its process and its cgroup.
    drop(agent);
    let agent = c.agent_with(config.clone()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(pid));
    assert_eq!(memory_cgroup_of(pid), expected);
    let p = c.pods().get("kept").await.unwrap();
    assert_eq!(container_status(&p, "c").unwrap().restart_count, 0);
    assert!(
        driver
            .dirs(&format!("{root}/burstable/pod{uid}/c"))
            .iter()
            .all(|d| d.exists())
    );

    c.pods()
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    wait_dead(pid, Duration::from_secs(30)).await;
    c.wait_gone("kept").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while driver.dirs(&root).iter().any(|d| d.exists()) {
        assert!(
            Instant::now() < deadline,
            "the cgroups of {root} were not removed: {:?}",
            driver.dirs(&root)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop().await;
}

async fn http_summary(c: &common::Cluster, addr: std::net::SocketAddr) -> serde_json::Value {
    let (code, body) = common::agent_get(c.kubelet.clone(), addr, "/stats/summary".into()).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_pod_pids_limit_bounds_a_fork_loop() {
    if !root_or_skip("the_agents_pod_pids_limit_bounds_a_fork_loop") {
        return;
    }
    let driver = Driver::host().unwrap();
    let (n, _lock) = slot();
    let network = ferry_api::network::ClusterNetwork::for_index(n);
    let _net = NodeNetwork(network.clone());
    let root = network.nft_table.clone();
    let c = cluster().await;
    let agent = c
        .agent_with(|cfg| {
            cfg.network = network.clone();
            cfg.sandbox = ferry_agent::sandbox::SandboxMode::Isolated;
            cfg.pod_pids_limit = 32;
        })
        .await;
    let count = c.dir.path().join("count");
    // Starts background sleeps until fork fails, which ends the shell (exit 2).
    let script = format!(
        "i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); echo $i > {}; done",
        count.display()
    );
    c.create_pod(json!({
        "metadata": {"name": "forker"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x",
            "command": ["sh", "-c", script]}]}
    }))
    .await;
    let p = c
        .wait_pod("forker", "Failed", |p| phase(p) == "Failed")
        .await;
    let term = container_status(&p, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_ne!(term.exit_code, 0);
    let started: u32 = std::fs::read_to_string(&count)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (5..32).contains(&started),
        "{started} background processes started under a pod pids limit of 32"
    );
    c.pods()
        .delete("forker", &DeleteParams::default())
        .await
        .unwrap();
    c.wait_gone("forker").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while driver.dirs(&root).iter().any(|d| d.exists()) {
        assert!(
            Instant::now() < deadline,
            "the cgroups of {root} were not removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop().await;
}

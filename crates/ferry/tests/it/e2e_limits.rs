//! Resource isolation end to end, with real kubectl and real processes in real cgroups: an
//! over-limit pod is `OOMKilled` (exit 137) and restarted by its policy, CPU limits and
//! requests land in the cgroup files, a pids limit bounds a fork loop, `kubectl top node` and
//! `kubectl top pod --containers` show plausible figures, and no cgroup is left behind.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use ferry_agent::sandbox::cgroup::{Driver, plan};

const WAIT: Duration = Duration::from_secs(60);

/// Every directory (recursively) of the plane's cgroup root, in every hierarchy.
fn cgroups_under(driver: &Driver, root: &str) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(e.path());
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    for dir in driver.dirs(root) {
        if dir.exists() {
            out.push(dir.clone());
            walk(&dir, &mut out);
        }
    }
    out
}

/// Waits until the plane's cgroup root is gone from every hierarchy; fails naming what is left.
async fn no_cgroups_left(driver: &Driver, root: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = cgroups_under(driver, root);
        if left.is_empty() {
            return;
        }
        if std::time::Instant::now() > deadline {
            let procs: Vec<String> = left
                .iter()
                .map(|d| {
                    let p = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                    format!(
                        "{} [{}]",
                        d.display(),
                        p.split_whitespace().collect::<Vec<_>>().join(" ")
                    )
                })
                .collect();
            panic!("cgroups left behind:\n{}", procs.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn read(path: impl AsRef<std::path::Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// Removes what a failed test left under the plane's root.
struct CgroupGuard {
    driver: Driver,
    root: String,
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.driver.remove(&self.root);
    }
}

fn jsonpath(t: &common::TestPlane, pod: &str, path: &str) -> String {
    t.kubectl(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_pod_is_oom_killed_and_restarted_and_limits_reach_the_cgroups() {
    if !common::sandbox_capable("an_over_limit_pod_is_oom_killed_and_restarted") {
        return;
    }
    let driver = Driver::host().expect("a cgroup hierarchy");
    let t = common::start_with_node("1xT4").await;
    let root = t.network.nft_table.clone();
    let _guard = CgroupGuard {
        driver: driver.clone(),
        root: root.clone(),
    };

    // 400 MiB written under a 64Mi limit: the kernel kills it, and it is restarted.
    let oom = "apiVersion: v1\nkind: Pod\nmetadata: {name: hog}\nspec:\n  restartPolicy: OnFailure\n  containers:\n  - name: main\n    image: python\n    command: [/usr/bin/python3, -c, \"b = b'x' * (400 << 20); print('survived')\"]\n    resources:\n      limits: {memory: 64Mi}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], oom).success();
    // Within its limit, a pod runs to completion.
    let fits = "apiVersion: v1\nkind: Pod\nmetadata: {name: fits}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: python\n    command: [/usr/bin/python3, -c, \"b = b'x' * (16 << 20); print('fits', len(b) >> 20)\"]\n    resources:\n      limits: {memory: 64Mi}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], fits).success();

    let last = common::eventually("hog to be OOMKilled and restarted", WAIT, async || {
        let out = jsonpath(
            &t,
            "hog",
            "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].lastState.terminated.reason} {.status.containerStatuses[0].lastState.terminated.exitCode}",
        );
        let parts: Vec<&str> = out.split_whitespace().collect();
        (parts.len() == 3 && parts[0].parse::<u32>().unwrap_or(0) >= 1).then_some(out)
    })
    .await;
    let parts: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(parts[1..], ["OOMKilled", "137"], "lastState of hog: {last}");
    let logs = t.kubectl(&["logs", "hog"]).success();
    assert!(!logs.contains("survived"), "hog was not killed: {logs}");
    let describe = t.kubectl(&["describe", "pod", "hog"]).success();
    assert!(describe.contains("OOMKilled"), "{describe}");

    common::eventually("fits to succeed", WAIT, async || {
        (jsonpath(&t, "fits", "{.status.phase}") == "Succeeded").then_some(())
    })
    .await;
    assert_eq!(t.kubectl(&["logs", "fits"]).success(), "fits 16\n");
    assert_eq!(
        jsonpath(
            &t,
            "fits",
            "{.status.containerStatuses[0].state.terminated.reason}"
        ),
        "Completed"
    );

    // Limits and requests as the cgroup files say them (a Burstable pod).
    let limited = "apiVersion: v1\nkind: Pod\nmetadata: {name: limited}\nspec:\n  containers:\n  - name: capped\n    image: busybox\n    command: [sleep, '600']\n    resources:\n      limits: {cpu: 500m, memory: 256Mi}\n  - name: shared\n    image: busybox\n    command: [sleep, '600']\n    resources:\n      requests: {cpu: 100m, memory: 32Mi}\n      limits: {cpu: 200m, memory: 128Mi}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], limited).success();
    common::eventually("limited to run", WAIT, async || {
        (jsonpath(&t, "limited", "{.status.phase}") == "Running").then_some(())
    })
    .await;
    assert_eq!(jsonpath(&t, "limited", "{.status.qosClass}"), "Burstable");
    let uid = jsonpath(&t, "limited", "{.metadata.uid}");
    let pod = format!("{root}/burstable/pod{uid}");
    match &driver {
        Driver::V1 {
            memory, cpu, pids, ..
        } => {
            assert_eq!(
                read(cpu.join(&pod).join("capped/cpu.cfs_quota_us")),
                "50000"
            );
            assert_eq!(
                read(cpu.join(&pod).join("capped/cpu.cfs_period_us")),
                "100000"
            );
            assert_eq!(read(cpu.join(&pod).join("capped/cpu.shares")), "512");
            assert_eq!(read(cpu.join(&pod).join("shared/cpu.shares")), "102");
            assert_eq!(read(cpu.join(&pod).join("cpu.cfs_quota_us")), "70000");
            assert_eq!(read(cpu.join(&pod).join("cpu.shares")), "614");
            assert_eq!(
                read(memory.join(&pod).join("capped/memory.limit_in_bytes")),
                (256u64 << 20).to_string()
            );
            assert_eq!(
                read(memory.join(&pod).join("memory.limit_in_bytes")),
                (384u64 << 20).to_string()
            );
            assert_eq!(read(pids.join(&pod).join("pids.max")), "4096");
            // The container's process is in its own cgroup.
            let procs = read(memory.join(&pod).join("capped/cgroup.procs"));
            assert_eq!(procs.lines().count(), 1, "capped runs alone: {procs}");
        }
        Driver::V2 { root: r } => {
            assert_eq!(read(r.join(&pod).join("capped/cpu.max")), "50000 100000");
            assert_eq!(read(r.join(&pod).join("cpu.max")), "70000 100000");
            assert_eq!(
                read(r.join(&pod).join("memory.max")),
                (384u64 << 20).to_string()
            );
            assert_eq!(read(r.join(&pod).join("pids.max")), "4096");
        }
    }

    for p in ["hog", "fits", "limited"] {
        t.kubectl(&["delete", "pod", p, "--grace-period=1"])
            .success();
    }
    no_cgroups_left(&driver, &root).await;
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_shows_the_usage_of_nodes_pods_and_containers() {
    if !common::sandbox_capable("kubectl_top_shows_the_usage_of_nodes_pods_and_containers") {
        return;
    }
    let driver = Driver::host().expect("a cgroup hierarchy");
    let t = common::start_with_node("1xT4").await;
    let root = t.network.nft_table.clone();
    let _guard = CgroupGuard {
        driver: driver.clone(),
        root: root.clone(),
    };
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "nodes"])
            .success()
            .contains("test-node")
            .then_some(())
    })
    .await;
    // One container burns CPU under a 300m limit, the other holds 150 MiB.
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: busy, labels: {app: busy}}\nspec:\n  containers:\n  - name: burn\n    image: busybox\n    command: [sh, -c, 'while :; do :; done']\n    resources:\n      limits: {cpu: 300m, memory: 64Mi}\n  - name: hold\n    image: python\n    command: [/usr/bin/python3, -c, \"import time; b = b'x' * (150 << 20); print('holding', flush=True); time.sleep(600)\"]\n    resources:\n      limits: {memory: 512Mi}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    common::eventually("busy to hold its memory", WAIT, async || {
        t.kubectl(&["logs", "busy", "-c", "hold"])
            .stdout
            .contains("holding")
            .then_some(())
    })
    .await;

    let api = t.kubectl(&["api-versions"]).success();
    assert!(api.lines().any(|l| l == "metrics.k8s.io/v1beta1"), "{api}");

    let node = t.kubectl(&["top", "node", "--no-headers"]).success();
    let fields: Vec<&str> = node.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"test-node"), "{node}");
    let node_cpu = parse_milli(fields[1]);
    let node_mem = parse_mib(fields[3]);
    assert!(node_cpu > 0, "node CPU: {node}");
    assert!(
        node_mem > 150,
        "node memory holds at least the pod's: {node}"
    );

    let (burn_cpu, hold_mem) =
        common::eventually("plausible container figures", WAIT, async || {
            let out = t
                .kubectl(&[
                    "top",
                    "pod",
                    "-l",
                    "app=busy",
                    "--containers",
                    "--no-headers",
                ])
                .success();
            let mut burn_cpu = None;
            let mut hold_mem = None;
            for line in out.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                match f.as_slice() {
                    ["busy", "burn", cpu, _] => burn_cpu = Some(parse_milli(cpu)),
                    ["busy", "hold", _, mem] => hold_mem = Some(parse_mib(mem)),
                    _ => {}
                }
            }
            let (cpu, mem) = (burn_cpu?, hold_mem?);
            (cpu > 30 && mem > 100).then_some((cpu, mem))
        })
        .await;
    // The CFS quota caps the burner at 300m (a little more within one sampling window).
    assert!(burn_cpu <= 360, "burn uses {burn_cpu}m under a 300m limit");
    // 150 MiB plus the interpreter, within 20%.
    assert!(
        (150..=180).contains(&hold_mem),
        "hold's working set is {hold_mem}Mi for 150 MiB held"
    );
    let pod = t.kubectl(&["top", "pod", "busy", "--no-headers"]).success();
    let f: Vec<&str> = pod.split_whitespace().collect();
    assert_eq!(f.first(), Some(&"busy"), "{pod}");
    // A later sample than the containers' above: at least what `hold` holds.
    assert!(parse_mib(f[2]) >= 150, "{pod}");
    let all = t.kubectl(&["top", "pod", "-A", "--no-headers"]).success();
    assert!(all.contains("busy"), "{all}");

    t.kubectl(&["delete", "pod", "busy", "--grace-period=1"])
        .success();
    no_cgroups_left(&driver, &root).await;
    t.plane.stop().await;
}

/// A pids limit bounds a loop that starts background processes until fork fails.
#[test]
fn a_pids_limit_bounds_a_fork_loop() {
    if !common::sandbox_capable("a_pids_limit_bounds_a_fork_loop") {
        return;
    }
    let driver = Driver::host().expect("a cgroup hierarchy");
    let dir = tempfile::tempdir().unwrap();
    let root = format!(
        "ferrypids{}",
        dir.path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_lowercase()
    );
    let _guard = CgroupGuard {
        driver: driver.clone(),
        root: root.clone(),
    };
    let spec = serde_json::json!({"containers": [{"name": "main"}]});
    let mut cg = plan(&root, &spec, "forker", 24);
    cg.driver = Some(driver.clone());
    driver.create_pod(&cg).unwrap();
    let dirs = driver.create_container(&cg, "main").unwrap();
    let count = dir.path().join("count");
    let join: String = dirs
        .iter()
        .map(|d| format!("echo $$ > {}/cgroup.procs; ", d.display()))
        .collect();
    let script = format!(
        "{join}i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); echo $i > {}; done",
        count.display()
    );
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    let started: u32 = read(&count).parse().unwrap();
    assert!(
        started < 24,
        "{started} background processes started under pids.max=24 ({status})"
    );
    assert!(started > 5, "only {started} processes started");
    driver.remove_pod(&cg).unwrap();
    assert!(cgroups_under(&driver, &root).is_empty());
}

fn parse_milli(s: &str) -> u64 {
    match s.strip_suffix('m') {
        Some(m) => m.parse().unwrap_or(0),
        None => s.parse::<u64>().map(|c| c * 1000).unwrap_or(0),
    }
}

fn parse_mib(s: &str) -> u64 {
    if let Some(m) = s.strip_suffix("Mi") {
        m.parse().unwrap_or(0)
    } else if let Some(g) = s.strip_suffix("Gi") {
        g.parse::<u64>().unwrap_or(0) * 1024
    } else if let Some(k) = s.strip_suffix("Ki") {
        k.parse::<u64>().unwrap_or(0) / 1024
    } else {
        0
    }
}

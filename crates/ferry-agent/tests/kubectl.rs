//! The newcomer's path with the real kubectl: nodes with GPU capacity, `kubectl apply` of a pod,
//! `kubectl logs` and `kubectl logs -f`, `kubectl delete pod` of a sleeping pod. Skipped, with
//! the reason printed, where no kubectl binary is available (`$KUBECTL` or `kubectl` on PATH);
//! under CI (`CI` set) a missing kubectl fails the test.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{alive, cluster, phase, wait_dead, wait_file};

fn kubectl_binary() -> PathBuf {
    std::env::var_os("KUBECTL").map_or_else(|| PathBuf::from("kubectl"), PathBuf::from)
}

/// Runs kubectl (off the async runtime); returns (success, stdout, stderr).
async fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let kubeconfig = kubeconfig.to_path_buf();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let cache = tempfile::tempdir().unwrap();
        let mut child = Command::new(kubectl_binary())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_sees_the_node_runs_pods_and_streams_logs() {
    if Command::new(kubectl_binary())
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(
            !ci,
            "CI is set and there is no kubectl binary (set KUBECTL or put kubectl on PATH)"
        );
        println!("skipping: no kubectl binary (set KUBECTL or put kubectl on PATH)");
        return;
    }
    let c = cluster().await;
    let kubeconfig = c.dir.path().join("kubeconfig");
    c.server.write_kubeconfig(&kubeconfig).unwrap();
    let agent = c.agent().await;
    let k = |args: &'static [&'static str]| kubectl(&kubeconfig, args, None);

    // The node and its GPU capacity.
    let mut gpus = String::new();
    for _ in 0..200 {
        let (_, out, _) = k(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.capacity.nvidia\\.com/gpu}",
        ])
        .await;
        if !out.is_empty() {
            gpus = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gpus, "2");
    let (ok, table, err) = k(&["get", "nodes"]).await;
    assert!(ok, "{err}");
    assert!(
        table.contains(common::NODE) && table.contains("Ready"),
        "{table}"
    );

    // A plain pod, applied with kubectl, runs to Succeeded; kubectl logs prints its output.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\nspec:\n  nodeName: {}\n  restartPolicy: Never\n  containers:\n  - name: hello\n    image: busybox\n    command: [sh, -c, 'echo hello; sleep 1']\n",
        common::NODE
    );
    let (ok, _, err) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest)).await;
    assert!(ok, "{err}");
    c.wait_pod("hello", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let (ok, logs, err) = k(&["logs", "hello"]).await;
    assert!(ok, "{err}");
    assert_eq!(logs, "hello\n");

    // kubectl logs -f follows a running container to its end.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  nodeName: {}\n  restartPolicy: Never\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'for i in 1 2 3; do echo tick $i; sleep 0.5; done']\n",
        common::NODE
    );
    let (ok, _, err) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest)).await;
    assert!(ok, "{err}");
    c.wait_pod("ticker", "Running", |p| phase(p) == "Running")
        .await;
    let (ok, followed, err) =
        tokio::time::timeout(Duration::from_secs(60), k(&["logs", "-f", "ticker"]))
            .await
            .expect("kubectl logs -f returns once the container ends");
    assert!(ok, "{err}");
    assert_eq!(followed, "tick 1\ntick 2\ntick 3\n");

    // kubectl delete pod of a sleeping pod stops its process (kubectl waits for the removal).
    let pid_file = c.dir.path().join("sleeper.pid");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sleeper\nspec:\n  nodeName: {}\n  containers:\n  - name: c\n    image: busybox\n    command: [sh, -c, 'echo $$$$ > {}; exec sleep 300']\n",
        common::NODE,
        pid_file.display()
    );
    let (ok, _, err) = kubectl(&kubeconfig, &["apply", "-f", "-"], Some(&manifest)).await;
    assert!(ok, "{err}");
    c.wait_pod("sleeper", "Running", |p| phase(p) == "Running")
        .await;
    let pid: i32 = wait_file(&pid_file).await.trim().parse().unwrap();
    assert!(alive(pid));
    let (ok, out, err) = k(&["delete", "pod", "sleeper"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted"), "{out}");
    wait_dead(pid, Duration::from_secs(5)).await;
    agent.stop().await;
}

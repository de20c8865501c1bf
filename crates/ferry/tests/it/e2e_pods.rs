//! The newcomer's path end to end through the embedded control plane: the node with its GPUs,
//! a pod applied with kubectl runs to Succeeded, its logs, a watch, graceful deletion, and
//! GPUs handed to a pod.

use crate::common;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(30);

async fn phase(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get_opt(name).await.ok().flatten()?.status?.phase
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_to_completion_and_its_logs_are_served() {
    let t = common::start_with_node("8xA100-80GB").await;
    // The agent creates its Node, then publishes its status (capacity, GPUs): wait for both.
    common::eventually("the node to register with its GPUs", WAIT, async || {
        let out = t.kubectl(&["get", "nodes"]).success();
        (out.contains("test-node") && out.contains("8xA100-80GB")).then_some(out)
    })
    .await;
    let capacity = t
        .kubectl(&[
            "get",
            "node",
            "test-node",
            "-o",
            "jsonpath={.status.capacity.nvidia\\.com/gpu} {.metadata.labels.ferry\\.dev/gpu-fake}",
        ])
        .success();
    assert_eq!(capacity, "8 true");

    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo hello; sleep 1']\n";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually("hello to succeed", WAIT, async || {
        (phase(&pods, "hello").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let logs = t.kubectl(&["logs", "hello"]).success();
    assert_eq!(logs, "hello\n");
    let pod = pods.get("hello").await.unwrap();
    let state = pod.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap();
    assert_eq!(state.terminated.unwrap().exit_code, 0);

    // `kubectl logs -f` follows a running container until it ends.
    let follow = "apiVersion: v1\nkind: Pod\nmetadata: {name: counter}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'for i in 1 2 3; do echo line $i; sleep 0.3; done']\n";
    t.kubectl_stdin(&["apply", "-f", "-"], follow).success();
    common::eventually("counter to start", WAIT, async || {
        matches!(
            phase(&pods, "counter").await.as_deref(),
            Some("Running" | "Succeeded")
        )
        .then_some(())
    })
    .await;
    let followed = t.kubectl(&["logs", "-f", "counter"]).success();
    assert_eq!(followed, "line 1\nline 2\nline 3\n");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_sleeping_pod_stops_its_process_within_the_grace_period() {
    let t = common::start_with_node("2xT4").await;
    let pidfile = t.dir.path().join("sleeper.pid");
    // `$$$$` is the shell's `$$` after Kubernetes' own `$(VAR)` escaping.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: sleeper}}\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, 'echo $$$$ > {}; exec sleep 600']\n",
        pidfile.display()
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually("sleeper to run", WAIT, async || {
        (phase(&pods, "sleeper").await.as_deref() == Some("Running")).then_some(())
    })
    .await;
    let pid: u32 = common::eventually("the pid file", WAIT, async || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    })
    .await;
    let proc_dir = format!("/proc/{pid}");
    assert!(
        std::path::Path::new(&proc_dir).exists(),
        "the sleeper runs as a host process"
    );
    let started = Instant::now();
    let out = t.kubectl(&["delete", "pod", "sleeper"]).success();
    assert!(out.contains("deleted"), "{out}");
    let alive =
        |p: &str| std::fs::read_to_string(format!("{p}/stat")).is_ok_and(|s| !s.contains(") Z "));
    assert!(
        !alive(&proc_dir),
        "the process is gone when kubectl delete returns"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5 + 5),
        "deletion took {:?}",
        started.elapsed()
    );
    assert!(pods.get_opt("sleeper").await.unwrap().is_none());
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_pods_see_their_devices_and_watches_stream_phases() {
    let t = common::start_with_node("4xH100-80GB").await;
    let watch = t.kubectl_watch(&[
        "get",
        "pods",
        "-w",
        "--no-headers",
        "-o",
        "custom-columns=NAME:.metadata.name,PHASE:.status.phase",
    ]);
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: trainer}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: pytorch\n    command: [sh, -c, 'echo CUDA=$CUDA_VISIBLE_DEVICES']\n    resources:\n      limits: {nvidia.com/gpu: 2}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], manifest).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    common::eventually("trainer to succeed", WAIT, async || {
        (phase(&pods, "trainer").await.as_deref() == Some("Succeeded")).then_some(())
    })
    .await;
    let pod = pods.get("trainer").await.unwrap();
    let assigned =
        pod.metadata.annotations.unwrap()[ferry_api::gpu::POD_ASSIGNED_ANNOTATION].clone();
    assert_eq!(ferry_api::gpu::parse_assigned(&assigned).unwrap().len(), 2);
    let logs = t.kubectl(&["logs", "trainer"]).success();
    assert_eq!(logs.trim(), format!("CUDA={assigned}"));
    watch
        .wait_for("trainer Succeeded", |l| {
            l.split_whitespace().eq(["trainer", "Succeeded"])
        })
        .await;
    let out = watch.finish();
    let phases: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        phases.first().map(String::as_str),
        Some("Pending"),
        "{phases:?}"
    );
    assert_eq!(
        phases.last().map(String::as_str),
        Some("Succeeded"),
        "{phases:?}"
    );
    t.plane.stop().await;
}

//! The agent against Ferry's API server: node registration, pods run to completion with logs,
//! restarts with back-off, graceful deletion, GPUs, and agent restarts.

mod common;

use std::time::{Duration, Instant};

use common::{NODE, alive, cluster, container_status, phase, wait_dead, wait_file};
use ferry_api::gpu::{NODE_DEVICES_ANNOTATION, NODE_FAKE_LABEL, POD_ASSIGNED_ANNOTATION};
use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Event, Node};
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_node_with_gpus_and_renews_its_lease() {
    let c = cluster().await;
    let agent = c.agent().await;
    let nodes: Api<Node> = Api::all(c.client.clone());
    let node = common_wait(|| async {
        nodes
            .get_opt(NODE)
            .await
            .ok()
            .flatten()
            .filter(|n| n.status.is_some())
    })
    .await;
    let status = node.status.clone().unwrap();
    assert_eq!(status.capacity.as_ref().unwrap()["nvidia.com/gpu"].0, "2");
    assert_eq!(
        status.allocatable.as_ref().unwrap()["nvidia.com/gpu"].0,
        "2"
    );
    assert_eq!(status.capacity.as_ref().unwrap()["pods"].0, "110");
    let ready = status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let port = status
        .daemon_endpoints
        .unwrap()
        .kubelet_endpoint
        .unwrap()
        .port;
    assert_eq!(port, i32::from(agent.log_server_addr().port()));
    let addresses = status.addresses.unwrap();
    assert!(
        addresses
            .iter()
            .any(|a| a.type_ == "InternalIP" && a.address == "127.0.0.1")
    );
    assert!(addresses.iter().any(|a| a.type_ == "Hostname"));
    assert!(!status.node_info.unwrap().kernel_version.is_empty());
    let labels = node.metadata.labels.unwrap();
    assert_eq!(labels[NODE_FAKE_LABEL], "true");
    assert_eq!(labels["ferry.dev/gpu-model"], "A100-80GB");
    let devices: Vec<ferry_api::gpu::GpuDevice> =
        serde_json::from_str(&node.metadata.annotations.unwrap()[NODE_DEVICES_ANNOTATION]).unwrap();
    assert_eq!(devices.len(), 2);

    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "kube-node-lease");
    let first = common_wait(|| async { leases.get_opt(NODE).await.ok().flatten() }).await;
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some(NODE));
    let t0 = spec.renew_time.unwrap().0;
    let renewed = common_wait(|| async {
        let l = leases.get(NODE).await.ok()?;
        let t = l.spec?.renew_time?.0;
        (t > t0).then_some(t)
    })
    .await;
    assert!(renewed > t0);
    let owner = &first.metadata.owner_references.unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Node", NODE));

    // A deleted Node is registered again at the next status refresh.
    let old_uid = node.metadata.uid.clone().unwrap();
    nodes.delete(NODE, &DeleteParams::default()).await.unwrap();
    let again =
        common_wait(|| async {
            nodes.get_opt(NODE).await.ok().flatten().filter(|n| {
                n.metadata.uid.as_deref() != Some(old_uid.as_str()) && n.status.is_some()
            })
        })
        .await;
    assert_eq!(
        again.status.unwrap().capacity.unwrap()["nvidia.com/gpu"].0,
        "2"
    );
    agent.stop().await;
}

async fn common_wait<T, F: std::future::Future<Output = Option<T>>>(mut f: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_runs_to_succeeded_with_its_logs_and_exit_code() {
    let c = cluster().await;
    let agent = c.agent().await;
    c.create_pod(json!({
        "metadata": {"name": "hello", "labels": {"app": "demo"}},
        "spec": {
            "restartPolicy": "Never",
            "initContainers": [{"name": "prepare", "image": "busybox", "command": ["sh", "-c", "echo init-ran"]}],
            "containers": [{
                "name": "main",
                "image": "busybox:1.36",
                "command": ["sh", "-c"],
                "args": ["echo hello; echo \"I am $(POD) in $NS on $NODE_NAME, app=$APP\"; echo oops >&2; sleep 1"],
                "env": [
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}
                ]
            }]
        }
    }))
    .await;
    let running = c
        .wait_pod("hello", "Running", |p| phase(p) == "Running")
        .await;
    let status = running.status.unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    let done = c
        .wait_pod("hello", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let main = container_status(&done, "main").unwrap();
    let term = main.state.unwrap().terminated.unwrap();
    assert_eq!(term.exit_code, 0);
    assert_eq!(term.reason.as_deref(), Some("Completed"));
    assert!(term.started_at.is_some() && term.finished_at.is_some());
    assert_eq!(main.image, "busybox:1.36");
    assert_eq!(main.restart_count, 0);
    let init = &done
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        init.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0
    );
    let conditions = done.status.as_ref().unwrap().conditions.clone().unwrap();
    let cond = |t: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
    };
    assert_eq!(cond("Initialized").as_deref(), Some("True"));
    assert_eq!(cond("Ready").as_deref(), Some("False"));

    // Logs through the API server, which proxies to the agent's log server.
    let logs = c
        .pods()
        .logs(
            "hello",
            &LogParams {
                container: Some("main".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(logs.contains("hello\n"), "{logs}");
    assert!(
        logs.contains("I am hello in default on test-node, app=demo\n"),
        "{logs}"
    );
    assert!(logs.contains("oops\n"), "{logs}");
    let init_logs = c
        .pods()
        .logs(
            "hello",
            &LogParams {
                container: Some("prepare".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(init_logs, "init-ran\n");
    let stamped = c
        .pods()
        .logs(
            "hello",
            &LogParams {
                container: Some("main".into()),
                timestamps: true,
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (ts, line) = stamped.trim_end().split_once(' ').unwrap();
    assert!(ts.parse::<jiff::Timestamp>().is_ok(), "{stamped}");
    assert!(line == "oops" || line.starts_with("I am"), "{stamped}");

    // The host runtime says it pulls no images.
    let events: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let list = events.list(&ListParams::default()).await.unwrap();
    let host_runtime = list
        .items
        .iter()
        .find(|e| {
            e.reason.as_deref() == Some("HostRuntime")
                && e.involved_object.name.as_deref() == Some("hello")
                && e.involved_object.field_path.as_deref() == Some("spec.containers{main}")
        })
        .expect("a HostRuntime event for the main container");
    assert!(
        host_runtime
            .message
            .as_deref()
            .unwrap()
            .contains("\"busybox:1.36\" is not pulled")
    );
    assert!(
        list.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("Started"))
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_record_exit_codes_and_pods_without_commands_fail_clearly() {
    let c = cluster().await;
    let agent = c.agent().await;
    c.create_pod(json!({
        "metadata": {"name": "fails"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "exit 3"]}]}
    }))
    .await;
    c.create_pod(json!({
        "metadata": {"name": "no-command"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .await;
    c.create_pod(json!({
        "metadata": {"name": "missing-program"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["/no/such/binary"]}]}
    }))
    .await;
    let failed = c
        .wait_pod("fails", "Failed", |p| phase(p) == "Failed")
        .await;
    let term = container_status(&failed, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((term.exit_code, term.reason.as_deref()), (3, Some("Error")));

    let nc = c
        .wait_pod("no-command", "Failed", |p| phase(p) == "Failed")
        .await;
    let s = nc.status.unwrap();
    assert_eq!(s.reason.as_deref(), Some("NoCommand"));
    assert!(s.message.unwrap().contains("has no command"));

    let mp = c
        .wait_pod("missing-program", "Failed", |p| phase(p) == "Failed")
        .await;
    let term = container_status(&mp, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        (term.exit_code, term.reason.as_deref()),
        (128, Some("StartError"))
    );
    assert!(term.message.unwrap().contains("/no/such/binary"));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_follow_the_policy_with_crash_loop_back_off() {
    let c = cluster().await;
    let agent = c
        .agent_with(|cfg| cfg.backoff_initial = Duration::from_secs(2))
        .await;
    let scratch = c.dir.path().join("mnt-scratch");
    // Fails twice, then succeeds; the counter lives in an emptyDir, which survives restarts.
    c.create_pod(json!({
        "metadata": {"name": "flaky"},
        "spec": {
            "restartPolicy": "OnFailure",
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "c", "image": "x",
                "command": ["sh", "-c", format!("n=$(cat {s}/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > {s}/n; echo attempt $n; [ $n -ge 3 ]", s = scratch.display())],
                "volumeMounts": [{"name": "scratch", "mountPath": scratch.display().to_string()}]
            }]
        }
    }))
    .await;
    // Between the second and third attempt the container waits out a back-off.
    let looping = c
        .wait_pod("flaky", "in CrashLoopBackOff", |p| {
            container_status(p, "c")
                .and_then(|s| s.state?.waiting?.reason)
                .is_some_and(|r| r == "CrashLoopBackOff")
        })
        .await;
    let cs = container_status(&looping, "c").unwrap();
    assert_eq!(cs.last_state.unwrap().terminated.unwrap().exit_code, 1);
    assert!(cs.restart_count >= 1);
    assert_eq!(phase(&looping), "Running");
    let done = c
        .wait_pod("flaky", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let cs = container_status(&done, "c").unwrap();
    assert_eq!(cs.restart_count, 2);
    assert_eq!(cs.state.unwrap().terminated.unwrap().exit_code, 0);
    let logs = c.pods().logs("flaky", &LogParams::default()).await.unwrap();
    assert_eq!(logs, "attempt 3\n");
    let previous = c
        .pods()
        .logs(
            "flaky",
            &LogParams {
                previous: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(previous, "attempt 2\n");

    // restartPolicy Always restarts even successful exits.
    c.create_pod(json!({
        "metadata": {"name": "always"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"]}]}
    }))
    .await;
    let p = c
        .wait_pod("always", "restarted", |p| {
            container_status(p, "c").is_some_and(|s| s.restart_count >= 2)
        })
        .await;
    assert_eq!(phase(&p), "Running");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_pod_stops_its_process_within_the_grace_period() {
    let c = cluster().await;
    let agent = c.agent().await;
    let polite_pid = c.dir.path().join("polite.pid");
    let stubborn_pid = c.dir.path().join("stubborn.pid");
    c.create_pod(json!({
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", format!("echo $$$$ > {}; exec sleep 300", polite_pid.display())]}]}
    }))
    .await;
    c.create_pod(json!({
        "metadata": {"name": "stubborn"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", format!("trap 'echo ignoring TERM' TERM; echo $$$$ > {}; while true; do sleep 0.1; done", stubborn_pid.display())]}]
        }
    }))
    .await;
    c.wait_pod("sleeper", "Running", |p| phase(p) == "Running")
        .await;
    c.wait_pod("stubborn", "Running", |p| phase(p) == "Running")
        .await;
    let polite: i32 = wait_file(&polite_pid).await.trim().parse().unwrap();
    let stubborn: i32 = wait_file(&stubborn_pid).await.trim().parse().unwrap();
    assert!(alive(polite) && alive(stubborn));

    // SIGTERM ends the sleeper well within its 30 s grace period, and the pod is removed.
    c.pods()
        .delete("sleeper", &DeleteParams::default())
        .await
        .unwrap();
    wait_dead(polite, Duration::from_secs(20)).await;
    c.wait_gone("sleeper").await;

    // The stubborn one ignores SIGTERM: it is killed once its 2 s grace period is over, not before.
    let deleted_at = Instant::now();
    c.pods()
        .delete("stubborn", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(alive(stubborn), "SIGKILL must wait for the grace period");
    wait_dead(stubborn, Duration::from_secs(30)).await;
    assert!(deleted_at.elapsed() >= Duration::from_secs(2));
    c.wait_gone("stubborn").await;
    let logs_dir = c.agent_dir().join("pods");
    common_wait(|| async { (std::fs::read_dir(&logs_dir).unwrap().count() == 0).then_some(()) })
        .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_the_agent_neither_duplicates_nor_orphans() {
    let c = cluster().await;
    let starts = c.dir.path().join("starts");
    let agent = c.agent().await;
    c.create_pod(json!({
        "metadata": {"name": "long"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", format!("echo $$$$ >> {}; exec sleep 300", starts.display())]}]}
    }))
    .await;
    c.create_pod(json!({
        "metadata": {"name": "ends-while-away"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "sleep 2; exit 7"]}]}
    }))
    .await;
    let orphan_pid_file = c.dir.path().join("orphan.pid");
    c.create_pod(json!({
        "metadata": {"name": "deleted-while-away"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", format!("echo $$$$ > {}; exec sleep 300", orphan_pid_file.display())]}]}
    }))
    .await;
    for name in ["long", "ends-while-away", "deleted-while-away"] {
        c.wait_pod(name, "Running", |p| phase(p) == "Running").await;
    }
    let pid: i32 = wait_file(&starts).await.trim().parse().unwrap();
    let orphan: i32 = wait_file(&orphan_pid_file).await.trim().parse().unwrap();

    // The agent crashes (dropped without a clean stop); its processes keep running.
    drop(agent);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(alive(pid) && alive(orphan));
    // Meanwhile one pod is force-deleted and another one's process ends.
    c.pods()
        .delete(
            "deleted-while-away",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let agent = c.agent().await;
    let ended = c
        .wait_pod("ends-while-away", "Failed", |p| phase(p) == "Failed")
        .await;
    let term = container_status(&ended, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(
        term.exit_code, 7,
        "the exit recorded while the agent was away is read back"
    );
    wait_dead(orphan, Duration::from_secs(30)).await;
    // Give the new agent time to (wrongly) start a duplicate.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines: Vec<String> = std::fs::read_to_string(&starts)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        vec![pid.to_string()],
        "the container must not have been started again"
    );
    assert!(
        alive(pid),
        "the running container is re-adopted, not killed"
    );
    let p = c.pods().get("long").await.unwrap();
    assert_eq!(phase(&p), "Running");
    assert_eq!(container_status(&p, "c").unwrap().restart_count, 0);

    // A clean stop leaves it running too; the adopted process still stops on deletion.
    agent.stop().await;
    assert!(alive(pid));
    let agent = c.agent().await;
    c.pods()
        .delete("long", &DeleteParams::default())
        .await
        .unwrap();
    wait_dead(pid, Duration::from_secs(30)).await;
    c.wait_gone("long").await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_can_be_followed_until_the_container_ends() {
    let c = cluster().await;
    let agent = c.agent().await;
    c.create_pod(json!({
        "metadata": {"name": "ticker"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.4; done"]}]}
    }))
    .await;
    c.wait_pod("ticker", "Running", |p| phase(p) == "Running")
        .await;
    let stream = c
        .pods()
        .log_stream(
            "ticker",
            &LogParams {
                follow: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let lines: Vec<String> =
        tokio::time::timeout(Duration::from_secs(60), stream.lines().try_collect())
            .await
            .expect("the followed stream ends when the container ends")
            .unwrap();
    assert_eq!(lines, ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]);
    let tail = c
        .pods()
        .logs(
            "ticker",
            &LogParams {
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "tick 4\ntick 5\n");
    let limited = c
        .pods()
        .logs(
            "ticker",
            &LogParams {
                limit_bytes: Some(9),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited, "tick 1\nti");

    // The log server itself answers unknown pods and containers with 404 and a reason.
    let addr = agent.log_server_addr();
    let get = |path: &str| common::agent_get(c.kubelet.clone(), addr, path.to_string());
    let (code, body) = get("/containerLogs/default/nope/c").await;
    assert_eq!(code, 404);
    assert!(
        body.contains("pod \"default/nope\" is not running on node"),
        "{body}"
    );
    let (code, body) = get("/containerLogs/default/ticker/other").await;
    assert_eq!(code, 404);
    assert!(body.contains("container \"other\""), "{body}");
    let (code, _) = get("/containerLogs/default/ticker/c?tailLines=x").await;
    assert_eq!(code, 400);

    // Stopping the agent ends followed streams cleanly (the container keeps running).
    c.create_pod(json!({
        "metadata": {"name": "chatty"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["sh", "-c", "while true; do echo chat; sleep 0.2; done"]}]}
    }))
    .await;
    c.wait_pod("chatty", "Running", |p| phase(p) == "Running")
        .await;
    let follow = tokio::spawn(get("/containerLogs/default/chatty/c?follow=true"));
    tokio::time::sleep(Duration::from_millis(600)).await;
    agent.stop().await;
    let (code, body) = tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(code, 200);
    assert!(body.starts_with("chat\n"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_exported_and_assigned_when_no_scheduler_did() {
    let c = cluster().await;
    let agent = c.agent().await;
    let print = "echo CUDA=$CUDA_VISIBLE_DEVICES NVIDIA=$NVIDIA_VISIBLE_DEVICES";
    c.create_pod(json!({
        "metadata": {"name": "scheduled", "annotations": {POD_ASSIGNED_ANNOTATION: "1"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", print],
            "resources": {"limits": {"nvidia.com/gpu": "1"}}}]}
    }))
    .await;
    c.wait_pod("scheduled", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(
        c.pods()
            .logs("scheduled", &LogParams::default())
            .await
            .unwrap(),
        "CUDA=1 NVIDIA=1\n"
    );

    c.create_pod(json!({
        "metadata": {"name": "unscheduled"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", print],
            "resources": {"limits": {"nvidia.com/gpu": "2"}}}]}
    }))
    .await;
    let p = c
        .wait_pod("unscheduled", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let assigned = p.metadata.annotations.unwrap()[POD_ASSIGNED_ANNOTATION].clone();
    assert_eq!(assigned, "0,1", "the agent records the devices it chose");
    assert_eq!(
        c.pods()
            .logs("unscheduled", &LogParams::default())
            .await
            .unwrap(),
        "CUDA=0,1 NVIDIA=0,1\n"
    );

    c.create_pod(json!({
        "metadata": {"name": "no-gpu"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x", "command": ["sh", "-c", print]}]}
    }))
    .await;
    c.wait_pod("no-gpu", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    assert_eq!(
        c.pods()
            .logs("no-gpu", &LogParams::default())
            .await
            .unwrap(),
        "CUDA= NVIDIA=void\n"
    );

    c.create_pod(json!({
        "metadata": {"name": "too-many"},
        "spec": {"containers": [{"name": "c", "image": "x", "command": ["true"], "resources": {"limits": {"nvidia.com/gpu": "3"}}}]}
    }))
    .await;
    let p = c
        .wait_pod("too-many", "Failed", |p| phase(p) == "Failed")
        .await;
    assert_eq!(
        p.status.unwrap().reason.as_deref(),
        Some("OutOfnvidia.com/gpu")
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_and_config_sources_reach_the_process() {
    let c = cluster().await;
    let agent = c.agent().await;
    let host_dir = c.dir.path().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::write(host_dir.join("input.txt"), "from the host\n").unwrap();
    let mount = c.dir.path().join("in-container");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(c.client.clone(), "default");
    cms.create(
        &Default::default(),
        &serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"LEVEL": "debug", "app.conf": "x=1"}})).unwrap(),
    )
    .await
    .unwrap();
    let script = format!(
        "cat {m}/host/input.txt; cat {m}/conf/app.conf; echo; echo level=$LEVEL prefixed=$CFG_LEVEL; pwd",
        m = mount.display()
    );
    c.create_pod(json!({
        "metadata": {"name": "vols"},
        "spec": {
            "restartPolicy": "Never",
            "volumes": [
                {"name": "host", "hostPath": {"path": host_dir.display().to_string(), "type": "Directory"}},
                {"name": "conf", "configMap": {"name": "settings"}}
            ],
            "containers": [{
                "name": "c", "image": "x", "command": ["sh", "-c", script],
                "workingDir": host_dir.display().to_string(),
                "env": [{"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "LEVEL"}}}],
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "volumeMounts": [
                    {"name": "host", "mountPath": format!("{}/host", mount.display())},
                    {"name": "conf", "mountPath": format!("{}/conf", mount.display()), "readOnly": true}
                ]
            }]
        }
    }))
    .await;
    c.wait_pod("vols", "Succeeded", |p| phase(p) == "Succeeded")
        .await;
    let logs = c.pods().logs("vols", &LogParams::default()).await.unwrap();
    assert_eq!(
        logs,
        format!(
            "from the host\nx=1\nlevel=debug prefixed=debug\n{}\n",
            host_dir.display()
        )
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_returns_cleanly_when_its_shutdown_future_resolves() {
    let c = cluster().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = c.agent_config();
    let client = c.client.clone();
    let agent = tokio::spawn(async move {
        ferry_agent::run(client, config, async {
            let _ = stopped.await;
        })
        .await
    });
    let nodes: Api<Node> = Api::all(c.client.clone());
    common_wait(|| async { nodes.get_opt(NODE).await.ok().flatten() }).await;
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(30), agent)
        .await
        .expect("run returns after shutdown")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");

    // A configuration error is reported, not panicked on.
    let mut bad = c.agent_config();
    bad.node_name = "Not A Node Name".into();
    let err = ferry_agent::run(c.client.clone(), bad, async {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("node name"), "{err}");
}

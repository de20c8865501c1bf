//! The scheduler's reports follow reality, end to end through the embedded control plane:
//! a PodGroup whose pods all complete reports `Finished`, one whose pods are deleted no
//! longer reports them, a Queue's usage returns to zero, a gang's status converges while
//! another writer keeps changing its PodGroup, GPU model names past what can be told apart
//! do not stop scheduling, and FIFO follows arrival within one second.

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ferry_api::scheduling::{PodGroup, Queue};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams, PostParams};

const WAIT: Duration = Duration::from_secs(60);

/// A Queue `q` and a namespace `ns` bound to it.
fn queue(q: &str, ns: &str) -> String {
    format!(
        "apiVersion: scheduling.ferry.dev/v1alpha1\nkind: Queue\nmetadata: {{name: {q}}}\nspec:\n  resources:\n  - {{name: nvidia.com/gpu, guaranteed: 8}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{scheduling.ferry.dev/queue: {q}}}\n"
    )
}

/// A pod of gang `group` (none: on its own) asking for `gpus` GPUs and running `script`.
fn pod(ns: &str, name: &str, group: Option<&str>, gpus: u32, script: &str) -> String {
    let labels = group.map_or(String::new(), |g| {
        format!("  labels: {{scheduling.x-k8s.io/pod-group: {g}}}\n")
    });
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n{labels}spec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, '{script}']\n    resources:\n      limits: {{nvidia.com/gpu: {gpus}}}\n"
    )
}

/// A PodGroup of `min` and `n` of its pods.
fn gang(ns: &str, name: &str, min: usize, n: usize, gpus: u32, script: &str) -> String {
    let mut yaml = format!(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{minMember: {min}}}\n"
    );
    for i in 0..n {
        yaml.push_str(&pod(ns, &format!("{name}-{i}"), Some(name), gpus, script));
    }
    yaml
}

async fn group_status(
    t: &common::TestPlane,
    ns: &str,
    name: &str,
) -> Option<(String, i32, i32, i32)> {
    let groups: Api<PodGroup> = Api::namespaced(t.client.clone(), ns);
    let s = groups.get(name).await.ok()?.status?;
    Some((
        s.phase.unwrap_or_default(),
        s.running.unwrap_or_default(),
        s.succeeded.unwrap_or_default(),
        s.scheduled.unwrap_or_default(),
    ))
}

async fn node_ready(t: &common::TestPlane) {
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_whose_pods_all_complete_finishes() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &gang("default", "done", 2, 2, 1, "sleep 1"),
    )
    .success();
    let finished = common::eventually("the PodGroup to finish", WAIT, async || {
        let s = group_status(&t, "default", "done").await?;
        (s.0 == "Finished").then_some(s)
    })
    .await;
    // (phase, running, succeeded, scheduled)
    assert_eq!(finished, ("Finished".to_string(), 0, 2, 0));
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_usage_returns_to_zero_when_its_pods_end() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    t.kubectl_stdin(&["apply", "-f", "-"], &queue("q-status", "ns-status"))
        .success();
    let queues: Api<Queue> = Api::all(t.client.clone());
    // Pods that run for a moment: the queue shows their GPUs while they run.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &gang("ns-status", "brief", 2, 2, 1, "sleep 3"),
    )
    .success();
    common::eventually("the queue to show the GPUs in use", WAIT, async || {
        let s = queues.get("q-status").await.ok()?.status?;
        (s.usage.get("nvidia.com/gpu").map(String::as_str) == Some("2")).then_some(())
    })
    .await;
    let status = common::eventually("the queue's usage to return to zero", WAIT, async || {
        let s = queues.get("q-status").await.ok()?.status?;
        s.usage.is_empty().then_some(s)
    })
    .await;
    assert_eq!(status.running_jobs, Some(0), "{status:?}");
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_whose_pods_are_deleted_no_longer_reports_them() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &gang("default", "evicted", 2, 2, 1, "sleep 600"),
    )
    .success();
    common::eventually("the gang to run", WAIT, async || {
        let s = group_status(&t, "default", "evicted").await?;
        (s.0 == "Running" && s.1 == 2).then_some(())
    })
    .await;
    t.kubectl(&[
        "delete",
        "pods",
        "-l",
        "scheduling.x-k8s.io/pod-group=evicted",
        "--grace-period=1",
    ])
    .success();
    let after = common::eventually(
        "the PodGroup to follow its deleted pods",
        WAIT,
        async || {
            // Its end state: the pods are marked for deletion one request at a time, and a
            // cycle in between may see one pod still counted.
            let s = group_status(&t, "default", "evicted").await?;
            (s == ("Pending".to_string(), 0, 0, 0)).then_some(s)
        },
    )
    .await;
    assert_eq!(after, ("Pending".to_string(), 0, 0, 0));
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gang_status_converges_while_another_writer_changes_its_podgroup() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    // minMember 3 with 2 pods: the gang waits for the third.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &gang("default", "busy", 3, 2, 1, "sleep 600"),
    )
    .success();
    common::eventually("the gang to say it waits for pods", WAIT, async || {
        let groups: Api<PodGroup> = Api::namespaced(t.client.clone(), "default");
        let s = groups.get("busy").await.ok()?.status?;
        s.conditions
            .iter()
            .any(|c| c.message.contains("only 2 exist"))
            .then_some(())
    })
    .await;
    // Other writers change the PodGroup all the time (each write a new resourceVersion),
    // so the scheduler's writes meet 409s.
    let stop = Arc::new(AtomicBool::new(false));
    let bumpers: Vec<_> = (0..6)
        .map(|w| {
            let (client, stop) = (t.client.clone(), stop.clone());
            tokio::spawn(async move {
                let groups: Api<PodGroup> = Api::namespaced(client, "default");
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let patch = serde_json::json!({"metadata": {"labels": {format!("bump-{w}"): i.to_string()}}});
                    let _ = groups
                        .patch("busy", &PatchParams::default(), &Patch::Merge(patch))
                        .await;
                }
                i
            })
        })
        .collect();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("default", "busy-2", Some("busy"), 1, "sleep 600"),
    )
    .success();
    let status = common::eventually("the gang's status to converge", WAIT, async || {
        let s = group_status(&t, "default", "busy").await?;
        (s.0 == "Running" && s.1 == 3).then_some(s)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut bumps = 0;
    for b in bumpers {
        bumps += b.await.unwrap();
    }
    assert!(bumps > 1, "the other writer wrote ({bumps} times)");
    assert_eq!(status.1, 3);
    let groups: Api<PodGroup> = Api::namespaced(t.client.clone(), "default");
    let conditions = groups.get("busy").await.unwrap().status.unwrap().conditions;
    assert!(
        conditions
            .iter()
            .all(|c| !c.message.contains("only 2 exist")),
        "{conditions:?}"
    );
    t.kubectl(&["delete", "pods", "--all", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_gpu_models_than_can_be_told_apart_do_not_stop_scheduling() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    // 70 pending pods, each asking for a GPU model no node has.
    let mut yaml = String::new();
    for i in 0..70 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: picky-{i}}}\nspec:\n  nodeSelector: {{ferry.dev/gpu-model: model-{i}}}\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n    resources:\n      limits: {{nvidia.com/gpu: 1}}\n"
        ));
    }
    t.kubectl_stdin(&["apply", "-f", "-"], &yaml).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let refused = common::eventually("picky pods to be refused with a reason", WAIT, async || {
        let list = pods.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .filter_map(|p| p.status?.conditions)
            .flatten()
            .filter(|c| c.type_ == "PodScheduled" && c.status == "False")
            .filter_map(|c| c.message)
            .find(|m| m.contains("no node has GPU model"))
    })
    .await;
    assert!(refused.contains("model-"), "{refused}");
    // An ordinary pod is still scheduled.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("default", "plain", None, 1, "sleep 600"),
    )
    .success();
    common::eventually("the plain pod to be bound", WAIT, async || {
        pods.get("plain").await.ok()?.spec?.node_name
    })
    .await;
    t.kubectl(&["delete", "pods", "--all", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_follows_arrival_within_one_second() {
    let t = common::start_with_node("8xA100-80GB").await;
    node_ready(&t).await;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    // A pod holds every GPU; two more wait for them, created one after the other.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod("default", "blocker", None, 8, "sleep 600"),
    )
    .success();
    common::eventually("the blocker to be bound", WAIT, async || {
        pods.get("blocker").await.ok()?.spec?.node_name
    })
    .await;
    let waiting = |name: &str| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "busybox", "command": ["sleep", "600"],
                "resources": {"limits": {"nvidia.com/gpu": "8"}}}]}
        }))
        .unwrap()
    };
    for name in ["zz-first", "aa-second"] {
        pods.create(&PostParams::default(), &waiting(name))
            .await
            .unwrap();
    }
    let created = |p: &Pod| p.metadata.creation_timestamp.clone();
    let first = pods.get("zz-first").await.unwrap();
    let second = pods.get("aa-second").await.unwrap();
    // Within one second the names would decide, and `aa-second` would overtake.
    println!("created {:?} and {:?}", created(&first), created(&second));
    t.kubectl(&["delete", "pod", "blocker", "--grace-period=1"])
        .success();
    let bound = common::eventually("one waiting pod to be bound", WAIT, async || {
        for name in ["zz-first", "aa-second"] {
            if pods.get(name).await.ok()?.spec?.node_name.is_some() {
                return Some(name);
            }
        }
        None
    })
    .await;
    assert_eq!(bound, "zz-first", "the first to arrive goes first");
    t.kubectl(&["delete", "pods", "--all", "--grace-period=1"])
        .success();
    t.plane.stop().await;
}

//! Node failure: a second `ferry agent` stops heartbeating. The node lifecycle controller marks
//! its Node `Ready=Unknown` after the grace period, taints it `node.kubernetes.io/unreachable`
//! (NoSchedule and NoExecute), and evicts its pods once their tolerations run out (marked
//! `Failed` with `DisruptionTarget`, then removed); when the agent comes back the condition and
//! the taints are lifted and the agent kills the processes of pods no longer bound to it.

use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::Api;
use kube::runtime::watcher;

/// The grace period the tests' planes use (kube's default is 40 s).
const GRACE: Duration = Duration::from_secs(3);

fn ready_status(node: &Node) -> Option<(String, Option<String>)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

fn taints(node: &Node) -> Vec<String> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is dead too: the shim reaps it, but the check must not race that.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every state each pod was seen in: (phase, DisruptionTarget reason), in order.
type Seen = Arc<Mutex<BTreeMap<String, Vec<(String, Option<String>)>>>>;

fn record_pods(client: kube::Client) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let sink = seen.clone();
    let pods: Api<Pod> = Api::default_namespaced(client);
    let task = tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Some(event) = stream.next().await {
            let pod = match event {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => p,
                Ok(watcher::Event::Delete(p)) => {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    sink.lock()
                        .unwrap()
                        .entry(name)
                        .or_default()
                        .push(("Deleted".into(), None));
                    continue;
                }
                _ => continue,
            };
            let status = pod.status.clone().unwrap_or_default();
            let disruption = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "DisruptionTarget" && c.status == "True")
                .and_then(|c| c.reason.clone());
            let state = (status.phase.unwrap_or_default(), disruption);
            let name = pod.metadata.name.clone().unwrap_or_default();
            let mut map = sink.lock().unwrap();
            let states = map.entry(name).or_default();
            if states.last() != Some(&state) {
                states.push(state);
            }
        }
    });
    (seen, task)
}

async fn second_agent(t: &common::TestPlane, name: &str) -> ferry_agent::AgentHandle {
    t.add_agent_with(name, |c| {
        c.heartbeat_interval = Duration::from_millis(500);
        c.lease_duration = Duration::from_secs(2);
        c.node_status_interval = Duration::from_secs(1);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_node_is_tainted_its_pods_evicted_and_it_recovers() {
    if !common::sandbox_capable("a_silent_node_is_tainted_its_pods_evicted_and_it_recovers") {
        return;
    }
    let t = common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Disabled;
        agent.shim = Some(common::shim_command());
        c.agent = Some(agent);
        c.node_monitor_grace_period = GRACE;
    })
    .await;
    let agent = second_agent(&t, "node-2").await;
    let nodes: Api<Node> = Api::all(t.client.clone());
    common::eventually("node-2 Ready", Duration::from_secs(60), async || {
        let n = nodes.get_opt("node-2").await.ok()??;
        (ready_status(&n)?.0 == "True").then_some(())
    })
    .await;
    let (seen, recorder) = record_pods(t.client.clone());

    // `short` tolerates the unreachable taint for 2 s; `forever` tolerates it with no limit;
    // `default` says nothing and gets DefaultTolerationSeconds' 300 s.
    let dir = t.dir.path().display().to_string();
    let pod = |name: &str, tolerations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeName: node-2\n  terminationGracePeriodSeconds: 1\n{tolerations}  containers:\n  - name: c\n    command: [/bin/sh, -c, 'echo $$$$ > {dir}/{name}.pid; exec sleep 600']\n"
        )
    };
    let manifests = [
        pod(
            "short",
            "  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}]\n",
        ),
        pod(
            "forever",
            "  tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute}]\n",
        ),
        pod("default", ""),
    ];
    t.kubectl_stdin(&["apply", "-f", "-"], &manifests.join("---\n"))
        .success();
    // A ReplicaSet's pod, put on node-2 (test-node is cordoned for now): it is replaced
    // elsewhere once evicted.
    t.kubectl(&["cordon", "test-node"]).success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n      containers: [{name: c, command: [sleep, '600']}]\n",
    )
    .success();
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    let pids = common::eventually(
        "the three pods running on node-2",
        Duration::from_secs(60),
        async || {
            let mut pids = BTreeMap::new();
            for name in ["short", "forever", "default"] {
                let p = pods.get(name).await.ok()?;
                (p.status?.phase.as_deref() == Some("Running")).then_some(())?;
                let pid: i32 = std::fs::read_to_string(format!("{dir}/{name}.pid"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
                pids.insert(name, pid);
            }
            Some(pids)
        },
    )
    .await;
    let web_node = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default()
    };
    let running_web = async || {
        let list = pods
            .list(&kube::api::ListParams::default().labels("app=web"))
            .await
            .ok()?;
        list.items.into_iter().find(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
    };
    // A Job whose pod failure policy ignores disruptions: its pod on node-2 (which would run
    // for ever there) is evicted, the eviction does not count against `backoffLimit: 0`, and
    // the replacement completes on test-node.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: train}\nspec:\n  backoffLimit: 0\n  podFailurePolicy:\n    rules: [{action: Ignore, onPodConditions: [{type: DisruptionTarget}]}]\n  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      tolerations: [{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}]\n      containers:\n      - name: c\n        command: [/bin/sh, -c, 'if [ \"$NODE\" = node-2 ]; then exec sleep 600; fi; echo done on $NODE']\n        env: [{name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}]\n",
    )
    .success();
    let first_web = common::eventually(
        "the ReplicaSet's pod running",
        Duration::from_secs(60),
        running_web,
    )
    .await;
    assert_eq!(web_node(&first_web), "node-2");
    common::eventually(
        "the Job's pod running on node-2",
        Duration::from_secs(60),
        async || {
            let list = pods
                .list(&kube::api::ListParams::default().labels("job-name=train"))
                .await
                .ok()?;
            list.items
                .iter()
                .any(|p| {
                    web_node(p) == "node-2"
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .then_some(())
        },
    )
    .await;
    // The admission plugin's defaults: 300 s of both taints for `default`; `short` keeps its
    // own 2 s and gets only not-ready's default.
    let tolerations = t.kubectl(&[
        "get",
        "pod",
        "default",
        "-o",
        "jsonpath={range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
    ]);
    assert_eq!(
        tolerations.success().trim(),
        "node.kubernetes.io/not-ready=300 node.kubernetes.io/unreachable=300"
    );
    let short = t
        .kubectl(&[
            "get",
            "pod",
            "short",
            "-o",
            "jsonpath={range .spec.tolerations[*]}{.key}={.tolerationSeconds} {end}",
        ])
        .success();
    assert_eq!(
        short.trim(),
        "node.kubernetes.io/unreachable=2 node.kubernetes.io/not-ready=300"
    );

    // The machine goes silent: the agent stops (its pods' processes keep running, as on a
    // machine cut off from the network).
    agent.stop().await;
    let stopped = Instant::now();
    common::eventually(
        "node-2 Ready=Unknown and tainted unreachable",
        Duration::from_secs(60),
        async || {
            let n = nodes.get("node-2").await.ok()?;
            let (status, reason) = ready_status(&n)?;
            let tainted = taints(&n);
            (status == "Unknown"
                && reason.as_deref() == Some("NodeStatusUnknown")
                && tainted.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                && tainted.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string()))
            .then_some(())
        },
    )
    .await;
    let not_ready_after = stopped.elapsed();
    println!("node-2 NotReady {not_ready_after:?} after its agent stopped (grace {GRACE:?})");
    assert!(
        not_ready_after >= GRACE - Duration::from_millis(500),
        "marked before the grace period: {not_ready_after:?}"
    );
    common::eventually("`short` evicted", Duration::from_secs(30), async || {
        pods.get_opt("short").await.ok()?.is_none().then_some(())
    })
    .await;
    println!(
        "`short` (tolerationSeconds 2) removed {:?} after the agent stopped",
        stopped.elapsed()
    );
    let states = seen
        .lock()
        .unwrap()
        .get("short")
        .cloned()
        .unwrap_or_default();
    assert!(
        states.contains(&("Failed".into(), Some("DeletionByTaintManager".into()))),
        "`short` was marked Failed with DisruptionTarget before it was removed: {states:?}"
    );
    assert_eq!(states.last().map(|s| s.0.as_str()), Some("Deleted"));
    let events: Api<Event> = Api::default_namespaced(t.client.clone());
    common::eventually(
        "the eviction and NotReady events",
        Duration::from_secs(10),
        async || {
            let list = events.list(&Default::default()).await.ok()?.items;
            let has = |reason: &str, name: &str| {
                list.iter().any(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.involved_object.name.as_deref() == Some(name)
                })
            };
            (has("TaintManagerEviction", "short") && has("NodeNotReady", "node-2")).then_some(())
        },
    )
    .await;
    // The ReplicaSet's pod was evicted too and is replaced on the node that is left.
    t.kubectl(&["uncordon", "test-node"]).success();
    let second_web = common::eventually(
        "the ReplicaSet's pod replaced on test-node",
        Duration::from_secs(60),
        async || {
            running_web()
                .await
                .filter(|p| p.metadata.uid != first_web.metadata.uid)
        },
    )
    .await;
    assert_eq!(web_node(&second_web), "test-node");
    println!(
        "the ReplicaSet's pod runs again on test-node {:?} after node-2's agent stopped",
        stopped.elapsed()
    );
    let web_states = seen
        .lock()
        .unwrap()
        .get(first_web.metadata.name.as_deref().unwrap_or_default())
        .cloned()
        .unwrap_or_default();
    assert!(
        web_states.contains(&("Failed".into(), Some("DeletionByTaintManager".into()))),
        "{web_states:?}"
    );

    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::default_namespaced(t.client.clone());
    let job_status = common::eventually(
        "the Job Complete on test-node",
        Duration::from_secs(60),
        async || {
            let status = jobs.get("train").await.ok()?.status?;
            status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Complete" && c.status == "True")
                .then_some(status)
        },
    )
    .await;
    assert_eq!(
        job_status.failed.unwrap_or(0),
        0,
        "the eviction counted as a failure: {job_status:?}"
    );
    println!(
        "the Job completed on test-node {:?} after node-2's agent stopped",
        stopped.elapsed()
    );

    // The others tolerate the taint (for ever, and for 300 s): still there, still bound.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["forever", "default"] {
        let p = pods.get(name).await.expect("still there");
        assert!(
            p.metadata.deletion_timestamp.is_none(),
            "{name} was evicted"
        );
    }

    // The machine comes back: the agent heartbeats, reports Ready, the taints are lifted, and
    // it kills the process of the pod that was removed meanwhile.
    assert!(
        pid_alive(pids["short"]),
        "the silent machine still runs `short`"
    );
    let agent = second_agent(&t, "node-2").await;
    let back = Instant::now();
    common::eventually(
        "node-2 Ready again with the taints lifted",
        Duration::from_secs(60),
        async || {
            let n = nodes.get("node-2").await.ok()?;
            (ready_status(&n)?.0 == "True" && taints(&n).is_empty()).then_some(())
        },
    )
    .await;
    println!(
        "node-2 Ready and untainted {:?} after its agent came back",
        back.elapsed()
    );
    common::eventually(
        "the agent to kill the removed pod's process",
        Duration::from_secs(60),
        async || (!pid_alive(pids["short"])).then_some(()),
    )
    .await;
    for name in ["forever", "default"] {
        assert!(pid_alive(pids[name]), "{name} keeps running");
        let p = pods.get(name).await.unwrap();
        assert_eq!(p.status.unwrap().phase.as_deref(), Some("Running"));
    }
    // The ordinary pods stay: no second eviction now that the node is Ready.
    t.kubectl(&["delete", "rs", "web", "--wait=true"]).success();
    t.kubectl(&["delete", "job", "train", "--wait=true"])
        .success();
    t.kubectl(&["delete", "pod", "forever", "default", "--wait=true"])
        .success();
    recorder.abort();
    agent.stop().await;
}

/// A plane whose `test-node` (sandboxed) and second agent `node-2` (host processes) have two
/// fake GPUs each, with the tests' short grace period.
async fn two_gpu_nodes() -> (common::TestPlane, ferry_agent::AgentHandle) {
    let t = common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Fake(
            ferry_agent::gpu::parse_fake_gpus("2xH100-80GB").unwrap(),
        );
        agent.shim = Some(common::shim_command());
        c.agent = Some(agent);
        c.node_monitor_grace_period = GRACE;
    })
    .await;
    let agent = t
        .add_agent_with("node-2", |c| {
            c.heartbeat_interval = Duration::from_millis(500);
            c.lease_duration = Duration::from_secs(2);
            c.node_status_interval = Duration::from_secs(1);
            c.gpus = ferry_agent::gpu::GpuSource::Fake(
                ferry_agent::gpu::parse_fake_gpus("2xH100-80GB").unwrap(),
            );
        })
        .await;
    let nodes: Api<Node> = Api::all(t.client.clone());
    common::eventually("both nodes Ready", Duration::from_secs(60), async || {
        for name in ["test-node", "node-2"] {
            let n = nodes.get_opt(name).await.ok()??;
            (ready_status(&n)?.0 == "True").then_some(())?;
        }
        Some(())
    })
    .await;
    (t, agent)
}

/// A PyTorchJob replica of `n` one-GPU pods that tolerate the unreachable taint for 1 s.
/// Each writes its pid to `<dir>/<pod>.pid`; on node-2 it runs until killed, elsewhere it
/// ends at once (or after `seconds`).
fn gpu_replica(n: i32, dir: &str, seconds: u32) -> serde_json::Value {
    let script = format!(
        "echo $$ > {dir}/$POD.pid; if [ \"$NODE\" = node-2 ]; then exec sleep 600; fi; sleep {seconds}; echo trained on $NODE"
    );
    serde_json::json!({
        "replicas": n,
        "restartPolicy": "OnFailure",
        "template": {"spec": {
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                             "effect": "NoExecute", "tolerationSeconds": 1}],
            "containers": [{
                "name": "pytorch",
                "command": ["/bin/sh", "-c", script],
                "env": [
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "resources": {"limits": {"nvidia.com/gpu": 1}},
            }],
        }},
    })
}

fn node_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

fn running_on(pods: &[Pod], node: &str) -> Vec<String> {
    let mut v: Vec<String> = pods
        .iter()
        .filter(|p| {
            node_of(p) == node
                && p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    v.sort();
    v
}

/// Kills what the silent machine still runs (the pid files the pods wrote).
fn kill_leftovers(dir: &str, pods: &[&str]) {
    for pod in pods {
        if let Ok(pid) = std::fs::read_to_string(format!("{dir}/{pod}.pid"))
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A non-elastic PyTorchJob (master + worker) on a node that goes silent: its pods are
/// evicted once their toleration runs out, the controller restarts the whole gang (one
/// restart, within `backoffLimit`), and the gang is placed on the node that is left and
/// Succeeds there.
#[tokio::test(flavor = "multi_thread")]
async fn a_gang_on_a_silent_node_is_replaced_whole_within_its_backoff_limit() {
    if !common::sandbox_capable(
        "a_gang_on_a_silent_node_is_replaced_whole_within_its_backoff_limit",
    ) {
        return;
    }
    let (t, agent) = two_gpu_nodes().await;
    let dir = t.dir.path().display().to_string();
    t.kubectl(&["cordon", "test-node"]).success();
    crate::training_pytorch::apply(
        &t,
        &crate::training_pytorch::pytorchjob(
            "gang",
            serde_json::json!({
                "runPolicy": {"backoffLimit": 2},
                "pytorchReplicaSpecs": {
                    "Master": gpu_replica(1, &dir, 1),
                    "Worker": gpu_replica(1, &dir, 1),
                },
            }),
        ),
    );
    common::eventually(
        "the gang running on node-2",
        Duration::from_secs(60),
        async || {
            let pods = crate::training_pytorch::job_pods(&t, "gang").await;
            (running_on(&pods, "node-2") == ["gang-master-0", "gang-worker-0"]).then_some(())
        },
    )
    .await;
    t.kubectl(&["uncordon", "test-node"]).success();
    agent.stop().await;
    let stopped = Instant::now();
    let job = crate::training_pytorch::wait_condition(&t, "gang", "Succeeded").await;
    println!(
        "the gang re-placed whole and Succeeded {:?} after node-2 went silent",
        stopped.elapsed()
    );
    let restarts = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("training.ferry.dev/restarts"))
        .cloned();
    assert_eq!(restarts.as_deref(), Some("1"), "one whole-gang restart");
    let pods = crate::training_pytorch::job_pods(&t, "gang").await;
    for p in &pods {
        assert_eq!(node_of(p), "test-node", "{:?} re-placed", p.metadata.name);
    }
    let log = t.kubectl(&["logs", "gang-master-0"]).success();
    assert!(log.contains("trained on test-node"), "{log}");
    kill_leftovers(&dir, &["gang-master-0", "gang-worker-0"]);
}

/// An elastic PyTorchJob (min 2, max 4) with two workers on each node: when node-2 goes
/// silent its two workers are evicted and the job shrinks instead of failing: no gang
/// restart, the workers on test-node keep running (the same pods), the lost ones wait to
/// fit again, the job stays Running.
#[tokio::test(flavor = "multi_thread")]
async fn an_elastic_job_shrinks_when_a_node_goes_silent() {
    if !common::sandbox_capable("an_elastic_job_shrinks_when_a_node_goes_silent") {
        return;
    }
    let (t, agent) = two_gpu_nodes().await;
    let dir = t.dir.path().display().to_string();
    crate::training_pytorch::apply(
        &t,
        &crate::training_pytorch::pytorchjob(
            "el",
            serde_json::json!({
                "elasticPolicy": {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"},
                "pytorchReplicaSpecs": {"Worker": gpu_replica(4, &dir, 600)},
            }),
        ),
    );
    let (on_test, on_two) = common::eventually(
        "four workers running, two on each node",
        Duration::from_secs(60),
        async || {
            let pods = crate::training_pytorch::job_pods(&t, "el").await;
            let (a, b) = (running_on(&pods, "test-node"), running_on(&pods, "node-2"));
            (a.len() == 2 && b.len() == 2).then_some((a, b))
        },
    )
    .await;
    let uid_of = |pods: &[Pod], name: &str| {
        pods.iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .map(crate::training_pytorch::uid)
    };
    let before = crate::training_pytorch::job_pods(&t, "el").await;
    crate::training_pytorch::wait_condition(&t, "el", "Running").await;
    agent.stop().await;
    let stopped = Instant::now();
    let after = common::eventually(
        "node-2's workers evicted and recreated",
        Duration::from_secs(60),
        async || {
            let pods = crate::training_pytorch::job_pods(&t, "el").await;
            let replaced = on_two.iter().all(|name| {
                let now = uid_of(&pods, name);
                now.is_some() && now != uid_of(&before, name)
            });
            replaced.then_some(pods)
        },
    )
    .await;
    println!(
        "node-2's workers {on_two:?} evicted and recreated {:?} after it went silent",
        stopped.elapsed()
    );
    assert_eq!(
        running_on(&after, "test-node"),
        on_test,
        "the others run on"
    );
    for name in &on_test {
        assert_eq!(
            uid_of(&after, name),
            uid_of(&before, name),
            "{name} untouched"
        );
    }
    for name in &on_two {
        let p = after
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name))
            .unwrap();
        assert_eq!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Pending"),
            "{name} waits for a GPU (node-2 is tainted, test-node full)"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let job = crate::training_pytorch::jobs(&t).get("el").await.unwrap();
    let cond = |type_: &str| {
        crate::training_pytorch::condition(&job, type_).is_some_and(|c| c.0 == "True")
    };
    assert!(
        cond("Running") && !cond("Failed"),
        "{:?}",
        job.data["status"]
    );
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("training.ferry.dev/restarts")),
        "no gang restart: {:?}",
        job.metadata.annotations
    );
    let names: Vec<&str> = on_two.iter().map(String::as_str).collect();
    kill_leftovers(&dir, &names);
    t.kubectl(&["delete", "pytorchjob", "el", "--wait=false"])
        .success();
}

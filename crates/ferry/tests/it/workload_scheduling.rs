//! The scheduler and controller-owned pods, end to end with the real kubectl: the pods of a
//! ReplicaSet are one job named after their owner (one entry in the queue's figures, pending
//! reasons and events that name it) while each pod is still placed on its own; a batch Job
//! whose pod template carries a PodGroup label is a gang, pending as a whole until the
//! whole gang fits.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(60);

/// A queue `team` and a namespace `ns` whose pods go to it.
fn queue(ns: &str) -> String {
    format!(
        "apiVersion: scheduling.ferry.dev/v1alpha1\nkind: Queue\nmetadata: {{name: team}}\nspec:\n  resources:\n  - {{name: nvidia.com/gpu, guaranteed: 8}}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n  labels: {{scheduling.ferry.dev/queue: team}}\n"
    )
}

/// The pod template's spec: one GPU, sleeping until deleted.
fn pod_spec(restart: &str) -> String {
    format!(
        "    spec:\n      terminationGracePeriodSeconds: 1\n      restartPolicy: {restart}\n      containers:\n      - name: worker\n        image: trainer\n        command: [sleep, '600']\n        resources:\n          limits: {{nvidia.com/gpu: 1}}\n"
    )
}

async fn pods(client: &kube::Client, ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

fn bound(p: &Pod) -> bool {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some()
}

/// The message of a pod's `PodScheduled=False` condition.
fn unschedulable_message(p: &Pod) -> Option<String> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
        .message
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_pods_are_one_job_named_after_their_owner() {
    let t = common::start_with_node("2xT4").await;
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    let ns = "web-team";
    t.kubectl_stdin(&["apply", "-f", "-"], &queue(ns)).success();
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  replicas: 3\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n{}",
        pod_spec("Always")
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &rs).success();
    // The ReplicaSet controller makes three replicas of one GPU each, on a node of two GPUs.
    // Two are placed (each on its own: the ReplicaSet is no gang), the third waits and says
    // which job it waits as.
    let message = common::eventually(
        "two replicas to run and one to say why it waits",
        WAIT,
        async || {
            let all = pods(&t.client, ns, "app=web").await;
            let running = all.iter().filter(|p| phase(p) == "Running").count();
            let waiting: Vec<String> = all
                .iter()
                .filter(|p| !bound(p))
                .filter_map(unschedulable_message)
                .collect();
            (running == 2 && waiting.len() == 1).then(|| waiting[0].clone())
        },
    )
    .await;
    assert!(
        message.starts_with(&format!("ReplicaSet {ns}/web: ")),
        "the reason names the owner: {message}"
    );
    assert!(message.contains("insufficient GPU"), "{message}");
    // kubectl shows the same reason on the pod, and a FailedScheduling event names the owner.
    let described = t
        .kubectl(&[
            "get",
            "pods",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"PodScheduled\")].message}",
        ])
        .success();
    assert!(
        described.contains(&format!("ReplicaSet {ns}/web")),
        "{described}"
    );
    let events = common::eventually(
        "a FailedScheduling event naming the owner",
        WAIT,
        async || {
            let out = t
                .kubectl(&[
                    "get",
                    "events",
                    "-n",
                    ns,
                    "--field-selector",
                    "reason=FailedScheduling",
                    "-o",
                    "jsonpath={.items[*].message}",
                ])
                .success();
            out.contains(&format!("ReplicaSet {ns}/web")).then_some(out)
        },
    )
    .await;
    assert!(events.contains("insufficient GPU"), "{events}");
    // The queue counts one job (the owner), not three: it runs, with a pod still waiting.
    let (running_jobs, pending_jobs) = common::eventually("the queue to count one job", WAIT, async || {
        let out = t
            .kubectl(&[
                "get",
                "queue",
                "team",
                "-o",
                "jsonpath={.status.runningJobs} {.status.pendingJobs} {.status.usage.nvidia\\.com/gpu}",
            ])
            .success();
        let f: Vec<&str> = out.split_whitespace().collect();
        (f.len() == 3 && f[2] == "2").then(|| (f[0].to_string(), f[1].to_string()))
    })
    .await;
    assert_eq!((running_jobs.as_str(), pending_jobs.as_str()), ("1", "0"));

    // Room for the waiting replica: it is placed as soon as a GPU frees up (the oldest
    // pod of the job first; the ReplicaSet's replacement for the deleted one waits).
    let all = pods(&t.client, ns, "app=web").await;
    let waiting = all
        .iter()
        .find(|p| !bound(p))
        .and_then(|p| p.metadata.name.clone())
        .unwrap();
    let victim = all
        .iter()
        .find(|p| phase(p) == "Running")
        .and_then(|p| p.metadata.name.clone())
        .unwrap();
    t.kubectl(&["delete", "pod", &victim, "-n", ns, "--wait=false"])
        .success();
    common::eventually("the waiting replica to run", WAIT, async || {
        let all = pods(&t.client, ns, "app=web").await;
        all.iter()
            .any(|p| p.metadata.name.as_deref() == Some(waiting.as_str()) && phase(p) == "Running")
            .then_some(())
    })
    .await;
    let replacement = common::eventually(
        "the replacement to wait, naming its owner",
        WAIT,
        async || {
            let all = pods(&t.client, ns, "app=web").await;
            let m: Vec<String> = all
                .iter()
                .filter(|p| p.metadata.name.as_deref() != Some(victim.as_str()) && !bound(p))
                .filter_map(unschedulable_message)
                .collect();
            (all.len() == 3 && m.len() == 1).then(|| m[0].clone())
        },
    )
    .await;
    assert!(
        replacement.starts_with(&format!("ReplicaSet {ns}/web: ")),
        "{replacement}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_podgroup_waits_as_a_whole_gang_then_runs() {
    let t = common::start_with_node("3xT4").await;
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    let ns = "default";
    // A plain pod holds one of the three GPUs: only two of the gang's three pods fit.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: blocker}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: x\n    command: [sleep, '600']\n    resources:\n      limits: {nvidia.com/gpu: 1}\n",
    )
    .success();
    common::eventually("the blocker to run", WAIT, async || {
        let p = pods(&t.client, ns, "").await;
        p.iter()
            .any(|p| p.metadata.name.as_deref() == Some("blocker") && phase(p) == "Running")
            .then_some(())
    })
    .await;
    let job = format!(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {{name: train}}\nspec: {{minMember: 3}}\n---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: train}}\nspec:\n  parallelism: 3\n  completions: 3\n  template:\n    metadata: {{labels: {{scheduling.x-k8s.io/pod-group: train, app: train}}}}\n{}",
        pod_spec("Never")
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &job).success();
    let messages = common::eventually("the gang to say why it waits", WAIT, async || {
        let all = pods(&t.client, ns, "app=train").await;
        let m: Vec<String> = all.iter().filter_map(unschedulable_message).collect();
        (all.len() == 3 && m.len() == 3 && m.iter().all(|m| m.contains("only 2 fit"))).then_some(m)
    })
    .await;
    for m in &messages {
        assert!(
            m.starts_with(&format!(
                "Job {ns}/train (podgroup {ns}/train): gang needs 3 pods, only 2 fit"
            )),
            "the gang's reason names its Job: {m}"
        );
    }
    // Pending as a whole: not one pod of the gang is placed, though two would fit.
    let all = pods(&t.client, ns, "app=train").await;
    assert!(all.iter().all(|p| !bound(p)), "no pod of the gang is bound");
    let group = t
        .kubectl(&[
            "get",
            "podgroup",
            "train",
            "-o",
            "jsonpath={.status.phase} {.status.conditions[?(@.type==\"Scheduled\")].message}",
        ])
        .success();
    assert!(group.contains("gang needs 3 pods, only 2 fit"), "{group}");

    // The Job's pods are the gang's: the Job controller made them from the template.
    let owners = t
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=train",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].kind}",
        ])
        .success();
    assert_eq!(owners, "Job Job Job");
    // Capacity appears: the whole gang is placed at once.
    t.kubectl(&["delete", "pod", "blocker", "--wait=false"])
        .success();
    common::eventually("the whole gang to run", WAIT, async || {
        let all = pods(&t.client, ns, "app=train").await;
        (all.len() == 3 && all.iter().all(|p| phase(p) == "Running")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_pods_are_accounted_to_the_deployment() {
    let t = common::start_with_node("1xT4").await;
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    let ns = "default";
    let deployment = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n{}",
        pod_spec("Always")
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &deployment)
        .success();
    // Its pods are the ReplicaSet's, and the job is the Deployment that owns the ReplicaSet.
    let message = common::eventually("one replica to run and one to wait", WAIT, async || {
        let all = pods(&t.client, ns, "app=web").await;
        let running = all.iter().filter(|p| phase(p) == "Running").count();
        let waiting: Vec<String> = all
            .iter()
            .filter(|p| !bound(p))
            .filter_map(unschedulable_message)
            .collect();
        (running == 1 && waiting.len() == 1).then(|| waiting[0].clone())
    })
    .await;
    assert!(
        message.starts_with(&format!("Deployment {ns}/web: ")),
        "the reason names the Deployment: {message}"
    );
    let owner = t
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.ownerReferences[0].kind}",
        ])
        .success();
    assert_eq!(owner, "ReplicaSet");
}

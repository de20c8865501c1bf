//! Elastic PodGroups end to end with plain pods: a group with more pods than `minMember`
//! (its pods carrying the surplus-order annotation) grows into idle GPUs, gives back its
//! highest-order surplus pods, one by one, when another queue reclaims its guarantee (its
//! minimum keeps running), says so in Events, and grows again when the GPUs are free.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(40);

pub(crate) const QUEUES: &str = r#"
apiVersion: scheduling.ferry.dev/v1alpha1
kind: Queue
metadata: {name: team-a}
spec:
  resources:
  - {name: nvidia.com/gpu, guaranteed: 2}
---
apiVersion: scheduling.ferry.dev/v1alpha1
kind: Queue
metadata: {name: team-b}
spec:
  resources:
  - {name: nvidia.com/gpu, guaranteed: 2}
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns-a
  labels: {scheduling.ferry.dev/queue: team-a}
---
apiVersion: v1
kind: Namespace
metadata:
  name: ns-b
  labels: {scheduling.ferry.dev/queue: team-b}
"#;

pub(crate) fn pod(ns: &str, group: &str, name: &str, order: Option<usize>) -> String {
    let annotations = order
        .map(|o| format!("  annotations: {{scheduling.ferry.dev/surplus-order: '{o}'}}\n"))
        .unwrap_or_default();
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{scheduling.x-k8s.io/pod-group: {group}}}\n{annotations}spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: worker\n    image: trainer\n    command: [sleep, '600']\n    resources:\n      limits: {{nvidia.com/gpu: 1}}\n"
    )
}

pub(crate) fn group(ns: &str, name: &str, min: usize) -> String {
    format!(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{minMember: {min}}}\n"
    )
}

pub(crate) async fn running(client: &kube::Client, ns: &str, group: &str) -> Vec<String> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut v: Vec<String> = api
        .list(&ListParams::default().labels(&format!("scheduling.x-k8s.io/pod-group={group}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|p| p.metadata.name)
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elastic_group_grows_gives_surplus_back_and_grows_again() {
    let t = common::start_with_node("4xH100-80GB").await;
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    t.kubectl_stdin(&["apply", "-f", "-"], QUEUES).success();

    // min 2, 4 pods: grows into all 4 idle GPUs (team A borrows team B's 2).
    let mut el = group("ns-a", "el", 2);
    for i in 0..4 {
        el.push_str(&pod("ns-a", "el", &format!("el-worker-{i}"), Some(i + 1)));
    }
    t.kubectl_stdin(&["apply", "-f", "-"], &el).success();
    common::eventually("el to grow to 4", WAIT, async || {
        (running(&t.client, "ns-a", "el").await.len() == 4).then_some(())
    })
    .await;

    // Team B, within its guarantee, asks for 2 GPUs: el's two highest-order surplus pods
    // go, its minimum keeps running.
    let mut b = group("ns-b", "b1", 2);
    b.push_str(&pod("ns-b", "b1", "b1-0", None));
    b.push_str(&pod("ns-b", "b1", "b1-1", None));
    t.kubectl_stdin(&["apply", "-f", "-"], &b).success();
    common::eventually("b1 to run", WAIT, async || {
        (running(&t.client, "ns-b", "b1").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(
        running(&t.client, "ns-a", "el").await,
        ["el-worker-0", "el-worker-1"]
    );
    let events = common::eventually("the SurplusPreempted event", WAIT, async || {
        let out = t
            .kubectl(&[
                "get",
                "events",
                "-n",
                "ns-a",
                "-o",
                "jsonpath={range .items[*]}{.involvedObject.name} {.reason}: {.message}{\"\\n\"}{end}",
            ])
            .success();
        (out.contains("el SurplusPreempted") && out.contains("el-worker-3 Preempted")).then_some(out)
    })
    .await;
    println!("el's events:\n{events}");
    assert!(
        events
            .lines()
            .any(|l| l.starts_with("el SurplusPreempted:")
                && l.contains("2 surplus pods taken back")),
        "{events}"
    );
    assert!(
        events.lines().any(|l| l
            .starts_with("el-worker-3 Preempted: surplus pod (beyond minMember) of elastic group")),
        "{events}"
    );

    // The surplus comes back (as an elastic controller recreates it) and waits, saying why;
    // nothing else is evicted.
    let mut again = String::new();
    for i in 2..4 {
        again.push_str(&pod("ns-a", "el", &format!("el-worker-{i}"), Some(i + 1)));
    }
    common::eventually("the old surplus pods to be gone", WAIT, async || {
        t.kubectl_stdin(&["create", "-f", "-"], &again)
            .ok
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running(&t.client, "ns-b", "b1").await.len(), 2);
    assert_eq!(running(&t.client, "ns-a", "el").await.len(), 2);

    // b1 ends: el grows back to 4.
    t.kubectl(&[
        "delete",
        "pods",
        "-n",
        "ns-b",
        "b1-0",
        "b1-1",
        "--wait=false",
    ])
    .success();
    common::eventually("el to grow back to 4", WAIT, async || {
        (running(&t.client, "ns-a", "el").await.len() == 4).then_some(())
    })
    .await;
}

//! Job-level scheduling end to end through the embedded control plane: a queue tree, two
//! namespaces bound to two queues, competing gang jobs of plain pods, reclaim of borrowed
//! GPUs, and the reasons of a waiting gang visible with kubectl.

use crate::common;

use std::time::Duration;

use ferry_api::scheduling::PodGroup;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(40);

const QUEUES: &str = r#"
apiVersion: scheduling.ferry.dev/v1alpha1
kind: Queue
metadata: {name: org}
spec:
  resources:
  - {name: nvidia.com/gpu, guaranteed: 8}
---
apiVersion: scheduling.ferry.dev/v1alpha1
kind: Queue
metadata: {name: team-a}
spec:
  parent: org
  resources:
  - {name: nvidia.com/gpu, guaranteed: 4, borrowingLimit: 4}
---
apiVersion: scheduling.ferry.dev/v1alpha1
kind: Queue
metadata: {name: team-b}
spec:
  parent: org
  resources:
  - {name: nvidia.com/gpu, guaranteed: 4, borrowingLimit: 4}
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

/// A PodGroup of `n` pods, each asking for `gpus` GPUs, sleeping until deleted.
fn gang(ns: &str, name: &str, n: usize, gpus: u32) -> String {
    let mut yaml = format!(
        "apiVersion: scheduling.x-k8s.io/v1alpha1\nkind: PodGroup\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{minMember: {n}}}\n"
    );
    for i in 0..n {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}-{i}\n  namespace: {ns}\n  labels: {{scheduling.x-k8s.io/pod-group: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: worker\n    image: trainer\n    command: [sleep, '600']\n    resources:\n      limits: {{nvidia.com/gpu: {gpus}}}\n"
        ));
    }
    yaml
}

async fn pods_of(client: &kube::Client, ns: &str, group: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default().labels(&format!("scheduling.x-k8s.io/pod-group={group}")))
        .await
        .unwrap()
        .items
}

fn running(pods: &[Pod]) -> usize {
    pods.iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gangs_borrow_are_reclaimed_and_explain_why_they_wait() {
    let t = common::start_with_node("8xA100-80GB").await;
    common::eventually("the node to register", WAIT, async || {
        t.kubectl(&["get", "node", "test-node"]).ok.then_some(())
    })
    .await;
    t.kubectl_stdin(&["apply", "-f", "-"], QUEUES).success();

    // Team A borrows team B's idle guarantee: a 4-pod gang of 2 GPUs each takes all 8.
    t.kubectl_stdin(&["apply", "-f", "-"], &gang("ns-a", "a1", 4, 2))
        .success();
    common::eventually("gang a1 to run", WAIT, async || {
        (running(&pods_of(&t.client, "ns-a", "a1").await) == 4).then_some(())
    })
    .await;
    let phase = common::eventually("a1's PodGroup to report Running", WAIT, async || {
        let out = t
            .kubectl(&[
                "get",
                "podgroup",
                "a1",
                "-n",
                "ns-a",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .success();
        (out == "Running").then_some(out)
    })
    .await;
    assert_eq!(phase, "Running");

    // Team B, within its guarantee, submits a gang: team A's borrowed GPUs come back, and
    // only whole gangs are preempted.
    t.kubectl_stdin(&["apply", "-f", "-"], &gang("ns-b", "b1", 2, 2))
        .success();
    common::eventually("gang b1 to run", WAIT, async || {
        (running(&pods_of(&t.client, "ns-b", "b1").await) == 2).then_some(())
    })
    .await;
    let a1 = pods_of(&t.client, "ns-a", "a1").await;
    let survivors = a1
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    assert_eq!(
        survivors, 0,
        "a1 was preempted as a whole gang, not in part"
    );
    let events = t
        .kubectl(&[
            "get",
            "events",
            "-n",
            "ns-a",
            "--field-selector",
            "reason=Preempted",
            "-o",
            "jsonpath={.items[*].message}",
        ])
        .success();
    assert!(!events.is_empty(), "the preempted pods say why");

    // Team A asks again for more than is free: the gang waits, and says why where people look.
    t.kubectl_stdin(&["apply", "-f", "-"], &gang("ns-a", "a2", 4, 2))
        .success();
    let groups: Api<PodGroup> = Api::namespaced(t.client.clone(), "ns-a");
    let condition = common::eventually("a2's PodGroup to explain why it waits", WAIT, async || {
        let pg = groups.get("a2").await.ok()?;
        let status = pg.status?;
        let c = status
            .conditions
            .into_iter()
            // Once all four pods exist (kubectl creates them one by one, and the gang says
            // so meanwhile).
            .find(|c| {
                c.type_ == "Scheduled"
                    && c.status == "False"
                    && !c.message.contains("waiting for the rest to be created")
            })?;
        Some((status.phase.unwrap_or_default(), c))
    })
    .await;
    assert_eq!(condition.0, "Pending");
    assert!(!condition.1.message.is_empty(), "{:?}", condition.1);
    let prefix = &condition.1.message[..condition.1.message.len().min(40)];
    let described = common::eventually("describe pod to show FailedScheduling", WAIT, async || {
        let out = t
            .kubectl(&["describe", "pod", "a2-0", "-n", "ns-a"])
            .success();
        (out.contains("FailedScheduling") && out.contains(prefix)).then_some(out)
    })
    .await;
    assert!(
        described.contains(&condition.1.message[..condition.1.message.len().min(40)]),
        "{described}"
    );
    assert_eq!(
        running(&pods_of(&t.client, "ns-a", "a2").await),
        0,
        "no part of a2 runs"
    );
    let table = t.kubectl(&["get", "podgroups", "-A"]).success();
    assert!(table.contains("a2") && table.contains("Pending"), "{table}");
    let queues = t.kubectl(&["get", "queues"]).success();
    assert!(queues.contains("team-b"), "{queues}");
    // Leave no sleeping processes behind: delete the pods and wait until they are gone.
    for ns in ["ns-a", "ns-b"] {
        t.kubectl(&["delete", "pods", "--all", "-n", ns, "--grace-period=1"])
            .success();
    }
    t.plane.stop().await;
}

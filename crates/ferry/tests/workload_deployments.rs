//! Deployments and ReplicaSets with the real kubectl: the ReplicaSet controller (replicas,
//! adoption, release, status), rollouts (RollingUpdate with a Ready pod at every moment,
//! Recreate, undo, history, restart, pause and resume, scale), the kubernetes.io Deployment
//! walkthrough, `kill -9` of `ferry up` mid-rollout, and the API server's answers to bad input.
mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(120);

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

fn owner_uid(p: &Pod) -> Option<String> {
    p.owner_references()
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.clone())
}

async fn pods_with(client: &kube::Client, labels: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    pods.list(&ListParams::default().labels(labels))
        .await
        .unwrap()
        .items
}

const RS: &str = r#"
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: frontend, labels: {tier: frontend}}
spec:
  replicas: 3
  selector: {matchLabels: {tier: frontend}}
  template:
    metadata: {labels: {tier: frontend}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_replicaset_keeps_its_replicas_adopts_orphans_and_releases_relabelled_pods() {
    let t = common::start_with_node("1xT4").await;
    // An orphan that matches, created first: the ReplicaSet adopts it and makes two more.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan, labels: {tier: frontend}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers: [{name: c, image: busybox, command: [sleep, '3600']}]\n",
    )
    .success();
    t.kubectl_stdin(&["apply", "-f", "-"], RS).success();
    let sets: Api<ReplicaSet> = Api::default_namespaced(t.client.clone());
    let rs = common::eventually("the ReplicaSet", WAIT, async || {
        sets.get("frontend").await.ok()
    })
    .await;
    let uid = rs.metadata.uid.clone().unwrap();
    let owned = common::eventually("3 ready pods, the orphan adopted", WAIT, async || {
        let pods: Vec<Pod> = pods_with(&t.client, "tier=frontend")
            .await
            .into_iter()
            .filter(live)
            .collect();
        (pods.len() == 3
            && pods.iter().all(ready)
            && pods
                .iter()
                .all(|p| owner_uid(p).as_deref() == Some(uid.as_str())))
        .then_some(pods)
    })
    .await;
    assert!(owned.iter().any(|p| p.name_any() == "orphan"));
    for p in owned.iter().filter(|p| p.name_any() != "orphan") {
        assert!(p.name_any().starts_with("frontend-"), "{}", p.name_any());
        let r = &p.owner_references()[0];
        assert_eq!(
            (r.kind.as_str(), r.block_owner_deletion),
            ("ReplicaSet", Some(true))
        );
    }
    common::eventually("status from the pods", WAIT, async || {
        let s = sets.get("frontend").await.ok()?.status?;
        (s.replicas == 3
            && s.ready_replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;
    let table = t
        .kubectl(&["get", "rs", "frontend", "-o", "wide"])
        .success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[3], row[5], row[6], row[7]),
        ("frontend", "3", "3", "3", "c", "busybox", "tier=frontend")
    );

    // A relabelled pod is released and replaced.
    t.kubectl(&["label", "pod", "orphan", "tier=debug", "--overwrite"])
        .success();
    common::eventually(
        "the relabelled pod released and replaced",
        WAIT,
        async || {
            let released = pods_with(&t.client, "tier=debug").await;
            let owned: Vec<Pod> = pods_with(&t.client, "tier=frontend")
                .await
                .into_iter()
                .filter(live)
                .collect();
            (released.len() == 1 && owner_uid(&released[0]).is_none() && owned.len() == 3)
                .then_some(())
        },
    )
    .await;

    // Scale down through the scale subresource: the Scale carries the selector.
    let scale = t
        .kubectl(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/replicasets/frontend/scale",
        ])
        .success();
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(scale["status"]["selector"], "tier=frontend");
    t.kubectl(&["scale", "rs", "frontend", "--replicas=1"])
        .success();
    common::eventually("one pod left", WAIT, async || {
        let pods: Vec<Pod> = pods_with(&t.client, "tier=frontend")
            .await
            .into_iter()
            .filter(live)
            .collect();
        let s = sets.get("frontend").await.ok()?.status?;
        (pods.len() == 1 && s.replicas == 1 && s.observed_generation == Some(2)).then_some(())
    })
    .await;
    t.kubectl(&["delete", "rs", "frontend", "--wait=true"])
        .success();
    t.kubectl(&["delete", "pod", "orphan", "--wait=true"])
        .success();
    common::eventually("the ReplicaSet's pods gone", WAIT, async || {
        pods_with(&t.client, "tier=frontend")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

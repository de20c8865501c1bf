//! A second node agent on the same machine (the harness's `add_agent`) registers its Node and
//! runs a pod bound to it.
use crate::common;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_joins_and_runs_a_pod() {
    let t = common::start_with_node("1xT4").await;
    let second = t.add_agent("second-node").await;
    let nodes: Api<Node> = Api::all(t.client.clone());
    common::eventually("two nodes", Duration::from_secs(60), async || {
        (nodes.list(&Default::default()).await.unwrap().items.len() == 2).then_some(())
    })
    .await;
    t.kubectl_stdin(&["apply", "-f", "-"], "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: second-node\n  containers: [{name: c, image: busybox, command: [sleep, '300']}]\n").success();
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    common::eventually(
        "the pod to run on the second node",
        Duration::from_secs(60),
        async || {
            let p = pods.get("p").await.unwrap();
            (p.status?.phase.as_deref() == Some("Running")).then_some(())
        },
    )
    .await;
    t.kubectl(&["delete", "pod", "p", "--wait=true"]).success();
    second.stop().await;
}

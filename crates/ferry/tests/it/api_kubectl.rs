//! The embedded API server driven by the real kubectl binary.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: hello
  labels: {app: demo}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "echo hello; sleep 1"]
"#;

async fn add_gpu_node(t: &common::TestPlane) {
    let nodes: Api<Node> = Api::all(t.client.clone());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "gpu-node", "labels": {"ferry.dev/gpu-model": "A100-80GB"}},
        "status": {
            "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110", "nvidia.com/gpu": "8"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    }))
    .unwrap();
    let created = nodes.create(&PostParams::default(), &node).await.unwrap();
    nodes
        .replace_status("gpu-node", &PostParams::default(), &created)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_patch_delete() {
    let t = common::start_with(|c| c.scheduler = false).await;
    add_gpu_node(&t).await;
    let nodes = t.kubectl(&["get", "nodes"]).success();
    assert!(nodes.contains("gpu-node"), "{nodes}");
    assert!(nodes.contains("8xA100-80GB"), "GPU column: {nodes}");
    assert!(nodes.contains("Ready"), "{nodes}");
    let gpus = t
        .kubectl(&[
            "get",
            "node",
            "gpu-node",
            "-o",
            "jsonpath={.status.capacity.nvidia\\.com/gpu}",
        ])
        .success();
    assert_eq!(gpus, "8");

    let out = t.kubectl_stdin(&["apply", "-f", "-"], POD).success();
    assert!(out.contains("pod/hello created"), "{out}");
    let out = t.kubectl_stdin(&["apply", "-f", "-"], POD).success();
    assert!(out.contains("pod/hello unchanged"), "{out}");
    let out = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &POD.replace("app: demo", "app: demo2"),
        )
        .success();
    assert!(out.contains("pod/hello configured"), "{out}");
    let labels = t
        .kubectl(&[
            "get",
            "pod",
            "hello",
            "-o",
            "jsonpath={.metadata.labels.app}",
        ])
        .success();
    assert_eq!(labels, "demo2");

    let table = t.kubectl(&["get", "pods"]).success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        table.contains("hello") && table.contains("Pending"),
        "{table}"
    );
    let wide = t.kubectl(&["get", "pods", "-o", "wide"]).success();
    assert!(wide.lines().next().unwrap().contains("NODE"), "{wide}");

    let json: Value =
        serde_json::from_str(&t.kubectl(&["get", "pod", "hello", "-o", "json"]).success()).unwrap();
    assert_eq!(
        json["spec"]["containers"][0]["command"][2],
        "echo hello; sleep 1"
    );
    let yaml = t.kubectl(&["get", "pod", "hello", "-o", "yaml"]).success();
    assert!(yaml.contains("restartPolicy: Never"), "{yaml}");

    t.kubectl(&["label", "pod", "hello", "tier=web"]).success();
    t.kubectl(&["annotate", "pod", "hello", "note=x"]).success();
    let selected = t
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "tier in (web,api),app=demo2",
            "-o",
            "name",
        ])
        .success();
    assert_eq!(selected.trim(), "pod/hello");
    let none = t
        .kubectl(&["get", "pods", "-l", "tier=api", "-o", "name"])
        .success();
    assert!(none.trim().is_empty());
    t.kubectl(&[
        "patch",
        "pod",
        "hello",
        "-p",
        r#"{"metadata":{"labels":{"patched":"yes"}}}"#,
    ])
    .success();
    t.kubectl(&[
        "patch",
        "pod",
        "hello",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/json","value":"1"}]"#,
    ])
    .success();
    let labels: Value = serde_json::from_str(
        &t.kubectl(&["get", "pod", "hello", "-o", "jsonpath={.metadata.labels}"])
            .success(),
    )
    .unwrap();
    assert_eq!(labels["patched"], "yes");
    assert_eq!(labels["json"], "1");

    // A forbidden change of a pod's spec is refused with the reason.
    let err = t
        .kubectl_stdin(&["apply", "-f", "-"], &POD.replace("sleep 1", "sleep 2"))
        .failure();
    assert!(err.contains("pod updates may not change fields"), "{err}");

    let out = t.kubectl(&["delete", "pod", "hello"]).success();
    assert!(out.contains("pod \"hello\" deleted"), "{out}");
    let gone = t.kubectl(&["get", "pod", "hello"]).failure();
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rejects_bad_input_clearly() {
    let t = common::start().await;
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Pod\nmetadata: [broken",
        )
        .failure();
    assert!(
        err.to_lowercase().contains("yaml") || err.contains("error"),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: nope.example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n",
        )
        .failure();
    assert!(err.contains("no matches for kind \"Gizmo\""), "{err}");
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &POD.replace("name: hello", "name: Hello_World"),
        )
        .failure();
    assert!(err.contains("Invalid value: \"Hello_World\""), "{err}");
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &POD.replace("    image: busybox", "    image: busybox\n    imagee: typo"),
        )
        .failure();
    assert!(
        err.contains("unknown field \"spec.containers[0].imagee\""),
        "{err}"
    );
    // A pod asking for 1000 GPUs is accepted, stays Pending, and says why.
    let greedy = POD.replace("name: hello", "name: greedy").replace(
        "    command:",
        "    resources:\n      limits: {nvidia.com/gpu: 1000}\n    command:",
    );
    add_gpu_node(&t).await;
    t.kubectl_stdin(&["apply", "-f", "-"], &greedy).success();
    let described = common::eventually(
        "describe to show the scheduling failure",
        Duration::from_secs(15),
        async || {
            let out = t.kubectl(&["describe", "pod", "greedy"]).success();
            out.contains("FailedScheduling").then_some(out)
        },
    )
    .await;
    assert!(
        described.contains("asks for 1000 GPUs; the largest node has 8"),
        "{described}"
    );
    assert!(described.contains("PodScheduled"), "{described}");
    t.plane.stop().await;
}

const CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wd]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {name: Size, type: integer, jsonPath: .spec.size}
    - {name: Phase, type: string, jsonPath: .status.phase}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status: {type: object, properties: {phase: {type: string}}}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_custom_resources() {
    let t = common::start().await;
    t.kubectl_stdin(&["apply", "-f", "-"], CRD).success();
    let widget =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n";
    t.kubectl_stdin(&["apply", "-f", "-"], widget).success();
    let out = t.kubectl(&["get", "wd"]).success();
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "PHASE", "AGE"]);
    assert!(out.lines().nth(1).unwrap().starts_with("w1"), "{out}");
    // Watch the custom resources while they change.
    let watch = t.kubectl_watch(&[
        "get",
        "widgets",
        "-w",
        "--output-watch-events",
        "-o",
        "custom-columns=EVENT:.type,NAME:.object.metadata.name,SIZE:.object.spec.size",
    ]);
    watch
        .wait_for("ADDED w1", |l| l.starts_with("ADDED") && l.contains("w1"))
        .await;
    t.kubectl(&[
        "patch",
        "widget",
        "w1",
        "--type=merge",
        "-p",
        r#"{"spec":{"size":5}}"#,
    ])
    .success();
    t.kubectl(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Ready"}}"#,
    ])
    .success();
    let out = t
        .kubectl(&[
            "get",
            "widgets.example.com",
            "w1",
            "-o",
            "jsonpath={.spec.size} {.status.phase}",
        ])
        .success();
    assert_eq!(out, "5 Ready");
    t.kubectl_stdin(&["apply", "-f", "-"], &widget.replace("size: 3", "size: 4"))
        .success();
    assert_eq!(
        t.kubectl(&["get", "wd", "w1", "-o", "jsonpath={.spec.size}"])
            .success(),
        "4"
    );
    t.kubectl(&["delete", "wd", "w1"]).success();
    watch
        .wait_for("DELETED w1", |l| l.starts_with("DELETED"))
        .await;
    let watched = watch.finish();
    let events: Vec<&str> = watched
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(events.first(), Some(&"EVENT"), "{watched}");
    assert_eq!(events.get(1), Some(&"ADDED"), "{watched}");
    assert!(
        events.iter().filter(|e| **e == "MODIFIED").count() >= 3,
        "{watched}"
    );
    assert_eq!(events.last(), Some(&"DELETED"), "{watched}");
    assert!(
        t.kubectl(&["get", "wd", "-o", "name"])
            .success()
            .trim()
            .is_empty()
    );
    t.plane.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_watch_streams_changes() {
    let t = common::start_with(|c| c.scheduler = false).await;
    let watch = t.kubectl_watch(&["get", "pods", "-w", "--output-watch-events"]);
    // Each step waits for the event it causes (kubectl may connect after the create: its
    // initial list then shows the pod as ADDED, the same line).
    t.kubectl_stdin(&["apply", "-f", "-"], POD).success();
    watch
        .wait_for("ADDED hello", |l| {
            l.starts_with("ADDED") && l.contains("hello")
        })
        .await;
    t.kubectl(&["label", "pod", "hello", "step=2"]).success();
    watch
        .wait_for("MODIFIED hello", |l| l.starts_with("MODIFIED"))
        .await;
    t.kubectl(&["delete", "pod", "hello"]).success();
    watch
        .wait_for("DELETED hello", |l| l.starts_with("DELETED"))
        .await;
    let out = watch.finish();
    let events: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(events, ["EVENT", "ADDED", "MODIFIED", "DELETED"], "{out}");
    t.plane.stop().await;
}

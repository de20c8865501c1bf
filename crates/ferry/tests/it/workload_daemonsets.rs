//! DaemonSets end to end with the real kubectl on two nodes (the plane's agent `test-node` and
//! a second agent `node-2`): one pod per node, a nodeSelector that excludes a node and follows
//! its labels, a tainted node tolerated or not (NoSchedule keeps new pods away, NoExecute
//! removes them), rolling updates (maxUnavailable, then maxSurge) with `kubectl rollout
//! status`, OnDelete, kubectl's columns, and the 422s kube-apiserver gives.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(120);

/// The DaemonSet `name` running `sleep`, with `extra` lines appended to its pod spec.
fn daemonset(name: &str, extra: &str) -> String {
    format!(
        "
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: [sleep, '3600']
        env: [{{name: VERSION, value: one}}]
        readinessProbe:
          exec: {{command: ['true']}}
          periodSeconds: 1
{extra}"
    )
}

/// The set's live pods by node.
async fn pods_by_node(t: &common::TestPlane, name: &str) -> BTreeMap<String, Vec<Pod>> {
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    let mut out: BTreeMap<String, Vec<Pod>> = BTreeMap::new();
    for p in pods
        .list(&ListParams::default().labels(&format!("app={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let node = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        out.entry(node).or_default().push(p);
    }
    out
}

/// Waits until the set's live pods are on exactly `nodes`, one each.
async fn on_nodes(t: &common::TestPlane, name: &str, nodes: &[&str]) -> BTreeMap<String, Pod> {
    common::eventually(&format!("{name}'s pods on {nodes:?}"), WAIT, async || {
        let by_node = pods_by_node(t, name).await;
        let found: Vec<&str> = by_node.keys().map(String::as_str).collect();
        (found == nodes && by_node.values().all(|p| p.len() == 1)).then(|| {
            by_node
                .into_iter()
                .map(|(n, mut p)| (n, p.remove(0)))
                .collect()
        })
    })
    .await
}

/// Waits until the set's status reports `desired` nodes, all ready and up to date.
async fn settled(t: &common::TestPlane, name: &str, desired: i32, misscheduled: i32) {
    let sets: Api<DaemonSet> = Api::default_namespaced(t.client.clone());
    common::eventually(
        &format!("{name} to settle on {desired} nodes"),
        WAIT,
        async || {
            let ds = sets.get(name).await.ok()?;
            let s = ds.status.clone()?;
            (s.observed_generation == ds.metadata.generation
                && s.desired_number_scheduled == desired
                && s.current_number_scheduled == desired
                && s.number_ready == desired
                && s.number_available == Some(desired)
                && s.updated_number_scheduled == Some(desired)
                && s.number_misscheduled == misscheduled)
                .then_some(())
        },
    )
    .await;
}

fn env_version(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "VERSION")
        .and_then(|e| e.value.clone())
        .unwrap_or_default()
}

/// Deletes the sets, then their pods, and waits until those are gone: the agents confirm
/// each pod's termination (the second agent's host-runtime processes would outlive it).
async fn delete_and_wait(t: &common::TestPlane, names: &[&str]) {
    let mut args = vec!["delete", "ds", "--cascade=orphan", "--wait=true"];
    args.extend_from_slice(names);
    t.kubectl(&args).success();
    for name in names {
        let selector = format!("app={name}");
        t.kubectl(&["delete", "pods", "-l", &selector, "--wait=true"])
            .success();
        common::eventually(&format!("{name}'s pods to go"), WAIT, async || {
            let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
            pods.list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .is_empty()
                .then_some(())
        })
        .await;
    }
    // No process of node-2's pods is left when the second agent stops (its host-runtime
    // processes would outlive it).
    let pods_dir = t.dir.path().join("agent-node-2").join("pods");
    common::eventually("node-2's processes to end", WAIT, async || {
        (processes_working_under(&pods_dir) == 0).then_some(())
    })
    .await;
}

/// How many processes have their working directory under `dir` (host-runtime containers
/// run in their pod's directory).
fn processes_working_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .filter(|cwd| cwd.starts_with(dir))
        .count()
}

/// A plane with two nodes, both Ready.
async fn two_nodes() -> (common::TestPlane, ferry_agent::AgentHandle) {
    let t = common::start_with_node("1xT4").await;
    let second = t.add_agent("node-2").await;
    let nodes: Api<Node> = Api::all(t.client.clone());
    common::eventually("two ready nodes", WAIT, async || {
        let list = nodes.list(&Default::default()).await.ok()?.items;
        let ready = list
            .iter()
            .filter(|n| {
                n.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
            .count();
        (ready == 2).then_some(())
    })
    .await;
    (t, second)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_pod_per_matching_node_with_node_selectors_and_taints() {
    let (t, second) = two_nodes().await;
    t.kubectl_stdin(&["apply", "-f", "-"], &daemonset("agent", ""))
        .success();
    let rollout = t
        .kubectl(&["rollout", "status", "daemonset/agent", "--timeout=120s"])
        .success();
    assert!(
        rollout.contains("daemon set \"agent\" successfully rolled out"),
        "{rollout}"
    );
    let pods = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    settled(&t, "agent", 2, 0).await;
    for (node, pod) in &pods {
        assert!(pod.name_any().starts_with("agent-"));
        assert!(pod.labels().contains_key("controller-revision-hash"));
        let spec = pod.spec.as_ref().unwrap();
        // kube's placement: required node affinity on the node's name.
        let term = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        let field = &term.match_fields.as_ref().unwrap()[0];
        assert_eq!(field.key, "metadata.name");
        assert_eq!(field.values.as_deref(), Some(&[node.clone()][..]));
        let tolerated: Vec<String> = spec
            .tolerations
            .iter()
            .flatten()
            .filter_map(|t| t.key.clone())
            .collect();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/disk-pressure",
            "node.kubernetes.io/memory-pressure",
            "node.kubernetes.io/pid-pressure",
            "node.kubernetes.io/unschedulable",
        ] {
            assert!(tolerated.contains(&key.to_string()), "{key}: {tolerated:?}");
        }
    }
    let table = t.kubectl(&["get", "ds", "agent"]).success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..7], ["agent", "2", "2", "2", "2", "2", "<none>"]);

    // A nodeSelector picks node-2 only, and follows the nodes' labels.
    t.kubectl(&["label", "node", "node-2", "disk=ssd"])
        .success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &daemonset("ssd", "      nodeSelector: {disk: ssd}\n"),
    )
    .success();
    on_nodes(&t, "ssd", &["node-2"]).await;
    settled(&t, "ssd", 1, 0).await;
    let row = t.kubectl(&["get", "ds", "ssd", "--no-headers"]).success();
    assert!(row.contains("disk=ssd"), "{row}");
    t.kubectl(&["label", "node", "test-node", "disk=ssd"])
        .success();
    on_nodes(&t, "ssd", &["node-2", "test-node"]).await;
    t.kubectl(&["label", "node", "node-2", "disk-"]).success();
    on_nodes(&t, "ssd", &["test-node"]).await;
    settled(&t, "ssd", 1, 0).await;

    // A NoSchedule taint keeps new daemon pods away unless they tolerate it; the pods
    // already there stay (counted as misscheduled).
    t.kubectl(&["taint", "node", "node-2", "dedicated=gpu:NoSchedule"])
        .success();
    t.kubectl_stdin(&["apply", "-f", "-"], &daemonset("plain", ""))
        .success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &daemonset(
            "tolerant",
            "      tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n",
        ),
    )
    .success();
    on_nodes(&t, "tolerant", &["node-2", "test-node"]).await;
    settled(&t, "plain", 1, 0).await;
    on_nodes(&t, "plain", &["test-node"]).await;
    settled(&t, "agent", 1, 1).await;
    assert_eq!(
        on_nodes(&t, "agent", &["node-2", "test-node"]).await["node-2"].uid(),
        pods["node-2"].uid(),
        "NoSchedule does not evict"
    );
    // NoExecute: untolerated daemon pods leave the node.
    t.kubectl(&["taint", "node", "node-2", "evict=now:NoExecute"])
        .success();
    on_nodes(&t, "agent", &["test-node"]).await;
    on_nodes(&t, "tolerant", &["test-node"]).await;
    t.kubectl(&["taint", "node", "node-2", "evict-", "dedicated-"])
        .success();
    on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    on_nodes(&t, "plain", &["node-2", "test-node"]).await;

    // Every set settled before it goes.
    settled(&t, "agent", 2, 0).await;
    settled(&t, "plain", 2, 0).await;
    settled(&t, "tolerant", 2, 0).await;
    settled(&t, "ssd", 1, 0).await;
    delete_and_wait(&t, &["agent", "ssd", "plain", "tolerant"]).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_updates_replace_pods_node_by_node() {
    let (t, second) = two_nodes().await;
    t.kubectl_stdin(&["apply", "-f", "-"], &daemonset("agent", ""))
        .success();
    t.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=120s"])
        .success();
    let first = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    let defaults = t
        .kubectl(&[
            "get",
            "ds",
            "agent",
            "-o",
            "jsonpath={.spec.updateStrategy.type} {.spec.updateStrategy.rollingUpdate.maxUnavailable} {.spec.updateStrategy.rollingUpdate.maxSurge} {.spec.revisionHistoryLimit}",
        ])
        .success();
    assert_eq!(defaults, "RollingUpdate 1 0 10");

    // maxUnavailable 1: one node at a time; at least one pod stays ready throughout.
    let watch = t.kubectl_watch(&["get", "ds", "agent", "-w", "--no-headers"]);
    t.kubectl(&["set", "env", "daemonset/agent", "VERSION=two"])
        .success();
    let rollout = t
        .kubectl(&["rollout", "status", "daemonset/agent", "--timeout=120s"])
        .success();
    assert!(rollout.contains("successfully rolled out"), "{rollout}");
    let rows = watch.finish();
    for row in rows.lines() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        // NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE ...
        assert!(
            cells.len() > 5 && cells[5] != "0",
            "no pod was available at some point:\n{rows}"
        );
    }
    let second_round = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    for (node, pod) in &second_round {
        assert_ne!(pod.uid(), first[node].uid(), "{node} was not replaced");
        assert_eq!(env_version(pod), "two");
    }
    let revisions = t
        .kubectl(&["get", "controllerrevisions", "--no-headers"])
        .success();
    assert_eq!(revisions.lines().count(), 2, "{revisions}");
    assert!(revisions.contains("daemonset.apps/agent"), "{revisions}");
    let hash = second_round["node-2"].labels()["controller-revision-hash"].clone();
    assert!(revisions.contains(&format!("agent-{hash}")), "{revisions}");

    // maxSurge 1, maxUnavailable 0: the new pod starts beside the old one.
    t.kubectl(&[
        "patch",
        "ds",
        "agent",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"maxSurge":1,"maxUnavailable":0}}}}"#,
    ])
    .success();
    t.kubectl(&["set", "env", "daemonset/agent", "VERSION=three"])
        .success();
    common::eventually(
        "a node with its old and new pod at once",
        WAIT,
        async || {
            let by_node = pods_by_node(&t, "agent").await;
            by_node.values().any(|p| p.len() == 2).then_some(())
        },
    )
    .await;
    t.kubectl(&["rollout", "status", "daemonset/agent", "--timeout=120s"])
        .success();
    let third = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    assert!(third.values().all(|p| env_version(p) == "three"));

    // OnDelete: a new template waits for someone to delete the pods.
    t.kubectl(&[
        "patch",
        "ds",
        "agent",
        "--type=merge",
        "-p",
        r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#,
    ])
    .success();
    t.kubectl(&["set", "env", "daemonset/agent", "VERSION=four"])
        .success();
    let sets: Api<DaemonSet> = Api::default_namespaced(t.client.clone());
    common::eventually("the new generation observed", WAIT, async || {
        let ds = sets.get("agent").await.ok()?;
        let s = ds.status?;
        (s.observed_generation == ds.metadata.generation && s.updated_number_scheduled == Some(0))
            .then_some(())
    })
    .await;
    let untouched = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
    for (node, pod) in &untouched {
        assert_eq!(pod.uid(), third[node].uid());
    }
    let victim = untouched["node-2"].name_any();
    t.kubectl(&["delete", "pod", &victim, "--wait=true"])
        .success();
    let after = common::eventually("node-2's pod recreated", WAIT, async || {
        let p = on_nodes(&t, "agent", &["node-2", "test-node"]).await;
        (env_version(&p["node-2"]) == "four").then_some(p)
    })
    .await;
    assert_eq!(env_version(&after["test-node"]), "three");
    common::eventually("both pods ready", WAIT, async || {
        let s = sets.get("agent").await.ok()?.status?;
        (s.number_ready == 2 && s.updated_number_scheduled == Some(1)).then_some(())
    })
    .await;

    delete_and_wait(&t, &["agent"]).await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_daemonsets_get_the_statuses_kube_apiserver_gives() {
    let t = common::start().await;
    let mismatched = daemonset("agent", "").replace(
        "  selector: {matchLabels: {app: agent}}",
        "  selector: {matchLabels: {app: other}}",
    );
    let err = t
        .kubectl_stdin(&["apply", "-f", "-"], &mismatched)
        .failure();
    assert!(
        err.contains(r#"The DaemonSet "agent" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"agent"}: `selector` does not match template `labels`"#),
        "{err}"
    );
    let stuck = daemonset("agent", "").replace(
        "  template:",
        "  updateStrategy: {rollingUpdate: {maxUnavailable: 0, maxSurge: 0}}\n  template:",
    );
    let err = t.kubectl_stdin(&["apply", "-f", "-"], &stuck).failure();
    assert!(
        err.contains("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0"),
        "{err}"
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &daemonset("agent", ""))
        .success();
    let err = t
        .kubectl(&[
            "patch",
            "ds",
            "agent",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"agent","tier":"x"}},"template":{"metadata":{"labels":{"tier":"x"}}}}}"#,
        ])
        .failure();
    assert!(err.contains("spec.selector: Invalid value"), "{err}");
    assert!(err.contains("field is immutable"), "{err}");
}

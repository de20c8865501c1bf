//! PodDisruptionBudgets and the eviction subresource: the disruption controller's status,
//! evictions refused (`429`) and allowed through kube-rs, invalid budgets (`422`), and
//! `kubectl drain` held by a budget until a replica has moved to another node.
use crate::common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, EvictParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;

const WAIT: Duration = Duration::from_secs(90);

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn condition<'a>(
    pod: &'a Pod,
    type_: &str,
) -> Option<&'a k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

fn pod_yaml(name: &str, extra_spec: &str, readiness: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: web}}}}\nspec:\n  terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n  - name: main\n    image: busybox\n    command: [sleep, '600']\n    readinessProbe: {{exec: {{command: [{readiness}]}}, periodSeconds: 1}}\n"
    )
}

async fn status_of(pdbs: &Api<PodDisruptionBudget>, name: &str) -> serde_json::Value {
    let pdb = pdbs.get(name).await.unwrap();
    serde_json::to_value(pdb.status.unwrap_or_default()).unwrap()
}

/// Waits until the budget's status has `field` equal to `value` for its current generation.
async fn wait_status(pdbs: &Api<PodDisruptionBudget>, name: &str, want: serde_json::Value) {
    let what = format!("PodDisruptionBudget {name} to reach {want}");
    common::eventually(&what, WAIT, async || {
        let pdb = pdbs.get(name).await.unwrap();
        let generation = pdb.metadata.generation.unwrap_or(0);
        let status = serde_json::to_value(pdb.status.unwrap_or_default()).unwrap();
        let all = want
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| status.get(k) == Some(v));
        (all && status["observedGeneration"] == generation).then_some(())
    })
    .await;
}

/// A client of the plane that answers a `429` at once: kube-rs retries 429s by default
/// (with back-off, up to 15 times), which would hide the refusal this test checks.
async fn client_without_retries(t: &common::TestPlane) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(&t.plane.kubeconfig).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn evictions_honour_the_budget() {
    let t = common::start_with_node("1xT4").await;
    let pods: Api<Pod> = Api::default_namespaced(client_without_retries(&t).await);
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(t.client.clone());
    for name in ["a", "b"] {
        t.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml(name, "", "'true'"))
            .success();
    }
    common::eventually("pods a and b to be ready", WAIT, async || {
        let a = pods.get("a").await.ok()?;
        let b = pods.get("b").await.ok()?;
        (ready(&a) && ready(&b)).then_some(())
    })
    .await;

    // Invalid budgets: the 422s kube-apiserver gives.
    let both = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: both}\nspec: {minAvailable: 1, maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n",
        )
        .failure();
    assert!(
        both.contains("PodDisruptionBudget.policy \"both\" is invalid")
            || both.contains("PodDisruptionBudget \"both\" is invalid"),
        "{both}"
    );
    assert!(
        both.contains("minAvailable and maxUnavailable cannot be both set"),
        "{both}"
    );
    let bad = serde_json::from_value::<PodDisruptionBudget>(serde_json::json!({
        "metadata": {"name": "bad"},
        "spec": {"maxUnavailable": "150%", "selector": {"matchLabels": {"app": "web"}},
                 "unhealthyPodEvictionPolicy": "Sometimes"},
    }))
    .unwrap();
    match pdbs.create(&PostParams::default(), &bad).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
            assert!(s.message.contains("spec.maxUnavailable"), "{}", s.message);
            assert!(
                s.message.contains("must not be greater than 100%"),
                "{}",
                s.message
            );
            assert!(
                s.message.contains("spec.unhealthyPodEvictionPolicy"),
                "{}",
                s.message
            );
        }
        other => panic!("an invalid budget was accepted: {other:?}"),
    }

    // A budget that allows no disruption: 429 with the DisruptionBudget cause.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {minAvailable: 2, selector: {matchLabels: {app: web}}}\n",
    )
    .success();
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"expectedPods": 2, "currentHealthy": 2, "desiredHealthy": 2, "disruptionsAllowed": 0}),
    )
    .await;
    let status = status_of(&pdbs, "web").await;
    assert_eq!(status["conditions"][0]["type"], "DisruptionAllowed");
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][0]["reason"], "InsufficientPods");
    let table = t.kubectl(&["get", "pdb", "web"]).success();
    assert!(
        table.contains("MIN AVAILABLE")
            && table.contains("MAX UNAVAILABLE")
            && table.contains("ALLOWED DISRUPTIONS"),
        "{table}"
    );
    let row = table.lines().nth(1).unwrap_or_default();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cells[..4], ["web", "2", "N/A", "0"], "{table}");
    match pods.evict("a", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 429, "{s:?}");
            assert_eq!(s.reason, "TooManyRequests");
            assert_eq!(
                s.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
            let cause = &s.details.as_ref().expect("details").causes[0];
            assert_eq!(cause.reason, "DisruptionBudget");
            assert_eq!(
                cause.message,
                "The disruption budget web needs 2 healthy pods and has 2 currently"
            );
        }
        other => panic!("the eviction should have been refused: {other:?}"),
    }
    let a = pods.get("a").await.unwrap();
    assert!(a.metadata.deletion_timestamp.is_none());
    assert!(condition(&a, "DisruptionTarget").is_none());

    // Relaxed: one disruption allowed. A dry run changes nothing.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 1}})),
    )
    .await
    .unwrap();
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"desiredHealthy": 1, "disruptionsAllowed": 1}),
    )
    .await;
    let status = status_of(&pdbs, "web").await;
    assert_eq!(status["conditions"][0]["reason"], "SufficientPods");
    let dry = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..Default::default()
        },
        ..Default::default()
    };
    pods.evict("a", &dry).await.expect("a dry-run eviction");
    let a = pods.get("a").await.unwrap();
    assert!(a.metadata.deletion_timestamp.is_none());
    assert_eq!(status_of(&pdbs, "web").await["disruptionsAllowed"], 1);

    // The eviction takes the disruption, marks the pod and deletes it.
    let uid_a = a.metadata.uid.clone().unwrap();
    pods.evict("a", &EvictParams::default())
        .await
        .expect("the eviction is allowed");
    let evicted = common::eventually("pod a to be marked for deletion", WAIT, async || match pods
        .get_opt("a")
        .await
        .unwrap()
    {
        Some(p) if p.metadata.uid.as_deref() == Some(&uid_a) => {
            p.metadata.deletion_timestamp.is_some().then_some(Some(p))
        }
        _ => Some(None),
    })
    .await;
    if let Some(p) = evicted {
        let c = condition(&p, "DisruptionTarget").expect("the DisruptionTarget condition");
        assert_eq!(c.status, "True");
        assert_eq!(c.reason.as_deref(), Some("EvictionByEvictionAPI"));
    }
    // The second pod is now the last healthy one the budget protects.
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"currentHealthy": 1, "disruptionsAllowed": 0}),
    )
    .await;
    match pods.evict("b", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 429, "{s:?}"),
        other => panic!("evicting b should have been refused: {other:?}"),
    }

    // A pod that never becomes ready: kept by IfHealthyBudget while the budget lacks healthy
    // pods, evicted at once under AlwaysAllow.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minAvailable": 2}})),
    )
    .await
    .unwrap();
    t.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml("sick", "", "'false'"))
        .success();
    common::eventually("pod sick to run", WAIT, async || {
        let p = pods.get("sick").await.ok()?;
        (p.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"expectedPods": 2, "currentHealthy": 1, "desiredHealthy": 2, "disruptionsAllowed": 0}),
    )
    .await;
    match pods.evict("sick", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 429, "{s:?}"),
        other => panic!("IfHealthyBudget should have kept the pod: {other:?}"),
    }
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}})),
    )
    .await
    .unwrap();
    wait_status(&pdbs, "web", serde_json::json!({"disruptionsAllowed": 0})).await;
    pods.evict("sick", &EvictParams::default())
        .await
        .expect("AlwaysAllow evicts an unready pod");

    // A pending pod (never scheduled) needs no budget.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("waiting", "  nodeSelector: {nowhere: 'true'}\n", "'true'"),
    )
    .success();
    // Eviction is `create` on `pods/eviction`: in `edit`, not in `view`.
    for (user, role) in [("alice", "edit"), ("bob", "view")] {
        t.kubectl(&[
            "create",
            "rolebinding",
            &format!("{user}-{role}"),
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])
        .success();
    }
    let as_bob: Api<Pod> = Api::default_namespaced(t.client_as("bob").await);
    match as_bob.evict("waiting", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{s:?}"),
        other => panic!("a viewer evicted a pod: {other:?}"),
    }
    let as_alice: Api<Pod> = Api::default_namespaced(t.client_as("alice").await);
    as_alice
        .evict("waiting", &EvictParams::default())
        .await
        .expect("a pending pod is evicted without a budget");
    common::eventually("pod waiting to be gone", WAIT, async || {
        pods.get_opt("waiting")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;

    // Two budgets over one pod: 500, as kube-apiserver answers.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web2}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: web}}}\n",
    )
    .success();
    match pods.evict("b", &EvictParams::default()).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 500, "{s:?}");
            assert_eq!(
                s.message,
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support."
            );
        }
        other => panic!("two budgets should have failed the eviction: {other:?}"),
    }
    // The second budget has pods without a controller: its scale cannot be known, so it
    // fails safe.
    common::eventually("web2 to fail safe", WAIT, async || {
        let status = status_of(&pdbs, "web2").await;
        (status["conditions"][0]["reason"] == "SyncFailed" && status["disruptionsAllowed"] == 0)
            .then_some(())
    })
    .await;
    let discovery = t.kubectl(&["get", "--raw", "/api/v1"]).success();
    let discovery: serde_json::Value = serde_json::from_str(&discovery).unwrap();
    let entry = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .expect("pods/eviction in discovery");
    assert_eq!(
        (&entry["group"], &entry["version"], &entry["kind"]),
        (
            &serde_json::json!("policy"),
            &serde_json::json!("v1"),
            &serde_json::json!("Eviction")
        )
    );
}

/// What the pod watch saw on the drained node.
#[derive(Default)]
struct Seen {
    /// Ready, not-deleting pods of the app, by name (the latest state of each).
    ready: BTreeMap<String, bool>,
    /// The watch's initial list is complete.
    listed: bool,
    /// The fewest ready pods seen once the budget was in force.
    fewest_ready: Option<usize>,
    /// Pods of the drained node marked for deletion, and whether they carried the
    /// DisruptionTarget condition of an eviction when they were.
    deleted_on_drained: BTreeMap<String, bool>,
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_drain_waits_for_the_budget() {
    let t = common::start_with_node("1xT4").await;
    let second = t.add_agent("node-2").await;
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(t.client.clone());
    common::eventually("two ready nodes", WAIT, async || {
        let list = nodes.list(&Default::default()).await.ok()?;
        (list.items.len() == 2).then_some(())
    })
    .await;
    // Every replica starts on test-node.
    t.kubectl(&["cordon", "node-2"]).success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: main\n        image: busybox\n        command: [sleep, '600']\n        readinessProbe: {exec: {command: ['true']}, periodSeconds: 1}\n",
    )
    .success();
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    common::eventually("two ready replicas on test-node", WAIT, async || {
        let list = pods.list(&Default::default()).await.ok()?;
        let on_a = list
            .items
            .iter()
            .filter(|p| ready(p))
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("test-node"))
            .count();
        (on_a == 2).then_some(())
    })
    .await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec: {minAvailable: 2, selector: {matchLabels: {app: web}}}\n",
    )
    .success();
    let pdbs: Api<PodDisruptionBudget> = Api::default_namespaced(t.client.clone());
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"expectedPods": 2, "currentHealthy": 2, "disruptionsAllowed": 0}),
    )
    .await;
    let original: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();

    // Watch every pod change: the ready count, and how pods leave test-node.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let watch = {
        let seen = seen.clone();
        let stream = watcher::watcher(pods.clone(), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let Ok(event) = event else { continue };
                let changed: Vec<Pod> = match event {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => vec![p],
                    watcher::Event::Delete(mut p) => {
                        p.metadata.deletion_timestamp.get_or_insert(
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                                k8s_openapi::jiff::Timestamp::now(),
                            ),
                        );
                        vec![p]
                    }
                    watcher::Event::InitDone => {
                        seen.lock().unwrap().listed = true;
                        vec![]
                    }
                    watcher::Event::Init => vec![],
                };
                let mut s = seen.lock().unwrap();
                for p in changed {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let deleting = p.metadata.deletion_timestamp.is_some();
                    s.ready.insert(name.clone(), ready(&p) && !deleting);
                    let on_a =
                        p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("test-node");
                    if deleting && on_a && !s.deleted_on_drained.contains_key(&name) {
                        let evicted = condition(&p, "DisruptionTarget").is_some_and(|c| {
                            c.status == "True"
                                && c.reason.as_deref() == Some("EvictionByEvictionAPI")
                        });
                        s.deleted_on_drained.insert(name, evicted);
                    }
                }
                // Counted once the initial list is complete (it arrives pod by pod).
                if s.listed {
                    let count = s.ready.values().filter(|r| **r).count();
                    s.fewest_ready = Some(s.fewest_ready.map_or(count, |f| f.min(count)));
                }
            }
        })
    };
    common::eventually("the watch to see both replicas", WAIT, async || {
        (seen.lock().unwrap().ready.values().filter(|r| **r).count() == 2).then_some(())
    })
    .await;

    // The drain runs in the background; it retries the refused evictions.
    let cache = tempfile::tempdir().unwrap();
    let mut drain = tokio::process::Command::new(common::kubectl_binary())
        .arg("--kubeconfig")
        .arg(&t.plane.kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "drain",
            "test-node",
            "--ignore-daemonsets",
            "--delete-emptydir-data",
            "--timeout=240s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl drain starts");
    let output = Arc::new(Mutex::new(String::new()));
    let mut readers = Vec::new();
    for stream in [
        Box::new(drain.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
        Box::new(drain.stderr.take().unwrap()),
    ] {
        let output = output.clone();
        readers.push(tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut o = output.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        }));
    }
    common::eventually("the drain to report the budget", WAIT, async || {
        output
            .lock()
            .unwrap()
            .contains("Cannot evict pod as it would violate the pod's disruption budget")
            .then_some(())
    })
    .await;
    // Held: both replicas still run on test-node, none is being deleted.
    let list = pods.list(&Default::default()).await.unwrap();
    let mut names: Vec<String> = list
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    let mut expected = original.clone();
    expected.sort();
    assert_eq!(names, expected, "the drain took a pod the budget protects");
    assert!(
        drain.try_wait().unwrap().is_none(),
        "the drain ended while held: {}",
        output.lock().unwrap()
    );
    let node = nodes.get("test-node").await.unwrap();
    assert_eq!(
        node.spec.and_then(|s| s.unschedulable),
        Some(true),
        "drain cordons the node"
    );

    // Room elsewhere and one replica more: replicas move to node-2 one at a time.
    t.kubectl(&["uncordon", "node-2"]).success();
    t.kubectl(&["scale", "replicaset", "web", "--replicas=3"])
        .success();
    let status = tokio::time::timeout(Duration::from_secs(300), drain.wait())
        .await
        .expect("the drain finishes")
        .unwrap();
    for r in readers {
        let _ = r.await;
    }
    let out = output.lock().unwrap().clone();
    assert!(status.success(), "kubectl drain failed:\n{out}");
    assert!(out.contains("node/test-node drained"), "{out}");

    common::eventually("three ready replicas on node-2", WAIT, async || {
        let list = pods.list(&Default::default()).await.ok()?;
        let on_b = list
            .items
            .iter()
            .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-2"))
            .count();
        (on_b == 3).then_some(())
    })
    .await;
    watch.abort();
    {
        let seen = seen.lock().unwrap();
        let mut left: Vec<&String> = seen.deleted_on_drained.keys().collect();
        left.sort();
        let mut original_refs: Vec<&String> = original.iter().collect();
        original_refs.sort();
        assert_eq!(left, original_refs, "every replica left test-node");
        for (pod, evicted) in &seen.deleted_on_drained {
            assert!(evicted, "pod {pod} left test-node without an eviction");
        }
        assert_eq!(
            seen.fewest_ready,
            Some(2),
            "the budget's two ready pods were kept throughout"
        );
    }

    // maxUnavailable and percentages count the ReplicaSet's scale: 50 % of 3, rounded up,
    // may be unavailable.
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"minAvailable": null, "maxUnavailable": "50%"}})),
    )
    .await
    .unwrap();
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"expectedPods": 3, "currentHealthy": 3, "desiredHealthy": 1, "disruptionsAllowed": 2}),
    )
    .await;
    t.kubectl(&["scale", "replicaset", "web", "--replicas=4"])
        .success();
    wait_status(
        &pdbs,
        "web",
        serde_json::json!({"expectedPods": 4, "desiredHealthy": 2}),
    )
    .await;
    t.kubectl(&["delete", "replicaset", "web"]).success();

    // A Deployment's pods count its spec.replicas (through their ReplicaSet).
    t.kubectl(&[
        "create",
        "deployment",
        "api",
        "--image=busybox",
        "--replicas=2",
        "--",
        "sleep",
        "600",
    ])
    .success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: api}\nspec: {maxUnavailable: 1, selector: {matchLabels: {app: api}}}\n",
    )
    .success();
    wait_status(
        &pdbs,
        "api",
        serde_json::json!({"expectedPods": 2, "currentHealthy": 2, "desiredHealthy": 1, "disruptionsAllowed": 1}),
    )
    .await;
    t.kubectl(&["scale", "deployment", "api", "--replicas=5"])
        .success();
    wait_status(
        &pdbs,
        "api",
        serde_json::json!({"expectedPods": 5, "desiredHealthy": 4}),
    )
    .await;
    t.kubectl(&["delete", "deployment", "api"]).success();
    common::eventually("the replicas to be gone", WAIT, async || {
        pods.list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    second.stop().await;
}

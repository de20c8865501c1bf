//! Deployments and ReplicaSets with the real kubectl: the ReplicaSet controller (replicas,
//! adoption, release, status), rollouts (RollingUpdate with a Ready pod at every moment,
//! Recreate, undo, history, restart, pause and resume, scale), the kubernetes.io Deployment
//! walkthrough, `kill -9` of `ferry up` mid-rollout, and the API server's answers to bad input.
use crate::common;

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

/// A Deployment whose pods become Ready when `<dir>/<version>` exists (an exec readiness
/// probe), running `sleep`; `version` is part of the command, so changing it rolls out.
fn versioned(name: &str, dir: &std::path::Path, version: &str, replicas: i32) -> String {
    let marker = dir.join(version);
    let marker = marker.display();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: busybox
        command: [sh, -c, "touch {marker}; exec sleep 3600"]
        readinessProbe:
          exec: {{command: [cat, "{marker}"]}}
          periodSeconds: 1
"#
    )
}

async fn replica_sets_of(client: &kube::Client, labels: &str) -> Vec<ReplicaSet> {
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    let mut items = sets
        .list(&ListParams::default().labels(labels))
        .await
        .unwrap()
        .items;
    items.sort_by_key(|r| {
        r.annotations()
            .get("deployment.kubernetes.io/revision")
            .cloned()
    });
    items
}

fn revision(rs: &ReplicaSet) -> String {
    rs.annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned()
        .unwrap_or_default()
}

fn command_of(rs: &ReplicaSet) -> String {
    rs.spec
        .template
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .command
        .clone()
        .unwrap()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn rollouts_keep_a_ready_pod_and_undo_history_restart_pause_and_scale_work() {
    let t = common::start_with_node("1xT4").await;
    let dir = t.dir.path().to_path_buf();
    // kubectl create deployment + rollout status.
    t.kubectl(&[
        "create",
        "deployment",
        "hello",
        "--image=busybox",
        "--",
        "sleep",
        "3600",
    ])
    .success();
    let out = t
        .kubectl(&["rollout", "status", "deployment/hello", "--timeout=120s"])
        .success();
    assert!(
        out.contains("deployment \"hello\" successfully rolled out"),
        "{out}"
    );
    let deployments: Api<Deployment> = Api::default_namespaced(t.client.clone());
    let d = deployments.get("hello").await.unwrap();
    let conditions = d.status.unwrap().conditions.unwrap();
    let reason_of = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(type_))
            .and_then(|c| c.reason.clone())
    };
    assert_eq!(
        reason_of("Available").as_deref(),
        Some("MinimumReplicasAvailable")
    );
    assert_eq!(
        reason_of("Progressing").as_deref(),
        Some("NewReplicaSetAvailable")
    );
    let table = t
        .kubectl(&["get", "deployment", "hello", "-o", "wide"])
        .success();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[1], row[2], row[3], row[7]),
        ("1/1", "1", "1", "app=hello")
    );
    t.kubectl(&["delete", "deployment", "hello"]).success();

    // A rolling update of the command never leaves the Deployment without a Ready pod.
    t.kubectl_stdin(&["apply", "-f", "-"], &versioned("web", &dir, "v1", 2))
        .success();
    t.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let observer = {
        let client = t.client.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut moments = 0u64;
            let mut min_ready = usize::MAX;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let pods = pods_with(&client, "app=web").await;
                let ready_now = pods.iter().filter(|p| live(p) && ready(p)).count();
                min_ready = min_ready.min(ready_now);
                moments += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (moments, min_ready)
        })
    };
    let started = std::time::Instant::now();
    t.kubectl_stdin(&["apply", "-f", "-"], &versioned("web", &dir, "v2", 2))
        .success();
    let out = t
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    assert!(out.contains("successfully rolled out"), "{out}");
    common::eventually("the old pods gone", WAIT, async || {
        let pods = pods_with(&t.client, "app=web").await;
        (pods.len() == 2 && pods.iter().all(ready)).then_some(())
    })
    .await;
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let rollout = started.elapsed();
    let (moments, min_ready) = observer.await.unwrap();
    println!(
        "rolling update of 2 replicas: {rollout:?} to all new pods ready and old ones gone; {moments} moments observed, fewest Ready pods {min_ready}"
    );
    assert!(moments > 10, "observed {moments} moments");
    assert!(
        min_ready >= 1,
        "a moment without a Ready pod ({moments} observed)"
    );
    let sets = replica_sets_of(&t.client, "app=web").await;
    assert_eq!(sets.len(), 2);
    assert_eq!(
        (revision(&sets[0]).as_str(), revision(&sets[1]).as_str()),
        ("1", "2")
    );
    assert_eq!(sets[0].spec.replicas, Some(0));
    assert!(command_of(&sets[1]).contains("v2"));
    for rs in &sets {
        let hash = rs.labels()["pod-template-hash"].clone();
        assert_eq!(rs.name_any(), format!("web-{hash}"));
        assert_eq!(
            rs.spec.selector.match_labels.as_ref().unwrap()["pod-template-hash"],
            hash
        );
    }

    // History and undo: the template of revision 1 comes back as revision 3.
    let history = t
        .kubectl(&["rollout", "history", "deployment/web"])
        .success();
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let detail = t
        .kubectl(&["rollout", "history", "deployment/web", "--revision=1"])
        .success();
    assert!(detail.contains("v1"), "{detail}");
    t.kubectl(&["rollout", "undo", "deployment/web"]).success();
    t.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    let d = deployments.get("web").await.unwrap();
    let command = d.spec.template.spec.clone().unwrap().containers[0]
        .command
        .clone()
        .unwrap()
        .join(" ");
    assert!(command.contains("v1"), "{command}");
    let sets = replica_sets_of(&t.client, "app=web").await;
    let current = sets.iter().find(|r| r.spec.replicas == Some(2)).unwrap();
    assert!(command_of(current).contains("v1"));
    assert_eq!(revision(current), "3");
    assert_eq!(d.annotations()["deployment.kubernetes.io/revision"], "3");

    // Restart: a new ReplicaSet with the restartedAt annotation.
    t.kubectl(&["rollout", "restart", "deployment/web"])
        .success();
    t.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    let sets = replica_sets_of(&t.client, "app=web").await;
    assert_eq!(
        sets.len(),
        3,
        "{}",
        serde_json::to_string_pretty(
            &sets
                .iter()
                .map(|r| (r.name_any(), revision(r), r.spec.template.clone()))
                .collect::<Vec<_>>()
        )
        .unwrap()
    );
    let restarted = sets.iter().find(|r| r.spec.replicas == Some(2)).unwrap();
    let annotations = restarted
        .spec
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap();
    assert!(annotations.contains_key("kubectl.kubernetes.io/restartedAt"));
    assert_eq!(revision(restarted), "4");

    // Pause: template changes wait; resume rolls them out.
    t.kubectl(&["rollout", "pause", "deployment/web"]).success();
    t.kubectl(&["set", "env", "deployment/web", "COLOR=blue"])
        .success();
    common::eventually("the paused condition", WAIT, async || {
        let d = deployments.get("web").await.ok()?;
        let s = d.status?;
        let paused = s.conditions?.iter().any(|c| {
            c.type_.as_deref() == Some("Progressing")
                && c.reason.as_deref() == Some("DeploymentPaused")
        });
        (paused && s.observed_generation == d.metadata.generation).then_some(())
    })
    .await;
    assert_eq!(replica_sets_of(&t.client, "app=web").await.len(), 3);
    t.kubectl(&["rollout", "resume", "deployment/web"])
        .success();
    t.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    let sets = replica_sets_of(&t.client, "app=web").await;
    assert_eq!(sets.len(), 4);
    assert_eq!(
        revision(sets.iter().find(|r| r.spec.replicas == Some(2)).unwrap()),
        "5"
    );

    // Scale.
    t.kubectl(&["scale", "deployment", "web", "--replicas=3"])
        .success();
    t.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"])
        .success();
    common::eventually("three ready pods", WAIT, async || {
        let pods: Vec<Pod> = pods_with(&t.client, "app=web")
            .await
            .into_iter()
            .filter(live)
            .collect();
        (pods.len() == 3 && pods.iter().all(ready)).then_some(())
    })
    .await;
    let scale = t
        .kubectl(&[
            "get",
            "--raw",
            "/apis/apps/v1/namespaces/default/deployments/web/scale",
        ])
        .success();
    let scale: serde_json::Value = serde_json::from_str(&scale).unwrap();
    assert_eq!(
        (
            scale["spec"]["replicas"].as_i64(),
            scale["status"]["selector"].as_str()
        ),
        (Some(3), Some("app=web"))
    );
    t.kubectl(&["delete", "deployment", "web"]).success();
    common::eventually("the pods gone", WAIT, async || {
        pods_with(&t.client, "app=web")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_deployments_get_the_answers_kube_apiserver_gives() {
    let t = common::start().await;
    let base = |spec_extra: &str, selector: &str, labels: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: bad}}\nspec:\n  selector: {selector}\n  template:\n    metadata: {{labels: {labels}}}\n    spec: {{containers: [{{name: c, image: busybox}}]}}\n{spec_extra}"
        )
    };
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &base("", "{matchLabels: {app: a}}", "{app: b}"),
        )
        .failure();
    assert!(
        err.contains("The Deployment \"bad\" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"),
        "{err}"
    );
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &base(
                "",
                "{matchExpressions: [{key: app, operator: Maybe, values: [a]}]}",
                "{app: a}",
            ),
        )
        .failure();
    assert!(err.contains("spec.selector.matchExpressions[0].operator: Invalid value: \"Maybe\": not a valid selector operator"), "{err}");
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &base(
                "  strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 0}}\n",
                "{matchLabels: {app: a}}",
                "{app: a}",
            ),
        )
        .failure();
    assert!(err.contains("spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0"), "{err}");
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            &base("  replicas: -1\n", "{matchLabels: {app: a}}", "{app: a}"),
        )
        .failure();
    assert!(
        err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    // The status code and reason, through the API.
    let deployments: Api<Deployment> = Api::default_namespaced(t.client.clone());
    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "a"}},
                 "template": {"metadata": {"labels": {"app": "b"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    match deployments.create(&Default::default(), &d).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (422, "Invalid")),
        other => panic!("expected 422, got {other:?}"),
    }
    // The selector is immutable.
    t.kubectl_stdin(
        &["create", "-f", "-"],
        &base("", "{matchLabels: {app: a}}", "{app: a}"),
    )
    .success();
    let err = t
        .kubectl(&["patch", "deployment", "bad", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"z"}},"template":{"metadata":{"labels":{"app":"z"}}}}}"#])
        .failure();
    assert!(
        err.contains("spec.selector: Invalid value:") && err.contains("field is immutable"),
        "{err}"
    );
    // Scaling to a negative size.
    let err = t
        .kubectl(&["scale", "deployment", "bad", "--replicas=-1"])
        .failure();
    assert!(!err.is_empty());
    // ReplicaSets validate the same way.
    let err = t
        .kubectl_stdin(
            &["create", "-f", "-"],
            "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: bad}\nspec:\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: c, image: busybox}]}\n",
        )
        .failure();
    assert!(err.contains("spec.selector: Required value"), "{err}");
}

/// The Deployment of kubernetes.io's "Deployments" concepts page, with a command the host
/// runtime has (`python3 -m http.server` on a port of its own choosing, so that replicas on
/// one host never collide).
const NGINX_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: nginx:1.14.2
        command: [python3, -m, http.server, "0", --bind, 127.0.0.1]
        ports:
        - containerPort: 80
"#;

/// The rows of a kubectl table, split on whitespace (header first).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_io_deployment_walkthrough_works_as_the_page_says() {
    let t = common::start_with_node("1xT4").await;
    t.kubectl_stdin(&["apply", "-f", "-"], NGINX_DEPLOYMENT)
        .success();
    let out = t
        .kubectl(&[
            "rollout",
            "status",
            "deployment/nginx-deployment",
            "--timeout=120s",
        ])
        .success();
    assert!(
        out.contains("deployment \"nginx-deployment\" successfully rolled out"),
        "{out}"
    );
    let deployments = rows(&t.kubectl(&["get", "deployments"]).success());
    assert_eq!(
        deployments[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(deployments[1][..4], ["nginx-deployment", "3/3", "3", "3"]);
    // "kubectl get rs": [DEPLOYMENT-NAME]-[HASH], the HASH being the pod-template-hash label.
    let rs = rows(&t.kubectl(&["get", "rs"]).success());
    assert_eq!(rs[0], ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]);
    assert_eq!(rs.len(), 2);
    let first = rs[1][0].clone();
    assert_eq!(rs[1][1..4], ["3", "3", "3"]);
    let hash = first
        .strip_prefix("nginx-deployment-")
        .expect("named after the Deployment");
    let labels = t.kubectl(&["get", "pods", "--show-labels"]).success();
    let pod_rows = rows(&labels);
    assert_eq!(pod_rows.len(), 4, "{labels}");
    for row in &pod_rows[1..] {
        assert!(row[0].starts_with(&format!("{first}-")), "{labels}");
        assert_eq!(
            row.last().unwrap(),
            &format!("app=nginx,pod-template-hash={hash}"),
            "{labels}"
        );
    }

    // Updating: set image makes a new ReplicaSet; the old one is scaled to 0.
    let out = t
        .kubectl(&[
            "set",
            "image",
            "deployment.v1.apps/nginx-deployment",
            "nginx=nginx:1.16.1",
        ])
        .success();
    assert!(
        out.contains("deployment.apps/nginx-deployment image updated"),
        "{out}"
    );
    t.kubectl(&[
        "annotate",
        "deployment/nginx-deployment",
        "kubernetes.io/change-cause=image updated to 1.16.1",
    ])
    .success();
    t.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=120s",
    ])
    .success();
    let rs = common::eventually("the old ReplicaSet at 0", WAIT, async || {
        let rs = rows(&t.kubectl(&["get", "rs"]).success());
        let old = rs.iter().find(|r| r[0] == first)?;
        (rs.len() == 3 && old[1..4] == ["0", "0", "0"]).then_some(rs)
    })
    .await;
    let second = rs[1..].iter().find(|r| r[0] != first).unwrap();
    assert_eq!(second[1..4], ["3", "3", "3"]);
    let second = second[0].clone();
    let annotations = |name: &str| {
        let json = t.kubectl(&["get", "rs", name, "-o", "json"]).success();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        v["metadata"]["annotations"].clone()
    };
    assert_eq!(
        annotations(&first)["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(
        annotations(&second)["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        annotations(&second)["kubernetes.io/change-cause"],
        "image updated to 1.16.1"
    );

    // kubectl describe finds the new and old ReplicaSets and shows the conditions.
    let describe = t.kubectl(&["describe", "deployments"]).success();
    assert!(
        describe.contains(&format!("NewReplicaSet:   {second} (3/3 replicas created)")),
        "{describe}"
    );
    assert!(
        describe.contains(&format!("OldReplicaSets:  {first} (0/0 replicas created)")),
        "{describe}"
    );
    for (type_, reason) in [
        ("Available", "MinimumReplicasAvailable"),
        ("Progressing", "NewReplicaSetAvailable"),
    ] {
        assert!(
            describe.lines().any(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words == [type_, "True", reason]
            }),
            "{describe}"
        );
    }
    assert!(
        describe.contains("RollingUpdateStrategy:  25% max unavailable, 25% max surge"),
        "{describe}"
    );

    // Checking rollout history and rolling back.
    let history = t
        .kubectl(&["rollout", "history", "deployment/nginx-deployment"])
        .success();
    assert!(history.contains("REVISION  CHANGE-CAUSE"), "{history}");
    assert!(
        history
            .lines()
            .any(|l| l.starts_with("2") && l.contains("image updated to 1.16.1")),
        "{history}"
    );
    let detail = t
        .kubectl(&[
            "rollout",
            "history",
            "deployment/nginx-deployment",
            "--revision=2",
        ])
        .success();
    assert!(
        detail.contains("Image:") && detail.contains("nginx:1.16.1"),
        "{detail}"
    );
    let out = t
        .kubectl(&[
            "rollout",
            "undo",
            "deployment/nginx-deployment",
            "--to-revision=1",
        ])
        .success();
    assert!(
        out.contains("deployment.apps/nginx-deployment rolled back"),
        "{out}"
    );
    t.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=120s",
    ])
    .success();
    let image = t
        .kubectl(&[
            "get",
            "deployment",
            "nginx-deployment",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .success();
    assert_eq!(image, "nginx:1.14.2");
    // The first ReplicaSet is back, as revision 3, with 1 in its revision history.
    let a = annotations(&first);
    assert_eq!(a["deployment.kubernetes.io/revision"], "3");
    assert_eq!(a["deployment.kubernetes.io/revision-history"], "1");

    // Scaling.
    let out = t
        .kubectl(&["scale", "deployment/nginx-deployment", "--replicas=5"])
        .success();
    assert!(
        out.contains("deployment.apps/nginx-deployment scaled"),
        "{out}"
    );
    t.kubectl(&[
        "rollout",
        "status",
        "deployment/nginx-deployment",
        "--timeout=120s",
    ])
    .success();
    let deployments = rows(&t.kubectl(&["get", "deployments"]).success());
    assert_eq!(deployments[1][..4], ["nginx-deployment", "5/5", "5", "5"]);
    t.kubectl(&["delete", "deployment", "nginx-deployment"])
        .success();
    common::eventually("the pods gone", WAIT, async || {
        pods_with(&t.client, "app=nginx")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

/// A child `ferry up`, killed (SIGKILL) when dropped, so a failing test leaves none behind.
struct Up(std::process::Child);

impl Up {
    fn kill_9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// `ferry up --no-agent` as a child process on `data_dir`; returns it and an admin client.
async fn ferry_up(data_dir: &std::path::Path) -> (Up, kube::Client) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args([
            "up",
            "--no-agent",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("ferry up starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let kubeconfig = tokio::task::block_in_place(|| {
        loop {
            let line = lines
                .next()
                .expect("ferry up prints its kubeconfig")
                .unwrap();
            if let Some(rest) = line.trim_start().strip_prefix("kubeconfig") {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        }
    });
    std::thread::spawn(move || for _ in lines {});
    let yaml = std::fs::read_to_string(&kubeconfig).unwrap();
    let client = ferry::up::client_from_kubeconfig(&yaml).await.unwrap();
    (Up(child), client)
}

/// What the stand-in kubelet saw: every pod uid per template hash, and the largest sum of
/// the ReplicaSets' desired replicas.
#[derive(Default)]
struct Seen {
    pods_by_hash: std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
    max_desired: i32,
}

/// One pass of a stand-in kubelet for node `node`: bound pods become Running and Ready (at
/// most `budget` per pass, so that a rollout takes a while), terminating pods are finished.
async fn kubelet_pass(client: &kube::Client, node: &str, budget: usize, seen: &mut Seen) {
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let Ok(list) = pods.list(&ListParams::default()).await else {
        return;
    };
    let mut left = budget;
    for p in list.items {
        if let Some(hash) = p.labels().get("pod-template-hash") {
            seen.pods_by_hash
                .entry(hash.clone())
                .or_default()
                .insert(p.metadata.uid.clone().unwrap());
        }
        let bound = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node);
        if !bound {
            continue;
        }
        if p.metadata.deletion_timestamp.is_some() {
            let _ = pods
                .delete(
                    &p.name_any(),
                    &kube::api::DeleteParams::default().grace_period(0),
                )
                .await;
        } else if !ready(&p) && left > 0 {
            left -= 1;
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let status = serde_json::json!({"status": {
            "phase": "Running", "podIP": "10.9.9.9", "startTime": now,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": "True", "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ]}});
            let _ = pods
                .patch_status(
                    &p.name_any(),
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(status),
                )
                .await;
        }
    }
    let sets: Api<ReplicaSet> = Api::default_namespaced(client.clone());
    if let Ok(list) = sets.list(&ListParams::default()).await {
        let desired: i32 = list
            .items
            .iter()
            .map(|r| r.spec.replicas.unwrap_or(0))
            .sum();
        seen.max_desired = seen.max_desired.max(desired);
    }
}

const CRASH_DEPLOYMENT: &str = r#"{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "crash", "namespace": "default"},
  "spec": {
    "replicas": 4,
    "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}},
    "selector": {"matchLabels": {"app": "crash"}},
    "template": {"metadata": {"labels": {"app": "crash"}},
                 "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "1"]}]}}
  }
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_survives_kill_9_of_ferry_up_without_duplicate_or_lost_pods() {
    use k8s_openapi::api::core::v1::Node;
    let dir = tempfile::tempdir().unwrap();
    let (mut up, client) = ferry_up(dir.path()).await;
    // A node whose kubelet is this test.
    let node: Node =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "stand-in"}})).unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    nodes.create(&Default::default(), &node).await.unwrap();
    let node_status = serde_json::json!({"status": {
        "capacity": {"cpu": "16", "memory": "64Gi", "pods": "110"},
        "allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": k8s_openapi::jiff::Timestamp::now().to_string()}]}});
    nodes
        .patch_status(
            "stand-in",
            &Default::default(),
            &kube::api::Patch::Merge(&node_status),
        )
        .await
        .unwrap();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let d: Deployment = serde_json::from_str(CRASH_DEPLOYMENT).unwrap();
    deployments.create(&Default::default(), &d).await.unwrap();
    let mut seen = Seen::default();
    let complete = |d: &Deployment| {
        let s = d.status.clone().unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(4)
            && s.replicas == Some(4)
            && s.available_replicas == Some(4)
    };
    let deadline = std::time::Instant::now() + WAIT;
    while !complete(&deployments.get("crash").await.unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first rollout never completed"
        );
        kubelet_pass(&client, "stand-in", 10, &mut seen).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Roll out a new command, one pod becoming ready per pass, and kill -9 `ferry up` while
    // both ReplicaSets have replicas.
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "2"]}]}}}});
    deployments
        .patch(
            "crash",
            &Default::default(),
            &kube::api::Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout never got half way"
        );
        kubelet_pass(&client, "stand-in", 1, &mut seen).await;
        let sets = replica_sets_of(&client, "app=crash").await;
        let mid = sets.len() == 2
            && sets.iter().all(|r| r.spec.replicas.unwrap_or(0) > 0)
            && sets.iter().any(|r| {
                r.status
                    .as_ref()
                    .and_then(|s| s.ready_replicas)
                    .unwrap_or(0)
                    > 0
                    && revision(r) == "2"
            });
        if mid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    up.kill_9();
    let (mut up, client) = ferry_up(dir.path()).await;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let deadline = std::time::Instant::now() + WAIT;
    while !complete(&deployments.get("crash").await.unwrap()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout never completed after the restart"
        );
        kubelet_pass(&client, "stand-in", 1, &mut seen).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Settle: the last old pods are finished.
    let sets = common::eventually("the old ReplicaSet empty", WAIT, async || {
        let mut s = Seen::default();
        kubelet_pass(&client, "stand-in", 10, &mut s).await;
        let sets = replica_sets_of(&client, "app=crash").await;
        let pods: Vec<Pod> = pods_with(&client, "app=crash").await;
        (sets.len() == 2
            && sets[0].status.as_ref().is_some_and(|s| s.replicas == 0)
            && pods.len() == 4)
            .then_some(sets)
    })
    .await;
    let new_hash = sets[1].labels()["pod-template-hash"].clone();
    let pods = pods_with(&client, "app=crash").await;
    assert!(
        pods.iter()
            .all(|p| p.labels()["pod-template-hash"] == new_hash && live(p))
    );
    // Exactly 4 pods of the new template were ever made (none duplicated, none lost and
    // replaced), and the ReplicaSets never wanted more than replicas + maxSurge.
    assert_eq!(
        seen.pods_by_hash[&new_hash].len(),
        4,
        "{:?}",
        seen.pods_by_hash
    );
    assert_eq!(seen.pods_by_hash.len(), 2, "{:?}", seen.pods_by_hash);
    assert!(
        seen.max_desired <= 5,
        "the ReplicaSets wanted {} pods",
        seen.max_desired
    );
    println!(
        "pods per template hash: {:?}; largest desired sum {}",
        seen.pods_by_hash
            .iter()
            .map(|(h, p)| (h.clone(), p.len()))
            .collect::<Vec<_>>(),
        seen.max_desired
    );
    up.kill_9();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_that_makes_no_progress_exceeds_its_deadline() {
    let t = common::start_with_node("1xT4").await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: stuck}
spec:
  progressDeadlineSeconds: 3
  selector: {matchLabels: {app: stuck}}
  template:
    metadata: {labels: {app: stuck}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        command: [sleep, "3600"]
        readinessProbe:
          exec: {command: ["false"]}
          periodSeconds: 1
"#,
    )
    .success();
    let err = t
        .kubectl(&["rollout", "status", "deployment/stuck", "--timeout=120s"])
        .failure();
    assert!(
        err.contains("deployment \"stuck\" exceeded its progress deadline"),
        "{err}"
    );
    let deployments: Api<Deployment> = Api::default_namespaced(t.client.clone());
    let status = deployments.get("stuck").await.unwrap().status.unwrap();
    let progressing = status
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_.as_deref() == Some("Progressing"))
        .unwrap();
    assert_eq!(
        (progressing.status.as_deref(), progressing.reason.as_deref()),
        (Some("False"), Some("ProgressDeadlineExceeded"))
    );
    assert!(
        progressing
            .message
            .unwrap()
            .ends_with("has timed out progressing.")
    );
    assert_eq!(status.unavailable_replicas, Some(1));
    t.kubectl(&["delete", "deployment", "stuck"]).success();
    common::eventually("the pods gone", WAIT, async || {
        pods_with(&t.client, "app=stuck")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recreate_stops_every_old_pod_before_starting_new_ones() {
    let t = common::start_with_node("1xT4").await;
    let dir = t.dir.path().to_path_buf();
    let manifest = |version: &str| {
        versioned("re", &dir, version, 2).replace(
            "  replicas: 2\n",
            "  replicas: 2\n  strategy: {type: Recreate}\n",
        )
    };
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest("v1"))
        .success();
    t.kubectl(&["rollout", "status", "deployment/re", "--timeout=120s"])
        .success();
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let observer = {
        let client = t.client.clone();
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut mixed = Vec::new();
            let mut moments = 0u64;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                let pods = pods_with(&client, "app=re").await;
                let hashes: std::collections::BTreeSet<String> = pods
                    .iter()
                    .filter_map(|p| p.labels().get("pod-template-hash").cloned())
                    .collect();
                if hashes.len() > 1 {
                    mixed.push(pods.iter().map(|p| p.name_any()).collect::<Vec<_>>());
                }
                moments += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (moments, mixed)
        })
    };
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest("v2"))
        .success();
    t.kubectl(&["rollout", "status", "deployment/re", "--timeout=120s"])
        .success();
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    let (moments, mixed) = observer.await.unwrap();
    assert!(moments > 10, "observed {moments} moments");
    assert!(mixed.is_empty(), "old and new pods at once: {mixed:?}");
    let pods = pods_with(&t.client, "app=re").await;
    assert_eq!(pods.len(), 2);
    let sets = replica_sets_of(&t.client, "app=re").await;
    assert_eq!(
        sets.iter().map(|r| r.spec.replicas).collect::<Vec<_>>(),
        [Some(0), Some(2)]
    );
    t.kubectl(&["delete", "deployment", "re"]).success();
    common::eventually("the pods gone", WAIT, async || {
        pods_with(&t.client, "app=re")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The "Proportional scaling" example of the concepts page: 10 replicas, maxSurge 3,
/// maxUnavailable 2, a rollout whose new pods never become Ready (8 old and 5 new), then a
/// scale to 15: the 5 extra replicas go 3 to the old ReplicaSet and 2 to the new one.
#[tokio::test(flavor = "multi_thread")]
async fn scaling_mid_rollout_is_proportional_as_the_concepts_page_says() {
    let t = common::start_with_node("1xT4").await;
    let dir = t.dir.path().to_path_buf();
    let manifest = |version: &str| {
        versioned("prop", &dir, version, 10).replace(
            "  replicas: 10\n",
            "  replicas: 10\n  strategy: {rollingUpdate: {maxSurge: 3, maxUnavailable: 2}}\n",
        )
    };
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest("v1"))
        .success();
    t.kubectl(&["rollout", "status", "deployment/prop", "--timeout=180s"])
        .success();
    // The new pods never become Ready: their marker is never made.
    let stuck = manifest("v2").replace("touch ", "true ");
    t.kubectl_stdin(&["apply", "-f", "-"], &stuck).success();
    let sizes = async || {
        let sets = replica_sets_of(&t.client, "app=prop").await;
        sets.iter()
            .map(|r| (revision(r), r.spec.replicas.unwrap_or(0)))
            .collect::<Vec<_>>()
    };
    common::eventually("8 old and 5 new replicas", WAIT, async || {
        (sizes().await == [("1".to_string(), 8), ("2".to_string(), 5)]).then_some(())
    })
    .await;
    t.kubectl(&["scale", "deployment/prop", "--replicas=15"])
        .success();
    common::eventually("11 old and 7 new replicas", WAIT, async || {
        (sizes().await == [("1".to_string(), 11), ("2".to_string(), 7)]).then_some(())
    })
    .await;
    t.kubectl(&["delete", "deployment", "prop"]).success();
    common::eventually("the pods gone", Duration::from_secs(180), async || {
        pods_with(&t.client, "app=prop")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
}

//! StatefulSets end to end with the real kubectl: pods with stable ordinal names created in
//! order, each Ready before the next; stable DNS names through the headless Service resolved
//! from inside the pods; claims from `volumeClaimTemplates` that outlive their pods and are
//! mounted again by the replacement; a partitioned rolling update (highest ordinal first) with
//! `kubectl rollout status`, `history` and ControllerRevisions; scaling down in reverse order;
//! the StatefulSet example of kubernetes.io's concepts page; the 422s kube-apiserver gives.

use crate::common;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

const WAIT: Duration = Duration::from_secs(120);

/// The StatefulSet `web` of `replicas` pods behind the headless Service `nginx`, each running
/// `command` (a shell script).
fn web(replicas: u32, command: &str, extra: &str) -> String {
    format!(
        "
apiVersion: v1
kind: Service
metadata: {{name: nginx, labels: {{app: nginx}}}}
spec:
  clusterIP: None
  selector: {{app: nginx}}
  ports: [{{name: web, port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: nginx
  replicas: {replicas}
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: nginx
        image: busybox
        command: [sh, -c, {command:?}]
        env: [{{name: VERSION, value: one}}]
        readinessProbe:
          exec: {{command: ['true']}}
          initialDelaySeconds: 1
          periodSeconds: 1
{extra}"
    )
}

/// The set's pods by name.
async fn pods_by_name(t: &common::TestPlane) -> BTreeMap<String, Pod> {
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    pods.list(&ListParams::default().labels("app=nginx"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p))
        .collect()
}

fn ready_since(pod: &Pod) -> Option<k8s_openapi::jiff::Timestamp> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

fn created(pod: &Pod) -> k8s_openapi::jiff::Timestamp {
    pod.metadata.creation_timestamp.as_ref().unwrap().0
}

fn label<'a>(pod: &'a Pod, key: &str) -> &'a str {
    pod.labels()
        .get(key)
        .map(String::as_str)
        .unwrap_or_default()
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

/// Waits until the set's status says `ready` pods are ready and the generation was seen.
async fn ready_replicas(t: &common::TestPlane, ready: i32) -> StatefulSet {
    let sets: Api<StatefulSet> = Api::default_namespaced(t.client.clone());
    common::eventually(&format!("{ready} ready replicas"), WAIT, async || {
        let s = sets.get("web").await.ok()?;
        let status = s.status.clone()?;
        (status.ready_replicas == Some(ready)
            && status.replicas == ready
            && status.observed_generation == s.metadata.generation)
            .then_some(s)
    })
    .await
}

/// A plane whose node agent runs pods in their own sandboxes, with the cluster DNS.
async fn isolated_plane() -> common::TestPlane {
    common::start_with(|c| {
        let mut agent = ferry::up::AgentOptions::new();
        agent.node_name = "test-node".into();
        agent.gpus = ferry_agent::gpu::GpuSource::Fake(Vec::new());
        agent.shim = Some(common::shim_command());
        c.agent = Some(agent);
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn pods_start_in_order_and_resolve_each_other_by_stable_dns_names() {
    if !common::sandbox_capable("pods_start_in_order_and_resolve_each_other_by_stable_dns_names") {
        return;
    }
    let t = isolated_plane().await;
    // web-0 takes a while to become Ready: web-1 must not exist before it is.
    let manifest =
        web(3, "sleep 3600", "").replace("initialDelaySeconds: 1", "initialDelaySeconds: 3");
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    common::eventually(
        "web-0 created but not ready, web-1 absent",
        WAIT,
        async || {
            let pods = pods_by_name(&t).await;
            let first = pods.get("web-0")?;
            (ready_since(first).is_none()).then_some(())?;
            assert!(
                !pods.contains_key("web-1"),
                "web-1 was created before web-0 was Ready"
            );
            Some(())
        },
    )
    .await;
    t.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .success();
    let pods = pods_by_name(&t).await;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"]
    );
    for i in 1..3 {
        let before = &pods[&format!("web-{}", i - 1)];
        let this = &pods[&format!("web-{i}")];
        assert!(
            created(this) >= ready_since(before).expect("ready"),
            "web-{i} was created before web-{} was Ready",
            i - 1
        );
    }
    for (name, pod) in &pods {
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
        assert_eq!(label(pod, "statefulset.kubernetes.io/pod-name"), name);
        assert_eq!(
            label(pod, "apps.kubernetes.io/pod-index"),
            name.trim_start_matches("web-")
        );
        assert!(label(pod, "controller-revision-hash").starts_with("web-"));
    }
    // Each pod knows its own name and resolves the others through the headless Service.
    assert_eq!(
        t.kubectl(&["exec", "web-0", "--", "hostname"])
            .success()
            .trim(),
        "web-0"
    );
    for (from, to) in [("web-0", "web-1"), ("web-1", "web-2"), ("web-2", "web-0")] {
        let ip = pods[to].status.as_ref().unwrap().pod_ip.clone().unwrap();
        let fqdn = format!("{to}.nginx.default.svc.cluster.local");
        let answer = common::eventually(&format!("{from} to resolve {fqdn}"), WAIT, async || {
            let out = t.kubectl(&["exec", from, "--", "getent", "hosts", &fqdn]);
            (out.ok && !out.stdout.trim().is_empty()).then_some(out.stdout)
        })
        .await;
        assert_eq!(
            answer.split_whitespace().next(),
            Some(ip.as_str()),
            "{answer}"
        );
    }
    // The short form through the pod's search path.
    let short = t
        .kubectl(&["exec", "web-2", "--", "getent", "hosts", "web-0.nginx"])
        .success();
    assert!(
        short.starts_with(
            pods["web-0"]
                .status
                .as_ref()
                .unwrap()
                .pod_ip
                .as_deref()
                .unwrap()
        ),
        "{short}"
    );
    t.kubectl(&["delete", "statefulset", "web", "--wait=true"])
        .success();
    common::eventually("the pods to go with the set", WAIT, async || {
        pods_by_name(&t).await.is_empty().then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_rolling_update_replaces_the_highest_ordinals_first() {
    let t = common::start_with_node("1xT4").await;
    t.kubectl_stdin(&["apply", "-f", "-"], &web(3, "sleep 3600", ""))
        .success();
    let rollout = t
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .success();
    // kubectl reports any set with a partition (0 by default) this way, as against kube.
    assert!(
        rollout.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{rollout}"
    );
    let first = ready_replicas(&t, 3).await;
    let first_revision = first.status.unwrap().update_revision.unwrap();
    let before = pods_by_name(&t).await;

    // Partition 2: only web-2 takes the new template.
    t.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":2}}}}"#,
    ])
    .success();
    t.kubectl(&["set", "env", "statefulset/web", "VERSION=two"])
        .success();
    let rollout = t
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .success();
    assert!(
        rollout.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{rollout}"
    );
    let sets: Api<StatefulSet> = Api::default_namespaced(t.client.clone());
    let status = sets.get("web").await.unwrap().status.unwrap();
    let second_revision = status.update_revision.clone().unwrap();
    assert_ne!(second_revision, first_revision);
    assert_eq!(
        status.current_revision.as_deref(),
        Some(first_revision.as_str())
    );
    assert_eq!(status.updated_replicas, Some(1));
    let partitioned = pods_by_name(&t).await;
    assert_eq!(env_version(&partitioned["web-2"]), "two");
    assert_eq!(
        label(&partitioned["web-2"], "controller-revision-hash"),
        second_revision
    );
    for name in ["web-0", "web-1"] {
        assert_eq!(
            partitioned[name].uid(),
            before[name].uid(),
            "{name} was replaced"
        );
        assert_eq!(env_version(&partitioned[name]), "one");
    }

    // Partition 0: web-1, then web-0.
    t.kubectl(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ])
    .success();
    let rollout = t
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .success();
    assert!(
        rollout.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{rollout}"
    );
    let status = sets.get("web").await.unwrap().status.unwrap();
    assert_eq!(status.current_revision, status.update_revision);
    assert_eq!(status.current_replicas, Some(3));
    let updated = pods_by_name(&t).await;
    for (name, pod) in &updated {
        assert_eq!(env_version(pod), "two", "{name}");
        assert_eq!(label(pod, "controller-revision-hash"), second_revision);
    }
    assert!(
        created(&updated["web-0"]) >= ready_since(&updated["web-1"]).unwrap(),
        "web-0 was replaced before the new web-1 was Ready"
    );

    // The revisions, as kubectl shows them.
    let revisions = t.kubectl(&["get", "controllerrevisions"]).success();
    let header: Vec<&str> = revisions
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "CONTROLLER", "REVISION", "AGE"]);
    assert!(
        revisions.contains(&format!("{first_revision}   statefulset.apps/web   1")),
        "{revisions}"
    );
    assert!(
        revisions.contains(&format!("{second_revision}   statefulset.apps/web   2")),
        "{revisions}"
    );
    let history = t
        .kubectl(&["rollout", "history", "statefulset/web"])
        .success();
    assert!(
        history.contains("1 ") && history.contains("2 "),
        "{history}"
    );
    let wide = t.kubectl(&["get", "sts", "web", "-o", "wide"]).success();
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "AGE", "CONTAINERS", "IMAGES"]);
    assert!(wide.contains("3/3"), "{wide}");

    // Back to the first template: its revision is renumbered, not copied.
    t.kubectl(&["rollout", "undo", "statefulset/web"]).success();
    t.kubectl(&["rollout", "status", "statefulset/web", "--timeout=120s"])
        .success();
    let status = sets.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        status.update_revision.as_deref(),
        Some(first_revision.as_str())
    );
    let revisions = t
        .kubectl(&["get", "controllerrevisions", "-o", "name"])
        .success();
    assert_eq!(revisions.lines().count(), 2, "{revisions}");
    for pod in pods_by_name(&t).await.values() {
        assert_eq!(env_version(pod), "one");
    }

    // Scaling down removes the highest ordinals; up brings the same names back.
    t.kubectl(&["scale", "statefulset", "web", "--replicas=1"])
        .success();
    ready_replicas(&t, 1).await;
    common::eventually("only web-0 to remain", WAIT, async || {
        let names: Vec<String> = pods_by_name(&t).await.into_keys().collect();
        (names == ["web-0"]).then_some(())
    })
    .await;
    t.kubectl(&["scale", "statefulset", "web", "--replicas=2"])
        .success();
    ready_replicas(&t, 2).await;
    let names: Vec<String> = pods_by_name(&t).await.into_keys().collect();
    assert_eq!(names, ["web-0", "web-1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn parallel_management_and_on_delete_updates() {
    let t = common::start_with_node("1xT4").await;
    let manifest = web(3, "sleep 3600", "")
        .replace(
            "  serviceName: nginx\n",
            "  serviceName: nginx\n  podManagementPolicy: Parallel\n  updateStrategy: {type: OnDelete}\n",
        )
        .replace("initialDelaySeconds: 1", "initialDelaySeconds: 5");
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    // Parallel: all three exist before any is Ready.
    common::eventually("three pods at once", WAIT, async || {
        let pods = pods_by_name(&t).await;
        (pods.len() == 3).then_some(())?;
        assert!(
            pods.values().filter(|p| ready_since(p).is_some()).count() < 3,
            "the pods should exist before all are ready"
        );
        Some(())
    })
    .await;
    ready_replicas(&t, 3).await;
    let before = pods_by_name(&t).await;
    t.kubectl(&["set", "env", "statefulset/web", "VERSION=two"])
        .success();
    let sets: Api<StatefulSet> = Api::default_namespaced(t.client.clone());
    common::eventually("the new update revision", WAIT, async || {
        let s = sets.get("web").await.ok()?.status?;
        (s.update_revision != s.current_revision && s.updated_replicas == Some(0)).then_some(())
    })
    .await;
    // OnDelete: nothing is replaced until a pod is deleted.
    let still = pods_by_name(&t).await;
    for (name, pod) in &still {
        assert_eq!(pod.uid(), before[name].uid());
    }
    t.kubectl(&["delete", "pod", "web-1", "--wait=true"])
        .success();
    common::eventually("web-1 recreated from the new template", WAIT, async || {
        let pods = pods_by_name(&t).await;
        let p = pods.get("web-1")?;
        (p.uid() != before["web-1"].uid() && env_version(p) == "two").then_some(())
    })
    .await;
    let status = ready_replicas(&t, 3).await.status.unwrap();
    assert_eq!(status.updated_replicas, Some(1));
    assert_eq!(status.current_replicas, Some(2));
}

/// A PersistentVolume of class `manual` at `dir` (statically provisioned, bound by the
/// PersistentVolume controller as soon as a claim of that class asks).
fn manual_volume(name: &str, dir: &std::path::Path) -> String {
    format!(
        "
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {name}}}
spec:
  storageClassName: manual
  capacity: {{storage: 1Mi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: {}, type: DirectoryOrCreate}}
",
        dir.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn claims_are_created_before_their_pods_and_kept_across_pod_deletion() {
    let t = common::start_with_node("1xT4").await;
    for i in 0..2 {
        let dir = t.dir.path().join(format!("volume-{i}"));
        t.kubectl_stdin(
            &["apply", "-f", "-"],
            &manual_volume(&format!("manual-{i}"), &dir),
        )
        .success();
    }
    let claims = "  volumeClaimTemplates:
  - metadata: {name: www}
    spec:
      storageClassName: manual
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
";
    // The first pod of an ordinal writes a token; every pod prints what the claim holds.
    let script = "[ -f /data/token ] || echo \"token-$$-$(date +%s%N)\" > /data/token; cat /data/token; sleep 3600";
    let manifest = web(2, script, claims).replace(
        "        readinessProbe:",
        "        volumeMounts: [{name: www, mountPath: /data}]\n        readinessProbe:",
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest).success();
    let pvcs: Api<PersistentVolumeClaim> = Api::default_namespaced(t.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    ready_replicas(&t, 2).await;
    let pod = pods.get("web-0").await.unwrap();
    let claim = pvcs.get("www-web-0").await.unwrap();
    assert!(created(&pod) >= claim.metadata.creation_timestamp.clone().unwrap().0);
    assert_eq!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound")
    );
    let volume = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "www")
        .expect("the claim volume")
        .clone();
    assert_eq!(
        volume.persistent_volume_claim.unwrap().claim_name,
        "www-web-0"
    );
    assert_eq!(claim.labels().get("app").map(String::as_str), Some("nginx"));
    // Retain (the default): the claim has no owner, so nothing deletes it.
    assert!(claim.metadata.owner_references.is_none());
    let token = common::eventually("web-0 to print its token", WAIT, async || {
        let out = t.kubectl(&["logs", "web-0"]);
        let line = out.stdout.lines().next()?.to_string();
        (out.ok && line.starts_with("token-")).then_some(line)
    })
    .await;

    t.kubectl(&["delete", "pod", "web-0", "--wait=true"])
        .success();
    let replacement = common::eventually("web-0 to be recreated and ready", WAIT, async || {
        let p = pods.get_opt("web-0").await.ok()??;
        (p.uid() != pod.uid() && ready_since(&p).is_some()).then_some(p)
    })
    .await;
    let again = replacement.spec.clone().unwrap().volumes.unwrap();
    let claim_volume = again.iter().find(|v| v.name == "www").unwrap();
    assert_eq!(
        claim_volume
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "www-web-0"
    );
    assert_eq!(
        pvcs.get("www-web-0").await.unwrap().uid(),
        claim.uid(),
        "the same claim"
    );
    // The replacement reads what the first pod wrote.
    let read = common::eventually("the replacement to print the token", WAIT, async || {
        let out = t.kubectl(&["logs", "web-0"]);
        let line = out.stdout.lines().next()?.to_string();
        (out.ok && line.starts_with("token-")).then_some(line)
    })
    .await;
    assert_eq!(read, token);
    let other = t.kubectl(&["logs", "web-1"]).success();
    assert_ne!(
        other.lines().next(),
        Some(token.as_str()),
        "web-1 has its own claim"
    );

    // Deleting the set keeps the claims (whenDeleted: Retain).
    t.kubectl(&["delete", "statefulset", "web", "--wait=true"])
        .success();
    common::eventually("the pods to go", WAIT, async || {
        pods.list(&ListParams::default().labels("app=nginx"))
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
    let kept: Vec<String> = pvcs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .map(|c| c.name_any())
        .collect();
    assert_eq!(kept, ["www-web-0", "www-web-1"]);

    // whenDeleted: Delete makes the set the claims' owner, so they go with it.
    let deleting = web(1, "sleep 3600", &claims.replace("storageClassName: manual", "storageClassName: none"))
        .replace("metadata: {name: web}", "metadata: {name: scratch}")
        .replace(
            "  serviceName: nginx\n",
            "  serviceName: nginx\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Retain}\n",
        );
    t.kubectl_stdin(&["apply", "-f", "-"], &deleting).success();
    let owned = common::eventually("the claim of scratch-0", WAIT, async || {
        pvcs.get_opt("www-scratch-0").await.ok()?
    })
    .await;
    let owner = owned.metadata.owner_references.unwrap();
    assert_eq!(owner[0].kind, "StatefulSet");
    assert_eq!(owner[0].name, "scratch");
    t.kubectl(&["delete", "statefulset", "scratch", "--wait=true"])
        .success();
    common::eventually("the owned claim to go", WAIT, async || {
        let c = pvcs.get_opt("www-scratch-0").await.ok()?;
        c.is_none_or(|c| c.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_statefulsets_get_the_statuses_kube_apiserver_gives() {
    let t = common::start().await;
    let mismatched = web(1, "sleep 1", "").replace(
        "  selector: {matchLabels: {app: nginx}}",
        "  selector: {matchLabels: {app: other}}",
    );
    let err = t
        .kubectl_stdin(&["apply", "-f", "-"], &mismatched)
        .failure();
    assert!(
        err.contains(r#"The StatefulSet "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"nginx"}: `selector` does not match template `labels`"#),
        "{err}"
    );
    let negative = web(1, "sleep 1", "").replace("replicas: 1", "replicas: -1");
    let err = t.kubectl_stdin(&["apply", "-f", "-"], &negative).failure();
    assert!(
        err.contains("spec.replicas: Invalid value: -1: must be greater than or equal to 0"),
        "{err}"
    );
    let never = web(1, "sleep 1", "").replace(
        "      terminationGracePeriodSeconds: 1",
        "      terminationGracePeriodSeconds: 1\n      restartPolicy: Never",
    );
    let err = t.kubectl_stdin(&["apply", "-f", "-"], &never).failure();
    assert!(
        err.contains(r#"spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always""#),
        "{err}"
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &web(1, "sleep 3600", ""))
        .success();
    // Defaults as kube-apiserver's.
    let defaults = t
        .kubectl(&[
            "get",
            "sts",
            "web",
            "-o",
            "jsonpath={.spec.podManagementPolicy} {.spec.updateStrategy.type} {.spec.updateStrategy.rollingUpdate.partition} {.spec.revisionHistoryLimit} {.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}",
        ])
        .success();
    assert_eq!(defaults, "OrderedReady RollingUpdate 0 10 Retain");
    let err = t
        .kubectl(&[
            "patch",
            "sts",
            "web",
            "-p",
            r#"{"spec":{"serviceName":"other"}}"#,
        ])
        .failure();
    assert!(
        err.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"),
        "{err}"
    );
    // The allowed ones go through.
    t.kubectl(&[
        "patch",
        "sts",
        "web",
        "-p",
        r#"{"spec":{"minReadySeconds":3}}"#,
    ])
    .success();
}

/// The StatefulSet example of kubernetes.io's concepts page
/// (<https://kubernetes.io/docs/concepts/workloads/controllers/statefulset/#components>), as
/// written there but for the container's command (`python3 -m http.server` for nginx) and the
/// volumes of `my-storage-class`, provisioned here by the admin (the test) as the page
/// allows.
const KUBERNETES_IO_EXAMPLE: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: nginx
  labels:
    app: nginx
spec:
  ports:
  - port: 80
    name: web
  clusterIP: None
  selector:
    app: nginx
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: nginx # has to match .spec.template.metadata.labels
  serviceName: "nginx"
  replicas: 3 # by default is 1
  minReadySeconds: 10 # by default is 0
  template:
    metadata:
      labels:
        app: nginx # has to match .spec.selector.matchLabels
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: nginx
        image: registry.k8s.io/nginx-slim:0.24
        command: [python3, -m, http.server, "80", --directory, /usr/share/nginx/html]
        ports:
        - containerPort: 80
          name: web
        volumeMounts:
        - name: www
          mountPath: /usr/share/nginx/html
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: [ "ReadWriteOnce" ]
      storageClassName: "my-storage-class"
      resources:
        requests:
          storage: 1Gi
"#;

/// Removes a directory tree of empty directories at drop when it did not exist at creation.
struct RemoveIfMadeHere(Option<&'static str>);

impl RemoveIfMadeHere {
    fn new(path: &'static str) -> Self {
        Self((!std::path::Path::new(path).exists()).then_some(path))
    }
}

impl Drop for RemoveIfMadeHere {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_dir(format!("{path}/html"));
            let _ = std::fs::remove_dir(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_kubernetes_io_example_behaves_as_the_page_says() {
    if !common::sandbox_capable("the_kubernetes_io_example_behaves_as_the_page_says") {
        return;
    }
    // The agent makes a missing mountPath on the host (an empty directory) and leaves it:
    // remove what this test made.
    let _host_dir = RemoveIfMadeHere::new("/usr/share/nginx");
    let t = isolated_plane().await;
    for i in 0..3 {
        let dir = t.dir.path().join(format!("www-{i}"));
        let pv = manual_volume(&format!("www-{i}"), &dir)
            .replace("manual", "my-storage-class")
            .replace("1Mi", "1Gi");
        t.kubectl_stdin(&["apply", "-f", "-"], &pv).success();
    }
    t.kubectl_stdin(&["apply", "-f", "-"], KUBERNETES_IO_EXAMPLE)
        .success();
    // "For a StatefulSet with N replicas, when Pods are being deployed, they are created
    // sequentially, in order from {0..N-1}"; with minReadySeconds, each is available (Ready
    // for 10 s) before the next.
    t.kubectl(&["rollout", "status", "statefulset/web", "--timeout=180s"])
        .success();
    let sets: Api<StatefulSet> = Api::default_namespaced(t.client.clone());
    common::eventually("three available replicas", WAIT, async || {
        let s = sets.get("web").await.ok()?.status?;
        (s.available_replicas == Some(3)).then_some(())
    })
    .await;
    let pods = pods_by_name(&t).await;
    assert_eq!(
        pods.keys().cloned().collect::<Vec<_>>(),
        ["web-0", "web-1", "web-2"]
    );
    for i in 1..3 {
        let before = ready_since(&pods[&format!("web-{}", i - 1)]).unwrap();
        let this = created(&pods[&format!("web-{i}")]);
        assert!(
            this.duration_since(before) >= k8s_openapi::jiff::SignedDuration::from_secs(9),
            "web-{i} was created {} after web-{} became Ready, not minReadySeconds",
            this.duration_since(before),
            i - 1
        );
    }
    // "Each Pod in a StatefulSet derives its hostname from the name of the StatefulSet and
    // the ordinal of the Pod ... $(podname).$(governing service domain)".
    let ip = |name: &str| pods[name].status.as_ref().unwrap().pod_ip.clone().unwrap();
    for name in ["web-0", "web-1", "web-2"] {
        let fqdn = format!("{name}.nginx.default.svc.cluster.local");
        let answer = common::eventually(&format!("{fqdn} to resolve"), WAIT, async || {
            let out = t.kubectl(&["exec", "web-0", "--", "getent", "hosts", &fqdn]);
            (out.ok && !out.stdout.trim().is_empty()).then_some(out.stdout)
        })
        .await;
        assert_eq!(answer.split_whitespace().next(), Some(ip(name).as_str()));
    }
    // "the StatefulSet controller creates a PersistentVolumeClaim ... www-web-0 ...", each
    // Bound to a volume of my-storage-class.
    let claims = t
        .kubectl(&[
            "get",
            "pvc",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.status.phase} {end}",
        ])
        .success();
    assert_eq!(
        claims.trim(),
        "www-web-0=Bound www-web-1=Bound www-web-2=Bound"
    );
    // Served from the claim: what web-1 writes there, web-0 fetches through web-1's name.
    t.kubectl(&[
        "exec",
        "web-1",
        "--",
        "sh",
        "-c",
        "echo web-1 > /usr/share/nginx/html/index.html",
    ])
    .success();
    let page = common::eventually("web-1's page", WAIT, async || {
        let out = t.kubectl(&[
            "exec",
            "web-0",
            "--",
            "python3",
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://web-1.nginx/').read().decode().strip())",
        ]);
        out.ok.then_some(out.stdout)
    })
    .await;
    assert_eq!(page.trim(), "web-1");
    // "When Pods are being deleted, they are terminated in reverse order, from {N-1..0}."
    t.kubectl(&["scale", "statefulset", "web", "--replicas=1"])
        .success();
    common::eventually("only web-0 to remain", WAIT, async || {
        let names: Vec<String> = pods_by_name(&t)
            .await
            .into_iter()
            .filter(|(_, p)| p.metadata.deletion_timestamp.is_none())
            .map(|(n, _)| n)
            .collect();
        assert!(
            names != ["web-0", "web-2"],
            "web-1 went before web-2: {names:?}"
        );
        (names == ["web-0"]).then_some(())
    })
    .await;
    // The claims stay for a scale-up to find (whenScaled: Retain).
    let claims = t.kubectl(&["get", "pvc", "-o", "name"]).success();
    assert_eq!(claims.lines().count(), 3, "{claims}");
    t.kubectl(&["delete", "statefulset", "web", "--wait=true"])
        .success();
    common::eventually("the pods to go", WAIT, async || {
        pods_by_name(&t).await.is_empty().then_some(())
    })
    .await;
}

/// Starts `ferry apiserver` on a free port with its data in `dir`; returns it and the path of
/// the admin kubeconfig it wrote.
fn start_apiserver(dir: &std::path::Path) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["apiserver", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("ferry apiserver starts");
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let kubeconfig = loop {
        let line = lines
            .next()
            .expect("the server prints its kubeconfig")
            .unwrap();
        if let Some(path) = line.strip_prefix("kubeconfig:") {
            break path.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, kubeconfig)
}

/// Starts `ferry controller-manager` against the server of `kubeconfig`.
fn start_controllers(kubeconfig: &str) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["controller-manager", "--kubeconfig", kubeconfig])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("ferry controller-manager starts")
}

async fn client_of(kubeconfig: &str) -> kube::Client {
    let yaml = std::fs::read_to_string(kubeconfig).unwrap();
    ferry::up::client_from_kubeconfig(&yaml).await.unwrap()
}

/// `kill -9` of the API server and the controllers while a StatefulSet of 100 and a DaemonSet
/// on 60 nodes are being created; after a restart every ordinal has exactly one pod and
/// every node exactly one daemon pod: nothing duplicated, nothing lost.
#[tokio::test(flavor = "multi_thread")]
async fn kill_9_mid_creation_neither_duplicates_nor_loses_pods() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::Node;
    use kube::api::PostParams;

    const REPLICAS: usize = 100;
    const NODES: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, kubeconfig) = start_apiserver(dir.path());
    let client = client_of(&kubeconfig).await;
    // Nodes without an agent: the daemon pods are bound to them and stay Pending.
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..NODES {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("fake-{i}")}
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
    }
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let set: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "serviceName": "nginx",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": "nginx"}},
            "template": {"metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "nginx", "image": "busybox", "command": ["sleep", "3600"]}]}}
        }
    }))
    .unwrap();
    sets.create(&PostParams::default(), &set).await.unwrap();
    let daemons: Api<DaemonSet> = Api::default_namespaced(client.clone());
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "a", "image": "busybox", "command": ["sleep", "3600"]}]}}
        }
    }))
    .unwrap();
    daemons.create(&PostParams::default(), &ds).await.unwrap();

    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let count = async |pods: &Api<Pod>, selector: &str| {
        pods.list(&ListParams::default().labels(selector))
            .await
            .map(|l| l.items.len())
            .unwrap_or(0)
    };
    let mut controllers = start_controllers(&kubeconfig);
    common::eventually("the first pods", WAIT, async || {
        (count(&pods, "app=nginx").await > 0 || count(&pods, "app=agent").await > 0).then_some(())
    })
    .await;
    controllers.kill().unwrap(); // SIGKILL
    server.kill().unwrap();
    controllers.wait().unwrap();
    server.wait().unwrap();
    drop(pods);

    let (mut server, kubeconfig) = start_apiserver(dir.path());
    let client = client_of(&kubeconfig).await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let at_restart = (
        count(&pods, "app=nginx").await,
        count(&pods, "app=agent").await,
    );
    eprintln!(
        "at the kill: {} of {REPLICAS} set pods, {} of {NODES} daemon pods",
        at_restart.0, at_restart.1
    );
    let mut controllers = start_controllers(&kubeconfig);
    let sets: Api<StatefulSet> = Api::default_namespaced(client.clone());
    let daemons: Api<DaemonSet> = Api::default_namespaced(client.clone());
    common::eventually("both sets to report all their pods", WAIT, async || {
        let s = sets.get("web").await.ok()?.status?;
        let d = daemons.get("agent").await.ok()?.status?;
        (s.replicas == REPLICAS as i32 && d.current_number_scheduled == NODES as i32).then_some(())
    })
    .await;
    let set_pods = pods
        .list(&ListParams::default().labels("app=nginx"))
        .await
        .unwrap()
        .items;
    let mut names: Vec<String> = set_pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    let mut expected: Vec<String> = (0..REPLICAS).map(|i| format!("web-{i}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    let daemon_pods = pods
        .list(&ListParams::default().labels("app=agent"))
        .await
        .unwrap()
        .items;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for p in &daemon_pods {
        *per_node
            .entry(p.spec.as_ref().unwrap().node_name.clone().unwrap())
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), NODES, "{per_node:?}");
    assert!(per_node.values().all(|n| *n == 1), "{per_node:?}");
    assert_eq!(daemon_pods.len(), NODES);
    controllers.kill().unwrap();
    server.kill().unwrap();
    controllers.wait().unwrap();
    server.wait().unwrap();
}

//! Admission policy with the real kubectl and kube-rs: ResourceQuota (GPUs whole and shared,
//! pods, compute constraints, dry runs), LimitRange defaults and bounds, and Pod Security
//! Admission's enforce and warn modes. Pods need no node for admission: no agent runs.

use crate::common;

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// A namespace, made with kubectl, with `labels`.
fn namespace(t: &common::TestPlane, name: &str, labels: &[&str]) {
    t.kubectl(&["create", "namespace", name]).success();
    if !labels.is_empty() {
        let mut args = vec!["label", "namespace", name];
        args.extend_from_slice(labels);
        t.kubectl(&args).success();
    }
}

/// A pod manifest: one container `main` with `resources`, plus `extra` merged into the spec.
fn pod_yaml(name: &str, namespace: &str, resources: Value, extra: Value) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [
            {"name": "main", "image": "busybox", "command": ["true"], "resources": resources}]}
    });
    if let (Some(spec), Some(extra)) = (pod["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "containerSecurityContext" {
                continue;
            }
            spec.insert(k.clone(), v.clone());
        }
    }
    if let Some(sc) = extra.get("containerSecurityContext") {
        pod["spec"]["containers"][0]["securityContext"] = sc.clone();
    }
    serde_json::to_string(&pod).unwrap()
}

fn create(t: &common::TestPlane, manifest: &str) -> common::Kubectl {
    t.kubectl_stdin(&["create", "-f", "-"], manifest)
}

/// The row of `kubectl describe quota` for `resource`: (used, hard).
fn described(
    t: &common::TestPlane,
    namespace: &str,
    quota: &str,
    resource: &str,
) -> Option<(String, String)> {
    let out = t
        .kubectl(&["describe", "quota", quota, "-n", namespace])
        .success();
    out.lines().find_map(|l| {
        let cells: Vec<&str> = l.split_whitespace().collect();
        (cells.len() == 3 && cells[0] == resource)
            .then(|| (cells[1].to_string(), cells[2].to_string()))
    })
}

async fn wait_described(
    t: &common::TestPlane,
    namespace: &str,
    quota: &str,
    resource: &str,
    used: &str,
    hard: &str,
) {
    let want = (used.to_string(), hard.to_string());
    common::eventually(
        &format!("kubectl describe quota {quota} to show {resource} {used}/{hard}"),
        Duration::from_secs(30),
        async || (described(t, namespace, quota, resource).as_ref() == Some(&want)).then_some(()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_quota_counts_gpus_whole_and_shared() {
    let t = common::start().await;
    namespace(&t, "team-a", &[]);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "gpus", "namespace": "team-a"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}});
    create(&t, &quota.to_string()).success();

    let whole = |name: &str| {
        pod_yaml(
            name,
            "team-a",
            json!({"limits": {"nvidia.com/gpu": "1"}}),
            json!({}),
        )
    };
    create(&t, &whole("whole-1")).success();
    let refused = create(&t, &whole("whole-2")).failure();
    assert!(
        refused.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"whole-2\" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=1, used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1"),
        "{refused}"
    );
    wait_described(&t, "team-a", "gpus", "requests.nvidia.com/gpu", "1", "1").await;
    let listed = t.kubectl(&["get", "quota", "-n", "team-a"]).success();
    assert!(listed.contains("requests.nvidia.com/gpu: 1/1"), "{listed}");

    // The same refusal through kube-rs: 403 Forbidden with the same message.
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "team-a");
    let pod: Pod = serde_json::from_str(&whole("whole-3")).unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
            assert!(
                s.message
                    .starts_with("pods \"whole-3\" is forbidden: exceeded quota: gpus"),
                "{}",
                s.message
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }

    // Shares of one card: two halves fit, a third half does not.
    t.kubectl(&["delete", "pod", "whole-1", "-n", "team-a"])
        .success();
    let half = |name: &str| {
        pod_yaml(
            name,
            "team-a",
            json!({"limits": {"ferry.dev/gpu-milli": "500"}}),
            json!({}),
        )
    };
    // A server-side dry run is checked but charges nothing.
    t.kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &half("dry"))
        .success();
    create(&t, &half("half-a")).success();
    create(&t, &half("half-b")).success();
    let refused = create(&t, &half("half-c")).failure();
    assert!(
        refused.contains("pods \"half-c\" is forbidden: exceeded quota: gpus, requested: requests.nvidia.com/gpu=500m, used: requests.nvidia.com/gpu=1, limited: requests.nvidia.com/gpu=1"),
        "{refused}"
    );
    let dry = t
        .kubectl_stdin(&["create", "--dry-run=server", "-f", "-"], &half("dry"))
        .failure();
    assert!(dry.contains("exceeded quota: gpus"), "{dry}");
    // Fractions of a card in Ferry are ferry.dev/gpu-milli; nvidia.com/gpu stays whole, as
    // Kubernetes requires of extended resources.
    let invalid = create(
        &t,
        &pod_yaml(
            "half-gpu",
            "team-a",
            json!({"limits": {"nvidia.com/gpu": "0.5"}}),
            json!({}),
        ),
    )
    .failure();
    assert!(invalid.contains("must be an integer"), "{invalid}");

    // A finished pod no longer counts: the controller's status shows it too.
    t.kubectl(&["delete", "pod", "half-a", "-n", "team-a"])
        .success();
    wait_described(&t, "team-a", "gpus", "requests.nvidia.com/gpu", "500m", "1").await;
    create(&t, &half("half-c")).success();
    wait_described(&t, "team-a", "gpus", "requests.nvidia.com/gpu", "1", "1").await;

    // Creates racing for the last GPUs: exactly as many pass as fit.
    t.kubectl(&["create", "namespace", "race"]).success();
    t.kubectl(&[
        "create",
        "quota",
        "gpus",
        "-n",
        "race",
        "--hard=requests.nvidia.com/gpu=2",
    ])
    .success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "race");
    let racers = (0..8).map(|n| {
        let pods = pods.clone();
        let pod: Pod = serde_json::from_str(&pod_yaml(
            &format!("racer-{n}"),
            "race",
            json!({"limits": {"nvidia.com/gpu": "1"}}),
            json!({}),
        ))
        .unwrap();
        tokio::spawn(async move { pods.create(&PostParams::default(), &pod).await })
    });
    let results = futures::future::join_all(racers).await;
    let admitted = results
        .iter()
        .filter(|r| r.as_ref().unwrap().is_ok())
        .count();
    assert_eq!(admitted, 2, "{results:?}");
    for r in results {
        if let Err(kube::Error::Api(s)) = r.unwrap() {
            assert_eq!(s.code, 403, "{}", s.message);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn resource_quota_counts_pods_and_needs_stated_compute() {
    let t = common::start().await;
    namespace(&t, "team-b", &[]);
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "pods", "namespace": "team-b"},
        "spec": {"hard": {"pods": "2", "count/configmaps": "2"}}});
    create(&t, &quota.to_string()).success();
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "team-b");
    let pod = |name: &str| -> Pod {
        serde_json::from_str(&pod_yaml(name, "team-b", json!({}), json!({}))).unwrap()
    };
    pods.create(&PostParams::default(), &pod("p1"))
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p2"))
        .await
        .unwrap();
    match pods.create(&PostParams::default(), &pod("p3")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403);
            assert_eq!(
                s.message,
                "pods \"p3\" is forbidden: exceeded quota: pods, requested: pods=1, used: pods=2, limited: pods=2"
            );
        }
        other => panic!("expected 403, got {other:?}"),
    }
    wait_described(&t, "team-b", "pods", "pods", "2", "2").await;
    // p1 finishes (its node would report it): a terminal pod does not count.
    let mut p1 = pods.get("p1").await.unwrap();
    p1.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    pods.replace_status("p1", &PostParams::default(), &p1)
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod("p3"))
        .await
        .unwrap();
    wait_described(&t, "team-b", "pods", "pods", "2", "2").await;

    // Object counts: the namespace's kube-root-ca.crt ConfigMap counts too (as in Kubernetes).
    common::eventually(
        "kube-root-ca.crt in team-b",
        Duration::from_secs(30),
        async || {
            t.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "team-b"])
                .ok
                .then_some(())
        },
    )
    .await;
    t.kubectl(&["create", "configmap", "one", "-n", "team-b"])
        .success();
    let refused = t
        .kubectl(&["create", "configmap", "two", "-n", "team-b"])
        .failure();
    assert!(
        refused.contains("configmaps \"two\" is forbidden: exceeded quota: pods, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"),
        "{refused}"
    );

    // A quota on cpu: every container must state it.
    let compute = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "team-b"},
        "spec": {"hard": {"limits.cpu": "2", "requests.memory": "1Gi"}}});
    create(&t, &compute.to_string()).success();
    t.kubectl(&["delete", "pod", "p2", "p3", "-n", "team-b"])
        .success();
    let refused = create(&t, &pod_yaml("bare", "team-b", json!({}), json!({}))).failure();
    assert!(
        refused.contains("pods \"bare\" is forbidden: failed quota: compute: must specify limits.cpu for: main; requests.memory for: main"),
        "{refused}"
    );
    let sized = pod_yaml(
        "sized",
        "team-b",
        json!({"limits": {"cpu": "1", "memory": "512Mi"}}),
        json!({}),
    );
    create(&t, &sized).success();
    wait_described(&t, "team-b", "compute", "limits.cpu", "1", "2").await;
    wait_described(&t, "team-b", "compute", "requests.memory", "512Mi", "1Gi").await;

    // Invalid quotas are refused as Kubernetes refuses them.
    let bad = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "bad", "namespace": "team-b"},
        "spec": {"hard": {"gpus": "1"}}});
    let refused = create(&t, &bad.to_string()).failure();
    assert!(
        refused.contains(
            "spec.hard[gpus]: Invalid value: \"gpus\": must be a standard resource for quota"
        ),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn limit_range_defaults_and_bounds() {
    let t = common::start().await;
    namespace(&t, "lr", &[]);
    let range = json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": "lr"},
        "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "250m"},
            "max": {"cpu": "2"}}]}});
    create(&t, &range.to_string()).success();
    // With a quota on limits.cpu as well: the defaults satisfy it.
    let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "lr"},
        "spec": {"hard": {"limits.cpu": "4"}}});
    create(&t, &quota.to_string()).success();
    create(&t, &pod_yaml("plain", "lr", json!({}), json!({}))).success();
    let pod: Value = serde_json::from_str(
        &t.kubectl(&["get", "pod", "plain", "-n", "lr", "-o", "json"])
            .success(),
    )
    .unwrap();
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        json!({"cpu": "500m", "memory": "256Mi"})
    );
    assert_eq!(
        resources["requests"],
        json!({"cpu": "250m", "memory": "256Mi"})
    );
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container main; cpu, memory limit for container main"
    );
    let refused = create(
        &t,
        &pod_yaml("big", "lr", json!({"limits": {"cpu": "3"}}), json!({})),
    )
    .failure();
    assert!(
        refused.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 2, but limit is 3"
        ),
        "{refused}"
    );
    let described = t
        .kubectl(&["describe", "limitrange", "defaults", "-n", "lr"])
        .success();
    assert!(
        described.contains("Container") && described.contains("500m"),
        "{described}"
    );
    wait_described(&t, "lr", "compute", "limits.cpu", "500m", "4").await;
}

/// A pod that passes `restricted`, with `extra` merged into its spec.
fn compliant(name: &str, namespace: &str, extra: Value) -> String {
    let mut spec = json!({
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
            "seccompProfile": {"type": "RuntimeDefault"}},
        "containerSecurityContext": {"allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]}}
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    pod_yaml(name, namespace, json!({}), spec)
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_security_enforces_and_warns() {
    let t = common::start().await;
    namespace(
        &t,
        "locked",
        &["pod-security.kubernetes.io/enforce=restricted"],
    );
    create(&t, &compliant("good", "locked", json!({}))).success();

    let privileged = compliant(
        "priv",
        "locked",
        json!({"containerSecurityContext": {
        "privileged": true, "capabilities": {"drop": ["ALL"]}}}),
    );
    let refused = create(&t, &privileged).failure();
    assert!(
        refused.contains("Error from server (Forbidden): error when creating \"STDIN\": pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"main\" must set securityContext.allowPrivilegeEscalation=false), privileged (container \"main\" must not set securityContext.privileged=true)"),
        "{refused}"
    );
    let host_path = compliant(
        "host",
        "locked",
        json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
    );
    let refused = create(&t, &host_path).failure();
    assert!(
        refused.contains("pods \"host\" is forbidden: violates PodSecurity \"restricted:latest\": restricted volume types (volume \"root\" uses restricted volume type \"hostPath\")"),
        "{refused}"
    );

    // baseline refuses hostPath and privileged too, in its own words, but not a plain pod.
    namespace(
        &t,
        "base",
        &[
            "pod-security.kubernetes.io/enforce=baseline",
            "pod-security.kubernetes.io/enforce-version=v1.30",
        ],
    );
    let refused = create(
        &t,
        &pod_yaml(
            "host",
            "base",
            json!({}),
            json!({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}),
        ),
    )
    .failure();
    assert!(
        refused.contains("pods \"host\" is forbidden: violates PodSecurity \"baseline:v1.30\": hostPath volumes (volume \"root\")"),
        "{refused}"
    );
    create(&t, &pod_yaml("plain", "base", json!({}), json!({}))).success();

    // kube-rs sees the same 403.
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "locked");
    let pod: Pod = serde_json::from_str(&privileged).unwrap();
    match pods.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(s)) => assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden")),
        other => panic!("expected 403, got {other:?}"),
    }

    // warn: admitted, with kubectl's Warning line.
    namespace(
        &t,
        "watched",
        &["pod-security.kubernetes.io/warn=restricted"],
    );
    let out = create(&t, &pod_yaml("plain", "watched", json!({}), json!({})));
    assert!(out.ok, "{out:?}");
    assert!(
        out.stderr.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"main\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"main\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"main\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"main\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"),
        "{}",
        out.stderr
    );

    // Enforcing on a namespace whose pods fail the level warns about them.
    let out = t.kubectl(&[
        "label",
        "namespace",
        "watched",
        "pod-security.kubernetes.io/enforce=restricted",
    ]);
    assert!(out.ok, "{out:?}");
    assert!(
        out.stderr.contains("Warning: existing pods in namespace \"watched\" violate the new PodSecurity enforce level \"restricted:latest\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Warning: plain: allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile"), "{}", out.stderr);

    // Unknown levels are refused: 422.
    let refused = t
        .kubectl(&[
            "label",
            "namespace",
            "watched",
            "--overwrite",
            "pod-security.kubernetes.io/enforce=strict",
        ])
        .failure();
    assert!(
        refused.contains("namespaces \"watched\" is invalid: metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: \"strict\": must be one of privileged, baseline, restricted"),
        "{refused}"
    );
    let refused = create(
        &t,
        &json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "odd", "labels": {"pod-security.kubernetes.io/warn-version": "1.30"}}})
        .to_string(),
    )
    .failure();
    assert!(
        refused.contains("namespaces \"odd\" is invalid: metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: \"1.30\": must be \"latest\" or \"v1.x\""),
        "{refused}"
    );

    // Namespaces without labels are privileged.
    namespace(&t, "open", &[]);
    create(
        &t,
        &pod_yaml(
            "priv",
            "open",
            json!({}),
            json!({"containerSecurityContext": {"privileged": true}, "hostNetwork": true}),
        ),
    )
    .success();
}

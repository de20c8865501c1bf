//! Storage with the real kubectl: claims of the built-in `local-path` class bound through
//! WaitForFirstConsumer and mounted into pods, data kept across pods, Retain and Delete
//! reclaim, a pre-created volume bound by the binder, kube's statuses for bad input, and
//! claim protection while a pod uses it.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::Api;

const WAIT: Duration = Duration::from_secs(120);

fn claim_yaml(name: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: {name}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources: {{requests: {{storage: 1Gi}}}}\n{extra_spec}"
    )
}

fn pod_yaml(name: &str, claim: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
  containers:
  - name: c
    image: busybox
    command: [sh, -c, '{script}']
    volumeMounts: [{{name: data, mountPath: /data}}]
"#
    )
}

async fn wait_pod_phase(t: &common::TestPlane, pods: &Api<Pod>, name: &str, phase: &str) -> Pod {
    let found = tokio::time::timeout(
        WAIT,
        common::eventually(&format!("pod {name} {phase}"), WAIT * 2, async || {
            let p = pods.get_opt(name).await.ok()??;
            let current = p.status.as_ref()?.phase.clone()?;
            assert!(
                !(current == "Failed" && phase != "Failed"),
                "pod {name} failed: {:?}",
                p.status
            );
            (current == phase).then_some(p)
        }),
    )
    .await;
    match found {
        Ok(p) => p,
        Err(_) => {
            // What kubectl says about the pod and the storage, for whoever reads the failure.
            let pod = t.kubectl(&["describe", "pod", name]);
            let storage = t.kubectl(&["get", "pvc,pv", "-o", "wide"]);
            panic!(
                "timed out after {WAIT:?} waiting for pod {name} {phase}\n{}\n{}\n{}",
                pod.stdout, storage.stdout, storage.stderr
            )
        }
    }
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    common::eventually(&format!("{name} to go"), WAIT, async || {
        api.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

fn volume_path(pv: &PersistentVolume) -> PathBuf {
    PathBuf::from(
        &pv.spec
            .as_ref()
            .and_then(|s| s.host_path.as_ref())
            .expect("a hostPath volume")
            .path,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_default_class_claim_is_bound_mounted_kept_across_pods_and_deleted_with_its_claim() {
    let t = common::start_with_node("1xT4").await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(t.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(t.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());

    // The built-in class, as kubectl shows it.
    let classes = common::eventually("the local-path class", WAIT, async || {
        let out = t.kubectl(&["get", "storageclass"]);
        (out.ok && out.stdout.contains("local-path (default)")).then_some(out.stdout)
    })
    .await;
    let header = classes.lines().next().unwrap();
    for column in [
        "NAME",
        "PROVISIONER",
        "RECLAIMPOLICY",
        "VOLUMEBINDINGMODE",
        "ALLOWVOLUMEEXPANSION",
        "AGE",
    ] {
        assert!(header.contains(column), "{classes}");
    }
    assert!(
        classes.contains("ferry.dev/local-path") && classes.contains("WaitForFirstConsumer"),
        "{classes}"
    );

    // A claim of no class gets the default one and waits for its first consumer.
    t.kubectl_stdin(&["apply", "-f", "-"], &claim_yaml("data", ""))
        .success();
    let claim = claims.get("data").await.unwrap();
    let spec = claim.spec.clone().unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("local-path"));
    assert_eq!(spec.volume_mode.as_deref(), Some("Filesystem"));
    assert!(
        claim
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "kubernetes.io/pvc-protection")
    );
    let pending = t.kubectl(&["get", "pvc", "data"]).success();
    assert!(pending.contains("Pending"), "{pending}");
    common::eventually("the WaitForFirstConsumer event", WAIT, async || {
        let out = t.kubectl(&["describe", "pvc", "data"]);
        (out.ok
            && out
                .stdout
                .contains("waiting for first consumer to be created before binding"))
        .then_some(())
    })
    .await;

    // A writer pod: the scheduler selects its node for the claim, the provisioner makes
    // the volume, the binder binds it, the agent mounts it.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("writer", "data", "echo hello-from-writer > /data/greeting"),
    )
    .success();
    wait_pod_phase(&t, &pods, "writer", "Succeeded").await;
    let claim = claims.get("data").await.unwrap();
    assert_eq!(
        claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("volume.kubernetes.io/selected-node"))
            .map(String::as_str),
        Some("test-node")
    );
    assert_eq!(
        claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/bind-completed"))
            .map(String::as_str),
        Some("yes")
    );
    let volume_name = claim.spec.as_ref().unwrap().volume_name.clone().unwrap();
    let uid = claim.metadata.uid.clone().unwrap();
    assert_eq!(volume_name, format!("pvc-{uid}"));
    let table = t.kubectl(&["get", "pvc"]).success();
    let header = table.lines().next().unwrap();
    for column in [
        "NAME",
        "STATUS",
        "VOLUME",
        "CAPACITY",
        "ACCESS MODES",
        "STORAGECLASS",
        "VOLUMEATTRIBUTESCLASS",
        "AGE",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table.lines().find(|l| l.starts_with("data ")).unwrap();
    for cell in ["Bound", volume_name.as_str(), "1Gi", "RWO", "local-path"] {
        assert!(row.contains(cell), "{table}");
    }
    let wide = t.kubectl(&["get", "pvc", "data", "-o", "wide"]).success();
    assert!(
        wide.contains("VOLUMEMODE") && wide.contains("Filesystem"),
        "{wide}"
    );
    let pv_table = t.kubectl(&["get", "pv"]).success();
    assert!(
        pv_table.lines().next().unwrap().contains("RECLAIM POLICY"),
        "{pv_table}"
    );
    let pv_row = pv_table
        .lines()
        .find(|l| l.starts_with(&volume_name))
        .unwrap();
    for cell in [
        "1Gi",
        "RWO",
        "Delete",
        "Bound",
        "default/data",
        "local-path",
    ] {
        assert!(pv_row.contains(cell), "{pv_table}");
    }

    // The directory is on the node, under the data directory, with the writer's file.
    let pv = volumes.get(&volume_name).await.unwrap();
    let dir = volume_path(&pv);
    let root = t.dir.path().join("data").join("storage");
    assert_eq!(dir, root.join(format!("pvc-{uid}_default_data")));
    assert_eq!(
        std::fs::read_to_string(dir.join("greeting")).unwrap(),
        "hello-from-writer\n"
    );

    // A second pod, after the first is gone, reads what the first wrote.
    t.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml(
            "reader",
            "data",
            "test \"$(cat /data/greeting)\" = hello-from-writer",
        ),
    )
    .success();
    wait_pod_phase(&t, &pods, "reader", "Succeeded").await;
    t.kubectl(&["delete", "pod", "reader", "--wait=true"])
        .success();

    // Delete reclaim: the claim goes, then the volume and its directory.
    t.kubectl(&["delete", "pvc", "data", "--wait=true"])
        .success();
    wait_gone(&volumes, &volume_name).await;
    common::eventually("the directory removed", WAIT, async || {
        (!dir.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_volume_released_and_a_pre_created_volume_is_bound() {
    let t = common::start_with_node("1xT4").await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(t.client.clone());
    let volumes: Api<PersistentVolume> = Api::all(t.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    let host_dir = t.dir.path().join("manual-volume");

    // An Immediate class with no provisioner and a volume made by hand.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: manual}}
provisioner: kubernetes.io/no-provisioner
---
apiVersion: v1
kind: PersistentVolume
metadata: {{name: manual-pv, labels: {{disk: fast}}}}
spec:
  storageClassName: manual
  capacity: {{storage: 5Gi}}
  accessModes: [ReadWriteOnce, ReadWriteMany]
  hostPath: {{path: {}}}
"#,
            host_dir.display()
        ),
    )
    .success();
    let sc = t.kubectl(&["get", "sc", "manual"]).success();
    assert!(
        sc.contains("Delete") && sc.contains("Immediate"),
        "defaults shown: {sc}"
    );
    let pv = volumes.get("manual-pv").await.unwrap();
    assert_eq!(
        pv.spec
            .as_ref()
            .unwrap()
            .persistent_volume_reclaim_policy
            .as_deref(),
        Some("Retain")
    );
    common::eventually("the volume Available", WAIT, async || {
        let pv = volumes.get("manual-pv").await.ok()?;
        (pv.status?.phase.as_deref() == Some("Available")).then_some(())
    })
    .await;

    // The binder binds a matching claim at once (Immediate).
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &claim_yaml(
            "manual",
            "  storageClassName: manual\n  selector: {matchLabels: {disk: fast}}\n",
        ),
    )
    .success();
    common::eventually("the claim Bound", WAIT, async || {
        let c = claims.get("manual").await.ok()?;
        (c.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;
    let claim = claims.get("manual").await.unwrap();
    assert_eq!(
        claim.spec.as_ref().unwrap().volume_name.as_deref(),
        Some("manual-pv")
    );
    let status = claim.status.clone().unwrap();
    assert_eq!(status.capacity.unwrap()["storage"].0, "5Gi");
    let pv = volumes.get("manual-pv").await.unwrap();
    assert_eq!(
        pv.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("pv.kubernetes.io/bound-by-controller"))
            .map(String::as_str),
        Some("yes")
    );
    let row = t.kubectl(&["get", "pvc", "manual"]).success();
    assert!(
        row.contains("Bound") && row.contains("5Gi") && row.contains("RWO,RWX"),
        "{row}"
    );

    // A pod writes into the hand-made directory (created on first use).
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("writer", "manual", "echo kept > /data/file"),
    )
    .success();
    wait_pod_phase(&t, &pods, "writer", "Succeeded").await;
    assert_eq!(
        std::fs::read_to_string(host_dir.join("file")).unwrap(),
        "kept\n"
    );
    t.kubectl(&["delete", "pod", "writer", "--wait=true"])
        .success();

    // Retain: the claim goes, the volume stays Released with its data.
    t.kubectl(&["delete", "pvc", "manual", "--wait=true"])
        .success();
    common::eventually("the volume Released", WAIT, async || {
        let pv = volumes.get("manual-pv").await.ok()?;
        (pv.status?.phase.as_deref() == Some("Released")).then_some(())
    })
    .await;
    let row = t.kubectl(&["get", "pv", "manual-pv"]).success();
    assert!(
        row.contains("Released") && row.contains("Retain") && row.contains("default/manual"),
        "{row}"
    );
    assert!(host_dir.join("file").exists());
    t.kubectl(&["delete", "pv", "manual-pv", "--wait=true"])
        .success();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_claims_get_kubes_statuses_and_a_claim_in_use_waits_for_its_pod() {
    let t = common::start_with_node("1xT4").await;
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(t.client.clone());
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    common::eventually("the local-path class", WAIT, async || {
        t.kubectl(&["get", "storageclass", "local-path"])
            .ok
            .then_some(())
    })
    .await;

    // Missing storage request and access modes: 422 with kube's field causes.
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: bad}\nspec: {}\n",
        )
        .failure();
    assert!(
        err.contains("PersistentVolumeClaim \"bad\" is invalid")
            && err.contains("spec.accessModes: Required value: at least 1 access mode is required")
            && err.contains("spec.resources[storage]: Required value"),
        "{err}"
    );
    // A PV with two sources.
    let err = t
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: two}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  hostPath: {path: /tmp/x}\n  nfs: {server: s, path: /y}\n",
        )
        .failure();
    assert!(
        err.contains("may not specify more than 1 volume type"),
        "{err}"
    );

    // A claim used by a running pod.
    t.kubectl_stdin(&["apply", "-f", "-"], &claim_yaml("used", ""))
        .success();
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("user", "used", "echo up > /data/up; sleep 300"),
    )
    .success();
    wait_pod_phase(&t, &pods, "user", "Running").await;
    common::eventually("the claim Bound", WAIT, async || {
        let c = claims.get("used").await.ok()?;
        (c.status?.phase.as_deref() == Some("Bound")).then_some(())
    })
    .await;

    // Changing a bound claim's class: 422 with kube's message.
    let err = t
        .kubectl(&[
            "patch",
            "pvc",
            "used",
            "--type=merge",
            "-p",
            r#"{"spec":{"storageClassName":"other"}}"#,
        ])
        .failure();
    assert!(
        err.contains("PersistentVolumeClaim \"used\" is invalid")
            && err.contains("spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims"),
        "{err}"
    );
    // Growing it where the class does not allow expansion: refused.
    let err = t
        .kubectl(&[
            "patch",
            "pvc",
            "used",
            "--type=merge",
            "-p",
            r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
        ])
        .failure();
    assert!(err.contains("must support resize"), "{err}");

    // Deleting the claim leaves it Terminating while the pod runs.
    t.kubectl(&["delete", "pvc", "used", "--wait=false"])
        .success();
    let row = t.kubectl(&["get", "pvc", "used"]).success();
    assert!(row.contains("Terminating"), "{row}");
    // Still there after the protection controller looked at it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let claim = claims.get("used").await.unwrap();
    assert!(claim.metadata.deletion_timestamp.is_some());
    // A new pod using the terminating claim is not scheduled, with kube's reason.
    t.kubectl_stdin(&["apply", "-f", "-"], &pod_yaml("late", "used", "true"))
        .success();
    common::eventually("the late pod's reason", WAIT, async || {
        let p = pods.get("late").await.ok()?;
        let c = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        c.message?
            .contains("persistentvolumeclaim \"used\" is being deleted")
            .then_some(())
    })
    .await;
    // A pod naming a claim that does not exist waits with kube's reason.
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("orphan", "nowhere", "true"),
    )
    .success();
    common::eventually("the orphan pod's reason", WAIT, async || {
        let p = pods.get("orphan").await.ok()?;
        let c = p
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled")?;
        c.message?
            .contains("persistentvolumeclaim \"nowhere\" not found")
            .then_some(())
    })
    .await;
    // The pods go: the claim goes with them.
    t.kubectl(&["delete", "pod", "user", "late", "orphan", "--wait=true"])
        .success();
    wait_gone(&claims, "used").await;

    // Without a default class a claim stays classless; it gets the class once one is the
    // default (RetroactiveDefaultStorageClass).
    t.kubectl(&[
        "annotate",
        "storageclass",
        "local-path",
        "storageclass.kubernetes.io/is-default-class-",
    ])
    .success();
    t.kubectl_stdin(&["apply", "-f", "-"], &claim_yaml("later", ""))
        .success();
    let later = claims.get("later").await.unwrap();
    assert_eq!(later.spec.unwrap().storage_class_name, None);
    t.kubectl(&[
        "annotate",
        "storageclass",
        "local-path",
        "storageclass.kubernetes.io/is-default-class=true",
    ])
    .success();
    common::eventually("the default class given to the claim", WAIT, async || {
        let c = claims.get("later").await.ok()?;
        (c.spec?.storage_class_name.as_deref() == Some("local-path")).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_isolated_sandbox_mounts_claims_and_honours_read_only() {
    if !common::sandbox_capable("the_isolated_sandbox_mounts_claims_and_honours_read_only") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let pods: Api<Pod> = Api::default_namespaced(t.client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::default_namespaced(t.client.clone());
    // Created at once: if the built-in class is not there yet, the claim gets it when it
    // comes (RetroactiveDefaultStorageClass).
    t.kubectl_stdin(&["apply", "-f", "-"], &claim_yaml("shared", ""))
        .success();
    common::eventually("the claim's default class", WAIT, async || {
        let c = claims.get("shared").await.ok()?;
        (c.spec?.storage_class_name.as_deref() == Some("local-path")).then_some(())
    })
    .await;
    t.kubectl_stdin(
        &["apply", "-f", "-"],
        &pod_yaml("writer", "shared", "echo sandboxed > /data/note"),
    )
    .success();
    let writer = wait_pod_phase(&t, &pods, "writer", "Succeeded").await;
    // The pod ran in a sandbox of its own (its own network namespace and address).
    let status = writer.status.clone().unwrap();
    assert!(
        status.pod_ip.is_some() && status.pod_ip != status.host_ip,
        "not in an isolated sandbox: {status:?}"
    );
    // A reader whose claim volume is readOnly: reads, and cannot write.
    let reader = pod_yaml(
        "reader",
        "shared",
        "test \"$(cat /data/note)\" = sandboxed && ! touch /data/other",
    )
    .replace(
        "persistentVolumeClaim: {claimName: shared}",
        "persistentVolumeClaim: {claimName: shared, readOnly: true}",
    );
    t.kubectl_stdin(&["apply", "-f", "-"], &reader).success();
    wait_pod_phase(&t, &pods, "reader", "Succeeded").await;
    t.kubectl(&["delete", "pod", "writer", "reader", "--wait=true"])
        .success();
    t.kubectl(&["delete", "pvc", "shared", "--wait=true"])
        .success();
}

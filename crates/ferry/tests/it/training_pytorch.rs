//! Kubeflow `kubeflow.org/v1` PyTorchJobs on the embedded control plane with its node agent,
//! through the real kubectl and real processes: the upstream CRDs installed with
//! `kubectl create` and `kubectl apply --server-side`; a job's pods, headless Services,
//! environment, labels and PodGroup; a 1 master + 3 workers DistributedDataParallel job with
//! the real torch trained to a loss below the threshold; restart policies (Never, OnFailure
//! in place, ExitCode permanent and retryable); runPolicy (suspend and resume,
//! activeDeadlineSeconds, backoffLimit, cleanPodPolicy, ttlSecondsAfterFinished); a lost pod
//! restarting the whole gang; bad specs refused or failed with the field named; and
//! `kill -9` of one rank of an elastic torchrun job recovering in place.

use crate::common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{TestPlane, eventually};
use ferry_api::scheduling::{POD_GROUP_LABEL, PodGroup, QUEUE_LABEL, SURPLUS_ORDER_ANNOTATION};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use serde_json::{Value, json};

pub(crate) const WAIT: Duration = Duration::from_secs(180);
/// Debian's interpreter, the one with torch (the pyenv `python3` on PATH has none).
pub(crate) const PYTHON: &str = "/usr/bin/python3";

pub(crate) fn train_py() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/pytorch/train.py")
        .canonicalize()
        .expect("examples/pytorch/train.py")
        .display()
        .to_string()
}

fn resource() -> ApiResource {
    ApiResource {
        group: "kubeflow.org".into(),
        version: "v1".into(),
        api_version: "kubeflow.org/v1".into(),
        kind: "PyTorchJob".into(),
        plural: "pytorchjobs".into(),
    }
}

pub(crate) fn jobs(t: &TestPlane) -> Api<DynamicObject> {
    Api::namespaced_with(t.client.clone(), "default", &resource())
}

pub(crate) fn pods(t: &TestPlane) -> Api<Pod> {
    Api::namespaced(t.client.clone(), "default")
}

pub(crate) async fn job_pods(t: &TestPlane, job: &str) -> Vec<Pod> {
    pods(t)
        .list(&ListParams::default().labels(&format!("training.kubeflow.org/job-name={job}")))
        .await
        .unwrap()
        .items
}

/// The job's condition `type_` as (status, reason, message).
pub(crate) fn condition(job: &DynamicObject, type_: &str) -> Option<(String, String, String)> {
    job.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            (s("status"), s("reason"), s("message"))
        })
}

/// Waits until condition `type_` of job `name` is True; on a timeout, panics with the job
/// and its pods as the server has them.
pub(crate) async fn wait_condition(t: &TestPlane, name: &str, type_: &str) -> DynamicObject {
    let deadline = Instant::now() + WAIT;
    loop {
        let job = jobs(t).get(name).await.unwrap();
        if condition(&job, type_).is_some_and(|c| c.0 == "True") {
            return job;
        }
        if Instant::now() > deadline {
            let pods = t
                .kubectl(&[
                    "get",
                    "pods",
                    "-l",
                    &format!("training.kubeflow.org/job-name={name}"),
                    "-o",
                    "wide",
                ])
                .stdout;
            panic!(
                "timed out waiting for {type_} of {name}: {}\npods:\n{pods}",
                serde_json::to_string_pretty(&job.data["status"]).unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub(crate) fn apply(t: &TestPlane, manifest: &Value) {
    t.kubectl_stdin(&["apply", "-f", "-"], &manifest.to_string())
        .success();
}

pub(crate) fn container(command: &[&str]) -> Value {
    json!({"name": "pytorch", "command": command})
}

pub(crate) fn replica(n: i32, policy: &str, command: &[&str]) -> Value {
    json!({
        "replicas": n,
        "restartPolicy": policy,
        "template": {"spec": {"containers": [container(command)]}}
    })
}

pub(crate) fn pytorchjob(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    })
}

fn env_of(pod: &Pod, name: &str) -> Option<String> {
    pod.spec.as_ref()?.containers[0]
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value
        .clone()
}

/// A job's pods, Services, labels, environment, PodGroup and status, with small processes:
/// each worker resolves the master by the name in `MASTER_ADDR` and prints its rank.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pods_services_environment_podgroup_and_status() {
    if !common::sandbox_capable("pods_services_environment_podgroup_and_status") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    t.kubectl(&["create", "priorityclass", "train-high", "--value=1000"])
        .success();
    // Like a training script's rendezvous, it retries until the master's name resolves (its
    // record appears once the master pod has an address, which may come after the workers
    // start on a loaded machine).
    let script = "import os, socket, time\nfor _ in range(300):\n    try:\n        ip = socket.gethostbyname(os.environ['MASTER_ADDR'])\n        break\n    except OSError:\n        time.sleep(0.2)\nprint('rank', os.environ['RANK'], 'of', os.environ['WORLD_SIZE'], 'master', os.environ['MASTER_ADDR'], ip)";
    let cmd = ["/usr/bin/python3", "-c", script];
    apply(
        &t,
        &pytorchjob(
            "simple",
            json!({
                "runPolicy": {"schedulingPolicy": {"queue": "default", "priorityClass": "train-high"}},
                "pytorchReplicaSpecs": {
                    "Master": replica(1, "OnFailure", &["/bin/sh", "-c", "sleep 20; echo master done"]),
                    "Worker": replica(2, "OnFailure", &cmd),
                }
            }),
        ),
    );
    wait_condition(&t, "simple", "Succeeded").await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let job = loop {
        let job = jobs(&t).get("simple").await.unwrap();
        if job.data["status"]["replicaStatuses"]["Worker"]["succeeded"] == 2 {
            break job;
        }
        if Instant::now() > deadline {
            let pods = t.kubectl(&["get", "pods", "-o", "wide"]).stdout;
            let logs = t.kubectl(&["logs", "simple-worker-1"]);
            panic!(
                "workers not counted: {}\n{pods}\n{}{}",
                job.data["status"], logs.stdout, logs.stderr
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        condition(&job, "Created").map(|c| c.1).as_deref(),
        Some("PyTorchJobCreated")
    );
    let (status, reason, message) = condition(&job, "Succeeded").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("True", "PyTorchJobSucceeded")
    );
    assert!(
        message.contains("default/simple successfully completed"),
        "{message}"
    );
    assert_eq!(
        condition(&job, "Running").map(|c| c.0).as_deref(),
        Some("False")
    );
    assert!(job.data.pointer("/status/completionTime").is_some());
    let rs = &job.data["status"]["replicaStatuses"];
    assert_eq!(rs["Master"]["succeeded"], 1, "{rs}");
    assert_eq!(rs["Worker"]["succeeded"], 2, "{rs}");

    let all = job_pods(&t, "simple").await;
    let mut names: Vec<String> = all
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["simple-master-0", "simple-worker-0", "simple-worker-1"]
    );
    for p in &all {
        let name = p.metadata.name.as_deref().unwrap();
        let labels = p.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["training.kubeflow.org/job-name"], "simple");
        assert_eq!(labels[POD_GROUP_LABEL], "simple");
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(name));
        assert_eq!(spec.priority_class_name.as_deref(), Some("train-high"));
        assert_eq!(spec.restart_policy.as_deref(), Some("OnFailure"));
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("PyTorchJob", Some(true))
        );
        assert_eq!(env_of(p, "MASTER_ADDR").as_deref(), Some("simple-master-0"));
        assert_eq!(env_of(p, "MASTER_PORT").as_deref(), Some("23456"));
        assert_eq!(env_of(p, "WORLD_SIZE").as_deref(), Some("3"));
        assert_eq!(env_of(p, "PET_NNODES").as_deref(), Some("3"));
    }
    let worker1 = all
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("simple-worker-1"))
        .unwrap();
    let labels = worker1.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["training.kubeflow.org/replica-type"], "worker");
    assert_eq!(labels["training.kubeflow.org/replica-index"], "1");
    assert_eq!(env_of(worker1, "RANK").as_deref(), Some("2"));
    let master = all
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("simple-master-0"))
        .unwrap();
    assert_eq!(
        master.metadata.labels.as_ref().unwrap()["training.kubeflow.org/job-role"],
        "master"
    );

    // The workers reached the master by its name.
    let logs = t.kubectl(&["logs", "simple-worker-1"]).success();
    let words: Vec<&str> = logs.split_whitespace().collect();
    assert_eq!(
        words[..6],
        ["rank", "2", "of", "3", "master", "simple-master-0"],
        "{logs}"
    );
    let ip: std::net::Ipv4Addr = words[6].parse().expect("the master's address");
    assert!(t.network.pod_cidr.contains(ip), "{ip} is a pod address");

    let services: Api<Service> = Api::namespaced(t.client.clone(), "default");
    for name in &names {
        let svc = services.get(name).await.unwrap();
        let spec = svc.spec.unwrap();
        assert_eq!(
            spec.cluster_ip.as_deref(),
            Some("None"),
            "{name} is headless"
        );
        assert_eq!(spec.ports.unwrap()[0].port, 23456);
    }
    // The PodGroup was the job's gang and went when it finished.
    let pgs: Api<PodGroup> = Api::namespaced(t.client.clone(), "default");
    eventually(
        "the PodGroup to go once the job finished",
        WAIT,
        async || pgs.get_opt("simple").await.unwrap().is_none().then_some(()),
    )
    .await;
}

/// The job's PodGroup while it waits: minMember, queue label, minResources, ownerRef; and an
/// elastic job's max workers with their surplus order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn podgroup_of_a_gang_and_of_an_elastic_job() {
    let t = common::start().await;
    apply(
        &t,
        &pytorchjob(
            "gang",
            json!({
                "runPolicy": {"schedulingPolicy": {"queue": "team-a", "minAvailable": 3,
                    "minResources": {"cpu": "3"}}},
                "pytorchReplicaSpecs": {
                    "Master": replica(1, "OnFailure", &["true"]),
                    "Worker": replica(3, "OnFailure", &["true"]),
                }
            }),
        ),
    );
    let pgs: Api<PodGroup> = Api::namespaced(t.client.clone(), "default");
    let pg = eventually("the gang's PodGroup", WAIT, async || {
        pgs.get_opt("gang").await.unwrap()
    })
    .await;
    assert_eq!(pg.spec.min_member, 3);
    assert_eq!(pg.metadata.labels.as_ref().unwrap()[QUEUE_LABEL], "team-a");
    assert_eq!(
        serde_json::to_value(&pg.spec.min_resources).unwrap(),
        json!({"cpu": "3"})
    );
    assert_eq!(pg.metadata.owner_references.unwrap()[0].kind, "PyTorchJob");
    eventually("4 pods", WAIT, async || {
        (job_pods(&t, "gang").await.len() == 4).then_some(())
    })
    .await;

    apply(
        &t,
        &pytorchjob(
            "elastic",
            json!({
                "elasticPolicy": {"minReplicas": 2, "maxReplicas": 4, "rdzvBackend": "c10d"},
                "pytorchReplicaSpecs": {"Worker": replica(2, "OnFailure", &["true"])}
            }),
        ),
    );
    let pg = eventually("the elastic job's PodGroup", WAIT, async || {
        pgs.get_opt("elastic").await.unwrap()
    })
    .await;
    assert_eq!(pg.spec.min_member, 2);
    let pods = eventually("4 elastic workers", WAIT, async || {
        let p = job_pods(&t, "elastic").await;
        (p.len() == 4).then_some(p)
    })
    .await;
    for p in &pods {
        let name = p.metadata.name.as_deref().unwrap();
        let index: i32 = name.rsplit('-').next().unwrap().parse().unwrap();
        let order = &p.metadata.annotations.as_ref().unwrap()[SURPLUS_ORDER_ANNOTATION];
        assert_eq!(order, &(index + 1).to_string(), "{name}");
        assert_eq!(env_of(p, "PET_NNODES").as_deref(), Some("2:4"));
        assert_eq!(
            env_of(p, "PET_RDZV_ENDPOINT").as_deref(),
            Some("elastic-worker-0:23456")
        );
    }
}

/// 1 master + 3 workers: DistributedDataParallel over gloo with the real torch, each rank
/// one pod, to a loss below the threshold and Succeeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddp_master_and_three_workers_train_to_succeeded() {
    if !common::sandbox_capable("ddp_master_and_three_workers_train_to_succeeded") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let train = train_py();
    let cmd = [
        PYTHON,
        train.as_str(),
        "--steps",
        "60",
        "--target-loss",
        "0.1",
    ];
    apply(
        &t,
        &pytorchjob(
            "ddp",
            json!({
                "pytorchReplicaSpecs": {
                    "Master": replica(1, "OnFailure", &cmd),
                    "Worker": replica(3, "OnFailure", &cmd),
                }
            }),
        ),
    );
    let started = Instant::now();
    wait_condition(&t, "ddp", "Succeeded").await;
    println!("ddp: 4 ranks trained 60 steps in {:?}", started.elapsed());
    // The master decides success; the workers may end a moment after it, and the status
    // follows the pods as observed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = jobs(&t).get("ddp").await.unwrap();
        let rs = job.data["status"]["replicaStatuses"].clone();
        if rs["Master"]["succeeded"] == 1 && rs["Worker"]["succeeded"] == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicaStatuses never showed every rank succeeded: {rs}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for pod in [
        "ddp-master-0",
        "ddp-worker-0",
        "ddp-worker-1",
        "ddp-worker-2",
    ] {
        let logs = t.kubectl(&["logs", pod]).success();
        assert!(logs.contains("world=4"), "{pod}: {logs}");
        let done = logs
            .lines()
            .find_map(|l| l.strip_prefix("done steps=60 loss="))
            .unwrap_or_else(|| panic!("{pod} did not finish: {logs}"));
        let loss: f64 = done.trim().parse().unwrap();
        println!("{pod}: final loss {loss}");
        assert!(loss < 0.1, "{pod}: loss {loss}");
    }
    let master = t.kubectl(&["logs", "ddp-master-0"]).success();
    assert!(master.contains("rank=0"), "{master}");
}

/// A hostPath volume `/mark` on directory `dir` (for processes that behave differently on
/// their second run).
fn with_mark(mut replica: Value, dir: &str) -> Value {
    replica["template"]["spec"]["volumes"] = json!([{"name": "mark", "hostPath": {"path": dir}}]);
    replica["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "mark", "mountPath": "/mark"}]);
    replica
}

/// `sh -c` that exits `first` on its first run and 0 after.
fn fail_once(first: i32) -> String {
    format!(
        "m=/mark/$(cat /etc/hostname); if [ -e $m ]; then echo again; exit 0; fi; touch $m; echo first; exit {first}"
    )
}

pub(crate) fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap()
}

/// Never fails the job; ExitCode fails it on a permanent code and recreates the pod on a
/// retryable one; OnFailure restarts the container in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restart_policies() {
    if !common::sandbox_capable("restart_policies") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let dir = t.dir.path().join("marks");
    std::fs::create_dir_all(&dir).unwrap();
    let dir = dir.display().to_string();
    let sleep = ["/bin/sh", "-c", "sleep 300"];
    apply(
        &t,
        &pytorchjob(
            "never",
            json!({"pytorchReplicaSpecs": {
                "Master": replica(1, "Never", &sleep),
                "Worker": replica(1, "Never", &["/bin/sh", "-c", "exit 3"]),
            }}),
        ),
    );
    apply(
        &t,
        &pytorchjob(
            "permanent",
            json!({"pytorchReplicaSpecs": {
                "Worker": replica(1, "ExitCode", &["/bin/sh", "-c", "exit 1"]),
            }}),
        ),
    );
    let once = fail_once(137);
    apply(
        &t,
        &pytorchjob(
            "retryable",
            json!({"pytorchReplicaSpecs": {
                "Worker": with_mark(replica(1, "ExitCode", &["/bin/sh", "-c", &once]), &dir),
            }}),
        ),
    );
    let once = fail_once(1);
    apply(
        &t,
        &pytorchjob(
            "inplace",
            json!({"pytorchReplicaSpecs": {
                "Worker": with_mark(replica(1, "OnFailure", &["/bin/sh", "-c", &once]), &dir),
            }}),
        ),
    );

    let job = wait_condition(&t, "never", "Failed").await;
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "PyTorchJobFailed");
    assert!(message.contains("pod never-worker-0 failed"), "{message}");
    // The master, still running, was stopped with the job.
    eventually("the master of the failed job to go", WAIT, async || {
        job_pods(&t, "never")
            .await
            .iter()
            .all(|p| {
                p.metadata.name.as_deref() != Some("never-master-0")
                    || p.metadata.deletion_timestamp.is_some()
            })
            .then_some(())
    })
    .await;

    let job = wait_condition(&t, "permanent", "Failed").await;
    let message = condition(&job, "Failed").unwrap().2;
    assert!(
        message.contains("exited with code 1 (a permanent error)"),
        "{message}"
    );

    let job = wait_condition(&t, "retryable", "Succeeded").await;
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["training.ferry.dev/restarts"],
        "1"
    );
    assert_eq!(
        t.kubectl(&["logs", "retryable-worker-0"]).success().trim(),
        "again"
    );

    let job = wait_condition(&t, "inplace", "Succeeded").await;
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("training.ferry.dev/restarts")),
        "in-place restarts are the agent's"
    );
    let pod = pods(&t).get("inplace-worker-0").await.unwrap();
    let restarts = pod.status.unwrap().container_statuses.unwrap()[0].restart_count;
    assert_eq!(restarts, 1, "the container restarted in its pod");
}

/// suspend and resume, activeDeadlineSeconds, backoffLimit over in-place restarts,
/// cleanPodPolicy All with ttlSecondsAfterFinished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_policy() {
    if !common::sandbox_capable("run_policy") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let quick = ["/bin/sh", "-c", "sleep 1"];
    apply(
        &t,
        &pytorchjob(
            "suspended",
            json!({"runPolicy": {"suspend": true},
                "pytorchReplicaSpecs": {"Worker": replica(2, "OnFailure", &quick)}}),
        ),
    );
    apply(
        &t,
        &pytorchjob(
            "deadline",
            json!({"runPolicy": {"activeDeadlineSeconds": 3},
                "pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &["/bin/sh", "-c", "sleep 300"])}}),
        ),
    );
    apply(
        &t,
        &pytorchjob(
            "crashing",
            json!({"runPolicy": {"backoffLimit": 1},
                "pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &["/bin/sh", "-c", "exit 2"])}}),
        ),
    );

    apply(
        &t,
        &pytorchjob(
            "cleaned",
            json!({"runPolicy": {"cleanPodPolicy": "All", "ttlSecondsAfterFinished": 8},
                "pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &quick)}}),
        ),
    );
    wait_condition(&t, "cleaned", "Succeeded").await;
    eventually(
        "cleanPodPolicy All to delete the pods and Services",
        WAIT,
        async || {
            let services: Api<Service> = Api::namespaced(t.client.clone(), "default");
            (job_pods(&t, "cleaned").await.is_empty()
                && services
                    .get_opt("cleaned-worker-0")
                    .await
                    .unwrap()
                    .is_none())
            .then_some(())
        },
    )
    .await;
    eventually(
        "ttlSecondsAfterFinished to delete the job",
        WAIT,
        async || {
            jobs(&t)
                .get_opt("cleaned")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;

    let job = wait_condition(&t, "suspended", "Suspended").await;
    assert_eq!(
        condition(&job, "Suspended").unwrap().1,
        "PyTorchJobSuspended"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        job_pods(&t, "suspended").await.is_empty(),
        "a suspended job has no pods"
    );
    t.kubectl(&[
        "patch",
        "pytorchjob",
        "suspended",
        "--type=merge",
        "-p",
        r#"{"spec":{"runPolicy":{"suspend":false}}}"#,
    ])
    .success();
    let job = wait_condition(&t, "suspended", "Succeeded").await;
    let (status, reason, _) = condition(&job, "Suspended").unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PyTorchJobResumed")
    );

    let job = wait_condition(&t, "deadline", "Failed").await;
    let (_, reason, message) = condition(&job, "Failed").unwrap();
    assert_eq!(reason, "DeadlineExceeded");
    assert!(
        message.contains("active longer than specified deadline"),
        "{message}"
    );

    let job = wait_condition(&t, "crashing", "Failed").await;
    let message = condition(&job, "Failed").unwrap().2;
    assert!(
        message.contains("reached the specified backoff limit"),
        "{message}"
    );
}

/// A pod of a running non-elastic job deleted by someone else: the whole gang restarts
/// (every pod recreated), counted against backoffLimit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lost_pod_restarts_the_gang_within_backoff_limit() {
    if !common::sandbox_capable("lost_pod_restarts_the_gang_within_backoff_limit") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let sleep = ["/bin/sh", "-c", "sleep 300"];
    apply(
        &t,
        &pytorchjob(
            "gang",
            json!({"runPolicy": {"backoffLimit": 1},
                "pytorchReplicaSpecs": {
                "Master": replica(1, "OnFailure", &sleep),
                "Worker": replica(2, "OnFailure", &sleep),
            }}),
        ),
    );
    wait_condition(&t, "gang", "Running").await;
    let before: Vec<String> = job_pods(&t, "gang").await.iter().map(uid).collect();
    assert_eq!(before.len(), 3);
    t.kubectl(&["delete", "pod", "gang-worker-1", "--wait=false"])
        .success();
    let job = wait_condition(&t, "gang", "Restarting").await;
    let message = condition(&job, "Restarting").unwrap().2;
    assert!(
        message.contains("pod gang-worker-1 was deleted"),
        "{message}"
    );
    let job = wait_condition(&t, "gang", "Running").await;
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()["training.ferry.dev/restarts"],
        "1"
    );
    let after = job_pods(&t, "gang").await;
    assert_eq!(after.len(), 3);
    for p in &after {
        assert!(
            !before.contains(&uid(p)),
            "{} was recreated",
            p.metadata.name.as_deref().unwrap()
        );
    }
    // A second loss is one restart more than backoffLimit allows.
    t.kubectl(&["delete", "pod", "gang-master-0", "--wait=false"])
        .success();
    let job = wait_condition(&t, "gang", "Failed").await;
    let message = condition(&job, "Failed").unwrap().2;
    assert!(message.contains("backoff limit"), "{message}");
}

/// Bad input: what the schema refuses is rejected by the API server (422, the field
/// named); what only the controller can judge fails the job with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_specs_are_rejected_or_failed_with_the_field() {
    let t = common::start().await;
    let mut bad = pytorchjob(
        "typed",
        json!({"pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &["true"])}}),
    );
    bad["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] = json!("two");
    let err = t
        .kubectl_stdin(&["apply", "-f", "-"], &bad.to_string())
        .failure();
    assert!(
        err.contains("replicas") && err.contains("Invalid value"),
        "{err}"
    );

    for (name, spec, field) in [
        (
            "chief",
            json!({"pytorchReplicaSpecs": {"Chief": replica(1, "OnFailure", &["true"])}}),
            "Unsupported value: \"Chief\"",
        ),
        (
            "masters",
            json!({"pytorchReplicaSpecs": {"Master": replica(2, "OnFailure", &["true"])}}),
            "spec.pytorchReplicaSpecs[Master].replicas",
        ),
        (
            "elastic",
            json!({"elasticPolicy": {"minReplicas": 3, "maxReplicas": 2},
                "pytorchReplicaSpecs": {"Worker": replica(2, "OnFailure", &["true"])}}),
            "spec.elasticPolicy.maxReplicas",
        ),
        (
            "nocontainer",
            json!({"pytorchReplicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": []}}}}}),
            "spec.pytorchReplicaSpecs[Worker].template.spec.containers: Required value",
        ),
        (
            "clean",
            json!({"runPolicy": {"cleanPodPolicy": "Sometimes"},
                "pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &["true"])}}),
            "spec.runPolicy.cleanPodPolicy: Unsupported value",
        ),
    ] {
        let out = t.kubectl_stdin(&["apply", "-f", "-"], &pytorchjob(name, spec).to_string());
        if !out.ok {
            // The schema may refuse it first: that is a clear rejection too.
            assert!(
                out.stderr.contains("Invalid value") || out.stderr.contains("Unsupported value"),
                "{name}: {}",
                out.stderr
            );
            continue;
        }
        let job = wait_condition(&t, name, "Failed").await;
        let (_, reason, message) = condition(&job, "Failed").unwrap();
        assert_eq!(reason, "PyTorchJobFailedValidation", "{name}");
        assert!(message.contains(field), "{name}: {message}");
        assert!(job_pods(&t, name).await.is_empty(), "{name} made no pods");
    }
}

fn upstream_crd(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/crds/upstream")
        .join(file)
        .display()
        .to_string()
}

/// The real upstream CRDs (~600 KB each) install with `kubectl create -f` and
/// `kubectl apply --server-side -f` on a plane that does not have them, and serve jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upstream_crds_install_with_kubectl_create_and_server_side_apply() {
    let t = common::start().await;
    for crd in ["pytorchjobs.kubeflow.org", "tfjobs.kubeflow.org"] {
        t.kubectl(&["delete", "crd", crd]).success();
    }
    eventually("the CRDs to go", WAIT, async || {
        (!t.kubectl(&["get", "crd", "pytorchjobs.kubeflow.org"]).ok
            && !t.kubectl(&["get", "crd", "tfjobs.kubeflow.org"]).ok)
            .then_some(())
    })
    .await;
    let started = Instant::now();
    t.kubectl(&[
        "create",
        "-f",
        &upstream_crd("kubeflow.org_pytorchjobs.yaml"),
    ])
    .success();
    println!("kubectl create -f pytorchjobs CRD: {:?}", started.elapsed());
    let started = Instant::now();
    t.kubectl(&[
        "apply",
        "--server-side",
        "-f",
        &upstream_crd("kubeflow.org_tfjobs.yaml"),
    ])
    .success();
    println!(
        "kubectl apply --server-side -f tfjobs CRD: {:?}",
        started.elapsed()
    );
    // Again over all of them, the ones `ferry up` installed included: no conflict.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds/upstream");
    let started = Instant::now();
    let out = t
        .kubectl(&["apply", "--server-side", "-f", &dir.display().to_string()])
        .success();
    println!(
        "kubectl apply --server-side -f deploy/crds/upstream: {:?}\n{out}",
        started.elapsed()
    );
    for crd in ["pytorchjobs.kubeflow.org", "tfjobs.kubeflow.org"] {
        t.kubectl(&[
            "wait",
            "--for=condition=Established",
            &format!("crd/{crd}"),
            "--timeout=60s",
        ])
        .success();
    }
    apply(
        &t,
        &pytorchjob(
            "after",
            json!({"pytorchReplicaSpecs": {"Worker": replica(1, "OnFailure", &["true"])}}),
        ),
    );
    let out = t.kubectl(&["get", "pytorchjobs"]).success();
    assert!(out.contains("after"), "{out}");
    wait_condition(&t, "after", "Created").await;
    let explain = t.kubectl(&["explain", "pytorchjob.spec.runPolicy.cleanPodPolicy"]);
    assert!(explain.ok, "{}", explain.stderr);
}

/// The command of a process, from /proc.
fn proc_file(pid: &str, file: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

/// Finds a training process (a rank torchrun started, not torchrun itself) whose command
/// names `marker` and whose environment has `RANK=<rank>`.
fn rank_process(marker: &str, rank: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&proc_file(&pid, "cmdline")).replace('\0', " ");
        if !cmdline.contains(marker) || cmdline.contains("torch.distributed.run") {
            continue;
        }
        let environ = proc_file(&pid, "environ");
        let vars: Vec<&[u8]> = environ.split(|b| *b == 0).collect();
        if vars.contains(&format!("RANK={rank}").as_bytes())
            && vars.iter().any(|v| v.starts_with(b"TORCHELASTIC_RUN_ID="))
        {
            return pid.parse().ok();
        }
    }
    None
}

/// `kill -9` of one rank's process of an elastic torchrun PyTorchJob: torchrun restarts its
/// workers in place (no pod or container is replaced), the group re-forms, training resumes
/// from the checkpoint and the job succeeds. Prints the time from the kill to steps advancing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_a_rank_recovers_in_place() {
    if !common::sandbox_capable("kill_9_of_a_rank_recovers_in_place") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let ckpt = t.dir.path().join("ckpt-kill9");
    std::fs::create_dir_all(&ckpt).unwrap();
    let ckpt = ckpt.display().to_string();
    let train = train_py();
    let cmd = [
        PYTHON,
        "-m",
        "torch.distributed.run",
        "--redirects",
        "1",
        "--tee",
        "1",
        train.as_str(),
        "--steps",
        "80",
        "--step-seconds",
        "0.25",
        "--checkpoint-dir",
        &ckpt,
    ];
    let mut worker = replica(2, "OnFailure", &cmd);
    worker["template"]["spec"]["volumes"] = json!([{"name": "ckpt", "hostPath": {"path": ckpt}}]);
    worker["template"]["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "ckpt", "mountPath": ckpt}]);
    apply(
        &t,
        &pytorchjob(
            "elastic",
            json!({
                "nprocPerNode": "1",
                "elasticPolicy": {"minReplicas": 2, "maxReplicas": 2, "rdzvBackend": "c10d", "maxRestarts": 3},
                "pytorchReplicaSpecs": {"Worker": worker}
            }),
        ),
    );
    let logs = |pod: &str| t.kubectl(&["logs", pod]).stdout;
    let steps = |text: &str| {
        text.lines()
            .filter(|l| l.contains("step=") && !l.contains("resumed"))
            .count()
    };
    eventually("training steps 10 on both ranks", WAIT, async || {
        (steps(&logs("elastic-worker-0")) >= 10 && steps(&logs("elastic-worker-1")) >= 10)
            .then_some(())
    })
    .await;
    let before: Vec<String> = job_pods(&t, "elastic").await.iter().map(uid).collect();
    let pid = rank_process(&ckpt, 1).expect("the process of rank 1");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    // Steps advance again once the re-formed group trains on from the checkpoint.
    let (pod, resumed) = eventually("steps after the group re-formed", WAIT, async || {
        for pod in ["elastic-worker-0", "elastic-worker-1"] {
            let text = logs(pod);
            let Some(at) = text.find("resumed step=") else {
                continue;
            };
            if text[at..].lines().skip(1).any(|l| l.contains("step=")) {
                let line = text[at..].lines().next().unwrap().to_string();
                return Some((pod, line));
            }
        }
        None
    })
    .await;
    let recovery = killed.elapsed();
    println!(
        "kill -9 of rank 1 (pid {pid}) to steps advancing again on {pod}: {recovery:?} ({resumed})"
    );
    let job = wait_condition(&t, "elastic", "Succeeded").await;
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .is_none_or(|a| !a.contains_key("training.ferry.dev/restarts")),
        "no pod was recreated"
    );
    let after = job_pods(&t, "elastic").await;
    assert_eq!(
        after.iter().map(uid).collect::<Vec<_>>(),
        before,
        "the same pods ran throughout"
    );
    let text = logs("elastic-worker-0") + &logs("elastic-worker-1");
    assert!(text.contains("done steps=80"), "{text}");
}

//! JobSet (`jobset.x-k8s.io/v1alpha2`) and Kubeflow Trainer v2's TrainJob against the embedded
//! control plane and its node agent, with the real kubectl: a JobSet's Jobs, headless Service,
//! PodGroup and pod DNS names (`<jobset>-<rjob>-<job>-<pod>.<subdomain>`, resolved by the pods
//! themselves), successPolicy, failurePolicy restarts and rules, startupPolicy InOrder, suspend
//! and resume, an unsupported field failing with its name; and a TrainJob through the
//! `torch-distributed` ClusterTrainingRuntime that `ferry up` installs, training with the real
//! torch (`examples/pytorch/train.py` under torchrun) to Succeeded.

use crate::common;

use std::time::Duration;

use common::eventually;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(180);
const PY: &str = "/usr/bin/python3";

fn jobsets(t: &common::TestPlane) -> Api<DynamicObject> {
    Api::namespaced_with(
        t.client.clone(),
        "default",
        &ferry_training::jobset::api_resource(),
    )
}

fn apply(t: &common::TestPlane, obj: &Value) {
    t.kubectl_stdin(&["apply", "-f", "-"], &obj.to_string())
        .success();
}

/// The JobSet's condition `type_` when it is True: (reason, message).
fn condition_true(js: &DynamicObject, type_: &str) -> Option<(String, String)> {
    js.data
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
        .map(|c| {
            (
                c["reason"].as_str().unwrap_or_default().to_string(),
                c["message"].as_str().unwrap_or_default().to_string(),
            )
        })
}

async fn wait_condition(
    t: &common::TestPlane,
    name: &str,
    type_: &str,
) -> (DynamicObject, String, String) {
    let api = jobsets(t);
    eventually(&format!("JobSet {name} {type_}"), WAIT, async || {
        let js = api.get(name).await.ok()?;
        condition_true(&js, type_).map(|(r, m)| (js, r, m))
    })
    .await
}

fn rjob_status(js: &DynamicObject, rjob: &str, field: &str) -> i64 {
    js.data
        .pointer("/status/replicatedJobsStatus")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|s| s["name"] == rjob))
        .and_then(|s| s[field].as_i64())
        .unwrap_or(-1)
}

fn pod_template(script: &str) -> Value {
    json!({"spec": {"containers": [{"name": "main", "command": [PY, "-c", script]}]}})
}

/// Leader and workers that reach each other by the names JobSet promises, then succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobset_runs_jobs_with_pod_dns_gang_and_status() {
    if !common::sandbox_capable("jobset_runs_jobs_with_pod_dns_gang_and_status") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    // Every pod resolves every other pod's stable name (retrying while DNS catches up).
    let names = [
        "js-leader-0-0",
        "js-workers-0-0",
        "js-workers-0-1",
        "js-workers-1-0",
        "js-workers-1-1",
    ];
    let script = format!(
        "import socket,time,os\n\
         names={names:?}\n\
         deadline=time.time()+60\n\
         for n in names:\n\
         \x20   while True:\n\
         \x20       try:\n\
         \x20           print(n, socket.gethostbyname(n + '.js'), flush=True); break\n\
         \x20       except OSError:\n\
         \x20           if time.time() > deadline: raise\n\
         \x20           time.sleep(0.2)\n\
         print('index', os.environ['JOB_COMPLETION_INDEX'], 'host', socket.gethostname(), flush=True)\n\
         time.sleep(5)\n"
    );
    apply(
        &t,
        &json!({
            "apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": "js"},
            "spec": {
                "replicatedJobs": [
                    {"name": "leader", "replicas": 1, "template": {"spec": {
                        "parallelism": 1, "completions": 1, "backoffLimit": 0,
                        "template": pod_template(&script)}}},
                    {"name": "workers", "replicas": 2, "template": {"spec": {
                        "parallelism": 2, "completions": 2, "backoffLimit": 0,
                        "template": pod_template(&script)}}},
                ],
                "coordinator": {"replicatedJob": "leader"},
            }
        }),
    );
    let (js, reason, _) = wait_condition(&t, "js", "Completed").await;
    assert_eq!(reason, "AllJobsCompleted");
    assert_eq!(js.data["status"]["terminalState"], "Completed");
    assert_eq!(rjob_status(&js, "leader", "succeeded"), 1);
    assert_eq!(rjob_status(&js, "workers", "succeeded"), 2);
    assert_eq!(js.data["status"]["restarts"], 0);

    let jobs: Api<Job> = Api::namespaced(t.client.clone(), "default");
    let mut names_seen: Vec<String> = jobs
        .list(&ListParams::default().labels("jobset.sigs.k8s.io/jobset-name=js"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|j| j.metadata.name.clone().unwrap())
        .collect();
    names_seen.sort();
    assert_eq!(names_seen, ["js-leader-0", "js-workers-0", "js-workers-1"]);
    let svc: Service = Api::namespaced(t.client.clone(), "default")
        .get("js")
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
    assert_eq!(spec.publish_not_ready_addresses, Some(true));
    let pg = t
        .kubectl(&["get", "podgroup", "js", "-o", "jsonpath={.spec.minMember}"])
        .success();
    assert_eq!(pg.trim(), "5", "one gang of all 5 pods");

    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let pods = pods
        .list(&ListParams::default().labels("jobset.sigs.k8s.io/jobset-name=js"))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 5);
    for p in &pods {
        let name = p.metadata.name.clone().unwrap();
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels["scheduling.x-k8s.io/pod-group"], "js");
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()["jobset.sigs.k8s.io/coordinator"],
            "js-leader-0-0.js"
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.subdomain.as_deref(), Some("js"));
        let logs = t.kubectl(&["logs", &name]).success();
        for n in names {
            assert!(
                logs.contains(&format!("{n} 10.")),
                "{name} resolved {n}: {logs}"
            );
        }
        let host = spec.hostname.clone().unwrap();
        assert!(logs.contains(&format!("host {host}")), "{logs}");
        println!("{name}: {}", logs.lines().last().unwrap_or_default());
    }
    // kubectl lists the JobSet with the upstream printer columns.
    let table = t.kubectl(&["get", "jobsets"]).success();
    assert!(table.contains("js"), "{table}");
}

/// failurePolicy: a failed Job restarts the whole JobSet within maxRestarts (the pods see
/// their attempt), a FailJobSet rule fails it at once, maxRestarts ends it; Any succeeds on
/// one Job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobset_failure_and_success_policies() {
    if !common::sandbox_capable("jobset_failure_and_success_policies") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    // Fails on attempt 0, succeeds on attempt 1.
    let flaky = json!({"metadata": {}, "spec": {"containers": [{"name": "main",
        "command": [PY, "-c", "import os,sys; a=os.environ['ATTEMPT']; print('attempt', a); sys.exit(0 if a != '0' else 3)"],
        "env": [{"name": "ATTEMPT", "valueFrom": {"fieldRef": {"fieldPath":
            "metadata.labels['jobset.sigs.k8s.io/restart-attempt']"}}}]}],
        "restartPolicy": "Never"}});
    let fail = pod_template("import sys; sys.exit(4)");
    let ok = pod_template("print('ok')");
    let sleeper = pod_template("import time; time.sleep(300)");
    let job = |tpl: &Value| json!({"spec": {"backoffLimit": 0, "template": tpl}});
    let mut fail_never = fail.clone();
    fail_never["spec"]["restartPolicy"] = json!("Never");
    for (name, rjobs, policies) in [
        (
            "restarts",
            json!([{"name": "w", "replicas": 2, "template": job(&flaky)}]),
            json!({"failurePolicy": {"maxRestarts": 2}}),
        ),
        (
            "fatal",
            json!([{"name": "w", "template": job(&fail_never)}]),
            json!({"failurePolicy": {"maxRestarts": 5, "rules": [
                {"name": "stop", "action": "FailJobSet", "onJobFailureReasons": ["BackoffLimitExceeded"]}]}}),
        ),
        (
            "exhausted",
            json!([{"name": "w", "template": job(&fail_never)}]),
            json!({"failurePolicy": {"maxRestarts": 1}}),
        ),
        (
            "nopolicy",
            json!([{"name": "w", "template": job(&fail_never)}]),
            json!({}),
        ),
        (
            "any",
            json!([{"name": "driver", "template": job(&ok)}, {"name": "server", "template": job(&sleeper)}]),
            json!({"successPolicy": {"operator": "Any", "targetReplicatedJobs": ["driver"]}}),
        ),
    ] {
        let mut spec = policies.clone();
        spec["replicatedJobs"] = rjobs;
        apply(
            &t,
            &json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
            "metadata": {"name": name}, "spec": spec}),
        );
    }
    let (js, reason, _) = wait_condition(&t, "restarts", "Completed").await;
    assert_eq!(reason, "AllJobsCompleted");
    assert_eq!(
        js.data["status"]["restarts"], 1,
        "one restart: {:?}",
        js.data["status"]
    );
    let logs = t
        .kubectl(&["logs", "-l", "jobset.sigs.k8s.io/jobset-name=restarts"])
        .success();
    assert!(logs.contains("attempt 1"), "{logs}");

    let (js, reason, message) = wait_condition(&t, "fatal", "Failed").await;
    assert_eq!(reason, "FailJobSetFailurePolicyAction", "{message}");
    assert_eq!(js.data["status"]["restarts"], 0);
    assert_eq!(js.data["status"]["terminalState"], "Failed");

    let (js, reason, message) = wait_condition(&t, "exhausted", "Failed").await;
    assert_eq!(reason, "ReachedMaxRestarts");
    assert_eq!(
        message,
        "jobset failed due to reaching max number of restarts"
    );
    assert_eq!(js.data["status"]["restarts"], 1);

    let (_, reason, _) = wait_condition(&t, "nopolicy", "Failed").await;
    assert_eq!(reason, "FailedJobs");

    let (_, reason, _) = wait_condition(&t, "any", "Completed").await;
    assert_eq!(reason, "AllJobsCompleted");
    // The server Job, still running when the driver succeeded, is deleted.
    let jobs: Api<Job> = Api::namespaced(t.client.clone(), "default");
    eventually("the any JobSet's server Job deleted", WAIT, async || {
        jobs.get_opt("any-server-0")
            .await
            .ok()?
            .is_none_or(|j| j.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
}

/// startupPolicy InOrder, suspend and resume, and an unsupported field.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobset_startup_order_suspend_and_unsupported_fields() {
    if !common::sandbox_capable("jobset_startup_order_suspend_and_unsupported_fields") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let jobs: Api<Job> = Api::namespaced(t.client.clone(), "default");
    apply(
        &t,
        &json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "ordered"},
        "spec": {"startupPolicy": {"startupPolicyOrder": "InOrder"}, "replicatedJobs": [
            {"name": "first", "template": {"spec": {"template":
                pod_template("import time; print('first up', flush=True); time.sleep(4)")}}},
            {"name": "second", "template": {"spec": {"template": pod_template("print('second')")}}},
        ]}}),
    );
    // The second Job does not exist before the first one's pod is ready.
    let first = eventually("ordered-first-0 ready", WAIT, async || {
        // Read the second first: if it exists, the first was ready before it was made.
        let second = jobs.get_opt("ordered-second-0").await.ok()?;
        let j = jobs.get_opt("ordered-first-0").await.ok()??;
        let st = j.status.clone().unwrap_or_default();
        if st.ready.unwrap_or(0) + st.succeeded.unwrap_or(0) == 0 {
            assert!(second.is_none(), "second created before first was ready");
            return None;
        }
        Some(j)
    })
    .await;
    assert!(first.metadata.creation_timestamp.is_some());
    let (js, _, _) = wait_condition(&t, "ordered", "StartupPolicyCompleted").await;
    assert!(condition_true(&js, "StartupPolicyInProgress").is_none());
    let second = jobs.get("ordered-second-0").await.unwrap();
    assert!(
        second.metadata.creation_timestamp.as_ref().unwrap().0
            >= first.metadata.creation_timestamp.as_ref().unwrap().0
    );
    wait_condition(&t, "ordered", "Completed").await;

    // Suspended: Jobs exist, suspended, no pods; resumed: runs to Completed.
    apply(
        &t,
        &json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "held"},
        "spec": {"suspend": true, "replicatedJobs": [
            {"name": "w", "replicas": 2, "template": {"spec": {"template": pod_template("print('ran')")}}}]}}),
    );
    let (js, reason, _) = wait_condition(&t, "held", "Suspended").await;
    assert_eq!(reason, "SuspendedJobs");
    eventually("held's Jobs suspended", WAIT, async || {
        let js = jobsets(&t).get("held").await.ok()?;
        (rjob_status(&js, "w", "suspended") == 2).then_some(())
    })
    .await;
    let _ = js;
    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = pods
        .list(&ListParams::default().labels("jobset.sigs.k8s.io/jobset-name=held"))
        .await
        .unwrap()
        .items;
    assert!(running.is_empty(), "a suspended JobSet runs no pod");
    t.kubectl(&[
        "patch",
        "jobset",
        "held",
        "--type=merge",
        "-p",
        r#"{"spec":{"suspend":false}}"#,
    ])
    .success();
    let (js, _, _) = wait_condition(&t, "held", "Completed").await;
    let suspended = js.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Suspended")
        .cloned()
        .unwrap();
    assert_eq!(suspended["status"], "False");
    assert_eq!(suspended["reason"], "ResumeJobs");

    // What Ferry does not implement fails the JobSet with its name, and creates nothing.
    apply(
        &t,
        &json!({"apiVersion": "jobset.x-k8s.io/v1alpha2", "kind": "JobSet",
        "metadata": {"name": "deps"},
        "spec": {"replicatedJobs": [
            {"name": "a", "template": {"spec": {"template": pod_template("print(1)")}}},
            {"name": "b", "dependsOn": [{"name": "a", "status": "Ready"}],
             "template": {"spec": {"template": pod_template("print(2)")}}}]}}),
    );
    let (_, reason, message) = wait_condition(&t, "deps", "Failed").await;
    assert_eq!(reason, "ValidationFailed");
    assert!(
        message.contains("spec.replicatedJobs[1].dependsOn is not supported"),
        "{message}"
    );
    assert!(jobs.get_opt("deps-a-0").await.unwrap().is_none());
}

/// The standard `torch-distributed` runtime, installed by `ferry up`, runs a TrainJob of 2
/// nodes: torchrun on each from the `PET_*` environment, DDP with the real torch to a loss
/// below the script's target, the TrainJob Complete. A TrainJob setting a reserved variable
/// fails with upstream's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trainjob_through_torch_distributed_trains_with_real_torch() {
    if !common::sandbox_capable("trainjob_through_torch_distributed_trains_with_real_torch") {
        return;
    }
    let t = common::start_with_node("1xT4").await;
    let runtime = t
        .kubectl(&[
            "get",
            "clustertrainingruntime",
            "torch-distributed",
            "-o",
            "json",
        ])
        .success();
    let runtime: Value = serde_json::from_str(&runtime).unwrap();
    assert_eq!(runtime["spec"]["mlPolicy"]["torch"], json!({}));

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/pytorch/train.py"
    );
    apply(
        &t,
        &json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "ddp"},
            "spec": {
                "runtimeRef": {"name": "torch-distributed"},
                "trainer": {
                    "numNodes": 2,
                    "numProcPerNode": 1,
                    "command": [PY, "-m", "torch.distributed.run", "--redirects", "1", "--tee", "1",
                        script, "--steps", "40"],
                    "env": [{"name": "OMP_NUM_THREADS", "value": "1"}],
                },
            },
        }),
    );
    let trainjobs: Api<DynamicObject> = Api::namespaced_with(
        t.client.clone(),
        "default",
        &ferry_training::trainer::trainjob_resource(),
    );
    let started = std::time::Instant::now();
    let tj = eventually(
        "TrainJob ddp Complete",
        Duration::from_secs(300),
        async || {
            let tj = trainjobs.get("ddp").await.ok()?;
            let conds = tj.data.pointer("/status/conditions")?.as_array()?.clone();
            if let Some(f) = conds
                .iter()
                .find(|c| c["type"] == "Failed" && c["status"] == "True")
            {
                panic!("TrainJob failed: {f}");
            }
            conds
                .iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
                .then_some(tj)
        },
    )
    .await;
    println!("TrainJob ddp Complete after {:.1?}", started.elapsed());
    let status = &tj.data["status"]["jobsStatus"];
    assert_eq!(status[0]["name"], "node");
    assert_eq!(status[0]["succeeded"], 1, "{status}");

    let pods: Api<Pod> = Api::namespaced(t.client.clone(), "default");
    let mut pods = pods
        .list(&ListParams::default().labels("jobset.sigs.k8s.io/jobset-name=ddp"))
        .await
        .unwrap()
        .items;
    pods.sort_by_key(|p| p.metadata.name.clone());
    // Indexed Job pods are `<job>-<index>-<random>`; their DNS hostnames are `<job>-<index>`.
    let hostnames: Vec<String> = pods
        .iter()
        .map(|p| {
            p.spec
                .as_ref()
                .unwrap()
                .hostname
                .clone()
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(hostnames, ["ddp-node-0-0", "ddp-node-0-1"]);
    for (rank, p) in pods.iter().enumerate() {
        let name = p.metadata.name.as_deref().unwrap();
        let env = &p.spec.as_ref().unwrap().containers[0].env.clone().unwrap();
        let value = |n: &str| {
            env.iter()
                .find(|e| e.name == n)
                .and_then(|e| e.value.clone())
                .unwrap_or_default()
        };
        assert_eq!(value("PET_NNODES"), "2");
        assert_eq!(value("PET_NPROC_PER_NODE"), "1");
        assert_eq!(value("PET_MASTER_ADDR"), "ddp-node-0-0.ddp");
        assert_eq!(value("PET_MASTER_PORT"), "29400");
        let logs = t.kubectl(&["logs", name]).success();
        assert!(
            logs.contains(&format!("world=2 rank={rank}")),
            "{name}: {logs}"
        );
        let done = logs
            .lines()
            .find_map(|l| l.split("done steps=").nth(1))
            .unwrap_or_else(|| panic!("{name} did not finish: {logs}"))
            .to_string();
        println!("{name}: done steps={done}");
        let loss: f64 = done.split("loss=").nth(1).unwrap().trim().parse().unwrap();
        assert!(loss < 0.1, "final loss {loss}");
    }

    // A reserved variable is refused with upstream's message, and no JobSet is made.
    apply(
        &t,
        &json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "bad"},
            "spec": {"runtimeRef": {"name": "torch-distributed"},
                "trainer": {"command": [PY, "-c", "pass"], "env": [{"name": "PET_NNODES", "value": "9"}]}},
        }),
    );
    let message = eventually("TrainJob bad Failed", WAIT, async || {
        let tj = trainjobs.get("bad").await.ok()?;
        tj.data
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Failed" && c["status"] == "True")
            .map(|c| c["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(message.contains("must not have reserved envs"), "{message}");
    assert!(jobsets(&t).get_opt("bad").await.unwrap().is_none());

    // A runtime that does not exist is reported, and the TrainJob waits for it.
    apply(
        &t,
        &json!({
            "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJob",
            "metadata": {"name": "orphan"},
            "spec": {"runtimeRef": {"name": "no-such-runtime"}},
        }),
    );
    let message = eventually("TrainJob orphan reported", WAIT, async || {
        let tj = trainjobs.get("orphan").await.ok()?;
        tj.data
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Created" && c["status"] == "False")
            .map(|c| c["message"].as_str().unwrap_or_default().to_string())
    })
    .await;
    assert!(message.contains("no-such-runtime"), "{message}");
}
